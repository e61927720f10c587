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
use crate::repo::{Repo, decompress_append, verify};

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
                verify(&ids[k], &out[at..end])
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
                .and_then(|()| verify(&ids[i], &out[start..]))
                .map_err(|e| e.context(format!("pack {}", pack.short(16))))?;
        }
        i = j;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
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
