//! Restoring a snapshot (or a part of one) into a folder.
//!
//! Every chunk is verified against its hash before it is written. Entries are created relative to
//! open directory handles (`openat`, `mkdirat`, `symlinkat`) with `O_NOFOLLOW`, so neither a
//! hostile tree (names are checked when trees are decoded) nor a symlink already present in the
//! target can redirect a write outside the target. Directory modes, owners and times are applied
//! last, deepest first, so that read-only directories can be filled, each through a handle
//! reopened below the target through no symlink (a directory swapped for a symlink meanwhile is
//! not followed). Set-user-ID and set-group-ID bits of files are dropped unless
//! [`RestoreOptions::preserve_suid`] asks for them: a snapshot may come from a partner.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crossbeam_channel::bounded;
use rustix::fs::{AtFlags, Mode, OFlags, Timestamps};
use serde::Serialize;

use super::restore_special::{Links, Made, make_special};
use crate::error::{Error, ErrorKind, Result};
use crate::format::tree::{Entry, MAX_TREE_DEPTH, Node, too_deep};
use crate::hash::ObjectId;
use crate::index::IndexReader;
use crate::paths::check_name;
use crate::progress::Progress;
use crate::repo::Repo;
use crate::vfs::Resolved;

/// Options of a restore.
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// Writer threads; default: the number of CPUs.
    pub threads: usize,
    /// Restore the set-user-ID and set-group-ID bits of files (dropped by default).
    pub preserve_suid: bool,
    /// Create device nodes (not by default: a snapshot may come from a partner; they are then
    /// counted in [`RestoreStats::devices_skipped`]).
    pub preserve_devices: bool,
}

/// The set-user-ID and set-group-ID bits.
const SUID_BITS: u32 = 0o6000;

/// What a restore did.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct RestoreStats {
    /// Files written.
    pub files: u64,
    /// Directories created or reused.
    pub dirs: u64,
    /// Symbolic links created.
    pub symlinks: u64,
    /// Fifos and device nodes created.
    pub specials: u64,
    /// Names made hard links to a file restored under another name.
    pub hard_links: u64,
    /// Sockets not made (the program that listens makes its socket).
    pub sockets_skipped: u64,
    /// Device nodes not made (only with [`RestoreOptions::preserve_devices`]).
    pub devices_skipped: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Entries that could not be restored.
    pub errors: u64,
    /// Messages for the errors (the first 100).
    pub messages: Vec<String>,
}

struct Job {
    dir: Arc<OwnedFd>,
    display: PathBuf,
    entry: Entry,
}

struct Shared {
    files: AtomicU64,
    bytes: AtomicU64,
    errors: AtomicU64,
    messages: Mutex<Vec<String>>,
    fatal: Mutex<Option<Error>>,
    stop: AtomicBool,
    /// The mode bits of files that are restored (without [`SUID_BITS`] unless asked).
    file_mode_mask: u32,
}

impl Shared {
    fn error(&self, e: Error) {
        if e.is_disk_full() || e.kind() == ErrorKind::Interrupted {
            if let Ok(mut f) = self.fatal.lock() {
                f.get_or_insert(e);
            }
            self.stop.store(true, Ordering::Relaxed);
            return;
        }
        self.errors.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut m) = self.messages.lock()
            && m.len() < 100
        {
            m.push(format!("{e:#}"));
        }
    }
}

fn ts(ns: i64) -> rustix::fs::Timespec {
    rustix::fs::Timespec {
        tv_sec: ns.div_euclid(1_000_000_000),
        tv_nsec: ns.rem_euclid(1_000_000_000),
    }
}

pub(super) fn times(ns: i64) -> Timestamps {
    Timestamps {
        last_access: ts(ns),
        last_modification: ts(ns),
    }
}

pub(super) fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

pub(super) fn name_os(name: &[u8]) -> &std::ffi::OsStr {
    std::ffi::OsStr::from_bytes(name)
}

