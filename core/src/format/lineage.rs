//! Lineage records: `REPO/forgets/<snapshot id>.parents`, the parents a forgotten snapshot had,
//! kept beside its forget record. A child names its parent; once the parent is forgotten, the
//! child's ancestry would stop there, and the snapshot before the forgotten one would look like
//! a head of its space (no snapshot names it any more): a sync would merge that old state into
//! the current one. [`crate::history::heads`] follows lineage records through forgotten
//! snapshots (docs/format.md, section 6e).

use serde::{Deserialize, Serialize};

use super::envelope;
use crate::error::Result;
use crate::hash::SnapshotId;

/// Magic of a lineage record.
pub const MAGIC: &[u8; 8] = b"PUCELINE";
/// Current version of the lineage record.
pub const VERSION: u8 = 1;
/// File name suffix, after the snapshot id (beside `forgets/<snapshot id>`).
pub const SUFFIX: &str = ".parents";

/// The parents of a forgotten snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lineage {
    /// The forgotten snapshot.
    pub snapshot: SnapshotId,
    /// Its space.
    pub space: String,
    /// Its parents, as its record named them.
    pub parents: Vec<SnapshotId>,
}

impl Lineage {
    /// Encode as the bytes of the file.
    pub fn encode(&self) -> Result<Vec<u8>> {
        envelope::encode(MAGIC, VERSION, self)
    }

    /// Decode the file.
    pub fn decode(bytes: &[u8]) -> Result<Lineage> {
        envelope::decode("lineage record", MAGIC, VERSION, bytes).map(|(_, l)| l)
    }

    /// The file name: `<snapshot id hex>.parents`.
    pub fn file_name(&self) -> String {
        format!("{}{SUFFIX}", self.snapshot.to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::hexdump;
    use crate::hash::Hash;

    /// Golden: a lineage record, annotated.
    #[test]
    fn golden_lineage() {
        let l = Lineage {
            snapshot: SnapshotId(Hash([0x11; 32])),
            space: "docs".into(),
            parents: vec![SnapshotId(Hash([0x22; 32])), SnapshotId(Hash([0x33; 32]))],
        };
        let bytes = l.encode().unwrap();
        let body = [
            &"11".repeat(32), // snapshot id
            "04646f6373",     // space "docs"
            "02",             // two parents
            &"22".repeat(32),
            &"33".repeat(32),
        ]
        .concat();
        assert_eq!(&hexdump(&bytes)[..18], "505543454c494e4501"); // "PUCELINE", version 1
        assert_eq!(&hexdump(&bytes)[26..26 + body.len()], body);
        assert_eq!(Lineage::decode(&bytes).unwrap(), l);
        assert_eq!(l.file_name(), format!("{}.parents", "11".repeat(32)));
        let mut bad = bytes.clone();
        bad[20] ^= 1;
        assert!(Lineage::decode(&bad).is_err());
    }
}
