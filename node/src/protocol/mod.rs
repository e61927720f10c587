//! The sync protocol `puce/sync/1`: messages and their framing. `docs/protocol.md` is the
//! normative description; the golden tests below pin every encoding.
//!
//! ```text
//! frame = length:u32le type:u8 body:[u8; length]
//! body  = postcard encoding of the message type's fields, in the order declared below
//! ```
//! Each type has its own bound on `length` ([`MessageType::max_len`]), checked before the body
//! is read: a peer cannot make a node allocate more than that.
//!
//! A connection carries one request per bidirectional stream: the opener writes one request
//! frame and finishes its side; the other node answers with one or more frames and finishes.
//! The first stream of a connection, opened by the connecting node, carries `Hello`/`Welcome`.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use puce_core::crypto::Fingerprint;
use puce_core::format::snapshot::{check_label, check_space_name};
use puce_core::{ObjectId, SnapshotId};

use crate::error::{Error, ErrorKind, Result};

/// The ALPN protocol name; a future incompatible protocol gets a new name.
pub const ALPN: &[u8] = b"puce/sync/1";
/// The revision of `puce/sync/1` this node implements (negotiated in `Hello`/`Welcome`).
/// Revision 2 adds `FindObjects` (healing from a peer), revision 3 `GetForgets` (forgets carried
/// to the nodes that replicate a space), revision 4 `GetChecks` (what a peer holds complete and
/// when its data was last checked, for the replica rules), revision 5 the repository's key
/// fingerprint in `Hello`/`Welcome` and the blind-holding messages (`GetManifest`, `Manifest`,
/// `GetFile`, `FileData`), revision 6 the older manifests a protection period keeps in the
/// answer to `GetManifest` (`held: true`).
pub const VERSION: u16 = 6;
/// The first revision with `FindObjects`.
pub const FIND_OBJECTS_VERSION: u16 = 2;
/// The first revision with `GetForgets`.
pub const FORGETS_VERSION: u16 = 3;
/// The first revision with `GetChecks`.
pub const CHECKS_VERSION: u16 = 4;
/// The first revision with the key fingerprint in `Welcome` and the blind-holding messages.
pub const BLIND_VERSION: u16 = 5;
/// The first revision whose `GetManifest` (`held: true`) is answered by the newest manifest,
/// the older ones a protection period keeps, then `End`.
pub const KEPT_MANIFESTS_VERSION: u16 = 6;
/// The oldest revision this node still speaks.
pub const MIN_VERSION: u16 = 1;

/// Most snapshot ids in one `GetSnapshots`.
pub const MAX_SNAPSHOTS_PER_REQUEST: usize = 1024;
/// Most spaces in one `GetChecks`, and most snapshot ids in all (its answer has at most as
/// many).
pub const MAX_CHECKS_PER_REQUEST: usize = 1024;
/// Most object ids in one `GetObjects`.
pub const MAX_OBJECTS_PER_REQUEST: usize = 4096;
/// Largest object (stored bytes) that travels in one `Object` frame.
pub const MAX_OBJECT_LEN: usize = 64 << 20;
/// Largest range of a file in one `GetFile`.
pub const MAX_FILE_RANGE: u32 = 4 * MIB;
/// Largest manifest a `Manifest` frame carries.
pub const MAX_MANIFEST_FRAME: u32 = 16 * MIB + 64;
/// Most bytes of manifests in one answer to `GetManifest` (`held: true`, revision 6): a
/// holder that sends more is cut off.
pub const MAX_HELD_MANIFESTS_BYTES: usize = 256 * MIB as usize;
/// Largest request frame body (the bound of the largest request type): a node holds at most
/// `transport::MAX_STREAMS` of them per connection.
pub const MAX_REQUEST_LEN: u32 = MIB;

const KIB: u32 = 1024;
const MIB: u32 = 1024 * 1024;

