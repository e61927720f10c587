//! Changes to a space: `mkdir` (in `spaces/`, a new space), `create`, `mknod`, `symlink`,
//! `unlink`, `rmdir`, `rename` and `setattr` (truncation included). Each is applied to the
//! space's edit tree and journaled in the write-back area; snapshots refuse them.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, RwLock};

use puce_core::ObjectId;
use puce_core::format::tree::Node;
use puce_core::index::now_ns;
use puce_core::snapshot::edit::{Content, Edit, Meta, NodeKind};

use super::attr::{mtime_of, system_time};
use super::file::{FileState, OpenFile};
use super::stored::FsTrees;
use super::{Attr, PuceFs, check_name, lock};
use crate::error::{FsError, FsResult};
use crate::inode::{Kind, SNAPSHOTS, SPACES};
use crate::space::{Space, SpaceState, Staged};
use puce_core::paths::join;

/// Who asks.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

/// Changes asked by `setattr`.
#[derive(Debug, Clone, Default)]
pub struct SetAttr {
    /// New permission bits.
    pub mode: Option<u32>,
    /// New owner.
    pub uid: Option<u32>,
    /// New group.
    pub gid: Option<u32>,
    /// New size.
    pub size: Option<u64>,
    /// New modification time (`Some(None)`: now).
    pub mtime: Option<Option<i64>>,
    /// Clear set-user-ID, and set-group-ID if group-executable, of a regular file unless
    /// `mode` is given (chown, truncate or write by an unprivileged caller). The kernel leaves
    /// this to the file system (`FUSE_HANDLE_KILLPRIV_V2`), which spares it a GETATTR per chown.
    pub kill_suidgid: bool,
}

/// `mode` without the bits that a chown, truncate or write removes.
pub fn killed_suidgid(mode: u32) -> u32 {
    let mut m = mode & !libc::S_ISUID;
    if m & libc::S_IXGRP != 0 {
        m &= !libc::S_ISGID;
    }
    m
}

impl PuceFs {
    /// Count the kernel's lookup of `(parent, name)`, an entry of `space` just made with
    /// `meta` (empty if a file): its attributes without looking it up again.
    fn made(
        &self,
        space: &Arc<str>,
        parent: u64,
        name: &[u8],
        kind: NodeKind,
        meta: &Meta,
    ) -> FsResult<Attr> {
        let ino = lock(&self.inodes)?.lookup(
            parent,
            name,
            Kind::SpaceNode(space.clone(), kind),
            |k| matches!(k, Kind::SpaceNode(_, k2) if *k2 == kind),
        );
        // Its change time is its making, as the edit tree says (`Edit` time = `meta`'s).
        let info = puce_core::snapshot::edit::Info {
            ctime_ns: meta.mtime_ns,
            ..puce_core::snapshot::edit::Info::new(kind, *meta)
        };
        Ok(Self::info_attr_of(ino, &info, (0, meta.mtime_ns)))
    }

    /// Run `f` on the space state of directory `parent`, with the parent's path.
    fn in_space<T>(
        &self,
        parent: u64,
        f: impl FnOnce(&Arc<Space>, &mut SpaceState, Vec<u8>) -> FsResult<T>,
    ) -> FsResult<T> {
        let p = self.inode(parent)?;
        let s = match &p.kind {
            Kind::SpaceRoot(s) | Kind::SpaceNode(s, _) => s.clone(),
            Kind::SnapSpace(_) | Kind::SnapRoot { .. } | Kind::SnapNode { .. } => {
                return Err(FsError::ROFS);
            }
            Kind::Fixed if parent == SNAPSHOTS => return Err(FsError::ROFS),
            Kind::Fixed => return Err(FsError::PERM),
        };
        if self.cfg.read_only {
            return Err(FsError::ROFS);
        }
        let space = self.space(&s).ok_or(FsError::STALE)?;
        let mut st = space.lock()?;
        let path = self.space_path(parent)?;
        f(&space, &mut st, path)
    }

    pub(super) fn record(&self, space: &Space, st: &mut SpaceState, edit: Edit) -> FsResult<()> {
        st.tree.apply(&FsTrees(self), &edit)?;
        self.journal(space, st, edit)
    }

    /// Journal an edit already applied to the tree.
    pub(super) fn journal(&self, space: &Space, st: &mut SpaceState, edit: Edit) -> FsResult<()> {
        let wb = self.wb()?;
        let r = match st.journal.as_mut() {
            Some(j) => j.append(&edit),
            None => crate::writeback::Journal::create(
                &wb.journal_path(&space.name),
                &space.name,
                st.base.as_ref().map(|b| &b.id),
                std::slice::from_ref(&edit),
            )
            .map(|j| {
                st.journal = Some(j);
            }),
        };
        st.edits.push(edit);
        self.changed(space, st);
        r.map_err(FsError::from)
    }

