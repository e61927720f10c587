//! Blind-holding manifests (`docs/format.md`, section 10): what a node of another association
//! must keep of an encrypted repository's spaces without its key, signed by the owner's node
//! key. The holder stores it as `REPO/holds/<owner>/manifest`; it checks every file it holds
//! for that owner against it. Signing and checking the signature are the node's business (its
//! key); this module only defines the bytes and their limits.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use super::envelope;
use super::forget::{Signer, node_id_of_key};
use crate::error::{Error, Result};
use crate::hash::Hash;

/// Magic of a manifest.
pub const MAGIC: &[u8; 8] = b"PUCEMANI";
/// Current version.
pub const VERSION: u8 = 1;
/// Domain separation of the signed message.
pub const SIGN_CONTEXT: &[u8] = b"puce blind manifest v1\0";
/// Most files one manifest lists (its body is also bounded by the envelope: 16 MiB).
pub const MAX_FILES: usize = 1 << 18;
/// Largest file a manifest may list (a pack is at most 1 GiB plus its trailer).
pub const MAX_FILE_LEN: u64 = 4 << 30;

/// The kind of a held file: where it lives in the owner's repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileKind {
    /// `packs/XX/<id>`.
    Pack,
    /// `snapshots/<id>` (sealed).
    Snapshot,
    /// `spaces/<label>` (sealed).
    Space,
}

impl FileKind {
    /// The number a manifest and the protocol use.
    pub fn code(self) -> u8 {
        match self {
            FileKind::Pack => 0,
            FileKind::Snapshot => 1,
            FileKind::Space => 2,
        }
    }

    /// The kind of a number.
    pub fn from_code(c: u8) -> Option<FileKind> {
        Some(match c {
            0 => FileKind::Pack,
            1 => FileKind::Snapshot,
            2 => FileKind::Space,
            _ => return None,
        })
    }

    /// The repository's own file kind.
    pub fn repo_kind(self) -> crate::backend::FileKind {
        match self {
            FileKind::Pack => crate::backend::FileKind::Pack,
            FileKind::Snapshot => crate::backend::FileKind::Snapshot,
            FileKind::Space => crate::backend::FileKind::Space,
        }
    }

    /// A short name for directories and messages.
    pub fn dir(self) -> &'static str {
        self.repo_kind().dir()
    }
}

/// One file the holder keeps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldFile {
    /// [`FileKind::code`].
    pub kind: u8,
    /// Its name in the owner's repository (a pack id, a snapshot id, a space label).
    pub name: [u8; 32],
    /// BLAKE3 of its bytes as stored.
    pub hash: [u8; 32],
    /// Its length.
    pub len: u64,
}

impl HeldFile {
    /// The file's kind (checked at decoding).
    pub fn file_kind(&self) -> FileKind {
        FileKind::from_code(self.kind).unwrap_or(FileKind::Pack)
    }

    /// `packs/<hex>` and so on, for messages.
    pub fn describe(&self) -> String {
        format!("{}/{}", self.file_kind().dir(), Hash(self.name).to_hex())
    }
}

/// One space held, by its label (the keyed hash of its name: no name is revealed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldSpace {
    /// The label.
    pub label: [u8; 32],
    /// Its snapshots (the names of their sealed records).
    pub snapshots: Vec<[u8; 32]>,
}

/// A manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The owner's node id.
    pub owner: [u8; 32],
    /// The owner's repository id.
    pub repo_id: [u8; 16],
    /// The fingerprint of the repository's key.
    pub fingerprint: [u8; 32],
    /// Grows with each manifest the owner signs: a holder refuses a lower one (a rollback).
    pub seq: u64,
    /// When it was signed, ns since the epoch.
    pub time_ns: i64,
    /// The spaces held.
    pub spaces: Vec<HeldSpace>,
    /// Every file they need: packs, snapshot records, space settings.
    pub files: Vec<HeldFile>,
    /// The owner's signature ([`Manifest::signed_message`]); none only before signing.
    pub signer: Option<Signer>,
}

impl Manifest {
    /// The bytes the owner signs: [`SIGN_CONTEXT`], then the postcard encoding of every field
    /// but the signer.
    pub fn signed_message(&self) -> Result<Vec<u8>> {
        let fields = (
            &self.owner,
            &self.repo_id,
            &self.fingerprint,
            self.seq,
            self.time_ns,
            &self.spaces,
            &self.files,
        );
        let body = postcard::to_stdvec(&fields)
            .map_err(|e| Error::other("cannot encode a manifest").with_source(e))?;
        Ok([SIGN_CONTEXT, &body].concat())
    }

    /// Encode as the bytes of the file (and of a `Manifest` message).
    pub fn encode(&self) -> Result<Vec<u8>> {
        envelope::encode(MAGIC, VERSION, self)
    }

    /// Decode the file and check its shape: known kinds, each file once, lengths and counts
    /// within the limits, every snapshot listed as a file, the signer's key being the
    /// owner's. (The signature itself is checked by the node.)
    pub fn decode(bytes: &[u8]) -> Result<Manifest> {
        let (_, m): (u8, Manifest) = envelope::decode("manifest", MAGIC, VERSION, bytes)?;
        m.check()?;
        Ok(m)
    }

