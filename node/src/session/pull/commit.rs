//! Stage 6 of a pull, the commit: once every chunk is durable and indexed, the trees are stored
//! children first; then everything the new snapshots reach is checked to be indexed and their
//! depth measured (through the subtrees this node had too); only then is each record written,
//! parents first, after its receipt. A snapshot becomes visible only when everything it
//! reaches is stored.

use std::collections::{BTreeMap, HashMap, HashSet};

use puce_core::format::pack::Kind;
use puce_core::format::receipt::Receipt;
use puce_core::format::tree::{Node, check_depth, subdirs};
use puce_core::reach;
use puce_core::saver::Saver;
use puce_core::{ObjectId, Repo, SnapshotId};

use super::list::Received;
use super::trees::{PendingTree, Trees};
use super::{Guard, Pull, Stored, refuse_deep};
use crate::error::{Error, ErrorKind, Result};
use crate::protocol::Object;
use crate::session::blocking;

/// A record to write: its id, bytes, parents and time.
type Record = (SnapshotId, Vec<u8>, Vec<SnapshotId>, i64);

/// Stage 6: store `trees` with the saver of `guard`, then make the snapshots of `records`
/// visible; the trees stored. Snapshots deeper than `MAX_TREE_DEPTH` are refused, and then
/// nothing becomes visible.
pub(super) async fn commit(
    p: &Pull<'_>,
    guard: &mut Guard,
    records: &[Received],
    trees: Trees,
) -> Result<Stored> {
    let Trees {
        top, mut pending, ..
    } = trees;
    let order = post_order(&top, &pending);
    let heights = heights(&pending);
    let saver = guard.take()?;
    let recs: Vec<Record> = records
        .iter()
        .map(|r| {
            let s = &r.entry.snapshot;
            (r.entry.id, r.bytes.clone(), s.parents.clone(), s.time_ns)
        })
        .collect();
    let trees: Vec<Object> = order
        .into_iter()
        .filter_map(|id| pending.remove(&id).map(|p| p.obj))
        .collect();
    let (r2, target) = (p.repo.clone(), p.repo.config().pack_target_size);
    let (tree_stats, saver) =
        blocking(move || store_trees(&r2, saver, trees, &heights, target)).await?;
    let roots: Vec<ObjectId> = records.iter().map(|r| r.entry.snapshot.root).collect();
    let peer_id = p.conn.peer.id.0;
    let receipts: HashMap<SnapshotId, (Receipt, ObjectId)> = records
        .iter()
        .map(|r| {
            let e = &r.entry;
            let receipt = Receipt {
                snapshot: e.id,
                space: e.snapshot.space.clone(),
                sender: peer_id,
                sender_name: p.conn.peer.name.clone(),
                arrived_ns: puce_core::index::now_ns(),
            };
            (e.id, (receipt, e.snapshot.root))
        })
        .collect();
    let (r2, t0) = (p.repo.clone(), p.t0);
    let too_deep = blocking(move || {
        let (_, session) = saver.finish_keep_session()?;
        tracing::debug!("pull: objects durable after {:?}", t0.elapsed());
        // The walk trusted that a tree in the index comes with its whole subtree. Check it
        // for the new snapshots before they become visible: a leftover tree whose subtree
        // was removed (by gc after an interrupted writer) must not yield a broken snapshot.
        // The same walk measures their depth, through the subtrees this node had too.
        let shape = check_complete(&r2, &roots)?;
        if let Some(at) = deepest(&roots, &shape) {
            session.end(&r2)?;
            return Ok(Some(at));
        }
        tracing::debug!("pull: completeness checked after {:?}", t0.elapsed());
        // The records (checked against their ids when received) are written parents first,
        // each durably, then cached in the index in one transaction.
        // Each record after the receipt saying who delivered it and when.
        let ordered = topo(recs);
        for (id, bytes) in &ordered {
            if let Some((r, _)) = receipts.get(id) {
                reach::write_receipt(&r2, r)?;
            }
            r2.backend()
                .write(puce_core::backend::FileKind::Snapshot, &id.to_hex(), bytes)?;
        }
        r2.index().put_snapshots(&ordered)?;
        session.end(&r2)?;
        // The new snapshots join their space's scope and the sender's (the next transfer
        // catches up if this fails: until then it only sends more).
        if let Err(e) = reach_received(&r2, &peer_id, &receipts) {
            tracing::warn!("reach scopes not updated after the sync: {e:#}");
        }
        tracing::debug!("pull: reach scopes updated after {:?}", t0.elapsed());
        Ok(None)
    })
    .await?;
    if let Some(at) = too_deep {
        return Err(refuse_deep(p.conn, p.spaces, &at));
    }
    Ok(tree_stats)
}

