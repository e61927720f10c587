//! Progress reporting: core calls these; the CLI draws bars, the daemon logs.

/// Receives progress events from long operations. All methods have empty defaults.
pub trait Progress: Send + Sync {
    /// The total amount of work is now known (0 when unknown).
    fn set_total(&self, _files: u64, _bytes: u64) {}
    /// Some files and bytes were processed.
    fn add(&self, _files: u64, _bytes: u64) {}
    /// Something worth telling the user that does not stop the operation.
    fn warn(&self, _message: &str) {}
    /// A short description of the current item.
    fn current(&self, _what: &str) {}
}

/// A [`Progress`] that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {}