/// Numeric error codes, used in `Error` messages and as QUIC application close codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[repr(u16)]
pub enum Code {
    /// Not an error: the session is over.
    Done = 0,
    /// Malformed or unexpected message.
    Protocol = 1,
    /// A frame longer than its type allows.
    TooLarge = 2,
    /// An object that does not match its id.
    BadObject = 3,
    /// The peer may not read or write this space, or is not a configured peer.
    NotAllowed = 4,
    /// No protocol revision in common.
    Version = 5,
    /// The repositories cannot exchange data (different chunking parameters).
    Incompatible = 6,
    /// A snapshot or object asked for does not exist.
    NotFound = 7,
    /// Requests beyond the budget (sent by older nodes; a node now serves them more slowly).
    TooManyRequests = 8,
    /// The responder failed (its storage): a later attempt may succeed.
    Internal = 9,
    /// The node is stopping.
    ShuttingDown = 10,
    /// The node is busy (too many sessions): try again later.
    Busy = 11,
    /// What the requester sent would exceed its quota on the responder (nodes that do not
    /// know the code read it as `Internal`, with its message).
    Quota = 12,
}

impl Code {
    /// The code with this number.
    pub fn from_u16(v: u16) -> Option<Code> {
        use Code::*;
        Some(match v {
            0 => Done,
            1 => Protocol,
            2 => TooLarge,
            3 => BadObject,
            4 => NotAllowed,
            5 => Version,
            6 => Incompatible,
            7 => NotFound,
            8 => TooManyRequests,
            9 => Internal,
            10 => ShuttingDown,
            11 => Busy,
            12 => Quota,
            _ => return None,
        })
    }

    /// As a QUIC close code.
    pub fn varint(self) -> quinn::VarInt {
        quinn::VarInt::from_u32(self as u32)
    }
}

/// Chunking parameters of a repository: two nodes exchange data only if theirs are equal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunking {
    /// Smallest chunk.
    pub min: u32,
    /// Average chunk.
    pub avg: u32,
    /// Largest chunk.
    pub max: u32,
}

/// First message of a connection, from the connecting node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Oldest protocol revision the sender speaks.
    pub min_version: u16,
    /// Newest protocol revision the sender speaks.
    pub max_version: u16,
    /// The sender's node name (for messages; identity is its key).
    pub node: String,
    /// The sender's software, e.g. `puce 0.1.0`.
    pub software: String,
    /// The sender repository's chunking parameters.
    pub chunking: Chunking,
    /// The fingerprint of the sender repository's key (revision 5; none: an unencrypted
    /// repository, or a node before revision 5). Encoded after the other fields, only when
    /// present (docs/protocol.md, section 5).
    #[serde(skip)]
    pub key: Option<Fingerprint>,
}

/// Answer to `Hello`: the revision both will speak.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// The chosen revision.
    pub version: u16,
    /// The answering node's name.
    pub node: String,
    /// The answering node's software.
    pub software: String,
    /// The answering repository's chunking parameters.
    pub chunking: Chunking,
    /// The fingerprint of the answering repository's key, sent only with revision 5 or later
    /// (as in [`Hello`]).
    #[serde(skip)]
    pub key: Option<Fingerprint>,
}

/// A refusal or failure, answering any request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorMsg {
    /// What went wrong, as a [`Code`] number.
    pub code: u16,
    /// For people: what happened, to what, and what to do.
    pub message: String,
}

/// Which spaces the responder lets the requester read, with their snapshots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListSpaces {
    /// The spaces wanted; empty: every space the requester may read. Naming a space it may not
    /// read is refused with `NotAllowed`.
    pub spaces: Vec<String>,
}

/// One space's state on the responder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpaceState {
    /// Space name.
    pub name: String,
    /// Its heads (snapshots no other snapshot of the space has as parent).
    pub heads: Vec<SnapshotId>,
    /// Every snapshot of the space the responder holds (heads included).
    pub snapshots: Vec<SnapshotId>,
}

/// Answer to `ListSpaces`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpaceList {
    /// The spaces, by name.
    pub spaces: Vec<SpaceState>,
}

/// Ask for snapshot records; answered by one `Snapshot` frame per id, then `End`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetSnapshots {
    /// At most [`MAX_SNAPSHOTS_PER_REQUEST`] ids, each of a space the requester may read.
    pub ids: Vec<SnapshotId>,
}

/// A snapshot record, exactly the bytes of its file (its id is their BLAKE3 hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRecord {
    /// The id.
    pub id: SnapshotId,
    /// The file's bytes.
    #[serde(with = "serde_bytes")]
    pub bytes: Vec<u8>,
}

