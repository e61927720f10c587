//! The hard-link groups of an edit tree: which paths are names of one file.
//!
//! Built on first need by one walk over the whole tree (loaded directories and stored trees;
//! a tree without hard links never needs it), then kept up to date by every edit.

use std::collections::{BTreeMap, BTreeSet};

use super::{Dir, ENode, EResult, EditTree, TreeSource};
use crate::format::tree::{MAX_TREE_DEPTH, Node, too_deep};
use crate::hash::ObjectId;
use crate::index::now_ns;
use crate::paths;

/// The names of each hard-link group, and the group of each name.
#[derive(Debug, Clone, Default)]
pub(super) struct Links {
    by_group: BTreeMap<u64, BTreeSet<Vec<u8>>>,
    by_path: BTreeMap<Vec<u8>, u64>,
}

impl Links {
    pub(super) fn insert(&mut self, path: Vec<u8>, group: u64) {
        self.by_group.entry(group).or_default().insert(path.clone());
        self.by_path.insert(path, group);
    }

    pub(super) fn remove(&mut self, path: &[u8]) {
        if let Some(g) = self.by_path.remove(path)
            && let Some(names) = self.by_group.get_mut(&g)
        {
            names.remove(path);
            if names.is_empty() {
                self.by_group.remove(&g);
            }
        }
    }

    /// The names of `group`.
    pub(super) fn names(&self, group: u64) -> Vec<Vec<u8>> {
        self.by_group
            .get(&group)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The number of names of `group`.
    pub(super) fn count(&self, group: u64) -> usize {
        self.by_group.get(&group).map_or(0, BTreeSet::len)
    }

    /// `from` (and everything below it) is now at `to`; what was at `to` is gone.
    pub(super) fn rename(&mut self, from: &[u8], to: &[u8]) {
        self.remove(to);
        let mut below = from.to_vec();
        below.push(b'/');
        // `from` itself, then the paths below it (names such as `from!x` sort between).
        let moved: Vec<(Vec<u8>, u64)> = self
            .by_path
            .get_key_value(from)
            .into_iter()
            .chain(
                self.by_path
                    .range(below.clone()..)
                    .take_while(|(k, _)| k.starts_with(&below)),
            )
            .map(|(k, g)| (k.clone(), *g))
            .collect();
        for (k, g) in moved {
            self.remove(&k);
            let mut nk = to.to_vec();
            nk.extend_from_slice(&k[from.len()..]);
            self.insert(nk, g);
        }
    }
}

impl ENode {
    pub(super) fn link(&self) -> Option<u64> {
        match self {
            ENode::File { link, .. }
            | ENode::Symlink { link, .. }
            | ENode::Special { link, .. } => *link,
            ENode::Dir { .. } => None,
        }
    }

    pub(super) fn set_link(&mut self, group: Option<u64>) {
        match self {
            ENode::File { link, .. }
            | ENode::Symlink { link, .. }
            | ENode::Special { link, .. } => *link = group,
            ENode::Dir { .. } => {}
        }
    }
}

impl EditTree {
    /// The hard-link groups of the tree, walked on first need.
    pub(super) fn links(&self, src: &dyn TreeSource) -> EResult<&Links> {
        if let Some(l) = self.links.get() {
            return Ok(l);
        }
        let built = self.walk_links(src)?;
        Ok(self.links.get_or_init(|| built))
    }

    /// How many names the file of hard-link group `group` has in the tree (at least 1).
    pub fn names(&self, src: &dyn TreeSource, group: u64) -> EResult<u32> {
        let n = self.links(src)?.count(group).max(1);
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }

    /// Note that the file of hard-link group `group` changed now (its `ctime`), at each of
    /// its names.
    pub(super) fn note_names(&mut self, src: &dyn TreeSource, group: u64) -> EResult<()> {
        let now = now_ns();
        for p in self.links(src)?.names(group) {
            self.changed_at.insert(p, now);
        }
        Ok(())
    }

    /// Every name in a hard-link group, by one walk (iterative, bounded by the tree depth
    /// limit; memory follows the number of directories and of linked names).
    fn walk_links(&self, src: &dyn TreeSource) -> EResult<Links> {
        enum At<'a> {
            Loaded(&'a BTreeMap<Vec<u8>, ENode>),
            Stored(ObjectId),
        }
        let mut out = Links::default();
        let root = match &self.root {
            Dir::Loaded(m) => At::Loaded(m),
            Dir::Stored(id) => At::Stored(*id),
        };
        let mut stack = vec![(Vec::new(), root, 0usize)];
        while let Some((prefix, at, depth)) = stack.pop() {
            if depth > MAX_TREE_DEPTH {
                return Err(too_deep("a folder of the mount").into());
            }
            match at {
                At::Loaded(m) => {
                    for (name, n) in m {
                        let p = paths::join(&prefix, name);
                        match n {
                            ENode::Dir {
                                dir: Dir::Loaded(m),
                                ..
                            } => stack.push((p, At::Loaded(m), depth + 1)),
                            ENode::Dir {
                                dir: Dir::Stored(id),
                                ..
                            } => stack.push((p, At::Stored(*id), depth + 1)),
                            n => {
                                if let Some(g) = n.link() {
                                    out.insert(p, g);
                                }
                            }
                        }
                    }
                }
                At::Stored(id) => {
                    let t = src.tree(&id)?;
                    for e in &t.entries {
                        let p = paths::join(&prefix, &e.name);
                        match &e.node {
                            Node::Dir { tree } => stack.push((p, At::Stored(*tree), depth + 1)),
                            _ => {
                                if let Some(g) = e.link {
                                    out.insert(p, g);
                                }
                            }
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// The paths of the file at `comps`: all the names of its hard-link group, or itself.
    pub(super) fn names_of(
        &self,
        src: &dyn TreeSource,
        comps: &[&[u8]],
        group: Option<u64>,
    ) -> EResult<Vec<Vec<u8>>> {
        let me = comps.join(&b'/');
        let Some(g) = group else {
            return Ok(vec![me]);
        };
        let mut names = self.links(src)?.names(g);
        if !names.contains(&me) {
            names.push(me);
        }
        Ok(names)
    }
}

#[cfg(test)]
mod tests {
    use super::Links;

    #[test]
    fn a_rename_moves_the_names_below_and_only_those() {
        let mut l = Links::default();
        for (p, g) in [
            ("a", 1),
            ("a!b", 1),
            ("a/x", 2),
            ("a/y/z", 2),
            ("b", 2),
            ("ab", 3),
        ] {
            l.insert(p.into(), g);
        }
        l.rename(b"a", b"c");
        let names = |l: &Links, g| {
            l.names(g)
                .into_iter()
                .map(|p| String::from_utf8(p).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&l, 1), ["a!b", "c"]);
        assert_eq!(names(&l, 2), ["b", "c/x", "c/y/z"]);
        assert_eq!(names(&l, 3), ["ab"]);
        // A rename over a name drops it; a removal leaves the group's other names.
        l.rename(b"ab", b"b");
        assert_eq!(
            (names(&l, 2).len(), names(&l, 3)),
            (2, vec!["b".to_string()])
        );
        l.remove(b"c/x");
        assert_eq!((l.count(2), l.count(9)), (1, 0));
    }
}
