//! The three-way tree merge: one iterative walker over the directories both sides changed,
//! resolving each name by a [`Policy`] (one per kind of merge, see the parent module).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::name::{conflict_name, wanted_with};
use crate::error::Result;
use crate::format::tree::{Entry, MAX_TREE_DEPTH, Node, Tree, too_deep};
use crate::hash::ObjectId;
use crate::paths::join;

/// Where the merge reads trees from and writes the trees it builds.
pub trait TreeStore {
    /// Read a tree.
    fn get(&mut self, id: &ObjectId) -> Result<Tree>;
    /// Store a tree (its children were stored before it) and return its id.
    fn put(&mut self, tree: &Tree) -> Result<ObjectId>;
}

/// One side of a merge: a root tree and the node name used for its conflict copies.
#[derive(Debug, Clone)]
pub struct Side {
    /// Root tree of the side.
    pub root: ObjectId,
    /// Author of the side (see [`crate::history::author`]).
    pub node: String,
}

/// A name both sides changed: one version kept the name, the other was renamed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Conflict {
    /// Path of the contested name, relative to the space's root, `/`-separated.
    #[serde(serialize_with = "lossy")]
    pub path: Vec<u8>,
    /// Path the other version was given.
    #[serde(serialize_with = "lossy")]
    pub copy: Vec<u8>,
    /// Author of the renamed version.
    pub node: String,
}

fn lossy<S: serde::Serializer>(b: &[u8], s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(b))
}

/// The result of a merge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merged {
    /// Root tree of the merged state.
    pub root: ObjectId,
    /// Conflict copies made, in path order (a directory's entries in name order, each
    /// directory's inner conflicts right after its own name).
    pub conflicts: Vec<Conflict>,
}

/// Which version keeps the name when both sides changed an entry (for directories merged
/// recursively: whose metadata the merged directory gets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Winner {
    /// The newer version: later mtime, then greater node name, then greater encoding, so that
    /// the result does not depend on the order of the sides.
    Newer,
    /// Always side `b`.
    B,
}

/// The time written into a conflict copy's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyTime {
    /// The modification time of the renamed version.
    Entry,
    /// This time (nanoseconds since the epoch): when the merge is made.
    At(i64),
}

/// How a merge resolves the names both sides changed differently. Where only one side changed
/// a name, that side's version wins (a deletion included); where one side deleted what the
/// other changed, the change wins; two directories merge recursively. The rest is this policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Who keeps the name.
    pub winner: Winner,
    /// A side whose version has the base's content (a metadata-only change) yields to the
    /// other side's content change; otherwise both versions are kept.
    pub metadata_change_yields: bool,
    /// A directory keeps the name against a file or a symlink, whichever is newer.
    pub dir_keeps_name: bool,
    /// The time in a conflict copy's name.
    pub copy_time: CopyTime,
    /// Conflict copies avoid every name either side has in the directory, not only the names
    /// of the merged directory.
    pub copies_avoid_side_names: bool,
}

impl Policy {
    /// Joining two replicated heads of a space ([`super::merge_heads`]): neither side is local,
    /// every node must build the same tree, so the newer version keeps the name.
    pub const HEADS: Policy = Policy {
        winner: Winner::Newer,
        metadata_change_yields: false,
        dir_keeps_name: true,
        copy_time: CopyTime::Entry,
        copies_avoid_side_names: true,
    };

    /// A mount's pending changes (`a`, ours) over what arrived meanwhile (`b`, theirs), merged
    /// at `time_ns` ([`super::merge3`]): the version others already see keeps its name.
    pub const fn pending(time_ns: i64) -> Policy {
        Policy {
            winner: Winner::B,
            metadata_change_yields: true,
            dir_keeps_name: false,
            copy_time: CopyTime::At(time_ns),
            copies_avoid_side_names: false,
        }
    }
}

