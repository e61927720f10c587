//! `puce mount` behaving as the local file system its users think it is (issue 17): name
//! lengths, link counts, change times, and the node kinds beyond files, directories and
//! symlinks. Real `puce` processes and real FUSE mounts; docs/fuse-semantics.md says what is
//! promised.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
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
    fs::set_permissions(&f, fs::Permissions::from_mode(0o600)).unwrap();
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

fn file_type(p: &Path) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let ft = fs::symlink_metadata(p).unwrap().file_type();
    match () {
        _ if ft.is_fifo() => "fifo",
        _ if ft.is_socket() => "socket",
        _ if ft.is_char_device() => "char",
        _ if ft.is_file() => "file",
        _ if ft.is_dir() => "dir",
        _ => "other",
    }
}

#[test]
fn fifos_and_sockets_are_made_listed_renamed_and_removed_through_the_mount() {
    use rustix::fs::{FileType, Mode, OFlags};
    use std::io::{Read, Write};
    if require(Need::Fuse).is_none() {
        return;
    }
    let repo = TestRepo::new();
    let src = repo.dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    let mk = |p: &Path, kind, dev| {
        rustix::fs::mknodat(rustix::fs::CWD, p, kind, Mode::from_raw_mode(0o640), dev)
            .unwrap_or_else(|e| panic!("mknod {}: {e}", p.display()))
    };
    mk(&src.join("stored-pipe"), FileType::Fifo, 0);
    if is_root() {
        mk(
            &src.join("null"),
            FileType::CharacterDevice,
            rustix::fs::makedev(1, 3),
        );
    }
    repo.snapshot(&src, "docs");
    let mnt = repo.dir.path().join("mnt");
    let m = Mount::start(&repo, &mnt, &[]);
    let d = m.space("docs");
    let snap = only_snapshot(&m, "docs");

    // What snapshots hold is shown as what it is, under snapshots/ and in the space.
    for dir in [&d, &snap] {
        assert_eq!(file_type(&dir.join("stored-pipe")), "fifo");
        if is_root() {
            let null = dir.join("null");
            assert_eq!(file_type(&null), "char");
            assert_eq!(
                fs::symlink_metadata(&null).unwrap().rdev(),
                rustix::fs::makedev(1, 3)
            );
            // The mount is nodev: a device node seen through it opens nothing.
            assert_eq!(errno_of(fs::File::open(&null)), libc::EACCES);
        }
    }

    // A fifo made through the mount carries data between two processes' handles.
    let pipe = d.join("pipe");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &pipe,
        FileType::Fifo,
        Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    assert_eq!(file_type(&pipe), "fifo");
    assert_eq!(
        fs::metadata(&pipe).unwrap().permissions().mode() & 0o7777,
        0o600
    );
    // Reader first, not blocking; then the writer finds it.
    let mut r = fs::File::from(
        rustix::fs::open(&pipe, OFlags::RDONLY | OFlags::NONBLOCK, Mode::empty()).unwrap(),
    );
    let mut w = fs::OpenOptions::new().write(true).open(&pipe).unwrap();
    w.write_all(b"through the fifo").unwrap();
    drop(w);
    let mut got = Vec::new();
    r.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"through the fifo");
    drop(r); // an open handle would keep the mount from stopping

    // A socket bound in the mount accepts a connection through its path.
    let sock = d.join("sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    assert_eq!(file_type(&sock), "socket");
    let mut c = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    c.write_all(b"hello").unwrap();
    let (mut s, _) = listener.accept().unwrap();
    let mut buf = [0u8; 5];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"hello");
    drop((c, s, listener));

    // Renamed and removed like files; devices refused.
    fs::rename(&pipe, d.join("pipe2")).unwrap();
    let sock2 = d.join("sock2");
    drop(std::os::unix::net::UnixListener::bind(&sock2).unwrap());
    fs::remove_file(&sock2).unwrap();
    assert_eq!(
        rustix::fs::mknodat(
            rustix::fs::CWD,
            d.join("dev"),
            FileType::CharacterDevice,
            Mode::from_raw_mode(0o600),
            rustix::fs::makedev(1, 3),
        )
        .map_err(|e| e.raw_os_error()),
        Err(libc::EPERM)
    );
    drop(m.stop());

    // Committed: a snapshot holds them, a new mount shows them, restore makes the fifo.
    let ls = repo.json(&["ls", "docs@latest"]);
    let kind = |p: &str| {
        ls.as_array()
            .unwrap()
            .iter()
            .find(|e| e["path"] == p)
            .map(|e| e["type"].as_str().unwrap().to_string())
    };
    assert_eq!(kind("pipe2").as_deref(), Some("fifo"), "{ls}");
    assert_eq!(kind("sock").as_deref(), Some("socket"), "{ls}");
    assert_eq!(kind("stored-pipe").as_deref(), Some("fifo"), "{ls}");
    assert_eq!(kind("pipe"), None);
    assert_eq!(kind("sock2"), None);
    let m = Mount::start(&repo, &mnt, &[]);
    assert_eq!(file_type(&m.space("docs").join("pipe2")), "fifo");
    drop(m.stop());
    let out = repo.dir.path().join("out");
    repo.ok(&["restore", "docs@latest", out.to_str().unwrap()]);
    assert_eq!(file_type(&out.join("pipe2")), "fifo");
}

