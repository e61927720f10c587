//! puce-fuse: the FUSE view of spaces and snapshots (`puce mount`).
//!
//! - [`fs`]: the file system over `puce_core` (no fuser types; tested without a kernel):
//!   lookups, changes, open files, commits, following snapshots made elsewhere;
//! - [`space`]: a space's live state (its uncommitted changes), below [`fs`];
//! - [`inode`]: the inode table; [`cache`]: the bounded object cache;
//! - [`writeback`]: the write-back area and its journal format;
//! - [`fuse`]: the fuser 0.18 adapter; `passthrough`: how it answers opens (through the
//!   mount, or with the kernel doing the I/O itself); [`error`]: errno mapping.
//!
//! The promises made to users are in `docs/fuse-semantics.md`.

pub mod cache;
pub mod error;
pub mod fs;
pub mod fuse;
pub mod inode;
mod passthrough;
pub mod space;
pub mod writeback;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::sys::signal::{SigSet, Signal};
use puce_core::{Error, ErrorKind, Repo, Result};

pub use fs::{MountConfig, PuceFs};

/// Options of the kernel mount.
#[derive(Debug, Clone, Default)]
pub struct KernelOptions {
    /// Let other users in (`allow_other`; a non-root user needs `user_allow_other` in
    /// `/etc/fuse.conf`).
    pub allow_other: bool,
    /// Request-handling threads (default: [`default_threads`]).
    pub threads: Option<usize>,
    /// Serve every read and write of files being changed through the mount, even when the
    /// kernel could do them itself on the local copy (FUSE passthrough, for root on Linux 6.9
    /// and later).
    pub no_passthrough: bool,
}

/// Where the kernel says whether it wakes a FUSE server thread on the CPU of the process
/// waiting for the answer (a `fuse` module parameter of some kernels).
const WAKE_HERE: &str = "/sys/module/fuse/parameters/wake_here";

/// Whether the kernel wakes the server thread on the caller's CPU: `None` when this kernel
/// has no such setting.
pub fn kernel_wakes_here() -> Option<bool> {
    let v = std::fs::read_to_string(WAKE_HERE).ok()?;
    Some(matches!(v.trim(), "Y" | "y" | "1"))
}

/// Request threads when none are asked for, given [`kernel_wakes_here`]. Every FUSE request
/// is a round trip between the caller and a server thread; on a virtual machine, a wake-up on
/// another CPU costs tens of microseconds, a switch on the same CPU a few (docs/decisions.md).
/// When the kernel wakes the server on the caller's CPU, one thread that follows the caller is
/// fastest; otherwise four, so that one of them is often awake already.
pub fn default_threads(wakes_here: Option<bool>) -> usize {
    if wakes_here == Some(true) { 1 } else { 4 }
}

/// Check that `mountpoint` can be mounted on: an existing directory, not a stale mount left
/// by a crashed process, not already mounted.
pub fn check_mountpoint(mountpoint: &Path) -> Result<PathBuf> {
    match std::fs::metadata(mountpoint) {
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
            return Err(Error::new(
                ErrorKind::Busy,
                format!(
                    "{p} is a stale mount left by a puce mount process that died: unmount it with \
                     `fusermount3 -u {p}` (as root: `umount -l {p}`), then run puce mount again",
                    p = mountpoint.display()
                ),
            ));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::not_found(format!(
                "mount point {p} does not exist: create it with `mkdir -p {p}`",
                p = mountpoint.display()
            )));
        }
        Err(e) => return Err(Error::io("cannot use mount point", mountpoint, e)),
        Ok(md) if !md.is_dir() => {
            return Err(Error::invalid(format!(
                "mount point {} is not a directory",
                mountpoint.display()
            )));
        }
        Ok(_) => {}
    }
    let abs = std::fs::canonicalize(mountpoint)
        .map_err(|e| Error::io("cannot resolve", mountpoint, e))?;
    if let Some(fstype) = mounted_at(&abs) {
        return Err(Error::new(
            ErrorKind::Busy,
            format!(
                "{p} is already a mount point ({fstype}): unmount it first (`fusermount3 -u {p}` \
                 for a puce mount) or choose another directory",
                p = abs.display()
            ),
        ));
    }
    Ok(abs)
}

