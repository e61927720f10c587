//! `puce mount` behaving as the local file system its users think it is (issue 17): name
//! lengths, link counts, change times, and the node kinds beyond files, directories and
//! symlinks. Real `puce` processes and real FUSE mounts; docs/fuse-semantics.md says what is
//! promised.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use puce_tests::mount::Mount;
use puce_tests::{Need, TestRepo, is_root, require};

fn errno_of<T>(r: std::io::Result<T>) -> i32 {
    r.err().and_then(|e| e.raw_os_error()).unwrap_or(0)
}

fn ctime_ns(p: &Path) -> i64 {
    let md = fs::symlink_metadata(p).unwrap();
    md.ctime() * 1_000_000_000 + md.ctime_nsec()
}

fn mtime_ns(p: &Path) -> i64 {
    let md = fs::symlink_metadata(p).unwrap();
    md.mtime() * 1_000_000_000 + md.mtime_nsec()
}

fn nlink(p: &Path) -> u64 {
    fs::symlink_metadata(p).unwrap().nlink()
}

/// The only snapshot directory of space `s` under `snapshots/`.
fn only_snapshot(m: &Mount, s: &str) -> std::path::PathBuf {
    let mut v: Vec<_> = fs::read_dir(m.dir.join("snapshots").join(s))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(v.len(), 1, "{v:?}");
    v.pop().unwrap()
}

#[test]
fn long_names_are_enametoolong_and_directories_count_their_subdirectories() {
    if require(Need::Fuse).is_none() {
        return;
    }
    let repo = TestRepo::new();
    let src = repo.dir.path().join("src");
    for d in ["a/b", "a/c/d", "e"] {
        fs::create_dir_all(src.join(d)).unwrap();
    }
    fs::write(src.join("a/file"), b"x").unwrap();
    repo.snapshot(&src, "docs");
    let m = Mount::start(&repo, &repo.dir.path().join("mnt"), &[]);
    let d = m.space("docs");
    let snap = only_snapshot(&m, "docs");

    // Looking a name longer than 255 bytes up: ENAMETOOLONG, as ext4 answers (was ENOENT).
    let long = "n".repeat(256);
    for dir in [&m.dir, &m.dir.join("spaces"), &d, &d.join("a"), &snap] {
        assert_eq!(
            errno_of(fs::metadata(dir.join(&long))),
            libc::ENAMETOOLONG,
            "lookup in {}",
            dir.display()
        );
    }
    assert_eq!(
        errno_of(fs::metadata(d.join("n".repeat(255)))),
        libc::ENOENT
    );

    // A directory's link count: 2 plus its subdirectories, as ext4 reports.
    for root in [&d, &snap] {
        assert_eq!(nlink(root), 4, "{}", root.display()); // a, e
        assert_eq!(nlink(&root.join("a")), 4); // b, c
        assert_eq!(nlink(&root.join("a/c")), 3); // d
        assert_eq!(nlink(&root.join("a/b")), 2);
        assert_eq!(nlink(&root.join("a/file")), 1);
    }
    assert_eq!(nlink(&m.dir), 4); // spaces, snapshots
    assert_eq!(nlink(&m.dir.join("spaces")), 3);
    assert_eq!(nlink(&m.dir.join("snapshots")), 3);
    assert_eq!(nlink(&m.dir.join("snapshots/docs")), 3);
    fs::create_dir(d.join("a/new")).unwrap();
    assert_eq!(nlink(&d.join("a")), 5);
    fs::rename(d.join("a/new"), d.join("e/new")).unwrap();
    assert_eq!(nlink(&d.join("a")), 4);
    assert_eq!(nlink(&d.join("e")), 3);
    fs::remove_dir(d.join("e/new")).unwrap();
    assert_eq!(nlink(&d.join("e")), 2);
    drop(m.stop());
}

#[test]
fn ctime_moves_with_every_change_and_never_goes_backwards() {
    if require(Need::Fuse).is_none() {
        return;
    }
    let repo = TestRepo::new();
    let src = repo.dir.path().join("src");
    fs::create_dir_all(src.join("dir")).unwrap();
    fs::write(src.join("f"), b"content").unwrap();
    fs::write(src.join("other"), b"other").unwrap();
    repo.snapshot(&src, "docs");
    let mnt = repo.dir.path().join("mnt");
    let m = Mount::start(&repo, &mnt, &[]);
    let d = m.space("docs");
    let f = d.join("f");
    let snap = only_snapshot(&m, "docs");
    // A snapshot keeps no change time: its entries' ctime is their mtime.
    assert_eq!(ctime_ns(&snap.join("f")), mtime_ns(&snap.join("f")));
    // A space's entries changed at the latest when its snapshot was taken.
    let mut last = ctime_ns(&f);
    assert!(last >= mtime_ns(&f));
    let mut moved = |what: &str, p: &Path| {
        let c = ctime_ns(p);
        assert!(c > last, "{what} did not move ctime: {c} after {last}");
        last = c;
    };
    fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    moved("chmod", &f);
    let mtime = mtime_ns(&f);
    if is_root() {
        std::os::unix::fs::chown(&f, Some(4321), Some(4321)).unwrap();
        moved("chown", &f);
    }
    fs::rename(&f, d.join("g")).unwrap();
    let f = d.join("g");
    moved("rename", &f);
    assert_eq!(mtime_ns(&f), mtime, "rename must not move mtime");
    fs::write(&f, b"new content").unwrap();
    moved("write", &f);
    // Setting the modification time into the past is a change too: ctime does not follow it.
    fs::File::options()
        .write(true)
        .open(&f)
        .unwrap()
        .set_modified(UNIX_EPOCH + Duration::from_secs(1_000_000))
        .unwrap();
    assert_eq!(mtime_ns(&f), 1_000_000 * 1_000_000_000);
    moved("utimens", &f);
    // A directory whose entries change.
    let dir_before = ctime_ns(&d.join("dir"));
    fs::write(d.join("dir/new"), b"").unwrap();
    assert!(ctime_ns(&d.join("dir")) > dir_before);
    drop(m.stop());

    // After the commit and a new mount: not before anything seen.
    let m = Mount::start(&repo, &mnt, &[]);
    let d = m.space("docs");
    assert!(ctime_ns(&d.join("g")) >= last);
    assert_eq!(mtime_ns(&d.join("g")), 1_000_000 * 1_000_000_000);
    assert!(ctime_ns(&d.join("other")) >= last);
    drop(m.stop());
}
