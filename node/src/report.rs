//! What a sync did, as serde data: printed by `puce sync` (table or `--json`), kept in the node
//! state for `puce node status`, logged by the daemon.

use serde::{Deserialize, Serialize};

/// One space moved in one direction.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct SpaceReport {
    /// The space.
    pub space: String,
    /// `pull` (the peer's snapshots came here) or `push` (ours went there).
    pub direction: String,
    /// `ok`, `up to date`, or why it was skipped or failed.
    pub result: String,
    /// New snapshot records stored on the receiving side (merges not counted).
    pub snapshots: u64,
    /// Objects stored on the receiving side.
    pub objects: u64,
    /// Their stored (compressed) bytes.
    pub bytes: u64,
    /// Their plaintext bytes.
    pub raw_bytes: u64,
    /// Logical size of the new snapshots (sum of their file sizes).
    pub logical_bytes: u64,
    /// Merge snapshots written on the receiving side.
    pub merges: u64,
    /// Conflict copies those merges made.
    pub conflicts: Vec<ConflictReport>,
}

/// A conflict copy made by a merge.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct ConflictReport {
    /// The contested path.
    pub path: String,
    /// Where the other version was kept.
    pub copy: String,
    /// Author of the renamed version.
    pub node: String,
}

/// What one `puce sync` (or one scheduled sync) did.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct SyncReport {
    /// The peer's name.
    pub peer: String,
    /// The peer's id.
    pub peer_id: String,
    /// Start, nanoseconds since the epoch.
    pub started_ns: i64,
    /// Wall time, milliseconds.
    pub duration_ms: u64,
    /// Per space and direction.
    pub spaces: Vec<SpaceReport>,
    /// Objects this node received and stored.
    pub received_objects: u64,
    /// Their stored bytes (the payload that crossed the network towards this node).
    pub received_bytes: u64,
    /// Objects that crossed towards this node in answers, stored or found already here (a
    /// resumed pull fetches none of what an interrupted one made durable).
    pub fetched_objects: u64,
    /// Their stored bytes.
    pub fetched_bytes: u64,
    /// Objects this node sent.
    pub sent_objects: u64,
    /// Their stored bytes.
    pub sent_bytes: u64,
    /// Bytes that did not cross because the receiver had them: the logical size of the new
    /// snapshots minus the plaintext size of the objects sent for them (compression comes on
    /// top of this).
    pub dedup_saved_bytes: u64,
    /// UDP payload bytes sent by this node (QUIC framing, TLS and retransmissions included).
    pub wire_sent_bytes: u64,
    /// UDP payload bytes received.
    pub wire_received_bytes: u64,
    /// Requests this node made.
    pub requests: u64,
    /// Round trips on this node's critical path: request waves that had to wait for the
    /// previous answer (handshake, lists, each tree level, the data phase).
    pub round_trips: u64,
    /// Smoothed round-trip time of the connection at the end, microseconds.
    pub rtt_us: u64,
    /// Largest UDP payload the path carried at the end (found by MTU discovery), bytes.
    pub path_mtu: u16,
    /// Files of a blind copy this node fetched: as a blind holder, of the peer's spaces; as
    /// their owner, back from the holder (docs/design.md, "Blind holders").
    pub blind_files: u64,
    /// Their bytes.
    pub blind_bytes: u64,
    /// Warnings (spaces skipped).
    pub warnings: Vec<String>,
}

impl SyncReport {
    /// Totals of the receiving sides, for a summary line.
    pub fn totals(&self) -> (u64, u64, u64, u64) {
        let mut t = (0, 0, 0, 0);
        for s in &self.spaces {
            t.0 += s.snapshots;
            t.1 += s.objects;
            t.2 += s.bytes;
            t.3 += s.merges;
        }
        t
    }
}
