//! Notifications (`[notify]` in `node.toml`): the daemon evaluates, every `every`, the events
//! an admin must hear of, and sends each one once to every channel (a JSON webhook, email),
//! and again only when it changes or ends. What was sent is kept durably in
//! `NODE_DIR/notify.json`, so that a restart sends nothing twice; a delivery that fails is
//! retried at the next evaluation.
//!
//! Events: no successful sync of a space with a peer within its interval plus `grace`; damage
//! found by the daemon's check (healed or lost, with the files); the disk full within 30 days
//! at the growth rate; conflict copies made by a sync; a daemon started after a crash; a
//! replica rule broken; a quota 90 % used or a transfer refused by one. The list and the JSON document are in `docs/guide.md`
//! ("Monitoring").

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use puce_core::index::now_ns;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::config::{EmailConfig, NotifyConfig};
use crate::error::{Error, ErrorKind, Result};
use crate::metrics::{Cache, Figures};
use crate::replicas::{Known, SpaceRules};
use crate::session::NodeCtx;
use crate::state::NodeState;

mod email;

/// File of the notification state in the node directory.
pub const NOTIFY_FILE: &str = "notify.json";
/// The disk forecast raises an event when the disk fills within this time.
pub const DISK_HORIZON: Duration = Duration::from_secs(30 * 86400);
/// A webhook or SMTP exchange not done by then has failed (retried at the next evaluation).
pub const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// What was sent: per event key, its state, title and whether it is a one-off.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Sent {
    /// The state sent.
    pub state: String,
    /// Its title (for the message that it ended).
    pub title: String,
    /// A one-off (a crash, conflict copies): it has no end to announce.
    pub one_off: bool,
}

/// `notify.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NotifyState {
    /// Per channel (`webhook`, `email`), per event key.
    pub sent: BTreeMap<String, BTreeMap<String, Sent>>,
    /// Set while a daemon runs: found set at start, the last daemon did not stop cleanly.
    pub running: bool,
    /// When a daemon first evaluated the events here: the reference of "never synced".
    pub since_ns: Option<i64>,
    /// When the last digest was sent (all channels), ns since the epoch.
    pub last_digest_ns: Option<i64>,
}

impl NotifyState {
    /// Read the state (empty if none).
    pub fn load(dir: &Path) -> Result<NotifyState> {
        let p = dir.join(NOTIFY_FILE);
        match std::fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| {
                Error::new(
                    ErrorKind::Config,
                    format!(
                        "{} is damaged ({e}): remove it (current events are then sent again)",
                        p.display()
                    ),
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(NotifyState::default()),
            Err(e) => Err(puce_core::Error::io("cannot read", &p, e).into()),
        }
    }

    /// Change the state under the lock and write it back durably.
    pub fn update<T>(dir: &Path, f: impl FnOnce(&mut NotifyState) -> T) -> Result<T> {
        crate::state::locked(dir, || {
            let mut s = NotifyState::load(dir)?;
            let out = f(&mut s);
            let bytes = serde_json::to_vec_pretty(&s)
                .map_err(|e| Error::internal(format!("cannot encode the notify state: {e}")))?;
            puce_core::fsutil::write_atomic(&dir.join(NOTIFY_FILE), dir, &bytes)?;
            Ok(out)
        })
    }
}

/// An event in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// What it is about, stable while it lasts: `sync/PEER/SPACE`, `damage`, `disk`,
    /// `conflicts/PEER/TIME`, `crash/TIME`, `replicas/SPACE`.
    pub key: String,
    /// `sync_stale`, `damage`, `disk_full`, `conflicts`, `crash`, `replicas`, `dated_ahead`,
    /// `mass_deletion`, `held`, `quota`, `quota_refused`, `blind_mass_removal`,
    /// `blind_rollback`.
    pub kind: &'static str,
    /// `warning` or `critical`.
    pub severity: &'static str,
    /// Sent again when this changes.
    pub state: String,
    /// One line.
    pub title: String,
    /// What happened and what to do, for a person.
    pub message: String,
    /// See [`Sent::one_off`].
    pub one_off: bool,
}

