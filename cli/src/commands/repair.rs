use anyhow::Result;
use puce_core::repair::rebuild_index;

use super::Ctx;
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
