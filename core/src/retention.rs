//! Retention: which snapshots a policy keeps. A pure function of the snapshots, the policy and
//! the time zone, tested as a table of policies with golden results.
//!
//! The semantics are restic's `forget`, which users know:
//! - snapshots are grouped (by space by default, optionally by space and host) and each group is
//!   decided on its own, newest first;
//! - `keep_last N` keeps the N newest;
//! - `keep_hourly/daily/weekly/monthly/yearly N` keep, for the N most recent hours (days, ISO
//!   weeks, months, years) that have snapshots, the newest snapshot of each; -1 means no limit;
//! - `keep_within D` keeps every snapshot taken within D before the newest snapshot of the group
//!   (not before "now": a space that stopped receiving snapshots keeps its last ones);
//! - `keep_tags` keeps every snapshot carrying one of the tags;
//! - a snapshot is kept if any rule keeps it; the reasons are recorded.
//!
//! Snapshots received from peers are dated by the peer: a compromised or badly set peer could
//! date them years ahead, and the newest snapshots of a group would then be those, pushing the
//! real history out of every `keep_*` window. Retention therefore uses, for a received
//! snapshot, the earlier of its own time and its arrival here (its first receipt); the
//! decision says when it did ([`Decision::claimed_ns`]).
//!
//! Differences from restic, on purpose: an empty policy keeps everything (restic refuses to run);
//! buckets use the given time zone (the CLI passes the system's, as restic does); durations use
//! restic's syntax (`1y2m3d4h`, where `m` is months) and also accept `w` for weeks.

use std::collections::BTreeMap;

use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan, ZonedDateTime as Zoned};
use serde::{Deserialize, Serialize};

pub use crate::format::policy::{Policy, Within};

use crate::error::{Error, Result};
use crate::format::snapshot::SnapshotEntry;
use crate::hash::SnapshotId;

/// How far past its arrival a received snapshot may be dated before it is flagged as dated
/// ahead ([`dated_ahead`]): clocks differ, and a snapshot may wait before it is sent.
pub const DATED_AHEAD_SLACK_NS: i64 = 24 * 3600 * 1_000_000_000;

/// Whether a snapshot dated `time_ns` that arrived from a peer at `arrived_ns` claims a time
/// more than a day after its arrival: flagged (`puce node status`), counted at its arrival.
pub fn dated_ahead(time_ns: i64, arrived_ns: i64) -> bool {
    time_ns.saturating_sub(arrived_ns) > DATED_AHEAD_SLACK_NS
}

/// How snapshots are grouped before a policy applies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum GroupBy {
    /// One group per space (the default).
    #[default]
    Space,
    /// One group per space and host.
    SpaceHost,
}

/// The fate of one snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// The snapshot.
    pub id: SnapshotId,
    /// Its space.
    pub space: String,
    /// Its host.
    pub host: String,
    /// The time retention used: when it was taken, or when it arrived from a peer if that is
    /// earlier.
    pub time_ns: i64,
    /// The time the snapshot itself claims, when retention used its (earlier) arrival time
    /// instead.
    pub claimed_ns: Option<i64>,
    /// Kept or removed.
    pub keep: bool,
    /// The rules that keep it (empty when removed).
    pub reasons: Vec<String>,
}

fn zoned(ns: i64, tz: &TimeZone) -> Result<Zoned> {
    Timestamp::from_nanosecond(i128::from(ns))
        .map(|t| t.to_zoned_datetime(tz.clone()))
        .map_err(|e| Error::invalid(format!("snapshot time out of range: {e}")))
}

#[derive(Clone, Copy)]
enum Bucket {
    Hour,
    Day,
    Week,
    Month,
    Year,
}

