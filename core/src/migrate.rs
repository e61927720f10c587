//! `puce migrate`: copy every snapshot of a repository into another (a new encrypted one, or
//! one under a new key after a leak), keeping each record's time, space, host, user, source,
//! tags, summary and origin, and its parents mapped to their new ids.
//!
//! Ids are keyed and cut points depend on the key, so nothing can be copied as stored: every
//! file is read back from the old repository (each object checked against its id) and cut
//! again with the new repository's chunker; trees are rebuilt with the new ids, and the
//! snapshot records written with the new root and parents. Everything is deterministic (the
//! same old repository and new key give the same new ids), and each migrated snapshot is
//! appended durably to a mapping file in the new repository's local directory
//! (`migrated-from-<old repository id>`, docs/format.md, "Migration map"), so that an
//! interrupted migration run again skips what is done and never duplicates a snapshot.
//!
//! Forgotten snapshots are not copied: a parent that was forgotten is replaced by the snapshots
//! its lineage leads back to (as [`crate::history::heads`] follows them), so the heads and the
//! ancestry of every remaining snapshot read the same. Receipts move with their snapshots;
//! space settings (retention policy, quota) are copied last.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use crate::backend::FileKind;
use crate::chunking::Chunker;
use crate::error::{Error, ErrorKind, Result};
use crate::format::pack::Kind;
use crate::format::snapshot::{Snapshot, SnapshotEntry};
use crate::format::tree::{MAX_TREE_DEPTH, Node, Tree, too_deep};
use crate::hash::{ObjectId, SnapshotId};
use crate::index::IndexReader;
use crate::progress::Progress;
use crate::repo::Repo;
use crate::saver::Saver;

/// Entries kept in each memo (old tree or file -> new ids), and chunk ids in the file memo
/// (32 bytes each), before it is emptied: bounds the memory of a migration whatever the
/// repository's size (a cleared memo only costs re-reading).
const MEMO_LIMIT: usize = 1 << 20;

/// One snapshot of the old repository and what became of it.
#[derive(Debug, Clone, Serialize)]
pub struct Moved {
    /// Its id in the old repository.
    pub old: SnapshotId,
    /// Its id in the new repository.
    pub new: SnapshotId,
    /// Its space.
    pub space: String,
    /// Whether this run copied it (false: an earlier, interrupted run had).
    pub copied: bool,
}

/// What [`migrate`] did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MigrateReport {
    /// Every snapshot of the old repository that is not forgotten, oldest first.
    pub snapshots: Vec<Moved>,
    /// Snapshots the old repository forgot (its forget records), not copied: their
    /// children's parents are the snapshots their lineage leads to.
    pub forgotten: u64,
    /// Snapshot records of the old repository that could not be read (damaged): not copied.
    pub unreadable: Vec<String>,
    /// Space settings (retention policies, quotas) copied.
    pub space_settings: u64,
    /// Receipts copied (who delivered each snapshot received from a peer, and when).
    pub receipts: u64,
    /// New objects stored in the new repository.
    pub objects: u64,
    /// Their plaintext bytes.
    pub raw_bytes: u64,
    /// Their stored bytes.
    pub stored_bytes: u64,
    /// Packs written.
    pub packs: u64,
    /// The mapping file (old id -> new id) in the new repository's local directory.
    pub map_file: PathBuf,
}

/// The mapping file of a migration from the repository `old_id` (hex) into the repository whose
/// local directory is `new_root`.
pub fn map_path(new_root: &Path, old_id: &str) -> PathBuf {
    new_root.join(format!("migrated-from-{old_id}"))
}

/// Read a mapping file: one `<old id> <new id>` line per migrated snapshot. A line that does not
/// parse (the last one, torn by a crash) is ignored: its snapshot is migrated again, to the
/// same id.
fn read_map(path: &Path) -> Result<HashMap<SnapshotId, SnapshotId>> {
    let text = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashMap::new()),
        Err(e) => return Err(Error::io("read the migration map", path, e)),
    };
    let text = String::from_utf8_lossy(&text);
    Ok(text
        .split_terminator('\n')
        .filter_map(|l| {
            let (a, b) = l.split_once(' ')?;
            Some((SnapshotId::from_hex(a).ok()?, SnapshotId::from_hex(b).ok()?))
        })
        .collect())
}

/// The open mapping file, appended to and synced after each snapshot.
struct MapFile {
    path: PathBuf,
    file: std::fs::File,
}

