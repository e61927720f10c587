//! `puce check`: verify the repository's structure and, optionally, every byte of data.
//!
//! Structure: every snapshot file decodes and matches its id; every indexed pack exists and its
//! trailer agrees with the index; every tree reachable from a snapshot decodes; every chunk a
//! file names is indexed. With `read_data`, every pack is read in full and every object in it is
//! decompressed and re-hashed. Problems are attributed to the snapshots and files they damage.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use serde::Serialize;

use crate::backend::FileKind;
use crate::error::{Error, Result};
use crate::format::pack;
use crate::format::snapshot::Snapshot;
use crate::format::tree::{MAX_TREE_DEPTH, Node, too_deep};
use crate::hash::{Hash, ObjectId, PackId, SnapshotId};
use crate::index::IndexReader;
use crate::pack::codec::Codec;
use crate::pack::read_pack_records;
use crate::paths::{join, path_depth};
use crate::progress::Progress;
use crate::repo::Repo;

/// Options of a check.
#[derive(Debug, Clone, Default)]
pub struct CheckOptions {
    /// Read and verify every object in every pack.
    pub read_data: bool,
    /// Threads for reading data; default: the number of CPUs.
    pub threads: usize,
    /// With `read_data`: read only this share (0 < x <= 1) of the packs, continuing where the
    /// previous sampled check stopped, so that repeated runs cover everything.
    pub sample: Option<f64>,
}

/// One problem found.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Problem {
    /// Machine-readable class: `bad_config`, `config_healed` (the config was damaged and has
    /// been restored from the index's copy), `bad_snapshot`, `missing_pack`, `corrupt_pack`,
    /// `index_mismatch`, `unindexed_pack`, `missing_object`, `corrupt_object`, `bad_tree`, `too_deep` (directories nested
    /// deeper than [`MAX_TREE_DEPTH`]).
    pub kind: String,
    /// What is wrong, for people.
    pub detail: String,
    /// The object concerned, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    /// The pack concerned, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pack: Option<String>,
    /// The snapshot record concerned, if any (`bad_snapshot`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
}

/// A snapshot damaged by the problems found.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Affected {
    /// Snapshot id.
    pub id: String,
    /// Its space.
    pub space: String,
    /// Its time, nanoseconds.
    pub time_ns: i64,
    /// Damaged paths (the first 50).
    pub paths: Vec<String>,
    /// Number of damaged paths.
    pub damaged_paths: u64,
}

/// The result of a check.
#[derive(Debug, Clone, Serialize, Default)]
pub struct CheckReport {
    /// Snapshots checked.
    pub snapshots: u64,
    /// Packs listed in the index.
    pub packs: u64,
    /// Objects in the index.
    pub objects: u64,
    /// Distinct trees reached from snapshots.
    pub trees: u64,
    /// Whether data was read.
    pub read_data: bool,
    /// Bytes of pack data read.
    pub bytes_read: u64,
    /// Packs whose data was read (all of them unless sampling).
    pub packs_read: u64,
    /// With sampling: the share asked for, and where the rotation stands after this run
    /// (the share of all packs, in id order, that the rotation has now passed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sample: Option<f64>,
    /// With sampling: position of the rotation after this run, 0..1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sample_position: Option<f64>,
    /// Problems found.
    pub problems: Vec<Problem>,
    /// Snapshots that lost data.
    pub affected: Vec<Affected>,
    /// Object ids found missing or corrupt (hex).
    #[serde(skip)]
    pub bad_objects: Vec<ObjectId>,
}

impl CheckReport {
    /// Whether nothing is wrong.
    pub fn is_ok(&self) -> bool {
        self.problems.iter().all(|p| p.kind == "unindexed_pack")
    }

    fn problem(
        &mut self,
        kind: &str,
        detail: String,
        object: Option<ObjectId>,
        pack: Option<PackId>,
    ) {
        self.problems.push(Problem {
            kind: kind.to_string(),
            detail,
            object: object.map(|o| o.to_hex()),
            pack: pack.map(|p| p.to_hex()),
            snapshot: None,
        });
    }
}

