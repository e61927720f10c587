//! The node configuration file, `node.toml` in the node directory (`REPO/node/` by default).
//! [`initial_config`] writes the annotated example that `docs/guide.md` shows.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

use crate::error::{Error, ErrorKind, Result};
use crate::identity::NodeId;
use crate::scheduler::{Retry, Window, parse_duration};

/// File name of the configuration in the node directory.
pub const CONFIG_FILE: &str = "node.toml";
/// Default UDP port.
pub const DEFAULT_PORT: u16 = 7878;

/// What a peer may do with one space.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Access {
    /// The peer may read the space from this node (data flows from here to the peer).
    pub pull: bool,
    /// The peer may write the space into this node (data flows from the peer to here).
    pub push: bool,
}

/// A configured peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Name, for people and logs.
    pub name: String,
    /// Its pinned key.
    pub id: NodeId,
    /// Where to reach it (`host:port`); none for a peer that only connects to us.
    pub address: Option<String>,
    /// Per space, what it may do; the space `*` stands for every space not named.
    pub spaces: BTreeMap<String, Access>,
    /// Protection period (`keep_min`): a forget this peer sends is applied only once the
    /// snapshot has been here that long (since it arrived, or was taken here); until then the
    /// snapshot is kept, held ([`puce_core::forgotten::hold`]).
    pub keep_min: Option<Duration>,
    /// Quota (`quota`): the stored bytes this peer may make this node hold (what it holds only
    /// because that peer delivered it, [`puce_core::ledger`]); none: no limit.
    pub quota: Option<u64>,
    /// This node's spaces that the peer holds blind, without the key (`holds_blind`, on the
    /// owner's side; `*` for all): it fetches them as opaque files listed in a manifest this
    /// node signs (docs/design.md, "Blind holders"). Empty: none.
    pub holds_blind: Vec<String>,
    /// Whether this node holds the peer's spaces blind (`hold_blind`, on the holder's side):
    /// it fetches the manifests the peer signs and the files they list, under
    /// `REPO/holds/<owner>/`.
    pub hold_blind: bool,
    /// The owner whose blind copy this peer may fetch from here (`owner`, on the holder's
    /// side): a new node of that owner after a disaster, pinned by its new id. None: the
    /// peer itself.
    pub owner: Option<NodeId>,
}

impl Peer {
    /// What this peer may do with `space`.
    pub fn access(&self, space: &str) -> Access {
        self.spaces
            .get(space)
            .or_else(|| self.spaces.get("*"))
            .copied()
            .unwrap_or_default()
    }

    /// Whether a space is named explicitly (not only through `*`).
    pub fn names_space(&self, space: &str) -> bool {
        self.spaces.contains_key(space)
    }

    /// Whether the peer has `*`.
    pub fn has_wildcard(&self) -> bool {
        self.spaces.contains_key("*")
    }
}

/// The node configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    /// This node's name (shown to peers, used in conflict copies).
    pub name: String,
    /// Where the daemon listens.
    pub listen: SocketAddr,
    /// When scheduled syncs may start (local time); empty: any time.
    pub windows: Vec<Window>,
    /// Time between two successful scheduled syncs with a peer (see
    /// [`crate::scheduler::next_due`]).
    pub interval: Option<Duration>,
    /// Cap on sync traffic, bytes per second per direction, all peers together.
    pub bandwidth: Option<u64>,
    /// Retry settings.
    pub retry: Retry,
    /// Object requests in flight at once per transfer.
    pub streams: usize,
    /// Received data is made durable at least every this many bytes, so that a cut transfer
    /// resends at most about this much.
    pub checkpoint: u64,
    /// The daemon's scheduled check of the data, if any.
    pub check: Option<CheckSchedule>,
    /// The Prometheus metrics endpoint, if any (`[metrics]`).
    pub metrics: Option<MetricsConfig>,
    /// Notifications, if any (`[notify]`).
    pub notify: Option<NotifyConfig>,
    /// The peers.
    pub peers: Vec<Peer>,
}

