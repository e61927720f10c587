use anyhow::{Result, bail};
use comfy_table::Cell;
use puce_core::format::printable;
use puce_core::gc::GcOptions;
use puce_core::retention::{Decision, GroupBy, Policy, decide};
use puce_core::{Repo, SnapshotEntry};
use serde_json::json;

use super::Ctx;
use crate::args::{ForgetArgs, GroupByArg};
use crate::output;

pub fn group_by(g: GroupByArg) -> GroupBy {
    match g {
        GroupByArg::Space => GroupBy::Space,
        GroupByArg::Host => GroupBy::SpaceHost,
    }
}

/// Decide with `policy`, or, when it is empty, with each space's stored policy.
pub fn decisions(
    repo: &Repo,
    snaps: &[SnapshotEntry],
    policy: &Policy,
    g: GroupByArg,
) -> Result<Vec<Decision>> {
    let stored = if policy.is_empty() {
        let all = repo.all_space_settings()?;
        if all.iter().all(|(_, s)| s.policy.is_empty()) {
            bail!(puce_core::Error::invalid(
                "no policy given and no space has a stored policy: give --keep-* flags, or \
                 store one with `puce policy set SPACE --keep-...`"
            ));
        }
        Some(all)
    } else {
        None
    };
    let lookup = |space: &str| -> Option<Policy> {
        match &stored {
            None => Some(policy.clone()),
            Some(all) => all
                .iter()
                .find(|(n, _)| n == space)
                .map(|(_, s)| s.policy.clone()),
        }
    };
    // Received snapshots count at the earlier of their own time and their arrival here.
    let arrivals = puce_core::reach::arrivals(repo)?;
    Ok(decide(
        snaps,
        &|id| arrivals.get(id).map(|r| r.arrived_ns),
        group_by(g),
        &jiff::tz::TimeZone::system(),
        &lookup,
    )?)
}

pub fn print_decisions(decisions: &[Decision]) {
    let mut t = output::table(&["ID", "Time", "Space", "Host", "Decision", "Reasons"], &[]);
    for d in decisions {
        t.add_row(vec![
            Cell::new(d.id.short(8)),
            Cell::new(match d.claimed_ns {
                Some(c) => format!(
                    "{} (arrived; dated {})",
                    output::time(d.time_ns),
                    output::time(c)
                ),
                None => output::time(d.time_ns),
            }),
            Cell::new(&d.space),
            Cell::new(printable(&d.host)),
            Cell::new(if d.keep { "keep" } else { "remove" }),
            Cell::new(d.reasons.join(", ")),
        ]);
    }
    output::print_table(&t);
}

pub fn decisions_json(decisions: &[Decision]) -> serde_json::Value {
    json!(
        decisions
            .iter()
            .map(|d| json!({
                "id": d.id.to_hex(),
                "time": output::time_utc(d.time_ns),
                "claimed_time": d.claimed_ns.map(output::time_utc),
                "space": d.space,
                "host": d.host,
                "keep": d.keep,
                "reasons": d.reasons,
            }))
            .collect::<Vec<_>>()
    )
}

pub fn run(ctx: &Ctx, a: ForgetArgs) -> Result<i32> {
    let repo = ctx.open()?;
    let all = repo.snapshots()?;
    // Snapshots with a forget record are already forgotten: finished below if their forget was
    // interrupted, or kept by a peer's protection period (a hold) until it ends. A policy
    // decides on the others.
    let forgotten = puce_core::forgotten::ids(&repo)?;
    let in_scope: Vec<SnapshotEntry> = all
        .iter()
        .filter(|s| a.spaces.is_empty() || a.spaces.contains(&s.snapshot.space))
        .filter(|s| !forgotten.contains(&s.id))
        .cloned()
        .collect();
    let (remove, decisions): (Vec<_>, Vec<Decision>) = if !a.snapshots.is_empty() {
        if !a.policy.is_empty() {
            bail!(puce_core::Error::invalid(
                "give either snapshot ids or --keep-* flags, not both"
            ));
        }
        let mut ids = Vec::new();
        for spec in &a.snapshots {
            ids.push(puce_core::repo::resolve_in(&all, spec)?.id);
        }
        (ids, Vec::new())
    } else {
        let d = decisions(&repo, &in_scope, &a.policy, a.group_by)?;
        (d.iter().filter(|d| !d.keep).map(|d| d.id).collect(), d)
    };
    if !a.dry_run {
        // For good: a forget record stays, so that no sync brings the snapshots back, and
        // peers replicating their spaces forget them too.
        puce_core::forgotten::forget(&repo, &remove)?;
    }
    let gc_report = if a.prune && !a.dry_run {
        Some(puce_core::gc::gc(
            &repo,
            &GcOptions::default(),
            &puce_core::progress::NoProgress,
        )?)
    } else {
        None
    };
    if ctx.json {
        output::json(&json!({
            "dry_run": a.dry_run,
            "removed": remove.iter().map(|i| i.to_hex()).collect::<Vec<_>>(),
            "decisions": decisions_json(&decisions),
            "gc": gc_report,
        }))?;
    } else {
        if !decisions.is_empty() && (a.dry_run || !ctx.quiet) {
            print_decisions(&decisions);
        }
        if !ctx.quiet {
            let verb = if a.dry_run { "would remove" } else { "removed" };
            println!(
                "{verb} {} of {} snapshots",
                remove.len(),
                in_scope.len().max(remove.len())
            );
            if let Some(g) = &gc_report {
                super::gc::print_report(g);
            } else if !a.dry_run && !remove.is_empty() {
                println!("run `puce gc` to free the space they held (or use --prune)");
            }
        }
    }
    Ok(0)
}