/// Ask for objects; answered by one `Object` frame per id, in order, then `End`. Only objects
/// reachable from a snapshot the requester was sent in this connection are served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetObjects {
    /// At most [`MAX_OBJECTS_PER_REQUEST`] ids.
    pub ids: Vec<ObjectId>,
}

/// An object as stored in the sender's pack: possibly compressed (`flags` bit 0: zstd).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Object {
    /// BLAKE3 of the plaintext.
    pub id: ObjectId,
    /// 0: file data, 1: tree.
    pub kind: u8,
    /// Pack entry flags (bit 0: zstd).
    pub flags: u8,
    /// Plaintext length.
    pub raw_len: u32,
    /// The stored bytes.
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

/// Ask for objects by id alone, to heal a damaged repository (revision 2). Answered by one
/// `Object` frame for each id that is reachable from a snapshot of a space the requester may
/// read and that the responder holds undamaged, in request order, the others left out, then
/// `End`. Leaving an object out says nothing about why (absent, damaged, or in a space the
/// requester may not read), so the answer reveals no space.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FindObjects {
    /// At most [`MAX_OBJECTS_PER_REQUEST`] ids.
    pub ids: Vec<ObjectId>,
}

/// Ask which of these snapshots the responder forgot (revision 3). Answered by one `Forget`
/// frame per id that has a forget record there in a space the requester may read, in request
/// order, the others left out, then `End`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetForgets {
    /// At most [`MAX_SNAPSHOTS_PER_REQUEST`] ids.
    pub ids: Vec<SnapshotId>,
}

/// A forget record signed by the responder: the bytes of a `forgets/` file
/// (`docs/format.md`, forget records).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForgetRecord {
    /// The record.
    #[serde(with = "serde_bytes")]
    pub bytes: Vec<u8>,
}

/// Which of these snapshots the responder holds complete, and when its data was last checked
/// (revision 4), for the spaces the requester may read or write there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetChecks {
    /// At most [`MAX_CHECKS_PER_REQUEST`] spaces, each once, with at most that many ids in all.
    pub spaces: Vec<SpaceIds>,
}

/// A space and snapshot ids of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpaceIds {
    /// Space name.
    pub name: String,
    /// Snapshot ids.
    pub ids: Vec<SnapshotId>,
}

/// Answer to `GetChecks`: one entry per space asked for that the requester may read or write,
/// in request order, the others left out without saying why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checks {
    /// The spaces.
    pub spaces: Vec<SpaceCheck>,
}

/// What the responder says of its copy of one space. It speaks for itself: nobody can verify
/// its check (docs/protocol.md, "Checks").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpaceCheck {
    /// Space name, as asked.
    pub name: String,
    /// The ids asked for that the responder holds complete (committed snapshots of the space),
    /// in request order.
    pub held: Vec<SnapshotId>,
    /// Since when every byte of its data was read and verified by its checks, ns since the
    /// epoch; `None`: not all of it yet, or it does not check.
    pub checked_ns: Option<u64>,
    /// Whether its checks found damage that is not healed.
    pub damaged: bool,
}

/// Ask for a blind-holding manifest (revision 5). `held: false`, from a holder to the owner:
/// the manifest of what the holder must keep for it now, signed by the owner. `held: true`,
/// from an owner's node to its holder: the newest manifest the holder keeps for that owner,
/// and (revision 6) the older ones its protection period still keeps.
/// Answered by one `Manifest` (with `held: true` and revision 6: one `Manifest` per manifest
/// kept, newest first, at most `blind::MAX_KEPT_MANIFESTS + 1`, then `End`), or `Error`
/// (`NotAllowed`: not configured so; `NotFound`: no manifest held yet).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetManifest {
    /// Which manifest: the one to hold (false), the one held (true).
    pub held: bool,
}

/// A signed manifest (`docs/format.md`, section 10), as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestBytes {
    /// The file's bytes.
    #[serde(with = "serde_bytes")]
    pub bytes: Vec<u8>,
}

