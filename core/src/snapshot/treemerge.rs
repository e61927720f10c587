//! Three-way merge of trees: local changes made on top of `base` (`ours`) with changes that
//! arrived from elsewhere on top of the same base (`theirs`).
//!
//! Subtrees whose ids are equal are not read. Per entry: a side that did not change takes the
//! other side's version; both sides changing a directory merge recursively; a content change
//! wins over a removal and over a metadata-only change. When both sides changed the content of
//! the same entry differently, *both are kept*: theirs under the name, ours beside it as
//! `name.conflict-<node>-<YYYYMMDD-HHMMSS>.ext` (named as by [`crate::merge`]), where `node`
//! names the machine that made our change and the time is when it was merged (UTC).
//!
//! This differs on purpose from [`crate::merge::merge_trees`], which joins two replicated
//! heads: there, neither side is "local", so the newer version keeps the name and every node
//! must reach the same result. Here one side is the user's pending changes on a mount, and the
//! version others already see keeps its name.

use crate::error::Result;
use crate::format::pack::Kind;
use crate::format::tree::{Entry, MAX_TREE_DEPTH, Node, Tree, too_deep};
use crate::hash::ObjectId;
use crate::index::IndexReader;
use crate::merge::{conflict_copy_name, conflict_copy_name_numbered};
use crate::repo::Repo;
use crate::saver::Saver;

/// Both versions of an entry were kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// Where theirs is (the original path).
    pub path: Vec<u8>,
    /// Where ours was put.
    pub copy: Vec<u8>,
}

/// The result of a merge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeOutcome {
    /// Root of the merged tree.
    pub root: ObjectId,
    /// Entries kept twice.
    pub conflicts: Vec<Conflict>,
}

fn content(e: &Entry) -> &Node {
    &e.node
}

struct Merger<'a> {
    repo: &'a Repo,
    saver: &'a Saver,
    reader: IndexReader,
    reader_gen: u64,
    node: &'a str,
    time_ns: i64,
    conflicts: Vec<Conflict>,
}

impl Merger<'_> {
    fn tree(&mut self, id: Option<&ObjectId>) -> Result<Tree> {
        match id {
            None => Ok(Tree::default()),
            Some(id) => {
                self.fresh()?;
                self.repo.read_tree_with(&self.reader, id)
            }
        }
    }

    fn fresh(&mut self) -> Result<()> {
        let g = self.saver.generation();
        if g != self.reader_gen {
            self.reader = self.repo.index().reader()?;
            self.reader_gen = g;
        }
        Ok(())
    }

    /// Merge the directory at `path`, `depth` levels below the root.
    fn dir(
        &mut self,
        path: &[u8],
        depth: usize,
        base: Option<&ObjectId>,
        ours: &ObjectId,
        theirs: &ObjectId,
    ) -> Result<ObjectId> {
        if ours == theirs || base == Some(ours) {
            return Ok(*theirs);
        }
        if base == Some(theirs) {
            return Ok(*ours);
        }
        if depth > MAX_TREE_DEPTH {
            return Err(too_deep(format!("'{}'", String::from_utf8_lossy(path))));
        }
        let b = self.tree(base)?;
        let o = self.tree(Some(ours))?;
        let t = self.tree(Some(theirs))?;
        let mut names: Vec<&[u8]> = o
            .entries
            .iter()
            .chain(t.entries.iter())
            .chain(b.entries.iter())
            .map(|e| e.name.as_slice())
            .collect();
        names.sort();
        names.dedup();
        let mut out: Vec<Entry> = Vec::with_capacity(names.len());
        let mut copies: Vec<(Vec<u8>, Entry)> = Vec::new();
        for name in names {
            let (be, oe, te) = (b.get(name), o.get(name), t.get(name));
            let pick = if oe == te || oe == be {
                te.cloned()
            } else if te == be {
                oe.cloned()
            } else {
                // Both sides changed this entry, differently.
                match (oe, te) {
                    (None, t) => t.cloned(),
                    (o, None) => o.cloned(),
                    (Some(o), Some(t)) => {
                        if let (Node::Dir { tree: ot }, Node::Dir { tree: tt }) = (&o.node, &t.node)
                        {
                            let bt = match be.map(|e| &e.node) {
                                Some(Node::Dir { tree }) => Some(*tree),
                                _ => None,
                            };
                            let merged =
                                self.dir(&child_path(path, name), depth + 1, bt.as_ref(), ot, tt)?;
                            let mut e = t.clone();
                            e.node = Node::Dir { tree: merged };
                            Some(e)
                        } else {
                            let o_changed = be.map(content) != Some(content(o));
                            let t_changed = be.map(content) != Some(content(t));
                            if content(o) == content(t) || !o_changed {
                                Some(t.clone())
                            } else if !t_changed {
                                Some(o.clone())
                            } else {
                                let mut copy = o.clone();
                                copy.name = conflict_copy_name(name, self.node, self.time_ns);
                                copies.push((name.to_vec(), copy));
                                Some(t.clone())
                            }
                        }
                    }
                }
            };
            if let Some(e) = pick {
                out.push(e);
            }
        }
        for (orig, mut c) in copies {
            let mut n = 1;
            while out.iter().any(|e| e.name == c.name) {
                n += 1;
                c.name = conflict_copy_name_numbered(&orig, self.node, self.time_ns, n);
            }
            self.conflicts.push(Conflict {
                path: child_path(path, &orig),
                copy: child_path(path, &c.name),
            });
            let pos = out.partition_point(|e| e.name < c.name);
            out.insert(pos, c);
        }
        let bytes = Tree { entries: out }.encode()?;
        let id = ObjectId::of(&bytes);
        self.fresh()?;
        self.saver.save(&self.reader, id, Kind::Tree, bytes)?;
        Ok(id)
    }
}

fn child_path(parent: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = parent.to_vec();
    if !p.is_empty() {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

/// Merge `ours` and `theirs`, both made from `base` (`None`: both started empty). New trees
/// are stored through `saver`. See the module documentation for the rules.
pub fn merge3(
    repo: &Repo,
    saver: &Saver,
    base: Option<ObjectId>,
    ours: ObjectId,
    theirs: ObjectId,
    node: &str,
    time_ns: i64,
) -> Result<MergeOutcome> {
    let mut m = Merger {
        repo,
        saver,
        reader: repo.index().reader()?,
        reader_gen: saver.generation(),
        node,
        time_ns,
        conflicts: Vec::new(),
    };
    let root = m.dir(b"", 0, base.as_ref(), &ours, &theirs)?;
    Ok(MergeOutcome {
        root,
        conflicts: m.conflicts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
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
                copy: b"dir/both.conflict-me-20240301-020000.txt".to_vec()
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
