//! The file system driven directly, without a kernel: reads, writes, commits, recovery after
//! a crash, merging with a snapshot made elsewhere, bounded memory.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use puce_core::format::tree::Node;
use puce_core::progress::NoProgress;
use puce_core::snapshot::{SnapshotOptions, snapshot};
use puce_core::{InitOptions, Repo};

use crate::error::FsError;
use crate::fs::{Caller, MountConfig, PuceFs, SetAttr};
use crate::inode::{SNAPSHOTS, SPACES};

const ME: Caller = Caller { uid: 0, gid: 0 };

fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut s = seed | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        v.extend_from_slice(&s.to_le_bytes());
    }
    v.truncate(len);
    v
}

struct Env {
    dir: tempfile::TempDir,
    repo: Arc<Repo>,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let repo = Arc::new(Repo::init(&dir.path().join("repo"), &InitOptions::default()).unwrap());
        Env { dir, repo }
    }

    fn snap(&self, src: &Path, space: &str) {
        let opts = SnapshotOptions {
            space: Some(space.into()),
            threads: 1,
            ..SnapshotOptions::default()
        };
        snapshot(&self.repo, src, &opts, &NoProgress).unwrap();
    }

    fn fs(&self, read_only: bool) -> Arc<PuceFs> {
        let cfg = MountConfig {
            mountpoint: self.dir.path().join("mnt"),
            read_only,
            cache_bytes: 4 << 20,
            node: "testnode".into(),
            commit_delay: Duration::from_secs(3600),
            ..MountConfig::default()
        };
        let fs = Arc::new(PuceFs::new(self.repo.clone(), cfg).unwrap());
        fs.start().unwrap();
        fs
    }

    /// The content of `path` in the latest snapshot of `space`.
    fn latest_file(&self, space: &str, path: &str) -> Option<Vec<u8>> {
        let l = self.repo.latest(space).unwrap()?;
        let r = self.repo.index().reader().unwrap();
        let e = puce_core::vfs::resolve(&self.repo, &r, l.snapshot.root, path.as_bytes()).ok()?;
        match e {
            puce_core::vfs::Resolved::Entry(e) => match e.node {
                Node::File { chunks, .. } => {
                    let mut v = Vec::new();
                    for c in chunks {
                        v.extend(self.repo.read_object_with(&r, &c).unwrap());
                    }
                    Some(v)
                }
                _ => None,
            },
            _ => None,
        }
    }
}

fn walk(fs: &PuceFs, path: &str) -> u64 {
    let mut ino = crate::inode::ROOT;
    for c in path.split('/').filter(|c| !c.is_empty()) {
        ino = fs.lookup(ino, c.as_bytes()).unwrap().ino;
    }
    ino
}

fn read_all(fs: &PuceFs, ino: u64) -> Vec<u8> {
    let (fh, _) = fs.open(ino, libc::O_RDONLY).unwrap();
    let mut out = Vec::new();
    loop {
        let d = fs.read(fh, out.len() as u64, 128 << 10).unwrap();
        if d.is_empty() {
            break;
        }
        out.extend(d);
    }
    fs.release(fh);
    out
}

fn write_file(fs: &PuceFs, parent: u64, name: &str, content: &[u8]) -> u64 {
    let (a, fh) = fs
        .create(ME, parent, name.as_bytes(), 0o644, 0o022, libc::O_WRONLY)
        .unwrap();
    for (i, c) in content.chunks(100_000).enumerate() {
        fs.write(fh, (i * 100_000) as u64, c).unwrap();
    }
    fs.release(fh);
    a.ino
}

