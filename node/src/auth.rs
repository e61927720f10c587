//! Who may connect and what they may do: TLS certificate verifiers that pin peers by key, and
//! the per-space permissions of `node.toml`.
//!
//! Both sides of a connection present a certificate. A verifier accepts a certificate only if
//! the node id of its public key is one it was told to accept (any configured peer for incoming
//! connections; exactly the peer dialled for outgoing ones) and the handshake signature proves
//! the other side holds the matching private key. Names, dates and issuers in certificates are
//! ignored: the key is the identity. Anything else is refused during the handshake, before any
//! protocol message, and logged with the refused id.

use std::collections::HashMap;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::config::{Access, NodeConfig};
use crate::identity::NodeId;

/// The crypto provider: ring, the only one linked.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Accepts exactly a set of node ids.
///
/// A refusal is reported to the other side only as a TLS `access_denied` alert: the detailed
/// reason (which keys are configured) stays local, in the log and in [`PinnedPeers::refusal`].
#[derive(Debug)]
pub struct PinnedPeers {
    accepted: HashMap<NodeId, String>,
    algorithms: WebPkiSupportedAlgorithms,
    /// For messages: "incoming connection" or "node at ADDR".
    what: String,
    /// Incoming connections (any configured peer) or an outgoing one (one pinned key).
    incoming: bool,
    refusal: std::sync::Mutex<Option<String>>,
}

impl PinnedPeers {
    /// Accept every peer of `config` (incoming connections).
    pub fn any_peer(config: &NodeConfig) -> PinnedPeers {
        PinnedPeers {
            accepted: config
                .peers
                .iter()
                .map(|p| (p.id, p.name.clone()))
                .collect(),
            algorithms: provider().signature_verification_algorithms,
            what: "incoming connection".into(),
            incoming: true,
            refusal: std::sync::Mutex::new(None),
        }
    }

    /// Accept only `id` (an outgoing connection to the peer `name`).
    pub fn only(id: NodeId, name: &str, address: &str) -> PinnedPeers {
        PinnedPeers {
            accepted: HashMap::from([(id, name.to_string())]),
            algorithms: provider().signature_verification_algorithms,
            what: format!("node at {address} (peer '{name}')"),
            incoming: false,
            refusal: std::sync::Mutex::new(None),
        }
    }

    /// Why the last certificate was refused, if it was.
    pub fn refusal(&self) -> Option<String> {
        self.refusal.lock().ok().and_then(|r| r.clone())
    }

    fn refuse(&self, msg: String) -> rustls::Error {
        if self.incoming {
            tracing::warn!("{msg}");
        } else {
            tracing::debug!("{msg}");
        }
        if let Ok(mut r) = self.refusal.lock() {
            *r = Some(msg);
        }
        rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure)
    }

    fn check(&self, cert: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        let id = match NodeId::from_cert(cert) {
            Ok(id) => id,
            Err(e) => return Err(self.refuse(format!("refused {}: {e}", self.what))),
        };
        if self.accepted.contains_key(&id) {
            return Ok(());
        }
        let msg = if self.incoming {
            format!(
                "refused {}: key {id} is not a configured peer (to allow it, add a [[peer]] \
                 with this id to node.toml)",
                self.what
            )
        } else {
            let (want, name) = self
                .accepted
                .iter()
                .next()
                .map(|(i, n)| (i.to_string(), n.as_str()))
                .unwrap_or_default();
            format!(
                "refused {}: it presented key {id}, not the pinned key {want} of peer '{name}' \
                 in node.toml (a different machine answers, or that node made a new key: check \
                 `puce node id` there)",
                self.what
            )
        };
        Err(self.refuse(msg))
    }
}

/// The reason a verifier refused a key (carried in rustls errors to the local side).
#[derive(Debug)]
pub struct Refused(pub String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

impl ServerCertVerifier for PinnedPeers {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check(end_entity)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

impl ClientCertVerifier for PinnedPeers {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.check(end_entity)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }
}

/// What a connected peer may do, from `node.toml`.
#[derive(Debug, Clone)]
pub struct Permissions {
    /// The peer's name.
    pub name: String,
    /// Its id.
    pub id: NodeId,
    spaces: std::collections::BTreeMap<String, Access>,
    /// Its quota ([`crate::config::Peer::quota`]).
    pub quota: Option<u64>,
    /// Its protection period ([`crate::config::Peer::keep_min`]).
    pub keep_min: Option<std::time::Duration>,
    /// This node's spaces it holds blind ([`crate::config::Peer::holds_blind`]).
    pub holds_blind: Vec<String>,
    /// Whether this node holds its spaces blind ([`crate::config::Peer::hold_blind`]).
    pub hold_blind: bool,
    /// The owner whose blind copy it may fetch from here: itself, or the owner it replaces
    /// ([`crate::config::Peer::owner`]); none if this node holds nothing for it.
    pub held_owner: Option<NodeId>,
}

impl Permissions {
    /// The permissions of peer `id`, if it is configured.
    pub fn of(config: &NodeConfig, id: &NodeId) -> Option<Permissions> {
        config.peer_by_id(id).map(|p| Permissions {
            name: p.name.clone(),
            id: p.id,
            spaces: p.spaces.clone(),
            quota: p.quota,
            keep_min: p.keep_min,
            holds_blind: p.holds_blind.clone(),
            hold_blind: p.hold_blind,
            held_owner: p.owner.or(p.hold_blind.then_some(p.id)),
        })
    }

    fn access(&self, space: &str) -> Access {
        self.spaces
            .get(space)
            .or_else(|| self.spaces.get("*"))
            .copied()
            .unwrap_or_default()
    }

    /// Whether the peer may read `space` from this node.
    pub fn may_pull(&self, space: &str) -> bool {
        self.access(space).pull
    }

    /// Whether the peer may write `space` into this node.
    pub fn may_push(&self, space: &str) -> bool {
        self.access(space).push
    }

    /// Whether the peer replicates spaces with this node (reads or writes any): then both
    /// must share the association's key.
    pub fn replicates(&self) -> bool {
        self.spaces.values().any(|a| a.pull || a.push)
    }

    /// Whether the peer holds this node's `space` blind.
    pub fn holds_blind(&self, space: &str) -> bool {
        self.holds_blind.iter().any(|s| s == space || s == "*")
    }

    /// Whether the peer may read any space at all from this node.
    pub fn may_pull_any(&self) -> bool {
        self.spaces.values().any(|a| a.pull)
    }
}
