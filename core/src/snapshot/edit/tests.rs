//! The overlay: edits, POSIX errors, writing, the journal encoding.

use std::fs::File;

use super::*;
use crate::format::hexdump;
use crate::repo::InitOptions;
use crate::saver::Saver;
use std::io::Write;

fn meta(mode: u32) -> Meta {
    Meta {
        mode,
        mtime_ns: 1_000,
        uid: 1,
        gid: 2,
    }
}

struct Env {
    _dir: tempfile::TempDir,
    repo: Arc<Repo>,
    local: std::path::PathBuf,
}

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let repo = Arc::new(Repo::init(&dir.path().join("repo"), &InitOptions::default()).unwrap());
    let local = dir.path().join("local");
    std::fs::create_dir(&local).unwrap();
    Env {
        _dir: dir,
        repo,
        local,
    }
}

impl Env {
    fn put_local(&self, id: u64, data: &[u8]) {
        let mut f = File::create(self.local.join(id.to_string())).unwrap();
        f.write_all(data).unwrap();
    }
    fn write(&self, t: &EditTree) -> ObjectId {
        let saver = Saver::new(self.repo.clone(), 1).unwrap();
        let local = self.local.clone();
        let id = t
            .write(&self.repo, &saver, &move |n| {
                File::open(local.join(n.to_string())).map_err(|e| Error::io("open", &local, e))
            })
            .unwrap();
        saver.finish().unwrap();
        id
    }
    /// path -> description, for comparisons.
    fn flat(&self, root: ObjectId) -> BTreeMap<String, String> {
        let reader = self.repo.index().reader().unwrap();
        let mut out = BTreeMap::new();
        crate::vfs::walk(&self.repo, &reader, root, b"", &mut |p, e| {
            let d = match &e.node {
                Node::File { size, chunks } => {
                    let mut data = Vec::new();
                    for c in chunks {
                        data.extend(self.repo.read_object_with(&reader, c).unwrap());
                    }
                    assert_eq!(data.len() as u64, *size);
                    format!("f{:o} {}", e.mode, String::from_utf8_lossy(&data))
                }
                Node::Dir { .. } => format!("d{:o}", e.mode),
                Node::Symlink { target } => {
                    format!("l {}", String::from_utf8_lossy(target))
                }
                other => format!("{other:?}"),
            };
            out.insert(String::from_utf8_lossy(p).into_owned(), d);
            Ok(())
        })
        .unwrap();
        out
    }
}

fn src(e: &Env) -> (Arc<Repo>, IndexReader) {
    (e.repo.clone(), e.repo.index().reader().unwrap())
}

fn mkdir(p: &str) -> Edit {
    Edit::Mkdir {
        path: p.into(),
        meta: meta(0o755),
        time_ns: 5,
    }
}
fn create(p: &str, id: u64) -> Edit {
    Edit::Create {
        path: p.into(),
        meta: meta(0o644),
        content: Content::Local(id),
        time_ns: 5,
    }
}

#[test]
fn build_edit_and_reuse_subtrees() {
    let e = env();
    e.put_local(1, b"one");
    e.put_local(2, b"two");
    let mut t = EditTree::new(None);
    let (repo, reader) = src(&e);
    let s = RepoTrees {
        repo: &repo,
        reader: &reader,
    };
    for ed in [
        mkdir("a"),
        mkdir("a/b"),
        mkdir("keep"),
        create("a/b/f", 1),
        create("keep/g", 2),
        Edit::Symlink {
            path: b"l".to_vec(),
            target: b"a/b/f".to_vec(),
            meta: meta(0o777),
            time_ns: 5,
        },
    ] {
        t.apply(&s, &ed).unwrap();
    }
    let r1 = e.write(&t);
    let flat1 = e.flat(r1);
    assert_eq!(flat1["a/b/f"], "f644 one");
    assert_eq!(flat1["keep/g"], "f644 two");
    assert_eq!(flat1["l"], "l a/b/f");

    // Second generation: edit only under a/.
    let reader = e.repo.index().reader().unwrap();
    let s = RepoTrees {
        repo: &repo,
        reader: &reader,
    };
    let mut t2 = EditTree::new(Some(r1));
    t2.apply(
        &s,
        &Edit::Rename {
            from: b"a/b/f".to_vec(),
            to: b"a/f2".to_vec(),
            noreplace: false,
            time_ns: 6,
        },
    )
    .unwrap();
    t2.apply(
        &s,
        &Edit::SetMeta {
            path: b"a/f2".to_vec(),
            mode: Some(0o600),
            uid: None,
            gid: None,
            mtime_ns: None,
        },
    )
    .unwrap();
    assert!(t2.is_changed());
    // `keep` was never loaded: it is still a stored reference.
    let r2 = e.write(&t2);
    let flat2 = e.flat(r2);
    assert_eq!(flat2["a/f2"], "f600 one");
    assert!(!flat2.contains_key("a/b/f"));
    let old_keep = e.repo.read_tree(&r1).unwrap().get(b"keep").unwrap().clone();
    let new_keep = e.repo.read_tree(&r2).unwrap().get(b"keep").unwrap().clone();
    assert_eq!(old_keep, new_keep);
    // An unchanged overlay writes the same root.
    assert_eq!(e.write(&EditTree::new(Some(r2))), r2);
}

