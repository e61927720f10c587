//! The stat cache: what a file looked like when it was last read in full.
//!
//! Kept outside the repository, in the user's cache directory (like borg's files cache), since it
//! describes one machine's files and can be thrown away at any time: a missing entry only costs
//! a re-read. Key: the first 16 bytes of BLAKE3 of the file's absolute path; value: inode, ctime,
//! mtime and size. A file is taken from the parent snapshot without being read when this entry
//! and the parent's size and mtime all match.

use std::path::Path;

use redb::{
    ConcurrencyMode, Database, ReadOnlyTable, ReadableDatabase, ReadableTableMetadata,
    TableDefinition,
};

use super::create_db;
use crate::error::{Error, ErrorKind, Result};

const STATCACHE: TableDefinition<[u8; 16], [u8; 32]> = TableDefinition::new("statcache");

/// Above this many entries the cache is cleared and rebuilt from scratch by the next snapshots.
const MAX_ENTRIES: u64 = 4_000_000;

/// The metadata that decides whether a file is unchanged since it was last read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatEntry {
    /// Inode number.
    pub ino: u64,
    /// Change time, nanoseconds.
    pub ctime_ns: i64,
    /// Modification time, nanoseconds.
    pub mtime_ns: i64,
    /// Size in bytes.
    pub size: u64,
}

impl StatEntry {
    fn encode(&self) -> [u8; 32] {
        let mut b = [0u8; 32];
        b[0..8].copy_from_slice(&self.ino.to_le_bytes());
        b[8..16].copy_from_slice(&self.ctime_ns.to_le_bytes());
        b[16..24].copy_from_slice(&self.mtime_ns.to_le_bytes());
        b[24..32].copy_from_slice(&self.size.to_le_bytes());
        b
    }
    fn decode(b: &[u8; 32]) -> StatEntry {
        let u = |i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[i..i + 8]);
            a
        };
        StatEntry {
            ino: u64::from_le_bytes(u(0)),
            ctime_ns: i64::from_le_bytes(u(8)),
            mtime_ns: i64::from_le_bytes(u(16)),
            size: u64::from_le_bytes(u(24)),
        }
    }
}

/// The key of a path in the stat cache.
pub fn stat_key(abs_path: &[u8]) -> [u8; 16] {
    let h = blake3::hash(abs_path);
    let mut k = [0u8; 16];
    k.copy_from_slice(&h.as_bytes()[..16]);
    k
}

/// The stat cache database.
pub struct StatCache {
    db: Database,
}

impl std::fmt::Debug for StatCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StatCache")
    }
}

/// A read view of the stat cache.
pub struct StatReader {
    table: Option<ReadOnlyTable<[u8; 16], [u8; 32]>>,
}

impl StatCache {
    /// Open or create the cache file at `path`.
    pub fn open(path: &Path) -> Result<StatCache> {
        if let Some(dir) = path.parent() {
            crate::fsutil::create_private_dirs(dir)
                .map_err(|e| Error::io("cannot create", dir, e))?;
        }
        let mut b = Database::builder();
        b.set_cache_size(8 << 20);
        b.set_concurrency_mode(ConcurrencyMode::MultiWriter);
        let db = create_db(&b, path).map_err(|e| {
            Error::new(
                ErrorKind::Io,
                format!(
                    "cannot open the stat cache {} (it can be deleted)",
                    path.display()
                ),
            )
            .with_source(e)
        })?;
        Ok(StatCache { db })
    }

    /// A read view.
    pub fn reader(&self) -> Result<StatReader> {
        let r = self.db.begin_read()?;
        match r.open_table(STATCACHE) {
            Ok(t) => Ok(StatReader { table: Some(t) }),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(StatReader { table: None }),
            Err(e) => Err(e.into()),
        }
    }

    /// Record the stat of files that were just read in full.
    pub fn put(&self, entries: &[([u8; 16], StatEntry)]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let w = self.db.begin_write()?;
        {
            let mut t = w.open_table(STATCACHE)?;
            if t.len()? > MAX_ENTRIES {
                t.retain(|_, _| false)?;
            }
            for (k, e) in entries {
                t.insert(k, e.encode())?;
            }
        }
        w.commit()?;
        Ok(())
    }
}

impl StatReader {
    /// The stat recorded for a path key.
    pub fn get(&self, key: &[u8; 16]) -> Result<Option<StatEntry>> {
        match &self.table {
            Some(t) => Ok(t.get(key)?.map(|g| StatEntry::decode(&g.value()))),
            None => Ok(None),
        }
    }
}
