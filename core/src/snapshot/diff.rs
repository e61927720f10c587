//! Differences between two snapshots (or any two trees).
//!
//! Both trees are walked together in name order; subtrees with the same id are skipped without
//! being read, so a diff costs in proportion to what changed.

use serde::Serialize;

use crate::error::Result;
use crate::format::tree::{Entry, MAX_TREE_DEPTH, Node, Tree, too_deep};
use crate::hash::ObjectId;
use crate::index::IndexReader;
use crate::paths::{join, path_depth};
use crate::repo::Repo;
use crate::vfs;

/// How an entry differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// Only in the second tree.
    Added,
    /// Only in the first tree.
    Removed,
    /// Content differs.
    Modified,
    /// Same content, different mode, owner or time.
    Metadata,
    /// A file became a directory, a link, etc.
    TypeChanged,
}

impl ChangeKind {
    /// One letter for listings: `+ - M U T`.
    pub fn letter(self) -> char {
        match self {
            ChangeKind::Added => '+',
            ChangeKind::Removed => '-',
            ChangeKind::Modified => 'M',
            ChangeKind::Metadata => 'U',
            ChangeKind::TypeChanged => 'T',
        }
    }
}

/// One difference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// Path relative to the roots (lossy UTF-8 for display).
    pub path: String,
    /// Raw path bytes.
    #[serde(skip)]
    pub path_bytes: Vec<u8>,
    /// What changed.
    pub change: ChangeKind,
    /// Whether the entry (in the second tree, or the first if removed) is a directory.
    pub is_dir: bool,
    /// Size before (0 if absent).
    pub size_before: u64,
    /// Size after (0 if absent).
    pub size_after: u64,
}

/// Totals of a diff.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DiffStats {
    /// Entries added.
    pub added: u64,
    /// Entries removed.
    pub removed: u64,
    /// Entries whose content changed.
    pub modified: u64,
    /// Entries whose metadata only changed.
    pub metadata: u64,
    /// Entries whose type changed.
    pub type_changed: u64,
    /// Bytes of added and modified files (after).
    pub bytes_added: u64,
    /// Bytes of removed and modified files (before).
    pub bytes_removed: u64,
}

struct Differ<'a> {
    repo: &'a Repo,
    reader: &'a IndexReader,
    stats: DiffStats,
    out: &'a mut dyn FnMut(Change) -> Result<()>,
}

