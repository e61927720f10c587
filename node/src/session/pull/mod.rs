//! Pulling spaces from the other node of a connection: the receiver drives.
//!
//! One function per stage of `docs/protocol.md` ("Pull"), each taking what the stages before
//! it produced:
//! 1. **Register** ([`pull`]): a writer session that gc spares, packs an interrupted transfer
//!    left unindexed, and this node's reach scopes brought up to date.
//! 2. **List** ([`list::list`] → [`list::Listed`]): `ListSpaces` gives the peer's snapshots of
//!    each space; after the peer's forgets, those this node lacks are new.
//! 3. **Records** ([`list::records`] → [`list::Received`]): `GetSnapshots` fetches the new
//!    records; each is checked against its id and its space.
//! 4. **Trees** ([`trees::walk`] → [`trees::Trees`]): breadth-first from the new roots, one
//!    wave of `GetObjects` per tree depth, skipping every tree present for the peer (the
//!    presence rule, [`PeerPresence`]), refusing trees deeper than [`MAX_TREE_DEPTH`]. Trees
//!    are verified and held in memory (at most [`MAX_PULL_TREE_BYTES`]); the chunks they name
//!    that are not present for the peer are collected.
//! 5. **Data** ([`data::fetch`] → [`Stored`]): the missing chunks, in batches over several
//!    streams at once, verified against their ids and stored as they arrive (as stored by the
//!    sender, compressed), made durable every `checkpoint` bytes.
//! 6. **Commit** ([`commit::commit`]): the trees are stored children first, the saver
//!    finishes (everything durable and indexed), everything the new snapshots reach is checked
//!    to be indexed and their depth measured, then each record is written after its receipt,
//!    parents first: a snapshot becomes visible only when everything it reaches is stored.
//! 7. **Merge** ([`merge::merge`]): a space left with several heads gets a merge snapshot
//!    ([`puce_core::merge`]).
//!
//! Cut at any point, the next pull skips what was stored: chunks up to the last checkpoint,
//! and every complete subtree.

use std::sync::Arc;
use std::time::Instant;

use puce_core::format::tree::MAX_TREE_DEPTH;
use puce_core::reach;
use puce_core::saver::Saver;
use puce_core::{ObjectId, Repo, SnapshotEntry, SnapshotId};

use super::{Conn, blocking, misbehaved};
use crate::error::{Error, ErrorKind, Result};
use crate::protocol::{Code, SpaceState};
use crate::report::SpaceReport;

mod commit;
mod data;
mod fetch;
mod list;
mod merge;
mod quota;
mod trees;

/// Plaintext bytes of new trees one pull holds in memory before its commit (about 5 million
/// files). The trees are held as received (compressed), and the chunk ids they name that this
/// node lacks, once each (at most one per 32 bytes of plaintext tree): a pull holds at most
/// about three times this. A pull of snapshots with more is refused before it goes further.
pub const MAX_PULL_TREE_BYTES: u64 = 512 << 20;

/// [`MAX_PULL_TREE_BYTES`], or in debug builds the value of `PUCE_TEST_MAX_PULL_TREE_BYTES`
/// (a test hook: tests cannot send 512 MiB of listings; release builds ignore it).
fn max_pull_tree_bytes() -> u64 {
    if cfg!(debug_assertions)
        && let Some(n) = std::env::var("PUCE_TEST_MAX_PULL_TREE_BYTES")
            .ok()
            .and_then(|v| v.parse().ok())
    {
        return n;
    }
    MAX_PULL_TREE_BYTES
}

/// What a pull did.
#[derive(Debug, Clone, Default)]
pub struct PullOutcome {
    /// One report per space.
    pub reports: Vec<SpaceReport>,
    /// What the peer had, per space, at the start.
    pub peer_spaces: Vec<SpaceState>,
}

/// A saver that is finished when dropped (everything verified so far made durable), or
/// aborted (pack in progress discarded) when poisoned.
struct Guard {
    saver: Option<Saver>,
    /// Set when this node cut the peer off for misbehaving: nothing more of what it sent may
    /// be sealed. A failure of the network, of the peer (its close code, whatever it is) or a
    /// cancellation does not poison: what arrived was verified, and is kept for the next try.
    poisoned: bool,
}

