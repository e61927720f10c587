//! Reading runs of objects: the plaintext of consecutive chunks of a file in one buffer.
//!
//! Chunks of a file written in one go sit in the same pack. A run of stored (uncompressed)
//! chunks of one pack is read from one open file straight into the buffer that is returned,
//! side by side, and each chunk is verified against its id in place: no zeroing, no copy.
//! Compressed chunks are decompressed straight into the buffer. The FUSE mount serves
//! sequential reads this way.

use crate::error::{Error, Result};
use crate::format::pack::FLAG_ZSTD;
use crate::hash::ObjectId;
use crate::index::{IndexReader, Location};
use crate::pack::codec::decompress_append;
use crate::repo::Repo;

/// Largest run read at once (bounds the buffer whatever the caller asks).
pub const MAX_RUN: usize = 64 << 20;

/// The verified plaintext of `ids`, concatenated. Fails (`NotFound`) if an id is not in the
/// index, (`Corrupt`) if the data does not match, or if the total exceeds [`MAX_RUN`].
pub fn read_objects(repo: &Repo, reader: &IndexReader, ids: &[ObjectId]) -> Result<Vec<u8>> {
    let mut locs: Vec<Location> = Vec::with_capacity(ids.len());
    let mut total = 0usize;
    for id in ids {
        let loc = reader.get(id)?.ok_or_else(|| {
            Error::not_found(format!(
                "object {id} is not in the index: the repository is missing data \
                 (run `puce check`)"
            ))
        })?;
        total += loc.raw_len as usize;
        locs.push(loc);
    }
    if total > MAX_RUN {
        return Err(Error::invalid(format!(
            "a read of {total} bytes at once exceeds {MAX_RUN}"
        )));
    }
    if repo.codec().keys().is_some() {
        // Sealed objects are opened one by one (their stored bytes are not the plaintext).
        let mut out = Vec::with_capacity(total);
        for (id, loc) in ids.iter().zip(&locs) {
            out.extend_from_slice(&repo.read_location(reader, id, loc)?);
        }
        return Ok(out);
    }
    let codec = repo.codec();
    let raw = |l: &Location| l.flags & FLAG_ZSTD == 0;
    let mut out: Vec<u8> = Vec::new();
    let mut i = 0;
    while i < ids.len() {
        let first = locs[i];
        let mut j = i + 1;
        if raw(&first) {
            while j < ids.len() && raw(&locs[j]) && locs[j].pack == first.pack {
                j += 1;
            }
            let pack = repo.pack_id(reader, first.pack)?;
            for k in i..j {
                let l = locs[k];
                if l.stored_len != l.raw_len {
                    return Err(Error::corrupt(format!(
                        "object {} has {} bytes, expected {}: damaged (pack {})",
                        ids[k],
                        l.stored_len,
                        l.raw_len,
                        pack.short(16)
                    )));
                }
            }
            let ranges: Vec<(u64, usize)> = locs[i..j]
                .iter()
                .map(|l| (u64::from(l.offset), l.stored_len as usize))
                .collect();
            if out.capacity() == 0 {
                out.reserve_exact(total);
            }
            let start = out.len();
            repo.backend().read_ranges_into(
                crate::backend::FileKind::Pack,
                &pack.to_hex(),
                &ranges,
                &mut out,
            )?;
            let mut at = start;
            for k in i..j {
                let end = at + locs[k].stored_len as usize;
                codec
                    .verify(&ids[k], &out[at..end])
                    .map_err(|e| e.context(format!("pack {}", pack.short(16))))?;
                at = end;
            }
        } else {
            let stored = repo.read_stored(reader, &first)?;
            let pack = repo.pack_id(reader, first.pack)?;
            if out.capacity() == 0 {
                out.reserve_exact(total);
            }
            let start = out.len();
            decompress_append(&ids[i], first.raw_len, &stored, &mut out)
                .and_then(|()| codec.verify(&ids[i], &out[start..]))
                .map_err(|e| e.context(format!("pack {}", pack.short(16))))?;
        }
        i = j;
    }
    Ok(out)
}

/// Pieces of a pack at most this far apart are hinted as one range.
const HINT_GAP: u64 = 4096;