impl Differ<'_> {
    fn emit(
        &mut self,
        path: Vec<u8>,
        change: ChangeKind,
        a: Option<&Entry>,
        b: Option<&Entry>,
    ) -> Result<()> {
        let size_before = a.map(|e| e.size()).unwrap_or(0);
        let size_after = b.map(|e| e.size()).unwrap_or(0);
        match change {
            ChangeKind::Added => {
                self.stats.added += 1;
                self.stats.bytes_added += size_after;
            }
            ChangeKind::Removed => {
                self.stats.removed += 1;
                self.stats.bytes_removed += size_before;
            }
            ChangeKind::Modified | ChangeKind::TypeChanged => {
                if change == ChangeKind::Modified {
                    self.stats.modified += 1;
                } else {
                    self.stats.type_changed += 1;
                }
                self.stats.bytes_added += size_after;
                self.stats.bytes_removed += size_before;
            }
            ChangeKind::Metadata => self.stats.metadata += 1,
        }
        let is_dir = b.or(a).is_some_and(|e| e.is_dir());
        (self.out)(Change {
            path: String::from_utf8_lossy(&path).into_owned(),
            path_bytes: path,
            change,
            is_dir,
            size_before,
            size_after,
        })
    }

    /// Report every entry below `tree` as `change`.
    fn all(&mut self, tree: ObjectId, prefix: &[u8], change: ChangeKind) -> Result<()> {
        let mut items = Vec::new();
        vfs::walk(self.repo, self.reader, tree, prefix, &mut |p, e| {
            items.push((p.to_vec(), e.clone()));
            Ok(())
        })?;
        for (p, e) in items {
            match change {
                ChangeKind::Added => self.emit(p, change, None, Some(&e))?,
                _ => self.emit(p, change, Some(&e), None)?,
            }
        }
        Ok(())
    }

    fn trees(&mut self, a: ObjectId, b: ObjectId, prefix: &[u8]) -> Result<()> {
        if a == b {
            return Ok(());
        }
        if path_depth(prefix) > MAX_TREE_DEPTH {
            return Err(too_deep(format!("'{}'", String::from_utf8_lossy(prefix))));
        }
        let ta: Tree = self.repo.read_tree_with(self.reader, &a)?;
        let tb: Tree = self.repo.read_tree_with(self.reader, &b)?;
        let (mut i, mut j) = (0, 0);
        while i < ta.entries.len() || j < tb.entries.len() {
            let ea = ta.entries.get(i);
            let eb = tb.entries.get(j);
            let ord = match (ea, eb) {
                (Some(x), Some(y)) => x.name.cmp(&y.name),
                (Some(_), None) => std::cmp::Ordering::Less,
                _ => std::cmp::Ordering::Greater,
            };
            match ord {
                std::cmp::Ordering::Less => {
                    if let Some(x) = ea {
                        self.removed(x, prefix)?;
                    }
                    i += 1;
                }
                std::cmp::Ordering::Greater => {
                    if let Some(y) = eb {
                        self.added(y, prefix)?;
                    }
                    j += 1;
                }
                std::cmp::Ordering::Equal => {
                    if let (Some(x), Some(y)) = (ea, eb) {
                        self.pair(x, y, prefix)?;
                    }
                    i += 1;
                    j += 1;
                }
            }
        }
        Ok(())
    }

    fn added(&mut self, e: &Entry, prefix: &[u8]) -> Result<()> {
        let p = join(prefix, &e.name);
        self.emit(p.clone(), ChangeKind::Added, None, Some(e))?;
        if let Node::Dir { tree } = &e.node {
            self.all(*tree, &p, ChangeKind::Added)?;
        }
        Ok(())
    }

    fn removed(&mut self, e: &Entry, prefix: &[u8]) -> Result<()> {
        let p = join(prefix, &e.name);
        self.emit(p.clone(), ChangeKind::Removed, Some(e), None)?;
        if let Node::Dir { tree } = &e.node {
            self.all(*tree, &p, ChangeKind::Removed)?;
        }
        Ok(())
    }

    fn pair(&mut self, x: &Entry, y: &Entry, prefix: &[u8]) -> Result<()> {
        let p = join(prefix, &x.name);
        let meta_differs =
            x.mode != y.mode || x.mtime_ns != y.mtime_ns || x.uid != y.uid || x.gid != y.gid;
        match (&x.node, &y.node) {
            (Node::Dir { tree: a }, Node::Dir { tree: b }) => {
                if meta_differs {
                    self.emit(p.clone(), ChangeKind::Metadata, Some(x), Some(y))?;
                }
                self.trees(*a, *b, &p)
            }
            (Node::File { chunks: a, .. }, Node::File { chunks: b, .. }) => {
                if a != b {
                    self.emit(p, ChangeKind::Modified, Some(x), Some(y))
                } else if meta_differs {
                    self.emit(p, ChangeKind::Metadata, Some(x), Some(y))
                } else {
                    Ok(())
                }
            }
            (a, b)
                if matches!(a, Node::Symlink { .. }) && matches!(b, Node::Symlink { .. })
                    || a.is_special() && std::mem::discriminant(a) == std::mem::discriminant(b) =>
            {
                // Same kind: the target or device number is what may differ.
                if a != b {
                    self.emit(p, ChangeKind::Modified, Some(x), Some(y))
                } else if meta_differs {
                    self.emit(p, ChangeKind::Metadata, Some(x), Some(y))
                } else {
                    Ok(())
                }
            }
            _ => {
                self.emit(p.clone(), ChangeKind::TypeChanged, Some(x), Some(y))?;
                if let Node::Dir { tree } = &x.node {
                    self.all(*tree, &p, ChangeKind::Removed)?;
                }
                if let Node::Dir { tree } = &y.node {
                    self.all(*tree, &p, ChangeKind::Added)?;
                }
                Ok(())
            }
        }
    }
}

/// Compare the trees `a` (before) and `b` (after), calling `out` for each difference in path
/// order.
pub fn diff(
    repo: &Repo,
    a: ObjectId,
    b: ObjectId,
    out: &mut dyn FnMut(Change) -> Result<()>,
) -> Result<DiffStats> {
    let reader = repo.index().reader()?;
    let mut d = Differ {
        repo,
        reader: &reader,
        stats: DiffStats::default(),
        out,
    };
    d.trees(a, b, b"")?;
    Ok(d.stats)
}