/// Check the repository.
pub fn check(repo: &Repo, opts: &CheckOptions, progress: &dyn Progress) -> Result<CheckReport> {
    let mut report = CheckReport {
        read_data: opts.read_data,
        ..CheckReport::default()
    };
    let mut bad: HashSet<ObjectId> = HashSet::new();
    // 0. The config, 1. the snapshot files, 2. the packs against the index.
    check_config(repo, &mut report);
    let snaps = check_snapshot_files(repo, &mut report)?;
    let reader = repo.index().reader()?;
    let good_packs = check_packs(repo, &reader, progress, &mut report, &mut bad)?;

    // 3. Read every object (or a rotating sample of the packs).
    if opts.read_data {
        let chosen = match opts.sample {
            None => good_packs.clone(),
            Some(share) => {
                let (chosen, position) = sample_packs(repo, &good_packs, share)?;
                report.sample = Some(share);
                report.sample_position = Some(position);
                chosen
            }
        };
        report.packs_read = chosen.len() as u64;
        let corrupt = read_all_data(repo, &chosen, opts, progress, &mut report)?;
        bad.extend(corrupt);
        // What this node holds blind for others, against the manifests their owners signed.
        for p in crate::blind::verify_all(repo.root())? {
            report.problem("held_file", p, None, None);
        }
    }

    // 4. Walk every snapshot's trees.
    let mut memo: HashMap<ObjectId, bool> = HashMap::new();
    let mut walk_problems = Vec::new();
    for (_, s) in &snaps {
        tree_clean(
            repo,
            &reader,
            s.root,
            0,
            &bad,
            &mut memo,
            &mut walk_problems,
        )?;
    }
    report.trees = memo.len() as u64;
    for (kind, detail, obj) in walk_problems {
        if let Some(o) = obj {
            bad.insert(o);
        }
        report.problem(&kind, detail, obj, None);
    }

    // 5. Attribute damage to snapshots and paths.
    for (id, s) in &snaps {
        if memo.get(&s.root) == Some(&true) {
            continue;
        }
        let mut paths = Vec::new();
        let mut count = 0u64;
        damaged_paths(
            repo, &reader, s.root, b"", &bad, &memo, &mut paths, &mut count,
        )?;
        report.affected.push(Affected {
            id: id.to_hex(),
            space: s.space.clone(),
            time_ns: s.time_ns,
            paths,
            damaged_paths: count,
        });
    }
    let mut bad: Vec<ObjectId> = bad.into_iter().collect();
    bad.sort();
    report.bad_objects = bad;
    Ok(report)
}

/// Step 0: the config, as opening the repository restored it and as the file is now.
fn check_config(repo: &Repo, report: &mut CheckReport) {
    for note in repo.healed() {
        report.problem("config_healed", note.clone(), None, None);
    }
    match repo.heal_config() {
        Ok(None) => {}
        Ok(Some(note)) => report.problem("config_healed", note, None, None),
        Err(e) => report.problem(
            "bad_config",
            format!("the repository config is damaged and could not be restored: {e:#}"),
            None,
            None,
        ),
    }
}

/// Step 1: every snapshot file decodes and is named by its id; the good ones.
fn check_snapshot_files(
    repo: &Repo,
    report: &mut CheckReport,
) -> Result<Vec<(SnapshotId, Snapshot)>> {
    let mut snaps: Vec<(SnapshotId, Snapshot)> = Vec::new();
    for (name, _) in repo.backend().list(FileKind::Snapshot)? {
        let id = match SnapshotId::from_hex(&name) {
            Ok(id) => id,
            Err(_) => {
                report.problem(
                    "bad_snapshot",
                    format!("snapshots/{name} is not named by an id"),
                    None,
                    None,
                );
                continue;
            }
        };
        match repo
            .backend()
            .read(FileKind::Snapshot, &name)
            .and_then(|b| Snapshot::decode(&b, Some(&id)))
        {
            Ok(s) => snaps.push((id, s)),
            Err(e) => {
                report.problem("bad_snapshot", format!("snapshot {id}: {e:#}"), None, None);
                if let Some(p) = report.problems.last_mut() {
                    p.snapshot = Some(id.to_hex());
                }
            }
        }
    }
    report.snapshots = snaps.len() as u64;

    Ok(snaps)
}