#[test]
fn reads_random_offsets_with_bounded_memory() {
    let e = Env::new();
    let src = e.dir.path().join("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    let big = data(12 << 20, 3);
    std::fs::write(src.join("sub/big.bin"), &big).unwrap();
    std::fs::write(src.join("small"), b"abc").unwrap();
    e.snap(&src, "docs");
    let fs = e.fs(true);
    let ino = walk(&fs, "spaces/docs/sub/big.bin");
    let (fh, keep) = fs.open(ino, libc::O_RDONLY).unwrap();
    assert!(keep, "a space file's cached pages stay valid across opens");
    let mut s = 7u64;
    for _ in 0..200 {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let off = (s >> 20) % (big.len() as u64 + 1000);
        let len = ((s >> 8) % 300_000) as u32;
        let got = fs.read(fh, off, len).unwrap();
        let a = (off as usize).min(big.len());
        let b = (a + len as usize).min(big.len());
        assert_eq!(got, &big[a..b], "offset {off} len {len}");
    }
    fs.release(fh);
    assert_eq!(read_all(&fs, ino), big);
    // 12 MiB read through a 4 MiB cache: memory stays within the budget.
    assert!(fs.chunk_cache_stats().bytes <= 4 << 20);
    // The snapshot view has the same file, immutable.
    let snaps = fs.opendir(SNAPSHOTS).unwrap();
    let names: Vec<_> = fs
        .readdir(snaps, 0)
        .unwrap()
        .iter()
        .map(|d| d.name.clone())
        .collect();
    assert_eq!(names, vec![b".".to_vec(), b"..".to_vec(), b"docs".to_vec()]);
    let d = walk(&fs, "snapshots/docs");
    let h = fs.opendir(d).unwrap();
    let snap_name = String::from_utf8(fs.readdir(h, 0).unwrap()[2].name.clone()).unwrap();
    let f = walk(&fs, &format!("snapshots/docs/{snap_name}/sub/big.bin"));
    let a = fs.getattr(f).unwrap();
    assert!(a.immutable);
    assert_eq!(a.size, big.len() as u64);
    assert_eq!(read_all(&fs, f), big);
    // Read-only: every change is EROFS.
    let docs = walk(&fs, "spaces/docs");
    assert_eq!(
        fs.mkdir(ME, docs, b"x", 0o755, 0).unwrap_err(),
        FsError::ROFS
    );
    assert_eq!(fs.open(ino, libc::O_RDWR).unwrap_err(), FsError::ROFS);
    assert_eq!(
        fs.unlink(walk(&fs, &format!("snapshots/docs/{snap_name}")), b"small")
            .unwrap_err(),
        FsError::ROFS
    );
}

#[test]
fn writes_commit_and_survive_a_crash() {
    let e = Env::new();
    let src = e.dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a.txt"), b"hello\n").unwrap();
    std::fs::write(src.join("old"), b"old content").unwrap();
    e.snap(&src, "docs");
    {
        let fs = e.fs(false);
        let docs = walk(&fs, "spaces/docs");
        // Append to a stored file.
        let a = walk(&fs, "spaces/docs/a.txt");
        let (fh, keep) = fs.open(a, libc::O_WRONLY | libc::O_APPEND).unwrap();
        assert!(keep, "writes go through the kernel's cache: it stays valid");
        fs.write(fh, 6, b"world\n").unwrap();
        fs.release(fh);
        // A truncating open drops the kernel's cached pages (they would outlive the new size).
        let o = walk(&fs, "spaces/docs/old");
        let (fh, keep) = fs.open(o, libc::O_WRONLY | libc::O_TRUNC).unwrap();
        assert!(!keep);
        fs.write(fh, 0, b"old content").unwrap();
        fs.release(fh);
        assert_eq!(read_all(&fs, a), b"hello\nworld\n");
        // New file, directory, rename over an existing file.
        fs.mkdir(ME, docs, b"dir", 0o755, 0).unwrap();
        let dir = walk(&fs, "spaces/docs/dir");
        write_file(&fs, dir, "new.bin", &data(1 << 20, 9));
        write_file(&fs, docs, "tmp", b"replacement");
        fs.rename(docs, b"tmp", docs, b"old", false).unwrap();
        assert_eq!(read_all(&fs, walk(&fs, "spaces/docs/old")), b"replacement");
        // Unsupported things say so.
        assert_eq!(fs.link(dir, docs, b"dirlink").unwrap_err(), FsError::PERM);
        assert_eq!(
            fs.mknod(ME, docs, b"dev", libc::S_IFCHR | 0o644, 0)
                .unwrap_err(),
            FsError::PERM
        );
        assert_eq!(fs.rmdir(SPACES, b"docs").unwrap_err(), FsError::PERM);
        let out = fs.commit_all().unwrap();
        assert!(out.iter().any(|o| o.snapshot.is_some()));
        assert_eq!(e.latest_file("docs", "a.txt").unwrap(), b"hello\nworld\n");
        assert_eq!(
            e.latest_file("docs", "dir/new.bin").unwrap(),
            data(1 << 20, 9)
        );
        assert_eq!(e.latest_file("docs", "old").unwrap(), b"replacement");
        assert!(e.latest_file("docs", "tmp").is_none());
        // Committed: nothing waits in the write-back area.
        assert!(!fs.has_pending());
        // Now change things and "crash" (drop without committing).
        let dir = walk(&fs, "spaces/docs/dir");
        write_file(&fs, dir, "after-crash.txt", b"kept");
        fs.setattr(
            walk(&fs, "spaces/docs/a.txt"),
            None,
            &SetAttr {
                mode: Some(0o600),
                ..SetAttr::default()
            },
        )
        .unwrap();
        fs.unlink(docs, b"old").unwrap();
        // A new modification time of local content (not journaled: it is the write-back
        // file's), closed, then while open (set through the open file).
        let dated = write_file(&fs, dir, "dated.txt", b"dated");
        let t = |ns: i64| SetAttr {
            mtime: Some(Some(ns)),
            ..SetAttr::default()
        };
        fs.setattr(dated, None, &t(T1)).unwrap();
        let (open, fh) = fs
            .create(ME, dir, b"dated-open.txt", 0o644, 0o022, libc::O_WRONLY)
            .unwrap();
        fs.write(fh, 0, b"x").unwrap();
        assert_eq!(
            fs.setattr(open.ino, None, &t(T1 + 1)).unwrap().mtime_ns,
            T1 + 1
        );
        fs.release(fh);
        assert_eq!(fs.getattr(dated).unwrap().mtime_ns, T1);
        fs.shutdown();
    }
    let before = e.repo.snapshots().unwrap().len();
    let fs = e.fs(false);
    // The recovered changes are visible at once, and committed.
    assert_eq!(
        read_all(&fs, walk(&fs, "spaces/docs/dir/after-crash.txt")),
        b"kept"
    );
    for (name, ns) in [("dated.txt", T1), ("dated-open.txt", T1 + 1)] {
        let a = fs
            .getattr(walk(&fs, &format!("spaces/docs/dir/{name}")))
            .unwrap();
        assert_eq!(a.mtime_ns, ns, "{name}");
    }
    fs.commit_all().unwrap();
    assert_eq!(e.repo.snapshots().unwrap().len(), before + 1);
    assert_eq!(
        e.latest_file("docs", "dir/after-crash.txt").unwrap(),
        b"kept"
    );
    assert!(e.latest_file("docs", "old").is_none());
    let l = e.repo.latest("docs").unwrap().unwrap();
    let r = e.repo.index().reader().unwrap();
    let Ok(puce_core::vfs::Resolved::Entry(a)) =
        puce_core::vfs::resolve(&e.repo, &r, l.snapshot.root, b"a.txt")
    else {
        panic!("a.txt missing")
    };
    assert_eq!(a.mode, 0o600);
    for (name, ns) in [("dated.txt", T1), ("dated-open.txt", T1 + 1)] {
        let Ok(puce_core::vfs::Resolved::Entry(d)) = puce_core::vfs::resolve(
            &e.repo,
            &r,
            l.snapshot.root,
            format!("dir/{name}").as_bytes(),
        ) else {
            panic!("{name} missing")
        };
        assert_eq!(d.mtime_ns, ns, "{name}");
    }
}

/// A modification time set through the mount (`touch -d`, `cp -a`).
const T1: i64 = 1_600_000_000_123_456_789;

#[test]
fn new_space_by_mkdir() {
    let e = Env::new();
    let fs = e.fs(false);
    assert_eq!(
        fs.mkdir(ME, SPACES, b"bad@name", 0o755, 0).unwrap_err(),
        FsError::INVAL
    );
    fs.mkdir(ME, SPACES, b"team", 0o755, 0).unwrap();
    let team = walk(&fs, "spaces/team");
    write_file(&fs, team, "hello.txt", b"hi");
    fs.commit_all().unwrap();
    assert_eq!(e.latest_file("team", "hello.txt").unwrap(), b"hi");
    assert_eq!(
        fs.mkdir(ME, SPACES, b"team", 0o755, 0).unwrap_err(),
        FsError::EXIST
    );
}

#[test]
fn incoming_snapshot_and_local_change_keep_both() {
    let e = Env::new();
    let src = e.dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("report.txt"), b"v0").unwrap();
    std::fs::write(src.join("other.txt"), b"o0").unwrap();
    e.snap(&src, "docs");
    let fs = e.fs(false);
    let r = walk(&fs, "spaces/docs/report.txt");
    let (fh, _) = fs.open(r, libc::O_WRONLY | libc::O_TRUNC).unwrap();
    fs.write(fh, 0, b"local edit").unwrap();
    fs.release(fh);
    // Meanwhile a snapshot made elsewhere changes the same file and another one.
    std::fs::write(src.join("report.txt"), b"remote edit").unwrap();
    std::fs::write(src.join("other.txt"), b"o1").unwrap();
    e.snap(&src, "docs");
    let out = fs.commit_all().unwrap();
    let conflicts: Vec<_> = out.iter().flat_map(|o| o.conflicts.clone()).collect();
    assert_eq!(conflicts.len(), 1);
    let copy = String::from_utf8(conflicts[0].copy.clone()).unwrap();
    assert!(copy.starts_with("report.conflict-testnode-") && copy.ends_with(".txt"));
    assert_eq!(e.latest_file("docs", "report.txt").unwrap(), b"remote edit");
    assert_eq!(e.latest_file("docs", &copy).unwrap(), b"local edit");
    assert_eq!(e.latest_file("docs", "other.txt").unwrap(), b"o1");
    // The mount shows the merged state.
    assert_eq!(
        read_all(&fs, walk(&fs, "spaces/docs/report.txt")),
        b"remote edit"
    );
    assert_eq!(
        read_all(&fs, walk(&fs, &format!("spaces/docs/{copy}"))),
        b"local edit"
    );
    // Without local changes, a new snapshot is simply shown.
    std::fs::write(src.join("other.txt"), b"o2").unwrap();
    e.snap(&src, "docs");
    fs.refresh_snapshots().unwrap();
    assert_eq!(read_all(&fs, walk(&fs, "spaces/docs/other.txt")), b"o2");
}

