//! `puce mount` with real FUSE mounts: the real `puce` binary, real files, real signals.
//!
//! These tests need /dev/fuse and fusermount3 (CI installs fuse3): see [`puce_tests::require`]
//! for what they do without them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};

use std::process::Command;
use std::time::{Duration, UNIX_EPOCH};

use puce_tests::mount::{Mount, wait_for};
use puce_tests::{
    Need, TestRepo, is_mounted, make_tree, manifest, puce_bin, random_bytes, require,
};

fn snapshot_count(repo: &TestRepo, space: &str) -> usize {
    repo.json(&["snapshots", "--space", space])
        .as_array()
        .map(|a| a.len())
        .unwrap_or(0)
}

fn errno_of<T>(r: std::io::Result<T>) -> i32 {
    r.err().and_then(|e| e.raw_os_error()).unwrap_or(0)
}

#[test]
fn write_read_append_truncate_rename_and_errors() {
    if require(Need::Fuse).is_none() {
        return;
    }
    let repo = TestRepo::new();
    let src = repo.dir.path().join("src");
    make_tree(&src, 1);
    repo.snapshot(&src, "docs");
    let m = Mount::start(&repo, &repo.dir.path().join("mnt"), &[]);
    let d = m.space("docs");
    // The space shows the snapshot.
    assert_eq!(manifest(&d), manifest(&src));
    // Write and read back, append, truncate.
    fs::write(d.join("new.txt"), b"first\n").unwrap();
    assert_eq!(fs::read(d.join("new.txt")).unwrap(), b"first\n");
    fs::OpenOptions::new()
        .append(true)
        .open(d.join("readme.txt"))
        .unwrap()
        .write_all(b"appended\n")
        .unwrap();
    let mut expect = fs::read(src.join("readme.txt")).unwrap();
    expect.extend_from_slice(b"appended\n");
    assert_eq!(fs::read(d.join("readme.txt")).unwrap(), expect);
    let big = d.join("docs/deep/er/big.bin");
    fs::OpenOptions::new()
        .write(true)
        .open(&big)
        .unwrap()
        .set_len(1000)
        .unwrap();
    assert_eq!(fs::read(&big).unwrap(), &random_bytes(3_000_000, 2)[..1000]);
    // Overwrite in the middle of a stored file.
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(d.join("docs/a.bin"))
        .unwrap();
    f.seek(SeekFrom::Start(100_000)).unwrap();
    f.write_all(b"XYZ").unwrap();
    drop(f);
    let mut a = random_bytes(300_000, 1);
    a[100_000..100_003].copy_from_slice(b"XYZ");
    assert_eq!(fs::read(d.join("docs/a.bin")).unwrap(), a);
    // Rename over an existing file, and of a directory.
    fs::write(d.join("tmp"), b"replacement").unwrap();
    fs::rename(d.join("tmp"), d.join("new.txt")).unwrap();
    assert_eq!(fs::read(d.join("new.txt")).unwrap(), b"replacement");
    assert!(!d.join("tmp").exists());
    fs::rename(d.join("docs/deep"), d.join("moved")).unwrap();
    assert_eq!(fs::read(d.join("moved/er/big.bin")).unwrap().len(), 1000);
    // Non-UTF-8 names.
    let odd = d.join(OsStr::from_bytes(b"r\xe9sum\xe9.txt"));
    fs::write(&odd, b"latin-1 name").unwrap();
    assert_eq!(fs::read(&odd).unwrap(), b"latin-1 name");
    // chmod, utimens, symlinks, mkdir/rmdir.
    fs::set_permissions(d.join("new.txt"), fs::Permissions::from_mode(0o600)).unwrap();
    let t = UNIX_EPOCH + Duration::from_secs(1_500_000_000);
    fs::File::open(d.join("new.txt"))
        .unwrap()
        .set_modified(t)
        .unwrap();
    let md = fs::metadata(d.join("new.txt")).unwrap();
    assert_eq!((md.mode() & 0o7777, md.mtime()), (0o600, 1_500_000_000));
    std::os::unix::fs::symlink("new.txt", d.join("ln")).unwrap();
    assert_eq!(fs::read(d.join("ln")).unwrap(), b"replacement");
    fs::create_dir(d.join("empty2")).unwrap();
    fs::remove_dir(d.join("empty2")).unwrap();
    assert_eq!(errno_of(fs::remove_dir(d.join("docs"))), libc::ENOTEMPTY);
    fs::remove_file(d.join("link")).unwrap();
    // Unsupported operations fail with a proper errno (a directory has one name).
    assert_eq!(
        errno_of(fs::hard_link(d.join("docs"), d.join("hard"))),
        libc::EPERM
    );
    // (Fifos and sockets are made: tests/tests/mount_posix.rs; devices are not.)
    let dev = Command::new("mknod")
        .arg(d.join("dev"))
        .args(["c", "1", "3"])
        .output()
        .unwrap();
    assert!(!dev.status.success());
    assert!(!d.join("dev").exists());
    assert_eq!(
        errno_of(fs::write(m.dir.join("snapshots/x"), b"")),
        libc::EROFS
    );
    assert_eq!(
        errno_of(fs::remove_dir(m.dir.join("spaces/docs"))),
        libc::EPERM
    );
    assert_eq!(
        errno_of(fs::rename(d.join("new.txt"), m.dir.join("spaces/other"))),
        libc::EPERM
    );
    let view = manifest(&d);
    // Unmounting commits; a new mount shows the same, and so does a restore.
    m.stop();
    let out = repo.dir.path().join("restored");
    repo.ok(&["restore", "docs@latest", out.to_str().unwrap()]);
    assert_eq!(manifest(&out), view);
    let m = Mount::start(&repo, &repo.dir.path().join("mnt"), &["--read-only"]);
    assert_eq!(manifest(&m.space("docs")), view);
    assert_eq!(
        errno_of(fs::write(m.space("docs").join("x"), b"")),
        libc::EROFS
    );
    m.stop();
}

