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
use std::sync::{Arc, OnceLock};

use crate::error::{Error, Result};
use crate::format::tree::{Entry, MAX_TREE_DEPTH, Node, Tree};
use crate::hash::ObjectId;
use crate::index::{IndexReader, now_ns};
use crate::paths;
use crate::repo::Repo;

mod links;
mod ops;
mod write;

use links::Links;

use ops::EResult;
pub use ops::{Content, Edit, EditError, Info, Meta, NodeKind};

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

#[derive(Debug, Clone)]
enum ENode {
    File {
        meta: Meta,
        content: Content,
        link: Option<u64>,
    },
    Symlink {
        meta: Meta,
        target: Vec<u8>,
        link: Option<u64>,
    },
    Dir {
        meta: Meta,
        dir: Dir,
    },
    /// A fifo, socket or device: its stored node, kept as it is.
    Special {
        meta: Meta,
        node: Node,
        link: Option<u64>,
    },
}

#[derive(Debug, Clone)]
enum Dir {
    Stored(ObjectId),
    Loaded(BTreeMap<Vec<u8>, ENode>),
}

impl ENode {
    fn from_entry(e: &Entry) -> ENode {
        let (meta, link) = (Meta::of(e), e.link);
        match &e.node {
            Node::File { size, chunks } => ENode::File {
                meta,
                content: Content::Stored {
                    size: *size,
                    chunks: chunks.clone(),
                },
                link,
            },
            Node::Symlink { target } => ENode::Symlink {
                meta,
                target: target.clone(),
                link,
            },
            Node::Dir { tree } => ENode::Dir {
                meta,
                dir: Dir::Stored(*tree),
            },
            node => ENode::Special {
                meta,
                node: node.clone(),
                link,
            },
        }
    }

    fn meta_mut(&mut self) -> &mut Meta {
        match self {
            ENode::File { meta, .. }
            | ENode::Symlink { meta, .. }
            | ENode::Dir { meta, .. }
            | ENode::Special { meta, .. } => meta,
        }
    }

    fn info(&self) -> Info {
        match self {
            ENode::File {
                meta,
                content,
                link,
            } => Info {
                link: *link,
                size: match content {
                    Content::Stored { size, .. } => *size,
                    Content::Local(_) => 0,
                },
                local: match content {
                    Content::Local(id) => Some(*id),
                    Content::Stored { .. } => None,
                },
                ..Info::new(NodeKind::File, *meta)
            },
            ENode::Symlink { meta, target, link } => Info {
                link: *link,
                size: target.len() as u64,
                target: Some(target.clone()),
                ..Info::new(NodeKind::Symlink, *meta)
            },
            ENode::Dir { meta, .. } => Info::new(NodeKind::Dir, *meta),
            ENode::Special { meta, node, link } => Info {
                link: *link,
                rdev: rdev_of(node),
                ..Info::new(NodeKind::of(node), *meta)
            },
        }
    }
}

/// The device number of a device node, 0 for the other kinds.
fn rdev_of(node: &Node) -> u64 {
    match node {
        Node::CharDevice { rdev } | Node::BlockDevice { rdev } => *rdev,
        _ => 0,
    }
}

