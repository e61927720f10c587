//! A repository holding a malicious tree (written by a buggy or hostile peer): restore must
//! refuse the unsafe entries, write nothing outside the target, and say what is wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::sync::Arc;

use puce_core::format::pack::Kind;
use puce_core::format::snapshot::{Snapshot, Summary};
use puce_core::format::tree::{Entry, Node, Tree};
use puce_core::saver::Saver;
use puce_core::{ObjectId, OpenOptions, Repo};
use puce_tests::{TestRepo, fuse_available, is_mounted};

fn file(name: &[u8], chunk: ObjectId) -> Entry {
    Entry {
        name: name.to_vec(),
        mode: 0o644,
        mtime_ns: 0,
        uid: 0,
        gid: 0,
        node: Node::File {
            size: 6,
            chunks: vec![chunk],
        },
    }
}

/// Store `root` (entries not validated, as a hostile writer would) and a snapshot of it.
fn plant(repo: &TestRepo, entries: Vec<Entry>, sub: Option<Vec<Entry>>) -> String {
    let r = Arc::new(
        Repo::open_with(
            &repo.path(),
            &OpenOptions {
                cache_dir: Some(repo.dir.path().join("cache")),
                ..OpenOptions::default()
            },
        )
        .unwrap(),
    );
    let saver = Saver::new(r.clone(), 1).unwrap();
    let reader = r.index().reader().unwrap();
    let data = b"pwned!".to_vec();
    let chunk = ObjectId::of(&data);
    saver.save(&reader, chunk, Kind::Data, data).unwrap();
    let mut entries = entries;
    for e in entries.iter_mut() {
        if let Node::File { chunks, .. } = &mut e.node {
            *chunks = vec![chunk];
        }
    }
    if let Some(sub) = sub {
        let mut sub = sub;
        for e in sub.iter_mut() {
            if let Node::File { chunks, .. } = &mut e.node {
                *chunks = vec![chunk];
            }
        }
        let bytes = Tree { entries: sub }.encode().unwrap();
        let id = ObjectId::of(&bytes);
        saver.save(&reader, id, Kind::Tree, bytes).unwrap();
        for e in entries.iter_mut() {
            if let Node::Dir { tree } = &mut e.node {
                *tree = id;
            }
        }
    }
    let bytes = Tree { entries }.encode().unwrap();
    let root = ObjectId::of(&bytes);
    saver.save(&reader, root, Kind::Tree, bytes).unwrap();
    saver.finish().unwrap();
    let snap = Snapshot {
        time_ns: 1,
        space: "evil".into(),
        host: "h".into(),
        user: "u".into(),
        source: "/".into(),
        tags: vec![],
        parents: vec![],
        root,
        summary: Summary::default(),
        origin: String::new(),
    };
    r.save_snapshot(&snap).unwrap().to_hex()
}

fn dir(name: &[u8]) -> Entry {
    Entry {
        name: name.to_vec(),
        mode: 0o755,
        mtime_ns: 0,
        uid: 0,
        gid: 0,
        node: Node::Dir {
            tree: ObjectId::default(),
        },
    }
}

#[test]
fn restore_refuses_entries_that_escape_the_target() {
    type Case = (&'static str, Vec<Entry>, Option<Vec<Entry>>);
    let cases: Vec<Case> = vec![
        (
            "dotdot dir",
            vec![dir(b"..")],
            Some(vec![file(b"escaped", ObjectId::default())]),
        ),
        ("dotdot file", vec![file(b"..", ObjectId::default())], None),
        (
            "absolute",
            vec![file(b"/tmp/escaped", ObjectId::default())],
            None,
        ),
        (
            "slash",
            vec![file(b"a/../../escaped", ObjectId::default())],
            None,
        ),
        ("nul", vec![file(b"a\0b", ObjectId::default())], None),
        (
            "dot",
            vec![dir(b".")],
            Some(vec![file(b"x", ObjectId::default())]),
        ),
        ("empty", vec![file(b"", ObjectId::default())], None),
    ];
    for (what, entries, sub) in cases {
        let repo = TestRepo::new();
        let id = plant(&repo, entries, sub);
        let base = repo.dir.path().join("jail");
        let target = base.join("target");
        fs::create_dir_all(&target).unwrap();
        let out = repo.run(&["restore", &id, target.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1), "{what}: restore must fail");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("unsafe entry name"), "{what}: {err}");
        // Nothing was written beside the target, nor in it.
        let beside: Vec<_> = fs::read_dir(&base)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(beside, vec![std::ffi::OsString::from("target")], "{what}");
        assert_eq!(fs::read_dir(&target).unwrap().count(), 0, "{what}");
        assert!(!std::path::Path::new("/tmp/escaped").exists());
        // `ls` and `check` name the problem instead of panicking.
        let ls = repo.run(&["ls", "-R", &id]);
        assert_eq!(ls.status.code(), Some(1), "{what}");
        let check = repo.run(&["check"]);
        assert_eq!(check.status.code(), Some(1), "{what}");
    }
}

