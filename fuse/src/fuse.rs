//! The thin adapter between fuser 0.18 and [`PuceFs`]: each request translated to an
//! operation of [`PuceFs`], its result to a reply. How an open is answered (through the mount
//! or with passthrough) is decided in [`crate::passthrough`].

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    AccessFlags, BsdFileFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, InitFlags, KernelConfig, LockOwner, Notifier, OpenFlags, RenameFlags,
    ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry,
    ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use puce_core::snapshot::edit::NodeKind;

use crate::error::FsError;
use crate::fs::{Attr, Caller, Invalidator, PuceFs, SetAttr};
use crate::passthrough::{Created, OpenModes, Opened};

/// How long the kernel may cache what changes only through this mount or a new snapshot.
const TTL_LIVE: Duration = Duration::from_secs(1);
/// How long it may cache snapshot content, which never changes.
const TTL_FROZEN: Duration = Duration::from_secs(3600);
/// Reported block size when writes go through the mount: large, so that `cp` and friends
/// write in few requests.
const BLKSIZE: u32 = 1 << 20;
/// Reported block size with passthrough, where the kernel writes the local file itself: 1 MiB
/// writes copy at a fifth of the speed of 128 KiB ones on this VM (the buffer leaves the CPU
/// cache), and there are no requests to save.
const BLKSIZE_PASSTHROUGH: u32 = 128 << 10;

/// fuser's view of the file system.
pub struct Adapter {
    fs: Arc<PuceFs>,
    modes: OpenModes,
    want_passthrough: bool,
}

impl Adapter {
    /// The adapter of `fs`; `passthrough`: let the kernel do the reads and writes of files
    /// being changed itself, when it can.
    pub fn new(fs: Arc<PuceFs>, passthrough: bool) -> Adapter {
        Adapter {
            fs,
            modes: OpenModes::default(),
            want_passthrough: passthrough,
        }
    }

    fn attr(&self, a: &Attr) -> FileAttr {
        attr(
            a,
            if self.modes.on() {
                BLKSIZE_PASSTHROUGH
            } else {
                BLKSIZE
            },
        )
    }
}

fn errno(e: FsError) -> Errno {
    Errno::from_i32(e.0)
}

fn time(ns: i64) -> SystemTime {
    if ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    } else {
        UNIX_EPOCH - Duration::from_nanos(ns.unsigned_abs())
    }
}

fn file_type(k: NodeKind) -> FileType {
    match k {
        NodeKind::File => FileType::RegularFile,
        NodeKind::Dir => FileType::Directory,
        NodeKind::Symlink => FileType::Symlink,
        NodeKind::Fifo => FileType::NamedPipe,
        NodeKind::Socket => FileType::Socket,
        NodeKind::CharDevice => FileType::CharDevice,
        NodeKind::BlockDevice => FileType::BlockDevice,
    }
}

/// A device number as the kernel's FUSE interface takes it (its 32-bit `new_encode_dev`).
fn kernel_dev(rdev: u64) -> u32 {
    let (major, minor) = (libc::major(rdev), libc::minor(rdev));
    (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12)
}

fn attr(a: &Attr, blksize: u32) -> FileAttr {
    let t = time(a.mtime_ns);
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.size.div_ceil(512),
        atime: t,
        mtime: t,
        ctime: time(a.ctime_ns),
        crtime: t,
        kind: file_type(a.kind),
        perm: (a.perm & 0o7777) as u16,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: kernel_dev(a.rdev),
        blksize,
        flags: 0,
    }
}

fn ttl(a: &Attr) -> Duration {
    if a.immutable { TTL_FROZEN } else { TTL_LIVE }
}

fn caller(req: &Request) -> Caller {
    Caller {
        uid: req.uid(),
        gid: req.gid(),
    }
}

fn nanos(t: TimeOrNow) -> Option<i64> {
    match t {
        TimeOrNow::Now => None,
        TimeOrNow::SpecificTime(t) => Some(match t.duration_since(UNIX_EPOCH) {
            Ok(d) => d.as_nanos() as i64,
            Err(e) => -(e.duration().as_nanos() as i64),
        }),
    }
}

