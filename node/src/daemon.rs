//! The daemon (`puce node run`): listens for peers, runs the scheduled syncs inside the
//! windows with backoff after failures, caps the bandwidth, logs with tracing, reloads
//! `node.toml` on SIGHUP, stops on SIGINT or SIGTERM.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::ZonedDateTime;
use puce_core::Repo;
use puce_core::check::{CheckOptions, check};
use puce_core::index::now_ns;
use puce_core::progress::NoProgress;

use crate::auth::Permissions;
use crate::config::Peer;
use crate::error::{Error, Result};
use crate::protocol::Code;
use crate::scheduler::{self, History};
use crate::session::{Conn, NodeCtx, serve};
use crate::state::{CheckState, DaemonInfo, DaemonLock, NodeState};
use crate::sync::{SyncRequest, load_node, runtime, sync_with};
use crate::transport;

/// Authenticated connections served at once; more are closed with `Busy` (the peer retries
/// later). Handshakes in progress do not count: they have their own limits, below.
pub const MAX_CONNECTIONS: usize = 32;
/// Handshakes in progress at once; more are refused.
pub const MAX_HANDSHAKES: usize = 64;
/// Handshakes in progress at once from one source (an IPv4 address, an IPv6 /64); more are
/// refused.
pub const MAX_HANDSHAKES_PER_SOURCE: usize = 4;
/// A handshake not complete by then is dropped (a real one takes a few round trips).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Run the daemon until SIGINT or SIGTERM; SIGHUP reloads `node.toml`.
pub fn run(repo: Arc<Repo>, dir: &Path) -> Result<()> {
    let mut ctx = load_node(repo.clone(), dir)?;
    let rt = runtime()?;
    rt.block_on(async move {
        let endpoint = transport::listen(ctx.config.listen, &ctx.identity, &ctx.config)?;
        let addr = endpoint
            .local_addr()
            .map_err(|e| Error::internal(format!("no local address: {e}")))?;
        let started_ns = now_ns();
        let _lock = DaemonLock::acquire(
            &ctx.dir,
            &DaemonInfo {
                pid: std::process::id(),
                listen: addr.to_string(),
                started_ns,
            },
        )?;
        // The previous daemon stopped cleanly if it cleared this flag.
        let after_crash = crate::notify::NotifyState::update(&ctx.dir, |s| {
            std::mem::replace(&mut s.running, true)
        })?;
        if after_crash {
            tracing::warn!("the previous daemon did not stop cleanly (killed or crashed)");
        }
        let mut signals = Signals::new()?;
        let mut tasks = start(&ctx, &endpoint, started_ns, after_crash, true).await?;
        tracing::info!(
            "node '{}' ({}) listening on {addr} (UDP); {}",
            ctx.config.name,
            ctx.identity.id(),
            summary(&ctx)
        );
        if let Some(f) = ctx.fault {
            tracing::warn!("test fault active: {f:?} (PUCE_TEST_FAULT)");
        }
        while signals.next().await == Signal::Reload {
            match reload(&ctx, &repo, dir) {
                Ok((new, server)) => {
                    tasks.retire().await;
                    endpoint.set_server_config(Some(server));
                    ctx = new;
                    tasks = start(&ctx, &endpoint, started_ns, false, false).await?;
                    tracing::info!("node.toml reloaded: {}", summary(&ctx));
                }
                Err(e) => tracing::error!(
                    "node.toml not reloaded, the running configuration is kept: {e:#}"
                ),
            }
        }
        tracing::info!("stopping: closing connections");
        tasks.abort();
        endpoint.close(Code::ShuttingDown.varint(), b"node is stopping");
        let _ = tokio::time::timeout(Duration::from_secs(5), endpoint.wait_idle()).await;
        if let Err(e) = crate::notify::NotifyState::update(&ctx.dir, |s| s.running = false) {
            tracing::warn!("cannot record the clean stop: {e:#}");
        }
        tracing::info!("stopped");
        Ok(())
    })
}

/// Peers, windows and bandwidth cap of the configuration, for the log.
fn summary(ctx: &NodeCtx) -> String {
    format!(
        "{} peers; windows: {}; bandwidth cap: {}",
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
    )
}