/// `[metrics]` in `node.toml`: where the daemon serves its metrics, and how often it
/// recomputes the repository figures (a walk of every snapshot, never done per scrape).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsConfig {
    /// TCP address of the HTTP endpoint (`/metrics`).
    pub listen: SocketAddr,
    /// Time between two computations of the repository figures.
    pub refresh: Duration,
}

/// `[notify]` in `node.toml`: where the daemon sends its notifications
/// ([`crate::notify`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyConfig {
    /// URL a JSON document is POSTed to for each notification.
    pub webhook: Option<String>,
    /// `topic` field of the JSON document (for ntfy).
    pub topic: Option<String>,
    /// Email over SMTP.
    pub email: Option<EmailConfig>,
    /// Time allowed after a sync was due before "no successful sync" is raised.
    pub grace: Duration,
    /// Time between two evaluations of the events.
    pub every: Duration,
    /// Time between two digests (a summary for a non-technical reader), if any.
    pub digest: Option<Duration>,
}

/// `[notify.email]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailConfig {
    /// SMTP server host name.
    pub server: String,
    /// Its port (587 by default: submission with STARTTLS).
    pub port: u16,
    /// STARTTLS required (true, the default) or no TLS at all (only for a server on loopback).
    pub starttls: bool,
    /// Sender address.
    pub from: String,
    /// Recipients.
    pub to: Vec<String>,
    /// SMTP user name, if the server wants one.
    pub username: Option<String>,
    /// File holding the password (its first line).
    pub password_file: Option<std::path::PathBuf>,
    /// PEM file of certificates trusted for the server, besides the usual roots (a server
    /// with a certificate of its own CA, or self-signed).
    pub ca_file: Option<std::path::PathBuf>,
}

/// The daemon's regular check: `[check]` in `node.toml`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CheckSchedule {
    /// Time between two checks.
    pub interval: Duration,
    /// Share of the packs read by each check (0 < x <= 1), rotating so that successive checks
    /// cover everything.
    pub sample: f64,
    /// Whether damage found is healed from the peers.
    pub repair: bool,
}

