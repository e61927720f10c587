//! The object codec: stored object bytes (as a pack holds them, and as `Object` messages carry
//! them) to plaintext, checked against the object's id. An object is stored raw or
//! zstd-compressed (`FLAG_ZSTD`, [`crate::format::pack`]), and in an encrypted repository
//! sealed after compression ([`crate::crypto`]). Its id is the BLAKE3 of the plaintext (keyed
//! in an encrypted repository), so every decoder verifies what it returns.

use std::borrow::Cow;
use std::sync::Arc;

use crate::crypto::{Gear, Keys, Kind as SealKind, NONCE_LEN};
use crate::error::{Error, Result};
use crate::format::pack::{FLAG_ZSTD, Kind, MAX_OBJECT};
use crate::hash::ObjectId;

/// How a repository names and stores its objects: plain (BLAKE3 ids, stored bytes as they
/// are) or encrypted (keyed ids, stored bytes sealed). Cheap to clone.
#[derive(Clone, Default)]
pub struct Codec {
    keys: Option<Arc<Keys>>,
}

impl std::fmt::Debug for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.keys {
            None => f.write_str("Codec(plain)"),
            Some(k) => write!(f, "Codec({k:?})"),
        }
    }
}

fn seal_kind(kind: Kind) -> SealKind {
    match kind {
        Kind::Data => SealKind::Data,
        Kind::Tree => SealKind::Tree,
    }
}

impl Codec {
    /// The codec of an unencrypted repository.
    pub fn plain() -> Codec {
        Codec { keys: None }
    }

    /// The codec of a repository encrypted with `keys`.
    pub fn sealed(keys: Arc<Keys>) -> Codec {
        Codec { keys: Some(keys) }
    }

    /// The keys, in an encrypted repository.
    pub fn keys(&self) -> Option<&Keys> {
        self.keys.as_deref()
    }

    /// The chunker's gear table, in an encrypted repository (`None`: fastcdc's own).
    pub fn gear(&self) -> Option<Arc<Gear>> {
        self.keys.as_ref().map(|k| k.gear_arc())
    }

    /// The id of an object with this plaintext.
    pub fn id_of(&self, plain: &[u8]) -> ObjectId {
        match &self.keys {
            None => ObjectId::of(plain),
            Some(k) => ObjectId(k.object_id(plain)),
        }
    }

    /// The bytes to store for an object whose (compressed or raw) bytes are `stored`: sealed in
    /// an encrypted repository, as they are otherwise.
    pub fn seal(&self, id: &ObjectId, kind: Kind, stored: Vec<u8>) -> Result<Vec<u8>> {
        match &self.keys {
            None => Ok(stored),
            Some(k) => k.seal_vec(seal_kind(kind), id.0.as_bytes(), stored),
        }
    }

    fn open<'a>(&self, id: &ObjectId, kind: Kind, stored: &'a [u8]) -> Result<Cow<'a, [u8]>> {
        match &self.keys {
            None => Ok(Cow::Borrowed(stored)),
            Some(k) => k
                .open(
                    seal_kind(kind),
                    id.0.as_bytes(),
                    stored,
                    &format!("object {id}"),
                )
                .map(Cow::Owned),
        }
    }

    /// Check that stored object bytes decode to plaintext whose id is `id`, without returning
    /// the plaintext. The same checks as [`Codec::decode_object`], for receivers that only
    /// verify.
    pub fn verify_object(
        &self,
        id: &ObjectId,
        kind: Kind,
        flags: u8,
        raw_len: u32,
        stored: &[u8],
    ) -> Result<()> {
        let stored = self.open(id, kind, stored)?;
        verify_object(self, id, flags, raw_len, &stored)
    }

    /// Decode stored object bytes and check their id.
    pub fn decode_object(
        &self,
        id: &ObjectId,
        kind: Kind,
        flags: u8,
        raw_len: u32,
        stored: &[u8],
    ) -> Result<Vec<u8>> {
        let stored = self.open(id, kind, stored)?;
        decode_object(self, id, flags, raw_len, &stored)
    }

    /// [`Codec::decode_object`] taking the stored bytes by value: an uncompressed object of an
    /// unencrypted repository is verified and returned without a copy.
    pub fn decode_object_vec(
        &self,
        id: &ObjectId,
        kind: Kind,
        flags: u8,
        raw_len: u32,
        stored: Vec<u8>,
    ) -> Result<Vec<u8>> {
        let Some(k) = &self.keys else {
            return decode_object_vec(self, id, flags, raw_len, stored);
        };
        let mut stored = stored;
        let n = k
            .open_in_place(
                seal_kind(kind),
                id.0.as_bytes(),
                &mut stored,
                &format!("object {id}"),
            )?
            .len();
        if flags & FLAG_ZSTD != 0 {
            return decode_object(self, id, flags, raw_len, &stored[NONCE_LEN..NONCE_LEN + n]);
        }
        stored.truncate(NONCE_LEN + n);
        stored.drain(..NONCE_LEN);
        decode_object_vec(self, id, flags, raw_len, stored)
    }

    /// [`Codec::decode_object`] on stored bytes the caller may overwrite: an encrypted object
    /// is opened in place, without a copy (`stored` is then left decrypted, or unspecified
    /// after a failure).
    pub fn decode_object_mut(
        &self,
        id: &ObjectId,
        kind: Kind,
        flags: u8,
        raw_len: u32,
        stored: &mut [u8],
    ) -> Result<Vec<u8>> {
        let opened: &[u8] = match &self.keys {
            None => stored,
            Some(k) => k.open_in_place(
                seal_kind(kind),
                id.0.as_bytes(),
                stored,
                &format!("object {id}"),
            )?,
        };
        decode_object(self, id, flags, raw_len, opened)
    }

    /// Check that `plain` is the plaintext of `id`.
    pub fn verify(&self, id: &ObjectId, plain: &[u8]) -> Result<()> {
        let got = self.id_of(plain);
        if got != *id {
            return Err(Error::corrupt(format!(
                "object {id} does not match its hash (got {}): damaged data",
                got.short(16)
            )));
        }
        Ok(())
    }
}

