//! The merge rules as tables, for both policies.

use std::collections::BTreeMap;

use super::*;
use crate::error::Error;
use crate::format::tree::Entry;
use crate::hash::Hash;

/// Trees in memory, keyed by id.
#[derive(Default)]
struct Mem(HashMap<ObjectId, Tree>);

impl TreeStore for Mem {
    fn get(&mut self, id: &ObjectId) -> Result<Tree> {
        self.0
            .get(id)
            .cloned()
            .ok_or_else(|| Error::not_found(format!("tree {id}")))
    }
    fn put(&mut self, tree: &Tree) -> Result<ObjectId> {
        let id = ObjectId::of(&tree.encode()?);
        self.0.insert(id, tree.clone());
        Ok(id)
    }
}

const T0: i64 = 1_709_258_400_000_000_000; // 2024-03-01 02:00:00 UTC

/// Build a tree from a spec: `path=content@mtime_seconds` for files, `path/` for empty
/// directories, `path->target` for symlinks.
fn build(store: &mut Mem, spec: &[&str]) -> ObjectId {
    #[derive(Default)]
    struct D(BTreeMap<Vec<u8>, Result<Entry, D>>);
    fn insert(d: &mut D, comps: &[&str], leaf: Option<Entry>) {
        let name = comps[0].as_bytes().to_vec();
        if comps.len() == 1 {
            match leaf {
                Some(e) => {
                    d.0.insert(name, Ok(e));
                }
                None => {
                    d.0.entry(name).or_insert_with(|| Err(D::default()));
                }
            }
            return;
        }
        let sub = d.0.entry(name).or_insert_with(|| Err(D::default()));
        if let Err(sub) = sub {
            insert(sub, &comps[1..], leaf);
        }
    }
    fn put(store: &mut Mem, d: D) -> ObjectId {
        let mut t = Tree::default();
        for (name, v) in d.0 {
            let e = match v {
                Ok(e) => e,
                Err(sub) => Entry {
                    name: name.clone(),
                    mode: 0o755,
                    mtime_ns: T0,
                    uid: 0,
                    gid: 0,
                    link: None,
                    node: Node::Dir {
                        tree: put(store, sub),
                    },
                },
            };
            t.entries.push(Entry { name, ..e });
        }
        store.put(&t).unwrap()
    }
    let mut root = D::default();
    for s in spec {
        if let Some(dir) = s.strip_suffix('/') {
            let comps: Vec<&str> = dir.split('/').collect();
            insert(&mut root, &comps, None);
        } else if let Some((p, target)) = s.split_once("->") {
            let comps: Vec<&str> = p.split('/').collect();
            let e = Entry {
                name: Vec::new(),
                mode: 0o777,
                mtime_ns: T0,
                uid: 0,
                gid: 0,
                link: None,
                node: Node::Symlink {
                    target: target.as_bytes().to_vec(),
                },
            };
            insert(&mut root, &comps, Some(e));
        } else {
            let (p, rest) = s.split_once('=').unwrap();
            let (content, secs) = rest.split_once('@').unwrap_or((rest, "0"));
            let secs: i64 = secs.parse().unwrap();
            let comps: Vec<&str> = p.split('/').collect();
            let e = Entry {
                name: Vec::new(),
                mode: 0o644,
                mtime_ns: T0 + secs * 1_000_000_000,
                uid: 0,
                gid: 0,
                link: None,
                node: Node::File {
                    size: content.len() as u64,
                    chunks: vec![ObjectId(Hash::of(content.as_bytes()))],
                },
            };
            insert(&mut root, &comps, Some(e));
        }
    }
    put(store, root)
}