/// Remove whatever is at `name` in `dir` unless it is a directory (then error).
pub(super) fn clear_slot(dir: &OwnedFd, name: &[u8], display: &Path) -> Result<()> {
    match rustix::fs::statat(dir, name_os(name), AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => {
            if rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Directory {
                return Err(Error::new(
                    ErrorKind::AlreadyExists,
                    format!(
                        "{} exists in the target and is a directory: remove it or restore elsewhere",
                        display.display()
                    ),
                ));
            }
            rustix::fs::unlinkat(dir, name_os(name), AtFlags::empty())
                .map_err(|e| Error::io("cannot replace", display, e.into()))
        }
        Err(rustix::io::Errno::NOENT) => Ok(()),
        Err(e) => Err(Error::io("cannot stat", display, e.into())),
    }
}

/// Create the file `name` in `dir` for writing, replacing what was there, never through a
/// symlink (mode 0600 until its metadata is applied).
fn create_file(dir: &OwnedFd, name: &[u8], display: &Path) -> Result<OwnedFd> {
    clear_slot(dir, name, display)?;
    rustix::fs::openat(
        dir,
        name_os(name),
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
    .map_err(|e| Error::io("cannot create", display, e.into()))
}

fn restore_file(repo: &Repo, reader: &IndexReader, job: &Job, sh: &Shared) -> Result<()> {
    let Node::File { size, chunks } = &job.entry.node else {
        return Err(Error::other("internal: not a file"));
    };
    let fd = create_file(&job.dir, &job.entry.name, &job.display)?;
    let mut f = File::from(fd);
    let mut written = 0u64;
    for id in chunks {
        if sh.stop.load(Ordering::Relaxed) {
            return Err(Error::new(ErrorKind::Interrupted, "restore stopped"));
        }
        let data = repo
            .read_object_with(reader, id)
            .map_err(|e| e.context(format!("{}", job.display.display())))?;
        f.write_all(&data)
            .map_err(|e| Error::io("cannot write", &job.display, e))?;
        written += data.len() as u64;
        sh.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
    }
    if written != *size {
        return Err(Error::corrupt(format!(
            "{}: chunks hold {written} bytes but the tree says {size}",
            job.display.display()
        )));
    }
    apply_meta(f.as_fd(), &job.entry, sh.file_mode_mask, &job.display)?;
    sh.files.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// Set the owner (as root), the mode (bits in `mask`) and the time of the file or directory
/// open as `fd`.
fn apply_meta(fd: std::os::fd::BorrowedFd<'_>, e: &Entry, mask: u32, display: &Path) -> Result<()> {
    if is_root() {
        // Ownership only makes sense (and is only allowed) as root.
        let _ = rustix::fs::fchown(
            fd,
            Some(rustix::fs::Uid::from_raw(e.uid)),
            Some(rustix::fs::Gid::from_raw(e.gid)),
        );
    }
    rustix::fs::fchmod(fd, Mode::from_raw_mode(e.mode & mask & 0o7777))
        .map_err(|er| Error::io("cannot set the mode of", display, er.into()))?;
    rustix::fs::futimens(fd, &times(e.mtime_ns))
        .map_err(|er| Error::io("cannot set the time of", display, er.into()))
}

struct DirMeta {
    rel: PathBuf,
    entry: Entry,
}

/// A file of a pack-ordered restore: where it is and what it must become.
struct PlannedFile {
    rel: PathBuf,
    entry: Entry,
}

/// One object a pack-ordered restore needs from a pack, and where its bytes go.
struct Piece {
    offset: u32,
    stored_len: u32,
    raw_len: u32,
    flags: u8,
    id: ObjectId,
    file: u32,
    file_off: u64,
}

/// The plan of a pack-ordered restore (remote backends): files are created first, then every
/// pack's needed objects are fetched in a few large ranged reads and written where they belong.
#[derive(Default)]
struct Plan {
    files: Vec<PlannedFile>,
    by_pack: std::collections::HashMap<u32, Vec<Piece>>,
}

struct Walk<'a> {
    repo: &'a Repo,
    reader: IndexReader,
    target: &'a Path,
    jobs: crossbeam_channel::Sender<Job>,
    plan: Option<Plan>,
    dirs: Vec<DirMeta>,
    stats: RestoreStats,
    sh: &'a Shared,
    progress: &'a dyn Progress,
    links: Links,
    preserve_devices: bool,
}

impl Walk<'_> {
    fn tree(&mut self, dir: Arc<OwnedFd>, rel: &Path, tree: ObjectId) -> Result<()> {
        // Bounds the recursion through `entry`, whatever the tree says.
        if rel.components().count() > MAX_TREE_DEPTH {
            let at = format!("{}", self.target.join(rel).display());
            self.sh.error(too_deep(at));
            return Ok(());
        }
        let t = match self.repo.read_tree_with(&self.reader, &tree) {
            Ok(t) => t,
            Err(e) => {
                self.sh
                    .error(e.context(format!("{}", self.target.join(rel).display())));
                return Ok(());
            }
        };
        for e in t.entries {
            if self.sh.stop.load(Ordering::Relaxed) {
                break;
            }
            let child_rel = rel.join(name_os(&e.name));
            self.entry(&dir, &child_rel, e)?;
        }
        Ok(())
    }

    fn entry(&mut self, dir: &Arc<OwnedFd>, rel: &Path, e: Entry) -> Result<()> {
        check_name(&e.name)?;
        let display = self.target.join(rel);
        if self.links.is_later(&e, dir, &display) {
            self.progress.add(1, 0);
            return Ok(());
        }
        match &e.node {
            Node::File { .. } if self.plan.is_some() => {
                if let Err(er) = self.plan_file(dir, rel, &display, e) {
                    self.sh.error(er);
                }
            }
            Node::File { .. } => {
                let job = Job {
                    dir: dir.clone(),
                    display,
                    entry: e,
                };
                self.jobs
                    .send(job)
                    .map_err(|_| Error::other("restore threads stopped"))?;
            }
            Node::Symlink { target } => {
                let r = clear_slot(dir, &e.name, &display).and_then(|_| {
                    rustix::fs::symlinkat(name_os(target), &**dir, name_os(&e.name))
                        .map_err(|er| Error::io("cannot create symlink", &display, er.into()))?;
                    if is_root() {
                        let _ = rustix::fs::chownat(
                            &**dir,
                            name_os(&e.name),
                            Some(rustix::fs::Uid::from_raw(e.uid)),
                            Some(rustix::fs::Gid::from_raw(e.gid)),
                            AtFlags::SYMLINK_NOFOLLOW,
                        );
                    }
                    rustix::fs::utimensat(
                        &**dir,
                        name_os(&e.name),
                        &times(e.mtime_ns),
                        AtFlags::SYMLINK_NOFOLLOW,
                    )
                    .map_err(|er| Error::io("cannot set the time of", &display, er.into()))
                });
                match r {
                    Ok(()) => {
                        self.stats.symlinks += 1;
                        self.progress.add(1, 0);
                    }
                    Err(er) => self.sh.error(er),
                }
            }
            Node::Dir { tree } => {
                let tree = *tree;
                match open_or_make_dir(dir, &e.name, &display) {
                    Ok(fd) => {
                        self.stats.dirs += 1;
                        self.dirs.push(DirMeta {
                            rel: rel.to_path_buf(),
                            entry: e,
                        });
                        self.tree(Arc::new(fd), rel, tree)?;
                    }
                    Err(er) => self.sh.error(er),
                }
            }
            _ => {
                let mask = self.sh.file_mode_mask;
                match make_special(dir, &e, &display, self.preserve_devices, mask) {
                    Ok(Made::Created) => self.stats.specials += 1,
                    Ok(Made::Socket) => self.stats.sockets_skipped += 1,
                    Ok(Made::Device) => self.stats.devices_skipped += 1,
                    Err(er) => self.sh.error(er),
                }
                self.progress.add(1, 0);
            }
        }
        Ok(())
    }
}

