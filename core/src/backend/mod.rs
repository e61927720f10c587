//! Where the repository's files live: packs, snapshot records and the config.
//!
//! The [`Backend`] trait is the storage boundary. The local directory is the default; an
//! in-memory backend and a fault-injecting wrapper serve tests; network backends (S3) implement
//! the trait in their own crates, so that `core` stays free of network and async code.
//!
//! Every backend promises: a file written by [`Backend::write`] or published by
//! [`ObjectWriter::finish`] is complete and durable when the call returns, and is never seen
//! half-written by a reader.

use std::fmt::Debug;
use std::io::Write;

use crate::error::Result;

pub mod fault;
pub mod local;
pub mod memory;
pub mod sealed;

/// The classes of files in a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileKind {
    /// `config`: one file, the repository config.
    Config,
    /// `packs/`: pack files named by their id.
    Pack,
    /// `snapshots/`: snapshot records named by their id.
    Snapshot,
    /// `spaces/`: per-space settings (retention policy).
    Space,
    /// `receipts/`: who delivered each snapshot received from a peer, and when.
    Receipt,
    /// `forgets/`: forget records of snapshots forgotten here or by a peer.
    Forget,
}

impl FileKind {
    /// Directory name (or file name for [`FileKind::Config`]).
    pub fn dir(self) -> &'static str {
        match self {
            FileKind::Config => "config",
            FileKind::Pack => "packs",
            FileKind::Snapshot => "snapshots",
            FileKind::Space => "spaces",
            FileKind::Receipt => "receipts",
            FileKind::Forget => "forgets",
        }
    }
}

/// A file being written; nothing is visible until [`ObjectWriter::finish`].
pub trait ObjectWriter: Write + Send {
    /// Make the file durable and publish it under `name`.
    fn finish(self: Box<Self>, name: &str) -> Result<()>;
    /// Throw the file away.
    fn abort(self: Box<Self>);
}

/// Storage for the repository's files.
pub trait Backend: Send + Sync + Debug {
    /// Where the files are, for messages.
    fn location(&self) -> String;
    /// Read a whole file.
    fn read(&self, kind: FileKind, name: &str) -> Result<Vec<u8>>;
    /// Fill `buf` from `offset` of a file.
    fn read_at(&self, kind: FileKind, name: &str, offset: u64, buf: &mut [u8]) -> Result<()>;
    /// `len` bytes from `offset` of a file, in a new buffer. The local backend reads straight
    /// into the buffer's capacity instead of zeroing it first (large reads of the mount).
    fn read_vec(&self, kind: FileKind, name: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        self.read_at(kind, name, offset, &mut buf)?;
        Ok(buf)
    }
    /// Append the bytes of each `(offset, len)` range of a file to `out`, in order (on error
    /// `out` may hold part of them). The local backend reads straight into `out`'s spare
    /// capacity: several pieces of a pack land side by side in one buffer, without a copy.
    fn read_ranges_into(
        &self,
        kind: FileKind,
        name: &str,
        ranges: &[(u64, usize)],
        out: &mut Vec<u8>,
    ) -> Result<()> {
        for &(offset, len) in ranges {
            let start = out.len();
            out.resize(start + len, 0);
            self.read_at(kind, name, offset, &mut out[start..])?;
        }
        Ok(())
    }
    /// Size of a file in bytes.
    fn size(&self, kind: FileKind, name: &str) -> Result<u64>;
    /// Write a whole (small) file atomically and durably, replacing any previous one.
    fn write(&self, kind: FileKind, name: &str, data: &[u8]) -> Result<()>;
    /// Start writing a (large) file.
    fn create(&self, kind: FileKind) -> Result<Box<dyn ObjectWriter>>;
    /// Names and sizes of the files of a kind.
    fn list(&self, kind: FileKind) -> Result<Vec<(String, u64)>>;
    /// Delete a file; deleting a missing file is not an error.
    fn remove(&self, kind: FileKind, name: &str) -> Result<()>;
    /// A hint that the `(offset, len)` ranges of a file will be read soon. A backend that can
    /// start fetching them without making the caller wait does (the local one asks the kernel
    /// to read them into its page cache); the default does nothing. Never an error: a hint
    /// that cannot be followed is dropped.
    fn will_need(&self, _kind: FileKind, _name: &str, _ranges: &[(u64, usize)]) {}
    /// Whether reads cost a network round trip (then trees are cached on local disk).
    fn is_remote(&self) -> bool {
        false
    }
    /// Whether a file exists.
    fn exists(&self, kind: FileKind, name: &str) -> Result<bool> {
        match self.size(kind, name) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == crate::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }
}
