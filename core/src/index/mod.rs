//! The index: where every object is, and a cache of the repository's metadata, in redb.
//!
//! The index is derived data: packs and snapshot files are the source of truth, and
//! `puce repair index` rebuilds it from them. It lives in `REPO/index.redb`, opened in redb's
//! multi-writer mode so that several puce processes (two snapshots, the node daemon, a mount)
//! share it; write transactions are serialised by redb across processes.
//!
//! Tables:
//! - `objects`: object id (32 bytes) -> [`Location`] (24 bytes, see [`Location::encode`]).
//! - `packs`: pack number (u32) -> [`PackInfo`] (postcard).
//! - `pack_ids`: pack id (32 bytes) -> pack number.
//! - `snapshots`: snapshot id -> the snapshot file's bytes (a cache of `snapshots/`).
//! - `condemned`: objects gc is about to delete (same value as `objects`): readers still find
//!   them, writers do not (so they store their own copy). See `docs/design.md`.
//! - `sessions`: writers in progress (see [`crate::writer_session`]), so that gc spares what they use.
//! - `meta`: counters (next pack number, next scope number) and the schema version.
//! - `scopes`, `reach`, `reached`: which objects each space and each peer reaches (see
//!   [`crate::reach`] and `reach.rs`).

use std::path::Path;

use redb::{
    ConcurrencyMode, Database, ReadOnlyTable, ReadableDatabase, ReadableTable,
    ReadableTableMetadata, TableDefinition,
};
use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};
use crate::format::pack::{Kind, Record};
use crate::hash::{Hash, ObjectId, PackId, SnapshotId};

mod quota;
mod reach;
mod statcache;
pub use reach::ReachReader;
pub use statcache::{StatCache, StatEntry, StatReader, stat_key};

const OBJECTS: TableDefinition<[u8; 32], [u8; 24]> = TableDefinition::new("objects");
const PACKS: TableDefinition<u32, &[u8]> = TableDefinition::new("packs");
const PACK_IDS: TableDefinition<[u8; 32], u32> = TableDefinition::new("pack_ids");
const SNAPSHOTS: TableDefinition<[u8; 32], &[u8]> = TableDefinition::new("snapshots");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const SESSIONS: TableDefinition<u64, &[u8]> = TableDefinition::new("sessions");
const CONDEMNED: TableDefinition<[u8; 32], [u8; 24]> = TableDefinition::new("condemned");
/// Copies of small files of the repository that nothing else could rebuild (the config).
const COPIES: TableDefinition<&str, &[u8]> = TableDefinition::new("copies");

/// Version of the table layout above.
pub const SCHEMA_VERSION: u64 = 3;

/// Where an object is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// Index-local pack number (see the `packs` table).
    pub pack: u32,
    /// Position of the entry in its pack (0-based).
    pub entry: u32,
    /// Offset of the data in the pack.
    pub offset: u32,
    /// Stored length.
    pub stored_len: u32,
    /// Plaintext length.
    pub raw_len: u32,
    /// What the object is.
    pub kind: Kind,
    /// Pack entry flags.
    pub flags: u8,
}

impl Location {
    /// 24 bytes: pack u32, entry u32, offset u32, stored_len u32, raw_len u32, kind u8, flags u8,
    /// 2 reserved; little-endian.
    pub fn encode(&self) -> [u8; 24] {
        let mut b = [0u8; 24];
        b[0..4].copy_from_slice(&self.pack.to_le_bytes());
        b[4..8].copy_from_slice(&self.entry.to_le_bytes());
        b[8..12].copy_from_slice(&self.offset.to_le_bytes());
        b[12..16].copy_from_slice(&self.stored_len.to_le_bytes());
        b[16..20].copy_from_slice(&self.raw_len.to_le_bytes());
        b[20] = self.kind as u8;
        b[21] = self.flags;
        b
    }

    /// Inverse of [`Location::encode`].
    pub fn decode(b: &[u8; 24]) -> Result<Location> {
        let u = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        Ok(Location {
            pack: u(0),
            entry: u(4),
            offset: u(8),
            stored_len: u(12),
            raw_len: u(16),
            kind: Kind::from_u8(b[20])?,
            flags: b[21],
        })
    }
}

