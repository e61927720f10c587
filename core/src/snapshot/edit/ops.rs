//! The edits an [`EditTree`](super::EditTree) applies, as data (the FUSE mount journals them;
//! their postcard encoding is pinned by a golden test), and why one is refused.

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind};
use crate::format::tree::{Entry, Node};
use crate::hash::ObjectId;

/// Metadata of an entry, as stored in trees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// Permission bits (`& 0o7777`).
    pub mode: u32,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i64,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
}

impl Meta {
    pub(super) fn of(e: &Entry) -> Meta {
        Meta {
            mode: e.mode,
            mtime_ns: e.mtime_ns,
            uid: e.uid,
            gid: e.gid,
        }
    }
}

/// The content of a regular file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Content {
    /// Chunks already in the repository.
    Stored {
        /// Size in bytes.
        size: u64,
        /// Chunk ids in order.
        chunks: Vec<ObjectId>,
    },
    /// A local file, named by a number the writer resolves; its bytes and its modification
    /// time are taken when the tree is written.
    Local(u64),
}

/// What an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    /// Regular file.
    File,
    /// Directory.
    Dir,
    /// Symbolic link.
    Symlink,
    /// Named pipe.
    Fifo,
    /// Unix domain socket.
    Socket,
    /// Character device.
    CharDevice,
    /// Block device.
    BlockDevice,
}

impl NodeKind {
    /// The kind of a stored node.
    pub fn of(node: &Node) -> NodeKind {
        match node {
            Node::File { .. } => NodeKind::File,
            Node::Dir { .. } => NodeKind::Dir,
            Node::Symlink { .. } => NodeKind::Symlink,
            Node::Fifo => NodeKind::Fifo,
            Node::Socket => NodeKind::Socket,
            Node::CharDevice { .. } => NodeKind::CharDevice,
            Node::BlockDevice { .. } => NodeKind::BlockDevice,
        }
    }
}

/// What [`EditTree::lookup`] and [`EditTree::list`] tell about an entry (no chunk lists).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    /// Kind.
    pub kind: NodeKind,
    /// Metadata (for local content, the mtime is the local file's).
    pub meta: Meta,
    /// Stored file size, symlink target length, or 0 (directories, local content).
    pub size: u64,
    /// The local content number, for files whose content is local.
    pub local: Option<u64>,
    /// The symlink target.
    pub target: Option<Vec<u8>>,
    /// When the entry last changed through the edit tree (ns since the epoch), 0 if it did not
    /// since the tree was made: its `ctime` is then the caller's to choose.
    pub ctime_ns: i64,
    /// The device number of a device node, else 0.
    pub rdev: u64,
    /// The hard-link group of a non-directory whose other names (if any) are the same file
    /// ([`EditTree::names`](super::EditTree::names) counts them).
    pub link: Option<u64>,
}

impl Info {
    /// An entry of `kind` with `meta`, every other field empty.
    pub fn new(kind: NodeKind, meta: Meta) -> Info {
        Info {
            kind,
            meta,
            size: 0,
            local: None,
            target: None,
            ctime_ns: 0,
            rdev: 0,
            link: None,
        }
    }
}

/// One edit, serialisable (the FUSE mount's journal records these). Paths are relative to the
/// root, `/`-separated raw bytes. `time_ns` becomes the modification time of the directories
/// whose entries change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Edit {
    /// Create a directory.
    Mkdir {
        /// Path.
        #[serde(with = "serde_bytes")]
        path: Vec<u8>,
        /// Its metadata.
        meta: Meta,
        /// Time of the change.
        time_ns: i64,
    },
    /// Create a symbolic link.
    Symlink {
        /// Path.
        #[serde(with = "serde_bytes")]
        path: Vec<u8>,
        /// Target.
        #[serde(with = "serde_bytes")]
        target: Vec<u8>,
        /// Its metadata.
        meta: Meta,
        /// Time of the change.
        time_ns: i64,
    },
    /// Create a regular file (which must not exist).
    Create {
        /// Path.
        #[serde(with = "serde_bytes")]
        path: Vec<u8>,
        /// Its metadata.
        meta: Meta,
        /// Its content.
        content: Content,
        /// Time of the change.
        time_ns: i64,
    },
    /// Replace the content of an existing regular file (of every name of its hard-link group).
    SetContent {
        /// Path.
        #[serde(with = "serde_bytes")]
        path: Vec<u8>,
        /// New content.
        content: Content,
    },
    /// Remove a file or symlink (`dir: false`) or an empty directory (`dir: true`).
    Remove {
        /// Path.
        #[serde(with = "serde_bytes")]
        path: Vec<u8>,
        /// Whether a directory is expected.
        dir: bool,
        /// Time of the change.
        time_ns: i64,
    },
    /// Rename, replacing the target as `rename(2)` does unless `noreplace`.
    Rename {
        /// Source path.
        #[serde(with = "serde_bytes")]
        from: Vec<u8>,
        /// Target path.
        #[serde(with = "serde_bytes")]
        to: Vec<u8>,
        /// Fail if the target exists.
        noreplace: bool,
        /// Time of the change.
        time_ns: i64,
    },
    /// Change metadata (of every name of the entry's hard-link group); `None` fields are kept.
    SetMeta {
        /// Path.
        #[serde(with = "serde_bytes")]
        path: Vec<u8>,
        /// New permission bits.
        mode: Option<u32>,
        /// New owner.
        uid: Option<u32>,
        /// New group.
        gid: Option<u32>,
        /// New modification time.
        mtime_ns: Option<i64>,
    },
    /// Create a fifo, socket or device node (which must not exist): `node` is its tree node.
    Mknod {
        /// Path.
        #[serde(with = "serde_bytes")]
        path: Vec<u8>,
        /// Its metadata.
        meta: Meta,
        /// What it is: [`Node::Fifo`], [`Node::Socket`] or a device.
        node: Node,
        /// Time of the change.
        time_ns: i64,
    },
    /// Make `to` (which must not exist) another name of the non-directory at `from`, as
    /// `link(2)`: both names join the hard-link group of `from`, or `group` if it has none.
    Link {
        /// The existing name.
        #[serde(with = "serde_bytes")]
        from: Vec<u8>,
        /// The new name.
        #[serde(with = "serde_bytes")]
        to: Vec<u8>,
        /// The group both names join if `from` is in none yet.
        group: u64,
        /// Time of the change.
        time_ns: i64,
    },
}

/// Why an edit was refused; each variant is one errno.
#[derive(Debug, thiserror::Error)]
pub enum EditError {
    /// `ENOENT`.
    #[error("'{0}' does not exist")]
    NotFound(String),
    /// `ENOTDIR`.
    #[error("'{0}' is not a directory")]
    NotADirectory(String),
    /// `EISDIR`.
    #[error("'{0}' is a directory")]
    IsADirectory(String),
    /// `ENOTEMPTY`.
    #[error("directory '{0}' is not empty")]
    NotEmpty(String),
    /// `EEXIST`.
    #[error("'{0}' already exists")]
    Exists(String),
    /// `EINVAL`.
    #[error("{0}")]
    Invalid(String),
    /// Reading or writing the repository failed.
    #[error(transparent)]
    Store(#[from] Error),
}

impl From<EditError> for Error {
    fn from(e: EditError) -> Error {
        match e {
            EditError::Store(e) => e,
            EditError::NotFound(_) => Error::not_found(e.to_string()),
            EditError::Exists(_) => Error::new(ErrorKind::AlreadyExists, e.to_string()),
            e => Error::invalid(e.to_string()),
        }
    }
}

pub(super) type EResult<T> = std::result::Result<T, EditError>;
