use std::time::Duration;

use anyhow::Result;
use puce_core::gc::{self, GcOptions, GcReport};

use super::Ctx;
use crate::args::GcArgs;
use crate::output;
use crate::progress::Bar;

pub fn print_report(r: &GcReport) {
    let verb = if r.dry_run { "would" } else { "did" };
    println!(
        "gc {verb}: delete {} packs, repack {} packs (rewriting {}), delete {} unindexed packs, \
         remove {} objects ({} stored); frees {} of {}",
        r.packs_deleted,
        r.packs_repacked,
        output::size(r.bytes_rewritten),
        r.packs_orphaned,
        r.objects_removed,
        output::size(r.objects_removed_bytes),
        output::size(r.bytes_freed),
        output::size(r.bytes_before)
    );
    println!(
        "  {} snapshots, {} live objects, {} unused left in packs below the repack threshold",
        r.snapshots,
        r.live_objects,
        output::size(r.bytes_unused_kept)
    );
    if r.sessions_waited > 0 {
        println!(
            "  waited {:.1} s for {} running writers; {} objects rescued for snapshots committed meanwhile",
            r.waited_ms as f64 / 1000.0,
            r.sessions_waited,
            r.rescued
        );
    }
    if r.missing_objects > 0 {
        println!(
            "  warning: {} objects referenced by snapshots are missing: run `puce check`",
            r.missing_objects
        );
    }
    if r.deferred {
        println!("  writers did not finish in time: run gc again later to finish");
    }
}

pub fn run(ctx: &Ctx, a: GcArgs) -> Result<i32> {
    let repo = ctx.open()?;
    if !(0.0..=100.0).contains(&a.repack_unused) {
        anyhow::bail!(puce_core::Error::invalid(
            "--repack-unused is a percentage (0 to 100)"
        ));
    }
    let opts = GcOptions {
        repack_unused: a.repack_unused / 100.0,
        max_wait: Duration::from_secs(a.max_wait),
    };
    let bar = Bar::new("gc", ctx.quiet || ctx.json);
    // The plan is what --dry-run prints; executing it does the work.
    let r = gc::plan(&repo, &opts, &bar).and_then(|plan| {
        if a.dry_run {
            Ok(plan.report().clone())
        } else {
            gc::execute(plan, &bar)
        }
    });
    bar.finish();
    let r = r?;
    if ctx.json {
        output::json(&r)?;
    } else if !ctx.quiet {
        print_report(&r);
    }
    Ok(if r.deferred { 1 } else { 0 })
}
