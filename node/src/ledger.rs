//! The ledger between this node and its peers, per peer ([`puce_core::ledger`] with the names,
//! quotas and sync history of `node.toml` and the node state): what this node holds for each
//! peer, and what the peer holds for this node as of the last sync. `puce report peers` prints
//! it; each run of it, and each sync the daemon runs, adds a point to
//! [`HISTORY_FILE`] in the node directory, which `puce report peers --html` charts.

use std::collections::HashSet;
use std::path::Path;

use puce_core::ledger::{Ledger, OwnerUse};
use puce_core::{Repo, SnapshotId};
use serde_json::{Value, json};

use crate::config::NodeConfig;
use crate::error::{Error, Result};
use crate::identity::NodeId;
use crate::state::NodeState;

/// History file, one JSON object a line: `{"t": ns, "peers": {name: [held_for, held_by]}}`.
pub const HISTORY_FILE: &str = "peers-history.jsonl";
/// Points kept in the history (older ones are dropped when it is rewritten).
const HISTORY_MAX: usize = 2000;

/// What a peer holds for this node as of the last sync: the snapshots made here that it listed
/// (or received by push), measured here (objects travel as stored).
pub struct HeldBy {
    /// The last successful sync with the peer.
    pub as_of_ns: Option<i64>,
    /// Snapshots.
    pub snapshots: u64,
    /// Objects they reach.
    pub objects: u64,
    /// Their stored bytes.
    pub bytes: u64,
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

/// One peer of the ledger: its name, id, figures both ways.
pub struct Row {
    /// Its name (in node.toml, else as its receipts say).
    pub name: String,
    /// Its node id.
    pub id: NodeId,
    /// Whether node.toml lists it.
    pub configured: bool,
    /// Its quota here.
    pub quota: Option<u64>,
    /// What this node holds for it.
    pub held_for: OwnerUse,
    /// What it holds for this node.
    pub held_by: HeldBy,
}

/// The rows of every configured peer, then of peers no longer configured that still own data
/// here.
pub fn rows(
    repo: &Repo,
    config: &NodeConfig,
    state: &NodeState,
    ledger: &Ledger,
) -> Result<Vec<Row>> {
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

/// Add a point for `rows` at `now` to the history in `dir`; the points so far, oldest first.
pub fn record_history(dir: &Path, now: i64, rows: &[Row]) -> Result<Vec<Value>> {
    let path = dir.join(HISTORY_FILE);
    let mut points: Vec<Value> = match std::fs::read_to_string(&path) {
        Ok(t) => t
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => {
            return Err(Error::new(
                crate::ErrorKind::Store,
                format!("cannot read {}: {e}", path.display()),
            ));
        }
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

/// Compute the ledger of the node in `dir` and add a point to its history (the daemon, after
/// each sync it runs).
pub fn record_point(repo: &Repo, config: &NodeConfig, dir: &Path) -> Result<()> {
    let state = NodeState::load(dir)?;
    let ledger = puce_core::ledger::compute(repo)?;
    let rows = rows(repo, config, &state, &ledger)?;
    record_history(dir, puce_core::index::now_ns(), &rows)?;
    Ok(())
}
