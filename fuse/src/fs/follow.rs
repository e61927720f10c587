//! Snapshots made elsewhere: the snapshot list reloaded, spaces without local changes moved to
//! their latest snapshot, and the kernel's caches invalidated when a space's tree changed under
//! it (after a commit that merged, or a snapshot followed).

use std::collections::HashSet;
use std::sync::Arc;

use puce_core::merge::Conflict;
use puce_core::snapshot::edit::{Content, EditTree, NodeKind};
use puce_core::{ObjectId, Result, SnapshotEntry};

use super::PuceFs;
use super::commit::lerr;
use super::lookup::SnapList;
use super::stored::FsTrees;
use crate::inode::{Kind, SPACES};
use crate::space::Space;
use puce_core::paths::split_last;

/// An inode with its parent and its name there.
type Link = (u64, u64, Vec<u8>);

impl PuceFs {
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
            st.set_base(
                Some(latest.clone()),
                EditTree::new(Some(latest.snapshot.root)),
            );
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
    pub(super) fn invalidate_space(&self, space: &Arc<Space>, conflicts: &[Conflict]) {
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
                        (t.find_path(root, &c.path), Some(split_last(&c.copy)))
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
}
