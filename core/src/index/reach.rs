//! The reach tables: which objects each *scope* reaches (see [`crate::reach`]).
//!
//! - `scopes`: scope key (`s/<space>` or `p/<node id hex>`) -> scope number (u32).
//! - `reach`: (scope number, object id) -> (): the object is reachable from the scope.
//! - `reached`: (snapshot id, scope number) -> (): everything the snapshot reaches is in the
//!   scope.
//!
//! Derived data like the rest of the index: cleared by `repair index`, rebuilt on demand.

use redb::{ReadOnlyTable, ReadableDatabase, ReadableTable, TableDefinition};

use super::{Index, META};
use crate::error::{Error, Result};
use crate::hash::{ObjectId, SnapshotId};

pub(super) const SCOPES: TableDefinition<&str, u32> = TableDefinition::new("scopes");
pub(super) const REACH: TableDefinition<(u32, [u8; 32]), ()> = TableDefinition::new("reach");
pub(super) const REACHED: TableDefinition<([u8; 32], u32), ()> = TableDefinition::new("reached");

/// A read view of the `reach` table.
pub struct ReachReader {
    reach: ReadOnlyTable<(u32, [u8; 32]), ()>,
}

impl ReachReader {
    /// Whether `id` is reachable from scope `scope`.
    pub fn contains(&self, scope: u32, id: &ObjectId) -> Result<bool> {
        Ok(self.reach.get((scope, *id.as_bytes()))?.is_some())
    }
}

impl Index {
    /// A read view of the reach table.
    pub fn reach_reader(&self) -> Result<ReachReader> {
        let r = self.db.begin_read()?;
        Ok(ReachReader {
            reach: r.open_table(REACH)?,
        })
    }

    /// The number of scope `key`, if it has one.
    pub fn scope(&self, key: &str) -> Result<Option<u32>> {
        let r = self.db.begin_read()?;
        Ok(r.open_table(SCOPES)?.get(key)?.map(|g| g.value()))
    }

    /// The number of scope `key`, given one if it has none yet.
    pub fn scope_or_create(&self, key: &str) -> Result<u32> {
        if let Some(n) = self.scope(key)? {
            return Ok(n);
        }
        let w = self.db.begin_write()?;
        let n;
        {
            let mut scopes = w.open_table(SCOPES)?;
            let existing = scopes.get(key)?.map(|g| g.value());
            n = match existing {
                Some(n) => n,
                None => {
                    let mut meta = w.open_table(META)?;
                    let next = meta.get("next_scope")?.map(|g| g.value()).unwrap_or(1);
                    let n = u32::try_from(next)
                        .map_err(|_| Error::other("more than 4 billion reach scopes"))?;
                    meta.insert("next_scope", next + 1)?;
                    scopes.insert(key, n)?;
                    n
                }
            };
        }
        w.commit()?;
        Ok(n)
    }

    /// Add objects to a scope.
    pub fn reach_insert(&self, scope: u32, ids: &[ObjectId]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let w = self.db.begin_write()?;
        {
            let mut t = w.open_table(REACH)?;
            for id in ids {
                t.insert((scope, *id.as_bytes()), ())?;
            }
        }
        super::quota::bump_inserts(&w, std::iter::once(scope))?;
        w.commit()?;
        Ok(())
    }

    /// Whether snapshot `snap` is wholly in scope `scope`.
    pub fn is_reached(&self, snap: &SnapshotId, scope: u32) -> Result<bool> {
        let r = self.db.begin_read()?;
        Ok(r.open_table(REACHED)?
            .get((*snap.as_bytes(), scope))?
            .is_some())
    }

    /// The (snapshot, scope) pairs known to be wholly reached.
    pub fn reached(&self) -> Result<Vec<(SnapshotId, u32)>> {
        let r = self.db.begin_read()?;
        let t = r.open_table(REACHED)?;
        let mut out = Vec::new();
        for item in t.iter()? {
            let (k, _) = item?;
            let (s, n) = k.value();
            out.push((SnapshotId(crate::hash::Hash(s)), n));
        }
        Ok(out)
    }

    /// Add objects to scopes and mark (snapshot, scope) pairs as wholly reached, in one
    /// transaction.
    pub fn reach_commit(
        &self,
        adds: &[(u32, Vec<ObjectId>)],
        reached: &[(SnapshotId, u32)],
    ) -> Result<()> {
        if adds.iter().all(|(_, ids)| ids.is_empty()) && reached.is_empty() {
            return Ok(());
        }
        let w = self.db.begin_write()?;
        {
            let mut t = w.open_table(REACH)?;
            for (scope, ids) in adds {
                for id in ids {
                    t.insert((*scope, *id.as_bytes()), ())?;
                }
            }
            let mut r = w.open_table(REACHED)?;
            for (snap, scope) in reached {
                r.insert((*snap.as_bytes(), *scope), ())?;
            }
        }
        let added = adds.iter().filter(|(_, ids)| !ids.is_empty());
        super::quota::bump_inserts(&w, added.map(|(s, _)| *s))?;
        w.commit()?;
        Ok(())
    }

    /// Empty scopes (after a forget): their snapshots are walked again when next needed.
    pub fn clear_scopes(&self, scopes: &[u32]) -> Result<()> {
        if scopes.is_empty() {
            return Ok(());
        }
        let w = self.db.begin_write()?;
        {
            let mut t = w.open_table(REACH)?;
            for &s in scopes {
                t.retain_in((s, [0u8; 32])..=(s, [0xffu8; 32]), |_, _| false)?;
            }
            w.open_table(REACHED)?
                .retain(|(_, n), _| !scopes.contains(&n))?;
        }
        super::quota::bump_epoch(&w)?;
        w.commit()?;
        Ok(())
    }

    /// Every scope, by key.
    pub fn scopes(&self) -> Result<Vec<(String, u32)>> {
        let r = self.db.begin_read()?;
        let t = r.open_table(SCOPES)?;
        let mut out = Vec::new();
        for item in t.iter()? {
            let (k, v) = item?;
            out.push((k.value().to_string(), v.value()));
        }
        Ok(out)
    }

    /// Call `f` with each object of scope `scope` (in id order), without holding them all.
    pub fn reach_scan(&self, scope: u32, mut f: impl FnMut(&ObjectId) -> Result<()>) -> Result<()> {
        let r = self.db.begin_read()?;
        let t = r.open_table(REACH)?;
        for item in t.range((scope, [0u8; 32])..=(scope, [0xffu8; 32]))? {
            let (k, _) = item?;
            f(&ObjectId(crate::hash::Hash(k.value().1)))?;
        }
        Ok(())
    }

    /// Number of entries in the reach table (reports, tests).
    pub fn reach_len(&self) -> Result<u64> {
        use redb::ReadableTableMetadata;
        let r = self.db.begin_read()?;
        Ok(r.open_table(REACH)?.len()?)
    }
}
