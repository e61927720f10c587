//! Spaces in the mount: their uncommitted changes, commits, and snapshots arriving from
//! elsewhere.
//!
//! A commit takes the space's edit tree as it is, chunks its local files into the store
//! through a [`Saver`], and records a snapshot whose parent is the snapshot the changes were
//! made on. If another snapshot of the space arrived meanwhile (replication, the CLI), the
//! changes are merged into it ([`merge3`]): both versions of a file changed on both sides are
//! kept. Edits made while the commit ran are replayed on the new snapshot.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use puce_core::format::snapshot::{Snapshot, Summary};
use puce_core::format::tree::{MAX_TREE_DEPTH, Node, too_deep};
use puce_core::index::now_ns;
use puce_core::saver::Saver;
use puce_core::session::Session;
use puce_core::snapshot::edit::{Content, Edit, EditTree, NodeKind};
use puce_core::snapshot::treemerge::{Conflict, merge3};
use puce_core::{Error, ObjectId, Result, SnapshotEntry};

use crate::error::{FsError, FsResult};
use crate::fs::{Counts, FsTrees, PuceFs, SnapList};
use crate::inode::{Kind, SPACES};
use crate::writeback::Journal;

/// An inode with its parent and its name there.
type Link = (u64, u64, Vec<u8>);

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

    fn version(&self) -> u64 {
        self.version.load(Ordering::Relaxed)
    }
}

/// The mutable state of a space.
pub(crate) struct SpaceState {
    /// The snapshot the changes are made on (`None`: a space with no snapshot yet).
    pub(crate) base: Option<SnapshotEntry>,
    /// The latest snapshot plus the changes.
    pub(crate) tree: EditTree,
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
    retry_at: Option<Instant>,
}

/// One space.
pub struct Space {
    /// Its name.
    pub name: Arc<str>,
    pub(crate) st: Mutex<SpaceState>,
    activity_ns: AtomicI64,
    commit_lock: Mutex<()>,
}