/// Ask for a range of a file listed in the manifest sent on this connection (revision 5).
/// Answered by one `FileData` of exactly that range, or `Error` (`NotFound`: not listed, not
/// held or damaged; the connection goes on).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetFile {
    /// The file's kind in the manifest (0 pack, 1 snapshot record, 2 space settings).
    pub kind: u8,
    /// Its name (a pack id, a snapshot id, a space label).
    pub name: [u8; 32],
    /// First byte.
    pub offset: u64,
    /// Bytes wanted, at most [`MAX_FILE_RANGE`], within the file.
    pub len: u32,
}

/// A range of a file, as asked by `GetFile`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileData {
    /// The bytes.
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

/// End of a multi-frame answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct End {
    /// Frames sent before this one (a check).
    pub count: u32,
}

/// Ask the responder to pull a space from the requester now, over this connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Push {
    /// The space.
    pub space: String,
}

/// Answer to `Push`: what the responder received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct PushDone {
    /// Snapshot records stored (merge snapshots not included).
    pub snapshots: u32,
    /// Objects stored.
    pub objects: u64,
    /// Stored bytes of those objects.
    pub bytes: u64,
    /// Plaintext bytes of those objects.
    pub raw_bytes: u64,
    /// Logical size of the new snapshots (sum of their file sizes).
    pub logical_bytes: u64,
    /// Merge snapshots written.
    pub merges: u32,
    /// Conflict copies made by the merges.
    pub conflicts: u32,
}

/// Every message, with its frame type byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// 0x01
    Hello(Hello),
    /// 0x02
    Welcome(Welcome),
    /// 0x03
    Error(ErrorMsg),
    /// 0x10
    ListSpaces(ListSpaces),
    /// 0x11
    SpaceList(SpaceList),
    /// 0x12
    GetSnapshots(GetSnapshots),
    /// 0x13
    Snapshot(SnapshotRecord),
    /// 0x14
    GetObjects(GetObjects),
    /// 0x15
    Object(Object),
    /// 0x16
    End(End),
    /// 0x17
    Push(Push),
    /// 0x18
    PushDone(PushDone),
    /// 0x19
    FindObjects(FindObjects),
    /// 0x1a
    GetForgets(GetForgets),
    /// 0x1b
    Forget(ForgetRecord),
    /// 0x1c
    GetChecks(GetChecks),
    /// 0x1d
    Checks(Checks),
    /// 0x1e
    GetManifest(GetManifest),
    /// 0x1f
    Manifest(ManifestBytes),
    /// 0x20
    GetFile(GetFile),
    /// 0x21
    FileData(FileData),
}

/// The frame type byte of each message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum MessageType {
    /// [`Hello`]
    Hello = 0x01,
    /// [`Welcome`]
    Welcome = 0x02,
    /// [`ErrorMsg`]
    Error = 0x03,
    /// [`ListSpaces`]
    ListSpaces = 0x10,
    /// [`SpaceList`]
    SpaceList = 0x11,
    /// [`GetSnapshots`]
    GetSnapshots = 0x12,
    /// [`SnapshotRecord`]
    Snapshot = 0x13,
    /// [`GetObjects`]
    GetObjects = 0x14,
    /// [`Object`]
    Object = 0x15,
    /// [`End`]
    End = 0x16,
    /// [`Push`]
    Push = 0x17,
    /// [`PushDone`]
    PushDone = 0x18,
    /// [`FindObjects`]
    FindObjects = 0x19,
    /// [`GetForgets`]
    GetForgets = 0x1a,
    /// [`ForgetRecord`]
    Forget = 0x1b,
    /// [`GetChecks`]
    GetChecks = 0x1c,
    /// [`Checks`]
    Checks = 0x1d,
    /// [`GetManifest`]
    GetManifest = 0x1e,
    /// [`ManifestBytes`]
    Manifest = 0x1f,
    /// [`GetFile`]
    GetFile = 0x20,
    /// [`FileData`]
    FileData = 0x21,
}

