//! One sync with a peer, started by this node: `puce sync` and the daemon's schedule.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use puce_core::progress::Progress;
use puce_core::{Repo, index::now_ns};

use crate::auth::Permissions;
use crate::config::{NodeConfig, Peer};
use crate::error::{Error, ErrorKind, Result};
use crate::identity::Identity;
use crate::protocol::{Code, ListSpaces, Message, Push};
use crate::report::{SpaceReport, SyncReport};
use crate::session::checks::Reported;
use crate::session::pull::PullOutcome;
use crate::session::{Conn, NodeCtx, serve};
use crate::state::NodeState;
use crate::transport;

/// What to sync.
#[derive(Debug, Clone, Default)]
pub struct SyncRequest {
    /// The peer's name or id.
    pub peer: String,
    /// Spaces; empty: every space `node.toml` shares with the peer.
    pub spaces: Vec<String>,
    /// Receive the peer's snapshots.
    pub pull: bool,
    /// Send this node's snapshots.
    pub push: bool,
}

/// A tokio runtime for the node (two worker threads: the machine class puce targets).
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("puce-node")
        .enable_all()
        .build()
        .map_err(|e| Error::internal(format!("cannot start the async runtime: {e}")))
}

/// Load the node of `dir` over `repo`.
pub fn load_node(repo: Arc<Repo>, dir: &Path) -> Result<Arc<NodeCtx>> {
    let config = NodeConfig::load(dir)?;
    let identity = Identity::load(dir)?;
    Ok(Arc::new(NodeCtx::new(
        repo,
        config,
        dir.to_path_buf(),
        identity,
    )))
}

/// Run one sync now, from a blocking context.
pub fn sync_now(
    repo: Arc<Repo>,
    dir: &Path,
    req: &SyncRequest,
    progress: Arc<dyn Progress>,
) -> Result<SyncReport> {
    let ctx = load_node(repo, dir)?;
    let rt = runtime()?;
    rt.block_on(async {
        let peer = ctx.config.find_peer(&req.peer)?.clone();
        if peer.address.is_none() {
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "peer '{}' has no address in node.toml: this node cannot call it (it can \
                     call this node)",
                    peer.name
                ),
            ));
        }
        sync_with(&ctx, &peer, req, progress).await
    })
}

/// Run one sync with `peer`, and record the outcome in the node state. The connection has an
/// endpoint of its own ([`transport::DialOne`]: zero-length connection ids, fewer bytes on the
/// wire), closed once the sync is measured and recorded.
pub async fn sync_with(
    ctx: &Arc<NodeCtx>,
    peer: &Peer,
    req: &SyncRequest,
    progress: Arc<dyn Progress>,
) -> Result<SyncReport> {
    let started_ns = now_ns();
    let t0 = Instant::now();
    let mut report = SyncReport {
        peer: peer.name.clone(),
        peer_id: peer.id.to_string(),
        started_ns,
        ..SyncReport::default()
    };
    let mut peer_spaces = Vec::new();
    let mut checks = None;
    let mut own = None;
    let r = run(
        ctx,
        &mut own,
        peer,
        req,
        progress,
        &mut report,
        (&mut peer_spaces, &mut checks),
    )
    .await;
    report.duration_ms = t0.elapsed().as_millis() as u64;
    record(
        &ctx.dir,
        peer,
        started_ns,
        r.as_ref().err(),
        (&peer_spaces, checks.as_ref()),
        &report.spaces,
        Some(&report),
    );
    if let Some(own) = own {
        own.finish().await;
    }
    r.map(|_| report)
}

/// Connect to `peer` at `address` (mutual TLS, its key pinned) and wrap the connection.
pub(crate) async fn dial(
    ctx: &Arc<NodeCtx>,
    endpoint: &quinn::Endpoint,
    peer: &Peer,
    address: &str,
    progress: Arc<dyn Progress>,
) -> Result<Arc<Conn>> {
    let qconn = transport::connect(
        endpoint,
        &ctx.identity,
        peer.id,
        &peer.name,
        address,
        ctx.config.bandwidth,
    )
    .await?;
    let perms = Permissions::of(&ctx.config, &peer.id)
        .ok_or_else(|| Error::internal("the dialled peer is not in the configuration"))?;
    Ok(Conn::new(ctx.clone(), qconn, perms, progress))
}