/// `readdirplus` counts a lookup for each entry it sends and none for the one that did not fit,
/// in snapshots and in spaces; its attributes are those of a lookup.
#[test]
fn readdir_plus_counts_only_the_entries_sent() {
    let e = Env::new();
    let src = e.dir.path().join("src");
    std::fs::create_dir_all(src.join("d")).unwrap();
    for n in ["a", "b", "c", "d/x"] {
        std::fs::write(src.join(n), n.as_bytes()).unwrap();
    }
    e.snap(&src, "docs");
    let fs = e.fs(false);
    let snap_dir = {
        let s = walk(&fs, "snapshots/docs");
        let fh = fs.opendir(s).unwrap();
        let name = fs.readdir(fh, 0).unwrap()[2].name.clone();
        fs.releasedir(fh);
        fs.lookup(s, &name).unwrap().ino
    };
    let space_dir = walk(&fs, "spaces/docs");
    for dir in [snap_dir, space_dir] {
        let before = fs.inode_count();
        let fh = fs.opendir(dir).unwrap();
        let mut sent = Vec::new();
        fs.readdir_plus(dir, fh, 0, |e, a, next| {
            if sent.len() == 4 {
                return true; // full: ".", "..", "a", "b" fit
            }
            sent.push((e.name.clone(), a.clone(), next));
            false
        })
        .unwrap();
        let names: Vec<&[u8]> = sent.iter().map(|(n, _, _)| n.as_slice()).collect();
        assert_eq!(names, [&b"."[..], b"..", b"a", b"b"]);
        assert_eq!(fs.inode_count(), before + 2, "a and b counted, c forgotten");
        for (name, a, _) in &sent[2..] {
            assert_eq!(a.size, 1);
            // A lookup now finds the same inode, with the same attributes.
            let again = fs.lookup(dir, name).unwrap();
            assert_eq!(&again, a);
            fs.forget(a.ino, 2);
        }
        assert_eq!(fs.inode_count(), before);
        // The rest, from the position after "b".
        let mut rest = Vec::new();
        fs.readdir_plus(dir, fh, sent[3].2, |e, _, _| {
            rest.push(e.name.clone());
            false
        })
        .unwrap();
        assert_eq!(rest, [b"c".to_vec(), b"d".to_vec()]);
        fs.releasedir(fh);
    }
}