impl Walk<'_> {
    /// Create the file at its final size and note where each of its chunks is.
    fn plan_file(&mut self, dir: &OwnedFd, rel: &Path, display: &Path, e: Entry) -> Result<()> {
        let Node::File { size, chunks } = &e.node else {
            return Err(Error::other("internal: not a file"));
        };
        let fd = create_file(dir, &e.name, display)?;
        rustix::fs::ftruncate(&fd, *size)
            .map_err(|er| Error::io("cannot size", display, er.into()))?;
        let Some(plan) = self.plan.as_mut() else {
            return Err(Error::other("internal: no plan"));
        };
        let file = u32::try_from(plan.files.len())
            .map_err(|_| Error::invalid("more than 4 billion files in one restore"))?;
        let mut off = 0u64;
        for id in chunks {
            let loc = self.reader.get(id)?.ok_or_else(|| {
                Error::not_found(format!(
                    "{}: chunk {id} is not in the index (run `puce check`)",
                    display.display()
                ))
            })?;
            plan.by_pack.entry(loc.pack).or_default().push(Piece {
                offset: loc.offset,
                stored_len: loc.stored_len,
                raw_len: loc.raw_len,
                flags: loc.flags,
                id: *id,
                file,
                file_off: off,
            });
            off += u64::from(loc.raw_len);
        }
        if off != *size {
            return Err(Error::corrupt(format!(
                "{}: chunks hold {off} bytes but the tree says {size}",
                display.display()
            )));
        }
        plan.files.push(PlannedFile {
            rel: rel.to_path_buf(),
            entry: e,
        });
        Ok(())
    }
}