impl MessageType {
    /// The type with this byte.
    pub fn from_u8(b: u8) -> Option<MessageType> {
        use MessageType::*;
        Some(match b {
            0x01 => Hello,
            0x02 => Welcome,
            0x03 => Error,
            0x10 => ListSpaces,
            0x11 => SpaceList,
            0x12 => GetSnapshots,
            0x13 => Snapshot,
            0x14 => GetObjects,
            0x15 => Object,
            0x16 => End,
            0x17 => Push,
            0x18 => PushDone,
            0x19 => FindObjects,
            0x1a => GetForgets,
            0x1b => Forget,
            0x1c => GetChecks,
            0x1d => Checks,
            0x1e => GetManifest,
            0x1f => Manifest,
            0x20 => GetFile,
            0x21 => FileData,
            _ => return None,
        })
    }

    /// Whether this type is a request (the first frame of a stream, from the node that opened
    /// it); the others are answers.
    pub fn is_request(self) -> bool {
        use MessageType::*;
        matches!(
            self,
            Hello
                | ListSpaces
                | GetSnapshots
                | GetObjects
                | FindObjects
                | Push
                | GetForgets
                | GetChecks
                | GetManifest
                | GetFile
        )
    }

    /// Largest body accepted for this type.
    pub fn max_len(self) -> u32 {
        use MessageType::*;
        match self {
            Hello | Welcome | Error | Push | PushDone | End | Forget | GetManifest | GetFile => {
                64 * KIB
            }
            Manifest => MAX_MANIFEST_FRAME,
            FileData => MAX_FILE_RANGE + 16,
            ListSpaces | GetSnapshots | GetForgets | GetChecks | Checks => MIB,
            GetObjects | FindObjects => 256 * KIB,
            SpaceList => 32 * MIB,
            Snapshot => 16 * MIB + 64,
            Object => MAX_OBJECT_LEN as u32 + 64,
        }
    }
}

impl Message {
    /// The frame type.
    pub fn kind(&self) -> MessageType {
        match self {
            Message::Hello(_) => MessageType::Hello,
            Message::Welcome(_) => MessageType::Welcome,
            Message::Error(_) => MessageType::Error,
            Message::ListSpaces(_) => MessageType::ListSpaces,
            Message::SpaceList(_) => MessageType::SpaceList,
            Message::GetSnapshots(_) => MessageType::GetSnapshots,
            Message::Snapshot(_) => MessageType::Snapshot,
            Message::GetObjects(_) => MessageType::GetObjects,
            Message::Object(_) => MessageType::Object,
            Message::End(_) => MessageType::End,
            Message::Push(_) => MessageType::Push,
            Message::PushDone(_) => MessageType::PushDone,
            Message::FindObjects(_) => MessageType::FindObjects,
            Message::GetForgets(_) => MessageType::GetForgets,
            Message::Forget(_) => MessageType::Forget,
            Message::GetChecks(_) => MessageType::GetChecks,
            Message::Checks(_) => MessageType::Checks,
            Message::GetManifest(_) => MessageType::GetManifest,
            Message::Manifest(_) => MessageType::Manifest,
            Message::GetFile(_) => MessageType::GetFile,
            Message::FileData(_) => MessageType::FileData,
        }
    }

    /// A short name for logs.
    pub fn name(&self) -> &'static str {
        match self.kind() {
            MessageType::Hello => "Hello",
            MessageType::Welcome => "Welcome",
            MessageType::Error => "Error",
            MessageType::ListSpaces => "ListSpaces",
            MessageType::SpaceList => "SpaceList",
            MessageType::GetSnapshots => "GetSnapshots",
            MessageType::Snapshot => "Snapshot",
            MessageType::GetObjects => "GetObjects",
            MessageType::Object => "Object",
            MessageType::End => "End",
            MessageType::Push => "Push",
            MessageType::PushDone => "PushDone",
            MessageType::FindObjects => "FindObjects",
            MessageType::GetForgets => "GetForgets",
            MessageType::Forget => "Forget",
            MessageType::GetChecks => "GetChecks",
            MessageType::Checks => "Checks",
            MessageType::GetManifest => "GetManifest",
            MessageType::Manifest => "Manifest",
            MessageType::GetFile => "GetFile",
            MessageType::FileData => "FileData",
        }
    }

    /// An error message.
    pub fn error(code: Code, message: impl Into<String>) -> Message {
        Message::Error(ErrorMsg {
            code: code as u16,
            message: message.into(),
        })
    }
}

fn body<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    postcard::to_stdvec(v).map_err(|e| Error::internal("cannot encode a message").with_source(e))
}

