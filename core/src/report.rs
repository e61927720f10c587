//! Reports for admins, as serde data: where the space goes (dedup), what a retention policy
//! would free, and how fast the repository grows.
//!
//! All three start from one pass over every snapshot ([`Census`]): each distinct object gets a
//! record (stored and plaintext size, how many snapshots reference it, the first and the only
//! one, the spaces that reach it, and the deepest folder that contains every place it appears).
//! The cost is one visit per tree entry per snapshot, plus about 60 bytes per distinct object;
//! trees are read once each.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::Serialize;

use crate::error::Result;
use crate::format::snapshot::SnapshotEntry;
use crate::format::tree::{MAX_TREE_DEPTH, Node, Tree, too_deep};
use crate::hash::{Hash, ObjectId, SnapshotId};
use crate::index::IndexReader;
use crate::repo::Repo;
use crate::retention::Decision;

/// Folders deeper than this are attributed to their ancestor at this depth.
const MAX_DIR_DEPTH: u16 = 4;

struct Obj {
    stored: u32,
    raw: u32,
    is_tree: bool,
    refs: u32,
    first: u32,
    only: u32,
    last_snap: u32,
    spaces: u64,
    dir: u32,
    mark: u32,
}

struct DirNode {
    parent: u32,
    depth: u16,
    space: u32,
    name: Vec<u8>,
}

/// Everything the reports need, from one pass over all snapshots.
pub struct Census {
    /// All snapshots, oldest first.
    pub snapshots: Vec<SnapshotEntry>,
    /// Space names, in order of first appearance.
    pub spaces: Vec<String>,
    objects: Vec<Obj>,
    ids: HashMap<ObjectId, u32>,
    trees: HashMap<ObjectId, Arc<Tree>>,
    dirs: Vec<DirNode>,
    dir_ids: HashMap<(u32, Vec<u8>), u32>,
    /// Total size of the pack files.
    pub pack_bytes: u64,
    /// Objects referenced but missing from the index.
    pub missing: u64,
    walk_pass: u32,
}

const NONE: u32 = u32::MAX;

impl Census {
    /// Walk every snapshot of `repo`.
    pub fn build(repo: &Repo) -> Result<Census> {
        let snapshots = repo.snapshots()?;
        let reader = repo.index().reader()?;
        let mut c = Census {
            snapshots,
            spaces: Vec::new(),
            objects: Vec::new(),
            ids: HashMap::new(),
            trees: HashMap::new(),
            // node 0: the root of everything (objects shared between spaces land here)
            dirs: vec![DirNode {
                parent: NONE,
                depth: 0,
                space: NONE,
                name: Vec::new(),
            }],
            dir_ids: HashMap::new(),
            pack_bytes: repo.index().packs()?.iter().map(|(_, p)| p.size).sum(),
            missing: 0,
            walk_pass: 0,
        };
        for i in 0..c.snapshots.len() {
            let s = c.snapshots[i].snapshot.clone();
            let space = match c.spaces.iter().position(|x| *x == s.space) {
                Some(p) => p as u32,
                None => {
                    c.spaces.push(s.space.clone());
                    (c.spaces.len() - 1) as u32
                }
            };
            let root_dir = c.dir_node(0, space, b"")?;
            c.walk(repo, &reader, s.root, i as u32, space, root_dir, 0)
                .map_err(|e| e.context(format!("snapshot {}", c.snapshots[i].id)))?;
        }
        Ok(c)
    }

    fn dir_node(&mut self, parent: u32, space: u32, name: &[u8]) -> Result<u32> {
        let key_parent = if parent == 0 {
            NONE - 1 - space
        } else {
            parent
        };
        if let Some(&n) = self.dir_ids.get(&(key_parent, name.to_vec())) {
            return Ok(n);
        }
        let depth = if parent == 0 {
            0
        } else {
            self.dirs[parent as usize].depth + 1
        };
        self.dirs.push(DirNode {
            parent,
            depth,
            space,
            name: name.to_vec(),
        });
        let n = (self.dirs.len() - 1) as u32;
        self.dir_ids.insert((key_parent, name.to_vec()), n);
        Ok(n)
    }

