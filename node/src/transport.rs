//! What carries sessions: the [`Link`] trait (bidirectional streams, a close with a reason),
//! implemented by QUIC connections and by an in-memory pair ([`memory`]) for tests.
//!
//! QUIC endpoints: quinn with rustls (TLS 1.3 only, ring), mutual authentication by pinned
//! keys ([`crate::auth`]), ALPN `puce/sync/1`. There is no plaintext path: a connection exists
//! only after both keys were checked.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use quinn::ConnectionError;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::auth::{PinnedPeers, provider};
use crate::config::NodeConfig;
use crate::error::{Error, ErrorKind, Result};
pub use crate::identity::SERVER_NAME;
use crate::identity::{Identity, NodeId};
use crate::protocol::{ALPN, Code};

pub mod memory;

/// A boxed future: the methods of [`Link`] and [`SendHalf`] are called through `dyn`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The side of a stream this node writes: frames ([`crate::protocol::write`]), then a finish.
pub trait SendHalf: AsyncWrite + Send + Unpin {
    /// Write `chunks` whole, in order (QUIC takes them without a copy).
    fn write_chunks<'a>(
        &'a mut self,
        chunks: &'a mut [Bytes],
    ) -> BoxFuture<'a, std::io::Result<()>>;
    /// End this side: the other reads a clean end of stream after what was written.
    fn finish(&mut self);
    /// Wait until the other side received everything written, or stopped reading.
    fn stopped(&mut self) -> BoxFuture<'_, ()>;
}

/// The side of a stream this node reads frames from ([`crate::protocol::read_expecting`]).
pub type Receiver = Box<dyn AsyncRead + Send + Unpin>;
/// The side of a stream this node writes frames to.
pub type Sender = Box<dyn SendHalf>;

/// What a session needs of a connection to a peer: bidirectional streams, each carrying one
/// request and its answer, and a close with a code and a reason. Why a connection ended is
/// told as a [`quinn::ConnectionError`] whatever carries it, so that it reads the same.
pub trait Link: Send + Sync {
    /// Open a stream to the peer.
    fn open(&self) -> BoxFuture<'_, Result<(Sender, Receiver), ConnectionError>>;
    /// The next stream the peer opened.
    fn accept(&self) -> BoxFuture<'_, Result<(Sender, Receiver), ConnectionError>>;
    /// Close the connection; the peer learns `code` and `reason`.
    fn close(&self, code: Code, reason: &[u8]);
    /// Why the connection ended, if it did.
    fn close_reason(&self) -> Option<ConnectionError>;
    /// Whether this node accepted the connection (the other one dialled).
    fn accepted(&self) -> bool;
    /// The peer's address, for messages.
    fn remote(&self) -> String;
    /// Traffic figures of the connection.
    fn stats(&self) -> WireStats;
}

/// Traffic figures of a connection, for sync reports.
#[derive(Debug, Clone, Default)]
pub struct WireStats {
    /// Bytes sent on the wire (UDP payloads).
    pub sent_bytes: u64,
    /// Bytes received on the wire.
    pub received_bytes: u64,
    /// The round-trip time.
    pub rtt: Duration,
    /// The path MTU.
    pub mtu: u16,
    /// Everything the transport counts, for the debug log.
    pub detail: String,
}

impl SendHalf for quinn::SendStream {
    fn write_chunks<'a>(
        &'a mut self,
        chunks: &'a mut [Bytes],
    ) -> BoxFuture<'a, std::io::Result<()>> {
        Box::pin(async move { Ok(self.write_all_chunks(chunks).await?) })
    }

    fn finish(&mut self) {
        let _ = quinn::SendStream::finish(self);
    }

    fn stopped(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let _ = quinn::SendStream::stopped(self).await;
        })
    }
}

impl Link for quinn::Connection {
    fn open(&self) -> BoxFuture<'_, Result<(Sender, Receiver), ConnectionError>> {
        Box::pin(async move {
            let (send, recv) = self.open_bi().await?;
            Ok((Box::new(send) as Sender, Box::new(recv) as Receiver))
        })
    }

    fn accept(&self) -> BoxFuture<'_, Result<(Sender, Receiver), ConnectionError>> {
        Box::pin(async move {
            let (send, recv) = self.accept_bi().await?;
            Ok((Box::new(send) as Sender, Box::new(recv) as Receiver))
        })
    }

    fn close(&self, code: Code, reason: &[u8]) {
        quinn::Connection::close(self, code.varint(), reason);
    }

    fn close_reason(&self) -> Option<ConnectionError> {
        quinn::Connection::close_reason(self)
    }

    fn accepted(&self) -> bool {
        self.side() == quinn::Side::Server
    }

    fn remote(&self) -> String {
        self.remote_address().to_string()
    }

    fn stats(&self) -> WireStats {
        let s = quinn::Connection::stats(self);
        WireStats {
            sent_bytes: s.udp_tx.bytes,
            received_bytes: s.udp_rx.bytes,
            rtt: s.path.rtt,
            mtu: s.path.current_mtu,
            detail: format!("{s:?}"),
        }
    }
}

