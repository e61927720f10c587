//! End-to-end tests of the chunk store through the real `puce` binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use puce_tests::{TestRepo, make_tree, manifest, random_bytes};

#[test]
fn snapshot_restore_is_byte_identical() {
    let repo = TestRepo::new();
    let src = repo.dir.path().join("src");
    make_tree(&src, 1);
    let id = repo.snapshot(&src, "docs");
    let out = repo.dir.path().join("out");
    repo.ok(&["restore", &id[..8], out.to_str().unwrap()]);
    assert_eq!(manifest(&src), manifest(&out));
    // SPACE@latest names the same snapshot.
    let out2 = repo.dir.path().join("out2");
    repo.ok(&["restore", "docs@latest", out2.to_str().unwrap()]);
    assert_eq!(manifest(&src), manifest(&out2));
    repo.ok(&["check", "--read-data"]);
}

#[test]
fn unchanged_files_are_not_read_again() {
    let repo = TestRepo::new();
    let src = repo.dir.path().join("src");
    make_tree(&src, 2);
    let first = repo.json(&["snapshot", src.to_str().unwrap(), "--space", "s"]);
    assert_eq!(first["summary"]["files_new"], 5);
    let second = repo.json(&["snapshot", src.to_str().unwrap(), "--space", "s"]);
    assert_eq!(second["summary"]["bytes_read"], 0);
    assert_eq!(second["summary"]["files_unmodified"], 5);
    assert_eq!(second["summary"]["data_added"], 0);
    assert_eq!(
        second["tree"], first["tree"],
        "same content, same root tree"
    );
    assert_eq!(second["parents"][0], first["id"]);
    // Change one file: only it is read; a chmod (ctime) forces a re-read of another.
    fs::write(src.join("docs/empty.txt"), b"now with content").unwrap();
    let p = src.join("readme.txt");
    let mut perm = fs::metadata(&p).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o700);
    fs::set_permissions(&p, perm).unwrap();
    let third = repo.json(&["snapshot", src.to_str().unwrap(), "--space", "s"]);
    assert_eq!(third["summary"]["files_changed"], 2);
    assert_eq!(third["summary"]["files_unmodified"], 3);
    // --force-read reads everything again but stores nothing new.
    let forced = repo.json(&[
        "snapshot",
        src.to_str().unwrap(),
        "--space",
        "s",
        "--force-read",
    ]);
    assert_eq!(forced["summary"]["files_unmodified"], 0);
    assert_eq!(forced["summary"]["data_added"], 0);
}

#[test]
fn identical_data_is_stored_once_across_spaces() {
    let repo = TestRepo::new();
    let a = repo.dir.path().join("a");
    let b = repo.dir.path().join("b");
    make_tree(&a, 3);
    // A copy with the same content and times: every tree is identical.
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(&a)
        .arg(&b)
        .status()
        .unwrap();
    assert!(st.success());
    let ra = repo.json(&["snapshot", a.to_str().unwrap(), "--space", "one"]);
    let rb = repo.json(&["snapshot", b.to_str().unwrap(), "--space", "two"]);
    assert!(ra["summary"]["data_added"].as_u64().unwrap() > 3_000_000);
    assert_eq!(
        rb["summary"]["data_added"], 0,
        "second space stores nothing new"
    );
    // Identical subtrees, and so identical roots, are one object.
    assert_eq!(ra["tree"], rb["tree"]);
}

#[test]
fn excludes_and_special_files() {
    let repo = TestRepo::new();
    let src = repo.dir.path().join("src");
    make_tree(&src, 4);
    fs::write(src.join("docs/cache.tmp"), b"x").unwrap();
    fs::create_dir_all(src.join("node_modules/x")).unwrap();
    fs::write(src.join("node_modules/x/y.js"), b"y").unwrap();
    let fifo = src.join("fifo");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let v = repo.json(&[
        "snapshot",
        src.to_str().unwrap(),
        "--space",
        "s",
        "--exclude",
        "*.tmp",
        "--exclude",
        "node_modules",
    ]);
    let warnings = v["warnings"].as_array().unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    let ls = repo.ok(&["ls", "-R", "s@latest"]);
    assert!(!ls.contains("cache.tmp"));
    assert!(!ls.contains("node_modules"));
    // A fifo is stored as what it is (never opened).
    assert!(ls.contains("fifo"));
    assert!(ls.contains("docs/deep/er/big.bin"));
}