/// Step 2: the packs against the index (each listed, of the indexed size, with a trailer that
/// agrees with the index entries); objects whose pack is missing or damaged go to `bad`.
/// Returns the packs whose trailer reads.
fn check_packs(
    repo: &Repo,
    reader: &IndexReader,
    progress: &dyn Progress,
    report: &mut CheckReport,
    bad: &mut HashSet<ObjectId>,
) -> Result<Vec<(u32, PackId)>> {
    let indexed = repo.index().packs()?;
    report.packs = indexed.len() as u64;
    report.objects = repo.index().object_count()?;
    let listed: HashMap<String, u64> = repo.backend().list(FileKind::Pack)?.into_iter().collect();
    let mut indexed_names = HashSet::new();
    let mut good_packs: Vec<(u32, PackId)> = Vec::new();
    let mut consistent = 0u64;
    progress.set_total(0, indexed.iter().map(|(_, p)| p.size).sum());
    for (no, info) in &indexed {
        let name = info.id.to_hex();
        indexed_names.insert(name.clone());
        match listed.get(&name) {
            None => {
                report.problem(
                    "missing_pack",
                    format!("pack {name} is in the index but not in the repository"),
                    None,
                    Some(info.id),
                );
                continue;
            }
            Some(size) if *size != info.size => {
                report.problem(
                    "corrupt_pack",
                    format!("pack {name} has {size} bytes, the index says {}", info.size),
                    None,
                    Some(info.id),
                );
            }
            _ => {}
        }
        match read_pack_records(repo.backend().as_ref(), &info.id, repo.codec()) {
            Ok((_, records)) => {
                good_packs.push((*no, info.id));
                for (i, r) in records.iter().enumerate() {
                    if let Some(loc) = reader.get(&r.id)?
                        && loc.pack == *no
                    {
                        if loc.entry as usize == i
                            && loc.offset == r.offset
                            && loc.stored_len == r.stored_len
                            && loc.raw_len == r.raw_len
                        {
                            consistent += 1;
                        } else {
                            report.problem(
                                "index_mismatch",
                                format!("the index entry of {} disagrees with pack {name}", r.id),
                                Some(r.id),
                                Some(info.id),
                            );
                        }
                    }
                }
            }
            Err(e) => report.problem(
                "corrupt_pack",
                format!("pack {name}: {e:#}"),
                None,
                Some(info.id),
            ),
        }
    }
    for name in listed.keys() {
        if !indexed_names.contains(name) {
            report.problem(
                "unindexed_pack",
                format!("pack {name} is not in the index (an interrupted write, or run `puce repair index`)"),
                None,
                PackId::from_hex(name).ok(),
            );
        }
    }
    if consistent != report.objects {
        // Some index entries point at packs that are missing or damaged: name them.
        let good: HashSet<u32> = good_packs.iter().map(|(n, _)| *n).collect();
        let mut dangling = Vec::new();
        repo.index().for_each_object(|id, loc| {
            if !good.contains(&loc.pack) {
                dangling.push(id);
            }
            Ok(())
        })?;
        for id in dangling {
            bad.insert(id);
        }
    }

    Ok(good_packs)
}

/// The meta key holding the sampled check's rotation: the first 8 bytes of the last pack id read.
const SAMPLE_CURSOR: &str = "check_sample_cursor";

/// Choose `share` of the packs, in id order, starting after the stored cursor; advance it.
fn sample_packs(
    repo: &Repo,
    packs: &[(u32, PackId)],
    share: f64,
) -> Result<(Vec<(u32, PackId)>, f64)> {
    if !(share > 0.0 && share <= 1.0) {
        return Err(Error::invalid(
            "the sample share must be above 0% and at most 100%",
        ));
    }
    let mut sorted: Vec<(u32, PackId)> = packs.to_vec();
    sorted.sort_by_key(|(_, id)| *id);
    if sorted.is_empty() {
        // Nothing to read: the rotation is complete.
        return Ok((Vec::new(), 1.0));
    }
    let key = |id: &PackId| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&id.as_bytes()[..8]);
        u64::from_be_bytes(b)
    };
    let cursor = repo.index().meta(SAMPLE_CURSOR)?.unwrap_or(0);
    let keys: Vec<u64> = sorted.iter().map(|(_, id)| key(id)).collect();
    let (range, next, position) = rotation_step(&keys, cursor, share);
    repo.index().set_meta(SAMPLE_CURSOR, next)?;
    Ok((sorted[range].to_vec(), position))
}

/// One run of the sampled check's rotation over `keys` (sorted, not empty), after `cursor`:
/// the packs to read, the next cursor and how far through the rotation the run ends (1.0: a
/// rotation is complete, the next run starts again from the lowest key). A run stops at the
/// end of the rotation, so one rotation reads every pack exactly once.
fn rotation_step(keys: &[u64], cursor: u64, share: f64) -> (std::ops::Range<usize>, u64, f64) {
    let len = keys.len();
    let start = keys.iter().position(|k| *k > cursor).unwrap_or(0);
    let n = ((len as f64 * share).ceil() as usize).clamp(1, len);
    let end = (start + n).min(len);
    let next = if end == len { 0 } else { keys[end - 1] };
    (start..end, next, end as f64 / len as f64)
}

