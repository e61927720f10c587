//! The history of a space: snapshots form a DAG through their `parents`.
//!
//! A space normally has one *head* (a snapshot that no other snapshot of the space names as a
//! parent). Two nodes that add snapshots to the same space between syncs give it two heads
//! until a merge snapshot (two parents) joins them: see [`crate::merge`].

use std::collections::{HashMap, HashSet, VecDeque};

use crate::format::snapshot::SnapshotEntry;
use crate::hash::SnapshotId;

/// The parents forgotten snapshots had, by snapshot ([`crate::forgotten::lineage`]).
pub type Lineage = HashMap<SnapshotId, Vec<SnapshotId>>;

/// The heads of `space` in `all`: its snapshots that no snapshot of the space descends from,
/// oldest first (by time, then id). Descent is through parents, and through the parents
/// forgotten snapshots had (`lineage`): forgetting the middle of a history leaves the snapshot
/// before it an ancestor, not a head.
pub fn heads<'a>(
    all: &'a [SnapshotEntry],
    lineage: &Lineage,
    space: &str,
) -> Vec<&'a SnapshotEntry> {
    // A snapshot with a lineage record is forgotten, or kept only by a hold: it is never a
    // head, and only the snapshots that remain make their ancestors ancestors.
    let in_space: Vec<&SnapshotEntry> = all
        .iter()
        .filter(|s| s.snapshot.space == space && !lineage.contains_key(&s.id))
        .collect();
    let mut parents: HashSet<SnapshotId> = HashSet::new();
    let mut stack: Vec<SnapshotId> = in_space
        .iter()
        .flat_map(|s| s.snapshot.parents.iter().copied())
        .collect();
    while let Some(p) = stack.pop() {
        if parents.insert(p)
            && let Some(pp) = lineage.get(&p)
        {
            stack.extend(pp.iter().copied());
        }
    }
    let mut out: Vec<&SnapshotEntry> = in_space
        .into_iter()
        .filter(|s| !parents.contains(&s.id))
        .collect();
    out.sort_by_key(|s| (s.snapshot.time_ns, s.id));
    out
}

/// Share of its parent's files a snapshot may drop before it is flagged as a mass deletion.
pub const MASS_DELETION_SHARE: f64 = 0.30;

/// A snapshot that holds far fewer files than its parent (a wrong `rm -rf`, or an intruder
/// emptying a space): flagged, never refused (history keeps the parent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shrink {
    /// The snapshot.
    pub snapshot: SnapshotId,
    /// Its parent with the most files.
    pub parent: SnapshotId,
    /// Files in that parent.
    pub files_before: u64,
    /// Files in the snapshot.
    pub files_after: u64,
}

/// Whether `s` drops more than [`MASS_DELETION_SHARE`] of the files of its largest parent in
/// `all`, as the records' summaries count them (written by whoever took the snapshot: a peer
/// could understate the drop).
pub fn shrink(all: &[SnapshotEntry], s: &SnapshotEntry) -> Option<Shrink> {
    let parent = s
        .snapshot
        .parents
        .iter()
        .filter_map(|p| all.iter().find(|e| e.id == *p))
        .max_by_key(|p| p.snapshot.summary.files)?;
    let (before, after) = (parent.snapshot.summary.files, s.snapshot.summary.files);
    let dropped = before.saturating_sub(after) as f64;
    (before > 0 && dropped > before as f64 * MASS_DELETION_SHARE).then_some(Shrink {
        snapshot: s.id,
        parent: parent.id,
        files_before: before,
        files_after: after,
    })
}

/// The latest state of `space`: the newest of its heads (by time, then id), so that a
/// snapshot whose clock ran behind its parent's is still the latest once it is the only head.
pub fn latest<'a>(
    all: &'a [SnapshotEntry],
    lineage: &Lineage,
    space: &str,
) -> Option<&'a SnapshotEntry> {
    heads(all, lineage, space).into_iter().next_back()
}

/// `id` and every snapshot reachable from it through parents that `all` holds.
pub fn ancestors(all: &[SnapshotEntry], id: SnapshotId) -> HashSet<SnapshotId> {
    let by_id: HashMap<SnapshotId, &SnapshotEntry> = all.iter().map(|s| (s.id, s)).collect();
    ancestors_in(&by_id, id)
}

fn ancestors_in(
    by_id: &HashMap<SnapshotId, &SnapshotEntry>,
    id: SnapshotId,
) -> HashSet<SnapshotId> {
    let mut seen = HashSet::new();
    let mut queue = VecDeque::from([id]);
    while let Some(id) = queue.pop_front() {
        if !seen.insert(id) {
            continue;
        }
        if let Some(s) = by_id.get(&id) {
            queue.extend(s.snapshot.parents.iter().copied());
        }
    }
    seen
}

/// The best common ancestor of `a` and `b`: among the common ancestors that are not ancestors
/// of another common ancestor, the newest (by time, then id). `None` when the histories share
/// nothing (two nodes that started the same space independently).
pub fn merge_base(all: &[SnapshotEntry], a: SnapshotId, b: SnapshotId) -> Option<SnapshotId> {
    let by_id: HashMap<SnapshotId, &SnapshotEntry> = all.iter().map(|s| (s.id, s)).collect();
    let aa = ancestors_in(&by_id, a);
    let bb = ancestors_in(&by_id, b);
    let common: Vec<SnapshotId> = aa
        .intersection(&bb)
        .copied()
        .filter(|id| by_id.contains_key(id))
        .collect();
    let mut dominated = HashSet::new();
    for c in &common {
        for p in ancestors_in(&by_id, *c) {
            if p != *c {
                dominated.insert(p);
            }
        }
    }
    common
        .into_iter()
        .filter(|c| !dominated.contains(c))
        .max_by_key(|c| by_id.get(c).map(|s| (s.snapshot.time_ns, *c)))
}