    /// The deepest common folder of two folder nodes.
    fn lcp(&self, mut a: u32, mut b: u32) -> u32 {
        while a != b {
            let (da, db) = (self.dirs[a as usize].depth, self.dirs[b as usize].depth);
            if a == 0 || b == 0 {
                return 0;
            }
            if da >= db {
                a = self.dirs[a as usize].parent;
            }
            if db >= da {
                b = self.dirs[b as usize].parent;
            }
            if self.dirs[a as usize].space != self.dirs[b as usize].space {
                return 0;
            }
        }
        a
    }

    fn obj(&mut self, reader: &IndexReader, id: &ObjectId, is_tree: bool) -> Result<Option<u32>> {
        if let Some(&i) = self.ids.get(id) {
            return Ok(Some(i));
        }
        let Some(loc) = reader.get(id)? else {
            self.missing += 1;
            return Ok(None);
        };
        self.objects.push(Obj {
            stored: loc.stored_len,
            raw: loc.raw_len,
            is_tree,
            refs: 0,
            first: NONE,
            only: NONE,
            last_snap: NONE,
            spaces: 0,
            dir: NONE,
            mark: 0,
        });
        let i = (self.objects.len() - 1) as u32;
        self.ids.insert(*id, i);
        Ok(Some(i))
    }

    fn touch(&mut self, o: u32, snap: u32, space: u32, dir: u32) {
        let lcp = {
            let cur = self.objects[o as usize].dir;
            if cur == NONE { dir } else { self.lcp(cur, dir) }
        };
        let ob = &mut self.objects[o as usize];
        ob.dir = lcp;
        ob.spaces |= 1u64 << space.min(63);
        if ob.last_snap != snap {
            ob.last_snap = snap;
            ob.refs += 1;
            if ob.first == NONE {
                ob.first = snap;
            }
            ob.only = snap;
        }
    }

