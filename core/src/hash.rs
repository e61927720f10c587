//! BLAKE3 hashes and the typed ids built on them.
//!
//! Every object is named by the BLAKE3 hash of its plaintext: a chunk of file data, a tree (the
//! encoding of a directory) and a snapshot record. Packs are named by the BLAKE3 hash of the whole
//! pack file. The typed wrappers keep a tree id from being used where a snapshot id is expected.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// A 32-byte BLAKE3 hash.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
pub struct Hash(pub [u8; 32]);

impl Hash {
    /// The hash of `data`.
    pub fn of(data: &[u8]) -> Hash {
        Hash(*blake3::hash(data).as_bytes())
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lowercase hexadecimal, 64 characters.
    pub fn to_hex(&self) -> String {
        let mut s = String::with_capacity(64);
        for b in self.0 {
            s.push(char::from(HEX[usize::from(b >> 4)]));
            s.push(char::from(HEX[usize::from(b & 0xf)]));
        }
        s
    }

    /// The first `n` hex characters (for display).
    pub fn short(&self, n: usize) -> String {
        let mut s = self.to_hex();
        s.truncate(n);
        s
    }

    /// Parse 64 hex characters.
    pub fn from_hex(s: &str) -> Result<Hash> {
        let b = s.as_bytes();
        if b.len() != 64 {
            return Err(Error::invalid(format!(
                "'{s}' is not a hash: expected 64 hex characters"
            )));
        }
        let mut out = [0u8; 32];
        for (i, pair) in b.chunks_exact(2).enumerate() {
            let hi = hex_val(pair[0]);
            let lo = hex_val(pair[1]);
            match (hi, lo) {
                (Some(h), Some(l)) => out[i] = (h << 4) | l,
                _ => {
                    return Err(Error::invalid(format!(
                        "'{s}' is not a hash: non-hex character"
                    )));
                }
            }
        }
        Ok(Hash(out))
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Whether `s` is a non-empty string of hex characters (a possible id prefix).
pub fn is_hex_prefix(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|c| hex_val(c).is_some())
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.short(16))
    }
}

impl FromStr for Hash {
    type Err = Error;
    fn from_str(s: &str) -> Result<Hash> {
        Hash::from_hex(s)
    }
}

macro_rules! typed_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
        #[serde(transparent)]
        pub struct $name(pub Hash);

        impl $name {
            /// The raw bytes.
            pub fn as_bytes(&self) -> &[u8; 32] {
                &self.0 .0
            }
            /// Lowercase hexadecimal.
            pub fn to_hex(&self) -> String {
                self.0.to_hex()
            }
            /// The first `n` hex characters.
            pub fn short(&self, n: usize) -> String {
                self.0.short(n)
            }
            /// Parse 64 hex characters.
            pub fn from_hex(s: &str) -> Result<Self> {
                Hash::from_hex(s).map(Self)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({:?})"), self.0)
            }
        }

        impl From<Hash> for $name {
            fn from(h: Hash) -> Self {
                Self(h)
            }
        }

        impl From<$name> for Hash {
            fn from(id: $name) -> Hash {
                id.0
            }
        }
    };
}

typed_id!(
    /// The id of any object stored in a pack: BLAKE3 of its plaintext. Chunks and trees share
    /// this type on purpose: they live in one namespace (one index, one `GetObjects` request,
    /// one pack format), and an id names whichever of the two hashes to it; the three id types
    /// keep apart what must not mix (an object, a snapshot record, a pack file).
    ObjectId
);
typed_id!(
    /// The id of a snapshot: BLAKE3 of its encoded record file.
    SnapshotId
);
typed_id!(
    /// The id of a pack: BLAKE3 of the whole pack file.
    PackId
);

impl ObjectId {
    /// The id of `data`.
    pub fn of(data: &[u8]) -> ObjectId {
        ObjectId(Hash::of(data))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let h = Hash::of(b"puce");
        assert_eq!(Hash::from_hex(&h.to_hex()).unwrap(), h);
        assert!(Hash::from_hex("zz").is_err());
        assert!(Hash::from_hex(&"g".repeat(64)).is_err());
    }

    /// Golden: BLAKE3 of known inputs (from the BLAKE3 reference test vectors).
    #[test]
    fn golden_blake3() {
        assert_eq!(
            Hash::of(b"").to_hex(),
            "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
        );
        assert_eq!(
            Hash::of(b"abc").to_hex(),
            "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85"
        );
    }
}
