//! What the node remembers between runs, for `puce node status` and the scheduler:
//! `NODE_DIR/state.json` (per peer: last attempt, last success, last error, what the peer had
//! at the last contact, the last report) and `NODE_DIR/daemon.json` with `daemon.lock` (held by
//! a running daemon). The CLI and the daemon both update the state: each update takes
//! `state.lock`, reads, changes and atomically replaces the file.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::path::Path;

use rustix::fs::FlockOperation;
use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};
use crate::report::SyncReport;

/// State file name.
pub const STATE_FILE: &str = "state.json";
/// Lock serialising state updates.
pub const STATE_LOCK: &str = "state.lock";
/// Held (flock) by a running daemon.
pub const DAEMON_LOCK: &str = "daemon.lock";
/// Written by a running daemon: pid, listening address.
pub const DAEMON_FILE: &str = "daemon.json";

/// A peer's state.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct PeerState {
    /// The peer's name when last seen.
    pub name: String,
    /// Last sync attempt (either side started it), ns since the epoch.
    pub last_attempt_ns: Option<i64>,
    /// Last sync that completed without error.
    pub last_success_ns: Option<i64>,
    /// Failed attempts since the last success.
    pub failures: u32,
    /// The last error, if the last attempt failed.
    pub last_error: Option<String>,
    /// When the daemon plans the next sync, ns since the epoch.
    pub next_due_ns: Option<i64>,
    /// Per space: the snapshot ids the peer had at the last contact (hex).
    pub spaces: BTreeMap<String, Vec<String>>,
    /// Per space: the last time it was moved (either way) without error, ns since the epoch.
    pub space_success_ns: BTreeMap<String, i64>,
    /// The last report.
    pub last_report: Option<SyncReport>,
}

/// The daemon's last data check.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct CheckState {
    /// When it started, ns since the epoch.
    pub last_ns: Option<i64>,
    /// Whether it found nothing wrong.
    pub ok: bool,
    /// Problems found.
    pub problems: u64,
    /// Packs read.
    pub packs_read: u64,
    /// How far the rotation of sampled checks is through the packs (0 to 1): the share of the
    /// data checked by this check and the ones since the rotation last started over.
    pub coverage: Option<f64>,
    /// Objects healed from peers afterwards.
    pub healed: u64,
    /// Objects no peer could supply.
    pub lost: u64,
    /// The error that stopped the check or the heal, if any.
    pub error: Option<String>,
    /// Damaged files, `space:path` (the first [`MAX_PATHS`]).
    pub damaged_paths: Vec<String>,
    /// Files whose damage no peer could heal, `space:path` (the first [`MAX_PATHS`]).
    pub lost_paths: Vec<String>,
}

/// Most paths kept in [`CheckState`].
pub const MAX_PATHS: usize = 20;

/// The whole state.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct NodeState {
    /// Per peer id (readable form).
    pub peers: BTreeMap<String, PeerState>,
    /// The daemon's last scheduled check of the data.
    pub check: Option<CheckState>,
}

/// Written by the daemon at start.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DaemonInfo {
    /// Process id.
    pub pid: u32,
    /// The address it listens on.
    pub listen: String,
    /// Start, ns since the epoch.
    pub started_ns: i64,
}

fn lock(dir: &Path, name: &str, op: FlockOperation) -> Result<File> {
    let p = dir.join(name);
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&p)
        .map_err(|e| Error::from(puce_core::Error::io("cannot open", &p, e)))?;
    rustix::fs::flock(&f, op).map_err(|e| {
        if e == rustix::io::Errno::WOULDBLOCK {
            Error::new(ErrorKind::Config, format!("{} is locked", p.display()))
        } else {
            Error::from(puce_core::Error::io("cannot lock", &p, e.into()))
        }
    })?;
    Ok(f)
}