    fn check(&self) -> Result<()> {
        let bad = |why: String| Error::corrupt(format!("manifest {}: {why}", self.seq));
        if self.files.len() > MAX_FILES {
            return Err(bad(format!(
                "it lists {} files, more than the {MAX_FILES} allowed",
                self.files.len()
            )));
        }
        let mut seen = HashSet::new();
        for f in &self.files {
            if FileKind::from_code(f.kind).is_none() {
                return Err(bad(format!("unknown file kind {}", f.kind)));
            }
            if f.len > MAX_FILE_LEN {
                return Err(bad(format!(
                    "{} is {} bytes long, more than the {MAX_FILE_LEN} allowed",
                    f.describe(),
                    f.len
                )));
            }
            if !seen.insert((f.kind, f.name)) {
                return Err(bad(format!("{} is listed twice", f.describe())));
            }
        }
        for s in &self.spaces {
            for id in &s.snapshots {
                if !seen.contains(&(FileKind::Snapshot.code(), *id)) {
                    return Err(bad(format!(
                        "snapshot {} is not among its files",
                        Hash(*id).to_hex()
                    )));
                }
            }
        }
        match &self.signer {
            Some(s) if s.node == self.owner && node_id_of_key(&s.public_key) == self.owner => {
                Ok(())
            }
            Some(_) => Err(bad("it is not signed by its owner's key".into())),
            None => Err(bad("it is not signed".into())),
        }
    }

    /// The stored bytes of every file.
    pub fn stored_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::forget::Signature;
    use crate::format::hexdump;

    fn sample() -> Manifest {
        let pk = [0x33; 32];
        Manifest {
            owner: node_id_of_key(&pk),
            repo_id: [0x01; 16],
            fingerprint: [0x02; 32],
            seq: 5,
            time_ns: 3,
            spaces: vec![HeldSpace {
                label: [0x04; 32],
                snapshots: vec![[0x05; 32]],
            }],
            files: vec![
                HeldFile {
                    kind: 1,
                    name: [0x05; 32],
                    hash: [0x06; 32],
                    len: 200,
                },
                HeldFile {
                    kind: 0,
                    name: [0x07; 32],
                    hash: [0x07; 32],
                    len: 1,
                },
            ],
            signer: Some(Signer {
                node: node_id_of_key(&pk),
                public_key: pk,
                signature: Signature {
                    r: [0x44; 32],
                    s: [0x55; 32],
                },
            }),
        }
    }

    /// Golden: a manifest, annotated.
    #[test]
    fn golden_manifest() {
        let m = sample();
        let owner = hexdump(&m.owner);
        let bytes = m.encode().unwrap();
        let body = [
            owner.as_str(),   // owner node id
            &"01".repeat(16), // repository id
            &"02".repeat(32), // key fingerprint
            "05",             // seq 5
            "06",             // time_ns 3 (zigzag)
            "01",             // 1 space
            &"04".repeat(32), // its label
            "01",             // 1 snapshot
            &"05".repeat(32), // its id
            "02",             // 2 files
            "01",             // kind 1: snapshot record
            &"05".repeat(32), // name
            &"06".repeat(32), // BLAKE3
            "c801",           // length 200
            "00",             // kind 0: pack
            &"07".repeat(32), // name
            &"07".repeat(32), // BLAKE3 (a pack's name is its hash)
            "01",             // length 1
            "01",             // signer: Some
            owner.as_str(),   // its node id
            &"33".repeat(32), // its public key
            &"44".repeat(32), // signature R
            &"55".repeat(32), // signature S
        ]
        .concat();
        assert_eq!(&hexdump(&bytes)[..18], "505543454d414e4901"); // "PUCEMANI", version 1
        assert_eq!(
            &hexdump(&bytes)[18..26],
            hexdump(&((body.len() / 2) as u32).to_le_bytes())
        );
        assert_eq!(&hexdump(&bytes)[26..26 + body.len()], body);
        assert_eq!(Manifest::decode(&bytes).unwrap(), m);
        let msg = m.signed_message().unwrap();
        assert!(msg.starts_with(b"puce blind manifest v1\0"));
        assert_eq!(
            hexdump(&msg[SIGN_CONTEXT.len()..]),
            body[..body.len() - (1 + 32 * 4) * 2]
        );
        assert_eq!(m.stored_bytes(), 201);
    }

    /// Hostile manifests are refused at decoding, saying why.
    #[test]
    fn hostile_manifests_are_refused() {
        let refuse = |m: Manifest, want: &str| {
            let e = Manifest::decode(&m.encode().unwrap()).unwrap_err();
            assert!(e.to_string().contains(want), "{e}");
        };
        let mut m = sample();
        m.files[0].kind = 9;
        refuse(m, "unknown file kind 9");
        let mut m = sample();
        m.files[1].len = MAX_FILE_LEN + 1;
        refuse(m, "more than the");
        let mut m = sample();
        m.files.push(m.files[0].clone());
        refuse(m, "listed twice");
        let mut m = sample();
        m.spaces[0].snapshots.push([0x09; 32]);
        refuse(m, "not among its files");
        let mut m = sample();
        m.owner = [0; 32];
        refuse(m, "not signed by its owner's key");
        let mut m = sample();
        m.signer = None;
        refuse(m, "not signed");
        let mut m = sample();
        m.files = (0..=MAX_FILES as u32)
            .map(|i| {
                let mut name = [0u8; 32];
                name[..4].copy_from_slice(&i.to_le_bytes());
                HeldFile {
                    kind: 0,
                    name,
                    hash: name,
                    len: 1,
                }
            })
            .collect();
        // Too many files for the envelope's 16 MiB body, or for MAX_FILES.
        match m.encode() {
            Ok(b) => assert!(Manifest::decode(&b).is_err()),
            Err(e) => assert!(e.to_string().contains("limit"), "{e}"),
        }
        // A count claiming more entries than the bytes hold fails without allocating them.
        let mut b = sample().encode().unwrap();
        b.truncate(b.len() - 40);
        assert!(Manifest::decode(&b).is_err());
    }
}
