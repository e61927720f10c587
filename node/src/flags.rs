//! What a node flags about the snapshots its peers sent (issue 18's history protections):
//! snapshots dated more than a day after they arrived, snapshots holding far fewer files than
//! their parent, and snapshots a peer forgot that a protection period still keeps. Read by
//! `puce node status` and by the notifications; computed from the snapshot records, receipts
//! and hold records (no walk of the trees).

use serde::Serialize;

use puce_core::{Repo, SnapshotEntry};

use crate::error::Result;

/// A received snapshot dated more than a day after it arrived.
#[derive(Debug, Clone, Serialize)]
pub struct DatedAhead {
    /// The snapshot (hex).
    pub snapshot: String,
    /// Its space.
    pub space: String,
    /// The peer that delivered it (its name in node.toml then).
    pub from: String,
    /// The time it claims, ns since the epoch.
    pub time_ns: i64,
    /// When it arrived, ns since the epoch.
    pub arrived_ns: i64,
}

/// A received snapshot holding far fewer files than its parent
/// ([`puce_core::history::shrink`]).
#[derive(Debug, Clone, Serialize)]
pub struct MassDeletion {
    /// The snapshot (hex).
    pub snapshot: String,
    /// Its space.
    pub space: String,
    /// The peer that delivered it.
    pub from: String,
    /// Its parent with the most files (hex).
    pub parent: String,
    /// Files in that parent.
    pub files_before: u64,
    /// Files in the snapshot.
    pub files_after: u64,
}

/// A snapshot a peer forgot that its protection period keeps.
#[derive(Debug, Clone, Serialize)]
pub struct Held {
    /// The snapshot (hex).
    pub snapshot: String,
    /// The peer that forgot it.
    pub peer: String,
    /// Kept until, ns since the epoch.
    pub until_ns: i64,
}

/// Everything flagged.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Flags {
    /// Snapshots dated ahead.
    pub dated_ahead: Vec<DatedAhead>,
    /// Mass deletions.
    pub mass_deletions: Vec<MassDeletion>,
    /// Held snapshots.
    pub held: Vec<Held>,
}

/// The flags of `repo`, whose snapshots are `snaps`.
pub fn flags(repo: &Repo, snaps: &[SnapshotEntry]) -> Result<Flags> {
    let arrivals = puce_core::reach::arrivals(repo)?;
    let mut f = Flags::default();
    for s in snaps {
        let Some(r) = arrivals.get(&s.id) else {
            continue;
        };
        if puce_core::retention::dated_ahead(s.snapshot.time_ns, r.arrived_ns) {
            f.dated_ahead.push(DatedAhead {
                snapshot: s.id.to_hex(),
                space: s.snapshot.space.clone(),
                from: r.sender_name.clone(),
                time_ns: s.snapshot.time_ns,
                arrived_ns: r.arrived_ns,
            });
        }
        if let Some(m) = puce_core::history::shrink(snaps, s) {
            f.mass_deletions.push(MassDeletion {
                snapshot: s.id.to_hex(),
                space: s.snapshot.space.clone(),
                from: r.sender_name.clone(),
                parent: m.parent.to_hex(),
                files_before: m.files_before,
                files_after: m.files_after,
            });
        }
    }
    let now = puce_core::forgotten::hold_now();
    for h in puce_core::forgotten::holds(repo)? {
        if h.until_ns > now && snaps.iter().any(|s| s.id == h.snapshot) {
            f.held.push(Held {
                snapshot: h.snapshot.to_hex(),
                peer: h.peer,
                until_ns: h.until_ns,
            });
        }
    }
    Ok(f)
}
