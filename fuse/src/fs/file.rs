//! Open files and their handles: `open`, `read`, `write`, `flush`, `release`, `fsync`, and
//! whether the kernel may do the reads and writes of a handle itself (passthrough).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use puce_core::ObjectId;
use puce_core::format::tree::Node;
use puce_core::snapshot::edit::{Content, NodeKind};

use super::stored::{FsTrees, SEQUENTIAL_SLACK, StoredFile};
use super::{PuceFs, SetAttr, lock};
use crate::error::{FsError, FsResult};
use crate::inode::Kind;
use crate::space::{Space, Staged};

/// Whether the kernel may do the reads and writes of a handle itself, on a local file of the
/// write-back area (FUSE passthrough), instead of asking the mount for each.
#[derive(Debug)]
pub enum Passthrough {
    /// Never: a snapshot file (immutable: the kernel caches its pages instead).
    Never,
    /// Not for this handle: its content is in the repository, or the file is set-user-ID or
    /// set-group-ID (the kernel does not clear those bits on writes it does itself).
    No,
    /// On this file.
    Local(Arc<File>),
}

/// Where the content of an open file is: in the repository, or in a local file.
pub(super) enum FileState {
    Stored(Arc<StoredFile>),
    Staged {
        staged: Arc<Staged>,
        file: Arc<File>,
    },
}

/// An open file (shared by the handles of one inode).
pub(super) struct OpenFile {
    pub(super) space: Option<Arc<Space>>,
    pub(super) state: RwLock<FileState>,
}

/// One handle of an open file (one `open` of the kernel).
pub(super) struct Handle {
    ino: u64,
    pub(super) file: Arc<OpenFile>,
    wrote: AtomicBool,
    /// The kernel reads and writes the local file itself (see [`Passthrough`]): writes are
    /// not seen one by one, so a writable handle counts as a change when released.
    direct: AtomicBool,
    next: AtomicU64,
}

impl PuceFs {
    /// The chunks of `ino` if it is open with stored content.
    pub(super) fn open_stored_chunks(&self, ino: u64) -> Option<Vec<ObjectId>> {
        let of = lock(&self.open_files)
            .ok()?
            .get(&ino)
            .map(|(f, _)| f.clone())?;
        let st = of.state.read().ok()?;
        match &*st {
            FileState::Stored(sf) => Some(sf.chunks.clone()),
            FileState::Staged { .. } => None,
        }
    }

