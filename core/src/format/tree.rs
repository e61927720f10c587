//! Tree objects: one directory, its entries sorted by name bytes.
//!
//! A tree object's plaintext is `version:u8` followed by the postcard encoding of [`Tree`]; its
//! id is the BLAKE3 hash of that plaintext, so identical directories are stored once.
//! Names are raw bytes (non-UTF-8 names survive); decoding rejects any name that could escape a
//! directory when materialised (empty, `.`, `..`, containing `/` or NUL) and unsorted or
//! duplicate names.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::envelope::decode_exact;
use crate::error::{Error, ErrorKind, Result};
use crate::hash::ObjectId;

/// Current version of the tree encoding.
pub const VERSION: u8 = 1;

/// Deepest directory nesting a snapshot may hold: a directory's depth is the number of names in
/// its path below the snapshot's root (the root is at depth 0). A deeper folder is refused when
/// a snapshot is taken, deeper trees are refused when received from a peer, and every walk over
/// trees stops there, so that no walk's recursion depends on what a tree says. No honest folder
/// comes close: Linux's `PATH_MAX` (4096 bytes) already stops paths of one-letter names at
/// about 2048 levels, and 1024 levels of walking fit in a quarter of a 2 MiB thread stack
/// (`docs/format.md`, "Trees").
pub const MAX_TREE_DEPTH: usize = 1024;

/// The error for a tree reached deeper than [`MAX_TREE_DEPTH`]; `at` says where (a path or a
/// tree id).
pub fn too_deep(at: impl std::fmt::Display) -> Error {
    Error::corrupt(format!(
        "directories nested deeper than {MAX_TREE_DEPTH} levels at {at}: puce refuses trees this \
         deep (docs/format.md, \"Trees\")"
    ))
}

/// Check that no directory under `root` is nested deeper than [`MAX_TREE_DEPTH`], and return
/// the deepest nesting (0: `root` has no subdirectory). `subdirs` gives the subdirectories of a
/// tree; `heights` remembers the nesting below each tree already looked at, so that trees shared
/// by several calls are read once. Iterative: a hostile tree of any depth is safe to look at.
pub fn check_depth(
    root: ObjectId,
    heights: &mut HashMap<ObjectId, usize>,
    subdirs: &mut dyn FnMut(&ObjectId) -> Result<Vec<ObjectId>>,
) -> Result<usize> {
    struct Frame {
        id: ObjectId,
        children: Vec<ObjectId>,
        next: usize,
        height: usize,
    }
    if let Some(h) = heights.get(&root) {
        return Ok(*h);
    }
    let mut stack = vec![Frame {
        id: root,
        children: subdirs(&root)?,
        next: 0,
        height: 0,
    }];
    loop {
        let depth = stack.len().saturating_sub(1);
        let Some(top) = stack.last_mut() else { break };
        if let Some(c) = top.children.get(top.next).copied() {
            top.next += 1;
            let below = match heights.get(&c) {
                Some(h) => *h,
                None if depth + 1 > MAX_TREE_DEPTH => return Err(too_deep(format!("tree {c}"))),
                None => {
                    let children = subdirs(&c)?;
                    stack.push(Frame {
                        id: c,
                        children,
                        next: 0,
                        height: 0,
                    });
                    continue;
                }
            };
            if depth + 1 + below > MAX_TREE_DEPTH {
                return Err(too_deep(format!("tree {c}")));
            }
            top.height = top.height.max(below + 1);
        } else {
            let (id, h) = (top.id, top.height);
            heights.insert(id, h);
            stack.pop();
            if let Some(parent) = stack.last_mut() {
                parent.height = parent.height.max(h + 1);
            }
        }
    }
    Ok(heights.get(&root).copied().unwrap_or(0))
}

/// The subdirectories of `tree`, for [`check_depth`].
pub fn subdirs(tree: &Tree) -> Vec<ObjectId> {
    tree.entries
        .iter()
        .filter_map(|e| match e.node {
            Node::Dir { tree } => Some(tree),
            _ => None,
        })
        .collect()
}

/// A directory listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Tree {
    /// Entries sorted by name bytes, names unique.
    pub entries: Vec<Entry>,
}

/// One entry of a directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// File name, raw bytes.
    #[serde(with = "serde_bytes")]
    pub name: Vec<u8>,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    /// Owner user id.
    pub uid: u32,
    /// Owner group id.
    pub gid: u32,
    /// What the entry is.
    pub node: Node,
}

