//! A sync session on one connection: QUIC, or an in-memory pair in tests (the
//! [`crate::transport::Link`] trait stands between the two).
//!
//! After the TLS handshake (keys pinned both ways), the connecting node opens the first stream
//! with `Hello`; the other answers `Welcome` (same chunking parameters, a common revision) or
//! refuses. From then on the connection is symmetric: each side may open request streams and
//! serves the other's requests ([`serve`]), within what `node.toml` lets the other read.
//! A *pull* ([`pull::pull`]) is driven by the node that receives data; a *push* is a request
//! that the other node pull over the same connection.
//!
//! Misbehaviour (malformed or oversized frames, unexpected messages, objects that do not match
//! their ids) closes the connection with a code and a reason, logged on this side and reported
//! on the other. Requests beyond the budget ([`REQUEST_BURST`], [`REQUEST_RATE`]) are not
//! misbehaviour: the serving side takes them more slowly, and the requesting side paces itself
//! under the budget ([`PACE_BURST`], [`PACE_RATE`]).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use puce_core::progress::Progress;
use puce_core::{ObjectId, Repo};

use crate::auth::Permissions;
use crate::bandwidth::Limiter;
use crate::config::NodeConfig;
use crate::error::{Error, ErrorKind, Result, connection_error};
use crate::identity::Identity;
use crate::protocol::{self, Chunking, Code, Hello, Message, Welcome};
use crate::transport::{Link, Receiver, Sender, WireStats};
use puce_core::crypto::Fingerprint;

pub mod checks;
pub mod forget;
pub mod pull;
pub(crate) mod serve;

pub use serve::serve;

/// A test-only fault a node can be told to commit (debug builds only, environment variable
/// `PUCE_TEST_FAULT`), so that end-to-end tests can check how the other node reacts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Flip a byte of every file-data object served.
    CorruptData,
    /// Answer every `GetObjects` with a frame declaring more than the protocol allows.
    Oversized,
    /// Serve requests without limiting their rate, as a hostile node may.
    NoRequestLimit,
    /// Cut the peer off (`TooManyRequests`, as nodes before pacing did) once 3000 objects
    /// were sent on the connection.
    CutOffMidway,
    /// Pull without pacing requests, asking for one chunk per request (a requester flooding
    /// the other node, as one that does not know its budget would).
    Flood,
    /// Sign the forget records sent with a key of no configured node.
    ForeignForgets,
    /// Speak protocol revision 3 at most, as a node from before `GetChecks`.
    Revision3,
}

impl Fault {
    /// The fault asked for by `PUCE_TEST_FAULT`, in debug builds; always `None` in release
    /// builds.
    pub fn from_env() -> Option<Fault> {
        if !cfg!(debug_assertions) {
            return None;
        }
        match std::env::var("PUCE_TEST_FAULT").ok().as_deref() {
            Some("corrupt-data") => Some(Fault::CorruptData),
            Some("oversized") => Some(Fault::Oversized),
            Some("no-request-limit") => Some(Fault::NoRequestLimit),
            Some("flood") => Some(Fault::Flood),
            Some("cut-off-midway") => Some(Fault::CutOffMidway),
            Some("foreign-forgets") => Some(Fault::ForeignForgets),
            Some("revision-3") => Some(Fault::Revision3),
            _ => None,
        }
    }
}

