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
    /// Per space: the last sync attempt that moved it, or failed while it was shared with the
    /// peer, ns since the epoch.
    pub space_attempt_ns: BTreeMap<String, i64>,
    /// The last report.
    pub last_report: Option<SyncReport>,
    /// Per space: what the peer said of its copy at the last sync this node started (protocol
    /// revision 4, `GetChecks`), for the replica rules.
    pub checks: BTreeMap<String, PeerCheck>,
    /// Why the peer said nothing of its checks at the last sync this node started, if so.
    pub checks_missing: Option<String>,
    /// What this node flagged about the manifests the peer sent it to hold blind (the last
    /// [`MAX_BLIND_FLAGS`], oldest first).
    pub blind_flags: Vec<BlindFlag>,
}

/// Most blind-holding flags kept per peer in the state (the oldest go first).
pub const MAX_BLIND_FLAGS: usize = 32;

/// A manifest an owner sent to this node, its blind holder, that was flagged
/// (docs/design.md, "Blind holders").
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct BlindFlag {
    /// `mass_removal` (accepted, what it dropped kept by the protection period if there is
    /// one) or `rollback` (refused: its sequence number goes back).
    pub kind: String,
    /// When, ns since the epoch.
    pub at_ns: i64,
    /// The sequence number of the manifest kept before.
    pub seq_before: u64,
    /// The sequence number of the manifest sent.
    pub seq_after: u64,
    /// Stored bytes of the manifest kept before.
    pub bytes_before: u64,
    /// Of those, the bytes the manifest sent no longer lists.
    pub dropped_bytes: u64,
    /// Until when the protection period keeps what it dropped, if it does.
    pub kept_until_ns: Option<i64>,
}

impl PeerState {
    /// Record a blind-holding flag, keeping the last [`MAX_BLIND_FLAGS`].
    pub fn flag_blind(&mut self, f: BlindFlag) {
        self.blind_flags.push(f);
        let over = self.blind_flags.len().saturating_sub(MAX_BLIND_FLAGS);
        self.blind_flags.drain(..over);
    }
}

/// What a peer said of its copy of a space (`GetChecks`): it speaks for itself.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct PeerCheck {
    /// When it said so, ns since the epoch.
    pub asked_ns: i64,
    /// The snapshots (hex ids) it said it holds complete, among those asked about.
    pub held: Vec<String>,
    /// Since when all of its data was read and verified by its checks (at most `asked_ns`).
    pub checked_ns: Option<i64>,
    /// Whether it said its checks found damage that is not healed.
    pub damaged: bool,
}

/// One check of the sampled rotation ([`CheckState::rotation`]).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct RotationStep {
    /// When the check started, ns since the epoch.
    pub started_ns: i64,
    /// Where the rotation stood after it (0 to 1, 1: complete).
    pub position: f64,
    /// Whether it left no damage unhealed (and ran without error).
    pub clean: bool,
}

/// Most steps kept per rotation (a check reading 0.1 % of the packs needs 1000).
pub const MAX_ROTATION_STEPS: usize = 1000;

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
    /// The checks of the rotation in progress, oldest first.
    pub rotation: Vec<RotationStep>,
    /// The checks of the last complete rotation, oldest first.
    pub previous_rotation: Vec<RotationStep>,
}

impl CheckState {
    /// Whether this check left no damage unhealed and ran without error.
    pub fn clean(&self) -> bool {
        self.error.is_none() && self.lost == 0 && (self.ok || self.healed > 0)
    }

    /// Carry the rotation of the previous check (`prev`) on, adding this one (started at
    /// `started_ns`) if it ran.
    pub fn follow(&mut self, prev: Option<&CheckState>, started_ns: i64) {
        if let Some(p) = prev {
            self.rotation.clone_from(&p.rotation);
            self.previous_rotation.clone_from(&p.previous_rotation);
        }
        let Some(position) = self.coverage else {
            return;
        };
        self.rotation.push(RotationStep {
            started_ns,
            position,
            clean: self.clean(),
        });
        if self.rotation.len() > MAX_ROTATION_STEPS {
            // The oldest step goes; damage it left stays on the record.
            let gone = self.rotation.remove(0);
            if let Some(next) = self.rotation.first_mut() {
                next.clean &= gone.clean;
            }
        }
        if position >= 1.0 {
            self.previous_rotation = std::mem::take(&mut self.rotation);
        }
    }

