//! Writer sessions: every process that adds objects registers one, so that gc knows which
//! objects may be about to be referenced by a snapshot that is not committed yet.
//!
//! A session is a row in the index's `sessions` table plus a lock file `REPO/locks/<id>` held
//! with `flock` for the session's lifetime. The kernel drops the lock when the process dies, so
//! gc tells a live session from the leftovers of a crashed one by trying to take the lock.
//! A session must be registered *before* the writer reads anything it will build on (the parent
//! snapshot, index lookups): see `docs/design.md`, "Garbage collection".

use std::fs::File;
use std::path::{Path, PathBuf};

use rustix::fs::FlockOperation;

use crate::error::{Error, Result};
use crate::index::{SessionInfo, now_ns};
use crate::repo::Repo;

/// A registered writer session; unregistered on drop.
#[derive(Debug)]
pub struct WriterSession {
    id: u64,
    path: PathBuf,
    lock: Option<File>,
}

fn locks_dir(root: &Path) -> PathBuf {
    root.join("locks")
}

impl WriterSession {
    /// Register a session doing `what` on `repo`.
    pub fn begin(repo: &Repo, what: &str) -> Result<WriterSession> {
        let mut b = [0u8; 8];
        getrandom::fill(&mut b).map_err(|e| Error::other(format!("no random source: {e}")))?;
        let id = u64::from_le_bytes(b) >> 1;
        let dir = locks_dir(repo.root());
        crate::fsutil::create_dir_durable(&dir)?;
        let path = dir.join(format!("{id:016x}"));
        let f = crate::fsutil::private_file()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io("cannot create lock file", &path, e))?;
        rustix::fs::flock(&f, FlockOperation::LockExclusive)
            .map_err(|e| Error::io("cannot lock", &path, e.into()))?;
        let info = SessionInfo {
            pid: std::process::id(),
            host: gethostname::gethostname().to_string_lossy().into_owned(),
            started_ns: now_ns(),
            what: what.to_string(),
        };
        repo.index().add_session(id, &info)?;
        Ok(WriterSession {
            id,
            path,
            lock: Some(f),
        })
    }

    /// The session id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Unregister now (also done on drop).
    pub fn end(mut self, repo: &Repo) -> Result<()> {
        self.finish(Some(repo))
    }

    fn finish(&mut self, repo: Option<&Repo>) -> Result<()> {
        if self.lock.is_none() {
            return Ok(());
        }
        let r = match repo {
            Some(repo) => repo.index().remove_session(self.id),
            None => Ok(()),
        };
        let _ = std::fs::remove_file(&self.path);
        self.lock.take();
        r
    }
}

impl Drop for WriterSession {
    fn drop(&mut self) {
        // Without the repository at hand the row stays; gc sees the lock is free and removes it.
        let _ = self.finish(None);
    }
}

/// Whether the session `id` of the repository at `root` is still held by a live process.
pub fn is_alive(root: &Path, id: u64) -> bool {
    let path = locks_dir(root).join(format!("{id:016x}"));
    let Ok(f) = File::open(&path) else {
        return false;
    };
    match rustix::fs::flock(&f, FlockOperation::NonBlockingLockShared) {
        Ok(()) => {
            let _ = rustix::fs::flock(&f, FlockOperation::Unlock);
            false
        }
        Err(_) => true,
    }
}

/// Live sessions; rows of dead sessions are removed.
pub fn live_sessions(repo: &Repo) -> Result<Vec<(u64, SessionInfo)>> {
    let mut live = Vec::new();
    for (id, info) in repo.index().sessions()? {
        if is_alive(repo.root(), id) {
            live.push((id, info));
        } else {
            repo.index().remove_session(id)?;
            let _ = std::fs::remove_file(locks_dir(repo.root()).join(format!("{id:016x}")));
        }
    }
    Ok(live)
}
