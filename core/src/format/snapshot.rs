//! Snapshot records: `REPO/snapshots/<id>`, where the id is BLAKE3 of the file's bytes.

use serde::{Deserialize, Serialize};

use super::envelope;
use crate::error::{Error, Result};
use crate::hash::{Hash, ObjectId, SnapshotId};

/// Magic of a snapshot file.
pub const MAGIC: &[u8; 8] = b"PUCESNAP";
/// Current version of the snapshot record.
pub const VERSION: u8 = 1;

/// What a snapshot run did, recorded with the snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Regular files in the snapshot.
    pub files: u64,
    /// Directories in the snapshot (the root included).
    pub dirs: u64,
    /// Symbolic links in the snapshot.
    pub symlinks: u64,
    /// Logical size: the sum of file sizes.
    pub bytes: u64,
    /// Files with no previous version in the parent.
    pub files_new: u64,
    /// Files whose content was read because they changed since the parent.
    pub files_changed: u64,
    /// Files taken from the parent without reading them.
    pub files_unmodified: u64,
    /// Bytes read from disk.
    pub bytes_read: u64,
    /// Plaintext bytes of objects this run added to the repository.
    pub data_added: u64,
    /// The same, as stored (compressed) in packs.
    pub data_added_stored: u64,
    /// Entries skipped because of errors (unreadable, special files).
    pub errors: u64,
    /// Wall time of the run, milliseconds.
    pub duration_ms: u64,
}

/// A snapshot: one state of one space.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// When the snapshot was taken, nanoseconds since the Unix epoch (UTC).
    pub time_ns: i64,
    /// The space (shared folder) it belongs to.
    pub space: String,
    /// Host name of the machine that took it.
    pub host: String,
    /// User that took it.
    pub user: String,
    /// The source path that was read.
    pub source: String,
    /// Tags given by the user.
    pub tags: Vec<String>,
    /// Parent snapshots: none for the first, one normally, two for a merge.
    pub parents: Vec<SnapshotId>,
    /// Root tree.
    pub root: ObjectId,
    /// What the run did.
    pub summary: Summary,
    /// Node that created the snapshot (empty when taken locally by the CLI).
    pub origin: String,
}

/// A snapshot record with its id (the BLAKE3 of its encoded file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotEntry {
    /// The id.
    pub id: SnapshotId,
    /// The record.
    pub snapshot: Snapshot,
}

impl Snapshot {
    /// Encode as the bytes of a snapshot file.
    pub fn encode(&self) -> Result<Vec<u8>> {
        envelope::encode(MAGIC, VERSION, self)
    }

    /// Decode a snapshot file, checking that it hashes to `expect` when given.
    pub fn decode(bytes: &[u8], expect: Option<&SnapshotId>) -> Result<Snapshot> {
        if let Some(id) = expect {
            let got = Hash::of(bytes);
            if got != id.0 {
                return Err(Error::corrupt(format!(
                    "snapshot file {id} does not hash to its name (got {got}): damaged"
                )));
            }
        }
        let (_, s): (u8, Snapshot) = envelope::decode("snapshot", MAGIC, VERSION, bytes)?;
        // Content-addressed: exactly one encoding per record.
        if s.encode()? != bytes {
            return Err(Error::corrupt(
                "snapshot record is not in canonical encoding",
            ));
        }
        Ok(s)
    }

    /// The id of an encoded snapshot.
    pub fn id_of(bytes: &[u8]) -> SnapshotId {
        SnapshotId(Hash::of(bytes))
    }
}

/// Longest host, user, origin or tag of a snapshot record, in bytes.
pub const MAX_LABEL: usize = 255;
/// Most tags on one snapshot.
pub const MAX_TAGS: usize = 64;
/// Longest source path of a snapshot record, in bytes.
pub const MAX_SOURCE: usize = 4096;

/// Check a host, user, origin or tag: at most [`MAX_LABEL`] bytes, no control characters.
pub fn check_label(what: &str, s: &str) -> Result<()> {
    if s.len() > MAX_LABEL || s.chars().any(char::is_control) {
        return Err(Error::invalid(format!(
            "invalid {what} {:?}: use at most {MAX_LABEL} bytes without control characters",
            super::printable(&s.chars().take(64).collect::<String>())
        )));
    }
    Ok(())
}

