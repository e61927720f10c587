//! The inode table: inode numbers the kernel holds, each with its parent and name.
//!
//! Numbers are handed out on lookup and never reused within a mount (so the generation is
//! always 0). An inode lives while the kernel holds a lookup count on it: memory follows the
//! kernel's dentry cache, not the size of the repository. Space inodes are resolved by path
//! (their parent chain), so renames move whole subtrees by updating one link.

use std::collections::HashMap;
use std::sync::Arc;

use puce_core::format::tree::Entry;
use puce_core::snapshot::edit::NodeKind;
use puce_core::{ObjectId, SnapshotId};

/// The root of the mount.
pub const ROOT: u64 = 1;
/// `spaces/`.
pub const SPACES: u64 = 2;
/// `snapshots/`.
pub const SNAPSHOTS: u64 = 3;

/// What an inode stands for.
#[derive(Debug, Clone)]
pub enum Kind {
    /// The mount root, `spaces/` or `snapshots/`.
    Fixed,
    /// `spaces/SPACE`.
    SpaceRoot(Arc<str>),
    /// An entry below `spaces/SPACE`, found by its path.
    SpaceNode(Arc<str>, NodeKind),
    /// `snapshots/SPACE`.
    SnapSpace(Arc<str>),
    /// `snapshots/SPACE/<time>_<id>`.
    SnapRoot {
        /// The snapshot.
        id: SnapshotId,
        /// Its root tree.
        root: ObjectId,
        /// When it was taken.
        time_ns: i64,
    },
    /// An entry inside a snapshot (immutable). Files keep no chunk list here: `open` reads it
    /// from the parent tree.
    SnapNode {
        /// The tree that lists this entry.
        parent_tree: ObjectId,
        /// The entry, without chunks.
        entry: Arc<Entry>,
    },
}

/// One inode.
#[derive(Debug, Clone)]
pub struct Inode {
    /// Parent inode (the root is its own parent).
    pub parent: u64,
    /// Name in the parent.
    pub name: Vec<u8>,
    /// What it is.
    pub kind: Kind,
    /// The kernel's lookup count.
    pub nlookup: u64,
    /// Whether `(parent, name)` still leads here (false after unlink or replacement).
    pub linked: bool,
    /// The other names the kernel knows of a hard-linked file, as `(parent, name)`.
    pub aliases: Vec<(u64, Vec<u8>)>,
    /// The hard-link group of the file in its space, if it is in one.
    pub group: Option<GroupKey>,
}

/// A hard-link group: the space and the group number (its names are one inode).
pub type GroupKey = (Arc<str>, u64);

/// The table. Not thread-safe by itself: the file system wraps it in a mutex.
#[derive(Debug)]
pub struct InodeTable {
    map: HashMap<u64, Inode>,
    by_name: HashMap<(u64, Vec<u8>), u64>,
    by_group: HashMap<GroupKey, u64>,
    next: u64,
}

impl Default for InodeTable {
    fn default() -> Self {
        InodeTable::new()
    }
}

impl InodeTable {
    /// A table with the three fixed directories.
    pub fn new() -> InodeTable {
        let mut t = InodeTable {
            map: HashMap::new(),
            by_name: HashMap::new(),
            by_group: HashMap::new(),
            next: 16,
        };
        for (ino, parent, name) in [
            (ROOT, ROOT, &b""[..]),
            (SPACES, ROOT, b"spaces"),
            (SNAPSHOTS, ROOT, b"snapshots"),
        ] {
            t.map.insert(
                ino,
                Inode {
                    parent,
                    name: name.to_vec(),
                    kind: Kind::Fixed,
                    nlookup: 1,
                    linked: true,
                    aliases: Vec::new(),
                    group: None,
                },
            );
            if ino != ROOT {
                t.by_name.insert((parent, name.to_vec()), ino);
            }
        }
        t
    }

    /// The inode `ino`.
    pub fn get(&self, ino: u64) -> Option<&Inode> {
        self.map.get(&ino)
    }

