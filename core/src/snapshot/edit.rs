//! Editing a snapshot's tree without materialising it: a mutable overlay over a stored root.
//!
//! An [`EditTree`] starts from a root tree id and loads a directory into memory only when an
//! edit touches it; untouched subtrees stay references to their stored ids. File content is
//! either stored chunks or a *local* file (named by a number the caller resolves to an open
//! file), chunked with the repository's chunker when the tree is written. Writing stores new
//! objects through a [`Saver`] and reuses every unchanged subtree, so a commit costs in
//! proportion to what changed. The operations follow POSIX: errors say which path and why, as
//! an [`EditError`] that maps one-to-one to an errno.
//!
//! [`Edit`] is the serialisable form of one operation (the FUSE mount journals them); its
//! postcard encoding is pinned by a golden test.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::chunking::Chunker;
use crate::error::{Error, ErrorKind, Result};
use crate::format::pack::Kind;
use crate::format::tree::{Entry, MAX_TREE_DEPTH, Node, Tree, too_deep};
use crate::hash::ObjectId;
use crate::index::IndexReader;
use crate::paths;
use crate::repo::Repo;
use crate::saver::Saver;

/// Where trees come from (a cache in the mount, the repository directly otherwise).
pub trait TreeSource {
    /// The decoded tree `id`.
    fn tree(&self, id: &ObjectId) -> Result<Arc<Tree>>;
}

/// Trees read straight from a repository through one index view.
pub struct RepoTrees<'a> {
    /// The repository.
    pub repo: &'a Repo,
    /// The index view.
    pub reader: &'a IndexReader,
}

