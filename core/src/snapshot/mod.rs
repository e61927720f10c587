//! Snapshots: taking them (archive), restoring them, comparing them.

pub mod archive;
pub mod diff;
pub mod edit;
pub mod restore;

/// Former home of the mount's merge, now [`crate::merge::merge3`]: kept until `fuse` imports
/// from there.
pub mod treemerge {
    pub use crate::merge::{Conflict, Merged as MergeOutcome, merge3};
}

pub use archive::{SnapshotOptions, SnapshotOutcome, default_space, snapshot};
pub use diff::{Change, ChangeKind, DiffStats, diff};
pub use restore::{RestoreOptions, RestoreStats, restore};
