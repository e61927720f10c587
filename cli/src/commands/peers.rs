//! `puce report peers`: the ledger between this node and its peers (`puce_core::ledger`): what
//! this node holds for each peer, against its quota, and what the peer holds for this node as of
//! the last sync; each run adds a point to `peers-history.jsonl` in the node directory, which
//! `--html` charts.

use std::collections::HashSet;
use std::path::Path;

use anyhow::{Context, Result};
use puce_core::ledger::{Ledger, OwnerUse};
use puce_core::{Repo, SnapshotId};
use puce_node::config::NodeConfig;
use puce_node::identity::NodeId;
use puce_node::state::NodeState;
use serde_json::{Value, json};

use super::Ctx;
use super::node::{node_dir, node_err};
use crate::args::PeersArgs;
use crate::output;

/// History file, one JSON object a line: `{"t": ns, "peers": {name: [held_for, held_by]}}`.
pub const HISTORY_FILE: &str = "peers-history.jsonl";
/// Points kept in the history (older ones are dropped when it is rewritten).
const HISTORY_MAX: usize = 2000;

/// What a peer holds for this node as of the last sync: the snapshots made here that it listed
/// (or received by push), measured here (objects travel as stored).
struct HeldBy {
    as_of_ns: Option<i64>,
    snapshots: u64,
    objects: u64,
    bytes: u64,
}

fn held_by(
    repo: &Repo,
    state: &NodeState,
    id: &NodeId,
    mine: &HashSet<SnapshotId>,
) -> Result<HeldBy> {
    let Some(ps) = state.peers.get(&id.to_string()) else {
        return Ok(HeldBy {
            as_of_ns: None,
            snapshots: 0,
            objects: 0,
            bytes: 0,
        });
    };
    let ids: Vec<SnapshotId> = ps
        .spaces
        .values()
        .flatten()
        .filter_map(|h| SnapshotId::from_hex(h).ok())
        .filter(|s| mine.contains(s))
        .collect();
    let (objects, bytes) = puce_core::ledger::reached(repo, &ids)?;
    Ok(HeldBy {
        as_of_ns: ps.last_success_ns,
        snapshots: ids.len() as u64,
        objects,
        bytes,
    })
}

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

/// One peer of the report: its name, id, figures both ways.
struct Row {
    name: String,
    id: NodeId,
    configured: bool,
    quota: Option<u64>,
    held_for: OwnerUse,
    held_by: HeldBy,
}

fn rows(repo: &Repo, config: &NodeConfig, state: &NodeState, ledger: &Ledger) -> Result<Vec<Row>> {
    let receipts = puce_core::reach::receipts(repo)?;
    let received: HashSet<SnapshotId> = receipts.iter().map(|r| r.snapshot).collect();
    let mine: HashSet<SnapshotId> = repo
        .snapshots()?
        .into_iter()
        .map(|s| s.id)
        .filter(|s| !received.contains(s))
        .collect();
    let mut out = Vec::new();
    for p in &config.peers {
        out.push(Row {
            name: p.name.clone(),
            id: p.id,
            configured: true,
            quota: p.quota,
            held_for: ledger.peer(&p.id.0),
            held_by: held_by(repo, state, &p.id, &mine)?,
        });
    }
    // Peers no longer in node.toml that still own data here, named as their receipts say.
    for u in ledger.owners.iter().skip(1) {
        let Some(id) = u.peer else { continue };
        if config.peer_by_id(&NodeId(id)).is_some() {
            continue;
        }
        let name = receipts
            .iter()
            .find(|r| r.sender == id)
            .map_or_else(|| "(unknown)".to_string(), |r| r.sender_name.clone());
        out.push(Row {
            name,
            id: NodeId(id),
            configured: false,
            quota: None,
            held_for: u.clone(),
            held_by: held_by(repo, state, &NodeId(id), &mine)?,
        });
    }
    Ok(out)
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

/// Add this run's point to the history; the points so far (oldest first).
fn record_history(dir: &Path, now: i64, rows: &[Row]) -> Result<Vec<Value>> {
    let path = dir.join(HISTORY_FILE);
    let mut points: Vec<Value> = match std::fs::read_to_string(&path) {
        Ok(t) => t
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let peers: serde_json::Map<String, Value> = rows
        .iter()
        .map(|r| (r.name.clone(), json!([r.held_for.bytes, r.held_by.bytes])))
        .collect();
    points.push(json!({ "t": now, "peers": peers }));
    if points.len() > HISTORY_MAX {
        points.drain(..points.len() - HISTORY_MAX);
    }
    let mut text = String::new();
    for p in &points {
        text.push_str(&p.to_string());
        text.push('\n');
    }
    // Private (0600), replaced atomically.
    puce_core::fsutil::write_atomic(&path, dir, text.as_bytes())?;
    Ok(points)
}

pub fn run(ctx: &Ctx, a: PeersArgs) -> Result<i32> {
    let repo = ctx.open()?;
    let dir = node_dir(ctx, &a.dir)?;
    let config = NodeConfig::load(&dir).map_err(node_err)?;
    let state = NodeState::load(&dir).map_err(node_err)?;
    let ledger = puce_core::ledger::compute(&repo)?;
    let rows = rows(&repo, &config, &state, &ledger)?;
    let now = puce_core::index::now_ns();
    let history = record_history(&dir, now, &rows)?;
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
