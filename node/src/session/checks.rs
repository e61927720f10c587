//! Revision 4: which snapshots a peer holds complete and since when its checks have read all of
//! its data (`GetChecks`, `Checks`), for the replica rules ([`crate::replicas`]).
//!
//! A node speaks for itself here: nobody can verify what it says of its own checks, and the
//! rules trust it (`docs/protocol.md`, "Checks"). What can be verified is: it is asked only
//! about snapshots it offered (`SpaceList`) or took (`PushDone`) on this connection, and may
//! claim only those; an answer about anything else, or out of order, breaks the protocol.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use puce_core::SnapshotId;

use super::serve::{Failure, at_most, blocking as serve_blocking, write};
use super::{Conn, blocking, misbehaved};
use crate::error::Result;
use crate::protocol::{
    self, Checks, Code, GetChecks, MAX_CHECKS_PER_REQUEST, Message, SpaceCheck, SpaceIds,
    SpaceState,
};
use crate::state::{NodeState, PeerCheck};
use crate::transport::Sender;

/// What a peer said of its copies at a sync this node started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reported {
    /// It speaks this older revision, without `GetChecks`.
    Unsupported(u16),
    /// The spaces asked about, and what it said of those it lets this node read or write.
    Said {
        /// Every space asked about.
        asked: Vec<String>,
        /// Its answer, per space.
        checks: Vec<(String, PeerCheck)>,
    },
}

/// Ask the peer of `conn` about this node's heads of the spaces of `peer_spaces` (what it
/// offered or took on this connection), in batches of [`MAX_CHECKS_PER_REQUEST`].
pub async fn ask(conn: &Arc<Conn>, peer_spaces: &[SpaceState]) -> Result<Reported> {
    if conn.version() < protocol::CHECKS_VERSION {
        return Ok(Reported::Unsupported(conn.version()));
    }
    let repo = conn.ctx.repo.clone();
    let (snapshots, lineage) = blocking(move || {
        let s = repo.snapshots()?;
        let l = puce_core::forgotten::lineage(&repo, &s)?;
        Ok((s, l))
    })
    .await?;
    let mut batches: Vec<Vec<SpaceIds>> = Vec::new();
    let mut room = 0;
    for st in peer_spaces {
        let offered: HashSet<&SnapshotId> = st.snapshots.iter().chain(&st.heads).collect();
        let ids: Vec<SnapshotId> = puce_core::history::heads(&snapshots, &lineage, &st.name)
            .iter()
            .map(|s| s.id)
            .filter(|id| offered.contains(id))
            .take(MAX_CHECKS_PER_REQUEST)
            .collect();
        // A space counts as at least one, so that a batch has at most as many spaces too.
        let n = ids.len().max(1);
        if batches.is_empty() || n > room {
            batches.push(Vec::new());
            room = MAX_CHECKS_PER_REQUEST;
        }
        room -= n;
        if let Some(b) = batches.last_mut() {
            b.push(SpaceIds {
                name: st.name.clone(),
                ids,
            });
        }
    }
    let mut asked = Vec::new();
    let mut checks = Vec::new();
    for spaces in batches {
        let asked_ns = puce_core::index::now_ns();
        let mut recv = conn
            .request(&Message::GetChecks(GetChecks {
                spaces: spaces.clone(),
            }))
            .await?;
        conn.counters
            .round_trips
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let answer = match conn.answer(&mut recv).await? {
            Message::Checks(c) => c,
            other => {
                let why = format!("answered GetChecks with {}", other.name());
                return Err(misbehaved(conn, Code::Protocol, why));
            }
        };
        checks.extend(accept(conn, &spaces, answer, asked_ns)?);
        asked.extend(spaces.into_iter().map(|s| s.name));
    }
    Ok(Reported::Said { asked, checks })
}

