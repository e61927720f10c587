//! The file system, independent of fuser: every operation takes and returns plain types and
//! an errno, so it is testable without a kernel.
//!
//! Layout: `spaces/SPACE/` is the latest snapshot of each space plus the local changes not
//! committed yet (an [`EditTree`] per space, journaled in the write-back area);
//! `snapshots/SPACE/<time>_<id>/` is every snapshot, read-only. File content is read chunk by
//! chunk through a bounded cache, with read-ahead for sequential readers. Changed files live in
//! the write-back area until a commit chunks them into the store (see [`crate::space`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock, Weak};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, bounded};
use puce_core::format::tree::{Entry, Node, Tree};
use puce_core::index::{IndexReader, now_ns};
use puce_core::session::Session;
use puce_core::snapshot::edit::{Content, Edit, Meta, NodeKind, TreeSource};
use puce_core::{Error, ErrorKind, ObjectId, Repo, Result, SnapshotEntry};

use crate::cache::Cache;
use crate::error::{FsError, FsResult};
use crate::inode::{self, InodeTable, Kind, ROOT, SNAPSHOTS, SPACES};
use crate::space::{Space, SpaceState, Staged};
use crate::writeback::Writeback;

/// How the mount behaves.
#[derive(Debug, Clone)]
pub struct MountConfig {
    /// The mount point (for messages and the snapshot records).
    pub mountpoint: PathBuf,
    /// Show only this space.
    pub space: Option<String>,
    /// Refuse every change.
    pub read_only: bool,
    /// Quiet time after the last change before a commit.
    pub commit_delay: Duration,
    /// How often to look for snapshots made elsewhere (replication, the CLI).
    pub poll_interval: Duration,
    /// Byte budget of the chunk cache.
    pub cache_bytes: usize,
    /// This machine's name, used in conflict copies.
    pub node: String,
    /// Compression threads of a commit.
    pub threads: usize,
}

impl Default for MountConfig {
    fn default() -> Self {
        MountConfig {
            mountpoint: PathBuf::new(),
            space: None,
            read_only: false,
            commit_delay: Duration::from_secs(2),
            poll_interval: Duration::from_secs(2),
            cache_bytes: 64 << 20,
            node: gethostname(),
            threads: 2,
        }
    }
}

fn gethostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Attributes of an inode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    /// Inode number.
    pub ino: u64,
    /// File, directory or symlink.
    pub kind: NodeKind,
    /// Size in bytes.
    pub size: u64,
    /// Permission bits.
    pub perm: u32,
    /// Link count.
    pub nlink: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time, ns since the epoch.
    pub mtime_ns: i64,
    /// Whether the kernel may cache it for long (immutable snapshot content).
    pub immutable: bool,
}

/// One directory entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// Inode number, or `UNKNOWN_INO` if the kernel has not looked it up.
    pub ino: u64,
    /// Kind.
    pub kind: NodeKind,
    /// Name.
    pub name: Vec<u8>,
}

/// `d_ino` of entries not looked up yet (libfuse's `FUSE_UNKNOWN_INO`).
pub const UNKNOWN_INO: u64 = 0xffff_ffff;

/// Changes asked by `setattr`.
#[derive(Debug, Clone, Default)]
pub struct SetAttr {
    /// New permission bits.
    pub mode: Option<u32>,
    /// New owner.
    pub uid: Option<u32>,
    /// New group.
    pub gid: Option<u32>,
    /// New size.
    pub size: Option<u64>,
    /// New modification time (`Some(None)`: now).
    pub mtime: Option<Option<i64>>,
    /// Clear set-user-ID, and set-group-ID if group-executable, of a regular file unless
    /// `mode` is given (chown, truncate or write by an unprivileged caller). The kernel leaves
    /// this to the file system (`FUSE_HANDLE_KILLPRIV_V2`), which spares it a GETATTR per chown.
    pub kill_suidgid: bool,
}

/// `mode` without the bits that a chown, truncate or write removes.
pub fn killed_suidgid(mode: u32) -> u32 {
    let mut m = mode & !libc::S_ISUID;
    if m & libc::S_IXGRP != 0 {
        m &= !libc::S_ISGID;
    }
    m
}

/// Whether the kernel may do the reads and writes of a handle itself, on a local file of the
/// write-back area (FUSE passthrough), instead of asking the mount for each.
#[derive(Debug)]
pub enum Passthrough {
    /// Never: a snapshot file (immutable: the kernel caches its pages instead).
    Never,
    /// Not for this handle: its content is in the repository, or the file is set-user-ID or
    /// set-group-ID (the kernel does not clear those bits on writes it does itself).
    No,
    /// On this file.
    Local(Arc<File>),
}

/// Who asks.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

/// Space-usage figures for `statfs`.
#[derive(Debug, Clone, Copy, Default)]
pub struct FsStats {
    /// Total blocks.
    pub blocks: u64,
    /// Free blocks.
    pub bfree: u64,
    /// Blocks available to unprivileged users.
    pub bavail: u64,
    /// Total inodes.
    pub files: u64,
    /// Free inodes.
    pub ffree: u64,
    /// Block size.
    pub bsize: u32,
}

/// Receives cache invalidations (the fuser notifier; nothing in tests).
pub trait Invalidator: Send + Sync {
    /// Attributes and data of `ino` changed.
    fn inval_inode(&self, ino: u64);
    /// `(parent, name)` may now lead elsewhere.
    fn inval_entry(&self, parent: u64, name: &[u8]);
    /// Only the attributes of `ino` changed (its cached pages stay valid).
    fn inval_attr(&self, ino: u64) {
        self.inval_inode(ino);
    }
}

/// Sequential reads load windows of consecutive chunks of at least this many bytes.
const WINDOW: u64 = 2 << 20;
/// How far sequential readers are read ahead.
const READ_AHEAD: u64 = 8 << 20;
/// How much further the storage is told the file will be read (it starts fetching without
/// occupying a thread: the disk then has work queued while the read-ahead threads verify).
const HINT_AHEAD: u64 = 16 << 20;
/// A read starting this close to where the previous one of its handle ended is sequential
/// (the kernel's read-ahead requests may be served out of order by several threads).
const SEQUENTIAL_SLACK: u64 = 4 << 20;

/// A read-ahead job.
enum Prefetch {
    /// Window `.1` of a file being read.
    Window(Arc<StoredFile>, usize),
    /// The first chunks of files likely to be opened next.
    Chunks(Vec<ObjectId>),
    /// Windows `.1` of a file will be read soon: tell the storage.
    Hint(Arc<StoredFile>, std::ops::Range<usize>),
}

/// When a snapshot file is opened, the first chunks of the files after it in its directory
/// (`find | xargs cat`, `cp -r`, `tar` read in that order) are loaded, up to this many bytes...
const NEXT_FILES_BYTES: u64 = 2 << 20;
/// ...and this many files.
const NEXT_FILES: usize = 16;

/// Content of a stored file: chunk ids and where each ends, and its read windows.
pub(crate) struct StoredFile {
    chunks: Vec<ObjectId>,
    ends: Vec<u64>,
    /// First chunk of each window (runs of whole chunks of at least [`WINDOW`] bytes).
    wins: Vec<usize>,
    /// Cache key of each window: the chunk id for a one-chunk window (shared with
    /// chunk-by-chunk reads), else a hash of the chunk ids.
    keys: Vec<ObjectId>,
    /// Windows before this one were hinted to the storage ([`HINT_AHEAD`]).
    hinted: AtomicUsize,
}

impl StoredFile {
    fn new(chunks: Vec<ObjectId>, ends: Vec<u64>) -> StoredFile {
        let mut wins = Vec::new();
        let mut start = 0u64;
        for i in 0..chunks.len() {
            // Chunk `i` starts a window if it is the first, or the window so far is full.
            if i == 0 || ends[i - 1] - start >= WINDOW {
                wins.push(i);
                start = if i == 0 { 0 } else { ends[i - 1] };
            }
        }
        let mut keys = Vec::with_capacity(wins.len());
        for w in 0..wins.len() {
            let (a, b) = (wins[w], wins.get(w + 1).copied().unwrap_or(chunks.len()));
            keys.push(if b - a == 1 {
                chunks[a]
            } else {
                let mut h = b"puce-fuse-window".to_vec();
                for c in &chunks[a..b] {
                    h.extend_from_slice(c.as_bytes());
                }
                ObjectId::of(&h)
            });
        }
        StoredFile {
            chunks,
            ends,
            wins,
            keys,
            hinted: AtomicUsize::new(0),
        }
    }

    fn size(&self) -> u64 {
        self.ends.last().copied().unwrap_or(0)
    }

    /// Byte offset where chunk `i` starts.
    fn start(&self, i: usize) -> u64 {
        if i == 0 { 0 } else { self.ends[i - 1] }
    }

    /// Chunk range and byte range of window `w`.
    fn window(&self, w: usize) -> (std::ops::Range<usize>, u64, u64) {
        let a = self.wins[w];
        let b = self.wins.get(w + 1).copied().unwrap_or(self.chunks.len());
        (a..b, self.start(a), self.ends[b - 1])
    }

    /// The window holding byte `offset` (< size).
    fn window_of(&self, offset: u64) -> usize {
        let chunk = self.ends.partition_point(|e| *e <= offset);
        self.wins.partition_point(|s| *s <= chunk) - 1
    }
}

pub(crate) enum FileState {
    Stored(Arc<StoredFile>),
    Staged {
        staged: Arc<Staged>,
        file: Arc<File>,
    },
}

/// An open file (shared by the handles of one inode).
pub(crate) struct OpenFile {
    pub(crate) space: Option<Arc<Space>>,
    pub(crate) state: RwLock<FileState>,
}

