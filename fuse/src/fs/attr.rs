//! Attributes: what `getattr`, `lookup` and `readdirplus` answer for each kind of inode (the
//! fixed directories, snapshot entries, space entries, open files no longer linked).

use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use puce_core::format::tree::{Entry, Node};
use puce_core::snapshot::edit::NodeKind;

use super::file::FileState;
use super::{PuceFs, lock};
use crate::error::{FsError, FsResult};
use crate::space::Space;

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
    /// Whether the kernel may cache it for long (immutable snapshot content).
    pub immutable: bool,
}

pub(super) fn kind_of(n: &Node) -> NodeKind {
    match n {
        Node::File { .. } => NodeKind::File,
        Node::Dir { .. } => NodeKind::Dir,
        Node::Symlink { .. } => NodeKind::Symlink,
    }
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
            immutable: false,
        }
    }

    pub(super) fn entry_attr(ino: u64, e: &Entry) -> Attr {
        Attr {
            ino,
            kind: kind_of(&e.node),
            size: e.size(),
            perm: e.mode & 0o7777,
            nlink: if e.is_dir() { 2 } else { 1 },
            uid: e.uid,
            gid: e.gid,
            mtime_ns: e.mtime_ns,
            immutable: true,
        }
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
        Ok(self.fixed_attr(ino, 0o755, t))
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
            immutable: false,
        })
    }
}
