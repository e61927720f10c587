//! What this repository forgot for good: one forget record per snapshot (`forgets/<id>`,
//! [`Forget`]), kept forever, so that a sync never fetches a forgotten snapshot again from a
//! peer that still holds it, and can tell such peers that it was forgotten (`docs/design.md`,
//! "Forgetting across nodes").
//!
//! The record is written before the snapshot record is removed: a crash in between leaves a
//! snapshot with a forget record, which is not listed, not offered to peers, and forgotten by
//! the next forget or sync ([`interrupted`]).

use std::collections::HashSet;

use crate::backend::FileKind;
use crate::error::{ErrorKind, Result};
use crate::format::forget::Forget;
use crate::format::hold::{self, Hold};
use crate::format::lineage::{self, Lineage};
use crate::format::snapshot::SnapshotEntry;
use crate::hash::SnapshotId;
use crate::history;
use crate::index::now_ns;
use crate::repo::Repo;

/// Forget snapshots `ids` for good: write their forget records (unsigned: this repository's
/// own decision), then forget them ([`crate::gc::forget`]; the objects go at the next gc).
/// Snapshots left by an interrupted forget are forgotten too.
pub fn forget(repo: &Repo, ids: &[SnapshotId]) -> Result<()> {
    let snaps = repo.snapshots()?;
    let now = now_ns();
    for s in snaps.iter().filter(|s| ids.contains(&s.id)) {
        if read(repo, &s.id)?.is_none() {
            record(
                repo,
                &Forget {
                    snapshot: s.id,
                    space: s.snapshot.space.clone(),
                    time_ns: now,
                    signer: None,
                },
            )?;
        }
    }
    let mut all: Vec<SnapshotId> = ids.to_vec();
    all.extend(
        interrupted(repo, &snaps)?
            .into_iter()
            .filter(|i| !ids.contains(i)),
    );
    crate::gc::forget(repo, &all)
}

/// Store records received from a peer (already checked by the caller: signed by a node that
/// may write their space here, each of the space this repository holds the snapshot in, if
/// it does), keeping an existing record of the same snapshot, then forget every snapshot held
/// that has a record. Returns the snapshots forgotten.
pub fn apply(repo: &Repo, records: &[Forget]) -> Result<Vec<SnapshotId>> {
    for f in records {
        if read(repo, &f.snapshot)?.is_none() {
            record(repo, f)?;
        }
    }
    let gone = interrupted(repo, &repo.snapshots()?)?;
    crate::gc::forget(repo, &gone)?;
    Ok(gone)
}

/// Snapshots among `snaps` that have a forget record (a forget not finished yet), except those
/// a hold keeps ([`hold`]) until a time not reached yet.
pub fn interrupted(repo: &Repo, snaps: &[SnapshotEntry]) -> Result<Vec<SnapshotId>> {
    let forgotten = ids(repo)?;
    let now = hold_now();
    let held: HashSet<SnapshotId> = holds(repo)?
        .into_iter()
        .filter(|h| h.until_ns > now)
        .map(|h| h.snapshot)
        .collect();
    Ok(snaps
        .iter()
        .map(|s| s.id)
        .filter(|i| forgotten.contains(i) && !held.contains(i))
        .collect())
}

/// Put off the forgets `records` (each with the time until which its snapshot is kept) of
/// snapshots held here: for each, a hold record, the lineage record, then the forget record,
/// each durably and in that order (a forget record without its hold would be finished as an
/// interrupted forget). The snapshot then counts as forgotten (not listed, not offered, not a
/// head), while its record and data stay until the hold ends; the next forget or sync after
/// that finishes the forget ([`interrupted`]).
pub fn hold(repo: &Repo, records: &[(Forget, i64)], peer: &str) -> Result<()> {
    let snaps = repo.snapshots()?;
    for (f, until_ns) in records {
        let Some(s) = snaps.iter().find(|s| s.id == f.snapshot) else {
            continue;
        };
        let h = Hold {
            snapshot: f.snapshot,
            until_ns: *until_ns,
            peer: peer.to_string(),
        };
        repo.backend()
            .write(FileKind::Forget, &h.file_name(), &h.encode()?)?;
        // Also without parents: the lineage record is what keeps it from being a head.
        write_lineage(repo, s)?;
        if read(repo, &f.snapshot)?.is_none() {
            record(repo, f)?;
        }
    }
    Ok(())
}

