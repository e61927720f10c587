//! The counters a peer's recorded quota use is checked against (see
//! [`crate::ledger::begin_pull`]), in the `meta` table: `ledger_epoch`, bumped by every
//! transaction that removes objects from `objects` or clears reach scopes, and
//! `inserts/<scope number>`, bumped by every transaction that adds objects to that scope.
//! Both are bumped inside the transactions that make the change, at no extra commit.

use redb::{ReadableDatabase, ReadableTable, Table, WriteTransaction};

use super::{Index, META};
use crate::error::Result;

/// The `meta` key of the epoch of object removals.
const LEDGER_EPOCH: &str = "ledger_epoch";

fn inserts_key(scope: u32) -> String {
    format!("inserts/{scope}")
}

fn bump(meta: &mut Table<'_, &str, u64>, key: &str) -> Result<()> {
    let v = meta.get(key)?.map(|g| g.value()).unwrap_or(0);
    meta.insert(key, v + 1)?;
    Ok(())
}

/// Within a write transaction: objects are removed or scopes cleared, so no quota use
/// recorded before is exact any more.
pub(super) fn bump_epoch(w: &WriteTransaction) -> Result<()> {
    bump(&mut w.open_table(META)?, LEDGER_EPOCH)
}

/// Within a write transaction: objects are added to `scopes`.
pub(super) fn bump_inserts(w: &WriteTransaction, scopes: impl Iterator<Item = u32>) -> Result<()> {
    let mut meta = w.open_table(META)?;
    let mut seen = Vec::new();
    for s in scopes {
        if !seen.contains(&s) {
            seen.push(s);
            bump(&mut meta, &inserts_key(s))?;
        }
    }
    Ok(())
}

impl Index {
    /// The epoch of object removals, and the number of transactions that added objects to
    /// scope `scope` (0 without a scope).
    pub fn quota_counters(&self, scope: Option<u32>) -> Result<(u64, u64)> {
        let r = self.db.begin_read()?;
        let meta = r.open_table(META)?;
        let get = |k: &str| -> Result<u64> { Ok(meta.get(k)?.map(|g| g.value()).unwrap_or(0)) };
        let inserts = match scope {
            Some(s) => get(&inserts_key(s))?,
            None => 0,
        };
        Ok((get(LEDGER_EPOCH)?, inserts))
    }
}
