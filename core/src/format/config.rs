//! The repository config: `REPO/config`, fixed at init.

use serde::{Deserialize, Serialize};

use super::envelope;
use crate::chunking::ChunkerParams;
use crate::crypto::Fingerprint;
use crate::error::Result;

/// Magic of the config file.
pub const MAGIC: &[u8; 8] = b"PUCECFG\0";
/// Version of the config record of an unencrypted repository.
pub const VERSION: u8 = 1;
/// Version of the config record of an encrypted repository: version 1's body followed by
/// [`Encryption`].
pub const VERSION_ENCRYPTED: u8 = 2;

/// How a repository is encrypted (docs/format.md, section 9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Encryption {
    /// The sealing scheme ([`crate::crypto::SCHEME_VERSION`]).
    pub scheme: u8,
    /// The fingerprint of the master key: a key whose fingerprint differs is not this
    /// repository's.
    pub fingerprint: Fingerprint,
}

/// Compression settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compression {
    /// zstd level (1..=22); 0 stores every object raw.
    pub zstd_level: i32,
}

impl Default for Compression {
    fn default() -> Self {
        Compression { zstd_level: 3 }
    }
}

/// The repository configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// Random id of this repository.
    pub repo_id: [u8; 16],
    /// Creation time, nanoseconds since the Unix epoch (UTC).
    pub created_ns: i64,
    /// Chunking parameters: part of the format of every stored file.
    pub chunker: ChunkerParams,
    /// Compression of objects in packs.
    pub compression: Compression,
    /// A pack is sealed once it holds this many bytes.
    pub pack_target_size: u64,
    /// Encryption (none: a repository made before encryption, read as such).
    #[serde(skip)]
    pub encryption: Option<Encryption>,
}

impl Config {
    /// Encode as the bytes of `REPO/config`: version 1 without encryption, version 2 with.
    pub fn encode(&self) -> Result<Vec<u8>> {
        match &self.encryption {
            None => envelope::encode(MAGIC, VERSION, self),
            Some(e) => envelope::encode(MAGIC, VERSION_ENCRYPTED, &(self, e)),
        }
    }

    /// Decode `REPO/config`.
    pub fn decode(bytes: &[u8]) -> Result<Config> {
        const WHAT: &str = "repository config";
        let (version, body) = envelope::open(WHAT, MAGIC, VERSION_ENCRYPTED, bytes)?;
        if version == VERSION {
            return envelope::decode_exact(WHAT, body);
        }
        let (mut config, e): (Config, Encryption) = envelope::decode_exact(WHAT, body)?;
        if e.scheme != crate::crypto::SCHEME_VERSION {
            // Never read under another scheme: a newer one needs a newer puce, an older one
            // is moved to this scheme by `puce migrate`.
            let what = if e.scheme > crate::crypto::SCHEME_VERSION {
                "upgrade puce"
            } else {
                "the repository was made by an older puce: move it into a new repository with \
                 `puce migrate --from THIS_REPOSITORY NEW`, run by a puce that reads it \
                 (docs/guide.md, \"Migrating a repository\")"
            };
            return Err(crate::error::Error::new(
                crate::error::ErrorKind::UnsupportedVersion,
                format!(
                    "the repository is encrypted with scheme {}, this puce reads scheme {} \
                     only: {what}",
                    e.scheme,
                    crate::crypto::SCHEME_VERSION
                ),
            ));
        }
        config.encryption = Some(e);
        Ok(config)
    }

    /// The repository id in hex.
    pub fn repo_id_hex(&self) -> String {
        self.repo_id.iter().map(|b| format!("{b:02x}")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::hexdump;

    fn sample() -> Config {
        Config {
            repo_id: *b"0123456789abcdef",
            created_ns: 1_700_000_000_000_000_000,
            chunker: ChunkerParams {
                min_size: 65536,
                avg_size: 262144,
                max_size: 1048576,
            },
            compression: Compression { zstd_level: 3 },
            pack_target_size: 32 << 20,
            encryption: None,
        }
    }

    /// Golden: an encrypted repository's config is version 2, version 1's body followed by the
    /// scheme and the key's fingerprint.
    #[test]
    fn golden_encrypted_config_encoding() {
        let mut c = sample();
        c.encryption = Some(Encryption {
            scheme: 1,
            fingerprint: Fingerprint([0xab; 32]),
        });
        let bytes = c.encode().unwrap();
        let v1 = sample().encode().unwrap();
        assert_eq!(bytes[8], 2);
        assert_eq!(
            &bytes[13..13 + 39],
            &v1[13..13 + 39],
            "version 1's body first"
        );
        assert_eq!(
            hexdump(&bytes[13 + 39..13 + 39 + 33]),
            format!("01{}", "ab".repeat(32))
        );
        assert_eq!(Config::decode(&bytes).unwrap(), c);
        assert_eq!(
            hexdump(&bytes[bytes.len() - 16..]),
            "807e0634889e056d33e3d61b211f9ac5"
        );
    }

    /// Golden: the exact bytes of a config file: magic, version 1, body length 39, then the
    /// body (repo id as 16 raw bytes, created_ns as a zigzag varint, chunk sizes as varints,
    /// zstd level 3 as zigzag 6, pack target 32 MiB as a varint), then the checksum.
    #[test]
    fn golden_config_encoding() {
        let bytes = sample().encode().unwrap();
        assert_eq!(
            hexdump(&bytes),
            "5055434543464700 01 27000000 \
             30313233343536373839616263646566 8080d0e2c6bfce972f 808004 808010 808040 06 80808010 \
             153fe25b34f2ee4e91cddad3d57158a7"
                .split_whitespace()
                .collect::<String>()
        );
        assert_eq!(Config::decode(&bytes).unwrap(), sample());
    }

    /// A repository of another sealing scheme is never read under this one: an older scheme
    /// names `puce migrate`, a newer one says to upgrade.
    #[test]
    fn another_scheme_is_refused_naming_what_to_do() {
        for (scheme, want) in [(0, "puce migrate"), (2, "upgrade puce")] {
            let mut c = sample();
            c.encryption = Some(Encryption {
                scheme,
                fingerprint: Fingerprint([1; 32]),
            });
            let e = Config::decode(&c.encode().unwrap()).unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::UnsupportedVersion, "{e}");
            assert!(e.to_string().contains(want), "{e}");
        }
    }

    #[test]
    fn newer_version_is_not_corruption() {
        let mut bytes = sample().encode().unwrap();
        bytes[8] = 9;
        // Re-seal the checksum as a newer writer would.
        let n = bytes.len() - 16;
        let sum = blake3::hash(&bytes[..n]);
        bytes[n..].copy_from_slice(&sum.as_bytes()[..16]);
        let err = Config::decode(&bytes).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::UnsupportedVersion);
        let mut bytes = sample().encode().unwrap();
        bytes[20] ^= 1;
        assert_eq!(
            Config::decode(&bytes).unwrap_err().kind(),
            crate::ErrorKind::Corrupt
        );
    }
}
