//! Taking a snapshot of a folder.
//!
//! The calling thread walks the folder in name order and builds trees; files that must be read go
//! to a pool of reader threads (read, chunk, hash, dedup check), whose new chunks go to the
//! [`Saver`]'s compression threads and pack writer. A file is not read again when the parent
//! snapshot has it with the same size and mtime and the stat cache has the same inode, ctime,
//! mtime and size for its path. The snapshot record is written last, after every pack it needs
//! is durable and indexed: a snapshot reported as committed survives a crash.
//!
//! A file is read through a handle opened below the source folder without following any
//! symlink and without blocking (`read::open_listed`), so a file swapped for a symlink or a named
//! pipe between the listing and the read is skipped, never followed or waited on.

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use crossbeam_channel::{bounded, unbounded};

use crate::error::{Error, Result};
use crate::format::snapshot::{MAX_TAGS, Snapshot, check_label, check_space_name};
use crate::hash::SnapshotId;
use crate::index::now_ns;
use crate::progress::Progress;
use crate::repo::{Repo, SnapshotEntry};
use crate::saver::Saver;

mod read;
mod walk;

use read::{FileDone, FileJob, Source};
use walk::{Walked, Walker};

/// Options of a snapshot run.
#[derive(Debug, Clone, Default)]
pub struct SnapshotOptions {
    /// Space name; default: the source folder's name.
    pub space: Option<String>,
    /// Tags to record.
    pub tags: Vec<String>,
    /// Glob patterns to exclude: without `/` they match a name anywhere, with `/` a path
    /// relative to the source folder.
    pub excludes: Vec<String>,
    /// Read every file even when it looks unchanged.
    pub force_read: bool,
    /// Parent snapshot; default: the space's latest.
    pub parent: Option<SnapshotId>,
    /// Host name to record; default: this machine's.
    pub host: Option<String>,
    /// Reader threads; default: the number of CPUs.
    pub threads: usize,
    /// Time to record (nanoseconds); default: now.
    pub time_ns: Option<i64>,
    /// Node name recorded as origin.
    pub origin: String,
}

/// What a snapshot run produced.
#[derive(Debug, Clone)]
pub struct SnapshotOutcome {
    /// The new snapshot's id.
    pub id: SnapshotId,
    /// The record.
    pub snapshot: Snapshot,
    /// Warnings: skipped and changed files.
    pub warnings: Vec<String>,
}

/// The default space name for a source folder: its last component.
pub fn default_space(source: &Path) -> String {
    let abs = fs::canonicalize(source).unwrap_or_else(|_| source.to_path_buf());
    abs.file_name()
        .map(|n| n.to_string_lossy().replace(['/', '@'], "_"))
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "root".to_string())
}

/// Refuse here what a peer would refuse to receive (`Snapshot::check_strings`).
fn check_strings(space: &str, opts: &SnapshotOptions) -> Result<()> {
    check_space_name(space)?;
    if opts.tags.len() > MAX_TAGS {
        return Err(Error::invalid(format!("at most {MAX_TAGS} tags")));
    }
    for t in &opts.tags {
        check_label("tag", t)?;
    }
    if let Some(h) = &opts.host {
        check_label("host", h)?;
    }
    check_label("origin", &opts.origin)?;
    Ok(())
}

/// Take a snapshot of the folder `source`.
pub fn snapshot(
    repo: &Arc<Repo>,
    source: &Path,
    opts: &SnapshotOptions,
    progress: &dyn Progress,
) -> Result<SnapshotOutcome> {
    let started = Instant::now();
    let time_ns = opts.time_ns.unwrap_or_else(now_ns);
    let source = fs::canonicalize(source).map_err(|e| Error::io("cannot open", source, e))?;
    let md = fs::metadata(&source).map_err(|e| Error::io("cannot open", &source, e))?;
    if !md.is_dir() {
        return Err(Error::invalid(format!(
            "{} is not a directory: puce takes snapshots of folders",
            source.display()
        )));
    }
    let space = match &opts.space {
        Some(s) => s.clone(),
        None => default_space(&source),
    };
    check_strings(&space, opts)?;
    let threads = if opts.threads == 0 {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
    } else {
        opts.threads
    };
    // Register the writer session before choosing the parent: gc spares what it reuses.
    let saver = Saver::with_session(repo.clone(), threads, &format!("snapshot {space}"))?;
    let parent: Option<SnapshotEntry> = match &opts.parent {
        Some(id) => Some(
            repo.snapshots()?
                .into_iter()
                .find(|s| s.id == *id)
                .ok_or_else(|| Error::not_found(format!("parent snapshot {id} not found")))?,
        ),
        None => repo.latest(&space)?,
    };
    let (job_tx, job_rx) = bounded::<FileJob>(threads * 8);
    let (done_tx, done_rx) = unbounded::<FileDone>();
    let stop = AtomicBool::new(false);
    let skip_dir = fs::canonicalize(repo.root()).ok();
    let src = Source::open(&source)?;
    let statcache = repo.statcache()?;

    let result = std::thread::scope(|scope| -> Result<Walked> {
        for _ in 0..threads {
            let (rx, tx) = (job_rx.clone(), done_tx.clone());
            let (saver, stop, src) = (&saver, &stop, &src);
            scope.spawn(move || read::reader_thread(repo, saver, src, progress, rx, tx, stop));
        }
        drop(job_rx);
        drop(done_tx);
        let channels = (job_tx, done_rx);
        let w = Walker::new(
            repo,
            &saver,
            statcache.reader()?,
            channels,
            opts,
            progress,
            skip_dir,
        )?;
        w.run(&source, parent.as_ref().map(|p| p.snapshot.root), &stop)
    });
    let (root, mut summary, warnings, stats) = match result {
        Ok(r) => r,
        Err(e) => {
            drop(saver);
            return Err(e);
        }
    };
    let (saved, session) = saver.finish_keep_session()?;
    summary.data_added = saved.raw_bytes;
    summary.data_added_stored = saved.stored_bytes;
    summary.duration_ms = started.elapsed().as_millis() as u64;
    let user = std::env::var("USER").unwrap_or_default();
    let snapshot = Snapshot {
        time_ns,
        space,
        host: opts
            .host
            .clone()
            .unwrap_or_else(|| gethostname::gethostname().to_string_lossy().into_owned()),
        user,
        source: source.to_string_lossy().into_owned(),
        tags: opts.tags.clone(),
        parents: parent.iter().map(|p| p.id).collect(),
        root,
        summary,
        origin: opts.origin.clone(),
    };
    let id = repo.save_snapshot(&snapshot)?;
    session.end(repo)?;
    // The stat cache only ever helps: a failure to update it costs a re-read next time.
    if let Err(e) = statcache.put(&stats) {
        tracing::warn!("cannot update the stat cache: {e:#}");
    }
    Ok(SnapshotOutcome {
        id,
        snapshot,
        warnings,
    })
}
