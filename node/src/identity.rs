//! A node's identity: an Ed25519 key pair, a self-signed certificate carrying its public key,
//! and the node id derived from that key.
//!
//! The node id is BLAKE3 of the key's DER `SubjectPublicKeyInfo`, written for people as 56
//! base32 characters (the 32 id bytes, then 20 check bits) in eight groups of seven:
//! `MFRGGZD-FMFRGGZ-...`. Parsing ignores case, dashes and spaces and reads `0`, `1` and `8`
//! as `O`, `I` and `B`, which base32 does not use, so an id read aloud or copied by hand comes
//! back right or is refused by its check characters.

use std::fmt;
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};

/// A node id: BLAKE3 of the node's public key (DER SubjectPublicKeyInfo).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub [u8; 32]);

/// Domain separation for the check characters.
const CHECK_CONTEXT: &str = "puce node id check 2024-01";

impl NodeId {
    /// The id of a public key given as DER `SubjectPublicKeyInfo`.
    pub fn from_spki(spki_der: &[u8]) -> NodeId {
        NodeId(*blake3::hash(spki_der).as_bytes())
    }

    /// The id of the key in a DER certificate.
    pub fn from_cert(cert: &CertificateDer<'_>) -> Result<NodeId> {
        let parsed = rustls::server::ParsedCertificate::try_from(cert).map_err(|e| {
            Error::new(
                ErrorKind::Identity,
                format!("cannot read the certificate presented: {e}"),
            )
        })?;
        Ok(NodeId::from_spki(parsed.subject_public_key_info().as_ref()))
    }

    fn check(&self) -> [u8; 3] {
        let mut h = blake3::Hasher::new_derive_key(CHECK_CONTEXT);
        h.update(&self.0);
        let d = h.finalize();
        let b = d.as_bytes();
        [b[0], b[1], b[2] & 0xf0]
    }

    /// The first group of the readable form, for logs and tables.
    pub fn short(&self) -> String {
        let s = self.to_string();
        s.split('-').next().unwrap_or_default().to_string()
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // 32 bytes = 256 bits = 51.2 base32 characters; with 20 check bits, 276 bits = 55.2
        // characters: 35 bytes are encoded and cut to 56 characters (280 bits, the last 4 zero).
        let mut bytes = [0u8; 35];
        bytes[..32].copy_from_slice(&self.0);
        bytes[32..].copy_from_slice(&self.check());
        let enc = data_encoding::BASE32_NOPAD.encode(&bytes);
        let enc = &enc[..56];
        for (i, c) in enc.as_bytes().chunks(7).enumerate() {
            if i > 0 {
                f.write_str("-")?;
            }
            f.write_str(std::str::from_utf8(c).map_err(|_| fmt::Error)?)?;
        }
        Ok(())
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({})", self.short())
    }
}

impl FromStr for NodeId {
    type Err = Error;

    fn from_str(s: &str) -> Result<NodeId> {
        let bad = |why: &str| {
            Error::new(
                ErrorKind::Config,
                format!("'{s}' is not a node id ({why}): copy it from `puce node id` on that node"),
            )
        };
        let mut clean = String::with_capacity(56);
        for c in s.chars() {
            match c {
                '-' | ' ' | '\t' => {}
                '0' => clean.push('O'),
                '1' => clean.push('I'),
                '8' => clean.push('B'),
                c if c.is_ascii_alphanumeric() => clean.push(c.to_ascii_uppercase()),
                _ => return Err(bad("unexpected character")),
            }
        }
        if clean.len() != 56 {
            return Err(bad(&format!("{} characters instead of 56", clean.len())));
        }
        // 56 characters are 280 bits = 35 bytes exactly.
        let bytes = data_encoding::BASE32_NOPAD
            .decode(clean.as_bytes())
            .map_err(|_| bad("not base32"))?;
        let mut id = [0u8; 32];
        id.copy_from_slice(&bytes[..32]);
        let id = NodeId(id);
        if bytes[32..] != id.check() {
            return Err(bad("its check characters do not match: a typo?"));
        }
        Ok(id)
    }
}