/// Reads closer than this are fetched as one range.
const COALESCE_GAP: u64 = 1 << 20;
/// Largest single ranged read of a pack-ordered restore.
const MAX_RANGE: u64 = 16 << 20;

/// Open a planned file again, below the target only and through no symlink.
fn reopen(root: &OwnedFd, rel: &Path, flags: OFlags, display: &Path) -> Result<File> {
    rustix::fs::openat2(
        root,
        rel,
        flags | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
        rustix::fs::ResolveFlags::BENEATH | rustix::fs::ResolveFlags::NO_SYMLINKS,
    )
    .map(File::from)
    .map_err(|e| Error::io("cannot open", display, e.into()))
}

/// Phase 2 and 3 of a pack-ordered restore: fetch, verify and write every piece, then set each
/// file's metadata. Returns the files that failed (their metadata is not set).
fn run_plan(
    repo: &Repo,
    root: &OwnedFd,
    target: &Path,
    plan: Plan,
    threads: usize,
    sh: &Shared,
    progress: &dyn Progress,
) -> Result<()> {
    let Plan { files, by_pack } = plan;
    let failed: Vec<AtomicBool> = (0..files.len()).map(|_| AtomicBool::new(false)).collect();
    let mut packs: Vec<(u32, Vec<Piece>)> = by_pack.into_iter().collect();
    // Largest first, so the last pack to finish is a small one.
    packs.sort_by_key(|(_, p)| std::cmp::Reverse(p.len()));
    let next = Mutex::new(packs.into_iter());
    let reader = repo.index().reader()?;
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                let mut open: Vec<(u32, File)> = Vec::new();
                loop {
                    if sh.stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let Some((pack, mut pieces)) = next.lock().ok().and_then(|mut n| n.next())
                    else {
                        return;
                    };
                    let name = match repo.pack_id(&reader, pack) {
                        Ok(id) => id.to_hex(),
                        Err(e) => {
                            for p in &pieces {
                                failed[p.file as usize].store(true, Ordering::Relaxed);
                            }
                            sh.error(e);
                            continue;
                        }
                    };
                    pieces.sort_by_key(|p| (p.offset, p.file, p.file_off));
                    let mut i = 0;
                    while i < pieces.len() {
                        // One range: pieces close to each other, up to MAX_RANGE.
                        let start = u64::from(pieces[i].offset);
                        let mut end = start + u64::from(pieces[i].stored_len);
                        let mut j = i + 1;
                        while j < pieces.len() {
                            let s = u64::from(pieces[j].offset);
                            let e = s + u64::from(pieces[j].stored_len);
                            if s > end + COALESCE_GAP || e - start > MAX_RANGE {
                                break;
                            }
                            end = end.max(e);
                            j += 1;
                        }
                        let mut buf = vec![0u8; (end - start) as usize];
                        let fetched = repo.backend().read_at(
                            crate::backend::FileKind::Pack,
                            &name,
                            start,
                            &mut buf,
                        );
                        let mut last: Option<(ObjectId, Vec<u8>)> = None;
                        for p in &pieces[i..j] {
                            let r = fetched
                                .as_ref()
                                .map_err(|e| Error::new(e.kind(), format!("{e:#}")))
                                .and_then(|_| {
                                    if last.as_ref().is_none_or(|(id, _)| *id != p.id) {
                                        let from = (u64::from(p.offset) - start) as usize;
                                        let stored = &mut buf[from..from + p.stored_len as usize];
                                        let plain = repo
                                            .codec()
                                            .decode_object_mut(
                                                &p.id,
                                                crate::format::pack::Kind::Data,
                                                p.flags,
                                                p.raw_len,
                                                stored,
                                            )
                                            .map_err(|e| {
                                                e.context(format!("pack {}", &name[..16]))
                                            })?;
                                        last = Some((p.id, plain));
                                    }
                                    let Some((_, plain)) = last.as_ref() else {
                                        return Err(Error::other("internal: no data"));
                                    };
                                    write_piece(root, target, &files, &mut open, p, plain)
                                });
                            match r {
                                Ok(n) => {
                                    sh.bytes.fetch_add(n, Ordering::Relaxed);
                                    progress.add(0, n);
                                }
                                Err(e) => {
                                    if !failed[p.file as usize].swap(true, Ordering::Relaxed) {
                                        let f = &files[p.file as usize];
                                        sh.error(e.context(target.join(&f.rel).display()));
                                    }
                                }
                            }
                        }
                        i = j;
                    }
                }
            });
        }
    });
    if sh.fatal.lock().map(|f| f.is_some()).unwrap_or(true) {
        return Ok(());
    }
    // Phase 3: metadata of every file that was written in full.
    for (i, f) in files.iter().enumerate() {
        if failed[i].load(Ordering::Relaxed) {
            continue;
        }
        let display = target.join(&f.rel);
        let r = reopen(root, &f.rel, OFlags::RDONLY, &display)
            .and_then(|file| apply_meta(file.as_fd(), &f.entry, sh.file_mode_mask, &display));
        match r {
            Ok(()) => {
                sh.files.fetch_add(1, Ordering::Relaxed);
                progress.add(1, 0);
            }
            Err(e) => sh.error(e),
        }
    }
    Ok(())
}

