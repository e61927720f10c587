//! Passthrough bookkeeping of the fuser adapter: for each inode, whether the kernel does the
//! reads and writes of its open handles through the mount (and its page cache) or itself on
//! a local file of the write-back area, following the kernel's rules; and the reply that opens
//! a file accordingly.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use fuser::{BackingId, FileAttr, FileHandle, FopenFlags, Generation, ReplyCreate, ReplyOpen};

use crate::fs::{Passthrough, PuceFs};

/// Flags of every opened file. `FOPEN_NOFLUSH`: `close(2)` does not wait for a FLUSH request.
/// Writes reach the write-back area synchronously and edits are journaled as they happen, so
/// a flush has nothing to make safe; the commit is asked for at release instead (which the
/// kernel sends right after the last close, without making `close` wait).
const OPEN_FLAGS: FopenFlags = FopenFlags::FOPEN_NOFLUSH;

/// A handle just opened (or created), to answer.
pub(crate) struct Opened {
    pub(crate) ino: u64,
    pub(crate) fh: u64,
    /// The kernel may keep the pages it cached before.
    pub(crate) keep: bool,
    /// Opened for writing.
    pub(crate) writable: bool,
    /// The file's permission bits, if known (else they are looked up).
    pub(crate) perm: Option<u32>,
}

/// The I/O mode of every inode with open handles.
#[derive(Default)]
pub(crate) struct OpenModes {
    io: Mutex<IoModes>,
    /// The kernel granted passthrough at init: opens are tracked (see [`Io`]).
    granted: AtomicBool,
    /// Passthrough works (it needs `CAP_SYS_ADMIN`): new opens may use it.
    on: AtomicBool,
}

/// How the kernel does the I/O of the open handles of one inode: through the mount and its
/// page cache, or itself on a local file (passthrough). The kernel refuses to mix the two on
/// one inode, and wants every passthrough open of an inode to name the same backing file.
enum Io {
    Cached(usize),
    Direct(BackingId, usize),
}

#[derive(Default)]
struct IoModes {
    by_ino: HashMap<u64, Io>,
    /// Inodes whose content the kernel changed on a local file since their cached pages were
    /// last dropped: the next cached open must drop them (they may be stale).
    touched: HashSet<u64>,
}

/// The two replies that open a file.
pub(crate) trait OpenReply {
    fn backing(&self, f: &File) -> std::io::Result<BackingId>;
    fn cached(self, flags: FopenFlags);
    fn direct(self, flags: FopenFlags, b: &BackingId);
}

impl OpenReply for (ReplyOpen, u64) {
    fn backing(&self, f: &File) -> std::io::Result<BackingId> {
        self.0.open_backing(f)
    }
    fn cached(self, flags: FopenFlags) {
        self.0.opened(FileHandle(self.1), flags)
    }
    fn direct(self, flags: FopenFlags, b: &BackingId) {
        self.0.opened_passthrough(FileHandle(self.1), flags, b)
    }
}

/// The reply to a `create`, with what it answers.
pub(crate) struct Created {
    pub(crate) reply: ReplyCreate,
    pub(crate) ttl: Duration,
    pub(crate) attr: FileAttr,
    pub(crate) fh: u64,
}

impl OpenReply for Created {
    fn backing(&self, f: &File) -> std::io::Result<BackingId> {
        self.reply.open_backing(f)
    }
    fn cached(self, flags: FopenFlags) {
        self.reply.created(
            &self.ttl,
            &self.attr,
            Generation(0),
            FileHandle(self.fh),
            flags,
        )
    }
    fn direct(self, flags: FopenFlags, b: &BackingId) {
        self.reply.created_passthrough(
            &self.ttl,
            &self.attr,
            Generation(0),
            FileHandle(self.fh),
            flags,
            b,
        )
    }
}

impl OpenModes {
    /// The kernel granted passthrough at init.
    pub(crate) fn grant(&self) {
        self.granted.store(true, Ordering::Relaxed);
        self.on.store(true, Ordering::Relaxed);
    }

    /// Whether new opens may use passthrough.
    pub(crate) fn on(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    /// The kernel forgot `ino`.
    pub(crate) fn forget(&self, ino: u64) {
        if let Ok(mut io) = self.io.lock() {
            io.touched.remove(&ino);
        }
    }

    /// A handle of `ino` was released.
    pub(crate) fn release(&self, ino: u64) {
        if let Ok(mut io) = self.io.lock()
            && let Some(Io::Cached(n) | Io::Direct(_, n)) = io.by_ino.get_mut(&ino)
        {
            *n -= 1;
            if *n == 0 {
                // The backing file's id is closed with it.
                io.by_ino.remove(&ino);
            }
        }
    }

    /// Answer the open (or create) of handle `fh` of `ino`: with passthrough when the file's
    /// content is local and no handle of it is open through the mount, else through the
    /// mount. `keep`: the kernel may keep the pages it cached before.
    pub(crate) fn answer(&self, fs: &PuceFs, opened: Opened, r: impl OpenReply) {
        let Opened {
            ino,
            fh,
            keep,
            writable,
            perm,
        } = opened;
        let cached = |keep: bool| {
            if keep {
                OPEN_FLAGS | FopenFlags::FOPEN_KEEP_CACHE
            } else {
                OPEN_FLAGS
            }
        };
        if !self.granted.load(Ordering::Relaxed) {
            return r.cached(cached(keep));
        }
        let pt = fs.passthrough(fh, perm);
        if matches!(pt, Passthrough::Never) {
            return r.cached(cached(keep));
        }
        let Ok(mut io) = self.io.lock() else {
            return r.cached(cached(false));
        };
        let io = &mut *io;
        match io.by_ino.get_mut(&ino) {
            Some(Io::Direct(b, n)) => {
                *n += 1;
                fs.set_direct(fh, writable);
                r.direct(OPEN_FLAGS, b);
            }
            Some(Io::Cached(n)) => {
                *n += 1;
                r.cached(cached(keep && !io.touched.remove(&ino)));
            }
            None => {
                if let Passthrough::Local(f) = pt
                    && self.on.load(Ordering::Relaxed)
                {
                    match r.backing(&f) {
                        Ok(b) => {
                            fs.set_direct(fh, writable);
                            io.touched.insert(ino);
                            r.direct(OPEN_FLAGS, &b);
                            io.by_ino.insert(ino, Io::Direct(b, 1));
                            return;
                        }
                        Err(e) => self.failed(&e),
                    }
                }
                io.by_ino.insert(ino, Io::Cached(1));
                r.cached(cached(keep && !io.touched.remove(&ino)));
            }
        }
    }

    /// The kernel refused a backing file: stop asking if it will always refuse.
    fn failed(&self, e: &std::io::Error) {
        let always = matches!(
            e.raw_os_error(),
            Some(libc::EPERM | libc::EACCES | libc::EOPNOTSUPP | libc::ENOTTY | libc::EINVAL)
        );
        if always && self.on.swap(false, Ordering::Relaxed) {
            tracing::info!(
                "the kernel refused passthrough ({e}): reads and writes of changed files go \
                 through the mount (passthrough needs root)"
            );
        } else if !always {
            tracing::debug!("passthrough refused for one file: {e}");
        }
    }
}
