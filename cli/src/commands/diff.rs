use anyhow::Result;
use puce_core::format::printable;
use puce_core::snapshot::{ChangeKind, diff};
use serde_json::json;

use super::Ctx;
use crate::args::DiffArgs;
use crate::output;

pub fn run(ctx: &Ctx, a: DiffArgs) -> Result<i32> {
    let repo = ctx.open()?;
    let all = repo.snapshots()?;
    let sa = puce_core::repo::resolve_in(&all, &a.a)?;
    let sb = puce_core::repo::resolve_in(&all, &a.b)?;
    let mut changes = Vec::new();
    let stats = diff(&repo, sa.snapshot.root, sb.snapshot.root, &mut |c| {
        if c.change == ChangeKind::Metadata && !a.metadata {
            return Ok(());
        }
        if ctx.json {
            changes.push(c);
        } else {
            let slash = if c.is_dir { "/" } else { "" };
            println!("{}  {}{slash}", c.change.letter(), printable(&c.path));
        }
        Ok(())
    })?;
    if ctx.json {
        output::json(&json!({
            "from": sa.id.to_hex(),
            "to": sb.id.to_hex(),
            "changes": changes,
            "stats": stats,
        }))?;
    } else if !ctx.quiet {
        println!(
            "\n{} added, {} removed, {} modified, {} type changed, {} metadata only; +{} -{}",
            stats.added,
            stats.removed,
            stats.modified,
            stats.type_changed,
            stats.metadata,
            output::size(stats.bytes_added),
            output::size(stats.bytes_removed)
        );
    }
    Ok(0)
}
