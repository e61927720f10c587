//! Pack file layout (pure encoding; I/O lives in [`crate::pack`]).
//!
//! ```text
//! pack    = header entry* trailer footer
//! header  = "PUCEPACK" version:u8 nonce:[u8;7]                            16 bytes
//! entry   = "PENT" kind:u8 flags:u8 reserved:u16 raw_len:u32 stored_len:u32 id:[u8;32]
//!           data:[u8; stored_len]                                        48 + stored_len
//! trailer = record*   (one per entry, in file order)
//! record  = id:[u8;32] kind:u8 flags:u8 reserved:u16 offset:u32 stored_len:u32 raw_len:u32
//!                                                                          48 bytes
//! footer  = trailer_offset:u64 count:u32 checksum:[u8;16] version:u8 reserved:[u8;3]
//!           "PUCEPEND"                                                    40 bytes
//! ```
//! Integers are little-endian. `offset` is where the entry's data starts in the file. The footer
//! checksum is the first 16 bytes of BLAKE3 over the trailer records. The pack id is BLAKE3 of the
//! whole file, which is also its name; the random nonce in the header makes two packs with the
//! same objects (a writer and gc storing the same content) distinct files.

use crate::crypto::{Keys, Kind as SealKind};
use crate::error::{Error, ErrorKind, Result};
use crate::hash::ObjectId;

/// Magic at the start of a pack.
pub const MAGIC: &[u8; 8] = b"PUCEPACK";
/// Magic at the very end of a pack.
pub const END_MAGIC: &[u8; 8] = b"PUCEPEND";
/// Magic at the start of each entry header.
pub const ENTRY_MAGIC: &[u8; 4] = b"PENT";
/// Pack format version of an unencrypted repository.
pub const VERSION: u8 = 1;
/// Pack format version of an encrypted repository: entry headers and the trailer are sealed
/// (docs/format.md, section 9).
pub const VERSION_SEALED: u8 = 2;
/// Size of a sealed entry header (version 2).
pub const SEALED_ENTRY_HEADER_LEN: usize = ENTRY_HEADER_LEN + crate::crypto::SEAL_OVERHEAD;
/// Size of the pack header.
pub const HEADER_LEN: usize = 16;
/// Size of an entry header.
pub const ENTRY_HEADER_LEN: usize = 48;
/// Size of a trailer record.
pub const RECORD_LEN: usize = 48;
/// Size of the footer.
pub const FOOTER_LEN: usize = 40;
/// Largest object accepted in a pack (bounds allocation when decoding hostile input).
pub const MAX_OBJECT: u32 = 256 << 20;
/// Largest pack: offsets are 32-bit.
pub const MAX_PACK: u64 = u32::MAX as u64;

/// What an object is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A chunk of file content.
    Data = 0,
    /// A tree (directory listing).
    Tree = 1,
}

impl Kind {
    /// Parse the kind byte.
    pub fn from_u8(b: u8) -> Result<Kind> {
        match b {
            0 => Ok(Kind::Data),
            1 => Ok(Kind::Tree),
            _ => Err(Error::corrupt(format!("unknown object kind {b}"))),
        }
    }
}

/// Flag: the data is zstd-compressed.
pub const FLAG_ZSTD: u8 = 1;

/// One entry of a pack, as recorded in its trailer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    /// Id of the object (BLAKE3 of its plaintext).
    pub id: ObjectId,
    /// What the object is.
    pub kind: Kind,
    /// [`FLAG_ZSTD`] or 0.
    pub flags: u8,
    /// Offset of the data in the pack file.
    pub offset: u32,
    /// Length of the data as stored.
    pub stored_len: u32,
    /// Length of the plaintext.
    pub raw_len: u32,
}

/// The pack version written with these keys (none: an unencrypted repository).
pub fn version_for(keys: Option<&Keys>) -> u8 {
    if keys.is_some() {
        VERSION_SEALED
    } else {
        VERSION
    }
}

/// The size of an entry header in a pack of `version`.
pub fn entry_header_len(version: u8) -> usize {
    if version == VERSION_SEALED {
        SEALED_ENTRY_HEADER_LEN
    } else {
        ENTRY_HEADER_LEN
    }
}

/// The id a sealed entry header or trailer is bound to: its offset in the pack, so a sealed
/// header moved elsewhere does not open.
fn seal_id(offset: u64) -> [u8; 32] {
    let mut id = [0u8; 32];
    id[..8].copy_from_slice(&offset.to_le_bytes());
    id
}