impl MapFile {
    fn open(path: &Path) -> Result<MapFile> {
        let existed = path.exists();
        let file = crate::fsutil::private_file()
            .append(true)
            .create(true)
            .open(path)
            .map_err(|e| Error::io("open the migration map", path, e))?;
        if !existed && let Some(dir) = path.parent() {
            crate::fsutil::sync_dir(dir)?;
        }
        Ok(MapFile {
            path: path.to_path_buf(),
            file,
        })
    }

    fn append(&mut self, old: &SnapshotId, new: &SnapshotId) -> Result<()> {
        let line = format!("{} {}\n", old.to_hex(), new.to_hex());
        self.file
            .write_all(line.as_bytes())
            .and_then(|()| self.file.sync_data())
            .map_err(|e| Error::io("write the migration map", &self.path, e))
    }
}

/// The remaining (not forgotten) snapshots `parents` stand for: each parent that remains, and
/// for each forgotten one, what its lineage record leads back to. In first-seen order.
fn remaining_parents(
    parents: &[SnapshotId],
    remaining: &HashSet<SnapshotId>,
    lineage: &crate::history::Lineage,
) -> Vec<SnapshotId> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let mut stack: Vec<SnapshotId> = parents.iter().rev().copied().collect();
    while let Some(p) = stack.pop() {
        if !seen.insert(p) {
            continue;
        }
        if remaining.contains(&p) {
            out.push(p);
        } else if let Some(pp) = lineage.get(&p) {
            stack.extend(pp.iter().rev().copied());
        }
    }
    out
}

/// `snaps` (oldest first) in an order where every snapshot comes after its parents `deps`.
fn parents_first(
    snaps: &[SnapshotEntry],
    deps: &HashMap<SnapshotId, Vec<SnapshotId>>,
) -> Result<Vec<SnapshotEntry>> {
    let mut done: HashSet<SnapshotId> = HashSet::new();
    let mut out = Vec::with_capacity(snaps.len());
    let mut left: Vec<&SnapshotEntry> = snaps.iter().collect();
    while !left.is_empty() {
        let before = left.len();
        left.retain(|s| {
            let ready = deps
                .get(&s.id)
                .is_none_or(|d| d.iter().all(|p| done.contains(p)));
            if ready {
                done.insert(s.id);
                out.push((*s).clone());
            }
            !ready
        });
        if left.len() == before {
            return Err(Error::corrupt(format!(
                "the parents of snapshot {} form a cycle: the old repository is damaged",
                left[0].id
            )));
        }
    }
    Ok(out)
}

