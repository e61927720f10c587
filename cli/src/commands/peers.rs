//! `puce report peers`: the ledger between this node and its peers (`puce_core::ledger`): what
//! this node holds for each peer, against its quota, and what the peer holds for this node as of
//! the last sync ([`puce_node::ledger`]); each run adds a point to `peers-history.jsonl` in the
//! node directory (so does each sync the daemon runs), which `--html` charts.

use anyhow::{Context, Result};
use puce_core::ledger::{Ledger, OwnerUse};
use puce_node::config::NodeConfig;
use puce_node::ledger::{Row, record_history, rows};
use puce_node::state::NodeState;
use serde_json::{Value, json};

use super::Ctx;
use super::node::{node_dir, node_err};
use crate::args::PeersArgs;
use crate::output;

fn use_json(u: &OwnerUse) -> Value {
    json!({
        "snapshots": u.snapshots,
        "spaces": u.spaces,
        "objects": u.objects,
        "bytes": u.bytes,
        "exclusive_objects": u.exclusive_objects,
        "exclusive_bytes": u.exclusive_bytes,
        "fair_bytes": u.fair_bytes,
        "in_transit_objects": u.in_transit_objects,
        "in_transit_bytes": u.in_transit_bytes,
    })
}

fn row_json(r: &Row) -> Value {
    let used = r.held_for.quota_use();
    json!({
        "name": r.name,
        "id": r.id.to_string(),
        "configured": r.configured,
        "quota": r.quota,
        "quota_use": used,
        "quota_use_ratio": r.quota.map(|q| used as f64 / q.max(1) as f64),
        "holds_for_peer": use_json(&r.held_for),
        "peer_holds_for_me": {
            "as_of": r.held_by.as_of_ns.map(output::time_utc),
            "snapshots": r.held_by.snapshots,
            "objects": r.held_by.objects,
            "bytes": r.held_by.bytes,
        },
    })
}

pub fn run(ctx: &Ctx, a: PeersArgs) -> Result<i32> {
    let repo = ctx.open()?;
    let dir = node_dir(ctx, &a.dir)?;
    let config = NodeConfig::load(&dir).map_err(node_err)?;
    let state = NodeState::load(&dir).map_err(node_err)?;
    let ledger = puce_core::ledger::compute(&repo)?;
    let rows = rows(&repo, &config, &state, &ledger).map_err(node_err)?;
    let now = puce_core::index::now_ns();
    let history = record_history(&dir, now, &rows).map_err(node_err)?;
    if let Some(p) = &a.html {
        let page = crate::html::peers_page(
            &format!("puce: peers of node '{}'", config.name),
            &output::time(now),
            &history,
            &rows.iter().map(html_row).collect::<Vec<_>>(),
        );
        std::fs::write(p, page).with_context(|| format!("cannot write {}", p.display()))?;
    }
    let me = &ledger.owners[0];
    if ctx.json {
        output::json(&json!({
            "node": config.name,
            "objects": ledger.objects,
            "stored_bytes": ledger.bytes,
            "missing_objects": ledger.missing,
            "this_node": use_json(me),
            "peers": rows.iter().map(row_json).collect::<Vec<_>>(),
        }))?;
        return Ok(0);
    }
    print(&config.name, &ledger, &rows);
    Ok(0)
}

fn html_row(r: &Row) -> Vec<String> {
    vec![
        r.name.clone(),
        output::size(r.held_for.bytes),
        output::size(r.held_for.exclusive_bytes),
        output::size(r.held_for.fair_bytes),
        quota_text(r),
        output::size(r.held_by.bytes),
        r.held_by
            .as_of_ns
            .map_or_else(|| "never".into(), output::time),
    ]
}

fn quota_text(r: &Row) -> String {
    let used = r.held_for.quota_use();
    match r.quota {
        Some(q) => format!(
            "{} of {} ({:.0} %)",
            output::size(used),
            output::size(q),
            used as f64 * 100.0 / q.max(1) as f64
        ),
        None => format!("{} (no quota)", output::size(used)),
    }
}

fn print(node: &str, ledger: &Ledger, rows: &[Row]) {
    for r in rows {
        let as_of = r.held_by.as_of_ns.map_or_else(
            || "no sync yet".into(),
            |t| format!("as of {}", output::time(t)),
        );
        println!(
            "I hold {} for {}; it holds {} for me ({as_of})",
            output::size(r.held_for.bytes),
            r.name,
            output::size(r.held_by.bytes)
        );
    }
    let mut t = output::table(
        &[
            "peer",
            "snapshots",
            "spaces",
            "holds for it",
            "only its",
            "fair share",
            "in transit",
            "quota use",
            "holds for me",
        ],
        &[1, 3, 4, 5, 6, 8],
    );
    for r in rows {
        let u = &r.held_for;
        t.add_row(vec![
            r.name.clone(),
            u.snapshots.to_string(),
            u.spaces.iter().cloned().collect::<Vec<_>>().join(", "),
            output::size(u.bytes),
            output::size(u.exclusive_bytes),
            output::size(u.fair_bytes),
            output::size(u.in_transit_bytes),
            quota_text(r),
            output::size(r.held_by.bytes),
        ]);
    }
    println!("\n{t}");
    let me = &ledger.owners[0];
    println!(
        "this node ({node}): {} snapshots, {} only its own, fair share {}; stored in all {} \
         ({} objects)",
        me.snapshots,
        output::size(me.exclusive_bytes),
        output::size(me.fair_bytes),
        output::size(ledger.bytes),
        ledger.objects
    );
    if ledger.missing > 0 {
        println!(
            "warning: {} objects referenced by snapshots are missing: run `puce check`",
            ledger.missing
        );
    }
}
