//! Storing an edited tree: chunk local files, store the new trees, reuse unchanged subtrees.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::os::unix::fs::MetadataExt;

use super::{Content, Dir, ENode, EditTree, Meta};
use crate::chunking::Chunker;
use crate::error::{Error, Result};
use crate::format::pack::Kind;
use crate::format::tree::{Entry, MAX_TREE_DEPTH, Node, Tree, too_deep};
use crate::hash::ObjectId;
use crate::index::IndexReader;
use crate::repo::Repo;
use crate::saver::Saver;

impl EditTree {
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
            locals: HashMap::new(),
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
    /// Local files already chunked (the names of one hard-linked file share one).
    locals: HashMap<u64, (u64, Vec<ObjectId>, i64)>,
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
            let (meta, node, link) = match n {
                ENode::File {
                    meta,
                    content,
                    link,
                } => match content {
                    Content::Stored { size, chunks } => (
                        *meta,
                        Node::File {
                            size: *size,
                            chunks: chunks.clone(),
                        },
                        *link,
                    ),
                    Content::Local(id) => {
                        let (size, chunks, mtime_ns) = self.local(*id)?;
                        let node = Node::File { size, chunks };
                        (Meta { mtime_ns, ..*meta }, node, *link)
                    }
                },
                ENode::Symlink { meta, target, link } => (
                    *meta,
                    Node::Symlink {
                        target: target.clone(),
                    },
                    *link,
                ),
                ENode::Dir { meta, dir } => (
                    *meta,
                    Node::Dir {
                        tree: match dir {
                            Dir::Stored(id) => *id,
                            Dir::Loaded(m) => self.dir(m, depth + 1)?,
                        },
                    },
                    None,
                ),
                ENode::Special { meta, node, link } => (*meta, node.clone(), *link),
            };
            entries.push(Entry {
                name: name.clone(),
                mode: meta.mode,
                mtime_ns: meta.mtime_ns,
                uid: meta.uid,
                gid: meta.gid,
                node,
                link,
            });
        }
        let bytes = Tree { entries }.encode()?;
        let id = self.repo.object_id(&bytes);
        self.reader()?;
        self.saver.save(&self.reader, id, Kind::Tree, bytes)?;
        Ok(id)
    }

    fn local(&mut self, id: u64) -> Result<(u64, Vec<ObjectId>, i64)> {
        if let Some(done) = self.locals.get(&id) {
            return Ok(done.clone());
        }
        let done = self.chunk_local(id)?;
        self.locals.insert(id, done.clone());
        Ok(done)
    }

    fn chunk_local(&mut self, id: u64) -> Result<(u64, Vec<ObjectId>, i64)> {
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
            None => Chunker::new(f, params, 4 << 20).with_gear(self.repo.codec().gear()),
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
            let cid = self.repo.object_id(chunk);
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