/// The spaces `req` names, to pull and to push, each checked against what node.toml lets
/// `peer` do.
fn explicit_spaces(peer: &Peer, req: &SyncRequest) -> Result<(Vec<String>, Vec<String>)> {
    let mut pull_spaces: Vec<String> = Vec::new();
    let mut push_spaces: Vec<String> = Vec::new();
    for s in &req.spaces {
        puce_core::format::snapshot::check_space_name(s)?;
        let a = peer.access(s);
        let both = req.pull && req.push;
        if req.pull && a.push {
            pull_spaces.push(s.clone());
        } else if req.pull && !both {
            return Err(Error::new(
                ErrorKind::NotAllowed,
                format!(
                    "node.toml does not let peer '{}' write space '{s}' here, so it cannot be \
                     pulled: add \"push\" to spaces.{s} of that peer",
                    peer.name
                ),
            ));
        }
        if req.push && a.pull {
            push_spaces.push(s.clone());
        } else if req.push && !both {
            return Err(Error::new(
                ErrorKind::NotAllowed,
                format!(
                    "node.toml does not let peer '{}' read space '{s}', so it cannot be \
                     pushed: add \"pull\" to spaces.{s} of that peer",
                    peer.name
                ),
            ));
        }
        if both && !a.pull && !a.push {
            return Err(Error::new(
                ErrorKind::NotAllowed,
                format!(
                    "node.toml shares no space '{s}' with peer '{}': add it to that peer's \
                     spaces with \"pull\" and/or \"push\"",
                    peer.name
                ),
            ));
        }
    }
    Ok((pull_spaces, push_spaces))
}

/// The peer now has this node's snapshots of the `pushed` spaces: add them to `peer_spaces`.
async fn note_pushed(
    ctx: &Arc<NodeCtx>,
    pushed: Vec<String>,
    peer_spaces: &mut Vec<crate::protocol::SpaceState>,
) -> Result<()> {
    let repo = ctx.repo.clone();
    let local = tokio::task::spawn_blocking(move || repo.snapshots())
        .await
        .map_err(|e| Error::internal(format!("{e}")))??;
    for space in pushed {
        let ids: Vec<_> = local
            .iter()
            .filter(|s| s.snapshot.space == space)
            .map(|s| s.id)
            .collect();
        match peer_spaces.iter_mut().find(|st| st.name == space) {
            Some(st) => {
                for id in ids {
                    if !st.snapshots.contains(&id) {
                        st.snapshots.push(id);
                    }
                }
            }
            None => peer_spaces.push(crate::protocol::SpaceState {
                name: space,
                heads: vec![],
                snapshots: ids,
            }),
        }
    }
    Ok(())
}

