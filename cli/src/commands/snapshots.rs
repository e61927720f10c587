use anyhow::Result;
use comfy_table::Cell;
use puce_core::format::printable;
use serde_json::json;

use super::Ctx;
use crate::args::SnapshotsArgs;
use crate::output;

pub fn run(ctx: &Ctx, a: SnapshotsArgs) -> Result<i32> {
    let repo = ctx.open()?;
    // A snapshot with a forget record (its forget interrupted) is not listed.
    let forgotten = puce_core::forgotten::ids(&repo)?;
    let snaps: Vec<_> = repo
        .snapshots()?
        .into_iter()
        .filter(|s| !forgotten.contains(&s.id))
        .filter(|s| a.space.as_ref().is_none_or(|sp| &s.snapshot.space == sp))
        .collect();
    if ctx.json {
        let v: Vec<_> = snaps
            .iter()
            .map(|e| {
                let s = &e.snapshot;
                json!({
                    "id": e.id.to_hex(),
                    "time": output::time_utc(s.time_ns),
                    "space": s.space,
                    "host": s.host,
                    "user": s.user,
                    "source": s.source,
                    "tags": s.tags,
                    "parents": s.parents.iter().map(|p| p.to_hex()).collect::<Vec<_>>(),
                    "tree": s.root.to_hex(),
                    "origin": s.origin,
                    "summary": s.summary,
                })
            })
            .collect();
        return output::json(&v).map(|_| 0);
    }
    let mut t = output::table(
        &["ID", "Time", "Space", "Host", "Tags", "Files", "Size"],
        &[5, 6],
    );
    for e in &snaps {
        let s = &e.snapshot;
        t.add_row(vec![
            Cell::new(e.id.short(8)),
            Cell::new(output::time(s.time_ns)),
            Cell::new(printable(&s.space)),
            Cell::new(printable(&s.host)),
            Cell::new(printable(&s.tags.join(","))),
            Cell::new(s.summary.files),
            Cell::new(output::size(s.summary.bytes)),
        ]);
    }
    output::print_table(&t);
    if !ctx.quiet {
        let n = snaps.len();
        println!("{n} snapshot{}", if n == 1 { "" } else { "s" });
    }
    print_held(&repo)?;
    Ok(0)
}

/// What this node holds blind for other nodes: opaque (no key here), so by owner and label.
fn print_held(repo: &puce_core::Repo) -> Result<()> {
    let held = puce_core::blind::summaries(repo.root())?;
    if held.is_empty() {
        return Ok(());
    }
    println!("\nHeld blind for other nodes (encrypted with their keys: not readable here):");
    let mut t = output::table(
        &[
            "Owner node",
            "Space label",
            "Snapshots",
            "Arrived",
            "Stored (all)",
        ],
        &[2, 4],
    );
    for h in &held {
        for (label, n) in &h.spaces {
            t.add_row(vec![
                Cell::new(&h.owner[..16]),
                Cell::new(&label[..12]),
                Cell::new(n),
                Cell::new(output::time(h.arrived_ns)),
                Cell::new(output::size(h.stored_bytes)),
            ]);
        }
    }
    output::print_table(&t);
    Ok(())
}
