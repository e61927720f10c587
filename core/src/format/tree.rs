//! Tree objects: one directory, its entries sorted by name bytes.
//!
//! A tree object's plaintext is `version:u8` followed by the postcard encoding of the entries
//! (and, in version 2, of the hard links); its id is the BLAKE3 hash of that plaintext, so
//! identical directories are stored once. A tree is written as version 1, byte for byte as
//! before version 2 existed, unless it holds a node kind or a hard link that only version 2 can
//! say (`docs/format.md`, "Trees").
//! Names are raw bytes (non-UTF-8 names survive); decoding rejects any name that could escape a
//! directory when materialised (empty, `.`, `..`, containing `/` or NUL) and unsorted or
//! duplicate names.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::envelope::decode_exact;
use crate::error::{Error, ErrorKind, Result};
use crate::hash::ObjectId;

/// Newest version of the tree encoding. A tree is written with the lowest version that can
/// hold it: [`VERSION_1`] unless it has a fifo, socket, device or hard link.
pub const VERSION: u8 = 2;

/// The first tree encoding: files, directories and symlinks only.
pub const VERSION_1: u8 = 1;

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
    /// The hard-link group of a non-directory: the entries of one snapshot with the same group
    /// are names of one file (encoded apart from the entries, [`HardLink`]).
    #[serde(skip)]
    pub link: Option<u64>,
}

/// A hard link in a version-2 tree: entry number `entry` of the tree belongs to link group
/// `group`. Groups are per snapshot: entries (of any trees of one snapshot) with the same group
/// are one file (`docs/format.md`, "Hard links").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardLink {
    /// Index of the entry in the tree's entries.
    pub entry: u32,
    /// Its link group.
    pub group: u64,
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
    /// A named pipe (version 2).
    Fifo,
    /// A Unix domain socket (version 2): only its name and metadata, no live socket.
    Socket,
    /// A character device (version 2).
    CharDevice {
        /// Device number, Linux `dev_t` as `stat` reports it.
        rdev: u64,
    },
    /// A block device (version 2).
    BlockDevice {
        /// Device number, Linux `dev_t` as `stat` reports it.
        rdev: u64,
    },
}

impl Node {
    /// Whether only tree version 2 can hold this kind.
    pub fn is_special(&self) -> bool {
        matches!(
            self,
            Node::Fifo | Node::Socket | Node::CharDevice { .. } | Node::BlockDevice { .. }
        )
    }
}

impl Entry {
    /// Whether the entry is a directory.
    pub fn is_dir(&self) -> bool {
        matches!(self.node, Node::Dir { .. })
    }

    /// The logical size: file size, target length for a symlink, 0 for the other kinds.
    pub fn size(&self) -> u64 {
        match &self.node {
            Node::File { size, .. } => *size,
            Node::Symlink { target } => target.len() as u64,
            _ => 0,
        }
    }

    /// One letter for listings, as `ls -l` shows it: `-`, `d`, `l`, `p`, `s`, `c` or `b`.
    pub fn type_char(&self) -> char {
        match self.node {
            Node::File { .. } => '-',
            Node::Dir { .. } => 'd',
            Node::Symlink { .. } => 'l',
            Node::Fifo => 'p',
            Node::Socket => 's',
            Node::CharDevice { .. } => 'c',
            Node::BlockDevice { .. } => 'b',
        }
    }
}

/// The format's name rule lives with the other path rules.
pub use crate::paths::check_name;

impl Tree {
    /// The version this tree is written with: 2 if it needs it, else 1.
    pub fn version(&self) -> u8 {
        if self
            .entries
            .iter()
            .any(|e| e.link.is_some() || e.node.is_special())
        {
            VERSION
        } else {
            VERSION_1
        }
    }

    /// The hard links of the tree, in entry order.
    fn hard_links(&self) -> Vec<HardLink> {
        self.entries
            .iter()
            .enumerate()
            .filter_map(|(i, e)| {
                e.link.map(|group| HardLink {
                    entry: i as u32,
                    group,
                })
            })
            .collect()
    }