/// A writer in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionInfo {
    /// Process id.
    pub pid: u32,
    /// Host name.
    pub host: String,
    /// When it started, nanoseconds since the epoch.
    pub started_ns: i64,
    /// What it is doing (for `puce` status output).
    pub what: String,
}

/// What the index knows of a pack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackInfo {
    /// The pack's id (its file name).
    pub id: PackId,
    /// File size in bytes.
    pub size: u64,
    /// Number of entries.
    pub count: u32,
    /// When it was indexed, nanoseconds since the epoch.
    pub indexed_ns: i64,
}

/// The index database.
pub struct Index {
    db: Database,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Index")
    }
}

/// A consistent read view of the index.
pub struct IndexReader {
    objects: ReadOnlyTable<[u8; 32], [u8; 24]>,
    condemned: ReadOnlyTable<[u8; 32], [u8; 24]>,
    packs: ReadOnlyTable<u32, &'static [u8]>,
}

/// Open or create the redb database at `path` as `Builder::create` does, but creating the file
/// with mode 0600 ([`crate::fsutil::FILE_MODE`]).
pub(crate) fn create_db(
    b: &redb::Builder,
    path: &Path,
) -> std::result::Result<Database, redb::DatabaseError> {
    let f = crate::fsutil::private_file()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    b.create_with_backend(redb::backends::FileBackend::new(f)?)
}

impl Index {
    /// Open (creating if needed) the index at `path`, with `cache_bytes` of page cache.
    pub fn open(path: &Path, cache_bytes: usize) -> Result<Index> {
        let mut b = Database::builder();
        b.set_cache_size(cache_bytes);
        b.set_concurrency_mode(ConcurrencyMode::MultiWriter);
        let db = create_db(&b, path).map_err(|e| {
            let busy = matches!(
                e,
                redb::DatabaseError::DatabaseAlreadyOpen
                    | redb::DatabaseError::LockProtocolMismatch
            );
            let kind = if busy { ErrorKind::Busy } else { ErrorKind::Io };
            Error::new(
                kind,
                format!(
                    "cannot open the index {}{}",
                    path.display(),
                    if busy {
                        " (held by a puce process of another version: stop it and retry)"
                    } else {
                        "; if it is damaged, move it away and run `puce repair index`"
                    }
                ),
            )
            .with_source(e)
        })?;
        let idx = Index { db };
        idx.create_tables()?;
        Ok(idx)
    }

    fn create_tables(&self) -> Result<()> {
        // Only the first open of a new file writes; later opens just check.
        let exists = {
            let r = self.db.begin_read()?;
            let meta = r.open_table(META);
            match meta {
                Ok(t) => {
                    let v = t.get("schema")?.map(|g| g.value());
                    match v {
                        Some(SCHEMA_VERSION) => true,
                        Some(v) if v > SCHEMA_VERSION => {
                            return Err(Error::new(
                                ErrorKind::UnsupportedVersion,
                                format!(
                                    "index schema {v} is newer than this puce ({SCHEMA_VERSION}): \
                                     upgrade puce"
                                ),
                            ));
                        }
                        _ => false,
                    }
                }
                Err(redb::TableError::TableDoesNotExist(_)) => false,
                Err(e) => return Err(e.into()),
            }
        };
        if exists {
            return Ok(());
        }
        let w = self.db.begin_write()?;
        {
            w.open_table(OBJECTS)?;
            w.open_table(PACKS)?;
            w.open_table(PACK_IDS)?;
            w.open_table(SNAPSHOTS)?;
            w.open_table(SESSIONS)?;
            w.open_table(CONDEMNED)?;
            w.open_table(reach::SCOPES)?;
            w.open_table(reach::REACH)?;
            w.open_table(reach::REACHED)?;
            let mut meta = w.open_table(META)?;
            // New index, or an older schema: the missing tables were just created.
            if meta.get("next_pack")?.is_none() {
                meta.insert("next_pack", 1)?;
            }
            meta.insert("schema", SCHEMA_VERSION)?;
        }
        w.commit()?;
        Ok(())
    }