/// Encode a message as a whole frame.
pub fn encode(m: &Message) -> Result<Vec<u8>> {
    let b = match m {
        Message::Hello(x) => with_key(body(x)?, x.key),
        Message::Welcome(x) => with_key(body(x)?, x.key),
        Message::Error(x) => body(x)?,
        Message::ListSpaces(x) => body(x)?,
        Message::SpaceList(x) => body(x)?,
        Message::GetSnapshots(x) => body(x)?,
        Message::Snapshot(x) => body(x)?,
        Message::GetObjects(x) => body(x)?,
        Message::Object(x) => body(x)?,
        Message::End(x) => body(x)?,
        Message::Push(x) => body(x)?,
        Message::PushDone(x) => body(x)?,
        Message::FindObjects(x) => body(x)?,
        Message::GetForgets(x) => body(x)?,
        Message::Forget(x) => body(x)?,
        Message::GetChecks(x) => body(x)?,
        Message::Checks(x) => body(x)?,
        Message::GetManifest(x) => body(x)?,
        Message::Manifest(x) => body(x)?,
        Message::GetFile(x) => body(x)?,
        Message::FileData(x) => body(x)?,
    };
    let kind = m.kind();
    if b.len() > kind.max_len() as usize {
        return Err(Error::internal(format!(
            "{} message of {} bytes exceeds the {} byte limit",
            m.name(),
            b.len(),
            kind.max_len()
        )));
    }
    let mut out = Vec::with_capacity(5 + b.len());
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.push(kind as u8);
    out.extend_from_slice(&b);
    Ok(out)
}

fn take<T: DeserializeOwned>(what: &str, b: &[u8]) -> Result<T> {
    let (v, rest) = postcard::take_from_bytes::<T>(b)
        .map_err(|e| Error::protocol(format!("malformed {what} message")).with_source(e))?;
    if !rest.is_empty() {
        return Err(Error::protocol(format!(
            "{what} message has {} trailing bytes",
            rest.len()
        )));
    }
    Ok(v)
}

/// `Hello` and `Welcome` end with the key fingerprint when there is one: 32 raw bytes after
/// the other fields, absent for an unencrypted repository (so that the frames of an
/// unencrypted node are those of revision 4, byte for byte, and older nodes still read them).
fn with_key(mut b: Vec<u8>, key: Option<Fingerprint>) -> Vec<u8> {
    if let Some(k) = key {
        b.extend_from_slice(&k.0);
    }
    b
}

/// The fields of a `Hello` or `Welcome`, then the optional key fingerprint: nothing, or
/// exactly 32 bytes.
fn take_keyed<T: DeserializeOwned>(what: &str, b: &[u8]) -> Result<(T, Option<Fingerprint>)> {
    let (v, rest) = postcard::take_from_bytes::<T>(b)
        .map_err(|e| Error::protocol(format!("malformed {what} message")).with_source(e))?;
    let key = match rest.len() {
        0 => None,
        32 => {
            let mut k = [0u8; 32];
            k.copy_from_slice(rest);
            Some(Fingerprint(k))
        }
        n => {
            return Err(Error::protocol(format!(
                "{what} message has {n} bytes after its fields (a key fingerprint is 32)"
            )));
        }
    };
    Ok((v, key))
}

/// Decode the body of a frame of type `kind`.
pub fn decode(kind: MessageType, b: &[u8]) -> Result<Message> {
    let m = decode_body(kind, b)?;
    check_names(&m)?;
    Ok(m)
}

/// Space and node names a peer sends are checked once, here: a name that no node could have
/// (`*`, control characters, ...) is a protocol violation.
fn check_names(m: &Message) -> Result<()> {
    let bad = |e: puce_core::Error| Error::new(ErrorKind::Protocol, format!("{e:#}"));
    let spaces: Vec<&String> = match m {
        Message::ListSpaces(l) => l.spaces.iter().collect(),
        Message::SpaceList(l) => l.spaces.iter().map(|s| &s.name).collect(),
        Message::Push(p) => vec![&p.space],
        Message::GetChecks(c) => c.spaces.iter().map(|s| &s.name).collect(),
        Message::Checks(c) => c.spaces.iter().map(|s| &s.name).collect(),
        Message::Hello(Hello { node, software, .. })
        | Message::Welcome(Welcome { node, software, .. }) => {
            check_label("node name", node).map_err(bad)?;
            check_label("software", software).map_err(bad)?;
            Vec::new()
        }
        _ => Vec::new(),
    };
    for s in spaces {
        check_space_name(s).map_err(bad)?;
    }
    Ok(())
}