impl Space {
    pub(crate) fn new(name: &str, base: Option<SnapshotEntry>) -> Space {
        Space {
            name: Arc::from(name),
            st: Mutex::new(SpaceState {
                tree: EditTree::new(base.as_ref().map(|b| b.snapshot.root)),
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

    fn quiet_for(&self) -> Duration {
        let ns = now_ns().saturating_sub(self.activity_ns.load(Ordering::Relaxed));
        Duration::from_nanos(ns.max(0) as u64)
    }
}

/// What one commit did.
#[derive(Debug, Clone, Default)]
pub struct CommitOutcome {
    /// The new snapshot, if one was written.
    pub snapshot: Option<puce_core::SnapshotId>,
    /// Files kept twice because they changed here and elsewhere.
    pub conflicts: Vec<Conflict>,
}

fn lerr<T>(r: std::result::Result<T, impl std::fmt::Display>) -> Result<T> {
    r.map_err(|e| Error::other(format!("lock poisoned: {e}")))
}

impl PuceFs {
    /// Commit every space with uncommitted changes now (shutdown, tests).
    pub fn commit_all(&self) -> Result<Vec<CommitOutcome>> {
        let spaces: Vec<Arc<Space>> = lerr(self.spaces.read())?.values().cloned().collect();
        let mut out = Vec::new();
        let mut first_err = None;
        for s in spaces {
            match self.commit(&s) {
                Ok(o) => out.push(o),
                Err(e) => {
                    tracing::error!("cannot commit space '{}': {e:#}", s.name);
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    /// Whether any space has uncommitted changes.
    pub fn has_pending(&self) -> bool {
        self.spaces
            .read()
            .map(|m| {
                m.values()
                    .any(|s| s.st.lock().map(|st| st.dirty).unwrap_or(true))
            })
            .unwrap_or(true)
    }

    fn open_ids(&self) -> HashSet<u64> {
        let mut out = HashSet::new();
        if let Ok(m) = self.open_files.lock() {
            for (of, _) in m.values() {
                if let Ok(st) = of.state.read()
                    && let crate::fs::FileState::Staged { staged, .. } = &*st
                {
                    out.insert(staged.id);
                }
            }
        }
        out
    }

    /// Commit the changes of `space` as a new snapshot (merging with a snapshot that arrived
    /// meanwhile). Does nothing if nothing changed.
    pub fn commit(&self, space: &Arc<Space>) -> Result<CommitOutcome> {
        let _one = lerr(space.commit_lock.lock())?;
        let Some(wb) = self.wb.as_ref() else {
            // A read-only mount has nothing to commit.
            return Ok(CommitOutcome::default());
        };
        let started = Instant::now();
        // The writer session is registered before the space's state is taken (for gc); what
        // that state reuses from snapshots loaded before it is checked by `keep_reachable`.
        let saver = Saver::with_session(
            self.repo.clone(),
            self.cfg.threads,
            &format!("mount commit {}", space.name),
        )?;
        let (tree, base, n_edits, locals) = {
            let mut st = lerr(space.st.lock())?;
            if !st.dirty {
                return Ok(CommitOutcome::default());
            }
            st.want_commit = false;
            let locals: Vec<(Vec<u8>, u64, u64)> = st
                .tree
                .local_paths()
                .into_iter()
                .map(|(p, id)| {
                    let v = st.staged.get(&id).map(|s| s.version()).unwrap_or(0);
                    (p, id, v)
                })
                .collect();
            (st.tree.clone(), st.base.clone(), st.edits.len(), locals)
        };
        let ours = tree.write(&self.repo, &saver, &|id| {
            std::fs::File::open(wb.data_path(id))
                .map_err(|e| Error::io("cannot read", &wb.data_path(id), e))
        })?;
        // Seal and index what was written (the merge reads it); the sessions stay registered
        // until the snapshot record is written.
        let (mut saved, s1) = saver.finish_keep_session()?;
        let mut sessions = vec![s1];
        let latest = self.repo.latest(&space.name)?;
        let base_id = base.as_ref().map(|b| b.id);
        let (root, parents, conflicts) = match &latest {
            Some(l) if Some(l.id) != base_id => {
                let saver = Saver::with_session(
                    self.repo.clone(),
                    self.cfg.threads,
                    &format!("mount merge {}", space.name),
                )?;
                let m = merge3(
                    &self.repo,
                    &saver,
                    base.as_ref().map(|b| b.snapshot.root),
                    ours,
                    l.snapshot.root,
                    &self.cfg.node,
                    now_ns(),
                )?;
                let (more, s2) = saver.finish_keep_session()?;
                saved.raw_bytes += more.raw_bytes;
                saved.stored_bytes += more.stored_bytes;
                sessions.push(s2);
                if !m.conflicts.is_empty() {
                    tracing::warn!(
                        "space '{}': {} file(s) changed here and elsewhere; both versions kept",
                        space.name,
                        m.conflicts.len()
                    );
                }
                let mut p = vec![l.id];
                p.extend(base_id);
                (m.root, p, m.conflicts)
            }
            _ => (ours, base_id.into_iter().collect(), Vec::new()),
        };
        let unchanged = match (&latest, &base) {
            (Some(l), _) => l.snapshot.root == root,
            (None, Some(b)) => b.snapshot.root == root,
            (None, None) => false,
        };
        let mut outcome = CommitOutcome {
            snapshot: None,
            conflicts: conflicts.clone(),
        };
        let new_base = if unchanged && latest.is_some() {
            latest.clone()
        } else {
            let counts = self.count(&root, 0)?;
            let summary = Summary {
                files: counts.files,
                dirs: counts.dirs + 1,
                symlinks: counts.symlinks,
                bytes: counts.bytes,
                files_changed: locals.len() as u64,
                bytes_read: 0,
                data_added: saved.raw_bytes,
                data_added_stored: saved.stored_bytes,
                duration_ms: started.elapsed().as_millis() as u64,
                ..Summary::default()
            };
            // The edits were made on snapshots read before this commit's session began: what
            // they reuse must still be there, and not condemned by a gc meanwhile.
            puce_core::gc::keep_reachable(&self.repo, &root, &parents)?;
            let snapshot = Snapshot {
                time_ns: now_ns(),
                space: space.name.to_string(),
                host: self.cfg.node.clone(),
                user: std::env::var("USER").unwrap_or_default(),
                source: format!("puce mount {}", self.cfg.mountpoint.display()),
                tags: vec!["mount".into()],
                parents,
                root,
                summary,
                origin: String::new(),
            };
            let id = self.repo.save_snapshot(&snapshot)?;
            tracing::info!(
                "space '{}': committed snapshot {}",
                space.name,
                id.short(12)
            );
            outcome.snapshot = Some(id);
            Some(SnapshotEntry { id, snapshot })
        };
        for s in sessions {
            s.end(&self.repo)?;
        }
        self.refresh_reader()?;
        self.refresh_snapshots()?;
        // Re-base the live state on the new snapshot.
        let moved: HashMap<Vec<u8>, Vec<u8>> = conflicts
            .iter()
            .map(|c| (c.path.clone(), c.copy.clone()))
            .collect();
        let open = self.open_ids();
        {
            let mut st = lerr(space.st.lock())?;
            let mut replay = Vec::new();
            for (path, id, ver) in &locals {
                let changed = st.staged.get(id).is_some_and(|s| s.version() != *ver);
                if changed || open.contains(id) {
                    let path = moved.get(path).cloned().unwrap_or_else(|| path.clone());
                    replay.push(Edit::SetContent {
                        path,
                        content: Content::Local(*id),
                    });
                }
            }
            replay.extend(st.edits[n_edits..].iter().cloned());
            let mut t = EditTree::new(new_base.as_ref().map(|b| b.snapshot.root));
            let mut kept = Vec::new();
            for e in replay {
                match t.apply(&FsTrees(self), &e) {
                    Ok(()) => kept.push(e),
                    Err(err) => tracing::warn!(
                        "space '{}': a change made during the commit no longer applies ({err}); \
                         dropped",
                        space.name
                    ),
                }
            }
            let live: HashSet<u64> = t.local_ids().into_iter().collect();
            st.staged
                .retain(|id, _| live.contains(id) || open.contains(id));
            st.tree = t;
            st.base = new_base.clone();
            st.dirty = !kept.is_empty();
            st.retry_at = None;
            if !st.dirty {
                st.want_commit = false;
            }
            let old = st.journal.take();
            if st.dirty {
                st.journal = Some(Journal::create(
                    &wb.journal_path(&space.name),
                    &space.name,
                    new_base.as_ref().map(|b| &b.id),
                    &kept,
                )?);
            } else if let Some(j) = old {
                j.remove()?;
            } else {
                let p = wb.journal_path(&space.name);
                if p.exists() {
                    let _ = std::fs::remove_file(&p);
                }
            }
            st.edits = kept;
        }
        self.sweep();
        if root != ours {
            self.invalidate_space(space, &conflicts);
        }
        Ok(outcome)
    }

    /// Delete local files no space refers to and no handle holds.
    fn sweep(&self) {
        let Some(wb) = &self.wb else { return };
        // Before looking at the spaces: a file created after this point is not deleted.
        wb.begin_sweep();
        let mut keep = self.open_ids();
        if let Ok(m) = self.spaces.read() {
            for s in m.values() {
                if let Ok(st) = s.st.lock() {
                    keep.extend(st.staged.keys().copied());
                    keep.extend(st.tree.local_ids());
                }
            }
        }
        wb.sweep(&keep);
    }

    /// Counts of the tree `id`, `depth` levels below the root, reusing those of unchanged
    /// subtrees.
    fn count(&self, id: &ObjectId, depth: usize) -> Result<Counts> {
        if let Some(c) = lerr(self.counts.lock())?.get(id) {
            return Ok(*c);
        }
        if depth > MAX_TREE_DEPTH {
            return Err(too_deep(format!("tree {id}")));
        }
        let t = self.tree(id)?;
        let mut c = Counts::default();
        for e in &t.entries {
            match &e.node {
                Node::File { size, .. } => {
                    c.files += 1;
                    c.bytes += size;
                }
                Node::Symlink { .. } => c.symlinks += 1,
                Node::Dir { tree } => {
                    let s = self.count(tree, depth + 1)?;
                    c.dirs += 1 + s.dirs;
                    c.files += s.files;
                    c.symlinks += s.symlinks;
                    c.bytes += s.bytes;
                }
            }
        }
        let mut m = lerr(self.counts.lock())?;
        if m.len() > 200_000 {
            m.clear();
        }
        m.insert(*id, c);
        Ok(c)
    }

    /// Reload the snapshot list; new spaces appear, and spaces without local changes move to
    /// their latest snapshot. Returns whether anything changed.
    pub fn refresh_snapshots(&self) -> Result<bool> {
        let all = self.repo.snapshots()?;
        let (count, newest) = (all.len(), all.last().map(|e| e.id));
        {
            let cur = lerr(self.snaps.read())?;
            if cur.count == count && cur.newest == newest {
                return Ok(false);
            }
        }
        let list = Arc::new(SnapList::build(all));
        *lerr(self.snaps.write())? = list.clone();
        let mut to_rebase = Vec::new();
        {
            let mut spaces = lerr(self.spaces.write())?;
            for (name, v) in &list.by_space {
                let Some((_, latest)) = v.last() else {
                    continue;
                };
                match spaces.get(name) {
                    None => {
                        spaces.insert(
                            name.clone(),
                            Arc::new(Space::new(name, Some(latest.clone()))),
                        );
                    }
                    Some(s) => to_rebase.push((s.clone(), latest.clone())),
                }
            }
        }
        for (s, latest) in to_rebase {
            self.follow(&s, &latest)?;
        }
        Ok(true)
    }

    /// `latest` is the newest snapshot of `space`: show it if nothing is pending, else ask for
    /// a commit (which merges).
    fn follow(&self, space: &Arc<Space>, latest: &SnapshotEntry) -> Result<()> {
        {
            let mut st = lerr(space.st.lock())?;
            if st.base.as_ref().map(|b| b.id) == Some(latest.id) {
                return Ok(());
            }
            if st.dirty {
                st.want_commit = true;
                drop(st);
                self.wake();
                return Ok(());
            }
            st.tree = EditTree::new(Some(latest.snapshot.root));
            st.base = Some(latest.clone());
            st.edits.clear();
        }
        tracing::info!(
            "space '{}' now shows snapshot {} (made elsewhere)",
            space.name,
            latest.id.short(12)
        );
        self.invalidate_space(space, &[]);
        Ok(())
    }

    /// After the tree of `space` changed under the kernel's feet: drop inodes whose path no
    /// longer leads to the same kind of entry, follow conflict copies, then tell the kernel
    /// (without holding any lock: the kernel may be waiting on a request that needs them).
    fn invalidate_space(&self, space: &Arc<Space>, conflicts: &[Conflict]) {
        let mut notes: Vec<Link> = Vec::new();
        // Open files of the space, and the stored content their paths lead to now.
        let open: HashSet<u64> = match self.open_files.lock() {
            Ok(m) => m.keys().copied().collect(),
            Err(_) => return,
        };
        let mut open_now: Vec<(Link, Option<Vec<ObjectId>>)> = Vec::new();
        {
            let Ok(st) = space.st.lock() else { return };
            let Ok(mut t) = self.inodes.lock() else {
                return;
            };
            let root = st
                .root_ino
                .or_else(|| t.child(SPACES, space.name.as_bytes()));
            if let Some(root) = root {
                for c in conflicts {
                    let (Some(ino), Some((pdir, pname))) =
                        (t.find_path(root, &c.path), split(&c.copy))
                    else {
                        continue;
                    };
                    let (Some(from_parent), Some(to_parent)) =
                        (t.get(ino).map(|i| i.parent), t.find_path(root, pdir))
                    else {
                        continue;
                    };
                    let from_name = t.get(ino).map(|i| i.name.clone()).unwrap_or_default();
                    t.rename(from_parent, &from_name, to_parent, pname);
                    notes.push((ino, from_parent, from_name));
                }
                notes.push((root, SPACES, space.name.as_bytes().to_vec()));
            }
            for (ino, parent, name) in t.space_inodes(&space.name) {
                let Some((_, path)) = t.space_path(ino) else {
                    continue;
                };
                let kind = t.get(ino).map(|i| i.kind.clone());
                let now = st.tree.lookup(&FsTrees(self), &path).ok().flatten();
                let same = match (&kind, &now) {
                    (Some(Kind::SpaceNode(_, k)), Some(i)) => *k == i.kind,
                    _ => false,
                };
                if !same {
                    t.unlink(parent, &name);
                } else if open.contains(&ino)
                    && now.as_ref().map(|i| i.kind) == Some(NodeKind::File)
                {
                    let chunks = match st.tree.content(&FsTrees(self), &path) {
                        Ok(Content::Stored { chunks, .. }) => Some(chunks),
                        _ => None,
                    };
                    open_now.push(((ino, parent, name.clone()), chunks));
                }
                notes.push((ino, parent, name));
            }
        }
        // A file open with stored content its path no longer leads to keeps that content for
        // its open handles, and the path gets a new inode, as if the file had been replaced by
        // a rename: new opens read the new version. Outside the space lock (an open holds the
        // file's state while it takes the space lock).
        let replaced: Vec<Link> = open_now
            .into_iter()
            .filter(|((ino, _, _), now)| {
                self.open_stored_chunks(*ino)
                    .is_some_and(|was| now.as_ref() != Some(&was))
            })
            .map(|(link, _)| link)
            .collect();
        if !replaced.is_empty()
            && let Ok(mut t) = self.inodes.lock()
        {
            for (ino, parent, name) in &replaced {
                if t.child(*parent, name) == Some(*ino) {
                    t.unlink(*parent, name);
                }
            }
        }
        let Ok(n) = self.notifier.read() else { return };
        let Some(n) = n.clone() else { return };
        for (ino, parent, name) in notes {
            n.inval_entry(parent, &name);
            n.inval_inode(ino);
        }
    }

    /// The background loop: commits after the quiet period, follows new snapshots. Returns
    /// when [`PuceFs::shutdown`] is called.
    pub fn run_background(&self) {
        let mut last_poll = Instant::now();
        loop {
            if self.stop.load(Ordering::SeqCst) {
                return;
            }
            let wait = self.next_wait();
            {
                let (m, cv) = &self.wake;
                if let Ok(mut g) = m.lock() {
                    if !*g {
                        g = match cv.wait_timeout(g, wait) {
                            Ok((g, _)) => g,
                            Err(_) => return,
                        };
                    }
                    *g = false;
                }
            }
            if self.stop.load(Ordering::SeqCst) {
                return;
            }
            if last_poll.elapsed() >= self.cfg.poll_interval {
                last_poll = Instant::now();
                if let Err(e) = self.refresh_snapshots() {
                    tracing::warn!("cannot list snapshots: {e:#}");
                }
            }
            let due: Vec<Arc<Space>> = match self.spaces.read() {
                Ok(m) => m.values().filter(|s| self.due(s)).cloned().collect(),
                Err(_) => return,
            };
            for s in due {
                if let Err(e) = self.commit(&s) {
                    tracing::error!(
                        "cannot commit the changes of space '{}' (they stay in the write-back \
                         area; retrying in 30 s): {e:#}",
                        s.name
                    );
                    if let Ok(mut st) = s.st.lock() {
                        st.retry_at = Some(Instant::now() + Duration::from_secs(30));
                    }
                }
            }
            self.hold_session_while_pending();
        }
    }

    /// Hold a writer session while some space has uncommitted changes, and none while every
    /// change is committed: gc then waits for changes about to be committed (the data they
    /// reuse stays), and never for an idle mount. Checked at each turn of the background loop;
    /// the commit itself registers its own session and checks what it reuses
    /// (`keep_reachable`), which covers the moments before this one is taken.
    fn hold_session_while_pending(&self) {
        let pending = self.has_pending();
        let Ok(mut held) = self.pending_session.lock() else {
            return;
        };
        if pending && held.is_none() {
            let what = format!(
                "mount {} (uncommitted changes)",
                self.cfg.mountpoint.display()
            );
            match Session::begin(&self.repo, &what) {
                Ok(s) => *held = Some(s),
                Err(e) => tracing::warn!("cannot register a writer session: {e:#}"),
            }
        } else if !pending
            && let Some(s) = held.take()
            && let Err(e) = s.end(&self.repo)
        {
            tracing::warn!("cannot unregister a writer session: {e:#}");
        }
    }

    fn due(&self, s: &Space) -> bool {
        let Ok(st) = s.st.lock() else { return false };
        st.dirty
            && st.want_commit
            && st.retry_at.is_none_or(|t| Instant::now() >= t)
            && s.quiet_for() >= self.cfg.commit_delay
    }

    fn next_wait(&self) -> Duration {
        let mut wait = self.cfg.poll_interval;
        if let Ok(m) = self.spaces.read() {
            for s in m.values() {
                if let Ok(st) = s.st.lock()
                    && st.dirty
                    && st.want_commit
                {
                    let left = self.cfg.commit_delay.saturating_sub(s.quiet_for());
                    wait = wait.min(left.max(Duration::from_millis(20)));
                }
            }
        }
        wait
    }
}

fn split(path: &[u8]) -> Option<(&[u8], &[u8])> {
    match path.iter().rposition(|b| *b == b'/') {
        Some(i) => Some((&path[..i], &path[i + 1..])),
        None => Some((&b""[..], path)),
    }
}