#[test]
fn snapshot_view_matches_restore_byte_for_byte() {
    if require(Need::Fuse).is_none() {
        return;
    }
    let repo = TestRepo::new();
    let src = repo.dir.path().join("src");
    make_tree(&src, 5);
    let id1 = repo.snapshot(&src, "s");
    fs::write(src.join("readme.txt"), b"second version").unwrap();
    fs::remove_file(src.join("link")).unwrap();
    let id2 = repo.snapshot(&src, "s");
    let m = Mount::start(&repo, &repo.dir.path().join("mnt"), &["--read-only"]);
    let snaps = m.dir.join("snapshots/s");
    let names: Vec<_> = fs::read_dir(&snaps)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 2);
    for id in [&id1, &id2] {
        let name = names
            .iter()
            .find(|n| n.ends_with(&id[..12]))
            .unwrap_or_else(|| panic!("no directory for snapshot {id} in {names:?}"));
        let out = repo.dir.path().join(format!("r-{}", &id[..8]));
        repo.ok(&["restore", id, out.to_str().unwrap()]);
        assert_eq!(manifest(&snaps.join(name)), manifest(&out), "snapshot {id}");
    }
    // The snapshot view is read-only.
    let f = snaps.join(&names[0]).join("readme.txt");
    assert_eq!(
        errno_of(fs::OpenOptions::new().write(true).open(&f)),
        libc::EROFS
    );
    m.stop();
}

