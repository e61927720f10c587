//! Garbage collection: [`plan`] first (steps 1 and 2, nothing changed: what `--dry-run`
//! prints), then [`execute`] (steps 3 to 5). See `docs/design.md`, "Garbage collection".
//!
//! 1. Mark: walk every snapshot; set one bit per reachable object, in a bitset per pack indexed
//!    by the object's entry number (1 bit per object, plus ~100 bytes per pack).
//! 2. Plan: read each pack's trailer; a pack with nothing live is deleted, a pack whose unused
//!    share exceeds the threshold is repacked, others are kept. Packs indexed after gc started
//!    belong to concurrent writers and are not judged. Packs the index does not list are deleted
//!    if no writer session is live.
//! 3. Condemn: the dead objects of doomed packs move to the `condemned` table. Readers still find
//!    them; writers no longer do, so from now on they store their own copy.
//! 4. Wait for the writer sessions that were live when objects were condemned (they may have
//!    decided to reuse one), up to a limit; then mark again from the snapshots committed since
//!    step 1 and rescue any condemned object they reference.
//! 5. Repack: copy the live objects of doomed packs, as stored, into new packs (fsynced and
//!    published); then, in one index transaction, point the objects at the new packs, forget the
//!    old packs and their condemned objects; then delete the old files.
//!
//! A crash at any point leaves a consistent repository: before step 5's transaction the old
//! packs are still indexed (condemned objects are still readable, and the next gc rescues or
//! deletes them); after it, the old files are unindexed leftovers the next gc removes.

use std::fs::File;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustix::fs::FlockOperation;
use serde::Serialize;

use crate::backend::FileKind;
use crate::error::{Error, ErrorKind, Result};
use crate::hash::SnapshotId;
use crate::progress::Progress;
use crate::repo::Repo;

mod execute;
mod keep;
mod plan;

pub use execute::execute;
pub use keep::{KeepReport, keep_reachable};
pub use plan::{PackFate, Plan, plan};

/// Options of a gc run.
#[derive(Debug, Clone)]
pub struct GcOptions {
    /// Repack a pack when more than this share of its bytes is unused (0.0 to 1.0).
    pub repack_unused: f64,
    /// How long to wait for writers that were running when objects were condemned.
    pub max_wait: Duration,
}

impl Default for GcOptions {
    fn default() -> Self {
        GcOptions {
            repack_unused: 0.2,
            max_wait: Duration::from_secs(600),
        }
    }
}

/// What a gc run did, or, as [`Plan::report`], would do.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GcReport {
    /// Whether this was a plan only.
    pub dry_run: bool,
    /// Snapshots marked from.
    pub snapshots: u64,
    /// Objects reachable from them.
    pub live_objects: u64,
    /// Packs in the index at the start.
    pub packs: u64,
    /// Packs deleted (nothing live in them).
    pub packs_deleted: u64,
    /// Packs rewritten (too much unused).
    pub packs_repacked: u64,
    /// Packs not listed by the index, deleted.
    pub packs_orphaned: u64,
    /// Objects removed.
    pub objects_removed: u64,
    /// Their stored bytes (the unit of the ledger, `crate::ledger`: pack framing not counted).
    pub objects_removed_bytes: u64,
    /// Bytes of pack files before.
    pub bytes_before: u64,
    /// Bytes of pack files freed (deleted minus newly written).
    pub bytes_freed: u64,
    /// Bytes of live objects copied into new packs.
    pub bytes_rewritten: u64,
    /// Unused bytes left in kept packs (below the repack threshold).
    pub bytes_unused_kept: u64,
    /// Objects referenced by snapshots but missing from the index (run `puce check`).
    pub missing_objects: u64,
    /// Writer sessions gc waited for.
    pub sessions_waited: u64,
    /// Milliseconds spent waiting for them.
    pub waited_ms: u64,
    /// Objects rescued because a snapshot committed during gc references them.
    pub rescued: u64,
    /// True when writers did not finish in time: the work is left for the next gc.
    pub deferred: bool,
}

/// Held while gc runs: one gc at a time per repository.
pub(crate) struct GcLock(#[allow(dead_code)] File);

/// Take the repository's gc lock: one gc (or heal, which also retires packs) at a time.
pub(crate) fn gc_lock(repo: &Repo) -> Result<GcLock> {
    try_gc_lock(repo)?.ok_or_else(|| {
        Error::new(
            ErrorKind::Busy,
            "another gc is running on this repository: wait for it to finish",
        )
    })
}

/// The gc lock if nobody holds it. Besides gc and heal, whatever indexes packs it did not write
/// (adopting orphan packs, rebuilding the index) holds it: gc deletes the packs the index does
/// not list, so adopting one while gc runs would hand a writer a pack gc is about to delete.
pub(crate) fn try_gc_lock(repo: &Repo) -> Result<Option<GcLock>> {
    let dir = repo.root().join("locks");
    crate::fsutil::create_dir_durable(&dir)?;
    let path = dir.join("gc");
    let f = crate::fsutil::private_file()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io("cannot create", &path, e))?;
    match rustix::fs::flock(&f, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(Some(GcLock(f))),
        Err(_) => Ok(None),
    }
}

/// Test hook, in debug builds only (release builds ignore it): with `PUCE_TEST_GC_PAUSE=DIR`,
/// gc creates `DIR/paused` once its plan is made and, as [`execute`] begins, its condemned
/// objects are recorded; it waits until `DIR/resume` exists before it waits for writers,
/// rescues and deletes. End-to-end tests use it to run pulls, snapshots and mount commits in
/// that window.
fn pause_for_tests() -> Result<()> {
    if !cfg!(debug_assertions) {
        return Ok(());
    }
    let Some(dir) = std::env::var_os("PUCE_TEST_GC_PAUSE") else {
        return Ok(());
    };
    let dir = std::path::PathBuf::from(dir);
    let paused = dir.join("paused");
    std::fs::write(&paused, b"").map_err(|e| Error::io("cannot create", &paused, e))?;
    let start = Instant::now();
    while !dir.join("resume").exists() {
        if start.elapsed() > Duration::from_secs(600) {
            return Err(Error::other(format!(
                "test hook PUCE_TEST_GC_PAUSE: {} did not appear within 10 minutes",
                dir.join("resume").display()
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Run gc on `repo`: [`plan`], then [`execute`].
pub fn gc(repo: &Arc<Repo>, opts: &GcOptions, progress: &dyn Progress) -> Result<GcReport> {
    execute(plan(repo, opts, progress)?, progress)
}

/// Forget snapshots: delete their records (the objects go at the next gc).
pub fn forget(repo: &Repo, ids: &[SnapshotId]) -> Result<()> {
    let gone: Vec<_> = repo
        .snapshots()?
        .into_iter()
        .filter(|s| ids.contains(&s.id))
        .collect();
    // Before the records go: their children's ancestry runs through them.
    crate::forgotten::record_lineage(repo, &gone)?;
    for id in ids {
        repo.backend().remove(FileKind::Snapshot, &id.to_hex())?;
    }
    repo.index().remove_snapshots(ids)?;
    crate::forgotten::end_holds(repo, ids)?;
    // After the records: a scope rebuilt meanwhile must not walk them again.
    crate::reach::forget(repo, &gone)
}