/// Incoming request streams a peer may have open at once.
pub const MAX_STREAMS: u32 = 32;

/// The QUIC transport settings of every node connection (stream limits, windows, keep-alive).
/// With a bandwidth cap, the flow-control windows are a fraction of a second of traffic, so
/// that a cap applied by the receiver (which reads no faster than the cap) is not overrun by a
/// burst filling large windows.
pub fn transport_config(cap: Option<u64>) -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_bidi_streams(quinn::VarInt::from_u32(MAX_STREAMS));
    t.max_concurrent_uni_streams(quinn::VarInt::from_u32(0));
    // Large windows: a loopback or LAN link is not held back by flow control.
    let (stream, conn) = match cap {
        None => (16 << 20, 64 << 20),
        Some(c) => (
            (c / 8).clamp(64 << 10, 16 << 20) as u32,
            (c / 4).clamp(256 << 10, 64 << 20) as u32,
        ),
    };
    t.stream_receive_window(quinn::VarInt::from_u32(stream));
    t.receive_window(quinn::VarInt::from_u32(conn));
    t.send_window(u64::from(conn));
    t.keep_alive_interval(Some(Duration::from_secs(5)));
    if let Ok(idle) = quinn::IdleTimeout::try_from(Duration::from_secs(30)) {
        t.max_idle_timeout(Some(idle));
    }
    Arc::new(t)
}

fn tls_error(e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::new(ErrorKind::Internal, "cannot set up TLS").with_source(e)
}

/// Server side: accept every configured peer.
pub fn server_config(identity: &Identity, config: &NodeConfig) -> Result<quinn::ServerConfig> {
    let verifier = Arc::new(PinnedPeers::any_peer(config));
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_error)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(identity.cert_chain(), identity.private_key())
        .map_err(tls_error)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    tls.max_early_data_size = 0;
    let quic = QuicServerConfig::try_from(tls).map_err(tls_error)?;
    let mut sc = quinn::ServerConfig::with_crypto(Arc::new(quic));
    sc.transport_config(transport_config(config.bandwidth));
    Ok(sc)
}

/// Client side: accept only the key of the peer dialled.
pub fn client_config(
    identity: &Identity,
    verifier: Arc<PinnedPeers>,
    cap: Option<u64>,
) -> Result<quinn::ClientConfig> {
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_error)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(identity.cert_chain(), identity.private_key())
        .map_err(tls_error)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let quic = QuicClientConfig::try_from(tls).map_err(tls_error)?;
    let mut cc = quinn::ClientConfig::new(Arc::new(quic));
    cc.transport_config(transport_config(cap));
    Ok(cc)
}

/// An endpoint listening on `addr` that can also dial out.
pub fn listen(
    addr: SocketAddr,
    identity: &Identity,
    config: &NodeConfig,
) -> Result<quinn::Endpoint> {
    quinn::Endpoint::server(server_config(identity, config)?, addr).map_err(|e| {
        Error::new(
            ErrorKind::Config,
            format!(
                "cannot listen on UDP {addr}: {e} (another daemon running? change [node] listen \
                 in node.toml)"
            ),
        )
        .with_source(e)
    })
}

/// An endpoint for outgoing connections only, on an ephemeral port of the right family.
/// Its connections use 8-byte connection ids: it may hold several at once, even to one
/// address (a heal from several peers).
pub fn dial_only(remote: SocketAddr) -> Result<quinn::Endpoint> {
    client_endpoint(remote, quinn::EndpointConfig::default())
}

/// An endpoint for **one** outgoing connection (`puce sync`, a scheduled sync of the daemon),
/// on an ephemeral port of the right family. The peer then sends to it with zero-length
/// connection ids: 8 bytes less in every packet it sends, which is every data packet of a
/// pull. quinn routes such packets by the peer's address alone, so the endpoint must not hold
/// two connections to one address at once (the second would take the first's packets); with
/// one connection per endpoint it never does. This node's own address may still change (NAT
/// rebinding): the peer routes what it receives by its own connection ids, as usual.
pub fn dial_one(remote: SocketAddr) -> Result<quinn::Endpoint> {
    let mut config = quinn::EndpointConfig::default();
    config.cid_generator(|| Box::new(NoConnectionIds));
    client_endpoint(remote, config)
}