#[test]
fn large_files_concurrent_readers_and_writers() {
    if require(Need::Fuse).is_none() {
        return;
    }
    let repo = TestRepo::new();
    let src = repo.dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    let big = random_bytes(48 << 20, 77);
    fs::write(src.join("big.bin"), &big).unwrap();
    repo.snapshot(&src, "big");
    let m = Mount::start(&repo, &repo.dir.path().join("mnt"), &["--cache", "8"]);
    let d = m.space("big");
    std::thread::scope(|s| {
        // Sequential readers.
        for _ in 0..3 {
            s.spawn(|| assert!(fs::read(d.join("big.bin")).unwrap() == big));
        }
        // Random readers: seeks anywhere.
        for seed in 0..3u64 {
            let (d, big) = (&d, &big);
            s.spawn(move || {
                let mut f = fs::File::open(d.join("big.bin")).unwrap();
                let mut x = seed + 1;
                for _ in 0..60 {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                    let off = (x >> 16) % big.len() as u64;
                    let len = ((x >> 40) % 200_000) as usize;
                    let mut buf = vec![0u8; len];
                    f.seek(SeekFrom::Start(off)).unwrap();
                    let n = read_full(&mut f, &mut buf);
                    let end = (off as usize + len).min(big.len());
                    assert!(buf[..n] == big[off as usize..end], "offset {off}");
                }
            });
        }
        // Writers, each to its own file, while readers read.
        for w in 0..3u64 {
            let d = &d;
            s.spawn(move || {
                let data = random_bytes(5 << 20, 100 + w);
                let p = d.join(format!("w{w}.bin"));
                let mut f = fs::File::create(&p).unwrap();
                for c in data.chunks(64 << 10) {
                    f.write_all(c).unwrap();
                }
                drop(f);
                assert!(fs::read(&p).unwrap() == data);
            });
        }
    });
    m.stop();
    let out = repo.dir.path().join("restored");
    repo.ok(&["restore", "big@latest", out.to_str().unwrap()]);
    for w in 0..3u64 {
        assert!(fs::read(out.join(format!("w{w}.bin"))).unwrap() == random_bytes(5 << 20, 100 + w));
    }
    assert!(fs::read(out.join("big.bin")).unwrap() == big);
}

/// With passthrough (root), the kernel reads and writes a changed file's local copy itself;
/// handles opened while another handle of the file goes through the mount go through the
/// mount too. Every mix sees the same bytes, and no page cached by the kernel outlives a
/// change made on the local copy (even one that keeps the size and the modification time).
#[test]
fn passthrough_and_mount_handles_of_one_file_agree() {
    if require(Need::Fuse).is_none() {
        return;
    }
    let repo = TestRepo::new();
    let src = repo.dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("keep"), b"k").unwrap();
    repo.snapshot(&src, "pt");
    let mut cmd = repo.cmd();
    cmd.env("PUCE_LOG", "puce_fuse=debug");
    let m = Mount::start_cmd(cmd, &repo.dir.path().join("mnt"), &[]);
    let f = m.space("pt").join("f");
    let read = |h: &mut fs::File| {
        let mut v = Vec::new();
        h.seek(SeekFrom::Start(0)).unwrap();
        h.read_to_end(&mut v).unwrap();
        v
    };
    // Created, then two handles at once (local content: both passthrough as root).
    fs::write(&f, vec![b'a'; 100_000]).unwrap();
    let mut a = fs::File::open(&f).unwrap();
    let b = fs::OpenOptions::new().write(true).open(&f).unwrap();
    b.write_all_at(b"BB", 10).unwrap();
    let mut want = vec![b'a'; 100_000];
    want[10..12].copy_from_slice(b"BB");
    assert_eq!(read(&mut a), want);
    drop((a, b));
    wait_for("the commit of f", || {
        repo.run(&["cat", "pt@latest:f"]).stdout == want
    });
    // Stored content: a reader through the mount, then a writer while it is open (through the
    // mount as well: the kernel does not mix the two on one file).
    let mut c = fs::File::open(&f).unwrap();
    assert_eq!(read(&mut c), want);
    let d = fs::OpenOptions::new().write(true).open(&f).unwrap();
    d.write_all_at(b"DD", 20).unwrap();
    want[20..22].copy_from_slice(b"DD");
    assert_eq!(read(&mut c), want);
    drop((c, d));
    let mtime = fs::metadata(&f).unwrap().modified().unwrap();
    // A writer alone (passthrough as root) changes bytes and puts the time back: same size,
    // same modification time. Readers after it must not get the pages cached before.
    let e = fs::OpenOptions::new().write(true).open(&f).unwrap();
    e.write_all_at(b"EE", 20).unwrap();
    e.set_modified(mtime).unwrap();
    drop(e);
    want[20..22].copy_from_slice(b"EE");
    assert_eq!(fs::read(&f).unwrap(), want);
    wait_for("the commit of the last change", || {
        repo.run(&["cat", "pt@latest:f"]).stdout == want
    });
    assert_eq!(fs::read(&f).unwrap(), want);
    let log = m.stop();
    if puce_tests::is_root() {
        assert!(
            log.contains("passthrough on") || log.contains("does not offer passthrough"),
            "as root, on a kernel that offers it, the kernel should do the I/O of changed files \
             itself: {log}"
        );
    }
    let out = repo.dir.path().join("restored");
    repo.ok(&["restore", "pt@latest", out.to_str().unwrap()]);
    assert_eq!(fs::read(out.join("f")).unwrap(), want);
}

