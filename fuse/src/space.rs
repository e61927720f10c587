//! A space's live state: the snapshot its changes are made on, its edit tree (that snapshot
//! plus the changes), the journal of those changes, and its files whose content is local.
//!
//! This is the lower layer of the mount: it knows nothing of the file system. Commits,
//! following snapshots made elsewhere and recovery work on it from [`crate::fs`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use puce_core::SnapshotEntry;
use puce_core::index::now_ns;
use puce_core::snapshot::edit::{Edit, EditTree};

use crate::error::{FsError, FsResult};
use crate::writeback::Journal;

/// A file whose content is local (in the write-back area).
#[derive(Debug)]
pub struct Staged {
    /// Its number.
    pub id: u64,
    version: AtomicU64,
}

impl Staged {
    pub(crate) fn new(id: u64) -> Staged {
        Staged {
            id,
            version: AtomicU64::new(0),
        }
    }

    /// Count a change of the content.
    pub(crate) fn bump(&self) {
        self.version.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn version(&self) -> u64 {
        self.version.load(Ordering::Relaxed)
    }
}

/// The mutable state of a space.
pub(crate) struct SpaceState {
    /// The snapshot the changes are made on (`None`: a space with no snapshot yet).
    pub(crate) base: Option<SnapshotEntry>,
    /// The latest snapshot plus the changes.
    pub(crate) tree: EditTree,
    /// The least `ctime` of the space's entries: the time of the newest snapshot it showed
    /// (an entry not changed since changed at the latest then), never lowered.
    pub(crate) ctime_floor: i64,
    /// The changes since `base`, as journaled.
    pub(crate) edits: Vec<Edit>,
    pub(crate) journal: Option<Journal>,
    /// Something is not committed.
    pub(crate) dirty: bool,
    /// A close, fsync or namespace change asked for a commit.
    pub(crate) want_commit: bool,
    pub(crate) staged: HashMap<u64, Arc<Staged>>,
    pub(crate) root_ino: Option<u64>,
    /// The last commit failed: when to try again.
    pub(crate) retry_at: Option<Instant>,
}

impl SpaceState {
    /// Show `tree`, the edit tree over `base`, from now on.
    pub(crate) fn set_base(&mut self, base: Option<SnapshotEntry>, tree: EditTree) {
        if let Some(b) = &base {
            self.ctime_floor = self.ctime_floor.max(b.snapshot.time_ns);
        }
        self.base = base;
        self.tree = tree;
    }

    /// The staged state of local file `id`, made if the space has none yet.
    pub(crate) fn staged(&mut self, id: u64) -> Arc<Staged> {
        self.staged
            .entry(id)
            .or_insert_with(|| Arc::new(Staged::new(id)))
            .clone()
    }
}

/// One space.
pub struct Space {
    /// Its name.
    pub name: Arc<str>,
    pub(crate) st: Mutex<SpaceState>,
    activity_ns: AtomicI64,
    /// Held by a commit of the space (one at a time).
    pub(crate) commit_lock: Mutex<()>,
}

impl Space {
    pub(crate) fn new(name: &str, base: Option<SnapshotEntry>) -> Space {
        Space {
            name: Arc::from(name),
            st: Mutex::new(SpaceState {
                tree: EditTree::new(base.as_ref().map(|b| b.snapshot.root)),
                ctime_floor: base.as_ref().map_or(0, |b| b.snapshot.time_ns),
                base,
                edits: Vec::new(),
                journal: None,
                dirty: false,
                want_commit: false,
                staged: HashMap::new(),
                root_ino: None,
                retry_at: None,
            }),
            activity_ns: AtomicI64::new(now_ns()),
            commit_lock: Mutex::new(()),
        }
    }

    pub(crate) fn lock(&self) -> FsResult<MutexGuard<'_, SpaceState>> {
        self.st.lock().map_err(|_| {
            tracing::error!("space lock poisoned");
            FsError::IO
        })
    }

    /// Note activity (delays the commit).
    pub(crate) fn touch(&self) {
        self.activity_ns.store(now_ns(), Ordering::Relaxed);
    }

    pub(crate) fn mark_dirty(&self) {
        if let Ok(mut st) = self.st.lock() {
            st.dirty = true;
        }
    }

    /// Time since the last change.
    pub(crate) fn quiet_for(&self) -> Duration {
        let ns = now_ns().saturating_sub(self.activity_ns.load(Ordering::Relaxed));
        Duration::from_nanos(ns.max(0) as u64)
    }
}