/// Three-way merge of the trees of `a` and `b` against `base` (none when the histories share
/// nothing), resolved by `policy`. Subtrees equal on both sides, or unchanged on one, are not
/// read. Iterative: directories nested deeper than [`MAX_TREE_DEPTH`] are an error.
pub fn merge(
    store: &mut dyn TreeStore,
    policy: &Policy,
    base: Option<ObjectId>,
    a: &Side,
    b: &Side,
) -> Result<Merged> {
    let mut w = Walker {
        store,
        policy,
        a_node: &a.node,
        b_node: &b.node,
        conflicts: Vec::new(),
    };
    let root = match unchanged(base.as_ref(), &a.root, &b.root) {
        Some(id) => id,
        None => w.run(base, a.root, b.root)?,
    };
    Ok(Merged {
        root,
        conflicts: w.conflicts,
    })
}

/// The merged tree without reading anything, when the sides are equal or one is the base.
fn unchanged(base: Option<&ObjectId>, a: &ObjectId, b: &ObjectId) -> Option<ObjectId> {
    if a == b || base == Some(a) {
        Some(*b)
    } else if base == Some(b) {
        Some(*a)
    } else {
        None
    }
}

/// How one name resolves.
enum Pick {
    /// This entry (none: the name is gone).
    Take(Option<Entry>),
    /// Two directories to merge; the merged one gets `meta`'s name and metadata.
    Merge {
        base: Option<ObjectId>,
        a: ObjectId,
        b: ObjectId,
        meta: Entry,
    },
    /// Both kept: `kept` under the name, `copy` renamed, made by `node`.
    Both {
        kept: Entry,
        copy: Entry,
        node: String,
    },
}

/// A directory being merged.
struct Frame {
    path: Vec<u8>,
    base: Tree,
    a: Tree,
    b: Tree,
    /// Names of either side, in order.
    names: Vec<Vec<u8>>,
    next: usize,
    out: BTreeMap<Vec<u8>, Entry>,
    /// Copies whose final names are settled once every name is known: the wanted name (see
    /// [`conflict_name`]), the entry, the index of its conflict.
    copies: Vec<(Vec<u8>, Entry, usize)>,
    /// The entry of the subdirectory being merged (the frame above this one).
    waiting: Option<Entry>,
}

struct Walker<'a> {
    store: &'a mut dyn TreeStore,
    policy: &'a Policy,
    a_node: &'a str,
    b_node: &'a str,
    conflicts: Vec<Conflict>,
}