/// Every file and directory under `p`, following nothing, ignoring what cannot be listed.
fn walk(p: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    let Ok(rd) = fs::read_dir(p) else { return };
    for e in rd.flatten() {
        let path = e.path();
        out.push(path.clone());
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            walk(&path, out);
        }
    }
}

#[test]
fn a_mount_shows_no_entry_that_escapes() {
    if !fuse_available("the hostile-tree mount test") {
        return;
    }
    type Case = (&'static str, Vec<Entry>, Option<Vec<Entry>>);
    let cases: Vec<Case> = vec![
        (
            "dotdot dir",
            vec![dir(b"..")],
            Some(vec![file(b"escaped", ObjectId::default())]),
        ),
        (
            "slash",
            vec![file(b"a/../../escaped", ObjectId::default())],
            None,
        ),
        (
            "absolute",
            vec![file(b"/tmp/escaped", ObjectId::default())],
            None,
        ),
        ("nul", vec![file(b"a\0b", ObjectId::default())], None),
    ];
    for (what, entries, sub) in cases {
        let repo = TestRepo::new();
        plant(&repo, entries, sub);
        let mnt = repo.dir.path().join("mnt");
        fs::create_dir_all(&mnt).unwrap();
        let mut child = repo
            .cmd()
            .args(["mount", mnt.to_str().unwrap(), "--read-only"])
            .stdout(std::process::Stdio::null())
            .stderr(fs::File::create(repo.dir.path().join("mount.log")).unwrap())
            .spawn()
            .unwrap();
        let start = std::time::Instant::now();
        while !is_mounted(&mnt) {
            assert!(child.try_wait().unwrap().is_none(), "{what}: mount exited");
            assert!(start.elapsed().as_secs() < 60, "{what}: no mount");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        // Walk everything the mount shows: the hostile snapshot fails to list (EIO), and no
        // path leads outside the mount.
        let mut seen = Vec::new();
        walk(&mnt.join("snapshots"), &mut seen);
        let canon_mnt = fs::canonicalize(&mnt).unwrap();
        for p in &seen {
            assert!(p.starts_with(&mnt), "{what}: {p:?}");
            let name = p.file_name().unwrap().as_encoded_bytes();
            assert!(name != b".." && name != b"." && !name.is_empty(), "{what}");
            if let Ok(c) = fs::canonicalize(p) {
                assert!(c.starts_with(&canon_mnt), "{what}: {p:?} leads to {c:?}");
            }
        }
        let evil = mnt.join("snapshots/evil");
        // Paths, not `DirEntry`s: an entry keeps its directory open (and the mount busy).
        let snaps: Vec<_> = fs::read_dir(&evil)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        assert_eq!(snaps.len(), 1, "{what}: the snapshot is listed");
        let err = fs::read_dir(&snaps[0])
            .and_then(|mut d| d.next().transpose())
            .err();
        assert_eq!(
            err.and_then(|e| e.raw_os_error()),
            Some(libc::EIO),
            "{what}: listing a hostile tree must fail with EIO"
        );
        assert!(!std::path::Path::new("/tmp/escaped").exists());
        assert!(!repo.dir.path().join("escaped").exists());
        // The mount is still alive after the refusal.
        assert!(fs::read_dir(mnt.join("spaces")).is_ok(), "{what}");
        let o = std::process::Command::new("fusermount3")
            .arg("-u")
            .arg(&mnt)
            .output()
            .unwrap();
        assert!(o.status.success(), "{what}: unmount: {o:?}");
        let st = child.wait().unwrap();
        assert!(st.success(), "{what}: mount exited with {st}");
    }
}
