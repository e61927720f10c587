//! Every persisted type, in one place, with no I/O. A change here is a format change: see
//! `docs/format.md`, which is normative, and the golden tests beside each type.

pub mod config;
pub mod envelope;
pub mod forget;
pub mod pack;
pub mod receipt;
pub mod snapshot;
pub mod space;
pub mod tree;

/// Lowercase hex of `bytes`, for golden tests and diagnostics.
pub fn hexdump(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