    fn tree(
        &mut self,
        repo: &Repo,
        reader: &IndexReader,
        id: &ObjectId,
    ) -> Result<Option<Arc<Tree>>> {
        if let Some(t) = self.trees.get(id) {
            return Ok(Some(t.clone()));
        }
        match repo.read_tree_with(reader, id) {
            Ok(t) => {
                let t = Arc::new(t);
                self.trees.insert(*id, t.clone());
                Ok(Some(t))
            }
            Err(e) if e.kind() == crate::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn walk(
        &mut self,
        repo: &Repo,
        reader: &IndexReader,
        tree_id: ObjectId,
        snap: u32,
        space: u32,
        dir: u32,
        depth: usize,
    ) -> Result<()> {
        if depth > MAX_TREE_DEPTH {
            return Err(too_deep(format!("tree {tree_id}")));
        }
        if let Some(o) = self.obj(reader, &tree_id, true)? {
            self.touch(o, snap, space, dir);
        }
        let Some(tree) = self.tree(repo, reader, &tree_id)? else {
            return Ok(());
        };
        for e in &tree.entries {
            match &e.node {
                Node::File { chunks, .. } => {
                    for c in chunks {
                        if let Some(o) = self.obj(reader, c, false)? {
                            self.touch(o, snap, space, dir);
                        }
                    }
                }
                Node::Dir { tree } => {
                    let sub = if self.dirs[dir as usize].depth < MAX_DIR_DEPTH {
                        self.dir_node(dir, space, &e.name)?
                    } else {
                        dir
                    };
                    self.walk(repo, reader, *tree, snap, space, sub, depth + 1)?;
                }
                // No content.
                Node::Symlink { .. }
                | Node::Fifo
                | Node::Socket
                | Node::CharDevice { .. }
                | Node::BlockDevice { .. } => {}
            }
        }
        Ok(())
    }

    fn dir_path(&self, mut n: u32) -> String {
        let mut parts = Vec::new();
        while n != 0 && n != NONE {
            let d = &self.dirs[n as usize];
            if !d.name.is_empty() {
                parts.push(String::from_utf8_lossy(&d.name).into_owned());
            }
            n = d.parent;
        }
        parts.reverse();
        parts.join("/")
    }

    /// Mark every object reachable from the snapshots `which` with a new pass number; returns
    /// the pass. Trees already marked in this pass are not walked again.
    fn mark(&mut self, which: &[usize]) -> u32 {
        self.walk_pass += 1;
        let pass = self.walk_pass;
        for &i in which {
            let root = self.snapshots[i].snapshot.root;
            let mut stack = vec![root];
            while let Some(t) = stack.pop() {
                if let Some(&o) = self.ids.get(&t) {
                    if self.objects[o as usize].mark == pass {
                        continue;
                    }
                    self.objects[o as usize].mark = pass;
                }
                let Some(tree) = self.trees.get(&t).cloned() else {
                    continue;
                };
                for e in &tree.entries {
                    match &e.node {
                        Node::File { chunks, .. } => {
                            for c in chunks {
                                if let Some(&o) = self.ids.get(c) {
                                    self.objects[o as usize].mark = pass;
                                }
                            }
                        }
                        Node::Dir { tree } => stack.push(*tree),
                        // No content.
                        Node::Symlink { .. }
                        | Node::Fifo
                        | Node::Socket
                        | Node::CharDevice { .. }
                        | Node::BlockDevice { .. } => {}
                    }
                }
            }
        }
        pass
    }
}

/// Totals for one space.
#[derive(Debug, Clone, Serialize)]
pub struct SpaceDedup {
    /// Space name.
    pub space: String,
    /// Number of snapshots.
    pub snapshots: u64,
    /// Logical size of the latest snapshot.
    pub latest_bytes: u64,
    /// Logical bytes summed over all its snapshots.
    pub logical_bytes: u64,
    /// Stored bytes of the distinct objects its snapshots reach.
    pub stored_bytes: u64,
    /// Stored bytes no other space reaches (what deleting the space would free).
    pub unique_bytes: u64,
}

/// Numbers for one snapshot.
#[derive(Debug, Clone, Serialize)]
pub struct SnapshotDedup {
    /// Snapshot id.
    pub id: String,
    /// Space.
    pub space: String,
    /// Time, nanoseconds.
    pub time_ns: i64,
    /// Logical size.
    pub bytes: u64,
    /// Stored bytes of objects it was the first to reference.
    pub added_bytes: u64,
    /// Stored bytes only it references (what forgetting it alone would free).
    pub only_bytes: u64,
}

/// A folder and what it costs.
#[derive(Debug, Clone, Serialize)]
pub struct DirCost {
    /// Space.
    pub space: String,
    /// Path inside the space.
    pub path: String,
    /// Stored bytes of objects that appear only inside this folder, in any snapshot (what
    /// removing the folder from the whole history would free).
    pub unique_bytes: u64,
}

/// A file content stored in several places.
#[derive(Debug, Clone, Serialize)]
pub struct Duplicate {
    /// File size.
    pub size: u64,
    /// How many places hold it (in the latest snapshots).
    pub copies: u64,
    /// Bytes dedup saves on it: size times (copies - 1).
    pub saved_bytes: u64,
    /// Some of the places, as `space:path`.
    pub paths: Vec<String>,
}

/// `puce report dedup`.
#[derive(Debug, Clone, Serialize)]
pub struct DedupReport {
    /// Logical bytes: the sum of the sizes of all snapshots.
    pub logical_bytes: u64,
    /// Plaintext bytes of the distinct data chunks stored.
    pub unique_bytes: u64,
    /// Stored bytes of the distinct objects reachable (chunks and trees, compressed).
    pub stored_bytes: u64,
    /// Size of all pack files (including garbage not yet collected and pack overhead).
    pub pack_bytes: u64,
    /// logical / unique.
    pub dedup_ratio: f64,
    /// unique / stored.
    pub compression_ratio: f64,
    /// logical / stored.
    pub total_ratio: f64,
    /// Per space.
    pub spaces: Vec<SpaceDedup>,
    /// Per snapshot, oldest first.
    pub snapshots: Vec<SnapshotDedup>,
    /// Folders by unique bytes, largest first.
    pub largest_dirs: Vec<DirCost>,
    /// Contents stored most often, by bytes saved.
    pub duplicates: Vec<Duplicate>,
    /// Objects referenced but missing (run `puce check`).
    pub missing_objects: u64,
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// Build the dedup report (only `space` when given), keeping `top` rows in top lists.
pub fn dedup(repo: &Repo, c: &Census, space: Option<&str>, top: usize) -> Result<DedupReport> {
    let space_idx = space.and_then(|s| c.spaces.iter().position(|x| x == s));
    let in_scope = |sp: usize| space_idx.is_none_or(|i| i == sp);
    let mut snaps: Vec<SnapshotDedup> = c
        .snapshots
        .iter()
        .map(|s| SnapshotDedup {
            id: s.id.to_hex(),
            space: s.snapshot.space.clone(),
            time_ns: s.snapshot.time_ns,
            bytes: s.snapshot.summary.bytes,
            added_bytes: 0,
            only_bytes: 0,
        })
        .collect();
    let mut spaces: Vec<SpaceDedup> = c
        .spaces
        .iter()
        .map(|name| {
            let of: Vec<&SnapshotEntry> = c
                .snapshots
                .iter()
                .filter(|s| &s.snapshot.space == name)
                .collect();
            SpaceDedup {
                space: name.clone(),
                snapshots: of.len() as u64,
                latest_bytes: of.last().map(|s| s.snapshot.summary.bytes).unwrap_or(0),
                logical_bytes: of.iter().map(|s| s.snapshot.summary.bytes).sum(),
                stored_bytes: 0,
                unique_bytes: 0,
            }
        })
        .collect();
    let mut dir_bytes: Vec<u64> = vec![0; c.dirs.len()];
    let (mut unique, mut stored) = (0u64, 0u64);
    for o in &c.objects {
        if o.refs == 0 {
            continue;
        }
        let single_space = o.spaces.count_ones() == 1;
        let counts = match space_idx {
            None => true,
            Some(i) => o.spaces & (1u64 << i.min(63)) != 0,
        };
        if counts {
            stored += u64::from(o.stored);
            if !o.is_tree {
                unique += u64::from(o.raw);
            }
        }
        for (i, sp) in spaces.iter_mut().enumerate() {
            if o.spaces & (1u64 << i.min(63)) != 0 {
                sp.stored_bytes += u64::from(o.stored);
                if single_space {
                    sp.unique_bytes += u64::from(o.stored);
                }
            }
        }
        if o.first != NONE {
            snaps[o.first as usize].added_bytes += u64::from(o.stored);
        }
        if o.refs == 1 && o.only != NONE {
            snaps[o.only as usize].only_bytes += u64::from(o.stored);
        }
        if o.dir != NONE {
            dir_bytes[o.dir as usize] += u64::from(o.stored);
        }
    }
    // Folder totals include everything attributed below them.
    let mut order: Vec<u32> = (1..c.dirs.len() as u32).collect();
    order.sort_by_key(|n| std::cmp::Reverse(c.dirs[*n as usize].depth));
    let mut subtotal = dir_bytes.clone();
    for n in order {
        let p = c.dirs[n as usize].parent;
        if p != NONE && p != 0 {
            subtotal[p as usize] += subtotal[n as usize];
        }
    }
    let mut dirs: Vec<DirCost> = (1..c.dirs.len())
        .filter(|n| c.dirs[*n].depth > 0 && in_scope(c.dirs[*n].space as usize))
        .map(|n| DirCost {
            space: c.spaces[c.dirs[n].space as usize].clone(),
            path: c.dir_path(n as u32),
            unique_bytes: subtotal[n],
        })
        .filter(|d| d.unique_bytes > 0)
        .collect();
    dirs.sort_by(|a, b| {
        b.unique_bytes
            .cmp(&a.unique_bytes)
            .then(a.path.cmp(&b.path))
    });
    dirs.truncate(top);
    let duplicates = duplicates(repo, c, space_idx, top)?;
    let logical: u64 = c
        .snapshots
        .iter()
        .filter(|s| space.is_none_or(|sp| s.snapshot.space == sp))
        .map(|s| s.snapshot.summary.bytes)
        .sum();
    Ok(DedupReport {
        logical_bytes: logical,
        unique_bytes: unique,
        stored_bytes: stored,
        pack_bytes: c.pack_bytes,
        dedup_ratio: ratio(logical, unique),
        compression_ratio: ratio(unique, stored),
        total_ratio: ratio(logical, stored),
        spaces: spaces
            .into_iter()
            .enumerate()
            .filter(|(i, _)| in_scope(*i))
            .map(|(_, s)| s)
            .collect(),
        snapshots: snaps
            .into_iter()
            .filter(|s| space.is_none_or(|sp| s.space == sp))
            .collect(),
        largest_dirs: dirs,
        duplicates,
        missing_objects: c.missing,
    })
}

/// Files with the same content in several places of the spaces' latest snapshots.
fn duplicates(
    _repo: &Repo,
    c: &Census,
    space_idx: Option<usize>,
    top: usize,
) -> Result<Vec<Duplicate>> {
    let mut latest: BTreeMap<&str, &SnapshotEntry> = BTreeMap::new();
    for s in &c.snapshots {
        latest.insert(&s.snapshot.space, s);
    }
    let mut by_content: HashMap<Hash, (u64, Vec<String>)> = HashMap::new();
    for (space, s) in latest {
        if space_idx.is_some_and(|i| c.spaces[i] != space) {
            continue;
        }
        let mut stack: Vec<(ObjectId, String)> = vec![(s.snapshot.root, String::new())];
        while let Some((t, prefix)) = stack.pop() {
            let Some(tree) = c.trees.get(&t) else {
                continue;
            };
            for e in &tree.entries {
                let name = String::from_utf8_lossy(&e.name);
                let path = if prefix.is_empty() {
                    name.into_owned()
                } else {
                    format!("{prefix}/{name}")
                };
                match &e.node {
                    Node::File { size, chunks } if *size > 0 => {
                        let mut h = blake3::Hasher::new();
                        for ch in chunks {
                            h.update(ch.as_bytes());
                        }
                        let key = Hash(*h.finalize().as_bytes());
                        let ent = by_content.entry(key).or_insert((*size, Vec::new()));
                        ent.1.push(format!("{space}:{path}"));
                    }
                    Node::Dir { tree } => stack.push((*tree, path)),
                    _ => {}
                }
            }
        }
    }
    let mut out: Vec<Duplicate> = by_content
        .into_values()
        .filter(|(_, paths)| paths.len() > 1)
        .map(|(size, mut paths)| {
            paths.sort();
            let copies = paths.len() as u64;
            paths.truncate(8);
            Duplicate {
                size,
                copies,
                saved_bytes: size * (copies - 1),
                paths,
            }
        })
        .collect();
    out.sort_by(|a, b| {
        b.saved_bytes
            .cmp(&a.saved_bytes)
            .then(a.paths.cmp(&b.paths))
    });
    out.truncate(top);
    Ok(out)
}

/// `puce report retention`: what a policy removes and frees.
#[derive(Debug, Clone, Serialize)]
pub struct RetentionReport {
    /// Every snapshot's fate.
    pub decisions: Vec<Decision>,
    /// How many would be removed.
    pub removed: u64,
    /// How many kept.
    pub kept: u64,
    /// Stored bytes of the objects only removed snapshots reference: what gc frees after the
    /// forget (with full repacking).
    pub freed_bytes: u64,
    /// Stored bytes reachable from all snapshots now.
    pub stored_bytes: u64,
}

/// Build the retention report for `decisions` (from [`crate::retention::decide`]).
pub fn retention(c: &mut Census, decisions: Vec<Decision>) -> RetentionReport {
    let removed_ids: std::collections::HashSet<SnapshotId> =
        decisions.iter().filter(|d| !d.keep).map(|d| d.id).collect();
    let kept: Vec<usize> = (0..c.snapshots.len())
        .filter(|i| !removed_ids.contains(&c.snapshots[*i].id))
        .collect();
    let pass = c.mark(&kept);
    let mut freed = 0u64;
    let mut stored = 0u64;
    for o in &c.objects {
        if o.refs == 0 {
            continue;
        }
        stored += u64::from(o.stored);
        if o.mark != pass {
            freed += u64::from(o.stored);
        }
    }
    RetentionReport {
        removed: removed_ids.len() as u64,
        kept: (decisions.len() - removed_ids.len()) as u64,
        decisions,
        freed_bytes: freed,
        stored_bytes: stored,
    }
}

/// One day of growth.
#[derive(Debug, Clone, Serialize)]
pub struct GrowthDay {
    /// The day (YYYY-MM-DD, in the given time zone).
    pub day: String,
    /// Stored bytes first referenced that day, per space.
    pub added: BTreeMap<String, u64>,
    /// Stored bytes reachable at the end of that day (cumulative).
    pub total: u64,
}

/// `puce report growth`.
#[derive(Debug, Clone, Serialize)]
pub struct GrowthReport {
    /// Per day with snapshots, oldest first.
    pub days: Vec<GrowthDay>,
    /// Stored bytes reachable now.
    pub stored_bytes: u64,
    /// Size of all pack files now.
    pub pack_bytes: u64,
    /// Average stored bytes added per day over the last 30 days of history (0 when the history
    /// spans less than a day: too short to project).
    pub bytes_per_day: f64,
    /// The window the rate was measured over, days.
    pub rate_window_days: f64,
    /// Free bytes on the repository's file system.
    pub disk_free_bytes: u64,
    /// Days until the disk is full at that rate (None if not growing).
    pub days_to_full: Option<f64>,
    /// The date it fills, if it does.
    pub full_on: Option<String>,
}

/// Build the growth report in time zone `tz`, with `free` bytes left on disk and `now_ns`.
pub fn growth(
    c: &Census,
    space: Option<&str>,
    tz: &jiff::tz::TimeZone,
    free: u64,
    now_ns: i64,
) -> GrowthReport {
    let day_of = |ns: i64| -> String {
        jiff::Timestamp::from_nanosecond(i128::from(ns))
            .map(|t| {
                t.to_zoned_datetime(tz.clone())
                    .strftime("%Y-%m-%d")
                    .to_string()
            })
            .unwrap_or_default()
    };
    let mut per_snap: Vec<u64> = vec![0; c.snapshots.len()];
    let mut stored = 0u64;
    for o in &c.objects {
        if o.refs == 0 || o.first == NONE {
            continue;
        }
        let s = &c.snapshots[o.first as usize].snapshot;
        if space.is_some_and(|sp| sp != s.space) {
            continue;
        }
        per_snap[o.first as usize] += u64::from(o.stored);
        stored += u64::from(o.stored);
    }
    let mut days: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for (i, s) in c.snapshots.iter().enumerate() {
        if space.is_some_and(|sp| sp != s.snapshot.space) {
            continue;
        }
        *days
            .entry(day_of(s.snapshot.time_ns))
            .or_default()
            .entry(s.snapshot.space.clone())
            .or_default() += per_snap[i];
    }
    let mut total = 0u64;
    let days: Vec<GrowthDay> = days
        .into_iter()
        .map(|(day, added)| {
            total += added.values().sum::<u64>();
            GrowthDay { day, added, total }
        })
        .collect();
    // Rate over the last 30 days of history: bytes added after the first snapshot in the
    // window, divided by the time spanned.
    let times: Vec<(i64, u64)> = c
        .snapshots
        .iter()
        .enumerate()
        .filter(|(_, s)| space.is_none_or(|sp| sp == s.snapshot.space))
        .map(|(i, s)| (s.snapshot.time_ns, per_snap[i]))
        .collect();
    let (mut rate, mut window) = (0.0, 0.0);
    if let (Some(first), Some(last)) = (times.first(), times.last()) {
        let day_ns = 86_400e9;
        let start = (last.0 as f64 - 30.0 * day_ns).max(first.0 as f64);
        let span = (last.0 as f64 - start) / day_ns;
        let added: u64 = times
            .iter()
            .filter(|(t, _)| *t as f64 > start)
            .map(|(_, b)| b)
            .sum();
        window = span;
        if span >= 1.0 {
            rate = added as f64 / span;
        }
    }
    let days_to_full = (rate > 0.0).then(|| free as f64 / rate);
    let full_on = days_to_full.and_then(|d| {
        // Seconds, not nanoseconds: a slow-growing repository fills after the year 2262.
        let secs = now_ns / 1_000_000_000 + (d * 86_400.0).min(1e12) as i64;
        jiff::Timestamp::from_second(secs).ok().map(|t| {
            t.to_zoned_datetime(tz.clone())
                .strftime("%Y-%m-%d")
                .to_string()
        })
    });
    GrowthReport {
        days,
        stored_bytes: stored,
        pack_bytes: c.pack_bytes,
        bytes_per_day: rate,
        rate_window_days: window,
        disk_free_bytes: free,
        days_to_full,
        full_on,
    }
}

/// Free bytes (for unprivileged users) on the file system holding `path`.
pub fn disk_free(path: &std::path::Path) -> Result<u64> {
    let st = rustix::fs::statvfs(path)
        .map_err(|e| crate::Error::io("cannot stat the file system of", path, e.into()))?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::NoProgress;
    use crate::repo::InitOptions;
    use crate::snapshot::snapshot;
    use crate::testkit::{Files, noise, snap_opts, write_files};

    /// Stored bytes of the objects the tree `root` itself and the files named `names` directly
    /// in it are made of.
    fn stored_of(repo: &Repo, root: &ObjectId, names: &[&str]) -> u64 {
        let reader = repo.index().reader().unwrap();
        let stored = |id: &ObjectId| u64::from(reader.get(id).unwrap().unwrap().stored_len);
        let mut total = stored(root);
        for e in repo.read_tree(root).unwrap().entries {
            if let Node::File { chunks, .. } = e.node
                && names.contains(&String::from_utf8_lossy(&e.name).as_ref())
            {
                total += chunks.iter().map(stored).sum::<u64>();
            }
        }
        total
    }

    #[test]
    fn figures_of_a_small_known_repository() {
        let d = tempfile::tempdir().unwrap();
        let repo = Arc::new(Repo::init(&d.path().join("r"), &InitOptions::default()).unwrap());
        let src = d.path().join("src");
        let a = noise(100_000, 1);
        let take = |files: &[(&str, &[u8])], space: &str, t: i64| {
            let files: Files = files
                .iter()
                .map(|(p, c)| (p.to_string(), c.to_vec()))
                .collect();
            write_files(&src, &files);
            snapshot(&repo, &src, &snap_opts(space, t), &NoProgress).unwrap()
        };
        let s1 = take(&[("a", &a), ("c", b"tiny")], "docs", 1);
        let s2 = take(
            &[("a", &a), ("a2", &a), ("d", &noise(50_000, 2))],
            "docs",
            2,
        );
        take(&[("e", &noise(30_000, 3))], "other", 3);

        let mut c = Census::build(&repo).unwrap();
        assert_eq!(c.spaces, ["docs", "other"]);
        assert_eq!(c.missing, 0);
        let r = dedup(&repo, &c, None, 10).unwrap();
        assert_eq!(r.logical_bytes, 100_004 + 250_000 + 30_000);
        assert_eq!(r.unique_bytes, 100_000 + 4 + 50_000 + 30_000);
        let mut stored = 0u64;
        repo.index()
            .for_each_object(|_, loc| {
                stored += u64::from(loc.stored_len);
                Ok(())
            })
            .unwrap();
        assert_eq!(r.stored_bytes, stored, "every object is reachable");
        let packs: u64 = repo
            .index()
            .packs()
            .unwrap()
            .iter()
            .map(|(_, p)| p.size)
            .sum();
        assert_eq!(r.pack_bytes, packs);
        let docs = &r.spaces[0];
        assert_eq!((docs.snapshots, docs.latest_bytes), (2, 250_000));
        assert_eq!(docs.logical_bytes, 350_004);
        assert_eq!(r.spaces[1].unique_bytes, r.spaces[1].stored_bytes);
        // `a` twice in the latest snapshot of docs.
        assert_eq!(r.duplicates.len(), 1, "{:?}", r.duplicates);
        let dup = &r.duplicates[0];
        assert_eq!(
            (dup.size, dup.copies, dup.saved_bytes),
            (100_000, 2, 100_000)
        );
        assert_eq!(dup.paths, ["docs:a", "docs:a2"]);
        // Only the first snapshot has `c` and its root tree; `a` is shared.
        let only1 = stored_of(&repo, &s1.snapshot.root, &["c"]);
        assert_eq!(r.snapshots[0].only_bytes, only1, "{:?}", r.snapshots[0]);
        let added2 = stored_of(&repo, &s2.snapshot.root, &["d"]);
        assert_eq!(r.snapshots[1].added_bytes, added2, "{:?}", r.snapshots[1]);

        // Forgetting the first snapshot frees what only it references.
        let decisions: Vec<Decision> = c
            .snapshots
            .iter()
            .map(|s| Decision {
                id: s.id,
                space: s.snapshot.space.clone(),
                host: s.snapshot.host.clone(),
                time_ns: s.snapshot.time_ns,
                claimed_ns: None,
                keep: s.id != s1.id,
                reasons: Vec::new(),
            })
            .collect();
        let ret = retention(&mut c, decisions);
        assert_eq!((ret.removed, ret.kept), (1, 2));
        assert_eq!((ret.freed_bytes, ret.stored_bytes), (only1, stored));

        // All in one day of 1970: no rate to project from.
        let g = growth(&c, None, &jiff::tz::TimeZone::UTC, 1 << 30, 0);
        assert_eq!(g.days.len(), 1);
        assert_eq!(g.days[0].day, "1970-01-01");
        assert_eq!(g.days[0].total, stored);
        assert_eq!(g.days[0].added.values().sum::<u64>(), stored);
        assert_eq!(g.stored_bytes, stored);
        assert_eq!((g.bytes_per_day, g.days_to_full), (0.0, None));
    }
}