impl Serialize for NodeId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for NodeId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<NodeId, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The key pair and certificate of this node.
pub struct Identity {
    key_der: Vec<u8>,
    cert_der: Vec<u8>,
    id: NodeId,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identity({})", self.id)
    }
}

/// The name in certificates and TLS (not checked: keys are pinned).
pub const SERVER_NAME: &str = "puce-node";

/// File holding the private key (PKCS#8 PEM, mode 0600).
pub const KEY_FILE: &str = "key.pem";
/// File holding the self-signed certificate (PEM).
pub const CERT_FILE: &str = "cert.pem";

impl Identity {
    /// A new Ed25519 key pair and a self-signed certificate for it.
    pub fn generate() -> Result<Identity> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).map_err(|e| {
            Error::new(ErrorKind::Identity, "cannot generate a key pair").with_source(e)
        })?;
        let mut params = rcgen::CertificateParams::new(vec![SERVER_NAME.into()]).map_err(|e| {
            Error::new(ErrorKind::Identity, "certificate parameters").with_source(e)
        })?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "puce node");
        let cert = params.self_signed(&key).map_err(|e| {
            Error::new(ErrorKind::Identity, "cannot sign the certificate").with_source(e)
        })?;
        let id = NodeId::from_spki(&rcgen::PublicKeyData::subject_public_key_info(&key));
        Ok(Identity {
            key_der: key.serialize_der(),
            cert_der: cert.der().to_vec(),
            id,
        })
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Sign `message` with the node key: (Ed25519 public key, 64-byte signature).
    pub fn sign(&self, message: &[u8]) -> Result<([u8; 32], [u8; 64])> {
        let key = ring::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(&self.key_der)
            .map_err(|e| {
                Error::new(
                    ErrorKind::Identity,
                    format!("the node key is not an Ed25519 key ring can use: {e}"),
                )
            })?;
        let mut public = [0u8; 32];
        let pk = ring::signature::KeyPair::public_key(&key).as_ref();
        if pk.len() != 32 {
            return Err(Error::new(
                ErrorKind::Identity,
                "the node key is not an Ed25519 key",
            ));
        }
        public.copy_from_slice(pk);
        let mut sig = [0u8; 64];
        sig.copy_from_slice(key.sign(message).as_ref());
        Ok((public, sig))
    }

    /// The certificate chain to present (one self-signed certificate).
    pub fn cert_chain(&self) -> Vec<CertificateDer<'static>> {
        vec![CertificateDer::from(self.cert_der.clone())]
    }

    /// The private key.
    pub fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }

    /// Write the key (mode 0600) and certificate into `dir`, refusing to replace a key.
    pub fn save(&self, dir: &Path) -> Result<()> {
        puce_core::fsutil::create_dir_durable(dir)?;
        let key_path = dir.join(KEY_FILE);
        if key_path.exists() {
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "{} already exists: this node has a key already (its id is printed by \
                     `puce node id`); move the file away first to make a new identity",
                    key_path.display()
                ),
            ));
        }
        let key_pem = pem("PRIVATE KEY", &self.key_der);
        let cert_pem = pem("CERTIFICATE", &self.cert_der);
        write_private(&key_path, key_pem.as_bytes())?;
        puce_core::fsutil::write_atomic(&dir.join(CERT_FILE), dir, cert_pem.as_bytes())?;
        puce_core::fsutil::sync_dir(dir)?;
        Ok(())
    }

    /// Read the key and certificate from `dir`, checking that they belong together.
    pub fn load(dir: &Path) -> Result<Identity> {
        let key_path = dir.join(KEY_FILE);
        let key_pem = fs::read_to_string(&key_path).map_err(|e| {
            let hint = if e.kind() == std::io::ErrorKind::NotFound {
                ": this node has no identity yet, create it with `puce node init`"
            } else {
                ""
            };
            Error::new(
                ErrorKind::Identity,
                format!("cannot read the node key {}{hint}", key_path.display()),
            )
            .with_source(e)
        })?;
        let key = rcgen::KeyPair::from_pem(&key_pem).map_err(|e| {
            Error::new(
                ErrorKind::Identity,
                format!("{} is not a valid private key", key_path.display()),
            )
            .with_source(e)
        })?;
        let cert_path = dir.join(CERT_FILE);
        let cert_pem = fs::read_to_string(&cert_path).map_err(|e| {
            Error::new(
                ErrorKind::Identity,
                format!("cannot read the node certificate {}", cert_path.display()),
            )
            .with_source(e)
        })?;
        let cert_der = unpem("CERTIFICATE", &cert_pem).ok_or_else(|| {
            Error::new(
                ErrorKind::Identity,
                format!("{} is not a PEM certificate", cert_path.display()),
            )
        })?;
        let id = NodeId::from_spki(&rcgen::PublicKeyData::subject_public_key_info(&key));
        let cert_id = NodeId::from_cert(&CertificateDer::from(cert_der.clone()))?;
        if cert_id != id {
            return Err(Error::new(
                ErrorKind::Identity,
                format!(
                    "{} does not carry the public key of {}: restore the matching pair",
                    cert_path.display(),
                    key_path.display()
                ),
            ));
        }
        Ok(Identity {
            key_der: key.serialize_der(),
            cert_der,
            id,
        })
    }
}