impl Eq for CheckSchedule {}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    node: RawNode,
    #[serde(default)]
    schedule: RawSchedule,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    retry: RawRetry,
    #[serde(default)]
    transfer: RawTransfer,
    check: Option<RawCheck>,
    metrics: Option<RawMetrics>,
    notify: Option<RawNotify>,
    #[serde(default, rename = "peer")]
    peers: Vec<RawPeer>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    name: String,
    listen: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSchedule {
    #[serde(default)]
    windows: Vec<String>,
    interval: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    bandwidth: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetry {
    initial: Option<String>,
    max: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTransfer {
    streams: Option<usize>,
    checkpoint: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCheck {
    interval: Option<String>,
    sample: Option<String>,
    repair: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    listen: String,
    refresh: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNotify {
    webhook: Option<String>,
    topic: Option<String>,
    email: Option<RawEmail>,
    grace: Option<String>,
    every: Option<String>,
    digest: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEmail {
    server: String,
    port: Option<u16>,
    tls: Option<String>,
    from: String,
    to: Vec<String>,
    username: Option<String>,
    password_file: Option<std::path::PathBuf>,
    ca_file: Option<std::path::PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPeer {
    name: String,
    id: String,
    address: Option<String>,
    #[serde(default)]
    spaces: BTreeMap<String, Vec<String>>,
    keep_min: Option<String>,
    quota: Option<String>,
    #[serde(default)]
    holds_blind: Vec<String>,
    #[serde(default)]
    hold_blind: bool,
    owner: Option<String>,
}

/// Check a node name: 1 to 64 ASCII letters, digits, `.`, `_` or `-` (it ends up in file
/// names of conflict copies).
pub fn check_node_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::Config,
            format!(
                "invalid node name {name:?}: use 1 to 64 ASCII letters, digits, '.', '_' or '-'"
            ),
        ))
    }
}

/// Parse a share such as `5%` or `100%` into 0 < x <= 1.
pub fn parse_share(s: &str) -> Result<f64> {
    let bad = || {
        Error::new(
            ErrorKind::Config,
            format!("bad share '{s}': write a percentage above 0 and at most 100, e.g. \"5%\""),
        )
    };
    let v: f64 = s
        .trim()
        .strip_suffix('%')
        .ok_or_else(bad)?
        .trim()
        .parse()
        .map_err(|_| bad())?;
    if v > 0.0 && v <= 100.0 {
        Ok(v / 100.0)
    } else {
        Err(bad())
    }
}

/// Parse a byte size such as `10 MiB`, `500 kB` or `0` (none).
pub fn parse_size(s: &str) -> Result<u64> {
    bytesize::ByteSize::from_str(s.trim())
        .map(|b| b.as_u64())
        .map_err(|_| {
            Error::new(
                ErrorKind::Config,
                format!("bad size '{s}': write e.g. \"10 MiB\", \"500 KiB\" or \"0\""),
            )
        })
}

impl NodeConfig {
    /// Read and check `node.toml` in `dir`.
    pub fn load(dir: &Path) -> Result<NodeConfig> {
        let path = dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            let hint = if e.kind() == std::io::ErrorKind::NotFound {
                ": set this node up with `puce node init`"
            } else {
                ""
            };
            Error::new(
                ErrorKind::Config,
                format!("cannot read {}{hint}", path.display()),
            )
            .with_source(e)
        })?;
        NodeConfig::parse(&text).map_err(|e| e.context(path.display()))
    }

    /// Parse and check the text of a `node.toml`.
    pub fn parse(text: &str) -> Result<NodeConfig> {
        let raw: Raw = toml::from_str(text)
            .map_err(|e| Error::new(ErrorKind::Config, format!("invalid configuration: {e}")))?;
        check_node_name(&raw.node.name)?;
        let listen = match &raw.node.listen {
            None => SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT)),
            Some(s) => s.parse().map_err(|_| {
                Error::new(
                    ErrorKind::Config,
                    format!(
                        "[node] listen = {s:?} is not an address: write IP:PORT, e.g. \
                         \"0.0.0.0:{DEFAULT_PORT}\" or \"[::]:{DEFAULT_PORT}\""
                    ),
                )
            })?,
        };
        let windows = raw
            .schedule
            .windows
            .iter()
            .map(|w| Window::parse(w))
            .collect::<Result<Vec<_>>>()?;
        let interval = raw
            .schedule
            .interval
            .as_deref()
            .map(parse_duration)
            .transpose()?;
        if interval.is_some_and(|i| i.is_zero()) {
            return Err(Error::new(
                ErrorKind::Config,
                "[schedule] interval must not be 0",
            ));
        }
        let bandwidth = match raw
            .limits
            .bandwidth
            .as_deref()
            .map(parse_size)
            .transpose()?
        {
            Some(0) | None => None,
            Some(b) if b < 16 * 1024 => {
                return Err(Error::new(
                    ErrorKind::Config,
                    format!("[limits] bandwidth of {b} bytes/s is too small: use at least 16 KiB"),
                ));
            }
            Some(b) => Some(b),
        };
        let mut retry = Retry::default();
        if let Some(s) = &raw.retry.initial {
            retry.initial = parse_duration(s)?;
        }
        if let Some(s) = &raw.retry.max {
            retry.max = parse_duration(s)?;
        }
        if retry.initial.is_zero() || retry.max < retry.initial {
            return Err(Error::new(
                ErrorKind::Config,
                "[retry] needs 0 < initial <= max",
            ));
        }
        let streams = raw.transfer.streams.unwrap_or(4);
        if !(1..=64).contains(&streams) {
            return Err(Error::new(
                ErrorKind::Config,
                "[transfer] streams must be between 1 and 64",
            ));
        }
        let checkpoint = match &raw.transfer.checkpoint {
            Some(s) => parse_size(s)?,
            None => 16 << 20,
        };
        if !(1 << 20..=1 << 30).contains(&checkpoint) {
            return Err(Error::new(
                ErrorKind::Config,
                "[transfer] checkpoint must be between 1 MiB and 1 GiB",
            ));
        }
        let check = match raw.check {
            None => None,
            Some(c) => {
                let interval = parse_duration(c.interval.as_deref().unwrap_or("1d"))?;
                if interval.is_zero() {
                    return Err(Error::new(
                        ErrorKind::Config,
                        "[check] interval must not be 0",
                    ));
                }
                Some(CheckSchedule {
                    interval,
                    sample: parse_share(c.sample.as_deref().unwrap_or("5%"))?,
                    repair: c.repair.unwrap_or(true),
                })
            }
        };
        let metrics = raw.metrics.map(parse_metrics).transpose()?;
        let notify = raw.notify.map(parse_notify).transpose()?;
        let peers = parse_peers(raw.peers)?;
        Ok(NodeConfig {
            name: raw.node.name,
            listen,
            windows,
            interval,
            bandwidth,
            retry,
            streams,
            checkpoint,
            check,
            metrics,
            notify,
            peers,
        })
    }

    /// The peer with this id.
    pub fn peer_by_id(&self, id: &NodeId) -> Option<&Peer> {
        self.peers.iter().find(|p| p.id == *id)
    }

    /// The peer named `name`, or whose id is `name`.
    pub fn find_peer(&self, name: &str) -> Result<&Peer> {
        if let Some(p) = self.peers.iter().find(|p| p.name == name) {
            return Ok(p);
        }
        if let Ok(id) = name.parse::<NodeId>()
            && let Some(p) = self.peer_by_id(&id)
        {
            return Ok(p);
        }
        let known: Vec<&str> = self.peers.iter().map(|p| p.name.as_str()).collect();
        Err(Error::new(
            ErrorKind::NotFound,
            format!(
                "no peer {name:?} in node.toml (peers: {}): add a [[peer]] section",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ),
        ))
    }
}

