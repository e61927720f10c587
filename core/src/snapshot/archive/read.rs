//! The reader threads of a snapshot: open each listed file safely below the source folder,
//! chunk it, store its new chunks, and send the result back to the walker.

use std::fs::{File, Metadata};
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use crossbeam_channel::{Receiver, Sender};

use crate::chunking::Chunker;
use crate::error::{Error, ErrorKind, Result};
use crate::format::pack::Kind;
use crate::format::tree::Entry;
use crate::hash::ObjectId;
use crate::index::{IndexReader, StatEntry};
use crate::progress::Progress;
use crate::repo::Repo;
use crate::saver::Saver;

/// A file to read: where it goes in its pending directory, and what the listing saw.
pub(super) struct FileJob {
    pub(super) dir: usize,
    pub(super) slot: usize,
    pub(super) path: PathBuf,
    pub(super) entry: Entry,
    pub(super) stat_key: [u8; 16],
    pub(super) status: FileStatus,
    /// Device and inode the listing saw (`lstat`): the file opened must be that one.
    pub(super) listed: (u64, u64),
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum FileStatus {
    New,
    Changed,
}

pub(super) struct FileDone {
    pub(super) dir: usize,
    pub(super) slot: usize,
    pub(super) result: Result<ReadFile>,
    pub(super) path: PathBuf,
    pub(super) entry: Entry,
    pub(super) stat_key: [u8; 16],
    pub(super) status: FileStatus,
}

pub(super) struct ReadFile {
    pub(super) chunks: Vec<ObjectId>,
    pub(super) size: u64,
    pub(super) mtime_ns: i64,
    pub(super) stat: Option<StatEntry>,
    pub(super) changed_while_reading: bool,
    /// Mode, owner and group of the file read (its own `fstat`).
    pub(super) meta: (u32, u32, u32),
    /// Another file was at the path when it was opened than when it was listed.
    pub(super) replaced: bool,
}

pub(super) fn mtime_ns(md: &Metadata) -> i64 {
    md.mtime().saturating_mul(1_000_000_000) + md.mtime_nsec()
}

pub(super) fn ctime_ns(md: &Metadata) -> i64 {
    md.ctime().saturating_mul(1_000_000_000) + md.ctime_nsec()
}

pub(super) fn stat_entry(md: &Metadata) -> StatEntry {
    StatEntry {
        ino: md.ino(),
        ctime_ns: ctime_ns(md),
        mtime_ns: mtime_ns(md),
        size: md.len(),
    }
}

/// The folder being snapshotted, held open: its files are opened relative to it.
pub(super) struct Source {
    fd: OwnedFd,
    path: PathBuf,
}

impl Source {
    pub(super) fn open(path: &Path) -> Result<Source> {
        let fd = rustix::fs::open(
            path,
            rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .map_err(|e| Error::io("cannot open", path, e.into()))?;
        Ok(Source {
            fd,
            path: path.to_path_buf(),
        })
    }
}

/// Open the regular file `path` (below `src`) for reading: through no symlink (not even a
/// directory swapped for one), without blocking (a named pipe swapped in is not waited on),
/// and with its metadata. Whether it is still the file listed as `listed` (device, inode) is
/// the third value: a file replaced since the listing (an editor saving) is read as it is now.
fn open_listed(src: &Source, path: &Path, listed: (u64, u64)) -> Result<(File, Metadata, bool)> {
    use rustix::fs::{OFlags, ResolveFlags};
    let rel = path
        .strip_prefix(&src.path)
        .map_err(|_| Error::other(format!("internal: {} is outside", path.display())))?;
    let fd = rustix::fs::openat2(
        &src.fd,
        rel,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    )
    .map_err(|e| match e {
        rustix::io::Errno::LOOP | rustix::io::Errno::XDEV => Error::new(
            ErrorKind::Io,
            format!(
                "{} (or a folder above it) became a symbolic link while the snapshot was \
                 running; not followed",
                path.display()
            ),
        ),
        e => Error::io("cannot read", path, e.into()),
    })?;
    let f = File::from(fd);
    let md = f
        .metadata()
        .map_err(|e| Error::io("cannot stat", path, e))?;
    if !md.is_file() {
        return Err(Error::new(
            ErrorKind::Io,
            format!("{} is no longer a regular file", path.display()),
        ));
    }
    // Reads of a regular file do not block anyway; some network file systems honour the flag.
    rustix::fs::fcntl_setfl(&f, OFlags::empty())
        .map_err(|e| Error::io("cannot read", path, e.into()))?;
    let replaced = (md.dev(), md.ino()) != listed;
    Ok((f, md, replaced))
}

fn read_file(
    repo: &Repo,
    saver: &Saver,
    chunker: &mut Option<Chunker<File>>,
    src: &Source,
    job: &FileJob,
    progress: &dyn Progress,
    reader: &mut (IndexReader, u64),
) -> Result<ReadFile> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let (f, before, replaced) = open_listed(src, &job.path, job.listed)?;
        let chunker = match chunker {
            Some(c) => {
                c.reset(f);
                c
            }
            None => chunker.insert(
                Chunker::new(f, repo.config().chunker, 4 << 20).with_gear(repo.codec().gear()),
            ),
        };
        let mut chunks = Vec::new();
        let mut size = 0u64;
        loop {
            let chunk = match chunker.next_chunk() {
                Ok(Some(c)) => c,
                Ok(None) => break,
                Err(e) => return Err(Error::io("cannot read", &job.path, e)),
            };
            let id = repo.object_id(chunk);
            size += chunk.len() as u64;
            let len = chunk.len() as u64;
            let g = saver.generation();
            let storage = |e: Error| e.with_kind(ErrorKind::Storage);
            if g != reader.1 {
                *reader = (repo.index().reader().map_err(storage)?, g);
            }
            if saver.reserve(&reader.0, &id).map_err(storage)? {
                saver
                    .save_reserved(id, Kind::Data, chunk.to_vec())
                    .map_err(storage)?;
            }
            chunks.push(id);
            progress.add(0, len);
        }
        let after = chunker
            .get_ref()
            .metadata()
            .map_err(|e| Error::io("cannot stat", &job.path, e))?;
        let stable = after.len() == size
            && mtime_ns(&after) == mtime_ns(&before)
            && ctime_ns(&after) == ctime_ns(&before);
        if !stable && attempt < 3 {
            continue;
        }
        return Ok(ReadFile {
            chunks,
            size,
            mtime_ns: mtime_ns(&before),
            stat: stable.then(|| stat_entry(&after)),
            changed_while_reading: !stable,
            meta: (before.mode() & 0o7777, before.uid(), before.gid()),
            replaced,
        });
    }
}

