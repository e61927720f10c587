//! The record files of an encrypted repository, sealed on their way to storage and opened on
//! their way back (docs/format.md, section 9).
//!
//! Snapshot records, space settings, receipts and forget records (with their lineage and hold
//! records) are sealed whole with [`Keys::seal`], bound to their kind and their file name, so
//! a sealed file renamed or moved to another directory does not open. A space's settings are
//! stored under the keyed hash of the space's name (names are secret), the name sealed inside.
//! Sealing is deterministic: two nodes of one association writing the same record write the
//! same file. The config and packs pass through unchanged (packs seal their own contents).

use std::sync::Arc;

use super::{Backend, FileKind, ObjectWriter};
use crate::crypto::{Keys, Kind as SealKind};
use crate::error::{Error, Result};

/// A backend whose record files are sealed with `keys`.
pub struct SealedBackend {
    inner: Arc<dyn Backend>,
    keys: Arc<Keys>,
}

impl std::fmt::Debug for SealedBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sealed({:?})", self.inner)
    }
}

/// The longest space name a sealed settings file may declare (names are checked when written:
/// this only bounds what a damaged file can make us allocate).
const MAX_NAME: usize = 1024;

impl SealedBackend {
    /// Seal the records of `inner` with `keys`.
    pub fn new(inner: Arc<dyn Backend>, keys: Arc<Keys>) -> SealedBackend {
        SealedBackend { inner, keys }
    }

    /// The backend underneath (for what must see the files as stored: a blind copy).
    pub fn inner(&self) -> &Arc<dyn Backend> {
        &self.inner
    }

    fn seal_kind(kind: FileKind) -> Option<SealKind> {
        match kind {
            FileKind::Config | FileKind::Pack => None,
            FileKind::Snapshot => Some(SealKind::Snapshot),
            FileKind::Space => Some(SealKind::Space),
            FileKind::Receipt => Some(SealKind::Receipt),
            FileKind::Forget => Some(SealKind::Forget),
        }
    }

    /// Sealed files are read and written whole: refuse `what` (a ranged read, a streamed
    /// write) on them, a bug in the caller.
    fn unsealed(kind: FileKind, what: &str) -> Result<()> {
        match Self::seal_kind(kind) {
            Some(_) => Err(Error::other(format!(
                "a sealed {} file cannot be {what}: it is read and written whole",
                kind.dir()
            ))),
            None => Ok(()),
        }
    }

    /// The id a sealed file is bound to: the keyed hash of its directory and logical name.
    fn seal_id(&self, kind: FileKind, name: &str) -> [u8; 32] {
        self.keys.name_id(&format!("{}/{name}", kind.dir())).0
    }

    /// The name a file is stored under.
    fn stored_name(&self, kind: FileKind, name: &str) -> String {
        if kind == FileKind::Space {
            self.keys.name_id(name).to_hex()
        } else {
            name.to_string()
        }
    }

    fn open(&self, kind: FileKind, sk: SealKind, name: &str, sealed: &[u8]) -> Result<Vec<u8>> {
        let what = format!("{}/{name}", kind.dir());
        self.keys.open(sk, &self.seal_id(kind, name), sealed, &what)
    }

    /// The plaintext a space's settings file seals: the name's length (u16 LE), the name, the
    /// record.
    fn space_plain(name: &str, data: &[u8]) -> Result<Vec<u8>> {
        let n = u16::try_from(name.len())
            .ok()
            .filter(|n| usize::from(*n) <= MAX_NAME)
            .ok_or_else(|| Error::invalid(format!("space name of {} bytes", name.len())))?;
        let mut out = Vec::with_capacity(2 + name.len() + data.len());
        out.extend_from_slice(&n.to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(data);
        Ok(out)
    }

    /// Split a space's opened settings file into its name and record.
    fn split_space(stored: &str, plain: &[u8]) -> Result<(String, Vec<u8>)> {
        let bad = || Error::corrupt(format!("spaces/{stored} is damaged: no space name in it"));
        let n = usize::from(u16::from_le_bytes(
            plain
                .get(..2)
                .ok_or_else(bad)?
                .try_into()
                .map_err(|_| bad())?,
        ));
        let name = plain.get(2..2 + n).ok_or_else(bad)?;
        let name = String::from_utf8(name.to_vec()).map_err(|_| bad())?;
        Ok((name, plain[2 + n..].to_vec()))
    }

    /// The name and record in the sealed settings file stored as `stored`.
    fn read_space_file(&self, stored: &str) -> Result<(String, Vec<u8>)> {
        let sealed = self.inner.read(FileKind::Space, stored)?;
        // Bound to the name it is stored under (the keyed hash of the space's name).
        let plain = self.keys.open(
            SealKind::Space,
            &self.seal_id(FileKind::Space, stored),
            &sealed,
            &format!("spaces/{stored}"),
        )?;
        let (name, data) = Self::split_space(stored, &plain)?;
        if self.stored_name(FileKind::Space, &name) != stored {
            return Err(Error::corrupt(format!(
                "spaces/{stored} holds the settings of another space: it was renamed"
            )));
        }
        Ok((name, data))
    }
}

impl Backend for SealedBackend {
    fn location(&self) -> String {
        self.inner.location()
    }

    fn read(&self, kind: FileKind, name: &str) -> Result<Vec<u8>> {
        let Some(sk) = Self::seal_kind(kind) else {
            return self.inner.read(kind, name);
        };
        if kind == FileKind::Space {
            return self
                .read_space_file(&self.stored_name(kind, name))
                .map(|(_, data)| data);
        }
        let sealed = self.inner.read(kind, name)?;
        self.open(kind, sk, name, &sealed)
    }