    pub(super) fn add_handle(&self, ino: u64, of: Arc<OpenFile>) -> FsResult<u64> {
        let of = {
            let mut m = lock(&self.open_files)?;
            let e = m.entry(ino).or_insert_with(|| (of, 0));
            e.1 += 1;
            e.0.clone()
        };
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.handles)?.insert(
            fh,
            Arc::new(Handle {
                ino,
                file: of,
                wrote: AtomicBool::new(false),
                direct: AtomicBool::new(false),
                next: AtomicU64::new(0),
            }),
        );
        Ok(fh)
    }

    /// `open`. Returns a handle and whether the kernel may keep the pages it cached at earlier
    /// opens. It may, except when truncating: a file of a space changes only through this
    /// mount (the kernel's cache follows) or by a snapshot made elsewhere, after which
    /// `invalidate_space` drops the cached pages of every inode of the space.
    pub fn open(&self, ino: u64, flags: i32) -> FsResult<(u64, bool)> {
        let write = flags & libc::O_ACCMODE != libc::O_RDONLY;
        let trunc = flags & libc::O_TRUNC != 0;
        let i = self.inode(ino)?;
        match &i.kind {
            Kind::SnapNode { parent_tree, entry } => {
                if write || trunc {
                    return Err(FsError::ROFS);
                }
                if let Some((of, _)) = lock(&self.open_files)?.get(&ino) {
                    let of = of.clone();
                    return Ok((self.add_handle(ino, of)?, true));
                }
                let tree = self.tree(parent_tree)?;
                let e = tree.get(&entry.name).ok_or(FsError::STALE)?;
                let Node::File { chunks, .. } = &e.node else {
                    return Err(FsError::ISDIR);
                };
                let sf = self.stored_file(chunks.clone())?;
                self.read_next_files(&tree, &entry.name);
                let of = Arc::new(OpenFile {
                    space: None,
                    state: RwLock::new(FileState::Stored(Arc::new(sf))),
                });
                Ok((self.add_handle(ino, of)?, true))
            }
            Kind::SpaceNode(s, NodeKind::File) => {
                if (write || trunc) && self.cfg.read_only {
                    return Err(FsError::ROFS);
                }
                let space = self.space(s).ok_or(FsError::STALE)?;
                let existing = lock(&self.open_files)?.get(&ino).map(|(f, _)| f.clone());
                if let Some(of) = existing {
                    let mut g = of.state.write().map_err(|_| FsError::IO)?;
                    if write || trunc {
                        let mut st = space.lock()?;
                        let path = self.space_path(ino)?;
                        match &*g {
                            FileState::Staged { staged, file } => {
                                if trunc {
                                    file.set_len(0)?;
                                    staged.bump();
                                    st.dirty = true;
                                    st.want_commit = true;
                                }
                            }
                            FileState::Stored(_) => {
                                let keep = if trunc { 0 } else { u64::MAX };
                                let (staged, f) = self.stage(&space, &mut st, &path, keep)?;
                                if trunc {
                                    f.set_len(0)?;
                                    staged.bump();
                                }
                                *g = FileState::Staged {
                                    staged,
                                    file: Arc::new(f),
                                };
                            }
                        }
                    }
                    drop(g);
                    return Ok((self.add_handle(ino, of)?, !trunc));
                }
                let mut st = space.lock()?;
                let path = self.space_path(ino)?;
                let state = if write || trunc {
                    let keep = if trunc { 0 } else { u64::MAX };
                    let (staged, f) = self.stage(&space, &mut st, &path, keep)?;
                    if trunc && f.metadata()?.len() > 0 {
                        f.set_len(0)?;
                        staged.bump();
                        st.dirty = true;
                        st.want_commit = true;
                    }
                    FileState::Staged {
                        staged,
                        file: Arc::new(f),
                    }
                } else {
                    match st.tree.content(&FsTrees(self), &path)? {
                        Content::Local(id) => {
                            let f = self.wb()?.open_local(id)?;
                            FileState::Staged {
                                staged: st.staged(id),
                                file: Arc::new(f),
                            }
                        }
                        Content::Stored { chunks, .. } => {
                            drop(st);
                            FileState::Stored(Arc::new(self.stored_file(chunks)?))
                        }
                    }
                };
                let of = Arc::new(OpenFile {
                    space: Some(space.clone()),
                    state: RwLock::new(state),
                });
                Ok((self.add_handle(ino, of)?, !trunc))
            }
            Kind::SpaceNode(..) => Err(FsError::ISDIR),
            _ => Err(FsError::ISDIR),
        }
    }

    fn handle(&self, fh: u64) -> FsResult<Arc<Handle>> {
        lock(&self.handles)?.get(&fh).cloned().ok_or(FsError::BADF)
    }

    /// `read`: up to `size` bytes at `offset`.
    pub fn read(&self, fh: u64, offset: u64, size: u32) -> FsResult<Vec<u8>> {
        self.read_with(fh, offset, size, |d| d.to_vec())
    }

    /// `read`, handing the bytes to `reply` (without copying them when they lie in one
    /// cached window).
    pub fn read_with<R>(
        &self,
        fh: u64,
        offset: u64,
        size: u32,
        reply: impl FnOnce(&[u8]) -> R,
    ) -> FsResult<R> {
        let h = self.handle(fh)?;
        let st = h.file.state.read().map_err(|_| FsError::IO)?;
        let out = match &*st {
            FileState::Stored(sf) => {
                let sf = sf.clone();
                drop(st);
                let sequential =
                    h.next.load(Ordering::Relaxed).abs_diff(offset) <= SEQUENTIAL_SLACK;
                let end = offset.saturating_add(u64::from(size)).min(sf.size());
                h.next.store(end.max(offset), Ordering::Relaxed);
                return if sequential {
                    self.read_windows(&sf, offset, size as u64, reply)
                } else {
                    self.read_stored(&sf, offset, size as u64)
                        .map(|d| reply(&d))
                };
            }
            FileState::Staged { file, .. } => {
                let mut buf = vec![0u8; size as usize];
                let mut n = 0;
                while n < buf.len() {
                    match file.read_at(&mut buf[n..], offset + n as u64) {
                        Ok(0) => break,
                        Ok(k) => n += k,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                buf.truncate(n);
                buf
            }
        };
        h.next.store(offset + out.len() as u64, Ordering::Relaxed);
        Ok(reply(&out))
    }

    /// Whether the kernel may do the I/O of handle `fh` itself, and on which file. `perm`:
    /// the file's permission bits when the caller has them (else they are looked up).
    pub fn passthrough(&self, fh: u64, perm: Option<u32>) -> Passthrough {
        let Ok(h) = self.handle(fh) else {
            return Passthrough::No;
        };
        if h.file.space.is_none() {
            return Passthrough::Never;
        }
        let file = match h.file.state.read().as_deref() {
            Ok(FileState::Staged { file, .. }) => file.clone(),
            _ => return Passthrough::No,
        };
        match perm.map_or_else(|| self.getattr(h.ino).map(|a| a.perm), Ok) {
            Ok(p) if p & 0o6000 == 0 => Passthrough::Local(file),
            _ => Passthrough::No,
        }
    }

    /// The kernel does the I/O of handle `fh` itself from now on; `writable`: it was opened
    /// for writing.
    pub fn set_direct(&self, fh: u64, writable: bool) {
        if let Ok(h) = self.handle(fh) {
            h.direct.store(true, Ordering::Relaxed);
            if writable {
                h.wrote.store(true, Ordering::Relaxed);
            }
        }
    }

    /// A writable handle whose I/O the kernel did itself is released: count it as a write
    /// (the content may have changed at any time while it was open; a commit that read the
    /// file before the last writes then sees a new version and keeps the file local).
    fn direct_written(&self, h: &Handle) {
        if !(h.direct.load(Ordering::Relaxed) && h.wrote.load(Ordering::Relaxed)) {
            return;
        }
        if let Ok(st) = h.file.state.read()
            && let FileState::Staged { staged, .. } = &*st
        {
            Self::content_changed(h, staged);
        }
    }

    /// The local content of handle `h` changed: a new version for a commit running now, and a
    /// change of the space (the quiet period starts again).
    fn content_changed(h: &Handle, staged: &Staged) {
        staged.bump();
        h.wrote.store(true, Ordering::Relaxed);
        if let Some(space) = &h.file.space {
            space.touch();
            space.mark_dirty();
        }
    }

    /// `write`.
    pub fn write(&self, fh: u64, offset: u64, data: &[u8]) -> FsResult<u32> {
        let h = self.handle(fh)?;
        let st = h.file.state.read().map_err(|_| FsError::IO)?;
        let FileState::Staged { staged, file } = &*st else {
            return Err(FsError::BADF);
        };
        file.write_all_at(data, offset)?;
        Self::content_changed(&h, staged);
        Ok(data.len() as u32)
    }

    /// Clear set-user-ID and set-group-ID of the file open as `fh` (a write by an unprivileged
    /// caller: the kernel asks with `FUSE_WRITE_KILL_SUIDGID`).
    pub fn kill_suidgid(&self, fh: u64) -> FsResult<()> {
        let ino = self.handle(fh)?.ino;
        let before = self.getattr(ino)?.perm;
        let a = SetAttr {
            kill_suidgid: true,
            ..SetAttr::default()
        };
        let after = self.setattr(ino, Some(fh), &a)?.perm;
        if after != before {
            // No attributes go back with a write or an open: the kernel must ask again.
            if let Ok(n) = self.notifier.read()
                && let Some(n) = n.as_ref()
            {
                n.inval_attr(ino);
            }
        }
        Ok(())
    }

    fn ask_commit(&self, h: &Handle) {
        if h.wrote.load(Ordering::Relaxed)
            && let Some(space) = &h.file.space
        {
            let mut pending = false;
            if let Ok(mut st) = space.lock() {
                pending = st.want_commit && st.dirty;
                st.want_commit = true;
                st.dirty = true;
            }
            if !pending {
                self.wake();
            }
        }
    }

    /// `flush` (each `close`): asks for a commit after the quiet period.
    pub fn flush(&self, fh: u64) -> FsResult<()> {
        let h = self.handle(fh)?;
        self.ask_commit(&h);
        Ok(())
    }

    /// `release` (last close of a handle).
    pub fn release(&self, fh: u64) {
        let Ok(mut hs) = self.handles.lock() else {
            return;
        };
        let Some(h) = hs.remove(&fh) else { return };
        drop(hs);
        self.direct_written(&h);
        self.ask_commit(&h);
        if let Ok(mut m) = self.open_files.lock()
            && let Some(e) = m.get_mut(&h.ino)
        {
            e.1 -= 1;
            if e.1 == 0 {
                m.remove(&h.ino);
            }
        }
    }

    /// `fsync`: the file's content and the journal reach the disk of the write-back area.
    pub fn fsync(&self, fh: u64) -> FsResult<()> {
        let h = self.handle(fh)?;
        {
            let st = h.file.state.read().map_err(|_| FsError::IO)?;
            if let FileState::Staged { file, .. } = &*st {
                file.sync_all()?;
            }
        }
        if let Some(space) = &h.file.space {
            puce_core::fsutil::sync_dir(&self.wb()?.dir().join("data"))?;
            let st = space.lock()?;
            if let Some(j) = &st.journal {
                j.sync()?;
            }
        }
        self.ask_commit(&h);
        Ok(())
    }
}
