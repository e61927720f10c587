//! Recovering what a killed writer left: packs that were published (complete, fsynced, renamed
//! into `packs/`) but not yet recorded in the index when the process died.
//!
//! Such a pack is complete and its objects are valid; indexing it is what its writer was about
//! to do. Doing it twice is harmless ([`crate::index::Index::add_pack`] is idempotent per pack
//! id), so a live writer that publishes a pack while this runs loses nothing either.

use std::collections::HashSet;

use serde::Serialize;

use crate::backend::FileKind;
use crate::error::Result;
use crate::hash::PackId;
use crate::pack::read_pack_records;
use crate::repo::Repo;

/// What [`index_orphan_packs`] did.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct OrphanReport {
    /// Packs indexed.
    pub packs: u64,
    /// Objects they hold.
    pub objects: u64,
    /// Packs whose trailer cannot be read (left for `puce check` and `puce repair index`).
    pub unreadable: Vec<String>,
    /// Nothing was looked at because a gc (or heal) was running: gc deletes the packs the index
    /// does not list, so they cannot be adopted now. The caller stores its own copies instead.
    pub gc_running: bool,
}

/// Index every pack in `packs/` that the index does not list, unless a gc is running (then
/// nothing is done and `gc_running` is set). Holds the gc lock meanwhile, so that gc never
/// deletes a pack after this has handed its objects to a writer.
pub fn index_orphan_packs(repo: &Repo) -> Result<OrphanReport> {
    let Some(_lock) = crate::gc::try_gc_lock(repo)? else {
        tracing::info!("a gc is running: packs left unindexed by an interrupted writer wait");
        return Ok(OrphanReport {
            gc_running: true,
            ..OrphanReport::default()
        });
    };
    let known: HashSet<PackId> = repo
        .index()
        .packs()?
        .into_iter()
        .map(|(_, p)| p.id)
        .collect();
    let mut report = OrphanReport::default();
    for (name, _) in repo.backend().list(FileKind::Pack)? {
        let Ok(id) = PackId::from_hex(&name) else {
            continue;
        };
        if known.contains(&id) {
            continue;
        }
        match read_pack_records(repo.backend().as_ref(), &id, repo.codec()) {
            Ok((size, records)) => {
                repo.index().add_pack(&id, size, &records)?;
                report.packs += 1;
                report.objects += records.len() as u64;
            }
            Err(_) => report.unreadable.push(name),
        }
    }
    if report.packs > 0 {
        tracing::info!(
            "indexed {} pack(s) ({} objects) left unindexed by an interrupted writer",
            report.packs,
            report.objects
        );
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::pack::Kind;
    use crate::hash::ObjectId;
    use crate::pack::PackWriter;
    use crate::repo::InitOptions;

    #[test]
    fn a_published_but_unindexed_pack_is_indexed() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repo::init(&dir.path().join("r"), &InitOptions::default()).unwrap();
        // A writer that published its pack and died before indexing it.
        let mut w = PackWriter::new(repo.backend().as_ref(), repo.codec()).unwrap();
        let data = b"orphan object".to_vec();
        let id = ObjectId::of(&data);
        w.add(id, Kind::Data, 0, data.len() as u32, &data).unwrap();
        let (pack, _, _) = w.finish().unwrap();
        assert!(!repo.index().reader().unwrap().contains(&id).unwrap());
        let r = index_orphan_packs(&repo).unwrap();
        assert_eq!((r.packs, r.objects), (1, 1));
        assert!(repo.index().reader().unwrap().contains(&id).unwrap());
        assert_eq!(repo.read_object(&id).unwrap(), data);
        // Nothing left to do the second time.
        assert_eq!(index_orphan_packs(&repo).unwrap(), OrphanReport::default());
        let _ = pack;
    }

    #[test]
    fn unindexed_packs_are_not_adopted_while_gc_runs() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repo::init(&dir.path().join("r"), &InitOptions::default()).unwrap();
        let mut w = PackWriter::new(repo.backend().as_ref(), repo.codec()).unwrap();
        let data = b"gc is about to delete this pack".to_vec();
        let id = ObjectId::of(&data);
        w.add(id, Kind::Data, 0, data.len() as u32, &data).unwrap();
        w.finish().unwrap();
        // gc lists the pack as not indexed, and will delete it.
        let lock = crate::gc::gc_lock(&repo).unwrap();
        let r = index_orphan_packs(&repo).unwrap();
        assert!(r.gc_running);
        assert_eq!(r.packs, 0);
        assert!(!repo.index().reader().unwrap().contains(&id).unwrap());
        drop(lock);
        assert_eq!(index_orphan_packs(&repo).unwrap().packs, 1);
    }
}
