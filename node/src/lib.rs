//! puce-node: replication of spaces between association nodes over QUIC.
//!
//! A node is a puce repository with an identity (an Ed25519 key, [`identity`]) and a
//! configuration ([`config`]): its peers, pinned by key, what each may read and write per
//! space, when to sync, how fast. Nodes talk `puce/sync/1` ([`protocol`], specified in
//! `docs/protocol.md`) over QUIC with mutual TLS ([`transport`], [`auth`]). A sync is driven by
//! the node that receives ([`session::pull`]): it walks the snapshot trees from the new roots,
//! skipping every subtree it already has, fetches the missing objects as stored, verifies each
//! against its id, stores them durably, and only then makes the snapshots visible; concurrent
//! histories are joined by merge snapshots ([`puce_core::merge`]). The daemon ([`daemon`])
//! serves peers and runs scheduled syncs ([`scheduler`]).

pub mod auth;
pub mod bandwidth;
pub mod blind;
pub mod config;
pub mod daemon;
pub mod error;
pub mod flags;
pub mod heal;
pub mod identity;
pub mod ledger;
pub mod metrics;
pub mod notify;
pub mod protocol;
pub mod quota;
pub mod replicas;
pub mod report;
pub mod scheduler;
pub mod session;
pub mod state;
pub mod sync;
pub mod transport;

pub use error::{Error, ErrorKind, Result};
pub use identity::{Identity, NodeId};