struct Handle {
    ino: u64,
    file: Arc<OpenFile>,
    wrote: AtomicBool,
    /// The kernel reads and writes the local file itself (see [`Passthrough`]): writes are
    /// not seen one by one, so a writable handle counts as a change when released.
    direct: AtomicBool,
    next: AtomicU64,
}

/// Snapshots by space, with their directory names.
#[derive(Default)]
pub(crate) struct SnapList {
    pub(crate) by_space: BTreeMap<String, Vec<(String, SnapshotEntry)>>,
    pub(crate) count: usize,
    pub(crate) newest: Option<puce_core::SnapshotId>,
}

/// The name of a snapshot's directory: UTC time and the first 12 hex digits of the id.
pub fn snapshot_dir_name(e: &SnapshotEntry) -> String {
    let t = jiff::Timestamp::from_nanosecond(i128::from(e.snapshot.time_ns))
        .map(|t| t.strftime("%Y-%m-%dT%H-%M-%SZ").to_string())
        .unwrap_or_else(|_| "0000-00-00T00-00-00Z".into());
    format!("{t}_{}", e.id.short(12))
}

impl SnapList {
    pub(crate) fn build(all: Vec<SnapshotEntry>) -> SnapList {
        let count = all.len();
        let newest = all.last().map(|e| e.id);
        let mut by_space: BTreeMap<String, Vec<(String, SnapshotEntry)>> = BTreeMap::new();
        for e in all {
            let mut name = snapshot_dir_name(&e);
            let v = by_space.entry(e.snapshot.space.clone()).or_default();
            if v.iter().any(|(n, _)| *n == name) {
                name = format!("{name}-{}", e.id.short(20));
            }
            v.push((name, e));
        }
        SnapList {
            by_space,
            count,
            newest,
        }
    }
}

/// Counts of a tree, memoised by tree id.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Counts {
    pub(crate) files: u64,
    pub(crate) dirs: u64,
    pub(crate) symlinks: u64,
    pub(crate) bytes: u64,
}

/// The file system. See the module documentation.
pub struct PuceFs {
    pub(crate) repo: Arc<Repo>,
    pub(crate) cfg: MountConfig,
    pub(crate) wb: Option<Writeback>,
    pub(crate) inodes: Mutex<InodeTable>,
    chunks: Cache<Arc<Vec<u8>>>,
    trees: Cache<Arc<Tree>>,
    reader: RwLock<Arc<IndexReader>>,
    pub(crate) snaps: RwLock<Arc<SnapList>>,
    pub(crate) spaces: RwLock<BTreeMap<String, Arc<Space>>>,
    handles: Mutex<HashMap<u64, Arc<Handle>>>,
    dirs: Mutex<HashMap<u64, Arc<Vec<DirEntry>>>>,
    pub(crate) open_files: Mutex<HashMap<u64, (Arc<OpenFile>, usize)>>,
    next_fh: AtomicU64,
    owner: (u32, u32),
    started_ns: i64,
    pub(crate) notifier: RwLock<Option<Arc<dyn Invalidator>>>,
    pub(crate) wake: (Mutex<bool>, Condvar),
    pub(crate) stop: AtomicBool,
    prefetch: Mutex<Option<Sender<Prefetch>>>,
    pub(crate) counts: Mutex<HashMap<ObjectId, Counts>>,
    /// A writer session held while some space has uncommitted changes (none while idle).
    pub(crate) pending_session: Mutex<Option<Session>>,
}

fn lock<T>(m: &Mutex<T>) -> FsResult<MutexGuard<'_, T>> {
    m.lock().map_err(|_| {
        tracing::error!("internal lock poisoned");
        FsError::IO
    })
}

/// Trees through the file system's cache.
pub(crate) struct FsTrees<'a>(pub(crate) &'a PuceFs);

impl TreeSource for FsTrees<'_> {
    fn tree(&self, id: &ObjectId) -> Result<Arc<Tree>> {
        self.0.tree(id)
    }
}

