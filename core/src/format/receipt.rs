//! Receipts: `REPO/receipts/<snapshot id>.<sender node id>`, one per snapshot received from a
//! peer: who delivered it, and when it arrived.
//!
//! Receipts are part of the repository's source of truth (not only of the index): what a peer
//! delivered counts as known to that peer, so a later transfer with it need not send it again
//! (see [`crate::reach`]).

use serde::{Deserialize, Serialize};

use super::envelope;
use crate::error::{Error, Result};
use crate::hash::{Hash, SnapshotId};

/// Magic of a receipt file.
pub const MAGIC: &[u8; 8] = b"PUCERCPT";
/// Current version of the receipt record.
pub const VERSION: u8 = 1;

/// A snapshot delivered by a peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// The snapshot received.
    pub snapshot: SnapshotId,
    /// Its space.
    pub space: String,
    /// The node id of the peer that sent it (the BLAKE3 hash of its public key).
    pub sender: [u8; 32],
    /// The peer's name in this node's `node.toml` when it arrived (for people).
    pub sender_name: String,
    /// When the snapshot arrived (its record was written), nanoseconds since the epoch.
    pub arrived_ns: i64,
}

impl Receipt {
    /// Encode as the bytes of the file.
    pub fn encode(&self) -> Result<Vec<u8>> {
        envelope::encode(MAGIC, VERSION, self)
    }

    /// Decode the file.
    pub fn decode(bytes: &[u8]) -> Result<Receipt> {
        envelope::decode("receipt", MAGIC, VERSION, bytes).map(|(_, r)| r)
    }

    /// The file name: `<snapshot id hex>.<sender id hex>`.
    pub fn file_name(&self) -> String {
        Receipt::name_of(&self.snapshot, &self.sender)
    }

    /// The file name of the receipt of `snapshot` delivered by `sender`.
    pub fn name_of(snapshot: &SnapshotId, sender: &[u8; 32]) -> String {
        format!("{}.{}", snapshot.to_hex(), Hash(*sender).to_hex())
    }

    /// The snapshot a receipt file name is about, if the name has the right form.
    pub fn snapshot_of_name(name: &str) -> Result<SnapshotId> {
        let (snap, sender) = name
            .split_once('.')
            .ok_or_else(|| Error::corrupt(format!("receipt file name {name:?} has no '.'")))?;
        Hash::from_hex(sender)?;
        SnapshotId::from_hex(snap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::hexdump;

    /// Golden: a receipt file, annotated.
    #[test]
    fn golden_receipt() {
        let r = Receipt {
            snapshot: SnapshotId(Hash([0x11; 32])),
            space: "docs".into(),
            sender: [0x22; 32],
            sender_name: "lyon".into(),
            arrived_ns: 3,
        };
        let bytes = r.encode().unwrap();
        let body = [
            &"11".repeat(32), // snapshot id
            "04646f6373",     // space "docs"
            &"22".repeat(32), // sender node id
            "046c796f6e",     // sender_name "lyon"
            "06",             // arrived_ns 3 (zigzag)
        ]
        .concat();
        assert_eq!(&hexdump(&bytes)[..18], "505543455243505401"); // "PUCERCPT", version 1
        assert_eq!(&hexdump(&bytes)[26..26 + body.len()], body);
        assert_eq!(Receipt::decode(&bytes).unwrap(), r);
        assert_eq!(
            r.file_name(),
            format!("{}.{}", "11".repeat(32), "22".repeat(32))
        );
        assert_eq!(
            Receipt::snapshot_of_name(&r.file_name()).unwrap(),
            r.snapshot
        );
        assert!(Receipt::snapshot_of_name("nodot").is_err());
    }
}