/// The spec of a tree, the inverse of `build` (content is recovered by hashing candidates).
fn flatten(store: &mut Mem, id: ObjectId, contents: &[&str]) -> Vec<String> {
    fn go(store: &mut Mem, id: ObjectId, prefix: &str, contents: &[&str], out: &mut Vec<String>) {
        let t = store.get(&id).unwrap();
        for e in t.entries {
            let name = String::from_utf8_lossy(&e.name).to_string();
            let p = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            match e.node {
                Node::Dir { tree } => {
                    let before = out.len();
                    go(store, tree, &p, contents, out);
                    if out.len() == before {
                        out.push(format!("{p}/"));
                    }
                }
                Node::Symlink { target } => {
                    out.push(format!("{p}->{}", String::from_utf8_lossy(&target)))
                }
                other @ (Node::Fifo
                | Node::Socket
                | Node::CharDevice { .. }
                | Node::BlockDevice { .. }) => out.push(format!("{p} {other:?}")),
                Node::File { chunks, .. } => {
                    let c = contents
                        .iter()
                        .find(|c| ObjectId(Hash::of(c.as_bytes())) == chunks[0])
                        .copied()
                        .unwrap_or("?");
                    let secs = (e.mtime_ns - T0) / 1_000_000_000;
                    out.push(format!("{p}={c}@{secs}"));
                }
            }
        }
    }
    let mut out = Vec::new();
    go(store, id, "", contents, &mut out);
    out
}

struct Case {
    name: &'static str,
    base: Option<&'static [&'static str]>,
    a: &'static [&'static str],
    b: &'static [&'static str],
    want: &'static [&'static str],
}

const CONTENTS: &[&str] = &["v0", "va", "vb", "x", "y", "z", "d"];

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "unchanged on both sides",
            base: Some(&["f=v0@0", "d/g=x@0"]),
            a: &["f=v0@0", "d/g=x@0"],
            b: &["f=v0@0", "d/g=x@0"],
            want: &["d/g=x@0", "f=v0@0"],
        },
        Case {
            name: "changed on one side only",
            base: Some(&["f=v0@0", "g=x@0"]),
            a: &["f=va@10", "g=x@0"],
            b: &["f=v0@0", "g=y@20"],
            want: &["f=va@10", "g=y@20"],
        },
        Case {
            name: "added on each side",
            base: Some(&["f=v0@0"]),
            a: &["f=v0@0", "new-a=x@5"],
            b: &["f=v0@0", "new-b=y@6"],
            want: &["f=v0@0", "new-a=x@5", "new-b=y@6"],
        },
        Case {
            name: "deleted on one side, unchanged on the other",
            base: Some(&["f=v0@0", "g=x@0"]),
            a: &["g=x@0"],
            b: &["f=v0@0", "g=x@0"],
            want: &["g=x@0"],
        },
        Case {
            name: "a change wins over a deletion",
            base: Some(&["f=v0@0"]),
            a: &[],
            b: &["f=vb@30"],
            want: &["f=vb@30"],
        },
        Case {
            name: "both changed: the newer keeps the name, the older is a conflict copy",
            base: Some(&["report.odt=v0@0"]),
            a: &["report.odt=va@100"],
            b: &["report.odt=vb@200"],
            want: &[
                "report.conflict-a-20240301-020140.odt=va@100",
                "report.odt=vb@200",
            ],
        },
        Case {
            name: "same change on both sides is no conflict",
            base: Some(&["f=v0@0"]),
            a: &["f=va@100"],
            b: &["f=va@100"],
            want: &["f=va@100"],
        },
        Case {
            name: "same content, different mtime: the newer metadata, no copy",
            base: Some(&["f=v0@0"]),
            a: &["f=va@100"],
            b: &["f=va@300"],
            want: &["f=va@300"],
        },
        Case {
            name: "added on both sides with different content",
            base: None,
            a: &["notes.txt=x@50"],
            b: &["notes.txt=y@40"],
            want: &[
                "notes.conflict-b-20240301-020040.txt=y@40",
                "notes.txt=x@50",
            ],
        },
        Case {
            name: "no extension, dotfile and several dots",
            base: Some(&["Makefile=v0@0", ".bashrc=v0@0", "a.tar.gz=v0@0"]),
            a: &["Makefile=va@1", ".bashrc=va@1", "a.tar.gz=va@1"],
            b: &["Makefile=vb@2", ".bashrc=vb@2", "a.tar.gz=vb@2"],
            want: &[
                ".bashrc=vb@2",
                ".bashrc.conflict-a-20240301-020001=va@1",
                "Makefile=vb@2",
                "Makefile.conflict-a-20240301-020001=va@1",
                "a.tar.conflict-a-20240301-020001.gz=va@1",
                "a.tar.gz=vb@2",
            ],
        },
        Case {
            name: "directories merge recursively",
            base: Some(&["d/f=v0@0", "d/g=x@0", "d/h=z@0"]),
            a: &["d/f=va@10", "d/g=x@0", "d/h=z@0", "d/new=y@3"],
            b: &["d/f=v0@0", "d/h=d@20", "d/deep/k=x@1"],
            want: &["d/deep/k=x@1", "d/f=va@10", "d/h=d@20", "d/new=y@3"],
        },
        Case {
            name: "conflict deep inside a directory",
            base: Some(&["d/e/f=v0@0"]),
            a: &["d/e/f=va@10"],
            b: &["d/e/f=vb@5"],
            want: &["d/e/f=va@10", "d/e/f.conflict-b-20240301-020005=vb@5"],
        },
        Case {
            name: "a directory keeps the name against a file",
            base: None,
            a: &["x=va@500"],
            b: &["x/inner=y@1"],
            want: &["x/inner=y@1", "x.conflict-a-20240301-020820=va@500"],
        },
        Case {
            name: "file against symlink",
            base: Some(&["l->t"]),
            a: &["l->u"],
            b: &["l=vb@9"],
            want: &["l=vb@9", "l.conflict-a-20240301-020000->u"],
        },
        Case {
            name: "the copy's name is taken: a counter is added",
            base: Some(&["f.txt=v0@0"]),
            a: &["f.txt=va@1", "f.conflict-a-20240301-020001.txt=x@0"],
            b: &["f.txt=vb@2"],
            want: &[
                "f.conflict-a-20240301-020001-2.txt=va@1",
                "f.conflict-a-20240301-020001.txt=x@0",
                "f.txt=vb@2",
            ],
        },
        Case {
            name: "deleted on both sides",
            base: Some(&["f=v0@0", "g=x@0"]),
            a: &["g=x@0"],
            b: &["g=x@0"],
            want: &["g=x@0"],
        },
        Case {
            name: "directory deleted on one side, changed inside on the other",
            base: Some(&["d/f=v0@0", "d/g=x@0"]),
            a: &[],
            b: &["d/f=vb@4", "d/g=x@0"],
            want: &["d/f=vb@4", "d/g=x@0"],
        },
    ]
}