impl Walker<'_> {
    fn frame(
        &mut self,
        path: Vec<u8>,
        base: Option<ObjectId>,
        a: ObjectId,
        b: ObjectId,
    ) -> Result<Frame> {
        let base = match base {
            Some(id) => self.store.get(&id)?,
            None => Tree::default(),
        };
        let a = self.store.get(&a)?;
        let b = self.store.get(&b)?;
        let names: BTreeSet<&[u8]> = a
            .entries
            .iter()
            .chain(b.entries.iter())
            .map(|e| e.name.as_slice())
            .collect();
        let names = names.into_iter().map(<[u8]>::to_vec).collect();
        Ok(Frame {
            path,
            base,
            a,
            b,
            names,
            next: 0,
            out: BTreeMap::new(),
            copies: Vec::new(),
            waiting: None,
        })
    }

    /// Merge the root trees `a` and `b`, one directory frame per level on an explicit stack.
    fn run(&mut self, base: Option<ObjectId>, a: ObjectId, b: ObjectId) -> Result<ObjectId> {
        let mut stack = vec![self.frame(Vec::new(), base, a, b)?];
        while let Some(top) = stack.last_mut() {
            let Some(name) = top.names.get(top.next).cloned() else {
                let done = stack.pop().expect("the stack has a top");
                let id = self.finish(done)?;
                match stack.last_mut() {
                    None => return Ok(id),
                    Some(parent) => {
                        let mut e = parent.waiting.take().expect("a parent waits for its child");
                        e.node = Node::Dir { tree: id };
                        parent.out.insert(e.name.clone(), e);
                    }
                }
                continue;
            };
            top.next += 1;
            let pick = self.resolve(top.base.get(&name), top.a.get(&name), top.b.get(&name));
            match pick {
                Pick::Take(e) => {
                    if let Some(e) = e {
                        top.out.insert(name, e);
                    }
                }
                Pick::Both { kept, copy, node } => {
                    let time = match self.policy.copy_time {
                        CopyTime::Entry => copy.mtime_ns,
                        CopyTime::At(t) => t,
                    };
                    let wanted = conflict_name(&name, &node, time);
                    top.copies.push((wanted, copy, self.conflicts.len()));
                    self.conflicts.push(Conflict {
                        path: join(&top.path, &name),
                        copy: Vec::new(),
                        node,
                    });
                    top.out.insert(name, kept);
                }
                Pick::Merge {
                    base,
                    a,
                    b,
                    mut meta,
                } => {
                    if let Some(id) = unchanged(base.as_ref(), &a, &b) {
                        meta.node = Node::Dir { tree: id };
                        top.out.insert(name, meta);
                        continue;
                    }
                    let path = join(&top.path, &name);
                    top.waiting = Some(meta);
                    // The root's tree is at depth 0 (`docs/format.md`, "Trees"); the child's
                    // depth is the number of frames above it.
                    if stack.len() > MAX_TREE_DEPTH {
                        return Err(too_deep(format!("'{}'", String::from_utf8_lossy(&path))));
                    }
                    let child = self.frame(path, base, a, b)?;
                    stack.push(child);
                }
            }
        }
        unreachable!("the loop returns when the root's frame is done")
    }

    /// How the name whose versions are `x` (base), `a` and `b` resolves.
    fn resolve(&self, x: Option<&Entry>, a: Option<&Entry>, b: Option<&Entry>) -> Pick {
        let (a, b) = match (a, b) {
            _ if a == b || a == x => return Pick::Take(b.cloned()),
            _ if b == x => return Pick::Take(a.cloned()),
            (Some(a), Some(b)) => (a, b),
            // One side deleted what the other changed: the change wins.
            (a, b) => return Pick::Take(a.or(b).cloned()),
        };
        let a_wins = match self.policy.winner {
            Winner::Newer => newer((a, self.a_node), (b, self.b_node)),
            Winner::B => false,
        };
        let winner = if a_wins { a } else { b };
        if let (Node::Dir { tree: ta }, Node::Dir { tree: tb }) = (&a.node, &b.node) {
            let base = match x.map(|x| &x.node) {
                Some(Node::Dir { tree }) => Some(*tree),
                _ => None,
            };
            return Pick::Merge {
                base,
                a: *ta,
                b: *tb,
                meta: winner.clone(),
            };
        }
        if a.node == b.node {
            return Pick::Take(Some(winner.clone()));
        }
        if self.policy.metadata_change_yields {
            let x = x.map(|x| &x.node);
            if x == Some(&a.node) {
                return Pick::Take(Some(b.clone()));
            }
            if x == Some(&b.node) {
                return Pick::Take(Some(a.clone()));
            }
        }
        let a_keeps = if self.policy.dir_keeps_name && a.is_dir() != b.is_dir() {
            a.is_dir()
        } else {
            a_wins
        };
        let (kept, copy, node) = if a_keeps {
            (a, b, self.b_node)
        } else {
            (b, a, self.a_node)
        };
        Pick::Both {
            kept: kept.clone(),
            copy: copy.clone(),
            node: node.to_string(),
        }
    }

    /// Give each copy of `f` a name that no other entry took (nor, by policy, either side
    /// had), then store the merged directory.
    fn finish(&mut self, mut f: Frame) -> Result<ObjectId> {
        for (wanted, mut copy, conflict) in std::mem::take(&mut f.copies) {
            let taken = |n: &[u8]| {
                f.out.contains_key(n)
                    || (self.policy.copies_avoid_side_names
                        && f.names.binary_search_by(|x| x.as_slice().cmp(n)).is_ok())
            };
            let mut n = 1;
            while taken(&wanted_with(&wanted, n)) {
                n += 1;
            }
            copy.name = wanted_with(&wanted, n);
            self.conflicts[conflict].copy = join(&f.path, &copy.name);
            f.out.insert(copy.name.clone(), copy);
        }
        self.store.put(&Tree {
            entries: f.out.into_values().collect(),
        })
    }
}

/// Whether `a` is the newer version: later mtime, then greater node name, then greater encoding.
fn newer(a: (&Entry, &str), b: (&Entry, &str)) -> bool {
    let enc = |e: &Entry| postcard::to_stdvec(e).unwrap_or_default();
    (a.0.mtime_ns, a.1, enc(a.0)) > (b.0.mtime_ns, b.1, enc(b.0))
}