/// `node.toml` read again (SIGHUP), with the server configuration of the listening endpoint
/// that goes with it (the peers it accepts, the bandwidth cap). Settings that need a restart
/// are named in the log.
fn reload(
    ctx: &NodeCtx,
    repo: &Arc<Repo>,
    dir: &Path,
) -> Result<(Arc<NodeCtx>, quinn::ServerConfig)> {
    let new = load_node(repo.clone(), dir)?;
    let server = transport::server_config(&new.identity, &new.config)?;
    if new.config.listen != ctx.config.listen {
        tracing::warn!(
            "[node] listen changed to {}: this takes a restart of the daemon; it still listens \
             on {}",
            new.config.listen,
            ctx.config.listen
        );
    }
    Ok((new, server))
}

/// What a configuration runs: loops that hold no data (aborted at a reload) and the scheduled
/// syncs and checks (told to stop, they end the sync or check in progress first).
struct Tasks {
    loops: Vec<tokio::task::JoinHandle<()>>,
    schedules: Vec<tokio::task::JoinHandle<()>>,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Tasks {
    /// Make way for another configuration: loops end now, schedules after their work in
    /// progress. Connections being served keep the configuration they started with.
    async fn retire(self) {
        let _ = self.stop.send(true);
        for l in &self.loops {
            l.abort();
        }
        for l in self.loops {
            // Wait until they are dropped: the metrics listener's port is free again.
            let _ = l.await;
        }
    }

    /// Stop everything now (the daemon stops).
    fn abort(self) {
        for t in self.loops.iter().chain(&self.schedules) {
            t.abort();
        }
    }
}

/// Start what `ctx` configures on `endpoint`. At the first start (`first`), a metrics listener
/// that cannot bind stops the daemon; at a reload it is logged and the rest runs.
async fn start(
    ctx: &Arc<NodeCtx>,
    endpoint: &quinn::Endpoint,
    started_ns: i64,
    after_crash: bool,
    first: bool,
) -> Result<Tasks> {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut loops = Vec::new();
    // The repository figures, for the metrics and the disk forecast of the notifications.
    let cache = crate::metrics::Cache::default();
    if ctx.config.metrics.is_some() || ctx.config.notify.is_some() {
        let refresh = ctx
            .config
            .metrics
            .map_or(Duration::from_secs(3600), |m| m.refresh);
        loops.push(tokio::spawn(crate::metrics::refresh_loop(
            ctx.clone(),
            cache.clone(),
            refresh,
        )));
    }
    if let Some(n) = &ctx.config.notify {
        loops.push(tokio::spawn(crate::notify::run(
            ctx.clone(),
            n.clone(),
            cache.clone(),
            started_ns,
            after_crash,
        )));
    }
    if let Some(m) = ctx.config.metrics {
        match tokio::net::TcpListener::bind(m.listen).await {
            Ok(listener) => {
                tracing::info!(
                    "metrics on http://{}/metrics",
                    listener.local_addr().unwrap_or(m.listen)
                );
                loops.push(tokio::spawn(crate::metrics::serve(
                    listener,
                    ctx.clone(),
                    cache,
                    started_ns,
                )));
            }
            Err(e) => {
                let e = Error::new(
                    crate::ErrorKind::Config,
                    format!(
                        "cannot serve the metrics on {} ([metrics] listen in node.toml): {e}",
                        m.listen
                    ),
                );
                if first {
                    return Err(e);
                }
                tracing::error!("{e:#}");
            }
        }
    }
    loops.push(tokio::spawn(accept_loop(ctx.clone(), endpoint.clone())));
    let mut schedules = Vec::new();
    for p in ctx.config.peers.iter().filter(|p| p.address.is_some()) {
        schedules.push(tokio::spawn(schedule(
            ctx.clone(),
            p.clone(),
            stopped.clone(),
        )));
    }
    if ctx.config.check.is_some() {
        schedules.push(tokio::spawn(check_schedule(
            ctx.clone(),
            endpoint.clone(),
            stopped,
        )));
    }
    Ok(Tasks {
        loops,
        schedules,
        stop,
    })
}

/// What a signal asks of the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signal {
    Stop,
    Reload,
}

/// SIGINT, SIGTERM and SIGHUP, listened to for the daemon's whole life.
struct Signals {
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        let e = |e: std::io::Error| Error::internal(format!("cannot listen to signals: {e}"));
        Ok(Signals {
            term: signal(SignalKind::terminate()).map_err(e)?,
            hup: signal(SignalKind::hangup()).map_err(e)?,
        })
    }

    async fn next(&mut self) -> Signal {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => Signal::Stop,
            _ = self.term.recv() => Signal::Stop,
            _ = self.hup.recv() => Signal::Reload,
        }
    }
}