/// What every session of a node shares.
pub struct NodeCtx {
    /// The repository.
    pub repo: Arc<Repo>,
    /// `node.toml`.
    pub config: NodeConfig,
    /// Directory of the node's files (state).
    pub dir: std::path::PathBuf,
    /// Key and certificate.
    pub identity: Identity,
    /// Cap on bytes sent.
    pub send_limit: Limiter,
    /// Cap on bytes received.
    pub recv_limit: Limiter,
    /// Test fault, if any.
    pub fault: Option<Fault>,
    /// Held during a walk for objects asked for by id alone: one at a time in the node.
    walking: tokio::sync::Mutex<()>,
    space_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl NodeCtx {
    /// Shared context for the sessions of a node.
    pub fn new(
        repo: Arc<Repo>,
        config: NodeConfig,
        dir: std::path::PathBuf,
        identity: Identity,
    ) -> NodeCtx {
        let bw = config.bandwidth;
        NodeCtx {
            repo,
            config,
            dir,
            identity,
            send_limit: Limiter::new(bw),
            recv_limit: Limiter::new(bw),
            fault: Fault::from_env(),
            walking: tokio::sync::Mutex::new(()),
            space_locks: Mutex::new(HashMap::new()),
        }
    }

    /// The chunking parameters of the repository.
    pub fn chunking(&self) -> Chunking {
        let c = self.repo.config().chunker;
        Chunking {
            min: c.min_size,
            avg: c.avg_size,
            max: c.max_size,
        }
    }

    /// The fingerprint of the repository's key; none for an unencrypted repository.
    pub fn key(&self) -> Option<Fingerprint> {
        self.repo
            .config()
            .encryption
            .as_ref()
            .map(|e| e.fingerprint)
    }

    /// The newest protocol revision this node speaks.
    pub fn max_version(&self) -> u16 {
        if self.fault == Some(Fault::Revision3) {
            protocol::CHECKS_VERSION - 1
        } else {
            protocol::VERSION
        }
    }

    /// The lock serialising pulls into `space` within this process.
    pub(crate) fn space_lock(&self, space: &str) -> Arc<tokio::sync::Mutex<()>> {
        match self.space_locks.lock() {
            Ok(mut m) => m.entry(space.to_string()).or_default().clone(),
            Err(_) => Arc::new(tokio::sync::Mutex::new(())),
        }
    }
}

/// The software name sent in `Hello`/`Welcome`.
pub fn software() -> String {
    format!("puce {}", env!("CARGO_PKG_VERSION"))
}

/// Counters of one connection.
#[derive(Debug, Default)]
pub struct Counters {
    /// Objects sent.
    pub sent_objects: AtomicU64,
    /// Their stored bytes.
    pub sent_bytes: AtomicU64,
    /// Requests made.
    pub requests: AtomicU64,
    /// Request waves that waited for an answer.
    pub round_trips: AtomicU64,
    /// Objects received in answers, whether stored or already here.
    pub fetched_objects: AtomicU64,
    /// Their stored bytes.
    pub fetched_bytes: AtomicU64,
}

/// What `FindObjects` requests of one connection learnt: walks over every readable snapshot
/// are costly, so a peer asking for objects that are not there does not get one each time.
#[derive(Debug, Default)]
struct FindState {
    /// When the next walk may start: the previous one's duration after its end, so that a
    /// peer keeps this node walking at most half of the time.
    next_walk: Option<tokio::time::Instant>,
    /// The snapshots of the last complete walk (a digest of their ids).
    walked: Option<blake3::Hash>,
    /// Ids that walk did not find (at most [`MAX_FIND_MISSES`]).
    misses: HashSet<ObjectId>,
}

/// Ids remembered per connection as not found by a `FindObjects` walk.
pub const MAX_FIND_MISSES: usize = 1 << 16;

/// A request budget: a burst, refilled at a steady rate. Taking a request beyond it goes into
/// debt: the caller waits until the debt is repaid.
#[derive(Debug)]
struct RequestBudget {
    tokens: f64,
    last: Instant,
    burst: f64,
    rate: f64,
}

impl RequestBudget {
    fn new(burst: f64, rate: f64) -> RequestBudget {
        RequestBudget {
            tokens: burst,
            last: Instant::now(),
            burst,
            rate,
        }
    }