fn write_private(path: &PathBuf, data: &[u8]) -> Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| puce_core::Error::io("cannot create", path, e))?;
    f.write_all(data)
        .and_then(|_| f.sync_all())
        .map_err(|e| puce_core::Error::io("cannot write", path, e))?;
    Ok(())
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = data_encoding::BASE64.encode(der);
    let mut s = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        s.push_str(&String::from_utf8_lossy(line));
        s.push('\n');
    }
    s.push_str(&format!("-----END {label}-----\n"));
    s
}

fn unpem(label: &str, text: &str) -> Option<Vec<u8>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text.find(&begin)? + begin.len();
    let stop = text[start..].find(&end)? + start;
    let b64: String = text[start..stop]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    data_encoding::BASE64.decode(b64.as_bytes()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_text_round_trip_and_typos() {
        let id = NodeId([7u8; 32]);
        let s = id.to_string();
        assert_eq!(s.len(), 56 + 7);
        assert_eq!(s.split('-').count(), 8);
        assert_eq!(s.parse::<NodeId>().unwrap(), id);
        // Lower case, no dashes, spaces: accepted.
        let loose = s.replace('-', " ").to_lowercase();
        assert_eq!(loose.parse::<NodeId>().unwrap(), id);
        // One character changed: refused by the check characters.
        let mut b = s.clone().into_bytes();
        b[3] = if b[3] == b'A' { b'B' } else { b'A' };
        let err = String::from_utf8(b).unwrap().parse::<NodeId>().unwrap_err();
        assert!(err.to_string().contains("check"), "{err}");
        assert!("ABC".parse::<NodeId>().is_err());
    }

    /// Golden: the readable form of a fixed id.
    #[test]
    fn golden_id_text() {
        let id = NodeId(*blake3::hash(b"puce").as_bytes());
        let s = id.to_string();
        assert_eq!(s.parse::<NodeId>().unwrap(), id);
        assert_eq!(s, GOLDEN_ID);
    }
    const GOLDEN_ID: &str = "SYWVQAU-GLUALCE-SDB4D37-Q24GRH2-VDYXZBL-3AFQJOT-G5WJOZW-3LIDGEA";

    #[test]
    fn generate_save_load() {
        let dir = tempfile::tempdir().unwrap();
        let id = Identity::generate().unwrap();
        id.save(dir.path()).unwrap();
        let back = Identity::load(dir.path()).unwrap();
        assert_eq!(back.id(), id.id());
        // The id from the certificate (what a peer sees) is the id from the key.
        assert_eq!(NodeId::from_cert(&id.cert_chain()[0]).unwrap(), id.id());
        // Saving again refuses to overwrite the key.
        assert!(id.save(dir.path()).is_err());
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(dir.path().join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
