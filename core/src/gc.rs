//! Garbage collection: plan first, then execute. See `docs/design.md`, "Garbage collection".
//!
//! 1. Mark: walk every snapshot; set one bit per reachable object, in a bitset per pack indexed
//!    by the object's entry number (1 bit per object, plus ~100 bytes per pack).
//! 2. Plan: read each pack's trailer; a pack with nothing live is deleted, a pack whose unused
//!    share exceeds the threshold is repacked, others are kept. Packs indexed after gc started
//!    belong to concurrent writers and are not judged. Packs the index does not list are deleted
//!    if no writer session is live.
//! 3. Condemn: the dead objects of doomed packs move to the `condemned` table. Readers still find
//!    them; writers no longer do, so from now on they store their own copy.
//! 4. Wait for the writer sessions that were live when objects were condemned (they may have
//!    decided to reuse one), up to a limit; then mark again from the snapshots committed since
//!    step 1 and rescue any condemned object they reference.
//! 5. Repack: copy the live objects of doomed packs, as stored, into new packs (fsynced and
//!    published); then, in one index transaction, point the objects at the new packs, forget the
//!    old packs and their condemned objects; then delete the old files.
//!
//! A crash at any point leaves a consistent repository: before step 5's transaction the old
//! packs are still indexed (condemned objects are still readable, and the next gc rescues or
//! deletes them); after it, the old files are unindexed leftovers the next gc removes.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustix::fs::FlockOperation;
use serde::Serialize;

use crate::backend::FileKind;
use crate::error::{Error, ErrorKind, Result};
use crate::format::pack::Record;
use crate::format::tree::{Node, Tree};
use crate::hash::{ObjectId, PackId, SnapshotId};
use crate::index::{IndexReader, Location, PackInfo, now_ns};
use crate::pack::{PackWriter, read_pack_records};
use crate::progress::Progress;
use crate::repo::{Repo, SnapshotEntry};
use crate::session;

/// Options of a gc run.
#[derive(Debug, Clone)]
pub struct GcOptions {
    /// Only compute and report the plan.
    pub dry_run: bool,
    /// Repack a pack when more than this share of its bytes is unused (0.0 to 1.0).
    pub repack_unused: f64,
    /// How long to wait for writers that were running when objects were condemned.
    pub max_wait: Duration,
}

impl Default for GcOptions {
    fn default() -> Self {
        GcOptions {
            dry_run: false,
            repack_unused: 0.2,
            max_wait: Duration::from_secs(600),
        }
    }
}

/// What a gc run did (or would do, with `dry_run`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct GcReport {
    /// Whether this was a plan only.
    pub dry_run: bool,
    /// Snapshots marked from.
    pub snapshots: u64,
    /// Objects reachable from them.
    pub live_objects: u64,
    /// Packs in the index at the start.
    pub packs: u64,
    /// Packs deleted (nothing live in them).
    pub packs_deleted: u64,
    /// Packs rewritten (too much unused).
    pub packs_repacked: u64,
    /// Packs not listed by the index, deleted.
    pub packs_orphaned: u64,
    /// Objects removed.
    pub objects_removed: u64,
    /// Bytes of pack files before.
    pub bytes_before: u64,
    /// Bytes of pack files freed (deleted minus newly written).
    pub bytes_freed: u64,
    /// Bytes of live objects copied into new packs.
    pub bytes_rewritten: u64,
    /// Unused bytes left in kept packs (below the repack threshold).
    pub bytes_unused_kept: u64,
    /// Objects referenced by snapshots but missing from the index (run `puce check`).
    pub missing_objects: u64,
    /// Writer sessions gc waited for.
    pub sessions_waited: u64,
    /// Milliseconds spent waiting for them.
    pub waited_ms: u64,
    /// Objects rescued because a snapshot committed during gc references them.
    pub rescued: u64,
    /// True when writers did not finish in time: the work is left for the next gc.
    pub deferred: bool,
}

/// Per-pack mark state: one bit per entry.
struct PackMark {
    info: PackInfo,
    bits: Vec<u64>,
}

impl PackMark {
    fn set(&mut self, entry: u32) -> bool {
        let (w, b) = ((entry / 64) as usize, entry % 64);
        match self.bits.get_mut(w) {
            Some(word) => {
                let was = *word & (1 << b) != 0;
                *word |= 1 << b;
                !was
            }
            None => false,
        }
    }
    fn get(&self, entry: u32) -> bool {
        let (w, b) = ((entry / 64) as usize, entry % 64);
        self.bits.get(w).is_some_and(|word| word & (1 << b) != 0)
    }
}

