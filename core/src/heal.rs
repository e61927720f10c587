//! Healing a damaged repository from copies elsewhere (peer nodes): `puce repair --from PEER`
//! and the node daemon after a failed scheduled check. See `docs/design.md`, "Healing".
//!
//! Given what a [`check`](crate::check) found:
//! 1. Damaged snapshot records are fetched again (checked against their id) and rewritten.
//! 2. Every damaged pack (missing, truncated, wrong hash, damaged objects) is read once; each
//!    object the index locates in it is verified, and the good ones are copied, as stored, into
//!    new packs (as gc's repack does).
//! 3. The snapshots are walked: every object they reach that is damaged or not indexed is
//!    *wanted*. A damaged tree hides its children: they are looked at once the tree is fetched.
//! 4. The wanted objects are asked from the sources in turn; each one received is verified
//!    (BLAKE3 of its plaintext) before it is appended to a new pack; trees received are decoded
//!    and their children looked at.
//! 5. The new packs are sealed (fsync, rename, fsync of the directory), then one index
//!    transaction indexes them, points every copied or fetched object at its new copy, drops
//!    the objects nobody could supply, and forgets the damaged packs, whose files are then
//!    deleted ([`crate::index::Index::retire_packs`], gc's retirement). Afterwards nothing in
//!    the index points at damaged bytes: what could not be healed is reported missing, with
//!    the files it belongs to, and a later heal (another peer) or snapshot can still supply it.
//!
//! [`plan`] decides from the check's findings which records and packs are worked on (step 1's
//! records, step 2's packs), changing nothing; [`execute`] runs the steps. This module does no
//! network I/O: sources implement [`ObjectSource`].

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde::Serialize;

use crate::backend::FileKind;
use crate::check::{Affected, CheckOptions, CheckReport, check};
use crate::error::{Error, ErrorKind, Result};
use crate::format::pack::{Kind, Record};
use crate::format::snapshot::Snapshot;
use crate::format::snapshot::SnapshotEntry;
use crate::format::tree::{Node, Tree};
use crate::gc::GcLock;
use crate::hash::{ObjectId, PackId, SnapshotId};
use crate::index::{IndexReader, Location};
use crate::pack::PackWriter;
use crate::progress::Progress;
use crate::repo::Repo;

/// Objects asked from a source in one call.
pub const FETCH_BATCH: usize = 64;

/// An object as a source sends it: as stored in its pack (possibly compressed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedObject {
    /// The id it claims (checked against its plaintext before use).
    pub id: ObjectId,
    /// What it is.
    pub kind: Kind,
    /// Pack entry flags (zstd).
    pub flags: u8,
    /// Plaintext length.
    pub raw_len: u32,
    /// Stored bytes.
    pub data: Vec<u8>,
}

/// Somewhere healthy copies may be found (a peer node).
pub trait ObjectSource {
    /// A name for reports ("peer 'lyon'").
    fn name(&self) -> &str;
    /// The objects of `ids` this source has and lets us read; the others are left out.
    fn fetch_objects(&mut self, ids: &[ObjectId]) -> Result<Vec<FetchedObject>>;
    /// The snapshot record `id`, if this source has it and lets us read it.
    fn fetch_snapshot(&mut self, id: &SnapshotId) -> Result<Option<Vec<u8>>>;
}

/// Objects healed from one source.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct SourceReport {
    /// The source's name.
    pub name: String,
    /// Objects asked for.
    pub asked: u64,
    /// Objects received, verified and stored.
    pub objects: u64,
    /// Their stored bytes.
    pub bytes: u64,
    /// Snapshot records received and rewritten.
    pub snapshots: u64,
    /// Objects or records received that did not match their id (the source is then not used
    /// any more).
    pub rejected: u64,
    /// Why the source stopped being asked, if it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// An object healed.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct HealedObject {
    /// Object id (hex).
    pub id: String,
    /// `data` or `tree`.
    pub kind: String,
    /// The source it came from.
    pub from: String,
}

/// An object no source could supply, with the first place it is used.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LostObject {
    /// Object id (hex).
    pub id: String,
    /// `data` or `tree` (as far as known: a chunk is named by a file, a tree by a directory).
    pub kind: String,
    /// A snapshot that reaches it (hex id).
    pub snapshot: String,
    /// That snapshot's space.
    pub space: String,
    /// The file (or directory, for a tree) it belongs to in that snapshot.
    pub path: String,
}