    fn position(&self) -> f64 {
        self.rotation.last().map_or(0.0, |s| s.position)
    }

    /// The checks whose reading is still the latest of some data: the rotation in progress,
    /// and the steps of the last complete one beyond where the rotation now stands.
    fn latest_reads(&self) -> impl Iterator<Item = &RotationStep> {
        let x = self.position();
        self.rotation.iter().chain(
            self.previous_rotation
                .iter()
                .filter(move |s| s.position > x),
        )
    }

    /// Since when every pack was read and verified by the checks: the start of the oldest check
    /// whose reading is still the latest of some data; `None` before a first complete rotation.
    pub fn covered_ns(&self) -> Option<i64> {
        let x = self.position();
        self.previous_rotation
            .iter()
            .find(|s| s.position > x)
            .map(|s| s.started_ns)
    }

    /// Whether damage found by a check is not healed: by one of the checks whose reading is
    /// still the latest of some data, or the last check failed.
    pub fn damaged(&self) -> bool {
        self.latest_reads().any(|s| !s.clean) || self.error.is_some()
    }
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

    /// A check reading `position` of the rotation, started at `t`, clean or not.
    fn step(prev: Option<&CheckState>, t: i64, position: f64, clean: bool) -> CheckState {
        let mut c = CheckState {
            ok: clean,
            problems: u64::from(!clean),
            coverage: Some(position),
            ..CheckState::default()
        };
        c.follow(prev, t);
        c
    }

    #[test]
    fn the_rotation_says_since_when_all_data_was_read_and_whether_damage_is_left() {
        // Thirds of the packs at 10, 20, 30: everything read since 10 once the third ran.
        let c = step(None, 10, 0.34, true);
        assert_eq!((c.covered_ns(), c.damaged()), (None, false));
        let c = step(Some(&c), 20, 0.67, true);
        assert_eq!(c.covered_ns(), None);
        let c = step(Some(&c), 30, 1.0, true);
        assert_eq!((c.covered_ns(), c.damaged()), (Some(10), false));
        // At 40 the first third is read again: the oldest reading left is the one of 20.
        let c = step(Some(&c), 40, 0.34, true);
        assert_eq!(c.covered_ns(), Some(20));
        // Damage left unhealed at 50 in the second third: damaged until it is read clean again.
        let c = step(Some(&c), 50, 0.67, false);
        assert_eq!((c.covered_ns(), c.damaged()), (Some(30), true));
        let c = step(Some(&c), 60, 1.0, true);
        assert_eq!((c.covered_ns(), c.damaged()), (Some(40), true));
        let c = step(Some(&c), 70, 0.34, true);
        assert!(c.damaged());
        let c = step(Some(&c), 80, 0.67, true);
        assert_eq!((c.covered_ns(), c.damaged()), (Some(60), false));
        // A whole check each time (100 %): since its own start.
        let c = step(Some(&c), 90, 1.0, true);
        let c = step(Some(&c), 100, 1.0, true);
        assert_eq!((c.covered_ns(), c.damaged()), (Some(100), false));
        // A check that failed to run says nothing of the data, but is not a clean state.
        let mut failed = CheckState {
            error: Some("cannot read the index".into()),
            ..CheckState::default()
        };
        failed.follow(Some(&c), 110);
        assert_eq!((failed.covered_ns(), failed.damaged()), (Some(100), true));
        // Tiny samples: the steps kept are bounded, and damage dropped with the oldest stays.
        let mut c = step(None, 0, 0.0001, false);
        for t in 1..1500 {
            c = step(Some(&c), t, 0.0001 * (t + 1) as f64, true);
        }
        assert_eq!(c.rotation.len(), MAX_ROTATION_STEPS);
        assert!(c.damaged());
    }
}
