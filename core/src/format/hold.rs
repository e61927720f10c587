//! Hold records: `REPO/forgets/<snapshot id>.hold`, beside the forget record of a snapshot that
//! a peer forgot within the protection period this node gives that peer (`keep_min` in
//! node.toml). Until `until_ns` the snapshot is kept: its record and data stay, it can be
//! restored by id, and it counts as forgotten everywhere else (not listed, not offered, not a
//! head, never merged). Then the next forget or sync finishes the forget (docs/format.md,
//! section 6f).

use serde::{Deserialize, Serialize};

use super::envelope;
use crate::error::Result;
use crate::hash::SnapshotId;

/// Magic of a hold record.
pub const MAGIC: &[u8; 8] = b"PUCEHOLD";
/// Current version of the hold record.
pub const VERSION: u8 = 1;
/// File name suffix, after the snapshot id (beside `forgets/<snapshot id>`).
pub const SUFFIX: &str = ".hold";

/// A forget put off by a protection period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    /// The snapshot kept.
    pub snapshot: SnapshotId,
    /// Until when, nanoseconds since the epoch.
    pub until_ns: i64,
    /// The peer whose forget is put off (its name in node.toml when the hold was made).
    pub peer: String,
}

impl Hold {
    /// Encode as the bytes of the file.
    pub fn encode(&self) -> Result<Vec<u8>> {
        envelope::encode(MAGIC, VERSION, self)
    }

    /// Decode the file.
    pub fn decode(bytes: &[u8]) -> Result<Hold> {
        envelope::decode("hold record", MAGIC, VERSION, bytes).map(|(_, h)| h)
    }

    /// The file name: `<snapshot id hex>.hold`.
    pub fn file_name(&self) -> String {
        format!("{}{SUFFIX}", self.snapshot.to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::hexdump;
    use crate::hash::Hash;

    /// Golden: a hold record, annotated.
    #[test]
    fn golden_hold() {
        let h = Hold {
            snapshot: SnapshotId(Hash([0x11; 32])),
            until_ns: 3,
            peer: "lyon".into(),
        };
        let bytes = h.encode().unwrap();
        let body = [
            &"11".repeat(32), // snapshot id
            "06",             // until_ns 3 (zigzag)
            "046c796f6e",     // peer "lyon"
        ]
        .concat();
        assert_eq!(&hexdump(&bytes)[..18], "50554345484f4c4401"); // "PUCEHOLD", version 1
        assert_eq!(&hexdump(&bytes)[26..26 + body.len()], body);
        assert_eq!(Hold::decode(&bytes).unwrap(), h);
        assert_eq!(h.file_name(), format!("{}.hold", "11".repeat(32)));
    }
}