/// Whether a snapshot is a merge (it has two or more parents).
pub fn is_merge(s: &SnapshotEntry) -> bool {
    s.snapshot.parents.len() >= 2
}

/// Who made the state a snapshot records, for conflict copy names: its `origin` (the node that
/// took it), else its `host`; for a merge snapshot, the author of its newest parent.
pub fn author(all: &[SnapshotEntry], id: SnapshotId) -> String {
    let by_id: HashMap<SnapshotId, &SnapshotEntry> = all.iter().map(|s| (s.id, s)).collect();
    let mut cur = by_id.get(&id).copied();
    let mut steps = 0;
    while let Some(s) = cur {
        if !is_merge(s) {
            break;
        }
        steps += 1;
        let newest = s
            .snapshot
            .parents
            .iter()
            .filter_map(|p| by_id.get(p).copied())
            .max_by_key(|p| (p.snapshot.time_ns, p.id));
        match newest {
            Some(p) if steps <= all.len() => cur = Some(p),
            _ => break,
        }
    }
    match cur {
        Some(s) if !s.snapshot.origin.is_empty() => s.snapshot.origin.clone(),
        Some(s) if !s.snapshot.host.is_empty() => s.snapshot.host.clone(),
        _ => "unknown".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::snapshot::{Snapshot, Summary};
    use crate::hash::{Hash, ObjectId};

    fn snap(name: &str, time: i64, parents: &[&str], origin: &str) -> SnapshotEntry {
        SnapshotEntry {
            id: id(name),
            snapshot: Snapshot {
                time_ns: time,
                space: "s".into(),
                host: format!("host-{origin}"),
                user: String::new(),
                source: String::new(),
                tags: vec![],
                parents: parents.iter().map(|p| id(p)).collect(),
                root: ObjectId::of(name.as_bytes()),
                summary: Summary::default(),
                origin: origin.into(),
            },
        }
    }

    fn id(name: &str) -> SnapshotId {
        SnapshotId(Hash::of(name.as_bytes()))
    }

    #[test]
    fn heads_base_and_author() {
        // r <- a1 <- a2          (node a)
        //   \<- b1               (node b)
        // a2, b1 <- m (merge) <- a3
        let all = vec![
            snap("r", 1, &[], "a"),
            snap("a1", 2, &["r"], "a"),
            snap("b1", 3, &["r"], "b"),
            snap("a2", 4, &["a1"], "a"),
        ];
        let h: Vec<SnapshotId> = heads(&all, &Lineage::new(), "s")
            .iter()
            .map(|s| s.id)
            .collect();
        assert_eq!(h, vec![id("b1"), id("a2")]);
        assert_eq!(merge_base(&all, id("a2"), id("b1")), Some(id("r")));
        assert_eq!(merge_base(&all, id("a2"), id("a1")), Some(id("a1")));
        let mut all = all;
        let mut m = snap("m", 5, &["a2", "b1"], "");
        m.snapshot.host.clear();
        all.push(m);
        assert_eq!(author(&all, id("m")), "a"); // a2 (t=4) is newer than b1 (t=3)
        assert_eq!(heads(&all, &Lineage::new(), "s").len(), 1);
        // A snapshot whose clock is behind its parent's is still the latest once it is the
        // only head.
        all.push(snap("a3", 0, &["m"], "a"));
        assert_eq!(
            latest(&all, &Lineage::new(), "s").map(|s| s.id),
            Some(id("a3"))
        );
        assert_eq!(author(&all, id("a3")), "a");
        // Unrelated histories have no base.
        let all = vec![snap("x", 1, &[], "a"), snap("y", 2, &[], "b")];
        assert_eq!(merge_base(&all, id("x"), id("y")), None);
    }

    #[test]
    fn a_snapshot_dropping_more_than_30_percent_of_its_parents_files_is_flagged() {
        let with_files = |name, parents: &[&str], files| {
            let mut s = snap(name, 1, parents, "a");
            s.snapshot.summary.files = files;
            s
        };
        let all = vec![
            with_files("p", &[], 100),
            with_files("q", &[], 10),
            with_files("keep", &["p"], 70),
            with_files("rm", &["p"], 69),
            with_files("merge", &["q", "p"], 60),
            with_files("root", &[], 0),
        ];
        let flagged: Vec<(SnapshotId, u64)> = all
            .iter()
            .filter_map(|s| shrink(&all, s))
            .map(|f| (f.snapshot, f.files_before))
            .collect();
        assert_eq!(flagged, vec![(id("rm"), 100), (id("merge"), 100)]);
    }

    #[test]
    fn criss_cross_picks_the_newest_best_base() {
        // r <- a1, r <- b1; m1 = (a1, b1), m2 = (a1, b1): the best bases of m1 and m2 are a1
        // and b1; the newer one (b1) is chosen.
        let all = vec![
            snap("r", 1, &[], "a"),
            snap("a1", 2, &["r"], "a"),
            snap("b1", 3, &["r"], "b"),
            snap("m1", 4, &["a1", "b1"], ""),
            snap("m2", 5, &["a1", "b1"], ""),
        ];
        assert_eq!(merge_base(&all, id("m1"), id("m2")), Some(id("b1")));
    }
}