/// `own`: receives the endpoint dialled from, for the caller to close; `learnt`: receive what
/// the peer has (its spaces as offered or pushed to) and what it said of its copies.
async fn run(
    ctx: &Arc<NodeCtx>,
    own: &mut Option<transport::DialOne>,
    peer: &Peer,
    req: &SyncRequest,
    progress: Arc<dyn Progress>,
    report: &mut SyncReport,
    learnt: (&mut Vec<crate::protocol::SpaceState>, &mut Option<Reported>),
) -> Result<()> {
    let (peer_spaces, checks) = learnt;
    let address = peer.address.clone().ok_or_else(|| {
        Error::new(
            ErrorKind::Config,
            format!("peer '{}' has no address", peer.name),
        )
    })?;
    // Check what node.toml allows before connecting.
    let explicit = !req.spaces.is_empty();
    let (mut pull_spaces, mut push_spaces) = if explicit {
        explicit_spaces(peer, req)?
    } else {
        (Vec::new(), Vec::new())
    };
    let endpoint = own
        .insert(transport::DialOne::new(
            transport::resolve(&address).await?,
        )?)
        .endpoint();
    let conn = dial(ctx, endpoint, peer, &address, progress).await?;
    let served = tokio::spawn(serve(conn.clone()));
    let r = async {
        conn.hello().await?;
        for held in [false, true] {
            let moved = match held {
                false if peer.hold_blind => crate::blind::hold(&conn).await?,
                true if !peer.holds_blind.is_empty() => crate::blind::recover(&conn).await?,
                true => match peer.owner {
                    // Another holder of the same owner: heal from its copy.
                    Some(owner) => crate::blind::heal(&conn, owner).await?,
                    None => continue,
                },
                _ => continue,
            };
            report.blind_files += moved.files;
            report.blind_bytes += moved.bytes;
            report.warnings.extend(moved.warnings);
        }
        if !explicit {
            plan(
                ctx,
                &conn,
                peer,
                req,
                &mut pull_spaces,
                &mut push_spaces,
                report,
            )
            .await?;
        }
        // A pull refused by the peer's quota here does not stop the pushes: the error is
        // reported once they are done, and the peer told when the connection closes.
        let mut refused = None;
        if !pull_spaces.is_empty() {
            match crate::session::pull::pull(&conn, &pull_spaces).await {
                Ok(out) => {
                    let out: PullOutcome = out;
                    *peer_spaces = out.peer_spaces;
                    report.spaces.extend(out.reports);
                }
                Err(e) if e.kind() == ErrorKind::Quota => refused = Some(e),
                Err(e) => return Err(e),
            }
        }
        let mut pushed = Vec::new();
        for s in &push_spaces {
            match push(&conn, s).await {
                Ok(r) => {
                    pushed.push(s.clone());
                    report.spaces.push(r);
                }
                Err(e) if !explicit && e.kind() == ErrorKind::Refused => {
                    report.warnings.push(format!("space '{s}' not pushed: {e}"));
                    report.spaces.push(SpaceReport {
                        space: s.clone(),
                        direction: "push".into(),
                        result: "refused by the peer".into(),
                        ..SpaceReport::default()
                    });
                }
                Err(e) => return Err(e),
            }
        }
        if !pushed.is_empty() {
            note_pushed(ctx, pushed, peer_spaces).await?;
        }
        *checks = Some(crate::session::checks::ask(&conn, peer_spaces).await?);
        match refused {
            Some(e) => {
                conn.close_with(Code::Quota, e.message());
                Err(e)
            }
            None => Ok(()),
        }
    }
    .await;
    let stats = conn.wire_stats();
    tracing::debug!(
        "QUIC statistics of the connection to {}: {}",
        conn.label,
        stats.detail
    );
    report.wire_sent_bytes = stats.sent_bytes;
    report.wire_received_bytes = stats.received_bytes;
    report.rtt_us = stats.rtt.as_micros() as u64;
    report.path_mtu = stats.mtu;
    report.sent_objects = conn.counters.sent_objects.load(Ordering::Relaxed);
    report.sent_bytes = conn.counters.sent_bytes.load(Ordering::Relaxed);
    report.fetched_objects = conn.counters.fetched_objects.load(Ordering::Relaxed);
    report.fetched_bytes = conn.counters.fetched_bytes.load(Ordering::Relaxed);
    report.requests = conn.counters.requests.load(Ordering::Relaxed);
    report.round_trips = conn.counters.round_trips.load(Ordering::Relaxed);
    for s in &report.spaces {
        if s.direction == "pull" {
            report.received_objects += s.objects;
            report.received_bytes += s.bytes;
        }
        report.dedup_saved_bytes += s.logical_bytes.saturating_sub(s.raw_bytes);
    }
    if r.is_ok() {
        conn.done();
    }
    served.abort();
    r
}

/// Which spaces to move when none were named: those node.toml shares with the peer, in the
/// directions it allows; with `*`, every space the peer offers or this node has.
async fn plan(
    ctx: &Arc<NodeCtx>,
    conn: &Arc<Conn>,
    peer: &Peer,
    req: &SyncRequest,
    pull_spaces: &mut Vec<String>,
    push_spaces: &mut Vec<String>,
    report: &mut SyncReport,
) -> Result<()> {
    let named: Vec<String> = peer
        .spaces
        .keys()
        .filter(|s| s.as_str() != "*")
        .cloned()
        .collect();
    if req.pull {
        // What the peer lets this node read.
        let mut recv = conn
            .request(&Message::ListSpaces(ListSpaces { spaces: vec![] }))
            .await?;
        conn.counters.round_trips.fetch_add(1, Ordering::Relaxed);
        let offered: BTreeSet<String> = match conn.answer(&mut recv).await? {
            Message::SpaceList(l) => l.spaces.into_iter().map(|s| s.name).collect(),
            other => {
                return Err(Error::protocol(format!(
                    "{} answered ListSpaces with {}",
                    conn.label,
                    other.name()
                )));
            }
        };
        let mut wanted: BTreeSet<String> = named
            .iter()
            .filter(|s| peer.access(s).push)
            .cloned()
            .collect();
        if peer.has_wildcard() && peer.access("*").push {
            wanted.extend(offered.iter().filter(|s| !peer.names_space(s)).cloned());
        }
        for s in wanted {
            if offered.contains(&s) {
                pull_spaces.push(s);
            } else {
                report.warnings.push(format!(
                    "space '{s}' not pulled: peer '{}' does not let this node read it",
                    peer.name
                ));
            }
        }
    }
    if req.push {
        let repo = ctx.repo.clone();
        let local: BTreeSet<String> = tokio::task::spawn_blocking(move || {
            repo.snapshots()
                .map(|v| v.into_iter().map(|s| s.snapshot.space).collect())
        })
        .await
        .map_err(|e| Error::internal(format!("{e}")))??;
        let mut wanted: BTreeSet<String> = named
            .iter()
            .filter(|s| peer.access(s).pull && local.contains(*s))
            .cloned()
            .collect();
        if peer.has_wildcard() && peer.access("*").pull {
            wanted.extend(local.iter().filter(|s| !peer.names_space(s)).cloned());
        }
        push_spaces.extend(wanted);
    }
    Ok(())
}