/// Check that a pack of `version` can be read with `keys`: sealed packs need the key, and an
/// encrypted repository holds only sealed packs.
pub fn check_sealing(version: u8, keys: Option<&Keys>) -> Result<()> {
    match (version == VERSION_SEALED, keys.is_some()) {
        (true, false) => Err(Error::corrupt(
            "the pack is encrypted but the repository is not: it does not belong here",
        )),
        (false, true) => Err(Error::corrupt(
            "the pack is not encrypted but the repository is: it does not belong here",
        )),
        _ => Ok(()),
    }
}

/// The pack header, with a 7-byte random nonce.
pub fn header(nonce: [u8; 7], version: u8) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(MAGIC);
    h[8] = version;
    h[9..].copy_from_slice(&nonce);
    h
}

/// Check a pack header.
pub fn check_header(h: &[u8]) -> Result<()> {
    if h.len() < HEADER_LEN || &h[..8] != MAGIC {
        return Err(Error::corrupt("pack header has a wrong magic number"));
    }
    check_version(h[8])
}

fn check_version(v: u8) -> Result<()> {
    if v == 0 || v > VERSION_SEALED {
        return Err(Error::new(
            ErrorKind::UnsupportedVersion,
            format!(
                "pack format version {v}, this puce reads up to {VERSION_SEALED}: upgrade puce"
            ),
        ));
    }
    Ok(())
}

/// Encode the header of the entry `r` starting at `offset`, sealed when `keys` are given.
pub fn entry_header_at(r: &Record, offset: u64, keys: Option<&Keys>) -> Result<Vec<u8>> {
    let plain = entry_header(r);
    match keys {
        None => Ok(plain.to_vec()),
        Some(k) => k.seal(SealKind::PackEntry, &seal_id(offset), &plain),
    }
}

/// Decode the entry header at `offset` of a pack of `version` (sealed in version 2).
pub fn parse_entry_header_at(
    h: &[u8],
    offset: u64,
    version: u8,
    keys: Option<&Keys>,
) -> Result<Record> {
    check_sealing(version, keys)?;
    let Some(k) = keys else {
        return parse_entry_header(h, offset);
    };
    let n = SEALED_ENTRY_HEADER_LEN.min(h.len());
    let plain = k.open(
        SealKind::PackEntry,
        &seal_id(offset),
        &h[..n],
        &format!("entry header at offset {offset}"),
    )?;
    let mut r = parse_entry_header(&plain, offset)?;
    r.offset = u32::try_from(offset + SEALED_ENTRY_HEADER_LEN as u64)
        .map_err(|_| Error::corrupt("entry offset beyond 4 GiB"))?;
    Ok(r)
}

/// Encode an entry header.
pub fn entry_header(r: &Record) -> [u8; ENTRY_HEADER_LEN] {
    let mut h = [0u8; ENTRY_HEADER_LEN];
    h[..4].copy_from_slice(ENTRY_MAGIC);
    h[4] = r.kind as u8;
    h[5] = r.flags;
    h[8..12].copy_from_slice(&r.raw_len.to_le_bytes());
    h[12..16].copy_from_slice(&r.stored_len.to_le_bytes());
    h[16..48].copy_from_slice(r.id.as_bytes());
    h
}

/// Decode an entry header found at `offset` (its data starts right after it).
pub fn parse_entry_header(h: &[u8], offset: u64) -> Result<Record> {
    if h.len() < ENTRY_HEADER_LEN || &h[..4] != ENTRY_MAGIC {
        return Err(Error::corrupt(format!(
            "no entry header at offset {offset}"
        )));
    }
    let raw_len = u32_at(h, 8);
    let stored_len = u32_at(h, 12);
    if raw_len > MAX_OBJECT || stored_len > MAX_OBJECT {
        return Err(Error::corrupt(format!(
            "entry at offset {offset} declares an oversized object"
        )));
    }
    let data_offset = offset + ENTRY_HEADER_LEN as u64;
    Ok(Record {
        id: ObjectId(crate::hash::Hash(arr32(&h[16..48]))),
        kind: Kind::from_u8(h[4])?,
        flags: h[5],
        offset: u32::try_from(data_offset)
            .map_err(|_| Error::corrupt("entry offset beyond 4 GiB"))?,
        stored_len,
        raw_len,
    })
}

