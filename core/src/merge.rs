//! Merging concurrent histories of a space: a three-way merge of trees that keeps both versions
//! of a file changed on both sides, as `name.conflict-<node>-<date>.ext`.
//!
//! The rule (normative; `docs/guide.md`, "Concurrent changes", says the same for users). For
//! every name in a directory, with `base` the entry in the common ancestor (or none), `a` and
//! `b` the entries on the two sides (or none when deleted or absent):
//!
//! 1. `a == b`: kept as is (this covers "unchanged on both sides").
//! 2. Only one side differs from `base`: that side's entry wins, a deletion included.
//! 3. Both differ from `base` and from each other:
//!    - both are directories: merged recursively (against `base` if it was a directory, else
//!      against an empty directory); the directory's own metadata (mode, mtime, owner) comes
//!      from the *newer* side;
//!    - one side deleted it: the changed entry is kept (a change wins over a deletion);
//!    - both are files or symlinks with the same content (only metadata differs): the newer
//!      entry is kept, no copy is made;
//!    - otherwise the *newer* entry keeps the name and the other one is kept beside it as
//!      `name.conflict-<node>-<date>.ext`, where `<node>` is the author of that side (see
//!      [`crate::history::author`]), `<date>` its modification time in UTC as
//!      `YYYYMMDD-HHMMSS`, and `.ext` the name's last extension (none for `.bashrc` or
//!      `Makefile`). When one of the two is a directory, the directory keeps the name.
//!      If that name is taken in either side, `-2`, `-3`, ... is appended to the date.
//!
//! "Newer" compares the modification time, then the author's node name, then the entries'
//! encodings, so that the result does not depend on which node merges or in which order the
//! sides are given: two nodes that merge the same heads build the same snapshot, with the same
//! id, and their histories converge.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use serde::Serialize;

use crate::error::Result;
use crate::format::pack::Kind;
use crate::format::snapshot::{Snapshot, Summary};
use crate::format::tree::{Entry, MAX_TREE_DEPTH, Node, Tree, too_deep};
use crate::hash::{ObjectId, SnapshotId};
use crate::history;
use crate::index::IndexReader;
use crate::repo::{Repo, SnapshotEntry};
use crate::saver::Saver;

/// Where the merge reads trees from and writes the trees it builds.
pub trait TreeStore {
    /// Read a tree.
    fn get(&mut self, id: &ObjectId) -> Result<Tree>;
    /// Store a tree (its children were stored before it) and return its id.
    fn put(&mut self, tree: &Tree) -> Result<ObjectId>;
}

/// One side of a merge: a root tree and the node name used for its conflict copies.
#[derive(Debug, Clone)]
pub struct Side {
    /// Root tree of the side.
    pub root: ObjectId,
    /// Author of the side (see [`crate::history::author`]).
    pub node: String,
}

/// A name both sides changed: one version kept the name, the other was renamed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Conflict {
    /// Path of the contested name, relative to the space's root, `/`-separated.
    #[serde(serialize_with = "lossy")]
    pub path: Vec<u8>,
    /// Path the other version was given.
    #[serde(serialize_with = "lossy")]
    pub copy: Vec<u8>,
    /// Author of the renamed version.
    pub node: String,
}

fn lossy<S: serde::Serializer>(b: &[u8], s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(b))
}

/// The result of [`merge_trees`].
#[derive(Debug, Clone)]
pub struct Merged {
    /// Root tree of the merged state.
    pub root: ObjectId,
    /// Conflict copies made, in path order.
    pub conflicts: Vec<Conflict>,
}

/// Three-way merge of the trees of `a` and `b` against `base` (none when the histories share
/// nothing). See the module documentation for the rule.
pub fn merge_trees(
    store: &mut dyn TreeStore,
    base: Option<ObjectId>,
    a: &Side,
    b: &Side,
) -> Result<Merged> {
    let mut conflicts = Vec::new();
    let root = if a.root == b.root {
        a.root
    } else if base == Some(a.root) {
        b.root
    } else if base == Some(b.root) {
        a.root
    } else {
        let base_tree = match base {
            Some(id) => store.get(&id)?,
            None => Tree::default(),
        };
        let ta = store.get(&a.root)?;
        let tb = store.get(&b.root)?;
        let mut m = Merger {
            store,
            a_node: &a.node,
            b_node: &b.node,
            conflicts: &mut conflicts,
            depth: 0,
        };
        let t = m.dir(&base_tree, &ta, &tb, b"")?;
        store.put(&t)?
    };
    Ok(Merged { root, conflicts })
}

