//! Repository encryption: the master key, the keys derived from it, sealed blobs and key files.
//!
//! The design (docs/decisions.md, "Encryption"; the encodings in docs/format.md, section 9):
//!
//! - One random 32-byte **master key** per association. Every other key is derived from it with
//!   BLAKE3's key derivation mode under a context string of its own ([`contexts`]): the key of
//!   the object ids (a keyed BLAKE3 of the plaintext), the chunker's gear table (so cut points
//!   depend on the key, not on a 64-bit seed that chunk sizes give away), the sealing key, the
//!   key of the synthetic nonces, the key naming records by their (secret) names, and a
//!   non-secret fingerprint that nodes compare.
//! - A **sealed** blob is `nonce (24) || XChaCha20-Poly1305 ciphertext || tag (16)`. The nonce
//!   is synthetic: a keyed BLAKE3 of the scheme version, the blob's kind, its id and the exact
//!   bytes sealed, so sealing is deterministic (two nodes sealing the same bytes write the same
//!   blob, which lets merges converge and healed copies be byte-identical) and a nonce repeats
//!   only for the very same message. The associated data binds the scheme version, the kind and
//!   the id, so a blob cannot be passed off as another.
//! - A **key file** holds the master key, either as is (a file to keep secret, like an SSH key)
//!   or wrapped under a key derived from a passphrase with Argon2id, its parameters
//!   authenticated as associated data.

use std::fmt;
use std::sync::Arc;

use argon2::{Algorithm, Argon2, Params, Version};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::error::{Error, ErrorKind, Result};
use crate::format::envelope;
use crate::hash::Hash;
use crate::xchacha::XChaCha;

/// Length of every key.
pub const KEY_LEN: usize = 32;
/// Length of a sealed blob's nonce.
pub const NONCE_LEN: usize = 24;
/// Length of a sealed blob's authentication tag.
pub const TAG_LEN: usize = 16;
/// Bytes a sealed blob adds to what it seals.
pub const SEAL_OVERHEAD: usize = NONCE_LEN + TAG_LEN;
/// The version of the sealing scheme, bound into every nonce and every blob's associated data.
pub const SCHEME_VERSION: u8 = 1;

/// The derivation contexts: part of the format (a changed string is another key), pinned by
/// `tests::golden_derivations`.
pub mod contexts {
    /// Key of the object ids: keyed BLAKE3 of the plaintext.
    pub const OBJECT_ID: &str = "puce 2026-12-07 object id";
    /// The chunker's gear table: 2048 bytes of BLAKE3 output.
    pub const GEAR: &str = "puce 2026-12-07 chunker gear table";
    /// The XChaCha20-Poly1305 key of sealed blobs.
    pub const SEAL: &str = "puce 2026-12-07 seal key";
    /// Key of the synthetic nonces.
    pub const NONCE: &str = "puce 2026-12-07 seal nonce";
    /// Key naming records whose plain name is secret (a space's settings file).
    pub const NAME: &str = "puce 2026-12-07 record name";
    /// The key's public fingerprint.
    pub const FINGERPRINT: &str = "puce 2026-12-07 key fingerprint";
}

/// What a sealed blob holds; bound into its nonce and its associated data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// A chunk of file content (the stored bytes: zstd frame or raw).
    Data = 0,
    /// A tree (the stored bytes).
    Tree = 1,
    /// A snapshot record's body.
    Snapshot = 16,
    /// A space's settings.
    Space = 17,
    /// A forget record's body.
    Forget = 18,
    /// A lineage record's body.
    Lineage = 19,
    /// A hold record's body.
    Hold = 20,
    /// A receipt's body.
    Receipt = 21,
    /// A pack entry's header.
    PackEntry = 32,
    /// A pack's trailer.
    PackTrailer = 33,
}

/// The master key of an association. Wiped from memory when dropped; never printed.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct MasterKey([u8; KEY_LEN]);