/// Encode the trailer and footer for `records`, the trailer starting at `trailer_offset`,
/// sealed when `keys` are given (version 2: the checksum is then over the sealed trailer).
pub fn trailer_for(
    records: &[Record],
    trailer_offset: u64,
    keys: Option<&Keys>,
) -> Result<Vec<u8>> {
    let Some(k) = keys else {
        return Ok(trailer(records, trailer_offset));
    };
    let plain = records_bytes(records);
    let mut out = k.seal(SealKind::PackTrailer, &seal_id(trailer_offset), &plain)?;
    let sum = blake3::hash(&out);
    out.extend_from_slice(&trailer_offset.to_le_bytes());
    out.extend_from_slice(&(records.len() as u32).to_le_bytes());
    out.extend_from_slice(&sum.as_bytes()[..16]);
    out.push(VERSION_SEALED);
    out.extend_from_slice(&[0, 0, 0]);
    out.extend_from_slice(END_MAGIC);
    Ok(out)
}

fn records_bytes(records: &[Record]) -> Vec<u8> {
    let mut out = Vec::with_capacity(records.len() * RECORD_LEN + FOOTER_LEN);
    for r in records {
        out.extend_from_slice(r.id.as_bytes());
        out.push(r.kind as u8);
        out.push(r.flags);
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&r.offset.to_le_bytes());
        out.extend_from_slice(&r.stored_len.to_le_bytes());
        out.extend_from_slice(&r.raw_len.to_le_bytes());
    }
    out
}

/// Encode the trailer and footer for `records` (version 1), the trailer starting at
/// `trailer_offset`.
pub fn trailer(records: &[Record], trailer_offset: u64) -> Vec<u8> {
    let mut out = records_bytes(records);
    let sum = blake3::hash(&out);
    out.extend_from_slice(&trailer_offset.to_le_bytes());
    out.extend_from_slice(&(records.len() as u32).to_le_bytes());
    out.extend_from_slice(&sum.as_bytes()[..16]);
    out.push(VERSION);
    out.extend_from_slice(&[0, 0, 0]);
    out.extend_from_slice(END_MAGIC);
    out
}

/// The decoded footer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Footer {
    /// Where the trailer starts.
    pub trailer_offset: u64,
    /// Number of entries.
    pub count: u32,
    /// Checksum of the trailer records.
    pub checksum: [u8; 16],
    /// The pack's format version.
    pub version: u8,
}

impl Footer {
    /// Length of the trailer as stored (sealed in version 2).
    pub fn trailer_len(&self) -> usize {
        let seal = if self.version == VERSION_SEALED {
            crate::crypto::SEAL_OVERHEAD
        } else {
            0
        };
        self.count as usize * RECORD_LEN + seal
    }
}

/// Decode the footer of a pack of `pack_len` bytes.
pub fn parse_footer(f: &[u8], pack_len: u64) -> Result<Footer> {
    if f.len() != FOOTER_LEN || &f[32..40] != END_MAGIC {
        return Err(Error::corrupt(
            "pack footer has a wrong magic number (pack truncated or damaged)",
        ));
    }
    check_version(f[28])?;
    let version = f[28];
    let trailer_offset = u64::from_le_bytes(arr8(&f[..8]));
    let count = u32_at(f, 8);
    let seal = if version == VERSION_SEALED {
        crate::crypto::SEAL_OVERHEAD as u64
    } else {
        0
    };
    let expect = trailer_offset
        .checked_add(u64::from(count) * RECORD_LEN as u64 + seal)
        .and_then(|x| x.checked_add(FOOTER_LEN as u64));
    if trailer_offset < HEADER_LEN as u64 || expect != Some(pack_len) {
        return Err(Error::corrupt(format!(
            "pack footer is inconsistent: {count} entries from offset {trailer_offset} \
             do not fit a pack of {pack_len} bytes"
        )));
    }
    let mut checksum = [0u8; 16];
    checksum.copy_from_slice(&f[12..28]);
    Ok(Footer {
        trailer_offset,
        count,
        checksum,
        version,
    })
}

