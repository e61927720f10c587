//! The node's error type. Each error has a kind (which decides whether the scheduler retries and
//! which code goes on the wire) and a message that names the peer, space or object concerned.

use std::fmt;

use crate::protocol::Code;

/// What class of failure an [`Error`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The node configuration is missing or invalid.
    Config,
    /// The key or certificate cannot be read or created.
    Identity,
    /// The network failed: unreachable, timed out, connection lost. Retrying can help.
    Network,
    /// The peer refused us: our key is unknown to it, or it does not allow what we asked.
    Refused,
    /// We refused the peer: unknown key, or a space it may not read or write.
    NotAllowed,
    /// The peer broke the protocol: malformed, oversized or unexpected messages, floods.
    Protocol,
    /// The peer sent an object that does not match its id.
    BadObject,
    /// The two nodes cannot work together: no common protocol version, different chunking.
    Incompatible,
    /// Something asked for does not exist.
    NotFound,
    /// The local repository failed.
    Store,
    /// The operation was cancelled (shutdown).
    Cancelled,
    /// A transfer would exceed a peer's quota (on either side).
    Quota,
    /// A bug or an unexpected state.
    Internal,
}

/// A node error.
pub struct Error {
    kind: ErrorKind,
    message: String,
    retryable: bool,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A new error.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
            retryable: matches!(kind, ErrorKind::Network),
            source: None,
        }
    }

    /// Attach the cause.
    pub fn with_source(mut self, e: impl std::error::Error + Send + Sync + 'static) -> Error {
        self.source = Some(Box::new(e));
        self
    }

    /// Prefix the message with context.
    pub fn context(mut self, c: impl fmt::Display) -> Error {
        self.message = format!("{c}: {}", self.message);
        self
    }

    /// The kind.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message without its cause.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether a later attempt can succeed without anyone changing anything.
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }

    /// A protocol violation by the peer.
    pub fn protocol(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Protocol, message)
    }

    /// An internal error.
    pub fn internal(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Internal, message)
    }

    /// The wire code that reports this error to the peer.
    pub fn code(&self) -> Code {
        match self.kind {
            ErrorKind::Protocol => Code::Protocol,
            ErrorKind::BadObject => Code::BadObject,
            ErrorKind::NotAllowed | ErrorKind::Refused => Code::NotAllowed,
            ErrorKind::Incompatible => Code::Incompatible,
            ErrorKind::NotFound => Code::NotFound,
            ErrorKind::Cancelled => Code::ShuttingDown,
            ErrorKind::Quota => Code::Quota,
            _ => Code::Internal,
        }
    }

    /// The error a peer reported with `code` and `message`.
    pub fn from_peer(peer: &str, code: Code, message: &str) -> Error {
        let kind = match code {
            Code::NotAllowed => ErrorKind::Refused,
            Code::Incompatible | Code::Version => ErrorKind::Incompatible,
            Code::NotFound => ErrorKind::NotFound,
            Code::Quota => ErrorKind::Quota,
            Code::ShuttingDown | Code::Busy => ErrorKind::Network,
            Code::Protocol | Code::TooLarge | Code::TooManyRequests | Code::BadObject => {
                ErrorKind::Protocol
            }
            _ => ErrorKind::Internal,
        };
        let mut e = Error::new(kind, format!("{peer} reports: {message}"));
        e.retryable = matches!(code, Code::ShuttingDown | Code::Busy | Code::Internal);
        e
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        puce_core::error::write_with_causes(f, &self.message, std::error::Error::source(self))
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Error({:?}, {:#})", self.kind, self)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<puce_core::Error> for Error {
    fn from(e: puce_core::Error) -> Error {
        let retryable = e.is_retryable();
        let kind = match e.kind() {
            puce_core::ErrorKind::NotFound => ErrorKind::NotFound,
            puce_core::ErrorKind::Interrupted => ErrorKind::Cancelled,
            _ => ErrorKind::Store,
        };
        let mut out = Error::new(kind, format!("{e:#}"));
        out.retryable = retryable;
        out
    }
}

/// Network failures from quinn become [`ErrorKind::Network`] errors (or clearer ones).
pub(crate) fn connection_error(peer: &str, e: &quinn::ConnectionError) -> Error {
    use quinn::ConnectionError as C;
    match e {
        C::ApplicationClosed(c) => {
            let code = u16::try_from(c.error_code.into_inner())
                .ok()
                .and_then(Code::from_u16);
            let reason = String::from_utf8_lossy(&c.reason).into_owned();
            match code {
                Some(Code::Done) => {
                    Error::new(ErrorKind::Network, format!("{peer} closed the connection"))
                }
                Some(code) => Error::from_peer(peer, code, &reason),
                None => Error::new(
                    ErrorKind::Protocol,
                    format!(
                        "{peer} closed the connection with unknown code {}: {reason}",
                        c.error_code
                    ),
                ),
            }
        }
        C::ConnectionClosed(c) => {
            let reason = String::from_utf8_lossy(&c.reason).into_owned();
            tls_refusal(peer, c.error_code, &reason).unwrap_or_else(|| {
                Error::new(
                    ErrorKind::Network,
                    format!("{peer} closed the connection ({}): {reason}", c.error_code),
                )
            })
        }
        C::TransportError(t) => {
            let reason = t.reason.clone();
            tls_refusal(peer, t.code, &reason).unwrap_or_else(|| {
                Error::new(ErrorKind::Protocol, format!("QUIC error with {peer}: {t}"))
            })
        }
        C::TimedOut => Error::new(
            ErrorKind::Network,
            format!("{peer} does not answer (timed out): is it running and reachable on UDP?"),
        ),
        C::Reset => Error::new(ErrorKind::Network, format!("{peer} reset the connection")),
        C::LocallyClosed => Error::new(ErrorKind::Cancelled, "connection closed locally"),
        C::VersionMismatch => Error::new(
            ErrorKind::Incompatible,
            format!("{peer} speaks no QUIC version this node knows"),
        ),
        C::CidsExhausted => Error::new(
            ErrorKind::Network,
            format!("connection to {peer} failed: {e}"),
        ),
    }
}

/// A TLS alert during the handshake: the peer refused our key, or we refused its key.
fn tls_refusal(peer: &str, code: quinn::TransportErrorCode, reason: &str) -> Option<Error> {
    let raw = u64::from(code);
    // QUIC carries TLS alerts as transport errors 0x100 + alert (RFC 9001, section 4.8).
    if !(0x100..0x200).contains(&raw) {
        return None;
    }
    let alert = raw - 0x100;
    let msg = match alert {
        // access_denied, certificate_unknown, bad_certificate, unknown_ca
        49 | 46 | 42 | 48 => {
            format!(
                "{peer} refused this node's key (TLS alert {alert}): its node.toml does not list \
                 this node's id; give its admin the id printed by `puce node id`"
            )
        }
        120 => format!(
            "{peer} does not speak puce/sync/1 (no common application protocol): upgrade the \
             older of the two nodes"
        ),
        _ => format!("TLS handshake with {peer} failed (alert {alert}): {reason}"),
    };
    Some(Error::new(ErrorKind::Refused, msg))
}
