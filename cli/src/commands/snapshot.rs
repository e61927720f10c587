use anyhow::Result;
use puce_core::snapshot::{SnapshotOptions, snapshot};
use serde_json::json;

use super::Ctx;
use crate::args::SnapshotArgs;
use crate::output;
use crate::progress::Bar;

pub fn run(ctx: &Ctx, a: SnapshotArgs) -> Result<i32> {
    let time_ns = a
        .time
        .as_deref()
        .map(|t| output::parse_time("--time", t))
        .transpose()?;
    let repo = ctx.open()?;
    let opts = SnapshotOptions {
        time_ns,
        space: a.space,
        tags: a.tags,
        excludes: a.excludes,
        force_read: a.force_read,
        host: a.host,
        threads: a.threads,
        ..SnapshotOptions::default()
    };
    let bar = Bar::new("snapshot", ctx.quiet || ctx.json);
    let out = snapshot(&repo, &a.path, &opts, &bar);
    bar.finish();
    let out = out?;
    let s = &out.snapshot;
    let m = &s.summary;
    if ctx.json {
        output::json(&json!({
            "id": out.id.to_hex(),
            "space": s.space,
            "time": output::time_utc(s.time_ns),
            "parents": s.parents.iter().map(|p| p.to_hex()).collect::<Vec<_>>(),
            "tree": s.root.to_hex(),
            "summary": m,
            "warnings": out.warnings,
        }))?;
    } else if !ctx.quiet {
        println!(
            "snapshot {} of space '{}' committed",
            out.id.short(12),
            s.space
        );
        println!(
            "  files: {} ({} new, {} changed, {} unchanged), {} dirs, {} symlinks",
            m.files, m.files_new, m.files_changed, m.files_unmodified, m.dirs, m.symlinks
        );
        println!(
            "  data: {} in the snapshot, {} read, {} new ({} stored)",
            output::size(m.bytes),
            output::size(m.bytes_read),
            output::size(m.data_added),
            output::size(m.data_added_stored)
        );
        println!(
            "  time: {:.2} s ({})",
            m.duration_ms as f64 / 1000.0,
            output::rate(m.bytes_read, m.duration_ms)
        );
        if m.errors > 0 || !out.warnings.is_empty() {
            println!(
                "  {} entries skipped, {} warnings (see above)",
                m.errors,
                out.warnings.len()
            );
        }
    }
    Ok(0)
}