fn info_of_entry(e: &Entry) -> Info {
    let meta = Meta::of(e);
    let kind = NodeKind::of(&e.node);
    let info = match &e.node {
        Node::File { size, .. } => Info {
            size: *size,
            ..Info::new(kind, meta)
        },
        Node::Symlink { target } => Info {
            size: target.len() as u64,
            target: Some(target.clone()),
            ..Info::new(kind, meta)
        },
        node => Info {
            rdev: rdev_of(node),
            ..Info::new(kind, meta)
        },
    };
    Info {
        link: e.link,
        ..info
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

/// The error for content asked of a symlink or special file.
fn not_a_file(comps: &[&[u8]]) -> EditError {
    EditError::Invalid(format!("'{}' is not a regular file", show(comps)))
}

fn show(comps: &[&[u8]]) -> String {
    String::from_utf8_lossy(&comps.join(&b'/')).into_owned()
}

/// Whether `path` is `top` or below it (both `/`-joined).
fn paths_below(path: &[u8], top: &[u8]) -> bool {
    path.starts_with(top) && (path.len() == top.len() || path[top.len()] == b'/')
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
    /// When each entry changed through [`EditTree::apply`] last (its *change time*, `ctime`),
    /// by path; entries not changed since the tree was created are not in it. In memory only:
    /// trees store no change time.
    changed_at: BTreeMap<Vec<u8>, i64>,
    /// The names of each hard-link group: walked on first need, then kept by every edit.
    links: OnceLock<Links>,
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
            changed_at: BTreeMap::new(),
            links: OnceLock::new(),
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
            return Ok(Some(Info::new(
                NodeKind::Dir,
                Meta {
                    mode: 0o755,
                    mtime_ns: 0,
                    uid: 0,
                    gid: 0,
                },
            )));
        };
        let info = match self.dir_at(src, parent)? {
            At::Loaded(m) => m.get(*name).map(ENode::info),
            At::Stored(t) => t.get(name).map(info_of_entry),
        };
        Ok(info.map(|mut i| {
            i.ctime_ns = self
                .changed_at
                .get(&comps.join(&b'/'))
                .copied()
                .unwrap_or(0);
            i
        }))
    }

    /// How many subdirectories the directory at `path` holds (a directory's link count is 2
    /// plus this).
    pub fn subdirs(&self, src: &dyn TreeSource, path: &[u8]) -> EResult<u32> {
        let comps = split_path(path)?;
        let n = match self.dir_at(src, &comps)? {
            At::Loaded(m) => m
                .values()
                .filter(|n| matches!(n, ENode::Dir { .. }))
                .count(),
            At::Stored(t) => t.entries.iter().filter(|e| e.is_dir()).count(),
        };
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }

    /// Note that the entry at `path` changed now, by a change not applied through this tree
    /// (a new modification time set on its local content).
    pub fn touch(&mut self, path: &[u8]) -> EResult<()> {
        let comps = split_path(path)?;
        self.note_change(&comps);
        Ok(())
    }

    /// Note that the entry at `comps` changed now.
    fn note_change(&mut self, comps: &[&[u8]]) {
        self.changed_at.insert(comps.join(&b'/'), now_ns());
    }

    /// Move the change times of `from` and everything below it to `to`.
    fn move_changes(&mut self, from: &[&[u8]], to: &[&[u8]]) {
        let (from, to) = (from.join(&b'/'), to.join(&b'/'));
        self.changed_at.retain(|k, _| !paths_below(k, &to));
        let moved: Vec<(Vec<u8>, i64)> = self
            .changed_at
            .iter()
            .filter(|(k, _)| paths_below(k, &from))
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        for (k, v) in moved {
            self.changed_at.remove(&k);
            let mut nk = to.clone();
            nk.extend_from_slice(&k[from.len()..]);
            self.changed_at.insert(nk, v);
        }
    }

    /// The entries of the directory at `path`, in name order.
    pub fn list(&self, src: &dyn TreeSource, path: &[u8]) -> EResult<Vec<(Vec<u8>, Info)>> {
        let comps = split_path(path)?;
        let prefix = comps.join(&b'/');
        let changed = |name: &[u8]| {
            self.changed_at
                .get(&paths::join(&prefix, name))
                .copied()
                .unwrap_or(0)
        };
        Ok(match self.dir_at(src, &comps)? {
            At::Loaded(m) => m
                .iter()
                .map(|(k, v)| {
                    let mut i = v.info();
                    i.ctime_ns = changed(k);
                    (k.clone(), i)
                })
                .collect(),
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
                ENode::Symlink { .. } | ENode::Special { .. } => Err(not_a_file(&comps)),
            }),
            At::Stored(t) => t.get(name).map(|e| match &e.node {
                Node::File { size, chunks } => Ok(Content::Stored {
                    size: *size,
                    chunks: chunks.clone(),
                }),
                Node::Dir { .. } => Err(EditError::IsADirectory(show(&comps))),
                _ => Err(not_a_file(&comps)),
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
                let p = paths::join(&prefix, name);
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
        // Changed when made (the caller answers the same `ctime` without a lookup).
        self.changed_at.insert(comps.join(&b'/'), time_ns);
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
                        link: None,
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
                    link: None,
                },
                *time_ns,
            ),
            Edit::SetContent { path, content } => self.set_content(src, path, content),
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
                let group = m.remove(*name).and_then(|n| n.link());
                let gone = comps.join(&b'/');
                self.changed_at.retain(|k, _| !paths_below(k, &gone));
                if let Some(l) = self.links.get_mut() {
                    l.remove(&gone);
                }
                if let Some(g) = group {
                    // One name fewer: the file's link count, hence its ctime, changed.
                    self.note_names(src, g)?;
                }
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
            Edit::Mknod {
                path,
                meta,
                node,
                time_ns,
            } => {
                if !node.is_special() {
                    return Err(EditError::Invalid(
                        "only fifos, sockets and devices are made by a node edit".into(),
                    ));
                }
                let node = ENode::Special {
                    meta: *meta,
                    node: node.clone(),
                    link: None,
                };
                self.insert_new(src, path, node, *time_ns)
            }
            Edit::Link {
                from,
                to,
                group,
                time_ns,
            } => self.link(src, from, to, *group, *time_ns),
            Edit::SetMeta {
                path,
                mode,
                uid,
                gid,
                mtime_ns,
            } => {
                let comps = split_path(path)?;
                self.for_names(src, &comps, |node| {
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
                })
            }
        }
    }

    /// Replace the content of the regular file at `path`, and so of its other names.
    fn set_content(&mut self, src: &dyn TreeSource, path: &[u8], content: &Content) -> EResult<()> {
        let comps = split_path(path)?;
        let Some((name, parent)) = comps.split_last() else {
            return Err(EditError::IsADirectory("/".into()));
        };
        match self.dir_mut(src, parent)?.get(*name) {
            Some(ENode::File { .. }) => {}
            Some(ENode::Dir { .. }) => return Err(EditError::IsADirectory(show(&comps))),
            Some(ENode::Symlink { .. } | ENode::Special { .. }) => {
                return Err(not_a_file(&comps));
            }
            None => return Err(EditError::NotFound(show(&comps))),
        }
        self.for_names(src, &comps, |n| {
            if let ENode::File { content: c, .. } = n {
                *c = content.clone();
            }
        })
    }

    /// Change the entry at `comps` and every other name of its hard-link group with `f`.
    fn for_names(
        &mut self,
        src: &dyn TreeSource,
        comps: &[&[u8]],
        mut f: impl FnMut(&mut ENode),
    ) -> EResult<()> {
        let Some((name, parent)) = comps.split_last() else {
            return Err(EditError::Invalid(
                "the root directory's metadata is not stored".into(),
            ));
        };
        let group = self
            .dir_mut(src, parent)?
            .get(*name)
            .ok_or_else(|| EditError::NotFound(show(comps)))?
            .link();
        for p in self.names_of(src, comps, group)? {
            let pc = split_path(&p)?;
            let Some((n, par)) = pc.split_last() else {
                continue;
            };
            if let Some(node) = self.dir_mut(src, par)?.get_mut(*n) {
                f(node);
            }
            self.note_change(&pc);
        }
        self.changed = true;
        Ok(())
    }

    /// Make `to` another name of the non-directory at `from` (see [`Edit::Link`]).
    fn link(
        &mut self,
        src: &dyn TreeSource,
        from: &[u8],
        to: &[u8],
        group: u64,
        time_ns: i64,
    ) -> EResult<()> {
        let fc = split_path(from)?;
        let Some((fname, fparent)) = fc.split_last() else {
            return Err(EditError::Invalid(
                "the root directory cannot be linked".into(),
            ));
        };
        let mut node = self
            .dir_mut(src, fparent)?
            .get(*fname)
            .ok_or_else(|| EditError::NotFound(show(&fc)))?
            .clone();
        if matches!(node, ENode::Dir { .. }) {
            return Err(EditError::Invalid(format!(
                "'{}' is a directory: a directory cannot have a second name",
                show(&fc)
            )));
        }
        let had = node.link();
        let g = had.unwrap_or(group);
        node.set_link(Some(g));
        self.insert_new(src, to, node, time_ns)?;
        if had.is_none()
            && let Some(n) = self.dir_mut(src, fparent)?.get_mut(*fname)
        {
            n.set_link(Some(g));
        }
        self.note_change(&fc);
        if let Some(l) = self.links.get_mut() {
            l.insert(fc.join(&b'/'), g);
            l.insert(split_path(to)?.join(&b'/'), g);
        }
        Ok(())
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
        if src_info.link.is_some() && dst_info.as_ref().and_then(|d| d.link) == src_info.link {
            // Two names of one file: rename(2) does nothing.
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
        self.move_changes(&fc, &tc);
        if let Some(l) = self.links.get_mut() {
            l.rename(&fc.join(&b'/'), &tc.join(&b'/'));
        }
        if let Some(g) = dst_info.and_then(|d| d.link) {
            // The replaced file has one name fewer.
            self.note_names(src, g)?;
        }
        self.note_change(&tc);
        self.changed = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
