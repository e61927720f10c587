//! Stored content: objects read through the chunk and tree caches, a stored file as windows
//! of consecutive chunks, and read-ahead for sequential readers and for the files likely to
//! be opened next.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use crossbeam_channel::Receiver;
use puce_core::format::tree::{Node, Tree};
use puce_core::index::IndexReader;
use puce_core::snapshot::edit::TreeSource;
use puce_core::{Error, ErrorKind, ObjectId, Result};

use super::PuceFs;
use crate::error::{FsError, FsResult};

/// Sequential reads load windows of consecutive chunks of at least this many bytes.
const WINDOW: u64 = 2 << 20;
/// How far sequential readers are read ahead.
const READ_AHEAD: u64 = 8 << 20;
/// How much further the storage is told the file will be read (it starts fetching without
/// occupying a thread: the disk then has work queued while the read-ahead threads verify).
const HINT_AHEAD: u64 = 16 << 20;
/// A read starting this close to where the previous one of its handle ended is sequential
/// (the kernel's read-ahead requests may be served out of order by several threads).
pub(super) const SEQUENTIAL_SLACK: u64 = 4 << 20;

/// A read-ahead job.
pub(super) enum Prefetch {
    /// Window `.1` of a file being read.
    Window(Arc<StoredFile>, usize),
    /// The first chunks of files likely to be opened next.
    Chunks(Vec<ObjectId>),
    /// Windows `.1` of a file will be read soon: tell the storage.
    Hint(Arc<StoredFile>, std::ops::Range<usize>),
}

/// When a snapshot file is opened, the first chunks of the files after it in its directory
/// (`find | xargs cat`, `cp -r`, `tar` read in that order) are loaded, up to this many bytes...
const NEXT_FILES_BYTES: u64 = 2 << 20;
/// ...and this many files.
const NEXT_FILES: usize = 16;

/// Content of a stored file: chunk ids and where each ends, and its read windows.
pub(super) struct StoredFile {
    pub(super) chunks: Vec<ObjectId>,
    pub(super) ends: Vec<u64>,
    /// First chunk of each window (runs of whole chunks of at least [`WINDOW`] bytes).
    pub(super) wins: Vec<usize>,
    /// Cache key of each window: the chunk id for a one-chunk window (shared with
    /// chunk-by-chunk reads), else a hash of the chunk ids.
    pub(super) keys: Vec<ObjectId>,
    /// Windows before this one were hinted to the storage ([`HINT_AHEAD`]).
    pub(super) hinted: AtomicUsize,
}

impl StoredFile {
    fn new(chunks: Vec<ObjectId>, ends: Vec<u64>) -> StoredFile {
        let mut wins = Vec::new();
        let mut start = 0u64;
        for i in 0..chunks.len() {
            // Chunk `i` starts a window if it is the first, or the window so far is full.
            if i == 0 || ends[i - 1] - start >= WINDOW {
                wins.push(i);
                start = if i == 0 { 0 } else { ends[i - 1] };
            }
        }
        let mut keys = Vec::with_capacity(wins.len());
        for w in 0..wins.len() {
            let (a, b) = (wins[w], wins.get(w + 1).copied().unwrap_or(chunks.len()));
            keys.push(if b - a == 1 {
                chunks[a]
            } else {
                let mut h = b"puce-fuse-window".to_vec();
                for c in &chunks[a..b] {
                    h.extend_from_slice(c.as_bytes());
                }
                ObjectId::of(&h)
            });
        }
        StoredFile {
            chunks,
            ends,
            wins,
            keys,
            hinted: AtomicUsize::new(0),
        }
    }

    pub(super) fn size(&self) -> u64 {
        self.ends.last().copied().unwrap_or(0)
    }

    /// Byte offset where chunk `i` starts.
    fn start(&self, i: usize) -> u64 {
        if i == 0 { 0 } else { self.ends[i - 1] }
    }