/// Remove the hold records of snapshots `ids`, forgotten now: their holds have ended (so that
/// the holds read at every pull are only the current ones).
pub fn end_holds(repo: &Repo, ids: &[SnapshotId]) -> Result<()> {
    for (name, _) in repo.backend().list(FileKind::Forget)? {
        if let Some(id) = name.strip_suffix(hold::SUFFIX)
            && SnapshotId::from_hex(id).is_ok_and(|id| ids.contains(&id))
        {
            repo.backend().remove(FileKind::Forget, &name)?;
        }
    }
    Ok(())
}

/// Every hold record (damaged ones are reported as errors: a hold must not silently end).
pub fn holds(repo: &Repo) -> Result<Vec<Hold>> {
    let mut out = Vec::new();
    for (name, _) in repo.backend().list(FileKind::Forget)? {
        if name.ends_with(hold::SUFFIX) {
            let b = repo.backend().read(FileKind::Forget, &name)?;
            out.push(
                Hold::decode(&b).map_err(|e| e.context(format!("hold record forgets/{name}")))?,
            );
        }
    }
    Ok(out)
}

/// The time holds are compared with: now, or in debug builds `PUCE_TEST_DAYS_LATER` days after
/// now (a test hook, so that end-to-end tests can see a protection period end).
pub fn hold_now() -> i64 {
    let mut now = now_ns();
    if cfg!(debug_assertions)
        && let Some(days) = std::env::var("PUCE_TEST_DAYS_LATER")
            .ok()
            .and_then(|d| d.parse::<i64>().ok())
    {
        now = now.saturating_add(days.saturating_mul(86_400 * 1_000_000_000));
    }
    now
}

/// Write a forget record (durably).
pub fn record(repo: &Repo, f: &Forget) -> Result<()> {
    repo.backend()
        .write(FileKind::Forget, &f.file_name(), &f.encode()?)
}

