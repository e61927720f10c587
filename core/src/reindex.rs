//! `puce repair index`: rebuild the index from the packs and snapshot files alone.

use serde::Serialize;

use crate::backend::FileKind;
use crate::error::{Error, ErrorKind, Result};
use crate::format::snapshot::Snapshot;
use crate::hash::{PackId, SnapshotId};
use crate::pack::{read_pack_records, scan_pack_entries};
use crate::progress::Progress;
use crate::repo::Repo;

/// What a rebuild found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RepairReport {
    /// Packs indexed.
    pub packs: u64,
    /// Packs whose trailer was damaged and whose entries were recovered by scanning.
    pub packs_scanned: u64,
    /// Packs that could not be read at all.
    pub packs_unreadable: Vec<String>,
    /// Distinct objects indexed.
    pub objects: u64,
    /// Snapshots indexed.
    pub snapshots: u64,
    /// Snapshot files that could not be decoded.
    pub snapshots_bad: Vec<String>,
}

/// Rebuild the index. Packs are read through their trailers (one ranged read each); a pack whose
/// trailer is damaged is read whole and its entries recovered from their headers.
///
/// Safe beside running writers and exclusive with gc (see `docs/design.md`, "Garbage
/// collection"): the gc lock is held, and packs and snapshots are listed inside the write
/// transaction that replaces the index, so a writer's pack or snapshot published before the
/// listing is in it, and one published after is indexed by its writer once this transaction
/// has committed (its own transaction waits for this one).
pub fn rebuild_index(repo: &Repo, progress: &dyn Progress) -> Result<RepairReport> {
    let Some(_lock) = crate::gc::try_gc_lock(repo)? else {
        return Err(Error::new(
            ErrorKind::Busy,
            "a gc or a heal is running on this repository: run `puce repair index` again when \
             it has finished",
        ));
    };
    let mut report = RepairReport::default();
    repo.index().rebuild(|rb| {
        let packs = repo.backend().list(FileKind::Pack)?;
        progress.set_total(packs.len() as u64, 0);
        for (name, size) in &packs {
            let Ok(id) = PackId::from_hex(name) else {
                report.packs_unreadable.push(name.clone());
                continue;
            };
            match read_pack_records(repo.backend().as_ref(), &id, repo.codec()) {
                Ok((size, records)) => {
                    rb.add_pack(&id, size, &records)?;
                    report.packs += 1;
                }
                Err(_) => match repo
                    .backend()
                    .read(FileKind::Pack, name)
                    .and_then(|d| scan_pack_entries(&d, repo.codec()))
                {
                    Ok(records) if !records.is_empty() => {
                        report.packs_scanned += 1;
                        rb.add_pack(&id, *size, &records)?;
                        report.packs += 1;
                    }
                    _ => report.packs_unreadable.push(name.clone()),
                },
            }
            progress.add(1, 0);
        }
        for (name, _) in repo.backend().list(FileKind::Snapshot)? {
            let ok = SnapshotId::from_hex(&name).and_then(|id| {
                let b = repo.backend().read(FileKind::Snapshot, &name)?;
                Snapshot::decode(&b, Some(&id))?;
                Ok((id, b))
            });
            match ok {
                Ok((id, bytes)) => {
                    rb.add_snapshot(&id, &bytes)?;
                    report.snapshots += 1;
                }
                Err(_) => report.snapshots_bad.push(name),
            }
        }
        Ok(())
    })?;
    report.objects = repo.index().object_count()?;
    Ok(report)
}