    /// Note a change of `space`: a commit is due after the quiet period.
    fn changed(&self, space: &Space, st: &mut SpaceState) {
        let pending = st.dirty && st.want_commit;
        st.dirty = true;
        st.want_commit = true;
        space.touch();
        if !pending {
            // The commit thread sleeps until the quiet period of a pending commit is over:
            // wake it only when a commit becomes pending (not on every edit).
            self.wake();
        }
    }

    fn new_meta(&self, caller: Caller, mode: u32, umask: u32) -> Meta {
        Meta {
            mode: mode & !umask & 0o7777,
            mtime_ns: now_ns(),
            uid: caller.uid,
            gid: caller.gid,
        }
    }

    /// `mkdir`. In `spaces/`, creates a new space.
    pub fn mkdir(
        &self,
        caller: Caller,
        parent: u64,
        name: &[u8],
        mode: u32,
        umask: u32,
    ) -> FsResult<Attr> {
        check_name(name)?;
        if parent == SPACES {
            return self.create_space(name);
        }
        let meta = self.new_meta(caller, mode, umask);
        let space = self.in_space(parent, |space, st, path| {
            let edit = Edit::Mkdir {
                path: join(&path, name),
                meta,
                time_ns: meta.mtime_ns,
            };
            self.record(space, st, edit)?;
            Ok(space.name.clone())
        })?;
        self.made(&space, parent, name, NodeKind::Dir, &meta)
    }

    fn create_space(&self, name: &[u8]) -> FsResult<Attr> {
        if self.cfg.read_only {
            return Err(FsError::ROFS);
        }
        let s = std::str::from_utf8(name).map_err(|_| FsError::INVAL)?;
        if puce_core::format::snapshot::check_space_name(s).is_err() {
            tracing::warn!("mkdir spaces/{s}: not a valid space name");
            return Err(FsError::INVAL);
        }
        if !self.visible(s) {
            return Err(FsError::PERM);
        }
        {
            let mut spaces = self.spaces.write().map_err(|_| FsError::IO)?;
            if spaces.contains_key(s) {
                return Err(FsError::EXIST);
            }
            let space = Arc::new(Space::new(s, None));
            {
                let mut st = space.lock()?;
                let j =
                    crate::writeback::Journal::create(&self.wb()?.journal_path(s), s, None, &[])?;
                st.journal = Some(j);
                st.dirty = true;
                st.want_commit = true;
            }
            space.touch();
            spaces.insert(s.to_string(), space);
        }
        self.wake();
        self.lookup(SPACES, name)
    }

    /// `symlink`.
    pub fn symlink(
        &self,
        caller: Caller,
        parent: u64,
        name: &[u8],
        target: &[u8],
    ) -> FsResult<Attr> {
        let meta = self.new_meta(caller, 0o777, 0);
        self.add(parent, name, |path| Edit::Symlink {
            path,
            target: target.to_vec(),
            meta,
            time_ns: meta.mtime_ns,
        })
    }

    /// Record the edit `make` builds from the path of `name` in directory `parent` (a name
    /// checked first), then look the new entry up.
    fn add(&self, parent: u64, name: &[u8], make: impl FnOnce(Vec<u8>) -> Edit) -> FsResult<Attr> {
        check_name(name)?;
        self.in_space(parent, |space, st, path| {
            self.record(space, st, make(join(&path, name)))
        })?;
        self.lookup(parent, name)
    }

    /// `mknod`: regular files, fifos and sockets. Device nodes are refused (`EPERM`): the
    /// mount is `nodev`, so one made here could never be used through it.
    pub fn mknod(
        &self,
        caller: Caller,
        parent: u64,
        name: &[u8],
        mode: u32,
        umask: u32,
    ) -> FsResult<Attr> {
        let node = match mode & libc::S_IFMT {
            0 | libc::S_IFREG => {
                let (attr, fh) = self.create(caller, parent, name, mode, umask, libc::O_WRONLY)?;
                self.release(fh);
                return Ok(attr);
            }
            libc::S_IFIFO => Node::Fifo,
            libc::S_IFSOCK => Node::Socket,
            _ => return Err(FsError::PERM),
        };
        let meta = self.new_meta(caller, mode, umask);
        self.add(parent, name, |path| Edit::Mknod {
            path,
            meta,
            node,
            time_ns: meta.mtime_ns,
        })
    }