/// Decode trailer records (as stored: sealed in version 2), checking them against the footer
/// and the pack length.
pub fn parse_trailer(bytes: &[u8], footer: &Footer, keys: Option<&Keys>) -> Result<Vec<Record>> {
    check_sealing(footer.version, keys)?;
    if bytes.len() != footer.trailer_len() {
        return Err(Error::corrupt("pack trailer has a wrong length"));
    }
    if blake3::hash(bytes).as_bytes()[..16] != footer.checksum {
        return Err(Error::corrupt("pack trailer fails its checksum"));
    }
    let opened;
    let bytes = match keys {
        None => bytes,
        Some(k) => {
            opened = k.open(
                SealKind::PackTrailer,
                &seal_id(footer.trailer_offset),
                bytes,
                "pack trailer",
            )?;
            &opened[..]
        }
    };
    let first_data = (HEADER_LEN + entry_header_len(footer.version)) as u64;
    let mut out = Vec::with_capacity(footer.count as usize);
    for rec in bytes.chunks_exact(RECORD_LEN) {
        let r = Record {
            id: ObjectId(crate::hash::Hash(arr32(&rec[..32]))),
            kind: Kind::from_u8(rec[32])?,
            flags: rec[33],
            offset: u32_at(rec, 36),
            stored_len: u32_at(rec, 40),
            raw_len: u32_at(rec, 44),
        };
        let end = u64::from(r.offset) + u64::from(r.stored_len);
        if u64::from(r.offset) < first_data
            || end > footer.trailer_offset
            || r.raw_len > MAX_OBJECT
            || r.stored_len > MAX_OBJECT
        {
            return Err(Error::corrupt(format!(
                "pack trailer record for {} points outside the pack",
                r.id
            )));
        }
        out.push(r);
    }
    Ok(out)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn arr8(b: &[u8]) -> [u8; 8] {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    a
}

fn arr32(b: &[u8]) -> [u8; 32] {
    let mut a = [0u8; 32];
    a.copy_from_slice(&b[..32]);
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::hexdump;

    fn rec() -> Record {
        Record {
            id: ObjectId::of(b"abc"),
            kind: Kind::Tree,
            flags: FLAG_ZSTD,
            offset: 64,
            stored_len: 7,
            raw_len: 3,
        }
    }

    /// Golden: an entry header, annotated.
    #[test]
    fn golden_entry_header() {
        let h = entry_header(&rec());
        assert_eq!(
            hexdump(&h),
            [
                "50454e54",                                                         // "PENT"
                "01",                                                               // kind: tree
                "01",                                                               // flags: zstd
                "0000",                                                             // reserved
                "03000000",                                                         // raw_len 3
                "07000000",                                                         // stored_len 7
                "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85", // id
            ]
            .concat()
        );
        assert_eq!(parse_entry_header(&h, 16).unwrap(), rec());
    }

    /// Golden: trailer and footer of a one-entry pack, annotated.
    #[test]
    fn golden_trailer_and_footer() {
        let t = trailer(&[rec()], 71);
        let sum = blake3::hash(&t[..48]);
        assert_eq!(
            hexdump(&t),
            [
                "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85", // id
                "01",                                                               // kind
                "01",                                                               // flags
                "0000",                                                             // reserved
                "40000000",                                                         // offset 64
                "07000000",                                                         // stored_len
                "03000000",                                                         // raw_len
                "4700000000000000", // trailer offset 71
                "01000000",         // count 1
                &hexdump(&sum.as_bytes()[..16]),
                "01",               // version
                "000000",           // reserved
                "5055434550454e44", // "PUCEPEND"
            ]
            .concat()
        );
        let footer = parse_footer(&t[48..], 71 + 48 + 40).unwrap();
        assert_eq!(footer.count, 1);
        assert_eq!(parse_trailer(&t[..48], &footer, None).unwrap(), vec![rec()]);
    }

    /// Golden: the header.
    #[test]
    fn golden_header() {
        assert_eq!(
            hexdump(&header(*b"nonce!!", VERSION)),
            [
                "505543455041434b", // "PUCEPACK"
                "01",               // version
                "6e6f6e63652121",   // nonce
            ]
            .concat()
        );
        check_header(&header([0; 7], VERSION)).unwrap();
    }

    #[test]
    fn footer_rejects_wrong_length_and_magic() {
        let t = trailer(&[rec()], 71);
        assert!(parse_footer(&t[48..], 71 + 48 + 41).is_err());
        let mut bad = t[48..].to_vec();
        bad[39] ^= 1;
        assert!(parse_footer(&bad, 71 + 48 + 40).is_err());
        let mut bad = t[48..].to_vec();
        bad[28] = 3;
        assert_eq!(
            parse_footer(&bad, 71 + 48 + 40).unwrap_err().kind(),
            ErrorKind::UnsupportedVersion
        );
    }

    #[test]
    fn trailer_rejects_flipped_bit() {
        let mut t = trailer(&[rec()], 71);
        let footer = parse_footer(&t[48..], 159).unwrap();
        t[40] ^= 0x80;
        assert_eq!(
            parse_trailer(&t[..48], &footer, None).unwrap_err().kind(),
            ErrorKind::Corrupt
        );
    }
}