async fn push(conn: &Arc<Conn>, space: &str) -> Result<SpaceReport> {
    let mut recv = conn
        .request(&Message::Push(Push {
            space: space.to_string(),
        }))
        .await?;
    conn.counters.round_trips.fetch_add(1, Ordering::Relaxed);
    match conn.answer(&mut recv).await? {
        Message::PushDone(d) => Ok(SpaceReport {
            space: space.to_string(),
            direction: "push".into(),
            result: if d.snapshots == 0 && d.merges == 0 {
                "up to date".into()
            } else {
                "ok".into()
            },
            snapshots: u64::from(d.snapshots),
            objects: d.objects,
            bytes: d.bytes,
            raw_bytes: d.raw_bytes,
            logical_bytes: d.logical_bytes,
            merges: u64::from(d.merges),
            conflicts: Vec::new(),
        }),
        other => Err(Error::protocol(format!(
            "{} answered Push with {}",
            conn.label,
            other.name()
        ))),
    }
}

/// Record an attempt with `peer` in the node state (errors are logged, not returned: the state
/// only serves `puce node status`, the metrics, the replica rules and the schedule). `learnt`:
/// the peer's spaces as of this sync, and what it said of its copies; `moved`: the spaces
/// moved, whose successes are recorded per space.
pub(crate) fn record(
    dir: &Path,
    peer: &Peer,
    started_ns: i64,
    err: Option<&Error>,
    learnt: (&[crate::protocol::SpaceState], Option<&Reported>),
    moved: &[SpaceReport],
    report: Option<&SyncReport>,
) {
    let (peer_spaces, checks) = learnt;
    let r = NodeState::update(dir, |st| {
        let p = st.peers.entry(peer.id.to_string()).or_default();
        p.name.clone_from(&peer.name);
        p.last_attempt_ns = Some(started_ns);
        match err {
            None => {
                p.last_success_ns = Some(started_ns);
                p.failures = 0;
                p.last_error = None;
            }
            Some(e) => {
                p.failures = p.failures.saturating_add(1);
                p.last_error = Some(format!("{e:#}"));
            }
        }
        for s in peer_spaces {
            p.spaces.insert(
                s.name.clone(),
                s.snapshots.iter().map(|i| i.to_hex()).collect(),
            );
        }
        for s in moved {
            p.space_attempt_ns.insert(s.space.clone(), started_ns);
            if s.result == "ok" || s.result == "up to date" {
                p.space_success_ns.insert(s.space.clone(), started_ns);
            }
        }
        if err.is_some() {
            // Each space shared with the peer was attempted, whether or not it was reached.
            let shared: Vec<String> = peer
                .spaces
                .keys()
                .filter(|s| s.as_str() != "*")
                .chain(p.space_success_ns.keys())
                .cloned()
                .collect();
            for s in shared {
                p.space_attempt_ns.insert(s, started_ns);
            }
        }
        if let Some(r) = report {
            p.last_report = Some(r.clone());
        }
        match checks {
            None => {}
            Some(Reported::Unsupported(v)) => {
                p.checks.clear();
                p.checks_missing = Some(format!(
                    "it speaks protocol revision {v}, which does not report data checks \
                     (revision {} does): upgrade puce there",
                    crate::protocol::CHECKS_VERSION
                ));
            }
            Some(Reported::Said { asked, checks }) => {
                p.checks_missing = None;
                for s in asked {
                    p.checks.remove(s);
                }
                p.checks.extend(checks.iter().cloned());
            }
        }
    });
    if let Err(e) = r {
        tracing::warn!("cannot record the sync in the node state: {e:#}");
    }
}

/// Record a push received from the peer of `conn`.
pub(crate) fn record_incoming(conn: &Conn, res: Result<(), &Error>, out: Option<&PullOutcome>) {
    let Some(peer) = conn.ctx.config.peer_by_id(&conn.peer.id) else {
        return;
    };
    let spaces = out.map(|o| o.peer_spaces.as_slice()).unwrap_or(&[]);
    let moved = out.map(|o| o.reports.as_slice()).unwrap_or(&[]);
    record(
        &conn.ctx.dir,
        peer,
        now_ns(),
        res.err(),
        (spaces, None),
        moved,
        None,
    );
}
