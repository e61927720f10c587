//! Stages 2 and 3 of a pull: what the peer has (`ListSpaces`, then its forgets), and the
//! records of the snapshots that are new here (`GetSnapshots`), each checked on receipt.

use std::collections::HashSet;
use std::sync::atomic::Ordering;

use puce_core::format::snapshot::Snapshot;
use puce_core::{SnapshotEntry, SnapshotId};

use super::fetch::expect_end;
use super::{PeerPresence, Pull};
use crate::error::Result;
use crate::protocol::{self, Code, GetSnapshots, ListSpaces, Message, SnapshotRecord, SpaceState};
use crate::report::SpaceReport;
use crate::session::{Conn, misbehaved};

/// What the peer listed, and what is new here.
pub(super) struct Listed {
    /// The peer's spaces, as listed.
    pub peer_spaces: Vec<SpaceState>,
    /// The new snapshots, each with the space it was listed under, each once per space.
    pub wanted: Vec<(SnapshotId, String)>,
    /// One report per space, filled in by the later stages.
    pub reports: Vec<SpaceReport>,
    /// What may count as present for the peer.
    pub presence: PeerPresence,
}

/// A snapshot record received and checked: its id, space and strings.
pub(super) struct Received {
    /// The record, decoded.
    pub entry: SnapshotEntry,
    /// Its bytes, as received (they hash to its id).
    pub bytes: Vec<u8>,
}

/// Stage 2: list the spaces pulled, apply the peer's forgets, and tell what is new.
pub(super) async fn list(p: &Pull<'_>, local: &[SnapshotEntry]) -> Result<Listed> {
    let conn = p.conn;
    let mut recv = conn
        .request(&Message::ListSpaces(ListSpaces {
            spaces: p.spaces.to_vec(),
        }))
        .await?;
    conn.counters.round_trips.fetch_add(1, Ordering::Relaxed);
    let list = match conn.answer(&mut recv).await? {
        Message::SpaceList(l) => l,
        other => {
            return Err(misbehaved(
                conn,
                Code::Protocol,
                format!("answered ListSpaces with {}", other.name()),
            ));
        }
    };
    // Forgets of the peer first: a snapshot forgotten here is never new.
    let forgotten = crate::session::forget::before_pull(conn, p.spaces, &list, local).await?;
    let presence = PeerPresence::new(conn, local);
    // A snapshot is new unless this node holds it in the same space (an id held in another
    // space is asked for, and then refused as not of the space it was listed under).
    let local_ids: HashSet<(SnapshotId, &str)> = local
        .iter()
        .map(|s| (s.id, s.snapshot.space.as_str()))
        .collect();
    let mut reports = Vec::new();
    let mut wanted: Vec<(SnapshotId, String)> = Vec::new();
    for st in &list.spaces {
        if !p.spaces.contains(&st.name) {
            return Err(misbehaved(
                conn,
                Code::Protocol,
                format!("listed space '{}', which was not asked for", st.name),
            ));
        }
        let mut seen = HashSet::new();
        for id in &st.snapshots {
            if !local_ids.contains(&(*id, st.name.as_str()))
                && !forgotten.contains(id)
                && seen.insert(*id)
            {
                wanted.push((*id, st.name.clone()));
            }
        }
        reports.push(SpaceReport {
            space: st.name.clone(),
            direction: "pull".into(),
            result: "ok".into(),
            ..SpaceReport::default()
        });
    }
    for s in p.spaces {
        if !list.spaces.iter().any(|st| &st.name == s) {
            return Err(misbehaved(
                conn,
                Code::Protocol,
                format!("did not list space '{s}'"),
            ));
        }
    }
    Ok(Listed {
        peer_spaces: list.spaces,
        wanted,
        reports,
        presence,
    })
}

/// Stage 3: fetch the records of `wanted`, in batches, each checked as it arrives.
pub(super) async fn records(
    p: &Pull<'_>,
    wanted: &[(SnapshotId, String)],
) -> Result<Vec<Received>> {
    let conn = p.conn;
    let mut records = Vec::new();
    for batch in wanted.chunks(protocol::MAX_SNAPSHOTS_PER_REQUEST) {
        let ids: Vec<SnapshotId> = batch.iter().map(|b| b.0).collect();
        let mut recv = conn
            .request(&Message::GetSnapshots(GetSnapshots { ids }))
            .await?;
        conn.counters.round_trips.fetch_add(1, Ordering::Relaxed);
        for (id, space) in batch {
            let rec = match conn.answer(&mut recv).await? {
                Message::Snapshot(r) if r.id == *id => r,
                other => {
                    return Err(misbehaved(
                        conn,
                        Code::Protocol,
                        format!("answered GetSnapshots with {} out of order", other.name()),
                    ));
                }
            };
            records.push(check_record(conn, id, space, rec)?);
        }
        expect_end(conn, &mut recv, batch.len()).await?;
    }
    Ok(records)
}

/// A record received for snapshot `id` of `space`: it must hash to its id, hold only
/// printable strings, and be of that space; else the peer is cut off.
fn check_record(
    conn: &Conn,
    id: &SnapshotId,
    space: &str,
    rec: SnapshotRecord,
) -> Result<Received> {
    let snap = match Snapshot::decode(&rec.bytes, Some(id)) {
        Ok(s) => s,
        Err(e) => {
            return Err(misbehaved(
                conn,
                Code::BadObject,
                format!("sent snapshot {id} that does not match its id or cannot be read ({e})"),
            ));
        }
    };
    if let Err(e) = snap.check_strings() {
        return Err(misbehaved(
            conn,
            Code::BadObject,
            format!("sent snapshot {id} with {e}"),
        ));
    }
    if snap.space != space {
        return Err(misbehaved(
            conn,
            Code::Protocol,
            format!(
                "sent snapshot {id} of space '{}' as one of space '{space}'",
                snap.space
            ),
        ));
    }
    Ok(Received {
        entry: SnapshotEntry {
            id: *id,
            snapshot: snap,
        },
        bytes: rec.bytes,
    })
}
