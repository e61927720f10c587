//! `puce node init|id|run|status`.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};
use puce_node::config::{CONFIG_FILE, NodeConfig, Peer, check_node_name, initial_config};
use puce_node::identity::{CERT_FILE, Identity, KEY_FILE};
use puce_node::state::{NodeState, PeerState, running_daemon};
use serde_json::{Value, json};

use super::Ctx;
use crate::args::{NodeDirArg, NodeDropArgs, NodeInitArgs};
use crate::output;

/// The node directory: `--node-dir`, `PUCE_NODE_DIR`, or `REPO/node`.
pub fn node_dir(ctx: &Ctx, a: &NodeDirArg) -> Result<PathBuf> {
    match &a.node_dir {
        Some(d) => Ok(d.clone()),
        None => Ok(ctx.repo_path()?.0.join("node")),
    }
}

/// The node error as an anyhow error (messages already say what to do).
pub fn node_err(e: puce_node::Error) -> anyhow::Error {
    anyhow::anyhow!("{e:#}")
}

pub fn run_init(ctx: &Ctx, a: NodeInitArgs) -> Result<i32> {
    let repo = ctx.open()?;
    let dir = node_dir(ctx, &a.dir)?;
    let name = match a.name {
        Some(n) => n,
        None => {
            let h = gethostname_lossy();
            let n: String = h
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                        c
                    } else {
                        '-'
                    }
                })
                .take(64)
                .collect();
            if n.is_empty() { "node".into() } else { n }
        }
    };
    check_node_name(&name).map_err(node_err)?;
    a.listen
        .parse::<std::net::SocketAddr>()
        .with_context(|| format!("--listen {}: write IP:PORT, e.g. 0.0.0.0:7878", a.listen))?;
    if dir.join(KEY_FILE).exists() {
        bail!(
            "this node already has an identity in {} (id: {}): to start over, move that \
             directory away",
            dir.display(),
            Identity::load(&dir)
                .map(|i| i.id().to_string())
                .unwrap_or_else(|e| format!("unreadable: {e}"))
        );
    }
    let id = Identity::generate().map_err(node_err)?;
    id.save(&dir).map_err(node_err)?;
    let cfg = dir.join(CONFIG_FILE);
    let wrote_config = !cfg.exists();
    if wrote_config {
        puce_core::fsutil::write_atomic(&cfg, &dir, initial_config(&name, &a.listen).as_bytes())?;
    }
    let config = NodeConfig::load(&dir).map_err(node_err)?;
    if ctx.json {
        output::json(&json!({
            "id": id.id().to_string(),
            "name": config.name,
            "node_dir": dir,
            "repository": repo.root(),
            "config": cfg,
        }))?;
    } else if !ctx.quiet {
        println!("node '{}' created", config.name);
        println!("  id:          {}", id.id());
        println!(
            "  key:         {} (keep it private)",
            dir.join(KEY_FILE).display()
        );
        println!("  certificate: {}", dir.join(CERT_FILE).display());
        println!(
            "  config:      {}{}",
            cfg.display(),
            if wrote_config { "" } else { " (kept)" }
        );
        println!("  repository:  {}", repo.root().display());
        println!();
        println!("Next: give the id above to the admins of the peer nodes, add their ids as");
        println!("[[peer]] sections in node.toml, then run `puce node run` (see docs/guide.md).");
    }
    Ok(0)
}

fn gethostname_lossy() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}

pub fn run_id(ctx: &Ctx, a: NodeDirArg) -> Result<i32> {
    let dir = node_dir(ctx, &a)?;
    let id = Identity::load(&dir).map_err(node_err)?;
    if ctx.json {
        let name = NodeConfig::load(&dir).ok().map(|c| c.name);
        output::json(&json!({ "id": id.id().to_string(), "name": name }))?;
    } else {
        println!("{}", id.id());
    }
    Ok(0)
}

pub fn run_daemon(ctx: &Ctx, a: NodeDirArg) -> Result<i32> {
    let repo = ctx.open()?;
    let dir = node_dir(ctx, &a)?;
    puce_node::daemon::run(repo, &dir).map_err(node_err)?;
    Ok(0)
}

