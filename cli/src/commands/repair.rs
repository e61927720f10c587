//! `puce repair index` and `puce repair --from PEER`.

use std::sync::Arc;

use anyhow::Result;
use puce_core::check::{CheckOptions, check};
use puce_core::reindex::rebuild_index;
use puce_node::heal::repair_now;
use serde_json::json;

use super::Ctx;
use super::node::{node_dir, node_err};
use crate::args::RepairArgs;
use crate::output;
use crate::progress::Bar;

pub fn run_index(ctx: &Ctx) -> Result<i32> {
    let repo = ctx.open()?;
    let bar = Bar::new("repair", ctx.quiet || ctx.json);
    let r = rebuild_index(&repo, &bar);
    bar.finish();
    let r = r?;
    if ctx.json {
        output::json(&r)?;
    } else if !ctx.quiet {
        for p in &r.packs_unreadable {
            println!("warning: pack {p} is unreadable and was left out");
        }
        for s in &r.snapshots_bad {
            println!("warning: snapshot file {s} is damaged and was left out");
        }
        println!(
            "index rebuilt: {} packs ({} recovered by scanning), {} objects, {} snapshots",
            r.packs, r.packs_scanned, r.objects, r.snapshots
        );
    }
    Ok(
        if r.packs_unreadable.is_empty() && r.snapshots_bad.is_empty() {
            0
        } else {
            1
        },
    )
}

/// `puce repair --from PEER...`: check every byte, then heal what is damaged from the peers.
pub fn run_heal(ctx: &Ctx, a: RepairArgs) -> Result<i32> {
    if a.from.is_empty() {
        return Err(puce_core::Error::invalid(
            "say what to repair: `puce repair --from PEER` heals damaged data from a peer node, \
             `puce repair index` rebuilds the index",
        )
        .into());
    }
    let repo = ctx.open()?;
    let dir = node_dir(ctx, &a.dir)?;
    // Fail on a bad peer name or node directory before the long check.
    let config = puce_node::config::NodeConfig::load(&dir).map_err(node_err)?;
    for p in &a.from {
        config.find_peer(p).map_err(node_err)?;
    }
    let bar = Bar::new("check", ctx.quiet || ctx.json);
    let damage = check(
        &repo,
        &CheckOptions {
            read_data: true,
            threads: 0,
            sample: None,
        },
        &bar,
    );
    bar.finish();
    let damage = damage?;
    let problems: Vec<&puce_core::check::Problem> = damage
        .problems
        .iter()
        .filter(|p| p.kind != "unindexed_pack")
        .collect();
    if damage.is_ok() {
        if ctx.json {
            output::json(&json!({
                "ok": true,
                "problems": 0,
                "heal": serde_json::Value::Null,
            }))?;
        } else if !ctx.quiet {
            println!("nothing to repair: `check --read-data` finds no damage");
        }
        return Ok(0);
    }
    if !ctx.json && !ctx.quiet {
        println!(
            "check found {} problems ({} objects damaged or missing); healing from {}",
            problems.len(),
            damage.bad_objects.len(),
            a.from
                .iter()
                .map(|p| format!("peer '{p}'"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let nproblems = problems.len();
    let bar = Arc::new(Bar::new("heal", ctx.quiet || ctx.json));
    let r = repair_now(repo, &dir, &a.from, damage, bar.clone());
    bar.finish();
    let r = r.map_err(node_err)?;
    let ok = r.is_complete();
    if ctx.json {
        output::json(&json!({
            "ok": ok,
            "problems": nproblems,
            "heal": r,
        }))?;
    } else {
        print_heal(ctx, &r);
    }
    if ok {
        if !ctx.quiet && !ctx.json {
            println!("repaired: every damaged or missing object was healed");
        }
        Ok(0)
    } else {
        eprintln!(
            "error: {} objects and {} snapshot records could not be healed from the peers named \
             (listed above with the files they belong to): try another peer with --from, or \
             restore those files from another copy and take a new snapshot",
            r.lost.len(),
            r.snapshots_lost.len()
        );
        Ok(1)
    }
}

fn print_heal(ctx: &Ctx, r: &puce_core::heal::HealReport) {
    if !ctx.quiet {
        for s in &r.sources {
            if s.objects > 0 || s.snapshots > 0 {
                println!(
                    "healed {} objects ({}) and {} snapshot records from peer '{}'",
                    s.objects,
                    output::size(s.bytes),
                    s.snapshots,
                    s.name
                );
            } else if s.error.is_none() {
                println!(
                    "peer '{}' had none of the {} objects asked for",
                    s.name, s.asked
                );
            }
        }
        println!(
            "{} damaged packs retired ({} good objects copied into {} new packs); {} damaged \
             objects no snapshot needs dropped",
            r.packs_retired, r.objects_rewritten, r.packs_written, r.objects_unreferenced_dropped
        );
    }
    for s in &r.sources {
        if let Some(e) = &s.error {
            eprintln!("warning: peer '{}': {e}", s.name);
        }
    }
    for p in &r.packs_unreadable {
        eprintln!("error: pack {p} cannot be read (an I/O error, not damage): left alone");
    }
    for l in &r.lost {
        println!(
            "lost: {} object {} of '{}' in snapshot {} (space '{}'): no peer has it",
            l.kind,
            l.id.get(..16).unwrap_or(&l.id),
            l.path,
            l.snapshot.get(..12).unwrap_or(&l.snapshot),
            l.space
        );
    }
    for s in &r.snapshots_lost {
        println!("lost: snapshot record {s}: no peer has it");
    }
    for s in &r.affected {
        println!(
            "still damaged: snapshot {} of space '{}' ({}), {} paths:",
            s.id.get(..12).unwrap_or(&s.id),
            s.space,
            output::time(s.time_ns),
            s.damaged_paths
        );
        for p in &s.paths {
            println!("    {p}");
        }
        if s.damaged_paths as usize > s.paths.len() {
            println!("    ...");
        }
    }
}