fn ino(p: &Path) -> u64 {
    fs::symlink_metadata(p).unwrap().ino()
}

/// `(inode, link count)` of each path: the names of one file agree on both.
fn ino_nlink(root: &Path, paths: &[&str]) -> Vec<(u64, u64)> {
    paths
        .iter()
        .map(|p| (ino(&root.join(p)), nlink(&root.join(p))))
        .collect()
}

#[test]
fn hard_links_are_one_inode_through_the_mount_a_remount_and_a_restore() {
    use std::io::Write;
    if require(Need::Fuse).is_none() {
        return;
    }
    let repo = TestRepo::new();
    let src = repo.dir.path().join("src");
    fs::create_dir_all(src.join("a")).unwrap();
    fs::create_dir_all(src.join("b")).unwrap();
    fs::write(src.join("a/x"), b"one file").unwrap();
    fs::hard_link(src.join("a/x"), src.join("b/y")).unwrap();
    fs::write(src.join("plain"), b"alone").unwrap();
    repo.snapshot(&src, "docs");
    let mnt = repo.dir.path().join("mnt");
    let m = Mount::start(&repo, &mnt, &[]);
    let d = m.space("docs");

    // Names of one file in the snapshot taken are one inode in the mount, in the space and
    // under snapshots/.
    let snap = only_snapshot(&m, "docs");
    for root in [&d, &snap] {
        let v = ino_nlink(root, &["a/x", "b/y"]);
        assert_eq!(v[0], v[1], "a/x and b/y in {}: {v:?}", root.display());
        assert_eq!(v[0].1, 2);
        assert_eq!(nlink(&root.join("plain")), 1);
    }
    assert_ne!(ino(&d.join("a/x")), ino(&snap.join("a/x")));

    // link(2), and `cp -al` (a tree of links).
    fs::hard_link(d.join("b/y"), d.join("c")).unwrap();
    let cp = std::process::Command::new("cp")
        .arg("-al")
        .arg(d.join("a"))
        .arg(d.join("a2"))
        .output()
        .unwrap();
    assert!(
        cp.status.success(),
        "{}",
        String::from_utf8_lossy(&cp.stderr)
    );
    let names = ["a/x", "b/y", "c", "a2/x"];
    let v = ino_nlink(&d, &names);
    assert!(v.iter().all(|x| *x == (v[0].0, 4)), "{names:?}: {v:?}");
    assert_ne!(ino(&d.join("plain")), v[0].0);

    // A write through one name is read through the others; so is a chmod.
    fs::OpenOptions::new()
        .append(true)
        .open(d.join("b/y"))
        .unwrap()
        .write_all(b", written through b/y")
        .unwrap();
    for n in names {
        assert_eq!(
            fs::read(d.join(n)).unwrap(),
            b"one file, written through b/y",
            "{n}"
        );
    }
    fs::set_permissions(d.join("c"), fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(fs::metadata(d.join("a2/x")).unwrap().mode() & 0o7777, 0o600);

    // Removing or renaming one name keeps the others; rename onto another name of the
    // same file does nothing (rename(2)).
    fs::remove_file(d.join("b/y")).unwrap();
    fs::rename(d.join("c"), d.join("b/c")).unwrap();
    fs::rename(d.join("a2/x"), d.join("a/x")).unwrap();
    assert!(d.join("a2/x").exists() && d.join("a/x").exists());
    let names = ["a/x", "b/c", "a2/x"];
    let v = ino_nlink(&d, &names);
    assert!(v.iter().all(|x| *x == (v[0].0, 3)), "{names:?}: {v:?}");

    // Refused as ext4 refuses: a directory (EPERM), another space or a snapshot (EXDEV).
    assert_eq!(
        errno_of(fs::hard_link(d.join("a"), d.join("dirlink"))),
        libc::EPERM
    );
    fs::create_dir(m.dir.join("spaces/other")).unwrap();
    assert_eq!(
        errno_of(fs::hard_link(d.join("a/x"), m.space("other").join("x"))),
        libc::EXDEV
    );
    assert_eq!(
        errno_of(fs::hard_link(snap.join("plain"), d.join("p2"))),
        libc::EXDEV
    );
    drop(m.stop());

    // Committed as one hard-link group: a new mount shows one inode again, content and all.
    let m = Mount::start(&repo, &mnt, &[]);
    let d = m.space("docs");
    let v = ino_nlink(&d, &names);
    assert!(
        v.iter().all(|x| *x == (v[0].0, 3)),
        "after a remount: {v:?}"
    );
    assert_eq!(
        fs::read(d.join("b/c")).unwrap(),
        b"one file, written through b/y"
    );
    drop(m.stop());

    // And restore makes them one file.
    let out = repo.dir.path().join("out");
    repo.ok(&["restore", "docs@latest", out.to_str().unwrap()]);
    let v = ino_nlink(&out, &names);
    assert!(
        v.iter().all(|x| *x == (v[0].0, 3)),
        "after a restore: {v:?}"
    );
    assert_eq!(
        fs::read(out.join("a2/x")).unwrap(),
        b"one file, written through b/y"
    );
    assert_eq!(
        fs::metadata(out.join("a/x")).unwrap().mode() & 0o7777,
        0o600
    );
}

#[test]
fn sigterm_stops_the_mount_while_a_fifo_in_it_is_held_open() {
    if require(Need::Fuse).is_none() {
        return;
    }
    let repo = TestRepo::new();
    let mnt = repo.dir.path().join("mnt");
    let mut m = Mount::start(&repo, &mnt, &["--space", "docs"]);
    let d = m.space("docs");
    fs::create_dir_all(&d).unwrap();
    let pipe = d.join("pipe");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &pipe,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    fs::write(d.join("note"), b"pending").unwrap();
    // A process holds the fifo open (read-write: the open does not wait for a writer).
    let mut holder = std::process::Command::new("sh")
        .args(["-c", "exec 3<>\"$1\"; echo held; exec sleep 600", "sh"])
        .arg(&pipe)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(holder.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "held");

    // SIGTERM: the mount commits, detaches and exits although the fifo is still open.
    let mut child = m.child.take().unwrap();
    puce_tests::mount::unsafe_free_kill(child.id(), "TERM");
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = holder.kill();
            panic!(
                "puce mount did not exit within 120 s of SIGTERM: {}",
                m.log()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let log = m.log();
    holder.kill().unwrap();
    holder.wait().unwrap();
    assert!(status.success(), "puce mount exited with {status}: {log}");
    assert!(log.contains("is detached"), "{log}");
    assert!(!puce_tests::is_mounted(&mnt));
    let ls = repo.json(&["ls", "docs@latest"]);
    let listed = |p: &str| ls.as_array().unwrap().iter().any(|e| e["path"] == p);
    assert!(
        listed("note") && listed("pipe"),
        "committed before exiting: {ls}"
    );
}
