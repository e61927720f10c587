//! Paths inside snapshots: resolving `a/b/c` to a tree entry, listing directories.
//!
//! Shared by the CLI (`ls`, `cat`, `restore SNAP:PATH`) and the FUSE mount; the path rules
//! themselves (splitting, names, joins) are in [`crate::paths`].

use crate::error::{Error, Result};
use crate::format::tree::{Entry, MAX_TREE_DEPTH, Node, Tree, too_deep};
use crate::hash::ObjectId;
use crate::index::IndexReader;
use crate::paths::{self, path_depth};
use crate::repo::Repo;

/// What a path inside a snapshot names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// The snapshot's root directory.
    Root(ObjectId),
    /// An entry below the root.
    Entry(Entry),
}

impl Resolved {
    /// The tree id if this is a directory.
    pub fn tree(&self) -> Option<ObjectId> {
        match self {
            Resolved::Root(t) => Some(*t),
            Resolved::Entry(Entry {
                node: Node::Dir { tree },
                ..
            }) => Some(*tree),
            _ => None,
        }
    }
}

/// Split a path inside a snapshot into components ([`paths::split`]: empty ones and `.` are
/// ignored; `..` and names containing NUL are refused).
pub fn components(path: &[u8]) -> Result<Vec<&[u8]>> {
    paths::split(path).map_err(|c| {
        if c == b".." {
            Error::invalid("'..' is not allowed in a path inside a snapshot")
        } else {
            Error::invalid(format!(
                "invalid name {:?} in path '{}'",
                String::from_utf8_lossy(c),
                String::from_utf8_lossy(path)
            ))
        }
    })
}

/// Resolve `path` below the tree `root`.
pub fn resolve(repo: &Repo, reader: &IndexReader, root: ObjectId, path: &[u8]) -> Result<Resolved> {
    let comps = components(path)?;
    let mut cur = Resolved::Root(root);
    for (i, c) in comps.iter().enumerate() {
        let Some(tree_id) = cur.tree() else {
            return Err(Error::not_found(format!(
                "'{}' is not a directory",
                String::from_utf8_lossy(&comps[..i].join(&b'/'))
            )));
        };
        let tree = repo.read_tree_with(reader, &tree_id)?;
        match tree.get(c) {
            Some(e) => cur = Resolved::Entry(e.clone()),
            None => {
                return Err(Error::not_found(format!(
                    "no '{}' in the snapshot",
                    String::from_utf8_lossy(&comps[..=i].join(&b'/'))
                )));
            }
        }
    }
    Ok(cur)
}

/// Walk a tree depth-first in name order, calling `f(path, entry)` for every entry. Paths are
/// relative to `root`, `/`-separated, and start with `prefix`.
pub fn walk(
    repo: &Repo,
    reader: &IndexReader,
    root: ObjectId,
    prefix: &[u8],
    f: &mut dyn FnMut(&[u8], &Entry) -> Result<()>,
) -> Result<()> {
    if path_depth(prefix) > MAX_TREE_DEPTH {
        return Err(too_deep(format!("'{}'", String::from_utf8_lossy(prefix))));
    }
    let tree: Tree = repo.read_tree_with(reader, &root)?;
    let mut path = prefix.to_vec();
    for e in &tree.entries {
        let len = path.len();
        if !path.is_empty() {
            path.push(b'/');
        }
        path.extend_from_slice(&e.name);
        f(&path, e)?;
        if let Node::Dir { tree } = &e.node {
            walk(repo, reader, *tree, &path, f)?;
        }
        path.truncate(len);
    }
    Ok(())
}
