use anyhow::Result;
use puce_core::check::{CheckOptions, check};
use puce_core::format::printable;

use super::Ctx;
use crate::args::CheckArgs;
use crate::output;
use crate::progress::Bar;

pub fn run(ctx: &Ctx, a: CheckArgs) -> Result<i32> {
    let repo = ctx.open()?;
    let bar = Bar::new("check", ctx.quiet || ctx.json || !a.read_data);
    let report = check(
        &repo,
        &CheckOptions {
            read_data: a.read_data,
            threads: 0,
            sample: a.sample,
        },
        &bar,
    );
    bar.finish();
    let report = report?;
    if ctx.json {
        let mut v = serde_json::to_value(&report)?;
        v["ok"] = serde_json::json!(report.is_ok());
        output::json(&v)?;
    } else {
        for p in &report.problems {
            let level = match p.kind.as_str() {
                "unindexed_pack" => "warning",
                "config_healed" => "repaired",
                _ => "error",
            };
            println!("{level}: {}", printable(&p.detail));
        }
        for s in &report.affected {
            println!(
                "damaged: snapshot {} of space '{}' ({}), {} paths:",
                &s.id[..12],
                printable(&s.space),
                output::time(s.time_ns),
                s.damaged_paths
            );
            for p in &s.paths {
                println!("    {}", printable(p));
            }
            if s.damaged_paths as usize > s.paths.len() {
                println!("    ...");
            }
        }
        if !ctx.quiet {
            println!(
                "checked {} snapshots, {} trees, {} packs, {} objects{}: {}",
                report.snapshots,
                report.trees,
                report.packs,
                report.objects,
                if let Some(share) = report.sample {
                    format!(
                        ", read {} ({} packs, a {:.0}% sample; the rotation is {:.0}% through)",
                        output::size(report.bytes_read),
                        report.packs_read,
                        share * 100.0,
                        report.sample_position.unwrap_or(0.0) * 100.0
                    )
                } else if report.read_data {
                    format!(", read {}", output::size(report.bytes_read))
                } else {
                    String::new()
                },
                if report.is_ok() {
                    "no errors"
                } else {
                    "ERRORS FOUND"
                }
            );
        }
        if report.problems.iter().all(|p| p.kind == "config_healed") && !report.is_ok() {
            eprintln!(
                "error: a damaged file was found and repaired; a damaged file is often the \
                 first sign of a failing disk: check the disk, then run `puce check` again"
            );
        } else if !report.is_ok() {
            eprintln!(
                "error: the repository is damaged; `puce repair index` fixes index problems, \
                 `puce repair --from PEER` heals damaged data from a peer node that has it"
            );
        }
    }
    Ok(if report.is_ok() { 0 } else { 1 })
}