struct Merger<'a> {
    store: &'a mut dyn TreeStore,
    a_node: &'a str,
    b_node: &'a str,
    conflicts: &'a mut Vec<Conflict>,
    depth: usize,
}

impl Merger<'_> {
    fn dir(&mut self, base: &Tree, a: &Tree, b: &Tree, path: &[u8]) -> Result<Tree> {
        // The root's tree is at depth 0 (`docs/format.md`, "Trees").
        if self.depth > MAX_TREE_DEPTH {
            return Err(too_deep(format!("'{}'", String::from_utf8_lossy(path))));
        }
        self.depth += 1;
        let names: BTreeSet<&[u8]> = a
            .entries
            .iter()
            .chain(b.entries.iter())
            .map(|e| e.name.as_slice())
            .collect();
        let mut out: BTreeMap<Vec<u8>, Entry> = BTreeMap::new();
        let mut renamed: Vec<Entry> = Vec::new();
        for name in names.iter().copied() {
            let x = base.get(name);
            let ea = a.get(name);
            let eb = b.get(name);
            let sub = join(path, name);
            let keep: Option<Entry> = match (ea, eb) {
                (Some(ea), Some(eb)) if ea == eb => Some(ea.clone()),
                _ if ea == x => eb.cloned(),
                _ if eb == x => ea.cloned(),
                (Some(ea), None) => Some(ea.clone()),
                (None, Some(eb)) => Some(eb.clone()),
                (None, None) => None,
                (Some(ea), Some(eb)) => {
                    let a_newer = newer((ea, self.a_node), (eb, self.b_node));
                    match (&ea.node, &eb.node) {
                        (Node::Dir { tree: ta }, Node::Dir { tree: tb }) => {
                            let bt = match x.map(|x| &x.node) {
                                Some(Node::Dir { tree }) => self.store.get(tree)?,
                                _ => Tree::default(),
                            };
                            let ta = self.store.get(ta)?;
                            let tb = self.store.get(tb)?;
                            let t = self.dir(&bt, &ta, &tb, &sub)?;
                            let id = self.store.put(&t)?;
                            let mut e = if a_newer { ea.clone() } else { eb.clone() };
                            e.node = Node::Dir { tree: id };
                            Some(e)
                        }
                        (na, nb) if na == nb => Some(if a_newer { ea.clone() } else { eb.clone() }),
                        _ => {
                            let a_keeps = match (ea.is_dir(), eb.is_dir()) {
                                (true, false) => true,
                                (false, true) => false,
                                _ => a_newer,
                            };
                            let (kept, other, other_node) = if a_keeps {
                                (ea, eb, self.b_node)
                            } else {
                                (eb, ea, self.a_node)
                            };
                            let mut copy = other.clone();
                            copy.name = conflict_name(name, other_node, other.mtime_ns);
                            // Name collisions are settled below, once every name is known.
                            self.conflicts.push(Conflict {
                                path: sub.clone(),
                                copy: Vec::new(),
                                node: other_node.to_string(),
                            });
                            renamed.push(copy);
                            Some(kept.clone())
                        }
                    }
                }
            };
            if let Some(e) = keep {
                out.insert(e.name.clone(), e);
            }
        }
        // Give each copy a name that neither side uses and no other copy took.
        let first = self.conflicts.len() - renamed.len();
        for (i, mut copy) in renamed.into_iter().enumerate() {
            let wanted = copy.name.clone();
            let mut n = 1;
            while names.contains(wanted_with(&wanted, n).as_slice())
                || out.contains_key(&wanted_with(&wanted, n))
            {
                n += 1;
            }
            copy.name = wanted_with(&wanted, n);
            self.conflicts[first + i].copy = join(path, &copy.name);
            out.insert(copy.name.clone(), copy);
        }
        self.depth -= 1;
        Ok(Tree {
            entries: out.into_values().collect(),
        })
    }
}

/// Whether `a` is the newer version: later mtime, then greater node name, then greater encoding.
fn newer(a: (&Entry, &str), b: (&Entry, &str)) -> bool {
    let enc = |e: &Entry| postcard::to_stdvec(e).unwrap_or_default();
    (a.0.mtime_ns, a.1, enc(a.0)) > (b.0.mtime_ns, b.1, enc(b.0))
}