/// Copy every snapshot of `old` that is not forgotten into `new` (see the module
/// documentation). Run again after an interruption, it goes on where it stopped.
pub fn migrate(old: &Repo, new: &Arc<Repo>, progress: &dyn Progress) -> Result<MigrateReport> {
    if old.config().repo_id == new.config().repo_id {
        return Err(Error::invalid(
            "the old and the new repository are the same repository: give another directory \
             for the new one",
        ));
    }
    let all = old.snapshots()?;
    let forgotten = crate::forgotten::ids(old)?;
    let lineage = crate::forgotten::lineage(old, &all)?;
    let remaining: Vec<SnapshotEntry> = all
        .iter()
        .filter(|s| !forgotten.contains(&s.id))
        .cloned()
        .collect();
    let ids: HashSet<SnapshotId> = remaining.iter().map(|s| s.id).collect();
    let deps: HashMap<SnapshotId, Vec<SnapshotId>> = remaining
        .iter()
        .map(|s| {
            let p = remaining_parents(&s.snapshot.parents, &ids, &lineage);
            (s.id, p)
        })
        .collect();
    let order = parents_first(&remaining, &deps)?;
    let unreadable = unreadable(old, &all)?;
    for name in &unreadable {
        progress.warn(&format!(
            "snapshot record {name} of the old repository cannot be read: not migrated (run \
             `puce check` on the old repository)"
        ));
    }
    let map_file = map_path(new.root(), &old.config().repo_id_hex());
    let mut map = read_map(&map_file)?;
    let present: HashSet<SnapshotId> = new.snapshots()?.into_iter().map(|s| s.id).collect();
    // A mapped snapshot the new repository lacks (removed since) is migrated again.
    map.retain(|_, n| present.contains(n));
    let mut receipts: HashMap<SnapshotId, Vec<crate::format::receipt::Receipt>> = HashMap::new();
    for r in crate::reach::receipts(old)? {
        receipts.entry(r.snapshot).or_default().push(r);
    }
    let total = order.iter().filter(|s| !map.contains_key(&s.id));
    let (files, bytes) = total.fold((0, 0), |(f, b), s| {
        (f + s.snapshot.summary.files, b + s.snapshot.summary.bytes)
    });
    progress.set_total(files, bytes);
    let mut report = MigrateReport {
        forgotten: forgotten.len() as u64,
        unreadable,
        map_file: map_file.clone(),
        ..MigrateReport::default()
    };
    let saver = Saver::with_session(new.clone(), crate::worker_threads(0), "migrate")?;
    let mut copier = Copier::new(old, new, &saver)?;
    let mut batch = Batch {
        new,
        out: MapFile::open(&map_file)?,
        receipts,
        pending: Vec::new(),
    };
    for s in &order {
        if let Some(n) = map.get(&s.id) {
            report.snapshots.push(moved(s, *n, false));
            continue;
        }
        progress.current(&format!(
            "snapshot {} ({})",
            s.id.short(12),
            s.snapshot.space
        ));
        copier.counted = (0, 0);
        let root = copier
            .tree(&s.snapshot.root, 0, progress)
            .map_err(|e| e.context(format!("snapshot {} of the old repository", s.id)))?;
        // What folders copied before (the memo) hold counts as done too.
        let (f, b) = copier.counted;
        let sum = &s.snapshot.summary;
        progress.add(sum.files.saturating_sub(f), sum.bytes.saturating_sub(b));
        // Parents come first in `order`, so each is mapped by now.
        let mut parents = Vec::new();
        for p in deps.get(&s.id).into_iter().flatten() {
            parents.push(*map.get(p).ok_or_else(|| {
                Error::other(format!("parent {p} of snapshot {} not migrated", s.id))
            })?);
        }
        if parents.len() > 1 {
            // As a merge writes them (crate::merge::merge_snapshot): in id order.
            parents.sort();
        }
        let record = Snapshot {
            parents,
            root,
            ..s.snapshot.clone()
        };
        let id = Snapshot::id_of(&record.encode()?);
        map.insert(s.id, id);
        report.snapshots.push(moved(s, id, true));
        batch.pending.push((s.id, record));
        if batch.pending.len() >= BATCH || copier.target.queued >= new.config().pack_target_size {
            report.receipts += batch.commit(&saver)?;
            copier.target.queued = 0;
        }
    }
    report.receipts += batch.commit(&saver)?;
    let stats = saver.finish()?;
    for (name, settings) in old.all_space_settings()? {
        if new.space_settings(&name)?.as_ref() != Some(&settings) {
            new.put_space_settings(&name, &settings)?;
        }
        report.space_settings += 1;
    }
    report.objects = stats.objects;
    report.raw_bytes = stats.raw_bytes;
    report.stored_bytes = stats.stored_bytes;
    report.packs = stats.packs;
    Ok(report)
}

/// Snapshots whose objects are queued, written together after one flush of the saver (a
/// flush seals a pack: one per snapshot would leave a pack per nightly snapshot).
const BATCH: usize = 64;

/// Snapshot records waiting for their objects to be durable.
struct Batch<'a> {
    new: &'a Repo,
    out: MapFile,
    receipts: HashMap<SnapshotId, Vec<crate::format::receipt::Receipt>>,
    /// Old id and new record, in the order they were made (parents first).
    pending: Vec<(SnapshotId, Snapshot)>,
}

impl Batch<'_> {
    /// Make every object queued durable and indexed, then write the pending records, each
    /// after its receipts and before its line in the map. Returns the receipts written.
    fn commit(&mut self, saver: &Saver) -> Result<u64> {
        if self.pending.is_empty() {
            return Ok(0);
        }
        saver.flush()?;
        let mut receipts = 0;
        for (old, record) in std::mem::take(&mut self.pending) {
            let id = Snapshot::id_of(&record.encode()?);
            for r in self.receipts.get(&old).into_iter().flatten() {
                let r = crate::format::receipt::Receipt {
                    snapshot: id,
                    ..r.clone()
                };
                self.new
                    .backend()
                    .write(FileKind::Receipt, &r.file_name(), &r.encode()?)?;
                receipts += 1;
            }
            self.new.save_snapshot(&record)?;
            test_pause();
            self.out.append(&old, &id)?;
        }
        Ok(receipts)
    }
}