fn decode_body(kind: MessageType, b: &[u8]) -> Result<Message> {
    use MessageType as T;
    Ok(match kind {
        T::Hello => {
            let (mut h, key): (Hello, _) = take_keyed("Hello", b)?;
            h.key = key;
            Message::Hello(h)
        }
        T::Welcome => {
            let (mut w, key): (Welcome, _) = take_keyed("Welcome", b)?;
            w.key = key;
            Message::Welcome(w)
        }
        T::Error => Message::Error(take("Error", b)?),
        T::ListSpaces => Message::ListSpaces(take("ListSpaces", b)?),
        T::SpaceList => Message::SpaceList(take("SpaceList", b)?),
        T::GetSnapshots => Message::GetSnapshots(take("GetSnapshots", b)?),
        T::Snapshot => Message::Snapshot(take("Snapshot", b)?),
        T::GetObjects => Message::GetObjects(take("GetObjects", b)?),
        T::Object => Message::Object(take("Object", b)?),
        T::End => Message::End(take("End", b)?),
        T::Push => Message::Push(take("Push", b)?),
        T::PushDone => Message::PushDone(take("PushDone", b)?),
        T::FindObjects => Message::FindObjects(take("FindObjects", b)?),
        T::GetForgets => Message::GetForgets(take("GetForgets", b)?),
        T::Forget => Message::Forget(take("Forget", b)?),
        T::GetChecks => Message::GetChecks(take("GetChecks", b)?),
        T::Checks => Message::Checks(take("Checks", b)?),
        T::GetManifest => Message::GetManifest(take("GetManifest", b)?),
        T::Manifest => Message::Manifest(take("Manifest", b)?),
        T::GetFile => Message::GetFile(take("GetFile", b)?),
        T::FileData => Message::FileData(take("FileData", b)?),
    })
}

/// Encode an `Object` frame as a head (frame header and every field but the data's bytes) and
/// the data itself, so that the data is handed to QUIC without being copied. `head` followed by
/// `o.data` is exactly `encode(&Message::Object(o))`.
pub fn object_frame_head(o: &Object) -> Result<Vec<u8>> {
    let mut fields = Vec::with_capacity(48);
    fields.extend_from_slice(o.id.as_bytes());
    fields.push(o.kind);
    fields.push(o.flags);
    put_varint(&mut fields, u64::from(o.raw_len));
    put_varint(&mut fields, o.data.len() as u64);
    let len = fields.len() + o.data.len();
    if len > MessageType::Object.max_len() as usize {
        return Err(Error::internal(format!(
            "object {} of {} bytes is too large to send",
            o.id,
            o.data.len()
        )));
    }
    let mut head = Vec::with_capacity(5 + fields.len());
    head.extend_from_slice(&(len as u32).to_le_bytes());
    head.push(MessageType::Object as u8);
    head.extend_from_slice(&fields);
    Ok(head)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Read the body of an `Object` frame of `len` bytes, placing the data in its own buffer
/// without zeroing or copying it again.
async fn read_object<R: AsyncRead + Unpin>(r: &mut R, len: usize) -> Result<Message> {
    // id, kind, flags, then two varints of at most 10 bytes each (postcard's u32 takes at most
    // 5, the length of a byte string at most 10): the fields fit in the first 54 bytes.
    let head_len = len.min(32 + 2 + 5 + 10);
    let mut head = vec![0u8; head_len];
    r.read_exact(&mut head).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            Error::protocol("stream ended inside a frame")
        } else {
            stream_error(e)
        }
    })?;
    let bad = || Error::protocol("malformed Object message");
    if head.len() < 35 {
        return Err(bad());
    }
    let mut id = [0u8; 32];
    id.copy_from_slice(&head[..32]);
    let (kind, flags) = (head[32], head[33]);
    let mut pos = 34;
    let mut varint = |max_bytes: usize| -> Result<u64> {
        let mut v = 0u64;
        for i in 0..max_bytes {
            let b = *head.get(pos).ok_or_else(bad)?;
            pos += 1;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(bad())
    };
    let raw_len = u32::try_from(varint(5)?).map_err(|_| bad())?;
    let data_len = usize::try_from(varint(10)?).map_err(|_| bad())?;
    // `pos` never passes `head.len()`, itself at most `len`: `len - pos` cannot underflow, and
    // a huge declared length cannot overflow an addition.
    if data_len != len - pos {
        return Err(Error::protocol(format!(
            "malformed Object message: declares {data_len} bytes of data in a frame of {len}"
        )));
    }
    let mut data = Vec::with_capacity(data_len);
    data.extend_from_slice(&head[pos..]);
    let rest = (data_len - data.len()) as u64;
    let mut limited = r.take(rest);
    while (data.len() as u64) < data_len as u64 {
        let n = limited.read_buf(&mut data).await.map_err(stream_error)?;
        if n == 0 {
            return Err(Error::protocol("stream ended inside a frame"));
        }
    }
    Ok(Message::Object(Object {
        id: ObjectId(puce_core::Hash(id)),
        kind,
        flags,
        raw_len,
        data,
    }))
}