impl MasterKey {
    /// A new random key.
    pub fn generate() -> Result<MasterKey> {
        let mut k = [0u8; KEY_LEN];
        getrandom::fill(&mut k).map_err(|e| Error::other(format!("no random source: {e}")))?;
        Ok(MasterKey(k))
    }

    /// The key with these bytes (a key file's content, a recovery sheet).
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> MasterKey {
        MasterKey(bytes)
    }

    /// The key's bytes (to write a key file or a recovery sheet: handle with care).
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// The key's public fingerprint.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint(blake3::derive_key(contexts::FINGERPRINT, &self.0))
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MasterKey({})", self.fingerprint())
    }
}

/// A key's fingerprint: not secret (it reveals nothing of the key), compared by nodes of one
/// association when they connect and shown by `puce key list`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Fingerprint(pub [u8; 32]);

impl fmt::Display for Fingerprint {
    /// The first 16 bytes in hex, in four groups: `1a2b3c4d-…`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, group) in self.0[..16].chunks(4).enumerate() {
            if i > 0 {
                f.write_str("-")?;
            }
            for b in group {
                write!(f, "{b:02x}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

/// The chunker's gear tables (the table and its left shift by one, as `fastcdc`'s `cut_gear`
/// takes them).
#[derive(Clone)]
pub struct Gear {
    /// The table.
    pub gear: [u64; 256],
    /// Each entry shifted left by one bit.
    pub gear_ls: [u64; 256],
}

impl fmt::Debug for Gear {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Gear(..)")
    }
}

/// The keys derived from a master key.
pub struct Keys {
    id: [u8; KEY_LEN],
    nonce: [u8; KEY_LEN],
    name: [u8; KEY_LEN],
    gear: Arc<Gear>,
    cipher: XChaCha,
    fingerprint: Fingerprint,
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Keys({})", self.fingerprint)
    }
}

impl Drop for Keys {
    fn drop(&mut self) {
        self.id.zeroize();
        self.nonce.zeroize();
        self.name.zeroize();
        if let Some(g) = Arc::get_mut(&mut self.gear) {
            g.gear.zeroize();
            g.gear_ls.zeroize();
        }
    }
}

impl Keys {
    /// Derive every key from `master`.
    pub fn derive(master: &MasterKey) -> Keys {
        let m = master.as_bytes();
        let mut seal = blake3::derive_key(contexts::SEAL, m);
        let cipher = XChaCha::new(&seal);
        seal.zeroize();
        Keys {
            id: blake3::derive_key(contexts::OBJECT_ID, m),
            nonce: blake3::derive_key(contexts::NONCE, m),
            name: blake3::derive_key(contexts::NAME, m),
            gear: Arc::new(derive_gear(m)),
            cipher,
            fingerprint: master.fingerprint(),
        }
    }

    /// The fingerprint of the master key these keys come from.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// The id of an object: the keyed BLAKE3 hash of its plaintext.
    pub fn object_id(&self, plaintext: &[u8]) -> Hash {
        Hash(*blake3::keyed_hash(&self.id, plaintext).as_bytes())
    }

    /// The name under which a record with a secret name (a space's settings) is stored.
    pub fn name_id(&self, name: &str) -> Hash {
        Hash(*blake3::keyed_hash(&self.name, name.as_bytes()).as_bytes())
    }

    /// The chunker's gear tables.
    pub fn gear(&self) -> &Gear {
        &self.gear
    }

    /// The chunker's gear tables, shared.
    pub fn gear_arc(&self) -> Arc<Gear> {
        self.gear.clone()
    }

    /// Seal `plain`, a blob of `kind` named `id` (an object's id; the record's own name for
    /// records). Deterministic: the same arguments give the same bytes.
    pub fn seal(&self, kind: Kind, id: &[u8; 32], plain: &[u8]) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(SEAL_OVERHEAD + plain.len());
        out.extend_from_slice(plain);
        self.seal_vec(kind, id, out)
    }