/// The `[metrics]` section.
fn parse_metrics(m: RawMetrics) -> Result<MetricsConfig> {
    let listen = m.listen.parse().map_err(|_| {
        Error::new(
            ErrorKind::Config,
            format!(
                "[metrics] listen = {:?} is not an address: write IP:PORT, e.g. \
                 \"127.0.0.1:9464\"",
                m.listen
            ),
        )
    })?;
    let refresh = parse_duration(m.refresh.as_deref().unwrap_or("1h"))?;
    if refresh < Duration::from_secs(1) {
        return Err(Error::new(
            ErrorKind::Config,
            "[metrics] refresh must be at least 1s",
        ));
    }
    Ok(MetricsConfig { listen, refresh })
}

/// The `[notify]` section.
fn parse_notify(n: RawNotify) -> Result<NotifyConfig> {
    let bad = |m: String| Error::new(ErrorKind::Config, format!("[notify] {m}"));
    if let Some(w) = &n.webhook
        && !(w.starts_with("https://") || w.starts_with("http://"))
    {
        return Err(bad(format!(
            "webhook = {w:?} is not an http(s) URL, e.g. \"https://ntfy.sh\""
        )));
    }
    let email = match n.email {
        None => None,
        Some(e) => {
            let starttls = match e.tls.as_deref().unwrap_or("starttls") {
                "starttls" => true,
                "none" => false,
                other => {
                    return Err(bad(format!(
                        "email.tls = {other:?}: use \"starttls\" (or \"none\" for a server on \
                         loopback)"
                    )));
                }
            };
            if e.to.is_empty() {
                return Err(bad("email.to lists no recipient".into()));
            }
            if e.username.is_some() != e.password_file.is_some() {
                return Err(bad(
                    "email: give both username and password_file, or neither".into(),
                ));
            }
            if !starttls && (e.username.is_some() || e.ca_file.is_some()) {
                return Err(bad(
                    "email: tls = \"none\" sends everything in clear: a password or a ca_file \
                     needs tls = \"starttls\""
                        .into(),
                ));
            }
            Some(EmailConfig {
                server: e.server,
                port: e.port.unwrap_or(587),
                starttls,
                from: e.from,
                to: e.to,
                username: e.username,
                password_file: e.password_file,
                ca_file: e.ca_file,
            })
        }
    };
    if n.webhook.is_none() && email.is_none() {
        return Err(bad(
            "sends nowhere: set webhook and/or [notify.email]".into()
        ));
    }
    let every = parse_duration(n.every.as_deref().unwrap_or("5m"))?;
    if every < Duration::from_secs(1) {
        return Err(bad("every must be at least 1s".into()));
    }
    Ok(NotifyConfig {
        webhook: n.webhook,
        topic: n.topic,
        email,
        grace: parse_duration(n.grace.as_deref().unwrap_or("1d"))?,
        every,
        digest: n.digest.as_deref().map(parse_duration).transpose()?,
    })
}