/// What a heal did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HealReport {
    /// Damaged packs found (missing, truncated, damaged bytes).
    pub packs_damaged: u64,
    /// Damaged packs retired (their good objects copied, the file deleted).
    pub packs_retired: u64,
    /// Packs left alone because they could not be read (an I/O error, not damage).
    pub packs_unreadable: Vec<String>,
    /// New packs written.
    pub packs_written: u64,
    /// Good objects of damaged packs copied into new packs.
    pub objects_rewritten: u64,
    /// Objects found damaged or missing that snapshots need.
    pub objects_wanted: u64,
    /// Damaged objects no snapshot needs, dropped with their pack.
    pub objects_unreferenced_dropped: u64,
    /// Objects fetched, verified and stored, with their source.
    pub healed: Vec<HealedObject>,
    /// Objects no source could supply.
    pub lost: Vec<LostObject>,
    /// Snapshot records rewritten from a source (hex ids).
    pub snapshots_healed: Vec<String>,
    /// Damaged snapshot records no source could supply (hex ids).
    pub snapshots_lost: Vec<String>,
    /// Per source.
    pub sources: Vec<SourceReport>,
    /// Snapshots still damaged afterwards, with their damaged paths (empty when all healed).
    pub affected: Vec<Affected>,
}

impl HealReport {
    /// Whether everything damaged was healed.
    pub fn is_complete(&self) -> bool {
        self.lost.is_empty() && self.snapshots_lost.is_empty() && self.packs_unreadable.is_empty()
    }
}

/// Where a wanted object is used (for the report of what could not be healed).
#[derive(Debug, Clone)]
struct Place {
    snapshot: usize,
    path: Vec<u8>,
    kind: Kind,
}

/// New packs being written.
struct Packer<'a> {
    repo: &'a Repo,
    writer: Option<PackWriter>,
    sealed: Vec<(PackId, u64, Vec<Record>)>,
}

impl Packer<'_> {
    fn add(
        &mut self,
        id: ObjectId,
        kind: Kind,
        flags: u8,
        raw_len: u32,
        data: &[u8],
    ) -> Result<()> {
        let w = match self.writer.as_mut() {
            Some(w) => w,
            None => self.writer.insert(PackWriter::new(
                self.repo.backend().as_ref(),
                self.repo.codec(),
            )?),
        };
        w.add(id, kind, flags, raw_len, data)?;
        if w.len() >= self.repo.config().pack_target_size
            && let Some(w) = self.writer.take()
        {
            self.sealed.push(w.finish()?);
        }
        Ok(())
    }

    /// Seal the pack being written; returns every pack sealed.
    fn finish(&mut self) -> Result<Vec<(PackId, u64, Vec<Record>)>> {
        if let Some(w) = self.writer.take() {
            if w.is_empty() {
                w.abort();
            } else {
                self.sealed.push(w.finish()?);
            }
        }
        Ok(std::mem::take(&mut self.sealed))
    }
}

/// The snapshot ids of `bad_snapshot` problems.
fn bad_snapshots(damage: &CheckReport) -> Vec<SnapshotId> {
    let mut v: Vec<SnapshotId> = damage
        .problems
        .iter()
        .filter(|p| p.kind == "bad_snapshot")
        .filter_map(|p| p.snapshot.as_deref())
        .filter_map(|h| SnapshotId::from_hex(h).ok())
        .collect();
    v.sort();
    v.dedup();
    v
}

/// What a heal will work on, decided from a check's findings and the index before anything is
/// changed: the snapshot records to fetch again and the damaged packs to salvage and retire.
/// Holds the repository's gc lock until it is executed ([`execute`]) or dropped.
pub struct HealPlan<'a> {
    repo: &'a Repo,
    _lock: GcLock,
    /// Damaged snapshot records.
    snapshots: Vec<SnapshotId>,
    /// Damaged packs by number, with the objects the index locates in each.
    members: BTreeMap<u32, Vec<(ObjectId, Location)>>,
    /// Pack ids by number.
    names: HashMap<u32, PackId>,
    /// Objects check found damaged or missing.
    bad: HashSet<ObjectId>,
}