    fn read_at(&self, kind: FileKind, name: &str, offset: u64, buf: &mut [u8]) -> Result<()> {
        Self::unsealed(kind, "read in ranges")?;
        self.inner.read_at(kind, name, offset, buf)
    }

    fn read_vec(&self, kind: FileKind, name: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        Self::unsealed(kind, "read in ranges")?;
        self.inner.read_vec(kind, name, offset, len)
    }

    fn read_ranges_into(
        &self,
        kind: FileKind,
        name: &str,
        ranges: &[(u64, usize)],
        out: &mut Vec<u8>,
    ) -> Result<()> {
        Self::unsealed(kind, "read in ranges")?;
        self.inner.read_ranges_into(kind, name, ranges, out)
    }

    fn size(&self, kind: FileKind, name: &str) -> Result<u64> {
        self.inner.size(kind, &self.stored_name(kind, name))
    }

    fn write(&self, kind: FileKind, name: &str, data: &[u8]) -> Result<()> {
        let Some(sk) = Self::seal_kind(kind) else {
            return self.inner.write(kind, name, data);
        };
        let stored = self.stored_name(kind, name);
        let sealed = if kind == FileKind::Space {
            let plain = Self::space_plain(name, data)?;
            self.keys.seal(sk, &self.seal_id(kind, &stored), &plain)?
        } else {
            self.keys.seal(sk, &self.seal_id(kind, name), data)?
        };
        self.inner.write(kind, &stored, &sealed)
    }

    fn create(&self, kind: FileKind) -> Result<Box<dyn ObjectWriter>> {
        Self::unsealed(kind, "written in a stream")?;
        self.inner.create(kind)
    }

    fn list(&self, kind: FileKind) -> Result<Vec<(String, u64)>> {
        let files = self.inner.list(kind)?;
        if kind != FileKind::Space {
            return Ok(files);
        }
        let mut out = Vec::with_capacity(files.len());
        for (stored, size) in files {
            match self.read_space_file(&stored) {
                Ok((name, _)) => out.push((name, size)),
                Err(e) => tracing::warn!("spaces/{stored} is left out: {e:#} (run `puce check`)"),
            }
        }
        Ok(out)
    }

    fn remove(&self, kind: FileKind, name: &str) -> Result<()> {
        self.inner.remove(kind, &self.stored_name(kind, name))
    }

    fn will_need(&self, kind: FileKind, name: &str, ranges: &[(u64, usize)]) {
        if Self::seal_kind(kind).is_none() {
            self.inner.will_need(kind, name, ranges);
        }
    }

    fn is_remote(&self) -> bool {
        self.inner.is_remote()
    }

    fn exists(&self, kind: FileKind, name: &str) -> Result<bool> {
        self.inner.exists(kind, &self.stored_name(kind, name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::memory::MemoryBackend;
    use crate::crypto::MasterKey;
    use crate::error::ErrorKind;

    fn sealed() -> (Arc<MemoryBackend>, SealedBackend) {
        let inner = Arc::new(MemoryBackend::new());
        let keys = Arc::new(Keys::derive(&MasterKey::from_bytes([4; 32])));
        let b = SealedBackend::new(inner.clone(), keys);
        (inner, b)
    }

    #[test]
    fn records_are_sealed_and_bound_to_their_names() {
        let (inner, b) = sealed();
        b.write(FileKind::Snapshot, "aaaa", b"host lyon, path /srv/compta")
            .unwrap();
        let stored = inner.read(FileKind::Snapshot, "aaaa").unwrap();
        assert!(!stored.windows(4).any(|w| w == b"lyon"));
        assert_eq!(
            b.read(FileKind::Snapshot, "aaaa").unwrap(),
            b"host lyon, path /srv/compta"
        );
        // The same record written again is the same file (merges converge).
        b.write(FileKind::Snapshot, "aaaa", b"host lyon, path /srv/compta")
            .unwrap();
        assert_eq!(inner.read(FileKind::Snapshot, "aaaa").unwrap(), stored);
        // Sealed files are whole: no ranged read, no streamed write.
        assert!(b.read_vec(FileKind::Snapshot, "aaaa", 0, 4).is_err());
        assert!(b.create(FileKind::Forget).is_err());
        // Moved to another name or kind, it does not open.
        inner.write(FileKind::Snapshot, "bbbb", &stored).unwrap();
        inner.write(FileKind::Forget, "aaaa", &stored).unwrap();
        for (kind, name) in [(FileKind::Snapshot, "bbbb"), (FileKind::Forget, "aaaa")] {
            let e = b.read(kind, name).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
        }
    }

    #[test]
    fn space_names_are_hidden_and_listed() {
        let (inner, b) = sealed();
        b.write(FileKind::Space, "compta", b"settings").unwrap();
        let names: Vec<String> = inner
            .list(FileKind::Space)
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(names.len(), 1);
        assert!(!names[0].contains("compta"));
        let stored = inner.read(FileKind::Space, &names[0]).unwrap();
        assert!(!stored.windows(6).any(|w| w == b"compta"));
        assert_eq!(b.read(FileKind::Space, "compta").unwrap(), b"settings");
        assert_eq!(b.list(FileKind::Space).unwrap()[0].0, "compta".to_string());
        assert!(b.exists(FileKind::Space, "compta").unwrap());
        assert!(!b.exists(FileKind::Space, "other").unwrap());
        b.remove(FileKind::Space, "compta").unwrap();
        assert!(inner.list(FileKind::Space).unwrap().is_empty());
    }
}
