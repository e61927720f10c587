//! gc's second half: carry out a [`Plan`] (steps 3 to 5 of the module documentation): condemn
//! the dead objects of doomed packs, wait for the writers that may reuse them, rescue what the
//! snapshots committed meanwhile need, then copy the live objects and delete the old packs.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use crate::backend::FileKind;
use crate::error::{Error, Result};
use crate::format::pack::Record;
use crate::hash::{ObjectId, PackId};
use crate::index::Location;
use crate::pack::PackWriter;
use crate::progress::Progress;
use crate::repo::Repo;
use crate::writer_session;

use super::plan::{Marker, PackFate, Plan, Planned};
use super::{GcOptions, GcReport, pause_for_tests};

/// Carry out `plan`, then release the gc lock it holds. Returns what was done.
pub fn execute(plan: Plan, progress: &dyn Progress) -> Result<GcReport> {
    let Plan {
        repo,
        lock: _lock,
        opts,
        mut report,
        mut marker,
        marked,
        packs,
        orphans,
    } = plan;
    report.dry_run = false;
    if !marker.reachable_condemned.is_empty() {
        // Left by an earlier interrupted gc and still needed.
        report.rescued += repo.index().rescue(&marker.reachable_condemned)?;
        marker.reachable_condemned.clear();
    }

    // 3. Condemn the dead objects of doomed packs.
    let mut doomed: Vec<&Planned> = packs.iter().filter(|p| p.fate != PackFate::Keep).collect();
    condemn(&repo, &marker, &doomed)?;
    pause_for_tests()?;

    // 4. Wait for the writers that may have decided to reuse a condemned object.
    if !wait_for_writers(&repo, &opts, &mut report, progress)? {
        report.bytes_freed = 0;
        report.packs_deleted = 0;
        report.packs_repacked = 0;
        report.packs_orphaned = 0;
        return Ok(report);
    }
    // Mark again from the snapshots committed meanwhile; rescue what they need.
    marker.reader = repo.index().reader()?;
    let snaps = repo.snapshots()?;
    for s in snaps.iter().filter(|s| !marked.contains(&s.id)) {
        marker.walk(&repo, s.snapshot.root)?;
    }
    if !marker.reachable_condemned.is_empty() {
        report.rescued += repo.index().rescue(&marker.reachable_condemned)?;
    }

    // 5. Retire doomed packs in batches, so that space comes back as gc goes (on a full disk,
    //    the packs with nothing live go first: that needs no new space at all).
    doomed.sort_by_key(|p| p.fate != PackFate::Delete);
    let (mut freed, written, rewritten) = retire_doomed(&repo, &doomed)?;
    freed += delete_orphans(&repo, &orphans, progress)?;
    report.bytes_rewritten = rewritten;
    report.bytes_freed = freed.saturating_sub(written);
    Ok(report)
}

/// Move the dead objects of `doomed` packs that the index points at to the condemned table.
fn condemn(repo: &Repo, marker: &Marker, doomed: &[&Planned]) -> Result<()> {
    let mut to_condemn = Vec::new();
    for p in doomed {
        let pm = &marker.packs[&p.no];
        for (i, r) in p.records.iter().enumerate() {
            if !pm.get(i as u32)
                && let Some(loc) = marker.reader.get_live(&r.id)?
                && loc.pack == p.no
                && loc.entry == i as u32
            {
                to_condemn.push((r.id, loc));
            }
        }
    }
    repo.index().condemn(&to_condemn)?;
    Ok(())
}

