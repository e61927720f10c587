//! `puce sync PEER [--space S] [--pull | --push]`: one sync now, with a progress bar and a
//! summary.

use puce_core::format::printable;
use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Result;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use puce_core::progress::Progress;
use puce_node::sync::{SyncRequest, sync_now};

use super::Ctx;
use super::node::{node_dir, node_err};
use crate::args::SyncArgs;
use crate::output;

/// Objects and bytes moved, either way.
struct SyncBar {
    bar: ProgressBar,
    objects: AtomicU64,
    total: AtomicU64,
}

impl SyncBar {
    fn new(hidden: bool) -> SyncBar {
        let visible = !hidden && std::io::stderr().is_terminal();
        let bar = if visible {
            ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(5))
        } else {
            ProgressBar::hidden()
        };
        if let Ok(s) = ProgressStyle::with_template(
            "sync {spinner} {elapsed_precise} {msg} {bytes} ({bytes_per_sec})",
        ) {
            bar.set_style(s);
        }
        if visible {
            bar.enable_steady_tick(Duration::from_millis(200));
        }
        SyncBar {
            bar,
            objects: AtomicU64::new(0),
            total: AtomicU64::new(0),
        }
    }
}

impl Progress for SyncBar {
    fn set_total(&self, files: u64, _bytes: u64) {
        self.total.fetch_add(files, Ordering::Relaxed);
    }
    fn add(&self, files: u64, bytes: u64) {
        self.bar.inc(bytes);
        let n = self.objects.fetch_add(files, Ordering::Relaxed) + files;
        let t = self.total.load(Ordering::Relaxed);
        if t > 0 {
            self.bar.set_message(format!("{n}/{t} objects"));
        } else {
            self.bar.set_message(format!("{n} objects"));
        }
    }
}

pub fn run(ctx: &Ctx, a: SyncArgs) -> Result<i32> {
    let repo = ctx.open()?;
    let dir = node_dir(ctx, &a.dir)?;
    let both = !a.pull && !a.push;
    let req = SyncRequest {
        peer: a.peer.clone(),
        spaces: a.spaces,
        pull: a.pull || both,
        push: a.push || both,
    };
    let bar = Arc::new(SyncBar::new(ctx.quiet || ctx.json));
    let r = sync_now(repo, &dir, &req, bar.clone());
    bar.bar.finish_and_clear();
    let r = r.map_err(node_err)?;
    if ctx.json {
        output::json(&r)?;
        return Ok(0);
    }
    if ctx.quiet {
        return Ok(0);
    }
    println!(
        "sync with peer '{}' done in {:.2} s",
        r.peer,
        r.duration_ms as f64 / 1000.0
    );
    for s in &r.spaces {
        let what = if s.snapshots == 0 && s.merges == 0 {
            s.result.clone()
        } else {
            let mut w = format!(
                "{} snapshots, {} objects, {} stored",
                s.snapshots,
                s.objects,
                output::size(s.bytes)
            );
            if s.logical_bytes > 0 {
                w.push_str(&format!(
                    " ({} of files, {} new data, {} not sent thanks to dedup)",
                    output::size(s.logical_bytes),
                    output::size(s.raw_bytes),
                    output::size(s.logical_bytes.saturating_sub(s.raw_bytes))
                ));
            }
            if s.merges > 0 {
                w.push_str(&format!(", {} merge snapshot(s)", s.merges));
            }
            w
        };
        println!("  {} {}: {what}", s.direction, s.space);
        for c in &s.conflicts {
            println!(
                "    conflict: {} changed on both sides; the version of '{}' is kept as {}",
                printable(&c.path),
                printable(&c.node),
                printable(&c.copy)
            );
        }
    }
    for w in &r.warnings {
        println!("  warning: {w}");
    }
    println!(
        "  sent {} objects ({}), received {} objects ({}); saved by dedup: {}",
        r.sent_objects,
        output::size(r.sent_bytes),
        r.received_objects,
        output::size(r.received_bytes),
        output::size(r.dedup_saved_bytes)
    );
    println!(
        "  network: {} out, {} in; {} requests, {} round trips (rtt {:.1} ms)",
        output::size(r.wire_sent_bytes),
        output::size(r.wire_received_bytes),
        r.requests,
        r.round_trips,
        r.rtt_us as f64 / 1000.0
    );
    Ok(0)
}