struct Marker<'a> {
    repo: &'a Repo,
    reader: IndexReader,
    packs: HashMap<u32, PackMark>,
    /// Trees in packs gc does not judge (written during gc), visited once.
    other_trees: HashSet<ObjectId>,
    live: u64,
    missing: u64,
    /// Condemned objects found reachable.
    reachable_condemned: Vec<ObjectId>,
}

impl Marker<'_> {
    /// Mark `id`; returns whether it was newly marked (for trees: whether to descend).
    fn mark(&mut self, id: &ObjectId) -> Result<bool> {
        let Some(loc) = self.reader.get(id)? else {
            self.missing += 1;
            return Ok(false);
        };
        if self.reader.is_condemned(id)? && self.reader.get_live(id)?.is_none() {
            self.reachable_condemned.push(*id);
        }
        match self.packs.get_mut(&loc.pack) {
            Some(p) => {
                let new = p.set(loc.entry);
                if new {
                    self.live += 1;
                }
                Ok(new)
            }
            None => Ok(self.other_trees.insert(*id)),
        }
    }

    fn walk(&mut self, root: ObjectId) -> Result<()> {
        let mut stack = vec![root];
        while let Some(t) = stack.pop() {
            if !self.mark(&t)? {
                continue;
            }
            let tree: Tree = match self.repo.read_tree_with(&self.reader, &t) {
                Ok(tree) => tree,
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    self.missing += 1;
                    continue;
                }
                Err(e) => return Err(e),
            };
            for e in tree.entries {
                match e.node {
                    Node::File { chunks, .. } => {
                        for c in &chunks {
                            self.mark(c)?;
                        }
                    }
                    Node::Dir { tree } => stack.push(tree),
                    Node::Symlink { .. } => {}
                }
            }
        }
        Ok(())
    }
}

/// Held while gc runs: one gc at a time per repository.
pub(crate) struct GcLock(#[allow(dead_code)] File);

/// Take the repository's gc lock: one gc (or heal, which also retires packs) at a time.
pub(crate) fn gc_lock(repo: &Repo) -> Result<GcLock> {
    try_gc_lock(repo)?.ok_or_else(|| {
        Error::new(
            ErrorKind::Busy,
            "another gc is running on this repository: wait for it to finish",
        )
    })
}

/// The gc lock if nobody holds it. Besides gc and heal, whatever indexes packs it did not write
/// (adopting orphan packs, rebuilding the index) holds it: gc deletes the packs the index does
/// not list, so adopting one while gc runs would hand a writer a pack gc is about to delete.
pub(crate) fn try_gc_lock(repo: &Repo) -> Result<Option<GcLock>> {
    let dir = repo.root().join("locks");
    crate::fsutil::create_dir_durable(&dir)?;
    let path = dir.join("gc");
    let f = crate::fsutil::private_file()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io("cannot create", &path, e))?;
    match rustix::fs::flock(&f, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(Some(GcLock(f))),
        Err(_) => Ok(None),
    }
}

