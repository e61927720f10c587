//! When scheduled syncs run: time windows in local time, an interval between successful syncs,
//! and exponential backoff after failures. Pure functions of the time, tested with fixed clocks.

use std::fmt;
use std::time::Duration;

use jiff::civil::Time;
use jiff::{Timestamp, ToSpan, ZonedDateTime};

use crate::error::{Error, ErrorKind, Result};

/// A daily time window in local time, `HH:MM-HH:MM`; it may cross midnight (`22:00-02:00`).
/// The start is included, the end excluded; `00:00-24:00` is the whole day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Minutes after midnight at which the window opens.
    pub start: u32,
    /// Minutes after midnight at which it closes (1440 for midnight at the end).
    pub end: u32,
}

impl Window {
    /// Parse `HH:MM-HH:MM`.
    pub fn parse(s: &str) -> Result<Window> {
        let bad = || {
            Error::new(
                ErrorKind::Config,
                format!(
                    "bad time window '{s}': write it HH:MM-HH:MM in local time, e.g. \
                     \"01:00-05:00\" or \"22:00-02:00\""
                ),
            )
        };
        let (a, b) = s.trim().split_once('-').ok_or_else(bad)?;
        let minutes = |t: &str, allow_24: bool| -> Option<u32> {
            let (h, m) = t.trim().split_once(':')?;
            if h.is_empty() || h.len() > 2 || m.len() != 2 {
                return None;
            }
            let h: u32 = h.parse().ok()?;
            let m: u32 = m.parse().ok()?;
            let ok = (h < 24 && m < 60) || (allow_24 && h == 24 && m == 0);
            ok.then_some(h * 60 + m)
        };
        let start = minutes(a, false).ok_or_else(bad)?;
        let end = minutes(b, true).ok_or_else(bad)?;
        if start == end {
            return Err(Error::new(
                ErrorKind::Config,
                format!("time window '{s}' is empty: for the whole day write \"00:00-24:00\""),
            ));
        }
        Ok(Window { start, end })
    }

    fn contains_minute(&self, m: u32) -> bool {
        if self.start < self.end {
            (self.start..self.end).contains(&m)
        } else {
            m >= self.start || m < self.end
        }
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:02}:{:02}-{:02}:{:02}",
            self.start / 60,
            self.start % 60,
            self.end / 60,
            self.end % 60
        )
    }
}

fn minute_of(t: &ZonedDateTime) -> u32 {
    t.hour() as u32 * 60 + t.minute() as u32
}

/// Whether `t` is inside one of `windows` (always, when there are none).
pub fn in_window(windows: &[Window], t: &ZonedDateTime) -> bool {
    windows.is_empty() || windows.iter().any(|w| w.contains_minute(minute_of(t)))
}

/// The first instant at or after `t` inside one of `windows`.
pub fn next_open(windows: &[Window], t: &ZonedDateTime) -> ZonedDateTime {
    if in_window(windows, t) {
        return t.clone();
    }
    let mut best: Option<ZonedDateTime> = None;
    for w in windows {
        let start =
            Time::new((w.start / 60) as i8, (w.start % 60) as i8, 0, 0).unwrap_or(Time::MIN);
        for days in 0..2 {
            let day = t.date().checked_add(days.days()).unwrap_or(t.date());
            let Ok(cand) = day
                .to_datetime(start)
                .to_zoned_datetime(t.time_zone().clone())
            else {
                continue;
            };
            if cand >= *t {
                if best.as_ref().is_none_or(|b| cand < *b) {
                    best = Some(cand);
                }
                break;
            }
        }
    }
    best.unwrap_or_else(|| t.clone())
}

/// Retry settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// Wait after the first failure.
    pub initial: Duration,
    /// Longest wait: the wait doubles after each failure up to this.
    pub max: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            initial: Duration::from_secs(30),
            max: Duration::from_secs(30 * 60),
        }
    }
}

