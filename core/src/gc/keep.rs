//! What a writer that reuses stored objects by id does so that gc cannot delete them under it
//! ([`keep_reachable`]).

use std::collections::HashSet;

use crate::backend::FileKind;
use crate::error::{Error, Result};
use crate::format::tree::Node;
use crate::hash::{ObjectId, SnapshotId};
use crate::repo::Repo;

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
                // No content.
                Node::Symlink { .. }
                | Node::Fifo
                | Node::Socket
                | Node::CharDevice { .. }
                | Node::BlockDevice { .. } => {}
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::error::ErrorKind;
    use crate::gc::{GcOptions, forget, gc};
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