    /// [`Keys::seal`] of a buffer the caller gives up: sealed where it is (no second buffer
    /// while the pipelines hold many objects in flight; the nonce is moved in front).
    pub fn seal_vec(&self, kind: Kind, id: &[u8; 32], mut buf: Vec<u8>) -> Result<Vec<u8>> {
        let mut h = blake3::Hasher::new_keyed(&self.nonce);
        h.update(&[SCHEME_VERSION, kind as u8]);
        h.update(id);
        h.update(&(buf.len() as u64).to_le_bytes());
        h.update(&buf);
        let mut nonce = [0u8; NONCE_LEN];
        h.finalize_xof().fill(&mut nonce);
        let tag = self
            .cipher
            .seal_in_place(&nonce, &associated_data(kind, id), &mut buf)
            .ok_or_else(|| Error::invalid(format!("cannot seal a blob of {} bytes", buf.len())))?;
        buf.reserve_exact(SEAL_OVERHEAD);
        buf.extend_from_slice(&tag);
        buf.splice(0..0, nonce);
        Ok(buf)
    }

    /// Open a blob sealed by [`Keys::seal`] with the same `kind` and `id`. `what` names it in
    /// the error.
    pub fn open(&self, kind: Kind, id: &[u8; 32], sealed: &[u8], what: &str) -> Result<Vec<u8>> {
        let mut buf = sealed.to_vec();
        let n = self.open_in_place(kind, id, &mut buf, what)?.len();
        buf.truncate(NONCE_LEN + n);
        buf.drain(..NONCE_LEN);
        Ok(buf)
    }

    /// [`Keys::open`] in place: `sealed` is decrypted where it lies (its contents are
    /// unspecified after a failure) and the plaintext, a part of it, returned.
    pub fn open_in_place<'a>(
        &self,
        kind: Kind,
        id: &[u8; 32],
        sealed: &'a mut [u8],
        what: &str,
    ) -> Result<&'a mut [u8]> {
        if sealed.len() < SEAL_OVERHEAD {
            return Err(Error::corrupt(format!(
                "{what} is truncated: {} bytes, a sealed blob has at least {SEAL_OVERHEAD}",
                sealed.len()
            )));
        }
        let (nonce, body) = sealed.split_at_mut(NONCE_LEN);
        let nonce: &[u8; NONCE_LEN] = (&*nonce)
            .try_into()
            .map_err(|_| Error::other("internal: nonce length"))?;
        let fingerprint = self.fingerprint;
        self.cipher
            .open_in_place(nonce, &associated_data(kind, id), body)
            .ok_or_else(|| {
                Error::corrupt(format!(
                    "{what} fails authentication: it was damaged, or sealed under another key \
                     (key {fingerprint}) or as something else"
                ))
            })
    }
}

/// `"puce" || scheme version || kind || id`.
fn associated_data(kind: Kind, id: &[u8; 32]) -> [u8; 38] {
    let mut aad = [0u8; 38];
    aad[..4].copy_from_slice(b"puce");
    aad[4] = SCHEME_VERSION;
    aad[5] = kind as u8;
    aad[6..].copy_from_slice(id);
    aad
}

fn derive_gear(master: &[u8; KEY_LEN]) -> Gear {
    let mut h = blake3::Hasher::new_derive_key(contexts::GEAR);
    h.update(master);
    let mut bytes = [0u8; 256 * 8];
    h.finalize_xof().fill(&mut bytes);
    let mut gear = Gear {
        gear: [0; 256],
        gear_ls: [0; 256],
    };
    for (i, b) in bytes.chunks_exact(8).enumerate() {
        let mut v = [0u8; 8];
        v.copy_from_slice(b);
        gear.gear[i] = u64::from_le_bytes(v);
        gear.gear_ls[i] = gear.gear[i] << 1;
    }
    bytes.zeroize();
    gear
}

// ---------------------------------------------------------------------------------------------
// Key files.

/// Magic of a key file.
pub const KEY_FILE_MAGIC: &[u8; 8] = b"PUCEKEY\0";
/// Version of the key file record.
pub const KEY_FILE_VERSION: u8 = 1;