/// The `[[peer]]` sections: names and ids each once, addresses HOST:PORT, known permissions.
fn parse_peers(raw: Vec<RawPeer>) -> Result<Vec<Peer>> {
    let mut peers = Vec::new();
    let mut names = HashSet::new();
    let mut ids = HashSet::new();
    for p in raw {
        let what = format!("[[peer]] {:?}", p.name);
        check_node_name(&p.name).map_err(|e| e.context(&what))?;
        let id: NodeId = p.id.parse().map_err(|e: Error| e.context(&what))?;
        if !names.insert(p.name.clone()) {
            return Err(Error::new(
                ErrorKind::Config,
                format!("two peers are named {:?}", p.name),
            ));
        }
        if !ids.insert(id) {
            return Err(Error::new(
                ErrorKind::Config,
                format!("{what}: another peer has the same id"),
            ));
        }
        if let Some(a) = &p.address
            && a.rsplit_once(':')
                .is_none_or(|(h, port)| h.is_empty() || port.parse::<u16>().is_err())
        {
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "{what}: address {a:?} must be HOST:PORT, e.g. \"grenoble.example.org:{DEFAULT_PORT}\""
                ),
            ));
        }
        let mut spaces = BTreeMap::new();
        for (space, caps) in p.spaces {
            if space != "*" {
                puce_core::format::snapshot::check_space_name(&space)
                    .map_err(|e| Error::new(ErrorKind::Config, format!("{what}: {e}")))?;
            }
            let mut a = Access::default();
            for c in caps {
                match c.as_str() {
                    "pull" => a.pull = true,
                    "push" => a.push = true,
                    other => {
                        return Err(Error::new(
                            ErrorKind::Config,
                            format!(
                                "{what}: space {space:?}: unknown permission {other:?} (use \"pull\" and/or \"push\")"
                            ),
                        ));
                    }
                }
            }
            spaces.insert(space, a);
        }
        let keep_min = p
            .keep_min
            .as_deref()
            .map(crate::scheduler::parse_duration)
            .transpose()
            .map_err(|e| e.context(format!("{what}: keep_min")))?;
        let quota = p
            .quota
            .as_deref()
            .map(parse_size)
            .transpose()
            .map_err(|e| e.context(format!("{what}: quota")))?;
        for s in &p.holds_blind {
            if s != "*" {
                puce_core::format::snapshot::check_space_name(s).map_err(|e| {
                    Error::new(ErrorKind::Config, format!("{what}: holds_blind: {e}"))
                })?;
            }
        }
        let owner = p
            .owner
            .as_deref()
            .map(str::parse::<NodeId>)
            .transpose()
            .map_err(|e| e.context(format!("{what}: owner")))?;
        peers.push(Peer {
            name: p.name,
            id,
            address: p.address,
            spaces,
            keep_min,
            quota,
            holds_blind: p.holds_blind,
            hold_blind: p.hold_blind,
            owner,
        });
    }
    Ok(peers)
}

/// The annotated `node.toml` written by `puce node init`.
pub fn initial_config(name: &str, listen: &str) -> String {
    EXAMPLE
        .replace("name = \"lyon\"", &format!("name = {name:?}"))
        .replace("listen = \"0.0.0.0:7878\"", &format!("listen = {listen:?}"))
}