fn bucket(z: &Zoned, b: Bucket) -> (i32, i32, i32, i32) {
    let (y, m, d, h) = (
        i32::from(z.year()),
        i32::from(z.month()),
        i32::from(z.day()),
        i32::from(z.hour()),
    );
    match b {
        Bucket::Hour => (y, m, d, h),
        Bucket::Day => (y, m, d, 0),
        Bucket::Week => {
            let w = z.date().iso_week_date();
            (i32::from(w.year()), i32::from(w.week()), 0, 0)
        }
        Bucket::Month => (y, m, 0, 0),
        Bucket::Year => (y, 0, 0, 0),
    }
}

/// A snapshot and the time retention uses for it.
type Dated<'a> = (&'a SnapshotEntry, i64);

/// Decide one group (any order in; decisions come out newest first).
fn decide_group(group: &[Dated<'_>], policy: &Policy, tz: &TimeZone) -> Result<Vec<Decision>> {
    let mut dated: Vec<Dated<'_>> = group.to_vec();
    dated.sort_by_key(|(s, t)| std::cmp::Reverse((*t, s.id)));
    let snaps: Vec<&SnapshotEntry> = dated.iter().map(|(s, _)| *s).collect();
    let zs: Vec<Zoned> = dated
        .iter()
        .map(|(_, t)| zoned(*t, tz))
        .collect::<Result<_>>()?;
    let mut reasons: Vec<Vec<String>> = vec![Vec::new(); snaps.len()];
    if policy.is_empty() {
        for r in reasons.iter_mut() {
            r.push("no policy".into());
        }
    }
    if let Some(n) = policy.keep_last {
        for (i, r) in reasons.iter_mut().enumerate() {
            if n < 0 || (i as i64) < i64::from(n) {
                r.push("last".into());
            }
        }
    }
    for (count, b, name) in [
        (policy.keep_hourly, Bucket::Hour, "hourly"),
        (policy.keep_daily, Bucket::Day, "daily"),
        (policy.keep_weekly, Bucket::Week, "weekly"),
        (policy.keep_monthly, Bucket::Month, "monthly"),
        (policy.keep_yearly, Bucket::Year, "yearly"),
    ] {
        let Some(mut left) = count else { continue };
        let mut last = None;
        for (i, z) in zs.iter().enumerate() {
            if left == 0 {
                break;
            }
            let k = bucket(z, b);
            if last != Some(k) {
                reasons[i].push(name.into());
                last = Some(k);
                if left > 0 {
                    left -= 1;
                }
            }
        }
    }
    if let (Some(w), Some(newest)) = (policy.keep_within, zs.first()) {
        let span = w.years.years().months(w.months).days(w.days).hours(w.hours);
        let limit = newest
            .checked_sub(span)
            .map_err(|e| Error::invalid(format!("keep-within {w} is out of range: {e}")))?;
        for (i, z) in zs.iter().enumerate() {
            if z >= limit {
                reasons[i].push(format!("within {w}"));
            }
        }
    }
    for (i, s) in snaps.iter().enumerate() {
        for t in &policy.keep_tags {
            if s.snapshot.tags.contains(t) {
                reasons[i].push(format!("tag {t}"));
            }
        }
    }
    Ok(dated
        .iter()
        .zip(reasons)
        .map(|((s, t), reasons)| Decision {
            id: s.id,
            space: s.snapshot.space.clone(),
            host: s.snapshot.host.clone(),
            time_ns: *t,
            claimed_ns: (*t != s.snapshot.time_ns).then_some(s.snapshot.time_ns),
            keep: !reasons.is_empty(),
            reasons,
        })
        .collect())
}

/// Apply `policy_for(space)` to every group of `snapshots`, `arrived(id)` being when a
/// snapshot received from a peer first arrived here (`None` for snapshots made here). Returns
/// decisions grouped by (space, host) key order, newest first within a group.
pub fn decide(
    snapshots: &[SnapshotEntry],
    arrived: &dyn Fn(&SnapshotId) -> Option<i64>,
    group_by: GroupBy,
    tz: &TimeZone,
    policy_for: &dyn Fn(&str) -> Option<Policy>,
) -> Result<Vec<Decision>> {
    let mut groups: BTreeMap<(String, String), Vec<Dated<'_>>> = BTreeMap::new();
    for s in snapshots {
        let t = match arrived(&s.id) {
            Some(a) => s.snapshot.time_ns.min(a),
            None => s.snapshot.time_ns,
        };
        let host = match group_by {
            GroupBy::Space => String::new(),
            GroupBy::SpaceHost => s.snapshot.host.clone(),
        };
        groups
            .entry((s.snapshot.space.clone(), host))
            .or_default()
            .push((s, t));
    }
    let mut out = Vec::new();
    for ((space, _), group) in groups {
        match policy_for(&space) {
            Some(p) => out.extend(decide_group(&group, &p, tz)?),
            None => out.extend(decide_group(&group, &Policy::default(), tz)?),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::snapshot::{Snapshot, Summary};
    use crate::hash::{Hash, ObjectId};
    use std::collections::HashMap;

    /// Snapshots of one space at the given UTC times ("YYYY-MM-DDTHH:MM"), with optional tags.
    fn snaps(times: &[(&str, &[&str])]) -> Vec<SnapshotEntry> {
        times
            .iter()
            .enumerate()
            .map(|(i, (t, tags))| {
                let ts: Timestamp = format!("{t}:00Z").parse().unwrap();
                SnapshotEntry {
                    id: SnapshotId(Hash::of(&[i as u8])),
                    snapshot: Snapshot {
                        time_ns: ts.as_nanosecond() as i64,
                        space: "s".into(),
                        host: if i % 2 == 0 { "a".into() } else { "b".into() },
                        user: String::new(),
                        source: String::new(),
                        tags: tags.iter().map(|t| t.to_string()).collect(),
                        parents: vec![],
                        root: ObjectId::default(),
                        summary: Summary::default(),
                        origin: String::new(),
                    },
                }
            })
            .collect()
    }

    /// The corpus of the table tests: 20 snapshots over two years.
    fn history() -> Vec<SnapshotEntry> {
        snaps(&[
            ("2023-01-15T10:00", &[]),
            ("2023-06-30T23:30", &["keep"]),
            ("2023-12-31T12:00", &[]),
            ("2024-01-01T00:30", &[]),
            ("2024-01-28T09:00", &[]),
            ("2024-02-10T09:00", &[]),
            ("2024-02-29T09:00", &[]),
            ("2024-03-01T02:00", &[]),
            ("2024-03-01T14:00", &[]),
            ("2024-03-02T02:00", &[]),
            ("2024-03-03T02:00", &[]),
            ("2024-03-04T02:00", &["keep"]),
            ("2024-03-05T02:00", &[]),
            ("2024-03-06T02:00", &[]),
            ("2024-03-07T02:00", &[]),
            ("2024-03-08T02:00", &[]),
            ("2024-03-09T02:00", &[]),
            ("2024-03-10T02:00", &[]),
            ("2024-03-10T02:30", &[]),
            ("2024-03-10T03:15", &[]),
        ])
    }

    /// Render decisions as "time K reasons" / "time -" lines, oldest first, for golden tables.
    fn render(policy: &Policy) -> Vec<String> {
        let h = history();
        let mut d = decide(&h, &|_| None, GroupBy::Space, &TimeZone::UTC, &|_| {
            Some(policy.clone())
        })
        .unwrap();
        d.reverse();
        d.iter()
            .map(|d| {
                let t = Timestamp::from_nanosecond(i128::from(d.time_ns)).unwrap();
                let t = t.strftime("%Y-%m-%dT%H:%M").to_string();
                if d.keep {
                    format!("{t} keep {}", d.reasons.join("+"))
                } else {
                    format!("{t} -")
                }
            })
            .collect()
    }

    /// Issue 18: a peer with push sends two snapshots dated 2030; they arrive after the last
    /// real one. Retention uses their arrival time: `keep_daily 3` still keeps the real
    /// history's last three days (with the claimed dates, it kept the two forged days and one
    /// real one).
    #[test]
    fn received_snapshots_dated_after_their_arrival_count_at_their_arrival() {
        let mut h = history();
        let mut arrived = HashMap::new();
        for (mut s, at) in snaps(&[("2030-01-01T00:00", &[]), ("2030-01-02T00:00", &[])])
            .into_iter()
            .zip(["2024-03-10T04:00:00Z", "2024-03-10T05:00:00Z"])
        {
            // Ids apart from the history's (`snaps` numbers from 0).
            s.id = SnapshotId(Hash::of(s.id.0.as_bytes()));
            let at: Timestamp = at.parse().unwrap();
            arrived.insert(s.id, at.as_nanosecond() as i64);
            h.push(s);
        }
        let p = Policy {
            keep_daily: Some(3),
            ..Policy::default()
        };
        let d = decide(
            &h,
            &|id| arrived.get(id).copied(),
            GroupBy::Space,
            &TimeZone::UTC,
            &|_| Some(p.clone()),
        )
        .unwrap();
        let kept: Vec<String> = d
            .iter()
            .filter(|d| d.keep)
            .map(|d| {
                let t = Timestamp::from_nanosecond(i128::from(d.time_ns)).unwrap();
                format!(
                    "{} {}",
                    t.strftime("%Y-%m-%dT%H:%M"),
                    d.claimed_ns.is_some()
                )
            })
            .collect();
        assert_eq!(
            kept,
            [
                "2024-03-10T05:00 true",
                "2024-03-09T02:00 false",
                "2024-03-08T02:00 false"
            ]
        );
        let forged: Vec<&Decision> = d.iter().filter(|d| d.claimed_ns.is_some()).collect();
        assert_eq!(forged.len(), 2);
        assert!(forged.iter().all(|d| d.claimed_ns.unwrap() > d.time_ns));
    }

    fn kept(policy: &Policy) -> Vec<String> {
        render(policy)
            .into_iter()
            .filter(|l| !l.ends_with(" -"))
            .collect()
    }

    #[test]
    fn golden_keep_last() {
        let p = Policy {
            keep_last: Some(3),
            ..Policy::default()
        };
        assert_eq!(
            kept(&p),
            [
                "2024-03-10T02:00 keep last",
                "2024-03-10T02:30 keep last",
                "2024-03-10T03:15 keep last"
            ]
        );
    }

    #[test]
    fn golden_keep_daily() {
        let p = Policy {
            keep_daily: Some(4),
            ..Policy::default()
        };
        assert_eq!(
            kept(&p),
            [
                "2024-03-07T02:00 keep daily",
                "2024-03-08T02:00 keep daily",
                "2024-03-09T02:00 keep daily",
                "2024-03-10T03:15 keep daily"
            ]
        );
    }

    #[test]
    fn golden_keep_hourly_counts_hours_with_snapshots() {
        let p = Policy {
            keep_hourly: Some(3),
            ..Policy::default()
        };
        assert_eq!(
            kept(&p),
            [
                "2024-03-09T02:00 keep hourly",
                "2024-03-10T02:30 keep hourly",
                "2024-03-10T03:15 keep hourly"
            ]
        );
    }

    #[test]
    fn golden_keep_weekly_uses_iso_weeks() {
        // 2024-03-04 is a Monday: week 10 holds 04..10 March, week 9 holds 26 Feb..03 Mar
        // (so 29 Feb and 3 March share a week), and week 6 holds 10 Feb.
        let p = Policy {
            keep_weekly: Some(3),
            ..Policy::default()
        };
        assert_eq!(
            kept(&p),
            [
                "2024-02-10T09:00 keep weekly",
                "2024-03-03T02:00 keep weekly",
                "2024-03-10T03:15 keep weekly"
            ]
        );
    }

    #[test]
    fn golden_keep_monthly_and_yearly() {
        let p = Policy {
            keep_monthly: Some(4),
            keep_yearly: Some(-1),
            ..Policy::default()
        };
        assert_eq!(
            kept(&p),
            [
                "2023-12-31T12:00 keep monthly+yearly",
                "2024-01-28T09:00 keep monthly",
                "2024-02-29T09:00 keep monthly",
                "2024-03-10T03:15 keep monthly+yearly"
            ]
        );
        // With 5 months the rule reaches back to June 2023.
        let p = Policy {
            keep_monthly: Some(5),
            ..Policy::default()
        };
        assert_eq!(kept(&p).len(), 5);
        assert_eq!(kept(&p)[0], "2023-06-30T23:30 keep monthly");
    }

    #[test]
    fn golden_keep_within_is_relative_to_newest() {
        let p = Policy {
            keep_within: Some(Within::parse("2d").unwrap()),
            ..Policy::default()
        };
        // Newest is 10 March 03:15, so the limit is 8 March 03:15: 8 March 02:00 is out.
        assert_eq!(
            kept(&p),
            [
                "2024-03-09T02:00 keep within 2d",
                "2024-03-10T02:00 keep within 2d",
                "2024-03-10T02:30 keep within 2d",
                "2024-03-10T03:15 keep within 2d"
            ]
        );
    }

    #[test]
    fn golden_tags_and_combination() {
        let p = Policy {
            keep_last: Some(1),
            keep_daily: Some(2),
            keep_tags: vec!["keep".into()],
            ..Policy::default()
        };
        assert_eq!(
            kept(&p),
            [
                "2023-06-30T23:30 keep tag keep",
                "2024-03-04T02:00 keep tag keep",
                "2024-03-09T02:00 keep daily",
                "2024-03-10T03:15 keep last+daily"
            ]
        );
    }

    #[test]
    fn empty_policy_keeps_everything() {
        assert!(
            render(&Policy::default())
                .iter()
                .all(|l| l.contains("keep no policy"))
        );
    }

    #[test]
    fn groups_by_host_when_asked() {
        let h = history();
        let p = Policy {
            keep_last: Some(1),
            ..Policy::default()
        };
        let d = decide(&h, &|_| None, GroupBy::SpaceHost, &TimeZone::UTC, &|_| {
            Some(p.clone())
        })
        .unwrap();
        assert_eq!(d.iter().filter(|d| d.keep).count(), 2);
        let d = decide(&h, &|_| None, GroupBy::Space, &TimeZone::UTC, &|_| {
            Some(p.clone())
        })
        .unwrap();
        assert_eq!(d.iter().filter(|d| d.keep).count(), 1);
    }

    #[test]
    fn time_zone_moves_day_boundaries() {
        // 21:00Z is 23:00 on 30 June in Paris (UTC+2), 23:30Z is already 1 July there.
        let h = snaps(&[("2023-06-30T21:00", &[]), ("2023-06-30T23:30", &[])]);
        let p = Policy {
            keep_daily: Some(-1),
            ..Policy::default()
        };
        let utc = decide(&h, &|_| None, GroupBy::Space, &TimeZone::UTC, &|_| {
            Some(p.clone())
        })
        .unwrap();
        assert_eq!(utc.iter().filter(|d| d.keep).count(), 1);
        let paris = TimeZone::get("Europe/Paris").unwrap();
        let local = decide(&h, &|_| None, GroupBy::Space, &paris, &|_| Some(p.clone())).unwrap();
        assert_eq!(local.iter().filter(|d| d.keep).count(), 2);
    }

    #[test]
    fn within_parses_restic_syntax() {
        let w = Within::parse("1y6m2w3d4h").unwrap();
        assert_eq!((w.years, w.months, w.days, w.hours), (1, 6, 17, 4));
        assert_eq!(w.to_string(), "1y6m17d4h");
        for bad in ["", "5", "3x", "d", "-1d"] {
            assert!(Within::parse(bad).is_err(), "{bad}");
        }
    }
}