/// The kind-specific part of an entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Node {
    /// A regular file: its size and the ids of its chunks in order.
    File {
        /// Size in bytes (the sum of the chunk lengths).
        size: u64,
        /// Chunk ids, in file order.
        chunks: Vec<ObjectId>,
    },
    /// A subdirectory.
    Dir {
        /// Id of the subdirectory's tree.
        tree: ObjectId,
    },
    /// A symbolic link.
    Symlink {
        /// Link target, raw bytes.
        #[serde(with = "serde_bytes")]
        target: Vec<u8>,
    },
}

impl Entry {
    /// Whether the entry is a directory.
    pub fn is_dir(&self) -> bool {
        matches!(self.node, Node::Dir { .. })
    }

    /// The logical size: file size, target length for a symlink, 0 for a directory.
    pub fn size(&self) -> u64 {
        match &self.node {
            Node::File { size, .. } => *size,
            Node::Symlink { target } => target.len() as u64,
            Node::Dir { .. } => 0,
        }
    }

    /// One letter for listings: `-`, `d` or `l`.
    pub fn type_char(&self) -> char {
        match self.node {
            Node::File { .. } => '-',
            Node::Dir { .. } => 'd',
            Node::Symlink { .. } => 'l',
        }
    }
}

/// The format's name rule lives with the other path rules.
pub use crate::paths::check_name;