/// Test hook, in debug builds only (release builds ignore it): with `PUCE_TEST_GC_PAUSE=DIR`,
/// gc creates `DIR/paused` once its plan is made and its condemned objects are recorded, and
/// waits until `DIR/resume` exists before it waits for writers, rescues and deletes. End-to-end
/// tests use it to run pulls, snapshots and mount commits in that window.
fn pause_for_tests() -> Result<()> {
    if !cfg!(debug_assertions) {
        return Ok(());
    }
    let Some(dir) = std::env::var_os("PUCE_TEST_GC_PAUSE") else {
        return Ok(());
    };
    let dir = std::path::PathBuf::from(dir);
    let paused = dir.join("paused");
    std::fs::write(&paused, b"").map_err(|e| Error::io("cannot create", &paused, e))?;
    let start = Instant::now();
    while !dir.join("resume").exists() {
        if start.elapsed() > Duration::from_secs(600) {
            return Err(Error::other(format!(
                "test hook PUCE_TEST_GC_PAUSE: {} did not appear within 10 minutes",
                dir.join("resume").display()
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

enum Fate {
    Keep,
    Repack,
    Delete,
}

struct Planned {
    no: u32,
    id: PackId,
    size: u64,
    records: Vec<Record>,
    fate: Fate,
}

/// Run gc on `repo`.
pub fn gc(repo: &Arc<Repo>, opts: &GcOptions, progress: &dyn Progress) -> Result<GcReport> {
    let _lock = gc_lock(repo)?;
    let started_ns = now_ns();
    let mut report = GcReport {
        dry_run: opts.dry_run,
        ..GcReport::default()
    };

    // Orphans: packs on storage the index does not list. Listed before the session check (see
    // design.md for why this order makes deleting them safe).
    let listed: Vec<(String, u64)> = repo.backend().list(FileKind::Pack)?;
    let no_writers = session::live_sessions(repo)?.is_empty();

    // 1. Mark.
    let snaps0: Vec<SnapshotEntry> = repo.snapshots()?;
    report.snapshots = snaps0.len() as u64;
    let packs = repo.index().packs()?;
    report.packs = packs.len() as u64;
    let indexed: HashSet<String> = packs.iter().map(|(_, p)| p.id.to_hex()).collect();
    let mut marker = Marker {
        repo,
        reader: repo.index().reader()?,
        packs: packs
            .into_iter()
            .filter(|(_, info)| info.indexed_ns < started_ns)
            .map(|(no, info)| {
                let words = (info.count as usize).div_ceil(64);
                (
                    no,
                    PackMark {
                        info,
                        bits: vec![0; words],
                    },
                )
            })
            .collect(),
        other_trees: HashSet::new(),
        live: 0,
        missing: 0,
        reachable_condemned: Vec::new(),
    };
    progress.set_total(snaps0.len() as u64, 0);
    for s in &snaps0 {
        marker.walk(s.snapshot.root)?;
        progress.add(1, 0);
    }
    report.live_objects = marker.live;
    report.missing_objects = marker.missing;
    if !marker.reachable_condemned.is_empty() && !opts.dry_run {
        // Left by an earlier interrupted gc and still needed.
        report.rescued += repo.index().rescue(&marker.reachable_condemned)?;
        marker.reachable_condemned.clear();
    }

    // 2. Plan.
    let mut plan: Vec<Planned> = Vec::new();
    for (no, pm) in &marker.packs {
        report.bytes_before += pm.info.size;
        let records = match read_pack_records(repo.backend().as_ref(), &pm.info.id) {
            Ok((_, r)) => r,
            Err(e) => {
                progress.warn(&format!(
                    "pack {} cannot be read ({e:#}); gc leaves it alone: run `puce check`",
                    pm.info.id.short(16)
                ));
                continue;
            }
        };
        let mut live_bytes = 0u64;
        let mut dead_bytes = 0u64;
        for (i, r) in records.iter().enumerate() {
            if pm.get(i as u32) {
                live_bytes += u64::from(r.stored_len);
            } else {
                dead_bytes += u64::from(r.stored_len);
            }
        }
        let total = (live_bytes + dead_bytes).max(1);
        let fate = if live_bytes == 0 {
            Fate::Delete
        } else if dead_bytes as f64 / total as f64 > opts.repack_unused {
            Fate::Repack
        } else {
            report.bytes_unused_kept += dead_bytes;
            Fate::Keep
        };
        // Only doomed packs keep their records: memory is 1 bit per object marked, plus a
        // trailer record (48 bytes) per object of the packs gc rewrites or deletes.
        let records = if matches!(fate, Fate::Keep) {
            Vec::new()
        } else {
            records
        };
        plan.push(Planned {
            no: *no,
            id: pm.info.id,
            size: pm.info.size,
            records,
            fate,
        });
    }
    let orphans: Vec<(String, u64)> = if no_writers {
        listed
            .into_iter()
            .filter(|(name, _)| !indexed.contains(name))
            .collect()
    } else {
        Vec::new()
    };
    for p in &plan {
        match p.fate {
            Fate::Keep => {}
            Fate::Delete => {
                report.packs_deleted += 1;
                report.objects_removed += p.records.len() as u64;
                report.bytes_freed += p.size;
            }
            Fate::Repack => {
                report.packs_repacked += 1;
                let pm = &marker.packs[&p.no];
                let live: u64 = p
                    .records
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| pm.get(*i as u32))
                    .map(|(_, r)| u64::from(r.stored_len) + 96)
                    .sum();
                report.bytes_rewritten += live;
                report.bytes_freed += p.size.saturating_sub(live);
                report.objects_removed += p
                    .records
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| !pm.get(*i as u32))
                    .count() as u64;
            }
        }
    }
    report.packs_orphaned = orphans.len() as u64;
    report.bytes_freed += orphans.iter().map(|(_, s)| s).sum::<u64>();
    if opts.dry_run {
        return Ok(report);
    }

    // 3. Condemn the dead objects of doomed packs (those the index points at).
    let doomed: Vec<&Planned> = plan
        .iter()
        .filter(|p| !matches!(p.fate, Fate::Keep))
        .collect();
    let mut to_condemn = Vec::new();
    for p in &doomed {
        let pm = &marker.packs[&p.no];
        for (i, r) in p.records.iter().enumerate() {
            if !pm.get(i as u32)
                && let Some(loc) = marker.reader.get_live(&r.id)?
                && loc.pack == p.no
                && loc.entry == i as u32
            {
                to_condemn.push((r.id, loc));
            }
        }
    }
    repo.index().condemn(&to_condemn)?;
    pause_for_tests()?;

    // 4. Wait for the writers that may have decided to reuse a condemned object.
    let waiting: Vec<(u64, _)> = session::live_sessions(repo)?;
    report.sessions_waited = waiting.len() as u64;
    let wait_start = Instant::now();
    let mut pending: Vec<u64> = waiting.iter().map(|(id, _)| *id).collect();
    while !pending.is_empty() {
        pending.retain(|id| session::is_alive(repo.root(), *id));
        if pending.is_empty() {
            break;
        }
        if wait_start.elapsed() >= opts.max_wait {
            report.deferred = true;
            report.waited_ms = wait_start.elapsed().as_millis() as u64;
            progress.warn(&format!(
                "{} writers are still running after {:?}: the condemned objects stay until the \
                 next gc",
                pending.len(),
                opts.max_wait
            ));
            report.bytes_freed = 0;
            report.packs_deleted = 0;
            report.packs_repacked = 0;
            report.packs_orphaned = 0;
            return Ok(report);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    report.waited_ms = wait_start.elapsed().as_millis() as u64;
    // Mark again from the snapshots committed meanwhile; rescue what they need.
    marker.reader = repo.index().reader()?;
    let known: HashSet<SnapshotId> = snaps0.iter().map(|s| s.id).collect();
    let snaps1 = repo.snapshots()?;
    for s in snaps1.iter().filter(|s| !known.contains(&s.id)) {
        marker.walk(s.snapshot.root)?;
    }
    if !marker.reachable_condemned.is_empty() {
        report.rescued += repo.index().rescue(&marker.reachable_condemned)?;
    }

    // 5. Retire doomed packs in batches, so that space comes back as gc goes (on a full disk,
    //    the packs with nothing live go first: that needs no new space at all). A batch is
    //    the source packs whose live objects are all in sealed new packs.
    let mut doomed = doomed;
    doomed.sort_by_key(|p| !matches!(p.fate, Fate::Delete));
    let mut batch = Batch::default();
    let mut writer: Option<PackWriter> = None;
    let target = repo.config().pack_target_size;
    let (mut freed, mut written, mut rewritten) = (0u64, 0u64, 0u64);
    for p in &doomed {
        // The objects the index still locates here need a copy: the marked ones, and any a
        // writer rescued after gc's own rescue (see `keep_reachable`). A fresh view per pack
        // keeps the window for such a rescue short; one that falls inside it makes the safety
        // check of `retire_packs` stop gc before anything of this batch is deleted.
        let reader = repo.index().reader()?;
        let mut live: Vec<(&Record, Location)> = Vec::new();
        for (i, r) in p.records.iter().enumerate() {
            if let Some(loc) = reader.get_live(&r.id)?
                && loc.pack == p.no
                && loc.entry == i as u32
            {
                live.push((r, loc));
            }
        }
        if !live.is_empty() {
            let data = repo.backend().read(FileKind::Pack, &p.id.to_hex())?;
            for (r, loc) in live {
                let start = r.offset as usize;
                let end = start + r.stored_len as usize;
                let stored = data
                    .get(start..end)
                    .ok_or_else(|| Error::corrupt(format!("pack {} is truncated", p.id)))?;
                // Verify before copying: gc must not spread damage.
                crate::repo::decode_object(&r.id, r.flags, r.raw_len, stored)
                    .map_err(|e| e.context(format!("gc: pack {}", p.id.short(16))))?;
                let w = match writer.as_mut() {
                    Some(w) => w,
                    None => writer.insert(PackWriter::new(repo.backend().as_ref())?),
                };
                w.add(r.id, r.kind, r.flags, r.raw_len, stored)?;
                rewritten += stored.len() as u64 + 96;
                batch.moved.push((r.id, loc));
                if w.len() >= target
                    && let Some(w) = writer.take()
                {
                    let sealed = w.finish()?;
                    written += sealed.1;
                    batch.new_packs.push(sealed);
                    // Sources completed before this object are safe to retire now.
                    freed += batch.retire(repo)?;
                }
            }
        }
        batch
            .sources
            .push((p.no, p.id, p.size, p.records.iter().map(|r| r.id).collect()));
        if writer.as_ref().is_none_or(|w| w.is_empty()) {
            // Nothing of this source waits in an unsealed pack.
            freed += batch.retire(repo)?;
        }
    }
    if let Some(w) = writer.take() {
        if w.is_empty() {
            w.abort();
        } else {
            let sealed = w.finish()?;
            written += sealed.1;
            batch.new_packs.push(sealed);
        }
    }
    freed += batch.retire(repo)?;
    // Nothing indexes a pack it did not write without the gc lock (see `try_gc_lock`), so the
    // orphans are still unindexed; checked again all the same, since deleting an indexed pack
    // would lose data.
    let indexed_now: HashSet<String> = repo
        .index()
        .packs()?
        .iter()
        .map(|(_, p)| p.id.to_hex())
        .collect();
    for (name, size) in &orphans {
        if indexed_now.contains(name) {
            progress.warn(&format!(
                "pack {name} was indexed while gc ran; gc leaves it in place"
            ));
            continue;
        }
        repo.backend().remove(FileKind::Pack, name)?;
        freed += size;
    }
    report.bytes_rewritten = rewritten;
    report.bytes_freed = freed.saturating_sub(written);
    Ok(report)
}

/// What [`keep_reachable`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeepReport {
    /// Whether the tree had to be walked (a base was forgotten, or objects were condemned).
    pub walked: bool,
    /// Condemned objects moved back to `objects` because the tree reuses them.
    pub rescued: u64,
}

/// For a writer that reuses stored objects by id without holding their bytes: a mount commits
/// edits made on a snapshot it loaded long before its session began. Call it under the
/// writer's session, once the new objects are indexed and before the snapshot record is
/// written; `bases` are the snapshots the tree `root` was built from.
///
/// If every base is still listed and nothing is condemned, there is nothing to do: what the
/// bases reach is live, and any gc that condemns from now on waits for the session. Otherwise
/// every object `root` reaches is looked up: a condemned one is rescued (a gc about to delete
/// its pack then copies it, or stops at its safety check), and a missing one is an error, so
/// that no snapshot referring to it is written. See `docs/design.md`, "Garbage collection".
pub fn keep_reachable(repo: &Repo, root: &ObjectId, bases: &[SnapshotId]) -> Result<KeepReport> {
    let listed: HashSet<String> = repo
        .backend()
        .list(FileKind::Snapshot)?
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    let reader = repo.index().reader()?;
    if bases.iter().all(|b| listed.contains(&b.to_hex())) && !reader.any_condemned()? {
        return Ok(KeepReport::default());
    }
    let mut condemned = Vec::new();
    let mut seen_trees = HashSet::new();
    let mut stack = vec![*root];
    let check = |id: &ObjectId, condemned: &mut Vec<ObjectId>| -> Result<()> {
        if reader.get_live(id)?.is_some() {
            Ok(())
        } else if reader.is_condemned(id)? {
            condemned.push(*id);
            Ok(())
        } else {
            Err(gone(id))
        }
    };
    while let Some(t) = stack.pop() {
        if !seen_trees.insert(t) {
            continue;
        }
        check(&t, &mut condemned)?;
        for e in repo.read_tree_with(&reader, &t)?.entries {
            match e.node {
                Node::File { chunks, .. } => {
                    for c in &chunks {
                        check(c, &mut condemned)?;
                    }
                }
                Node::Dir { tree } => stack.push(tree),
                Node::Symlink { .. } => {}
            }
        }
    }
    let rescued = repo.index().rescue(&condemned)?;
    // A rescue that found its row gone lost the race with gc's retirement of the pack.
    let reader = repo.index().reader()?;
    for id in &condemned {
        if reader.get_live(id)?.is_none() {
            return Err(gone(id));
        }
    }
    Ok(KeepReport {
        walked: true,
        rescued,
    })
}

fn gone(id: &ObjectId) -> Error {
    Error::not_found(format!(
        "object {id}, which these changes reuse from the snapshot they were made on, is no \
         longer in the repository (that snapshot was forgotten and gc deleted its data); \
         nothing was committed"
    ))
}

/// Doomed packs whose live objects are copied, and the new packs holding the copies.
#[derive(Default)]
struct Batch {
    new_packs: Vec<(PackId, u64, Vec<Record>)>,
    moved: Vec<(ObjectId, Location)>,
    sources: Vec<(u32, PackId, u64, Vec<ObjectId>)>,
}

impl Batch {
    /// Index the new packs and retire the sources in one transaction, then delete the old
    /// files. Returns the bytes deleted. The moves whose copy is still in an unsealed pack stay
    /// for the next batch (their sources are not in this batch).
    fn retire(&mut self, repo: &Repo) -> Result<u64> {
        if self.sources.is_empty() && self.new_packs.is_empty() {
            return Ok(0);
        }
        let sealed: HashSet<ObjectId> = self
            .new_packs
            .iter()
            .flat_map(|(_, _, recs)| recs.iter().map(|r| r.id))
            .collect();
        let (now, later): (Vec<_>, Vec<_>) = self
            .moved
            .drain(..)
            .partition(|(id, _)| sealed.contains(id));
        self.moved = later;
        let retired: Vec<(u32, Vec<ObjectId>)> = self
            .sources
            .iter()
            .map(|(no, _, _, members)| (*no, members.clone()))
            .collect();
        repo.index()
            .retire_packs(&self.new_packs, &now, &[], &retired)?;
        let mut freed = 0;
        for (_, id, size, _) in self.sources.drain(..) {
            repo.backend().remove(FileKind::Pack, &id.to_hex())?;
            freed += size;
        }
        self.new_packs.clear();
        Ok(freed)
    }
}

/// Forget snapshots: delete their records (the objects go at the next gc).
pub fn forget(repo: &Repo, ids: &[SnapshotId]) -> Result<()> {
    let gone: Vec<_> = repo
        .snapshots()?
        .into_iter()
        .filter(|s| ids.contains(&s.id))
        .collect();
    for id in ids {
        repo.backend().remove(FileKind::Snapshot, &id.to_hex())?;
    }
    repo.index().remove_snapshots(ids)?;
    // After the records: a scope rebuilt meanwhile must not walk them again.
    crate::reach::forget(repo, &gone)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::NoProgress;
    use crate::repo::InitOptions;
    use crate::snapshot::{SnapshotOptions, snapshot};

    #[test]
    fn keep_reachable_rescues_condemned_objects_and_refuses_deleted_ones() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(src.join("sub")).unwrap();
        std::fs::write(src.join("a.txt"), b"reused by a mount").unwrap();
        std::fs::write(src.join("sub/b.txt"), b"and this too").unwrap();
        let repo = Arc::new(Repo::init(&dir.path().join("r"), &InitOptions::default()).unwrap());
        let opts = SnapshotOptions {
            space: Some("docs".into()),
            threads: 1,
            ..SnapshotOptions::default()
        };
        let snap = snapshot(&repo, &src, &opts, &NoProgress).unwrap();
        let root = snap.snapshot.root;
        // The base is listed and nothing is condemned: nothing to look at.
        let r = keep_reachable(&repo, &root, &[snap.id]).unwrap();
        assert_eq!(r, KeepReport::default());
        // The base is forgotten, and a gc has condemned its objects but not deleted them.
        forget(&repo, &[snap.id]).unwrap();
        let mut all = Vec::new();
        repo.index()
            .for_each_object(|id, loc| {
                all.push((id, loc));
                Ok(())
            })
            .unwrap();
        assert_eq!(repo.index().condemn(&all).unwrap(), all.len() as u64);
        let r = keep_reachable(&repo, &root, &[snap.id]).unwrap();
        assert!(r.walked);
        assert_eq!(r.rescued, all.len() as u64);
        let reader = repo.index().reader().unwrap();
        for (id, _) in &all {
            assert!(reader.contains(id).unwrap(), "{id} was not rescued");
        }
        // Condemned again and deleted by gc: the commit must not happen.
        repo.index().condemn(&all).unwrap();
        let g = gc(&repo, &GcOptions::default(), &NoProgress).unwrap();
        assert!(g.packs_deleted > 0, "{g:?}");
        let e = keep_reachable(&repo, &root, &[snap.id]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert!(e.to_string().contains("nothing was committed"), "{e}");
    }
}