fn join(path: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = path.to_vec();
    if !p.is_empty() {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

/// Marker separating the collision counter, kept out of band until names are settled.
const SEP: u8 = 0;

/// `conflict_name` with the collision counter `n` applied (1: none).
fn wanted_with(wanted: &[u8], n: u32) -> Vec<u8> {
    let (stem, ext) = match wanted.iter().position(|b| *b == SEP) {
        Some(i) => (&wanted[..i], &wanted[i + 1..]),
        None => (wanted, &b""[..]),
    };
    let mut out = stem.to_vec();
    if n > 1 {
        out.extend_from_slice(format!("-{n}").as_bytes());
    }
    out.extend_from_slice(ext);
    out
}

/// The name of a conflict copy of `name` by `node` with modification time `mtime_ns`:
/// `stem.conflict-<node>-<YYYYMMDD-HHMMSS>.ext`. Node names are reduced to ASCII letters,
/// digits, `-` and `_`; the result fits in 255 bytes.
pub fn conflict_copy_name(name: &[u8], node: &str, mtime_ns: i64) -> Vec<u8> {
    wanted_with(&conflict_name(name, node, mtime_ns), 1)
}

/// [`conflict_copy_name`] when that name is taken: `n` (2, 3, ...) is appended to the date,
/// `stem.conflict-<node>-<YYYYMMDD-HHMMSS>-<n>.ext`.
pub fn conflict_copy_name_numbered(name: &[u8], node: &str, mtime_ns: i64, n: u32) -> Vec<u8> {
    wanted_with(&conflict_name(name, node, mtime_ns), n)
}

fn conflict_name(name: &[u8], node: &str, mtime_ns: i64) -> Vec<u8> {
    let node: String = node
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    let date = jiff::Timestamp::from_nanosecond(i128::from(mtime_ns))
        .map(|t| t.strftime("%Y%m%d-%H%M%S").to_string())
        .unwrap_or_else(|_| "00000000-000000".into());
    // The extension: from the last dot, unless the name starts with its only dot.
    let split = match name.iter().rposition(|b| *b == b'.') {
        Some(0) | None => name.len(),
        Some(i) => i,
    };
    let (stem, ext) = name.split_at(split);
    let middle = format!(".conflict-{node}-{date}");
    // Room for "-NN" collision counters too.
    let room = 255usize.saturating_sub(middle.len() + ext.len().min(32) + 4);
    let stem = &stem[..stem.len().min(room)];
    let ext = &ext[..ext.len().min(32)];
    let mut out = stem.to_vec();
    out.extend_from_slice(middle.as_bytes());
    out.push(SEP);
    out.extend_from_slice(ext);
    out
}

/// What [`merge_heads`] did.
#[derive(Debug, Clone, Serialize)]
pub struct MergeReport {
    /// The space.
    pub space: String,
    /// The heads that were joined.
    pub heads: Vec<SnapshotId>,
    /// The merge snapshots written, the last one being the new single head.
    pub merges: Vec<SnapshotId>,
    /// Conflict copies made.
    pub conflicts: Vec<Conflict>,
}

/// A merge snapshot's record: everything in it derives from its parents and merged tree, so
/// that every node merging the same heads writes the same snapshot.
pub fn merge_snapshot(
    space: &str,
    parents: [&SnapshotEntry; 2],
    root: ObjectId,
    summary: Summary,
) -> Snapshot {
    let mut ids = [parents[0].id, parents[1].id];
    ids.sort();
    Snapshot {
        time_ns: parents[0]
            .snapshot
            .time_ns
            .max(parents[1].snapshot.time_ns)
            .saturating_add(1),
        space: space.to_string(),
        host: String::new(),
        user: String::new(),
        source: String::new(),
        tags: vec!["merge".to_string()],
        parents: ids.to_vec(),
        root,
        summary,
        origin: String::new(),
    }
}

struct RepoStore<'a> {
    repo: &'a Repo,
    saver: &'a Saver,
    reader: IndexReader,
    generation: u64,
    new: HashMap<ObjectId, Tree>,
}

impl TreeStore for RepoStore<'_> {
    fn get(&mut self, id: &ObjectId) -> Result<Tree> {
        if let Some(t) = self.new.get(id) {
            return Ok(t.clone());
        }
        self.refresh()?;
        self.repo.read_tree_with(&self.reader, id)
    }

    fn put(&mut self, tree: &Tree) -> Result<ObjectId> {
        let bytes = tree.encode()?;
        let id = ObjectId::of(&bytes);
        self.refresh()?;
        self.saver.save(&self.reader, id, Kind::Tree, bytes)?;
        self.new.insert(id, tree.clone());
        Ok(id)
    }
}

