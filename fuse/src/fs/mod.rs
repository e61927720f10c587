//! The file system, independent of fuser: every operation takes and returns plain types and
//! an errno, so it is testable without a kernel.
//!
//! Layout: `spaces/SPACE/` is the latest snapshot of each space plus the local changes not
//! committed yet (an [`EditTree`] per space, journaled in the write-back area);
//! `snapshots/SPACE/<time>_<id>/` is every snapshot, read-only. File content is read chunk by
//! chunk through a bounded cache, with read-ahead for sequential readers. Changed files live in
//! the write-back area until a commit chunks them into the store.
//!
//! This module holds [`PuceFs`] itself (its state, opening, starting and stopping it); each
//! concern is in a submodule:
//! - `attr`: the attributes answered for every kind of inode;
//! - `lookup`: lookup, getattr, readlink and directory listings (the read side of the tree);
//! - `change`: changes to a space (create, mkdir, symlink, unlink, rename, setattr...);
//! - `file`: open files and their handles (open, read, write, release, fsync, passthrough);
//! - `stored`: stored content through the caches, read windows and read-ahead;
//! - `commit`, `follow`, `background`, `recover`: commits of a space's changes, snapshots
//!   made elsewhere, the background loop, and recovery of uncommitted changes after a crash.
//!
//! [`EditTree`]: puce_core::snapshot::edit::EditTree

mod attr;
mod background;
mod change;
mod commit;
mod file;
mod follow;
mod lookup;
mod quota;
mod recover;
mod stored;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, bounded};
use puce_core::format::tree::Tree;
use puce_core::index::{IndexReader, now_ns};
use puce_core::paths::NameError;
use puce_core::snapshot::edit::EditTree;
use puce_core::writer_session::WriterSession;
use puce_core::{Error, ObjectId, Repo, Result};

pub use attr::Attr;
pub use change::{Caller, SetAttr, killed_suidgid};
pub use commit::CommitOutcome;
pub use file::Passthrough;
pub use lookup::{DirEntry, UNKNOWN_INO, snapshot_dir_name};

use crate::cache::Cache;
use crate::error::{FsError, FsResult};
use crate::inode::InodeTable;
use crate::space::Space;
use crate::writeback::Writeback;
use commit::Counts;
use file::{Handle, OpenFile};
use lookup::SnapList;
use stored::{Prefetch, prefetch_loop};

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

/// The file system. See the module documentation.
pub struct PuceFs {
    repo: Arc<Repo>,
    cfg: MountConfig,
    wb: Option<Writeback>,
    inodes: Mutex<InodeTable>,
    chunks: Cache<Arc<Vec<u8>>>,
    trees: Cache<Arc<Tree>>,
    reader: RwLock<Arc<IndexReader>>,
    snaps: RwLock<Arc<SnapList>>,
    spaces: RwLock<BTreeMap<String, Arc<Space>>>,
    handles: Mutex<HashMap<u64, Arc<Handle>>>,
    dirs: Mutex<HashMap<u64, Arc<Vec<DirEntry>>>>,
    open_files: Mutex<HashMap<u64, (Arc<OpenFile>, usize)>>,
    next_fh: AtomicU64,
    owner: (u32, u32),
    started_ns: i64,
    notifier: RwLock<Option<Arc<dyn Invalidator>>>,
    wake: (Mutex<bool>, Condvar),
    stop: AtomicBool,
    prefetch: Mutex<Option<Sender<Prefetch>>>,
    counts: Mutex<HashMap<ObjectId, Counts>>,
    /// The hard-link groups of the snapshots whose linked files were looked up, by root tree
    /// (a few: each is one walk of its snapshot).
    snap_links: Mutex<HashMap<ObjectId, Arc<EditTree>>>,
    /// A writer session held while some space has uncommitted changes (none while idle).
    pending_session: Mutex<Option<WriterSession>>,
    /// Spaces at their quota ([`quota`]).
    quota: quota::QuotaCache,
}

fn lock<T>(m: &Mutex<T>) -> FsResult<MutexGuard<'_, T>> {
    m.lock().map_err(|_| {
        tracing::error!("internal lock poisoned");
        FsError::IO
    })
}

// Paths below a space root: `/`-joined names, empty for the root itself.

/// Check the name of a new entry by the rule of [`puce_core::paths::check_new_name`], as the
/// error the kernel expects.
fn check_name(name: &[u8]) -> FsResult<()> {
    puce_core::paths::check_new_name(name).map_err(|e| match e {
        NameError::TooLong => FsError::NAMETOOLONG,
        NameError::Unsafe => FsError::INVAL,
    })
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
            snap_links: Mutex::new(HashMap::new()),
            pending_session: Mutex::new(None),
            quota: quota::QuotaCache::default(),
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

    fn wb(&self) -> FsResult<&Writeback> {
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

    fn space(&self, name: &str) -> Option<Arc<Space>> {
        self.spaces.read().ok()?.get(name).cloned()
    }

    pub(super) fn visible(&self, space: &str) -> bool {
        self.cfg.space.as_deref().is_none_or(|s| s == space)
    }

    fn wake(&self) {
        let (m, cv) = &self.wake;
        if let Ok(mut g) = m.lock() {
            *g = true;
        }
        cv.notify_all();
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

    /// Stop the background work (the caller then commits with [`PuceFs::commit_all`]).
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Ok(mut p) = self.prefetch.lock() {
            p.take();
        }
        self.wake();
    }
}

#[allow(dead_code)]
fn assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<PuceFs>();
}