    /// Take one request; how long to wait before making (or serving) it.
    fn take(&mut self, now: Instant) -> Duration {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt * self.rate).min(self.burst) - 1.0;
        self.last = now;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

/// Requests a peer may make in a burst before this node serves them more slowly.
pub const REQUEST_BURST: f64 = 512.0;
/// Requests per second this node serves a peer once the burst is spent.
pub const REQUEST_RATE: f64 = 200.0;
/// Requests this node makes in a burst: half of [`REQUEST_BURST`], so that a peer that still
/// cuts off requesters beyond its budget (nodes before this revision did) never sees one
/// from this node, whatever the network does to the timing.
pub const PACE_BURST: f64 = REQUEST_BURST / 2.0;
/// Requests per second this node makes once its burst is spent: three quarters of
/// [`REQUEST_RATE`].
pub const PACE_RATE: f64 = REQUEST_RATE * 3.0 / 4.0;

/// One connection to a peer.
pub struct Conn {
    /// The node.
    pub ctx: Arc<NodeCtx>,
    /// The connection (QUIC, or in memory in tests).
    link: Box<dyn Link>,
    /// Who is on the other side and what it may do.
    pub peer: Permissions,
    /// "peer 'grenoble' (192.0.2.7:7878)", for messages.
    pub label: String,
    /// The other side's node name (from `Hello`/`Welcome`).
    pub remote_name: Mutex<String>,
    /// Objects this peer may fetch: those reachable from snapshots sent to it in this
    /// connection.
    served: Mutex<HashSet<ObjectId>>,
    /// The files of the blind-holding manifest sent on this connection (the only ones
    /// `GetFile` serves).
    pub(crate) offer: Mutex<Option<Arc<crate::blind::Offer>>>,
    /// Held while objects asked for by id alone are looked for (one request at a time).
    finding: tokio::sync::Mutex<FindState>,
    negotiated: tokio::sync::watch::Sender<bool>,
    /// The protocol revision chosen in `Hello`/`Welcome` (0 before).
    version: AtomicU16,
    pulling: AtomicBool,
    /// Set when this node cut the peer off for misbehaving.
    cut: AtomicBool,
    /// The peer's requests to this node.
    budget: Mutex<RequestBudget>,
    /// This node's requests to the peer.
    pace: tokio::sync::Mutex<RequestBudget>,
    /// Counters.
    pub counters: Counters,
    /// Progress of what this connection sends and receives.
    pub progress: Arc<dyn Progress>,
}

impl Conn {
    /// A connection with `peer`, authenticated by TLS.
    pub fn new(
        ctx: Arc<NodeCtx>,
        conn: quinn::Connection,
        peer: Permissions,
        progress: Arc<dyn Progress>,
    ) -> Arc<Conn> {
        Conn::over(ctx, Box::new(conn), peer, progress)
    }

    /// A connection with `peer` over `link`, whose peer was authenticated as `peer`.
    pub fn over(
        ctx: Arc<NodeCtx>,
        link: Box<dyn Link>,
        peer: Permissions,
        progress: Arc<dyn Progress>,
    ) -> Arc<Conn> {
        let label = format!("peer '{}' ({})", peer.name, link.remote());
        Arc::new(Conn {
            ctx,
            link,
            label,
            remote_name: Mutex::new(peer.name.clone()),
            peer,
            served: Mutex::new(HashSet::new()),
            offer: Mutex::new(None),
            finding: tokio::sync::Mutex::new(FindState::default()),
            negotiated: tokio::sync::watch::Sender::new(false),
            version: AtomicU16::new(0),
            pulling: AtomicBool::new(false),
            cut: AtomicBool::new(false),
            budget: Mutex::new(RequestBudget::new(REQUEST_BURST, REQUEST_RATE)),
            pace: tokio::sync::Mutex::new(RequestBudget::new(PACE_BURST, PACE_RATE)),
            counters: Counters::default(),
            progress,
        })
    }

    /// Close the connection because the peer misbehaved: log it here, tell the peer why.
    pub fn cut_off(&self, code: Code, why: &str) {
        self.cut.store(true, Ordering::Release);
        tracing::warn!("cut off {}: {why}", self.label);
        let mut reason = why.as_bytes().to_vec();
        reason.truncate(900);
        self.link.close(code, &reason);
    }

    /// If the connection is closed, the error that closed it; else `e`.
    pub fn explain(&self, e: Error) -> Error {
        match self.link.close_reason() {
            Some(quinn::ConnectionError::LocallyClosed) | None => e,
            Some(reason) => connection_error(&self.label, &reason),
        }
    }

    /// Whether this node cut the peer off for misbehaving.
    pub fn was_cut_off(&self) -> bool {
        self.cut.load(Ordering::Acquire)
    }

    /// Take one of the peer's requests from its budget: how long to wait before serving it.
    fn spend_request(&self) -> Duration {
        if self.ctx.fault == Some(Fault::NoRequestLimit) {
            return Duration::ZERO;
        }
        match self.budget.lock() {
            Ok(mut b) => b.take(Instant::now()),
            Err(_) => Duration::from_secs_f64(1.0 / REQUEST_RATE),
        }
    }