impl Tree {
    /// Encode as the plaintext of a tree object. Entries must already be sorted and unique.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut out = vec![VERSION];
        postcard::to_io(self, &mut out)
            .map_err(|e| Error::other("cannot encode tree").with_source(e))?;
        Ok(out)
    }

    /// Decode the plaintext of a tree object, validating names and order.
    pub fn decode(bytes: &[u8]) -> Result<Tree> {
        let Some((&version, body)) = bytes.split_first() else {
            return Err(Error::corrupt("empty tree object"));
        };
        if version != VERSION {
            return Err(if version > VERSION {
                Error::new(
                    ErrorKind::UnsupportedVersion,
                    format!("tree version {version}, this puce reads {VERSION}: upgrade puce"),
                )
            } else {
                Error::corrupt(format!("tree has invalid version {version}"))
            });
        }
        let tree: Tree = decode_exact("tree", body)?;
        tree.validate()?;
        // Content-addressed: exactly one encoding per tree (postcard accepts over-long
        // varints, which would give one tree several ids).
        if tree.encode()? != bytes {
            return Err(Error::corrupt("tree is not in canonical encoding"));
        }
        Ok(tree)
    }

    /// Check names and ordering.
    pub fn validate(&self) -> Result<()> {
        for (i, e) in self.entries.iter().enumerate() {
            check_name(&e.name)?;
            if i > 0 && self.entries[i - 1].name >= e.name {
                return Err(Error::corrupt(
                    "tree entries are not sorted by name or have duplicates",
                ));
            }
        }
        Ok(())
    }

    /// Find an entry by name (binary search).
    pub fn get(&self, name: &[u8]) -> Option<&Entry> {
        self.entries
            .binary_search_by(|e| e.name.as_slice().cmp(name))
            .ok()
            .map(|i| &self.entries[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::hexdump;

    fn sample() -> Tree {
        Tree {
            entries: vec![
                Entry {
                    name: b"a.txt".to_vec(),
                    mode: 0o644,
                    mtime_ns: 1_000_000_000,
                    uid: 1000,
                    gid: 1000,
                    node: Node::File {
                        size: 3,
                        chunks: vec![ObjectId::of(b"abc")],
                    },
                },
                Entry {
                    name: b"link".to_vec(),
                    mode: 0o777,
                    mtime_ns: -1,
                    uid: 0,
                    gid: 0,
                    node: Node::Symlink {
                        target: b"a.txt".to_vec(),
                    },
                },
                Entry {
                    name: vec![b's', 0xff],
                    mode: 0o755,
                    mtime_ns: 0,
                    uid: 1,
                    gid: 2,
                    node: Node::Dir {
                        tree: ObjectId::of(b""),
                    },
                },
            ],
        }
    }

    /// Golden: the plaintext of a tree object, annotated.
    #[test]
    fn golden_tree_encoding() {
        let bytes = sample().encode().unwrap();
        let expect = [
            "01", // tree version
            "03", // 3 entries
            // entry 0
            "05612e747874", // name "a.txt"
            "a403",         // mode 0o644 (varint)
            "80a8d6b907",   // mtime 1e9 ns (zigzag varint)
            "e807",         // uid 1000
            "e807",         // gid 1000
            "00",           // Node::File
            "03",           // size 3
            "01",           // 1 chunk
            "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85",
            // entry 1
            "046c696e6b", // name "link"
            "ff03",       // mode 0o777
            "01",         // mtime -1 (zigzag)
            "00",         // uid 0
            "00",         // gid 0
            "02",         // Node::Symlink
            "05612e747874",
            // entry 2
            "0273ff", // name "s\xff" (not UTF-8)
            "ed03",   // mode 0o755
            "00",     // mtime 0
            "01",     // uid 1
            "02",     // gid 2
            "01",     // Node::Dir
            "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262",
        ]
        .concat();
        assert_eq!(hexdump(&bytes), expect);
        assert_eq!(Tree::decode(&bytes).unwrap(), sample());
    }

    #[test]
    fn hostile_names_are_rejected() {
        for bad in [&b".."[..], b".", b"", b"a/b", b"/etc", b"x\0y"] {
            let mut t = sample();
            t.entries[0].name = bad.to_vec();
            t.entries.truncate(1);
            let bytes = t.encode().unwrap();
            assert_eq!(
                Tree::decode(&bytes).unwrap_err().kind(),
                ErrorKind::UnsafePath,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn unsorted_is_corrupt() {
        let mut t = sample();
        t.entries.swap(0, 1);
        let bytes = t.encode().unwrap();
        assert_eq!(Tree::decode(&bytes).unwrap_err().kind(), ErrorKind::Corrupt);
    }

    /// Found by fuzzing: an over-long varint (0x81 0x00 for 1) decoded to the same tree as the
    /// canonical form, so one tree could have two ids.
    #[test]
    fn non_canonical_varint_is_rejected() {
        let bytes = [1, 1, 1, 96, 129, 0, 12, 40, 10, 0, 254, 255, 1, 0];
        assert_eq!(Tree::decode(&bytes).unwrap_err().kind(), ErrorKind::Corrupt);
    }

    /// A chain of `n` trees below `ids[0]`, and what `check_depth` needs to walk it.
    fn chain(n: usize) -> (Vec<ObjectId>, HashMap<ObjectId, Vec<ObjectId>>) {
        let ids: Vec<ObjectId> = (0..=n).map(|i| ObjectId::of(&i.to_le_bytes())).collect();
        let mut shape: HashMap<ObjectId, Vec<ObjectId>> = HashMap::new();
        for i in 0..=n {
            shape.insert(ids[i], ids.get(i + 1).into_iter().copied().collect());
        }
        (ids, shape)
    }

    #[test]
    fn check_depth_stops_past_the_limit_through_shared_subtrees() {
        let (ids, mut shape) = chain(MAX_TREE_DEPTH);
        let mut heights = HashMap::new();
        let mut get = |id: &ObjectId| Ok(shape.get(id).cloned().unwrap_or_default());
        assert_eq!(
            check_depth(ids[0], &mut heights, &mut get).unwrap(),
            MAX_TREE_DEPTH
        );
        // One more level above a tree already looked at (its height is remembered).
        let top = ObjectId::of(b"top");
        shape.insert(top, vec![ids[0]]);
        let mut get = |id: &ObjectId| Ok(shape.get(id).cloned().unwrap_or_default());
        assert!(check_depth(top, &mut heights, &mut get).is_err());
        // A hostile chain: an error, not a stack overflow.
        let (ids, shape) = chain(100_000);
        let mut get = |id: &ObjectId| Ok(shape.get(id).cloned().unwrap_or_default());
        let e = check_depth(ids[0], &mut HashMap::new(), &mut get).unwrap_err();
        assert!(e.to_string().contains("deeper than 1024 levels"), "{e}");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for len in 0..64 {
            let junk: Vec<u8> = (0..len).map(|i| (i * 37 + 1) as u8).collect();
            let mut v = vec![1u8];
            v.extend(junk);
            let _ = Tree::decode(&v);
        }
        // A huge declared entry count must not allocate gigabytes.
        let bytes = [1u8, 0xff, 0xff, 0xff, 0xff, 0x0f];
        assert!(Tree::decode(&bytes).is_err());
    }
}