impl Guard {
    /// The saver, for a stage to use and give back.
    fn take(&mut self) -> Result<Saver> {
        self.saver
            .take()
            .ok_or_else(|| Error::internal("saver already taken"))
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(s) = self.saver.take() {
            if self.poisoned {
                s.abort();
            } else {
                // Network failure or cancellation: keep what arrived (it is verified), so that
                // the next attempt does not fetch it again.
                let _ = s.finish();
            }
        }
    }
}

/// The refusal of trees nested deeper than [`MAX_TREE_DEPTH`] (at tree `at`).
fn refuse_deep(conn: &Conn, spaces: &[String], at: &ObjectId) -> Error {
    misbehaved(
        conn,
        Code::BadObject,
        format!(
            "sent snapshots of space '{}' with directories nested deeper than {MAX_TREE_DEPTH} \
             levels (at tree {at}), more than puce accepts (docs/format.md, \"Trees\"): refused",
            spaces.join("', '")
        ),
    )
}

/// Pull `spaces` from the peer of `conn`. Each must be one the peer may write here.
pub async fn pull(conn: &Arc<Conn>, spaces: &[String]) -> Result<PullOutcome> {
    for s in spaces {
        if !conn.peer.may_push(s) {
            return Err(Error::new(
                ErrorKind::NotAllowed,
                format!(
                    "node.toml does not let peer '{}' write space '{s}' here: add \"push\" to \
                     spaces.{s} of that peer to receive it",
                    conn.peer.name
                ),
            ));
        }
    }
    let mut spaces = spaces.to_vec();
    spaces.sort();
    spaces.dedup();
    // One pull per space at a time in this process.
    let mut guards = Vec::new();
    for s in &spaces {
        guards.push(conn.ctx.space_lock(s).lock_owned().await);
    }
    let repo = conn.ctx.repo.clone();
    let what = format!("sync from {}", conn.peer.name);
    let peer_id = conn.peer.id.0;
    let has_quota = conn.peer.quota.is_some();
    // 1. Register the writer session before looking at what this node has: gc spares it.
    let (saver, local, account) = blocking(move || {
        // Pulls from a peer with a quota run one at a time (each counts what the others
        // stored).
        let lock = if has_quota {
            Some(puce_core::ledger::lock_peer(&repo, &peer_id)?)
        } else {
            None
        };
        let saver = Saver::with_session(repo.clone(), 1, &what)?;
        // Packs an interrupted transfer published but did not index hold data this node has:
        // index them rather than fetch it again.
        puce_core::orphans::index_orphan_packs(&repo)?;
        // What the peer may be told this node holds (the presence rule), up to date.
        reach::update(&repo)?;
        // The data the peer sends is recorded as known to it as soon as it is indexed, so
        // that an interrupted transfer is not sent again.
        saver.set_reach_scope(repo.index().scope_or_create(&reach::peer_key(&peer_id))?);
        let local = repo.snapshots()?;
        // The peer's use of its quota, if it has one: recorded at the end of its last pull,
        // or a walk of every snapshot when the repository changed otherwise since.
        let account = match lock {
            Some(lock) => {
                let a = puce_core::ledger::begin_pull(&repo, &peer_id, &lock)?;
                Some((a, lock))
            }
            None => None,
        };
        Ok((saver, local, account))
    })
    .await?;
    let mut guard = Guard {
        saver: Some(saver),
        poisoned: false,
    };
    let p = Pull {
        conn,
        spaces: &spaces,
        repo: conn.ctx.repo.clone(),
        t0: Instant::now(),
        quota: quota::Quota::new(conn, account),
    };
    let r = p.run(local, &mut guard).await;
    if r.is_err() && conn.was_cut_off() {
        guard.poisoned = true;
    }
    let out = r?;
    drop(guards);
    Ok(out)
}

/// What every stage of one pull works with.
struct Pull<'a> {
    conn: &'a Arc<Conn>,
    /// The spaces pulled, sorted, each once.
    spaces: &'a [String],
    repo: Arc<Repo>,
    /// When the pull started, for the debug log.
    t0: Instant,
    /// The peer's quota, if it has one.
    quota: Option<quota::Quota>,
}