impl std::fmt::Debug for HealPlan<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealPlan")
            .field("snapshots", &self.snapshots)
            .field("packs", &self.packs().collect::<Vec<_>>())
            .field("bad", &self.bad.len())
            .finish()
    }
}

impl HealPlan<'_> {
    /// The damaged snapshot records, to be fetched again.
    pub fn snapshots(&self) -> &[SnapshotId] {
        &self.snapshots
    }

    /// The damaged packs: their good objects are copied, then they are retired.
    pub fn packs(&self) -> impl Iterator<Item = PackId> + '_ {
        self.members
            .keys()
            .filter_map(|no| self.names.get(no).copied())
    }
}

/// Plan a heal of what `damage` (a check of `repo`, usually with `read_data`) found. Takes the
/// repository's gc lock, which the plan holds; changes nothing.
pub fn plan<'a>(repo: &'a Repo, damage: &CheckReport) -> Result<HealPlan<'a>> {
    let lock = crate::gc::gc_lock(repo)?;
    let packs = repo.index().packs()?;
    let by_id: HashMap<PackId, u32> = packs.iter().map(|(no, p)| (p.id, *no)).collect();
    let names: HashMap<u32, PackId> = packs.iter().map(|(no, p)| (*no, p.id)).collect();
    let reader = repo.index().reader()?;
    let mut damaged: BTreeSet<u32> = damage
        .problems
        .iter()
        .filter(|p| {
            matches!(
                p.kind.as_str(),
                "missing_pack" | "corrupt_pack" | "corrupt_object" | "index_mismatch"
            )
        })
        .filter_map(|p| p.pack.as_deref())
        .filter_map(|h| PackId::from_hex(h).ok())
        .filter_map(|id| by_id.get(&id).copied())
        .collect();
    let bad: HashSet<ObjectId> = damage.bad_objects.iter().copied().collect();
    for id in &damage.bad_objects {
        if let Some(loc) = reader.get_live(id)? {
            damaged.insert(loc.pack);
        }
    }
    let mut members: BTreeMap<u32, Vec<(ObjectId, Location)>> = BTreeMap::new();
    if !damaged.is_empty() {
        repo.index().for_each_object(|id, loc| {
            if damaged.contains(&loc.pack) {
                members.entry(loc.pack).or_default().push((id, loc));
            }
            Ok(())
        })?;
    }
    for no in &damaged {
        members.entry(*no).or_default();
    }
    Ok(HealPlan {
        repo,
        _lock: lock,
        snapshots: bad_snapshots(damage),
        members,
        names,
        bad,
    })
}

/// Heal what `damage` (a check of `repo`, usually with `read_data`) found, from `sources`,
/// asked in order: [`plan`], then [`execute`]. Holds the repository's gc lock throughout.
pub fn heal(
    repo: &Repo,
    damage: &CheckReport,
    sources: &mut [&mut dyn ObjectSource],
    progress: &dyn Progress,
) -> Result<HealReport> {
    execute(plan(repo, damage)?, sources, progress)
}

/// Carry out `plan` with copies from `sources`, asked in order (the steps of the module
/// documentation), then release the gc lock it holds.
pub fn execute(
    plan: HealPlan<'_>,
    sources: &mut [&mut dyn ObjectSource],
    progress: &dyn Progress,
) -> Result<HealReport> {
    let repo = plan.repo;
    let mut report = HealReport {
        sources: sources
            .iter()
            .map(|s| SourceReport {
                name: s.name().to_string(),
                ..SourceReport::default()
            })
            .collect(),
        ..HealReport::default()
    };
    // 1. Snapshot records.
    heal_snapshots(repo, &plan.snapshots, sources, &mut report)?;
    // 2. Damaged packs: copy their good objects.
    let mut h = Healer {
        repo,
        reader: repo.index().reader()?,
        packer: Packer {
            repo,
            writer: None,
            sealed: Vec::new(),
        },
        moved: Vec::new(),
        salvaged: HashSet::new(),
        bad: RefCell::new(plan.bad.clone()),
        bad_locs: HashMap::new(),
        retired: Vec::new(),
        wanted: BTreeMap::new(),
        visited: HashSet::new(),
        fetched: HashMap::new(),
    };
    report.packs_damaged = plan.members.len() as u64;
    h.salvage(&plan, &mut report, progress)?;
    // 3. What the snapshots need.
    let snaps = repo.snapshots()?;
    h.find_wanted(&snaps)?;
    report.objects_wanted = h.wanted.len() as u64;
    // 4. Fetch, in rounds: a tree received may reveal more that is wanted.
    h.fetch(sources, &mut report, progress)?;
    // 5. Seal the new packs, then one index transaction, then delete the damaged files.
    h.commit(&mut report)?;
    h.describe(&snaps, &mut report);
    if !report.is_complete() {
        // Which snapshots and files are still damaged, as `check` sees them now.
        let after = check(repo, &CheckOptions::default(), &crate::progress::NoProgress)?;
        report.affected = after.affected;
    }
    Ok(report)
}

