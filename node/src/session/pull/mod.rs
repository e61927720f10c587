//! Pulling spaces from the other node of a connection: the receiver drives.
//!
//! The states, in order:
//! 1. **Listed**: `ListSpaces` gives the peer's snapshots of each space; those this node lacks
//!    are new.
//! 2. **Records**: `GetSnapshots` fetches the new records; each is checked against its id and
//!    its space.
//! 3. **Trees**: breadth-first from the new roots, one wave of `GetObjects` per tree depth,
//!    skipping every tree this node already has (a tree is stored only after everything it
//!    reaches, so having it means having its whole subtree). Trees are verified and held in
//!    memory; the chunks they name that this node lacks are collected.
//! 4. **Data**: the missing chunks, in batches over several streams at once, verified against
//!    their ids and stored as they arrive (as stored by the sender, compressed), made durable
//!    every `checkpoint` bytes.
//! 5. **Commit**: the trees are stored children first, the saver finishes (everything durable
//!    and indexed), then the snapshot records are written, parents first: a snapshot becomes
//!    visible only when everything it reaches is stored.
//! 6. **Merge**: a space left with several heads gets a merge snapshot ([`puce_core::merge`]).
//!
//! Cut at any point, the next pull skips what was stored: chunks up to the last checkpoint,
//! and every complete subtree.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use puce_core::format::pack::Kind;
use puce_core::format::receipt::Receipt;
use puce_core::format::snapshot::Snapshot;
use puce_core::format::tree::{MAX_TREE_DEPTH, Node, Tree, check_depth, subdirs};
use puce_core::format::{printable, printable_bytes};
use puce_core::reach;
use puce_core::repo::{decode_object, verify_object};
use puce_core::saver::Saver;
use puce_core::{ObjectId, SnapshotEntry, SnapshotId};

use super::Conn;
use crate::error::{Error, ErrorKind, Result};
use crate::protocol::{
    self, Code, GetObjects, GetSnapshots, ListSpaces, Message, Object, SpaceState,
};
use crate::report::{ConflictReport, SpaceReport};

/// Chunks asked for in the first requests of a pull, and at least in each.
const CHUNK_BATCH: usize = 64;
/// Bytes of chunks a request asks for, estimated from the average size received so far: small
/// files go in batches of up to `MAX_OBJECTS_PER_REQUEST` chunks, so that a pull of many small
/// files makes few requests.
const BATCH_BYTES: u64 = 16 << 20;
/// Threads verifying and storing received chunks.
const VERIFIERS: usize = 2;
/// Plaintext bytes of new trees one pull holds in memory before its commit (about 5 million
/// files). The trees are held as received (compressed), and the chunk ids they name that this
/// node lacks, once each (at most one per 32 bytes of plaintext tree): a pull holds at most
/// about three times this. A pull of snapshots with more is refused before it goes further.
pub const MAX_PULL_TREE_BYTES: u64 = 512 << 20;

/// What a pull did.
#[derive(Debug, Clone, Default)]
pub struct PullOutcome {
    /// One report per space.
    pub reports: Vec<SpaceReport>,
    /// What the peer had, per space, at the start.
    pub peer_spaces: Vec<SpaceState>,
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::internal(format!("a worker thread failed: {e}")))?
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