#[test]
fn posix_errors() {
    let e = env();
    e.put_local(1, b"x");
    let (repo, reader) = src(&e);
    let s = RepoTrees {
        repo: &repo,
        reader: &reader,
    };
    let mut t = EditTree::new(None);
    t.apply(&s, &mkdir("d")).unwrap();
    t.apply(&s, &create("d/f", 1)).unwrap();
    t.apply(&s, &mkdir("e")).unwrap();
    let err = |t: &mut EditTree, ed: Edit| t.apply(&s, &ed).unwrap_err();
    assert!(matches!(err(&mut t, mkdir("d")), EditError::Exists(_)));
    assert!(matches!(err(&mut t, mkdir("x/y")), EditError::NotFound(_)));
    assert!(matches!(
        err(&mut t, mkdir("d/f/z")),
        EditError::NotADirectory(_)
    ));
    let rm = |p: &str, dir| Edit::Remove {
        path: p.into(),
        dir,
        time_ns: 0,
    };
    assert!(matches!(err(&mut t, rm("d", true)), EditError::NotEmpty(_)));
    assert!(matches!(
        err(&mut t, rm("d", false)),
        EditError::IsADirectory(_)
    ));
    assert!(matches!(
        err(&mut t, rm("d/f", true)),
        EditError::NotADirectory(_)
    ));
    let mv = |a: &str, b: &str| Edit::Rename {
        from: a.into(),
        to: b.into(),
        noreplace: false,
        time_ns: 0,
    };
    assert!(matches!(
        err(&mut t, mv("d", "d/in")),
        EditError::Invalid(_)
    ));
    assert!(matches!(
        err(&mut t, mv("d/f", "e")),
        EditError::IsADirectory(_)
    ));
    assert!(matches!(
        err(&mut t, mv("e", "d/f")),
        EditError::NotADirectory(_)
    ));
    assert!(matches!(err(&mut t, mv("e", "d")), EditError::NotEmpty(_)));
    assert!(matches!(
        err(&mut t, mv("nope", "z")),
        EditError::NotFound(_)
    ));
    assert!(matches!(
        err(&mut t, mkdir("a/../b")),
        EditError::Invalid(_)
    ));
    // Rename over an empty directory and over a file work.
    t.apply(&s, &mv("d", "e")).unwrap();
    t.apply(&s, &create("g", 1)).unwrap();
    t.apply(&s, &mv("g", "e/f")).unwrap();
    assert!(t.lookup(&s, b"g").unwrap().is_none());
    assert_eq!(t.lookup(&s, b"e/f").unwrap().unwrap().local, Some(1));
    t.apply(&s, &rm("e/f", false)).unwrap();
    t.apply(&s, &rm("e", true)).unwrap();
    assert!(t.list(&s, b"").unwrap().is_empty());
}

/// Golden: the postcard encoding of journal edits (part of the mount's journal format).
#[test]
fn golden_edit_encoding() {
    let ed = Edit::Create {
        path: b"a/b".to_vec(),
        meta: Meta {
            mode: 0o644,
            mtime_ns: 1,
            uid: 1000,
            gid: 100,
        },
        content: Content::Local(0x0102),
        time_ns: -1,
    };
    let mk = Edit::Mknod {
        path: b"p".to_vec(),
        meta: Meta {
            mode: 0o644,
            mtime_ns: 1,
            uid: 1000,
            gid: 100,
        },
        node: Node::Fifo,
        time_ns: 1,
    };
    let expect = [
        "07",   // Edit::Mknod
        "0170", // path "p"
        "a403", // mode 0o644
        "02",   // mtime 1 (zigzag)
        "e807", // uid 1000
        "64",   // gid 100
        "03",   // Node::Fifo (the tree's node encoding)
        "02",   // time 1 (zigzag)
    ]
    .concat();
    assert_eq!(hexdump(&postcard::to_stdvec(&mk).unwrap()), expect);
    let bytes = postcard::to_stdvec(&ed).unwrap();
    let expect = [
        "02",       // Edit::Create
        "03612f62", // path "a/b"
        "a403",     // mode 0o644
        "02",       // mtime 1 (zigzag)
        "e807",     // uid 1000
        "64",       // gid 100
        "01",       // Content::Local
        "8202",     // 0x0102 (varint)
        "01",       // time -1 (zigzag)
    ]
    .concat();
    assert_eq!(hexdump(&bytes), expect);
    let back: Edit = postcard::from_bytes(&bytes).unwrap();
    assert_eq!(back, ed);
    let rn = Edit::Rename {
        from: b"x".to_vec(),
        to: b"y".to_vec(),
        noreplace: true,
        time_ns: 0,
    };
    assert_eq!(
        hexdump(&postcard::to_stdvec(&rn).unwrap()),
        [
            "05",   // Edit::Rename
            "0178", // from "x"
            "0179", // to "y"
            "01",   // noreplace
            "00",   // time 0
        ]
        .concat()
    );
}

