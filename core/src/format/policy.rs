//! A retention policy as a space's settings store it (`spaces/<space>`, see
//! [`super::space`]) and as `puce forget` takes it: which rules are set, with their counts and
//! durations. What a policy keeps is decided in [`crate::retention`].

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A calendar duration as in restic: years, months, days, hours.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Within {
    /// Years.
    pub years: i32,
    /// Months.
    pub months: i32,
    /// Days.
    pub days: i32,
    /// Hours.
    pub hours: i32,
}

impl Within {
    /// Parse `1y2m3d4h` (any subset, in any order; `w` = 7 days).
    pub fn parse(s: &str) -> Result<Within> {
        let mut w = Within::default();
        let mut num = String::new();
        let bad = || {
            Error::invalid(format!(
                "bad duration '{s}': use numbers with units y, m (months), w, d, h, e.g. 1y6m or 30d"
            ))
        };
        for c in s.chars() {
            if c.is_ascii_digit() {
                num.push(c);
                continue;
            }
            let n: i32 = num.parse().map_err(|_| bad())?;
            num.clear();
            match c {
                'y' => w.years += n,
                'm' => w.months += n,
                'w' => w.days += 7 * n,
                'd' => w.days += n,
                'h' => w.hours += n,
                _ => return Err(bad()),
            }
        }
        if !num.is_empty() || s.is_empty() {
            return Err(bad());
        }
        Ok(w)
    }
}

impl std::fmt::Display for Within {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut any = false;
        for (n, u) in [
            (self.years, 'y'),
            (self.months, 'm'),
            (self.days, 'd'),
            (self.hours, 'h'),
        ] {
            if n != 0 {
                write!(f, "{n}{u}")?;
                any = true;
            }
        }
        if !any {
            f.write_str("0h")?;
        }
        Ok(())
    }
}

/// A retention policy. Counts: `None` = rule off, `Some(-1)` = no limit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
pub struct Policy {
    /// Keep the N newest snapshots
    #[cfg_attr(
        feature = "clap",
        arg(long, value_name = "N", allow_negative_numbers = true)
    )]
    pub keep_last: Option<i32>,
    /// Keep the newest snapshot of each of the last N hours with snapshots
    #[cfg_attr(
        feature = "clap",
        arg(long, value_name = "N", allow_negative_numbers = true)
    )]
    pub keep_hourly: Option<i32>,
    /// Keep the newest snapshot of each of the last N days with snapshots
    #[cfg_attr(
        feature = "clap",
        arg(long, value_name = "N", allow_negative_numbers = true)
    )]
    pub keep_daily: Option<i32>,
    /// Keep the newest snapshot of each of the last N ISO weeks with snapshots
    #[cfg_attr(
        feature = "clap",
        arg(long, value_name = "N", allow_negative_numbers = true)
    )]
    pub keep_weekly: Option<i32>,
    /// Keep the newest snapshot of each of the last N months with snapshots
    #[cfg_attr(
        feature = "clap",
        arg(long, value_name = "N", allow_negative_numbers = true)
    )]
    pub keep_monthly: Option<i32>,
    /// Keep the newest snapshot of each of the last N years with snapshots
    #[cfg_attr(
        feature = "clap",
        arg(long, value_name = "N", allow_negative_numbers = true)
    )]
    pub keep_yearly: Option<i32>,
    /// Keep every snapshot within DURATION (e.g. 1y6m, 30d) of the group's newest
    #[cfg_attr(feature = "clap", arg(long, value_name = "DURATION", value_parser = parse_within))]
    pub keep_within: Option<Within>,
    /// Keep every snapshot with this tag (repeatable)
    #[cfg_attr(feature = "clap", arg(long = "keep-tag", value_name = "TAG"))]
    pub keep_tags: Vec<String>,
}

#[cfg(feature = "clap")]
fn parse_within(s: &str) -> std::result::Result<Within, String> {
    Within::parse(s).map_err(|e| e.to_string())
}

impl Policy {
    /// Whether no rule is set (such a policy keeps everything).
    pub fn is_empty(&self) -> bool {
        self.keep_last.is_none()
            && self.keep_hourly.is_none()
            && self.keep_daily.is_none()
            && self.keep_weekly.is_none()
            && self.keep_monthly.is_none()
            && self.keep_yearly.is_none()
            && self.keep_within.is_none()
            && self.keep_tags.is_empty()
    }

    /// A short description, e.g. `last 3, daily 7, within 30d, tag keep`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        for (name, v) in [
            ("last", self.keep_last),
            ("hourly", self.keep_hourly),
            ("daily", self.keep_daily),
            ("weekly", self.keep_weekly),
            ("monthly", self.keep_monthly),
            ("yearly", self.keep_yearly),
        ] {
            if let Some(n) = v {
                if n < 0 {
                    parts.push(format!("{name} all"));
                } else {
                    parts.push(format!("{name} {n}"));
                }
            }
        }
        if let Some(w) = self.keep_within {
            parts.push(format!("within {w}"));
        }
        for t in &self.keep_tags {
            parts.push(format!("tag {t}"));
        }
        if parts.is_empty() {
            "keep everything".into()
        } else {
            parts.join(", ")
        }
    }
}
