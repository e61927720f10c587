//! The daemon's Prometheus metrics (`[metrics]` in `node.toml`), served at `/metrics` in the
//! OpenMetrics text format. Every metric is a gauge: a state (the last sync, the last check, the
//! repository now), read at each scrape from what the daemon already keeps, so that a scrape
//! never slows a sync:
//! - peers and checks from the node state (`state.json`, a small file);
//! - disk free from one `statvfs`;
//! - the replica rules from the snapshot records and receipts (read, no tree walked);
//! - the repository figures (sizes, dedup, snapshots per space, growth) from a cache that a
//!   background task recomputes every `refresh` (a walk of every snapshot, never per scrape).
//!
//! The names, labels and meanings are listed in `docs/guide.md` ("Monitoring").

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use puce_core::Repo;
use puce_core::index::now_ns;
use puce_core::report::{self, Census};

use crate::error::{Error, Result};
use crate::session::NodeCtx;
use crate::state::NodeState;

/// Media type of the page.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// A request whose headers have not arrived by then is dropped.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// The repository figures, computed in the background (see the module documentation).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Figures {
    /// When they were computed, ns since the epoch.
    pub computed_ns: i64,
    /// Sum of the sizes of all snapshots.
    pub logical_bytes: u64,
    /// Plaintext bytes of the distinct chunks.
    pub unique_bytes: u64,
    /// Stored bytes of the distinct objects reachable.
    pub stored_bytes: u64,
    /// Size of the pack files.
    pub pack_bytes: u64,
    /// logical / unique.
    pub dedup_ratio: f64,
    /// unique / stored.
    pub compression_ratio: f64,
    /// Stored bytes added per second, averaged over the last 30 days of history.
    pub growth_bytes_per_second: f64,
    /// Per space: snapshots, logical and stored bytes.
    pub spaces: Vec<(String, u64, u64, u64)>,
    /// The use of each peer's and space's quota ([`crate::quota`]).
    pub quotas: Vec<crate::quota::QuotaUse>,
}

/// The latest figures, shared between the refresh task and the server.
pub type Cache = Arc<Mutex<Option<Figures>>>;

/// Compute the repository figures (walks every snapshot: run it off the async threads).
pub fn compute(repo: &Repo, config: &crate::config::NodeConfig) -> Result<Figures> {
    let c = Census::build(repo)?;
    let d = report::dedup(repo, &c, None, 0)?;
    let now = now_ns();
    // The rate does not depend on the free space; the forecast is made at each scrape.
    let g = report::growth(&c, None, &jiff::tz::TimeZone::system(), 0, now);
    Ok(Figures {
        computed_ns: now,
        logical_bytes: d.logical_bytes,
        unique_bytes: d.unique_bytes,
        stored_bytes: d.stored_bytes,
        pack_bytes: d.pack_bytes,
        dedup_ratio: d.dedup_ratio,
        compression_ratio: d.compression_ratio,
        growth_bytes_per_second: g.bytes_per_day / 86400.0,
        spaces: d
            .spaces
            .iter()
            .map(|s| {
                (
                    s.space.clone(),
                    s.snapshots,
                    s.logical_bytes,
                    s.stored_bytes,
                )
            })
            .collect(),
        quotas: crate::quota::uses(repo, config)?,
    })
}

/// Recompute the figures now and then every `every`, with one blocking thread.
pub async fn refresh_loop(ctx: Arc<NodeCtx>, cache: Cache, every: Duration) {
    loop {
        let c2 = ctx.clone();
        match tokio::task::spawn_blocking(move || compute(&c2.repo, &c2.config)).await {
            Ok(Ok(f)) => {
                if let Ok(mut c) = cache.lock() {
                    *c = Some(f);
                }
            }
            Ok(Err(e)) => tracing::warn!("metrics: cannot compute the repository figures: {e:#}"),
            Err(e) => tracing::warn!("metrics: the figures thread failed: {e}"),
        }
        tokio::time::sleep(every).await;
    }
}

type Labels = Vec<(String, String)>;
/// A gauge's help text and samples.
type Samples = (&'static str, Vec<(Labels, f64)>);

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect()
}

fn secs(ns: i64) -> f64 {
    ns as f64 / 1e9
}

/// A page being built: gauges by name, each with its samples.
struct Page {
    registry: Registry,
    families: BTreeMap<&'static str, Samples>,
}

impl Page {
    fn new() -> Page {
        Page {
            registry: Registry::default(),
            families: BTreeMap::new(),
        }
    }

    /// A sample of gauge `name`.
    fn set(&mut self, name: &'static str, help: &'static str, l: Labels, v: f64) {
        self.families
            .entry(name)
            .or_insert_with(|| (help, Vec::new()))
            .1
            .push((l, v));
    }

