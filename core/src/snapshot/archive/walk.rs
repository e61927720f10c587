//! The walk of a snapshot: the calling thread lists the folder in name order and builds the
//! trees bottom-up; files to read go to the reader threads ([`super::read`]), whose results
//! complete their directories as they arrive.

use std::ffi::OsStr;
use std::fs::{self, Metadata};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crossbeam_channel::{Receiver, Sender};
use globset::{Glob, GlobSet, GlobSetBuilder};

use super::SnapshotOptions;
use super::read::{FileDone, FileJob, FileStatus, mtime_ns, stat_entry};
use crate::error::{Error, ErrorKind, Result};
use crate::format::pack::Kind;
use crate::format::snapshot::Summary;
use crate::format::tree::{Entry, MAX_TREE_DEPTH, Node, Tree};
use crate::hash::ObjectId;
use crate::index::{IndexReader, StatEntry, StatReader, stat_key};
use crate::paths::{join, path_depth};
use crate::progress::Progress;
use crate::repo::Repo;
use crate::saver::Saver;

/// What a finished walk built: the root tree, the counts, the warnings, and the stat cache
/// entries of the files read.
pub(super) type Walked = (ObjectId, Summary, Vec<String>, Vec<([u8; 16], StatEntry)>);

/// The exclude patterns of [`SnapshotOptions::excludes`].
struct Excludes {
    names: GlobSet,
    paths: GlobSet,
    any: bool,
}

impl Excludes {
    fn new(patterns: &[String]) -> Result<Excludes> {
        let mut names = GlobSetBuilder::new();
        let mut paths = GlobSetBuilder::new();
        for p in patterns {
            // "name/" means a directory of that name anywhere; "/x" is anchored at the folder.
            let body = p.trim_end_matches('/');
            let anchored = body.starts_with('/');
            let body = body.trim_start_matches('/');
            let glob = Glob::new(body)
                .map_err(|e| Error::invalid(format!("bad exclude pattern '{p}': {e}")))?;
            if anchored || body.contains('/') {
                paths.add(glob);
            } else {
                names.add(glob);
            }
        }
        let build = |b: GlobSetBuilder| {
            b.build()
                .map_err(|e| Error::invalid(format!("bad exclude pattern: {e}")))
        };
        Ok(Excludes {
            names: build(names)?,
            paths: build(paths)?,
            any: !patterns.is_empty(),
        })
    }

    fn matches(&self, name: &[u8], rel: &[u8]) -> bool {
        self.any
            && (self.names.is_match(Path::new(OsStr::from_bytes(name)))
                || self.paths.is_match(Path::new(OsStr::from_bytes(rel))))
    }
}

/// A directory whose tree is not complete yet.
struct PendingDir {
    entries: Vec<Option<Entry>>,
    waiting: usize,
    walked: bool,
    /// Where the finished tree goes: parent dir and slot, with this dir's own entry.
    up: Option<(usize, usize, Entry)>,
}

fn base_entry(name: &[u8], md: &Metadata, node: Node) -> Entry {
    Entry {
        name: name.to_vec(),
        mode: md.mode() & 0o7777,
        mtime_ns: mtime_ns(md),
        uid: md.uid(),
        gid: md.gid(),
        node,
        link: link_group(md),
    }
}

/// The hard-link group of a non-directory with several names: the same for every name of one
/// file (it is derived from the device and inode numbers, hashed, so that they do not leak),
/// and the same in the next snapshot, so that unchanged trees keep their ids.
fn link_group(md: &Metadata) -> Option<u64> {
    if md.is_dir() || md.nlink() < 2 {
        return None;
    }
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&md.dev().to_le_bytes());
    key[8..].copy_from_slice(&md.ino().to_le_bytes());
    let h = ObjectId::of(&key);
    let mut g = [0u8; 8];
    g.copy_from_slice(&h.as_bytes()[..8]);
    Some(u64::from_le_bytes(g))
}

/// The node of a fifo, socket or device, `None` for anything else.
fn special_node(md: &Metadata) -> Option<Node> {
    let ft = md.file_type();
    Some(if ft.is_fifo() {
        Node::Fifo
    } else if ft.is_socket() {
        Node::Socket
    } else if ft.is_char_device() {
        Node::CharDevice { rdev: md.rdev() }
    } else if ft.is_block_device() {
        Node::BlockDevice { rdev: md.rdev() }
    } else {
        return None;
    })
}

