//! The read side of the tree: `lookup`, `getattr`, `readlink` and directory listings, over the
//! fixed directories, the snapshots (read-only, straight from their stored trees) and the
//! spaces (their edit trees).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use puce_core::ObjectId;
use puce_core::SnapshotEntry;
use puce_core::format::tree::Node;
use puce_core::snapshot::edit::{EditTree, NodeKind};

use super::attr::kind_of;
use super::stored::FsTrees;
use super::{Attr, PuceFs, lock};
use crate::error::{FsError, FsResult};
use crate::inode::{self, Kind, ROOT, SNAPSHOTS, SPACES};
use puce_core::paths::join;

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

/// Snapshots by space, with their directory names.
#[derive(Default)]
pub(super) struct SnapList {
    pub(super) by_space: BTreeMap<String, Vec<(String, SnapshotEntry)>>,
    pub(super) count: usize,
    pub(super) newest: Option<puce_core::SnapshotId>,
}

/// The name of a snapshot's directory: UTC time and the first 12 hex digits of the id.
pub fn snapshot_dir_name(e: &SnapshotEntry) -> String {
    let t = jiff::Timestamp::from_nanosecond(i128::from(e.snapshot.time_ns))
        .map(|t| t.strftime("%Y-%m-%dT%H-%M-%SZ").to_string())
        .unwrap_or_else(|_| "0000-00-00T00-00-00Z".into());
    format!("{t}_{}", e.id.short(12))
}

impl SnapList {
    pub(super) fn build(all: Vec<SnapshotEntry>) -> SnapList {
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

impl PuceFs {
    pub(super) fn inode(&self, ino: u64) -> FsResult<inode::Inode> {
        lock(&self.inodes)?.get(ino).cloned().ok_or(FsError::STALE)
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

    /// Look `name` up in directory `parent`, counting a kernel reference on the result.
    pub fn lookup(&self, parent: u64, name: &[u8]) -> FsResult<Attr> {
        if name.len() > puce_core::paths::MAX_NAME_LEN {
            // As a local file system answers: no such name can exist.
            return Err(FsError::NAMETOOLONG);
        }
        let p = self.inode(parent)?;
        match (&p.kind, parent) {
            (Kind::Fixed, ROOT) => match name {
                b"spaces" | b"snapshots" => {
                    self.getattr(if name == b"spaces" { SPACES } else { SNAPSHOTS })
                }
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
                let n = snaps.by_space.get(s).map_or(0, Vec::len);
                Ok(self.fixed_dir_attr(ino, 0o555, self.started_ns, n))
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
                self.snap_root_attr(ino, &e.snapshot.root, e.snapshot.time_ns)
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
                let same = |k: &Kind| matches!(k, Kind::SnapNode { .. });
                let mut t = lock(&self.inodes)?;
                // Only a linked entry needs its snapshot (its group is scoped to it): the walk
                // up the inodes is not paid by every lookup.
                let snap = e.link.and_then(|_| t.snapshot_of(parent));
                let ino = match (e.link, snap) {
                    (Some(g), Some((id, _))) => {
                        let scope: Arc<str> = Arc::from(format!("@{id}"));
                        t.lookup_linked(parent, name, kind, (scope, g), same)
                    }
                    _ => t.lookup(parent, name, kind, same),
                };
                drop(t);
                self.snap_entry_attr(ino, e, snap.map(|(_, root)| root))
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
                let kind = Kind::SpaceNode(s.clone(), nk);
                let same = |k: &Kind| matches!(k, Kind::SpaceNode(_, k2) if *k2 == nk);
                let mut t = lock(&self.inodes)?;
                let ino = match info.link {
                    Some(g) => t.lookup_linked(parent, name, kind, (s.clone(), g), same),
                    None => t.lookup(parent, name, kind, same),
                };
                drop(t);
                self.space_info_attr(ino, &info, &st, &child)
            }
            _ => Err(FsError::NOTDIR),
        }
    }

    /// [`PuceFs::entry_attr`] of an entry of the snapshot whose root tree is `root`: a file of
    /// a hard-link group counts the group's names in the snapshot.
    fn snap_entry_attr(
        &self,
        ino: u64,
        e: &puce_core::format::tree::Entry,
        root: Option<ObjectId>,
    ) -> FsResult<Attr> {
        let mut a = self.entry_attr(ino, e)?;
        if let (Some(g), Some(root)) = (e.link, root) {
            let tree = {
                let mut m = lock(&self.snap_links)?;
                if m.len() >= 8 && !m.contains_key(&root) {
                    m.clear();
                }
                m.entry(root)
                    .or_insert_with(|| Arc::new(EditTree::new(Some(root))))
                    .clone()
            };
            a.nlink = tree.names(&FsTrees(self), g)?;
        }
        Ok(a)
    }

    fn snap_root_attr(&self, ino: u64, root: &ObjectId, time_ns: i64) -> FsResult<Attr> {
        let subdirs = self
            .tree(root)?
            .entries
            .iter()
            .filter(|e| e.is_dir())
            .count();
        Ok(self.fixed_dir_attr(ino, 0o555, time_ns, subdirs))
    }

    pub(super) fn space_path(&self, ino: u64) -> FsResult<Vec<u8>> {
        lock(&self.inodes)?
            .space_path(ino)
            .map(|(_, p)| p)
            .ok_or(FsError::NOENT)
    }

    pub(super) fn snap_list(&self) -> FsResult<Arc<SnapList>> {
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
            Kind::Fixed => {
                let subdirs = match ino {
                    ROOT => 2,
                    SPACES => {
                        let spaces = self.spaces.read().map_err(|_| FsError::IO)?;
                        spaces.keys().filter(|s| self.visible(s)).count()
                    }
                    _ => {
                        let snaps = self.snap_list()?;
                        snaps.by_space.keys().filter(|s| self.visible(s)).count()
                    }
                };
                let perm = if ino == SNAPSHOTS { 0o555 } else { 0o755 };
                Ok(self.fixed_dir_attr(ino, perm, self.started_ns, subdirs))
            }
            Kind::SpaceRoot(s) => {
                let space = self.space(s).ok_or(FsError::STALE)?;
                self.space_root_attr(ino, &space)
            }
            Kind::SnapSpace(s) => {
                let n = self.snap_list()?.by_space.get(&**s).map_or(0, Vec::len);
                Ok(self.fixed_dir_attr(ino, 0o555, self.started_ns, n))
            }
            Kind::SnapRoot { root, time_ns, .. } => self.snap_root_attr(ino, root, *time_ns),
            Kind::SnapNode { entry, .. } => {
                let root = match entry.link {
                    Some(_) => lock(&self.inodes)?.snapshot_of(ino).map(|(_, r)| r),
                    None => None,
                };
                self.snap_entry_attr(ino, entry, root)
            }
            Kind::SpaceNode(s, _) => {
                let space = self.space(s).ok_or(FsError::STALE)?;
                let st = space.lock()?;
                match lock(&self.inodes)?.space_path(ino) {
                    Some((_, path)) => {
                        let info = st
                            .tree
                            .lookup(&FsTrees(self), &path)?
                            .ok_or(FsError::NOENT)?;
                        self.space_info_attr(ino, &info, &st, &path)
                    }
                    None => {
                        drop(st);
                        self.orphan_attr(ino)
                    }
                }
            }
        }
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
}