    fn allow_objects(&self, ids: impl IntoIterator<Item = ObjectId>) {
        if let Ok(mut s) = self.served.lock() {
            s.extend(ids);
        }
    }

    fn is_served(&self, id: &ObjectId) -> bool {
        self.served.lock().map(|s| s.contains(id)).unwrap_or(false)
    }

    /// Open a request stream, send `req`, and return the stream to read the answer from.
    pub async fn request(&self, req: &Message) -> Result<Receiver> {
        // Paced under the peer's budget; the lock is held while waiting, so that requests go
        // out in the order they were paced.
        if self.ctx.fault != Some(Fault::Flood) {
            let mut pace = self.pace.lock().await;
            let wait = pace.take(Instant::now());
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
        }
        let (mut send, recv) = self
            .link
            .open()
            .await
            .map_err(|e| connection_error(&self.label, &e))?;
        protocol::write(&mut send, req)
            .await
            .map_err(|e| self.explain(e))?;
        send.finish();
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        Ok(recv)
    }

    /// Read the next answer frame; a closed connection or an `Error` frame becomes an error.
    pub async fn answer(&self, recv: &mut Receiver) -> Result<Message> {
        match protocol::read_expecting(recv, protocol::Expect::Answer).await {
            Ok(Some(Message::Error(e))) => {
                let code = Code::from_u16(e.code).unwrap_or(Code::Internal);
                Err(Error::from_peer(&self.label, code, &e.message))
            }
            Ok(Some(m)) => Ok(m),
            Ok(None) => Err(self.explain(Error::protocol(format!(
                "{} ended an answer early",
                self.label
            )))),
            Err(e) if e.kind() == ErrorKind::Protocol => {
                let code = if protocol::is_too_large(&e) {
                    Code::TooLarge
                } else {
                    Code::Protocol
                };
                let e = self.explain(e);
                if e.kind() == ErrorKind::Protocol {
                    self.cut_off(code, &format!("it sent {e}"));
                }
                Err(e)
            }
            Err(e) => Err(self.explain(e)),
        }
    }

    /// The client side of the handshake: send `Hello`, expect `Welcome`.
    pub async fn hello(&self) -> Result<Welcome> {
        let hello = Hello {
            min_version: protocol::MIN_VERSION,
            max_version: self.ctx.max_version(),
            node: self.ctx.config.name.clone(),
            software: software(),
            chunking: self.ctx.chunking(),
            key: self.ctx.key(),
        };
        let mut recv = self.request(&Message::Hello(hello)).await?;
        self.counters.round_trips.fetch_add(1, Ordering::Relaxed);
        let w = match self.answer(&mut recv).await? {
            Message::Welcome(w) => w,
            other => {
                let e = Error::protocol(format!(
                    "{} answered Hello with {}",
                    self.label,
                    other.name()
                ));
                self.cut_off(Code::Protocol, &e.to_string());
                return Err(e);
            }
        };
        if !(protocol::MIN_VERSION..=protocol::VERSION).contains(&w.version) {
            let e = Error::new(
                ErrorKind::Incompatible,
                format!(
                    "{} chose protocol revision {}, this node speaks {}..={}",
                    self.label,
                    w.version,
                    protocol::MIN_VERSION,
                    protocol::VERSION
                ),
            );
            self.cut_off(Code::Version, &e.to_string());
            return Err(e);
        }
        if let Err(e) = check_chunking(&self.label, self.ctx.chunking(), w.chunking) {
            self.cut_off(Code::Incompatible, &e.to_string());
            return Err(e);
        }
        if w.version >= protocol::BLIND_VERSION
            && let Err(e) = check_key(&self.label, &self.peer, self.ctx.key(), w.key)
        {
            tracing::warn!("refused {}: {e}", self.label);
            self.cut_off(Code::Incompatible, &e.to_string());
            return Err(e);
        }
        if let Ok(mut n) = self.remote_name.lock() {
            n.clone_from(&w.node);
        }
        self.version.store(w.version, Ordering::Release);
        self.negotiated.send_replace(true);
        Ok(w)
    }

