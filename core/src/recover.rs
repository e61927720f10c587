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
}

/// Index every pack in `packs/` that the index does not list.
pub fn index_orphan_packs(repo: &Repo) -> Result<OrphanReport> {
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
        match read_pack_records(repo.backend().as_ref(), &id) {
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
        let mut w = PackWriter::new(repo.backend().as_ref()).unwrap();
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
}