impl Filesystem for Adapter {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let want = InitFlags::FUSE_ASYNC_READ
            | InitFlags::FUSE_BIG_WRITES
            | InitFlags::FUSE_ATOMIC_O_TRUNC
            | InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_AUTO_INVAL_DATA
            | InitFlags::FUSE_MAX_PAGES
            | InitFlags::FUSE_DO_READDIRPLUS
            | InitFlags::FUSE_READDIRPLUS_AUTO
            | InitFlags::FUSE_HANDLE_KILLPRIV_V2;
        let _ = config.add_capabilities(want & config.capabilities());
        // Passthrough: the kernel reads and writes files being changed on their local copy
        // itself (the local files are on a plain file system: stack depth 1). Registering a
        // backing file needs CAP_SYS_ADMIN: not asked for by other users.
        let offered = config.capabilities().contains(InitFlags::FUSE_PASSTHROUGH);
        if self.want_passthrough
            && rustix::process::geteuid().is_root()
            && offered
            && config.set_max_stack_depth(1).is_ok()
            && config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
        {
            self.modes.grant();
            tracing::debug!("passthrough on: the kernel does the I/O of changed files itself");
        } else if !offered {
            tracing::debug!("this kernel does not offer passthrough (Linux 6.9 and later do)");
        }
        let _ = config.set_max_write(1 << 20);
        let mut ra = 1 << 20;
        while config.set_max_readahead(ra).is_err() && ra > 4096 {
            ra /= 2;
        }
        let _ = config.set_max_background(64);
        let _ = config.set_congestion_threshold(48);
        Ok(())
    }

    fn destroy(&mut self) {}

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.fs.lookup(parent.0, name.as_bytes()) {
            Ok(a) => reply.entry(&ttl(&a), &self.attr(&a), Generation(0)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.fs.forget(ino.0, nlookup);
        self.modes.forget(ino.0);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.fs.getattr(ino.0) {
            Ok(a) => reply.attr(&ttl(&a), &self.attr(&a)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let a = SetAttr {
            mode,
            uid,
            gid,
            size,
            mtime: mtime.map(nanos),
            // chown always clears them (as Linux does); a truncate only for unprivileged callers.
            kill_suidgid: uid.is_some() || gid.is_some() || (size.is_some() && req.uid() != 0),
        };
        match self.fs.setattr(ino.0, fh.map(|f| f.0), &a) {
            Ok(a) => reply.attr(&ttl(&a), &self.attr(&a)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.fs.readlink(ino.0) {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        match self
            .fs
            .mknod(caller(req), parent.0, name.as_bytes(), mode, umask)
        {
            Ok(a) => reply.entry(&ttl(&a), &self.attr(&a), Generation(0)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        match self
            .fs
            .mkdir(caller(req), parent.0, name.as_bytes(), mode, umask)
        {
            Ok(a) => reply.entry(&ttl(&a), &self.attr(&a), Generation(0)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.fs.unlink(parent.0, name.as_bytes()) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.fs.rmdir(parent.0, name.as_bytes()) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        match self.fs.symlink(
            caller(req),
            parent.0,
            link_name.as_bytes(),
            target.as_os_str().as_bytes(),
        ) {
            Ok(a) => reply.entry(&ttl(&a), &self.attr(&a), Generation(0)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        if flags.intersects(RenameFlags::RENAME_EXCHANGE | RenameFlags::RENAME_WHITEOUT) {
            reply.error(Errno::EINVAL);
            return;
        }
        let noreplace = flags.contains(RenameFlags::RENAME_NOREPLACE);
        match self.fs.rename(
            parent.0,
            name.as_bytes(),
            newparent.0,
            newname.as_bytes(),
            noreplace,
        ) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        match self.fs.link(ino.0, newparent.0, newname.as_bytes()) {
            Ok(a) => reply.entry(&ttl(&a), &self.attr(&a), Generation(0)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match self.fs.open(ino.0, flags.0) {
            Ok((fh, keep)) => {
                if flags.0 & libc::O_TRUNC != 0
                    && req.uid() != 0
                    && let Err(e) = self.fs.kill_suidgid(fh)
                {
                    self.fs.release(fh);
                    reply.error(errno(e));
                    return;
                }
                let opened = Opened {
                    ino: ino.0,
                    fh,
                    keep,
                    writable: flags.0 & libc::O_ACCMODE != libc::O_RDONLY,
                    perm: None,
                };
                self.modes.answer(&self.fs, opened, (reply, fh));
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        // The reply is sent from inside: a read within one cached window is not copied.
        let mut reply = Some(reply);
        let r = self.fs.read_with(fh.0, offset, size, |d| {
            if let Some(r) = reply.take() {
                r.data(d);
            }
        });
        if let (Err(e), Some(r)) = (r, reply.take()) {
            r.error(errno(e));
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        if write_flags.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID)
            && let Err(e) = self.fs.kill_suidgid(fh.0)
        {
            reply.error(errno(e));
            return;
        }
        match self.fs.write(fh.0, offset, data) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        match self.fs.flush(fh.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.fs.release(fh.0);
        self.modes.release(ino.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.fs.fsync(fh.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.fs.opendir(ino.0) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        match self.fs.readdir(fh.0, offset) {
            Ok(list) => {
                for (i, e) in list.iter().enumerate().skip(offset as usize) {
                    if reply.add(
                        INodeNo(e.ino),
                        (i + 1) as u64,
                        file_type(e.kind),
                        OsStr::from_bytes(&e.name),
                    ) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let r = self.fs.readdir_plus(ino.0, fh.0, offset, |e, a, next| {
            reply.add(
                INodeNo(e.ino),
                next,
                OsStr::from_bytes(&e.name),
                &ttl(a),
                &self.attr(a),
                Generation(0),
            )
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.fs.releasedir(fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // Namespace changes are journaled as they happen; the journal is synced on fsync.
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match self.fs.statfs() {
            Ok(s) => reply.statfs(
                s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, 255, s.bsize,
            ),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        // Extended attributes are not stored in snapshots. ENOSYS makes the kernel answer
        // EOPNOTSUPP from now on without asking again.
        reply.error(Errno::ENOSYS);
    }

    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: ReplyXattr,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, _size: u32, reply: ReplyXattr) {
        reply.error(Errno::ENOSYS);
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::ENOSYS);
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        // Mounted with default_permissions: the kernel checks modes itself.
        reply.ok();
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        match self
            .fs
            .create(caller(req), parent.0, name.as_bytes(), mode, umask, flags)
        {
            Ok((a, fh)) => {
                let opened = Opened {
                    ino: a.ino,
                    fh,
                    keep: false,
                    writable: flags & libc::O_ACCMODE != libc::O_RDONLY,
                    perm: Some(a.perm),
                };
                let r = Created {
                    reply,
                    ttl: ttl(&a),
                    attr: self.attr(&a),
                    fh,
                };
                self.modes.answer(&self.fs, opened, r);
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _length: u64,
        _mode: i32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EOPNOTSUPP);
    }
}

/// Cache invalidations through fuser's notifier.
pub struct KernelNotifier(pub Notifier);

impl Invalidator for KernelNotifier {
    fn inval_inode(&self, ino: u64) {
        let _ = self.0.inval_inode(INodeNo(ino), 0, 0);
    }
    fn inval_attr(&self, ino: u64) {
        // A negative offset: attributes only, the page cache is left alone.
        let _ = self.0.inval_inode(INodeNo(ino), -1, 0);
    }
    fn inval_entry(&self, parent: u64, name: &[u8]) {
        let _ = self.0.inval_entry(INodeNo(parent), OsStr::from_bytes(name));
    }
}