    /// `create`: a new regular file, opened. Returns its attributes and a handle.
    pub fn create(
        &self,
        caller: Caller,
        parent: u64,
        name: &[u8],
        mode: u32,
        umask: u32,
        _flags: i32,
    ) -> FsResult<(Attr, u64)> {
        check_name(name)?;
        let meta = self.new_meta(caller, mode, umask);
        let (space, staged, file) = self.in_space(parent, |space, st, path| {
            self.check_quota(&space.name)?;
            let (id, file) = self.wb()?.new_local()?;
            // A spare file was made earlier: its time is the creation's (as in the tree).
            if let Err(e) = file.set_modified(system_time(meta.mtime_ns)) {
                let _ = std::fs::remove_file(self.wb()?.data_path(id));
                return Err(e.into());
            }
            let edit = Edit::Create {
                path: join(&path, name),
                meta,
                content: Content::Local(id),
                time_ns: meta.mtime_ns,
            };
            if let Err(e) = st.tree.apply(&FsTrees(self), &edit) {
                let _ = std::fs::remove_file(self.wb()?.data_path(id));
                return Err(e.into());
            }
            let staged = Arc::new(Staged::new(id));
            st.staged.insert(id, staged.clone());
            self.journal(space, st, edit)?;
            Ok((space.clone(), staged, Arc::new(file)))
        })?;
        // The new file is empty, and its time is `meta`'s (set on the local file above).
        let attr = self.made(&space.name, parent, name, NodeKind::File, &meta)?;
        let of = Arc::new(OpenFile {
            space: Some(space),
            state: RwLock::new(FileState::Staged { staged, file }),
        });
        let fh = self.add_handle(attr.ino, of)?;
        Ok((attr, fh))
    }

    /// `unlink`.
    pub fn unlink(&self, parent: u64, name: &[u8]) -> FsResult<()> {
        self.remove(parent, name, false)
    }

    /// `rmdir`.
    pub fn rmdir(&self, parent: u64, name: &[u8]) -> FsResult<()> {
        if parent == SPACES {
            // Removing a space (and its history) is not something a folder operation does.
            return Err(if self.cfg.read_only {
                FsError::ROFS
            } else {
                FsError::PERM
            });
        }
        self.remove(parent, name, true)
    }

    fn remove(&self, parent: u64, name: &[u8], dir: bool) -> FsResult<()> {
        self.in_space(parent, |space, st, path| {
            let edit = Edit::Remove {
                path: join(&path, name),
                dir,
                time_ns: now_ns(),
            };
            self.record(space, st, edit)?;
            lock(&self.inodes)?.unlink(parent, name);
            Ok(())
        })
    }

    /// `rename` (`noreplace`: `RENAME_NOREPLACE`).
    pub fn rename(
        &self,
        parent: u64,
        name: &[u8],
        new_parent: u64,
        new_name: &[u8],
        noreplace: bool,
    ) -> FsResult<()> {
        check_name(new_name)?;
        let (a, b) = (self.inode(parent)?, self.inode(new_parent)?);
        let space_of = |k: &Kind| match k {
            Kind::SpaceRoot(s) | Kind::SpaceNode(s, _) => Some(s.clone()),
            _ => None,
        };
        match (space_of(&a.kind), space_of(&b.kind)) {
            (Some(x), Some(y)) if x != y => return Err(FsError::XDEV),
            (Some(_), Some(_)) => {}
            _ if parent == SPACES || new_parent == SPACES => return Err(FsError::PERM),
            _ => return Err(FsError::ROFS),
        }
        self.in_space(parent, |space, st, path| {
            let to_path = {
                let t = lock(&self.inodes)?;
                t.space_path(new_parent).ok_or(FsError::NOENT)?.1
            };
            let edit = Edit::Rename {
                from: join(&path, name),
                to: join(&to_path, new_name),
                noreplace,
                time_ns: now_ns(),
            };
            self.record(space, st, edit)?;
            lock(&self.inodes)?.rename(parent, name, new_parent, new_name);
            Ok(())
        })
    }

