//! An in-memory backend, for tests (wrapped in a [`super::fault::FaultBackend`] by the fault
//! tests).

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::{Arc, Mutex};

use super::{Backend, FileKind, ObjectWriter};
use crate::error::{Error, Result};

type Files = BTreeMap<(u8, String), Arc<Vec<u8>>>;

/// Files kept in memory.
#[derive(Debug, Default, Clone)]
pub struct MemoryBackend {
    files: Arc<Mutex<Files>>,
}

impl MemoryBackend {
    /// An empty backend.
    pub fn new() -> MemoryBackend {
        MemoryBackend::default()
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Files>> {
        self.files
            .lock()
            .map_err(|_| Error::other("memory backend lock poisoned"))
    }

    fn get(&self, kind: FileKind, name: &str) -> Result<Arc<Vec<u8>>> {
        self.lock()?
            .get(&(kind as u8, name.to_string()))
            .cloned()
            .ok_or_else(|| Error::not_found(format!("{}/{name} does not exist", kind.dir())))
    }

    /// An independent copy of the files as they are now (to give a test a second repository
    /// with the same content).
    pub fn fork(&self) -> Result<MemoryBackend> {
        let files = self.lock()?.clone();
        Ok(MemoryBackend {
            files: Arc::new(Mutex::new(files)),
        })
    }

    /// Replace a file's bytes directly (to inject corruption in tests).
    pub fn put_raw(&self, kind: FileKind, name: &str, data: Vec<u8>) -> Result<()> {
        self.lock()?
            .insert((kind as u8, name.to_string()), Arc::new(data));
        Ok(())
    }
}

impl Backend for MemoryBackend {
    fn location(&self) -> String {
        "memory".into()
    }
    fn read(&self, kind: FileKind, name: &str) -> Result<Vec<u8>> {
        Ok(self.get(kind, name)?.as_ref().clone())
    }
    fn read_at(&self, kind: FileKind, name: &str, offset: u64, buf: &mut [u8]) -> Result<()> {
        let f = self.get(kind, name)?;
        let start = usize::try_from(offset).map_err(|_| Error::corrupt("offset too large"))?;
        let end = start.checked_add(buf.len());
        match end {
            Some(end) if end <= f.len() => {
                buf.copy_from_slice(&f[start..end]);
                Ok(())
            }
            _ => Err(Error::corrupt(format!(
                "{}/{name} is shorter than expected (truncated file)",
                kind.dir()
            ))),
        }
    }
    fn size(&self, kind: FileKind, name: &str) -> Result<u64> {
        Ok(self.get(kind, name)?.len() as u64)
    }
    fn write(&self, kind: FileKind, name: &str, data: &[u8]) -> Result<()> {
        self.put_raw(kind, name, data.to_vec())
    }
    fn create(&self, kind: FileKind) -> Result<Box<dyn ObjectWriter>> {
        Ok(Box::new(MemWriter {
            backend: self.clone(),
            kind,
            buf: Vec::new(),
        }))
    }
    fn list(&self, kind: FileKind) -> Result<Vec<(String, u64)>> {
        Ok(self
            .lock()?
            .iter()
            .filter(|((k, _), _)| *k == kind as u8)
            .map(|((_, n), d)| (n.clone(), d.len() as u64))
            .collect())
    }
    fn remove(&self, kind: FileKind, name: &str) -> Result<()> {
        self.lock()?.remove(&(kind as u8, name.to_string()));
        Ok(())
    }
}

struct MemWriter {
    backend: MemoryBackend,
    kind: FileKind,
    buf: Vec<u8>,
}

impl Write for MemWriter {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl ObjectWriter for MemWriter {
    fn finish(self: Box<Self>, name: &str) -> Result<()> {
        let MemWriter { backend, kind, buf } = *self;
        backend.put_raw(kind, name, buf)
    }
    fn abort(self: Box<Self>) {}
}
