use anyhow::{Context, Result};
use comfy_table::Cell;
use puce_core::Repo;
use puce_core::report::{self, Census, DedupReport, GrowthReport, RetentionReport};

use super::Ctx;
use super::forget::{decisions, print_decisions};
use crate::args::{ReportArgs, ReportCommand, RetentionReportArgs};
use crate::{html, output};

fn growth_of(repo: &Repo, c: &Census, space: Option<&str>) -> Result<GrowthReport> {
    let free = report::disk_free(repo.root())?;
    Ok(report::growth(
        c,
        space,
        &jiff::tz::TimeZone::system(),
        free,
        puce_core::index::now_ns(),
    ))
}

fn write_html(
    path: &std::path::Path,
    title: &str,
    d: &DedupReport,
    g: &GrowthReport,
    r: Option<&RetentionReport>,
) -> Result<()> {
    let now = output::time(puce_core::index::now_ns());
    let page = html::page(title, d, g, r, &now);
    std::fs::write(path, page).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

pub fn run(ctx: &Ctx, c: ReportCommand) -> Result<i32> {
    match c {
        ReportCommand::Dedup(a) => dedup(ctx, a),
        ReportCommand::Growth(a) => growth(ctx, a),
        ReportCommand::Retention(a) => retention(ctx, a),
        ReportCommand::Replicas(a) => super::replicas::run_report(ctx, a),
        ReportCommand::Peers(a) => super::peers::run(ctx, a),
    }
}

fn check_space(c: &Census, space: Option<&str>) -> Result<()> {
    if let Some(s) = space
        && !c.spaces.iter().any(|x| x == s)
    {
        anyhow::bail!(puce_core::Error::not_found(format!(
            "space '{s}' has no snapshots (see `puce snapshots`)"
        )));
    }
    Ok(())
}

fn dedup(ctx: &Ctx, a: ReportArgs) -> Result<i32> {
    let repo = ctx.open()?;
    let c = Census::build(&repo)?;
    check_space(&c, a.space.as_deref())?;
    let d = report::dedup(&repo, &c, a.space.as_deref(), a.top)?;
    if let Some(p) = &a.html {
        let g = growth_of(&repo, &c, a.space.as_deref())?;
        write_html(p, "puce: dedup report", &d, &g, None)?;
    }
    if ctx.json {
        output::json(&d)?;
        return Ok(0);
    }
    println!(
        "logical {} (all snapshots) -> {} after dedup ({:.2}x) -> {} stored ({:.2}x compression); \
         overall {:.2}x; pack files {}",
        output::size(d.logical_bytes),
        output::size(d.unique_bytes),
        d.dedup_ratio,
        output::size(d.stored_bytes),
        d.compression_ratio,
        d.total_ratio,
        output::size(d.pack_bytes)
    );
    println!("\nSpaces");
    let mut t = output::table(
        &[
            "Space",
            "Snapshots",
            "Latest size",
            "Stored",
            "Only this space",
        ],
        &[1, 2, 3, 4],
    );
    for s in &d.spaces {
        t.add_row(vec![
            Cell::new(&s.space),
            Cell::new(s.snapshots),
            Cell::new(output::size(s.latest_bytes)),
            Cell::new(output::size(s.stored_bytes)),
            Cell::new(output::size(s.unique_bytes)),
        ]);
    }
    output::print_table(&t);
    println!(
        "\nSnapshots (added: stored bytes it was first to reference; only: what forgetting it alone frees)"
    );
    let mut t = output::table(
        &["ID", "Time", "Space", "Size", "Added", "Only"],
        &[3, 4, 5],
    );
    for s in &d.snapshots {
        t.add_row(vec![
            Cell::new(&s.id[..8]),
            Cell::new(output::time(s.time_ns)),
            Cell::new(&s.space),
            Cell::new(output::size(s.bytes)),
            Cell::new(output::size(s.added_bytes)),
            Cell::new(output::size(s.only_bytes)),
        ]);
    }
    output::print_table(&t);
    println!("\nLargest folders (stored bytes found only inside them, in all snapshots)");
    let mut t = output::table(&["Space", "Folder", "Unique stored"], &[2]);
    for x in &d.largest_dirs {
        t.add_row(vec![
            Cell::new(&x.space),
            Cell::new(&x.path),
            Cell::new(output::size(x.unique_bytes)),
        ]);
    }
    output::print_table(&t);
    println!("\nFiles stored most often (latest snapshots)");
    let mut t = output::table(&["Size", "Copies", "Saved", "Places"], &[0, 1, 2]);
    for x in &d.duplicates {
        let mut places = x.paths[..x.paths.len().min(3)].join("\n");
        if x.copies as usize > 3 {
            places.push_str(&format!("\n... {} more", x.copies - 3));
        }
        t.add_row(vec![
            Cell::new(output::size(x.size)),
            Cell::new(x.copies),
            Cell::new(output::size(x.saved_bytes)),
            Cell::new(places),
        ]);
    }
    output::print_table(&t);
    if d.missing_objects > 0 {
        eprintln!(
            "warning: {} objects are missing: run `puce check`",
            d.missing_objects
        );
    }
    Ok(0)
}

fn growth(ctx: &Ctx, a: ReportArgs) -> Result<i32> {
    let repo = ctx.open()?;
    let c = Census::build(&repo)?;
    check_space(&c, a.space.as_deref())?;
    let g = growth_of(&repo, &c, a.space.as_deref())?;
    if let Some(p) = &a.html {
        let d = report::dedup(&repo, &c, a.space.as_deref(), a.top)?;
        write_html(p, "puce: growth report", &d, &g, None)?;
    }
    if ctx.json {
        output::json(&g)?;
        return Ok(0);
    }
    let spaces: Vec<String> = {
        let mut v: Vec<String> = g
            .days
            .iter()
            .flat_map(|d| d.added.keys().cloned())
            .collect();
        v.sort();
        v.dedup();
        v
    };
    let mut head = vec!["Day".to_string()];
    head.extend(spaces.iter().map(|s| format!("+{s}")));
    head.push("Total".into());
    let head_ref: Vec<&str> = head.iter().map(|s| s.as_str()).collect();
    let right: Vec<usize> = (1..head.len()).collect();
    let mut t = output::table(&head_ref, &right);
    for d in &g.days {
        let mut row = vec![Cell::new(&d.day)];
        for s in &spaces {
            row.push(Cell::new(output::size(
                d.added.get(s).copied().unwrap_or(0),
            )));
        }
        row.push(Cell::new(output::size(d.total)));
        t.add_row(row);
    }
    output::print_table(&t);
    if g.rate_window_days >= 1.0 {
        println!(
            "\nstored now: {} (pack files {}); growth: {}/day over the last {:.1} days of history",
            output::size(g.stored_bytes),
            output::size(g.pack_bytes),
            output::size(g.bytes_per_day as u64),
            g.rate_window_days
        );
    } else {
        println!(
            "\nstored now: {} (pack files {}); less than a day of history: no growth rate yet",
            output::size(g.stored_bytes),
            output::size(g.pack_bytes)
        );
    }
    match (&g.full_on, g.days_to_full) {
        (Some(date), Some(days)) => println!(
            "disk: {} free; at this rate it is full in {:.0} days ({date})",
            output::size(g.disk_free_bytes),
            days
        ),
        _ => println!(
            "disk: {} free; the repository is not growing",
            output::size(g.disk_free_bytes)
        ),
    }
    Ok(0)
}

fn retention(ctx: &Ctx, a: RetentionReportArgs) -> Result<i32> {
    let repo = ctx.open()?;
    let mut c = Census::build(&repo)?;
    // As `forget` does: snapshots already forgotten (or held) are not decided on.
    let forgotten = puce_core::forgotten::ids(&repo)?;
    let in_scope: Vec<_> = c
        .snapshots
        .iter()
        .filter(|s| a.spaces.is_empty() || a.spaces.contains(&s.snapshot.space))
        .filter(|s| !forgotten.contains(&s.id))
        .cloned()
        .collect();
    let ds = decisions(&repo, &in_scope, &a.policy, a.group_by)?;
    let r = report::retention(&mut c, ds);
    if let Some(p) = &a.html {
        let d = report::dedup(&repo, &c, None, 15)?;
        let g = growth_of(&repo, &c, None)?;
        write_html(p, "puce: retention report", &d, &g, Some(&r))?;
    }
    if ctx.json {
        let mut v = serde_json::to_value(&r)?;
        v["decisions"] = super::forget::decisions_json(&r.decisions);
        output::json(&v)?;
        return Ok(0);
    }
    print_decisions(&r.decisions);
    println!(
        "\nthe policy removes {} snapshots and keeps {}; `puce forget` then `puce gc` frees {} of {} stored",
        r.removed,
        r.kept,
        output::size(r.freed_bytes),
        output::size(r.stored_bytes)
    );
    Ok(0)
}
