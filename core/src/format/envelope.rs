//! The envelope shared by the small record files (config, snapshot, space).
//!
//! ```text
//! offset  size  field
//! 0       8     magic (e.g. "PUCECFG\0")
//! 8       1     format version of the record
//! 9       4     body length N, u32 little-endian
//! 13      N     body: the record, postcard-encoded
//! 13+N    16    checksum: the first 16 bytes of BLAKE3(bytes 0 .. 13+N)
//! ```
//!
//! A reader checks, in order: length, magic, checksum, then version. A bad magic or checksum is
//! corruption; a good checksum with a higher version means "written by a newer puce".

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, ErrorKind, Result};

/// Size of the header before the body.
pub const HEADER_LEN: usize = 13;
/// Size of the trailing checksum.
pub const CHECKSUM_LEN: usize = 16;
/// Largest body accepted (bounds allocation when decoding hostile input).
pub const MAX_BODY: usize = 16 << 20;

/// Encode `value` in an envelope.
pub fn encode<T: Serialize>(magic: &[u8; 8], version: u8, value: &T) -> Result<Vec<u8>> {
    let body = postcard::to_stdvec(value)
        .map_err(|e| Error::other("cannot encode record").with_source(e))?;
    if body.len() > MAX_BODY {
        return Err(Error::invalid(format!(
            "record of {} bytes is larger than the {} byte limit",
            body.len(),
            MAX_BODY
        )));
    }
    let mut out = Vec::with_capacity(HEADER_LEN + body.len() + CHECKSUM_LEN);
    out.extend_from_slice(magic);
    out.push(version);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    let sum = blake3::hash(&out);
    out.extend_from_slice(&sum.as_bytes()[..CHECKSUM_LEN]);
    Ok(out)
}

/// Decode an envelope written with `magic`, accepting versions up to `max_version`. Returns the
/// version found and the record.
pub fn decode<T: DeserializeOwned>(
    what: &str,
    magic: &[u8; 8],
    max_version: u8,
    bytes: &[u8],
) -> Result<(u8, T)> {
    let (version, body) = open(what, magic, max_version, bytes)?;
    Ok((version, decode_exact(what, body)?))
}

/// Check an envelope written with `magic` (versions up to `max_version`) and return the version
/// found and the body, for records whose body layout depends on the version.
pub fn open<'a>(
    what: &str,
    magic: &[u8; 8],
    max_version: u8,
    bytes: &'a [u8],
) -> Result<(u8, &'a [u8])> {
    if bytes.len() < HEADER_LEN + CHECKSUM_LEN {
        return Err(Error::corrupt(format!(
            "{what} is truncated ({} bytes)",
            bytes.len()
        )));
    }
    if &bytes[..8] != magic {
        return Err(Error::corrupt(format!(
            "{what} has a wrong magic number (not a puce {what}, or damaged)"
        )));
    }
    let version = bytes[8];
    let len = u32::from_le_bytes([bytes[9], bytes[10], bytes[11], bytes[12]]) as usize;
    if len > MAX_BODY || HEADER_LEN + len + CHECKSUM_LEN != bytes.len() {
        return Err(Error::corrupt(format!(
            "{what} has a wrong length (declares {len} bytes of body, file has {})",
            bytes.len()
        )));
    }
    let sum = blake3::hash(&bytes[..HEADER_LEN + len]);
    if sum.as_bytes()[..CHECKSUM_LEN] != bytes[HEADER_LEN + len..] {
        return Err(Error::corrupt(format!("{what} fails its checksum")));
    }
    if version == 0 || version > max_version {
        return Err(Error::new(
            ErrorKind::UnsupportedVersion,
            format!(
                "{what} has format version {version}, this puce reads up to {max_version}: \
                 upgrade puce"
            ),
        ));
    }
    Ok((version, &bytes[HEADER_LEN..HEADER_LEN + len]))
}

/// Decode a postcard value that must use all of `bytes`.
pub fn decode_exact<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T> {
    let (value, rest) = postcard::take_from_bytes::<T>(bytes)
        .map_err(|e| Error::corrupt(format!("{what} cannot be decoded")).with_source(e))?;
    if !rest.is_empty() {
        return Err(Error::corrupt(format!(
            "{what} has {} trailing bytes",
            rest.len()
        )));
    }
    Ok(value)
}