/// Argon2id parameters of a passphrase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    /// Memory, in KiB.
    pub m_kib: u32,
    /// Passes.
    pub t: u32,
    /// Lanes.
    pub p: u32,
}

impl KdfParams {
    /// RFC 9106's second recommended option (section 4): 64 MiB, 3 passes, 4 lanes. puce never
    /// writes less.
    pub const RFC9106_SECOND: KdfParams = KdfParams {
        m_kib: 64 * 1024,
        t: 3,
        p: 4,
    };

    /// The most a key file may ask for: a damaged or hostile file must not make puce allocate
    /// without bound.
    const MAX: KdfParams = KdfParams {
        m_kib: 4 * 1024 * 1024,
        t: 64,
        p: 64,
    };

    fn argon2(&self) -> Result<Argon2<'static>> {
        let (floor, max) = (Self::RFC9106_SECOND, Self::MAX);
        let ok = (floor.m_kib..=max.m_kib).contains(&self.m_kib)
            && (floor.t..=max.t).contains(&self.t)
            && (1..=max.p).contains(&self.p);
        if !ok {
            return Err(Error::invalid(format!(
                "Argon2id parameters m={} KiB, t={}, p={} are outside what puce accepts \
                 (m {}..={} KiB, t {}..={}, p 1..={})",
                self.m_kib, self.t, self.p, floor.m_kib, max.m_kib, floor.t, max.t, max.p
            )));
        }
        let params = Params::new(self.m_kib, self.t, self.p, Some(KEY_LEN))
            .map_err(|e| Error::invalid(format!("Argon2id parameters refused: {e}")))?;
        Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
    }
}

/// How a key file keeps the master key.
#[derive(Clone, Serialize, Deserialize)]
pub enum Protection {
    /// As is: the file itself is the secret (mode 0600, kept outside the repository).
    Plain {
        /// The master key.
        key: [u8; KEY_LEN],
    },
    /// Wrapped under `Argon2id(passphrase, salt, params)` with XChaCha20-Poly1305.
    Passphrase {
        /// Argon2id parameters.
        kdf: KdfParams,
        /// Random salt.
        salt: [u8; 16],
        /// Random nonce.
        nonce: [u8; NONCE_LEN],
        /// The sealed master key (32 bytes and the 16-byte tag).
        #[serde(with = "serde_bytes")]
        wrapped: Vec<u8>,
    },
}

impl fmt::Debug for Protection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Protection::Plain { .. } => f.write_str("Plain(..)"),
            Protection::Passphrase { kdf, .. } => write!(f, "Passphrase({kdf:?})"),
        }
    }
}

impl Drop for Protection {
    fn drop(&mut self) {
        if let Protection::Plain { key } = self {
            key.zeroize();
        }
    }
}

/// A key file (docs/format.md, section 9).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyFile {
    /// The repository (association) the key opens.
    pub repo_id: [u8; 16],
    /// When the file was made, in nanoseconds since 1970-01-01 UTC.
    pub created_ns: i64,
    /// The machine it was made on.
    pub host: String,
    /// A label given by the user (`puce key add --label`).
    pub label: String,
    /// The master key's fingerprint (not secret: shown without the passphrase).
    pub fingerprint: Fingerprint,
    /// The master key, as is or wrapped.
    pub protection: Protection,
}

impl KeyFile {
    /// A key file holding `master` as is.
    pub fn plain(repo_id: [u8; 16], master: &MasterKey, host: &str, label: &str) -> KeyFile {
        KeyFile {
            repo_id,
            created_ns: crate::index::now_ns(),
            host: host.to_string(),
            label: label.to_string(),
            fingerprint: master.fingerprint(),
            protection: Protection::Plain {
                key: *master.as_bytes(),
            },
        }
    }