/// The file-system type mounted exactly at `path`, from `/proc/self/mountinfo`.
pub fn mounted_at(path: &Path) -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let want = path.to_str()?;
    for line in info.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(mp) = fields.get(4) else { continue };
        if unescape(mp) == want {
            let sep = fields.iter().position(|f| *f == "-")?;
            return fields.get(sep + 1).map(|s| s.to_string());
        }
    }
    None
}

fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8)
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn can_open_dev_fuse() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .is_ok()
}

/// How long a stopping mount waits, once detached, for the kernel to end the FUSE connection
/// before it stops anyway (a process still holds something open in it: a pipe, a file, a
/// working directory). The kernel ends the connection when the process exits.
const DETACHED_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

/// Unmount `mountpoint`; if it is busy, detach it lazily (open files then see errors).
pub fn unmount(mountpoint: &Path) -> Result<()> {
    let run = |args: &[&str]| {
        std::process::Command::new(args[0])
            .args(&args[1..])
            .arg(mountpoint)
            .stderr(std::process::Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    if run(&["fusermount3", "-u"]) || run(&["umount"]) {
        return Ok(());
    }
    tracing::warn!(
        "{} is busy (files open in it): detaching it",
        mountpoint.display()
    );
    if run(&["fusermount3", "-u", "-z"]) || run(&["umount", "-l"]) {
        return Ok(());
    }
    Err(Error::other(format!(
        "cannot unmount {}: run `fusermount3 -u {}`",
        mountpoint.display(),
        mountpoint.display()
    )))
}

/// Block SIGINT, SIGTERM and SIGHUP in the calling thread, and so in every thread it starts
/// from now on, so that [`mount`] receives them in a thread of its own and unmounts cleanly.
/// Call it before anything starts a thread, opening the repository included: a network
/// backend starts its runtime's threads there, and a thread that does not block them takes
/// the signal and ends the process, leaving a stale mount behind.
pub fn block_stop_signals() -> Result<SigSet> {
    let mut signals = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        signals.add(s);
    }
    signals
        .thread_block()
        .map_err(|e| Error::other(format!("cannot block signals: {e}")))?;
    Ok(signals)
}

/// Mount `repo` at `cfg.mountpoint` and serve it until it is unmounted or the process gets
/// SIGINT, SIGTERM or SIGHUP (then pending changes are committed and the mount is removed; a
/// mount kept busy by a process is detached, and this returns after `DETACHED_GRACE` while the
/// kernel still holds the connection: the caller should then exit, which ends it).
/// `ready` runs once the mount is usable. Call [`block_stop_signals`] before starting any
/// thread, before opening `repo` (this function calls it too, for the threads it starts).
pub fn mount(
    repo: Arc<Repo>,
    mut cfg: MountConfig,
    kopts: &KernelOptions,
    ready: impl FnOnce(&PuceFs),
) -> Result<()> {
    let signals = block_stop_signals()?;
    let mountpoint = check_mountpoint(&cfg.mountpoint)?;
    cfg.mountpoint = mountpoint.clone();
    let read_only = cfg.read_only;
    let fs = Arc::new(PuceFs::new(repo, cfg)?);
    fs.start()?;

    let mut config = ::fuser::Config::default();
    config.mount_options = vec![
        ::fuser::MountOption::FSName("puce".into()),
        ::fuser::MountOption::Subtype("puce".into()),
        ::fuser::MountOption::DefaultPermissions,
        ::fuser::MountOption::NoDev,
        ::fuser::MountOption::NoSuid,
        if read_only {
            ::fuser::MountOption::RO
        } else {
            ::fuser::MountOption::RW
        },
    ];
    if kopts.allow_other {
        config.acl = ::fuser::SessionACL::All;
    }
    let wakes_here = kernel_wakes_here();
    let threads = kopts
        .threads
        .unwrap_or_else(|| default_threads(wakes_here))
        .max(1);
    match wakes_here {
        Some(false) => tracing::info!(
            "{threads} request threads; this kernel can wake the mount on the caller's CPU, \
             which makes many small file operations up to 3 times faster on a virtual machine: as \
             root, `echo Y > {WAKE_HERE}` (docs/guide.md, \"Mount speed\")"
        ),
        _ => tracing::debug!("{threads} request threads"),
    }
    config.n_threads = Some(threads);
    config.clone_fd = can_open_dev_fuse();
    let mut session = ::fuser::Session::new(
        fuse::Adapter::new(fs.clone(), !kopts.no_passthrough),
        &mountpoint,
        &config,
    )
    .map_err(|e| {
        Error::other(format!(
            "cannot mount at {}: {e} (is the fuse3 package installed and /dev/fuse \
             present? a non-root user needs fusermount3)",
            mountpoint.display()
        ))
    })?;
    fs.set_invalidator(Arc::new(fuse::KernelNotifier(session.notifier())));
    let mut unmounter = session.unmount_callable();
    // The session runs in a thread of its own, so that a stop does not wait for the processes
    // that keep a detached mount busy (see `DETACHED_GRACE`).
    let (ended_tx, ended) = crossbeam_channel::bounded::<std::io::Result<()>>(1);
    let (detached_tx, detached) = crossbeam_channel::bounded::<()>(1);

    let bg = {
        let fs = fs.clone();
        std::thread::Builder::new()
            .name("puce-commit".into())
            .spawn(move || fs.run_background())
            .map_err(|e| Error::other("cannot start a thread").with_source(e))?
    };
    let done = Arc::new(AtomicBool::new(false));
    {
        let fs = fs.clone();
        let done = done.clone();
        let mp = mountpoint.clone();
        std::thread::Builder::new()
            .name("puce-signals".into())
            .spawn(move || {
                loop {
                    let Ok(sig) = signals.wait() else { return };
                    if done.load(Ordering::SeqCst) {
                        return;
                    }
                    tracing::warn!("{sig}: committing pending changes and unmounting");
                    if let Err(e) = fs.commit_all() {
                        tracing::error!("commit before unmount failed: {e:#}");
                    }
                    if unmounter.unmount().is_err()
                        && let Err(e) = unmount(&mp)
                    {
                        tracing::error!("{e:#}");
                        continue;
                    }
                    let _ = detached_tx.send(());
                    return;
                }
            })
            .map_err(|e| Error::other("cannot start a thread").with_source(e))?;
    }
    std::thread::Builder::new()
        .name("puce-session".into())
        .spawn(move || {
            let _ = ended_tx.send(session.run());
        })
        .map_err(|e| Error::other("cannot start a thread").with_source(e))?;
    ready(&fs);
    let served = crossbeam_channel::select! {
        recv(ended) -> r => r.unwrap_or(Ok(())),
        recv(detached) -> _ => ended.recv_timeout(DETACHED_GRACE).unwrap_or_else(|_| {
            tracing::warn!(
                "{} is detached, but a process still holds a file, pipe or directory open in \
                 it: stopping anyway (what that process then asks of the mount fails with \
                 ENOTCONN)",
                mountpoint.display()
            );
            Ok(())
        }),
    };
    done.store(true, Ordering::SeqCst);
    fs.shutdown();
    let _ = bg.join();
    let committed = fs.commit_all();
    // Wake the signal thread so that it ends (it sees `done`).
    let _ = nix::sys::signal::kill(nix::unistd::Pid::this(), Signal::SIGHUP);
    served
        .map_err(|e| Error::other(format!("the mount at {} failed: {e}", mountpoint.display())))?;
    committed.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_unescape() {
        assert_eq!(unescape("/a\\040b"), "/a b");
        assert_eq!(unescape("/plain"), "/plain");
        assert!(mounted_at(Path::new("/")).is_some());
    }

    #[test]
    fn mountpoint_errors_say_what_to_do() {
        let d = tempfile::tempdir().unwrap();
        let missing = d.path().join("nope");
        let e = check_mountpoint(&missing).unwrap_err();
        assert!(format!("{e}").contains("mkdir -p"), "{e}");
        let f = d.path().join("file");
        std::fs::write(&f, b"x").unwrap();
        assert_eq!(
            check_mountpoint(&f).unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
        check_mountpoint(d.path()).unwrap();
    }
}

#[cfg(test)]
mod fs_tests;