/// Whether the tree `id`, `depth` levels below a snapshot's root, and everything below it is
/// present and sound (memoised). A tree deeper than [`MAX_TREE_DEPTH`] is damage: it is not
/// read, so that the walk stays bounded.
fn tree_clean(
    repo: &Repo,
    reader: &IndexReader,
    id: ObjectId,
    depth: usize,
    bad: &HashSet<ObjectId>,
    memo: &mut HashMap<ObjectId, bool>,
    problems: &mut Vec<(String, String, Option<ObjectId>)>,
) -> Result<bool> {
    if let Some(c) = memo.get(&id) {
        return Ok(*c);
    }
    if depth > MAX_TREE_DEPTH {
        problems.push((
            "too_deep".to_string(),
            format!("{:#}", too_deep(format!("tree {id}"))),
            None,
        ));
        memo.insert(id, false);
        return Ok(false);
    }
    if bad.contains(&id) {
        memo.insert(id, false);
        return Ok(false);
    }
    let tree = match repo.read_tree_with(reader, &id) {
        Ok(t) => t,
        Err(e) => {
            let kind = if e.kind() == crate::ErrorKind::NotFound {
                "missing_object"
            } else {
                "bad_tree"
            };
            problems.push((kind.to_string(), format!("tree {id}: {e:#}"), Some(id)));
            memo.insert(id, false);
            return Ok(false);
        }
    };
    let mut clean = true;
    for e in &tree.entries {
        match &e.node {
            Node::File { chunks, .. } => {
                for c in chunks {
                    if bad.contains(c) {
                        clean = false;
                    } else if !reader.contains(c)? {
                        problems.push((
                            "missing_object".to_string(),
                            format!(
                                "chunk {c} of '{}' is not in the index",
                                String::from_utf8_lossy(&e.name)
                            ),
                            Some(*c),
                        ));
                        clean = false;
                    }
                }
            }
            Node::Dir { tree } => {
                if !tree_clean(repo, reader, *tree, depth + 1, bad, memo, problems)? {
                    clean = false;
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
    memo.insert(id, clean);
    Ok(clean)
}

#[allow(clippy::too_many_arguments)]
fn damaged_paths(
    repo: &Repo,
    reader: &IndexReader,
    id: ObjectId,
    prefix: &[u8],
    bad: &HashSet<ObjectId>,
    memo: &HashMap<ObjectId, bool>,
    out: &mut Vec<String>,
    count: &mut u64,
) -> Result<()> {
    fn push(p: &[u8], out: &mut Vec<String>, count: &mut u64) {
        *count += 1;
        if out.len() < 50 {
            out.push(String::from_utf8_lossy(p).into_owned());
        }
    }
    let tree = match repo.read_tree_with(reader, &id) {
        Ok(t) if path_depth(prefix) <= MAX_TREE_DEPTH => t,
        _ => {
            let p = if prefix.is_empty() {
                b"/".as_slice()
            } else {
                prefix
            };
            push(p, out, count);
            return Ok(());
        }
    };
    for e in &tree.entries {
        let p = join(prefix, &e.name);
        match &e.node {
            Node::File { chunks, .. } => {
                if chunks
                    .iter()
                    .any(|c| bad.contains(c) || !reader.contains(c).unwrap_or(false))
                {
                    push(&p, out, count);
                }
            }
            Node::Dir { tree } => {
                if memo.get(tree) != Some(&true) {
                    damaged_paths(repo, reader, *tree, &p, bad, memo, out, count)?;
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

/// Read every pack in full; verify the pack hash and every object. Returns corrupt object ids.
fn read_all_data(
    repo: &Repo,
    packs: &[(u32, PackId)],
    opts: &CheckOptions,
    progress: &dyn Progress,
    report: &mut CheckReport,
) -> Result<HashSet<ObjectId>> {
    let threads = crate::worker_threads(opts.threads);
    let next = Mutex::new(0usize);
    let out: Mutex<(HashSet<ObjectId>, Vec<Problem>, u64)> =
        Mutex::new((HashSet::new(), Vec::new(), 0));
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let i = {
                        let Ok(mut n) = next.lock() else { return };
                        let i = *n;
                        *n += 1;
                        i
                    };
                    let Some((no, id)) = packs.get(i) else { return };
                    let (corrupt, problems, bytes) = verify_pack(repo, id);
                    // A damaged copy only matters if it is the one the index uses.
                    let corrupt: Vec<ObjectId> = match repo.index().reader() {
                        Ok(r) => corrupt
                            .into_iter()
                            .filter(|(oid, entry)| {
                                r.get(oid)
                                    .ok()
                                    .flatten()
                                    .is_none_or(|l| l.pack == *no && l.entry == *entry)
                            })
                            .map(|(oid, _)| oid)
                            .collect(),
                        Err(_) => corrupt.into_iter().map(|(oid, _)| oid).collect(),
                    };
                    progress.add(0, bytes);
                    if let Ok(mut o) = out.lock() {
                        o.0.extend(corrupt);
                        o.1.extend(problems);
                        o.2 += bytes;
                    }
                }
            });
        }
    });
    let (corrupt, problems, bytes) = out
        .into_inner()
        .map_err(|_| Error::other("check thread panicked"))?;
    report.problems.extend(problems);
    report.bytes_read = bytes;
    Ok(corrupt)
}

fn verify_pack(repo: &Repo, id: &PackId) -> (Vec<(ObjectId, u32)>, Vec<Problem>, u64) {
    let mut corrupt = Vec::new();
    let mut problems = Vec::new();
    let name = id.to_hex();
    let data = match repo.backend().read(FileKind::Pack, &name) {
        Ok(d) => d,
        Err(e) => {
            problems.push(Problem {
                kind: "corrupt_pack".into(),
                detail: format!("pack {name}: {e:#}"),
                object: None,
                pack: Some(name),
                snapshot: None,
            });
            return (corrupt, problems, 0);
        }
    };
    let bytes = data.len() as u64;
    if Hash::of(&data) != id.0 {
        problems.push(Problem {
            kind: "corrupt_pack".into(),
            detail: format!("pack {name} does not hash to its name: some bytes are damaged"),
            object: None,
            pack: Some(name.clone()),
            snapshot: None,
        });
    }
    let codec = repo.codec();
    let records = pack_records_from_bytes(&data, codec)
        .unwrap_or_else(|_| crate::pack::scan_pack_entries(&data, codec).unwrap_or_default());
    for (i, r) in records.into_iter().enumerate() {
        let start = r.offset as usize;
        let end = start + r.stored_len as usize;
        let ok = data
            .get(start..end)
            .map(|stored| {
                codec
                    .decode_object(&r.id, r.kind, r.flags, r.raw_len, stored)
                    .is_ok()
            })
            .unwrap_or(false);
        if !ok {
            problems.push(Problem {
                kind: "corrupt_object".into(),
                detail: format!("object {} in pack {} is damaged", r.id, id.short(16)),
                object: Some(r.id.to_hex()),
                pack: Some(name.clone()),
                snapshot: None,
            });
            corrupt.push((r.id, i as u32));
        }
    }
    (corrupt, problems, bytes)
}

/// Parse the trailer of a pack held in memory.
pub fn pack_records_from_bytes(data: &[u8], codec: &Codec) -> Result<Vec<pack::Record>> {
    pack::check_header(data)?;
    if data.len() < pack::HEADER_LEN + pack::FOOTER_LEN {
        return Err(Error::corrupt("pack truncated"));
    }
    let f = pack::parse_footer(&data[data.len() - pack::FOOTER_LEN..], data.len() as u64)?;
    let start = f.trailer_offset as usize;
    let end = data.len() - pack::FOOTER_LEN;
    pack::parse_trailer(&data[start..end], &f, codec.keys())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_rotation_reads_every_pack_once_whatever_the_count() {
        for len in 1..=13usize {
            let keys: Vec<u64> = (1..=len as u64).map(|k| k * 10).collect();
            for share in [0.05, 0.25, 0.3, 0.5, 1.0] {
                let (mut cursor, mut read, mut runs) = (0, vec![0; len], 0);
                loop {
                    let (r, next, pos) = super::rotation_step(&keys, cursor, share);
                    for i in r {
                        read[i] += 1;
                    }
                    cursor = next;
                    runs += 1;
                    if pos >= 1.0 {
                        break;
                    }
                    assert!(runs <= len, "{len} packs, {share}: no end");
                }
                assert!(
                    read.iter().all(|n| *n == 1),
                    "{len} packs, {share}: {read:?}"
                );
                assert_eq!(cursor, 0, "the next rotation starts again");
            }
        }
    }
}