/// Check an answer against the request (once, here) and turn it into what the node state
/// keeps: spaces asked for, in order, each once; held ids asked for, in order; a time a node
/// can hold. A check time after the question is taken as the question's time.
pub(super) fn accept(
    conn: &Conn,
    asked: &[SpaceIds],
    answer: Checks,
    asked_ns: i64,
) -> Result<Vec<(String, PeerCheck)>> {
    let mut next = 0;
    let mut out = Vec::new();
    for c in answer.spaces {
        let Some(i) = asked[next..].iter().position(|s| s.name == c.name) else {
            let why = format!(
                "answered GetChecks about space '{}', not asked for or out of order",
                c.name
            );
            return Err(misbehaved(conn, Code::Protocol, why));
        };
        let ids = &asked[next + i].ids;
        next += i + 1;
        let mut at = 0;
        for h in &c.held {
            let Some(j) = ids[at..].iter().position(|x| x == h) else {
                let why = format!(
                    "said it holds snapshot {h} of space '{}', not asked about or out of order",
                    c.name
                );
                return Err(misbehaved(conn, Code::Protocol, why));
            };
            at += j + 1;
        }
        let checked_ns = match c.checked_ns {
            None => None,
            Some(t) => match i64::try_from(t) {
                Ok(t) => Some(t.min(asked_ns)),
                Err(_) => {
                    let why = format!("said it checked space '{}' after the year 2262", c.name);
                    return Err(misbehaved(conn, Code::Protocol, why));
                }
            },
        };
        out.push((
            c.name,
            PeerCheck {
                asked_ns,
                held: c.held.iter().map(|h| h.to_hex()).collect(),
                checked_ns,
                damaged: c.damaged,
            },
        ));
    }
    Ok(out)
}

/// Answer `GetChecks`: for each space named that the peer may read or write, the ids named that
/// are snapshots of it here (not forgotten), and this node's checks (the same for every space:
/// a check reads the packs, whatever spaces they serve). A peer that may only write a space
/// (a backup site it pushes to) must hear about it too; it learns only whether ids it names
/// are held, and a writer names the snapshots it pushed.
pub(super) async fn serve(
    conn: &Arc<Conn>,
    send: &mut Sender,
    r: GetChecks,
) -> Result<(), Failure> {
    at_most("spaces", r.spaces.len(), MAX_CHECKS_PER_REQUEST)?;
    let ids: usize = r.spaces.iter().map(|s| s.ids.len()).sum();
    at_most("snapshot ids", ids, MAX_CHECKS_PER_REQUEST)?;
    let mut seen = HashSet::new();
    if let Some(s) = r.spaces.iter().find(|s| !seen.insert(&s.name)) {
        return Err(Failure::CutOff(
            Code::Protocol,
            format!("it asked about space '{}' twice in one GetChecks", s.name),
        ));
    }
    let c = conn.clone();
    let answer = serve_blocking(move || answer(&c, &r)).await?;
    write(conn, send, &Message::Checks(answer)).await
}

fn answer(conn: &Conn, r: &GetChecks) -> Result<Checks> {
    let repo = &conn.ctx.repo;
    let forgotten = puce_core::forgotten::ids(repo)?;
    let all = repo.snapshots()?;
    let space_of: HashMap<SnapshotId, &str> = all
        .iter()
        .filter(|s| !forgotten.contains(&s.id))
        .map(|s| (s.id, s.snapshot.space.as_str()))
        .collect();
    let check = NodeState::load(&conn.ctx.dir)?.check;
    let checked_ns = check
        .as_ref()
        .and_then(|c| c.covered_ns())
        .and_then(|t| u64::try_from(t).ok());
    let damaged = check.as_ref().is_some_and(|c| c.damaged());
    let spaces = r
        .spaces
        .iter()
        .filter(|s| conn.peer.may_pull(&s.name) || conn.peer.may_push(&s.name))
        .map(|s| {
            let mut once = HashSet::new();
            SpaceCheck {
                name: s.name.clone(),
                held: s
                    .ids
                    .iter()
                    .filter(|id| space_of.get(id) == Some(&s.name.as_str()) && once.insert(**id))
                    .copied()
                    .collect(),
                checked_ns,
                damaged,
            }
        })
        .collect();
    Ok(Checks { spaces })
}