/// The annotated example configuration (also in `docs/guide.md`).
pub const EXAMPLE: &str = r#"# puce node configuration (see docs/guide.md, "Nodes").
# Durations: "30s", "15m", "2h", "1d". Sizes: "500 KiB", "10 MiB".

[node]
# This node's name: shown to peers, in logs, and in conflict copies
# (report.conflict-<name>-<date>.odt). Letters, digits, '.', '_', '-'.
name = "lyon"
# UDP address the daemon (`puce node run`) listens on for QUIC connections.
listen = "0.0.0.0:7878"

[schedule]
# When scheduled syncs may start, in local time. A window may cross midnight
# ("22:00-02:00"). No window: any time.
windows = ["01:00-05:00"]
# Time between two successful syncs with a peer. Without it: once per window
# (or every hour when no window is set).
# interval = "6h"

[limits]
# Cap on sync traffic, per second and per direction, all peers together.
# "0" or absent: no cap.
bandwidth = "0"

[retry]
# After a failed sync, wait `initial`, then twice as long after each further
# failure, up to `max`; retries happen only inside a window.
initial = "30s"
max = "30m"

[transfer]
# Object requests in flight at once (QUIC streams).
streams = 4
# Received data is made durable at least this often, so that an interrupted
# sync resends at most about this much when it resumes.
checkpoint = "16 MiB"

[check]
# The daemon verifies the stored data: every `interval` (inside the windows of
# [schedule]), it reads `sample` of the packs and checks every byte, going on
# where the last check stopped, so that successive checks cover everything
# (5% a day: all of it every 20 days). Remove this section to turn it off.
interval = "1d"
sample = "5%"
# When a check finds damage, fetch the damaged objects from the peers that
# have them (those with an address, in the order of this file), verify them
# and rewrite the damaged packs; what no peer has is logged with its files.
repair = true

# [metrics]
# # Serve Prometheus metrics over HTTP at http://ADDRESS/metrics (off without
# # this section). Keep it on loopback or a private network: anyone who can
# # reach it sees the peers' names and the sizes of the spaces.
# listen = "127.0.0.1:9464"
# # How often the repository figures (sizes, dedup, growth) are recomputed: a
# # walk of every snapshot, run in the background, never per scrape.
# refresh = "1h"

