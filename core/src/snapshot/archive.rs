//! Taking a snapshot of a folder.
//!
//! The calling thread walks the folder in name order and builds trees; files that must be read go
//! to a pool of reader threads (read, chunk, hash, dedup check), whose new chunks go to the
//! [`Saver`]'s compression threads and pack writer. A file is not read again when the parent
//! snapshot has it with the same size and mtime and the stat cache has the same inode, ctime,
//! mtime and size for its path. The snapshot record is written last, after every pack it needs
//! is durable and indexed: a snapshot reported as committed survives a crash.
//!
//! A file is read through a handle opened below the source folder without following any
//! symlink and without blocking ([`open_listed`]), so a file swapped for a symlink or a named
//! pipe between the listing and the read is skipped, never followed or waited on.

use std::ffi::OsStr;
use std::fs::{self, File, Metadata};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender, bounded, unbounded};
use globset::{Glob, GlobSet, GlobSetBuilder};

use crate::chunking::Chunker;
use crate::error::{Error, ErrorKind, Result};
use crate::format::pack::Kind;
use crate::format::snapshot::{MAX_TAGS, Snapshot, Summary, check_label, check_space_name};
use crate::format::tree::{Entry, MAX_TREE_DEPTH, Node, Tree};
use crate::hash::{ObjectId, SnapshotId};
use crate::paths::path_depth;
use crate::index::{IndexReader, StatEntry, StatReader, now_ns, stat_key};
use crate::progress::Progress;
use crate::repo::{Repo, SnapshotEntry};
use crate::saver::Saver;

/// Options of a snapshot run.
#[derive(Debug, Clone, Default)]
pub struct SnapshotOptions {
    /// Space name; default: the source folder's name.
    pub space: Option<String>,
    /// Tags to record.
    pub tags: Vec<String>,
    /// Glob patterns to exclude: without `/` they match a name anywhere, with `/` a path
    /// relative to the source folder.
    pub excludes: Vec<String>,
    /// Read every file even when it looks unchanged.
    pub force_read: bool,
    /// Parent snapshot; default: the space's latest.
    pub parent: Option<SnapshotId>,
    /// Host name to record; default: this machine's.
    pub host: Option<String>,
    /// Reader threads; default: the number of CPUs.
    pub threads: usize,
    /// Time to record (nanoseconds); default: now.
    pub time_ns: Option<i64>,
    /// Node name recorded as origin.
    pub origin: String,
}

/// What a snapshot run produced.
#[derive(Debug, Clone)]
pub struct SnapshotOutcome {
    /// The new snapshot's id.
    pub id: SnapshotId,
    /// The record.
    pub snapshot: Snapshot,
    /// Warnings: skipped and changed files.
    pub warnings: Vec<String>,
}

/// The default space name for a source folder: its last component.
pub fn default_space(source: &Path) -> String {
    let abs = fs::canonicalize(source).unwrap_or_else(|_| source.to_path_buf());
    abs.file_name()
        .map(|n| n.to_string_lossy().replace(['/', '@'], "_"))
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "root".to_string())
}

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