/// Step 1: fetch the damaged snapshot records `ids` again, each checked against its id.
fn heal_snapshots(
    repo: &Repo,
    ids: &[SnapshotId],
    sources: &mut [&mut dyn ObjectSource],
    report: &mut HealReport,
) -> Result<()> {
    for id in ids {
        let id = *id;
        let mut healed = false;
        for (i, s) in sources.iter_mut().enumerate() {
            if report.sources[i].error.is_some() {
                continue;
            }
            match s.fetch_snapshot(&id) {
                Ok(Some(bytes)) => match Snapshot::decode(&bytes, Some(&id)) {
                    Ok(_) => {
                        repo.save_snapshot_bytes(&id, &bytes)?;
                        report.sources[i].snapshots += 1;
                        report.snapshots_healed.push(id.to_hex());
                        healed = true;
                        break;
                    }
                    Err(e) => {
                        report.sources[i].rejected += 1;
                        report.sources[i].error = Some(format!(
                            "sent a snapshot record that does not match {id}: {e:#}"
                        ));
                    }
                },
                Ok(None) => {}
                Err(e) => report.sources[i].error = Some(format!("{e:#}")),
            }
        }
        if !healed {
            report.snapshots_lost.push(id.to_hex());
        }
    }
    Ok(())
}

/// Whether `id` is damaged or missing (and not salvaged).
fn needs(
    bad: &RefCell<HashSet<ObjectId>>,
    salvaged: &HashSet<ObjectId>,
    reader: &IndexReader,
    id: &ObjectId,
) -> Result<bool> {
    Ok(bad.borrow().contains(id) || (!salvaged.contains(id) && !reader.contains(id)?))
}

/// The state of a heal's execution, from step 2 on.
struct Healer<'a> {
    repo: &'a Repo,
    /// The index as it was when the damaged packs were read.
    reader: IndexReader,
    packer: Packer<'a>,
    /// Objects copied or fetched into new packs, with their location before.
    moved: Vec<(ObjectId, Location)>,
    /// Good objects of damaged packs, copied.
    salvaged: HashSet<ObjectId>,
    /// Objects damaged or missing.
    bad: RefCell<HashSet<ObjectId>>,
    /// Damaged objects of damaged packs, with their location.
    bad_locs: HashMap<ObjectId, Location>,
    /// Damaged packs to retire, with the objects the index locates in them.
    retired: Vec<(u32, PackId, Vec<ObjectId>)>,
    /// Objects the snapshots need that are damaged or missing, with a place they are used.
    wanted: BTreeMap<ObjectId, Place>,
    /// Trees looked at.
    visited: HashSet<ObjectId>,
    /// Objects fetched, with the source (its number) and kind.
    fetched: HashMap<ObjectId, (usize, Kind)>,
}