    /// A read view.
    pub fn reader(&self) -> Result<IndexReader> {
        let r = self.db.begin_read()?;
        Ok(IndexReader {
            objects: r.open_table(OBJECTS)?,
            condemned: r.open_table(CONDEMNED)?,
            packs: r.open_table(PACKS)?,
        })
    }

    /// Record a published pack and its entries. Objects already indexed elsewhere keep their
    /// existing location (the new copy is a duplicate that gc reclaims). Returns the pack number.
    pub fn add_pack(&self, id: &PackId, size: u64, records: &[Record]) -> Result<u32> {
        let w = self.db.begin_write()?;
        let existing = w
            .open_table(PACK_IDS)?
            .get(id.as_bytes())?
            .map(|g| g.value());
        if let Some(existing) = existing {
            // Already indexed (a retry after a crash): nothing to do.
            w.abort()?;
            return Ok(existing);
        }
        let no;
        {
            let mut ids = w.open_table(PACK_IDS)?;
            let mut meta = w.open_table(META)?;
            no = meta.get("next_pack")?.map(|g| g.value()).unwrap_or(1);
            let no32 =
                u32::try_from(no).map_err(|_| Error::other("more than 4 billion packs indexed"))?;
            meta.insert("next_pack", no + 1)?;
            ids.insert(id.as_bytes(), no32)?;
            let info = PackInfo {
                id: *id,
                size,
                count: records.len() as u32,
                indexed_ns: now_ns(),
            };
            let enc = postcard::to_stdvec(&info)
                .map_err(|e| Error::other("encode pack info").with_source(e))?;
            w.open_table(PACKS)?.insert(no32, enc.as_slice())?;
            let mut objects = w.open_table(OBJECTS)?;
            for (i, r) in records.iter().enumerate() {
                if objects.get(r.id.as_bytes())?.is_some() {
                    continue;
                }
                let loc = Location {
                    pack: no32,
                    entry: i as u32,
                    offset: r.offset,
                    stored_len: r.stored_len,
                    raw_len: r.raw_len,
                    kind: r.kind,
                    flags: r.flags,
                };
                objects.insert(r.id.as_bytes(), loc.encode())?;
            }
        }
        w.commit()?;
        u32::try_from(no).map_err(|_| Error::other("pack number overflow"))
    }

    /// Record snapshot files in the cache table.
    pub fn put_snapshots(&self, snaps: &[(SnapshotId, Vec<u8>)]) -> Result<()> {
        if snaps.is_empty() {
            return Ok(());
        }
        let w = self.db.begin_write()?;
        {
            let mut t = w.open_table(SNAPSHOTS)?;
            for (id, bytes) in snaps {
                t.insert(id.as_bytes(), bytes.as_slice())?;
            }
        }
        w.commit()?;
        Ok(())
    }

    /// Remove snapshots from the cache table.
    pub fn remove_snapshots(&self, ids: &[SnapshotId]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let w = self.db.begin_write()?;
        {
            let mut t = w.open_table(SNAPSHOTS)?;
            for id in ids {
                t.remove(id.as_bytes())?;
            }
        }
        w.commit()?;
        Ok(())
    }

    /// All cached snapshot files.
    pub fn snapshots(&self) -> Result<Vec<(SnapshotId, Vec<u8>)>> {
        let r = self.db.begin_read()?;
        let t = r.open_table(SNAPSHOTS)?;
        let mut out = Vec::new();
        for item in t.iter()? {
            let (k, v) = item?;
            out.push((SnapshotId(Hash(k.value())), v.value().to_vec()));
        }
        Ok(out)
    }

