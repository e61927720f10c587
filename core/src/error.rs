//! The one error type at the surface of `puce-core`.
//!
//! Every error carries a [`ErrorKind`] (what class of failure, used by callers to pick an exit
//! code, an errno or a retry policy), a message that names what failed and, where it helps, what
//! to do next, and the underlying cause.

use std::fmt;
use std::path::Path;

/// What class of failure an [`Error`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// An operating-system I/O failure (disk full, permission denied, ...).
    Io,
    /// Something named by the caller does not exist (snapshot, path, object, repository).
    NotFound,
    /// Stored bytes do not match what they claim to be: checksum or hash mismatch, bad framing.
    Corrupt,
    /// The data was written by a newer puce: the format version is not supported.
    UnsupportedVersion,
    /// The caller asked for something invalid (bad name, ambiguous prefix, bad option).
    InvalidInput,
    /// The thing already exists (repository at init, space at create).
    AlreadyExists,
    /// The index or another shared resource failed in a way a retry may fix.
    Busy,
    /// A tree holds an entry that would be unsafe to materialise (`..`, `/`, NUL).
    UnsafePath,
    /// The operation was interrupted on request.
    Interrupted,
    /// The repository's storage failed while writing (disk full, object store unreachable):
    /// the operation cannot go on.
    Storage,
    /// A key does not open the repository: wrong passphrase, another association's key, a key
    /// file missing or not given.
    Key,
    /// Anything else: a bug or an unexpected state.
    Other,
    /// A quota would be exceeded (a space's, `puce space set --quota`): nothing was
    /// committed; free space or raise the quota.
    Quota,
}

impl ErrorKind {
    /// Whether retrying the same operation later can succeed.
    pub fn is_retryable(self) -> bool {
        matches!(self, ErrorKind::Busy | ErrorKind::Interrupted)
    }
}

/// The error returned by every fallible function of `puce-core`.
pub struct Error {
    kind: ErrorKind,
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A new error of `kind` with a message.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// The same error with another kind.
    pub fn with_kind(mut self, kind: ErrorKind) -> Self {
        self.kind = kind;
        self
    }

    /// Attach the underlying cause.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// The class of failure.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message, without the cause.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether retrying later can help.
    pub fn is_retryable(&self) -> bool {
        self.kind.is_retryable()
            || self
                .source
                .as_ref()
                .and_then(|s| s.downcast_ref::<std::io::Error>())
                .is_some_and(|e| {
                    matches!(
                        e.kind(),
                        std::io::ErrorKind::Interrupted
                            | std::io::ErrorKind::TimedOut
                            | std::io::ErrorKind::WouldBlock
                    )
                })
    }

    /// Prefix the message with more context: `"{context}: {message}"`.
    pub fn context(mut self, context: impl fmt::Display) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }

    /// An I/O error not tied to one path, saying what was being done.
    pub fn io_op(action: &str, err: std::io::Error) -> Self {
        Error::from_io(action.to_string(), err)
    }

    /// An I/O error on `path`, saying what was being done.
    pub fn io(action: &str, path: &Path, err: std::io::Error) -> Self {
        Error::from_io(format!("{action} {}", path.display()), err)
    }

    fn from_io(what: String, err: std::io::Error) -> Self {
        let kind = match err.kind() {
            std::io::ErrorKind::NotFound => ErrorKind::NotFound,
            std::io::ErrorKind::AlreadyExists => ErrorKind::AlreadyExists,
            std::io::ErrorKind::Interrupted => ErrorKind::Interrupted,
            _ => ErrorKind::Io,
        };
        let hint = match err.raw_os_error() {
            Some(libc::ENOSPC) => {
                " (the disk is full: free space, then run the command again; nothing committed was changed)"
            }
            Some(libc::EACCES) | Some(libc::EPERM) => {
                " (permission denied: check the owner and mode)"
            }
            Some(libc::EROFS) => " (the file system is read-only)",
            _ => "",
        };
        Error::new(kind, format!("{what}{hint}")).with_source(err)
    }

    /// A corruption error.
    pub fn corrupt(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Corrupt, message)
    }

    /// An invalid-input error.
    pub fn invalid(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::InvalidInput, message)
    }

    /// A not-found error.
    pub fn not_found(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::NotFound, message)
    }

    /// An internal error.
    pub fn other(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Other, message)
    }

    /// Whether the underlying cause is "no space left on device".
    pub fn is_disk_full(&self) -> bool {
        let mut cur: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(self);
        while let Some(e) = cur {
            if let Some(io) = e.downcast_ref::<std::io::Error>()
                && io.raw_os_error() == Some(libc::ENOSPC)
            {
                return true;
            }
            cur = e.source();
        }
        false
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_with_causes(f, &self.message, std::error::Error::source(self))
    }
}

/// Write `message`, then, in the alternate form (`{:#}`), each cause in the chain from
/// `source`, separated by `: ` (the display of every puce error type).
pub fn write_with_causes(
    f: &mut fmt::Formatter<'_>,
    message: &str,
    source: Option<&(dyn std::error::Error + 'static)>,
) -> fmt::Result {
    f.write_str(message)?;
    if f.alternate() {
        let mut cur = source;
        while let Some(e) = cur {
            write!(f, ": {e}")?;
            cur = e.source();
        }
    }
    Ok(())
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

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self {
                Error::new(ErrorKind::Io, "index (index.redb) failed; run `puce repair index` if this persists").with_source(e)
            }
        }
    )*};
}
from_redb!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// Extension to add context to results from the standard library.
pub(crate) trait IoContext<T> {
    fn io_ctx(self, action: &str, path: &Path) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn io_ctx(self, action: &str, path: &Path) -> Result<T> {
        self.map_err(|e| Error::io(action, path, e))
    }
}

/// Extension to add context to any `Result<_, Error>`.
pub trait ResultExt<T> {
    /// Prefix the error's message with `context`.
    fn context(self, context: impl fmt::Display) -> Result<T>;
    /// Prefix the error's message with a lazily built context.
    fn with_context<C: fmt::Display>(self, f: impl FnOnce() -> C) -> Result<T>;
}

impl<T> ResultExt<T> for Result<T> {
    fn context(self, context: impl fmt::Display) -> Result<T> {
        self.map_err(|e| e.context(context))
    }
    fn with_context<C: fmt::Display>(self, f: impl FnOnce() -> C) -> Result<T> {
        self.map_err(|e| e.context(f()))
    }
}