# One [[peer]] section per node this one talks to. A connection from a key that
# is not listed here is refused.
#
# [[peer]]
# name = "grenoble"
# # The id printed by `puce node id` on that node.
# id = "XXXXXXX-XXXXXXX-XXXXXXX-XXXXXXX-XXXXXXX-XXXXXXX-XXXXXXX-XXXXXXX"
# # Where to reach it; leave out for a node that only connects to this one.
# address = "grenoble.example.org:7878"
# # What that peer may do, per space:
# #   "pull": it may read the space from this node (data flows to it);
# #   "push": it may write the space into this node (data flows from it).
# # "*" stands for every space not named. Unlisted spaces are not shared.
# spaces = { documents = ["pull", "push"], compta = ["pull"] }
# # Protection period: a forget this peer sends (its snapshots, in spaces it may push) is
# # applied only once the snapshot has been here that long; until then it is kept and can be
# # restored by id (`puce node status` lists it). Against a peer that is broken into.
# keep_min = "30d"
# # Quota: what this peer may make this node store, in stored bytes (what this node holds
# # only because that peer delivered it; `puce report peers` shows the use). A transfer from
# # it that would exceed it is refused; reload the daemon after raising it.
# quota = "200 GiB"
#
# Blind holding: a partner of another association keeps a copy of spaces without
# their key (docs/guide.md, "Blind holders"). On the owner's side, the spaces
# that peer holds blind for this node ("*" for all); it fetches them as opaque
# files listed in manifests this node signs:
# holds_blind = ["documents"]
# On the holder's side: this node holds that peer's spaces blind, under
# REPO/holds/<its id>/, served back to it alone.
# hold_blind = true
# After a disaster, a new node of the owner (new id) is admitted to the copy
# held for the old one: add it as a peer with `owner` = the old node's id.
# Two holders of one owner that name each other so heal each other's copy.
# With keep_min, what the owner's manifests drop is kept that long.
# owner = "XXXXXXX-XXXXXXX-XXXXXXX-XXXXXXX-XXXXXXX-XXXXXXX-XXXXXXX-XXXXXXX"
"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn id_text() -> String {
        NodeId([9u8; 32]).to_string()
    }

    #[test]
    fn the_example_parses() {
        let c = NodeConfig::parse(EXAMPLE).unwrap();
        assert_eq!(c.name, "lyon");
        assert_eq!(c.windows, vec![Window::parse("01:00-05:00").unwrap()]);
        assert_eq!(c.bandwidth, None);
        assert_eq!(c.streams, 4);
        assert_eq!(
            c.check,
            Some(CheckSchedule {
                interval: Duration::from_secs(86400),
                sample: 0.05,
                repair: true,
            })
        );
        assert!(c.peers.is_empty());
        assert_eq!(c.metrics, None);
        // The example's [metrics] section, uncommented, parses.
        let metrics: String = EXAMPLE
            .split("# [metrics]\n")
            .nth(1)
            .and_then(|rest| rest.split("\n\n").next())
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.starts_with("# #"))
            .map(|l| l.trim_start_matches("# "))
            .collect::<Vec<_>>()
            .join("\n");
        let c = NodeConfig::parse(&format!("[node]\nname = \"x\"\n[metrics]\n{metrics}")).unwrap();
        assert_eq!(
            c.metrics,
            Some(MetricsConfig {
                listen: "127.0.0.1:9464".parse().unwrap(),
                refresh: Duration::from_secs(3600),
            })
        );
        // The example's peer section, uncommented, parses too.
        let uncommented: String = EXAMPLE
            .lines()
            .map(|l| {
                let l = l.strip_prefix("# ").filter(|r| {
                    r.starts_with("[[peer]]")
                        || r.starts_with("name")
                        || r.starts_with("id")
                        || r.starts_with("address")
                        || r.starts_with("spaces")
                });
                l.map(str::to_string)
            })
            .map(|l| l.unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
            .replace(
                "XXXXXXX-XXXXXXX-XXXXXXX-XXXXXXX-XXXXXXX-XXXXXXX-XXXXXXX-XXXXXXX",
                &id_text(),
            );
        let text = format!(
            "[node]\nname = \"x\"\n{}",
            uncommented.replace("name = \"lyon\"", "")
        );
        let c = NodeConfig::parse(&text).unwrap();
        let p = &c.peers[0];
        assert_eq!(p.name, "grenoble");
        assert_eq!(
            p.access("documents"),
            Access {
                pull: true,
                push: true
            }
        );
        assert_eq!(
            p.access("compta"),
            Access {
                pull: true,
                push: false
            }
        );
        assert_eq!(p.access("other"), Access::default());
    }

    /// The guide shows the example as it is.
    #[test]
    fn the_guide_shows_the_example() {
        let guide = include_str!("../../docs/guide.md");
        assert!(
            guide.contains(EXAMPLE.trim_end()),
            "docs/guide.md lacks config::EXAMPLE"
        );
    }

    #[test]
    fn initial_config_fills_name_and_listen() {
        let c = NodeConfig::parse(&initial_config("grenoble", "127.0.0.1:9000")).unwrap();
        assert_eq!(c.name, "grenoble");
        assert_eq!(c.listen, "127.0.0.1:9000".parse().unwrap());
    }

    #[test]
    fn wildcard_and_errors() {
        let ok = format!(
            "[node]\nname = \"a\"\n[limits]\nbandwidth = \"2 MiB\"\n[[peer]]\nname = \"b\"\nid = \"{}\"\nspaces = {{ \"*\" = [\"pull\"], docs = [\"push\"] }}\nkeep_min = \"30d\"\nquota = \"200 GiB\"\n",
            id_text()
        );
        let c = NodeConfig::parse(&ok).unwrap();
        assert_eq!(c.bandwidth, Some(2 << 20));
        assert_eq!(c.peers[0].keep_min, Some(Duration::from_secs(30 * 86400)));
        assert_eq!(c.peers[0].quota, Some(200 << 30));
        let e = NodeConfig::parse(&ok.replace("200 GiB", "lots"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("quota") && e.contains("bad size"), "{e}");
        let e = NodeConfig::parse(&ok.replace("30d", "a month"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("keep_min") && e.contains("bad duration"), "{e}");
        assert_eq!(
            c.peers[0].access("x"),
            Access {
                pull: true,
                push: false
            }
        );
        assert_eq!(
            c.peers[0].access("docs"),
            Access {
                pull: false,
                push: true
            }
        );
        assert_eq!(c.find_peer("b").unwrap().name, "b");
        assert_eq!(c.find_peer(&id_text()).unwrap().name, "b");
        assert!(
            c.find_peer("zz")
                .unwrap_err()
                .to_string()
                .contains("no peer")
        );

        let cases = [
            ("[node]\nname = \"a b\"\n", "invalid node name"),
            (
                "[node]\nname = \"a\"\nlisten = \"nowhere\"\n",
                "not an address",
            ),
            (
                "[node]\nname = \"a\"\n[schedule]\nwindows = [\"1-2\"]\n",
                "bad time window",
            ),
            (
                "[node]\nname = \"a\"\n[limits]\nbandwidth = \"lots\"\n",
                "bad size",
            ),
            ("[node]\nname = \"a\"\nfoo = 1\n", "unknown field"),
            (
                "[node]\nname = \"a\"\n[[peer]]\nname = \"b\"\nid = \"nope\"\n",
                "not a node id",
            ),
            (
                "[node]\nname = \"a\"\n[retry]\ninitial = \"1h\"\nmax = \"1m\"\n",
                "initial <= max",
            ),
            (
                "[node]\nname = \"a\"\n[check]\nsample = \"120%\"\n",
                "bad share",
            ),
            (
                "[node]\nname = \"a\"\n[check]\nsample = \"5\"\n",
                "bad share",
            ),
            (
                "[node]\nname = \"a\"\n[check]\ninterval = \"0s\"\n",
                "must not be 0",
            ),
            (
                "[node]\nname = \"a\"\n[metrics]\nlisten = \"9464\"\n",
                "[metrics] listen",
            ),
            (
                "[node]\nname = \"a\"\n[notify]\ngrace = \"1d\"\n",
                "sends nowhere",
            ),
            (
                "[node]\nname = \"a\"\n[notify]\nwebhook = \"ntfy.sh\"\n",
                "not an http(s) URL",
            ),
            (
                "[node]\nname = \"a\"\n[notify.email]\nserver = \"m\"\nfrom = \"a@b\"\nto = []\n",
                "no recipient",
            ),
            (
                "[node]\nname = \"a\"\n[metrics]\nlisten = \"127.0.0.1:1\"\nrefresh = \"0s\"\n",
                "at least 1s",
            ),
        ];
        for (text, want) in cases {
            let e = NodeConfig::parse(text).unwrap_err().to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
        let bad_perm = format!(
            "[node]\nname = \"a\"\n[[peer]]\nname = \"b\"\nid = \"{}\"\nspaces = {{ docs = [\"read\"] }}\n",
            id_text()
        );
        assert!(
            NodeConfig::parse(&bad_perm)
                .unwrap_err()
                .to_string()
                .contains("unknown permission")
        );
        let dup = format!(
            "[node]\nname = \"a\"\n[[peer]]\nname = \"b\"\nid = \"{0}\"\n[[peer]]\nname = \"c\"\nid = \"{0}\"\n",
            id_text()
        );
        assert!(
            NodeConfig::parse(&dup)
                .unwrap_err()
                .to_string()
                .contains("same id")
        );
    }
}