    /// A gauge without labels.
    fn one(&mut self, name: &'static str, help: &'static str, v: f64) {
        self.set(name, help, Vec::new(), v);
    }

    fn encode(mut self) -> Result<String> {
        for (name, (help, samples)) in std::mem::take(&mut self.families) {
            if samples.len() == 1 && samples[0].0.is_empty() {
                let g = Gauge::<f64, AtomicU64>::default();
                g.set(samples[0].1);
                self.registry.register(name, help, g);
            } else {
                let f = Family::<Labels, Gauge<f64, AtomicU64>>::default();
                for (l, v) in samples {
                    f.get_or_create(&l).set(v);
                }
                self.registry.register(name, help, f);
            }
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .map_err(|e| Error::internal(format!("cannot encode the metrics: {e}")))?;
        Ok(out)
    }
}

/// The metrics page of `ctx` now, from the node state, `figures` and the free disk space.
pub fn render(ctx: &NodeCtx, figures: Option<&Figures>, started_ns: i64) -> Result<String> {
    let st = NodeState::load(&ctx.dir)?;
    let mut p = Page::new();
    p.set(
        "puce_node_info",
        "This node: its name, id and puce version (always 1).",
        labels(&[
            ("node", &ctx.config.name),
            ("id", &ctx.identity.id().to_string()),
            ("version", env!("CARGO_PKG_VERSION")),
        ]),
        1.0,
    );
    p.one(
        "puce_node_start_time_seconds",
        "When the daemon started, seconds since the epoch.",
        secs(started_ns),
    );
    peers(&mut p, ctx, &st);
    check(&mut p, &st);
    if let Err(e) = replicas(&mut p, ctx, &st) {
        tracing::warn!("metrics: cannot evaluate the replica rules: {e:#}");
    }
    disk(&mut p, ctx, figures);
    if let Some(f) = figures {
        repository(&mut p, f);
    }
    p.encode()
}

/// Per peer, and per peer and space: the last sync.
fn peers(p: &mut Page, ctx: &NodeCtx, st: &NodeState) {
    for peer in &ctx.config.peers {
        let Some(ps) = st.peers.get(&peer.id.to_string()) else {
            continue;
        };
        let l = labels(&[("peer", &peer.name)]);
        if let Some(t) = ps.last_attempt_ns {
            p.set(
                "puce_sync_last_attempt_timestamp_seconds",
                "Last sync attempt with the peer (either side started it), seconds since the epoch.",
                l.clone(),
                secs(t),
            );
            p.set(
                "puce_sync_last_ok",
                "1 if the last sync attempt with the peer succeeded, 0 if it failed.",
                l.clone(),
                if ps.last_error.is_none() { 1.0 } else { 0.0 },
            );
        }
        if let Some(t) = ps.last_success_ns {
            p.set(
                "puce_sync_last_success_timestamp_seconds",
                "Last sync with the peer that completed without error, seconds since the epoch.",
                l.clone(),
                secs(t),
            );
        }
        p.set(
            "puce_sync_consecutive_failures",
            "Failed sync attempts with the peer since the last success.",
            l.clone(),
            f64::from(ps.failures),
        );
        for (space, t) in &ps.space_attempt_ns {
            p.set(
                "puce_space_sync_last_attempt_timestamp_seconds",
                "Last sync attempt with the peer that moved the space, or failed while the space was shared with it, seconds since the epoch.",
                labels(&[("peer", &peer.name), ("space", space)]),
                secs(*t),
            );
        }
        for (space, t) in &ps.space_success_ns {
            p.set(
                "puce_space_sync_last_success_timestamp_seconds",
                "Last time the space was moved with the peer without error, either way, seconds since the epoch.",
                labels(&[("peer", &peer.name), ("space", space)]),
                secs(*t),
            );
        }
        let Some(r) = &ps.last_report else { continue };
        for (name, help, v) in [
            (
                "puce_sync_last_sent_objects",
                "Objects this node sent in the last sync it started with the peer.",
                r.sent_objects,
            ),
            (
                "puce_sync_last_sent_bytes",
                "Stored bytes of those objects.",
                r.sent_bytes,
            ),
            (
                "puce_sync_last_received_objects",
                "Objects this node received and stored in the last sync it started with the peer.",
                r.received_objects,
            ),
            (
                "puce_sync_last_received_bytes",
                "Stored bytes of those objects.",
                r.received_bytes,
            ),
            (
                "puce_sync_last_wire_sent_bytes",
                "UDP payload bytes this node sent in the last sync it started with the peer.",
                r.wire_sent_bytes,
            ),
            (
                "puce_sync_last_wire_received_bytes",
                "UDP payload bytes this node received in the last sync it started with the peer.",
                r.wire_received_bytes,
            ),
        ] {
            p.set(name, help, l.clone(), v as f64);
        }
        p.set(
            "puce_sync_last_duration_seconds",
            "Wall time of the last sync this node started with the peer.",
            l.clone(),
            r.duration_ms as f64 / 1000.0,
        );
        for s in &r.spaces {
            let l = labels(&[
                ("peer", &peer.name),
                ("space", &s.space),
                ("direction", &s.direction),
            ]);
            p.set(
                "puce_space_sync_last_ok",
                "1 if the space was moved (or was up to date) in the last sync this node started with the peer, 0 if skipped or refused; direction is pull (to this node) or push.",
                l.clone(),
                if s.result == "ok" || s.result == "up to date" {
                    1.0
                } else {
                    0.0
                },
            );
            p.set(
                "puce_space_sync_last_objects",
                "Objects stored on the receiving side for the space in that sync.",
                l.clone(),
                s.objects as f64,
            );
            p.set(
                "puce_space_sync_last_bytes",
                "Their stored bytes.",
                l,
                s.bytes as f64,
            );
        }
    }
}

/// The replica rules (`puce space set --copies`): reads the snapshot records and receipts (no
/// walk of the trees).
fn replicas(p: &mut Page, ctx: &NodeCtx, st: &NodeState) -> Result<()> {
    let rules = crate::replicas::SpaceRules::load(&ctx.dir)?;
    let snapshots = ctx.repo.snapshots()?;
    let receipts = puce_core::reach::receipts(&ctx.repo)?;
    let lineage = puce_core::forgotten::lineage(&ctx.repo, &snapshots)?;
    let k = crate::replicas::Known {
        config: &ctx.config,
        id: ctx.identity.id().to_string(),
        state: st,
        snapshots: &snapshots,
        receipts: &receipts,
        lineage: &lineage,
        rules: &rules,
        now_ns: now_ns(),
    };
    for r in crate::replicas::evaluate(&k) {
        for c in &r.copies {
            let l = labels(&[("space", &r.space), ("node", &c.node)]);
            p.set(
                "puce_replica_counts",
                "1 if the node's copy of the space counts towards its rule, 0 if not (puce report replicas says why).",
                l.clone(),
                if c.counts { 1.0 } else { 0.0 },
            );
            if let Some(t) = c.checked_ns {
                p.set(
                    "puce_replica_checked_timestamp_seconds",
                    "Since when all of the node's data was read by its checks, seconds since the epoch (a peer's as it said at the last sync this node started).",
                    l,
                    secs(t),
                );
            }
        }
        let l = labels(&[("space", &r.space)]);
        p.set(
            "puce_space_replicas",
            "Copies of the space that count (complete, confirmed within the check period; this node's only if its data was checked).",
            l.clone(),
            f64::from(r.counted),
        );
        if let Some(w) = r.wanted {
            p.set(
                "puce_space_replicas_wanted",
                "Copies the space's rule asks for (puce space set --copies).",
                l.clone(),
                f64::from(w),
            );
            p.set(
                "puce_space_replica_rule_ok",
                "1 if the space's replica rule holds, 0 if it is broken.",
                l,
                if r.ok == Some(true) { 1.0 } else { 0.0 },
            );
        }
    }
    Ok(())
}

/// The daemon's last data check.
fn check(p: &mut Page, st: &NodeState) {
    let Some(c) = &st.check else { return };
    if let Some(t) = c.last_ns {
        p.one(
            "puce_check_last_run_timestamp_seconds",
            "Start of the daemon's last data check, seconds since the epoch.",
            secs(t),
        );
    }
    p.one(
        "puce_check_last_ok",
        "1 if the last data check found nothing wrong.",
        if c.ok { 1.0 } else { 0.0 },
    );
    if let Some(cov) = c.coverage {
        p.one(
            "puce_check_coverage_ratio",
            "How far the rotation of sampled checks is through the packs (1: all data read since the rotation last started over).",
            cov,
        );
    }
    for (name, help, v) in [
        (
            "puce_check_last_problems",
            "Problems (damage) the last data check found.",
            c.problems,
        ),
        (
            "puce_check_last_healed_objects",
            "Objects healed from peers after the last data check.",
            c.healed,
        ),
        (
            "puce_check_last_lost_objects",
            "Damaged objects no peer could supply after the last data check.",
            c.lost,
        ),
        (
            "puce_check_last_packs_read",
            "Pack files the last data check read.",
            c.packs_read,
        ),
    ] {
        p.one(name, help, v as f64);
    }
    p.one(
        "puce_check_last_error",
        "1 if the last data check or its heal stopped on an error (see the log).",
        if c.error.is_some() { 1.0 } else { 0.0 },
    );
}

/// Disk free now, and the forecast from the growth rate of the figures.
fn disk(p: &mut Page, ctx: &NodeCtx, figures: Option<&Figures>) {
    let free = match report::disk_free(ctx.repo.root()) {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!("metrics: {e:#}");
            return;
        }
    };
    p.one(
        "puce_disk_free_bytes",
        "Free bytes on the repository's file system (for an unprivileged user).",
        free as f64,
    );
    if let Some(f) = figures
        && f.growth_bytes_per_second > 0.0
    {
        p.one(
            "puce_disk_full_forecast_seconds",
            "Time until the disk is full at the repository's growth rate (absent when not growing), as `puce report growth` forecasts.",
            free as f64 / f.growth_bytes_per_second,
        );
    }
}