/// The wait after `failures` consecutive failures (at least 1).
pub fn backoff(retry: &Retry, failures: u32) -> Duration {
    let shift = failures.saturating_sub(1).min(30);
    retry
        .initial
        .checked_mul(1u32 << shift)
        .unwrap_or(retry.max)
        .min(retry.max)
}

/// What the scheduler knows of a peer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct History {
    /// Last attempt, successful or not.
    pub last_attempt: Option<Timestamp>,
    /// Last successful sync.
    pub last_success: Option<Timestamp>,
    /// Failures since the last success.
    pub failures: u32,
}

/// Interval between syncs when no window is configured and no interval given.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(3600);

/// When the next sync with a peer is due.
///
/// - Never synced: now (moved into a window).
/// - After a failure: the backoff wait, moved into a window (so a failure near the end of a
///   window is retried at the next opening).
/// - After a success: `interval` later if one is set; otherwise, with windows, at the next
///   opening after the window that saw the success closes (one sync per window), and without
///   windows [`DEFAULT_INTERVAL`] later.
pub fn next_due(
    now: &ZonedDateTime,
    h: &History,
    windows: &[Window],
    interval: Option<Duration>,
    retry: &Retry,
) -> ZonedDateTime {
    let tz = now.time_zone().clone();
    let wait = |from: Timestamp, d: Duration| -> ZonedDateTime {
        let d = jiff::SignedDuration::try_from(d).unwrap_or(jiff::SignedDuration::MAX);
        from.checked_add(d)
            .unwrap_or(Timestamp::MAX)
            .to_zoned_datetime(tz.clone())
    };
    let due = if h.failures > 0 {
        let from = h.last_attempt.unwrap_or_else(|| now.timestamp());
        wait(from, backoff(retry, h.failures))
    } else {
        match (h.last_success, interval) {
            (None, _) => now.clone(),
            (Some(t), Some(i)) => wait(t, i),
            (Some(t), None) if windows.is_empty() => wait(t, DEFAULT_INTERVAL),
            (Some(t), None) => window_close(windows, &t.to_zoned_datetime(tz.clone())),
        }
    };
    let due = if due < *now { now.clone() } else { due };
    next_open(windows, &due)
}

/// When the daemon's next data check is due: now if it never ran, else `interval` after the
/// last one; moved into a window (checks read the disks, like syncs use the network, at the
/// quiet hours).
pub fn next_check(
    now: &ZonedDateTime,
    last: Option<Timestamp>,
    windows: &[Window],
    interval: Duration,
) -> ZonedDateTime {
    let due = match last {
        None => now.clone(),
        Some(t) => {
            let d = jiff::SignedDuration::try_from(interval).unwrap_or(jiff::SignedDuration::MAX);
            t.checked_add(d)
                .unwrap_or(Timestamp::MAX)
                .to_zoned_datetime(now.time_zone().clone())
        }
    };
    let due = if due < *now { now.clone() } else { due };
    next_open(windows, &due)
}

/// When the window occurrence containing `t` closes (`t` itself if no window contains it).
fn window_close(windows: &[Window], t: &ZonedDateTime) -> ZonedDateTime {
    let m = minute_of(t);
    let mut close: Option<ZonedDateTime> = None;
    for w in windows.iter().filter(|w| w.contains_minute(m)) {
        let crosses = w.start >= w.end && m >= w.start;
        let day = if crosses {
            t.date().checked_add(1.days()).unwrap_or(t.date())
        } else {
            t.date()
        };
        let (day, end) = if w.end == 1440 {
            (day.checked_add(1.days()).unwrap_or(day), 0)
        } else {
            (day, w.end)
        };
        let time = Time::new((end / 60) as i8, (end % 60) as i8, 0, 0).unwrap_or(Time::MIN);
        if let Ok(c) = day
            .to_datetime(time)
            .to_zoned_datetime(t.time_zone().clone())
            && close.as_ref().is_none_or(|x| c > *x)
        {
            close = Some(c);
        }
    }
    close.unwrap_or_else(|| t.clone())
}

