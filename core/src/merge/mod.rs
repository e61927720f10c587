//! Three-way merges of trees that keep both versions of a file changed on both sides, as
//! `name.conflict-<node>-<date>.ext`: one walker ([`merge`], in `tree.rs`), two policies.
//!
//! - Joining the concurrent heads of a space ([`merge_heads`], [`merge_trees`],
//!   [`Policy::HEADS`]), below.
//! - A mount's pending changes over what arrived meanwhile ([`merge3`], [`Policy::pending`]),
//!   at the end.
//!
//! The rule for heads (normative; `docs/guide.md`, "Concurrent changes", says the same for
//! users). For every name in a directory, with `base` the entry in the common ancestor (or
//! none), `a` and `b` the entries on the two sides (or none when deleted or absent):
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
//!
//! The rule for pending changes (`ours`, made on a mount on top of `base`, merged with `theirs`,
//! what arrived from elsewhere on top of the same base) differs on purpose: one side is the
//! user's pending changes, and the version others already see keeps its name. Per entry: a side
//! that did not change takes the other side's version; both sides changing a directory merge
//! recursively (the directory's metadata is theirs); a content change wins over a removal and
//! over a metadata-only change. When both sides changed the content of the same entry
//! differently, *both are kept*: theirs under the name, ours beside it as
//! `name.conflict-<node>-<YYYYMMDD-HHMMSS>.ext`, where `node` names the machine that made our
//! change and the time is when it was merged (UTC); `-2`, `-3`, ... is appended to the date if
//! the merged directory has that name.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;

use crate::error::Result;
use crate::format::pack::Kind;
use crate::format::snapshot::SnapshotEntry;
use crate::format::snapshot::{Snapshot, Summary};
use crate::format::tree::{MAX_TREE_DEPTH, Node, Tree, too_deep};
use crate::hash::{ObjectId, SnapshotId};
use crate::history;
use crate::index::IndexReader;
use crate::repo::Repo;
use crate::saver::Saver;

mod name;
mod tree;

pub use name::conflict_copy_name;
pub use tree::{Conflict, CopyTime, Merged, Policy, Side, TreeStore, Winner, merge};

/// Three-way merge of the trees of two heads `a` and `b` against `base` (none when the
/// histories share nothing), by [`Policy::HEADS`]. See the module documentation for the rule.
pub fn merge_trees(
    store: &mut dyn TreeStore,
    base: Option<ObjectId>,
    a: &Side,
    b: &Side,
) -> Result<Merged> {
    merge(store, &Policy::HEADS, base, a, b)
}

/// Merge `ours` and `theirs`, both made from `base` (`None`: both started empty), by
/// [`Policy::pending`]: `node` names the machine that made `ours`, `time_ns` is now. New trees
/// are stored through `saver`. See the module documentation for the rules.
pub fn merge3(
    repo: &Repo,
    saver: &Saver,
    base: Option<ObjectId>,
    ours: ObjectId,
    theirs: ObjectId,
    node: &str,
    time_ns: i64,
) -> Result<Merged> {
    let ours = Side {
        root: ours,
        node: node.to_string(),
    };
    let theirs = Side {
        root: theirs,
        node: String::new(),
    };
    let mut store = RepoStore::new(repo, saver)?;
    merge(&mut store, &Policy::pending(time_ns), base, &ours, &theirs)
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

/// Trees in a repository; the trees a merge writes are kept in memory too, for the next merge
/// of [`merge_heads`] and the summary to read before the saver seals them.
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
        let id = self.repo.object_id(&bytes);
        self.refresh()?;
        self.saver.save(&self.reader, id, Kind::Tree, bytes)?;
        self.new.insert(id, tree.clone());
        Ok(id)
    }
}

impl<'a> RepoStore<'a> {
    fn new(repo: &'a Repo, saver: &'a Saver) -> Result<RepoStore<'a>> {
        Ok(RepoStore {
            repo,
            saver,
            reader: repo.index().reader()?,
            generation: saver.generation(),
            new: HashMap::new(),
        })
    }

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
                // Fifos, sockets, devices: counted as (empty) files.
                _ => v.0 += 1,
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
    let lineage = crate::forgotten::lineage(repo, &all)?;
    let mut heads: Vec<SnapshotEntry> = history::heads(&all, &lineage, space)
        .into_iter()
        .cloned()
        .collect();
    if heads.len() < 2 {
        return Ok(None);
    }
    heads.sort_by_key(|h| h.id);
    let mut store = RepoStore::new(repo, &saver)?;
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
mod tests;
