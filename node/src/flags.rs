//! What a node flags about the snapshots its peers sent (issue 18's history protections):
//! snapshots dated more than a day after they arrived, snapshots holding far fewer files than
//! their parent, and snapshots a peer forgot that a protection period still keeps. Read by
//! `puce node status` and by the notifications; computed from the snapshot records, receipts
//! and hold records (no walk of the trees); and the events of what a blind holder flagged
//! about its owners' manifests (recorded in the node state).

use serde::Serialize;

use puce_core::{Repo, SnapshotEntry};

use crate::error::Result;
use crate::notify::{Event, date};
use crate::state::NodeState;

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

/// The events of what this node flagged about the manifests its owners sent it to hold blind
/// (a mass removal, a rollback refused): one-offs, each sent once.
pub(crate) fn blind_events(state: &NodeState, out: &mut Vec<Event>) {
    for (id, p) in &state.peers {
        for b in &p.blind_flags {
            let (title, message) = if b.kind == "rollback" {
                (
                    format!("{} sent an older manifest to hold blind: refused", p.name),
                    format!(
                        "On {}, {} sent a manifest of sequence {}, older than the one kept here \
                         ({}): a rollback (its node restored from an old state, or someone \
                         replaying an old copy). It was refused; the copy held here stays as it \
                         was. Ask that node's admins.",
                        date(b.at_ns),
                        p.name,
                        b.seq_after,
                        b.seq_before
                    ),
                )
            } else {
                (
                    format!("{} dropped most of what this node holds for it", p.name),
                    format!(
                        "On {}, {} sent a manifest that drops {} of the {} bytes held for it \
                         here: a mass removal. {} Check with that node's admins whether it was \
                         wanted (a break-in can look like this).",
                        date(b.at_ns),
                        p.name,
                        b.dropped_bytes,
                        b.bytes_before,
                        match b.kept_until_ns {
                            Some(t) => format!(
                                "What it dropped is kept here until {} (keep_min), and its \
                                 nodes can still take it back.",
                                date(t)
                            ),
                            None => "No protection period (keep_min) is set for it here: what \
                                     it dropped is freed."
                                .to_string(),
                        }
                    ),
                )
            };
            out.push(Event {
                key: format!("blind_{}/{id}/{}", b.kind, b.at_ns),
                kind: if b.kind == "rollback" {
                    "blind_rollback"
                } else {
                    "blind_mass_removal"
                },
                severity: "critical",
                state: "flagged".into(),
                title,
                message,
                one_off: true,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each blind-holding flag in the node state is a one-off event of its own, saying what
    /// was dropped or refused and whether a protection period keeps it.
    #[test]
    fn blind_flags_are_one_off_events() {
        let mut st = NodeState::default();
        let p = st.peers.entry("ID".into()).or_default();
        p.name = "grenoble".into();
        p.flag_blind(crate::state::BlindFlag {
            kind: "mass_removal".into(),
            at_ns: 1,
            seq_before: 5,
            seq_after: 6,
            bytes_before: 1000,
            dropped_bytes: 900,
            kept_until_ns: Some(2),
        });
        p.flag_blind(crate::state::BlindFlag {
            kind: "rollback".into(),
            at_ns: 3,
            seq_before: 6,
            seq_after: 4,
            ..Default::default()
        });
        let mut out = Vec::new();
        blind_events(&st, &mut out);
        assert_eq!(
            out.iter()
                .map(|e| (e.key.as_str(), e.kind, e.one_off))
                .collect::<Vec<_>>(),
            [
                ("blind_mass_removal/ID/1", "blind_mass_removal", true),
                ("blind_rollback/ID/3", "blind_rollback", true)
            ]
        );
        assert!(
            out[0].message.contains("drops 900 of the 1000 bytes")
                && out[0].message.contains("kept here until"),
            "{}",
            out[0].message
        );
        assert!(out[1].message.contains("sequence 4"), "{}", out[1].message);
        for n in 0..40 {
            st.peers
                .get_mut("ID")
                .unwrap()
                .flag_blind(crate::state::BlindFlag {
                    at_ns: n,
                    ..Default::default()
                });
        }
        let kept = &st.peers["ID"].blind_flags;
        assert_eq!(kept.len(), crate::state::MAX_BLIND_FLAGS);
        assert_eq!(kept.last().unwrap().at_ns, 39, "the newest are kept");
    }
}