/// What a node expects to read on a stream: the type is checked against it from the frame
/// header, before the body is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Any type (tests, tools).
    Any,
    /// A request: the stream was opened by the other node.
    Request,
    /// An answer: the stream was opened by this node.
    Answer,
}

impl Expect {
    fn allows(self, kind: MessageType) -> bool {
        match self {
            Expect::Any => true,
            Expect::Request => kind.is_request(),
            Expect::Answer => !kind.is_request(),
        }
    }
}

/// Read one frame of any type; `None` at a clean end of stream before a frame starts.
pub async fn read<R: AsyncRead + Unpin>(r: &mut R) -> Result<Option<Message>> {
    read_expecting(r, Expect::Any).await
}

/// Read one frame, refusing from its header a type that `expect` rules out; `None` at a clean
/// end of stream before a frame starts.
pub async fn read_expecting<R: AsyncRead + Unpin>(
    r: &mut R,
    expect: Expect,
) -> Result<Option<Message>> {
    let mut head = [0u8; 5];
    let mut got = 0;
    while got < head.len() {
        let n = r.read(&mut head[got..]).await.map_err(stream_error)?;
        if n == 0 {
            if got == 0 {
                return Ok(None);
            }
            return Err(Error::protocol("stream ended inside a frame header"));
        }
        got += n;
    }
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
    let kind = MessageType::from_u8(head[4])
        .ok_or_else(|| Error::protocol(format!("unknown message type 0x{:02x}", head[4])))?;
    if !expect.allows(kind) {
        return Err(Error::protocol(format!(
            "a {kind:?} frame where {} was expected",
            if expect == Expect::Request {
                "a request"
            } else {
                "an answer"
            }
        )));
    }
    if len > kind.max_len() {
        return Err(Error::new(
            ErrorKind::Protocol,
            format!(
                "message too large: a {kind:?} frame of {len} bytes (the limit is {})",
                kind.max_len()
            ),
        ));
    }
    if kind == MessageType::Object {
        return read_object(r, len as usize).await.map(Some);
    }
    let mut b = vec![0u8; len as usize];
    r.read_exact(&mut b).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            Error::protocol("stream ended inside a frame")
        } else {
            stream_error(e)
        }
    })?;
    decode(kind, &b).map(Some)
}

/// Write one frame.
pub async fn write<W: AsyncWrite + Unpin>(w: &mut W, m: &Message) -> Result<()> {
    let frame = encode(m)?;
    w.write_all(&frame).await.map_err(stream_error)
}

fn stream_error(e: std::io::Error) -> Error {
    Error::new(ErrorKind::Network, format!("stream failed: {e}")).with_source(e)
}

/// Whether an error is a "message too large" protocol error (reported with [`Code::TooLarge`]).
pub fn is_too_large(e: &Error) -> bool {
    e.kind() == ErrorKind::Protocol && e.message().starts_with("message too large")
}

#[cfg(test)]
mod tests;