fn read_full(f: &mut fs::File, buf: &mut [u8]) -> usize {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]).unwrap() {
            0 => break,
            k => n += k,
        }
    }
    n
}

#[test]
fn commits_while_mounted_and_follows_snapshots_made_elsewhere() {
    if require(Need::Fuse).is_none() {
        return;
    }
    let repo = TestRepo::new();
    let src = repo.dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("shared.txt"), b"v1").unwrap();
    repo.snapshot(&src, "team");
    let m = Mount::start(&repo, &repo.dir.path().join("mnt"), &[]);
    let d = m.space("team");
    // A change is committed after the quiet period, while still mounted.
    fs::write(d.join("note.txt"), b"written through the mount").unwrap();
    wait_for("the mount to commit note.txt", || {
        repo.run(&["cat", "team@latest:note.txt"]).stdout == b"written through the mount"
    });
    // Read through the mount: the kernel caches the pages and keeps them across opens (the
    // handle kept open keeps the kernel's inode, and its pages, alive).
    let mut held = fs::File::open(d.join("shared.txt")).unwrap();
    let mut v1 = Vec::new();
    held.read_to_end(&mut v1).unwrap();
    assert_eq!(v1, b"v1");
    // A snapshot made elsewhere (replication, the CLI) shows up without remounting, even when
    // the file keeps its size and modification time (only the mount's invalidation of the
    // kernel's cache can show it then).
    let other = repo.dir.path().join("other");
    repo.ok(&["restore", "team@latest", other.to_str().unwrap()]);
    let mtime = fs::metadata(other.join("shared.txt"))
        .unwrap()
        .modified()
        .unwrap();
    fs::write(other.join("shared.txt"), b"v2").unwrap();
    fs::File::options()
        .write(true)
        .open(other.join("shared.txt"))
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    repo.snapshot(&other, "team");
    wait_for("the mount to show the new snapshot", || {
        fs::read(d.join("shared.txt")).unwrap_or_default() == b"v2"
    });
    // The handle opened before keeps the version it opened, as after a rename over the file.
    held.seek(SeekFrom::Start(0)).unwrap();
    let mut again = Vec::new();
    held.read_to_end(&mut again).unwrap();
    assert_eq!(again, b"v1");
    drop(held);
    // New spaces with mkdir.
    fs::create_dir(m.dir.join("spaces/newspace")).unwrap();
    fs::write(m.dir.join("spaces/newspace/f"), b"in a new space").unwrap();
    assert_eq!(
        errno_of(fs::create_dir(m.dir.join("spaces/bad@name"))),
        libc::EINVAL
    );
    m.stop();
    assert_eq!(
        repo.run(&["cat", "newspace@latest:f"]).stdout,
        b"in a new space"
    );
    assert!(snapshot_count(&repo, "team") >= 3);
}