/// The repository figures.
fn repository(p: &mut Page, f: &Figures) {
    for (name, help, v) in [
        (
            "puce_repository_logical_bytes",
            "Sum of the sizes of all snapshots.",
            f.logical_bytes as f64,
        ),
        (
            "puce_repository_unique_bytes",
            "Plaintext bytes of the distinct chunks stored (after dedup).",
            f.unique_bytes as f64,
        ),
        (
            "puce_repository_stored_bytes",
            "Stored (compressed) bytes of the distinct objects reachable.",
            f.stored_bytes as f64,
        ),
        (
            "puce_repository_pack_bytes",
            "Size of the pack files (garbage not yet collected included).",
            f.pack_bytes as f64,
        ),
        (
            "puce_repository_dedup_ratio",
            "Logical bytes / unique bytes.",
            f.dedup_ratio,
        ),
        (
            "puce_repository_compression_ratio",
            "Unique bytes / stored bytes.",
            f.compression_ratio,
        ),
        (
            "puce_repository_growth_bytes_per_second",
            "Stored bytes added per second, averaged over the last 30 days of history.",
            f.growth_bytes_per_second,
        ),
        (
            "puce_repository_figures_timestamp_seconds",
            "When the repository figures were computed ([metrics] refresh), seconds since the epoch.",
            secs(f.computed_ns),
        ),
    ] {
        p.one(name, help, v);
    }
    for u in &f.quotas {
        let l = labels(&[("kind", u.kind), ("name", &u.name)]);
        p.set(
            "puce_quota_use_bytes",
            "Stored bytes counted against a quota: kind=\"peer\" what this node holds only because the peer delivered it, kind=\"space\" what the space's snapshots reach.",
            l.clone(),
            u.used as f64,
        );
        if let Some(q) = u.quota {
            p.set(
                "puce_quota_bytes",
                "The quota (node.toml quota for a peer, puce space set --quota for a space).",
                l,
                q as f64,
            );
        }
    }
    for (space, snaps, logical, stored) in &f.spaces {
        let l = labels(&[("space", space)]);
        p.set(
            "puce_space_snapshots",
            "Snapshots of the space in this repository.",
            l.clone(),
            *snaps as f64,
        );
        p.set(
            "puce_space_logical_bytes",
            "Sum of the sizes of the space's snapshots.",
            l.clone(),
            *logical as f64,
        );
        p.set(
            "puce_space_stored_bytes",
            "Stored bytes of the objects the space's snapshots reference.",
            l,
            *stored as f64,
        );
    }
}

