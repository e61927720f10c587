//! gc's first half: mark what the snapshots reach, then judge every pack (steps 1 and 2 of the
//! module documentation). Nothing is changed: a [`Plan`] is what `puce gc --dry-run` prints,
//! and what [`super::execute`] carries out.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::backend::FileKind;
use crate::error::{ErrorKind, Result};
use crate::format::pack::Record;
use crate::format::tree::{Node, Tree};
use crate::hash::{ObjectId, PackId, SnapshotId};
use crate::index::{IndexReader, PackInfo, now_ns};
use crate::pack::read_pack_records;
use crate::progress::Progress;
use crate::repo::Repo;
use crate::writer_session;

use super::{GcLock, GcOptions, GcReport, gc_lock};

/// Per-pack mark state: one bit per entry.
pub(super) struct PackMark {
    info: PackInfo,
    bits: Vec<u64>,
}

impl PackMark {
    fn set(&mut self, entry: u32) -> bool {
        let (w, b) = ((entry / 64) as usize, entry % 64);
        match self.bits.get_mut(w) {
            Some(word) => {
                let was = *word & (1 << b) != 0;
                *word |= 1 << b;
                !was
            }
            None => false,
        }
    }
    pub(super) fn get(&self, entry: u32) -> bool {
        let (w, b) = ((entry / 64) as usize, entry % 64);
        self.bits.get(w).is_some_and(|word| word & (1 << b) != 0)
    }
}

/// What the snapshots reach, per pack gc judges.
pub(super) struct Marker {
    pub(super) reader: IndexReader,
    pub(super) packs: HashMap<u32, PackMark>,
    /// Trees in packs gc does not judge (written during gc), visited once.
    other_trees: HashSet<ObjectId>,
    live: u64,
    missing: u64,
    /// Condemned objects found reachable.
    pub(super) reachable_condemned: Vec<ObjectId>,
}

impl Marker {
    /// Mark `id`; returns whether it was newly marked (for trees: whether to descend).
    fn mark(&mut self, id: &ObjectId) -> Result<bool> {
        let Some(loc) = self.reader.get(id)? else {
            self.missing += 1;
            return Ok(false);
        };
        if self.reader.is_condemned(id)? && self.reader.get_live(id)?.is_none() {
            self.reachable_condemned.push(*id);
        }
        match self.packs.get_mut(&loc.pack) {
            Some(p) => {
                let new = p.set(loc.entry);
                if new {
                    self.live += 1;
                }
                Ok(new)
            }
            None => Ok(self.other_trees.insert(*id)),
        }
    }

    /// Mark everything the tree `root` reaches (iteratively).
    pub(super) fn walk(&mut self, repo: &Repo, root: ObjectId) -> Result<()> {
        let mut stack = vec![root];
        while let Some(t) = stack.pop() {
            if !self.mark(&t)? {
                continue;
            }
            let tree: Tree = match repo.read_tree_with(&self.reader, &t) {
                Ok(tree) => tree,
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    self.missing += 1;
                    continue;
                }
                Err(e) => return Err(e),
            };
            for e in tree.entries {
                match e.node {
                    Node::File { chunks, .. } => {
                        for c in &chunks {
                            self.mark(c)?;
                        }
                    }
                    Node::Dir { tree } => stack.push(tree),
                    // No content.
                    Node::Symlink { .. }
                    | Node::Fifo
                    | Node::Socket
                    | Node::CharDevice { .. }
                    | Node::BlockDevice { .. } => {}
                }
            }
        }
        Ok(())
    }
}

/// What gc decided for a pack it judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PackFate {
    /// Left as it is (little or nothing unused in it).
    Keep,
    /// Its live objects are copied into a new pack, then it is deleted.
    Repack,
    /// Nothing live in it: deleted.
    Delete,
}

/// A pack gc judged.
pub(super) struct Planned {
    pub(super) no: u32,
    pub(super) id: PackId,
    pub(super) size: u64,
    /// The pack's trailer records; empty for a kept pack (only doomed packs need them).
    pub(super) records: Vec<Record>,
    pub(super) fate: PackFate,
}

/// What a gc run is about to do, with its figures. Holds the repository's gc lock until it is
/// executed ([`super::execute`]) or dropped.
pub struct Plan {
    pub(super) repo: Arc<Repo>,
    pub(super) lock: GcLock,
    pub(super) opts: GcOptions,
    /// The figures, as `--dry-run` prints them (`dry_run` is true).
    pub(super) report: GcReport,
    pub(super) marker: Marker,
    /// The snapshots marked from.
    pub(super) marked: HashSet<SnapshotId>,
    pub(super) packs: Vec<Planned>,
    /// Packs on storage the index does not list (empty while a writer session is live).
    pub(super) orphans: Vec<(String, u64)>,
}

