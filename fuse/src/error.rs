//! Errors at the FUSE boundary: every failure becomes one errno, with a message for the log.

use puce_core::snapshot::edit::EditError;
use puce_core::{Error, ErrorKind};

/// A failed file-system operation: the errno the caller sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsError(pub i32);

/// `Result` with [`FsError`].
pub type FsResult<T> = Result<T, FsError>;

impl FsError {
    /// `ENOENT`.
    pub const NOENT: FsError = FsError(libc::ENOENT);
    /// `EROFS`.
    pub const ROFS: FsError = FsError(libc::EROFS);
    /// `EPERM`.
    pub const PERM: FsError = FsError(libc::EPERM);
    /// `EINVAL`.
    pub const INVAL: FsError = FsError(libc::EINVAL);
    /// `EIO`.
    pub const IO: FsError = FsError(libc::EIO);
    /// `EBADF`.
    pub const BADF: FsError = FsError(libc::EBADF);
    /// `ENOTDIR`.
    pub const NOTDIR: FsError = FsError(libc::ENOTDIR);
    /// `EISDIR`.
    pub const ISDIR: FsError = FsError(libc::EISDIR);
    /// `EEXIST`.
    pub const EXIST: FsError = FsError(libc::EEXIST);
    /// `EXDEV`.
    pub const XDEV: FsError = FsError(libc::EXDEV);
    /// `ENOSYS`.
    pub const NOSYS: FsError = FsError(libc::ENOSYS);
    /// `EOPNOTSUPP`.
    pub const NOTSUP: FsError = FsError(libc::EOPNOTSUPP);
    /// `ESTALE`.
    pub const STALE: FsError = FsError(libc::ESTALE);
    /// `ENAMETOOLONG`.
    pub const NAMETOOLONG: FsError = FsError(libc::ENAMETOOLONG);
    /// `EFBIG`.
    pub const FBIG: FsError = FsError(libc::EFBIG);
}

impl From<&Error> for FsError {
    fn from(e: &Error) -> FsError {
        if e.is_disk_full() {
            return FsError(libc::ENOSPC);
        }
        match e.kind() {
            ErrorKind::NotFound => FsError::NOENT,
            ErrorKind::AlreadyExists => FsError::EXIST,
            ErrorKind::InvalidInput | ErrorKind::UnsafePath => FsError::INVAL,
            ErrorKind::Busy => FsError(libc::EAGAIN),
            ErrorKind::Interrupted => FsError(libc::EINTR),
            ErrorKind::Quota => {
                tracing::warn!("{e:#}");
                FsError(libc::ENOSPC)
            }
            _ => {
                // Data damage, a failing disk, a bug: the caller sees EIO, the log says why.
                tracing::error!("I/O error: {e:#}");
                FsError::IO
            }
        }
    }
}

impl From<Error> for FsError {
    fn from(e: Error) -> FsError {
        FsError::from(&e)
    }
}

impl From<EditError> for FsError {
    fn from(e: EditError) -> FsError {
        match e {
            EditError::NotFound(_) => FsError::NOENT,
            EditError::NotADirectory(_) => FsError::NOTDIR,
            EditError::IsADirectory(_) => FsError::ISDIR,
            EditError::NotEmpty(_) => FsError(libc::ENOTEMPTY),
            EditError::Exists(_) => FsError::EXIST,
            EditError::Invalid(_) => FsError::INVAL,
            EditError::Store(e) => FsError::from(&e),
        }
    }
}

impl From<std::io::Error> for FsError {
    fn from(e: std::io::Error) -> FsError {
        match e.raw_os_error() {
            Some(n) if n != 0 => FsError(n),
            _ => {
                tracing::error!("I/O error: {e}");
                FsError::IO
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapping() {
        assert_eq!(
            FsError::from(EditError::NotEmpty("d".into())).0,
            libc::ENOTEMPTY
        );
        assert_eq!(FsError::from(Error::not_found("x")), FsError::NOENT);
        assert_eq!(FsError::from(Error::corrupt("x")), FsError::IO);
        assert_eq!(
            FsError::from(std::io::Error::from_raw_os_error(libc::ENOSPC)).0,
            libc::ENOSPC
        );
    }
}