    /// Chunk range and byte range of window `w`.
    fn window(&self, w: usize) -> (std::ops::Range<usize>, u64, u64) {
        let a = self.wins[w];
        let b = self.wins.get(w + 1).copied().unwrap_or(self.chunks.len());
        (a..b, self.start(a), self.ends[b - 1])
    }

    /// The window holding byte `offset` (< size).
    fn window_of(&self, offset: u64) -> usize {
        let chunk = self.ends.partition_point(|e| *e <= offset);
        self.wins.partition_point(|s| *s <= chunk) - 1
    }
}

/// Trees through the file system's cache.
pub(super) struct FsTrees<'a>(pub(super) &'a PuceFs);

impl TreeSource for FsTrees<'_> {
    fn tree(&self, id: &ObjectId) -> Result<Arc<Tree>> {
        self.0.tree(id)
    }
}

impl PuceFs {
    pub(super) fn index_reader(&self) -> Result<Arc<IndexReader>> {
        self.reader
            .read()
            .map(|r| r.clone())
            .map_err(|_| Error::other("lock poisoned"))
    }

    pub(super) fn refresh_reader(&self) -> Result<()> {
        let r = Arc::new(self.repo.index().reader()?);
        if let Ok(mut g) = self.reader.write() {
            *g = r;
        }
        Ok(())
    }

    /// Read an object's plaintext; a miss in a stale index view is retried with a fresh one.
    pub(super) fn read_object(&self, id: &ObjectId) -> Result<Vec<u8>> {
        let r = self.index_reader()?;
        match self.repo.read_object_with(&r, id) {
            Err(e) if e.kind() == ErrorKind::NotFound => {
                self.refresh_reader()?;
                let r = self.index_reader()?;
                self.repo.read_object_with(&r, id)
            }
            x => x,
        }
    }

    pub(super) fn tree(&self, id: &ObjectId) -> Result<Arc<Tree>> {
        self.trees.get_or_load(id, || {
            let bytes = self.read_object(id)?;
            // A stored tree that does not decode (an unsafe name included) is damaged or
            // hostile data: the caller sees EIO and the log says why, as for any damage.
            let t = Tree::decode(&bytes).map_err(|e| {
                e.with_kind(ErrorKind::Corrupt)
                    .context(format!("tree {}", id.short(16)))
            })?;
            let w = bytes.len() * 2 + 64;
            Ok((Arc::new(t), w))
        })
    }

    pub(super) fn chunk(&self, id: &ObjectId) -> Result<Arc<Vec<u8>>> {
        self.chunks.get_or_load(id, || {
            let v = self.read_object(id)?;
            let w = v.len() + 64;
            Ok((Arc::new(v), w))
        })
    }

    /// Queue the first chunks of the files after `name` in `tree` (see [`NEXT_FILES_BYTES`]).
    pub(super) fn read_next_files(&self, tree: &Tree, name: &[u8]) {
        let from = tree.entries.partition_point(|e| e.name.as_slice() <= name);
        let mut ids = Vec::new();
        let mut bytes = 0u64;
        for e in tree.entries[from..].iter().take(NEXT_FILES) {
            let Node::File { size, chunks } = &e.node else {
                continue;
            };
            let Some(first) = chunks.first() else {
                continue;
            };
            if bytes > 0 && bytes + size.min(&WINDOW) > NEXT_FILES_BYTES {
                break;
            }
            bytes += size.min(&WINDOW);
            if !self.chunks.contains(first) {
                ids.push(*first);
            }
        }
        if ids.is_empty() {
            return;
        }
        if let Ok(g) = self.prefetch.lock()
            && let Some(tx) = g.as_ref()
        {
            let _ = tx.try_send(Prefetch::Chunks(ids));
        }
    }

    fn chunk_len(&self, id: &ObjectId) -> Result<u64> {
        if let Some(v) = self.chunks.peek(id) {
            return Ok(v.len() as u64);
        }
        let r = self.index_reader()?;
        let loc = match r.get(id)? {
            Some(l) => Some(l),
            None => {
                self.refresh_reader()?;
                self.index_reader()?.get(id)?
            }
        };
        loc.map(|l| u64::from(l.raw_len)).ok_or_else(|| {
            Error::not_found(format!(
                "chunk {id} is not in the index: the repository is missing data (run `puce check`)"
            ))
        })
    }