impl std::fmt::Debug for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plan")
            .field("report", &self.report)
            .field("packs", &self.packs().collect::<Vec<_>>())
            .field("orphans", &self.orphans)
            .finish()
    }
}

impl Plan {
    /// What the run would do: the figures `puce gc --dry-run` prints.
    pub fn report(&self) -> &GcReport {
        &self.report
    }

    /// Each pack judged, with its fate. Packs that could not be read and packs written since
    /// gc started are not judged (they are kept).
    pub fn packs(&self) -> impl Iterator<Item = (PackId, PackFate)> + '_ {
        self.packs.iter().map(|p| (p.id, p.fate))
    }

    /// The names of the packs the index does not list, which would be deleted.
    pub fn orphans(&self) -> impl Iterator<Item = &str> + '_ {
        self.orphans.iter().map(|(name, _)| name.as_str())
    }
}

/// Plan a gc of `repo`: mark, then judge each pack. Takes the gc lock, which the plan holds;
/// changes nothing.
pub fn plan(repo: &Arc<Repo>, opts: &GcOptions, progress: &dyn Progress) -> Result<Plan> {
    let lock = gc_lock(repo)?;
    let started_ns = now_ns();
    let mut report = GcReport {
        dry_run: true,
        ..GcReport::default()
    };

    // Orphans: packs on storage the index does not list. Listed before the session check (see
    // design.md for why this order makes deleting them safe).
    let listed: Vec<(String, u64)> = repo.backend().list(FileKind::Pack)?;
    let no_writers = writer_session::live_sessions(repo)?.is_empty();

    // 1. Mark.
    let snaps = repo.snapshots()?;
    report.snapshots = snaps.len() as u64;
    let packs = repo.index().packs()?;
    report.packs = packs.len() as u64;
    let indexed: HashSet<String> = packs.iter().map(|(_, p)| p.id.to_hex()).collect();
    let mut marker = Marker {
        reader: repo.index().reader()?,
        packs: packs
            .into_iter()
            .filter(|(_, info)| info.indexed_ns < started_ns)
            .map(|(no, info)| {
                let words = (info.count as usize).div_ceil(64);
                let bits = vec![0; words];
                (no, PackMark { info, bits })
            })
            .collect(),
        other_trees: HashSet::new(),
        live: 0,
        missing: 0,
        reachable_condemned: Vec::new(),
    };
    progress.set_total(snaps.len() as u64, 0);
    for s in &snaps {
        marker.walk(repo, s.snapshot.root)?;
        progress.add(1, 0);
    }
    report.live_objects = marker.live;
    report.missing_objects = marker.missing;

    // 2. Judge the packs.
    let packs = judge(repo, &marker, opts, &mut report, progress);
    let orphans: Vec<(String, u64)> = if no_writers {
        listed
            .into_iter()
            .filter(|(name, _)| !indexed.contains(name))
            .collect()
    } else {
        Vec::new()
    };
    tally(&packs, &marker, &orphans, &mut report);
    Ok(Plan {
        repo: repo.clone(),
        lock,
        opts: opts.clone(),
        report,
        marker,
        marked: snaps.iter().map(|s| s.id).collect(),
        packs,
        orphans,
    })
}

/// Read each marked pack's trailer and decide its fate. A pack that cannot be read is left
/// alone, with a warning.
fn judge(
    repo: &Repo,
    marker: &Marker,
    opts: &GcOptions,
    report: &mut GcReport,
    progress: &dyn Progress,
) -> Vec<Planned> {
    let mut plan = Vec::new();
    for (no, pm) in &marker.packs {
        report.bytes_before += pm.info.size;
        let records = match read_pack_records(repo.backend().as_ref(), &pm.info.id, repo.codec()) {
            Ok((_, r)) => r,
            Err(e) => {
                progress.warn(&format!(
                    "pack {} cannot be read ({e:#}); gc leaves it alone: run `puce check`",
                    pm.info.id.short(16)
                ));
                continue;
            }
        };
        let mut live_bytes = 0u64;
        let mut dead_bytes = 0u64;
        for (i, r) in records.iter().enumerate() {
            if pm.get(i as u32) {
                live_bytes += u64::from(r.stored_len);
            } else {
                dead_bytes += u64::from(r.stored_len);
            }
        }
        let total = (live_bytes + dead_bytes).max(1);
        let fate = if live_bytes == 0 {
            PackFate::Delete
        } else if dead_bytes as f64 / total as f64 > opts.repack_unused {
            PackFate::Repack
        } else {
            report.bytes_unused_kept += dead_bytes;
            PackFate::Keep
        };
        // Only doomed packs keep their records: memory is 1 bit per object marked, plus a
        // trailer record (48 bytes) per object of the packs gc rewrites or deletes.
        let records = if fate == PackFate::Keep {
            Vec::new()
        } else {
            records
        };
        plan.push(Planned {
            no: *no,
            id: pm.info.id,
            size: pm.info.size,
            records,
            fate,
        });
    }
    plan
}