    /// Whether `Hello`/`Welcome` completed, waiting a little for a handshake in progress (the
    /// request that follows `Welcome` may be read before the `Hello` task marks it done).
    async fn wait_negotiated(&self) -> bool {
        let mut rx = self.negotiated.subscribe();
        matches!(
            tokio::time::timeout(
                std::time::Duration::from_secs(10),
                rx.wait_for(|done| *done)
            )
            .await,
            Ok(Ok(_))
        )
    }

    /// The protocol revision both nodes speak on this connection.
    pub fn version(&self) -> u16 {
        self.version.load(Ordering::Acquire)
    }

    fn is_negotiated(&self) -> bool {
        *self.negotiated.borrow()
    }

    /// Close cleanly.
    pub fn done(&self) {
        self.link.close(Code::Done, b"done");
    }

    /// Close the connection once the session is over, telling the peer why with `code` (a
    /// refusal of this node that the peer did not ask about, e.g. its quota). Unlike
    /// [`Conn::cut_off`], what the peer sent stays.
    pub fn close_with(&self, code: Code, why: &str) {
        let mut reason = why.as_bytes().to_vec();
        reason.truncate(900);
        self.link.close(code, &reason);
    }

    /// Traffic figures of the connection.
    pub fn wire_stats(&self) -> WireStats {
        self.link.stats()
    }
}

/// Both repositories must chunk alike, or identical files would not share chunks across nodes.
pub fn check_chunking(label: &str, ours: Chunking, theirs: Chunking) -> Result<()> {
    if ours == theirs {
        return Ok(());
    }
    Err(Error::new(
        ErrorKind::Incompatible,
        format!(
            "{label} chunks files with min/avg/max = {}/{}/{} bytes, this node with {}/{}/{}: \
             nodes must use the same chunking parameters for identical data to be stored and \
             sent once; recreate one repository with `puce init --chunk-min {} --chunk-avg {} \
             --chunk-max {}` and sync it from the other",
            theirs.min,
            theirs.avg,
            theirs.max,
            ours.min,
            ours.avg,
            ours.max,
            theirs.min,
            theirs.avg,
            theirs.max
        ),
    ))
}

/// Nodes that replicate spaces (read what they receive) must share the association's key, or
/// what one sends would not open at the other: a different fingerprint is refused at once,
/// naming both. A peer that only holds this node's spaces blind, or whose spaces this node
/// holds blind, may have any key (or none).
pub fn check_key(
    label: &str,
    peer: &Permissions,
    ours: Option<Fingerprint>,
    theirs: Option<Fingerprint>,
) -> Result<()> {
    if ours == theirs || !peer.replicates() {
        return Ok(());
    }
    let show = |k: Option<Fingerprint>| match k {
        Some(k) => format!("is encrypted with the key of fingerprint {k}"),
        None => "is not encrypted".to_string(),
    };
    let fix = match theirs {
        Some(_) => format!(
            "make this node's repository again with `puce init --encrypt --key-from KEYFILE`, \
             KEYFILE being the key file of {label}'s repository, and sync it from there"
        ),
        None => format!(
            "make {label}'s repository again with `puce init --encrypt --key-from KEYFILE`, \
             KEYFILE being this repository's key file, and sync it from here"
        ),
    };
    Err(Error::new(
        ErrorKind::Incompatible,
        format!(
            "the repository of {label} {}, this node's {}: nodes that replicate spaces must \
             share the association's key; {fix} (a partner that must not read the spaces holds \
             them blind instead: docs/guide.md, \"Blind holders\")",
            show(theirs),
            show(ours)
        ),
    ))
}

/// Run `f` on a blocking thread (storage work, off the async threads).
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::internal(format!("a worker thread failed: {e}")))?
}

/// Cut the peer of `conn` off for misbehaving (`why`, after its label): the error to return.
fn misbehaved(conn: &Conn, code: Code, why: String) -> Error {
    conn.cut_off(code, &why);
    let kind = if code == Code::BadObject {
        ErrorKind::BadObject
    } else {
        ErrorKind::Protocol
    };
    Error::new(
        kind,
        format!(
            "{} {why}: cut off; nothing it sent in this transfer was made visible",
            conn.label
        ),
    )
}

/// Send an error answer on a request stream and finish it.
pub(crate) async fn send_error(send: &mut Sender, code: Code, message: &str) {
    let _ = protocol::write(send, &Message::error(code, message)).await;
    send.finish();
}

#[cfg(test)]
mod tests;