/// A [`dial_one`] endpoint owned by one sync. [`DialOne::finish`] closes it with `Done`;
/// dropped unfinished (its task was cancelled: the node is stopping), it closes with
/// `ShuttingDown`, so that the peer knows a later attempt may succeed.
pub struct DialOne {
    endpoint: quinn::Endpoint,
    finished: bool,
}

impl DialOne {
    /// An endpoint for one connection to `remote`.
    pub fn new(remote: SocketAddr) -> Result<DialOne> {
        Ok(DialOne {
            endpoint: dial_one(remote)?,
            finished: false,
        })
    }

    /// The endpoint.
    pub fn endpoint(&self) -> &quinn::Endpoint {
        &self.endpoint
    }

    /// Close with `Done` and wait (3 s at most) for the peer to learn it.
    pub async fn finish(mut self) {
        self.finished = true;
        self.endpoint.close(Code::Done.varint(), b"done");
        let _ = tokio::time::timeout(Duration::from_secs(3), self.endpoint.wait_idle()).await;
    }
}

impl Drop for DialOne {
    fn drop(&mut self) {
        if !self.finished {
            self.endpoint
                .close(Code::ShuttingDown.varint(), b"node is stopping");
        }
    }
}

/// Zero-length connection ids (see [`dial_one`]).
struct NoConnectionIds;

impl quinn::ConnectionIdGenerator for NoConnectionIds {
    fn generate_cid(&mut self) -> quinn::ConnectionId {
        quinn::ConnectionId::new(&[])
    }

    fn cid_len(&self) -> usize {
        0
    }

    fn cid_lifetime(&self) -> Option<Duration> {
        None
    }
}

fn client_endpoint(remote: SocketAddr, config: quinn::EndpointConfig) -> Result<quinn::Endpoint> {
    let bind: SocketAddr = if remote.is_ipv6() {
        SocketAddr::from(([0u16; 8], 0))
    } else {
        SocketAddr::from(([0, 0, 0, 0], 0))
    };
    let socket_error = |e: std::io::Error| {
        Error::new(ErrorKind::Network, format!("cannot open a UDP socket: {e}")).with_source(e)
    };
    let socket = std::net::UdpSocket::bind(bind).map_err(socket_error)?;
    let runtime = quinn::default_runtime()
        .ok_or_else(|| Error::internal("no async runtime to run a QUIC endpoint on"))?;
    quinn::Endpoint::new(config, None, socket, runtime).map_err(socket_error)
}

/// Resolve `host:port` (first address).
pub async fn resolve(address: &str) -> Result<SocketAddr> {
    let mut addrs = tokio::net::lookup_host(address).await.map_err(|e| {
        Error::new(ErrorKind::Network, format!("cannot resolve {address}: {e}")).with_source(e)
    })?;
    addrs.next().ok_or_else(|| {
        Error::new(
            ErrorKind::Network,
            format!("{address} resolves to no address"),
        )
    })
}

/// Connect to peer `peer_name` with id `peer` at `address`; `cap`: this node's bandwidth cap.
pub async fn connect(
    endpoint: &quinn::Endpoint,
    identity: &Identity,
    peer: NodeId,
    peer_name: &str,
    address: &str,
    cap: Option<u64>,
) -> Result<quinn::Connection> {
    let remote = resolve(address).await?;
    let verifier = Arc::new(PinnedPeers::only(peer, peer_name, address));
    let cc = client_config(identity, verifier.clone(), cap)?;
    let connecting = endpoint
        .connect_with(cc, remote, SERVER_NAME)
        .map_err(|e| {
            Error::new(
                ErrorKind::Network,
                format!("cannot connect to {address}: {e}"),
            )
            .with_source(e)
        })?;
    let label = format!("peer '{peer_name}' ({address})");
    match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Ok(r) => r.map_err(|e| match verifier.refusal() {
            // This node refused the key the other side presented.
            Some(why) => Error::new(ErrorKind::NotAllowed, why),
            None => crate::error::connection_error(&label, &e),
        }),
        Err(_) => Err(Error::new(
            ErrorKind::Network,
            format!(
                "{label} does not answer (no QUIC handshake within {} s): is its daemon running, \
                 and is UDP port {} open on the way?",
                CONNECT_TIMEOUT.as_secs(),
                remote.port()
            ),
        )),
    }
}

/// How long to wait for a peer to answer a connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The node id of the other side of an established connection.
pub fn peer_id(conn: &quinn::Connection) -> Result<NodeId> {
    let certs = conn
        .peer_identity()
        .and_then(|any| {
            any.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
                .ok()
        })
        .ok_or_else(|| Error::internal("the connection has no peer certificate"))?;
    let first = certs
        .first()
        .ok_or_else(|| Error::internal("the peer presented no certificate"))?;
    NodeId::from_cert(first)
}