/// Everything [`events`] looks at.
pub struct Facts<'a> {
    /// The node.
    pub ctx: &'a NodeCtx,
    /// The node state.
    pub state: &'a NodeState,
    /// Repository figures, if computed yet.
    pub figures: Option<&'a Figures>,
    /// Free disk bytes.
    pub free: Option<u64>,
    /// The replicas of each space.
    pub replicas: &'a [crate::replicas::SpaceReplicas],
    /// What is flagged about the snapshots peers sent ([`crate::flags`]).
    pub flags: &'a crate::flags::Flags,
    /// When this daemon started.
    pub started_ns: i64,
    /// Since when the events are evaluated here ([`NotifyState::since_ns`]).
    pub since_ns: i64,
    /// Whether the previous daemon did not stop cleanly.
    pub after_crash: bool,
    /// Now.
    pub now_ns: i64,
}

pub(crate) fn date(ns: i64) -> String {
    jiff::Timestamp::from_nanosecond(i128::from(ns))
        .map(|t| t.strftime("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_default()
}

/// `3 days`, `6 hours`, `15 minutes`, `30 seconds`.
fn human(d: Duration) -> String {
    let s = d.as_secs();
    let (n, unit) = match s {
        s if s >= 86400 && s % 86400 == 0 => (s / 86400, "day"),
        s if s >= 3600 && s % 3600 == 0 => (s / 3600, "hour"),
        s if s >= 60 && s % 60 == 0 => (s / 60, "minute"),
        s => (s, "second"),
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// The events of what is flagged about the snapshots peers sent: a snapshot dated ahead, a
/// mass deletion, a snapshot held by a protection period.
fn flag_events(flags: &crate::flags::Flags, out: &mut Vec<Event>) {
    for a in &flags.dated_ahead {
        out.push(Event {
            key: format!("dated_ahead/{}", a.snapshot),
            kind: "dated_ahead",
            severity: "warning",
            state: "flagged".into(),
            title: format!("A snapshot from {} is dated in the future", a.from),
            message: format!(
                "Snapshot {} of space '{}' from {} claims {} but arrived {}: a wrong clock on \
                 that node, or someone there trying to push the real history out of retention \
                 (retention counts it at its arrival). Ask that node's admins.",
                a.snapshot,
                a.space,
                a.from,
                date(a.time_ns),
                date(a.arrived_ns)
            ),
            one_off: false,
        });
    }
    for m in &flags.mass_deletions {
        out.push(Event {
            key: format!("mass_deletion/{}", m.snapshot),
            kind: "mass_deletion",
            severity: "critical",
            state: "flagged".into(),
            title: format!(
                "Space '{}': most files deleted in a snapshot from {}",
                m.space, m.from
            ),
            message: format!(
                "Snapshot {} from {} holds {} files; the one before it held {}. The earlier \
                 snapshot is kept and can be restored (puce restore {}). Check with that \
                 node's admins whether the deletion was wanted.",
                m.snapshot, m.from, m.files_after, m.files_before, m.parent
            ),
            one_off: false,
        });
    }
    for h in &flags.held {
        out.push(Event {
            key: format!("held/{}", h.snapshot),
            kind: "held",
            severity: "warning",
            state: format!("until {}", h.until_ns),
            title: format!("{} forgot a snapshot its protection period keeps", h.peer),
            message: format!(
                "{} forgot snapshot {}; it is kept here until {} (keep_min in node.toml) and \
                 can be restored by id meanwhile. If that node was not meant to forget it, \
                 check it for a break-in.",
                h.peer,
                h.snapshot,
                date(h.until_ns)
            ),
            one_off: false,
        });
    }
}

/// The events in progress.
pub fn events(f: &Facts, cfg: &NotifyConfig) -> Vec<Event> {
    let mut out = Vec::new();
    sync_events(f, cfg, &mut out);
    crate::quota::events(
        f.figures.map(|g| g.quotas.as_slice()).unwrap_or_default(),
        f.state,
        &mut out,
    );
    if let Some(c) = f.state.check.as_ref().filter(|c| c.problems > 0) {
        let unhealed = c.lost > 0 || c.healed == 0 || c.error.is_some();
        let mut message = format!(
            "The data check of {} found {} problems; {} damaged objects were healed from peers, {} \
             could not be.",
            c.last_ns.map(date).unwrap_or_default(),
            c.problems,
            c.healed,
            c.lost
        );
        for (what, paths) in [("Damaged", &c.damaged_paths), ("Lost", &c.lost_paths)] {
            if !paths.is_empty() {
                message.push_str(&format!("\n{what} files: {}", paths.join(", ")));
            }
        }
        if let Some(e) = &c.error {
            message.push_str(&format!("\nError: {e}"));
        }
        if unhealed {
            message.push_str(
                "\nRun `puce repair --from PEER` with a peer that has the data, or restore the \
                 files from elsewhere.",
            );
        }
        out.push(Event {
            key: "damage".into(),
            kind: "damage",
            severity: if unhealed { "critical" } else { "warning" },
            state: format!("found {}, healed {}, lost {}", c.problems, c.healed, c.lost),
            title: if unhealed {
                format!("Damaged data not healed: {} objects lost", c.lost)
            } else {
                format!("Damaged data found and healed ({} objects)", c.healed)
            },
            message,
            one_off: false,
        });
    }
    if let (Some(g), Some(free)) = (f.figures, f.free)
        && g.growth_bytes_per_second > 0.0
    {
        let secs = free as f64 / g.growth_bytes_per_second;
        if secs < DISK_HORIZON.as_secs_f64() {
            let full = f.now_ns.saturating_add((secs * 1e9) as i64);
            out.push(Event {
                key: "disk".into(),
                kind: "disk_full",
                severity: "warning",
                state: "full within 30 days".into(),
                title: format!("Disk full around {}", date(full)),
                message: format!(
                    "{} free, growing by {} a day: full around {}. Free space (puce forget, \
                     puce gc) or add disk.",
                    bytesize::ByteSize(free).display().iec(),
                    bytesize::ByteSize((g.growth_bytes_per_second * 86400.0) as u64)
                        .display()
                        .iec(),
                    date(full)
                ),
                one_off: false,
            });
        }
    }
    for (id, p) in &f.state.peers {
        let Some(r) = &p.last_report else { continue };
        let copies: Vec<String> = r
            .spaces
            .iter()
            .flat_map(|s| {
                s.conflicts
                    .iter()
                    .map(move |c| format!("{}:{} (kept as {})", s.space, c.path, c.copy))
            })
            .collect();
        if !copies.is_empty() {
            out.push(Event {
                key: format!("conflicts/{id}/{}", r.started_ns),
                kind: "conflicts",
                severity: "warning",
                state: "made".into(),
                title: format!(
                    "{} conflict copies made in a sync with {}",
                    copies.len(),
                    p.name
                ),
                message: format!(
                    "Files were changed on both sides; both versions are kept: {}. Someone \
                     should compare each pair and delete the one not wanted.",
                    copies.join(", ")
                ),
                one_off: true,
            });
        }
    }
    if f.after_crash {
        out.push(Event {
            key: format!("crash/{}", f.started_ns),
            kind: "crash",
            severity: "warning",
            state: "started".into(),
            title: "The daemon restarted after a crash".into(),
            message: format!(
                "The daemon started at {} after the previous one stopped without shutting down \
                 (killed, out of memory, power loss). Nothing is lost that was reported \
                 complete; see the system log for the cause.",
                date(f.started_ns)
            ),
            one_off: true,
        });
    }
    flag_events(f.flags, &mut out);
    crate::flags::blind_events(f.state, &mut out);
    for r in f.replicas {
        if let (Some(w), Some(false)) = (r.wanted, r.ok) {
            let missing: Vec<String> = r
                .copies
                .iter()
                .filter(|c| !c.counts)
                .map(|c| format!("{} ({})", c.node, c.why_not.as_deref().unwrap_or("")))
                .collect();
            out.push(Event {
                key: format!("replicas/{}", r.space),
                kind: "replicas",
                severity: "critical",
                state: format!("{} of {w}", r.counted),
                title: format!(
                    "Space '{}' has {} of the {w} copies its rule wants",
                    r.space, r.counted
                ),
                message: format!(
                    "Copies that do not count: {}. See `puce report replicas`.",
                    missing.join("; ")
                ),
                one_off: false,
            });
        }
    }
    out
}

/// A sync is overdue with a peer, per space it shares.
fn sync_events(f: &Facts, cfg: &NotifyConfig, out: &mut Vec<Event>) {
    let c = &f.ctx.config;
    let expected = c.interval.unwrap_or(if c.windows.is_empty() {
        crate::scheduler::DEFAULT_INTERVAL
    } else {
        Duration::from_secs(86400)
    });
    let limit = nanos(expected).saturating_add(nanos(cfg.grace));
    for peer in &c.peers {
        let st = f.state.peers.get(&peer.id.to_string());
        let mut spaces: Vec<String> = peer.spaces.keys().filter(|s| *s != "*").cloned().collect();
        if let Some(st) = st {
            spaces.extend(
                st.spaces
                    .keys()
                    .filter(|s| !peer.names_space(s) && peer.has_wildcard())
                    .cloned(),
            );
        }
        for space in spaces {
            let a = peer.access(&space);
            if !a.pull && !a.push {
                continue;
            }
            let last = st.and_then(|s| {
                s.space_success_ns
                    .get(&space)
                    .copied()
                    .or(s.last_success_ns)
            });
            let since = last.unwrap_or(f.since_ns);
            if f.now_ns.saturating_sub(since) <= limit {
                continue;
            }
            let error = st
                .and_then(|s| s.last_error.clone())
                .map(|e| format!(" The last attempt failed: {e}"))
                .unwrap_or_default();
            out.push(Event {
                key: format!("sync/{}/{space}", peer.name),
                kind: "sync_stale",
                severity: "warning",
                state: "overdue".into(),
                title: match last {
                    Some(t) => format!("No sync of '{space}' with {} since {}", peer.name, date(t)),
                    None => format!("Space '{space}' never synced with {}", peer.name),
                },
                message: format!(
                    "A sync of space '{space}' with peer '{}' was expected at least every {} \
                     (plus {} of grace).{error} Check that both daemons run and can reach each \
                     other (`puce node status`).",
                    peer.name,
                    human(expected),
                    human(cfg.grace)
                ),
                one_off: false,
            });
        }
    }
}

/// A notification as sent: an event starting, changing, or ending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// The event key.
    pub key: String,
    /// `firing`, `resolved`, or `forget` (a one-off over: nothing is sent).
    pub status: &'static str,
    /// The event (for a resolved one: its last title, kind `resolved`).
    pub kind: &'static str,
    /// `warning`, `critical` or `info`.
    pub severity: &'static str,
    /// One line.
    pub title: String,
    /// The text.
    pub message: String,
    /// What to record as sent (`None`: forget the key).
    pub record: Option<Sent>,
}

/// What to send on a channel that was sent `sent`, with `now` in progress; the events whose
/// key starts with one of `unknown` could not be evaluated: they neither start nor end.
pub fn changes(sent: &BTreeMap<String, Sent>, now: &[Event], unknown: &[&str]) -> Vec<Notice> {
    let mut out = Vec::new();
    for e in now {
        if sent.get(&e.key).is_some_and(|s| s.state == e.state) {
            continue;
        }
        out.push(Notice {
            key: e.key.clone(),
            status: "firing",
            kind: e.kind,
            severity: e.severity,
            title: e.title.clone(),
            message: e.message.clone(),
            record: Some(Sent {
                state: e.state.clone(),
                title: e.title.clone(),
                one_off: e.one_off,
            }),
        });
    }
    for (key, s) in sent {
        if now.iter().any(|e| &e.key == key) || unknown.iter().any(|u| key.starts_with(u)) {
            continue;
        }
        out.push(Notice {
            key: key.clone(),
            // A one-off no longer current is forgotten without a message.
            status: if s.one_off { "forget" } else { "resolved" },
            kind: "resolved",
            severity: "info",
            title: format!("Resolved: {}", s.title),
            message: format!("This is over: {}.", s.title),
            record: None,
        });
    }
    out
}

/// The JSON document POSTed to the webhook (ntfy reads `topic`, `title`, `message`,
/// `priority` and `tags`; the other fields are for scripts).
pub fn webhook_body(node: &str, topic: Option<&str>, n: &Notice, now_ns: i64) -> serde_json::Value {
    let priority = match n.severity {
        "critical" => 5,
        "warning" => 4,
        _ => 3,
    };
    let mut v = json!({
        "node": node,
        "event": n.kind,
        "key": n.key,
        "status": n.status,
        "severity": n.severity,
        "title": format!("[{node}] {}", n.title),
        "message": n.message,
        "time": jiff::Timestamp::from_nanosecond(i128::from(now_ns)).map(|t| t.to_string()).unwrap_or_default(),
        "priority": priority,
        "tags": [n.severity],
    });
    if let Some(t) = topic {
        v["topic"] = json!(t);
    }
    v
}

/// Channels to send on.
enum Channel {
    Webhook {
        url: String,
        topic: Option<String>,
        client: reqwest::Client,
    },
    Email(EmailConfig),
}

impl Channel {
    fn name(&self) -> &'static str {
        match self {
            Channel::Webhook { .. } => "webhook",
            Channel::Email(_) => "email",
        }
    }

    async fn send(
        &self,
        node: &str,
        title: &str,
        body: &str,
        json: serde_json::Value,
    ) -> Result<()> {
        match self {
            Channel::Webhook { url, client, .. } => {
                let r = client
                    .post(url)
                    .header("content-type", "application/json")
                    .body(json.to_string())
                    .send()
                    .await
                    .map_err(|e| Error::new(ErrorKind::Network, format!("webhook {url}: {e}")))?;
                if !r.status().is_success() {
                    return Err(Error::new(
                        ErrorKind::Network,
                        format!("webhook {url} answered {}", r.status()),
                    ));
                }
                Ok(())
            }
            Channel::Email(e) => email::send(e, &format!("[puce {node}] {title}"), body).await,
        }
    }
}

/// Evaluate the events every `cfg.every` and send what changed, until the task is aborted.
pub async fn run(
    ctx: Arc<NodeCtx>,
    cfg: NotifyConfig,
    cache: Cache,
    started_ns: i64,
    after_crash: bool,
) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut channels = Vec::new();
    if let Some(url) = &cfg.webhook {
        match reqwest::Client::builder().timeout(SEND_TIMEOUT).build() {
            Ok(client) => channels.push(Channel::Webhook {
                url: url.clone(),
                topic: cfg.topic.clone(),
                client,
            }),
            Err(e) => tracing::warn!("notify: cannot set up the webhook client: {e}"),
        }
    }
    if let Some(e) = &cfg.email {
        channels.push(Channel::Email(e.clone()));
    }
    let mut first = true;
    loop {
        match round(&ctx, &cfg, &channels, &cache, started_ns, after_crash).await {
            Ok(n) if first => {
                tracing::info!(
                    "notify: first evaluation done: {n} events in progress; next every {} s",
                    cfg.every.as_secs()
                );
                first = false;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("notify: {e:#}"),
        }
        tokio::time::sleep(cfg.every).await;
    }
}

async fn round(
    ctx: &Arc<NodeCtx>,
    cfg: &NotifyConfig,
    channels: &[Channel],
    cache: &Cache,
    started_ns: i64,
    after_crash: bool,
) -> Result<usize> {
    let figures = cache.lock().ok().and_then(|c| c.clone());
    let c2 = ctx.clone();
    let cfg2 = cfg.clone();
    let (now, unknown, sent, digest) = tokio::task::spawn_blocking(move || -> Result<_> {
        let st = NodeState::load(&c2.dir)?;
        let rules = SpaceRules::load(&c2.dir)?;
        let snapshots = c2.repo.snapshots()?;
        let receipts = puce_core::reach::receipts(&c2.repo)?;
        let lineage = puce_core::forgotten::lineage(&c2.repo, &snapshots)?;
        let now_ns = now_ns();
        let replicas = crate::replicas::evaluate(&Known {
            config: &c2.config,
            id: c2.identity.id().to_string(),
            state: &st,
            snapshots: &snapshots,
            receipts: &receipts,
            lineage: &lineage,
            rules: &rules,
            now_ns,
        });
        let since_ns = match NotifyState::load(&c2.dir)?.since_ns {
            Some(t) => t,
            None => NotifyState::update(&c2.dir, |s| *s.since_ns.get_or_insert(now_ns))?,
        };
        let free = puce_core::report::disk_free(c2.repo.root()).ok();
        let flags = crate::flags::flags(&c2.repo, &snapshots)?;
        let facts = Facts {
            ctx: &c2,
            state: &st,
            figures: figures.as_ref(),
            free,
            replicas: &replicas,
            flags: &flags,
            started_ns,
            since_ns,
            after_crash,
            now_ns,
        };
        // Without the figures (not computed yet after a start) the forecast is unknown.
        let unknown: &[&str] = if figures.is_none() || free.is_none() {
            &["disk"]
        } else {
            &[]
        };
        let now = events(&facts, &cfg2);
        let notify = NotifyState::load(&c2.dir)?;
        let digest = cfg2
            .digest
            .filter(|every| {
                notify
                    .last_digest_ns
                    .is_none_or(|t| now_ns.saturating_sub(t) >= nanos(*every))
            })
            .map(|_| digest(&facts, &now));
        Ok((now, unknown, notify.sent, digest))
    })
    .await
    .map_err(|e| Error::internal(format!("the notify thread failed: {e}")))??;
    let node = &ctx.config.name;
    for ch in channels {
        let empty = BTreeMap::new();
        for n in changes(sent.get(ch.name()).unwrap_or(&empty), &now, unknown) {
            if n.status != "forget" {
                let topic = match ch {
                    Channel::Webhook { topic, .. } => topic.as_deref(),
                    Channel::Email(_) => None,
                };
                let json = webhook_body(node, topic, &n, now_ns());
                let body = email_body(node, &n);
                if let Err(e) =
                    tokio::time::timeout(SEND_TIMEOUT, ch.send(node, &n.title, &body, json))
                        .await
                        .unwrap_or_else(|_| Err(Error::new(ErrorKind::Network, "timed out")))
                {
                    tracing::warn!(
                        "notify: cannot send '{}' by {}: {e:#}; retrying later",
                        n.title,
                        ch.name()
                    );
                    continue;
                }
                tracing::info!("notify: sent '{}' ({}) by {}", n.title, n.status, ch.name());
            }
            NotifyState::update(&ctx.dir, |s| {
                let m = s.sent.entry(ch.name().to_string()).or_default();
                match &n.record {
                    Some(r) => m.insert(n.key.clone(), r.clone()),
                    None => m.remove(&n.key),
                };
            })?;
        }
    }
    if let Some((title, text)) = digest {
        let n = Notice {
            key: "digest".into(),
            status: "digest",
            kind: "digest",
            severity: "info",
            title,
            message: text,
            record: None,
        };
        let mut all = true;
        for ch in channels {
            let topic = match ch {
                Channel::Webhook { topic, .. } => topic.as_deref(),
                Channel::Email(_) => None,
            };
            let json = webhook_body(node, topic, &n, now_ns());
            let body = email_body(node, &n);
            if let Err(e) = ch.send(node, &n.title, &body, json).await {
                tracing::warn!("notify: cannot send the digest by {}: {e:#}", ch.name());
                all = false;
            }
        }
        // Sent once it reached every channel (a channel that failed gets it at the next round,
        // the others again).
        if all {
            tracing::info!("notify: sent the digest");
            NotifyState::update(&ctx.dir, |s| s.last_digest_ns = Some(now_ns()))?;
        }
    }
    Ok(now.len())
}

/// The digest, for a reader who is not an admin: what is safe, and what needs a person.
fn digest(f: &Facts, now: &[Event]) -> (String, String) {
    let mut safe = Vec::new();
    for r in f.replicas {
        let holders: Vec<&str> = r
            .copies
            .iter()
            .filter(|c| c.counts)
            .map(|c| c.node.as_str())
            .collect();
        if r.ok != Some(false) && !holders.is_empty() {
            safe.push(format!(
                "- '{}' is kept at {} place{} ({}).",
                r.space,
                holders.len(),
                if holders.len() == 1 { "" } else { "s" },
                holders.join(", ")
            ));
        }
    }
    for p in &f.ctx.config.peers {
        if let Some(t) = f
            .state
            .peers
            .get(&p.id.to_string())
            .and_then(|s| s.last_success_ns)
        {
            safe.push(format!(
                "- The last exchange with {} went well, on {}.",
                p.name,
                date(t)
            ));
        }
    }
    if let Some(c) = &f.state.check
        && c.ok
    {
        safe.push(format!(
            "- The stored data was verified on {} and is intact.",
            c.last_ns.map(date).unwrap_or_default()
        ));
    }
    let human: Vec<String> = now.iter().map(|e| format!("- {}", e.title)).collect();
    let title = if human.is_empty() {
        "Weekly summary: all is well".to_string()
    } else {
        format!("Weekly summary: {} thing(s) need a person", human.len())
    };
    let text = format!(
        "What is safe:\n{}\n\nWhat needs a person:\n{}\n\nEach of these was also sent as a \
         separate notification when it happened, with details for the admins.",
        if safe.is_empty() {
            "- Nothing can be confirmed yet.".to_string()
        } else {
            safe.join("\n")
        },
        if human.is_empty() {
            "- Nothing.".to_string()
        } else {
            human.join("\n")
        }
    );
    (title, text)
}

/// The plain text of an email, in lines of at most 72 characters where words allow (so that
/// it travels as 7-bit text, readable as is).
pub fn email_body(node: &str, n: &Notice) -> String {
    let text = format!(
        "{}\n\n{}\n\nNode: {node}\nEvent: {} ({}, {})\n\nThis message is sent once; another \
         follows when this changes or is over.\n",
        n.title, n.message, n.kind, n.status, n.severity
    );
    let mut out = String::new();
    for line in text.lines() {
        let mut len = 0;
        for (i, w) in line.split(' ').enumerate() {
            if i > 0 && len + 1 + w.len() > 72 {
                out.push('\n');
                len = 0;
            } else if i > 0 {
                out.push(' ');
                len += 1;
            }
            out.push_str(w);
            len += w.len();
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(key: &str, state: &str, one_off: bool) -> Event {
        Event {
            key: key.into(),
            kind: "damage",
            severity: "warning",
            state: state.into(),
            title: format!("t {key} {state}"),
            message: String::new(),
            one_off,
        }
    }

    /// Apply what `changes` says, as the daemon does after each delivery.
    fn apply(sent: &mut BTreeMap<String, Sent>, ns: &[Notice]) {
        for n in ns {
            match &n.record {
                Some(r) => sent.insert(n.key.clone(), r.clone()),
                None => sent.remove(&n.key),
            };
        }
    }

    #[test]
    fn an_event_is_sent_once_again_when_it_changes_and_once_when_it_ends() {
        let mut sent = BTreeMap::new();
        let now = vec![
            event("damage", "found 1", false),
            event("crash/1", "started", true),
        ];
        let n = changes(&sent, &now, &[]);
        assert_eq!(
            n.iter()
                .map(|n| (n.key.as_str(), n.status))
                .collect::<Vec<_>>(),
            [("damage", "firing"), ("crash/1", "firing")]
        );
        apply(&mut sent, &n);
        assert!(
            changes(&sent, &now, &[]).is_empty(),
            "unchanged: nothing again"
        );
        let now = vec![
            event("damage", "found 2", false),
            event("crash/1", "started", true),
        ];
        let n = changes(&sent, &now, &[]);
        assert_eq!(n.len(), 1);
        assert_eq!(
            (n[0].status, n[0].title.as_str()),
            ("firing", "t damage found 2")
        );
        apply(&mut sent, &n);
        assert!(
            changes(&sent, &[], &["dam", "crash"]).is_empty(),
            "not evaluated: neither ended nor forgotten"
        );
        let n = changes(&sent, &[], &[]);
        assert_eq!(
            n.iter()
                .map(|n| (n.key.as_str(), n.status))
                .collect::<Vec<_>>(),
            [("crash/1", "forget"), ("damage", "resolved")]
        );
        assert_eq!(n[1].title, "Resolved: t damage found 2");
        apply(&mut sent, &n);
        assert!(sent.is_empty());
        assert!(changes(&sent, &[], &[]).is_empty());
    }

    #[test]
    fn email_lines_are_wrapped_at_72_characters() {
        let n = Notice {
            key: "k".into(),
            status: "firing",
            kind: "damage",
            severity: "warning",
            title: "title".into(),
            message: "word ".repeat(40),
            record: None,
        };
        let body = email_body("lyon", &n);
        assert!(body.lines().all(|l| l.len() <= 72), "{body}");
        assert_eq!(body.split_whitespace().filter(|w| *w == "word").count(), 40);
    }
}