#[test]
fn kill_9_after_close_loses_nothing_and_stale_mount_is_explained() {
    if require(Need::Fuse).is_none() {
        return;
    }
    let repo = TestRepo::new();
    let src = repo.dir.path().join("src");
    make_tree(&src, 3);
    repo.snapshot(&src, "docs");
    let mnt = repo.dir.path().join("mnt");
    // A long quiet period: nothing is committed before the kill.
    let m = Mount::start(&repo, &mnt, &["--commit-delay", "3600"]);
    let d = m.space("docs");
    let mut expected = BTreeMap::new();
    for i in 0..20u64 {
        let data = random_bytes(10_000 + (i as usize) * 7_000, i);
        fs::write(d.join(format!("closed-{i}.bin")), &data).unwrap();
        expected.insert(format!("closed-{i}.bin"), data);
    }
    let mut f = fs::File::create(d.join("synced.bin")).unwrap();
    f.write_all(b"fsynced").unwrap();
    f.sync_all().unwrap();
    drop(f);
    expected.insert("synced.bin".into(), b"fsynced".to_vec());
    fs::rename(d.join("readme.txt"), d.join("renamed.txt")).unwrap();
    fs::remove_file(d.join("docs/a.bin")).unwrap();
    // What `cp -a` does to a new file: times (kept as the write-back file's), then mode.
    let dated = std::time::UNIX_EPOCH + std::time::Duration::new(1_600_000_000, 123_456_789);
    {
        let f = fs::File::create(d.join("dated.bin")).unwrap();
        f.set_modified(dated).unwrap();
        f.set_permissions(fs::Permissions::from_mode(0o640))
            .unwrap();
    }
    expected.insert("dated.bin".into(), Vec::new());
    let before = snapshot_count(&repo, "docs");
    m.kill9();
    assert_eq!(
        snapshot_count(&repo, "docs"),
        before,
        "nothing committed yet"
    );
    // The dead mount is detected and explained.
    // Without auto_unmount the kernel keeps the dead mount: it must be explained.
    assert!(is_mounted(&mnt));
    {
        let out = repo.run(&["mount", mnt.to_str().unwrap()]);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("stale") && err.contains("fusermount3 -u"),
            "unexpected message: {err}"
        );
        Command::new("fusermount3")
            .arg("-u")
            .arg(&mnt)
            .status()
            .unwrap();
    }
    // The next mount recovers and commits everything closed before the kill.
    let m = Mount::start(&repo, &mnt, &[]);
    let d = m.space("docs");
    for (name, data) in &expected {
        assert!(fs::read(d.join(name)).unwrap() == *data, "{name}");
    }
    assert!(d.join("renamed.txt").exists() && !d.join("readme.txt").exists());
    assert!(!d.join("docs/a.bin").exists());
    let md = fs::metadata(d.join("dated.bin")).unwrap();
    assert_eq!((md.modified().unwrap(), md.mode() & 0o7777), (dated, 0o640));
    m.stop();
    let out = repo.dir.path().join("restored");
    repo.ok(&["restore", "docs@latest", out.to_str().unwrap()]);
    for (name, data) in &expected {
        assert!(fs::read(out.join(name)).unwrap() == *data, "{name}");
    }
    assert!(!out.join("docs/a.bin").exists());
    let md = fs::metadata(out.join("dated.bin")).unwrap();
    assert_eq!((md.modified().unwrap(), md.mode() & 0o7777), (dated, 0o640));
}