impl TreeSource for RepoTrees<'_> {
    fn tree(&self, id: &ObjectId) -> Result<Arc<Tree>> {
        Ok(Arc::new(self.repo.read_tree_with(self.reader, id)?))
    }
}

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
    fn of(e: &Entry) -> Meta {
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
    /// Replace the content of an existing regular file.
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
    /// Change metadata; `None` fields are kept.
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

type EResult<T> = std::result::Result<T, EditError>;

#[derive(Debug, Clone)]
enum ENode {
    File { meta: Meta, content: Content },
    Symlink { meta: Meta, target: Vec<u8> },
    Dir { meta: Meta, dir: Dir },
}

#[derive(Debug, Clone)]
enum Dir {
    Stored(ObjectId),
    Loaded(BTreeMap<Vec<u8>, ENode>),
}

impl ENode {
    fn from_entry(e: &Entry) -> ENode {
        let meta = Meta::of(e);
        match &e.node {
            Node::File { size, chunks } => ENode::File {
                meta,
                content: Content::Stored {
                    size: *size,
                    chunks: chunks.clone(),
                },
            },
            Node::Symlink { target } => ENode::Symlink {
                meta,
                target: target.clone(),
            },
            Node::Dir { tree } => ENode::Dir {
                meta,
                dir: Dir::Stored(*tree),
            },
        }
    }

    fn meta_mut(&mut self) -> &mut Meta {
        match self {
            ENode::File { meta, .. } | ENode::Symlink { meta, .. } | ENode::Dir { meta, .. } => {
                meta
            }
        }
    }

    fn info(&self) -> Info {
        match self {
            ENode::File { meta, content } => Info {
                kind: NodeKind::File,
                meta: *meta,
                size: match content {
                    Content::Stored { size, .. } => *size,
                    Content::Local(_) => 0,
                },
                local: match content {
                    Content::Local(id) => Some(*id),
                    Content::Stored { .. } => None,
                },
                target: None,
            },
            ENode::Symlink { meta, target } => Info {
                kind: NodeKind::Symlink,
                meta: *meta,
                size: target.len() as u64,
                local: None,
                target: Some(target.clone()),
            },
            ENode::Dir { meta, .. } => Info {
                kind: NodeKind::Dir,
                meta: *meta,
                size: 0,
                local: None,
                target: None,
            },
        }
    }
}

fn info_of_entry(e: &Entry) -> Info {
    let meta = Meta::of(e);
    match &e.node {
        Node::File { size, .. } => Info {
            kind: NodeKind::File,
            meta,
            size: *size,
            local: None,
            target: None,
        },
        Node::Symlink { target } => Info {
            kind: NodeKind::Symlink,
            meta,
            size: target.len() as u64,
            local: None,
            target: Some(target.clone()),
        },
        Node::Dir { .. } => Info {
            kind: NodeKind::Dir,
            meta,
            size: 0,
            local: None,
            target: None,
        },
    }
}

/// Split a path into checked components ([`paths::split`]: empty components and `.` are
/// skipped), at most [`MAX_TREE_DEPTH`] of them.
pub fn split_path(path: &[u8]) -> EResult<Vec<&[u8]>> {
    let out = paths::split(path).map_err(|c| {
        EditError::Invalid(format!(
            "invalid name {:?} in path '{}'",
            String::from_utf8_lossy(c),
            String::from_utf8_lossy(path)
        ))
    })?;
    if out.len() > MAX_TREE_DEPTH {
        return Err(EditError::Invalid(format!(
            "'{}' is nested more than {MAX_TREE_DEPTH} folders deep, deeper than puce stores",
            String::from_utf8_lossy(path)
        )));
    }
    Ok(out)
}

fn show(comps: &[&[u8]]) -> String {
    String::from_utf8_lossy(&comps.join(&b'/')).into_owned()
}

/// A walk position for read-only lookups: either inside loaded nodes or inside stored trees.
enum At<'a> {
    Loaded(&'a BTreeMap<Vec<u8>, ENode>),
    Stored(Arc<Tree>),
}

/// The overlay. See the module documentation.
#[derive(Debug, Clone)]
pub struct EditTree {
    root: Dir,
    changed: bool,
}

impl EditTree {
    /// An overlay over the stored root tree `root`, or over an empty directory.
    pub fn new(root: Option<ObjectId>) -> EditTree {
        EditTree {
            root: match root {
                Some(id) => Dir::Stored(id),
                None => Dir::Loaded(BTreeMap::new()),
            },
            changed: false,
        }
    }

    /// Whether any edit succeeded since the tree was created.
    pub fn is_changed(&self) -> bool {
        self.changed
    }

    fn load(src: &dyn TreeSource, id: &ObjectId) -> Result<BTreeMap<Vec<u8>, ENode>> {
        let t = src.tree(id)?;
        Ok(t.entries
            .iter()
            .map(|e| (e.name.clone(), ENode::from_entry(e)))
            .collect())
    }

    fn loaded<'a>(
        dir: &'a mut Dir,
        src: &dyn TreeSource,
    ) -> Result<&'a mut BTreeMap<Vec<u8>, ENode>> {
        if let Dir::Stored(id) = dir {
            *dir = Dir::Loaded(EditTree::load(src, id)?);
        }
        match dir {
            Dir::Loaded(m) => Ok(m),
            Dir::Stored(_) => Err(Error::other("internal: directory not loaded")),
        }
    }

    /// The directory at `comps`, loaded for editing.
    fn dir_mut(
        &mut self,
        src: &dyn TreeSource,
        comps: &[&[u8]],
    ) -> EResult<&mut BTreeMap<Vec<u8>, ENode>> {
        let mut cur = EditTree::loaded(&mut self.root, src)?;
        for (i, c) in comps.iter().enumerate() {
            match cur.get_mut(*c) {
                Some(ENode::Dir { dir, .. }) => cur = EditTree::loaded(dir, src)?,
                Some(_) => return Err(EditError::NotADirectory(show(&comps[..=i]))),
                None => return Err(EditError::NotFound(show(&comps[..=i]))),
            }
        }
        Ok(cur)
    }

    /// Where the directory `comps` is, for reading.
    fn dir_at<'a>(&'a self, src: &dyn TreeSource, comps: &[&[u8]]) -> EResult<At<'a>> {
        let mut at = match &self.root {
            Dir::Loaded(m) => At::Loaded(m),
            Dir::Stored(id) => At::Stored(src.tree(id)?),
        };
        for (i, c) in comps.iter().enumerate() {
            at = match at {
                At::Loaded(m) => match m.get(*c) {
                    Some(ENode::Dir {
                        dir: Dir::Loaded(m),
                        ..
                    }) => At::Loaded(m),
                    Some(ENode::Dir {
                        dir: Dir::Stored(id),
                        ..
                    }) => At::Stored(src.tree(id)?),
                    Some(_) => return Err(EditError::NotADirectory(show(&comps[..=i]))),
                    None => return Err(EditError::NotFound(show(&comps[..=i]))),
                },
                At::Stored(t) => match t.get(c).map(|e| &e.node) {
                    Some(Node::Dir { tree }) => At::Stored(src.tree(tree)?),
                    Some(_) => return Err(EditError::NotADirectory(show(&comps[..=i]))),
                    None => return Err(EditError::NotFound(show(&comps[..=i]))),
                },
            };
        }
        Ok(at)
    }

    /// What is at `path`: `None` if nothing (its parent exists), an error if a parent is
    /// missing or not a directory. The empty path is the root directory.
    pub fn lookup(&self, src: &dyn TreeSource, path: &[u8]) -> EResult<Option<Info>> {
        let comps = split_path(path)?;
        let Some((name, parent)) = comps.split_last() else {
            return Ok(Some(Info {
                kind: NodeKind::Dir,
                meta: Meta {
                    mode: 0o755,
                    mtime_ns: 0,
                    uid: 0,
                    gid: 0,
                },
                size: 0,
                local: None,
                target: None,
            }));
        };
        Ok(match self.dir_at(src, parent)? {
            At::Loaded(m) => m.get(*name).map(ENode::info),
            At::Stored(t) => t.get(name).map(info_of_entry),
        })
    }

    /// The entries of the directory at `path`, in name order.
    pub fn list(&self, src: &dyn TreeSource, path: &[u8]) -> EResult<Vec<(Vec<u8>, Info)>> {
        let comps = split_path(path)?;
        Ok(match self.dir_at(src, &comps)? {
            At::Loaded(m) => m.iter().map(|(k, v)| (k.clone(), v.info())).collect(),
            At::Stored(t) => t
                .entries
                .iter()
                .map(|e| (e.name.clone(), info_of_entry(e)))
                .collect(),
        })
    }

    /// The content of the regular file at `path`.
    pub fn content(&self, src: &dyn TreeSource, path: &[u8]) -> EResult<Content> {
        let comps = split_path(path)?;
        let Some((name, parent)) = comps.split_last() else {
            return Err(EditError::IsADirectory(String::new()));
        };
        let node = match self.dir_at(src, parent)? {
            At::Loaded(m) => m.get(*name).map(|n| match n {
                ENode::File { content, .. } => Ok(content.clone()),
                ENode::Dir { .. } => Err(EditError::IsADirectory(show(&comps))),
                ENode::Symlink { .. } => Err(EditError::Invalid(format!(
                    "'{}' is a symbolic link",
                    show(&comps)
                ))),
            }),
            At::Stored(t) => t.get(name).map(|e| match &e.node {
                Node::File { size, chunks } => Ok(Content::Stored {
                    size: *size,
                    chunks: chunks.clone(),
                }),
                Node::Dir { .. } => Err(EditError::IsADirectory(show(&comps))),
                Node::Symlink { .. } => Err(EditError::Invalid(format!(
                    "'{}' is a symbolic link",
                    show(&comps)
                ))),
            }),
        };
        node.unwrap_or_else(|| Err(EditError::NotFound(show(&comps))))
    }

    /// The local content numbers still referenced by the tree.
    pub fn local_ids(&self) -> Vec<u64> {
        self.local_paths().into_iter().map(|(_, id)| id).collect()
    }

    /// The paths of the files whose content is local, with their numbers (iterative: renames
    /// can nest loaded directories deeper than any path names).
    pub fn local_paths(&self) -> Vec<(Vec<u8>, u64)> {
        let mut out = Vec::new();
        let Dir::Loaded(root) = &self.root else {
            return out;
        };
        type Loaded = BTreeMap<Vec<u8>, ENode>;
        let mut stack: Vec<(Vec<u8>, &Loaded)> = vec![(Vec::new(), root)];
        while let Some((prefix, m)) = stack.pop() {
            let mut subdirs = Vec::new();
            for (name, n) in m {
                let mut p = prefix.clone();
                if !p.is_empty() {
                    p.push(b'/');
                }
                p.extend_from_slice(name);
                match n {
                    ENode::File {
                        content: Content::Local(id),
                        ..
                    } => out.push((p, *id)),
                    ENode::Dir {
                        dir: Dir::Loaded(m),
                        ..
                    } => subdirs.push((p, m)),
                    _ => {}
                }
            }
            // Depth-first in name order, as before.
            stack.extend(subdirs.into_iter().rev());
        }
        out
    }

    fn touch_dir(&mut self, src: &dyn TreeSource, comps: &[&[u8]], time_ns: i64) -> EResult<()> {
        if let Some((name, parent)) = comps.split_last() {
            let m = self.dir_mut(src, parent)?;
            if let Some(n) = m.get_mut(*name) {
                n.meta_mut().mtime_ns = time_ns;
            }
        }
        Ok(())
    }

    fn insert_new(
        &mut self,
        src: &dyn TreeSource,
        path: &[u8],
        node: ENode,
        time_ns: i64,
    ) -> EResult<()> {
        let comps = split_path(path)?;
        let Some((name, parent)) = comps.split_last() else {
            return Err(EditError::Exists("/".into()));
        };
        let m = self.dir_mut(src, parent)?;
        if m.contains_key(*name) {
            return Err(EditError::Exists(show(&comps)));
        }
        m.insert(name.to_vec(), node);
        self.touch_dir(src, parent, time_ns)?;
        self.changed = true;
        Ok(())
    }

    fn is_empty_dir(src: &dyn TreeSource, dir: &Dir) -> Result<bool> {
        Ok(match dir {
            Dir::Loaded(m) => m.is_empty(),
            Dir::Stored(id) => src.tree(id)?.entries.is_empty(),
        })
    }

    /// Apply one edit.
    pub fn apply(&mut self, src: &dyn TreeSource, edit: &Edit) -> EResult<()> {
        match edit {
            Edit::Mkdir {
                path,
                meta,
                time_ns,
            } => self.insert_new(
                src,
                path,
                ENode::Dir {
                    meta: *meta,
                    dir: Dir::Loaded(BTreeMap::new()),
                },
                *time_ns,
            ),
            Edit::Symlink {
                path,
                target,
                meta,
                time_ns,
            } => {
                if target.is_empty() || target.contains(&0) {
                    return Err(EditError::Invalid(
                        "a symbolic link target must be non-empty and without NUL".into(),
                    ));
                }
                self.insert_new(
                    src,
                    path,
                    ENode::Symlink {
                        meta: *meta,
                        target: target.clone(),
                    },
                    *time_ns,
                )
            }
            Edit::Create {
                path,
                meta,
                content,
                time_ns,
            } => self.insert_new(
                src,
                path,
                ENode::File {
                    meta: *meta,
                    content: content.clone(),
                },
                *time_ns,
            ),
            Edit::SetContent { path, content } => {
                let comps = split_path(path)?;
                let Some((name, parent)) = comps.split_last() else {
                    return Err(EditError::IsADirectory("/".into()));
                };
                let m = self.dir_mut(src, parent)?;
                match m.get_mut(*name) {
                    Some(ENode::File { content: c, .. }) => *c = content.clone(),
                    Some(ENode::Dir { .. }) => return Err(EditError::IsADirectory(show(&comps))),
                    Some(ENode::Symlink { .. }) => {
                        return Err(EditError::Invalid(format!(
                            "'{}' is a symbolic link",
                            show(&comps)
                        )));
                    }
                    None => return Err(EditError::NotFound(show(&comps))),
                }
                self.changed = true;
                Ok(())
            }
            Edit::Remove { path, dir, time_ns } => {
                let comps = split_path(path)?;
                let Some((name, parent)) = comps.split_last() else {
                    return Err(EditError::Invalid(
                        "the root directory cannot be removed".into(),
                    ));
                };
                let m = self.dir_mut(src, parent)?;
                match (m.get(*name), dir) {
                    (None, _) => return Err(EditError::NotFound(show(&comps))),
                    (Some(ENode::Dir { .. }), false) => {
                        return Err(EditError::IsADirectory(show(&comps)));
                    }
                    (Some(ENode::Dir { dir: d, .. }), true) => {
                        if !EditTree::is_empty_dir(src, d)? {
                            return Err(EditError::NotEmpty(show(&comps)));
                        }
                    }
                    (Some(_), true) => return Err(EditError::NotADirectory(show(&comps))),
                    (Some(_), false) => {}
                }
                m.remove(*name);
                self.touch_dir(src, parent, *time_ns)?;
                self.changed = true;
                Ok(())
            }
            Edit::Rename {
                from,
                to,
                noreplace,
                time_ns,
            } => self.rename(src, from, to, *noreplace, *time_ns),
            Edit::SetMeta {
                path,
                mode,
                uid,
                gid,
                mtime_ns,
            } => {
                let comps = split_path(path)?;
                let Some((name, parent)) = comps.split_last() else {
                    return Err(EditError::Invalid(
                        "the root directory's metadata is not stored".into(),
                    ));
                };
                let m = self.dir_mut(src, parent)?;
                let node = m
                    .get_mut(*name)
                    .ok_or_else(|| EditError::NotFound(show(&comps)))?;
                let meta = node.meta_mut();
                if let Some(v) = mode {
                    meta.mode = v & 0o7777;
                }
                if let Some(v) = uid {
                    meta.uid = *v;
                }
                if let Some(v) = gid {
                    meta.gid = *v;
                }
                if let Some(v) = mtime_ns {
                    meta.mtime_ns = *v;
                }
                self.changed = true;
                Ok(())
            }
        }
    }

    fn rename(
        &mut self,
        src: &dyn TreeSource,
        from: &[u8],
        to: &[u8],
        noreplace: bool,
        time_ns: i64,
    ) -> EResult<()> {
        let fc = split_path(from)?;
        let tc = split_path(to)?;
        let (Some((fname, fparent)), Some((tname, tparent))) = (fc.split_last(), tc.split_last())
        else {
            return Err(EditError::Invalid(
                "the root directory cannot be renamed".into(),
            ));
        };
        if tc.len() > fc.len() && tc[..fc.len()] == fc[..] {
            return Err(EditError::Invalid(format!(
                "cannot move '{}' into itself",
                show(&fc)
            )));
        }
        let src_info = self
            .lookup(src, from)?
            .ok_or_else(|| EditError::NotFound(show(&fc)))?;
        let dst_info = self.lookup(src, to)?;
        if fc == tc {
            return Ok(());
        }
        if let Some(d) = &dst_info {
            if noreplace {
                return Err(EditError::Exists(show(&tc)));
            }
            match (src_info.kind == NodeKind::Dir, d.kind == NodeKind::Dir) {
                (true, false) => return Err(EditError::NotADirectory(show(&tc))),
                (false, true) => return Err(EditError::IsADirectory(show(&tc))),
                (true, true) => {
                    let m = self.dir_mut(src, tparent)?;
                    if let Some(ENode::Dir { dir, .. }) = m.get(*tname)
                        && !EditTree::is_empty_dir(src, dir)?
                    {
                        return Err(EditError::NotEmpty(show(&tc)));
                    }
                }
                (false, false) => {}
            }
        }
        // The target's parent must exist before anything moves.
        self.dir_mut(src, tparent)?;
        let node = self
            .dir_mut(src, fparent)?
            .remove(*fname)
            .ok_or_else(|| EditError::NotFound(show(&fc)))?;
        self.dir_mut(src, tparent)?.insert(tname.to_vec(), node);
        self.touch_dir(src, fparent, time_ns)?;
        self.touch_dir(src, tparent, time_ns)?;
        self.changed = true;
        Ok(())
    }

    /// Store the tree: chunk local files, store new trees, reuse unchanged subtrees. Returns
    /// the root tree id. `open_local` opens the local file of a content number.
    pub fn write(
        &self,
        repo: &Repo,
        saver: &Saver,
        open_local: &dyn Fn(u64) -> Result<File>,
    ) -> Result<ObjectId> {
        let mut w = Writer {
            repo,
            saver,
            reader: repo.index().reader()?,
            reader_gen: saver.generation(),
            chunker: None,
            open_local,
        };
        match &self.root {
            Dir::Stored(id) => Ok(*id),
            Dir::Loaded(m) => w.dir(m, 0),
        }
    }
}

