//! Appends objects to a pack file and seals it.

use std::io::Write;

use crate::backend::{Backend, FileKind, ObjectWriter};
use crate::error::{Error, Result};
use crate::format::pack::{self, Kind, Record};
use crate::hash::{Hash, ObjectId, PackId};
use crate::pack::codec::Codec;

/// A pack being written. Nothing is visible until [`PackWriter::finish`] publishes it.
pub struct PackWriter {
    out: Box<dyn ObjectWriter>,
    hasher: blake3::Hasher,
    len: u64,
    records: Vec<Record>,
    codec: Codec,
}

impl PackWriter {
    /// Start a new pack on `backend`, in the format of `codec`'s repository (sealed entry
    /// headers and trailer when it is encrypted; objects are added already sealed).
    pub fn new(backend: &dyn Backend, codec: &Codec) -> Result<PackWriter> {
        let mut w = PackWriter {
            out: backend.create(FileKind::Pack)?,
            hasher: blake3::Hasher::new(),
            len: 0,
            records: Vec::new(),
            codec: codec.clone(),
        };
        let mut nonce = [0u8; 7];
        getrandom::fill(&mut nonce)
            .map_err(|e| Error::other(format!("no random source for the pack nonce: {e}")))?;
        w.put(&pack::header(nonce, pack::version_for(codec.keys())))?;
        Ok(w)
    }

    fn put(&mut self, b: &[u8]) -> Result<()> {
        self.out
            .write_all(b)
            .map_err(|e| Error::io_op("cannot write a pack", e))?;
        self.hasher.update(b);
        self.len += b.len() as u64;
        Ok(())
    }

    /// Append an object. `data` is stored as is; `flags` says how it is encoded.
    pub fn add(
        &mut self,
        id: ObjectId,
        kind: Kind,
        flags: u8,
        raw_len: u32,
        data: &[u8],
    ) -> Result<()> {
        let stored_len = u32::try_from(data.len())
            .ok()
            .filter(|n| *n <= pack::MAX_OBJECT)
            .ok_or_else(|| Error::invalid("object too large for a pack"))?;
        let version = pack::version_for(self.codec.keys());
        let data_offset = self.len + pack::entry_header_len(version) as u64;
        let offset = u32::try_from(data_offset)
            .ok()
            .filter(|o| u64::from(*o) + u64::from(stored_len) < pack::MAX_PACK)
            .ok_or_else(|| Error::other("pack would exceed 4 GiB"))?;
        let rec = Record {
            id,
            kind,
            flags,
            offset,
            stored_len,
            raw_len,
        };
        let header = pack::entry_header_at(&rec, self.len, self.codec.keys())?;
        self.put(&header)?;
        self.put(data)?;
        self.records.push(rec);
        Ok(())
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Number of objects added.
    pub fn count(&self) -> usize {
        self.records.len()
    }

    /// The ids of the objects added so far.
    pub fn ids(&self) -> impl Iterator<Item = ObjectId> + '_ {
        self.records.iter().map(|r| r.id)
    }

    /// Whether no object was added.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Write the trailer, make the file durable and publish it under its id.
    pub fn finish(mut self) -> Result<(PackId, u64, Vec<Record>)> {
        let trailer = pack::trailer_for(&self.records, self.len, self.codec.keys())?;
        self.put(&trailer)?;
        let id = PackId(Hash(*self.hasher.finalize().as_bytes()));
        self.out.finish(&id.to_hex())?;
        Ok((id, self.len, self.records))
    }

    /// Throw the pack away.
    pub fn abort(self) {
        self.out.abort();
    }
}