#[test]
fn golden_link_edit_encoding() {
    let ln = Edit::Link {
        from: b"a".to_vec(),
        to: b"d/b".to_vec(),
        group: 0x0102,
        time_ns: 1,
    };
    let bytes = postcard::to_stdvec(&ln).unwrap();
    assert_eq!(
        hexdump(&bytes),
        [
            "08",       // Edit::Link
            "0161",     // from "a"
            "03642f62", // to "d/b"
            "8202",     // group 0x0102 (varint)
            "02",       // time 1 (zigzag)
        ]
        .concat()
    );
    assert_eq!(postcard::from_bytes::<Edit>(&bytes).unwrap(), ln);
}

#[test]
fn hard_links_are_one_file_through_edits_and_a_write() {
    let e = env();
    e.put_local(1, b"one");
    e.put_local(2, b"two");
    let (repo, reader) = src(&e);
    let s = RepoTrees {
        repo: &repo,
        reader: &reader,
    };
    let link = |from: &str, to: &str| Edit::Link {
        from: from.into(),
        to: to.into(),
        group: 42,
        time_ns: 5,
    };
    let mut t = EditTree::new(None);
    for ed in [
        mkdir("d"),
        create("a", 1),
        link("a", "d/b"),
        link("d/b", "c"),
    ] {
        t.apply(&s, &ed).unwrap();
    }
    assert_eq!(t.lookup(&s, b"a").unwrap().unwrap().link, Some(42));
    assert_eq!(t.names(&s, 42).unwrap(), 3);
    // Content and metadata changed through one name change every name.
    t.apply(
        &s,
        &Edit::SetContent {
            path: b"c".to_vec(),
            content: Content::Local(2),
        },
    )
    .unwrap();
    t.apply(
        &s,
        &Edit::SetMeta {
            path: b"d/b".to_vec(),
            mode: Some(0o600),
            uid: None,
            gid: None,
            mtime_ns: None,
        },
    )
    .unwrap();
    for p in [&b"a"[..], b"d/b", b"c"] {
        let i = t.lookup(&s, p).unwrap().unwrap();
        assert_eq!((i.local, i.meta.mode), (Some(2), 0o600), "{p:?}");
    }
    // Renaming one name onto another of the same file does nothing; a directory rename
    // moves the names below it; removing a name keeps the others.
    let rn = |from: &str, to: &str| Edit::Rename {
        from: from.into(),
        to: to.into(),
        noreplace: false,
        time_ns: 6,
    };
    t.apply(&s, &rn("a", "c")).unwrap();
    assert!(t.lookup(&s, b"a").unwrap().is_some());
    t.apply(&s, &rn("d", "e")).unwrap();
    t.apply(
        &s,
        &Edit::Remove {
            path: b"a".to_vec(),
            dir: false,
            time_ns: 7,
        },
    )
    .unwrap();
    assert_eq!(t.names(&s, 42).unwrap(), 2);
    // Directories and missing names cannot be linked; an existing name is not replaced.
    assert!(matches!(
        t.apply(&s, &link("e", "x")),
        Err(EditError::Invalid(_))
    ));
    assert!(matches!(
        t.apply(&s, &link("nope", "x")),
        Err(EditError::NotFound(_))
    ));
    assert!(matches!(
        t.apply(&s, &link("c", "e/b")),
        Err(EditError::Exists(_))
    ));
    // Written, the names are one hard-link group; a tree loaded from it counts them (walk).
    let root = e.write(&t);
    let flat = e.flat(root);
    assert_eq!(flat["c"], "f600 two");
    assert_eq!(flat["e/b"], "f600 two");
    let reader = e.repo.index().reader().unwrap();
    let s = RepoTrees {
        repo: &repo,
        reader: &reader,
    };
    let t2 = EditTree::new(Some(root));
    let g = t2.lookup(&s, b"e/b").unwrap().unwrap().link.unwrap();
    assert_eq!(t2.lookup(&s, b"c").unwrap().unwrap().link, Some(g));
    assert_eq!(t2.names(&s, g).unwrap(), 2);
}
