use anyhow::Result;
use puce_core::format::printable;
use puce_core::snapshot::{RestoreOptions, restore};
use puce_core::vfs;

use super::{Ctx, split_target};
use crate::args::RestoreArgs;
use crate::output;
use crate::progress::Bar;

pub fn run(ctx: &Ctx, a: RestoreArgs) -> Result<i32> {
    let repo = ctx.open()?;
    let (snap, path) = split_target(&a.source);
    let snap = repo.resolve_snapshot(snap)?;
    let reader = repo.index().reader()?;
    let what = vfs::resolve(&repo, &reader, snap.snapshot.root, path.as_bytes())?;
    drop(reader);
    let bar = Bar::new("restore", ctx.quiet || ctx.json);
    if path.is_empty() || what.tree().is_some() {
        bar_total(&bar, &snap.snapshot, path.is_empty());
    }
    let started = std::time::Instant::now();
    let stats = restore(
        &repo,
        &what,
        &a.target,
        &RestoreOptions {
            threads: a.threads,
            preserve_suid: a.preserve_suid,
            preserve_devices: a.preserve_devices,
        },
        &bar,
    );
    bar.finish();
    let stats = stats?;
    let ms = started.elapsed().as_millis() as u64;
    if ctx.json {
        output::json(&serde_json::json!({
            "snapshot": snap.id.to_hex(),
            "target": a.target,
            "stats": stats,
            "duration_ms": ms,
        }))?;
    } else {
        for m in &stats.messages {
            eprintln!("error: {}", printable(m));
        }
        if stats.devices_skipped > 0 {
            eprintln!(
                "warning: {} device nodes in the snapshot were not created (a snapshot may come \
                 from a partner); restore them with --preserve-devices (as root) if you trust it",
                stats.devices_skipped
            );
        }
        if !ctx.quiet {
            println!(
                "restored {} files, {} dirs, {} symlinks ({}) from {} into {} in {:.2} s",
                stats.files,
                stats.dirs,
                stats.symlinks,
                output::size(stats.bytes),
                snap.id.short(12),
                a.target.display(),
                ms as f64 / 1000.0
            );
            if stats.specials + stats.hard_links + stats.sockets_skipped > 0 {
                println!(
                    "also {} fifos and device nodes, {} hard links; {} sockets not made (their \
                     program makes them)",
                    stats.specials, stats.hard_links, stats.sockets_skipped
                );
            }
        }
    }
    if stats.errors > 0 {
        eprintln!(
            "error: {} entries could not be restored (run `puce check --read-data` to see what is damaged)",
            stats.errors
        );
        return Ok(1);
    }
    Ok(0)
}

fn bar_total(bar: &Bar, s: &puce_core::format::snapshot::Snapshot, whole: bool) {
    use puce_core::progress::Progress;
    if whole {
        bar.set_total(s.summary.files, s.summary.bytes);
    }
}
