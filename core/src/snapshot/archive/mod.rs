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
use crate::format::snapshot::SnapshotEntry;
use crate::format::snapshot::{MAX_TAGS, Snapshot, check_label, check_space_name};
use crate::hash::SnapshotId;
use crate::index::now_ns;
use crate::progress::Progress;
use crate::repo::Repo;
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
    crate::ledger::check_space_quota(repo, &space, 0, "snapshot refused, nothing stored")?;
    let threads = crate::worker_threads(opts.threads);
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
    // What this snapshot stored counts against the space's quota (objects it reuses from other
    // spaces cost no disk and count from the next snapshot on).
    if let Err(e) = crate::ledger::check_space_quota(
        repo,
        &space,
        saved.stored_bytes,
        "snapshot refused, nothing committed (`puce gc` frees what it stored)",
    ) {
        session.end(repo)?;
        return Err(e);
    }
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::format::tree::Node;
    use crate::hash::ObjectId;
    use crate::progress::NoProgress;
    use crate::repo::InitOptions;
    use std::collections::BTreeMap;
    use std::ffi::OsStr;
    use std::fs::File;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::PermissionsExt;

    /// One entry of a snapshot as the tests see it: kind, mode, and content or target.
    type Listing = BTreeMap<Vec<u8>, (char, u32, Vec<u8>)>;

    /// Every entry of the snapshot's tree, by path.
    fn listing(repo: &Repo, root: ObjectId) -> Listing {
        let r = repo.index().reader().unwrap();
        let mut out = BTreeMap::new();
        crate::vfs::walk(repo, &r, root, b"", &mut |p, e| {
            let data = match &e.node {
                Node::File { chunks, size } => {
                    let mut v = Vec::new();
                    for c in chunks {
                        v.extend(repo.read_object_with(&r, c).unwrap());
                    }
                    assert_eq!(v.len() as u64, *size, "size of {p:?}");
                    v
                }
                Node::Symlink { target } => target.clone(),
                Node::Dir { .. } => Vec::new(),
                other => format!("{other:?}").into_bytes(),
            };
            out.insert(p.to_vec(), (e.type_char(), e.mode, data));
            Ok(())
        })
        .unwrap();
        out
    }

    fn chmod(p: &Path, mode: u32) {
        fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
    }

    /// A small folder: files, nested folders, symlinks (one dangling), a name that is not
    /// UTF-8, a named pipe, and the repository itself inside the folder.
    fn small_tree(src: &Path) {
        fs::create_dir_all(src.join("sub/deeper")).unwrap();
        fs::write(src.join("a.txt"), "hello").unwrap();
        chmod(&src.join("a.txt"), 0o640);
        fs::write(src.join("sub/b.bin"), vec![7u8; 300_000]).unwrap();
        chmod(&src.join("sub/b.bin"), 0o755);
        fs::write(src.join("sub/deeper/empty"), "").unwrap();
        chmod(&src.join("sub/deeper/empty"), 0o644);
        chmod(&src.join("sub/deeper"), 0o755);
        chmod(&src.join("sub"), 0o750);
        std::os::unix::fs::symlink("sub/b.bin", src.join("link")).unwrap();
        std::os::unix::fs::symlink("/nonexistent/x", src.join("dangling")).unwrap();
        let latin1 = src.join(OsStr::from_bytes(b"caf\xe9.txt"));
        fs::write(&latin1, "latin-1").unwrap();
        chmod(&latin1, 0o644);
        rustix::fs::mknodat(
            rustix::fs::CWD,
            src.join("pipe"),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
    }

    /// What the walk yields for a small folder: every file with its bytes and mode, folders,
    /// symlinks as links (never followed), a non-UTF-8 name as its bytes, the named pipe as a
    /// fifo (never opened); the repository inside the folder is left out.
    #[test]
    fn the_walk_yields_files_folders_and_links_of_a_small_tree() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        small_tree(&src);
        let repo = Arc::new(Repo::init(&src.join(".repo"), &InitOptions::default()).unwrap());
        let opts = SnapshotOptions {
            space: Some("t".into()),
            threads: 2,
            ..SnapshotOptions::default()
        };
        let out = snapshot(&repo, &src, &opts, &NoProgress).unwrap();
        let got = listing(&repo, out.snapshot.root);
        let want: Listing = [
            (&b"a.txt"[..], ('-', 0o640, b"hello".to_vec())),
            (b"caf\xe9.txt", ('-', 0o644, b"latin-1".to_vec())),
            (b"dangling", ('l', 0o777, b"/nonexistent/x".to_vec())),
            (b"link", ('l', 0o777, b"sub/b.bin".to_vec())),
            (b"pipe", ('p', 0o644, b"Fifo".to_vec())),
            (b"sub", ('d', 0o750, Vec::new())),
            (b"sub/b.bin", ('-', 0o755, vec![7u8; 300_000])),
            (b"sub/deeper", ('d', 0o755, Vec::new())),
            (b"sub/deeper/empty", ('-', 0o644, Vec::new())),
        ]
        .into_iter()
        .map(|(p, v)| (p.to_vec(), v))
        .collect();
        assert_eq!(got, want);
        let s = &out.snapshot.summary;
        // The fifo counts as a file.
        assert_eq!((s.files, s.dirs, s.symlinks, s.errors), (5, 3, 2, 0));
        assert_eq!(s.bytes, 5 + 7 + 300_000);
        assert!(out.warnings.is_empty(), "{:?}", out.warnings);
        // Unchanged files are not read again; a changed one is.
        fs::write(src.join("a.txt"), "hello, again").unwrap();
        let again = snapshot(&repo, &src, &opts, &NoProgress).unwrap();
        let s = &again.snapshot.summary;
        assert_eq!((s.files_unmodified, s.files_changed), (3, 1));
        assert_eq!(s.bytes_read, 12);
        assert_eq!(
            listing(&repo, again.snapshot.root)[&b"a.txt"[..]].2,
            b"hello, again"
        );
    }

    /// A file the user cannot read, and a folder they cannot list, are skipped with a warning
    /// each and counted as errors; the rest of the snapshot is taken.
    #[test]
    fn unreadable_files_and_folders_are_skipped_with_a_warning() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        fs::create_dir_all(src.join("closed")).unwrap();
        fs::write(src.join("closed/inside"), "x").unwrap();
        fs::write(src.join("secret"), "s").unwrap();
        fs::write(src.join("open"), "o").unwrap();
        chmod(&src.join("secret"), 0o000);
        chmod(&src.join("closed"), 0o000);
        if File::open(src.join("secret")).is_ok() {
            eprintln!(
                "SKIP unreadable_files_and_folders_are_skipped_with_a_warning: this user reads \
                 any file (root); run the test as another user"
            );
            return;
        }
        let repo = Arc::new(Repo::init(&d.path().join("r"), &InitOptions::default()).unwrap());
        let opts = SnapshotOptions {
            space: Some("t".into()),
            ..SnapshotOptions::default()
        };
        let out = snapshot(&repo, &src, &opts, &NoProgress).unwrap();
        chmod(&src.join("closed"), 0o755);
        let got: Vec<Vec<u8>> = listing(&repo, out.snapshot.root).into_keys().collect();
        assert_eq!(got, [&b"closed"[..], b"open"]);
        assert_eq!(out.snapshot.summary.errors, 2, "{:?}", out.warnings);
        for name in ["secret", "closed"] {
            assert!(
                out.warnings
                    .iter()
                    .any(|w| w.contains(name) && w.contains("skipped")),
                "{name}: {:?}",
                out.warnings
            );
        }
    }
}
