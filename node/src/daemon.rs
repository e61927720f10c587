//! The daemon (`puce node run`): listens for peers, runs the scheduled syncs inside the
//! windows with backoff after failures, caps the bandwidth, logs with tracing, stops on SIGINT
//! or SIGTERM.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use jiff::ZonedDateTime;
use puce_core::Repo;
use puce_core::index::now_ns;
use puce_core::progress::NoProgress;

use crate::auth::Permissions;
use crate::config::Peer;
use crate::error::{Error, Result};
use crate::protocol::Code;
use crate::scheduler::{self, History};
use crate::session::{Conn, NodeCtx, serve};
use crate::state::{DaemonInfo, DaemonLock, NodeState};
use crate::sync::{SyncRequest, load_node, runtime, sync_with};
use crate::transport;

/// Connections served at once; more are refused (the peer retries later).
pub const MAX_CONNECTIONS: usize = 32;

/// Run the daemon until SIGINT or SIGTERM.
pub fn run(repo: Arc<Repo>, dir: &Path) -> Result<()> {
    let ctx = load_node(repo, dir)?;
    let rt = runtime()?;
    rt.block_on(async move {
        let endpoint = transport::listen(ctx.config.listen, &ctx.identity, &ctx.config)?;
        let addr = endpoint
            .local_addr()
            .map_err(|e| Error::internal(format!("no local address: {e}")))?;
        let _lock = DaemonLock::acquire(
            &ctx.dir,
            &DaemonInfo {
                pid: std::process::id(),
                listen: addr.to_string(),
                started_ns: now_ns(),
            },
        )?;
        tracing::info!(
            "node '{}' ({}) listening on {addr} (UDP); {} peers; windows: {}; bandwidth cap: {}",
            ctx.config.name,
            ctx.identity.id(),
            ctx.config.peers.len(),
            if ctx.config.windows.is_empty() {
                "any time".to_string()
            } else {
                ctx.config
                    .windows
                    .iter()
                    .map(|w| w.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            },
            ctx.config
                .bandwidth
                .map(|b| format!("{}/s", bytesize::ByteSize(b).display().iec()))
                .unwrap_or_else(|| "none".into())
        );
        if let Some(f) = ctx.fault {
            tracing::warn!("test fault active: {f:?} (PUCE_TEST_FAULT)");
        }
        let accept = tokio::spawn(accept_loop(ctx.clone(), endpoint.clone()));
        let mut schedules = Vec::new();
        for p in ctx.config.peers.iter().filter(|p| p.address.is_some()) {
            schedules.push(tokio::spawn(schedule(
                ctx.clone(),
                endpoint.clone(),
                p.clone(),
            )));
        }
        wait_for_signal().await;
        tracing::info!("stopping: closing connections");
        for s in &schedules {
            s.abort();
        }
        accept.abort();
        endpoint.close(Code::ShuttingDown.varint(), b"node is stopping");
        let _ = tokio::time::timeout(Duration::from_secs(5), endpoint.wait_idle()).await;
        tracing::info!("stopped");
        Ok(())
    })
}

async fn wait_for_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

/// Accept and serve connections on `endpoint` until it closes.
pub async fn accept_loop(ctx: Arc<NodeCtx>, endpoint: quinn::Endpoint) {
    let active = Arc::new(AtomicUsize::new(0));
    while let Some(incoming) = endpoint.accept().await {
        if active.load(Ordering::Acquire) >= MAX_CONNECTIONS {
            tracing::warn!(
                "refused a connection from {}: {MAX_CONNECTIONS} connections already",
                incoming.remote_address()
            );
            incoming.refuse();
            continue;
        }
        let ctx = ctx.clone();
        let active = active.clone();
        active.fetch_add(1, Ordering::AcqRel);
        tokio::spawn(async move {
            let from = incoming.remote_address();
            match incoming.await {
                Ok(qconn) => match transport::peer_id(&qconn)
                    .ok()
                    .and_then(|id| Permissions::of(&ctx.config, &id))
                {
                    Some(perms) => {
                        let conn = Conn::new(ctx.clone(), qconn, perms, Arc::new(NoProgress));
                        serve(conn).await;
                    }
                    None => qconn.close(Code::NotAllowed.varint(), b"unknown peer"),
                },
                // Refused keys are logged by the verifier; other failures here.
                Err(e) => tracing::info!("connection attempt from {from} failed: {e}"),
            }
            active.fetch_sub(1, Ordering::AcqRel);
        });
    }
}

fn history(ctx: &NodeCtx, peer: &Peer) -> History {
    let st = NodeState::load(&ctx.dir).unwrap_or_default();
    let ts =
        |ns: Option<i64>| ns.and_then(|n| jiff::Timestamp::from_nanosecond(i128::from(n)).ok());
    match st.peers.get(&peer.id.to_string()) {
        Some(p) => History {
            last_attempt: ts(p.last_attempt_ns),
            last_success: ts(p.last_success_ns),
            failures: p.failures,
        },
        None => History::default(),
    }
}

async fn schedule(ctx: Arc<NodeCtx>, endpoint: quinn::Endpoint, peer: Peer) {
    loop {
        let now = ZonedDateTime::now();
        let h = history(&ctx, &peer);
        let due = scheduler::next_due(
            &now,
            &h,
            &ctx.config.windows,
            ctx.config.interval,
            &ctx.config.retry,
        );
        let wait = now
            .duration_until(&due)
            .try_into()
            .unwrap_or(Duration::ZERO);
        let due_ns = due.timestamp().as_nanosecond() as i64;
        let _ = NodeState::update(&ctx.dir, |st| {
            let p = st.peers.entry(peer.id.to_string()).or_default();
            p.name.clone_from(&peer.name);
            p.next_due_ns = Some(due_ns);
        });
        if !wait.is_zero() {
            tracing::info!(
                "next sync with peer '{}' at {}",
                peer.name,
                due.strftime("%Y-%m-%d %H:%M:%S %Z")
            );
            tokio::time::sleep(wait).await;
        }
        let req = SyncRequest {
            peer: peer.name.clone(),
            spaces: vec![],
            pull: true,
            push: true,
        };
        match sync_with(&ctx, &endpoint, &peer, &req, Arc::new(NoProgress)).await {
            Ok(r) => {
                let (snaps, objects, bytes, merges) = r.totals();
                tracing::info!(
                    "synced with peer '{}' in {} ms: {snaps} snapshots, {objects} objects, {} \
                     stored, {merges} merges; {} sent, {} received on the wire",
                    peer.name,
                    r.duration_ms,
                    bytesize::ByteSize(bytes).display().iec(),
                    bytesize::ByteSize(r.wire_sent_bytes).display().iec(),
                    bytesize::ByteSize(r.wire_received_bytes).display().iec()
                );
                for w in &r.warnings {
                    tracing::warn!("peer '{}': {w}", peer.name);
                }
            }
            Err(e) => {
                let h = history(&ctx, &peer);
                tracing::warn!(
                    "sync with peer '{}' failed ({} in a row{}): {e:#}",
                    peer.name,
                    h.failures,
                    if e.is_retryable() {
                        ""
                    } else {
                        "; this will not fix itself, see the message"
                    }
                );
            }
        }
    }
}