struct Writer<'a> {
    repo: &'a Repo,
    saver: &'a Saver,
    reader: IndexReader,
    reader_gen: u64,
    chunker: Option<Chunker<File>>,
    open_local: &'a dyn Fn(u64) -> Result<File>,
}

impl Writer<'_> {
    fn reader(&mut self) -> Result<&IndexReader> {
        let g = self.saver.generation();
        if g != self.reader_gen {
            self.reader = self.repo.index().reader()?;
            self.reader_gen = g;
        }
        Ok(&self.reader)
    }

    /// Store the directory `m`, `depth` levels below the root.
    fn dir(&mut self, m: &BTreeMap<Vec<u8>, ENode>, depth: usize) -> Result<ObjectId> {
        if depth > MAX_TREE_DEPTH {
            return Err(too_deep("a folder of the mount"));
        }
        let mut entries = Vec::with_capacity(m.len());
        for (name, n) in m {
            let (meta, node) = match n {
                ENode::File { meta, content } => match content {
                    Content::Stored { size, chunks } => (
                        *meta,
                        Node::File {
                            size: *size,
                            chunks: chunks.clone(),
                        },
                    ),
                    Content::Local(id) => {
                        let (size, chunks, mtime_ns) = self.local(*id)?;
                        (Meta { mtime_ns, ..*meta }, Node::File { size, chunks })
                    }
                },
                ENode::Symlink { meta, target } => (
                    *meta,
                    Node::Symlink {
                        target: target.clone(),
                    },
                ),
                ENode::Dir { meta, dir } => (
                    *meta,
                    Node::Dir {
                        tree: match dir {
                            Dir::Stored(id) => *id,
                            Dir::Loaded(m) => self.dir(m, depth + 1)?,
                        },
                    },
                ),
            };
            entries.push(Entry {
                name: name.clone(),
                mode: meta.mode,
                mtime_ns: meta.mtime_ns,
                uid: meta.uid,
                gid: meta.gid,
                node,
            });
        }
        let bytes = Tree { entries }.encode()?;
        let id = ObjectId::of(&bytes);
        self.reader()?;
        self.saver.save(&self.reader, id, Kind::Tree, bytes)?;
        Ok(id)
    }

    fn local(&mut self, id: u64) -> Result<(u64, Vec<ObjectId>, i64)> {
        let f = (self.open_local)(id)?;
        let md = f.metadata().map_err(|e| {
            Error::other(format!("cannot stat local file {id:016x}")).with_source(e)
        })?;
        let mtime_ns = md.mtime().saturating_mul(1_000_000_000) + md.mtime_nsec();
        let params = self.repo.config().chunker;
        let mut chunker = match self.chunker.take() {
            Some(mut c) => {
                c.reset(f);
                c
            }
            None => Chunker::new(f, params, 4 << 20),
        };
        let mut chunks = Vec::new();
        let mut size = 0u64;
        let result = loop {
            let chunk = match chunker.next_chunk() {
                Ok(Some(c)) => c,
                Ok(None) => break Ok(()),
                Err(e) => {
                    break Err(
                        Error::other(format!("cannot read local file {id:016x}")).with_source(e)
                    );
                }
            };
            let cid = ObjectId::of(chunk);
            size += chunk.len() as u64;
            let g = self.saver.generation();
            if g != self.reader_gen {
                self.reader = self.repo.index().reader()?;
                self.reader_gen = g;
            }
            if self.saver.reserve(&self.reader, &cid)? {
                self.saver.save_reserved(cid, Kind::Data, chunk.to_vec())?;
            }
            chunks.push(cid);
        };
        if result.is_ok() {
            self.chunker = Some(chunker);
        }
        result.map(|_| (size, chunks, mtime_ns))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::hexdump;
    use crate::repo::InitOptions;
    use std::io::Write;

    fn meta(mode: u32) -> Meta {
        Meta {
            mode,
            mtime_ns: 1_000,
            uid: 1,
            gid: 2,
        }
    }

    struct Env {
        _dir: tempfile::TempDir,
        repo: Arc<Repo>,
        local: std::path::PathBuf,
    }

    fn env() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let repo = Arc::new(Repo::init(&dir.path().join("repo"), &InitOptions::default()).unwrap());
        let local = dir.path().join("local");
        std::fs::create_dir(&local).unwrap();
        Env {
            _dir: dir,
            repo,
            local,
        }
    }

    impl Env {
        fn put_local(&self, id: u64, data: &[u8]) {
            let mut f = File::create(self.local.join(id.to_string())).unwrap();
            f.write_all(data).unwrap();
        }
        fn write(&self, t: &EditTree) -> ObjectId {
            let saver = Saver::new(self.repo.clone(), 1).unwrap();
            let local = self.local.clone();
            let id = t
                .write(&self.repo, &saver, &move |n| {
                    File::open(local.join(n.to_string())).map_err(|e| Error::io("open", &local, e))
                })
                .unwrap();
            saver.finish().unwrap();
            id
        }
        /// path -> description, for comparisons.
        fn flat(&self, root: ObjectId) -> BTreeMap<String, String> {
            let reader = self.repo.index().reader().unwrap();
            let mut out = BTreeMap::new();
            crate::vfs::walk(&self.repo, &reader, root, b"", &mut |p, e| {
                let d = match &e.node {
                    Node::File { size, chunks } => {
                        let mut data = Vec::new();
                        for c in chunks {
                            data.extend(self.repo.read_object_with(&reader, c).unwrap());
                        }
                        assert_eq!(data.len() as u64, *size);
                        format!("f{:o} {}", e.mode, String::from_utf8_lossy(&data))
                    }
                    Node::Dir { .. } => format!("d{:o}", e.mode),
                    Node::Symlink { target } => {
                        format!("l {}", String::from_utf8_lossy(target))
                    }
                };
                out.insert(String::from_utf8_lossy(p).into_owned(), d);
                Ok(())
            })
            .unwrap();
            out
        }
    }

    fn src(e: &Env) -> (Arc<Repo>, IndexReader) {
        (e.repo.clone(), e.repo.index().reader().unwrap())
    }

    fn mkdir(p: &str) -> Edit {
        Edit::Mkdir {
            path: p.into(),
            meta: meta(0o755),
            time_ns: 5,
        }
    }
    fn create(p: &str, id: u64) -> Edit {
        Edit::Create {
            path: p.into(),
            meta: meta(0o644),
            content: Content::Local(id),
            time_ns: 5,
        }
    }

    #[test]
    fn build_edit_and_reuse_subtrees() {
        let e = env();
        e.put_local(1, b"one");
        e.put_local(2, b"two");
        let mut t = EditTree::new(None);
        let (repo, reader) = src(&e);
        let s = RepoTrees {
            repo: &repo,
            reader: &reader,
        };
        for ed in [
            mkdir("a"),
            mkdir("a/b"),
            mkdir("keep"),
            create("a/b/f", 1),
            create("keep/g", 2),
            Edit::Symlink {
                path: b"l".to_vec(),
                target: b"a/b/f".to_vec(),
                meta: meta(0o777),
                time_ns: 5,
            },
        ] {
            t.apply(&s, &ed).unwrap();
        }
        let r1 = e.write(&t);
        let flat1 = e.flat(r1);
        assert_eq!(flat1["a/b/f"], "f644 one");
        assert_eq!(flat1["keep/g"], "f644 two");
        assert_eq!(flat1["l"], "l a/b/f");

        // Second generation: edit only under a/.
        let reader = e.repo.index().reader().unwrap();
        let s = RepoTrees {
            repo: &repo,
            reader: &reader,
        };
        let mut t2 = EditTree::new(Some(r1));
        t2.apply(
            &s,
            &Edit::Rename {
                from: b"a/b/f".to_vec(),
                to: b"a/f2".to_vec(),
                noreplace: false,
                time_ns: 6,
            },
        )
        .unwrap();
        t2.apply(
            &s,
            &Edit::SetMeta {
                path: b"a/f2".to_vec(),
                mode: Some(0o600),
                uid: None,
                gid: None,
                mtime_ns: None,
            },
        )
        .unwrap();
        assert!(t2.is_changed());
        // `keep` was never loaded: it is still a stored reference.
        let r2 = e.write(&t2);
        let flat2 = e.flat(r2);
        assert_eq!(flat2["a/f2"], "f600 one");
        assert!(!flat2.contains_key("a/b/f"));
        let old_keep = e.repo.read_tree(&r1).unwrap().get(b"keep").unwrap().clone();
        let new_keep = e.repo.read_tree(&r2).unwrap().get(b"keep").unwrap().clone();
        assert_eq!(old_keep, new_keep);
        // An unchanged overlay writes the same root.
        assert_eq!(e.write(&EditTree::new(Some(r2))), r2);
    }

    #[test]
    fn posix_errors() {
        let e = env();
        e.put_local(1, b"x");
        let (repo, reader) = src(&e);
        let s = RepoTrees {
            repo: &repo,
            reader: &reader,
        };
        let mut t = EditTree::new(None);
        t.apply(&s, &mkdir("d")).unwrap();
        t.apply(&s, &create("d/f", 1)).unwrap();
        t.apply(&s, &mkdir("e")).unwrap();
        let err = |t: &mut EditTree, ed: Edit| t.apply(&s, &ed).unwrap_err();
        assert!(matches!(err(&mut t, mkdir("d")), EditError::Exists(_)));
        assert!(matches!(err(&mut t, mkdir("x/y")), EditError::NotFound(_)));
        assert!(matches!(
            err(&mut t, mkdir("d/f/z")),
            EditError::NotADirectory(_)
        ));
        let rm = |p: &str, dir| Edit::Remove {
            path: p.into(),
            dir,
            time_ns: 0,
        };
        assert!(matches!(err(&mut t, rm("d", true)), EditError::NotEmpty(_)));
        assert!(matches!(
            err(&mut t, rm("d", false)),
            EditError::IsADirectory(_)
        ));
        assert!(matches!(
            err(&mut t, rm("d/f", true)),
            EditError::NotADirectory(_)
        ));
        let mv = |a: &str, b: &str| Edit::Rename {
            from: a.into(),
            to: b.into(),
            noreplace: false,
            time_ns: 0,
        };
        assert!(matches!(
            err(&mut t, mv("d", "d/in")),
            EditError::Invalid(_)
        ));
        assert!(matches!(
            err(&mut t, mv("d/f", "e")),
            EditError::IsADirectory(_)
        ));
        assert!(matches!(
            err(&mut t, mv("e", "d/f")),
            EditError::NotADirectory(_)
        ));
        assert!(matches!(err(&mut t, mv("e", "d")), EditError::NotEmpty(_)));
        assert!(matches!(
            err(&mut t, mv("nope", "z")),
            EditError::NotFound(_)
        ));
        assert!(matches!(
            err(&mut t, mkdir("a/../b")),
            EditError::Invalid(_)
        ));
        // Rename over an empty directory and over a file work.
        t.apply(&s, &mv("d", "e")).unwrap();
        t.apply(&s, &create("g", 1)).unwrap();
        t.apply(&s, &mv("g", "e/f")).unwrap();
        assert!(t.lookup(&s, b"g").unwrap().is_none());
        assert_eq!(t.lookup(&s, b"e/f").unwrap().unwrap().local, Some(1));
        t.apply(&s, &rm("e/f", false)).unwrap();
        t.apply(&s, &rm("e", true)).unwrap();
        assert!(t.list(&s, b"").unwrap().is_empty());
    }

    /// Golden: the postcard encoding of journal edits (part of the mount's journal format).
    #[test]
    fn golden_edit_encoding() {
        let ed = Edit::Create {
            path: b"a/b".to_vec(),
            meta: Meta {
                mode: 0o644,
                mtime_ns: 1,
                uid: 1000,
                gid: 100,
            },
            content: Content::Local(0x0102),
            time_ns: -1,
        };
        let bytes = postcard::to_stdvec(&ed).unwrap();
        let expect = [
            "02",       // Edit::Create
            "03612f62", // path "a/b"
            "a403",     // mode 0o644
            "02",       // mtime 1 (zigzag)
            "e807",     // uid 1000
            "64",       // gid 100
            "01",       // Content::Local
            "8202",     // 0x0102 (varint)
            "01",       // time -1 (zigzag)
        ]
        .concat();
        assert_eq!(hexdump(&bytes), expect);
        let back: Edit = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, ed);
        let rn = Edit::Rename {
            from: b"x".to_vec(),
            to: b"y".to_vec(),
            noreplace: true,
            time_ns: 0,
        };
        assert_eq!(
            hexdump(&postcard::to_stdvec(&rn).unwrap()),
            [
                "05",   // Edit::Rename
                "0178", // from "x"
                "0179", // to "y"
                "01",   // noreplace
                "00",   // time 0
            ]
            .concat()
        );
    }
}