/// `puce node drop PEER --since TIME`: forget, for good, the snapshots that arrived from the
/// peer at or after `since` (their receipts say when), with a dry run first; each drop is
/// appended to `drops.log` in the node directory.
pub fn run_drop(ctx: &Ctx, a: NodeDropArgs) -> Result<i32> {
    let since_ns = output::parse_time("--since", &a.since)?;
    let repo = ctx.open()?;
    let dir = node_dir(ctx, &a.dir)?;
    let config = NodeConfig::load(&dir).map_err(node_err)?;
    let peer = config.find_peer(&a.peer).map_err(node_err)?;
    let forgotten = puce_core::forgotten::ids(&repo)?;
    let mut drop: Vec<puce_core::format::receipt::Receipt> = puce_core::reach::receipts(&repo)?
        .into_iter()
        .filter(|r| r.sender == peer.id.0 && r.arrived_ns >= since_ns)
        .filter(|r| !forgotten.contains(&r.snapshot))
        .collect();
    drop.sort_by_key(|r| (r.arrived_ns, r.snapshot));
    drop.dedup_by_key(|r| r.snapshot);
    let ids: Vec<puce_core::SnapshotId> = drop.iter().map(|r| r.snapshot).collect();
    if !a.dry_run && !ids.is_empty() {
        puce_core::forgotten::forget(&repo, &ids)?;
        let mut log = String::new();
        for r in &drop {
            log.push_str(&format!(
                "{} dropped snapshot {} of space '{}' delivered by '{}' at {}\n",
                output::time_utc(puce_core::index::now_ns()),
                r.snapshot.to_hex(),
                r.space,
                peer.name,
                output::time_utc(r.arrived_ns)
            ));
        }
        use std::io::Write as _;
        let path = dir.join("drops.log");
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        f.write_all(log.as_bytes())
            .and_then(|()| f.sync_all())
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    let list: Vec<Value> = drop
        .iter()
        .map(|r| {
            json!({
                "snapshot": r.snapshot.to_hex(),
                "space": r.space,
                "arrived": output::time_utc(r.arrived_ns),
            })
        })
        .collect();
    if ctx.json {
        output::json(&json!({ "dry_run": a.dry_run, "peer": peer.name, "snapshots": list }))?;
        return Ok(0);
    }
    let verb = if a.dry_run { "would drop" } else { "dropped" };
    for r in &drop {
        println!(
            "{verb} snapshot {} of space '{}', delivered by '{}' at {}",
            r.snapshot.short(8),
            r.space,
            peer.name,
            output::time(r.arrived_ns)
        );
    }
    println!("{verb} {} snapshots", drop.len());
    if !a.dry_run && !drop.is_empty() {
        println!(
            "logged in {}; run `puce gc` to free the space they held",
            dir.join("drops.log").display()
        );
    }
    Ok(0)
}

/// Snapshot ids of this repository, by space.
type BySpace = BTreeMap<String, HashSet<String>>;

pub fn run_status(ctx: &Ctx, a: NodeDirArg) -> Result<i32> {
    let repo = ctx.open()?;
    let dir = node_dir(ctx, &a)?;
    let config = NodeConfig::load(&dir).map_err(node_err)?;
    let id = Identity::load(&dir).map_err(node_err)?;
    let state = NodeState::load(&dir).map_err(node_err)?;
    let daemon = running_daemon(&dir);
    let snaps = repo.snapshots()?;
    let mut local_by_space = BySpace::new();
    for s in &snaps {
        local_by_space
            .entry(s.snapshot.space.clone())
            .or_default()
            .insert(s.id.to_hex());
    }
    let peers: Vec<Value> = config
        .peers
        .iter()
        .map(|p| peer_status(p, &peer_state(&state, p), &local_by_space))
        .collect();
    // What is flagged about the snapshots peers sent (the JSON form keeps times as text).
    let flags = puce_node::flags::flags(&repo, &snaps).map_err(node_err)?;
    let ahead: Vec<Value> = flags
        .dated_ahead
        .iter()
        .map(|a| {
            json!({
                "snapshot": a.snapshot,
                "space": a.space,
                "from": a.from,
                "time": output::time_utc(a.time_ns),
                "arrived": output::time_utc(a.arrived_ns),
            })
        })
        .collect();
    let shrinks: Vec<Value> = flags
        .mass_deletions
        .iter()
        .map(|m| serde_json::to_value(m).unwrap_or_default())
        .collect();
    let held: Vec<Value> = flags
        .held
        .iter()
        .map(|h| json!({"snapshot": h.snapshot, "peer": h.peer, "until": output::time_utc(h.until_ns)}))
        .collect();
    let blind = puce_core::blind::summaries(repo.root())?;
    let blind_flags = blind_flags(&state);
    if ctx.json {
        output::json(&json!({
            "name": config.name,
            "id": id.id().to_string(),
            "listen": config.listen.to_string(),
            "daemon": daemon.as_ref().map(|d| json!({"pid": d.pid, "listen": d.listen, "since": output::time_utc(d.started_ns)})),
            "peers": peers,
            "dated_ahead": ahead,
            "held": held,
            "mass_deletions": shrinks,
            "held_blind": blind,
            "blind_flags": blind_flags,
        }))?;
        return Ok(0);
    }
    println!("node '{}'  {}", config.name, id.id());
    match &daemon {
        Some(d) => println!(
            "daemon: running (pid {}, listening on {}, since {})",
            d.pid,
            d.listen,
            output::time(d.started_ns)
        ),
        None => println!("daemon: not running (start it with `puce node run`)"),
    }
    if config.peers.is_empty() {
        println!(
            "no peers: add [[peer]] sections to {}",
            dir.join(CONFIG_FILE).display()
        );
        return Ok(0);
    }
    print_peers(&config, &state, daemon.is_some());
    println!();
    print_pending(&peers);
    print_blind(&blind, &blind_flags);
    for h in &held {
        println!(
            "\nheld: snapshot {} was forgotten by '{}'; its protection period keeps it until {} \
             (restore it by id meanwhile)",
            h["snapshot"].as_str().unwrap_or_default(),
            h["peer"].as_str().unwrap_or_default(),
            h["until"].as_str().unwrap_or_default(),
        );
    }
    for m in &shrinks {
        println!(
            "\nflagged: snapshot {} of space '{}' from '{}' holds {} files, its parent {} held {} \
             (a mass deletion? the parent is kept)",
            m["snapshot"].as_str().unwrap_or_default(),
            m["space"].as_str().unwrap_or_default(),
            m["from"].as_str().unwrap_or_default(),
            m["files_after"],
            m["parent"].as_str().unwrap_or_default(),
            m["files_before"],
        );
    }
    for a in &ahead {
        println!(
            "\nflagged: snapshot {} of space '{}' from '{}' is dated {}, after it arrived ({}); \
             retention counts it at its arrival",
            a["snapshot"].as_str().unwrap_or_default(),
            a["space"].as_str().unwrap_or_default(),
            a["from"].as_str().unwrap_or_default(),
            a["time"].as_str().unwrap_or_default(),
            a["arrived"].as_str().unwrap_or_default(),
        );
    }
    for p in &config.peers {
        if let Some(st) = state.peers.get(&p.id.to_string())
            && let Some(e) = &st.last_error
        {
            println!("\nlast error with '{}': {e}", p.name);
        }
    }
    println!("\n(\"to send\" and \"to receive\" are as of the last contact with each peer.)");
    Ok(0)
}

/// What this node holds blind for other nodes (opaque: no key here), and what it flagged
/// about the manifests their owners sent.
fn print_blind(blind: &[puce_core::blind::HeldSummary], flags: &[Value]) {
    for b in blind {
        let snapshots: usize = b.spaces.iter().map(|s| s.1).sum();
        println!(
            "\nheld blind for node {}: {} spaces, {snapshots} snapshots, {} stored (manifest of \
             {}, not readable here)",
            &b.owner[..16],
            b.spaces.len(),
            output::size(b.stored_bytes),
            output::time(b.arrived_ns)
        );
        for k in &b.protected {
            println!(
                "  kept by the protection period until {}: an older manifest ({} snapshots, {})",
                output::time(k.until_ns),
                k.snapshots,
                output::size(k.stored_bytes)
            );
        }
    }
    for f in flags {
        let peer = f["peer"].as_str().unwrap_or_default();
        let at = f["at"].as_str().unwrap_or_default();
        if f["kind"] == "rollback" {
            println!(
                "\nflagged: '{peer}' sent at {at} a manifest to hold blind older than the one \
                 kept (sequence {} after {}): a rollback, refused",
                f["seq_after"], f["seq_before"]
            );
        } else {
            println!(
                "\nflagged: '{peer}' sent at {at} a manifest to hold blind that drops {} of the {} \
                 bytes of the one before (a mass removal? {})",
                f["dropped_bytes"],
                f["bytes_before"],
                match f["kept_until"].as_str() {
                    Some(t) => format!("kept here until {t}"),
                    None => "no keep_min here: freed".into(),
                }
            );
        }
    }
}

/// What this node flagged about the manifests peers sent it to hold blind (`--json` form).
fn blind_flags(state: &NodeState) -> Vec<Value> {
    let mut out = Vec::new();
    for p in state.peers.values() {
        for f in &p.blind_flags {
            out.push(json!({
                "peer": p.name,
                "kind": f.kind,
                "at": output::time_utc(f.at_ns),
                "seq_before": f.seq_before,
                "seq_after": f.seq_after,
                "bytes_before": f.bytes_before,
                "dropped_bytes": f.dropped_bytes,
                "kept_until": f.kept_until_ns.map(output::time_utc),
            }));
        }
    }
    out
}

/// What this node knows of peer `p` (nothing yet: the default).
fn peer_state(state: &NodeState, p: &Peer) -> PeerState {
    state
        .peers
        .get(&p.id.to_string())
        .cloned()
        .unwrap_or_default()
}

/// The status of peer `p` (its `--json` form): its last contacts, and what is pending as of
/// the last one: snapshots here the peer did not have (in spaces it may read), and snapshots
/// it had that are not here (spaces it may write).
fn peer_status(p: &Peer, st: &PeerState, local_by_space: &BySpace) -> Value {
    let mut pending = Vec::new();
    let mut spaces: Vec<String> = p.spaces.keys().filter(|s| *s != "*").cloned().collect();
    if p.has_wildcard() {
        for s in local_by_space.keys().chain(st.spaces.keys()) {
            if !spaces.contains(s) {
                spaces.push(s.clone());
            }
        }
    }
    spaces.sort();
    for space in spaces {
        let acc = p.access(&space);
        let local = local_by_space.get(&space).cloned().unwrap_or_default();
        let known = st.spaces.get(&space);
        let to_push = if acc.pull {
            match known {
                Some(k) => Some(local.iter().filter(|i| !k.contains(*i)).count()),
                None => Some(local.len()),
            }
        } else {
            None
        };
        let to_pull = if acc.push {
            known.map(|k| k.iter().filter(|i| !local.contains(*i)).count())
        } else {
            None
        };
        pending.push(json!({
            "space": space,
            "pull": acc.push,
            "push": acc.pull,
            "to_send": to_push,
            "to_receive": to_pull,
            "known": known.is_some(),
        }));
    }
    json!({
        "name": p.name,
        "id": p.id.to_string(),
        "address": p.address,
        "last_attempt": st.last_attempt_ns.map(output::time_utc),
        "last_success": st.last_success_ns.map(output::time_utc),
        "failures": st.failures,
        "last_error": st.last_error,
        "next_sync": st.next_due_ns.map(output::time_utc),
        "spaces": pending,
        "last_report": st.last_report,
    })
}

/// The table of peers: last success and attempt, next sync (when the daemon runs), status.
fn print_peers(config: &NodeConfig, state: &NodeState, daemon_runs: bool) {
    let mut t = output::table(
        &[
            "PEER",
            "ADDRESS",
            "LAST SUCCESS",
            "LAST ATTEMPT",
            "NEXT",
            "STATUS",
        ],
        &[],
    );
    for p in &config.peers {
        let st = peer_state(state, p);
        let status = match (&st.last_error, st.last_attempt_ns) {
            (_, None) => "never synced".to_string(),
            (None, Some(_)) => "ok".to_string(),
            (Some(_), Some(_)) => format!("failing ({} in a row)", st.failures),
        };
        t.add_row(vec![
            p.name.clone(),
            p.address.clone().unwrap_or_else(|| "(calls us)".into()),
            st.last_success_ns
                .map(output::time)
                .unwrap_or_else(|| "-".into()),
            st.last_attempt_ns
                .map(output::time)
                .unwrap_or_else(|| "-".into()),
            st.next_due_ns
                .filter(|_| daemon_runs)
                .map(output::time)
                .unwrap_or_else(|| "-".into()),
            status,
        ]);
    }
    output::print_table(&t);
}

/// The table of what is pending per peer and space, from their statuses ([`peer_status`]).
fn print_pending(peers: &[Value]) {
    let mut t = output::table(
        &["PEER", "SPACE", "ACCESS", "TO SEND", "TO RECEIVE"],
        &[3, 4],
    );
    for v in peers {
        let name = v["name"].as_str().unwrap_or_default();
        if let Some(spaces) = v["spaces"].as_array() {
            for s in spaces {
                let access = match (s["pull"].as_bool(), s["push"].as_bool()) {
                    (Some(true), Some(true)) => "both ways",
                    (Some(true), _) => "receive",
                    (_, Some(true)) => "send",
                    _ => "-",
                };
                let n = |k: &str| match s[k].as_u64() {
                    Some(n) => format!("{n} snapshots"),
                    None if s[k].is_null() && (k == "to_receive") && s["pull"] == true => {
                        "unknown".into()
                    }
                    None => "-".into(),
                };
                t.add_row(vec![
                    name.to_string(),
                    s["space"].as_str().unwrap_or_default().to_string(),
                    access.to_string(),
                    n("to_send"),
                    n("to_receive"),
                ]);
            }
        }
    }
    output::print_table(&t);
}