impl Healer<'_> {
    /// Whether `id` is damaged or missing (and not salvaged).
    fn needs(&self, id: &ObjectId) -> Result<bool> {
        needs(&self.bad, &self.salvaged, &self.reader, id)
    }

    /// Step 2: read each damaged pack once and copy its good objects into new packs.
    fn salvage(
        &mut self,
        plan: &HealPlan<'_>,
        report: &mut HealReport,
        progress: &dyn Progress,
    ) -> Result<()> {
        for (no, objs) in &plan.members {
            let Some(pack) = plan.names.get(no).copied() else {
                continue;
            };
            let data = match self.repo.backend().read(FileKind::Pack, &pack.to_hex()) {
                Ok(d) => Some(d),
                Err(e) if e.kind() == ErrorKind::NotFound => None,
                Err(e) => {
                    // Not damage as far as we know: do not throw anything away.
                    progress.warn(&format!(
                        "pack {} cannot be read ({e:#}): left alone",
                        pack.short(16)
                    ));
                    report.packs_unreadable.push(pack.to_hex());
                    continue;
                }
            };
            let mut objs = objs.clone();
            objs.sort_by_key(|(_, l)| l.entry);
            for (id, loc) in &objs {
                let start = loc.offset as usize;
                let stored = data
                    .as_deref()
                    .and_then(|d| d.get(start..start.checked_add(loc.stored_len as usize)?));
                let good = stored.is_some_and(|b| {
                    self.repo
                        .codec()
                        .verify_object(id, loc.kind, loc.flags, loc.raw_len, b)
                        .is_ok()
                });
                match stored {
                    Some(b) if good => {
                        self.packer.add(*id, loc.kind, loc.flags, loc.raw_len, b)?;
                        self.moved.push((*id, *loc));
                        self.salvaged.insert(*id);
                        self.bad.get_mut().remove(id);
                        report.objects_rewritten += 1;
                    }
                    _ => {
                        self.bad.get_mut().insert(*id);
                        self.bad_locs.insert(*id, *loc);
                    }
                }
            }
            self.retired
                .push((*no, pack, objs.iter().map(|(id, _)| *id).collect()));
        }
        Ok(())
    }

    /// Step 3: walk the snapshots; every object they reach that is damaged or not indexed is
    /// wanted. A damaged tree hides its children.
    fn find_wanted(&mut self, snaps: &[SnapshotEntry]) -> Result<()> {
        for (si, s) in snaps.iter().enumerate() {
            let mut stack: Vec<(ObjectId, Vec<u8>)> = vec![(s.snapshot.root, Vec::new())];
            while let Some((t, path)) = stack.pop() {
                if !self.visited.insert(t) {
                    continue;
                }
                let tree = if self.needs(&t)? {
                    None
                } else {
                    match self.repo.read_tree_with(&self.reader, &t) {
                        Ok(tree) => Some(tree),
                        Err(e)
                            if e.kind() == ErrorKind::Corrupt
                                || e.kind() == ErrorKind::NotFound =>
                        {
                            // Damaged where check did not look (a sampled check): heal it too.
                            if let Some(loc) = self.reader.get_live(&t)? {
                                self.bad_locs.entry(t).or_insert(loc);
                            }
                            self.bad.borrow_mut().insert(t);
                            None
                        }
                        Err(e) => return Err(e),
                    }
                };
                match tree {
                    Some(tree) => {
                        let needs =
                            |id: &ObjectId| needs(&self.bad, &self.salvaged, &self.reader, id);
                        walk_children(&tree, &path, si, &needs, &mut self.wanted, &mut |id, p| {
                            stack.push((id, p))
                        })?
                    }
                    None => {
                        self.wanted.entry(t).or_insert(Place {
                            snapshot: si,
                            path,
                            kind: Kind::Tree,
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// Step 4: ask the sources, in order and in batches, for the wanted objects, until a round
    /// brings nothing new (a tree received may reveal more that is wanted).
    fn fetch(
        &mut self,
        sources: &mut [&mut dyn ObjectSource],
        report: &mut HealReport,
        progress: &dyn Progress,
    ) -> Result<()> {
        let mut asked: Vec<HashSet<ObjectId>> = vec![HashSet::new(); sources.len()];
        progress.set_total(self.wanted.len() as u64, 0);
        loop {
            let mut any = false;
            for (si, s) in sources.iter_mut().enumerate() {
                loop {
                    if report.sources[si].error.is_some() {
                        break;
                    }
                    let ask: Vec<ObjectId> = self
                        .wanted
                        .keys()
                        .filter(|id| !self.fetched.contains_key(id) && !asked[si].contains(id))
                        .take(FETCH_BATCH)
                        .copied()
                        .collect();
                    if ask.is_empty() {
                        break;
                    }
                    any = true;
                    asked[si].extend(ask.iter().copied());
                    report.sources[si].asked += ask.len() as u64;
                    match s.fetch_objects(&ask) {
                        Ok(got) => self.store(si, &ask, got, report, progress)?,
                        Err(e) => {
                            report.sources[si].error = Some(format!("{e:#}"));
                            break;
                        }
                    }
                }
            }
            if !any {
                return Ok(());
            }
        }
    }

    /// Verify and store the objects source `si` sent for `ask`; the first that was not asked
    /// for or does not match its id stops the source being used.
    fn store(
        &mut self,
        si: usize,
        ask: &[ObjectId],
        got: Vec<FetchedObject>,
        report: &mut HealReport,
        progress: &dyn Progress,
    ) -> Result<()> {
        let asked_now: HashSet<ObjectId> = ask.iter().copied().collect();
        let codec = self.repo.codec().clone();
        for o in got {
            if !asked_now.contains(&o.id) || self.fetched.contains_key(&o.id) {
                report.sources[si].rejected += 1;
                report.sources[si].error =
                    Some(format!("sent object {}, which was not asked for", o.id));
                return Ok(());
            }
            // Verify before anything is stored; keep the plaintext of trees.
            let plain = if o.kind == Kind::Tree {
                codec
                    .decode_object(&o.id, o.kind, o.flags, o.raw_len, &o.data)
                    .and_then(|p| {
                        Tree::decode(&p)
                            .map(Some)
                            .map_err(|e| e.context(format!("tree {}", o.id.short(16))))
                    })
            } else {
                codec
                    .verify_object(&o.id, o.kind, o.flags, o.raw_len, &o.data)
                    .map(|_| None)
            };
            let tree = match plain {
                Ok(t) => t,
                Err(e) => {
                    report.sources[si].rejected += 1;
                    report.sources[si].error =
                        Some(format!("sent a damaged copy of {}: {e:#}", o.id));
                    return Ok(());
                }
            };
            self.packer.add(o.id, o.kind, o.flags, o.raw_len, &o.data)?;
            let before = self.bad_locs.get(&o.id).copied();
            if let Some(loc) = before.or(self.reader.get_live(&o.id)?) {
                self.moved.push((o.id, loc));
            }
            self.fetched.insert(o.id, (si, o.kind));
            report.sources[si].objects += 1;
            report.sources[si].bytes += o.data.len() as u64;
            progress.add(1, o.data.len() as u64);
            if let Some(tree) = tree {
                self.look_below(&o.id, &tree)?;
            }
        }
        Ok(())
    }

    /// A wanted tree `id` was received: what it reaches that is damaged or missing is wanted
    /// too, including below subtrees that are present.
    fn look_below(&mut self, id: &ObjectId, tree: &Tree) -> Result<()> {
        let place = self.wanted.get(id).cloned();
        let (snapshot, path) = place.map(|p| (p.snapshot, p.path)).unwrap_or_default();
        let needs = |id: &ObjectId| needs(&self.bad, &self.salvaged, &self.reader, id);
        let mut stack = Vec::new();
        walk_children(
            tree,
            &path,
            snapshot,
            &needs,
            &mut self.wanted,
            &mut |id, p| stack.push((id, p)),
        )?;
        // Subtrees present here may still hide damage below them.
        while let Some((t, p)) = stack.pop() {
            if !self.visited.insert(t) {
                continue;
            }
            match self.repo.read_tree_with(&self.reader, &t) {
                Ok(sub) => walk_children(
                    &sub,
                    &p,
                    snapshot,
                    &needs,
                    &mut self.wanted,
                    &mut |id, q| stack.push((id, q)),
                )?,
                Err(_) => {
                    self.wanted.entry(t).or_insert(Place {
                        snapshot,
                        path: p,
                        kind: Kind::Tree,
                    });
                }
            }
        }
        Ok(())
    }

    /// Step 5: seal the new packs, then one index transaction, then delete the damaged files.
    fn commit(&mut self, report: &mut HealReport) -> Result<()> {
        let new_packs = self.packer.finish()?;
        report.packs_written = new_packs.len() as u64;
        let mut dropped: Vec<(ObjectId, Location)> = Vec::new();
        for (id, loc) in &self.bad_locs {
            if !self.fetched.contains_key(id) {
                dropped.push((*id, *loc));
                if !self.wanted.contains_key(id) {
                    report.objects_unreferenced_dropped += 1;
                }
            }
        }
        let retire: Vec<(u32, Vec<ObjectId>)> = self
            .retired
            .iter()
            .map(|(no, _, m)| (*no, m.clone()))
            .collect();
        if !new_packs.is_empty() || !retire.is_empty() || !dropped.is_empty() {
            self.repo
                .index()
                .retire_packs(&new_packs, &self.moved, &dropped, &retire)?;
        }
        for (_, pack, _) in &self.retired {
            self.repo.backend().remove(FileKind::Pack, &pack.to_hex())?;
        }
        report.packs_retired = self.retired.len() as u64;
        Ok(())
    }

    /// The objects healed, and those no source could supply with the first place they are
    /// used, into `report`.
    fn describe(&self, snaps: &[SnapshotEntry], report: &mut HealReport) {
        for (id, (si, kind)) in &self.fetched {
            report.healed.push(HealedObject {
                id: id.to_hex(),
                kind: kind_name(*kind),
                from: report.sources[*si].name.clone(),
            });
        }
        report.healed.sort_by(|a, b| a.id.cmp(&b.id));
        for (id, place) in &self.wanted {
            if self.fetched.contains_key(id) {
                continue;
            }
            let s = snaps.get(place.snapshot);
            report.lost.push(LostObject {
                id: id.to_hex(),
                kind: kind_name(place.kind),
                snapshot: s.map(|s| s.id.to_hex()).unwrap_or_default(),
                space: s.map(|s| s.snapshot.space.clone()).unwrap_or_default(),
                path: if place.path.is_empty() {
                    "/".to_string()
                } else {
                    String::from_utf8_lossy(&place.path).into_owned()
                },
            });
        }
    }
}

fn kind_name(k: Kind) -> String {
    match k {
        Kind::Data => "data".into(),
        Kind::Tree => "tree".into(),
    }
}

/// Look at the entries of `tree` (at `path` in snapshot number `snapshot`): wanted chunks and
/// subtrees are recorded; subtrees present are handed to `descend`.
fn walk_children(
    tree: &Tree,
    path: &[u8],
    snapshot: usize,
    needs: &dyn Fn(&ObjectId) -> Result<bool>,
    wanted: &mut BTreeMap<ObjectId, Place>,
    descend: &mut dyn FnMut(ObjectId, Vec<u8>),
) -> Result<()> {
    for e in &tree.entries {
        let mut p = path.to_vec();
        if !p.is_empty() {
            p.push(b'/');
        }
        p.extend_from_slice(&e.name);
        match &e.node {
            Node::File { chunks, .. } => {
                for c in chunks {
                    if needs(c)? {
                        wanted.entry(*c).or_insert_with(|| Place {
                            snapshot,
                            path: p.clone(),
                            kind: Kind::Data,
                        });
                    }
                }
            }
            Node::Dir { tree } => {
                if needs(tree)? {
                    wanted.entry(*tree).or_insert(Place {
                        snapshot,
                        path: p,
                        kind: Kind::Tree,
                    });
                } else {
                    descend(*tree, p);
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
    Ok(())
}

/// The error for a heal asked with no source.
pub fn no_source() -> Error {
    Error::invalid("nothing to heal from: name at least one peer (`puce repair --from PEER`)")
}

/// Which of `ids` are reachable from a snapshot of a space `may_read` accepts: the check a node
/// makes before serving objects asked for by id alone (a peer's heal). Walks the trees of
/// those snapshots, each once, and stops as soon as every id is found; trees it cannot read
/// are skipped (their objects are then not served).
pub fn find_reachable(
    repo: &Repo,
    may_read: &dyn Fn(&str) -> bool,
    ids: &[ObjectId],
) -> Result<HashSet<ObjectId>> {
    let mut left: HashSet<ObjectId> = ids.iter().copied().collect();
    let mut found = HashSet::new();
    if left.is_empty() {
        return Ok(found);
    }
    let reader = repo.index().reader()?;
    let mut visited: HashSet<ObjectId> = HashSet::new();
    // Newest first: damage is most often asked about in recent data.
    let snaps = repo.snapshots()?;
    for s in snaps.iter().rev() {
        if !may_read(&s.snapshot.space) {
            continue;
        }
        let mut stack = vec![s.snapshot.root];
        while let Some(t) = stack.pop() {
            if !visited.insert(t) {
                continue;
            }
            if left.remove(&t) {
                found.insert(t);
            }
            let Ok(tree) = repo.read_tree_with(&reader, &t) else {
                continue;
            };
            for e in &tree.entries {
                match &e.node {
                    Node::File { chunks, .. } => {
                        for c in chunks {
                            if left.remove(c) {
                                found.insert(*c);
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
            if left.is_empty() {
                return Ok(found);
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::progress::NoProgress;
    use crate::repo::InitOptions;
    use crate::snapshot::{SnapshotOptions, snapshot};
    use crate::testkit::{RepoSource, check_data, noise};

    #[test]
    fn deleted_packs_heal_from_another_repository_and_a_lying_source_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(src.join("sub/deeper")).unwrap();
        std::fs::write(src.join("a.bin"), noise(400_000, 1)).unwrap();
        std::fs::write(src.join("sub/b.txt"), b"hello").unwrap();
        std::fs::write(src.join("sub/deeper/c.bin"), noise(90_000, 2)).unwrap();
        let opts = SnapshotOptions {
            space: Some("docs".into()),
            host: Some("h".into()),
            time_ns: Some(1),
            threads: 1,
            ..SnapshotOptions::default()
        };
        let a = Arc::new(Repo::init(&dir.path().join("a"), &InitOptions::default()).unwrap());
        let b = Arc::new(Repo::init(&dir.path().join("b"), &InitOptions::default()).unwrap());
        snapshot(&a, &src, &opts, &NoProgress).unwrap();
        snapshot(&b, &src, &opts, &NoProgress).unwrap();
        // b loses every pack: chunks and trees.
        for (_, p) in b.index().packs().unwrap() {
            b.backend().remove(FileKind::Pack, &p.id.to_hex()).unwrap();
        }
        let damage = check_data(&b);
        assert!(!damage.is_ok());
        let mut liar = RepoSource {
            name: "liar".into(),
            repo: a.clone(),
            tamper: true,
        };
        let mut good = RepoSource {
            name: "good".into(),
            repo: a.clone(),
            tamper: false,
        };
        let r = heal(&b, &damage, &mut [&mut liar, &mut good], &NoProgress).unwrap();
        assert!(r.is_complete(), "{r:?}");
        assert_eq!(r.sources[0].rejected, 1, "{r:?}");
        assert!(r.sources[0].error.is_some());
        // Root tree, two subtrees, and every chunk: found level by level.
        assert!(
            r.healed.iter().filter(|h| h.kind == "tree").count() >= 3,
            "{r:?}"
        );
        assert_eq!(r.sources[1].objects as usize, r.healed.len());
        assert!(r.healed.iter().all(|h| h.from == "good"));
        assert!(check_data(&b).is_ok());
        // Nothing left to heal.
        let again = heal(&b, &check_data(&b), &mut [&mut good], &NoProgress).unwrap();
        assert!(again.healed.is_empty() && again.is_complete());
    }

    #[test]
    fn what_no_source_has_is_reported_with_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("shared.bin"), noise(100_000, 3)).unwrap();
        let opts = SnapshotOptions {
            space: Some("docs".into()),
            threads: 1,
            ..SnapshotOptions::default()
        };
        let a = Arc::new(Repo::init(&dir.path().join("a"), &InitOptions::default()).unwrap());
        let b = Arc::new(Repo::init(&dir.path().join("b"), &InitOptions::default()).unwrap());
        snapshot(&a, &src, &opts, &NoProgress).unwrap();
        std::fs::write(src.join("mine.bin"), noise(50_000, 4)).unwrap();
        snapshot(&b, &src, &opts, &NoProgress).unwrap();
        for (_, p) in b.index().packs().unwrap() {
            b.backend().remove(FileKind::Pack, &p.id.to_hex()).unwrap();
        }
        let damage = check_data(&b);
        let mut good = RepoSource {
            name: "a".into(),
            repo: a.clone(),
            tamper: false,
        };
        let r = heal(&b, &damage, &mut [&mut good], &NoProgress).unwrap();
        assert!(!r.is_complete());
        // The root tree differs (b has mine.bin): lost, so nothing below it can be looked at.
        assert_eq!(r.lost.len(), 1, "{r:?}");
        assert_eq!(
            (r.lost[0].kind.as_str(), r.lost[0].path.as_str()),
            ("tree", "/")
        );
        assert_eq!(r.affected.len(), 1);
        // The damaged pack is gone from the index and the disk: check reports only missing data.
        let after = check_data(&b);
        assert!(
            after.problems.iter().all(|p| p.kind == "missing_object"),
            "{:?}",
            after.problems
        );
    }
}