    /// A key file holding `master` wrapped under `passphrase`.
    pub fn with_passphrase(
        repo_id: [u8; 16],
        master: &MasterKey,
        passphrase: &[u8],
        kdf: KdfParams,
        host: &str,
        label: &str,
    ) -> Result<KeyFile> {
        let mut salt = [0u8; 16];
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut salt).map_err(|e| Error::other(format!("no random source: {e}")))?;
        getrandom::fill(&mut nonce).map_err(|e| Error::other(format!("no random source: {e}")))?;
        let mut file = KeyFile {
            repo_id,
            created_ns: crate::index::now_ns(),
            host: host.to_string(),
            label: label.to_string(),
            fingerprint: master.fingerprint(),
            protection: Protection::Plain { key: [0; KEY_LEN] },
        };
        let cipher = wrapping_cipher(passphrase, &kdf, &salt)?;
        let aad = file.wrap_aad(&kdf, &salt);
        let wrapped = cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: master.as_bytes(),
                    aad: &aad,
                },
            )
            .map_err(|_| Error::other("cannot wrap the key"))?;
        file.protection = Protection::Passphrase {
            kdf,
            salt,
            nonce,
            wrapped,
        };
        Ok(file)
    }

    /// Whether opening needs a passphrase.
    pub fn needs_passphrase(&self) -> bool {
        matches!(self.protection, Protection::Passphrase { .. })
    }

    /// The master key. `passphrase` is needed for a wrapped key and ignored otherwise.
    pub fn open(&self, passphrase: Option<&[u8]>) -> Result<MasterKey> {
        let master = match &self.protection {
            Protection::Plain { key } => MasterKey::from_bytes(*key),
            Protection::Passphrase {
                kdf,
                salt,
                nonce,
                wrapped,
            } => {
                let Some(passphrase) = passphrase else {
                    return Err(Error::new(
                        ErrorKind::Key,
                        format!("key '{}' needs its passphrase", self.label),
                    ));
                };
                let cipher = wrapping_cipher(passphrase, kdf, salt)?;
                let aad = self.wrap_aad(kdf, salt);
                let mut plain = cipher
                    .decrypt(
                        XNonce::from_slice(nonce),
                        Payload {
                            msg: wrapped,
                            aad: &aad,
                        },
                    )
                    .map_err(|_| {
                        Error::new(
                            ErrorKind::Key,
                            format!(
                                "wrong passphrase for key '{}' (made on {}), or the key file \
                                 was altered",
                                self.label, self.host
                            ),
                        )
                    })?;
                let mut key = [0u8; KEY_LEN];
                if plain.len() == KEY_LEN {
                    key.copy_from_slice(&plain);
                }
                plain.zeroize();
                MasterKey::from_bytes(key)
            }
        };
        if master.fingerprint() != self.fingerprint {
            return Err(Error::corrupt(format!(
                "key file '{}' is damaged: its key does not match its fingerprint {}",
                self.label, self.fingerprint
            )));
        }
        Ok(master)
    }

    /// The associated data of the wrapped key: everything in the file but the key itself.
    fn wrap_aad(&self, kdf: &KdfParams, salt: &[u8; 16]) -> Vec<u8> {
        let mut aad = Vec::with_capacity(128);
        aad.extend_from_slice(KEY_FILE_MAGIC);
        aad.push(KEY_FILE_VERSION);
        aad.extend_from_slice(&self.repo_id);
        aad.extend_from_slice(&self.fingerprint.0);
        for v in [kdf.m_kib, kdf.t, kdf.p] {
            aad.extend_from_slice(&v.to_le_bytes());
        }
        aad.extend_from_slice(salt);
        aad
    }

    /// The file's bytes.
    pub fn encode(&self) -> Result<Vec<u8>> {
        envelope::encode(KEY_FILE_MAGIC, KEY_FILE_VERSION, self)
    }

    /// Read a key file.
    pub fn decode(bytes: &[u8]) -> Result<KeyFile> {
        let (_, file) = envelope::decode("key file", KEY_FILE_MAGIC, KEY_FILE_VERSION, bytes)?;
        Ok(file)
    }
}