/// The conflict rule as a table, merged both ways round: the result does not depend on the
/// order of the sides.
#[test]
fn merge_table() {
    for c in cases() {
        for swap in [false, true] {
            let mut st = Mem::default();
            let base = c.base.map(|b| build(&mut st, b));
            let a = Side {
                root: build(&mut st, c.a),
                node: "a".into(),
            };
            let b = Side {
                root: build(&mut st, c.b),
                node: "b".into(),
            };
            let (x, y) = if swap { (&b, &a) } else { (&a, &b) };
            let m = merge_trees(&mut st, base, x, y).unwrap();
            let got = flatten(&mut st, m.root, CONTENTS);
            let want: Vec<String> = c.want.iter().map(|s| s.to_string()).collect();
            assert_eq!(got, want, "case '{}' (swapped: {swap})", c.name);
        }
    }
}

#[test]
fn conflicts_are_reported_with_paths() {
    let mut st = Mem::default();
    let base = build(&mut st, &["d/f.txt=v0@0"]);
    let a = Side {
        root: build(&mut st, &["d/f.txt=va@10"]),
        node: "lyon".into(),
    };
    let b = Side {
        root: build(&mut st, &["d/f.txt=vb@20"]),
        node: "grenoble".into(),
    };
    let m = merge_trees(&mut st, Some(base), &a, &b).unwrap();
    assert_eq!(
        m.conflicts,
        vec![Conflict {
            path: b"d/f.txt".to_vec(),
            copy: b"d/f.conflict-lyon-20240301-020010.txt".to_vec(),
            node: "lyon".into(),
        }]
    );
}

