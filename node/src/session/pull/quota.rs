//! A peer's quota during a pull (`quota` in node.toml): what the peer may make this node store,
//! in stored bytes ([`puce_core::ledger`]: what this node holds only because it delivered it).
//!
//! Measured once when the pull registers ([`puce_core::ledger::begin_pull`]: the use recorded
//! at the end of the peer's last pull when nothing else changed the repository since, else a
//! walk), then kept up to date with the bytes the pull stores, and recorded at its end: a chunk that would take the use over the quota is not stored and the pull is
//! refused (`Quota`), as are trees that would, before the commit. What was stored before is
//! durable, counted as the peer's (in transit), and not fetched again once the pull resumes
//! (after space is freed or the quota raised).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytesize::ByteSize;

use puce_core::ledger::{PeerLock, PullAccount};
use puce_core::{Repo, SnapshotId};

use crate::error::{Error, ErrorKind, Result};
use crate::session::{Conn, blocking};

/// The quota of one pull.
#[derive(Clone)]
pub(super) struct Quota {
    /// The quota.
    quota: u64,
    /// The peer's use when the pull registered.
    before: u64,
    /// How it was measured, to record the use at the end, and the lock of the pulls from the
    /// peer, held until the pull ends.
    account: Arc<(PullAccount, PeerLock)>,
    /// Stored bytes this pull added (or reserved) since.
    added: Arc<AtomicU64>,
    /// Who is refused, for the message: the peer and this node.
    peer: String,
    node: String,
}

impl Quota {
    /// The quota of the peer of `conn` with its use measured by `account`, or none without a
    /// quota.
    pub(super) fn new(conn: &Conn, account: Option<(PullAccount, PeerLock)>) -> Option<Quota> {
        let account = account?;
        Some(Quota {
            quota: conn.peer.quota?,
            before: account.0.before,
            account: Arc::new(account),
            added: Arc::default(),
            peer: conn.peer.name.clone(),
            node: conn.ctx.config.name.clone(),
        })
    }

    /// Refuse at the start when the use is already at or over the quota.
    pub(super) fn check_start(&self) -> Result<()> {
        if self.before >= self.quota {
            return Err(self.refusal(self.before, 0));
        }
        Ok(())
    }

    /// Reserve `len` bytes about to be stored; refused when that would exceed the quota.
    pub(super) fn reserve(&self, len: u64) -> Result<()> {
        let prev = self.added.fetch_add(len, Ordering::AcqRel);
        if self.before + prev + len > self.quota {
            self.added.fetch_sub(len, Ordering::AcqRel);
            return Err(self.refusal(self.before + prev, len));
        }
        Ok(())
    }

    /// At the end of a pull that delivered `delivered` and stored `stored` bytes (`present`:
    /// objects sent that this node had): record the peer's use for its next pull.
    pub(super) async fn finish(
        &self,
        repo: Arc<Repo>,
        delivered: Vec<SnapshotId>,
        stored: u64,
        present: u64,
    ) -> Result<()> {
        let account = self.account.clone();
        let t0 = std::time::Instant::now();
        let recorded = blocking(move || {
            Ok(puce_core::ledger::end_pull(
                &repo, &account.0, &delivered, stored, present,
            )?)
        })
        .await?;
        tracing::debug!(
            "quota of {}: use {} at the start ({}), {stored} bytes stored, {}; accounting took \
             {:?} at the start and {:?} at the end",
            self.peer,
            self.before,
            if self.account.0.recorded {
                "recorded"
            } else {
                "walked"
            },
            if recorded {
                "recorded for the next pull"
            } else {
                "not recorded (the repository changed otherwise)"
            },
            self.account.0.took,
            t0.elapsed(),
        );
        Ok(())
    }

    /// Give back a reservation of `len` bytes that were not stored (this node had them).
    pub(super) fn release(&self, len: u64) {
        self.added.fetch_sub(len, Ordering::AcqRel);
    }

    /// The refusal, logged here; its message goes to the peer too (`Error` code `Quota`).
    fn refusal(&self, used: u64, more: u64) -> Error {
        let more = if more > 0 {
            format!(
                " and the transfer needs {} more",
                ByteSize(more).display().iec()
            )
        } else {
            String::new()
        };
        let msg = format!(
            "quota exceeded: peer '{}' uses {} of its quota of {} on node '{}' ({used} of \
             {} bytes; counted: what that node stores only because '{}' delivered it){more}; \
             refused before storing more. What arrived is kept; the transfer resumes once space is freed there \
             (`puce node drop`, `puce forget`, then `puce gc`) or the quota is raised in its \
             node.toml",
            self.peer,
            ByteSize(used).display().iec(),
            ByteSize(self.quota).display().iec(),
            self.node,
            self.quota,
            self.peer,
        );
        tracing::warn!("{msg}");
        Error::new(ErrorKind::Quota, msg)
    }
}
