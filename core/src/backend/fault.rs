//! A backend wrapper that fails on demand, for fault tests: run an operation with a budget of
//! N mutating backend calls, for every N up to what the operation needs, and check that nothing
//! committed before is lost (`core/src/fault_tests.rs`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use super::{Backend, FileKind, ObjectWriter};
use crate::error::{Error, ErrorKind, Result};

/// Wraps a backend; once `budget` mutating operations have succeeded, every further write,
/// publication or removal fails with an I/O error (as a full disk or a lost server would), or
/// only the next one does ([`FaultBackend::fail_once_after`]: a transient error). Reads always
/// succeed. Clones share the budget.
#[derive(Debug, Clone)]
pub struct FaultBackend<B> {
    inner: Arc<B>,
    budget: Arc<Budget>,
}

/// The operations left, shared by a backend's clones and its writers.
#[derive(Debug)]
struct Budget {
    /// Operations still allowed; negative: unlimited.
    left: AtomicI64,
    /// Whether a refusal lifts the limit (a transient fault).
    once: AtomicBool,
    /// Operations that succeeded.
    spent: AtomicU64,
}

impl Budget {
    /// Take one operation from the budget (zero refuses) and count it.
    fn spend(&self) -> Result<()> {
        let r = self
            .left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| match b {
                0 => None,
                b if b < 0 => Some(b),
                b => Some(b - 1),
            });
        match r {
            Ok(_) => {
                self.spent.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
            Err(_) => {
                if self.once.load(Ordering::SeqCst) {
                    self.left.store(-1, Ordering::SeqCst);
                }
                Err(Error::new(
                    ErrorKind::Io,
                    "injected fault: storage refused the write",
                ))
            }
        }
    }
}

impl<B: Backend> FaultBackend<B> {
    /// Wrap `inner`, allowing `budget` mutating operations (negative: unlimited).
    pub fn new(inner: B, budget: i64) -> FaultBackend<B> {
        FaultBackend {
            inner: Arc::new(inner),
            budget: Arc::new(Budget {
                left: AtomicI64::new(budget),
                once: AtomicBool::new(false),
                spent: AtomicU64::new(0),
            }),
        }
    }

    /// How many mutating operations have succeeded so far: run an operation without a limit,
    /// and the difference is how many it needs.
    pub fn spent(&self) -> u64 {
        self.budget.spent.load(Ordering::SeqCst)
    }

    /// Change the remaining budget (negative: unlimited); every operation beyond it fails.
    pub fn set_budget(&self, budget: i64) {
        self.budget.once.store(false, Ordering::SeqCst);
        self.budget.left.store(budget, Ordering::SeqCst);
    }

    /// Allow `n` more operations, refuse the next one, then allow all again.
    pub fn fail_once_after(&self, n: u64) {
        self.budget.once.store(true, Ordering::SeqCst);
        self.budget
            .left
            .store(i64::try_from(n).unwrap_or(i64::MAX), Ordering::SeqCst);
    }

    /// The wrapped backend.
    pub fn inner(&self) -> &B {
        &self.inner
    }
}

impl<B: Backend> Backend for FaultBackend<B> {
    fn location(&self) -> String {
        format!("fault({})", self.inner.location())
    }
    fn read(&self, kind: FileKind, name: &str) -> Result<Vec<u8>> {
        self.inner.read(kind, name)
    }
    fn read_at(&self, kind: FileKind, name: &str, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.inner.read_at(kind, name, offset, buf)
    }
    fn read_vec(&self, kind: FileKind, name: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        self.inner.read_vec(kind, name, offset, len)
    }
    fn read_ranges_into(
        &self,
        kind: FileKind,
        name: &str,
        ranges: &[(u64, usize)],
        out: &mut Vec<u8>,
    ) -> Result<()> {
        self.inner.read_ranges_into(kind, name, ranges, out)
    }
    fn size(&self, kind: FileKind, name: &str) -> Result<u64> {
        self.inner.size(kind, name)
    }
    fn will_need(&self, kind: FileKind, name: &str, ranges: &[(u64, usize)]) {
        self.inner.will_need(kind, name, ranges)
    }
    fn write(&self, kind: FileKind, name: &str, data: &[u8]) -> Result<()> {
        self.budget.spend()?;
        self.inner.write(kind, name, data)
    }
    fn create(&self, kind: FileKind) -> Result<Box<dyn ObjectWriter>> {
        let w = self.inner.create(kind)?;
        Ok(Box::new(FaultWriter {
            inner: w,
            budget: self.budget.clone(),
        }))
    }
    fn list(&self, kind: FileKind) -> Result<Vec<(String, u64)>> {
        self.inner.list(kind)
    }
    fn remove(&self, kind: FileKind, name: &str) -> Result<()> {
        self.budget.spend()?;
        self.inner.remove(kind, name)
    }
}

struct FaultWriter {
    inner: Box<dyn ObjectWriter>,
    budget: Arc<Budget>,
}

impl std::io::Write for FaultWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.inner.write(b)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl ObjectWriter for FaultWriter {
    fn finish(self: Box<Self>, name: &str) -> Result<()> {
        if let Err(e) = self.budget.spend() {
            self.inner.abort();
            return Err(e);
        }
        self.inner.finish(name)
    }
    fn abort(self: Box<Self>) {
        self.inner.abort()
    }
}