fn join(parent: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = parent.to_vec();
    if !p.is_empty() {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

fn check_name(name: &[u8]) -> FsResult<()> {
    if name.len() > 255 {
        return Err(FsError::NAMETOOLONG);
    }
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') {
        return Err(FsError::INVAL);
    }
    Ok(())
}

fn kind_of(n: &Node) -> NodeKind {
    match n {
        Node::File { .. } => NodeKind::File,
        Node::Dir { .. } => NodeKind::Dir,
        Node::Symlink { .. } => NodeKind::Symlink,
    }
}

fn mtime_of(md: &std::fs::Metadata) -> i64 {
    md.mtime().saturating_mul(1_000_000_000) + md.mtime_nsec()
}

fn system_time(ns: i64) -> std::time::SystemTime {
    if ns >= 0 {
        std::time::UNIX_EPOCH + Duration::from_nanos(ns as u64)
    } else {
        std::time::UNIX_EPOCH - Duration::from_nanos(ns.unsigned_abs())
    }
}

impl PuceFs {
    /// Open the file system over `repo`: lock and recover the write-back area (read-write),
    /// load the snapshot list. Start [`PuceFs::start`] once it is in an `Arc`.
    pub fn new(repo: Arc<Repo>, cfg: MountConfig) -> Result<PuceFs> {
        if let Some(s) = &cfg.space {
            puce_core::format::snapshot::check_space_name(s)?;
        }
        // No writer session for the mount's whole life (gc would wait for it for weeks): one
        // while changes are pending, one per commit, which checks that what it reuses is still
        // there (`space.rs`).
        let wb = if cfg.read_only {
            None
        } else {
            Some(Writeback::open(repo.root(), &cfg.mountpoint)?)
        };
        let reader = Arc::new(repo.index().reader()?);
        let snaps = Arc::new(SnapList::build(repo.snapshots()?));
        let owner = (
            rustix::process::geteuid().as_raw(),
            rustix::process::getegid().as_raw(),
        );
        let fs = PuceFs {
            chunks: Cache::new(cfg.cache_bytes.max(4 << 20)),
            trees: Cache::new((cfg.cache_bytes / 4).max(8 << 20)),
            repo,
            wb,
            inodes: Mutex::new(InodeTable::new()),
            reader: RwLock::new(reader),
            snaps: RwLock::new(snaps.clone()),
            spaces: RwLock::new(BTreeMap::new()),
            handles: Mutex::new(HashMap::new()),
            dirs: Mutex::new(HashMap::new()),
            open_files: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            owner,
            started_ns: now_ns(),
            notifier: RwLock::new(None),
            wake: (Mutex::new(false), Condvar::new()),
            stop: AtomicBool::new(false),
            prefetch: Mutex::new(None),
            counts: Mutex::new(HashMap::new()),
            pending_session: Mutex::new(None),
            cfg,
        };
        {
            let mut spaces = fs
                .spaces
                .write()
                .map_err(|_| Error::other("lock poisoned"))?;
            for (name, v) in &snaps.by_space {
                let base = v.last().map(|(_, e)| e.clone());
                spaces.insert(name.clone(), Arc::new(Space::new(name, base)));
            }
            if let Some(s) = &fs.cfg.space
                && !spaces.contains_key(s)
            {
                spaces.insert(s.clone(), Arc::new(Space::new(s, None)));
            }
        }
        if fs.wb.is_some() {
            fs.recover()?;
        } else if fs
            .repo
            .root()
            .join("writeback/journals")
            .read_dir()
            .is_ok_and(|mut d| d.next().is_some())
        {
            tracing::warn!(
                "changes of a read-write mount that stopped without committing are waiting in \
                 {}: mount read-write once to commit them",
                fs.repo.root().join("writeback").display()
            );
        }
        Ok(fs)
    }

    /// Start the read-ahead threads (and the spare-file thread of a read-write mount).
    pub fn start(self: &Arc<Self>) -> Result<()> {
        if let Some(wb) = &self.wb {
            wb.start_spares()?;
        }
        let (tx, rx) = bounded::<Prefetch>(16);
        for i in 0..2 {
            let weak = Arc::downgrade(self);
            let rx: Receiver<Prefetch> = rx.clone();
            std::thread::Builder::new()
                .name(format!("puce-readahead-{i}"))
                .spawn(move || prefetch_loop(weak, rx))
                .map_err(|e| Error::other("cannot start a thread").with_source(e))?;
        }
        if let Ok(mut p) = self.prefetch.lock() {
            *p = Some(tx);
        }
        Ok(())
    }

    /// Set the receiver of cache invalidations.
    pub fn set_invalidator(&self, inv: Arc<dyn Invalidator>) {
        if let Ok(mut n) = self.notifier.write() {
            *n = Some(inv);
        }
    }

    /// The repository.
    pub fn repo(&self) -> &Arc<Repo> {
        &self.repo
    }

    /// The configuration.
    pub fn config(&self) -> &MountConfig {
        &self.cfg
    }

    /// The write-back area (read-write mounts).
    pub fn writeback(&self) -> Option<&Writeback> {
        self.wb.as_ref()
    }

    pub(crate) fn wb(&self) -> FsResult<&Writeback> {
        self.wb.as_ref().ok_or(FsError::ROFS)
    }

    /// Statistics of the chunk cache.
    pub fn chunk_cache_stats(&self) -> crate::cache::CacheStats {
        self.chunks.stats()
    }

    /// Number of inodes held.
    pub fn inode_count(&self) -> usize {
        self.inodes.lock().map(|t| t.len()).unwrap_or(0)
    }

    pub(crate) fn index_reader(&self) -> Result<Arc<IndexReader>> {
        self.reader
            .read()
            .map(|r| r.clone())
            .map_err(|_| Error::other("lock poisoned"))
    }

    pub(crate) fn refresh_reader(&self) -> Result<()> {
        let r = Arc::new(self.repo.index().reader()?);
        if let Ok(mut g) = self.reader.write() {
            *g = r;
        }
        Ok(())
    }

    /// Read an object's plaintext; a miss in a stale index view is retried with a fresh one.
    fn read_object(&self, id: &ObjectId) -> Result<Vec<u8>> {
        let r = self.index_reader()?;
        match self.repo.read_object_with(&r, id) {
            Err(e) if e.kind() == ErrorKind::NotFound => {
                self.refresh_reader()?;
                let r = self.index_reader()?;
                self.repo.read_object_with(&r, id)
            }
            x => x,
        }
    }

    pub(crate) fn tree(&self, id: &ObjectId) -> Result<Arc<Tree>> {
        self.trees.get_or_load(id, || {
            let bytes = self.read_object(id)?;
            // A stored tree that does not decode (an unsafe name included) is damaged or
            // hostile data: the caller sees EIO and the log says why, as for any damage.
            let t = Tree::decode(&bytes).map_err(|e| {
                e.with_kind(ErrorKind::Corrupt)
                    .context(format!("tree {}", id.short(16)))
            })?;
            let w = bytes.len() * 2 + 64;
            Ok((Arc::new(t), w))
        })
    }

    pub(crate) fn chunk(&self, id: &ObjectId) -> Result<Arc<Vec<u8>>> {
        self.chunks.get_or_load(id, || {
            let v = self.read_object(id)?;
            let w = v.len() + 64;
            Ok((Arc::new(v), w))
        })
    }

    /// Queue the first chunks of the files after `name` in `tree` (see [`NEXT_FILES_BYTES`]).
    fn read_next_files(&self, tree: &Tree, name: &[u8]) {
        let from = tree.entries.partition_point(|e| e.name.as_slice() <= name);
        let mut ids = Vec::new();
        let mut bytes = 0u64;
        for e in tree.entries[from..].iter().take(NEXT_FILES) {
            let Node::File { size, chunks } = &e.node else {
                continue;
            };
            let Some(first) = chunks.first() else {
                continue;
            };
            if bytes > 0 && bytes + size.min(&WINDOW) > NEXT_FILES_BYTES {
                break;
            }
            bytes += size.min(&WINDOW);
            if !self.chunks.contains(first) {
                ids.push(*first);
            }
        }
        if ids.is_empty() {
            return;
        }
        if let Ok(g) = self.prefetch.lock()
            && let Some(tx) = g.as_ref()
        {
            let _ = tx.try_send(Prefetch::Chunks(ids));
        }
    }

    fn chunk_len(&self, id: &ObjectId) -> Result<u64> {
        if let Some(v) = self.chunks.peek(id) {
            return Ok(v.len() as u64);
        }
        let r = self.index_reader()?;
        let loc = match r.get(id)? {
            Some(l) => Some(l),
            None => {
                self.refresh_reader()?;
                self.index_reader()?.get(id)?
            }
        };
        loc.map(|l| u64::from(l.raw_len)).ok_or_else(|| {
            Error::not_found(format!(
                "chunk {id} is not in the index: the repository is missing data (run `puce check`)"
            ))
        })
    }

    pub(crate) fn space(&self, name: &str) -> Option<Arc<Space>> {
        self.spaces.read().ok()?.get(name).cloned()
    }

    fn visible(&self, space: &str) -> bool {
        self.cfg.space.as_deref().is_none_or(|s| s == space)
    }

    pub(crate) fn wake(&self) {
        let (m, cv) = &self.wake;
        if let Ok(mut g) = m.lock() {
            *g = true;
        }
        cv.notify_all();
    }

    fn fixed_attr(&self, ino: u64, perm: u32, mtime_ns: i64) -> Attr {
        Attr {
            ino,
            kind: NodeKind::Dir,
            size: 0,
            perm,
            nlink: 2,
            uid: self.owner.0,
            gid: self.owner.1,
            mtime_ns,
            immutable: false,
        }
    }

    fn entry_attr(ino: u64, e: &Entry) -> Attr {
        Attr {
            ino,
            kind: kind_of(&e.node),
            size: e.size(),
            perm: e.mode & 0o7777,
            nlink: if e.is_dir() { 2 } else { 1 },
            uid: e.uid,
            gid: e.gid,
            mtime_ns: e.mtime_ns,
            immutable: true,
        }
    }

    fn local_attr(&self, id: u64) -> FsResult<(u64, i64)> {
        let md = std::fs::metadata(self.wb()?.data_path(id))?;
        Ok((md.len(), mtime_of(&md)))
    }

    fn info_attr(&self, ino: u64, info: &puce_core::snapshot::edit::Info) -> FsResult<Attr> {
        let (size, mtime_ns) = match info.local {
            Some(id) => self.local_attr(id)?,
            None => (info.size, info.meta.mtime_ns),
        };
        Ok(Self::info_attr_of(ino, info, (size, mtime_ns)))
    }

    /// [`PuceFs::info_attr`] with the size and time of the content given.
    fn info_attr_of(
        ino: u64,
        info: &puce_core::snapshot::edit::Info,
        (size, mtime_ns): (u64, i64),
    ) -> Attr {
        Attr {
            ino,
            kind: info.kind,
            size,
            perm: info.meta.mode & 0o7777,
            nlink: if info.kind == NodeKind::Dir { 2 } else { 1 },
            uid: info.meta.uid,
            gid: info.meta.gid,
            mtime_ns,
            immutable: false,
        }
    }

    fn inode(&self, ino: u64) -> FsResult<inode::Inode> {
        lock(&self.inodes)?.get(ino).cloned().ok_or(FsError::STALE)
    }

    fn space_root_attr(&self, ino: u64, space: &Space) -> FsResult<Attr> {
        let st = space.lock()?;
        let t = st
            .base
            .as_ref()
            .map(|b| b.snapshot.time_ns)
            .unwrap_or(self.started_ns);
        Ok(self.fixed_attr(ino, 0o755, t))
    }

    /// The tree id of a snapshot directory inode.
    fn snap_tree(kind: &Kind) -> Option<ObjectId> {
        match kind {
            Kind::SnapRoot { root, .. } => Some(*root),
            Kind::SnapNode { entry, .. } => match &entry.node {
                Node::Dir { tree } => Some(*tree),
                _ => None,
            },
            _ => None,
        }
    }

    // ----- lookups -----

    /// Look `name` up in directory `parent`, counting a kernel reference on the result.
    pub fn lookup(&self, parent: u64, name: &[u8]) -> FsResult<Attr> {
        let p = self.inode(parent)?;
        match (&p.kind, parent) {
            (Kind::Fixed, ROOT) => match name {
                b"spaces" => Ok(self.fixed_attr(SPACES, 0o755, self.started_ns)),
                b"snapshots" => Ok(self.fixed_attr(SNAPSHOTS, 0o555, self.started_ns)),
                _ => Err(FsError::NOENT),
            },
            (Kind::Fixed, SPACES) => {
                let s = std::str::from_utf8(name).map_err(|_| FsError::NOENT)?;
                if !self.visible(s) {
                    return Err(FsError::NOENT);
                }
                let space = self.space(s).ok_or(FsError::NOENT)?;
                let ino = lock(&self.inodes)?.lookup(
                    SPACES,
                    name,
                    Kind::SpaceRoot(space.name.clone()),
                    |k| matches!(k, Kind::SpaceRoot(_)),
                );
                if let Ok(mut st) = space.lock() {
                    st.root_ino = Some(ino);
                }
                self.space_root_attr(ino, &space)
            }
            (Kind::Fixed, SNAPSHOTS) => {
                let s = std::str::from_utf8(name).map_err(|_| FsError::NOENT)?;
                let snaps = self.snap_list()?;
                if !self.visible(s) || !snaps.by_space.contains_key(s) {
                    return Err(FsError::NOENT);
                }
                let ino = lock(&self.inodes)?.lookup(
                    SNAPSHOTS,
                    name,
                    Kind::SnapSpace(Arc::from(s)),
                    |k| matches!(k, Kind::SnapSpace(_)),
                );
                Ok(self.fixed_attr(ino, 0o555, self.started_ns))
            }
            (Kind::SnapSpace(space), _) => {
                let snaps = self.snap_list()?;
                let n = std::str::from_utf8(name).map_err(|_| FsError::NOENT)?;
                let e = snaps
                    .by_space
                    .get(&**space)
                    .and_then(|v| v.iter().find(|(dn, _)| dn == n))
                    .map(|(_, e)| e.clone())
                    .ok_or(FsError::NOENT)?;
                let kind = Kind::SnapRoot {
                    id: e.id,
                    root: e.snapshot.root,
                    time_ns: e.snapshot.time_ns,
                };
                let ino = lock(&self.inodes)?.lookup(
                    parent,
                    name,
                    kind,
                    |k| matches!(k, Kind::SnapRoot { id, .. } if *id == e.id),
                );
                Ok(self.fixed_attr(ino, 0o555, e.snapshot.time_ns))
            }
            (Kind::SnapRoot { .. } | Kind::SnapNode { .. }, _) => {
                let tree_id = PuceFs::snap_tree(&p.kind).ok_or(FsError::NOTDIR)?;
                let tree = self.tree(&tree_id)?;
                let e = tree.get(name).ok_or(FsError::NOENT)?;
                let mut light = e.clone();
                if let Node::File { size, .. } = light.node {
                    light.node = Node::File {
                        size,
                        chunks: Vec::new(),
                    };
                }
                let kind = Kind::SnapNode {
                    parent_tree: tree_id,
                    entry: Arc::new(light),
                };
                let ino = lock(&self.inodes)?
                    .lookup(parent, name, kind, |k| matches!(k, Kind::SnapNode { .. }));
                Ok(PuceFs::entry_attr(ino, e))
            }
            (Kind::SpaceRoot(s) | Kind::SpaceNode(s, _), _) => {
                let space = self.space(s).ok_or(FsError::STALE)?;
                let st = space.lock()?;
                let path = self.space_path(parent)?;
                let child = join(&path, name);
                let info = st
                    .tree
                    .lookup(&FsTrees(self), &child)?
                    .ok_or(FsError::NOENT)?;
                let nk = info.kind;
                let ino = lock(&self.inodes)?.lookup(
                    parent,
                    name,
                    Kind::SpaceNode(s.clone(), nk),
                    |k| matches!(k, Kind::SpaceNode(_, k2) if *k2 == nk),
                );
                self.info_attr(ino, &info)
            }
            _ => Err(FsError::NOTDIR),
        }
    }

    /// Count the kernel's lookup of `(parent, name)`, an entry of `space` just made with
    /// `meta` (empty if a file): its attributes without looking it up again.
    fn made(
        &self,
        space: &Arc<str>,
        parent: u64,
        name: &[u8],
        kind: NodeKind,
        meta: &Meta,
    ) -> FsResult<Attr> {
        let ino = lock(&self.inodes)?.lookup(
            parent,
            name,
            Kind::SpaceNode(space.clone(), kind),
            |k| matches!(k, Kind::SpaceNode(_, k2) if *k2 == kind),
        );
        let info = puce_core::snapshot::edit::Info {
            kind,
            meta: *meta,
            size: 0,
            local: None,
            target: None,
        };
        Ok(Self::info_attr_of(ino, &info, (0, meta.mtime_ns)))
    }

    fn space_path(&self, ino: u64) -> FsResult<Vec<u8>> {
        lock(&self.inodes)?
            .space_path(ino)
            .map(|(_, p)| p)
            .ok_or(FsError::NOENT)
    }

    pub(crate) fn snap_list(&self) -> FsResult<Arc<SnapList>> {
        self.snaps
            .read()
            .map(|s| s.clone())
            .map_err(|_| FsError::IO)
    }

    /// The kernel dropped `n` references to `ino`.
    pub fn forget(&self, ino: u64, n: u64) {
        if let Ok(mut t) = self.inodes.lock() {
            t.forget(ino, n);
        }
    }

    /// Attributes of `ino`.
    pub fn getattr(&self, ino: u64) -> FsResult<Attr> {
        let i = self.inode(ino)?;
        match &i.kind {
            Kind::Fixed => Ok(self.fixed_attr(
                ino,
                if ino == SNAPSHOTS { 0o555 } else { 0o755 },
                self.started_ns,
            )),
            Kind::SpaceRoot(s) => {
                let space = self.space(s).ok_or(FsError::STALE)?;
                self.space_root_attr(ino, &space)
            }
            Kind::SnapSpace(_) => Ok(self.fixed_attr(ino, 0o555, self.started_ns)),
            Kind::SnapRoot { time_ns, .. } => Ok(self.fixed_attr(ino, 0o555, *time_ns)),
            Kind::SnapNode { entry, .. } => Ok(PuceFs::entry_attr(ino, entry)),
            Kind::SpaceNode(s, _) => {
                let space = self.space(s).ok_or(FsError::STALE)?;
                let st = space.lock()?;
                match lock(&self.inodes)?.space_path(ino) {
                    Some((_, path)) => {
                        let info = st
                            .tree
                            .lookup(&FsTrees(self), &path)?
                            .ok_or(FsError::NOENT)?;
                        self.info_attr(ino, &info)
                    }
                    None => {
                        drop(st);
                        self.orphan_attr(ino)
                    }
                }
            }
        }
    }

    /// Attributes of an unlinked inode that is still open.
    fn orphan_attr(&self, ino: u64) -> FsResult<Attr> {
        let of = lock(&self.open_files)?
            .get(&ino)
            .map(|(f, _)| f.clone())
            .ok_or(FsError::STALE)?;
        let st = of.state.read().map_err(|_| FsError::IO)?;
        let (size, mtime_ns) = match &*st {
            FileState::Stored(sf) => (sf.size(), self.started_ns),
            FileState::Staged { file, .. } => {
                let md = file.metadata()?;
                (md.len(), mtime_of(&md))
            }
        };
        Ok(Attr {
            ino,
            kind: NodeKind::File,
            size,
            perm: 0o644,
            nlink: 0,
            uid: self.owner.0,
            gid: self.owner.1,
            mtime_ns,
            immutable: false,
        })
    }

    /// The target of symlink `ino`.
    pub fn readlink(&self, ino: u64) -> FsResult<Vec<u8>> {
        let i = self.inode(ino)?;
        match &i.kind {
            Kind::SnapNode { entry, .. } => match &entry.node {
                Node::Symlink { target } => Ok(target.clone()),
                _ => Err(FsError::INVAL),
            },
            Kind::SpaceNode(s, _) => {
                let space = self.space(s).ok_or(FsError::STALE)?;
                let st = space.lock()?;
                let path = self.space_path(ino)?;
                let info = st
                    .tree
                    .lookup(&FsTrees(self), &path)?
                    .ok_or(FsError::NOENT)?;
                info.target.ok_or(FsError::INVAL)
            }
            _ => Err(FsError::INVAL),
        }
    }

    // ----- directories -----

    /// List directory `ino` (with `.` and `..`); returns a handle for [`PuceFs::readdir`].
    pub fn opendir(&self, ino: u64) -> FsResult<u64> {
        let i = self.inode(ino)?;
        let t = lock(&self.inodes)?;
        let known = |name: &[u8]| t.child(ino, name).unwrap_or(UNKNOWN_INO);
        let mut out = vec![
            DirEntry {
                ino,
                kind: NodeKind::Dir,
                name: b".".to_vec(),
            },
            DirEntry {
                ino: i.parent,
                kind: NodeKind::Dir,
                name: b"..".to_vec(),
            },
        ];
        let dir = |name: Vec<u8>| DirEntry {
            ino: known(&name),
            kind: NodeKind::Dir,
            name,
        };
        match &i.kind {
            Kind::Fixed if ino == ROOT => {
                out.push(dir(b"snapshots".to_vec()));
                out.push(dir(b"spaces".to_vec()));
            }
            Kind::Fixed if ino == SPACES => {
                let spaces = self.spaces.read().map_err(|_| FsError::IO)?;
                for name in spaces.keys().filter(|s| self.visible(s)) {
                    out.push(dir(name.as_bytes().to_vec()));
                }
            }
            Kind::Fixed => {
                let snaps = self.snap_list()?;
                for name in snaps.by_space.keys().filter(|s| self.visible(s)) {
                    out.push(dir(name.as_bytes().to_vec()));
                }
            }
            Kind::SnapSpace(s) => {
                let snaps = self.snap_list()?;
                for (name, _) in snaps.by_space.get(&**s).into_iter().flatten() {
                    out.push(dir(name.as_bytes().to_vec()));
                }
            }
            Kind::SnapRoot { .. } | Kind::SnapNode { .. } => {
                let tree_id = PuceFs::snap_tree(&i.kind).ok_or(FsError::NOTDIR)?;
                drop(t);
                let tree = self.tree(&tree_id)?;
                let t = lock(&self.inodes)?;
                for e in &tree.entries {
                    out.push(DirEntry {
                        ino: t.child(ino, &e.name).unwrap_or(UNKNOWN_INO),
                        kind: kind_of(&e.node),
                        name: e.name.clone(),
                    });
                }
            }
            Kind::SpaceRoot(s) | Kind::SpaceNode(s, _) => {
                let s = s.clone();
                drop(t);
                let space = self.space(&s).ok_or(FsError::STALE)?;
                let st = space.lock()?;
                let path = self.space_path(ino)?;
                let list = st.tree.list(&FsTrees(self), &path)?;
                let t = lock(&self.inodes)?;
                for (name, info) in list {
                    out.push(DirEntry {
                        ino: t.child(ino, &name).unwrap_or(UNKNOWN_INO),
                        kind: info.kind,
                        name,
                    });
                }
            }
        }
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.dirs)?.insert(fh, Arc::new(out));
        Ok(fh)
    }

    /// Entries of an open directory from position `offset` on; each entry's position is its
    /// index plus one.
    pub fn readdir(&self, fh: u64, offset: u64) -> FsResult<Arc<Vec<DirEntry>>> {
        let _ = offset;
        lock(&self.dirs)?.get(&fh).cloned().ok_or(FsError::BADF)
    }

    /// `readdirplus`: the entries of open directory `fh` (inode `ino`) from position `offset`
    /// on, each with its attributes, passed to `add(entry, attr, next_offset)` until it returns
    /// `true` (the reply is full; that entry was not sent). Every entry sent other than `.` and
    /// `..` counts as a lookup (the kernel forgets it later); the one that did not fit is
    /// forgotten at once. Entries that vanished since `opendir` are skipped.
    pub fn readdir_plus(
        &self,
        ino: u64,
        fh: u64,
        offset: u64,
        mut add: impl FnMut(&DirEntry, &Attr, u64) -> bool,
    ) -> FsResult<()> {
        let list = self.readdir(fh, offset)?;
        for (i, e) in list.iter().enumerate().skip(offset as usize) {
            let next = (i + 1) as u64;
            if e.name == b"." || e.name == b".." {
                // Not counted by the kernel, which ignores these attributes.
                let a = self.fixed_attr(e.ino, 0o755, self.started_ns);
                if add(e, &a, next) {
                    break;
                }
                continue;
            }
            let a = match self.lookup(ino, &e.name) {
                Ok(a) => a,
                Err(_) => continue,
            };
            let sent = DirEntry {
                ino: a.ino,
                kind: a.kind,
                name: e.name.clone(),
            };
            if add(&sent, &a, next) {
                self.forget(a.ino, 1);
                break;
            }
        }
        Ok(())
    }

    /// Close a directory handle.
    pub fn releasedir(&self, fh: u64) {
        if let Ok(mut d) = self.dirs.lock() {
            d.remove(&fh);
        }
    }

    // ----- changes to the namespace -----

    /// Run `f` on the space state of directory `parent`, with the parent's path.
    fn in_space<T>(
        &self,
        parent: u64,
        f: impl FnOnce(&Arc<Space>, &mut SpaceState, Vec<u8>) -> FsResult<T>,
    ) -> FsResult<T> {
        let p = self.inode(parent)?;
        let s = match &p.kind {
            Kind::SpaceRoot(s) | Kind::SpaceNode(s, _) => s.clone(),
            Kind::SnapSpace(_) | Kind::SnapRoot { .. } | Kind::SnapNode { .. } => {
                return Err(FsError::ROFS);
            }
            Kind::Fixed if parent == SNAPSHOTS => return Err(FsError::ROFS),
            Kind::Fixed => return Err(FsError::PERM),
        };
        if self.cfg.read_only {
            return Err(FsError::ROFS);
        }
        let space = self.space(&s).ok_or(FsError::STALE)?;
        let mut st = space.lock()?;
        let path = self.space_path(parent)?;
        f(&space, &mut st, path)
    }

    pub(crate) fn record(&self, space: &Space, st: &mut SpaceState, edit: Edit) -> FsResult<()> {
        st.tree.apply(&FsTrees(self), &edit)?;
        self.journal(space, st, edit)
    }

    /// Journal an edit already applied to the tree.
    pub(crate) fn journal(&self, space: &Space, st: &mut SpaceState, edit: Edit) -> FsResult<()> {
        let wb = self.wb()?;
        let r = match st.journal.as_mut() {
            Some(j) => j.append(&edit),
            None => crate::writeback::Journal::create(
                &wb.journal_path(&space.name),
                &space.name,
                st.base.as_ref().map(|b| &b.id),
                std::slice::from_ref(&edit),
            )
            .map(|j| {
                st.journal = Some(j);
            }),
        };
        st.edits.push(edit);
        self.changed(space, st);
        r.map_err(FsError::from)
    }

    /// Note a change of `space`: a commit is due after the quiet period.
    fn changed(&self, space: &Space, st: &mut SpaceState) {
        let pending = st.dirty && st.want_commit;
        st.dirty = true;
        st.want_commit = true;
        space.touch();
        if !pending {
            // The commit thread sleeps until the quiet period of a pending commit is over:
            // wake it only when a commit becomes pending (not on every edit).
            self.wake();
        }
    }

    fn new_meta(&self, caller: Caller, mode: u32, umask: u32) -> Meta {
        Meta {
            mode: mode & !umask & 0o7777,
            mtime_ns: now_ns(),
            uid: caller.uid,
            gid: caller.gid,
        }
    }

    /// `mkdir`. In `spaces/`, creates a new space.
    pub fn mkdir(
        &self,
        caller: Caller,
        parent: u64,
        name: &[u8],
        mode: u32,
        umask: u32,
    ) -> FsResult<Attr> {
        check_name(name)?;
        if parent == SPACES {
            return self.create_space(name);
        }
        let meta = self.new_meta(caller, mode, umask);
        let space = self.in_space(parent, |space, st, path| {
            let edit = Edit::Mkdir {
                path: join(&path, name),
                meta,
                time_ns: meta.mtime_ns,
            };
            self.record(space, st, edit)?;
            Ok(space.name.clone())
        })?;
        self.made(&space, parent, name, NodeKind::Dir, &meta)
    }

    fn create_space(&self, name: &[u8]) -> FsResult<Attr> {
        if self.cfg.read_only {
            return Err(FsError::ROFS);
        }
        let s = std::str::from_utf8(name).map_err(|_| FsError::INVAL)?;
        if puce_core::format::snapshot::check_space_name(s).is_err() {
            tracing::warn!("mkdir spaces/{s}: not a valid space name");
            return Err(FsError::INVAL);
        }
        if !self.visible(s) {
            return Err(FsError::PERM);
        }
        {
            let mut spaces = self.spaces.write().map_err(|_| FsError::IO)?;
            if spaces.contains_key(s) {
                return Err(FsError::EXIST);
            }
            let space = Arc::new(Space::new(s, None));
            {
                let mut st = space.lock()?;
                let j =
                    crate::writeback::Journal::create(&self.wb()?.journal_path(s), s, None, &[])?;
                st.journal = Some(j);
                st.dirty = true;
                st.want_commit = true;
            }
            space.touch();
            spaces.insert(s.to_string(), space);
        }
        self.wake();
        self.lookup(SPACES, name)
    }

    /// `symlink`.
    pub fn symlink(
        &self,
        caller: Caller,
        parent: u64,
        name: &[u8],
        target: &[u8],
    ) -> FsResult<Attr> {
        check_name(name)?;
        let meta = self.new_meta(caller, 0o777, 0);
        self.in_space(parent, |space, st, path| {
            let edit = Edit::Symlink {
                path: join(&path, name),
                target: target.to_vec(),
                meta,
                time_ns: meta.mtime_ns,
            };
            self.record(space, st, edit)
        })?;
        self.lookup(parent, name)
    }

    /// `mknod`: regular files only.
    pub fn mknod(
        &self,
        caller: Caller,
        parent: u64,
        name: &[u8],
        mode: u32,
        umask: u32,
    ) -> FsResult<Attr> {
        if mode & libc::S_IFMT != libc::S_IFREG && mode & libc::S_IFMT != 0 {
            // Pipes, sockets and devices cannot be stored in a snapshot.
            return Err(FsError::PERM);
        }
        let (attr, fh) = self.create(caller, parent, name, mode, umask, libc::O_WRONLY)?;
        self.release(fh);
        Ok(attr)
    }

    /// `create`: a new regular file, opened. Returns its attributes and a handle.
    pub fn create(
        &self,
        caller: Caller,
        parent: u64,
        name: &[u8],
        mode: u32,
        umask: u32,
        _flags: i32,
    ) -> FsResult<(Attr, u64)> {
        check_name(name)?;
        let meta = self.new_meta(caller, mode, umask);
        let (space, staged, file) = self.in_space(parent, |space, st, path| {
            let (id, file) = self.wb()?.new_local()?;
            // A spare file was made earlier: its time is the creation's (as in the tree).
            if let Err(e) = file.set_modified(system_time(meta.mtime_ns)) {
                let _ = std::fs::remove_file(self.wb()?.data_path(id));
                return Err(e.into());
            }
            let edit = Edit::Create {
                path: join(&path, name),
                meta,
                content: Content::Local(id),
                time_ns: meta.mtime_ns,
            };
            if let Err(e) = st.tree.apply(&FsTrees(self), &edit) {
                let _ = std::fs::remove_file(self.wb()?.data_path(id));
                return Err(e.into());
            }
            let staged = Arc::new(Staged::new(id));
            st.staged.insert(id, staged.clone());
            self.journal(space, st, edit)?;
            Ok((space.clone(), staged, Arc::new(file)))
        })?;
        // The new file is empty, and its time is `meta`'s (set on the local file above).
        let attr = self.made(&space.name, parent, name, NodeKind::File, &meta)?;
        let of = Arc::new(OpenFile {
            space: Some(space),
            state: RwLock::new(FileState::Staged { staged, file }),
        });
        let fh = self.add_handle(attr.ino, of)?;
        Ok((attr, fh))
    }

    /// `unlink`.
    pub fn unlink(&self, parent: u64, name: &[u8]) -> FsResult<()> {
        self.remove(parent, name, false)
    }

    /// `rmdir`.
    pub fn rmdir(&self, parent: u64, name: &[u8]) -> FsResult<()> {
        if parent == SPACES {
            // Removing a space (and its history) is not something a folder operation does.
            return Err(if self.cfg.read_only {
                FsError::ROFS
            } else {
                FsError::PERM
            });
        }
        self.remove(parent, name, true)
    }

    fn remove(&self, parent: u64, name: &[u8], dir: bool) -> FsResult<()> {
        self.in_space(parent, |space, st, path| {
            let edit = Edit::Remove {
                path: join(&path, name),
                dir,
                time_ns: now_ns(),
            };
            self.record(space, st, edit)?;
            lock(&self.inodes)?.unlink(parent, name);
            Ok(())
        })
    }

    /// `rename` (`noreplace`: `RENAME_NOREPLACE`).
    pub fn rename(
        &self,
        parent: u64,
        name: &[u8],
        new_parent: u64,
        new_name: &[u8],
        noreplace: bool,
    ) -> FsResult<()> {
        check_name(new_name)?;
        let (a, b) = (self.inode(parent)?, self.inode(new_parent)?);
        let space_of = |k: &Kind| match k {
            Kind::SpaceRoot(s) | Kind::SpaceNode(s, _) => Some(s.clone()),
            _ => None,
        };
        match (space_of(&a.kind), space_of(&b.kind)) {
            (Some(x), Some(y)) if x != y => return Err(FsError::XDEV),
            (Some(_), Some(_)) => {}
            _ if parent == SPACES || new_parent == SPACES => return Err(FsError::PERM),
            _ => return Err(FsError::ROFS),
        }
        self.in_space(parent, |space, st, path| {
            let to_path = {
                let t = lock(&self.inodes)?;
                t.space_path(new_parent).ok_or(FsError::NOENT)?.1
            };
            let edit = Edit::Rename {
                from: join(&path, name),
                to: join(&to_path, new_name),
                noreplace,
                time_ns: now_ns(),
            };
            self.record(space, st, edit)?;
            lock(&self.inodes)?.rename(parent, name, new_parent, new_name);
            Ok(())
        })
    }

    /// `link`: hard links cannot be represented in a snapshot.
    pub fn link(&self) -> FsResult<Attr> {
        Err(FsError::PERM)
    }

    /// `setattr`: mode, owner, size, modification time (the access time is not kept).
    pub fn setattr(&self, ino: u64, fh: Option<u64>, a: &SetAttr) -> FsResult<Attr> {
        let i = self.inode(ino)?;
        let s = match &i.kind {
            Kind::SpaceNode(s, _) => s.clone(),
            Kind::SnapSpace(_) | Kind::SnapRoot { .. } | Kind::SnapNode { .. } => {
                return Err(FsError::ROFS);
            }
            _ => {
                if a.mode.is_none() && a.uid.is_none() && a.gid.is_none() && a.size.is_none() {
                    // Times of the fixed directories are not stored; `touch` on them is harmless.
                    return self.getattr(ino);
                }
                return Err(if self.cfg.read_only {
                    FsError::ROFS
                } else {
                    FsError::PERM
                });
            }
        };
        if self.cfg.read_only {
            return Err(FsError::ROFS);
        }
        let space = self.space(&s).ok_or(FsError::STALE)?;
        if let Some(size) = a.size {
            self.truncate(ino, fh, &space, size)?;
        }
        // The open local file, if any: a new time is set through it, and the attributes read
        // from it (taken before the space lock: lock order).
        let open = self.open_local_file(ino)?;
        {
            let mut st = space.lock()?;
            let path = match lock(&self.inodes)?.space_path(ino) {
                Some((_, p)) => p,
                None => {
                    drop(st);
                    return self.orphan_attr(ino);
                }
            };
            let info = st
                .tree
                .lookup(&FsTrees(self), &path)?
                .ok_or(FsError::NOENT)?;
            let mtime = a.mtime.map(|t| t.unwrap_or_else(now_ns));
            if let (Some(t), Some(id)) = (mtime, info.local) {
                // The mtime of local content is its file's: no journal record needed, and the
                // commit reads it there. A commit running now must keep the file local.
                match &open {
                    Some((oid, f)) if *oid == id => f.set_modified(system_time(t))?,
                    _ => self.wb()?.open_local(id)?.set_modified(system_time(t))?,
                }
                st.staged
                    .entry(id)
                    .or_insert_with(|| Arc::new(Staged::new(id)))
                    .bump();
                self.changed(&space, &mut st);
            }
            let mut mode = a.mode.map(|m| m & 0o7777);
            if a.kill_suidgid
                && mode.is_none()
                && info.kind == NodeKind::File
                && killed_suidgid(info.meta.mode) != info.meta.mode
            {
                mode = Some(killed_suidgid(info.meta.mode) & 0o7777);
            }
            let journal_mtime = mtime.is_some() && info.local.is_none();
            if mode.is_some() || a.uid.is_some() || a.gid.is_some() || journal_mtime {
                let edit = Edit::SetMeta {
                    path: path.clone(),
                    mode,
                    uid: a.uid,
                    gid: a.gid,
                    mtime_ns: mtime,
                };
                self.record(&space, &mut st, edit)?;
            }
            // The attributes now, from the path at hand (and the open local file if any).
            let info = st
                .tree
                .lookup(&FsTrees(self), &path)?
                .ok_or(FsError::NOENT)?;
            drop(st);
            match (&open, info.local) {
                (Some((oid, f)), Some(id)) if *oid == id => {
                    let md = f.metadata()?;
                    Ok(Self::info_attr_of(ino, &info, (md.len(), mtime_of(&md))))
                }
                _ => self.info_attr(ino, &info),
            }
        }
    }

    /// The local file number and open file of `ino` if it is open with local content.
    fn open_local_file(&self, ino: u64) -> FsResult<Option<(u64, Arc<File>)>> {
        let Some(of) = lock(&self.open_files)?.get(&ino).map(|(f, _)| f.clone()) else {
            return Ok(None);
        };
        let st = of.state.read().map_err(|_| FsError::IO)?;
        Ok(match &*st {
            FileState::Staged { staged, file } => Some((staged.id, file.clone())),
            FileState::Stored(_) => None,
        })
    }

    /// Make the file `ino` local (copying its stored content, up to `keep` bytes) unless it
    /// already is; returns the staged file, its open file and whether it was stored before.
    fn stage(
        &self,
        space: &Arc<Space>,
        st: &mut SpaceState,
        path: &[u8],
        keep: u64,
    ) -> FsResult<(Arc<Staged>, File)> {
        match st.tree.content(&FsTrees(self), path)? {
            Content::Local(id) => {
                let f = self.wb()?.open_local(id)?;
                let staged = st
                    .staged
                    .entry(id)
                    .or_insert_with(|| Arc::new(Staged::new(id)))
                    .clone();
                Ok((staged, f))
            }
            Content::Stored { chunks, .. } => {
                let (id, f) = self.wb()?.new_local()?;
                let r = self.copy_chunks(&chunks, keep, &f);
                if let Err(e) = r {
                    let _ = std::fs::remove_file(self.wb()?.data_path(id));
                    return Err(e);
                }
                let info = st.tree.lookup(&FsTrees(self), path)?;
                if let Some(i) = info {
                    // Keep the modification time until the content changes.
                    f.set_modified(system_time(i.meta.mtime_ns))?;
                }
                let edit = Edit::SetContent {
                    path: path.to_vec(),
                    content: Content::Local(id),
                };
                st.tree.apply(&FsTrees(self), &edit)?;
                let staged = Arc::new(Staged::new(id));
                st.staged.insert(id, staged.clone());
                self.journal(space, st, edit)?;
                Ok((staged, f))
            }
        }
    }

    fn copy_chunks(&self, chunks: &[ObjectId], keep: u64, f: &File) -> FsResult<()> {
        let mut off = 0u64;
        for c in chunks {
            if off >= keep {
                break;
            }
            let data = self.read_object(c)?;
            let n = (data.len() as u64).min(keep - off) as usize;
            f.write_all_at(&data[..n], off)?;
            off += n as u64;
        }
        Ok(())
    }

    fn truncate(&self, ino: u64, fh: Option<u64>, space: &Arc<Space>, size: u64) -> FsResult<()> {
        let of = match fh {
            Some(fh) => lock(&self.handles)?.get(&fh).map(|h| h.file.clone()),
            None => lock(&self.open_files)?.get(&ino).map(|(f, _)| f.clone()),
        };
        // Lock order: open file, then space.
        let mut guard = match &of {
            Some(of) => Some(of.state.write().map_err(|_| FsError::IO)?),
            None => None,
        };
        if let Some(FileState::Staged { staged, file }) = guard.as_deref() {
            file.set_len(size)?;
            staged.bump();
            space.touch();
            let mut st = space.lock()?;
            st.dirty = true;
            st.want_commit = true;
            return Ok(());
        }
        let mut st = space.lock()?;
        let path = self.space_path(ino)?;
        let (staged, f) = self.stage(space, &mut st, &path, size)?;
        f.set_len(size)?;
        staged.bump();
        if let Some(g) = guard.as_deref_mut() {
            *g = FileState::Staged {
                staged,
                file: Arc::new(f),
            };
        }
        st.dirty = true;
        st.want_commit = true;
        Ok(())
    }

    // ----- files -----

    /// The chunks of `ino` if it is open with stored content.
    pub(crate) fn open_stored_chunks(&self, ino: u64) -> Option<Vec<ObjectId>> {
        let of = lock(&self.open_files)
            .ok()?
            .get(&ino)
            .map(|(f, _)| f.clone())?;
        let st = of.state.read().ok()?;
        match &*st {
            FileState::Stored(sf) => Some(sf.chunks.clone()),
            FileState::Staged { .. } => None,
        }
    }

    fn add_handle(&self, ino: u64, of: Arc<OpenFile>) -> FsResult<u64> {
        let of = {
            let mut m = lock(&self.open_files)?;
            let e = m.entry(ino).or_insert_with(|| (of, 0));
            e.1 += 1;
            e.0.clone()
        };
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.handles)?.insert(
            fh,
            Arc::new(Handle {
                ino,
                file: of,
                wrote: AtomicBool::new(false),
                direct: AtomicBool::new(false),
                next: AtomicU64::new(0),
            }),
        );
        Ok(fh)
    }

    fn stored_file(&self, chunks: Vec<ObjectId>) -> FsResult<StoredFile> {
        let mut ends = Vec::with_capacity(chunks.len());
        let mut end = 0u64;
        for c in &chunks {
            end += self.chunk_len(c)?;
            ends.push(end);
        }
        Ok(StoredFile::new(chunks, ends))
    }

    /// `open`. Returns a handle and whether the kernel may keep the pages it cached at earlier
    /// opens. It may, except when truncating: a file of a space changes only through this
    /// mount (the kernel's cache follows) or by a snapshot made elsewhere, after which
    /// `invalidate_space` drops the cached pages of every inode of the space.
    pub fn open(&self, ino: u64, flags: i32) -> FsResult<(u64, bool)> {
        let write = flags & libc::O_ACCMODE != libc::O_RDONLY;
        let trunc = flags & libc::O_TRUNC != 0;
        let i = self.inode(ino)?;
        match &i.kind {
            Kind::SnapNode { parent_tree, entry } => {
                if write || trunc {
                    return Err(FsError::ROFS);
                }
                if let Some((of, _)) = lock(&self.open_files)?.get(&ino) {
                    let of = of.clone();
                    return Ok((self.add_handle(ino, of)?, true));
                }
                let tree = self.tree(parent_tree)?;
                let e = tree.get(&entry.name).ok_or(FsError::STALE)?;
                let Node::File { chunks, .. } = &e.node else {
                    return Err(FsError::ISDIR);
                };
                let sf = self.stored_file(chunks.clone())?;
                self.read_next_files(&tree, &entry.name);
                let of = Arc::new(OpenFile {
                    space: None,
                    state: RwLock::new(FileState::Stored(Arc::new(sf))),
                });
                Ok((self.add_handle(ino, of)?, true))
            }
            Kind::SpaceNode(s, NodeKind::File) => {
                if (write || trunc) && self.cfg.read_only {
                    return Err(FsError::ROFS);
                }
                let space = self.space(s).ok_or(FsError::STALE)?;
                let existing = lock(&self.open_files)?.get(&ino).map(|(f, _)| f.clone());
                if let Some(of) = existing {
                    let mut g = of.state.write().map_err(|_| FsError::IO)?;
                    if write || trunc {
                        let mut st = space.lock()?;
                        let path = self.space_path(ino)?;
                        match &*g {
                            FileState::Staged { staged, file } => {
                                if trunc {
                                    file.set_len(0)?;
                                    staged.bump();
                                    st.dirty = true;
                                    st.want_commit = true;
                                }
                            }
                            FileState::Stored(_) => {
                                let keep = if trunc { 0 } else { u64::MAX };
                                let (staged, f) = self.stage(&space, &mut st, &path, keep)?;
                                if trunc {
                                    f.set_len(0)?;
                                    staged.bump();
                                }
                                *g = FileState::Staged {
                                    staged,
                                    file: Arc::new(f),
                                };
                            }
                        }
                    }
                    drop(g);
                    return Ok((self.add_handle(ino, of)?, !trunc));
                }
                let mut st = space.lock()?;
                let path = self.space_path(ino)?;
                let state = if write || trunc {
                    let keep = if trunc { 0 } else { u64::MAX };
                    let (staged, f) = self.stage(&space, &mut st, &path, keep)?;
                    if trunc && f.metadata()?.len() > 0 {
                        f.set_len(0)?;
                        staged.bump();
                        st.dirty = true;
                        st.want_commit = true;
                    }
                    FileState::Staged {
                        staged,
                        file: Arc::new(f),
                    }
                } else {
                    match st.tree.content(&FsTrees(self), &path)? {
                        Content::Local(id) => {
                            let f = self.wb()?.open_local(id)?;
                            let staged = st
                                .staged
                                .entry(id)
                                .or_insert_with(|| Arc::new(Staged::new(id)))
                                .clone();
                            FileState::Staged {
                                staged,
                                file: Arc::new(f),
                            }
                        }
                        Content::Stored { chunks, .. } => {
                            drop(st);
                            FileState::Stored(Arc::new(self.stored_file(chunks)?))
                        }
                    }
                };
                let of = Arc::new(OpenFile {
                    space: Some(space.clone()),
                    state: RwLock::new(state),
                });
                Ok((self.add_handle(ino, of)?, !trunc))
            }
            Kind::SpaceNode(..) => Err(FsError::ISDIR),
            _ => Err(FsError::ISDIR),
        }
    }

    fn handle(&self, fh: u64) -> FsResult<Arc<Handle>> {
        lock(&self.handles)?.get(&fh).cloned().ok_or(FsError::BADF)
    }

    /// `read`: up to `size` bytes at `offset`.
    pub fn read(&self, fh: u64, offset: u64, size: u32) -> FsResult<Vec<u8>> {
        self.read_with(fh, offset, size, |d| d.to_vec())
    }

    /// `read`, handing the bytes to `reply` (without copying them when they lie in one
    /// cached window).
    pub fn read_with<R>(
        &self,
        fh: u64,
        offset: u64,
        size: u32,
        reply: impl FnOnce(&[u8]) -> R,
    ) -> FsResult<R> {
        let h = self.handle(fh)?;
        let st = h.file.state.read().map_err(|_| FsError::IO)?;
        let out = match &*st {
            FileState::Stored(sf) => {
                let sf = sf.clone();
                drop(st);
                let sequential =
                    h.next.load(Ordering::Relaxed).abs_diff(offset) <= SEQUENTIAL_SLACK;
                let end = offset.saturating_add(u64::from(size)).min(sf.size());
                h.next.store(end.max(offset), Ordering::Relaxed);
                return if sequential {
                    self.read_windows(&sf, offset, size as u64, reply)
                } else {
                    self.read_stored(&sf, offset, size as u64)
                        .map(|d| reply(&d))
                };
            }
            FileState::Staged { file, .. } => {
                let mut buf = vec![0u8; size as usize];
                let mut n = 0;
                while n < buf.len() {
                    match file.read_at(&mut buf[n..], offset + n as u64) {
                        Ok(0) => break,
                        Ok(k) => n += k,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                buf.truncate(n);
                buf
            }
        };
        h.next.store(offset + out.len() as u64, Ordering::Relaxed);
        Ok(reply(&out))
    }

    /// The content of window `w` of `sf`, from the cache or loaded with one read per run of
    /// chunks stored one after the other.
    fn window(&self, sf: &StoredFile, w: usize) -> Result<Arc<Vec<u8>>> {
        let (range, _, _) = sf.window(w);
        if range.len() == 1 {
            return self.chunk(&sf.chunks[range.start]);
        }
        self.chunks.get_or_load(&sf.keys[w], || {
            let ids = &sf.chunks[range];
            let r = self.index_reader()?;
            let v = match puce_core::read::read_objects(&self.repo, &r, ids) {
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    // A stale index view (a commit or gc since): look again once.
                    self.refresh_reader()?;
                    puce_core::read::read_objects(&self.repo, &*self.index_reader()?, ids)?
                }
                x => x?,
            };
            let w = v.len() + 64;
            Ok((Arc::new(v), w))
        })
    }

    /// A sequential read: served from whole windows, the next ones read ahead.
    fn read_windows<R>(
        &self,
        sf: &Arc<StoredFile>,
        offset: u64,
        size: u64,
        reply: impl FnOnce(&[u8]) -> R,
    ) -> FsResult<R> {
        let total = sf.size();
        if offset >= total || size == 0 {
            return Ok(reply(&[]));
        }
        let end = (offset + size).min(total);
        let first = sf.window_of(offset);
        self.read_ahead(sf, first);
        let load = |w: usize| -> FsResult<(Arc<Vec<u8>>, u64, u64)> {
            let (_, a, b) = sf.window(w);
            let data = self.window(sf, w)?;
            if data.len() as u64 != b - a {
                tracing::error!(
                    "window {w} has {} bytes, the index says {}",
                    data.len(),
                    b - a
                );
                return Err(FsError::IO);
            }
            Ok((data, a, b))
        };
        let (data, a, b) = load(first)?;
        if end <= b {
            // The common case: no copy.
            return Ok(reply(&data[(offset - a) as usize..(end - a) as usize]));
        }
        let mut out = Vec::with_capacity((end - offset) as usize);
        out.extend_from_slice(&data[(offset - a) as usize..]);
        let mut w = first + 1;
        while (offset + out.len() as u64) < end && w < sf.wins.len() {
            let (data, a, b) = load(w)?;
            out.extend_from_slice(&data[..(end.min(b) - a) as usize]);
            w += 1;
        }
        Ok(reply(&out))
    }

    /// A random read: only the chunks it touches are loaded.
    fn read_stored(&self, sf: &StoredFile, offset: u64, size: u64) -> FsResult<Vec<u8>> {
        let total = sf.size();
        if offset >= total || size == 0 {
            return Ok(Vec::new());
        }
        let end = (offset + size).min(total);
        let mut out = Vec::with_capacity((end - offset) as usize);
        let mut i = sf.ends.partition_point(|e| *e <= offset);
        let mut pos = offset;
        while pos < end && i < sf.chunks.len() {
            let start = if i == 0 { 0 } else { sf.ends[i - 1] };
            let data = self.chunk(&sf.chunks[i])?;
            if data.len() as u64 != sf.ends[i] - start {
                tracing::error!(
                    "chunk {} has {} bytes, the index says {}",
                    sf.chunks[i],
                    data.len(),
                    sf.ends[i] - start
                );
                return Err(FsError::IO);
            }
            let a = (pos - start) as usize;
            let b = ((end.min(sf.ends[i])) - start) as usize;
            out.extend_from_slice(&data[a..b]);
            pos = start + b as u64;
            i += 1;
        }
        Ok(out)
    }

    /// Queue the windows after `w` (about [`READ_AHEAD`] bytes) for loading into the cache.
    fn read_ahead(&self, sf: &Arc<StoredFile>, w: usize) {
        let Ok(g) = self.prefetch.lock() else { return };
        let Some(tx) = g.as_ref() else { return };
        let (_, _, from) = sf.window(w);
        // Never more than a quarter of the cache, so that read-ahead does not evict itself.
        let ahead = READ_AHEAD.min(self.chunks.capacity() as u64 / 4);
        let mut n = w + 1;
        while n < sf.wins.len() {
            let (_, a, _) = sf.window(n);
            if a - from >= ahead {
                break;
            }
            if !self.chunks.contains(&sf.keys[n])
                && tx.try_send(Prefetch::Window(sf.clone(), n)).is_err()
            {
                return;
            }
            n += 1;
        }
        // The windows after those: hinted once each.
        let mut end = n;
        while end < sf.wins.len() && sf.window(end).1 - from < ahead + HINT_AHEAD {
            end += 1;
        }
        let start = sf.hinted.fetch_max(end, Ordering::Relaxed).max(n);
        if start < end && tx.try_send(Prefetch::Hint(sf.clone(), start..end)).is_err() {
            // The queue is full: a later read asks again (unless another got further).
            let _ = sf
                .hinted
                .compare_exchange(end, start, Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    /// Whether the kernel may do the I/O of handle `fh` itself, and on which file. `perm`:
    /// the file's permission bits when the caller has them (else they are looked up).
    pub fn passthrough(&self, fh: u64, perm: Option<u32>) -> Passthrough {
        let Ok(h) = self.handle(fh) else {
            return Passthrough::No;
        };
        if h.file.space.is_none() {
            return Passthrough::Never;
        }
        let file = match h.file.state.read().as_deref() {
            Ok(FileState::Staged { file, .. }) => file.clone(),
            _ => return Passthrough::No,
        };
        match perm.map_or_else(|| self.getattr(h.ino).map(|a| a.perm), Ok) {
            Ok(p) if p & 0o6000 == 0 => Passthrough::Local(file),
            _ => Passthrough::No,
        }
    }

    /// The kernel does the I/O of handle `fh` itself from now on; `writable`: it was opened
    /// for writing.
    pub fn set_direct(&self, fh: u64, writable: bool) {
        if let Ok(h) = self.handle(fh) {
            h.direct.store(true, Ordering::Relaxed);
            if writable {
                h.wrote.store(true, Ordering::Relaxed);
            }
        }
    }

    /// A writable handle whose I/O the kernel did itself is released: count it as a write
    /// (the content may have changed at any time while it was open; a commit that read the
    /// file before the last writes then sees a new version and keeps the file local).
    fn direct_written(&self, h: &Handle) {
        if !(h.direct.load(Ordering::Relaxed) && h.wrote.load(Ordering::Relaxed)) {
            return;
        }
        if let Ok(st) = h.file.state.read()
            && let FileState::Staged { staged, .. } = &*st
        {
            Self::content_changed(h, staged);
        }
    }

    /// The local content of handle `h` changed: a new version for a commit running now, and a
    /// change of the space (the quiet period starts again).
    fn content_changed(h: &Handle, staged: &Staged) {
        staged.bump();
        h.wrote.store(true, Ordering::Relaxed);
        if let Some(space) = &h.file.space {
            space.touch();
            space.mark_dirty();
        }
    }

    /// `write`.
    pub fn write(&self, fh: u64, offset: u64, data: &[u8]) -> FsResult<u32> {
        let h = self.handle(fh)?;
        let st = h.file.state.read().map_err(|_| FsError::IO)?;
        let FileState::Staged { staged, file } = &*st else {
            return Err(FsError::BADF);
        };
        file.write_all_at(data, offset)?;
        Self::content_changed(&h, staged);
        Ok(data.len() as u32)
    }

    /// Clear set-user-ID and set-group-ID of the file open as `fh` (a write by an unprivileged
    /// caller: the kernel asks with `FUSE_WRITE_KILL_SUIDGID`).
    pub fn kill_suidgid(&self, fh: u64) -> FsResult<()> {
        let ino = self.handle(fh)?.ino;
        let before = self.getattr(ino)?.perm;
        let a = SetAttr {
            kill_suidgid: true,
            ..SetAttr::default()
        };
        let after = self.setattr(ino, Some(fh), &a)?.perm;
        if after != before {
            // No attributes go back with a write or an open: the kernel must ask again.
            if let Ok(n) = self.notifier.read()
                && let Some(n) = n.as_ref()
            {
                n.inval_attr(ino);
            }
        }
        Ok(())
    }

    fn ask_commit(&self, h: &Handle) {
        if h.wrote.load(Ordering::Relaxed)
            && let Some(space) = &h.file.space
        {
            let mut pending = false;
            if let Ok(mut st) = space.lock() {
                pending = st.want_commit && st.dirty;
                st.want_commit = true;
                st.dirty = true;
            }
            if !pending {
                self.wake();
            }
        }
    }

    /// `flush` (each `close`): asks for a commit after the quiet period.
    pub fn flush(&self, fh: u64) -> FsResult<()> {
        let h = self.handle(fh)?;
        self.ask_commit(&h);
        Ok(())
    }

    /// `release` (last close of a handle).
    pub fn release(&self, fh: u64) {
        let Ok(mut hs) = self.handles.lock() else {
            return;
        };
        let Some(h) = hs.remove(&fh) else { return };
        drop(hs);
        self.direct_written(&h);
        self.ask_commit(&h);
        if let Ok(mut m) = self.open_files.lock()
            && let Some(e) = m.get_mut(&h.ino)
        {
            e.1 -= 1;
            if e.1 == 0 {
                m.remove(&h.ino);
            }
        }
    }

    /// `fsync`: the file's content and the journal reach the disk of the write-back area.
    pub fn fsync(&self, fh: u64) -> FsResult<()> {
        let h = self.handle(fh)?;
        {
            let st = h.file.state.read().map_err(|_| FsError::IO)?;
            if let FileState::Staged { file, .. } = &*st {
                file.sync_all()?;
            }
        }
        if let Some(space) = &h.file.space {
            puce_core::fsutil::sync_dir(&self.wb()?.dir().join("data"))?;
            let st = space.lock()?;
            if let Some(j) = &st.journal {
                j.sync()?;
            }
        }
        self.ask_commit(&h);
        Ok(())
    }

    /// `statfs`: the figures of the disk holding the write-back area.
    pub fn statfs(&self) -> FsResult<FsStats> {
        let st = rustix::fs::statvfs(self.repo.root()).map_err(|e| FsError(e.raw_os_error()))?;
        Ok(FsStats {
            blocks: st.f_blocks,
            bfree: st.f_bfree,
            bavail: st.f_bavail,
            files: st.f_files,
            ffree: st.f_ffree,
            bsize: st.f_frsize as u32,
        })
    }

    // ----- recovery -----

    fn recover(&self) -> Result<()> {
        let wb = self
            .wb
            .as_ref()
            .ok_or_else(|| Error::other("no write-back"))?;
        let snaps = self
            .snap_list()
            .map_err(|_| Error::other("lock poisoned"))?;
        let mut keep = HashSet::new();
        for (path, j) in wb.journals()? {
            if j.torn {
                tracing::warn!(
                    "the journal of space '{}' ended with a damaged record (a crash during a \
                     change): the changes before it are recovered",
                    j.space
                );
            }
            let base = match j.base {
                None => None,
                Some(id) => match snaps
                    .by_space
                    .get(&j.space)
                    .and_then(|v| v.iter().find(|(_, e)| e.id == id))
                {
                    Some((_, e)) => Some(e.clone()),
                    None => {
                        let lost = path.with_extension("lost");
                        let _ = std::fs::rename(&path, &lost);
                        tracing::error!(
                            "uncommitted changes of space '{}' were made on snapshot {id}, which \
                             is gone: set aside in {}",
                            j.space,
                            lost.display()
                        );
                        continue;
                    }
                },
            };
            let space = Arc::new(Space::new(&j.space, base.clone()));
            {
                let mut st = space.st.lock().map_err(|_| Error::other("lock poisoned"))?;
                let mut kept = Vec::new();
                for e in j.edits {
                    let missing_local = match &e {
                        Edit::Create {
                            content: Content::Local(id),
                            ..
                        }
                        | Edit::SetContent {
                            content: Content::Local(id),
                            ..
                        } => !wb.data_path(*id).exists(),
                        _ => false,
                    };
                    if missing_local {
                        tracing::error!("recovery: the content of {e:?} is missing; skipped");
                        continue;
                    }
                    match st.tree.apply(&FsTrees(self), &e) {
                        Ok(()) => kept.push(e),
                        Err(err) => tracing::warn!("recovery: {err}; skipped"),
                    }
                }
                for id in st.tree.local_ids() {
                    keep.insert(id);
                    st.staged.insert(id, Arc::new(Staged::new(id)));
                }
                st.journal = Some(crate::writeback::Journal::create(
                    &path,
                    &j.space,
                    base.as_ref().map(|b| &b.id),
                    &kept,
                )?);
                st.edits = kept;
                st.dirty = true;
                st.want_commit = true;
            }
            tracing::info!(
                "recovered uncommitted changes of space '{}'; committing them",
                j.space
            );
            self.spaces
                .write()
                .map_err(|_| Error::other("lock poisoned"))?
                .insert(j.space.clone(), space);
        }
        wb.sweep(&keep);
        Ok(())
    }

    /// Stop the background work (the caller then commits with [`PuceFs::commit_all`]).
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Ok(mut p) = self.prefetch.lock() {
            p.take();
        }
        self.wake();
    }
}

fn prefetch_loop(fs: Weak<PuceFs>, rx: Receiver<Prefetch>) {
    for job in rx {
        let Some(fs) = fs.upgrade() else { return };
        match job {
            Prefetch::Window(sf, w) => {
                if let Err(e) = fs.window(&sf, w) {
                    tracing::debug!("read-ahead of window {w}: {e:#}");
                }
            }
            Prefetch::Chunks(ids) => {
                for id in ids {
                    if let Err(e) = fs.chunk(&id) {
                        tracing::debug!("read-ahead of chunk {id}: {e:#}");
                    }
                }
            }
            Prefetch::Hint(sf, wins) => {
                if wins.is_empty() {
                    continue;
                }
                let chunks = &sf.chunks[sf.wins[wins.start]..sf.window(wins.end - 1).0.end];
                let r = fs
                    .index_reader()
                    .and_then(|r| puce_core::read::will_need(&fs.repo, &r, chunks));
                if let Err(e) = r {
                    tracing::debug!("read-ahead hint: {e:#}");
                }
            }
        }
    }
}

#[allow(dead_code)]
fn assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<PuceFs>();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Windows cover every chunk once, hold at least WINDOW bytes (but the last), and
    /// `window_of` finds the window of every byte.
    #[test]
    fn windows_partition_the_chunks() {
        for sizes in [
            vec![],
            vec![5u64],
            vec![300_000; 40],
            vec![3 << 20, 10, 10, 3 << 20],
        ] {
            let chunks: Vec<ObjectId> = (0..sizes.len())
                .map(|i| ObjectId::of(&i.to_le_bytes()))
                .collect();
            let ends: Vec<u64> = sizes
                .iter()
                .scan(0, |e, s| {
                    *e += s;
                    Some(*e)
                })
                .collect();
            let sf = StoredFile::new(chunks.clone(), ends.clone());
            assert_eq!(sf.wins.len(), sf.keys.len());
            let mut next = 0;
            for w in 0..sf.wins.len() {
                let (r, a, b) = sf.window(w);
                assert_eq!(r.start, next);
                assert!(b - a >= WINDOW || w + 1 == sf.wins.len());
                assert_eq!(r.len() == 1, sf.keys[w] == chunks[r.start]);
                for off in [a, (a + b) / 2, b - 1] {
                    assert_eq!(sf.window_of(off), w);
                }
                next = r.end;
            }
            assert_eq!(next, chunks.len());
        }
    }
}
