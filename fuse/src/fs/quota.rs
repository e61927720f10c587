//! A space's quota through the mount (`puce space set NAME --quota`): once the space's snapshots
//! reach its quota in stored bytes, creating a file or opening one to change it fails with
//! `ENOSPC`, the reason in the log. The use is measured at most every [`REFRESH`] per space
//! (its commits count from then on); what is written to files already open is not counted
//! before it is committed.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{PuceFs, lock};
use crate::error::FsResult;

/// How long a measured use is trusted.
const REFRESH: Duration = Duration::from_secs(5);

/// Per space: when measured, and the reason of the refusal while it holds (none: room left).
#[derive(Default)]
pub(super) struct QuotaCache(Mutex<HashMap<String, (Instant, Option<String>)>>);

impl PuceFs {
    /// `ENOSPC` (logged with the reason) when `space` is at or over its quota.
    pub(super) fn check_quota(&self, space: &str) -> FsResult<()> {
        let mut cache = lock(&self.quota.0)?;
        let fresh = cache.get(space).filter(|(at, _)| at.elapsed() < REFRESH);
        let refusal = match fresh {
            Some((_, r)) => r.clone(),
            None => {
                let r = match puce_core::ledger::check_space_quota(
                    &self.repo,
                    space,
                    0,
                    "writes through the mount refused",
                ) {
                    Ok(()) => None,
                    Err(e) if e.kind() == puce_core::ErrorKind::Quota => {
                        Some(e.message().to_string())
                    }
                    Err(e) => return Err(e.into()),
                };
                cache.insert(space.to_string(), (Instant::now(), r.clone()));
                r
            }
        };
        match refusal {
            Some(why) => Err(puce_core::Error::new(puce_core::ErrorKind::Quota, why).into()),
            None => Ok(()),
        }
    }
}
