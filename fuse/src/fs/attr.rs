//! Attributes: what `getattr`, `lookup` and `readdirplus` answer for each kind of inode (the
//! fixed directories, snapshot entries, space entries, open files no longer linked).

use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use puce_core::format::tree::{Entry, Node};
use puce_core::snapshot::edit::NodeKind;

use super::file::FileState;
use super::stored::FsTrees;
use super::{PuceFs, lock};
use crate::error::{FsError, FsResult};
use crate::space::{Space, SpaceState};

/// Attributes of an inode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    /// Inode number.
    pub ino: u64,
    /// File, directory or symlink.
    pub kind: NodeKind,
    /// Size in bytes.
    pub size: u64,
    /// Permission bits.
    pub perm: u32,
    /// Link count.
    pub nlink: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time, ns since the epoch.
    pub mtime_ns: i64,
    /// Change time (`ctime`), ns since the epoch: never before `mtime_ns`
    /// (docs/fuse-semantics.md, "Times").
    pub ctime_ns: i64,
    /// Device number of a device node (Linux `dev_t`), else 0.
    pub rdev: u64,
    /// Whether the kernel may cache it for long (immutable snapshot content).
    pub immutable: bool,
}

pub(super) fn kind_of(n: &Node) -> NodeKind {
    NodeKind::of(n)
}

/// The link count of a directory holding `subdirs` directories: its name, its `.`, and the
/// `..` of each subdirectory (as on ext4).
pub(super) fn dir_nlink(subdirs: usize) -> u32 {
    u32::try_from(subdirs).unwrap_or(u32::MAX).saturating_add(2)
}

pub(super) fn mtime_of(md: &std::fs::Metadata) -> i64 {
    md.mtime().saturating_mul(1_000_000_000) + md.mtime_nsec()
}

pub(super) fn system_time(ns: i64) -> std::time::SystemTime {
    if ns >= 0 {
        std::time::UNIX_EPOCH + Duration::from_nanos(ns as u64)
    } else {
        std::time::UNIX_EPOCH - Duration::from_nanos(ns.unsigned_abs())
    }
}

impl PuceFs {
    pub(super) fn fixed_attr(&self, ino: u64, perm: u32, mtime_ns: i64) -> Attr {
        Attr {
            ino,
            kind: NodeKind::Dir,
            size: 0,
            perm,
            nlink: 2,
            uid: self.owner.0,
            gid: self.owner.1,
            mtime_ns,
            ctime_ns: mtime_ns,
            rdev: 0,
            immutable: false,
        }
    }

    /// [`PuceFs::fixed_attr`] of a directory holding `subdirs` directories.
    pub(super) fn fixed_dir_attr(
        &self,
        ino: u64,
        perm: u32,
        mtime_ns: i64,
        subdirs: usize,
    ) -> Attr {
        Attr {
            nlink: dir_nlink(subdirs),
            ..self.fixed_attr(ino, perm, mtime_ns)
        }
    }

    /// Attributes of a snapshot entry. A snapshot keeps no change time: its entries' `ctime`
    /// is their `mtime`. A directory's link count reads its tree (through the tree cache; the
    /// listing that usually follows needs it anyway).
    pub(super) fn entry_attr(&self, ino: u64, e: &Entry) -> FsResult<Attr> {
        let nlink = match &e.node {
            Node::Dir { tree } => dir_nlink(
                self.tree(tree)?
                    .entries
                    .iter()
                    .filter(|e| e.is_dir())
                    .count(),
            ),
            _ => 1,
        };
        Ok(Attr {
            ino,
            kind: kind_of(&e.node),
            size: e.size(),
            perm: e.mode & 0o7777,
            nlink,
            uid: e.uid,
            gid: e.gid,
            mtime_ns: e.mtime_ns,
            ctime_ns: e.mtime_ns,
            rdev: match e.node {
                Node::CharDevice { rdev } | Node::BlockDevice { rdev } => rdev,
                _ => 0,
            },
            immutable: true,
        })
    }