thread_local! {
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Check that opened stored bytes decode to plaintext whose id is `id`, without returning the
/// plaintext: raw objects are hashed in place, compressed ones decompressed into a reused
/// per-thread buffer.
fn verify_object(
    codec: &Codec,
    id: &ObjectId,
    flags: u8,
    raw_len: u32,
    stored: &[u8],
) -> Result<()> {
    if flags & FLAG_ZSTD == 0 {
        if stored.len() != raw_len as usize {
            return Err(Error::corrupt(format!(
                "object {id} has {} bytes, expected {raw_len}: damaged",
                stored.len()
            )));
        }
        return codec.verify(id, stored);
    }
    SCRATCH.with(|buf| {
        let mut buf = buf.borrow_mut();
        buf.clear();
        decompress_append(id, raw_len, stored, &mut buf)?;
        let r = codec.verify(id, &buf);
        // Do not keep a huge buffer for the life of the thread.
        if buf.capacity() > 32 << 20 {
            *buf = Vec::new();
        }
        r
    })
}

/// [`decode_object`] taking the opened stored bytes by value.
fn decode_object_vec(
    codec: &Codec,
    id: &ObjectId,
    flags: u8,
    raw_len: u32,
    stored: Vec<u8>,
) -> Result<Vec<u8>> {
    if flags & FLAG_ZSTD != 0 || raw_len > MAX_OBJECT {
        return decode_object(codec, id, flags, raw_len, &stored);
    }
    if stored.len() != raw_len as usize {
        return Err(Error::corrupt(format!(
            "object {id} has {} bytes, expected {raw_len}: damaged",
            stored.len()
        )));
    }
    codec.verify(id, &stored)?;
    Ok(stored)
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

/// Decode opened stored object bytes and check their id.
fn decode_object(
    codec: &Codec,
    id: &ObjectId,
    flags: u8,
    raw_len: u32,
    stored: &[u8],
) -> Result<Vec<u8>> {
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
    codec.verify(id, &plain)?;
    Ok(plain)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::MasterKey;
    use crate::error::ErrorKind;

    fn codecs() -> [Codec; 2] {
        let keys = Keys::derive(&MasterKey::from_bytes([5; 32]));
        [Codec::plain(), Codec::sealed(Arc::new(keys))]
    }

    #[test]
    fn verify_object_agrees_with_decode_object() {
        for codec in codecs() {
            let plain = b"some plaintext ".repeat(1000);
            let id = codec.id_of(&plain);
            let seal = |b: &[u8]| codec.seal(&id, Kind::Data, b.to_vec()).unwrap();
            let packed = zstd::bulk::compress(&plain, 3).unwrap();
            let n = plain.len() as u32;
            codec
                .verify_object(&id, Kind::Data, 0, n, &seal(&plain))
                .unwrap();
            codec
                .verify_object(&id, Kind::Data, FLAG_ZSTD, n, &seal(&packed))
                .unwrap();
            assert_eq!(
                codec
                    .decode_object_vec(&id, Kind::Data, FLAG_ZSTD, n, seal(&packed))
                    .unwrap(),
                plain
            );
            let flipped = |b: &[u8], at: usize| {
                let mut p = b.to_vec();
                p[at] ^= 0x55;
                p
            };
            let mut cases: Vec<(Kind, u8, u32, Vec<u8>)> = vec![
                (Kind::Data, 0, n, seal(&flipped(&plain, 7))),
                (Kind::Data, 0, n - 1, seal(&plain)),
                (
                    Kind::Data,
                    FLAG_ZSTD,
                    n,
                    seal(&flipped(&packed, packed.len() - 1)),
                ),
                (Kind::Data, FLAG_ZSTD, n + 1, seal(&packed)),
                (Kind::Data, FLAG_ZSTD, MAX_OBJECT + 1, seal(&packed)),
                (Kind::Data, FLAG_ZSTD, n, seal(b"not zstd at all")),
            ];
            if codec.keys().is_some() {
                // Sealed bytes damaged, or opened as another kind.
                cases.push((Kind::Data, FLAG_ZSTD, n, flipped(&seal(&packed), 30)));
                cases.push((Kind::Tree, FLAG_ZSTD, n, seal(&packed)));
            }
            for (kind, flags, raw, data) in cases {
                let a = codec
                    .verify_object(&id, kind, flags, raw, &data)
                    .unwrap_err();
                let b = codec
                    .decode_object(&id, kind, flags, raw, &data)
                    .unwrap_err();
                assert_eq!(a.kind(), ErrorKind::Corrupt, "{a}");
                assert_eq!(b.kind(), ErrorKind::Corrupt, "{b}");
            }
        }
    }

    #[test]
    fn sealed_ids_are_keyed_and_stored_bytes_hide_the_plaintext() {
        let [plain, sealed] = codecs();
        let data = b"a marker string that must not appear in a sealed object".repeat(4);
        assert_eq!(plain.id_of(&data), ObjectId::of(&data));
        assert_ne!(sealed.id_of(&data), ObjectId::of(&data));
        let id = sealed.id_of(&data);
        let stored = sealed.seal(&id, Kind::Data, data.clone()).unwrap();
        assert!(!stored.windows(12).any(|w| w == b"a marker str"));
        assert_eq!(stored.len(), data.len() + crate::crypto::SEAL_OVERHEAD);
    }
}