/// In debug builds, sleep `PUCE_TEST_MIGRATE_PAUSE_MS` after each snapshot record is written
/// and before it is mapped: a test hook, so that end-to-end tests kill a migration in its
/// narrowest window at a moment they choose.
fn test_pause() {
    if cfg!(debug_assertions)
        && let Some(ms) = std::env::var("PUCE_TEST_MIGRATE_PAUSE_MS")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
    {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
}

/// The snapshot records of `repo` that [`Repo::snapshots`] left out (damaged, or of a newer
/// version), by file name.
fn unreadable(repo: &Repo, all: &[SnapshotEntry]) -> Result<Vec<String>> {
    let read: HashSet<SnapshotId> = all.iter().map(|s| s.id).collect();
    Ok(repo
        .backend()
        .list(FileKind::Snapshot)?
        .into_iter()
        .map(|(name, _)| name)
        .filter(|n| SnapshotId::from_hex(n).is_ok_and(|id| !read.contains(&id)))
        .collect())
}

fn moved(s: &SnapshotEntry, new: SnapshotId, copied: bool) -> Moved {
    Moved {
        old: s.id,
        new,
        space: s.snapshot.space.clone(),
        copied,
    }
}

/// Where a migration stores new objects.
struct Target<'a> {
    new: &'a Repo,
    saver: &'a Saver,
    reader: IndexReader,
    generation: u64,
    /// Plaintext bytes of the new objects queued since the last flush.
    queued: u64,
}

impl Target<'_> {
    /// Store `data` in the new repository unless it holds it (or this run queued it).
    fn save(&mut self, id: ObjectId, kind: Kind, data: Vec<u8>) -> Result<()> {
        let g = self.saver.generation();
        if g != self.generation {
            self.reader = self.new.index().reader()?;
            self.generation = g;
        }
        let len = data.len() as u64;
        if self.saver.save(&self.reader, id, kind, data)? {
            self.queued += len;
        }
        Ok(())
    }
}

/// Rebuilds trees and files of the old repository in the new one.
struct Copier<'a> {
    old: &'a Repo,
    old_reader: IndexReader,
    new: &'a Repo,
    target: Target<'a>,
    /// Old tree id -> new tree id.
    trees: HashMap<ObjectId, ObjectId>,
    /// BLAKE3 of a file's old chunk ids -> its new chunk ids.
    files: HashMap<crate::hash::Hash, Vec<ObjectId>>,
    /// Chunk ids held by `files`.
    memo_chunks: usize,
    /// Files and bytes of the current snapshot read so far (for progress).
    counted: (u64, u64),
}

impl<'a> Copier<'a> {
    fn new(old: &'a Repo, new: &'a Repo, saver: &'a Saver) -> Result<Copier<'a>> {
        Ok(Copier {
            old,
            old_reader: old.index().reader()?,
            new,
            target: Target {
                new,
                saver,
                reader: new.index().reader()?,
                generation: saver.generation(),
                queued: 0,
            },
            trees: HashMap::new(),
            files: HashMap::new(),
            memo_chunks: 0,
            counted: (0, 0),
        })
    }

    /// The new id of the old tree `id` at `depth`, storing it and everything below it.
    fn tree(&mut self, id: &ObjectId, depth: usize, progress: &dyn Progress) -> Result<ObjectId> {
        if let Some(n) = self.trees.get(id) {
            return Ok(*n);
        }
        if depth > MAX_TREE_DEPTH {
            return Err(too_deep(format!("tree {id}")));
        }
        let mut tree: Tree = self.old.read_tree_with(&self.old_reader, id)?;
        for e in &mut tree.entries {
            match &mut e.node {
                Node::Dir { tree } => *tree = self.tree(tree, depth + 1, progress)?,
                Node::File { size, chunks } => {
                    *chunks = self.file(chunks, *size).map_err(|err| {
                        err.context(format!("file {}", String::from_utf8_lossy(&e.name)))
                    })?;
                    progress.add(1, *size);
                    self.counted = (self.counted.0 + 1, self.counted.1 + *size);
                }
                _ => {}
            }
        }
        let bytes = tree.encode()?;
        let new_id = self.new.object_id(&bytes);
        self.target.save(new_id, Kind::Tree, bytes)?;
        if self.trees.len() >= MEMO_LIMIT {
            self.trees.clear();
        }
        self.trees.insert(*id, new_id);
        Ok(new_id)
    }

    /// The new chunk ids of a file made of the old `chunks` (`size` bytes in all), reading it
    /// from the old repository and cutting it with the new one's chunker.
    fn file(&mut self, chunks: &[ObjectId], size: u64) -> Result<Vec<ObjectId>> {
        let mut h = blake3::Hasher::new();
        for c in chunks {
            h.update(c.as_bytes());
        }
        let key = crate::hash::Hash(*h.finalize().as_bytes());
        if let Some(n) = self.files.get(&key) {
            return Ok(n.clone());
        }
        let reading = OldFile {
            repo: self.old,
            reader: &self.old_reader,
            chunks,
            next: 0,
            buf: Vec::new(),
            pos: 0,
            failed: std::cell::Cell::new(None),
        };
        let mut chunker = Chunker::new(reading, self.new.config().chunker, 4 << 20)
            .with_gear(self.new.codec().gear());
        let mut out = Vec::new();
        let mut total = 0u64;
        loop {
            let chunk = match chunker.next_chunk() {
                Ok(Some(c)) => c.to_vec(),
                Ok(None) => break,
                Err(e) => {
                    return Err(chunker.get_ref().failed.take().unwrap_or_else(|| {
                        Error::other("cannot read a file of the old repository").with_source(e)
                    }));
                }
            };
            total += chunk.len() as u64;
            let id = self.new.object_id(&chunk);
            self.target.save(id, Kind::Data, chunk)?;
            out.push(id);
        }
        if total != size {
            return Err(Error::corrupt(format!(
                "its chunks hold {total} bytes, its entry says {size}: the old repository is \
                 damaged (run `puce check` on it)"
            )));
        }
        self.memo_chunks += out.len();
        if self.files.len() >= MEMO_LIMIT || self.memo_chunks > MEMO_LIMIT {
            self.files.clear();
            self.memo_chunks = out.len();
        }
        self.files.insert(key, out.clone());
        Ok(out)
    }
}

/// A file of the old repository as a reader: its chunks one after the other, each checked
/// against its id as it is read.
struct OldFile<'a> {
    repo: &'a Repo,
    reader: &'a IndexReader,
    chunks: &'a [ObjectId],
    next: usize,
    buf: Vec<u8>,
    pos: usize,
    /// The error behind a failed read, kept whole for the caller.
    failed: std::cell::Cell<Option<Error>>,
}