/// Sleep `wait`, or less if told to stop; whether to go on.
async fn sleep_unless_stopped(
    wait: Duration,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) -> bool {
    if *stop.borrow() {
        return false;
    }
    tokio::select! {
        _ = tokio::time::sleep(wait) => true,
        _ = stop.changed() => false,
    }
}

/// Accept and serve connections on `endpoint` until it closes.
///
/// Before any handshake, a client must prove that it receives what is sent to its address (a
/// QUIC Retry, RFC 9000 section 8.1): spoofed sources cannot start handshakes. Handshakes are
/// then limited in number, per source, and in time; only connections whose key was checked
/// count against [`MAX_CONNECTIONS`], so that nobody without a configured key can keep a
/// configured peer out.
pub async fn accept_loop(ctx: Arc<NodeCtx>, endpoint: quinn::Endpoint) {
    let active = Arc::new(AtomicUsize::new(0));
    let handshakes = Arc::new(Handshakes::default());
    while let Some(incoming) = endpoint.accept().await {
        let from = incoming.remote_address();
        if !incoming.remote_address_validated() {
            if incoming.may_retry() {
                if let Err(e) = incoming.retry() {
                    e.into_incoming().ignore();
                }
            } else {
                // A Retry token that does not check: never answered.
                incoming.ignore();
            }
            continue;
        }
        let Some(slot) = handshakes.start(from.ip()) else {
            tracing::info!(
                "refused a connection attempt from {from}: too many handshakes in progress                  ({MAX_HANDSHAKES_PER_SOURCE} from one source, {MAX_HANDSHAKES} in all)"
            );
            incoming.refuse();
            continue;
        };
        let ctx = ctx.clone();
        let active = active.clone();
        tokio::spawn(async move {
            let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, incoming).await;
            drop(slot);
            let qconn = match handshake {
                Ok(Ok(c)) => c,
                // Refused keys are logged by the verifier; other failures here.
                Ok(Err(e)) => {
                    tracing::info!("connection attempt from {from} failed: {e}");
                    return;
                }
                Err(_) => {
                    tracing::info!(
                        "connection attempt from {from} dropped: no complete handshake within                          {} s",
                        HANDSHAKE_TIMEOUT.as_secs()
                    );
                    return;
                }
            };
            let Some(perms) = transport::peer_id(&qconn)
                .ok()
                .and_then(|id| Permissions::of(&ctx.config, &id))
            else {
                qconn.close(Code::NotAllowed.varint(), b"unknown peer");
                return;
            };
            if active.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
                active.fetch_sub(1, Ordering::AcqRel);
                tracing::warn!(
                    "refused peer '{}' ({from}): {MAX_CONNECTIONS} connections already",
                    perms.name
                );
                qconn.close(
                    Code::Busy.varint(),
                    b"too many connections: try again later",
                );
                return;
            }
            let conn = Conn::new(ctx.clone(), qconn, perms, Arc::new(NoProgress));
            serve(conn).await;
            active.fetch_sub(1, Ordering::AcqRel);
        });
    }
}

/// Handshakes in progress, in all and per source.
#[derive(Default)]
struct Handshakes {
    by_source: Mutex<HashMap<IpAddr, usize>>,
}

/// One handshake in progress; its place is freed when dropped.
struct HandshakeSlot {
    of: Arc<Handshakes>,
    source: IpAddr,
}

impl Handshakes {
    /// A place for a handshake from `ip`, if the limits allow one.
    fn start(self: &Arc<Self>, ip: IpAddr) -> Option<HandshakeSlot> {
        let source = source_of(ip);
        let mut m = self.by_source.lock().ok()?;
        let total: usize = m.values().sum();
        let n = m.get(&source).copied().unwrap_or(0);
        if total >= MAX_HANDSHAKES || n >= MAX_HANDSHAKES_PER_SOURCE {
            return None;
        }
        m.insert(source, n + 1);
        Some(HandshakeSlot {
            of: self.clone(),
            source,
        })
    }
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        if let Ok(mut m) = self.of.by_source.lock()
            && let Some(n) = m.get_mut(&self.source)
        {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.source);
            }
        }
    }
}