impl RepoStore<'_> {
    fn refresh(&mut self) -> Result<()> {
        let g = self.saver.generation();
        if g != self.generation {
            self.reader = self.repo.index().reader()?;
            self.generation = g;
        }
        Ok(())
    }
}

/// Count what a tree holds, caching per tree id (identical subtrees are counted once).
fn summarize(store: &mut dyn TreeStore, root: ObjectId) -> Result<Summary> {
    fn walk(
        store: &mut dyn TreeStore,
        id: ObjectId,
        memo: &mut HashMap<ObjectId, (u64, u64, u64, u64)>,
        depth: usize,
    ) -> Result<(u64, u64, u64, u64)> {
        if let Some(v) = memo.get(&id) {
            return Ok(*v);
        }
        if depth > MAX_TREE_DEPTH {
            return Err(too_deep(format!("tree {id}")));
        }
        let t = store.get(&id)?;
        let mut v = (0u64, 1u64, 0u64, 0u64); // files, dirs, symlinks, bytes
        for e in &t.entries {
            match &e.node {
                Node::File { size, .. } => {
                    v.0 += 1;
                    v.3 += size;
                }
                Node::Symlink { .. } => v.2 += 1,
                Node::Dir { tree } => {
                    let s = walk(store, *tree, memo, depth + 1)?;
                    v = (v.0 + s.0, v.1 + s.1, v.2 + s.2, v.3 + s.3);
                }
            }
        }
        memo.insert(id, v);
        Ok(v)
    }
    let (files, dirs, symlinks, bytes) = walk(store, root, &mut HashMap::new(), 0)?;
    Ok(Summary {
        files,
        dirs,
        symlinks,
        bytes,
        ..Summary::default()
    })
}

/// Join the heads of `space` into one by merge snapshots (two parents each, heads taken in id
/// order), storing the merged trees and then the records. Returns `None` when the space has
/// one head or none. Deterministic: see the module documentation.
pub fn merge_heads(repo: &Arc<Repo>, space: &str) -> Result<Option<MergeReport>> {
    // Register the writer session before reading the heads the merge builds on.
    let saver = Saver::with_session(repo.clone(), 1, &format!("merge {space}"))?;
    let mut all = repo.snapshots()?;
    let mut heads: Vec<SnapshotEntry> = history::heads(&all, space).into_iter().cloned().collect();
    if heads.len() < 2 {
        return Ok(None);
    }
    heads.sort_by_key(|h| h.id);
    let mut store = RepoStore {
        repo,
        saver: &saver,
        reader: repo.index().reader()?,
        generation: saver.generation(),
        new: HashMap::new(),
    };
    let mut report = MergeReport {
        space: space.to_string(),
        heads: heads.iter().map(|h| h.id).collect(),
        merges: Vec::new(),
        conflicts: Vec::new(),
    };
    let mut records: Vec<(SnapshotId, Vec<u8>)> = Vec::new();
    let mut cur = heads[0].clone();
    for h in &heads[1..] {
        let base = history::merge_base(&all, cur.id, h.id)
            .and_then(|b| all.iter().find(|s| s.id == b))
            .map(|b| b.snapshot.root);
        let a = Side {
            root: cur.snapshot.root,
            node: history::author(&all, cur.id),
        };
        let b = Side {
            root: h.snapshot.root,
            node: history::author(&all, h.id),
        };
        let merged = merge_trees(&mut store, base, &a, &b).map_err(|e| {
            e.context(format!(
                "cannot merge snapshots {} and {} of space '{space}'",
                cur.id, h.id
            ))
        })?;
        let summary = summarize(&mut store, merged.root)?;
        let snap = merge_snapshot(space, [&cur, h], merged.root, summary);
        let bytes = snap.encode()?;
        let id = Snapshot::id_of(&bytes);
        records.push((id, bytes));
        report.merges.push(id);
        report.conflicts.extend(merged.conflicts);
        cur = SnapshotEntry { id, snapshot: snap };
        all.push(cur.clone());
    }
    drop(store);
    let (_, session) = saver.finish_keep_session()?;
    for (id, bytes) in &records {
        repo.save_snapshot_bytes(id, bytes)?;
    }
    session.end(repo)?;
    Ok(Some(report))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
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
        fn go(
            store: &mut Mem,
            id: ObjectId,
            prefix: &str,
            contents: &[&str],
            out: &mut Vec<String>,
        ) {
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
}
