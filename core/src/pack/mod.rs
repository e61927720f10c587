//! Writing and reading pack files.

pub mod codec;
pub mod reader;
pub mod writer;

pub use reader::{read_pack_records, scan_pack_entries};
pub use writer::PackWriter;

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::backend::memory::MemoryBackend;
    use crate::backend::{Backend, FileKind};
    use crate::crypto::{Keys, MasterKey};
    use crate::error::ErrorKind;
    use crate::format::pack::{FLAG_ZSTD, Kind};
    use crate::hash::{ObjectId, PackId};
    use crate::pack::codec::Codec;

    fn codecs() -> [Codec; 2] {
        let keys = Keys::derive(&MasterKey::from_bytes([6; 32]));
        [Codec::plain(), Codec::sealed(Arc::new(keys))]
    }

    /// A pack of three objects (one compressed) in `backend`; returns its id and the objects'
    /// plaintexts.
    fn write_pack(backend: &MemoryBackend, codec: &Codec) -> (PackId, Vec<(ObjectId, Vec<u8>)>) {
        let objects: Vec<(ObjectId, Vec<u8>)> = [b"first".to_vec(), vec![7u8; 5000], Vec::new()]
            .into_iter()
            .map(|p| (codec.id_of(&p), p))
            .collect();
        let mut w = PackWriter::new(backend, codec).unwrap();
        for (i, (id, plain)) in objects.iter().enumerate() {
            let raw_len = plain.len() as u32;
            if i == 1 {
                let z = zstd::encode_all(plain.as_slice(), 3).unwrap();
                let z = codec.seal(id, Kind::Data, z).unwrap();
                w.add(*id, Kind::Data, FLAG_ZSTD, raw_len, &z).unwrap();
            } else {
                let stored = codec.seal(id, Kind::Tree, plain.clone()).unwrap();
                w.add(*id, Kind::Tree, 0, raw_len, &stored).unwrap();
            }
        }
        assert_eq!(w.count(), 3);
        let (id, size, records) = w.finish().unwrap();
        assert_eq!(backend.size(FileKind::Pack, &id.to_hex()).unwrap(), size);
        assert_eq!(records.len(), 3);
        (id, objects)
    }

    #[test]
    fn a_pack_written_reads_back_record_by_record() {
        for codec in codecs() {
            let backend = MemoryBackend::new();
            let (id, objects) = write_pack(&backend, &codec);
            let data = backend.read(FileKind::Pack, &id.to_hex()).unwrap();
            assert_eq!(
                reader::pack_id_of(&data),
                id,
                "a pack is named by the hash of its bytes"
            );
            let (size, records) = read_pack_records(&backend, &id, &codec).unwrap();
            assert_eq!(size, data.len() as u64);
            assert_eq!(scan_pack_entries(&data, &codec).unwrap(), records);
            for (r, (oid, plain)) in records.iter().zip(&objects) {
                assert_eq!(r.id, *oid);
                assert_eq!(r.raw_len as usize, plain.len());
                let stored = &data[r.offset as usize..(r.offset + r.stored_len) as usize];
                let back = codec
                    .decode_object(&r.id, r.kind, r.flags, r.raw_len, stored)
                    .unwrap();
                assert_eq!(&back, plain);
            }
            assert_eq!(records[1].flags, FLAG_ZSTD);
            assert!(records[1].stored_len < 5000, "{:?}", records[1]);
            // The other kind of repository does not read it.
            let other = if codec.keys().is_some() {
                Codec::plain()
            } else {
                codecs()[1].clone()
            };
            let e = read_pack_records(&backend, &id, &other).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Corrupt, "{e:#}");
        }
    }

    /// In an encrypted repository a pack shows no object id, size or kind: entry headers and the
    /// trailer are sealed.
    #[test]
    fn a_sealed_pack_hides_ids_and_sizes() {
        let codec = codecs()[1].clone();
        let backend = MemoryBackend::new();
        let (id, objects) = write_pack(&backend, &codec);
        let data = backend.read(FileKind::Pack, &id.to_hex()).unwrap();
        assert_eq!(data[8], crate::format::pack::VERSION_SEALED);
        for (oid, _) in &objects {
            assert!(
                !data.windows(32).any(|w| w == oid.as_bytes()),
                "id {oid} in clear"
            );
        }
        assert!(
            !data
                .windows(4)
                .any(|w| w == crate::format::pack::ENTRY_MAGIC)
        );
        assert!(
            !data.windows(4).any(|w| w == 5000u32.to_le_bytes()),
            "a size in clear"
        );
        // A sealed header moved or damaged does not open.
        let mut damaged = data.clone();
        damaged[crate::format::pack::HEADER_LEN + 30] ^= 1;
        let recovered = scan_pack_entries(&damaged, &codec).unwrap();
        assert!(recovered.is_empty(), "{recovered:?}");
    }

    #[test]
    fn a_damaged_pack_is_an_error_that_names_it() {
        for codec in codecs() {
            let backend = MemoryBackend::new();
            let (id, _) = write_pack(&backend, &codec);
            let name = id.to_hex();
            let data = backend.read(FileKind::Pack, &name).unwrap();
            // Truncated, a damaged trailer, a damaged footer.
            let trailer_byte = data.len() - crate::format::pack::FOOTER_LEN - 3;
            let footer_byte = data.len() - 2;
            let damaged: Vec<(&str, Vec<u8>)> = vec![
                ("truncated", data[..10].to_vec()),
                ("trailer", flip(&data, trailer_byte)),
                ("footer", flip(&data, footer_byte)),
            ];
            for (what, bytes) in damaged {
                backend.put_raw(FileKind::Pack, &name, bytes).unwrap();
                let e = read_pack_records(&backend, &id, &codec).unwrap_err();
                assert_eq!(e.kind(), ErrorKind::Corrupt, "{what}: {e:#}");
                assert!(format!("{e:#}").contains(&name), "{what}: {e:#}");
            }
            backend.remove(FileKind::Pack, &name).unwrap();
            let e = read_pack_records(&backend, &id, &codec).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::NotFound, "{e:#}");
            assert!(format!("{e:#}").contains(&name), "{e:#}");
        }
    }

    fn flip(data: &[u8], at: usize) -> Vec<u8> {
        let mut d = data.to_vec();
        d[at] ^= 0x40;
        d
    }
}
