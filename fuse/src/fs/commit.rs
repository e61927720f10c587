//! Commits: a space's edit tree as it is, its local files chunked into the store through a
//! [`Saver`], recorded as a snapshot whose parent is the snapshot the changes were made on.
//! If another snapshot of the space arrived meanwhile (replication, the CLI), the changes are
//! merged into it ([`merge3`]): both versions of a file changed on both sides are kept. Edits
//! made while the commit ran are replayed on the new snapshot.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use puce_core::format::snapshot::{Snapshot, Summary};
use puce_core::format::tree::{MAX_TREE_DEPTH, Node, too_deep};
use puce_core::index::now_ns;
use puce_core::merge::{Conflict, merge3};
use puce_core::saver::{Saver, SaverStats};
use puce_core::snapshot::edit::{Content, Edit, EditTree};
use puce_core::writer_session::WriterSession;
use puce_core::{Error, ObjectId, Result, SnapshotEntry, SnapshotId};

use super::PuceFs;
use super::file::FileState;
use super::stored::FsTrees;
use crate::space::Space;
use crate::writeback::{Journal, Writeback};

/// Counts of a tree, memoised by tree id.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Counts {
    pub(super) files: u64,
    pub(super) dirs: u64,
    pub(super) symlinks: u64,
    pub(super) bytes: u64,
}

/// What one commit did.
#[derive(Debug, Clone, Default)]
pub struct CommitOutcome {
    /// The new snapshot, if one was written.
    pub snapshot: Option<puce_core::SnapshotId>,
    /// Files kept twice because they changed here and elsewhere.
    pub conflicts: Vec<Conflict>,
}

pub(super) fn lerr<T>(r: std::result::Result<T, impl std::fmt::Display>) -> Result<T> {
    r.map_err(|e| Error::other(format!("lock poisoned: {e}")))
}

/// What a commit takes from the live state of a space.
struct Taken {
    /// The edit tree to write.
    tree: EditTree,
    /// The snapshot the changes were made on.
    base: Option<SnapshotEntry>,
    /// How many of the space's edits the commit covers (those made after it are replayed).
    n_edits: usize,
    /// Each local file: its path, its number and the version of its content when taken.
    locals: Vec<(Vec<u8>, u64, u64)>,
}

/// The tree a commit records, and the snapshots it descends from.
struct Merged {
    root: ObjectId,
    parents: Vec<SnapshotId>,
    /// Files kept twice because they changed here and elsewhere.
    conflicts: Vec<Conflict>,
}