    /// Replace the whole index content with what `f` inserts (used by `repair index`).
    pub fn rebuild(&self, f: impl FnOnce(&mut Rebuilder<'_>) -> Result<()>) -> Result<()> {
        let w = self.db.begin_write()?;
        {
            w.delete_table(OBJECTS)?;
            w.delete_table(PACKS)?;
            w.delete_table(PACK_IDS)?;
            w.delete_table(SNAPSHOTS)?;
            w.delete_table(CONDEMNED)?;
            w.open_table(CONDEMNED)?;
            // The reach tables are rebuilt on demand from the snapshots and receipts.
            w.delete_table(reach::REACH)?;
            w.delete_table(reach::REACHED)?;
            w.open_table(reach::REACH)?;
            w.open_table(reach::REACHED)?;
            let mut rb = Rebuilder {
                objects: w.open_table(OBJECTS)?,
                packs: w.open_table(PACKS)?,
                pack_ids: w.open_table(PACK_IDS)?,
                snapshots: w.open_table(SNAPSHOTS)?,
                next_pack: 1,
            };
            f(&mut rb)?;
            let next = rb.next_pack;
            drop(rb);
            let mut meta = w.open_table(META)?;
            meta.insert("next_pack", next)?;
        }
        quota::bump_epoch(&w)?;
        w.commit()?;
        Ok(())
    }

    /// A counter or setting in the `meta` table.
    pub fn meta(&self, key: &str) -> Result<Option<u64>> {
        let r = self.db.begin_read()?;
        Ok(r.open_table(META)?.get(key)?.map(|g| g.value()))
    }

    /// Set a counter or setting in the `meta` table.
    pub fn set_meta(&self, key: &str, value: u64) -> Result<()> {
        let w = self.db.begin_write()?;
        w.open_table(META)?.insert(key, value)?;
        w.commit()?;
        Ok(())
    }

    /// The copy of the repository config kept in the index (the exact bytes of `config`), if
    /// one was recorded. Indexes written by an older puce have none until the next open.
    pub fn config_copy(&self) -> Result<Option<Vec<u8>>> {
        let r = self.db.begin_read()?;
        let t = match r.open_table(COPIES) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        Ok(t.get("config")?.map(|g| g.value().to_vec()))
    }

    /// Record the copy of the repository config (durably, in one transaction).
    pub fn set_config_copy(&self, bytes: &[u8]) -> Result<()> {
        let w = self.db.begin_write()?;
        w.open_table(COPIES)?.insert("config", bytes)?;
        w.commit()?;
        Ok(())
    }

    /// Register a writer session.
    pub fn add_session(&self, id: u64, info: &SessionInfo) -> Result<()> {
        let enc =
            postcard::to_stdvec(info).map_err(|e| Error::other("encode session").with_source(e))?;
        let w = self.db.begin_write()?;
        w.open_table(SESSIONS)?.insert(id, enc.as_slice())?;
        w.commit()?;
        Ok(())
    }

    /// Remove a writer session.
    pub fn remove_session(&self, id: u64) -> Result<()> {
        let w = self.db.begin_write()?;
        w.open_table(SESSIONS)?.remove(id)?;
        w.commit()?;
        Ok(())
    }

    /// Registered writer sessions (possibly including dead ones: see [`crate::writer_session`]).
    pub fn sessions(&self) -> Result<Vec<(u64, SessionInfo)>> {
        let r = self.db.begin_read()?;
        let t = r.open_table(SESSIONS)?;
        let mut out = Vec::new();
        for item in t.iter()? {
            let (k, v) = item?;
            out.push((
                k.value(),
                crate::format::envelope::decode_exact("session record", v.value())?,
            ));
        }
        Ok(out)
    }

    /// Move objects from `objects` to `condemned`, if they are still at the given location.
    /// Returns how many moved.
    pub fn condemn(&self, items: &[(ObjectId, Location)]) -> Result<u64> {
        let w = self.db.begin_write()?;
        let mut n = 0;
        {
            let mut objects = w.open_table(OBJECTS)?;
            let mut condemned = w.open_table(CONDEMNED)?;
            for (id, loc) in items {
                let cur = objects.get(id.as_bytes())?.map(|g| g.value());
                if cur == Some(loc.encode()) {
                    objects.remove(id.as_bytes())?;
                    condemned.insert(id.as_bytes(), loc.encode())?;
                    n += 1;
                }
            }
        }
        quota::bump_epoch(&w)?;
        w.commit()?;
        Ok(n)
    }

    /// Move condemned objects back to `objects` (unless a writer re-stored them meanwhile).
    pub fn rescue(&self, ids: &[ObjectId]) -> Result<u64> {
        let w = self.db.begin_write()?;
        let mut n = 0;
        {
            let mut objects = w.open_table(OBJECTS)?;
            let mut condemned = w.open_table(CONDEMNED)?;
            for id in ids {
                let Some(loc) = condemned.remove(id.as_bytes())?.map(|g| g.value()) else {
                    continue;
                };
                if objects.get(id.as_bytes())?.is_none() {
                    objects.insert(id.as_bytes(), loc)?;
                    n += 1;
                }
            }
        }
        quota::bump_epoch(&w)?;
        w.commit()?;
        Ok(n)
    }

    /// Every condemned object.
    pub fn condemned(&self) -> Result<Vec<(ObjectId, Location)>> {
        let r = self.db.begin_read()?;
        let t = r.open_table(CONDEMNED)?;
        let mut out = Vec::new();
        for item in t.iter()? {
            let (k, v) = item?;
            out.push((ObjectId(Hash(k.value())), Location::decode(&v.value())?));
        }
        Ok(out)
    }

    /// The end of a gc pass or a heal, in one transaction: index the new packs and move the
    /// objects that were copied into them (only those still pointing at their old location);
    /// index the objects of the new packs that the index lacks (a heal fetches missing ones);
    /// remove the `dropped` objects (damaged beyond repair) still at the given location; then
    /// forget the retired packs and every condemned object that lived in them.
    pub fn retire_packs(
        &self,
        new_packs: &[(PackId, u64, Vec<Record>)],
        moved: &[(ObjectId, Location)],
        dropped: &[(ObjectId, Location)],
        retired: &[(u32, Vec<ObjectId>)],
    ) -> Result<()> {
        let retired_set: std::collections::HashSet<u32> = retired.iter().map(|r| r.0).collect();
        let w = self.db.begin_write()?;
        {
            let mut meta = w.open_table(META)?;
            let mut packs = w.open_table(PACKS)?;
            let mut ids = w.open_table(PACK_IDS)?;
            let mut objects = w.open_table(OBJECTS)?;
            let mut condemned = w.open_table(CONDEMNED)?;
            // New packs, and where each moved object now is.
            let mut new_loc: std::collections::HashMap<ObjectId, Location> = Default::default();
            for (id, size, records) in new_packs {
                if ids.get(id.as_bytes())?.is_some() {
                    return Err(Error::other(format!(
                        "gc: new pack {id} is already indexed; nothing was changed"
                    )));
                }
                let no = meta.get("next_pack")?.map(|g| g.value()).unwrap_or(1);
                meta.insert("next_pack", no + 1)?;
                let no32 = u32::try_from(no).map_err(|_| Error::other("pack number overflow"))?;
                ids.insert(id.as_bytes(), no32)?;
                let info = PackInfo {
                    id: *id,
                    size: *size,
                    count: records.len() as u32,
                    indexed_ns: now_ns(),
                };
                let enc = postcard::to_stdvec(&info)
                    .map_err(|e| Error::other("encode pack info").with_source(e))?;
                packs.insert(no32, enc.as_slice())?;
                for (i, r) in records.iter().enumerate() {
                    new_loc.insert(
                        r.id,
                        Location {
                            pack: no32,
                            entry: i as u32,
                            offset: r.offset,
                            stored_len: r.stored_len,
                            raw_len: r.raw_len,
                            kind: r.kind,
                            flags: r.flags,
                        },
                    );
                }
            }
            for (id, old) in moved {
                let Some(nl) = new_loc.get(id) else { continue };
                let cur = objects.get(id.as_bytes())?.map(|g| g.value());
                if cur == Some(old.encode()) {
                    objects.insert(id.as_bytes(), nl.encode())?;
                }
            }
            for (id, nl) in &new_loc {
                if objects.get(id.as_bytes())?.is_none() && condemned.get(id.as_bytes())?.is_none()
                {
                    objects.insert(id.as_bytes(), nl.encode())?;
                }
            }
            for (id, old) in dropped {
                let cur = objects.get(id.as_bytes())?.map(|g| g.value());
                if cur == Some(old.encode()) {
                    objects.remove(id.as_bytes())?;
                }
            }
            // Condemned objects of retired packs go with them.
            let doomed: Vec<[u8; 32]> = condemned
                .iter()?
                .filter_map(|item| item.ok())
                .filter(|(_, v)| {
                    Location::decode(&v.value()).is_ok_and(|l| retired_set.contains(&l.pack))
                })
                .map(|(k, _)| k.value())
                .collect();
            for k in doomed {
                condemned.remove(&k)?;
            }
            // Safety: no live object may still point into a retired pack.
            for (no, members) in retired {
                for id in members {
                    if let Some(g) = objects.get(id.as_bytes())? {
                        let l = Location::decode(&g.value())?;
                        if l.pack == *no {
                            return Err(Error::other(format!(
                                "gc safety check: live object {id} is still in pack number {no}; \
                                 nothing was deleted"
                            )));
                        }
                    }
                }
            }
            for (no, _) in retired {
                if let Some(info) = packs.remove(no)?.map(|g| g.value().to_vec()) {
                    let info = decode_pack_info(&info)?;
                    ids.remove(info.id.as_bytes())?;
                }
            }
        }
        quota::bump_epoch(&w)?;
        w.commit()?;
        Ok(())
    }

    /// Number of objects indexed.
    pub fn object_count(&self) -> Result<u64> {
        let r = self.db.begin_read()?;
        Ok(r.open_table(OBJECTS)?.len()?)
    }

    /// All packs: number and info.
    pub fn packs(&self) -> Result<Vec<(u32, PackInfo)>> {
        let r = self.db.begin_read()?;
        let t = r.open_table(PACKS)?;
        let mut out = Vec::new();
        for item in t.iter()? {
            let (k, v) = item?;
            out.push((k.value(), decode_pack_info(v.value())?));
        }
        Ok(out)
    }

    /// Visit every indexed object.
    pub fn for_each_object(
        &self,
        mut f: impl FnMut(ObjectId, Location) -> Result<()>,
    ) -> Result<()> {
        let r = self.db.begin_read()?;
        let t = r.open_table(OBJECTS)?;
        for item in t.iter()? {
            let (k, v) = item?;
            f(ObjectId(Hash(k.value())), Location::decode(&v.value())?)?;
        }
        Ok(())
    }
}

/// Write access during [`Index::rebuild`].
pub struct Rebuilder<'t> {
    objects: redb::Table<'t, [u8; 32], [u8; 24]>,
    packs: redb::Table<'t, u32, &'static [u8]>,
    pack_ids: redb::Table<'t, [u8; 32], u32>,
    snapshots: redb::Table<'t, [u8; 32], &'static [u8]>,
    next_pack: u64,
}