#[test]
fn unreadable_file_is_skipped_not_fatal() {
    let repo = TestRepo::new();
    let src = repo.dir.path().join("src");
    make_tree(&src, 5);
    let p = src.join("secret");
    fs::write(&p, b"x").unwrap();
    fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o000)).unwrap();
    let mut cmd = repo.cmd();
    if puce_tests::is_root() {
        // root reads mode-000 files: run puce as nobody, over a tree nobody may write.
        let st = std::process::Command::new("chmod")
            .args(["-R", "a+rwX"])
            .arg(repo.dir.path())
            .status()
            .unwrap();
        assert!(st.success());
        fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o000)).unwrap();
        cmd = std::process::Command::new("setpriv");
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(puce_tests::puce_bin())
            .env("PUCE_REPO", repo.path())
            .env("XDG_CACHE_HOME", repo.dir.path().join("cache"))
            .env("XDG_CONFIG_HOME", repo.dir.path().join("config"));
    }
    let out = cmd
        .args(["--json", "snapshot", src.to_str().unwrap(), "--space", "s"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["summary"]["errors"], 1);
    assert_eq!(
        v["summary"]["files"], 5,
        "the other files are in the snapshot"
    );
    assert!(v["warnings"][0].as_str().unwrap().contains("secret"));
}

#[test]
fn ls_cat_and_diff() {
    let repo = TestRepo::new();
    let src = repo.dir.path().join("src");
    make_tree(&src, 6);
    let a = repo.snapshot(&src, "s");
    fs::write(src.join("docs/new.txt"), b"new file").unwrap();
    fs::remove_file(src.join("docs/a.bin")).unwrap();
    fs::write(src.join("readme.txt"), b"changed").unwrap();
    let b = repo.snapshot(&src, "s");
    let cat = repo
        .cmd()
        .args(["cat", &format!("{}:docs/new.txt", &b[..10])])
        .output()
        .unwrap();
    assert_eq!(cat.stdout, b"new file");
    let big = repo
        .cmd()
        .args(["cat", "s@latest:docs/deep/er/big.bin"])
        .output()
        .unwrap();
    assert_eq!(big.stdout, random_bytes(3_000_000, 7));
    let ls = repo.json(&["ls", "s@latest:docs"]);
    let names: Vec<&str> = ls
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["docs/deep", "docs/empty.txt", "docs/new.txt"]);
    let d = repo.json(&["diff", &a, &b]);
    let changes: Vec<(String, String)> = d["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["change"].as_str().unwrap().to_string(),
                c["path"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(changes.contains(&("removed".into(), "docs/a.bin".into())));
    assert!(changes.contains(&("added".into(), "docs/new.txt".into())));
    assert!(changes.contains(&("modified".into(), "readme.txt".into())));
    assert_eq!(d["stats"]["added"], 1);
    // The previous snapshot by revision.
    let prev = repo.json(&["ls", "s@latest~1:docs"]);
    let names: Vec<&str> = prev
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["docs/a.bin", "docs/deep", "docs/empty.txt"]);
}

#[test]
fn restore_a_single_file_and_a_subfolder() {
    let repo = TestRepo::new();
    let src = repo.dir.path().join("src");
    make_tree(&src, 8);
    repo.snapshot(&src, "s");
    let out = repo.dir.path().join("one");
    fs::create_dir_all(&out).unwrap();
    repo.ok(&["restore", "s@latest:docs/a.bin", out.to_str().unwrap()]);
    assert_eq!(
        fs::read(out.join("a.bin")).unwrap(),
        fs::read(src.join("docs/a.bin")).unwrap()
    );
    let sub = repo.dir.path().join("sub");
    repo.ok(&["restore", "s@latest:docs", sub.to_str().unwrap()]);
    assert_eq!(manifest(&src.join("docs")), manifest(&sub));
}