/// Wait for the writer sessions live now, up to `opts.max_wait`. Returns false (and sets
/// `report.deferred`) when some are still running then.
fn wait_for_writers(
    repo: &Repo,
    opts: &GcOptions,
    report: &mut GcReport,
    progress: &dyn Progress,
) -> Result<bool> {
    let waiting: Vec<(u64, _)> = writer_session::live_sessions(repo)?;
    report.sessions_waited = waiting.len() as u64;
    let wait_start = Instant::now();
    let mut pending: Vec<u64> = waiting.iter().map(|(id, _)| *id).collect();
    while !pending.is_empty() {
        pending.retain(|id| writer_session::is_alive(repo.root(), *id));
        if pending.is_empty() {
            break;
        }
        if wait_start.elapsed() >= opts.max_wait {
            report.deferred = true;
            report.waited_ms = wait_start.elapsed().as_millis() as u64;
            progress.warn(&format!(
                "{} writers are still running after {:?}: the condemned objects stay until the \
                 next gc",
                pending.len(),
                opts.max_wait
            ));
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    report.waited_ms = wait_start.elapsed().as_millis() as u64;
    Ok(true)
}

/// Copy the live objects of `doomed` packs into new packs and retire the old ones, batch by
/// batch. A batch is the source packs whose live objects are all in sealed new packs. Returns
/// the bytes deleted, the bytes of new packs written, and the bytes of objects copied.
fn retire_doomed(repo: &Repo, doomed: &[&Planned]) -> Result<(u64, u64, u64)> {
    let mut batch = Batch::default();
    let mut writer: Option<PackWriter> = None;
    let target = repo.config().pack_target_size;
    let (mut freed, mut written, mut rewritten) = (0u64, 0u64, 0u64);
    for p in doomed {
        // The objects the index still locates here need a copy: the marked ones, and any a
        // writer rescued after gc's own rescue (see `keep_reachable`). A fresh view per pack
        // keeps the window for such a rescue short; one that falls inside it makes the safety
        // check of `retire_packs` stop gc before anything of this batch is deleted.
        let reader = repo.index().reader()?;
        let mut live: Vec<(&Record, Location)> = Vec::new();
        for (i, r) in p.records.iter().enumerate() {
            if let Some(loc) = reader.get_live(&r.id)?
                && loc.pack == p.no
                && loc.entry == i as u32
            {
                live.push((r, loc));
            }
        }
        if !live.is_empty() {
            let data = repo.backend().read(FileKind::Pack, &p.id.to_hex())?;
            for (r, loc) in live {
                let start = r.offset as usize;
                let end = start + r.stored_len as usize;
                let stored = data
                    .get(start..end)
                    .ok_or_else(|| Error::corrupt(format!("pack {} is truncated", p.id)))?;
                // Verify before copying: gc must not spread damage.
                repo.codec()
                    .decode_object(&r.id, r.kind, r.flags, r.raw_len, stored)
                    .map_err(|e| e.context(format!("gc: pack {}", p.id.short(16))))?;
                let w = match writer.as_mut() {
                    Some(w) => w,
                    None => writer.insert(PackWriter::new(repo.backend().as_ref(), repo.codec())?),
                };
                w.add(r.id, r.kind, r.flags, r.raw_len, stored)?;
                rewritten += stored.len() as u64 + 96;
                batch.moved.push((r.id, loc));
                if w.len() >= target
                    && let Some(w) = writer.take()
                {
                    let sealed = w.finish()?;
                    written += sealed.1;
                    batch.new_packs.push(sealed);
                    // Sources completed before this object are safe to retire now.
                    freed += batch.retire(repo)?;
                }
            }
        }
        batch
            .sources
            .push((p.no, p.id, p.size, p.records.iter().map(|r| r.id).collect()));
        if writer.as_ref().is_none_or(|w| w.is_empty()) {
            // Nothing of this source waits in an unsealed pack.
            freed += batch.retire(repo)?;
        }
    }
    if let Some(w) = writer.take() {
        if w.is_empty() {
            w.abort();
        } else {
            let sealed = w.finish()?;
            written += sealed.1;
            batch.new_packs.push(sealed);
        }
    }
    freed += batch.retire(repo)?;
    Ok((freed, written, rewritten))
}

/// Delete the packs the index did not list when gc planned. Returns the bytes deleted.
fn delete_orphans(repo: &Repo, orphans: &[(String, u64)], progress: &dyn Progress) -> Result<u64> {
    // Nothing indexes a pack it did not write without the gc lock (see `try_gc_lock`), so the
    // orphans are still unindexed; checked again all the same, since deleting an indexed pack
    // would lose data.
    let indexed_now: HashSet<String> = repo
        .index()
        .packs()?
        .iter()
        .map(|(_, p)| p.id.to_hex())
        .collect();
    let mut freed = 0;
    for (name, size) in orphans {
        if indexed_now.contains(name) {
            progress.warn(&format!(
                "pack {name} was indexed while gc ran; gc leaves it in place"
            ));
            continue;
        }
        repo.backend().remove(FileKind::Pack, name)?;
        freed += size;
    }
    Ok(freed)
}

/// Doomed packs whose live objects are copied, and the new packs holding the copies.
#[derive(Default)]
struct Batch {
    new_packs: Vec<(PackId, u64, Vec<Record>)>,
    moved: Vec<(ObjectId, Location)>,
    sources: Vec<(u32, PackId, u64, Vec<ObjectId>)>,
}

impl Batch {
    /// Index the new packs and retire the sources in one transaction, then delete the old
    /// files. Returns the bytes deleted. The moves whose copy is still in an unsealed pack stay
    /// for the next batch (their sources are not in this batch).
    fn retire(&mut self, repo: &Repo) -> Result<u64> {
        if self.sources.is_empty() && self.new_packs.is_empty() {
            return Ok(0);
        }
        let sealed: HashSet<ObjectId> = self
            .new_packs
            .iter()
            .flat_map(|(_, _, recs)| recs.iter().map(|r| r.id))
            .collect();
        let (now, later): (Vec<_>, Vec<_>) = self
            .moved
            .drain(..)
            .partition(|(id, _)| sealed.contains(id));
        self.moved = later;
        let retired: Vec<(u32, Vec<ObjectId>)> = self
            .sources
            .iter()
            .map(|(no, _, _, members)| (*no, members.clone()))
            .collect();
        repo.index()
            .retire_packs(&self.new_packs, &now, &[], &retired)?;
        let mut freed = 0;
        for (_, id, size, _) in self.sources.drain(..) {
            repo.backend().remove(FileKind::Pack, &id.to_hex())?;
            freed += size;
        }
        self.new_packs.clear();
        Ok(freed)
    }
}