/// With `FUSE_HANDLE_KILLPRIV_V2` the file system clears set-user-ID and set-group-ID itself:
/// on chown (always), on a write the kernel flags, not when a mode is given.
#[test]
fn chown_and_flagged_writes_clear_suid_and_sgid() {
    let e = Env::new();
    let fs = e.fs(false);
    fs.mkdir(ME, SPACES, b"s", 0o755, 0).unwrap();
    let s = walk(&fs, "spaces/s");
    let mode = |ino| fs.getattr(ino).unwrap().perm;
    let set = |ino, a: SetAttr| fs.setattr(ino, None, &a).unwrap().perm;
    let f = write_file(&fs, s, "f", b"x");
    assert_eq!(
        set(
            f,
            SetAttr {
                mode: Some(0o6755),
                ..SetAttr::default()
            }
        ),
        0o6755
    );
    let chown = SetAttr {
        uid: Some(7),
        kill_suidgid: true,
        ..SetAttr::default()
    };
    assert_eq!(
        set(f, chown.clone()),
        0o755,
        "suid and sgid (group-executable) cleared"
    );
    // sgid without group execute is mandatory locking, not privilege: kept.
    set(
        f,
        SetAttr {
            mode: Some(0o6745),
            ..SetAttr::default()
        },
    );
    assert_eq!(set(f, chown.clone()), 0o2745);
    // An explicit mode wins.
    let both = SetAttr {
        mode: Some(0o4700),
        ..chown.clone()
    };
    assert_eq!(set(f, both), 0o4700);
    // A write flagged by the kernel.
    let (fh, _) = fs.open(f, libc::O_WRONLY).unwrap();
    fs.kill_suidgid(fh).unwrap();
    fs.write(fh, 0, b"y").unwrap();
    fs.release(fh);
    assert_eq!(mode(f), 0o700);
    // Directories keep theirs.
    fs.mkdir(ME, s, b"d", 0o2775, 0).unwrap();
    let d = walk(&fs, "spaces/s/d");
    assert_eq!(set(d, chown), 0o2775);
    fs.commit_all().unwrap();
}