#[test]
fn restore_does_not_follow_symlinks_in_the_target() {
    let repo = TestRepo::new();
    let src = repo.dir.path().join("src");
    make_tree(&src, 9);
    repo.snapshot(&src, "s");
    // A target that already holds a symlink where the snapshot has a directory and a file.
    let out = repo.dir.path().join("out");
    let outside = repo.dir.path().join("outside");
    fs::create_dir_all(&out).unwrap();
    fs::create_dir_all(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, out.join("docs")).unwrap();
    std::os::unix::fs::symlink(outside.join("victim"), out.join("readme.txt")).unwrap();
    repo.ok(&["restore", "s@latest", out.to_str().unwrap()]);
    assert_eq!(
        fs::read_dir(&outside).unwrap().count(),
        0,
        "nothing written outside the target"
    );
    assert_eq!(manifest(&src), manifest(&out));
}

#[test]
fn errors_have_exit_codes() {
    let repo = TestRepo::new();
    // usage error
    assert_eq!(repo.run(&["snapshot"]).status.code(), Some(2));
    assert_eq!(repo.run(&["ls", "zz"]).status.code(), Some(2));
    // not found
    let out = repo.run(&["ls", "nospace@latest"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("has no snapshots"));
    let out = repo.run(&["snapshot", "/nonexistent/folder"]);
    assert_eq!(out.status.code(), Some(1));
    // a repository that does not exist
    let out = repo
        .cmd()
        .env("PUCE_REPO", "/nonexistent/repo")
        .args(["snapshots"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("puce init"));
}

#[test]
fn default_repository_is_created_on_first_use() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("Documents");
    make_tree(&src, 10);
    let puce = |args: &[&str]| {
        std::process::Command::new(puce_tests::puce_bin())
            .env_remove("PUCE_REPO")
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("PUCE_KEY_FILE")
            .env("XDG_DATA_HOME", dir.path().join("data"))
            .env("XDG_CACHE_HOME", dir.path().join("cache"))
            .env("HOME", dir.path())
            .args(args)
            .output()
            .unwrap()
    };
    let out = puce(&["--json", "snapshot", src.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["space"], "Documents",
        "space defaults to the folder's name"
    );
    assert!(dir.path().join("data/puce/repo/config").is_file());
    // It is encrypted, and says once where its key is and to keep a copy.
    let keys: Vec<_> = fs::read_dir(dir.path().join(".config/puce/keys"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert_eq!(fs::metadata(&keys[0]).unwrap().mode() & 0o777, 0o600);
    assert!(
        err.contains("encrypted with key") && err.contains(&*keys[0].to_string_lossy()),
        "{err}"
    );
    assert!(err.contains("copy that file somewhere safe"), "{err}");
    let again = puce(&["snapshots"]);
    assert!(again.status.success());
    assert!(!String::from_utf8_lossy(&again.stderr).contains("encrypted with key"));
    // Nothing of the folder's names is in the repository's files.
    let marker = make_tree_marker(&src);
    let out = puce(&["snapshot", src.to_str().unwrap()]);
    assert!(out.status.success());
    for f in walkdir(&dir.path().join("data/puce/repo")) {
        if f.file_name().is_some_and(|n| n == "index.redb") {
            continue; // the local index is not sealed (docs/guide.md)
        }
        let bytes = fs::read(&f).unwrap();
        assert!(
            !bytes.windows(marker.len()).any(|w| w == marker.as_bytes()),
            "{} holds {marker}",
            f.display()
        );
    }
}

/// Add to `src` a file whose name and contents are a marker string; returns the marker.
fn make_tree_marker(src: &Path) -> String {
    let marker = "marker-name-7f3a9c".to_string();
    fs::write(src.join(&marker), marker.repeat(50)).unwrap();
    marker
}

#[test]
fn corruption_is_detected_and_attributed() {
    let repo = TestRepo::new();
    let src = repo.dir.path().join("src");
    make_tree(&src, 11);
    let id = repo.snapshot(&src, "s");
    repo.ok(&["check", "--read-data"]);
    // Flip one byte inside the largest pack's data.
    let mut packs: Vec<_> = walkdir(&repo.path().join("packs"));
    packs.sort_by_key(|p| fs::metadata(p).unwrap().len());
    let pack = packs.last().unwrap();
    let mut data = fs::read(pack).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 0x40;
    fs::write(pack, &data).unwrap();
    // A structural check does not read data; --read-data finds it and names the file.
    let out = repo.run(&["--json", "check", "--read-data"]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    puce_tests::golden::assert_json_schema("check-damaged", &v);
    assert_eq!(v["ok"], false);
    assert!(
        v["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["kind"] == "corrupt_object")
    );
    let affected = &v["affected"][0];
    assert_eq!(affected["id"].as_str().unwrap(), id);
    assert!(!affected["paths"].as_array().unwrap().is_empty());
    // Restore refuses to write wrong bytes: it reports the damaged file and exits 1.
    let out = repo.run(&[
        "restore",
        "s@latest",
        repo.dir.path().join("out").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("damaged"));
}

#[test]
fn missing_pack_is_reported() {
    let repo = TestRepo::new();
    let src = repo.dir.path().join("src");
    make_tree(&src, 12);
    repo.snapshot(&src, "s");
    for p in walkdir(&repo.path().join("packs")) {
        fs::remove_file(p).unwrap();
    }
    let out = repo.run(&["--json", "check"]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["kind"] == "missing_pack")
    );
    assert_eq!(v["affected"].as_array().unwrap().len(), 1);
}

#[test]
fn repair_index_rebuilds_from_packs() {
    let repo = TestRepo::new();
    let src = repo.dir.path().join("src");
    make_tree(&src, 13);
    repo.snapshot(&src, "s");
    fs::write(src.join("more.txt"), b"more").unwrap();
    repo.snapshot(&src, "s");
    fs::remove_file(repo.path().join("index.redb")).unwrap();
    let v = repo.json(&["repair", "index"]);
    assert_eq!(v["snapshots"], 2);
    assert!(v["objects"].as_u64().unwrap() > 5);
    repo.ok(&["check", "--read-data"]);
    let out = repo.dir.path().join("out");
    repo.ok(&["restore", "s@latest", out.to_str().unwrap()]);
    assert_eq!(manifest(&src), manifest(&out));
}

#[test]
fn two_snapshot_processes_at_once_both_commit() {
    let repo = TestRepo::new();
    let a = repo.dir.path().join("a");
    let b = repo.dir.path().join("b");
    make_tree(&a, 14);
    make_tree(&b, 15);
    for i in 0..20 {
        fs::write(a.join(format!("f{i}")), random_bytes(200_000, 100 + i)).unwrap();
        fs::write(b.join(format!("f{i}")), random_bytes(200_000, 200 + i)).unwrap();
    }
    let pa = repo
        .cmd()
        .args(["--json", "snapshot", a.to_str().unwrap(), "--space", "a"])
        .output();
    let pb = repo
        .cmd()
        .args(["--json", "snapshot", b.to_str().unwrap(), "--space", "b"])
        .spawn()
        .unwrap();
    let pa = pa.unwrap();
    let pb = pb.wait_with_output().unwrap();
    assert!(
        pa.status.success(),
        "{}",
        String::from_utf8_lossy(&pa.stderr)
    );
    assert!(pb.status.success());
    let snaps = repo.json(&["snapshots"]);
    assert_eq!(snaps.as_array().unwrap().len(), 2);
    repo.ok(&["check", "--read-data"]);
    for (space, dir) in [("a", &a), ("b", &b)] {
        let out = repo.dir.path().join(format!("out-{space}"));
        repo.ok(&["restore", &format!("{space}@latest"), out.to_str().unwrap()]);
        assert_eq!(manifest(dir), manifest(&out));
    }
}

fn walkdir(p: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(p).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            out.extend(walkdir(&e.path()));
        } else if !e.file_name().as_bytes().ends_with(b".tmp") {
            out.push(e.path());
        }
    }
    out
}