/// The plan's figures: packs and objects removed, bytes rewritten and freed.
fn tally(plan: &[Planned], marker: &Marker, orphans: &[(String, u64)], report: &mut GcReport) {
    for p in plan {
        match p.fate {
            PackFate::Keep => {}
            PackFate::Delete => {
                report.packs_deleted += 1;
                report.objects_removed += p.records.len() as u64;
                report.objects_removed_bytes += p
                    .records
                    .iter()
                    .map(|r| u64::from(r.stored_len))
                    .sum::<u64>();
                report.bytes_freed += p.size;
            }
            PackFate::Repack => {
                report.packs_repacked += 1;
                let pm = &marker.packs[&p.no];
                let live: u64 = p
                    .records
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| pm.get(*i as u32))
                    .map(|(_, r)| u64::from(r.stored_len) + 96)
                    .sum();
                report.bytes_rewritten += live;
                report.bytes_freed += p.size.saturating_sub(live);
                for (_, r) in p
                    .records
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| !pm.get(*i as u32))
                {
                    report.objects_removed += 1;
                    report.objects_removed_bytes += u64::from(r.stored_len);
                }
            }
        }
    }
    report.packs_orphaned = orphans.len() as u64;
    report.bytes_freed += orphans.iter().map(|(_, s)| s).sum::<u64>();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use crate::gc::{execute, forget};
    use crate::progress::NoProgress;
    use crate::repo::InitOptions;
    use crate::snapshot::{SnapshotOutcome, snapshot};
    use crate::testkit::{Files, noise, snap_opts, write_files};

    fn repo(dir: &std::path::Path) -> Arc<Repo> {
        Arc::new(Repo::init(&dir.join("r"), &InitOptions::default()).unwrap())
    }

    fn take(
        repo: &Arc<Repo>,
        dir: &std::path::Path,
        files: &[(&str, Vec<u8>)],
        t: i64,
    ) -> SnapshotOutcome {
        let files: Files = files
            .iter()
            .map(|(p, c)| (p.to_string(), c.clone()))
            .collect();
        let src = dir.join("src");
        write_files(&src, &files);
        snapshot(repo, &src, &snap_opts(&format!("s{t}"), t), &NoProgress).unwrap()
    }

    /// The packs of the index, with their size and object count.
    fn packs(repo: &Repo) -> Vec<(PackId, u64, u32)> {
        let mut v: Vec<_> = repo
            .index()
            .packs()
            .unwrap()
            .into_iter()
            .map(|(_, p)| (p.id, p.size, p.count))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_plan_with_nothing_to_do_keeps_every_pack_and_frees_nothing() {
        let d = tempfile::tempdir().unwrap();
        let r = repo(d.path());
        take(
            &r,
            d.path(),
            &[("a", noise(50_000, 1)), ("b", b"b".to_vec())],
            1,
        );
        let before = packs(&r);
        let plan = plan(&r, &GcOptions::default(), &NoProgress).unwrap();
        assert!(plan.packs().all(|(_, f)| f == PackFate::Keep), "{plan:?}");
        assert_eq!(plan.packs().count(), before.len());
        assert_eq!(plan.orphans().count(), 0);
        let g = plan.report();
        assert!(g.dry_run);
        assert_eq!((g.snapshots, g.packs), (1, before.len() as u64));
        let objects: u64 = before.iter().map(|(_, _, n)| u64::from(*n)).sum();
        assert_eq!(g.live_objects, objects);
        let total: u64 = before.iter().map(|(_, s, _)| s).sum();
        assert_eq!(g.bytes_before, total);
        assert_eq!(
            (g.packs_deleted, g.packs_repacked, g.packs_orphaned),
            (0, 0, 0)
        );
        assert_eq!(
            (g.objects_removed, g.bytes_freed, g.bytes_rewritten),
            (0, 0, 0)
        );
        let g = execute(plan, &NoProgress).unwrap();
        assert!(!g.dry_run);
        assert_eq!(packs(&r), before);
    }

    #[test]
    fn a_pack_nothing_references_is_planned_for_deletion() {
        let d = tempfile::tempdir().unwrap();
        let r = repo(d.path());
        take(&r, d.path(), &[("kept", noise(40_000, 1))], 1);
        let kept = packs(&r);
        let gone = take(&r, d.path(), &[("gone", noise(60_000, 2))], 2);
        let (doomed, size, count) = *packs(&r).iter().find(|p| !kept.contains(p)).unwrap();
        forget(&r, &[gone.id]).unwrap();
        // Also a pack the index does not list.
        let orphan = "cd".repeat(32);
        r.backend().write(FileKind::Pack, &orphan, b"junk").unwrap();

        let p = plan(&r, &GcOptions::default(), &NoProgress).unwrap();
        let fates: HashMap<PackId, PackFate> = p.packs().collect();
        assert_eq!(fates[&doomed], PackFate::Delete, "{p:?}");
        assert!(
            kept.iter().all(|(id, _, _)| fates[id] == PackFate::Keep),
            "{p:?}"
        );
        assert_eq!(p.orphans().collect::<Vec<_>>(), [orphan.as_str()]);
        let g = p.report().clone();
        assert_eq!(
            (g.packs_deleted, g.packs_repacked, g.packs_orphaned),
            (1, 0, 1)
        );
        assert_eq!(g.objects_removed, u64::from(count));
        assert_eq!(g.bytes_freed, size + 4);
        // A plan changes nothing; dropped, it releases the gc lock.
        drop(p);
        assert!(
            r.backend()
                .exists(FileKind::Pack, &doomed.to_hex())
                .unwrap()
        );
        let done = crate::gc::gc(&r, &GcOptions::default(), &NoProgress).unwrap();
        assert_eq!((done.packs_deleted, done.packs_orphaned), (1, 1));
        assert_eq!(packs(&r), kept);
        assert!(!r.backend().exists(FileKind::Pack, &orphan).unwrap());
    }

    #[test]
    fn a_partly_referenced_pack_is_planned_for_a_repack() {
        let d = tempfile::tempdir().unwrap();
        let r = repo(d.path());
        let shared = noise(100_000, 1);
        let first = take(
            &r,
            d.path(),
            &[("shared", shared.clone()), ("dead", noise(400_000, 2))],
            1,
        );
        let mixed = packs(&r);
        assert_eq!(mixed.len(), 1);
        take(&r, d.path(), &[("shared", shared)], 2);
        forget(&r, &[first.id]).unwrap();

        let p = plan(&r, &GcOptions::default(), &NoProgress).unwrap();
        let fates: HashMap<PackId, PackFate> = p.packs().collect();
        assert_eq!(fates[&mixed[0].0], PackFate::Repack, "{p:?}");
        assert_eq!(fates.values().filter(|f| **f == PackFate::Keep).count(), 1);
        let g = p.report().clone();
        assert_eq!((g.packs_deleted, g.packs_repacked), (0, 1));
        // Dead: the chunks of `dead` and the first root tree; live: the chunks of `shared`.
        let reader = r.index().reader().unwrap();
        let root = r.read_tree(&first.snapshot.root).unwrap();
        let chunks = |name: &str| match &root
            .entries
            .iter()
            .find(|e| e.name == name.as_bytes())
            .unwrap()
            .node
        {
            Node::File { chunks, .. } => chunks.clone(),
            _ => unreachable!(),
        };
        let stored = |ids: &[ObjectId]| -> u64 {
            ids.iter()
                .map(|id| u64::from(reader.get(id).unwrap().unwrap().stored_len))
                .sum()
        };
        let live = chunks("shared");
        assert_eq!(g.objects_removed, chunks("dead").len() as u64 + 1);
        assert_eq!(g.bytes_rewritten, stored(&live) + 96 * live.len() as u64);
        assert_eq!(g.bytes_freed, mixed[0].1 - g.bytes_rewritten);
        // Another gc cannot start while a plan holds the lock.
        let busy = plan(&r, &GcOptions::default(), &NoProgress).unwrap_err();
        assert_eq!(busy.kind(), ErrorKind::Busy);
        let done = execute(p, &NoProgress).unwrap();
        assert_eq!(done.packs_repacked, 1);
        assert!(
            !r.backend()
                .exists(FileKind::Pack, &mixed[0].0.to_hex())
                .unwrap()
        );
        let again = plan(&r, &GcOptions::default(), &NoProgress).unwrap();
        assert_eq!(again.report().bytes_freed, 0, "{again:?}");
    }
}