#[test]
fn conflict_names_are_safe() {
    let n = conflict_copy_name(b"a.txt", "Lyon 3e/../x", T0);
    assert_eq!(n, b"a.conflict-Lyon_3e____x-20240301-020000.txt");
    crate::format::tree::check_name(&n).unwrap();
    let long = vec![b'x'; 250];
    let n = conflict_copy_name(&[long.as_slice(), b".pdf"].concat(), "node", T0);
    assert!(n.len() <= 255, "{}", n.len());
    assert!(n.ends_with(b"-20240301-020000.pdf"));
}

/// A conflict in a directory before a subdirectory holding conflicts: each conflict names
/// its own copy (the copies were once matched to conflicts by position, giving the first
/// conflict no copy and the inner one the outer's copy).
#[test]
fn each_conflict_names_its_own_copy_across_subdirectories() {
    let mut st = Mem::default();
    let base = build(&mut st, &["a.txt=v0@0", "b/c.txt=v0@0", "b/d=v0@0"]);
    let a = Side {
        root: build(&mut st, &["a.txt=va@10", "b/c.txt=va@10", "b/d=va@10"]),
        node: "lyon".into(),
    };
    let b = Side {
        root: build(&mut st, &["a.txt=vb@20", "b/c.txt=vb@20", "b/d=vb@20"]),
        node: "grenoble".into(),
    };
    let m = merge_trees(&mut st, Some(base), &a, &b).unwrap();
    let got: Vec<(&[u8], &[u8])> = m
        .conflicts
        .iter()
        .map(|c| (c.path.as_slice(), c.copy.as_slice()))
        .collect();
    let want: Vec<(&[u8], &[u8])> = vec![
        (b"a.txt", b"a.conflict-lyon-20240301-020010.txt"),
        (b"b/c.txt", b"b/c.conflict-lyon-20240301-020010.txt"),
        (b"b/d", b"b/d.conflict-lyon-20240301-020010"),
    ];
    assert_eq!(got, want);
    let flat = flatten(&mut st, m.root, CONTENTS);
    for (_, copy) in want {
        let copy = String::from_utf8_lossy(copy);
        assert!(
            flat.iter().any(|f| f.starts_with(&format!("{copy}="))),
            "{copy}: {flat:?}"
        );
    }
}

/// The pending-changes policy ([`merge3`]), on a real repository.
mod pending {
    use super::super::*;
    use crate::format::tree::Node;
    use crate::repo::InitOptions;
    use crate::snapshot::edit::{Content, Edit, EditTree, Meta, RepoTrees};
    use std::collections::BTreeMap;
    use std::sync::Arc;

    #[test]
    fn conflict_names() {
        let t = 1_709_258_400_000_000_000; // 2024-03-01 02:00:00 UTC
        assert_eq!(
            conflict_copy_name(b"report.odt", "nodeA", t),
            b"report.conflict-nodeA-20240301-020000.odt"
        );
        assert_eq!(
            conflict_copy_name(b".bashrc", "n", t),
            b".bashrc.conflict-n-20240301-020000"
        );
        assert_eq!(
            conflict_copy_name(b"a.tar.gz", "n", t),
            b"a.tar.conflict-n-20240301-020000.gz"
        );
    }

    struct Env {
        _d: tempfile::TempDir,
        repo: Arc<Repo>,
    }

    fn meta() -> Meta {
        Meta {
            mode: 0o644,
            mtime_ns: 7,
            uid: 0,
            gid: 0,
        }
    }