/// The write-back copy of a file created 0600 through the mount, and everything else the
/// mount writes into the repository, is private to the owner (under the common umask 022).
#[test]
fn writeback_files_are_private_to_the_owner() {
    if require(Need::Fuse).is_none() {
        return;
    }
    puce_tests::umask_022();
    let repo = TestRepo::new();
    let src = repo.dir.path().join("src");
    make_tree(&src, 5);
    repo.snapshot(&src, "s");
    let m = Mount::start(
        &repo,
        &repo.dir.path().join("mnt"),
        &["--commit-delay", "3600"],
    );
    let p = m.space("s").join("secret.txt");
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&p)
        .unwrap()
        .write_all(b"only mine")
        .unwrap();
    let data = repo.path().join("writeback/data");
    let held = fs::read_dir(&data).unwrap().count();
    assert!(held > 0, "no write-back file in {}", data.display());
    let open = puce_tests::open_to_others(&repo.path());
    assert!(open.is_empty(), "readable by others:\n{}", open.join("\n"));
    m.stop();
    let open = puce_tests::open_to_others(&repo.path());
    assert!(open.is_empty(), "readable by others:\n{}", open.join("\n"));
}

#[test]
fn second_read_write_mount_is_refused_clearly() {
    if require(Need::Fuse).is_none() {
        return;
    }
    let repo = TestRepo::new();
    let m = Mount::start(&repo, &repo.dir.path().join("mnt"), &[]);
    let other = repo.dir.path().join("mnt2");
    fs::create_dir_all(&other).unwrap();
    let out = repo.run(&["mount", other.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--read-only"), "{err}");
    // Read-only mounts can be added.
    let ro = Mount::start(&repo, &other, &["--read-only"]);
    ro.stop();
    m.stop();
}

#[test]
fn background_mount_and_non_root_user() {
    if require(Need::Fuse).is_none() {
        return;
    }
    let repo = TestRepo::new();
    let src = repo.dir.path().join("src");
    make_tree(&src, 9);
    repo.snapshot(&src, "docs");
    // --background returns once mounted.
    let mnt = repo.dir.path().join("mnt");
    fs::create_dir_all(&mnt).unwrap();
    let log = repo.dir.path().join("bg.log");
    let out = repo.run(&[
        "mount",
        mnt.to_str().unwrap(),
        "--background",
        "--log",
        log.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(is_mounted(&mnt));
    fs::write(mnt.join("spaces/docs/bg.txt"), b"bg").unwrap();
    let st = Command::new("fusermount3")
        .arg("-u")
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(st.success());
    wait_for("the background mount to commit and exit", || {
        repo.run(&["cat", "docs@latest:bg.txt"]).stdout == b"bg"
    });

    // A non-root user mounts through fusermount3.
    if puce_tests::require_for("the non-root mount", Need::SwitchUser).is_none() {
        return;
    }
    let home = tempfile::Builder::new()
        .prefix("puce-nobody")
        .tempdir_in("/tmp")
        .unwrap();
    fs::set_permissions(home.path(), fs::Permissions::from_mode(0o777)).unwrap();
    let user_repo = home.path().join("repo");
    let user_mnt = home.path().join("mnt");
    let as_nobody = || {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(puce_bin())
            .env("PUCE_REPO", &user_repo)
            .env("HOME", home.path())
            .env("XDG_CACHE_HOME", home.path().join("cache"))
            .env("XDG_DATA_HOME", home.path().join("data"));
        c
    };
    let out = as_nobody().args(["init", "-q"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "mkdir",
            "-p",
        ])
        .arg(&user_mnt)
        .status()
        .unwrap();
    let m = Mount::start_cmd(as_nobody(), &user_mnt, &[]);
    let sp = user_mnt.join("spaces/mine");
    let mk = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "sh",
            "-c",
        ])
        .arg(format!(
            "mkdir {0} && echo secret > {0}/f && chmod 000 {0}/f && cat {0}/f",
            sp.display()
        ))
        .output()
        .unwrap();
    // The owner itself is refused by mode 000 (default_permissions).
    assert!(!mk.status.success());
    assert!(
        String::from_utf8_lossy(&mk.stderr).contains("Permission denied"),
        "{}",
        String::from_utf8_lossy(&mk.stderr)
    );
    let md = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "stat",
            "-c",
            "%a %u",
        ])
        .arg(sp.join("f"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&md.stdout).trim(), "0 65534");
    m.stop();
    assert!(!is_mounted(&user_mnt));
}

