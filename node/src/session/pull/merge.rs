//! Stage 7 of a pull: the per-space figures, and a merge snapshot for each space left with
//! several heads ([`puce_core::merge`]).

use puce_core::format::{printable, printable_bytes};

use super::list::Received;
use super::{Pull, Stored};
use crate::error::Result;
use crate::report::{ConflictReport, SpaceReport};
use crate::session::blocking;

/// Count the snapshots of `records` in their spaces' `reports`, and the objects `stored` in
/// the first space that got snapshots (objects are not tagged by space).
pub(super) fn tally(reports: &mut [SpaceReport], records: &[Received], stored: Stored) {
    for r in records {
        let e = &r.entry;
        if let Some(r) = reports.iter_mut().find(|r| r.space == e.snapshot.space) {
            r.snapshots += 1;
            r.logical_bytes += e.snapshot.summary.bytes;
        }
    }
    let target = reports
        .iter()
        .position(|r| r.snapshots > 0)
        .or((stored.objects > 0).then_some(0));
    if let Some(r) = target.and_then(|i| reports.get_mut(i)) {
        r.objects = stored.objects;
        r.bytes = stored.bytes;
        r.raw_bytes = stored.raw;
    }
}

/// Stage 7: flag received snapshots that drop a large share of their parent's files (logged;
/// `puce node status` lists them), merge the heads of each space of `reports` that has
/// several, and say which spaces were up to date.
pub(super) async fn merge(
    p: &Pull<'_>,
    reports: &mut [SpaceReport],
    records: &[Received],
) -> Result<()> {
    let r2 = p.repo.clone();
    let (all, lineage) = blocking(move || {
        let all = r2.snapshots()?;
        let lineage = puce_core::forgotten::lineage(&r2, &all)?;
        Ok((all, lineage))
    })
    .await?;
    for r in records {
        if let Some(f) = puce_core::history::shrink(&all, &r.entry) {
            tracing::warn!(
                "space '{}': snapshot {} from {} holds {} files, its parent {} held {}: \
                 flagged as a mass deletion (history keeps the parent; `puce node status`)",
                r.entry.snapshot.space,
                f.snapshot,
                p.conn.label,
                f.files_after,
                f.parent,
                f.files_before
            );
        }
    }
    for r in reports {
        if puce_core::history::heads(&all, &lineage, &r.space).len() < 2 {
            if r.snapshots == 0 {
                r.result = "up to date".into();
            }
            continue;
        }
        let r2 = p.repo.clone();
        let space = r.space.clone();
        let merged = blocking(move || Ok(puce_core::merge::merge_heads(&r2, &space)?)).await?;
        if let Some(m) = merged {
            r.merges = m.merges.len() as u64;
            for c in &m.conflicts {
                tracing::info!(
                    "space '{}': {} changed on both sides; the version of '{}' is kept as {}",
                    r.space,
                    printable_bytes(&c.path),
                    printable(&c.node),
                    printable_bytes(&c.copy)
                );
            }
            r.conflicts = m
                .conflicts
                .iter()
                .map(|c| ConflictReport {
                    path: String::from_utf8_lossy(&c.path).into_owned(),
                    copy: String::from_utf8_lossy(&c.copy).into_owned(),
                    node: c.node.clone(),
                })
                .collect();
        }
        if r.snapshots == 0 && r.merges == 0 {
            r.result = "up to date".into();
        }
    }
    Ok(())
}