    /// Encode as the plaintext of a tree object. Entries must already be sorted and unique.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let version = self.version();
        let mut out = vec![version];
        let err = |e| Error::other("cannot encode tree").with_source(e);
        postcard::to_io(self, &mut out).map_err(err)?;
        if version >= 2 {
            postcard::to_io(&self.hard_links(), &mut out).map_err(err)?;
        }
        Ok(out)
    }

    /// Decode the plaintext of a tree object, validating names, order, kinds and links.
    pub fn decode(bytes: &[u8]) -> Result<Tree> {
        let Some((&version, body)) = bytes.split_first() else {
            return Err(Error::corrupt("empty tree object"));
        };
        let tree = match version {
            VERSION_1 => {
                let tree: Tree = decode_exact("tree", body)?;
                if tree.entries.iter().any(|e| e.node.is_special()) {
                    return Err(Error::corrupt(
                        "tree of version 1 holds a node kind of version 2",
                    ));
                }
                tree
            }
            VERSION => {
                let (mut tree, links): (Tree, Vec<HardLink>) = decode_exact("tree", body)?;
                tree.set_links(&links)?;
                tree
            }
            v if v > VERSION => {
                return Err(Error::new(
                    ErrorKind::UnsupportedVersion,
                    format!("tree version {v}, this puce reads up to {VERSION}: upgrade puce"),
                ));
            }
            v => return Err(Error::corrupt(format!("tree has invalid version {v}"))),
        };
        tree.validate()?;
        // Content-addressed: exactly one encoding per tree (postcard accepts over-long
        // varints, which would give one tree several ids; a version-2 tree that version 1 can
        // hold is not canonical either).
        if tree.encode()? != bytes {
            return Err(Error::corrupt("tree is not in canonical encoding"));
        }
        Ok(tree)
    }

    /// Put the hard links of a version-2 tree on its entries: entry numbers strictly
    /// increasing, in range, and not directories.
    fn set_links(&mut self, links: &[HardLink]) -> Result<()> {
        let mut prev: Option<u32> = None;
        for l in links {
            if prev.is_some_and(|p| p >= l.entry) {
                return Err(Error::corrupt("tree hard links are not in entry order"));
            }
            prev = Some(l.entry);
            match self.entries.get_mut(l.entry as usize) {
                Some(e) if !e.is_dir() => e.link = Some(l.group),
                Some(_) => return Err(Error::corrupt("tree has a hard link to a directory")),
                None => return Err(Error::corrupt("tree has a hard link to no entry")),
            }
        }
        Ok(())
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
                    link: None,
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
                    link: None,
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
                    link: None,
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

    fn entry(name: &[u8], mode: u32, node: Node, link: Option<u64>) -> Entry {
        Entry {
            name: name.to_vec(),
            mode,
            mtime_ns: 0,
            uid: 0,
            gid: 6,
            node,
            link,
        }
    }

    /// A version-2 tree: each new node kind, and two names of one file.
    fn sample_v2() -> Tree {
        let file = || Node::File {
            size: 3,
            chunks: vec![ObjectId::of(b"abc")],
        };
        Tree {
            entries: vec![
                entry(b"b", 0o660, Node::BlockDevice { rdev: 0x801 }, None),
                entry(b"c", 0o666, Node::CharDevice { rdev: 0x103 }, None),
                entry(b"f", 0o644, Node::Fifo, None),
                entry(b"h1", 0o644, file(), Some(0x0123_4567_89ab_cdef)),
                entry(b"h2", 0o644, file(), Some(0x0123_4567_89ab_cdef)),
                entry(b"s", 0o755, Node::Socket, None),
            ],
        }
    }

    /// Golden: a version-2 tree object, annotated: the new node kinds, and hard links after
    /// the entries.
    #[test]
    fn golden_tree_v2_encoding() {
        let bytes = sample_v2().encode().unwrap();
        let chunk = "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85";
        let expect = [
            "02", // tree version 2
            "06", // 6 entries
            // name "b", mode 0o660, mtime 0, uid 0, gid 6, Node::BlockDevice, rdev 0x801
            "0162",
            "b003",
            "00",
            "00",
            "06",
            "06",
            "8110",
            // name "c", mode 0o666, ..., Node::CharDevice, rdev 0x103
            "0163",
            "b603",
            "00",
            "00",
            "06",
            "05",
            "8302",
            // name "f", mode 0o644, ..., Node::Fifo
            "0166",
            "a403",
            "00",
            "00",
            "06",
            "03",
            // name "h1", Node::File, size 3, 1 chunk
            "026831",
            "a403",
            "00",
            "00",
            "06",
            "00",
            "03",
            "01",
            chunk,
            // name "h2", the same file
            "026832",
            "a403",
            "00",
            "00",
            "06",
            "00",
            "03",
            "01",
            chunk,
            // name "s", mode 0o755, Node::Socket
            "0173",
            "ed03",
            "00",
            "00",
            "06",
            "04",
            // hard links: 2, entry 3 and entry 4 in group 0x0123456789abcdef (varint)
            "02",
            "03",
            "ef9bafcdf8acd19101",
            "04",
            "ef9bafcdf8acd19101",
        ]
        .concat();
        assert_eq!(hexdump(&bytes), expect);
        assert_eq!(Tree::decode(&bytes).unwrap(), sample_v2());
    }

    /// Trees without the new kinds stay version 1, byte for byte; a version-1 tree cannot hold
    /// a new kind, and a version-2 tree must need it.
    #[test]
    fn version_is_the_lowest_that_holds_the_tree() {
        assert_eq!(sample().encode().unwrap()[0], VERSION_1);
        let mut t = sample();
        t.entries[0].link = Some(7);
        assert_eq!(t.encode().unwrap()[0], 2);
        assert_eq!(Tree::decode(&t.encode().unwrap()).unwrap(), t);
        // Version 1 with a fifo in it.
        let mut v1_fifo = sample().encode().unwrap();
        let mut fifo = sample();
        fifo.entries[1].node = Node::Fifo;
        let bytes = fifo.encode().unwrap();
        v1_fifo.clear();
        v1_fifo.push(1);
        v1_fifo.extend_from_slice(&bytes[1..]);
        let e = Tree::decode(&v1_fifo).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
        // Version 2 holding only what version 1 can say: not canonical.
        let mut v2 = sample().encode().unwrap();
        v2[0] = 2;
        v2.push(0); // no hard links
        let e = Tree::decode(&v2).unwrap_err();
        assert!(e.to_string().contains("canonical"), "{e}");
        // A newer version: upgrade, not damage.
        let mut v3 = sample().encode().unwrap();
        v3[0] = 3;
        let e = Tree::decode(&v3).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::UnsupportedVersion, "{e}");
    }

    #[test]
    fn bad_hard_links_are_corrupt() {
        let body = sample().encode().unwrap();
        // Entry 2 is a directory; entry 3 does not exist; entries out of order.
        for links in [
            &[(2u8, 1u8)][..],
            &[(3, 1)],
            &[(1, 1), (0, 1)],
            &[(0, 1), (0, 1)],
        ] {
            let mut b = body.clone();
            b[0] = 2;
            b.push(links.len() as u8);
            for (entry, group) in links {
                b.extend_from_slice(&[*entry, *group]);
            }
            let e = Tree::decode(&b).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Corrupt, "{links:?}: {e}");
        }
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