/// Serve `/metrics` on `listener` (HTTP/1.1) until the task is aborted.
pub async fn serve(
    listener: tokio::net::TcpListener,
    ctx: Arc<NodeCtx>,
    cache: Cache,
    started_ns: i64,
) {
    loop {
        let (stream, from) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!("metrics: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let ctx = ctx.clone();
        let cache = cache.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let ctx = ctx.clone();
                let cache = cache.clone();
                async move { answer(&req, &ctx, &cache, started_ns).await }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc);
            if let Err(e) = conn.await {
                tracing::debug!("metrics: connection from {from}: {e}");
            }
        });
    }
}

async fn answer(
    req: &Request<hyper::body::Incoming>,
    ctx: &Arc<NodeCtx>,
    cache: &Cache,
    started_ns: i64,
) -> std::result::Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let reply = |code: StatusCode, ctype: &str, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = code;
        if let Ok(v) = ctype.parse() {
            r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
        }
        Ok(r)
    };
    let text = "text/plain; charset=utf-8";
    if req.uri().path() != "/metrics" {
        return reply(StatusCode::NOT_FOUND, text, "see /metrics\n".into());
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            text,
            "use GET /metrics\n".into(),
        );
    }
    let figures = cache.lock().ok().and_then(|c| c.clone());
    let ctx = ctx.clone();
    let page =
        tokio::task::spawn_blocking(move || render(&ctx, figures.as_ref(), started_ns)).await;
    match page {
        Ok(Ok(body)) => reply(StatusCode::OK, CONTENT_TYPE, body),
        Ok(Err(e)) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            text,
            format!("cannot build the metrics: {e:#}\n"),
        ),
        Err(e) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            text,
            format!("the metrics thread failed: {e}\n"),
        ),
    }
}