impl FileJob {
    fn done(self, result: Result<ReadFile>) -> FileDone {
        FileDone {
            dir: self.dir,
            slot: self.slot,
            result,
            path: self.path,
            entry: self.entry,
            stat_key: self.stat_key,
            status: self.status,
        }
    }
}

/// One reader thread: read the files queued on `jobs` until the queue closes or `stop` is set,
/// sending each result to `done`.
pub(super) fn reader_thread(
    repo: &Repo,
    saver: &Saver,
    src: &Source,
    progress: &dyn Progress,
    jobs: Receiver<FileJob>,
    done: Sender<FileDone>,
    stop: &AtomicBool,
) {
    let g = saver.generation();
    let mut reader = match repo.index().reader() {
        Ok(r) => (r, g),
        Err(e) => {
            for job in jobs {
                let _ = done.send(job.done(Err(Error::new(e.kind(), format!("{e:#}")))));
            }
            return;
        }
    };
    let mut chunker: Option<Chunker<File>> = None;
    for job in jobs {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let result = read_file(repo, saver, &mut chunker, src, &job, progress, &mut reader);
        if done.send(job.done(result)).is_err() {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::fs;
    use std::io::Read;
    use std::time::Duration;

    fn listed(p: &Path) -> (u64, u64) {
        let m = fs::symlink_metadata(p).unwrap();
        (m.dev(), m.ino())
    }

    /// Listed as a regular file, then swapped for a symlink to a file the user cannot read (as
    /// root would follow it): not followed. Nor is a folder above a listed file swapped for a
    /// symlink to another folder holding a file of the same name.
    #[test]
    fn a_file_swapped_for_a_symlink_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fs::create_dir_all(src.join("sub")).unwrap();
        let secret = dir.path().join("secret");
        fs::write(&secret, "secret").unwrap();
        let f = src.join("f");
        fs::write(&f, "mine").unwrap();
        let g = src.join("sub/g");
        fs::write(&g, "mine").unwrap();
        let s = Source::open(&src).unwrap();

        let l = listed(&f);
        fs::remove_file(&f).unwrap();
        std::os::unix::fs::symlink(&secret, &f).unwrap();
        let e = open_listed(&s, &f, l).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");

        let l = listed(&g);
        fs::rename(src.join("sub"), src.join("sub.old")).unwrap();
        let other = dir.path().join("other");
        fs::create_dir(&other).unwrap();
        fs::write(other.join("g"), "secret").unwrap();
        std::os::unix::fs::symlink(&other, src.join("sub")).unwrap();
        let e = open_listed(&s, &g, l).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
    }

    /// Listed as a regular file, then swapped for a named pipe nobody writes to: the open
    /// neither waits for a writer nor reads; the file is reported and skipped.
    #[test]
    fn a_file_swapped_for_a_named_pipe_is_not_waited_on() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().to_path_buf();
        let f = src.join("f");
        fs::write(&f, "mine").unwrap();
        let l = listed(&f);
        fs::remove_file(&f).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &f,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        let (tx, rx) = crossbeam_channel::bounded(1);
        std::thread::spawn(move || {
            let s = Source::open(&src).unwrap();
            let _ = tx.send(open_listed(&s, &f, l).map(|_| ()));
        });
        let r = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("opening a named pipe swapped in for a file blocked");
        let e = r.unwrap_err();
        assert!(e.to_string().contains("no longer a regular file"), "{e}");
    }

    /// A file replaced by another regular file (an editor saving) is read as it is now, and
    /// said to be replaced; the same file is not.
    #[test]
    fn a_replaced_file_is_read_as_it_is_now() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        fs::write(&f, "old").unwrap();
        let s = Source::open(dir.path()).unwrap();
        let l = listed(&f);
        let (_, _, replaced) = open_listed(&s, &f, l).unwrap();
        assert!(!replaced);
        fs::write(dir.path().join("f.new"), "new").unwrap();
        fs::rename(dir.path().join("f.new"), &f).unwrap();
        let (mut file, md, replaced) = open_listed(&s, &f, l).unwrap();
        assert!(replaced);
        assert_eq!(md.len(), 3);
        let mut text = String::new();
        file.read_to_string(&mut text).unwrap();
        assert_eq!(text, "new");
    }
}