/// Store `trees` (children before parents) once every chunk is indexed: in one pack when they
/// fit in half of one (`target` bytes), else by height, leaves first, with a flush between
/// heights, so that whenever a tree is indexed, so is everything it reaches. The trees the
/// sender sent that this node had are recorded as known to it.
fn store_trees(
    repo: &Repo,
    saver: Saver,
    trees: Vec<Object>,
    heights: &HashMap<ObjectId, u32>,
    target: u64,
) -> Result<(Stored, Saver)> {
    // Every chunk indexed before any tree is written: packs are sealed in parallel, so
    // only a waiting flush orders them.
    saver.flush()?;
    let total: u64 = trees.iter().map(|t| t.data.len() as u64).sum();
    let mut groups: Vec<Vec<Object>> = Vec::new();
    if total <= target / 2 {
        groups.push(trees);
    } else {
        let mut by_height: BTreeMap<u32, Vec<Object>> = BTreeMap::new();
        for t in trees {
            let h = heights.get(&t.id).copied().unwrap_or(0);
            by_height.entry(h).or_default().push(t);
        }
        groups.extend(by_height.into_values());
    }
    let mut reader = repo.index().reader()?;
    let mut g = saver.generation();
    let mut stored = Stored::default();
    let mut present = Vec::new();
    let count = groups.len();
    for (i, group) in groups.into_iter().enumerate() {
        for t in group {
            if saver.generation() != g {
                reader = repo.index().reader()?;
                g = saver.generation();
            }
            let len = t.data.len() as u64;
            let raw = u64::from(t.raw_len);
            let id = t.id;
            if saver.save_stored(&reader, id, Kind::Tree, t.flags, t.raw_len, t.data)? {
                stored.add(len, raw);
            } else {
                stored.present += 1;
                present.push(id);
            }
        }
        if i + 1 < count {
            saver.flush()?;
        }
    }
    saver.note_sent_present(&present)?;
    Ok((stored, saver))
}

/// Add snapshots just received to the sender's reach scope (its objects are there already)
/// and to their spaces' scopes (a walk that stops at what the space already reaches), in one
/// index transaction.
fn reach_received(
    repo: &puce_core::Repo,
    peer: &[u8; 32],
    receipts: &HashMap<SnapshotId, (Receipt, ObjectId)>,
) -> Result<()> {
    let key = reach::peer_key(peer);
    let delivered: Vec<(SnapshotId, String)> = receipts.keys().map(|s| (*s, key.clone())).collect();
    let walk: Vec<(SnapshotId, String, ObjectId)> = receipts
        .values()
        .map(|(r, root)| (r.snapshot, reach::space_key(&r.space), *root))
        .collect();
    reach::record(repo, &walk, &delivered)?;
    Ok(())
}

/// Check that every object reachable from `roots` is indexed (trees read and verified,
/// chunks looked up), each shared subtree once; the subdirectories of each tree read, for
/// [`deepest`].
fn check_complete(repo: &Repo, roots: &[ObjectId]) -> Result<HashMap<ObjectId, Vec<ObjectId>>> {
    let reader = repo.index().reader()?;
    let mut shape: HashMap<ObjectId, Vec<ObjectId>> = HashMap::new();
    let mut seen: HashSet<ObjectId> = HashSet::new();
    let mut stack: Vec<ObjectId> = roots.to_vec();
    while let Some(id) = stack.pop() {
        if !seen.insert(id) {
            continue;
        }
        let tree = repo.read_tree_with(&reader, &id).map_err(|e| {
            Error::new(
                ErrorKind::Store,
                format!(
                    "tree {id} of the received snapshots cannot be read here ({e:#}): nothing \
                     was made visible; run `puce check`, and `puce gc --repack-unused 0.001` to \
                     drop leftovers of interrupted writers, then sync again"
                ),
            )
        })?;
        shape.insert(id, subdirs(&tree));
        for e in &tree.entries {
            match &e.node {
                Node::Dir { tree } => stack.push(*tree),
                Node::File { chunks, .. } => {
                    for c in chunks {
                        if seen.insert(*c) && !reader.contains(c)? {
                            return Err(Error::new(
                                ErrorKind::Store,
                                format!(
                                    "chunk {c} of '{}' under tree {id} is missing here although \
                                     the tree is present (a leftover of an interrupted writer \
                                     whose data gc removed): nothing was made visible; run \
                                     `puce gc --repack-unused 0.001` to drop such leftovers, then \
                                     sync again",
                                    String::from_utf8_lossy(&e.name)
                                ),
                            ));
                        }
                    }
                }
                // No content.
                Node::Symlink { .. }
                | Node::Fifo
                | Node::Socket
                | Node::CharDevice { .. }
                | Node::BlockDevice { .. } => {}
            }
        }
    }
    Ok(shape)
}

/// The first of `roots` deeper than [`MAX_TREE_DEPTH`], if any, `shape` giving the
/// subdirectories of each tree (one missing from it counts as having none).
///
/// [`MAX_TREE_DEPTH`]: puce_core::format::tree::MAX_TREE_DEPTH
fn deepest(roots: &[ObjectId], shape: &HashMap<ObjectId, Vec<ObjectId>>) -> Option<ObjectId> {
    let mut heights = HashMap::new();
    for root in roots {
        let r = check_depth(*root, &mut heights, &mut |id| {
            Ok(shape.get(id).cloned().unwrap_or_default())
        });
        if r.is_err() {
            return Some(*root);
        }
    }
    None
}