    pub(super) fn stored_file(&self, chunks: Vec<ObjectId>) -> FsResult<StoredFile> {
        let mut ends = Vec::with_capacity(chunks.len());
        let mut end = 0u64;
        for c in &chunks {
            end += self.chunk_len(c)?;
            ends.push(end);
        }
        Ok(StoredFile::new(chunks, ends))
    }

    /// The content of window `w` of `sf`, from the cache or loaded with one read per run of
    /// chunks stored one after the other.
    fn window(&self, sf: &StoredFile, w: usize) -> Result<Arc<Vec<u8>>> {
        let (range, _, _) = sf.window(w);
        if range.len() == 1 {
            return self.chunk(&sf.chunks[range.start]);
        }
        self.chunks.get_or_load(&sf.keys[w], || {
            let ids = &sf.chunks[range];
            let r = self.index_reader()?;
            let v = match puce_core::read::read_objects(&self.repo, &r, ids) {
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    // A stale index view (a commit or gc since): look again once.
                    self.refresh_reader()?;
                    puce_core::read::read_objects(&self.repo, &*self.index_reader()?, ids)?
                }
                x => x?,
            };
            let w = v.len() + 64;
            Ok((Arc::new(v), w))
        })
    }

    /// A sequential read: served from whole windows, the next ones read ahead.
    pub(super) fn read_windows<R>(
        &self,
        sf: &Arc<StoredFile>,
        offset: u64,
        size: u64,
        reply: impl FnOnce(&[u8]) -> R,
    ) -> FsResult<R> {
        let total = sf.size();
        if offset >= total || size == 0 {
            return Ok(reply(&[]));
        }
        let end = (offset + size).min(total);
        let first = sf.window_of(offset);
        self.read_ahead(sf, first);
        let load = |w: usize| -> FsResult<(Arc<Vec<u8>>, u64, u64)> {
            let (_, a, b) = sf.window(w);
            let data = self.window(sf, w)?;
            if data.len() as u64 != b - a {
                tracing::error!(
                    "window {w} has {} bytes, the index says {}",
                    data.len(),
                    b - a
                );
                return Err(FsError::IO);
            }
            Ok((data, a, b))
        };
        let (data, a, b) = load(first)?;
        if end <= b {
            // The common case: no copy.
            return Ok(reply(&data[(offset - a) as usize..(end - a) as usize]));
        }
        let mut out = Vec::with_capacity((end - offset) as usize);
        out.extend_from_slice(&data[(offset - a) as usize..]);
        let mut w = first + 1;
        while (offset + out.len() as u64) < end && w < sf.wins.len() {
            let (data, a, b) = load(w)?;
            out.extend_from_slice(&data[..(end.min(b) - a) as usize]);
            w += 1;
        }
        Ok(reply(&out))
    }

    /// A random read: only the chunks it touches are loaded.
    pub(super) fn read_stored(&self, sf: &StoredFile, offset: u64, size: u64) -> FsResult<Vec<u8>> {
        let total = sf.size();
        if offset >= total || size == 0 {
            return Ok(Vec::new());
        }
        let end = (offset + size).min(total);
        let mut out = Vec::with_capacity((end - offset) as usize);
        let mut i = sf.ends.partition_point(|e| *e <= offset);
        let mut pos = offset;
        while pos < end && i < sf.chunks.len() {
            let start = if i == 0 { 0 } else { sf.ends[i - 1] };
            let data = self.chunk(&sf.chunks[i])?;
            if data.len() as u64 != sf.ends[i] - start {
                tracing::error!(
                    "chunk {} has {} bytes, the index says {}",
                    sf.chunks[i],
                    data.len(),
                    sf.ends[i] - start
                );
                return Err(FsError::IO);
            }
            let a = (pos - start) as usize;
            let b = ((end.min(sf.ends[i])) - start) as usize;
            out.extend_from_slice(&data[a..b]);
            pos = start + b as u64;
            i += 1;
        }
        Ok(out)
    }

    /// Queue the windows after `w` (about [`READ_AHEAD`] bytes) for loading into the cache.
    fn read_ahead(&self, sf: &Arc<StoredFile>, w: usize) {
        let Ok(g) = self.prefetch.lock() else { return };
        let Some(tx) = g.as_ref() else { return };
        let (_, _, from) = sf.window(w);
        // Never more than a quarter of the cache, so that read-ahead does not evict itself.
        let ahead = READ_AHEAD.min(self.chunks.capacity() as u64 / 4);
        let mut n = w + 1;
        while n < sf.wins.len() {
            let (_, a, _) = sf.window(n);
            if a - from >= ahead {
                break;
            }
            if !self.chunks.contains(&sf.keys[n])
                && tx.try_send(Prefetch::Window(sf.clone(), n)).is_err()
            {
                return;
            }
            n += 1;
        }
        // The windows after those: hinted once each.
        let mut end = n;
        while end < sf.wins.len() && sf.window(end).1 - from < ahead + HINT_AHEAD {
            end += 1;
        }
        let start = sf.hinted.fetch_max(end, Ordering::Relaxed).max(n);
        if start < end && tx.try_send(Prefetch::Hint(sf.clone(), start..end)).is_err() {
            // The queue is full: a later read asks again (unless another got further).
            let _ = sf
                .hinted
                .compare_exchange(end, start, Ordering::Relaxed, Ordering::Relaxed);
        }
    }
}