/// Parse a duration like `30s`, `15m`, `2h`, `1d` or `1h30m`.
pub fn parse_duration(s: &str) -> Result<Duration> {
    let bad = || {
        Error::new(
            ErrorKind::Config,
            format!("bad duration '{s}': write e.g. \"30s\", \"15m\", \"2h\", \"1d\" or \"1h30m\""),
        )
    };
    let t = s.trim();
    if t.is_empty() {
        return Err(bad());
    }
    let mut total = 0u64;
    let mut num = String::new();
    for c in t.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        if c == ' ' {
            continue;
        }
        let n: u64 = num.parse().map_err(|_| bad())?;
        num.clear();
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            _ => return Err(bad()),
        };
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
    }
    if !num.is_empty() {
        return Err(bad());
    }
    Ok(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> ZonedDateTime {
        format!("{s}[Europe/Paris]").parse().unwrap()
    }

    #[test]
    fn checks_are_due_after_the_interval_inside_a_window() {
        let w = [Window::parse("01:00-05:00").unwrap()];
        let day = Duration::from_secs(86400);
        // Never checked: at the next opening.
        let now = at("2024-03-01T12:00:00+01:00");
        assert_eq!(
            next_check(&now, None, &w, day),
            at("2024-03-02T01:00:00+01:00")
        );
        // Checked at 02:00: the next day at 02:00, inside the window.
        let last = at("2024-03-02T02:00:00+01:00").timestamp();
        assert_eq!(
            next_check(&at("2024-03-02T02:30:00+01:00"), Some(last), &w, day),
            at("2024-03-03T02:00:00+01:00")
        );
        // Overdue, outside a window: at the next opening; without windows: now.
        let early = at("2024-03-01T02:00:00+01:00").timestamp();
        assert_eq!(
            next_check(&now, Some(early), &w, Duration::from_secs(60)),
            at("2024-03-02T01:00:00+01:00")
        );
        assert_eq!(
            next_check(&now, Some(early), &[], Duration::from_secs(60)),
            now
        );
    }

    #[test]
    fn windows_parse_and_contain() {
        let w = Window::parse("01:00-05:00").unwrap();
        assert_eq!((w.start, w.end), (60, 300));
        assert_eq!(w.to_string(), "01:00-05:00");
        let night = Window::parse("22:00-02:00").unwrap();
        let all = Window::parse("00:00-24:00").unwrap();
        for bad in [
            "",
            "1-5",
            "25:00-01:00",
            "01:00-01:00",
            "01:60-02:00",
            "a:b-c:d",
            "01:00",
        ] {
            assert!(Window::parse(bad).is_err(), "{bad}");
        }
        assert!(in_window(&[w], &at("2024-03-01T01:00")));
        assert!(in_window(&[w], &at("2024-03-01T04:59")));
        assert!(!in_window(&[w], &at("2024-03-01T05:00")));
        assert!(in_window(&[night], &at("2024-03-01T23:30")));
        assert!(in_window(&[night], &at("2024-03-01T01:30")));
        assert!(!in_window(&[night], &at("2024-03-01T12:00")));
        assert!(in_window(&[all], &at("2024-03-01T12:00")));
        assert!(in_window(&[], &at("2024-03-01T12:00")));
    }

    #[test]
    fn next_opening() {
        let w = [Window::parse("01:00-05:00").unwrap()];
        assert_eq!(
            next_open(&w, &at("2024-03-01T12:00")),
            at("2024-03-02T01:00")
        );
        assert_eq!(
            next_open(&w, &at("2024-03-01T00:30")),
            at("2024-03-01T01:00")
        );
        assert_eq!(
            next_open(&w, &at("2024-03-01T02:00")),
            at("2024-03-01T02:00")
        );
        // Two windows: the nearest opening.
        let w2 = [
            Window::parse("22:00-23:00").unwrap(),
            Window::parse("03:00-04:00").unwrap(),
        ];
        assert_eq!(
            next_open(&w2, &at("2024-03-01T12:00")),
            at("2024-03-01T22:00")
        );
        assert_eq!(
            next_open(&w2, &at("2024-03-01T23:30")),
            at("2024-03-02T03:00")
        );
        // Across the change to summer time (Paris, 2024-03-31 02:00 -> 03:00).
        let w3 = [Window::parse("02:30-04:00").unwrap()];
        let n = next_open(&w3, &at("2024-03-30T12:00"));
        assert_eq!(n, at("2024-03-31T03:30"));
    }

    #[test]
    fn due_times() {
        let w = [Window::parse("01:00-05:00").unwrap()];
        let r = Retry {
            initial: Duration::from_secs(60),
            max: Duration::from_secs(600),
        };
        let day = None;
        let now = at("2024-03-01T12:00");
        // Never synced: at the next opening.
        assert_eq!(
            next_due(&now, &History::default(), &w, day, &r),
            at("2024-03-02T01:00")
        );
        // Synced last night at 04:30: once per window, so at the next opening.
        let h = History {
            last_attempt: Some(at("2024-03-01T04:30").timestamp()),
            last_success: Some(at("2024-03-01T04:30").timestamp()),
            failures: 0,
        };
        assert_eq!(next_due(&now, &h, &w, day, &r), at("2024-03-02T01:00"));
        assert_eq!(
            next_due(&at("2024-03-01T04:31"), &h, &w, day, &r),
            at("2024-03-02T01:00")
        );
        // With an interval of one hour, again inside the same window.
        let hour = Some(Duration::from_secs(3600));
        assert_eq!(
            next_due(
                &at("2024-03-01T01:40"),
                &History {
                    last_success: Some(at("2024-03-01T01:30").timestamp()),
                    ..h
                },
                &w,
                hour,
                &r
            ),
            at("2024-03-01T02:30")
        );
        // A window across midnight closes the next day.
        let night = [Window::parse("22:00-02:00").unwrap()];
        let h2 = History {
            last_success: Some(at("2024-03-01T23:00").timestamp()),
            ..h
        };
        assert_eq!(
            next_due(&at("2024-03-01T23:10"), &h2, &night, None, &r),
            at("2024-03-02T22:00")
        );
        // No window: every hour by default.
        assert_eq!(
            next_due(&at("2024-03-01T04:40"), &h, &[], None, &r),
            at("2024-03-01T05:30")
        );
        // Third failure at 02:00: wait 4 minutes, inside the window.
        let h = History {
            last_attempt: Some(at("2024-03-02T02:00").timestamp()),
            last_success: None,
            failures: 3,
        };
        let now = at("2024-03-02T02:00:01");
        assert_eq!(next_due(&now, &h, &w, day, &r), at("2024-03-02T02:04"));
        // Failure at 04:59:30: the retry falls after the window, so at the next opening.
        let h = History {
            last_attempt: Some(at("2024-03-02T04:59:30").timestamp()),
            last_success: None,
            failures: 1,
        };
        assert_eq!(
            next_due(&at("2024-03-02T04:59:45"), &h, &w, day, &r),
            at("2024-03-03T01:00")
        );
    }

    #[test]
    fn backoff_doubles_up_to_max() {
        let r = Retry {
            initial: Duration::from_secs(30),
            max: Duration::from_secs(600),
        };
        let got: Vec<u64> = (1..=7).map(|n| backoff(&r, n).as_secs()).collect();
        assert_eq!(got, vec![30, 60, 120, 240, 480, 600, 600]);
        assert_eq!(backoff(&r, 1000).as_secs(), 600);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap().as_secs(), 30);
        assert_eq!(parse_duration("1h30m").unwrap().as_secs(), 5400);
        assert_eq!(parse_duration("1d").unwrap().as_secs(), 86400);
        for bad in ["", "10", "5x", "h", "99999999999999999999s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