/// Opening a snapshot file loads the first chunks of the files after it in its directory, so
/// that reading them next (`find | xargs cat`) finds them in the cache.
#[test]
fn opening_a_snapshot_file_reads_the_next_files_ahead() {
    let e = Env::new();
    let src = e.dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    for (n, len) in [("a", 10), ("b", 30_000), ("c", 40_000)] {
        std::fs::write(src.join(n), data(len, len as u64)).unwrap();
    }
    e.snap(&src, "docs");
    let fs = e.fs(true);
    let dir = {
        let s = walk(&fs, "snapshots/docs");
        let fh = fs.opendir(s).unwrap();
        let name = fs.readdir(fh, 0).unwrap()[2].name.clone();
        fs.releasedir(fh);
        fs.lookup(s, &name).unwrap().ino
    };
    let a = fs.lookup(dir, b"a").unwrap().ino;
    let before = fs.chunk_cache_stats();
    let (fh, _) = fs.open(a, libc::O_RDONLY).unwrap();
    fs.release(fh);
    // The read-ahead threads load b and c (70 000 bytes); wait for them, boundedly.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while fs.chunk_cache_stats().bytes < before.bytes + 70_000 {
        assert!(
            std::time::Instant::now() < deadline,
            "b and c never read ahead"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let loaded = fs.chunk_cache_stats();
    for (n, len) in [("b", 30_000), ("c", 40_000)] {
        let ino = fs.lookup(dir, n.as_bytes()).unwrap().ino;
        assert_eq!(read_all(&fs, ino), data(len, len as u64));
    }
    let after = fs.chunk_cache_stats();
    assert_eq!(
        after.misses, loaded.misses,
        "b and c were read from the cache"
    );
    assert!(after.hits >= loaded.hits + 2);
}