    /// `link`: `(new_parent, new_name)` becomes another name of `ino` (its hard-link group's,
    /// a new group if it has none). Directories: `EPERM`; between two spaces, or a space and
    /// a snapshot: `EXDEV`, as between two file systems.
    pub fn link(&self, ino: u64, new_parent: u64, new_name: &[u8]) -> FsResult<Attr> {
        check_name(new_name)?;
        let (i, p) = (self.inode(ino)?, self.inode(new_parent)?);
        let into = match &p.kind {
            Kind::SpaceRoot(s) | Kind::SpaceNode(s, _) => Some(s.clone()),
            _ => None,
        };
        let is_dir = match &i.kind {
            Kind::SpaceNode(_, k) => *k == NodeKind::Dir,
            Kind::SnapNode { entry, .. } => entry.is_dir(),
            _ => true,
        };
        let s = match (&i.kind, into) {
            _ if is_dir => return Err(FsError::PERM),
            (Kind::SpaceNode(s, _), Some(t)) if *s == t => t,
            (_, Some(_)) => return Err(FsError::XDEV),
            (_, None) if matches!(p.kind, Kind::Fixed) => return Err(FsError::PERM),
            (Kind::SpaceNode(..), None) => return Err(FsError::XDEV),
            (_, None) => return Err(FsError::ROFS),
        };
        self.in_space(new_parent, |space, st, path| {
            let from = self.space_path(ino)?;
            // A group number no other file of the space has (64 random-looking bits).
            let seed = [&now_ns().to_le_bytes()[..], &ino.to_le_bytes(), &from].concat();
            let fresh = ObjectId::of(&seed).0.0;
            let group = u64::from_le_bytes(fresh[..8].try_into().unwrap_or_default());
            let to = join(&path, new_name);
            let edit = Edit::Link {
                from,
                to: to.clone(),
                group,
                time_ns: now_ns(),
            };
            self.record(space, st, edit)?;
            let info = st.tree.lookup(&FsTrees(self), &to)?.ok_or(FsError::NOENT)?;
            let g = info.link.unwrap_or(group);
            lock(&self.inodes)?.link(ino, new_parent, new_name, (s.clone(), g));
            self.space_info_attr(ino, &info, st, &to)
        })
    }

    /// `setattr`: mode, owner, size, modification time (the access time is not kept).
    pub fn setattr(&self, ino: u64, fh: Option<u64>, a: &SetAttr) -> FsResult<Attr> {
        let i = self.inode(ino)?;
        let s = match &i.kind {
            Kind::SpaceNode(s, _) => s.clone(),
            Kind::SnapSpace(_) | Kind::SnapRoot { .. } | Kind::SnapNode { .. } => {
                return Err(FsError::ROFS);
            }
            _ => {
                if a.mode.is_none() && a.uid.is_none() && a.gid.is_none() && a.size.is_none() {
                    // Times of the fixed directories are not stored; `touch` on them is harmless.
                    return self.getattr(ino);
                }
                return Err(if self.cfg.read_only {
                    FsError::ROFS
                } else {
                    FsError::PERM
                });
            }
        };
        if self.cfg.read_only {
            return Err(FsError::ROFS);
        }
        let space = self.space(&s).ok_or(FsError::STALE)?;
        if let Some(size) = a.size {
            self.truncate(ino, fh, &space, size)?;
        }
        // The open local file, if any: a new time is set through it, and the attributes read
        // from it (taken before the space lock: lock order).
        let open = self.open_local_file(ino)?;
        {
            let mut st = space.lock()?;
            let path = match lock(&self.inodes)?.space_path(ino) {
                Some((_, p)) => p,
                None => {
                    drop(st);
                    return self.orphan_attr(ino);
                }
            };
            let info = st
                .tree
                .lookup(&FsTrees(self), &path)?
                .ok_or(FsError::NOENT)?;
            let mtime = a.mtime.map(|t| t.unwrap_or_else(now_ns));
            if let (Some(t), Some(id)) = (mtime, info.local) {
                // The mtime of local content is its file's: no journal record needed, and the
                // commit reads it there. A commit running now must keep the file local.
                match &open {
                    Some((oid, f)) if *oid == id => f.set_modified(system_time(t))?,
                    _ => self.wb()?.open_local(id)?.set_modified(system_time(t))?,
                }
                st.staged(id).bump();
                st.tree.touch(&path)?;
                self.changed(&space, &mut st);
            }
            let mut mode = a.mode.map(|m| m & 0o7777);
            if a.kill_suidgid
                && mode.is_none()
                && info.kind == NodeKind::File
                && killed_suidgid(info.meta.mode) != info.meta.mode
            {
                mode = Some(killed_suidgid(info.meta.mode) & 0o7777);
            }
            let journal_mtime = mtime.is_some() && info.local.is_none();
            if mode.is_some() || a.uid.is_some() || a.gid.is_some() || journal_mtime {
                let edit = Edit::SetMeta {
                    path: path.clone(),
                    mode,
                    uid: a.uid,
                    gid: a.gid,
                    mtime_ns: mtime,
                };
                self.record(&space, &mut st, edit)?;
            }
            // The attributes now, from the path at hand (and the open local file if any).
            let info = st
                .tree
                .lookup(&FsTrees(self), &path)?
                .ok_or(FsError::NOENT)?;
            match (&open, info.local) {
                (Some((oid, f)), Some(id)) if *oid == id => {
                    let md = f.metadata()?;
                    let a = Self::info_attr_of(ino, &info, (md.len(), mtime_of(&md)));
                    self.space_attr(a, &st, &path, info.link)
                }
                _ => self.space_info_attr(ino, &info, &st, &path),
            }
        }
    }