    /// The inode at `(parent, name)`, if the kernel knows it.
    pub fn child(&self, parent: u64, name: &[u8]) -> Option<u64> {
        self.by_name.get(&(parent, name.to_vec())).copied()
    }

    /// Count a lookup of `(parent, name)`: the existing inode if its kind still matches
    /// (`same` says so), else a new one (the old one is unlinked). Returns the number.
    pub fn lookup(
        &mut self,
        parent: u64,
        name: &[u8],
        kind: Kind,
        same: impl Fn(&Kind) -> bool,
    ) -> u64 {
        let key = (parent, name.to_vec());
        if let Some(&ino) = self.by_name.get(&key)
            && let Some(i) = self.map.get_mut(&ino)
        {
            if same(&i.kind) {
                i.nlookup += 1;
                i.kind = kind;
                return ino;
            }
            i.linked = false;
        }
        let ino = self.next;
        self.next += 1;
        self.map.insert(
            ino,
            Inode {
                parent,
                name: name.to_vec(),
                kind,
                nlookup: 1,
                linked: true,
                aliases: Vec::new(),
                group: None,
            },
        );
        self.by_name.insert(key, ino);
        ino
    }

    /// [`InodeTable::lookup`] of a name of hard-link group `group`: every name of a group is
    /// one inode (the first looked up; the others are its aliases).
    pub fn lookup_linked(
        &mut self,
        parent: u64,
        name: &[u8],
        kind: Kind,
        group: GroupKey,
        same: impl Fn(&Kind) -> bool,
    ) -> u64 {
        let key = (parent, name.to_vec());
        let known = self
            .by_group
            .get(&group)
            .copied()
            .filter(|ino| self.map.get(ino).is_some_and(|i| i.linked && same(&i.kind)));
        match (self.by_name.get(&key).copied(), known) {
            (Some(a), Some(b)) if a == b => {
                if let Some(i) = self.map.get_mut(&a) {
                    i.nlookup += 1;
                }
                a
            }
            (_, Some(ino)) => {
                // A name seen before as a file of its own is now a name of the group's inode.
                self.unlink(parent, name);
                self.add_alias(ino, parent, name);
                ino
            }
            (_, None) => {
                let ino = self.lookup(parent, name, kind, &same);
                if let Some(i) = self.map.get_mut(&ino) {
                    i.group = Some(group.clone());
                }
                self.by_group.insert(group, ino);
                ino
            }
        }
    }

    /// `link(2)`: `(parent, name)` is a new name of `ino`, in hard-link group `group`; counts
    /// the kernel's lookup of it.
    pub fn link(&mut self, ino: u64, parent: u64, name: &[u8], group: GroupKey) {
        self.unlink(parent, name);
        self.add_alias(ino, parent, name);
        if let Some(i) = self.map.get_mut(&ino) {
            i.group = Some(group.clone());
        }
        self.by_group.insert(group, ino);
    }

    fn add_alias(&mut self, ino: u64, parent: u64, name: &[u8]) {
        if let Some(i) = self.map.get_mut(&ino) {
            i.nlookup += 1;
            i.aliases.push((parent, name.to_vec()));
            self.by_name.insert((parent, name.to_vec()), ino);
        }
    }

    /// The kernel dropped `n` references.
    pub fn forget(&mut self, ino: u64, n: u64) {
        if ino < 16 {
            return;
        }
        let gone = match self.map.get_mut(&ino) {
            Some(i) => {
                i.nlookup = i.nlookup.saturating_sub(n);
                i.nlookup == 0
            }
            None => false,
        };
        if gone && let Some(i) = self.map.remove(&ino) {
            for key in std::iter::once((i.parent, i.name)).chain(i.aliases) {
                if self.by_name.get(&key) == Some(&ino) {
                    self.by_name.remove(&key);
                }
            }
            if let Some(g) = i.group
                && self.by_group.get(&g) == Some(&ino)
            {
                self.by_group.remove(&g);
            }
        }
    }

