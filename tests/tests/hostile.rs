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
use puce_tests::TestRepo;

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