struct FileJob {
    dir: usize,
    slot: usize,
    path: PathBuf,
    entry: Entry,
    stat_key: [u8; 16],
    status: FileStatus,
    /// Device and inode the listing saw (`lstat`): the file opened must be that one.
    listed: (u64, u64),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum FileStatus {
    New,
    Changed,
}

struct FileDone {
    dir: usize,
    slot: usize,
    result: Result<ReadFile>,
    path: PathBuf,
    entry: Entry,
    stat_key: [u8; 16],
    status: FileStatus,
}

struct ReadFile {
    chunks: Vec<ObjectId>,
    size: u64,
    mtime_ns: i64,
    stat: Option<StatEntry>,
    changed_while_reading: bool,
    /// Mode, owner and group of the file read (its own `fstat`).
    meta: (u32, u32, u32),
    /// Another file was at the path when it was opened than when it was listed.
    replaced: bool,
}

fn mtime_ns(md: &Metadata) -> i64 {
    md.mtime().saturating_mul(1_000_000_000) + md.mtime_nsec()
}

fn ctime_ns(md: &Metadata) -> i64 {
    md.ctime().saturating_mul(1_000_000_000) + md.ctime_nsec()
}

fn stat_entry(md: &Metadata) -> StatEntry {
    StatEntry {
        ino: md.ino(),
        ctime_ns: ctime_ns(md),
        mtime_ns: mtime_ns(md),
        size: md.len(),
    }
}

fn base_entry(name: &[u8], md: &Metadata, node: Node) -> Entry {
    Entry {
        name: name.to_vec(),
        mode: md.mode() & 0o7777,
        mtime_ns: mtime_ns(md),
        uid: md.uid(),
        gid: md.gid(),
        node,
    }
}

struct Walker<'a> {
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

impl Walker<'_> {
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
            let mut child_rel = rel.to_vec();
            if !child_rel.is_empty() {
                child_rel.push(b'/');
            }
            child_rel.extend_from_slice(&name);
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
            } else {
                let what = if ft.is_fifo() {
                    "named pipe"
                } else if ft.is_socket() {
                    "socket"
                } else if ft.is_block_device() || ft.is_char_device() {
                    "device"
                } else {
                    "special file"
                };
                let msg = format!("skipped {what} {}", child.display());
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
            let id = ObjectId::of(&bytes);
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

/// The folder being snapshotted, held open: its files are opened relative to it.
struct Source {
    fd: OwnedFd,
    path: PathBuf,
}

impl Source {
    fn open(path: &Path) -> Result<Source> {
        let fd = rustix::fs::open(
            path,
            rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .map_err(|e| Error::io("cannot open", path, e.into()))?;
        Ok(Source {
            fd,
            path: path.to_path_buf(),
        })
    }
}

/// Open the regular file `path` (below `src`) for reading: through no symlink (not even a
/// directory swapped for one), without blocking (a named pipe swapped in is not waited on),
/// and with its metadata. Whether it is still the file listed as `listed` (device, inode) is
/// the third value: a file replaced since the listing (an editor saving) is read as it is now.
fn open_listed(src: &Source, path: &Path, listed: (u64, u64)) -> Result<(File, Metadata, bool)> {
    use rustix::fs::{OFlags, ResolveFlags};
    let rel = path
        .strip_prefix(&src.path)
        .map_err(|_| Error::other(format!("internal: {} is outside", path.display())))?;
    let fd = rustix::fs::openat2(
        &src.fd,
        rel,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    )
    .map_err(|e| match e {
        rustix::io::Errno::LOOP | rustix::io::Errno::XDEV => Error::new(
            ErrorKind::Io,
            format!(
                "{} (or a folder above it) became a symbolic link while the snapshot was \
                 running; not followed",
                path.display()
            ),
        ),
        e => Error::io("cannot read", path, e.into()),
    })?;
    let f = File::from(fd);
    let md = f
        .metadata()
        .map_err(|e| Error::io("cannot stat", path, e))?;
    if !md.is_file() {
        return Err(Error::new(
            ErrorKind::Io,
            format!("{} is no longer a regular file", path.display()),
        ));
    }
    // Reads of a regular file do not block anyway; some network file systems honour the flag.
    rustix::fs::fcntl_setfl(&f, OFlags::empty())
        .map_err(|e| Error::io("cannot read", path, e.into()))?;
    let replaced = (md.dev(), md.ino()) != listed;
    Ok((f, md, replaced))
}

fn read_file(
    repo: &Repo,
    saver: &Saver,
    chunker: &mut Option<Chunker<File>>,
    src: &Source,
    job: &FileJob,
    progress: &dyn Progress,
    reader: &mut (IndexReader, u64),
) -> Result<ReadFile> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let (f, before, replaced) = open_listed(src, &job.path, job.listed)?;
        let chunker = match chunker {
            Some(c) => {
                c.reset(f);
                c
            }
            None => chunker.insert(Chunker::new(f, repo.config().chunker, 4 << 20)),
        };
        let mut chunks = Vec::new();
        let mut size = 0u64;
        loop {
            let chunk = match chunker.next_chunk() {
                Ok(Some(c)) => c,
                Ok(None) => break,
                Err(e) => return Err(Error::io("cannot read", &job.path, e)),
            };
            let id = ObjectId::of(chunk);
            size += chunk.len() as u64;
            let len = chunk.len() as u64;
            let g = saver.generation();
            let storage = |e: Error| e.with_kind(ErrorKind::Storage);
            if g != reader.1 {
                *reader = (repo.index().reader().map_err(storage)?, g);
            }
            if saver.reserve(&reader.0, &id).map_err(storage)? {
                saver
                    .save_reserved(id, Kind::Data, chunk.to_vec())
                    .map_err(storage)?;
            }
            chunks.push(id);
            progress.add(0, len);
        }
        let after = chunker
            .get_ref()
            .metadata()
            .map_err(|e| Error::io("cannot stat", &job.path, e))?;
        let stable = after.len() == size
            && mtime_ns(&after) == mtime_ns(&before)
            && ctime_ns(&after) == ctime_ns(&before);
        if !stable && attempt < 3 {
            continue;
        }
        return Ok(ReadFile {
            chunks,
            size,
            mtime_ns: mtime_ns(&before),
            stat: stable.then(|| stat_entry(&after)),
            changed_while_reading: !stable,
            meta: (before.mode() & 0o7777, before.uid(), before.gid()),
            replaced,
        });
    }
}

