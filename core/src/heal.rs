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
//! This module does no network I/O: sources implement [`ObjectSource`].

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde::Serialize;

use crate::backend::FileKind;
use crate::check::{Affected, CheckOptions, CheckReport, check};
use crate::error::{Error, ErrorKind, Result};
use crate::format::pack::{Kind, Record};
use crate::format::snapshot::Snapshot;
use crate::format::tree::{Node, Tree};
use crate::hash::{ObjectId, PackId, SnapshotId};
use crate::index::Location;
use crate::pack::PackWriter;
use crate::progress::Progress;
use crate::repo::{Repo, decode_object, verify_object};

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
            None => self
                .writer
                .insert(PackWriter::new(self.repo.backend().as_ref())?),
        };
        w.add(id, kind, flags, raw_len, data)?;
        if w.len() >= self.repo.config().pack_target_size
            && let Some(w) = self.writer.take()
        {
            self.sealed.push(w.finish()?);
        }
        Ok(())
    }

    fn finish(mut self) -> Result<Vec<(PackId, u64, Vec<Record>)>> {
        if let Some(w) = self.writer.take() {
            if w.is_empty() {
                w.abort();
            } else {
                self.sealed.push(w.finish()?);
            }
        }
        Ok(self.sealed)
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

/// Heal what `damage` (a check of `repo`, usually with `read_data`) found, from `sources`,
/// asked in order. Holds the repository's gc lock throughout.
pub fn heal(
    repo: &Repo,
    damage: &CheckReport,
    sources: &mut [&mut dyn ObjectSource],
    progress: &dyn Progress,
) -> Result<HealReport> {
    let _lock = crate::gc::gc_lock(repo)?;
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
    for id in bad_snapshots(damage) {
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

    // 2. Damaged packs: copy their good objects.
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
    let mut bad: HashSet<ObjectId> = damage.bad_objects.iter().copied().collect();
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
    report.packs_damaged = members.len() as u64;
    let mut packer = Packer {
        repo,
        writer: None,
        sealed: Vec::new(),
    };
    // Objects copied or fetched into new packs, with their location before.
    let mut moved: Vec<(ObjectId, Location)> = Vec::new();
    let mut salvaged: HashSet<ObjectId> = HashSet::new();
    // Damaged objects of damaged packs, with their location.
    let mut bad_locs: HashMap<ObjectId, Location> = HashMap::new();
    let mut retired: Vec<(u32, PackId, Vec<ObjectId>)> = Vec::new();
    for (no, objs) in &members {
        let Some(pack) = names.get(no).copied() else {
            continue;
        };
        let data = match repo.backend().read(FileKind::Pack, &pack.to_hex()) {
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
            let good = stored.is_some_and(|b| verify_object(id, loc.flags, loc.raw_len, b).is_ok());
            match stored {
                Some(b) if good => {
                    packer.add(*id, loc.kind, loc.flags, loc.raw_len, b)?;
                    moved.push((*id, *loc));
                    salvaged.insert(*id);
                    bad.remove(id);
                    report.objects_rewritten += 1;
                }
                _ => {
                    bad.insert(*id);
                    bad_locs.insert(*id, *loc);
                }
            }
        }
        retired.push((*no, pack, objs.iter().map(|(id, _)| *id).collect()));
    }

    // 3. What the snapshots need.
    let snaps = repo.snapshots()?;
    let bad = RefCell::new(bad);
    let needs = |id: &ObjectId| -> Result<bool> {
        Ok(bad.borrow().contains(id) || (!salvaged.contains(id) && !reader.contains(id)?))
    };
    let mut wanted: BTreeMap<ObjectId, Place> = BTreeMap::new();
    let mut visited: HashSet<ObjectId> = HashSet::new();
    for (si, s) in snaps.iter().enumerate() {
        let mut stack: Vec<(ObjectId, Vec<u8>)> = vec![(s.snapshot.root, Vec::new())];
        while let Some((t, path)) = stack.pop() {
            if !visited.insert(t) {
                continue;
            }
            let tree = if needs(&t)? {
                None
            } else {
                match repo.read_tree_with(&reader, &t) {
                    Ok(tree) => Some(tree),
                    Err(e) if e.kind() == ErrorKind::Corrupt || e.kind() == ErrorKind::NotFound => {
                        // Damaged where check did not look (a sampled check): heal it too.
                        if let Some(loc) = reader.get_live(&t)? {
                            bad_locs.entry(t).or_insert(loc);
                        }
                        bad.borrow_mut().insert(t);
                        None
                    }
                    Err(e) => return Err(e),
                }
            };
            match tree {
                Some(tree) => {
                    walk_children(&tree, &path, si, &needs, &mut wanted, &mut |id, p| {
                        stack.push((id, p))
                    })?
                }
                None => {
                    wanted.entry(t).or_insert(Place {
                        snapshot: si,
                        path,
                        kind: Kind::Tree,
                    });
                }
            }
        }
    }
    report.objects_wanted = wanted.len() as u64;

    // 4. Fetch, in rounds: a tree received may reveal more that is wanted.
    let mut fetched: HashMap<ObjectId, (usize, Kind)> = HashMap::new();
    let mut asked: Vec<HashSet<ObjectId>> = vec![HashSet::new(); sources.len()];
    progress.set_total(wanted.len() as u64, 0);
    loop {
        let mut any = false;
        for (si, s) in sources.iter_mut().enumerate() {
            loop {
                if report.sources[si].error.is_some() {
                    break;
                }
                let ask: Vec<ObjectId> = wanted
                    .keys()
                    .filter(|id| !fetched.contains_key(id) && !asked[si].contains(id))
                    .take(FETCH_BATCH)
                    .copied()
                    .collect();
                if ask.is_empty() {
                    break;
                }
                any = true;
                asked[si].extend(ask.iter().copied());
                report.sources[si].asked += ask.len() as u64;
                let got = match s.fetch_objects(&ask) {
                    Ok(g) => g,
                    Err(e) => {
                        report.sources[si].error = Some(format!("{e:#}"));
                        break;
                    }
                };
                let asked_now: HashSet<ObjectId> = ask.iter().copied().collect();
                for o in got {
                    if !asked_now.contains(&o.id) || fetched.contains_key(&o.id) {
                        report.sources[si].rejected += 1;
                        report.sources[si].error =
                            Some(format!("sent object {}, which was not asked for", o.id));
                        break;
                    }
                    // Verify before anything is stored; keep the plaintext of trees.
                    let plain = if o.kind == Kind::Tree {
                        decode_object(&o.id, o.flags, o.raw_len, &o.data).and_then(|p| {
                            Tree::decode(&p)
                                .map(Some)
                                .map_err(|e| e.context(format!("tree {}", o.id.short(16))))
                        })
                    } else {
                        verify_object(&o.id, o.flags, o.raw_len, &o.data).map(|_| None)
                    };
                    let tree = match plain {
                        Ok(t) => t,
                        Err(e) => {
                            report.sources[si].rejected += 1;
                            report.sources[si].error =
                                Some(format!("sent a damaged copy of {}: {e:#}", o.id));
                            break;
                        }
                    };
                    packer.add(o.id, o.kind, o.flags, o.raw_len, &o.data)?;
                    if let Some(loc) = bad_locs.get(&o.id).copied().or(reader.get_live(&o.id)?) {
                        moved.push((o.id, loc));
                    }
                    fetched.insert(o.id, (si, o.kind));
                    report.sources[si].objects += 1;
                    report.sources[si].bytes += o.data.len() as u64;
                    progress.add(1, o.data.len() as u64);
                    if let Some(tree) = tree {
                        let place = wanted.get(&o.id).cloned();
                        let (snapshot, path) =
                            place.map(|p| (p.snapshot, p.path)).unwrap_or_default();
                        let mut subdirs = Vec::new();
                        walk_children(
                            &tree,
                            &path,
                            snapshot,
                            &needs,
                            &mut wanted,
                            &mut |id, p| subdirs.push((id, p)),
                        )?;
                        // Subtrees present here may still hide damage below them.
                        let mut stack = subdirs;
                        while let Some((t, p)) = stack.pop() {
                            if !visited.insert(t) {
                                continue;
                            }
                            match repo.read_tree_with(&reader, &t) {
                                Ok(sub) => walk_children(
                                    &sub,
                                    &p,
                                    snapshot,
                                    &needs,
                                    &mut wanted,
                                    &mut |id, q| stack.push((id, q)),
                                )?,
                                Err(_) => {
                                    wanted.entry(t).or_insert(Place {
                                        snapshot,
                                        path: p,
                                        kind: Kind::Tree,
                                    });
                                }
                            }
                        }
                    }
                }
            }
        }
        if !any {
            break;
        }
    }

    // 5. Seal the new packs, then one index transaction, then delete the damaged files.
    let new_packs = packer.finish()?;
    report.packs_written = new_packs.len() as u64;
    let mut dropped: Vec<(ObjectId, Location)> = Vec::new();
    for (id, loc) in &bad_locs {
        if !fetched.contains_key(id) {
            dropped.push((*id, *loc));
            if !wanted.contains_key(id) {
                report.objects_unreferenced_dropped += 1;
            }
        }
    }
    let retire: Vec<(u32, Vec<ObjectId>)> =
        retired.iter().map(|(no, _, m)| (*no, m.clone())).collect();
    if !new_packs.is_empty() || !retire.is_empty() || !dropped.is_empty() {
        repo.index()
            .retire_packs(&new_packs, &moved, &dropped, &retire)?;
    }
    for (_, pack, _) in &retired {
        repo.backend().remove(FileKind::Pack, &pack.to_hex())?;
    }
    report.packs_retired = retired.len() as u64;

    for (id, (si, kind)) in &fetched {
        report.healed.push(HealedObject {
            id: id.to_hex(),
            kind: kind_name(*kind),
            from: report.sources[*si].name.clone(),
        });
    }
    report.healed.sort_by(|a, b| a.id.cmp(&b.id));
    for (id, place) in &wanted {
        if fetched.contains_key(id) {
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
    if !report.is_complete() {
        // Which snapshots and files are still damaged, as `check` sees them now.
        let after = check(repo, &CheckOptions::default(), &crate::progress::NoProgress)?;
        report.affected = after.affected;
    }
    Ok(report)
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
            Node::Symlink { .. } => {}
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
                    Node::Symlink { .. } => {}
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

    /// Another repository as a source; with `tamper`, every object it sends is damaged.
    struct RepoSource {
        name: String,
        repo: Arc<Repo>,
        tamper: bool,
    }

    impl ObjectSource for RepoSource {
        fn name(&self) -> &str {
            &self.name
        }
        fn fetch_objects(&mut self, ids: &[ObjectId]) -> Result<Vec<FetchedObject>> {
            let reader = self.repo.index().reader()?;
            let mut out = Vec::new();
            for id in ids {
                let Some(loc) = reader.get(id)? else { continue };
                let mut data = self.repo.read_stored(&reader, &loc)?;
                if self.tamper
                    && let Some(b) = data.last_mut()
                {
                    *b ^= 1;
                }
                out.push(FetchedObject {
                    id: *id,
                    kind: loc.kind,
                    flags: loc.flags,
                    raw_len: loc.raw_len,
                    data,
                });
            }
            Ok(out)
        }
        fn fetch_snapshot(&mut self, id: &SnapshotId) -> Result<Option<Vec<u8>>> {
            Ok(self
                .repo
                .backend()
                .read(FileKind::Snapshot, &id.to_hex())
                .ok())
        }
    }

    fn noise(len: usize, mut s: u64) -> Vec<u8> {
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                s as u8
            })
            .collect()
    }

    fn check_data(repo: &Repo) -> CheckReport {
        let opts = CheckOptions {
            read_data: true,
            threads: 1,
            sample: None,
        };
        check(repo, &opts, &NoProgress).unwrap()
    }

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