/// The height of each pending tree: 0 without pending subtrees, else one more than the
/// highest of them (subtrees already stored do not count).
fn heights(pending: &HashMap<ObjectId, PendingTree>) -> HashMap<ObjectId, u32> {
    let mut h: HashMap<ObjectId, u32> = HashMap::new();
    for root in pending.keys() {
        let mut stack: Vec<(ObjectId, bool)> = vec![(*root, false)];
        while let Some((id, expanded)) = stack.pop() {
            if h.contains_key(&id) {
                continue;
            }
            let Some(p) = pending.get(&id) else {
                continue;
            };
            if expanded {
                let v = p
                    .subdirs
                    .iter()
                    .filter_map(|c| h.get(c).map(|x| x + 1))
                    .max()
                    .unwrap_or(0);
                h.insert(id, v);
            } else {
                stack.push((id, true));
                for c in &p.subdirs {
                    if pending.contains_key(c) && !h.contains_key(c) {
                        stack.push((*c, false));
                    }
                }
            }
        }
    }
    h
}

/// Trees in post-order (children before parents) from `roots`, over `pending` only.
fn post_order(roots: &[ObjectId], pending: &HashMap<ObjectId, PendingTree>) -> Vec<ObjectId> {
    let mut out = Vec::with_capacity(pending.len());
    let mut done: HashSet<ObjectId> = HashSet::new();
    let mut stack: Vec<(ObjectId, bool)> = roots.iter().rev().map(|r| (*r, false)).collect();
    while let Some((id, expanded)) = stack.pop() {
        if done.contains(&id) {
            continue;
        }
        let Some(p) = pending.get(&id) else {
            continue;
        };
        if expanded {
            done.insert(id);
            out.push(id);
        } else {
            stack.push((id, true));
            for c in p.subdirs.iter().rev() {
                if !done.contains(c) {
                    stack.push((*c, false));
                }
            }
        }
    }
    out
}

/// Records ordered parents first (among themselves), then by time.
fn topo(mut recs: Vec<Record>) -> Vec<(SnapshotId, Vec<u8>)> {
    recs.sort_by_key(|r| (r.3, r.0));
    let ids: HashSet<SnapshotId> = recs.iter().map(|r| r.0).collect();
    let mut written: HashSet<SnapshotId> = HashSet::new();
    let mut out = Vec::with_capacity(recs.len());
    let mut left = recs;
    while !left.is_empty() {
        let before = left.len();
        let mut rest = Vec::new();
        for r in left {
            if r.2.iter().all(|p| !ids.contains(p) || written.contains(p)) {
                written.insert(r.0);
                out.push((r.0, r.1));
            } else {
                rest.push(r);
            }
        }
        if rest.len() == before {
            // A cycle cannot happen with hashes; write the rest as they are.
            out.extend(rest.into_iter().map(|r| (r.0, r.1)));
            break;
        }
        left = rest;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Object;
    use puce_core::Hash;

    fn o(b: u8) -> ObjectId {
        ObjectId(Hash([b; 32]))
    }

    fn pt(id: ObjectId, subdirs: Vec<ObjectId>) -> PendingTree {
        PendingTree {
            obj: Object {
                id,
                kind: 1,
                flags: 0,
                raw_len: 0,
                data: vec![],
            },
            subdirs,
        }
    }

    #[test]
    fn post_order_puts_children_first() {
        // 1 -> 2 -> 4, 1 -> 3 -> 4 (shared subtree), 3 -> 5 (already stored: not pending)
        let mut p = HashMap::new();
        p.insert(o(1), pt(o(1), vec![o(2), o(3)]));
        p.insert(o(2), pt(o(2), vec![o(4)]));
        p.insert(o(3), pt(o(3), vec![o(4), o(5)]));
        p.insert(o(4), pt(o(4), vec![]));
        let order = post_order(&[o(1)], &p);
        assert_eq!(order, vec![o(4), o(2), o(3), o(1)]);
        let h = heights(&p);
        assert_eq!((h[&o(4)], h[&o(2)], h[&o(3)], h[&o(1)]), (0, 1, 1, 2));
    }

    #[test]
    fn records_parents_first() {
        let s = |b: u8| SnapshotId(Hash([b; 32]));
        // 3 has parent 2 (older clock skewed to be earlier), 2 has parent 1.
        let recs = vec![
            (s(3), vec![3], vec![s(2)], 5),
            (s(2), vec![2], vec![s(1)], 10),
            (s(1), vec![1], vec![], 20),
        ];
        let order: Vec<SnapshotId> = topo(recs).into_iter().map(|r| r.0).collect();
        assert_eq!(order, vec![s(1), s(2), s(3)]);
    }
}
