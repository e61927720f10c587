//! Stage 4 of a pull: the new trees, breadth-first from the new roots, one wave of
//! `GetObjects` per tree depth, skipping every tree present for the peer (a tree is stored
//! only after everything it reaches, so having it means having its whole subtree). Each tree
//! is verified against its id and decoded, then held in memory until the commit; the chunks it
//! names that are not present for the peer are collected, each once. The waves stop at
//! [`MAX_TREE_DEPTH`]: a deeper tree is refused.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use puce_core::ObjectId;
use puce_core::format::tree::{MAX_TREE_DEPTH, Node, Tree};

use super::fetch::fetch_parallel;
use super::list::Received;
use super::{PeerPresence, Pull, refuse_deep};
use crate::error::{Error, ErrorKind, Result};
use crate::protocol::{self, Code, Object};
use crate::session::{blocking, misbehaved};

/// A tree received, held until the commit.
pub(super) struct PendingTree {
    /// As received (verified, still compressed).
    pub obj: Object,
    /// Its subdirectories.
    pub subdirs: Vec<ObjectId>,
}

/// The new trees of a pull and the data they need.
pub(super) struct Trees {
    /// The roots of the new snapshots that are not present for the peer: the commit stores
    /// the trees from there.
    pub top: Vec<ObjectId>,
    /// The trees received, by id.
    pub pending: HashMap<ObjectId, PendingTree>,
    /// The chunks they name that are not present for the peer, each once.
    pub chunks: Vec<ObjectId>,
}

/// Stage 4: fetch the trees of the new snapshots of `records` that are not present for the
/// peer, level by level.
pub(super) async fn walk(
    p: &Pull<'_>,
    presence: &PeerPresence,
    records: &[Received],
) -> Result<Trees> {
    let roots: Vec<ObjectId> = {
        let mut seen = HashSet::new();
        records
            .iter()
            .map(|r| r.entry.snapshot.root)
            .filter(|r| seen.insert(*r))
            .collect()
    };
    let (r2, p2) = (p.repo.clone(), presence.clone());
    let mut level: Vec<ObjectId> = blocking(move || {
        let present = p2.open(&r2)?;
        let mut out = Vec::new();
        for id in roots {
            if !present.has(&id)? {
                out.push(id);
            }
        }
        Ok(out)
    })
    .await?;
    let mut trees = Trees {
        top: level.clone(),
        pending: HashMap::new(),
        chunks: Vec::new(),
    };
    let mut chunk_set: HashSet<ObjectId> = HashSet::new();
    // Trees of wave `depth` are that many levels below a root.
    let mut depth = 0;
    let held = Arc::new(AtomicU64::new(0));
    while !level.is_empty() {
        if depth > MAX_TREE_DEPTH {
            return Err(refuse_deep(p.conn, p.spaces, &level[0]));
        }
        let checked = fetch_wave(p, level, &held).await?;
        let (dirs, fresh) = next_wave(p, presence, &mut trees.pending, checked).await?;
        for c in fresh {
            if chunk_set.insert(c) {
                trees.chunks.push(c);
            }
        }
        level = dirs;
        depth += 1;
    }
    // Subtrees this node has count too: the depth of the new snapshots as a whole is measured
    // by the completeness walk at commit, which reads every one of their trees anyway.
    Ok(trees)
}

/// Fetch the trees of one level, verify and decode them (off the async threads); their
/// plaintext bytes are counted in `held`. A tree that does not match its id, or is not a
/// valid tree, cuts the peer off.
async fn fetch_wave(
    p: &Pull<'_>,
    level: Vec<ObjectId>,
    held: &Arc<AtomicU64>,
) -> Result<Vec<(Object, Tree)>> {
    let conn = p.conn;
    let streams = conn.ctx.config.streams;
    let batches: Vec<Vec<ObjectId>> = level
        .chunks(protocol::MAX_OBJECTS_PER_REQUEST)
        .map(|c| c.to_vec())
        .collect();
    let waves = batches.len().div_ceil(streams) as u64;
    conn.counters
        .round_trips
        .fetch_add(waves, Ordering::Relaxed);
    let got = fetch_parallel(conn, batches, streams, held).await?;
    let codec = p.repo.codec().clone();
    let checked = blocking(move || {
        let mut out = Vec::with_capacity(got.len());
        for o in got {
            let plain = codec
                .decode_object(
                    &o.id,
                    puce_core::format::pack::Kind::Tree,
                    o.flags,
                    o.raw_len,
                    &o.data,
                )
                .map_err(|e| {
                    Error::new(ErrorKind::BadObject, format!("sent tree {}: {e}", o.id))
                })?;
            let tree = Tree::decode(&plain).map_err(|e| {
                Error::new(
                    ErrorKind::BadObject,
                    format!("sent tree {} that is not a valid tree: {e}", o.id),
                )
            })?;
            out.push((o, tree));
        }
        Ok(out)
    })
    .await;
    match checked {
        Ok(c) => Ok(c),
        Err(e) if e.kind() == ErrorKind::BadObject => {
            Err(misbehaved(conn, Code::BadObject, e.message().to_string()))
        }
        Err(e) => Err(e),
    }
}

/// Hold the trees of one level in `pending`; the subdirectories of the next level (not
/// received yet, not present for the peer, each once) and the chunks they name that are not
/// present for the peer.
async fn next_wave(
    p: &Pull<'_>,
    presence: &PeerPresence,
    pending: &mut HashMap<ObjectId, PendingTree>,
    checked: Vec<(Object, Tree)>,
) -> Result<(Vec<ObjectId>, Vec<ObjectId>)> {
    let mut next_dirs = Vec::new();
    let mut new_chunks = Vec::new();
    for (o, tree) in checked {
        let mut subdirs = Vec::new();
        for e in &tree.entries {
            match &e.node {
                Node::Dir { tree } => {
                    subdirs.push(*tree);
                    next_dirs.push(*tree);
                }
                Node::File { chunks: c, .. } => new_chunks.extend(c.iter().copied()),
                // No content.
                Node::Symlink { .. }
                | Node::Fifo
                | Node::Socket
                | Node::CharDevice { .. }
                | Node::BlockDevice { .. } => {}
            }
        }
        pending.insert(o.id, PendingTree { obj: o, subdirs });
    }
    let (r2, p2) = (p.repo.clone(), presence.clone());
    let known: HashSet<ObjectId> = pending.keys().copied().collect();
    blocking(move || {
        let present = p2.open(&r2)?;
        let mut dirs = Vec::new();
        let mut seen = HashSet::new();
        for d in next_dirs {
            if !known.contains(&d) && seen.insert(d) && !present.has(&d)? {
                dirs.push(d);
            }
        }
        let mut fresh = Vec::new();
        for c in new_chunks {
            if !present.has(&c)? {
                fresh.push(c);
            }
        }
        Ok((dirs, fresh))
    })
    .await
}