/// Tell the backend that `ids` will be read soon ([`Backend::will_need`]): neighbouring pieces
/// of one pack are named as one range. Ids the index does not have are skipped (the read that
/// follows reports them).
///
/// [`Backend::will_need`]: crate::backend::Backend::will_need
pub fn will_need(repo: &Repo, reader: &IndexReader, ids: &[ObjectId]) -> Result<()> {
    let mut pack: Option<u32> = None;
    let mut ranges: Vec<(u64, usize)> = Vec::new();
    let flush = |pack: Option<u32>, ranges: &mut Vec<(u64, usize)>| -> Result<()> {
        if let Some(no) = pack
            && !ranges.is_empty()
        {
            let id = repo.pack_id(reader, no)?;
            repo.backend()
                .will_need(crate::backend::FileKind::Pack, &id.to_hex(), ranges);
        }
        ranges.clear();
        Ok(())
    };
    for id in ids {
        let Some(l) = reader.get(id)? else { continue };
        if pack != Some(l.pack) {
            flush(pack, &mut ranges)?;
            pack = Some(l.pack);
        }
        let (offset, len) = (u64::from(l.offset), l.stored_len as usize);
        match ranges.last_mut() {
            // Neighbours (with the entry headers between them) make one range.
            Some((o, n)) if (*o + *n as u64..=*o + *n as u64 + HINT_GAP).contains(&offset) => {
                *n = (offset - *o) as usize + len;
            }
            _ => ranges.push((offset, len)),
        }
    }
    flush(pack, &mut ranges)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::backend::FileKind;
    use crate::format::pack::Kind;
    use crate::repo::InitOptions;
    use crate::saver::Saver;
    use std::sync::Arc;

    fn data(len: usize, seed: u64, compressible: bool) -> Vec<u8> {
        let mut s = seed | 1;
        (0..len)
            .map(|i| {
                if compressible {
                    (i % 7) as u8
                } else {
                    s ^= s << 13;
                    s ^= s >> 7;
                    s ^= s << 17;
                    s as u8
                }
            })
            .collect()
    }

    /// Runs of stored and compressed objects, across packs, read back equal to the objects
    /// concatenated; a damaged byte is reported as corruption.
    #[test]
    fn runs_read_back_and_damage_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Arc::new(Repo::init(&dir.path().join("r"), &InitOptions::default()).unwrap());
        let saver = Saver::new(repo.clone(), 1).unwrap();
        let reader = repo.index().reader().unwrap();
        let mut objs = Vec::new();
        for n in 0..12u64 {
            let d = data(20_000 + n as usize * 1000, n, n % 4 == 3);
            let id = ObjectId::of(&d);
            saver.save(&reader, id, Kind::Data, d.clone()).unwrap();
            objs.push((id, d));
        }
        saver.finish().unwrap();
        let reader = repo.index().reader().unwrap();
        let zstd: Vec<bool> = objs
            .iter()
            .map(|(id, _)| reader.get(id).unwrap().unwrap().flags & FLAG_ZSTD != 0)
            .collect();
        assert!(zstd.contains(&true) && zstd.contains(&false), "{zstd:?}");
        for (a, b) in [(0, 12), (0, 1), (3, 4), (1, 3), (5, 12), (2, 9)] {
            let ids: Vec<ObjectId> = objs[a..b].iter().map(|(id, _)| *id).collect();
            let want: Vec<u8> = objs[a..b].iter().flat_map(|(_, d)| d.clone()).collect();
            assert_eq!(
                read_objects(&repo, &reader, &ids).unwrap(),
                want,
                "{a}..{b}"
            );
        }
        // Damage one stored byte of object 1 in its pack.
        let loc = reader.get(&objs[1].0).unwrap().unwrap();
        let pack = repo.pack_id(&reader, loc.pack).unwrap();
        let path = walkdir(&dir.path().join("r/packs"), &pack.to_hex());
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[loc.offset as usize + 10] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        let repo = Repo::open(&dir.path().join("r")).unwrap();
        let reader = repo.index().reader().unwrap();
        let ids: Vec<ObjectId> = objs[0..3].iter().map(|(id, _)| *id).collect();
        let e = read_objects(&repo, &reader, &ids).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Corrupt, "{e}");
        let missing = [ObjectId::of(b"nope")];
        assert_eq!(
            read_objects(&repo, &reader, &missing).unwrap_err().kind(),
            crate::ErrorKind::NotFound
        );
    }

    /// Pack name and ranges of each hint.
    type Seen = Vec<(String, Vec<(u64, usize)>)>;

    /// The local backend, recording the hints it is given.
    #[derive(Debug)]
    struct Hints {
        inner: crate::backend::local::LocalBackend,
        seen: std::sync::Mutex<Seen>,
    }

    impl crate::backend::Backend for Hints {
        fn location(&self) -> String {
            self.inner.location()
        }
        fn read(&self, kind: FileKind, name: &str) -> Result<Vec<u8>> {
            self.inner.read(kind, name)
        }
        fn read_at(&self, kind: FileKind, name: &str, offset: u64, buf: &mut [u8]) -> Result<()> {
            self.inner.read_at(kind, name, offset, buf)
        }
        fn size(&self, kind: FileKind, name: &str) -> Result<u64> {
            self.inner.size(kind, name)
        }
        fn write(&self, kind: FileKind, name: &str, data: &[u8]) -> Result<()> {
            self.inner.write(kind, name, data)
        }
        fn create(&self, kind: FileKind) -> Result<Box<dyn crate::backend::ObjectWriter>> {
            self.inner.create(kind)
        }
        fn list(&self, kind: FileKind) -> Result<Vec<(String, u64)>> {
            self.inner.list(kind)
        }
        fn remove(&self, kind: FileKind, name: &str) -> Result<()> {
            self.inner.remove(kind, name)
        }
        fn will_need(&self, kind: FileKind, name: &str, ranges: &[(u64, usize)]) {
            assert_eq!(kind, FileKind::Pack);
            self.seen
                .lock()
                .unwrap()
                .push((name.to_string(), ranges.to_vec()));
        }
    }

    /// Hints name each object's stored bytes in its pack, neighbours in one range, one call
    /// per run of one pack; ids missing from the index are skipped.
    #[test]
    fn will_need_names_the_stored_bytes_pack_by_pack() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("r");
        drop(Repo::init(&root, &InitOptions::default()).unwrap());
        let hints = Arc::new(Hints {
            inner: crate::backend::local::LocalBackend::open(&root).unwrap(),
            seen: Default::default(),
        });
        let repo =
            Arc::new(Repo::open_with_backend(&root, hints.clone(), &Default::default()).unwrap());
        let mut ids = Vec::new();
        // Two savers: two packs.
        for round in 0..2u64 {
            let saver = Saver::new(repo.clone(), 1).unwrap();
            let reader = repo.index().reader().unwrap();
            for n in 0..4u64 {
                let d = data(30_000, 2 * (round * 10 + n) + 1, n == 2);
                let id = ObjectId::of(&d);
                saver.save(&reader, id, Kind::Data, d).unwrap();
                ids.push(id);
            }
            saver.finish().unwrap();
        }
        ids.insert(5, ObjectId::of(b"not stored"));
        let reader = repo.index().reader().unwrap();
        will_need(&repo, &reader, &ids).unwrap();
        let seen = hints.seen.lock().unwrap().clone();
        // One call per run of ids stored in one pack.
        let packs: Vec<u32> = ids
            .iter()
            .filter_map(|id| reader.get(id).unwrap())
            .map(|l| l.pack)
            .collect();
        let runs = 1 + packs.windows(2).filter(|w| w[0] != w[1]).count();
        assert!(runs < packs.len(), "the test wants neighbours: {packs:?}");
        assert_eq!(seen.len(), runs, "{seen:?}");
        for id in ids.iter().filter(|id| **id != ObjectId::of(b"not stored")) {
            let l = reader.get(id).unwrap().unwrap();
            let pack = repo.pack_id(&reader, l.pack).unwrap().to_hex();
            let (o, n) = (u64::from(l.offset), l.stored_len as u64);
            assert!(
                seen.iter()
                    .filter(|(p, _)| *p == pack)
                    .flat_map(|(_, r)| r)
                    .any(|&(a, len)| a <= o && o + n <= a + len as u64),
                "{id} at {o}+{n} of {pack} not hinted: {seen:?}"
            );
        }
        let ranges: usize = seen.iter().map(|(_, r)| r.len()).sum();
        assert!(ranges < packs.len(), "neighbours merged: {seen:?}");
        let hinted: usize = seen.iter().flat_map(|(_, r)| r).map(|r| r.1).sum();
        let stored: usize = ids
            .iter()
            .filter_map(|id| reader.get(id).unwrap())
            .map(|l| l.stored_len as usize)
            .sum();
        assert!(
            hinted >= stored && hinted < stored + 8 * 1024,
            "{hinted} for {stored}"
        );
    }

    fn walkdir(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                let f = p.join(name);
                if f.exists() {
                    return f;
                }
            }
        }
        panic!("pack {name} not found")
    }
}