pub(super) fn prefetch_loop(fs: Weak<PuceFs>, rx: Receiver<Prefetch>) {
    for job in rx {
        let Some(fs) = fs.upgrade() else { return };
        match job {
            Prefetch::Window(sf, w) => {
                if let Err(e) = fs.window(&sf, w) {
                    tracing::debug!("read-ahead of window {w}: {e:#}");
                }
            }
            Prefetch::Chunks(ids) => {
                for id in ids {
                    if let Err(e) = fs.chunk(&id) {
                        tracing::debug!("read-ahead of chunk {id}: {e:#}");
                    }
                }
            }
            Prefetch::Hint(sf, wins) => {
                if wins.is_empty() {
                    continue;
                }
                let chunks = &sf.chunks[sf.wins[wins.start]..sf.window(wins.end - 1).0.end];
                let r = fs
                    .index_reader()
                    .and_then(|r| puce_core::read::will_need(&fs.repo, &r, chunks));
                if let Err(e) = r {
                    tracing::debug!("read-ahead hint: {e:#}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Windows cover every chunk once, hold at least WINDOW bytes (but the last), and
    /// `window_of` finds the window of every byte.
    #[test]
    fn windows_partition_the_chunks() {
        for sizes in [
            vec![],
            vec![5u64],
            vec![300_000; 40],
            vec![3 << 20, 10, 10, 3 << 20],
        ] {
            let chunks: Vec<ObjectId> = (0..sizes.len())
                .map(|i| ObjectId::of(&i.to_le_bytes()))
                .collect();
            let ends: Vec<u64> = sizes
                .iter()
                .scan(0, |e, s| {
                    *e += s;
                    Some(*e)
                })
                .collect();
            let sf = StoredFile::new(chunks.clone(), ends.clone());
            assert_eq!(sf.wins.len(), sf.keys.len());
            let mut next = 0;
            for w in 0..sf.wins.len() {
                let (r, a, b) = sf.window(w);
                assert_eq!(r.start, next);
                assert!(b - a >= WINDOW || w + 1 == sf.wins.len());
                assert_eq!(r.len() == 1, sf.keys[w] == chunks[r.start]);
                for off in [a, (a + b) / 2, b - 1] {
                    assert_eq!(sf.window_of(off), w);
                }
                next = r.end;
            }
            assert_eq!(next, chunks.len());
        }
    }
}