impl Snapshot {
    /// Check the strings of a record (received from a peer, or about to be written): a valid
    /// space name; host, user, origin and at most [`MAX_TAGS`] tags that pass [`check_label`];
    /// a source of at most [`MAX_SOURCE`] bytes (a folder's path may hold any character).
    pub fn check_strings(&self) -> Result<()> {
        check_space_name(&self.space)?;
        check_label("host", &self.host)?;
        check_label("user", &self.user)?;
        check_label("origin", &self.origin)?;
        if self.tags.len() > MAX_TAGS {
            return Err(Error::invalid(format!(
                "{} tags: a snapshot has at most {MAX_TAGS}",
                self.tags.len()
            )));
        }
        for t in &self.tags {
            check_label("tag", t)?;
        }
        if self.source.len() > MAX_SOURCE {
            return Err(Error::invalid(format!(
                "source path of {} bytes: at most {MAX_SOURCE}",
                self.source.len()
            )));
        }
        Ok(())
    }
}

/// Check a space name: 1 to 200 bytes of UTF-8, no `/`, NUL or control characters, not `.` or
/// `..`, not starting with `-`, no `@` (it separates a space from a revision), no `*` (it
/// stands for every other space in `node.toml`).
pub fn check_space_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && name != "."
        && name != ".."
        && !name.starts_with('-')
        && !name
            .chars()
            .any(|c| c == '/' || c == '@' || c == '*' || c.is_control());
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "invalid space name {name:?}: use 1 to 200 characters without '/', '@', '*' or \
             control characters, not starting with '-'"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::hexdump;

    fn sample() -> Snapshot {
        Snapshot {
            time_ns: 1_709_258_400_000_000_000,
            space: "docs".into(),
            host: "h".into(),
            user: "u".into(),
            source: "/s".into(),
            tags: vec!["t".into()],
            parents: vec![],
            root: ObjectId::of(b""),
            summary: Summary {
                files: 1,
                ..Summary::default()
            },
            origin: String::new(),
        }
    }

    /// Golden: a snapshot file, annotated; and its id.
    #[test]
    fn golden_snapshot_encoding() {
        let bytes = sample().encode().unwrap();
        let body = [
            "8080d295aeddc0b82f", // time_ns (zigzag varint)
            "04646f6373",         // space "docs"
            "0168",               // host "h"
            "0175",               // user "u"
            "022f73",             // source "/s"
            "010174",             // tags ["t"]
            "00",                 // parents []
            "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262", // root
            "010000000000000000000000", // summary: files 1, the 11 other counters 0
            "00",                 // origin ""
        ]
        .concat();
        let hex = hexdump(&bytes);
        assert_eq!(&hex[..18], "50554345534e415001"); // "PUCESNAP", version 1
        assert_eq!(
            &hex[18..26],
            hexdump(&((body.len() / 2) as u32).to_le_bytes())
        ); // body length
        assert_eq!(&hex[26..26 + body.len()], body);
        assert_eq!(
            Snapshot::decode(&bytes, Some(&Snapshot::id_of(&bytes))).unwrap(),
            sample()
        );
        assert_eq!(
            Snapshot::id_of(&bytes).to_hex(),
            "d39e93bba9241c16ca5a6eb0588edc9b890e7487faa451af9a9d50e980ace80e"
        );
    }

    #[test]
    fn wrong_id_is_corrupt() {
        let bytes = sample().encode().unwrap();
        let other = SnapshotId(Hash::of(b"x"));
        assert!(Snapshot::decode(&bytes, Some(&other)).is_err());
    }

    #[test]
    fn hostile_strings_in_a_record_are_refused() {
        sample().check_strings().unwrap();
        let cases: [fn(&mut Snapshot); 6] = [
            |s| s.space = "*".into(),
            |s| s.host = "evil\u{1b}[2J".into(),
            |s| s.user = "x".repeat(MAX_LABEL + 1),
            |s| s.tags = vec!["a\nb".into()],
            |s| s.tags = vec!["t".into(); MAX_TAGS + 1],
            |s| s.origin = "o\r".into(),
        ];
        for (i, f) in cases.iter().enumerate() {
            let mut s = sample();
            f(&mut s);
            assert!(s.check_strings().is_err(), "case {i}");
        }
    }

    #[test]
    fn space_names() {
        for ok in ["docs", "Compta 2024", "équipe", "a.b_c-d"] {
            check_space_name(ok).unwrap();
        }
        for bad in ["", ".", "..", "a/b", "-x", "a@b", "a\nb", "*", "a*"] {
            assert!(check_space_name(bad).is_err(), "{bad}");
        }
    }
}