    impl Env {
        /// Store a file's content as chunks and return it.
        fn content(&self, data: &[u8]) -> Content {
            let saver = Saver::new(self.repo.clone(), 1).unwrap();
            let r = self.repo.index().reader().unwrap();
            let id = ObjectId::of(data);
            saver.save(&r, id, Kind::Data, data.to_vec()).unwrap();
            saver.finish().unwrap();
            Content::Stored {
                size: data.len() as u64,
                chunks: vec![id],
            }
        }
        fn edit(&self, root: Option<ObjectId>, edits: &[Edit]) -> ObjectId {
            let r = self.repo.index().reader().unwrap();
            let src = RepoTrees {
                repo: &self.repo,
                reader: &r,
            };
            let mut t = EditTree::new(root);
            for e in edits {
                t.apply(&src, e).unwrap();
            }
            let saver = Saver::new(self.repo.clone(), 1).unwrap();
            let id = t
                .write(&self.repo, &saver, &|_| {
                    Err(crate::Error::other("no local"))
                })
                .unwrap();
            saver.finish().unwrap();
            id
        }
        fn flat(&self, root: ObjectId) -> BTreeMap<String, String> {
            let r = self.repo.index().reader().unwrap();
            let mut out = BTreeMap::new();
            crate::vfs::walk(&self.repo, &r, root, b"", &mut |p, e| {
                let d = match &e.node {
                    Node::File { chunks, .. } => {
                        let mut v = Vec::new();
                        for c in chunks {
                            v.extend(self.repo.read_object_with(&r, c).unwrap());
                        }
                        String::from_utf8_lossy(&v).into_owned()
                    }
                    Node::Dir { .. } => "/".into(),
                    Node::Symlink { .. } => "@".into(),
                    other => format!("{other:?}"),
                };
                out.insert(String::from_utf8_lossy(p).into_owned(), d);
                Ok(())
            })
            .unwrap();
            out
        }
    }

    fn create(p: &str, c: Content) -> Edit {
        Edit::Create {
            path: p.into(),
            meta: meta(),
            content: c,
            time_ns: 1,
        }
    }
    fn set(p: &str, c: Content) -> Edit {
        Edit::SetContent {
            path: p.into(),
            content: c,
        }
    }
    fn rm(p: &str) -> Edit {
        Edit::Remove {
            path: p.into(),
            dir: false,
            time_ns: 1,
        }
    }

    #[test]
    fn merges_and_keeps_both_on_conflict() {
        let d = tempfile::tempdir().unwrap();
        let repo = Arc::new(Repo::init(&d.path().join("r"), &InitOptions::default()).unwrap());
        let e = Env { _d: d, repo };
        let mkdir = Edit::Mkdir {
            path: b"dir".to_vec(),
            meta: meta(),
            time_ns: 1,
        };
        let base = e.edit(
            None,
            &[
                mkdir,
                create("dir/same.txt", e.content(b"s")),
                create("dir/both.txt", e.content(b"b0")),
                create("ours-only.txt", e.content(b"o0")),
                create("theirs-only.txt", e.content(b"t0")),
                create("del-vs-mod.txt", e.content(b"d0")),
            ],
        );
        let ours = e.edit(
            Some(base),
            &[
                set("dir/both.txt", e.content(b"ours")),
                set("ours-only.txt", e.content(b"o1")),
                rm("del-vs-mod.txt"),
                create("new-ours.txt", e.content(b"n")),
            ],
        );
        let theirs = e.edit(
            Some(base),
            &[
                set("dir/both.txt", e.content(b"theirs")),
                set("theirs-only.txt", e.content(b"t1")),
                set("del-vs-mod.txt", e.content(b"d1")),
            ],
        );
        let saver = Saver::new(e.repo.clone(), 1).unwrap();
        let t = 1_709_258_400_000_000_000;
        let out = merge3(&e.repo, &saver, Some(base), ours, theirs, "me", t).unwrap();
        saver.finish().unwrap();
        let flat = e.flat(out.root);
        let expect: BTreeMap<String, String> = [
            ("del-vs-mod.txt", "d1"),
            ("dir", "/"),
            ("dir/both.conflict-me-20240301-020000.txt", "ours"),
            ("dir/both.txt", "theirs"),
            ("dir/same.txt", "s"),
            ("new-ours.txt", "n"),
            ("ours-only.txt", "o1"),
            ("theirs-only.txt", "t1"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        assert_eq!(flat, expect);
        assert_eq!(
            out.conflicts,
            vec![Conflict {
                path: b"dir/both.txt".to_vec(),
                copy: b"dir/both.conflict-me-20240301-020000.txt".to_vec(),
                node: "me".into(),
            }]
        );
        // Merging with an unchanged side is the other side, without new trees.
        let saver = Saver::new(e.repo.clone(), 1).unwrap();
        assert_eq!(
            merge3(&e.repo, &saver, Some(base), base, theirs, "me", t)
                .unwrap()
                .root,
            theirs
        );
        saver.finish().unwrap();
    }
}