impl Rebuilder<'_> {
    /// Add a pack and its records (first copy of an object wins).
    pub fn add_pack(&mut self, id: &PackId, size: u64, records: &[Record]) -> Result<u32> {
        let no = u32::try_from(self.next_pack).map_err(|_| Error::other("too many packs"))?;
        self.next_pack += 1;
        self.pack_ids.insert(id.as_bytes(), no)?;
        let info = PackInfo {
            id: *id,
            size,
            count: records.len() as u32,
            indexed_ns: now_ns(),
        };
        let enc = postcard::to_stdvec(&info)
            .map_err(|e| Error::other("encode pack info").with_source(e))?;
        self.packs.insert(no, enc.as_slice())?;
        for (i, r) in records.iter().enumerate() {
            if self.objects.get(r.id.as_bytes())?.is_some() {
                continue;
            }
            let loc = Location {
                pack: no,
                entry: i as u32,
                offset: r.offset,
                stored_len: r.stored_len,
                raw_len: r.raw_len,
                kind: r.kind,
                flags: r.flags,
            };
            self.objects.insert(r.id.as_bytes(), loc.encode())?;
        }
        Ok(no)
    }

    /// Add a snapshot file.
    pub fn add_snapshot(&mut self, id: &SnapshotId, bytes: &[u8]) -> Result<()> {
        self.snapshots.insert(id.as_bytes(), bytes)?;
        Ok(())
    }
}

