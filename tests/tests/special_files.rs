//! Fifos, sockets, device nodes and hard links through `puce snapshot` and `puce restore`, with
//! the real binary and real files (issue 17; what is promised: docs/guide.md, "Restore").
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use puce_tests::{Need, TestRepo, is_root, require};
use rustix::fs::{FileType, Mode, makedev};

fn mknod(p: &Path, kind: FileType, mode: u32, dev: u64) {
    rustix::fs::mknodat(rustix::fs::CWD, p, kind, Mode::from_raw_mode(mode), dev)
        .unwrap_or_else(|e| panic!("mknod {}: {e}", p.display()));
}

/// A folder with a file, two names of one file in two directories, a fifo, a socket and (as
/// root) a character device.
fn make_source(src: &Path) {
    fs::create_dir_all(src.join("a")).unwrap();
    fs::create_dir_all(src.join("b")).unwrap();
    fs::write(src.join("plain"), b"plain file").unwrap();
    fs::write(src.join("a/x"), b"one file, two names").unwrap();
    fs::hard_link(src.join("a/x"), src.join("b/y")).unwrap();
    mknod(&src.join("pipe"), FileType::Fifo, 0o640, 0);
    let sock = std::os::unix::net::UnixListener::bind(src.join("sock")).unwrap();
    drop(sock); // the socket file stays
    if is_root() {
        mknod(
            &src.join("null"),
            FileType::CharacterDevice,
            0o620,
            makedev(1, 3),
        );
    }
}

fn kind_of(p: &Path) -> &'static str {
    let ft = fs::symlink_metadata(p).unwrap().file_type();
    if ft.is_fifo() {
        "fifo"
    } else if ft.is_socket() {
        "socket"
    } else if ft.is_char_device() {
        "char"
    } else if ft.is_file() {
        "file"
    } else {
        "other"
    }
}

#[test]
fn fifos_sockets_devices_and_hard_links_are_snapshotted_and_restored() {
    let repo = TestRepo::new();
    let src = repo.dir.path().join("src");
    make_source(&src);
    let snap = repo.run(&["snapshot", src.to_str().unwrap(), "--space", "s"]);
    let err = String::from_utf8_lossy(&snap.stderr);
    assert!(snap.status.success(), "{err}");
    assert!(!err.contains("skipped"), "nothing may be skipped: {err}");

    // `ls` shows the kinds, and the two names of one file share a link group.
    let ls = repo.json(&["ls", "s@latest", "-R"]);
    let by_path = |p: &str| {
        ls.as_array()
            .unwrap()
            .iter()
            .find(|e| e["path"] == p)
            .unwrap_or_else(|| panic!("{p} not listed: {ls}"))
            .clone()
    };
    assert_eq!(by_path("pipe")["type"], "fifo");
    assert_eq!(by_path("sock")["type"], "socket");
    let group = by_path("a/x")["link_group"].clone();
    assert!(group.is_string(), "{ls}");
    assert_eq!(by_path("b/y")["link_group"], group);
    assert!(by_path("plain").get("link_group").is_none());

    // Restore without --preserve-devices: fifo made, hard link made, socket and device not.
    let dst = repo.dir.path().join("dst");
    let out = repo.run(&["restore", "s@latest", dst.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(kind_of(&dst.join("pipe")), "fifo");
    let pipe = fs::symlink_metadata(dst.join("pipe")).unwrap();
    let orig = fs::symlink_metadata(src.join("pipe")).unwrap();
    assert_eq!(pipe.permissions().mode(), orig.permissions().mode());
    assert_eq!(
        pipe.mtime(),
        fs::symlink_metadata(src.join("pipe")).unwrap().mtime()
    );
    let (x, y) = (
        fs::metadata(dst.join("a/x")).unwrap(),
        fs::metadata(dst.join("b/y")).unwrap(),
    );
    assert_eq!(x.ino(), y.ino(), "the two names must be one file again");
    assert_eq!(x.nlink(), 2);
    assert_eq!(fs::read(dst.join("b/y")).unwrap(), b"one file, two names");
    assert_eq!(fs::metadata(dst.join("plain")).unwrap().nlink(), 1);
    assert!(!dst.join("sock").exists(), "sockets are not made");
    if is_root() {
        assert!(!dst.join("null").exists(), "devices only when asked");
        assert!(
            err.contains("1 device nodes") && err.contains("--preserve-devices"),
            "a warning must say what was not made and how: {err}"
        );
    }

    // One name restored alone: an ordinary file.
    let one = repo.dir.path().join("one");
    repo.ok(&["restore", "s@latest:b", one.to_str().unwrap()]);
    assert_eq!(fs::metadata(one.join("y")).unwrap().nlink(), 1);
    assert_eq!(fs::read(one.join("y")).unwrap(), b"one file, two names");

    // An unchanged folder snapshotted again: the same trees (the link groups are stable).
    repo.snapshot(&src, "s");
    let snaps = repo.json(&["snapshots", "--space", "s"]);
    assert_eq!(
        snaps[0]["tree"], snaps[1]["tree"],
        "an unchanged folder must give the same root tree: {snaps}"
    );
    // One file changed beside them: `diff` names only it (an unchanged fifo, socket or device
    // was once reported as a type change).
    fs::write(src.join("plain"), b"changed").unwrap();
    repo.snapshot(&src, "s");
    let diff = repo.ok(&["diff", "s@latest~1", "s@latest"]);
    let changes: Vec<&str> = diff
        .lines()
        .filter(|l| l.starts_with(['+', '-', 'M', 'T']))
        .collect();
    assert_eq!(changes.len(), 1, "{diff}");
    assert!(changes[0].contains("plain"), "{diff}");
}

#[test]
fn devices_are_restored_only_when_asked() {
    if require(Need::Root).is_none() {
        return;
    }
    let repo = TestRepo::new();
    let src = repo.dir.path().join("src");
    make_source(&src);
    repo.snapshot(&src, "s");
    let dst = repo.dir.path().join("dst");
    repo.ok(&[
        "restore",
        "s@latest",
        dst.to_str().unwrap(),
        "--preserve-devices",
    ]);
    let md = fs::symlink_metadata(dst.join("null")).unwrap();
    assert!(md.file_type().is_char_device());
    assert_eq!(md.rdev(), makedev(1, 3));
    let orig = fs::symlink_metadata(src.join("null")).unwrap();
    assert_eq!(md.permissions().mode(), orig.permissions().mode());
    assert_eq!((md.uid(), md.gid()), (orig.uid(), orig.gid()));
}