/// Write one piece into its file (keeping a few files open per thread).
fn write_piece(
    root: &OwnedFd,
    target: &Path,
    files: &[PlannedFile],
    open: &mut Vec<(u32, File)>,
    p: &Piece,
    plain: &[u8],
) -> Result<u64> {
    use std::os::unix::fs::FileExt;
    let f = &files[p.file as usize];
    let pos = match open.iter().position(|(i, _)| *i == p.file) {
        Some(pos) => pos,
        None => {
            if open.len() >= 32 {
                open.remove(0);
            }
            let display = target.join(&f.rel);
            open.push((p.file, reopen(root, &f.rel, OFlags::WRONLY, &display)?));
            open.len() - 1
        }
    };
    open[pos]
        .1
        .write_all_at(plain, p.file_off)
        .map_err(|e| Error::io("cannot write", &target.join(&f.rel), e))?;
    Ok(plain.len() as u64)
}

fn open_or_make_dir(parent: &OwnedFd, name: &[u8], display: &Path) -> Result<OwnedFd> {
    match rustix::fs::statat(parent, name_os(name), AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st)
            if rustix::fs::FileType::from_raw_mode(st.st_mode)
                == rustix::fs::FileType::Directory => {}
        Ok(_) => {
            rustix::fs::unlinkat(parent, name_os(name), AtFlags::empty())
                .map_err(|e| Error::io("cannot replace", display, e.into()))?;
            mkdir(parent, name, display)?;
        }
        Err(rustix::io::Errno::NOENT) => mkdir(parent, name, display)?,
        Err(e) => return Err(Error::io("cannot stat", display, e.into())),
    }
    rustix::fs::openat(
        parent,
        name_os(name),
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::io("cannot open directory", display, e.into()))
}

fn mkdir(parent: &OwnedFd, name: &[u8], display: &Path) -> Result<()> {
    rustix::fs::mkdirat(parent, name_os(name), Mode::from_raw_mode(0o700))
        .map_err(|e| Error::io("cannot create directory", display, e.into()))
}

