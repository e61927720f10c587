//! Encrypted repositories (`puce init --encrypt`) with the real binary and real files: nothing
//! of names or contents reaches the repository's files, everything round-trips, and a missing
//! or wrong key is a clear error (docs/format.md, section 9).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use puce_tests::{TestRepo, key_file, manifest, random_bytes};

/// Strings that must not appear in any file of the repository.
const MARKERS: [&str; 5] = [
    "ZORGLUB-CONTENT",
    "ZORGLUB-NAME",
    "ZORGLUB-SPACE",
    "ZORGLUB-TAG",
    "ZORGLUB-HOST",
];

/// The files of the repository a holder or a thief would see (not the machine-local index,
/// locks and caches, which never leave the owner's machine: docs/design.md).
fn stored_files(t: &TestRepo) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for d in ["packs", "snapshots", "spaces", "receipts", "forgets"] {
        let p = t.path().join(d);
        if p.is_dir() {
            puce_tests::files_with_bytes(&p, &mut out);
        }
    }
    out.push((
        t.path().join("config"),
        fs::read(t.path().join("config")).unwrap(),
    ));
    out
}

#[test]
fn an_encrypted_repository_shows_nothing_of_names_and_contents() {
    let t = TestRepo::with_init(&["--encrypt"]);
    let src = t.dir.path().join("src");
    puce_tests::make_marked_source(&src);
    let v = t.json(&[
        "snapshot",
        src.to_str().unwrap(),
        "--space",
        "ZORGLUB-SPACE",
        "--tag",
        "ZORGLUB-TAG",
        "--host",
        "ZORGLUB-HOST",
    ]);
    let first = v["id"].as_str().unwrap().to_string();
    t.ok(&["policy", "set", "ZORGLUB-SPACE", "--keep-daily", "7"]);
    let shown = t.json(&["policy", "show"]);
    assert_eq!(shown[0]["space"], "ZORGLUB-SPACE", "{shown}");

    // The key is outside the repository, private to its owner.
    let key = key_file(&t);
    assert_eq!(
        fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(!key.starts_with(t.path()));
    assert_eq!(
        fs::read(t.path().join("config")).unwrap()[8],
        2,
        "config version 2"
    );

    let stored = stored_files(&t);
    let total: usize = stored.iter().map(|(_, b)| b.len()).sum();
    assert!(total >= 3 << 20, "the data is stored ({total} bytes)");
    puce_tests::assert_no_marker(&stored, &MARKERS);

    // Everything reads back: listing, restore byte for byte, a full check.
    let list = t.ok(&["snapshots"]);
    assert!(list.contains("ZORGLUB-SPACE"), "{list}");
    let out = t.dir.path().join("out");
    t.ok(&["restore", &first, out.to_str().unwrap()]);
    assert_eq!(manifest(&out), manifest(&src));
    let c = t.json(&["check", "--read-data"]);
    assert_eq!(c["problems"].as_array().unwrap().len(), 0, "{c}");

    // Identical data is stored once (a second space), and gc works on sealed packs.
    let packs_before = dir_size(&t.path().join("packs"));
    let v = t.json(&["snapshot", src.to_str().unwrap(), "--space", "copy"]);
    assert_eq!(v["summary"]["data_added"].as_u64(), Some(0), "{v}");
    let second = v["id"].as_str().unwrap().to_string();
    assert!(dir_size(&t.path().join("packs")) < packs_before + 64 * 1024);
    fs::write(src.join("notes.txt"), random_bytes(1 << 20, 12)).unwrap();
    t.snapshot(&src, "ZORGLUB-SPACE");
    t.ok(&["forget", &first]);
    t.ok(&["gc"]);
    let c = t.json(&["check", "--read-data"]);
    assert_eq!(c["problems"].as_array().unwrap().len(), 0, "{c}");
    let out2 = t.dir.path().join("out2");
    t.ok(&["restore", &second, out2.to_str().unwrap()]);
    assert_eq!(manifest(&out2), manifest(&out));
}

fn dir_size(d: &Path) -> u64 {
    let mut v = Vec::new();
    puce_tests::files_with_bytes(d, &mut v);
    v.iter().map(|(_, b)| b.len() as u64).sum()
}

#[test]
fn a_missing_wrong_or_damaged_key_is_a_clear_error() {
    let t = TestRepo::with_init(&["--encrypt"]);
    let src = t.dir.path().join("src");
    puce_tests::make_marked_source(&src);
    t.snapshot(&src, "docs");
    let key = key_file(&t);
    let kept = t.dir.path().join("kept.key");
    fs::rename(&key, &kept).unwrap();

    let out = t.run(&["snapshots"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("encrypted") && err.contains("--key-file"),
        "{err}"
    );

    // The key kept elsewhere opens it, by option or environment.
    let list = t.ok(&["--key-file", kept.to_str().unwrap(), "snapshots"]);
    assert!(list.contains("docs"), "{list}");
    let out = t
        .cmd()
        .env("PUCE_KEY_FILE", &kept)
        .args(["ls", "docs@latest"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Another repository's key is refused, saying so.
    let other = TestRepo::with_init(&["--encrypt"]);
    let other_key = key_file(&other);
    let out = t.run(&["--key-file", other_key.to_str().unwrap(), "snapshots"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("key of another repository"), "{err}");

    // A damaged key file is named as damaged.
    let mut bytes = fs::read(&kept).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0x10;
    let damaged = t.dir.path().join("damaged.key");
    fs::write(&damaged, &bytes).unwrap();
    let out = t.run(&["--key-file", damaged.to_str().unwrap(), "snapshots"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("damaged.key") && err.contains("checksum"),
        "{err}"
    );
}

/// Two sites of one association, both encrypted with the association's key (the second made
/// with `--key-from`): they sync both ways, the receiver's files show nothing of the data, and
/// what it received restores byte for byte. A site with another key is refused when it
/// connects, and nothing is committed.
#[test]
fn two_sites_with_the_same_key_sync_and_a_site_with_another_key_cannot() {
    use puce_tests::node::TestNode;
    let lyon_repo = TestRepo::with_init(&["--encrypt"]);
    let key = key_file(&lyon_repo);
    let key_arg = key.to_str().unwrap().to_string();
    let grenoble_repo = TestRepo::with_init(&["--encrypt", "--key-from", &key_arg]);
    let grants = r#"{ docs = ["pull", "push"] }"#;
    let mut a = TestNode::with("lyon", lyon_repo, "127.0.0.1", None);
    let mut b = TestNode::with("grenoble", grenoble_repo, "127.0.0.1", None);
    a.add_peer(&b, grants);
    b.add_peer(&a, grants);
    b.start();
    let src = a.repo.dir.path().join("src");
    puce_tests::make_marked_source(&src);
    let snap = a.snapshot(&src, "docs");
    a.sync("grenoble", &["--push"]);
    assert!(b.snapshot_ids().contains(&snap));
    assert_eq!(manifest(&b.restored("docs@latest")), manifest(&src));
    b.ok(&["check", "--read-data"]);
    for (path, bytes) in stored_files(&b.repo) {
        assert!(
            !bytes.windows(15).any(|w| w == b"ZORGLUB-CONTENT"),
            "{}",
            path.display()
        );
    }
    // A change made at grenoble comes back; only the new data moves.
    fs::write(src.join("new.txt"), b"written at grenoble").unwrap();
    let snap_b = b.snapshot(&src, "docs");
    let r = a.sync("grenoble", &["--pull"]);
    assert!(a.snapshot_ids().contains(&snap_b));
    assert!(r["received_bytes"].as_u64().unwrap() < 64 * 1024, "{r}");
    assert_eq!(manifest(&a.restored("docs@latest")), manifest(&src));
    b.stop();

    // Another association's key: refused when they connect (naming both keys), nothing is
    // committed.
    let mut c = TestNode::with(
        "annecy",
        TestRepo::with_init(&["--encrypt"]),
        "127.0.0.1",
        None,
    );
    c.add_peer(&a, grants);
    a.add_peer(&c, grants);
    c.start();
    let err = a.sync_fails("annecy", &["--push"]);
    assert!(
        err.contains("must share the association's key") && err.contains("--key-from"),
        "{err}"
    );
    assert!(c.snapshot_ids().is_empty());
    c.stop();
}