fn wrapping_cipher(
    passphrase: &[u8],
    kdf: &KdfParams,
    salt: &[u8; 16],
) -> Result<XChaCha20Poly1305> {
    let mut kek = [0u8; KEY_LEN];
    kdf.argon2()?
        .hash_password_into(passphrase, salt, &mut kek)
        .map_err(|e| Error::invalid(format!("cannot derive a key from the passphrase: {e}")))?;
    let cipher = XChaCha20Poly1305::new((&kek).into());
    kek.zeroize();
    Ok(cipher)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    fn master() -> MasterKey {
        let mut k = [0u8; 32];
        for (i, b) in k.iter_mut().enumerate() {
            *b = i as u8;
        }
        MasterKey::from_bytes(k)
    }

    #[test]
    fn golden_derivations() {
        let keys = Keys::derive(&master());
        assert_eq!(
            keys.object_id(b"hello").to_hex(),
            "1a8140f76ead1d39d2ad37d48785d46eb32260d7c57fc22e694c3c15760f7cc1",
            "object ids changed: a format change"
        );
        assert_eq!(
            keys.fingerprint().to_string(),
            "47263c8e-8b3e5763-7ad0eba7-dceafaa8"
        );
        assert_eq!(
            keys.name_id("compta").to_hex(),
            "d4fb9f489daca82d0444b7eb7d4e5a2e9761e312beafbe9c08a794a2b15d706f"
        );
        assert_eq!(
            format!(
                "{:016x} {:016x}",
                keys.gear().gear[0],
                keys.gear().gear[255]
            ),
            "1c23c7ff7836b1ed b90c430546e5c1a0"
        );
        assert_eq!(keys.gear().gear_ls[7], keys.gear().gear[7] << 1);
    }

    #[test]
    fn golden_seal() {
        let keys = Keys::derive(&master());
        let id = [7u8; 32];
        let sealed = keys.seal(Kind::Tree, &id, b"a tree").expect("seal");
        assert_eq!(
            hex(&sealed),
            "ddc9504fbeb11c459ec91b7d372f507c15b05755f8a49a69fc90c4ea33d9c461e8ffa6ad778f438ba34b8b609c87"
        );
        assert_eq!(sealed.len(), b"a tree".len() + SEAL_OVERHEAD);
    }

    #[test]
    fn sealing_is_deterministic_and_bound_to_kind_and_id() {
        let keys = Keys::derive(&master());
        let id = [1u8; 32];
        let a = keys.seal(Kind::Data, &id, b"same bytes").expect("seal");
        assert_eq!(a, keys.seal(Kind::Data, &id, b"same bytes").expect("seal"));
        assert_ne!(a, keys.seal(Kind::Tree, &id, b"same bytes").expect("seal"));
        assert_ne!(
            a,
            keys.seal(Kind::Data, &[2; 32], b"same bytes")
                .expect("seal")
        );
        // Other bytes under the same id (another zstd version) get another nonce.
        let b = keys.seal(Kind::Data, &id, b"other bytes").expect("seal");
        assert_ne!(a[..NONCE_LEN], b[..NONCE_LEN]);
        assert_eq!(
            keys.open(Kind::Data, &id, &a, "chunk").expect("open"),
            b"same bytes"
        );
        for (kind, id) in [(Kind::Tree, [1u8; 32]), (Kind::Data, [2u8; 32])] {
            let e = keys
                .open(kind, &id, &a, "chunk")
                .expect_err("opened as another blob");
            assert_eq!(e.kind(), ErrorKind::Corrupt);
        }
        let other = Keys::derive(&MasterKey::from_bytes([9; 32]));
        let e = other
            .open(Kind::Data, &id, &a, "chunk")
            .expect_err("opened under another key");
        assert!(format!("{e}").contains("fails authentication"), "{e}");
        for cut in [0, 10, SEAL_OVERHEAD - 1] {
            assert!(keys.open(Kind::Data, &id, &a[..cut], "chunk").is_err());
        }
        let mut flipped = a.clone();
        flipped[NONCE_LEN + 2] ^= 1;
        assert!(keys.open(Kind::Data, &id, &flipped, "chunk").is_err());
    }

    #[test]
    fn keys_differ_per_master_key() {
        let a = Keys::derive(&master());
        let b = Keys::derive(&MasterKey::generate().expect("random"));
        assert_ne!(a.object_id(b"x"), b.object_id(b"x"));
        assert_ne!(a.gear().gear[..], b.gear().gear[..]);
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert_ne!(a.object_id(b"x"), Hash::of(b"x"), "ids are keyed");
    }

    #[test]
    fn golden_key_files() {
        let mut plain = KeyFile::plain([3; 16], &master(), "lyon", "default");
        plain.created_ns = 1_700_000_000_000_000_000;
        assert_eq!(
            hex(&plain.encode().expect("encode")),
            concat!(
                "505543454b4559000167000000030303030303030303030303030303038080d0e2c6bfce972f",
                "046c796f6e0764656661756c7447263c8e8b3e57637ad0eba7dceafaa817798c40f9022abdf5",
                "5be054fb89661600000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d",
                "1e1f84e50920b14537f5e6d2a55be762d264"
            )
        );
        let back = KeyFile::decode(&plain.encode().expect("encode")).expect("decode");
        assert_eq!(
            back.open(None).expect("open").as_bytes(),
            master().as_bytes()
        );
    }

    #[test]
    fn a_passphrase_opens_its_key_file_and_nothing_else_does() {
        let m = master();
        let file = KeyFile::with_passphrase(
            [3; 16],
            &m,
            b"correct horse",
            KdfParams::RFC9106_SECOND,
            "lyon",
            "alice",
        )
        .expect("wrap");
        let bytes = file.encode().expect("encode");
        let file = KeyFile::decode(&bytes).expect("decode");
        assert!(file.needs_passphrase());
        assert_eq!(
            file.open(Some(b"correct horse")).expect("open").as_bytes(),
            m.as_bytes()
        );
        let e = file.open(Some(b"wrong")).expect_err("wrong passphrase");
        assert_eq!(e.kind(), ErrorKind::Key);
        assert!(
            format!("{e}").contains("wrong passphrase for key 'alice'"),
            "{e}"
        );
        let e = file.open(None).expect_err("no passphrase");
        assert!(format!("{e}").contains("needs its passphrase"), "{e}");
        // Weaker parameters written into the file do not open it (they are authenticated),
        // and are refused before any work when below the floor.
        let mut weaker = file.clone();
        if let Protection::Passphrase { kdf, .. } = &mut weaker.protection {
            kdf.t = 4;
        }
        assert_eq!(
            weaker
                .open(Some(b"correct horse"))
                .expect_err("altered")
                .kind(),
            ErrorKind::Key
        );
        if let Protection::Passphrase { kdf, .. } = &mut weaker.protection {
            kdf.m_kib = 1024;
        }
        let e = weaker
            .open(Some(b"correct horse"))
            .expect_err("below floor");
        assert!(format!("{e}").contains("outside what puce accepts"), "{e}");
        if let Protection::Passphrase { kdf, .. } = &mut weaker.protection {
            kdf.m_kib = u32::MAX;
        }
        assert!(
            weaker.open(Some(b"correct horse")).is_err(),
            "no 4 TiB allocation"
        );
        // A damaged byte anywhere fails the envelope's checksum.
        for i in [0, 20, bytes.len() / 2, bytes.len() - 1] {
            let mut d = bytes.clone();
            d[i] ^= 0x40;
            assert!(KeyFile::decode(&d).is_err(), "damage at {i} not seen");
        }
    }

    #[test]
    fn secrets_are_not_printed() {
        let m = master();
        let file = KeyFile::plain([3; 16], &m, "lyon", "default");
        let shown = format!("{m:?} {file:?} {:?}", Keys::derive(&m));
        assert!(!shown.contains(&hex(m.as_bytes())), "{shown}");
        assert!(!shown.contains("0, 1, 2, 3"), "{shown}");
    }
}