impl Pull<'_> {
    /// Stages 2 to 7, `local` being this node's snapshots when the pull registered.
    async fn run(&self, local: Vec<SnapshotEntry>, guard: &mut Guard) -> Result<PullOutcome> {
        let listed = list::list(self, &local).await?;
        // Nothing new is taken from a peer at its quota (its forgets were applied: they may
        // have freed space).
        if let Some(q) = &self.quota
            && !listed.wanted.is_empty()
        {
            q.check_start()?;
        }
        let records = list::records(self, &listed.wanted).await?;
        tracing::debug!(
            "pull: {} new records after {:?}",
            records.len(),
            self.t0.elapsed()
        );
        let mut trees = trees::walk(self, &listed.presence, &records).await?;
        tracing::debug!(
            "pull: {} trees and {} missing chunks after {:?}",
            trees.pending.len(),
            trees.chunks.len(),
            self.t0.elapsed()
        );
        let chunks = std::mem::take(&mut trees.chunks);
        let tree_bytes: u64 = trees
            .pending
            .values()
            .map(|t| t.obj.data.len() as u64)
            .sum();
        let data = data::fetch(self, guard, chunks).await?;
        tracing::debug!("pull: data stored after {:?}", self.t0.elapsed());
        // The trees count too (those this node has are given back after the commit, which
        // is over by then).
        if let Some(q) = &self.quota {
            q.reserve(tree_bytes)?;
        }
        let tree_stats = commit::commit(self, guard, &records, trees).await?;
        tracing::debug!("pull: committed after {:?}", self.t0.elapsed());
        let mut reports = listed.reports;
        let stored = data.plus(tree_stats);
        merge::tally(&mut reports, &records, stored);
        merge::merge(self, &mut reports, &records).await?;
        if let Some(q) = &self.quota {
            let delivered: Vec<SnapshotId> = records.iter().map(|r| r.entry.id).collect();
            q.finish(self.repo.clone(), delivered, stored.bytes, stored.present)
                .await?;
        }
        Ok(PullOutcome {
            reports,
            peer_spaces: listed.peer_spaces,
        })
    }
}

/// What a pull may count as present in a transfer with the peer: objects reachable from the
/// spaces it may read here or from what it delivered before ([`reach`]). Anything else is
/// asked for, even when this node holds it in another space: the peer learns nothing of other
/// spaces, and a tree it sends can only name objects it sent or could have.
#[derive(Clone)]
struct PeerPresence {
    peer: [u8; 32],
    spaces: Arc<Vec<String>>,
}

impl PeerPresence {
    fn new(conn: &Conn, local: &[SnapshotEntry]) -> PeerPresence {
        let mut spaces: Vec<String> = local
            .iter()
            .map(|s| s.snapshot.space.clone())
            .filter(|s| conn.peer.may_pull(s))
            .collect();
        spaces.sort();
        spaces.dedup();
        PeerPresence {
            peer: conn.peer.id.0,
            spaces: Arc::new(spaces),
        }
    }

    fn open(&self, repo: &Repo) -> Result<reach::Presence> {
        Ok(reach::Presence::for_peer(repo, &self.peer, &self.spaces)?)
    }
}

/// Objects a stage stored: how many, their stored and plaintext bytes.
#[derive(Debug, Default, Clone, Copy)]
struct Stored {
    objects: u64,
    bytes: u64,
    raw: u64,
    /// Objects the peer sent that this node had already (not stored).
    present: u64,
}

impl Stored {
    /// Count one object of `bytes` stored bytes and `raw` plaintext bytes.
    fn add(&mut self, bytes: u64, raw: u64) {
        self.objects += 1;
        self.bytes += bytes;
        self.raw += raw;
    }

    /// Both counts together.
    fn plus(self, o: Stored) -> Stored {
        Stored {
            objects: self.objects + o.objects,
            bytes: self.bytes + o.bytes,
            raw: self.raw + o.raw,
            present: self.present + o.present,
        }
    }
}