/// Set the metadata of the restored directories, deepest first, each through a handle opened
/// below `root` (the target, shown as `base`) through no symlink.
fn set_dir_meta(root: &OwnedFd, base: &Path, dirs: &[DirMeta], sh: &Shared) {
    for d in dirs.iter().rev() {
        let display = base.join(&d.rel);
        let rel = if d.rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            d.rel.as_path()
        };
        let r = reopen(root, rel, OFlags::RDONLY | OFlags::DIRECTORY, &display)
            .and_then(|f| apply_meta(f.as_fd(), &d.entry, 0o7777, &display));
        if let Err(e) = r {
            sh.error(e);
        }
    }
}

fn open_target_dir(target: &Path) -> Result<OwnedFd> {
    std::fs::create_dir_all(target).map_err(|e| Error::io("cannot create", target, e))?;
    rustix::fs::open(
        target,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::io("cannot open", target, e.into()))
}

/// Restore `what` (a snapshot root, a directory or a single entry) into `target`.
///
/// A directory's content goes into `target` (created if needed). A single file or symlink goes
/// to `target/NAME` when `target` is an existing directory, else to `target` itself.
pub fn restore(
    repo: &Arc<Repo>,
    what: &Resolved,
    target: &Path,
    opts: &RestoreOptions,
    progress: &dyn Progress,
) -> Result<RestoreStats> {
    let threads = if opts.threads == 0 {
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        // Over a network most of a thread's time is waiting for a response: more in flight.
        if repo.backend().is_remote() {
            cpus.max(2) * 4
        } else {
            cpus
        }
    } else {
        opts.threads
    };
    let sh = Shared {
        files: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        messages: Mutex::new(Vec::new()),
        fatal: Mutex::new(None),
        stop: AtomicBool::new(false),
        file_mode_mask: if opts.preserve_suid {
            0o7777
        } else {
            0o7777 & !SUID_BITS
        },
    };
    // Over a network, restore pack by pack: few large ranged reads instead of one per chunk.
    let by_pack = repo.backend().is_remote()
        && match what {
            Resolved::Root(_) => true,
            Resolved::Entry(e) => e.is_dir(),
        };
    let (tx, rx) = bounded::<Job>(threads * 16);
    let (mut stats, dirs, links) =
        std::thread::scope(|scope| -> Result<(RestoreStats, Vec<DirMeta>, Links)> {
            for _ in 0..threads {
                let rx = rx.clone();
                let sh = &sh;
                scope.spawn(move || {
                    let mut reader = None;
                    for (n, job) in rx.into_iter().enumerate() {
                        if sh.stop.load(Ordering::Relaxed) {
                            continue;
                        }
                        if n % 64 == 0 || reader.is_none() {
                            match repo.index().reader() {
                                Ok(r) => reader = Some(r),
                                Err(e) => {
                                    sh.error(e);
                                    continue;
                                }
                            }
                        }
                        let Some(r) = reader.as_ref() else { continue };
                        let bytes = match &job.entry.node {
                            Node::File { size, .. } => *size,
                            _ => 0,
                        };
                        match restore_file(repo, r, &job, sh) {
                            Ok(()) => progress.add(1, bytes),
                            Err(e) => sh.error(e),
                        }
                    }
                });
            }
            drop(rx);
            let mut walk = Walk {
                repo,
                reader: repo.index().reader()?,
                target,
                jobs: tx,
                plan: by_pack.then(Plan::default),
                dirs: Vec::new(),
                stats: RestoreStats::default(),
                sh: &sh,
                progress,
                links: Links::default(),
                preserve_devices: opts.preserve_devices,
            };
            let res = match what {
                Resolved::Root(tree) => {
                    let fd = Arc::new(open_target_dir(target)?);
                    walk.stats.dirs += 1;
                    walk.tree(fd, Path::new(""), *tree)
                }
                Resolved::Entry(e) => {
                    if let Node::Dir { tree } = &e.node {
                        let fd = Arc::new(open_target_dir(target)?);
                        walk.stats.dirs += 1;
                        walk.dirs.push(DirMeta {
                            rel: PathBuf::new(),
                            entry: e.clone(),
                        });
                        walk.tree(fd, Path::new(""), *tree)
                    } else if target.is_dir() {
                        let fd = Arc::new(open_target_dir(target)?);
                        walk.entry(&fd, Path::new(name_os(&e.name)), e.clone())
                    } else {
                        let parent = target
                            .parent()
                            .filter(|p| !p.as_os_str().is_empty())
                            .unwrap_or(Path::new("."));
                        let name = target.file_name().ok_or_else(|| {
                            Error::invalid(format!("{} is not a file name", target.display()))
                        })?;
                        let fd = Arc::new(open_target_dir(parent)?);
                        let mut e = e.clone();
                        e.name = name.as_bytes().to_vec();
                        let rel = PathBuf::from(name);
                        walk.target = parent;
                        walk.entry(&fd, &rel, e)
                    }
                }
            };
            let Walk {
                jobs,
                dirs,
                stats,
                plan,
                links,
                ..
            } = walk;
            drop(jobs);
            res?;
            if let Some(plan) = plan {
                let root = open_target_dir(target)?;
                run_plan(repo, &root, target, plan, threads, &sh, progress)?;
            }
            // Workers finish when the channel drains; the scope joins them. Then hard links and
            // directories.
            Ok((stats, dirs, links))
        })?;
    stats.hard_links = links.make(|e| sh.error(e));
    if let Ok(mut f) = sh.fatal.lock()
        && let Some(e) = f.take()
    {
        return Err(e);
    }
    let base = match what {
        Resolved::Entry(e) if !e.is_dir() => None,
        _ => Some(target),
    };
    if let Some(base) = base {
        let root = open_target_dir(base)?;
        set_dir_meta(&root, base, &dirs, &sh);
    }
    stats.files = sh.files.load(Ordering::Relaxed);
    stats.bytes = sh.bytes.load(Ordering::Relaxed);
    stats.errors = sh.errors.load(Ordering::Relaxed);
    stats.messages = sh.messages.lock().map(|m| m.clone()).unwrap_or_default();
    Ok(stats)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::progress::NoProgress;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn shared() -> Shared {
        Shared {
            files: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            messages: Mutex::new(Vec::new()),
            fatal: Mutex::new(None),
            stop: AtomicBool::new(false),
            file_mode_mask: 0o7777,
        }
    }

    fn dir_meta(rel: &str, mode: u32, uid: u32) -> DirMeta {
        DirMeta {
            rel: PathBuf::from(rel),
            entry: Entry {
                name: rel.as_bytes().to_vec(),
                mode,
                mtime_ns: 0,
                uid,
                gid: uid,
                link: None,
                node: Node::Dir {
                    tree: ObjectId::default(),
                },
            },
        }
    }

    /// A restored directory swapped for a symlink to a directory outside the target (by a local
    /// user who can write into the target) before the modes and owners are applied: the
    /// directory outside keeps its mode and owner; the swap is reported.
    #[test]
    fn directory_metadata_is_not_applied_through_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::create_dir_all(target.join("d/e")).unwrap();
        let victim = dir.path().join("victim");
        std::fs::create_dir_all(victim.join("e")).unwrap();
        for p in [&victim, &victim.join("e")] {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        std::fs::rename(target.join("d"), dir.path().join("d.moved")).unwrap();
        std::os::unix::fs::symlink(&victim, target.join("d")).unwrap();

        let root = open_target_dir(&target).unwrap();
        let sh = shared();
        let dirs = [
            dir_meta("", 0o750, 4242),
            dir_meta("d", 0o777, 4242),
            dir_meta("d/e", 0o777, 4242),
        ];
        set_dir_meta(&root, &target, &dirs, &sh);

        for p in [&victim, &victim.join("e")] {
            let md = std::fs::metadata(p).unwrap();
            assert_eq!(md.mode() & 0o7777, 0o755, "{} was changed", p.display());
            assert_ne!(md.uid(), 4242, "{} was given away", p.display());
        }
        assert_eq!(sh.errors.load(Ordering::Relaxed), 2);
        let md = std::fs::metadata(&target).unwrap();
        assert_eq!(md.mode() & 0o7777, 0o750, "the target itself is set");
    }

    /// A snapshot of `src` taken into a new repository under `d`.
    fn snapshot_of(d: &Path, src: &Path) -> (Arc<Repo>, ObjectId) {
        let repo =
            Arc::new(Repo::init(&d.join("repo"), &crate::repo::InitOptions::default()).unwrap());
        let opts = crate::snapshot::SnapshotOptions {
            space: Some("t".into()),
            ..Default::default()
        };
        let out = crate::snapshot::snapshot(&repo, src, &opts, &NoProgress).unwrap();
        (repo, out.snapshot.root)
    }

    fn chmod(p: &Path, mode: u32) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    fn mtime_ns(md: &std::fs::Metadata) -> i64 {
        md.mtime() * 1_000_000_000 + md.mtime_nsec()
    }

    /// A tree restored into a folder: contents, modes and modification times as taken,
    /// set-user-ID dropped, symlinks restored as links; symlinks already in the target where
    /// the tree has a file or a folder are replaced, never followed.
    #[test]
    fn a_tree_is_restored_with_contents_modes_and_links_never_following_the_target() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        std::fs::create_dir_all(src.join("sub")).unwrap();
        std::fs::write(src.join("a.txt"), "hello").unwrap();
        chmod(&src.join("a.txt"), 0o640);
        std::fs::write(src.join("sub/run"), vec![3u8; 200_000]).unwrap();
        chmod(&src.join("sub/run"), 0o4755);
        chmod(&src.join("sub"), 0o750);
        std::os::unix::fs::symlink("../a.txt", src.join("sub/up")).unwrap();
        std::os::unix::fs::symlink("/nonexistent", src.join("dangling")).unwrap();
        let (repo, root) = snapshot_of(d.path(), &src);

        // The target holds symlinks to outside where the tree has a file and a folder.
        let outside = d.path().join("outside");
        std::fs::create_dir_all(outside.join("dir")).unwrap();
        std::fs::write(outside.join("file"), "keep").unwrap();
        let target = d.path().join("target");
        std::fs::create_dir_all(&target).unwrap();
        std::os::unix::fs::symlink(outside.join("file"), target.join("a.txt")).unwrap();
        std::os::unix::fs::symlink(outside.join("dir"), target.join("sub")).unwrap();

        let opts = RestoreOptions::default();
        let stats = restore(&repo, &Resolved::Root(root), &target, &opts, &NoProgress).unwrap();
        assert_eq!(stats.errors, 0, "{:?}", stats.messages);
        assert_eq!((stats.files, stats.symlinks), (2, 2));
        assert_eq!(stats.bytes, 5 + 200_000);

        assert_eq!(
            std::fs::read_to_string(outside.join("file")).unwrap(),
            "keep"
        );
        assert_eq!(std::fs::read_dir(outside.join("dir")).unwrap().count(), 0);
        for (rel, mode) in [("a.txt", 0o640), ("sub/run", 0o755), ("sub", 0o750)] {
            let got = std::fs::symlink_metadata(target.join(rel)).unwrap();
            let want = std::fs::symlink_metadata(src.join(rel)).unwrap();
            assert!(!got.file_type().is_symlink(), "{rel} is still a symlink");
            assert_eq!(got.mode() & 0o7777, mode, "mode of {rel}");
            assert_eq!(mtime_ns(&got), mtime_ns(&want), "mtime of {rel}");
        }
        assert_eq!(std::fs::read(target.join("a.txt")).unwrap(), b"hello");
        assert_eq!(
            std::fs::read(target.join("sub/run")).unwrap(),
            vec![3u8; 200_000]
        );
        for (rel, to) in [("sub/up", "../a.txt"), ("dangling", "/nonexistent")] {
            let link = std::fs::read_link(target.join(rel)).unwrap();
            assert_eq!(link, Path::new(to), "{rel}");
        }

        // Asked for, the set-user-ID bit comes back.
        let again = d.path().join("again");
        let opts = RestoreOptions {
            preserve_suid: true,
            ..RestoreOptions::default()
        };
        restore(&repo, &Resolved::Root(root), &again, &opts, &NoProgress).unwrap();
        let md = std::fs::metadata(again.join("sub/run")).unwrap();
        assert_eq!(md.mode() & 0o7777, 0o4755);
    }
}
