//! Local attacks: what another user of the same machine can read of a repository, and what a
//! snapshot or a restore run as root can be tricked into by files that other users control.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use puce_tests::{TestRepo, is_root, make_tree, open_to_others, umask_022};

/// Every file and directory a repository, its index and its stat cache hold is private to
/// the owner, under the common umask 022: another local user cannot read a 0600 file's
/// content out of a pack.
#[test]
fn repository_files_are_private_to_the_owner() {
    umask_022();
    let repo = TestRepo::new();
    let src = repo.dir.path().join("src");
    make_tree(&src, 3);
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(src.join("private.txt"))
        .unwrap();
    fs::write(src.join("private.txt"), "only mine").unwrap();
    repo.snapshot(&src, "s");
    repo.snapshot(&src, "s");
    repo.ok(&["check", "--read-data"]);
    // The stat cache lives in the user's cache directory (XDG_CACHE_HOME here).
    let cache = repo.dir.path().join("cache");
    assert!(cache.join("puce").is_dir(), "no stat cache was written");
    for root in [repo.path(), cache] {
        let open = open_to_others(&root);
        assert!(open.is_empty(), "readable by others:\n{}", open.join("\n"));
    }
}

/// Run `puce args` on `repo`, failing loudly if it has not ended after a generous deadline
/// (a hang is what is tested; the deadline only stops a hung test).
fn run_bounded(repo: &TestRepo, args: &[&str]) -> (bool, String) {
    let mut child = repo
        .cmd()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("puce {args:?} still runs after 300 s: hung");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A named pipe in the folder (nobody writes to it) does not hang the snapshot: it is stored as
/// a fifo without being opened, and restored as one.
#[test]
fn a_named_pipe_in_the_folder_does_not_hang_the_snapshot() {
    let repo = TestRepo::new();
    let src = repo.dir.path().join("src");
    make_tree(&src, 4);
    let st = Command::new("mkfifo")
        .arg(src.join("docs/pipe"))
        .status()
        .unwrap();
    assert!(st.success());
    let (ok, err) = run_bounded(&repo, &["snapshot", src.to_str().unwrap(), "--space", "s"]);
    assert!(ok, "{err}");
    assert!(!err.contains("skipped"), "{err}");
    let out = repo.dir.path().join("out");
    repo.ok(&["restore", "s@latest", out.to_str().unwrap()]);
    use std::os::unix::fs::FileTypeExt;
    let restored = fs::symlink_metadata(out.join("docs/pipe")).unwrap();
    assert!(restored.file_type().is_fifo());
    fs::remove_file(src.join("docs/pipe")).unwrap();
    fs::remove_file(out.join("docs/pipe")).unwrap();
    assert_eq!(puce_tests::manifest(&out), puce_tests::manifest(&src));
}

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

/// Set-user-ID and set-group-ID bits in a snapshot (which may come from a partner) are not
/// restored unless `--preserve-suid` asks; owners are (as root); other bits are kept.
#[test]
fn restore_drops_setuid_and_setgid_bits_unless_asked() {
    let repo = TestRepo::new();
    let src = repo.dir.path().join("src");
    fs::create_dir_all(src.join("shared")).unwrap();
    for (name, m) in [("suid", 0o4755), ("sgid", 0o2750), ("plain", 0o640)] {
        let p = src.join(name);
        fs::write(&p, name).unwrap();
        if is_root() {
            rustix::fs::chown(
                &p,
                Some(rustix::fs::Uid::from_raw(4242)),
                Some(rustix::fs::Gid::from_raw(4242)),
            )
            .unwrap();
        }
        fs::set_permissions(&p, fs::Permissions::from_mode(m)).unwrap();
    }
    fs::set_permissions(src.join("shared"), fs::Permissions::from_mode(0o2775)).unwrap();
    repo.snapshot(&src, "s");

    let out = repo.dir.path().join("out");
    repo.ok(&["restore", "s@latest", out.to_str().unwrap()]);
    assert_eq!(mode(&out.join("suid")), 0o755);
    assert_eq!(mode(&out.join("sgid")), 0o750);
    assert_eq!(mode(&out.join("plain")), 0o640);
    // A directory's set-group-ID bit only chooses the group of new entries: kept.
    assert_eq!(mode(&out.join("shared")), 0o2775);
    if puce_tests::require_for("the check of owners", puce_tests::Need::Root).is_some() {
        assert_eq!(fs::metadata(out.join("suid")).unwrap().uid(), 4242);
    }

    let asked = repo.dir.path().join("asked");
    repo.ok(&[
        "restore",
        "s@latest",
        asked.to_str().unwrap(),
        "--preserve-suid",
    ]);
    assert_eq!(mode(&asked.join("suid")), 0o4755);
    assert_eq!(mode(&asked.join("sgid")), 0o2750);
    // A single file restored on its own follows the same rule.
    let one = repo.dir.path().join("one");
    repo.ok(&["restore", "s@latest:suid", one.to_str().unwrap()]);
    assert_eq!(mode(&one), 0o755);
}
