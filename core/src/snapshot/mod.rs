//! Snapshots: taking them (archive), restoring them, comparing them.

pub mod archive;
pub mod diff;
pub mod edit;
pub mod restore;
mod restore_special;

pub use archive::{SnapshotOptions, SnapshotOutcome, default_space, snapshot};
pub use diff::{Change, ChangeKind, DiffStats, diff};
pub use restore::{RestoreOptions, RestoreStats, restore};