    /// `(parent, name)` no longer exists. An inode with other names keeps one of them.
    pub fn unlink(&mut self, parent: u64, name: &[u8]) {
        let key = (parent, name.to_vec());
        let Some(ino) = self.by_name.remove(&key) else {
            return;
        };
        let Some(i) = self.map.get_mut(&ino) else {
            return;
        };
        if let Some(at) = i.aliases.iter().position(|a| *a == key) {
            i.aliases.swap_remove(at);
        } else if let Some((p, n)) = i.aliases.pop() {
            (i.parent, i.name) = (p, n);
        } else {
            i.linked = false;
            if let Some(g) = &i.group
                && self.by_group.get(g) == Some(&ino)
            {
                self.by_group.remove(g);
            }
        }
    }

    /// Move `(parent, name)` to `(new_parent, new_name)`, unlinking what was there.
    pub fn rename(&mut self, parent: u64, name: &[u8], new_parent: u64, new_name: &[u8]) {
        if self.child(parent, name).is_some()
            && self.child(parent, name) == self.child(new_parent, new_name)
        {
            // Two names of one file: rename(2) does nothing.
            return;
        }
        self.unlink(new_parent, new_name);
        let key = (parent, name.to_vec());
        if let Some(ino) = self.by_name.remove(&key) {
            if let Some(i) = self.map.get_mut(&ino) {
                let to = (new_parent, new_name.to_vec());
                match i.aliases.iter_mut().find(|a| **a == key) {
                    Some(a) => *a = to,
                    None => (i.parent, i.name) = to,
                }
            }
            self.by_name.insert((new_parent, new_name.to_vec()), ino);
        }
    }

    /// The path of a space inode below its space root: the space and the `/`-joined names.
    /// `None` if the inode is unknown, unlinked, or not in a space.
    pub fn space_path(&self, ino: u64) -> Option<(Arc<str>, Vec<u8>)> {
        let mut names: Vec<&[u8]> = Vec::new();
        let mut cur = ino;
        loop {
            let i = self.map.get(&cur)?;
            if !i.linked {
                return None;
            }
            match &i.kind {
                Kind::SpaceRoot(s) => {
                    names.reverse();
                    return Some((s.clone(), names.join(&b'/')));
                }
                Kind::SpaceNode(..) => {
                    names.push(&i.name);
                    cur = i.parent;
                }
                _ => return None,
            }
        }
    }

    /// The snapshot holding inode `ino` (an entry under `snapshots/SPACE/<snapshot>/`): its
    /// id and root tree.
    pub fn snapshot_of(&self, ino: u64) -> Option<(SnapshotId, ObjectId)> {
        let mut cur = ino;
        for _ in 0..=puce_core::format::tree::MAX_TREE_DEPTH + 1 {
            let i = self.map.get(&cur)?;
            match &i.kind {
                Kind::SnapRoot { id, root, .. } => return Some((*id, *root)),
                Kind::SnapNode { .. } => cur = i.parent,
                _ => return None,
            }
        }
        None
    }

    /// Every name of every linked inode of `space` (its root excluded), as
    /// `(ino, parent, name)`.
    pub fn space_inodes(&self, space: &str) -> Vec<(u64, u64, Vec<u8>)> {
        self.map
            .iter()
            .filter(|(_, i)| i.linked && matches!(&i.kind, Kind::SpaceNode(s, _) if &**s == space))
            .flat_map(|(&ino, i)| {
                std::iter::once((i.parent, i.name.clone()))
                    .chain(i.aliases.iter().cloned())
                    .map(move |(p, n)| (ino, p, n))
            })
            .collect()
    }

    /// The inode at `path` below the root inode of `space`, following known inodes only.
    pub fn find_path(&self, space_root: u64, path: &[u8]) -> Option<u64> {
        let mut cur = space_root;
        for c in path.split(|b| *b == b'/').filter(|c| !c.is_empty()) {
            cur = self.child(cur, c)?;
        }
        Some(cur)
    }