fn decode_pack_info(b: &[u8]) -> Result<PackInfo> {
    crate::format::envelope::decode_exact("pack info in the index", b)
}

impl IndexReader {
    /// Where an object is, for reading: indexed, or condemned by a gc in progress.
    pub fn get(&self, id: &ObjectId) -> Result<Option<Location>> {
        if let Some(g) = self.objects.get(id.as_bytes())? {
            return Ok(Some(Location::decode(&g.value())?));
        }
        match self.condemned.get(id.as_bytes())? {
            Some(g) => Ok(Some(Location::decode(&g.value())?)),
            None => Ok(None),
        }
    }

    /// Where an object is, if indexed and not condemned.
    pub fn get_live(&self, id: &ObjectId) -> Result<Option<Location>> {
        match self.objects.get(id.as_bytes())? {
            Some(g) => Ok(Some(Location::decode(&g.value())?)),
            None => Ok(None),
        }
    }

    /// Whether an object is condemned (gc is about to delete it).
    pub fn is_condemned(&self, id: &ObjectId) -> Result<bool> {
        Ok(self.condemned.get(id.as_bytes())?.is_some())
    }

    /// Whether any object is condemned (a gc is between its plan and its deletions, or stopped
    /// there).
    pub fn any_condemned(&self) -> Result<bool> {
        Ok(self.condemned.first()?.is_some())
    }

