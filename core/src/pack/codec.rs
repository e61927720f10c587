//! The object codec: stored object bytes (as a pack holds them, and as `Object` messages carry
//! them) to plaintext, checked against the object's id. An object is stored raw or
//! zstd-compressed (`FLAG_ZSTD`, [`crate::format::pack`]); its id is the BLAKE3 of the
//! plaintext, so every decoder verifies what it returns.

use crate::error::{Error, Result};
use crate::format::pack::{FLAG_ZSTD, MAX_OBJECT};
use crate::hash::{Hash, ObjectId};

thread_local! {
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Check that stored object bytes decode to plaintext hashing to `id`, without returning the
/// plaintext: raw objects are hashed in place, compressed ones decompressed into a reused
/// per-thread buffer. The same checks as [`decode_object`], for receivers that only verify.
pub fn verify_object(id: &ObjectId, flags: u8, raw_len: u32, stored: &[u8]) -> Result<()> {
    if flags & FLAG_ZSTD == 0 {
        if stored.len() != raw_len as usize {
            return Err(Error::corrupt(format!(
                "object {id} has {} bytes, expected {raw_len}: damaged",
                stored.len()
            )));
        }
        return verify(id, stored);
    }
    SCRATCH.with(|buf| {
        let mut buf = buf.borrow_mut();
        buf.clear();
        decompress_append(id, raw_len, stored, &mut buf)?;
        let r = verify(id, &buf);
        // Do not keep a huge buffer for the life of the thread.
        if buf.capacity() > 32 << 20 {
            *buf = Vec::new();
        }
        r
    })
}

/// [`decode_object`] taking the stored bytes by value: an uncompressed object is verified and
/// returned without a copy.
pub fn decode_object_vec(
    id: &ObjectId,
    flags: u8,
    raw_len: u32,
    stored: Vec<u8>,
) -> Result<Vec<u8>> {
    if flags & FLAG_ZSTD != 0 || raw_len > MAX_OBJECT {
        return decode_object(id, flags, raw_len, &stored);
    }
    if stored.len() != raw_len as usize {
        return Err(Error::corrupt(format!(
            "object {id} has {} bytes, expected {raw_len}: damaged",
            stored.len()
        )));
    }
    verify(id, &stored)?;
    Ok(stored)
}

/// Check that `plain` hashes to `id`.
pub fn verify(id: &ObjectId, plain: &[u8]) -> Result<()> {
    let got = Hash::of(plain);
    if got != id.0 {
        return Err(Error::corrupt(format!(
            "object {id} does not match its hash (got {}): damaged data",
            got.short(16)
        )));
    }
    Ok(())
}

/// Decompress the zstd-stored object `id` and append its `raw_len` bytes to `out` (not
/// verified; on error `out` is as it was).
pub(crate) fn decompress_append(
    id: &ObjectId,
    raw_len: u32,
    stored: &[u8],
    out: &mut Vec<u8>,
) -> Result<()> {
    if raw_len > MAX_OBJECT {
        return Err(Error::corrupt(format!(
            "object {id} declares an oversized length"
        )));
    }
    let start = out.len();
    out.reserve(raw_len as usize);
    let r = DECOMPRESSOR.with(|d| {
        let mut d = d.borrow_mut();
        if d.is_none() {
            *d =
                Some(zstd::bulk::Decompressor::new().map_err(|e| {
                    Error::other("cannot create a zstd decompressor").with_source(e)
                })?);
        }
        let Some(d) = d.as_mut() else {
            return Err(Error::other("no decompressor"));
        };
        let mut cur = std::io::Cursor::new(&mut *out);
        cur.set_position(start as u64);
        d.decompress_to_buffer(stored, &mut cur).map_err(|e| {
            Error::corrupt(format!("object {id} does not decompress: damaged")).with_source(e)
        })
    });
    match r {
        Ok(n) if n == raw_len as usize && out.len() == start + n => Ok(()),
        Ok(n) => {
            out.truncate(start);
            Err(Error::corrupt(format!(
                "object {id} decompresses to {n} bytes, expected {raw_len}: damaged"
            )))
        }
        Err(e) => {
            out.truncate(start);
            Err(e)
        }
    }
}

/// Decode stored object bytes and check they hash to `id`.
pub fn decode_object(id: &ObjectId, flags: u8, raw_len: u32, stored: &[u8]) -> Result<Vec<u8>> {
    if raw_len > MAX_OBJECT {
        return Err(Error::corrupt(format!(
            "object {id} declares an oversized length"
        )));
    }
    let plain = if flags & FLAG_ZSTD != 0 {
        let r = DECOMPRESSOR.with(|d| {
            let mut d = d.borrow_mut();
            if d.is_none() {
                *d = Some(zstd::bulk::Decompressor::new().map_err(|e| {
                    Error::other("cannot create a zstd decompressor").with_source(e)
                })?);
            }
            match d.as_mut() {
                Some(d) => d.decompress(stored, raw_len as usize).map_err(|e| {
                    Error::corrupt(format!("object {id} does not decompress: damaged"))
                        .with_source(e)
                }),
                None => Err(Error::other("no decompressor")),
            }
        })?;
        if r.len() != raw_len as usize {
            return Err(Error::corrupt(format!(
                "object {id} decompresses to {} bytes, expected {raw_len}: damaged",
                r.len()
            )));
        }
        r
    } else {
        if stored.len() != raw_len as usize {
            return Err(Error::corrupt(format!(
                "object {id} has {} bytes, expected {raw_len}: damaged",
                stored.len()
            )));
        }
        stored.to_vec()
    };
    verify(id, &plain)?;
    Ok(plain)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn verify_object_agrees_with_decode_object() {
        let plain = b"some plaintext ".repeat(1000);
        let id = ObjectId::of(&plain);
        let packed = zstd::bulk::compress(&plain, 3).unwrap();
        let n = plain.len() as u32;
        verify_object(&id, 0, n, &plain).unwrap();
        verify_object(&id, FLAG_ZSTD, n, &packed).unwrap();
        let cases: Vec<(u8, u32, Vec<u8>)> = vec![
            (0, n, {
                let mut p = plain.clone();
                p[7] ^= 1;
                p
            }),
            (0, n - 1, plain.clone()),
            (FLAG_ZSTD, n, {
                let mut p = packed.clone();
                let last = p.len() - 1;
                p[last] ^= 0x55;
                p
            }),
            (FLAG_ZSTD, n + 1, packed.clone()),
            (FLAG_ZSTD, MAX_OBJECT + 1, packed.clone()),
            (FLAG_ZSTD, n, b"not zstd at all".to_vec()),
        ];
        for (flags, raw, data) in cases {
            let a = verify_object(&id, flags, raw, &data).unwrap_err();
            let b = decode_object(&id, flags, raw, &data).unwrap_err();
            assert_eq!(a.kind(), ErrorKind::Corrupt, "{a}");
            assert_eq!(b.kind(), ErrorKind::Corrupt, "{b}");
        }
    }
}