    /// Attributes of the entry at `path` of a space, `info` being what its edit tree says:
    /// see [`PuceFs::space_attr`].
    pub(super) fn space_info_attr(
        &self,
        ino: u64,
        info: &puce_core::snapshot::edit::Info,
        st: &SpaceState,
        path: &[u8],
    ) -> FsResult<Attr> {
        let a = self.info_attr(ino, info)?;
        self.space_attr(a, st, path, info.link)
    }

    /// Complete the attributes `a` of the entry at `path` of a space: its `ctime` is at least
    /// the space's floor (what is not changed since the space's snapshot was loaded changed at
    /// the latest when that snapshot was taken), a directory counts its subdirectories, and a
    /// file of hard-link group `link` its names.
    pub(super) fn space_attr(
        &self,
        mut a: Attr,
        st: &SpaceState,
        path: &[u8],
        link: Option<u64>,
    ) -> FsResult<Attr> {
        a.ctime_ns = a.ctime_ns.max(st.ctime_floor);
        if a.kind == NodeKind::Dir {
            a.nlink = dir_nlink(st.tree.subdirs(&FsTrees(self), path)? as usize);
        } else if let Some(g) = link {
            a.nlink = st.tree.names(&FsTrees(self), g)?;
        }
        Ok(a)
    }

    fn local_attr(&self, id: u64) -> FsResult<(u64, i64)> {
        let md = std::fs::metadata(self.wb()?.data_path(id))?;
        Ok((md.len(), mtime_of(&md)))
    }

    pub(super) fn info_attr(
        &self,
        ino: u64,
        info: &puce_core::snapshot::edit::Info,
    ) -> FsResult<Attr> {
        let (size, mtime_ns) = match info.local {
            Some(id) => self.local_attr(id)?,
            None => (info.size, info.meta.mtime_ns),
        };
        Ok(Self::info_attr_of(ino, info, (size, mtime_ns)))
    }

    /// [`PuceFs::info_attr`] with the size and time of the content given.
    pub(super) fn info_attr_of(
        ino: u64,
        info: &puce_core::snapshot::edit::Info,
        (size, mtime_ns): (u64, i64),
    ) -> Attr {
        Attr {
            ino,
            kind: info.kind,
            size,
            perm: info.meta.mode & 0o7777,
            nlink: if info.kind == NodeKind::Dir { 2 } else { 1 },
            uid: info.meta.uid,
            gid: info.meta.gid,
            mtime_ns,
            ctime_ns: mtime_ns.max(info.ctime_ns),
            rdev: info.rdev,
            immutable: false,
        }
    }

    pub(super) fn space_root_attr(&self, ino: u64, space: &Space) -> FsResult<Attr> {
        let st = space.lock()?;
        let t = st
            .base
            .as_ref()
            .map(|b| b.snapshot.time_ns)
            .unwrap_or(self.started_ns);
        let subdirs = st.tree.subdirs(&FsTrees(self), b"")?;
        let a = self.fixed_dir_attr(ino, 0o755, t, subdirs as usize);
        Ok(Attr {
            ctime_ns: a.ctime_ns.max(st.ctime_floor),
            ..a
        })
    }

    /// Attributes of an unlinked inode that is still open.
    pub(super) fn orphan_attr(&self, ino: u64) -> FsResult<Attr> {
        let of = lock(&self.open_files)?
            .get(&ino)
            .map(|(f, _)| f.clone())
            .ok_or(FsError::STALE)?;
        let st = of.state.read().map_err(|_| FsError::IO)?;
        let (size, mtime_ns) = match &*st {
            FileState::Stored(sf) => (sf.size(), self.started_ns),
            FileState::Staged { file, .. } => {
                let md = file.metadata()?;
                (md.len(), mtime_of(&md))
            }
        };
        Ok(Attr {
            ino,
            kind: NodeKind::File,
            size,
            perm: 0o644,
            nlink: 0,
            uid: self.owner.0,
            gid: self.owner.1,
            mtime_ns,
            ctime_ns: mtime_ns,
            rdev: 0,
            immutable: false,
        })
    }
}