    /// Whether an object is indexed and not condemned: writers may reuse it.
    pub fn contains(&self, id: &ObjectId) -> Result<bool> {
        Ok(self.objects.get(id.as_bytes())?.is_some())
    }

    /// A pack's info.
    pub fn pack(&self, no: u32) -> Result<Option<PackInfo>> {
        match self.packs.get(no)? {
            Some(g) => Ok(Some(decode_pack_info(g.value())?)),
            None => Ok(None),
        }
    }
}

/// Now, nanoseconds since the epoch.
pub fn now_ns() -> i64 {
    jiff::Timestamp::now().as_nanosecond() as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::pack::FLAG_ZSTD;

    #[test]
    fn location_round_trip_and_golden() {
        let l = Location {
            pack: 7,
            entry: 2,
            offset: 64,
            stored_len: 100,
            raw_len: 300,
            kind: Kind::Tree,
            flags: FLAG_ZSTD,
        };
        assert_eq!(
            crate::format::hexdump(&l.encode()),
            "07000000020000004000000064000000 2c010000 0101 0000".replace(' ', "")
        );
        assert_eq!(Location::decode(&l.encode()).unwrap(), l);
    }

    #[test]
    fn add_pack_and_lookup_across_handles() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("index.redb");
        let a = Index::open(&p, 1 << 20).unwrap();
        let b = Index::open(&p, 1 << 20).unwrap(); // a second "process" handle
        let rec = Record {
            id: ObjectId::of(b"x"),
            kind: Kind::Data,
            flags: 0,
            offset: 64,
            stored_len: 1,
            raw_len: 1,
        };
        let pid = PackId(Hash::of(b"pack"));
        let no = a.add_pack(&pid, 200, &[rec]).unwrap();
        assert_eq!(no, 1);
        // Idempotent.
        assert_eq!(b.add_pack(&pid, 200, &[rec]).unwrap(), 1);
        let loc = b.reader().unwrap().get(&rec.id).unwrap().unwrap();
        assert_eq!((loc.pack, loc.offset), (1, 64));
        assert_eq!(b.reader().unwrap().pack(1).unwrap().unwrap().id, pid);
    }
}