/// Run `f` under the state lock (for the other files of the node directory the CLI and the
/// daemon both write).
pub(crate) fn locked<T>(dir: &Path, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let _guard = lock(dir, STATE_LOCK, FlockOperation::LockExclusive)?;
    f()
}

impl NodeState {
    /// Read the state (empty if there is none yet).
    pub fn load(dir: &Path) -> Result<NodeState> {
        let p = dir.join(STATE_FILE);
        match std::fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| {
                Error::new(
                    ErrorKind::Config,
                    format!(
                        "{} is damaged ({e}): remove it (only status history is lost)",
                        p.display()
                    ),
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(NodeState::default()),
            Err(e) => Err(puce_core::Error::io("cannot read", &p, e).into()),
        }
    }

    /// Change the state under the lock and write it back durably.
    pub fn update<T>(dir: &Path, f: impl FnOnce(&mut NodeState) -> T) -> Result<T> {
        let _guard = lock(dir, STATE_LOCK, FlockOperation::LockExclusive)?;
        let mut s = NodeState::load(dir)?;
        let out = f(&mut s);
        let bytes = serde_json::to_vec_pretty(&s)
            .map_err(|e| Error::internal(format!("cannot encode the node state: {e}")))?;
        puce_core::fsutil::write_atomic(&dir.join(STATE_FILE), dir, &bytes)?;
        Ok(out)
    }
}

/// The lock a running daemon holds; released when dropped (or when the process dies).
#[derive(Debug)]
pub struct DaemonLock {
    _file: File,
}

impl DaemonLock {
    /// Take the daemon lock, failing if another daemon holds it.
    pub fn acquire(dir: &Path, info: &DaemonInfo) -> Result<DaemonLock> {
        let f = lock(dir, DAEMON_LOCK, FlockOperation::NonBlockingLockExclusive).map_err(|_| {
            let other = read_daemon(dir)
                .map(|d| format!(" (pid {}, listening on {})", d.pid, d.listen))
                .unwrap_or_default();
            Error::new(
                ErrorKind::Config,
                format!(
                    "a daemon is already running for {}{other}: stop it first",
                    dir.display()
                ),
            )
        })?;
        let bytes = serde_json::to_vec_pretty(info)
            .map_err(|e| Error::internal(format!("cannot encode daemon info: {e}")))?;
        puce_core::fsutil::write_atomic(&dir.join(DAEMON_FILE), dir, &bytes)?;
        Ok(DaemonLock { _file: f })
    }
}

fn read_daemon(dir: &Path) -> Option<DaemonInfo> {
    std::fs::read(dir.join(DAEMON_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
}

/// The running daemon, if one holds the lock.
pub fn running_daemon(dir: &Path) -> Option<DaemonInfo> {
    let p = dir.join(DAEMON_LOCK);
    let f = File::open(p).ok()?;
    match rustix::fs::flock(&f, FlockOperation::NonBlockingLockShared) {
        Ok(()) => {
            let _ = rustix::fs::flock(&f, FlockOperation::Unlock);
            None
        }
        Err(_) => read_daemon(dir),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_and_daemon_lock() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(NodeState::load(d.path()).unwrap(), NodeState::default());
        NodeState::update(d.path(), |s| {
            s.peers.entry("X".into()).or_default().failures = 2;
        })
        .unwrap();
        assert_eq!(NodeState::load(d.path()).unwrap().peers["X"].failures, 2);
        assert!(running_daemon(d.path()).is_none());
        let info = DaemonInfo {
            pid: 1,
            listen: "127.0.0.1:1".into(),
            started_ns: 0,
        };
        let l = DaemonLock::acquire(d.path(), &info).unwrap();
        assert_eq!(running_daemon(d.path()), Some(info.clone()));
        let e = DaemonLock::acquire(d.path(), &info).unwrap_err();
        assert!(e.to_string().contains("already running"), "{e}");
        drop(l);
        assert!(running_daemon(d.path()).is_none());
    }
}