/// The source a handshake is counted against: an IPv4 address, or the /64 of an IPv6 one (a
/// host usually holds a whole /64).
fn source_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut s = v6.segments();
                s[4..].fill(0);
                IpAddr::V6(s.into())
            }
        },
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

/// Sync with `peer` on schedule, each time from an endpoint of its own (`transport::DialOne`).
async fn schedule(ctx: Arc<NodeCtx>, peer: Peer, mut stop: tokio::sync::watch::Receiver<bool>) {
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
        }
        if !sleep_unless_stopped(wait, &mut stop).await {
            return;
        }
        let req = SyncRequest {
            peer: peer.name.clone(),
            spaces: vec![],
            pull: true,
            push: true,
        };
        match sync_with(&ctx, &peer, &req, Arc::new(NoProgress)).await {
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
                // A point of the ledger's history (`puce report peers --html` charts them),
                // after the sync: its walk is not the sync's time.
                let c = ctx.clone();
                let recorded = tokio::task::spawn_blocking(move || {
                    crate::ledger::record_point(&c.repo, &c.config, &c.dir)
                })
                .await;
                if let Ok(Err(e)) = recorded {
                    tracing::warn!("the ledger's history has no point for this sync: {e:#}");
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

/// The scheduled data check (`[check]` in node.toml): a sampled `check --read-data`, and when
/// it finds damage, a heal from the peers. Everything it does and could not do is logged.
async fn check_schedule(
    ctx: Arc<NodeCtx>,
    endpoint: quinn::Endpoint,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let Some(cs) = ctx.config.check else {
        return;
    };
    loop {
        let now = ZonedDateTime::now();
        let last = NodeState::load(&ctx.dir)
            .ok()
            .and_then(|s| s.check)
            .and_then(|c| c.last_ns)
            .and_then(|n| jiff::Timestamp::from_nanosecond(i128::from(n)).ok());
        let due = scheduler::next_check(&now, last, &ctx.config.windows, cs.interval);
        let wait: Duration = now
            .duration_until(&due)
            .try_into()
            .unwrap_or(Duration::ZERO);
        if !wait.is_zero() {
            tracing::info!(
                "next check of the data at {}",
                due.strftime("%Y-%m-%d %H:%M:%S %Z")
            );
        }
        if !sleep_unless_stopped(wait, &mut stop).await {
            return;
        }
        let started_ns = now_ns();
        let st = run_check(&ctx, &endpoint, cs).await;
        let mut st = CheckState {
            last_ns: Some(started_ns),
            ..st
        };
        if let Err(e) = NodeState::update(&ctx.dir, |s| {
            st.follow(s.check.as_ref(), started_ns);
            s.check = Some(st);
        }) {
            tracing::warn!("cannot record the check in the node state: {e:#}");
        }
    }
}

async fn run_check(
    ctx: &Arc<NodeCtx>,
    endpoint: &quinn::Endpoint,
    cs: crate::config::CheckSchedule,
) -> CheckState {
    let repo = ctx.repo.clone();
    let opts = CheckOptions {
        read_data: true,
        // One thread: the daemon shares the machine.
        threads: 1,
        sample: Some(cs.sample),
    };
    let r = tokio::task::spawn_blocking(move || check(&repo, &opts, &NoProgress)).await;
    let report = match r {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            tracing::warn!("the scheduled check failed: {e:#}");
            return CheckState {
                error: Some(format!("{e:#}")),
                ..CheckState::default()
            };
        }
        Err(e) => {
            return CheckState {
                error: Some(format!("the check thread failed: {e}")),
                ..CheckState::default()
            };
        }
    };
    let problems: Vec<_> = report
        .problems
        .iter()
        .filter(|p| p.kind != "unindexed_pack")
        .collect();
    let mut st = CheckState {
        ok: report.is_ok(),
        problems: problems.len() as u64,
        packs_read: report.packs_read,
        coverage: report.sample_position,
        ..CheckState::default()
    };
    tracing::info!(
        "checked {} packs ({:.0}% sample, the rotation is {:.0}% through): {}",
        report.packs_read,
        cs.sample * 100.0,
        report.sample_position.unwrap_or(0.0) * 100.0,
        if report.is_ok() {
            "no errors".to_string()
        } else {
            format!("{} problems found", problems.len())
        }
    );
    if report.is_ok() {
        return st;
    }
    st.damaged_paths = report
        .affected
        .iter()
        .flat_map(|a| a.paths.iter().map(move |p| format!("{}:{p}", a.space)))
        .take(crate::state::MAX_PATHS)
        .collect();
    for p in problems.iter().take(50) {
        tracing::warn!("check: {}", p.detail);
    }
    for a in &report.affected {
        tracing::warn!(
            "check: snapshot {} of space '{}' is damaged ({} paths, e.g. {})",
            a.id.get(..12).unwrap_or(&a.id),
            a.space,
            a.damaged_paths,
            a.paths.first().map(String::as_str).unwrap_or("/")
        );
    }
    if !cs.repair {
        tracing::warn!(
            "[check] repair = false: not healing; run `puce repair --from PEER` to heal from a peer"
        );
        return st;
    }
    if report.problems.iter().any(|p| p.kind == "held_file") {
        // Files held blind for other nodes: moved aside, fetched again at the next sync.
        let root = ctx.repo.root().to_path_buf();
        match tokio::task::spawn_blocking(move || puce_core::blind::set_aside_damaged(&root)).await
        {
            Ok(Ok(moved)) => {
                for m in moved {
                    tracing::warn!("check: {m}");
                }
            }
            Ok(Err(e)) => tracing::warn!("cannot move damaged held files aside: {e:#}"),
            Err(e) => tracing::warn!("cannot move damaged held files aside: {e}"),
        }
        if report.bad_objects.is_empty() && report.affected.is_empty() {
            return st;
        }
    }
    let peers: Vec<Peer> = ctx
        .config
        .peers
        .iter()
        .filter(|p| p.address.is_some())
        .cloned()
        .collect();
    if peers.is_empty() {
        tracing::warn!("no peer with an address in node.toml to heal from");
        st.error = Some("no peer to heal from".into());
        return st;
    }
    tracing::info!(
        "healing {} damaged or missing objects from {} peers",
        report.bad_objects.len(),
        peers.len()
    );
    match crate::heal::heal_from(ctx, endpoint, &peers, report, Arc::new(NoProgress)).await {
        Ok(h) => {
            crate::heal::log_report(&h);
            st.healed = h.healed.len() as u64;
            st.lost = h.lost.len() as u64;
            st.lost_paths = h
                .lost
                .iter()
                .map(|l| format!("{}:{}", l.space, l.path))
                .take(crate::state::MAX_PATHS)
                .collect();
        }
        Err(e) => {
            tracing::warn!("cannot heal the damage: {e:#}");
            st.error = Some(format!("{e:#}"));
        }
    }
    st
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshakes_are_limited_per_source_and_in_all() {
        let h = Arc::new(Handshakes::default());
        let ip = |s: &str| s.parse::<IpAddr>().unwrap_or(IpAddr::V4([0; 4].into()));
        let mut held: Vec<HandshakeSlot> = (0..MAX_HANDSHAKES_PER_SOURCE)
            .filter_map(|_| h.start(ip("192.0.2.1")))
            .collect();
        assert_eq!(held.len(), MAX_HANDSHAKES_PER_SOURCE);
        assert!(h.start(ip("192.0.2.1")).is_none());
        // The same host over IPv4-mapped IPv6, and another address of one IPv6 /64.
        assert!(h.start(ip("::ffff:192.0.2.1")).is_none());
        held.extend(h.start(ip("2001:db8::1")));
        for _ in 1..MAX_HANDSHAKES_PER_SOURCE {
            held.extend(h.start(ip("2001:db8::2")));
        }
        assert!(h.start(ip("2001:db8::3")).is_none());
        assert!(h.start(ip("2001:db8:0:1::3")).is_some());
        // A place freed is available again.
        held.truncate(MAX_HANDSHAKES_PER_SOURCE - 1);
        assert!(h.start(ip("192.0.2.1")).is_some());
        // In all.
        let mut many = Vec::new();
        for i in 0..=255u8 {
            many.extend(h.start(IpAddr::V4([198, 51, 100, i].into())));
        }
        let in_progress = held.len() + many.len();
        assert_eq!(in_progress, MAX_HANDSHAKES);
        drop(many);
        assert!(h.by_source.lock().map(|m| m.len()).unwrap_or(0) <= 2);
    }
}