/// Take the changes of `space` for a commit (`None`: nothing changed).
fn take_changes(space: &Space) -> Result<Option<Taken>> {
    let mut st = lerr(space.st.lock())?;
    if !st.dirty {
        return Ok(None);
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
    Ok(Some(Taken {
        tree: st.tree.clone(),
        base: st.base.clone(),
        n_edits: st.edits.len(),
        locals,
    }))
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
                    && let FileState::Staged { staged, .. } = &*st
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
        let Some(taken) = take_changes(space)? else {
            return Ok(CommitOutcome::default());
        };
        let ours = taken.tree.write(&self.repo, &saver, &|id| {
            std::fs::File::open(wb.data_path(id))
                .map_err(|e| Error::io("cannot read", &wb.data_path(id), e))
        })?;
        // Seal and index what was written (the merge reads it); the sessions stay registered
        // until the snapshot record is written.
        let (mut saved, s1) = saver.finish_keep_session()?;
        let mut sessions = vec![s1];
        let latest = self.repo.latest(&space.name)?;
        let merged = self.merge_latest(
            space,
            taken.base.as_ref(),
            ours,
            latest.as_ref(),
            &mut saved,
            &mut sessions,
        )?;
        let unchanged = match (&latest, &taken.base) {
            (Some(l), _) => l.snapshot.root == merged.root,
            (None, Some(b)) => b.snapshot.root == merged.root,
            (None, None) => false,
        };
        let mut outcome = CommitOutcome {
            snapshot: None,
            conflicts: merged.conflicts.clone(),
        };
        let new_base = if unchanged && latest.is_some() {
            latest
        } else {
            let e = self.write_snapshot(space, &taken, &merged, &saved, started)?;
            outcome.snapshot = Some(e.id);
            Some(e)
        };
        for s in sessions {
            s.end(&self.repo)?;
        }
        self.refresh_reader()?;
        self.refresh_snapshots()?;
        self.rebase(space, wb, &taken, &merged.conflicts, new_base)?;
        self.sweep();
        if merged.root != ours {
            self.invalidate_space(space, &merged.conflicts);
        }
        Ok(outcome)
    }

    /// Merge `ours` (the tree of the changes made on `base`) into `latest` if another snapshot
    /// of `space` arrived meanwhile; the merge's writes are added to `saved` and its session
    /// to `sessions`.
    fn merge_latest(
        &self,
        space: &Space,
        base: Option<&SnapshotEntry>,
        ours: ObjectId,
        latest: Option<&SnapshotEntry>,
        saved: &mut SaverStats,
        sessions: &mut Vec<WriterSession>,
    ) -> Result<Merged> {
        let base_id = base.map(|b| b.id);
        let Some(l) = latest.filter(|l| Some(l.id) != base_id) else {
            return Ok(Merged {
                root: ours,
                parents: base_id.into_iter().collect(),
                conflicts: Vec::new(),
            });
        };
        let saver = Saver::with_session(
            self.repo.clone(),
            self.cfg.threads,
            &format!("mount merge {}", space.name),
        )?;
        let m = merge3(
            &self.repo,
            &saver,
            base.map(|b| b.snapshot.root),
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
        let mut parents = vec![l.id];
        parents.extend(base_id);
        Ok(Merged {
            root: m.root,
            parents,
            conflicts: m.conflicts,
        })
    }

    /// Record the snapshot of `merged` for `space`.
    fn write_snapshot(
        &self,
        space: &Space,
        taken: &Taken,
        merged: &Merged,
        saved: &SaverStats,
        started: Instant,
    ) -> Result<SnapshotEntry> {
        let (root, parents) = (merged.root, merged.parents.clone());
        let counts = self.count(&root, 0)?;
        let summary = Summary {
            files: counts.files,
            dirs: counts.dirs + 1,
            symlinks: counts.symlinks,
            bytes: counts.bytes,
            files_changed: taken.locals.len() as u64,
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
        Ok(SnapshotEntry { id, snapshot })
    }

    /// Re-base the live state of `space` on `new_base`, the snapshot just committed: local
    /// files changed or open since `taken` stay local (at their conflict copy's path if they
    /// were moved there), edits made during the commit are replayed, and the journal holds
    /// what is still not committed.
    fn rebase(
        &self,
        space: &Space,
        wb: &Writeback,
        taken: &Taken,
        conflicts: &[Conflict],
        new_base: Option<SnapshotEntry>,
    ) -> Result<()> {
        let moved: HashMap<Vec<u8>, Vec<u8>> = conflicts
            .iter()
            .map(|c| (c.path.clone(), c.copy.clone()))
            .collect();
        let open = self.open_ids();
        let mut st = lerr(space.st.lock())?;
        let mut replay = Vec::new();
        for (path, id, ver) in &taken.locals {
            let changed = st.staged.get(id).is_some_and(|s| s.version() != *ver);
            if changed || open.contains(id) {
                let path = moved.get(path).cloned().unwrap_or_else(|| path.clone());
                replay.push(Edit::SetContent {
                    path,
                    content: Content::Local(*id),
                });
            }
        }
        replay.extend(st.edits[taken.n_edits..].iter().cloned());
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
        st.set_base(new_base.clone(), t);
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
        Ok(())
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
                // Fifos, sockets, devices: counted as (empty) files.
                _ => c.files += 1,
            }
        }
        let mut m = lerr(self.counts.lock())?;
        if m.len() > 200_000 {
            m.clear();
        }
        m.insert(*id, c);
        Ok(c)
    }
}
