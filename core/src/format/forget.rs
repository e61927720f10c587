//! Forget records ("tombstones"): `REPO/forgets/<snapshot id>`, one per snapshot this repository
//! forgot, so that a sync never fetches it again and can tell the peers that still hold it.
//!
//! A record written by a local forget carries no signature: this repository's own records are
//! signed by its node key when they are sent to a peer (`docs/protocol.md`, `GetForgets`). A
//! record received from a peer is stored as the peer signed it, so that who asked for the
//! forget stays on record. Signing and checking signatures is the node's business (its key);
//! this module only defines the bytes.

use serde::{Deserialize, Serialize};

use super::envelope;
use crate::error::{Error, Result};
use crate::hash::{Hash, SnapshotId};

/// Magic of a forget record.
pub const MAGIC: &[u8; 8] = b"PUCEFRGT";
/// Current version of the forget record.
pub const VERSION: u8 = 1;
/// Domain separation of the signed message: a signature over a forget record cannot be taken
/// for a signature over anything else.
pub const SIGN_CONTEXT: &[u8] = b"puce forget record v1\0";
/// The DER prefix of an Ed25519 `SubjectPublicKeyInfo` (RFC 8410): these 12 bytes, then the
/// 32-byte public key. A node id is BLAKE3 of those 44 bytes.
pub const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// A snapshot forgotten.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forget {
    /// The snapshot.
    pub snapshot: SnapshotId,
    /// Its space.
    pub space: String,
    /// When it was first forgotten (by whichever node forgot it first), nanoseconds since the
    /// epoch.
    pub time_ns: i64,
    /// Who vouches for the forget; `None` for a record written by a local forget.
    pub signer: Option<Signer>,
}

/// A node's signature over a forget record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signer {
    /// The signing node's id: BLAKE3 of the `SubjectPublicKeyInfo` DER of `public_key`.
    pub node: [u8; 32],
    /// Its Ed25519 public key.
    pub public_key: [u8; 32],
    /// The Ed25519 signature (R, then S) over [`Forget::signed_message`].
    pub signature: Signature,
}

/// An Ed25519 signature: its two 32-byte halves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    /// R.
    pub r: [u8; 32],
    /// S.
    pub s: [u8; 32],
}

impl Signature {
    /// From the 64 bytes of an Ed25519 signature.
    pub fn from_bytes(b: &[u8]) -> Result<Signature> {
        if b.len() != 64 {
            return Err(Error::invalid(format!(
                "an Ed25519 signature has 64 bytes, not {}",
                b.len()
            )));
        }
        let mut r = [0u8; 32];
        let mut s = [0u8; 32];
        r.copy_from_slice(&b[..32]);
        s.copy_from_slice(&b[32..]);
        Ok(Signature { r, s })
    }

    /// The 64 bytes.
    pub fn to_bytes(&self) -> [u8; 64] {
        let mut out = [0u8; 64];
        out[..32].copy_from_slice(&self.r);
        out[32..].copy_from_slice(&self.s);
        out
    }
}

/// The node id of an Ed25519 public key: BLAKE3 of its `SubjectPublicKeyInfo` DER.
pub fn node_id_of_key(public_key: &[u8; 32]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(&ED25519_SPKI_PREFIX);
    h.update(public_key);
    *h.finalize().as_bytes()
}

impl Forget {
    /// The bytes a signer signs: [`SIGN_CONTEXT`], then the postcard encoding of
    /// `(snapshot, space, time_ns, node)`.
    pub fn signed_message(&self, node: &[u8; 32]) -> Result<Vec<u8>> {
        let fields = (&self.snapshot, &self.space, self.time_ns, node);
        let body = postcard::to_stdvec(&fields)
            .map_err(|e| Error::other("cannot encode a forget record").with_source(e))?;
        Ok([SIGN_CONTEXT, &body].concat())
    }

    /// Encode as the bytes of the file (and of a `Forget` message).
    pub fn encode(&self) -> Result<Vec<u8>> {
        envelope::encode(MAGIC, VERSION, self)
    }

    /// Decode the file.
    pub fn decode(bytes: &[u8]) -> Result<Forget> {
        envelope::decode("forget record", MAGIC, VERSION, bytes).map(|(_, r)| r)
    }

    /// The file name: the snapshot id in hex.
    pub fn file_name(&self) -> String {
        self.snapshot.to_hex()
    }
}

/// The signer's node id, for messages.
pub fn signer_text(s: &Option<Signer>) -> String {
    match s {
        Some(s) => Hash(s.node).to_hex(),
        None => "this repository".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::hexdump;

    /// Golden: a signed forget record, annotated.
    #[test]
    fn golden_forget() {
        let f = Forget {
            snapshot: SnapshotId(Hash([0x11; 32])),
            space: "docs".into(),
            time_ns: 3,
            signer: Some(Signer {
                node: [0x22; 32],
                public_key: [0x33; 32],
                signature: Signature {
                    r: [0x44; 32],
                    s: [0x55; 32],
                },
            }),
        };
        let bytes = f.encode().unwrap();
        let body = [
            &"11".repeat(32), // snapshot id
            "04646f6373",     // space "docs"
            "06",             // time_ns 3 (zigzag)
            "01",             // signer: Some
            &"22".repeat(32), // node id
            &"33".repeat(32), // public key
            &"44".repeat(32), // signature R
            &"55".repeat(32), // signature S
        ]
        .concat();
        assert_eq!(&hexdump(&bytes)[..18], "505543454652475401"); // "PUCEFRGT", version 1
        assert_eq!(&hexdump(&bytes)[18..26], "a7000000"); // body length 167
        assert_eq!(&hexdump(&bytes)[26..26 + body.len()], body);
        assert_eq!(Forget::decode(&bytes).unwrap(), f);
        assert_eq!(f.file_name(), "11".repeat(32));
        // The signed message: context, then the fields with the node id.
        let msg = f.signed_message(&[0x22; 32]).unwrap();
        assert_eq!(
            hexdump(&msg),
            [
                &hexdump(b"puce forget record v1\0"),
                &"11".repeat(32),
                "04646f6373",
                "06",
                &"22".repeat(32),
            ]
            .concat()
        );
        // Unsigned: one byte for `None`.
        let local = Forget { signer: None, ..f };
        let b = local.encode().unwrap();
        assert_eq!(&hexdump(&b)[26 + 64 + 10 + 2..26 + 64 + 10 + 4], "00");
        assert_eq!(Forget::decode(&b).unwrap(), local);
    }

    /// Golden: the node id of a key is BLAKE3 of its SPKI DER (as the node's TLS identity).
    #[test]
    fn node_id_of_key_hashes_the_spki() {
        let pk = [9u8; 32];
        let spki = [&ED25519_SPKI_PREFIX[..], &pk].concat();
        assert_eq!(node_id_of_key(&pk), *blake3::hash(&spki).as_bytes());
    }
}