    /// The local file number and open file of `ino` if it is open with local content.
    fn open_local_file(&self, ino: u64) -> FsResult<Option<(u64, Arc<File>)>> {
        let Some(of) = lock(&self.open_files)?.get(&ino).map(|(f, _)| f.clone()) else {
            return Ok(None);
        };
        let st = of.state.read().map_err(|_| FsError::IO)?;
        Ok(match &*st {
            FileState::Staged { staged, file } => Some((staged.id, file.clone())),
            FileState::Stored(_) => None,
        })
    }

    /// Make the file `ino` local (copying its stored content, up to `keep` bytes) unless it
    /// already is; returns the staged file, its open file and whether it was stored before.
    pub(super) fn stage(
        &self,
        space: &Arc<Space>,
        st: &mut SpaceState,
        path: &[u8],
        keep: u64,
    ) -> FsResult<(Arc<Staged>, File)> {
        self.check_quota(&space.name)?;
        match st.tree.content(&FsTrees(self), path)? {
            Content::Local(id) => {
                let f = self.wb()?.open_local(id)?;
                Ok((st.staged(id), f))
            }
            Content::Stored { chunks, .. } => {
                let (id, f) = self.wb()?.new_local()?;
                let r = self.copy_chunks(&chunks, keep, &f);
                if let Err(e) = r {
                    let _ = std::fs::remove_file(self.wb()?.data_path(id));
                    return Err(e);
                }
                let info = st.tree.lookup(&FsTrees(self), path)?;
                if let Some(i) = info {
                    // Keep the modification time until the content changes.
                    f.set_modified(system_time(i.meta.mtime_ns))?;
                }
                let edit = Edit::SetContent {
                    path: path.to_vec(),
                    content: Content::Local(id),
                };
                st.tree.apply(&FsTrees(self), &edit)?;
                let staged = Arc::new(Staged::new(id));
                st.staged.insert(id, staged.clone());
                self.journal(space, st, edit)?;
                Ok((staged, f))
            }
        }
    }

    fn copy_chunks(&self, chunks: &[ObjectId], keep: u64, f: &File) -> FsResult<()> {
        let mut off = 0u64;
        for c in chunks {
            if off >= keep {
                break;
            }
            let data = self.read_object(c)?;
            let n = (data.len() as u64).min(keep - off) as usize;
            f.write_all_at(&data[..n], off)?;
            off += n as u64;
        }
        Ok(())
    }

    pub(super) fn truncate(
        &self,
        ino: u64,
        fh: Option<u64>,
        space: &Arc<Space>,
        size: u64,
    ) -> FsResult<()> {
        let of = match fh {
            Some(fh) => lock(&self.handles)?.get(&fh).map(|h| h.file.clone()),
            None => lock(&self.open_files)?.get(&ino).map(|(f, _)| f.clone()),
        };
        // Lock order: open file, then space.
        let mut guard = match &of {
            Some(of) => Some(of.state.write().map_err(|_| FsError::IO)?),
            None => None,
        };
        if let Some(FileState::Staged { staged, file }) = guard.as_deref() {
            file.set_len(size)?;
            staged.bump();
            space.touch();
            let mut st = space.lock()?;
            st.dirty = true;
            st.want_commit = true;
            return Ok(());
        }
        let mut st = space.lock()?;
        let path = self.space_path(ino)?;
        let (staged, f) = self.stage(space, &mut st, &path, size)?;
        f.set_len(size)?;
        staged.bump();
        if let Some(g) = guard.as_deref_mut() {
            *g = FileState::Staged {
                staged,
                file: Arc::new(f),
            };
        }
        st.dirty = true;
        st.want_commit = true;
        Ok(())
    }
}