/// The mount killed with SIGKILL at random moments while it commits (the commit delay is
/// short, so kills land before, during and after commits). After every kill: `check` passes,
/// every snapshot of the space restores to files that each hold exactly what was written to
/// them (no torn or mixed content), and the next mount recovers every file closed before the
/// kill. `PUCE_CRASH_ITERS` sets the number of kills (default 6; the full run uses 100).
#[test]
fn kill_9_during_commits_at_random_moments() {
    if require(Need::Fuse).is_none() {
        return;
    }
    let iters: u64 = std::env::var("PUCE_CRASH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6);
    let mut seed: u64 = std::env::var("PUCE_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed)
        | 1;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let repo = TestRepo::new();
    let src = repo.dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("start.txt"), b"start").unwrap();
    repo.snapshot(&src, "team");
    let mnt = repo.dir.path().join("mnt");
    // Every name is written once: its content is known whatever snapshot it appears in.
    let mut expected: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    expected.insert("start.txt".into(), b"start".to_vec());
    let mut closed: Vec<String> = vec!["start.txt".into()];
    let mut verified = std::collections::HashSet::new();
    let mut window = 400u64;
    let mut snapshots_seen = 0;
    for it in 0..iters {
        let m = Mount::start(&repo, &mnt, &["--commit-delay", "0.05"]);
        let d = m.space("team");
        // Everything closed before earlier kills was recovered.
        for name in &closed {
            assert!(
                fs::read(d.join(name)).unwrap() == expected[name],
                "{name} lost or changed after the kill of iteration {}",
                it.saturating_sub(1)
            );
        }
        for j in 0..6 {
            let name = format!("it{it:03}-{j}.bin");
            let data = random_bytes(20_000 + (rnd() % 400_000) as usize, rnd());
            fs::write(d.join(&name), &data).unwrap();
            expected.insert(name.clone(), data);
            closed.push(name);
        }
        let delay = rnd() % (window + 1);
        std::thread::sleep(Duration::from_millis(delay));
        m.kill9();
        window = (window * 11 / 10).min(2_000);
        Command::new("fusermount3")
            .arg("-u")
            .arg(&mnt)
            .status()
            .unwrap();
        let out = repo.run(&["--json", "check"]);
        assert!(
            out.status.success(),
            "check failed after the kill of iteration {it} ({delay} ms):\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        for s in repo
            .json(&["snapshots", "--space", "team"])
            .as_array()
            .unwrap()
        {
            let id = s["id"].as_str().unwrap().to_string();
            if !verified.insert(id.clone()) {
                continue;
            }
            snapshots_seen += 1;
            let out = repo.dir.path().join("restored");
            let _ = fs::remove_dir_all(&out);
            repo.ok(&["-q", "restore", &id, out.to_str().unwrap()]);
            for e in fs::read_dir(&out).unwrap() {
                let e = e.unwrap();
                let name = e.file_name().to_string_lossy().into_owned();
                let want = expected
                    .get(&name)
                    .unwrap_or_else(|| panic!("snapshot {id} holds an unknown file {name}"));
                assert!(
                    fs::read(e.path()).unwrap() == *want,
                    "snapshot {id}: {name} does not hold what was written"
                );
            }
        }
    }
    // A last clean mount commits everything.
    let m = Mount::start(&repo, &mnt, &[]);
    m.stop();
    let out = repo.dir.path().join("final");
    repo.ok(&["restore", "team@latest", out.to_str().unwrap()]);
    let got: BTreeMap<String, Vec<u8>> = fs::read_dir(&out)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    assert!(
        got == expected,
        "the final snapshot differs from what was written"
    );
    repo.ok(&["check", "--read-data"]);
    eprintln!("mount crash test: {iters} kills, {snapshots_seen} snapshots verified");
}

/// Issue 14, item 7: a read-write mount held a writer session for its whole life, so gc waited
/// `--max-wait` for it and deferred: beside the permanent mount the guide recommends, gc never
/// freed anything. Now the mount holds a session only while it commits: gc frees space while
/// files are written through the mount, and what the mount commits in gc's window (reusing
/// stored data of the snapshot it shows) stays whole.
#[test]
fn gc_frees_space_beside_a_read_write_mount_written_to_meanwhile() {
    gc_beside_a_mount(false);
}

/// The same, with the snapshot the mount shows forgotten before gc: gc condemns the data the
/// mount's next commit reuses, and that commit (in gc's window) rescues it.
#[test]
fn a_mount_commit_in_gcs_window_keeps_data_of_its_forgotten_base() {
    gc_beside_a_mount(true);
}

fn gc_beside_a_mount(forget_base: bool) {
    if require(Need::Fuse).is_none() {
        return;
    }
    let repo = TestRepo::with_init(&["--pack-size", "1"]);
    let junk = repo.dir.path().join("junk");
    fs::create_dir_all(&junk).unwrap();
    fs::write(junk.join("junk.bin"), random_bytes(4_000_000, 70)).unwrap();
    let junk_id = repo.snapshot(&junk, "junk");
    let src = repo.dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("kept.bin"), random_bytes(2_000_000, 71)).unwrap();
    repo.snapshot(&src, "team");
    let m = Mount::start(&repo, &repo.dir.path().join("mnt"), &[]);
    let d = m.space("team");
    let mut expected: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    expected.insert("kept.bin".into(), random_bytes(2_000_000, 71));
    let mut write = |name: &str, data: Vec<u8>| {
        fs::write(d.join(name), &data).unwrap();
        wait_for(&format!("the mount to commit {name}"), || {
            repo.run(&["cat", &format!("team@latest:{name}")]).stdout == data
        });
        expected.insert(name.to_string(), data);
    };
    write("before.bin", random_bytes(500_000, 72));
    let mut forget = vec![junk_id];
    if forget_base {
        for s in repo
            .json(&["snapshots", "--space", "team"])
            .as_array()
            .unwrap()
        {
            forget.push(s["id"].as_str().unwrap().to_string());
        }
    }
    let mut args = vec!["-q", "forget"];
    args.extend(forget.iter().map(|s| s.as_str()));
    repo.ok(&args);
    let gc = puce_tests::paused_gc::PausedGc::start(&repo, &["--max-wait", "5"]);
    // In gc's window, between its plan and its deletions: a commit through the mount.
    write("during.bin", random_bytes(500_000, 73));
    let report = gc.resume();
    assert_eq!(
        report["deferred"], false,
        "gc waited for the mount: {report}"
    );
    assert!(report["packs_deleted"].as_u64().unwrap() > 0, "{report}");
    assert!(report["bytes_freed"].as_u64().unwrap() > 0, "{report}");
    if forget_base {
        // What the commit rescued was in packs gc had doomed: gc copied it before deleting them.
        assert!(report["bytes_rewritten"].as_u64().unwrap() > 0, "{report}");
    }
    // The next commit, the repository and the mount's view are whole.
    write("after.bin", random_bytes(500_000, 74));
    repo.ok(&["check", "--read-data"]);
    for (name, data) in &expected {
        assert!(
            fs::read(d.join(name)).unwrap() == *data,
            "{name} read through the mount differs"
        );
    }
    m.stop();
    let out = repo.dir.path().join("restored");
    repo.ok(&["-q", "restore", "team@latest", out.to_str().unwrap()]);
    for (name, data) in &expected {
        assert!(fs::read(out.join(name)).unwrap() == *data, "{name} differs");
    }
    repo.ok(&["check", "--read-data"]);
}