impl Read for OldFile<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.buf.len() {
            let Some(id) = self.chunks.get(self.next) else {
                return Ok(0);
            };
            match self.repo.read_object_with(self.reader, id) {
                Ok(b) => self.buf = b,
                Err(e) => {
                    let io = std::io::Error::other(e.to_string());
                    self.failed.set(Some(e));
                    return Err(io);
                }
            }
            self.next += 1;
            self.pos = 0;
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Check the new repository before a migration: it must be encrypted, and with `new_key`
/// (`puce migrate --new-key`, the old key leaked) under another key than the old one.
pub fn check_target(old: &Repo, new: &Repo, new_key: bool) -> Result<()> {
    let fp = |r: &Repo| r.config().encryption.map(|e| e.fingerprint);
    let Some(key) = fp(new) else {
        return Err(Error::invalid(format!(
            "{} is not encrypted: a migration writes into an encrypted repository (leave the \
             directory out or empty, and `puce migrate` makes one)",
            new.root().display()
        )));
    };
    if new_key && fp(old) == Some(key) {
        return Err(Error::new(
            ErrorKind::Key,
            format!(
                "{} uses the old repository's key ({key}): with --new-key the new repository \
                 must have a new key (give a directory that does not exist yet)",
                new.root().display()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> SnapshotId {
        SnapshotId::from(crate::hash::Hash([n; 32]))
    }

    /// A forgotten parent stands for what its lineage leads to: v1 <- (v2 forgotten) <- v3
    /// gives v3 the parent v1; a merge of v3 and a forgotten v4 whose parent was v1 gives v3,
    /// v1.
    #[test]
    fn forgotten_parents_are_replaced_by_their_lineage() {
        let remaining: HashSet<SnapshotId> = [id(1), id(3)].into();
        let lineage: crate::history::Lineage = [(id(2), vec![id(1)]), (id(4), vec![id(1)])].into();
        assert_eq!(
            remaining_parents(&[id(2)], &remaining, &lineage),
            vec![id(1)]
        );
        assert_eq!(
            remaining_parents(&[id(3), id(4)], &remaining, &lineage),
            vec![id(3), id(1)]
        );
        // A parent forgotten without a lineage record: the history stops there, as before.
        assert!(remaining_parents(&[id(9)], &remaining, &lineage).is_empty());
    }

    #[test]
    fn a_torn_last_line_of_the_map_is_ignored() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("m");
        let mut f = MapFile::open(&p).unwrap();
        f.append(&id(1), &id(2)).unwrap();
        f.append(&id(3), &id(4)).unwrap();
        let mut text = std::fs::read_to_string(&p).unwrap();
        text.truncate(text.len() - 10);
        std::fs::write(&p, text).unwrap();
        let m = read_map(&p).unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!(m[&id(1)], id(2));
    }
}