/// The walk's state: pending directories (a slab), the job queue, what is counted so far.
pub(super) struct Walker<'a> {
    repo: &'a Arc<Repo>,
    saver: &'a Saver,
    reader: IndexReader,
    reader_gen: u64,
    stat_reader: StatReader,
    dirs: Vec<Option<PendingDir>>,
    free: Vec<usize>,
    jobs: Sender<FileJob>,
    done: Receiver<FileDone>,
    in_flight: usize,
    excludes: Excludes,
    force_read: bool,
    summary: Summary,
    warnings: Vec<String>,
    stats: Vec<([u8; 16], StatEntry)>,
    progress: &'a dyn Progress,
    root_tree: Option<ObjectId>,
    skip_dir: Option<PathBuf>,
}

impl<'a> Walker<'a> {
    /// A walker sending files to read on `jobs` and receiving them on `done`; it does not
    /// enter `skip_dir` (the repository, when it is inside the folder).
    pub(super) fn new(
        repo: &'a Arc<Repo>,
        saver: &'a Saver,
        stat_reader: StatReader,
        (jobs, done): (Sender<FileJob>, Receiver<FileDone>),
        opts: &SnapshotOptions,
        progress: &'a dyn Progress,
        skip_dir: Option<PathBuf>,
    ) -> Result<Walker<'a>> {
        Ok(Walker {
            repo,
            saver,
            reader: repo.index().reader()?,
            reader_gen: saver.generation(),
            stat_reader,
            dirs: Vec::new(),
            free: Vec::new(),
            jobs,
            done,
            in_flight: 0,
            excludes: Excludes::new(&opts.excludes)?,
            force_read: opts.force_read,
            summary: Summary::default(),
            warnings: Vec::new(),
            stats: Vec::new(),
            progress,
            root_tree: None,
            skip_dir,
        })
    }

    /// Walk `source` against the parent snapshot's root and wait for every file; on an error,
    /// set `stop` for the readers. The job queue is closed and the readers' last results are
    /// drained before returning.
    pub(super) fn run(
        mut self,
        source: &Path,
        parent_root: Option<ObjectId>,
        stop: &AtomicBool,
    ) -> Result<Walked> {
        let walked = self.walk_dir(source, b"", parent_root, None);
        let walked = walked.and_then(|_| {
            while self.in_flight > 0 {
                self.drain_done(true)?;
            }
            Ok(())
        });
        if walked.is_err() {
            stop.store(true, Ordering::Relaxed);
        }
        let Walker {
            jobs,
            root_tree,
            summary,
            warnings,
            stats,
            done,
            ..
        } = self;
        drop(jobs);
        // Let the readers finish (they stop at the closed channel) before reporting.
        for d in done.iter() {
            drop(d);
        }
        walked?;
        let root = root_tree.ok_or_else(|| Error::other("internal: root tree not built"))?;
        Ok((root, summary, warnings, stats))
    }

    fn warn(&mut self, msg: String) {
        self.progress.warn(&msg);
        self.warnings.push(msg);
    }

    /// The index view, renewed when the saver has indexed new packs since it was taken.
    fn reader(&mut self) -> Result<&IndexReader> {
        let g = self.saver.generation();
        if g != self.reader_gen {
            self.reader = self.repo.index().reader()?;
            self.reader_gen = g;
        }
        Ok(&self.reader)
    }

    fn alloc(&mut self, d: PendingDir) -> usize {
        match self.free.pop() {
            Some(i) => {
                self.dirs[i] = Some(d);
                i
            }
            None => {
                self.dirs.push(Some(d));
                self.dirs.len() - 1
            }
        }
    }

    fn dir_mut(&mut self, i: usize) -> Result<&mut PendingDir> {
        self.dirs
            .get_mut(i)
            .and_then(|d| d.as_mut())
            .ok_or_else(|| Error::other("internal: pending directory missing"))
    }

    /// Walk directory `path` (relative path `rel`), whose parent-snapshot tree is `parent`.
    /// `up` says where its finished tree goes.
    fn walk_dir(
        &mut self,
        path: &Path,
        rel: &[u8],
        parent: Option<ObjectId>,
        up: Option<(usize, usize, Entry)>,
    ) -> Result<()> {
        if path_depth(rel) > MAX_TREE_DEPTH {
            return Err(Error::invalid(format!(
                "{} is nested more than {MAX_TREE_DEPTH} folders deep in the folder being \
                 saved, deeper than puce stores (docs/format.md, \"Trees\"): exclude it \
                 (--exclude) or move it higher up",
                path.display()
            )));
        }
        let parent_tree = match parent {
            Some(id) => {
                self.reader()?;
                match self.repo.read_tree_with(&self.reader, &id) {
                    Ok(t) => Some(t),
                    Err(e) => {
                        let msg = format!(
                            "cannot read the parent snapshot's tree for '{}': {e}; reading every \
                             file in it",
                            String::from_utf8_lossy(rel)
                        );
                        self.warn(msg);
                        None
                    }
                }
            }
            None => None,
        };
        let mut names: Vec<Vec<u8>> = Vec::new();
        match fs::read_dir(path) {
            Ok(rd) => {
                for e in rd {
                    match e {
                        Ok(e) => names.push(e.file_name().as_bytes().to_vec()),
                        Err(err) => {
                            self.summary.errors += 1;
                            let msg = format!("cannot list {}: {err}", path.display());
                            self.warn(msg);
                        }
                    }
                }
            }
            Err(err) if up.is_some() => {
                self.summary.errors += 1;
                let msg = format!("cannot list {}: {err}; skipped", path.display());
                self.warn(msg);
            }
            Err(err) => return Err(Error::io("cannot list", path, err)),
        }
        names.sort();
        let me = self.alloc(PendingDir {
            entries: Vec::with_capacity(names.len()),
            waiting: 0,
            walked: false,
            up,
        });
        self.summary.dirs += 1;
        for name in names {
            let child_rel = join(rel, &name);
            if self.excludes.matches(&name, &child_rel) {
                continue;
            }
            let child = path.join(OsStr::from_bytes(&name));
            let md = match fs::symlink_metadata(&child) {
                Ok(md) => md,
                Err(err) => {
                    if err.kind() != std::io::ErrorKind::NotFound {
                        self.summary.errors += 1;
                        let msg = format!("cannot stat {}: {err}; skipped", child.display());
                        self.warn(msg);
                    }
                    continue;
                }
            };
            let prev = parent_tree.as_ref().and_then(|t| t.get(&name));
            let ft = md.file_type();
            if ft.is_dir() {
                if self.skip_dir.as_deref() == Some(child.as_path()) {
                    continue;
                }
                let slot = self.push_slot(me, None)?;
                self.dir_mut(me)?.waiting += 1;
                let entry = base_entry(
                    &name,
                    &md,
                    Node::Dir {
                        tree: ObjectId::default(),
                    },
                );
                let prev_tree = match prev.map(|p| &p.node) {
                    Some(Node::Dir { tree }) => Some(*tree),
                    _ => None,
                };
                self.walk_dir(&child, &child_rel, prev_tree, Some((me, slot, entry)))?;
            } else if ft.is_file() {
                self.file(me, &name, &child, &md, prev)?;
            } else if ft.is_symlink() {
                match fs::read_link(&child) {
                    Ok(t) => {
                        let e = base_entry(
                            &name,
                            &md,
                            Node::Symlink {
                                target: t.as_os_str().as_bytes().to_vec(),
                            },
                        );
                        self.summary.symlinks += 1;
                        self.push_slot(me, Some(e))?;
                    }
                    Err(err) => {
                        self.summary.errors += 1;
                        let msg = format!("cannot read link {}: {err}; skipped", child.display());
                        self.warn(msg);
                    }
                }
            } else if let Some(node) = special_node(&md) {
                // Counted as (empty) files: the summary has no counter of its own for them.
                self.summary.files += 1;
                self.progress.add(1, 0);
                self.push_slot(me, Some(base_entry(&name, &md, node)))?;
            } else {
                let msg = format!("skipped special file {}", child.display());
                self.warn(msg);
            }
            self.drain_done(false)?;
        }
        self.dir_mut(me)?.walked = true;
        self.maybe_finish(me)
    }

    fn push_slot(&mut self, dir: usize, e: Option<Entry>) -> Result<usize> {
        let d = self.dir_mut(dir)?;
        d.entries.push(e);
        Ok(d.entries.len() - 1)
    }

    fn file(
        &mut self,
        dir: usize,
        name: &[u8],
        path: &Path,
        md: &Metadata,
        prev: Option<&Entry>,
    ) -> Result<()> {
        let key = stat_key(path.as_os_str().as_bytes());
        let now = stat_entry(md);
        let status = match prev.map(|p| &p.node) {
            Some(Node::File { size, chunks }) => {
                let same_meta =
                    prev.is_some_and(|p| p.mtime_ns == now.mtime_ns) && *size == now.size;
                if same_meta && !self.force_read {
                    let cached = self.stat_reader.get(&key)?;
                    if cached == Some(now) {
                        let e = base_entry(
                            name,
                            md,
                            Node::File {
                                size: *size,
                                chunks: chunks.clone(),
                            },
                        );
                        self.summary.files += 1;
                        self.summary.files_unmodified += 1;
                        self.summary.bytes += *size;
                        self.progress.add(1, 0);
                        self.push_slot(dir, Some(e))?;
                        return Ok(());
                    }
                }
                FileStatus::Changed
            }
            _ => FileStatus::New,
        };
        let slot = self.push_slot(dir, None)?;
        self.dir_mut(dir)?.waiting += 1;
        let job = FileJob {
            dir,
            slot,
            path: path.to_path_buf(),
            entry: base_entry(
                name,
                md,
                Node::File {
                    size: 0,
                    chunks: Vec::new(),
                },
            ),
            stat_key: key,
            status,
            listed: (md.dev(), md.ino()),
        };
        self.send_job(job)
    }

    /// Queue a file job; while the queue is full, handle finished files.
    fn send_job(&mut self, job: FileJob) -> Result<()> {
        let mut job = Some(job);
        while let Some(j) = job.take() {
            match self.jobs.try_send(j) {
                Ok(()) => break,
                Err(crossbeam_channel::TrySendError::Full(j)) => {
                    let mut sel = crossbeam_channel::Select::new();
                    let s = sel.send(&self.jobs);
                    let r = sel.recv(&self.done);
                    let op = sel.select();
                    if op.index() == s {
                        op.send(&self.jobs, j)
                            .map_err(|_| Error::other("reader threads stopped"))?;
                    } else if op.index() == r {
                        let d = op
                            .recv(&self.done)
                            .map_err(|_| Error::other("reader threads stopped"))?;
                        self.in_flight -= 1;
                        self.file_done(d)?;
                        job = Some(j);
                    }
                }
                Err(crossbeam_channel::TrySendError::Disconnected(_)) => {
                    return Err(Error::other("reader threads stopped"));
                }
            }
        }
        self.in_flight += 1;
        Ok(())
    }

    /// Handle finished files; with `block`, wait for at least one if any is in flight.
    fn drain_done(&mut self, block: bool) -> Result<()> {
        let mut first = block && self.in_flight > 0;
        loop {
            let d = if first {
                first = false;
                match self.done.recv() {
                    Ok(d) => d,
                    Err(_) => return Err(Error::other("reader threads stopped")),
                }
            } else {
                match self.done.try_recv() {
                    Ok(d) => d,
                    Err(_) => return Ok(()),
                }
            };
            self.in_flight -= 1;
            self.file_done(d)?;
        }
    }

    fn file_done(&mut self, d: FileDone) -> Result<()> {
        let FileDone {
            dir,
            slot,
            result,
            path,
            mut entry,
            stat_key,
            status,
        } = d;
        match result {
            Ok(rf) => {
                if rf.replaced {
                    let msg = format!(
                        "{} was replaced by another file while the snapshot was running; the \
                         snapshot holds the new file",
                        path.display()
                    );
                    self.warn(msg);
                }
                if rf.changed_while_reading {
                    let msg = format!(
                        "{} changed while it was being read; the snapshot holds the bytes read",
                        path.display()
                    );
                    self.warn(msg);
                }
                self.summary.files += 1;
                self.summary.bytes += rf.size;
                self.summary.bytes_read += rf.size;
                match status {
                    FileStatus::New => self.summary.files_new += 1,
                    FileStatus::Changed => self.summary.files_changed += 1,
                }
                if let Some(s) = rf.stat {
                    self.stats.push((stat_key, s));
                }
                entry.mtime_ns = rf.mtime_ns;
                (entry.mode, entry.uid, entry.gid) = rf.meta;
                entry.node = Node::File {
                    size: rf.size,
                    chunks: rf.chunks,
                };
                self.dir_mut(dir)?.entries[slot] = Some(entry);
            }
            Err(e) if e.kind() == ErrorKind::Io || e.kind() == ErrorKind::NotFound => {
                if e.is_disk_full() {
                    return Err(e);
                }
                self.summary.errors += 1;
                let msg = format!("{e:#}; skipped");
                self.warn(msg);
            }
            Err(e) => return Err(e),
        }
        self.dir_mut(dir)?.waiting -= 1;
        self.maybe_finish(dir)
    }

    /// Finish directory `i` if it is walked and nothing in it is pending; cascade upwards.
    fn maybe_finish(&mut self, mut i: usize) -> Result<()> {
        loop {
            let ready = {
                let d = self.dir_mut(i)?;
                d.walked && d.waiting == 0
            };
            if !ready {
                return Ok(());
            }
            let d = self.dirs[i]
                .take()
                .ok_or_else(|| Error::other("internal: pending directory missing"))?;
            self.free.push(i);
            let tree = Tree {
                entries: d.entries.into_iter().flatten().collect(),
            };
            let bytes = tree.encode()?;
            let id = self.repo.object_id(&bytes);
            self.reader()?;
            if self.saver.save(&self.reader, id, Kind::Tree, bytes)? {
                // counted by the saver
            }
            match d.up {
                None => {
                    self.root_tree = Some(id);
                    return Ok(());
                }
                Some((pd, slot, mut entry)) => {
                    entry.node = Node::Dir { tree: id };
                    let p = self.dir_mut(pd)?;
                    p.entries[slot] = Some(entry);
                    p.waiting -= 1;
                    i = pd;
                }
            }
        }
    }
}