/// The forget record of snapshot `id`, if there is one.
pub fn read(repo: &Repo, id: &SnapshotId) -> Result<Option<Forget>> {
    match repo.backend().read(FileKind::Forget, &id.to_hex()) {
        Ok(b) => Ok(Some(
            Forget::decode(&b).map_err(|e| e.context(format!("forget record {id}")))?,
        )),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Write the lineage records of snapshots about to be forgotten (those with parents), durably,
/// before their snapshot records are removed ([`crate::format::lineage`]).
pub fn record_lineage(repo: &Repo, gone: &[SnapshotEntry]) -> Result<()> {
    for s in gone.iter().filter(|s| !s.snapshot.parents.is_empty()) {
        write_lineage(repo, s)?;
    }
    Ok(())
}

fn write_lineage(repo: &Repo, s: &SnapshotEntry) -> Result<()> {
    let l = Lineage {
        snapshot: s.id,
        space: s.snapshot.space.clone(),
        parents: s.snapshot.parents.clone(),
    };
    repo.backend()
        .write(FileKind::Forget, &l.file_name(), &l.encode()?)
}

/// The lineage the heads of `all` need ([`history::heads`]): for each snapshot of `all` with a
/// lineage record (held, or its forget interrupted), its parents as its record names them;
/// and, for each snapshot that a snapshot of `all` descends from but that `all` lacks
/// (forgotten), the parents its lineage record names, followed back until the snapshots of
/// `all`. Only those records are read: a repository that forgot thousands of snapshots over
/// the years reads the few between the ones it keeps. A damaged record is left out, with a
/// warning (its children's ancestry stops there, as before lineage records).
pub fn lineage(repo: &Repo, all: &[SnapshotEntry]) -> Result<history::Lineage> {
    let recorded: HashSet<SnapshotId> = repo
        .backend()
        .list(FileKind::Forget)?
        .into_iter()
        .filter_map(|(name, _)| {
            let id = name.strip_suffix(lineage::SUFFIX)?;
            SnapshotId::from_hex(id).ok()
        })
        .collect();
    let mut out = history::Lineage::new();
    if recorded.is_empty() {
        return Ok(out);
    }
    let present: HashSet<SnapshotId> = all.iter().map(|s| s.id).collect();
    for s in all.iter().filter(|s| recorded.contains(&s.id)) {
        out.insert(s.id, s.snapshot.parents.clone());
    }
    let mut stack: Vec<SnapshotId> = all
        .iter()
        .flat_map(|s| s.snapshot.parents.iter().copied())
        .filter(|p| !present.contains(p))
        .collect();
    while let Some(id) = stack.pop() {
        if out.contains_key(&id) || !recorded.contains(&id) {
            continue;
        }
        let name = format!("{}{}", id.to_hex(), lineage::SUFFIX);
        let read = repo
            .backend()
            .read(FileKind::Forget, &name)
            .and_then(|b| Lineage::decode(&b));
        match read {
            Ok(l) => {
                stack.extend(l.parents.iter().filter(|p| !present.contains(p)).copied());
                out.insert(id, l.parents);
            }
            Err(e) => {
                tracing::warn!("lineage record forgets/{name} left out: {e:#}");
                out.insert(id, Vec::new());
            }
        }
    }
    Ok(out)
}

/// The snapshots with a forget record (by file name; names that are not snapshot ids are
/// ignored).
pub fn ids(repo: &Repo) -> Result<HashSet<SnapshotId>> {
    Ok(repo
        .backend()
        .list(FileKind::Forget)?
        .into_iter()
        .filter_map(|(name, _)| SnapshotId::from_hex(&name).ok())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::InitOptions;
    use std::sync::Arc;

    fn snap(repo: &Arc<Repo>, src: &std::path::Path, space: &str) -> SnapshotId {
        let opts = crate::snapshot::archive::SnapshotOptions {
            space: Some(space.into()),
            ..Default::default()
        };
        crate::snapshot::archive::snapshot(repo, src, &opts, &crate::progress::NoProgress)
            .unwrap()
            .id
    }

    /// Retention thins a history in its middle: forgetting v2 of v1 <- v2 <- v3 must not make
    /// v1 a head again (no snapshot names it as a parent any more), or the next sync merges
    /// v1's old state into v3: files deleted since come back, changed ones become conflict
    /// copies.
    #[test]
    fn forgetting_the_middle_of_a_history_leaves_one_head() {
        use crate::testkit::{Files, snap_opts, write_files};
        let d = tempfile::tempdir().unwrap();
        let repo = Arc::new(Repo::init(&d.path().join("r"), &InitOptions::default()).unwrap());
        let src = d.path().join("src");
        let mut ids = Vec::new();
        for (t, files) in [
            (1, vec![("a", "1"), ("b", "1")]),
            (2, vec![("a", "1")]),
            (3, vec![("a", "2")]),
        ] {
            let files: Files = files
                .into_iter()
                .map(|(p, c)| (p.to_string(), c.as_bytes().to_vec()))
                .collect();
            write_files(&src, &files);
            let opts = snap_opts("docs", t * 1_000_000_000);
            let out = crate::snapshot::archive::snapshot(
                &repo,
                &src,
                &opts,
                &crate::progress::NoProgress,
            );
            ids.push(out.unwrap().id);
        }
        forget(&repo, &[ids[1]]).unwrap();
        let all = repo.snapshots().unwrap();
        let heads: Vec<SnapshotId> =
            crate::history::heads(&all, &lineage(&repo, &all).unwrap(), "docs")
                .iter()
                .map(|s| s.id)
                .collect();
        assert_eq!(heads, vec![ids[2]], "v1 became a head again");
        let merged = crate::merge::merge_heads(&repo, "docs").unwrap();
        assert!(merged.is_none(), "merged: {merged:?}");
        assert_eq!(repo.latest("docs").unwrap().map(|s| s.id), Some(ids[2]));
        // Forgetting the head itself leaves its parent the head, as before.
        forget(&repo, &[ids[2]]).unwrap();
        let all = repo.snapshots().unwrap();
        let heads = crate::history::heads(&all, &lineage(&repo, &all).unwrap(), "docs");
        assert_eq!(heads.iter().map(|s| s.id).collect::<Vec<_>>(), vec![ids[0]]);
    }

    /// A repository (in the returned folder) with two snapshots of `docs`, the second a child
    /// of the first.
    fn two_snapshots() -> (tempfile::TempDir, Arc<Repo>, SnapshotId, SnapshotId) {
        let d = tempfile::tempdir().unwrap();
        let repo = Arc::new(Repo::init(&d.path().join("r"), &InitOptions::default()).unwrap());
        let src = d.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("f"), b"one").unwrap();
        let a = snap(&repo, &src, "docs");
        std::fs::write(src.join("f"), b"two").unwrap();
        let b = snap(&repo, &src, "docs");
        (d, repo, a, b)
    }

    /// A hold keeps the snapshot (record and data) but it counts as forgotten: not a head (its
    /// parent is), not finished by a forget until the hold ends, then finished.
    #[test]
    fn a_held_forget_keeps_the_snapshot_until_its_hold_ends() {
        let (_d, repo, a, b) = two_snapshots();
        let f = |id| Forget {
            snapshot: id,
            space: "docs".into(),
            time_ns: 1,
            signer: None,
        };
        let heads = |repo: &Repo| -> Vec<SnapshotId> {
            let all = repo.snapshots().unwrap();
            let l = lineage(repo, &all).unwrap();
            crate::history::heads(&all, &l, "docs")
                .iter()
                .map(|s| s.id)
                .collect()
        };
        assert_eq!(heads(&repo), vec![b]);
        hold(&repo, &[(f(b), i64::MAX)], "lyon").unwrap();
        assert_eq!(heads(&repo), vec![a], "the held snapshot is still a head");
        forget(&repo, &[]).unwrap();
        assert_eq!(
            repo.snapshots().unwrap().len(),
            2,
            "a forget ended the hold"
        );
        assert_eq!(holds(&repo).unwrap()[0].peer, "lyon");
        // Held until a time now past: the next forget finishes it.
        hold(&repo, &[(f(a), 1)], "lyon").unwrap();
        forget(&repo, &[]).unwrap();
        let left: Vec<SnapshotId> = repo.snapshots().unwrap().iter().map(|s| s.id).collect();
        assert_eq!(left, vec![b]);
        assert!(heads(&repo).is_empty());
        let held: Vec<SnapshotId> = holds(&repo).unwrap().iter().map(|h| h.snapshot).collect();
        assert_eq!(held, vec![b], "the ended hold's record stayed");
    }

    #[test]
    fn a_forget_leaves_a_record_and_an_interrupted_one_is_finished() {
        let (_d, repo, a, b) = two_snapshots();
        forget(&repo, &[a]).unwrap();
        let f = read(&repo, &a).unwrap().unwrap();
        assert_eq!((f.snapshot, f.space.as_str(), f.signer), (a, "docs", None));
        assert_eq!(ids(&repo).unwrap(), HashSet::from([a]));
        let left: Vec<SnapshotId> = repo.snapshots().unwrap().iter().map(|s| s.id).collect();
        assert_eq!(left, vec![b]);
        // A record written, the snapshot not yet removed (a crash in between): the next
        // forget finishes it.
        record(
            &repo,
            &Forget {
                snapshot: b,
                space: "docs".into(),
                time_ns: 1,
                signer: None,
            },
        )
        .unwrap();
        assert_eq!(
            interrupted(&repo, &repo.snapshots().unwrap()).unwrap(),
            vec![b]
        );
        forget(&repo, &[]).unwrap();
        assert!(repo.snapshots().unwrap().is_empty());
        assert_eq!(read(&repo, &b).unwrap().unwrap().time_ns, 1, "record kept");
    }
}
