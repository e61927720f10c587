//! puce-core: the deduplicating chunk store behind puce.
//!
//! Files are cut by content-defined chunking ([`chunking`]), chunks are named by their BLAKE3
//! hash ([`hash`]), compressed with zstd and appended to pack files ([`pack`]) found through an
//! index in redb ([`index`]). A folder becomes a snapshot: a Merkle tree of directories
//! ([`format::tree`]) inside a named space. Identical data is stored once.
//!
//! This crate is synchronous and does no network I/O and no terminal output.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod backend;
pub mod blind;
pub mod check;
pub mod chunking;
pub mod crypto;
pub mod error;
pub mod forgotten;
pub mod format;
pub mod fsutil;
pub mod gc;
pub mod hash;
pub mod heal;
pub mod history;
pub mod index;
pub mod keyfile;
pub mod ledger;
pub mod merge;
pub mod migrate;
pub mod orphans;
pub mod pack;
pub mod paths;
pub mod progress;
pub mod reach;
pub mod read;
pub mod recovery;
pub mod reindex;
pub mod repo;
pub mod report;
pub mod retention;
pub mod saver;
pub mod snapshot;
pub mod vfs;
pub mod writer_session;
mod xchacha;

#[cfg(test)]
mod depth_tests;
#[cfg(test)]
mod fault_tests;
#[cfg(test)]
mod model_tests;
#[cfg(test)]
mod testkit;

pub use error::{Error, ErrorKind, Result, ResultExt};
pub use format::snapshot::SnapshotEntry;
pub use hash::{Hash, ObjectId, PackId, SnapshotId};
pub use repo::{InitOptions, OpenOptions, Repo};

/// Worker threads for a task given `asked` (an option's value): `asked`, or one per core when
/// it is 0 (2 when the core count is unknown).
pub(crate) fn worker_threads(asked: usize) -> usize {
    if asked != 0 {
        return asked;
    }
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
}