pub(super) fn misbehaved(conn: &Conn, code: Code, why: String) -> Error {
    conn.cut_off(code, &why);
    let kind = if code == Code::BadObject {
        ErrorKind::BadObject
    } else {
        ErrorKind::Protocol
    };
    Error::new(
        kind,
        format!(
            "{} {why}: cut off; nothing it sent in this transfer was made visible",
            conn.label
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
    // Register the writer session before looking at what this node has: gc spares it.
    let (saver, local) = blocking(move || {
        let saver = Saver::with_session(repo.clone(), 1, &what)?;
        // Packs an interrupted transfer published but did not index hold data this node has:
        // index them rather than fetch it again.
        puce_core::recover::index_orphan_packs(&repo)?;
        // What the peer may be told this node holds (the presence rule), up to date.
        reach::update(&repo)?;
        // The data the peer sends is recorded as known to it as soon as it is indexed, so
        // that an interrupted transfer is not sent again.
        saver.set_reach_scope(repo.index().scope_or_create(&reach::peer_key(&peer_id))?);
        let local = repo.snapshots()?;
        Ok((saver, local))
    })
    .await?;
    let mut guard = Guard {
        saver: Some(saver),
        poisoned: false,
    };
    let r = run(conn, &spaces, local, &mut guard).await;
    if r.is_err() && conn.was_cut_off() {
        guard.poisoned = true;
    }
    let out = r?;
    drop(guards);
    Ok(out)
}

struct PendingTree {
    obj: Object,
    subdirs: Vec<ObjectId>,
}

/// What may count as present in a transfer with the peer: objects reachable from the spaces it
/// may read here or from what it delivered before ([`reach`]). Anything else is asked for,
/// even when this node holds it in another space: the peer learns nothing of other spaces,
/// and a tree it sends can only name objects it sent or could have.
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

    fn open(&self, repo: &puce_core::Repo) -> Result<reach::Presence> {
        Ok(reach::Presence::for_peer(repo, &self.peer, &self.spaces)?)
    }
}

async fn run(
    conn: &Arc<Conn>,
    spaces: &[String],
    local: Vec<SnapshotEntry>,
    guard: &mut Guard,
) -> Result<PullOutcome> {
    let ctx = conn.ctx.clone();
    let repo = ctx.repo.clone();
    let t0 = std::time::Instant::now();

    // 1. Listed.
    let mut recv = conn
        .request(&Message::ListSpaces(ListSpaces {
            spaces: spaces.to_vec(),
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
    let forgotten = super::forget::before_pull(conn, spaces, &list, &local).await?;
    let presence = PeerPresence::new(conn, &local);
    // A snapshot is new unless this node holds it in the same space (an id held in another
    // space is asked for, and then refused as not of the space it was listed under).
    let local_ids: HashSet<(SnapshotId, &str)> = local
        .iter()
        .map(|s| (s.id, s.snapshot.space.as_str()))
        .collect();
    let mut reports = Vec::new();
    let mut wanted: Vec<(SnapshotId, String)> = Vec::new();
    for st in &list.spaces {
        if !spaces.contains(&st.name) {
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
    for s in spaces {
        if !list.spaces.iter().any(|st| &st.name == s) {
            return Err(misbehaved(
                conn,
                Code::Protocol,
                format!("did not list space '{s}'"),
            ));
        }
    }

    // 2. Records.
    let mut records: Vec<(SnapshotEntry, Vec<u8>)> = Vec::new();
    for batch in wanted.chunks(protocol::MAX_SNAPSHOTS_PER_REQUEST) {
        let ids: Vec<SnapshotId> = batch.iter().map(|b| b.0).collect();
        let mut recv = conn
            .request(&Message::GetSnapshots(GetSnapshots { ids: ids.clone() }))
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
            let snap = match Snapshot::decode(&rec.bytes, Some(id)) {
                Ok(s) => s,
                Err(e) => {
                    return Err(misbehaved(
                        conn,
                        Code::BadObject,
                        format!(
                            "sent snapshot {id} that does not match its id or cannot be read ({e})"
                        ),
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
            if &snap.space != space {
                return Err(misbehaved(
                    conn,
                    Code::Protocol,
                    format!(
                        "sent snapshot {id} of space '{}' as one of space '{space}'",
                        snap.space
                    ),
                ));
            }
            records.push((
                SnapshotEntry {
                    id: *id,
                    snapshot: snap,
                },
                rec.bytes,
            ));
        }
        expect_end(conn, &mut recv, batch.len()).await?;
    }

    tracing::debug!(
        "pull: {} new records after {:?}",
        records.len(),
        t0.elapsed()
    );
    // 3. Trees.
    let roots: Vec<ObjectId> = {
        let mut seen = HashSet::new();
        records
            .iter()
            .map(|r| r.0.snapshot.root)
            .filter(|r| seen.insert(*r))
            .collect()
    };
    let r2 = repo.clone();
    let p2 = presence.clone();
    let mut level: Vec<ObjectId> = blocking(move || {
        let present = p2.open(&r2)?;
        let mut out = Vec::new();
        for id in roots {
            if !present.has(&id)? {
                out.push(id);
            }
        }
        Ok(out)
    })
    .await?;
    let top: Vec<ObjectId> = level.clone();
    let mut pending: HashMap<ObjectId, PendingTree> = HashMap::new();
    let mut chunks: Vec<ObjectId> = Vec::new();
    let mut chunk_set: HashSet<ObjectId> = HashSet::new();
    let streams = ctx.config.streams;
    // Trees of wave `depth` are that many levels below a root.
    let mut depth = 0;
    let held_trees = Arc::new(std::sync::atomic::AtomicU64::new(0));
    while !level.is_empty() {
        if depth > MAX_TREE_DEPTH {
            return Err(refuse_deep(conn, spaces, &level[0]));
        }
        let batches: Vec<Vec<ObjectId>> = level
            .chunks(protocol::MAX_OBJECTS_PER_REQUEST)
            .map(|c| c.to_vec())
            .collect();
        let waves = batches.len().div_ceil(streams) as u64;
        conn.counters
            .round_trips
            .fetch_add(waves, Ordering::Relaxed);
        let got = fetch_parallel(conn, batches, streams, &held_trees).await?;
        // Verify and decode, off the async threads.
        let checked = blocking(move || {
            let mut out = Vec::with_capacity(got.len());
            for o in got {
                let plain = decode_object(&o.id, o.flags, o.raw_len, &o.data).map_err(|e| {
                    Error::new(ErrorKind::BadObject, format!("sent tree {}: {e}", o.id))
                })?;
                let tree = Tree::decode(&plain).map_err(|e| {
                    Error::new(
                        ErrorKind::BadObject,
                        format!("sent tree {} that is not a valid tree: {e}", o.id),
                    )
                })?;
                out.push((o, tree));
            }
            Ok(out)
        })
        .await;
        let checked = match checked {
            Ok(c) => c,
            Err(e) if e.kind() == ErrorKind::BadObject => {
                return Err(misbehaved(conn, Code::BadObject, e.message().to_string()));
            }
            Err(e) => return Err(e),
        };
        // Children this node lacks.
        let mut next_dirs = Vec::new();
        let mut new_chunks = Vec::new();
        for (o, tree) in checked {
            let mut subdirs = Vec::new();
            for e in &tree.entries {
                match &e.node {
                    Node::Dir { tree } => {
                        subdirs.push(*tree);
                        next_dirs.push(*tree);
                    }
                    Node::File { chunks: c, .. } => new_chunks.extend(c.iter().copied()),
                    Node::Symlink { .. } => {}
                }
            }
            pending.insert(o.id, PendingTree { obj: o, subdirs });
        }
        let r2 = repo.clone();
        let p2 = presence.clone();
        let known: HashSet<ObjectId> = pending.keys().copied().collect();
        let (dirs, fresh) = blocking(move || {
            let present = p2.open(&r2)?;
            let mut dirs = Vec::new();
            let mut seen = HashSet::new();
            for d in next_dirs {
                if !known.contains(&d) && seen.insert(d) && !present.has(&d)? {
                    dirs.push(d);
                }
            }
            let mut fresh = Vec::new();
            for c in new_chunks {
                if !present.has(&c)? {
                    fresh.push(c);
                }
            }
            Ok((dirs, fresh))
        })
        .await?;
        for c in fresh {
            if chunk_set.insert(c) {
                chunks.push(c);
            }
        }
        level = dirs;
        depth += 1;
    }
    // Subtrees this node has count too: the depth of the new snapshots as a whole is measured
    // by the completeness walk at commit, which reads every one of their trees anyway.

    tracing::debug!(
        "pull: {} trees and {} missing chunks after {:?}",
        pending.len(),
        chunks.len(),
        t0.elapsed()
    );
    // 4. Data: fetched over `streams` requests at once, verified and stored by `VERIFIERS`
    // threads sharing the saver.
    let saver = Arc::new(
        guard
            .saver
            .take()
            .ok_or_else(|| Error::internal("saver already taken"))?,
    );
    let checkpoint = ctx.config.checkpoint;
    let progress = conn.progress.clone();
    progress.set_total(chunks.len() as u64, 0);
    let since = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut senders = Vec::new();
    let mut verifiers = Vec::new();
    for i in 0..VERIFIERS {
        let (tx, rx) = tokio::sync::mpsc::channel::<Vec<Object>>(2);
        senders.push(tx);
        let (r2, s2, p2, c2) = (repo.clone(), saver.clone(), progress.clone(), since.clone());
        let h = std::thread::Builder::new()
            .name(format!("puce-sync-verify-{i}"))
            .spawn(move || store_chunks(&r2, &s2, rx, checkpoint, &c2, &*p2))
            .map_err(|e| Error::internal(format!("cannot start a thread: {e}")))?;
        verifiers.push(h);
    }
    let queue = if ctx.fault == Some(super::Fault::Flood) {
        Batches::new(chunks, 1, 1)
    } else {
        Batches::new(chunks, CHUNK_BATCH, protocol::MAX_OBJECTS_PER_REQUEST)
    };
    let fetched = fetch_all(conn, queue, Kind::Data, streams, Sink::Store(senders))
        .await
        .map(|requests| {
            conn.counters
                .round_trips
                .fetch_add(requests.div_ceil(streams as u64), Ordering::Relaxed);
        });
    let mut stored = Stored::default();
    let mut first_err: Option<Error> = None;
    for h in verifiers {
        match h.join() {
            Ok(Ok(st)) => {
                stored.objects += st.objects;
                stored.bytes += st.bytes;
                stored.raw += st.raw;
            }
            Ok(Err(e)) => {
                // A bad object outranks the errors it caused elsewhere.
                if first_err
                    .as_ref()
                    .is_none_or(|f| f.kind() != ErrorKind::BadObject)
                {
                    first_err = Some(e);
                }
            }
            Err(_) => first_err = Some(Error::internal("a verifying thread panicked")),
        }
    }
    guard.saver =
        Some(Arc::try_unwrap(saver).map_err(|_| Error::internal("the saver is still shared"))?);
    match first_err {
        Some(e) if e.kind() == ErrorKind::BadObject => {
            return Err(misbehaved(conn, Code::BadObject, e.message().to_string()));
        }
        Some(e) => return Err(e),
        None => {}
    }
    fetched?;
    tracing::debug!("pull: data stored after {:?}", t0.elapsed());

    // 5. Commit: trees children first, then durability, then the records, parents first.
    let order = post_order(&top, &pending);
    let heights = heights(&pending);
    let saver = guard
        .saver
        .take()
        .ok_or_else(|| Error::internal("saver already taken"))?;
    let r2 = repo.clone();
    let recs: Vec<(SnapshotId, Vec<u8>, Vec<SnapshotId>, i64)> = records
        .iter()
        .map(|(e, b)| {
            (
                e.id,
                b.clone(),
                e.snapshot.parents.clone(),
                e.snapshot.time_ns,
            )
        })
        .collect();
    let trees: Vec<Object> = order
        .into_iter()
        .filter_map(|id| pending.remove(&id).map(|p| p.obj))
        .collect();
    let target = repo.config().pack_target_size;
    let (tree_stats, saver_back) = blocking(move || {
        // Every chunk indexed before any tree is written: packs are sealed in parallel, so
        // only a waiting flush orders them.
        saver.flush()?;
        // Trees that fit in one pack go in one (a pack is indexed whole); more go by height,
        // leaves first, with a flush between heights, so that whenever a tree is indexed, so
        // is everything it reaches.
        let total: u64 = trees.iter().map(|t| t.data.len() as u64).sum();
        let mut groups: Vec<Vec<Object>> = Vec::new();
        if total <= target / 2 {
            groups.push(trees);
        } else {
            let mut by_height: std::collections::BTreeMap<u32, Vec<Object>> = Default::default();
            for t in trees {
                let h = heights.get(&t.id).copied().unwrap_or(0);
                by_height.entry(h).or_default().push(t);
            }
            groups.extend(by_height.into_values());
        }
        let mut reader = r2.index().reader()?;
        let mut g = saver.generation();
        let mut n = (0u64, 0u64, 0u64);
        let mut present = Vec::new();
        let count = groups.len();
        for (i, group) in groups.into_iter().enumerate() {
            for t in group {
                if saver.generation() != g {
                    reader = r2.index().reader()?;
                    g = saver.generation();
                }
                let len = t.data.len() as u64;
                let raw = u64::from(t.raw_len);
                let id = t.id;
                if saver.save_stored(&reader, id, Kind::Tree, t.flags, t.raw_len, t.data)? {
                    n.0 += 1;
                    n.1 += len;
                    n.2 += raw;
                } else {
                    present.push(id);
                }
            }
            if i + 1 < count {
                saver.flush()?;
            }
        }
        saver.note_sent_present(&present)?;
        Ok((n, saver))
    })
    .await?;
    let r2 = repo.clone();
    let roots_to_check: Vec<ObjectId> = records.iter().map(|r| r.0.snapshot.root).collect();
    let peer_id = conn.peer.id.0;
    let receipts: HashMap<SnapshotId, (Receipt, ObjectId)> = records
        .iter()
        .map(|(e, _)| {
            let r = Receipt {
                snapshot: e.id,
                space: e.snapshot.space.clone(),
                sender: peer_id,
                sender_name: conn.peer.name.clone(),
                arrived_ns: puce_core::index::now_ns(),
            };
            (e.id, (r, e.snapshot.root))
        })
        .collect();
    let too_deep = blocking(move || {
        let (_, session) = saver_back.finish_keep_session()?;
        tracing::debug!("pull: objects durable after {:?}", t0.elapsed());
        // The walk trusted that a tree in the index comes with its whole subtree. Check it
        // for the new snapshots before they become visible: a leftover tree whose subtree
        // was removed (by gc after an interrupted writer) must not yield a broken snapshot.
        // The same walk measures their depth, through the subtrees this node had too.
        if let Some(at) = check_complete(&r2, &roots_to_check)? {
            session.end(&r2)?;
            return Ok(Some(at));
        }
        tracing::debug!("pull: completeness checked after {:?}", t0.elapsed());
        // The records (checked against their ids when received) are written parents first,
        // each durably, then cached in the index in one transaction.
        // Each record after the receipt saying who delivered it and when.
        let ordered = topo(recs);
        for (id, bytes) in &ordered {
            if let Some((r, _)) = receipts.get(id) {
                reach::write_receipt(&r2, r)?;
            }
            r2.backend()
                .write(puce_core::backend::FileKind::Snapshot, &id.to_hex(), bytes)?;
        }
        r2.index().put_snapshots(&ordered)?;
        session.end(&r2)?;
        // The new snapshots join their space's scope and the sender's (the next transfer
        // catches up if this fails: until then it only sends more).
        if let Err(e) = reach_received(&r2, &peer_id, &receipts) {
            tracing::warn!("reach scopes not updated after the sync: {e:#}");
        }
        tracing::debug!("pull: reach scopes updated after {:?}", t0.elapsed());
        Ok(None)
    })
    .await?;
    if let Some(at) = too_deep {
        return Err(refuse_deep(conn, spaces, &at));
    }

    tracing::debug!("pull: committed after {:?}", t0.elapsed());
    // Per-space figures.
    for (e, _) in &records {
        if let Some(r) = reports.iter_mut().find(|r| r.space == e.snapshot.space) {
            r.snapshots += 1;
            r.logical_bytes += e.snapshot.summary.bytes;
        }
    }
    let total_objects = stored.objects + tree_stats.0;
    let total_bytes = stored.bytes + tree_stats.1;
    let total_raw = stored.raw + tree_stats.2;
    // Objects are not tagged by space: the totals go to the first space that got snapshots.
    let target = reports
        .iter()
        .position(|r| r.snapshots > 0)
        .or((total_objects > 0).then_some(0));
    if let Some(r) = target.and_then(|i| reports.get_mut(i)) {
        r.objects = total_objects;
        r.bytes = total_bytes;
        r.raw_bytes = total_raw;
    }

    // 6. Merge.
    let r2 = repo.clone();
    let all = blocking(move || Ok(r2.snapshots()?)).await?;
    for r in &mut reports {
        if puce_core::history::heads(&all, &r.space).len() < 2 {
            if r.snapshots == 0 {
                r.result = "up to date".into();
            }
            continue;
        }
        let r2 = repo.clone();
        let space = r.space.clone();
        let merged = blocking(move || Ok(puce_core::merge::merge_heads(&r2, &space)?)).await?;
        if let Some(m) = merged {
            r.merges = m.merges.len() as u64;
            for c in &m.conflicts {
                tracing::info!(
                    "space '{}': {} changed on both sides; the version of '{}' is kept as {}",
                    r.space,
                    printable_bytes(&c.path),
                    printable(&c.node),
                    printable_bytes(&c.copy)
                );
            }
            r.conflicts = m
                .conflicts
                .iter()
                .map(|c| ConflictReport {
                    path: String::from_utf8_lossy(&c.path).into_owned(),
                    copy: String::from_utf8_lossy(&c.copy).into_owned(),
                    node: c.node.clone(),
                })
                .collect();
        }
        if r.snapshots == 0 && r.merges == 0 {
            r.result = "up to date".into();
        }
    }
    Ok(PullOutcome {
        reports,
        peer_spaces: list.spaces,
    })
}

/// Add snapshots just received to the sender's reach scope (its objects are there already)
/// and to their spaces' scopes (a walk that stops at what the space already reaches).
fn reach_received(
    repo: &puce_core::Repo,
    peer: &[u8; 32],
    receipts: &HashMap<SnapshotId, (Receipt, ObjectId)>,
) -> Result<()> {
    let scope = repo.index().scope_or_create(&reach::peer_key(peer))?;
    let ids: Vec<SnapshotId> = receipts.keys().copied().collect();
    reach::mark_delivered(repo, scope, &ids)?;
    for (r, root) in receipts.values() {
        reach::add_snapshot(repo, &r.snapshot, &r.space, root)?;
    }
    Ok(())
}

async fn expect_end(conn: &Conn, recv: &mut quinn::RecvStream, n: usize) -> Result<()> {
    match conn.answer(recv).await? {
        Message::End(e) if e.count as usize == n => Ok(()),
        other => Err(misbehaved(
            conn,
            Code::Protocol,
            format!("ended an answer of {n} frames with {}", other.name()),
        )),
    }
}

/// Where fetched objects go.
#[derive(Clone)]
enum Sink {
    /// Kept in memory (trees), their plaintext bytes counted against
    /// [`MAX_PULL_TREE_BYTES`].
    Collect(Arc<Mutex<Vec<Object>>>, Arc<std::sync::atomic::AtomicU64>),
    /// Handed to the verifying threads (data) in groups of up to `HANDOFF_GROUP` bytes, each
    /// fetching task to one of them; the bounded channels bound memory.
    Store(Vec<tokio::sync::mpsc::Sender<Vec<Object>>>),
}

/// Bytes of received objects per hand-off to a verifying thread.
const HANDOFF_GROUP: usize = 4 << 20;

/// Fetch one batch of objects of `kind`, handing each (checked to be the one asked for, in
/// order) to `sink`; the stored bytes received.
async fn fetch_batch(
    conn: &Arc<Conn>,
    ids: Vec<ObjectId>,
    kind: Kind,
    sink: &Sink,
    worker: usize,
) -> Result<u64> {
    let mut recv = conn
        .request(&Message::GetObjects(GetObjects { ids: ids.clone() }))
        .await?;
    let mut group: Vec<Object> = Vec::new();
    let r = receive_objects(conn, &mut recv, &ids, kind, sink, worker, &mut group).await;
    // After a failure too, what arrived whole goes on to be verified and stored: it is kept
    // unless the peer misbehaved (the pull's guard then discards the pack in progress).
    if let Sink::Store(txs) = sink
        && !group.is_empty()
    {
        let handed = hand_off(txs, worker, group).await;
        if r.is_ok() {
            handed?;
        }
    }
    let received = r?;
    expect_end(conn, &mut recv, ids.len()).await?;
    Ok(received)
}

/// Read the `Object` frames answering a request for `ids`, handing them to `sink` (data in
/// groups, the last one left in `group`); the stored bytes received.
async fn receive_objects(
    conn: &Arc<Conn>,
    recv: &mut quinn::RecvStream,
    ids: &[ObjectId],
    kind: Kind,
    sink: &Sink,
    worker: usize,
    group: &mut Vec<Object>,
) -> Result<u64> {
    let mut group_bytes = 0usize;
    let mut received = 0u64;
    for want in ids {
        let o = match conn.answer(recv).await? {
            Message::Object(o) => o,
            other => {
                return Err(misbehaved(
                    conn,
                    Code::Protocol,
                    format!(
                        "answered GetObjects with {} before all objects",
                        other.name()
                    ),
                ));
            }
        };
        if o.id != *want || o.kind != kind as u8 {
            return Err(misbehaved(
                conn,
                Code::Protocol,
                format!(
                    "sent object {} (kind {}) where {want} (kind {}) was asked for",
                    o.id, o.kind, kind as u8
                ),
            ));
        }
        conn.ctx.recv_limit.take(o.data.len() as u64).await;
        conn.counters
            .fetched_objects
            .fetch_add(1, Ordering::Relaxed);
        conn.counters
            .fetched_bytes
            .fetch_add(o.data.len() as u64, Ordering::Relaxed);
        received += o.data.len() as u64;
        match sink {
            Sink::Collect(v, held) => {
                let raw = u64::from(o.raw_len);
                if held.fetch_add(raw, Ordering::AcqRel) + raw > MAX_PULL_TREE_BYTES {
                    return Err(Error::new(
                        ErrorKind::Incompatible,
                        format!(
                            "the new snapshots of {} hold more than {} of directory listings, \
                             more than one pull holds in memory: take the snapshots there in \
                             parts (a folder per space) and sync again",
                            conn.label,
                            bytesize::ByteSize(MAX_PULL_TREE_BYTES).display().iec()
                        ),
                    ));
                }
                if let Ok(mut v) = v.lock() {
                    v.push(o);
                }
            }
            Sink::Store(txs) => {
                group_bytes += o.data.len();
                group.push(o);
                if group_bytes >= HANDOFF_GROUP {
                    group_bytes = 0;
                    hand_off(txs, worker, std::mem::take(group)).await?;
                }
            }
        }
    }
    Ok(received)
}

async fn hand_off(
    txs: &[tokio::sync::mpsc::Sender<Vec<Object>>],
    worker: usize,
    group: Vec<Object>,
) -> Result<()> {
    let Some(tx) = txs.get(worker % txs.len().max(1)) else {
        return Err(Error::internal("no verifying thread"));
    };
    // The verifying thread stopped on an error: it reports it.
    tx.send(group)
        .await
        .map_err(|_| Error::internal("the verifying thread stopped"))
}

/// Ids to fetch, handed out in batches: `min` ids at first, then as many as make about
/// [`BATCH_BYTES`] at the average size received so far, between `min` and `max`.
struct Batches {
    ids: VecDeque<ObjectId>,
    min: usize,
    max: usize,
    objects: u64,
    bytes: u64,
    requests: u64,
}

impl Batches {
    fn new(ids: Vec<ObjectId>, min: usize, max: usize) -> Batches {
        let max = max.clamp(1, protocol::MAX_OBJECTS_PER_REQUEST);
        Batches {
            ids: ids.into(),
            min: min.clamp(1, max),
            max,
            objects: 0,
            bytes: 0,
            requests: 0,
        }
    }

    fn next(&mut self) -> Option<Vec<ObjectId>> {
        if self.ids.is_empty() {
            return None;
        }
        let n = match self.bytes.checked_div(self.objects) {
            Some(avg) => usize::try_from(BATCH_BYTES / avg.max(1)).unwrap_or(usize::MAX),
            None => self.min,
        };
        let n = n.clamp(self.min, self.max).min(self.ids.len());
        self.requests += 1;
        Some(self.ids.drain(..n).collect())
    }

    fn received(&mut self, objects: usize, bytes: u64) {
        self.objects += objects as u64;
        self.bytes += bytes;
    }
}

/// Fetch the ids of `queue` with up to `streams` requests in flight; the number of requests.
async fn fetch_all(
    conn: &Arc<Conn>,
    queue: Batches,
    kind: Kind,
    streams: usize,
    sink: Sink,
) -> Result<u64> {
    let queue = Arc::new(Mutex::new(queue));
    let next = |q: &Mutex<Batches>| q.lock().ok().and_then(|mut q| q.next());
    let mut set = tokio::task::JoinSet::new();
    for worker in 0..streams {
        let conn = conn.clone();
        let queue = queue.clone();
        let sink = sink.clone();
        set.spawn(async move {
            while let Some(batch) = next(&queue) {
                let n = batch.len();
                match fetch_batch(&conn, batch, kind, &sink, worker).await {
                    Ok(bytes) => {
                        if let Ok(mut q) = queue.lock() {
                            q.received(n, bytes);
                        }
                    }
                    Err(e) => {
                        // No further batch for anyone; those in flight end as they can.
                        if let Ok(mut q) = queue.lock() {
                            q.ids.clear();
                        }
                        return Err(e);
                    }
                }
            }
            Ok(())
        });
    }
    drop(sink);
    join_all(set).await?;
    let requests = queue.lock().map(|q| q.requests).unwrap_or(0);
    Ok(requests)
}

/// Fetch tree batches; collect the objects, counting their plaintext bytes in `held`.
async fn fetch_parallel(
    conn: &Arc<Conn>,
    batches: Vec<Vec<ObjectId>>,
    streams: usize,
    held: &Arc<std::sync::atomic::AtomicU64>,
) -> Result<Vec<Object>> {
    let out = Arc::new(Mutex::new(Vec::new()));
    let max = protocol::MAX_OBJECTS_PER_REQUEST;
    let queue = Batches::new(batches.concat(), max, max);
    let sink = Sink::Collect(out.clone(), held.clone());
    fetch_all(conn, queue, Kind::Tree, streams, sink).await?;
    let mut v = out.lock().map_err(|_| Error::internal("lock poisoned"))?;
    Ok(std::mem::take(&mut *v))
}

/// Wait for every task; the first error. The others are not aborted: after a failure each
/// hands on what it received whole (a failure of the connection ends them all promptly).
async fn join_all(mut set: tokio::task::JoinSet<Result<()>>) -> Result<()> {
    let mut first: Option<Error> = None;
    while let Some(r) = set.join_next().await {
        let r = r.unwrap_or_else(|e| Err(Error::internal(format!("a transfer task failed: {e}"))));
        if let Err(e) = r
            && first.is_none()
        {
            first = Some(e);
        }
    }
    match first {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Stored {
    objects: u64,
    bytes: u64,
    raw: u64,
}

/// A verifying thread: check each chunk against its id, store it, ask for a checkpoint
/// every `checkpoint` bytes (counted over all threads in `since`).
fn store_chunks(
    repo: &puce_core::Repo,
    saver: &Saver,
    mut rx: tokio::sync::mpsc::Receiver<Vec<Object>>,
    checkpoint: u64,
    since: &std::sync::atomic::AtomicU64,
    progress: &dyn puce_core::progress::Progress,
) -> Result<Stored> {
    let mut st = Stored::default();
    let mut reader = repo.index().reader()?;
    let mut g = saver.generation();
    while let Some(group) = rx.blocking_recv() {
        let mut present = Vec::new();
        for o in group {
            if let Err(e) = verify_object(&o.id, o.flags, o.raw_len, &o.data) {
                return Err(Error::new(
                    ErrorKind::BadObject,
                    format!("sent data that does not match its id {} ({e})", o.id),
                ));
            }
            if saver.generation() != g {
                reader = repo.index().reader()?;
                g = saver.generation();
            }
            let len = o.data.len() as u64;
            let raw = u64::from(o.raw_len);
            let id = o.id;
            if saver.save_stored(&reader, id, Kind::Data, o.flags, o.raw_len, o.data)? {
                st.objects += 1;
                st.bytes += len;
                st.raw += raw;
            } else {
                present.push(id);
            }
            let total = since.fetch_add(len, Ordering::AcqRel) + len;
            if total / checkpoint != (total - len) / checkpoint {
                saver.seal_soon()?;
            }
            progress.add(1, len);
        }
        saver.note_sent_present(&present)?;
    }
    Ok(st)
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

/// Check that every object reachable from `roots` is indexed (trees read and verified,
/// chunks looked up), each shared subtree once; then that no root is deeper than
/// [`MAX_TREE_DEPTH`]: the root of one that is, if any.
fn check_complete(repo: &puce_core::Repo, roots: &[ObjectId]) -> Result<Option<ObjectId>> {
    let reader = repo.index().reader()?;
    let mut shape: HashMap<ObjectId, Vec<ObjectId>> = HashMap::new();
    let mut seen: HashSet<ObjectId> = HashSet::new();
    let mut stack: Vec<ObjectId> = roots.to_vec();
    while let Some(id) = stack.pop() {
        if !seen.insert(id) {
            continue;
        }
        let tree = repo.read_tree_with(&reader, &id).map_err(|e| {
            Error::new(
                ErrorKind::Store,
                format!(
                    "tree {id} of the received snapshots cannot be read here ({e:#}): nothing \
                     was made visible; run `puce check`, and `puce gc --repack-unused 0.001` to \
                     drop leftovers of interrupted writers, then sync again"
                ),
            )
        })?;
        shape.insert(id, subdirs(&tree));
        for e in &tree.entries {
            match &e.node {
                Node::Dir { tree } => stack.push(*tree),
                Node::File { chunks, .. } => {
                    for c in chunks {
                        if seen.insert(*c) && !reader.contains(c)? {
                            return Err(Error::new(
                                ErrorKind::Store,
                                format!(
                                    "chunk {c} of '{}' under tree {id} is missing here although \
                                     the tree is present (a leftover of an interrupted writer \
                                     whose data gc removed): nothing was made visible; run \
                                     `puce gc --repack-unused 0.001` to drop such leftovers, then \
                                     sync again",
                                    String::from_utf8_lossy(&e.name)
                                ),
                            ));
                        }
                    }
                }
                Node::Symlink { .. } => {}
            }
        }
    }
    let mut heights = HashMap::new();
    for root in roots {
        let r = check_depth(*root, &mut heights, &mut |id| {
            Ok(shape.get(id).cloned().unwrap_or_default())
        });
        if r.is_err() {
            return Ok(Some(*root));
        }
    }
    Ok(None)
}

/// The height of each pending tree: 0 without pending subtrees, else one more than the
/// highest of them (subtrees already stored do not count).
fn heights(pending: &HashMap<ObjectId, PendingTree>) -> HashMap<ObjectId, u32> {
    let mut h: HashMap<ObjectId, u32> = HashMap::new();
    for root in pending.keys() {
        let mut stack: Vec<(ObjectId, bool)> = vec![(*root, false)];
        while let Some((id, expanded)) = stack.pop() {
            if h.contains_key(&id) {
                continue;
            }
            let Some(p) = pending.get(&id) else {
                continue;
            };
            if expanded {
                let v = p
                    .subdirs
                    .iter()
                    .filter_map(|c| h.get(c).map(|x| x + 1))
                    .max()
                    .unwrap_or(0);
                h.insert(id, v);
            } else {
                stack.push((id, true));
                for c in &p.subdirs {
                    if pending.contains_key(c) && !h.contains_key(c) {
                        stack.push((*c, false));
                    }
                }
            }
        }
    }
    h
}

/// Trees in post-order (children before parents) from `roots`, over `pending` only.
fn post_order(roots: &[ObjectId], pending: &HashMap<ObjectId, PendingTree>) -> Vec<ObjectId> {
    let mut out = Vec::with_capacity(pending.len());
    let mut done: HashSet<ObjectId> = HashSet::new();
    let mut stack: Vec<(ObjectId, bool)> = roots.iter().rev().map(|r| (*r, false)).collect();
    while let Some((id, expanded)) = stack.pop() {
        if done.contains(&id) {
            continue;
        }
        let Some(p) = pending.get(&id) else {
            continue;
        };
        if expanded {
            done.insert(id);
            out.push(id);
        } else {
            stack.push((id, true));
            for c in p.subdirs.iter().rev() {
                if !done.contains(c) {
                    stack.push((*c, false));
                }
            }
        }
    }
    out
}

/// Records ordered parents first (among themselves), then by time.
fn topo(mut recs: Vec<(SnapshotId, Vec<u8>, Vec<SnapshotId>, i64)>) -> Vec<(SnapshotId, Vec<u8>)> {
    recs.sort_by_key(|r| (r.3, r.0));
    let ids: HashSet<SnapshotId> = recs.iter().map(|r| r.0).collect();
    let mut written: HashSet<SnapshotId> = HashSet::new();
    let mut out = Vec::with_capacity(recs.len());
    let mut left = recs;
    while !left.is_empty() {
        let before = left.len();
        let mut rest = Vec::new();
        for r in left {
            if r.2.iter().all(|p| !ids.contains(p) || written.contains(p)) {
                written.insert(r.0);
                out.push((r.0, r.1));
            } else {
                rest.push(r);
            }
        }
        if rest.len() == before {
            // A cycle cannot happen with hashes; write the rest as they are.
            out.extend(rest.into_iter().map(|r| (r.0, r.1)));
            break;
        }
        left = rest;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use puce_core::Hash;

    fn o(b: u8) -> ObjectId {
        ObjectId(Hash([b; 32]))
    }

    fn pt(id: ObjectId, subdirs: Vec<ObjectId>) -> PendingTree {
        PendingTree {
            obj: Object {
                id,
                kind: 1,
                flags: 0,
                raw_len: 0,
                data: vec![],
            },
            subdirs,
        }
    }

    #[test]
    fn post_order_puts_children_first() {
        // 1 -> 2 -> 4, 1 -> 3 -> 4 (shared subtree), 3 -> 5 (already stored: not pending)
        let mut p = HashMap::new();
        p.insert(o(1), pt(o(1), vec![o(2), o(3)]));
        p.insert(o(2), pt(o(2), vec![o(4)]));
        p.insert(o(3), pt(o(3), vec![o(4), o(5)]));
        p.insert(o(4), pt(o(4), vec![]));
        let order = post_order(&[o(1)], &p);
        assert_eq!(order, vec![o(4), o(2), o(3), o(1)]);
        let h = heights(&p);
        assert_eq!((h[&o(4)], h[&o(2)], h[&o(3)], h[&o(1)]), (0, 1, 1, 2));
    }

    #[test]
    fn batches_grow_for_small_objects_and_stay_small_for_large_ones() {
        let ids: Vec<ObjectId> = (0..10_000u32).map(|i| o((i % 251) as u8)).collect();
        let mut q = Batches::new(ids.clone(), CHUNK_BATCH, protocol::MAX_OBJECTS_PER_REQUEST);
        assert_eq!(q.next().map(|b| b.len()), Some(CHUNK_BATCH));
        q.received(CHUNK_BATCH, 100 * CHUNK_BATCH as u64);
        assert_eq!(
            q.next().map(|b| b.len()),
            Some(protocol::MAX_OBJECTS_PER_REQUEST)
        );
        let mut q = Batches::new(ids.clone(), CHUNK_BATCH, protocol::MAX_OBJECTS_PER_REQUEST);
        q.received(10, 10 << 20);
        assert_eq!(q.next().map(|b| b.len()), Some(CHUNK_BATCH));
        let mut q = Batches::new(ids, 1, 1);
        q.received(1, 1);
        assert_eq!(q.next().map(|b| b.len()), Some(1));
        let mut n = 1;
        while q.next().is_some() {
            n += 1;
        }
        assert_eq!((n, q.requests), (10_000, 10_000));
    }

    #[test]
    fn records_parents_first() {
        let s = |b: u8| SnapshotId(Hash([b; 32]));
        // 3 has parent 2 (older clock skewed to be earlier), 2 has parent 1.
        let recs = vec![
            (s(3), vec![3], vec![s(2)], 5),
            (s(2), vec![2], vec![s(1)], 10),
            (s(1), vec![1], vec![], 20),
        ];
        let order: Vec<SnapshotId> = topo(recs).into_iter().map(|r| r.0).collect();
        assert_eq!(order, vec![s(1), s(2), s(3)]);
    }
}