/// Take a snapshot of the folder `source`.
pub fn snapshot(
    repo: &Arc<Repo>,
    source: &Path,
    opts: &SnapshotOptions,
    progress: &dyn Progress,
) -> Result<SnapshotOutcome> {
    let started = Instant::now();
    let time_ns = opts.time_ns.unwrap_or_else(now_ns);
    let source = fs::canonicalize(source).map_err(|e| Error::io("cannot open", source, e))?;
    let md = fs::metadata(&source).map_err(|e| Error::io("cannot open", &source, e))?;
    if !md.is_dir() {
        return Err(Error::invalid(format!(
            "{} is not a directory: puce takes snapshots of folders",
            source.display()
        )));
    }
    let space = match &opts.space {
        Some(s) => s.clone(),
        None => default_space(&source),
    };
    check_space_name(&space)?;
    // What a peer would refuse to receive is refused here (`Snapshot::check_strings`).
    if opts.tags.len() > MAX_TAGS {
        return Err(Error::invalid(format!("at most {MAX_TAGS} tags")));
    }
    for t in &opts.tags {
        check_label("tag", t)?;
    }
    if let Some(h) = &opts.host {
        check_label("host", h)?;
    }
    check_label("origin", &opts.origin)?;
    let threads = if opts.threads == 0 {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
    } else {
        opts.threads
    };
    // Register the writer session before choosing the parent: gc spares what it reuses.
    let saver = Saver::with_session(repo.clone(), threads, &format!("snapshot {space}"))?;
    let parent: Option<SnapshotEntry> = match &opts.parent {
        Some(id) => Some(
            repo.snapshots()?
                .into_iter()
                .find(|s| s.id == *id)
                .ok_or_else(|| Error::not_found(format!("parent snapshot {id} not found")))?,
        ),
        None => repo.latest(&space)?,
    };
    let (job_tx, job_rx) = bounded::<FileJob>(threads * 8);
    let (done_tx, done_rx) = unbounded::<FileDone>();
    let stop = AtomicBool::new(false);
    let skip_dir = fs::canonicalize(repo.root()).ok();
    let src = Source::open(&source)?;
    let statcache = repo.statcache()?;

    let result = std::thread::scope(
        |scope| -> Result<(ObjectId, Summary, Vec<String>, Vec<_>)> {
            for _ in 0..threads {
                let rx = job_rx.clone();
                let tx = done_tx.clone();
                let saver = &saver;
                let stop = &stop;
                let src = &src;
                scope.spawn(move || {
                    let g = saver.generation();
                    let mut reader = match repo.index().reader() {
                        Ok(r) => (r, g),
                        Err(e) => {
                            for job in rx {
                                let _ = tx.send(FileDone {
                                    dir: job.dir,
                                    slot: job.slot,
                                    result: Err(Error::new(e.kind(), format!("{e:#}"))),
                                    path: job.path,
                                    entry: job.entry,
                                    stat_key: job.stat_key,
                                    status: job.status,
                                });
                            }
                            return;
                        }
                    };
                    let mut chunker: Option<Chunker<File>> = None;
                    for job in rx {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let result =
                            read_file(repo, saver, &mut chunker, src, &job, progress, &mut reader);
                        let sent = tx.send(FileDone {
                            dir: job.dir,
                            slot: job.slot,
                            result,
                            path: job.path,
                            entry: job.entry,
                            stat_key: job.stat_key,
                            status: job.status,
                        });
                        if sent.is_err() {
                            break;
                        }
                    }
                });
            }
            drop(job_rx);
            drop(done_tx);
            let mut w = Walker {
                repo,
                saver: &saver,
                reader: repo.index().reader()?,
                reader_gen: saver.generation(),
                stat_reader: statcache.reader()?,
                dirs: Vec::new(),
                free: Vec::new(),
                jobs: job_tx,
                done: done_rx,
                in_flight: 0,
                excludes: Excludes::new(&opts.excludes)?,
                force_read: opts.force_read,
                summary: Summary::default(),
                warnings: Vec::new(),
                stats: Vec::new(),
                progress,
                root_tree: None,
                skip_dir,
            };
            let parent_root = parent.as_ref().map(|p| p.snapshot.root);
            let walked = w.walk_dir(&source, b"", parent_root, None);
            let walked = walked.and_then(|_| {
                while w.in_flight > 0 {
                    w.drain_done(true)?;
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
            } = w;
            drop(jobs);
            // Let the readers finish (they stop at the closed channel) before reporting.
            for d in done.iter() {
                drop(d);
            }
            walked?;
            let root = root_tree.ok_or_else(|| Error::other("internal: root tree not built"))?;
            Ok((root, summary, warnings, stats))
        },
    );
    let (root, mut summary, warnings, stats) = match result {
        Ok(r) => r,
        Err(e) => {
            drop(saver);
            return Err(e);
        }
    };
    let (saved, session) = saver.finish_keep_session()?;
    summary.data_added = saved.raw_bytes;
    summary.data_added_stored = saved.stored_bytes;
    summary.duration_ms = started.elapsed().as_millis() as u64;
    let user = std::env::var("USER").unwrap_or_default();
    let snapshot = Snapshot {
        time_ns,
        space,
        host: opts
            .host
            .clone()
            .unwrap_or_else(|| gethostname::gethostname().to_string_lossy().into_owned()),
        user,
        source: source.to_string_lossy().into_owned(),
        tags: opts.tags.clone(),
        parents: parent.iter().map(|p| p.id).collect(),
        root,
        summary,
        origin: opts.origin.clone(),
    };
    let id = repo.save_snapshot(&snapshot)?;
    session.end(repo)?;
    // The stat cache only ever helps: a failure to update it costs a re-read next time.
    if let Err(e) = statcache.put(&stats) {
        tracing::warn!("cannot update the stat cache: {e:#}");
    }
    Ok(SnapshotOutcome {
        id,
        snapshot,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::io::Read;
    use std::time::Duration;

    fn listed(p: &Path) -> (u64, u64) {
        let m = fs::symlink_metadata(p).unwrap();
        (m.dev(), m.ino())
    }

    /// Listed as a regular file, then swapped for a symlink to a file the user cannot read (as
    /// root would follow it): not followed. Nor is a folder above a listed file swapped for a
    /// symlink to another folder holding a file of the same name.
    #[test]
    fn a_file_swapped_for_a_symlink_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fs::create_dir_all(src.join("sub")).unwrap();
        let secret = dir.path().join("secret");
        fs::write(&secret, "secret").unwrap();
        let f = src.join("f");
        fs::write(&f, "mine").unwrap();
        let g = src.join("sub/g");
        fs::write(&g, "mine").unwrap();
        let s = Source::open(&src).unwrap();

        let l = listed(&f);
        fs::remove_file(&f).unwrap();
        std::os::unix::fs::symlink(&secret, &f).unwrap();
        let e = open_listed(&s, &f, l).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");

        let l = listed(&g);
        fs::rename(src.join("sub"), src.join("sub.old")).unwrap();
        let other = dir.path().join("other");
        fs::create_dir(&other).unwrap();
        fs::write(other.join("g"), "secret").unwrap();
        std::os::unix::fs::symlink(&other, src.join("sub")).unwrap();
        let e = open_listed(&s, &g, l).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
    }

    /// Listed as a regular file, then swapped for a named pipe nobody writes to: the open
    /// neither waits for a writer nor reads; the file is reported and skipped.
    #[test]
    fn a_file_swapped_for_a_named_pipe_is_not_waited_on() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().to_path_buf();
        let f = src.join("f");
        fs::write(&f, "mine").unwrap();
        let l = listed(&f);
        fs::remove_file(&f).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &f,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        let (tx, rx) = crossbeam_channel::bounded(1);
        std::thread::spawn(move || {
            let s = Source::open(&src).unwrap();
            let _ = tx.send(open_listed(&s, &f, l).map(|_| ()));
        });
        let r = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("opening a named pipe swapped in for a file blocked");
        let e = r.unwrap_err();
        assert!(e.to_string().contains("no longer a regular file"), "{e}");
    }

    /// A file replaced by another regular file (an editor saving) is read as it is now, and
    /// said to be replaced; the same file is not.
    #[test]
    fn a_replaced_file_is_read_as_it_is_now() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        fs::write(&f, "old").unwrap();
        let s = Source::open(dir.path()).unwrap();
        let l = listed(&f);
        let (_, _, replaced) = open_listed(&s, &f, l).unwrap();
        assert!(!replaced);
        fs::write(dir.path().join("f.new"), "new").unwrap();
        fs::rename(dir.path().join("f.new"), &f).unwrap();
        let (mut file, md, replaced) = open_listed(&s, &f, l).unwrap();
        assert!(replaced);
        assert_eq!(md.len(), 3);
        let mut text = String::new();
        file.read_to_string(&mut text).unwrap();
        assert_eq!(text, "new");
    }
}