    /// Number of inodes held (for tests and statistics).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether only the fixed inodes are left.
    pub fn is_empty(&self) -> bool {
        self.map.len() <= 3
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(s: &str) -> Kind {
        Kind::SpaceNode(Arc::from(s), NodeKind::File)
    }

    #[test]
    fn lookup_forget_rename() {
        let mut t = InodeTable::new();
        let sp = t.lookup(SPACES, b"docs", Kind::SpaceRoot(Arc::from("docs")), |_| {
            true
        });
        let a = t.lookup(sp, b"a", node("docs"), |_| true);
        let f = t.lookup(a, b"f", node("docs"), |_| true);
        assert_eq!(t.lookup(a, b"f", node("docs"), |_| true), f);
        assert_eq!(t.space_path(f).unwrap().1, b"a/f");
        // Renaming the directory moves its children.
        t.rename(sp, b"a", sp, b"b");
        assert_eq!(t.space_path(f).unwrap().1, b"b/f");
        // Renaming over an existing name unlinks the old inode.
        let g = t.lookup(sp, b"g", node("docs"), |_| true);
        t.rename(a, b"f", sp, b"g");
        assert!(t.space_path(g).is_none());
        assert_eq!(t.space_path(f).unwrap().1, b"g");
        // Forget releases memory once the count reaches zero.
        let before = t.len();
        t.forget(g, 1);
        assert_eq!(t.len(), before - 1);
        t.forget(f, 1);
        assert_eq!(t.len(), before - 1);
        t.forget(f, 1);
        assert_eq!(t.len(), before - 2);
        // A kind change gives a new inode.
        let x = t.lookup(sp, b"x", node("docs"), |_| true);
        let y = t.lookup(sp, b"x", node("docs"), |_| false);
        assert_ne!(x, y);
        assert!(t.space_path(x).is_none());
    }

    #[test]
    fn names_of_one_hard_link_group_are_one_inode() {
        let mut t = InodeTable::new();
        let sp = t.lookup(SPACES, b"docs", Kind::SpaceRoot(Arc::from("docs")), |_| {
            true
        });
        let d = t.lookup(sp, b"d", node("docs"), |_| true);
        let g = (Arc::from("docs"), 7);
        let a = t.lookup_linked(sp, b"a", node("docs"), g.clone(), |_| true);
        let b = t.lookup_linked(d, b"b", node("docs"), g.clone(), |_| true);
        assert_eq!(a, b);
        assert_eq!(t.child(d, b"b"), Some(a));
        // A name seen before as a file of its own joins the group's inode.
        let c = t.lookup(sp, b"c", node("docs"), |_| true);
        assert_eq!(
            t.lookup_linked(sp, b"c", node("docs"), g.clone(), |_| true),
            a
        );
        assert!(t.space_path(c).is_none());
        // link(2) adds a name; removing the first name keeps the inode at another one.
        t.link(a, sp, b"e", g.clone());
        assert_eq!(t.child(sp, b"e"), Some(a));
        t.unlink(sp, b"a");
        assert!(t.space_path(a).is_some());
        // Renaming an alias moves it; renaming onto another name of the inode does nothing.
        t.rename(sp, b"e", d, b"f");
        assert_eq!((t.child(sp, b"e"), t.child(d, b"f")), (None, Some(a)));
        t.rename(d, b"f", d, b"b");
        assert_eq!((t.child(d, b"f"), t.child(d, b"b")), (Some(a), Some(a)));
        // The last name gone, the inode is unlinked; forgotten, every name is dropped.
        for (p, n) in [(d, &b"b"[..]), (sp, b"c"), (d, b"f")] {
            t.unlink(p, n);
        }
        assert!(t.space_path(a).is_none());
        t.forget(a, 100);
        assert!(t.get(a).is_none());
        let again = t.lookup_linked(sp, b"x", node("docs"), g, |_| true);
        assert_ne!(again, a);
    }
}
