//! Storing new objects: dedup check, parallel compression, pack writing and indexing.
//!
//! A [`Saver`] is shared by the threads of an operation (snapshot, sync, mount commit). Callers
//! hash their data and call [`Saver::save`]; objects already in the repository, or already queued
//! by this saver, are skipped. New objects are compressed by a pool of threads and appended by
//! one writer thread to the current pack; a full pack is fsynced, published and indexed before
//! its objects leave the in-memory "pending" set. Memory is bounded by the queue depths and the
//! pending set of the packs not yet sealed.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, bounded};

use crate::error::{Error, Result};
use crate::format::pack::{FLAG_ZSTD, Kind};
use crate::hash::ObjectId;
use crate::index::IndexReader;
use crate::pack::PackWriter;
use crate::repo::Repo;
use crate::session::Session;

/// Counters of what a saver stored.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SaverStats {
    /// New objects stored.
    pub objects: u64,
    /// Their plaintext bytes.
    pub raw_bytes: u64,
    /// Their stored (compressed) bytes.
    pub stored_bytes: u64,
    /// Packs written.
    pub packs: u64,
}

#[derive(Default)]
struct Counters {
    objects: AtomicU64,
    raw: AtomicU64,
    stored: AtomicU64,
    packs: AtomicU64,
}

enum Job {
    Plain {
        id: ObjectId,
        kind: Kind,
        data: Vec<u8>,
    },
    Stored(Blob),
}

struct Blob {
    id: ObjectId,
    kind: Kind,
    flags: u8,
    raw_len: u32,
    data: Vec<u8>,
}

struct Shared {
    pending: Mutex<HashSet<ObjectId>>,
    error: Mutex<Option<Error>>,
    counters: Counters,
}

impl Shared {
    fn fail(&self, e: Error) {
        // Whatever went wrong in storing, the operation using the saver cannot go on.
        let e = e.with_kind(crate::ErrorKind::Storage);
        if let Ok(mut g) = self.error.lock()
            && g.is_none()
        {
            *g = Some(e);
        }
    }
    fn check(&self) -> Result<()> {
        match self.error.lock() {
            Ok(g) => match g.as_ref() {
                Some(e) => Err(Error::new(e.kind(), format!("{e:#}"))),
                None => Ok(()),
            },
            Err(_) => Err(Error::other("saver lock poisoned")),
        }
    }
}

/// Stores objects into new packs. See the module documentation.
pub struct Saver {
    repo: Arc<Repo>,
    session: Option<Session>,
    shared: Arc<Shared>,
    jobs: Option<Sender<Job>>,
    blobs: Option<Sender<Blob>>,
    compressors: Vec<JoinHandle<()>>,
    writer: Option<JoinHandle<()>>,
}

impl Saver {
    /// Start a saver on `repo` with `threads` compression threads, registering a writer session
    /// described by `what` (see [`crate::session`]). Create the saver before reading anything
    /// the new objects will build on (a parent snapshot), so that gc spares it.
    pub fn new(repo: Arc<Repo>, threads: usize) -> Result<Saver> {
        Saver::with_session(repo, threads, "write")
    }

    /// [`Saver::new`] with a description of the session.
    pub fn with_session(repo: Arc<Repo>, threads: usize, what: &str) -> Result<Saver> {
        let session = Session::begin(&repo, what)?;
        let shared = Arc::new(Shared {
            pending: Mutex::new(HashSet::new()),
            error: Mutex::new(None),
            counters: Counters::default(),
        });
        let threads = threads.max(1);
        let (job_tx, job_rx) = bounded::<Job>(threads * 4);
        let (blob_tx, blob_rx) = bounded::<Blob>(threads * 4);
        let level = repo.config().compression.zstd_level;
        let mut compressors = Vec::new();
        for i in 0..threads {
            let rx = job_rx.clone();
            let tx = blob_tx.clone();
            let sh = shared.clone();
            let h = std::thread::Builder::new()
                .name(format!("puce-zstd-{i}"))
                .spawn(move || compress_loop(level, rx, tx, sh))
                .map_err(|e| Error::other("cannot start a thread").with_source(e))?;
            compressors.push(h);
        }
        let sh = shared.clone();
        let wrepo = repo.clone();
        let writer = std::thread::Builder::new()
            .name("puce-packer".into())
            .spawn(move || {
                if let Err(e) = write_loop(&wrepo, blob_rx, &sh) {
                    sh.fail(e);
                }
            })
            .map_err(|e| Error::other("cannot start a thread").with_source(e))?;
        Ok(Saver {
            repo,
            session: Some(session),
            shared,
            jobs: Some(job_tx),
            blobs: Some(blob_tx),
            compressors,
            writer: Some(writer),
        })
    }

    /// Whether `id` is already stored or queued; if not, reserve it for the caller (who must then
    /// store it). Returns `true` when the caller must store the object.
    pub fn reserve(&self, reader: &IndexReader, id: &ObjectId) -> Result<bool> {
        {
            let p = self.pending()?;
            if p.contains(id) {
                return Ok(false);
            }
        }
        if reader.contains(id)? {
            return Ok(false);
        }
        Ok(self.pending()?.insert(*id))
    }

    fn pending(&self) -> Result<std::sync::MutexGuard<'_, HashSet<ObjectId>>> {
        self.shared
            .pending
            .lock()
            .map_err(|_| Error::other("saver lock poisoned"))
    }

    /// Store `data` under `id` unless the repository already has it. Returns whether it was new.
    /// The caller computed `id` from `data`.
    pub fn save(
        &self,
        reader: &IndexReader,
        id: ObjectId,
        kind: Kind,
        data: Vec<u8>,
    ) -> Result<bool> {
        self.shared.check()?;
        if kind == Kind::Tree {
            self.repo.cache_tree(&id, &data);
        }
        if !self.reserve(reader, &id)? {
            return Ok(false);
        }
        self.send_job(Job::Plain { id, kind, data })?;
        Ok(true)
    }

    /// Store an object the caller reserved with [`Saver::reserve`].
    pub fn save_reserved(&self, id: ObjectId, kind: Kind, data: Vec<u8>) -> Result<()> {
        self.shared.check()?;
        self.send_job(Job::Plain { id, kind, data })
    }

    /// Store an object received in stored form (already verified by the caller), unless present.
    pub fn save_stored(
        &self,
        reader: &IndexReader,
        id: ObjectId,
        kind: Kind,
        flags: u8,
        raw_len: u32,
        data: Vec<u8>,
    ) -> Result<bool> {
        self.shared.check()?;
        if !self.reserve(reader, &id)? {
            return Ok(false);
        }
        self.send_job(Job::Stored(Blob {
            id,
            kind,
            flags,
            raw_len,
            data,
        }))?;
        Ok(true)
    }

    fn send_job(&self, job: Job) -> Result<()> {
        let tx = self
            .jobs
            .as_ref()
            .ok_or_else(|| Error::other("saver already finished"))?;
        if tx.send(job).is_err() {
            self.shared.check()?;
            return Err(Error::other("saver stopped"));
        }
        Ok(())
    }

    /// Number of packs sealed and indexed so far: an index view older than this generation may
    /// miss objects this saver stored.
    pub fn generation(&self) -> u64 {
        self.shared.counters.packs.load(Ordering::Acquire)
    }

    /// What was stored so far.
    pub fn stats(&self) -> SaverStats {
        let c = &self.shared.counters;
        SaverStats {
            objects: c.objects.load(Ordering::Relaxed),
            raw_bytes: c.raw.load(Ordering::Relaxed),
            stored_bytes: c.stored.load(Ordering::Relaxed),
            packs: c.packs.load(Ordering::Relaxed),
        }
    }

    /// Seal the last pack, index it, and stop the threads. Everything saved is durable and
    /// indexed when this returns `Ok`.
    pub fn finish(mut self) -> Result<SaverStats> {
        self.stop();
        self.shared.check()?;
        Ok(self.stats())
    }

    /// Stop, keeping the writer session registered until the returned guard is dropped or
    /// ended: for callers that must publish something (a snapshot record) after the objects are
    /// durable but before gc may consider them unreferenced.
    pub fn finish_keep_session(mut self) -> Result<(SaverStats, Session)> {
        self.stop();
        self.shared.check()?;
        let session = self
            .session
            .take()
            .ok_or_else(|| Error::other("saver session already ended"))?;
        Ok((self.stats(), session))
    }

    fn stop(&mut self) {
        self.jobs.take();
        for h in self.compressors.drain(..) {
            if h.join().is_err() {
                self.shared
                    .fail(Error::other("a compression thread panicked"));
            }
        }
        self.blobs.take();
        if let Some(h) = self.writer.take()
            && h.join().is_err()
        {
            self.shared
                .fail(Error::other("the pack writer thread panicked"));
        }
    }
}

impl Drop for Saver {
    fn drop(&mut self) {
        self.stop();
        if let Some(s) = self.session.take() {
            let _ = s.end(&self.repo);
        }
    }
}

fn compress_loop(level: i32, rx: Receiver<Job>, tx: Sender<Blob>, sh: Arc<Shared>) {
    let mut compressor = if level > 0 {
        match zstd::bulk::Compressor::new(level) {
            Ok(c) => Some(c),
            Err(e) => {
                sh.fail(Error::other("cannot create a zstd compressor").with_source(e));
                return;
            }
        }
    } else {
        None
    };
    let mut out = Vec::new();
    for job in rx {
        let blob = match job {
            Job::Stored(b) => b,
            Job::Plain { id, kind, data } => {
                let raw_len = data.len() as u32;
                let mut blob = Blob {
                    id,
                    kind,
                    flags: 0,
                    raw_len,
                    data,
                };
                if let Some(c) = compressor.as_mut() {
                    out.clear();
                    out.reserve(zstd::zstd_safe::compress_bound(blob.data.len()));
                    match c.compress_to_buffer(&blob.data, &mut out) {
                        Ok(n) if n < blob.data.len() => {
                            blob.data.clear();
                            blob.data.extend_from_slice(&out[..n]);
                            blob.flags = FLAG_ZSTD;
                        }
                        Ok(_) => {}
                        Err(e) => {
                            sh.fail(Error::other("zstd compression failed").with_source(e));
                            return;
                        }
                    }
                }
                blob
            }
        };
        if tx.send(blob).is_err() {
            return;
        }
    }
}

/// Packs being sealed (fsync and publish, or upload, then indexing) at once.
const SEALERS: usize = 3;

fn write_loop(repo: &Repo, rx: Receiver<Blob>, sh: &Shared) -> Result<()> {
    let target = repo.config().pack_target_size;
    // Full packs are sealed by a few threads while the next pack fills: with a remote backend
    // several uploads are in flight; locally, fsyncs overlap with writing.
    let (seal_tx, seal_rx) = bounded::<PackWriter>(SEALERS);
    std::thread::scope(|scope| {
        for _ in 0..SEALERS {
            let rx = seal_rx.clone();
            scope.spawn(move || {
                for w in rx {
                    if let Err(e) = seal(repo, w, sh) {
                        sh.fail(e);
                    }
                }
            });
        }
        drop(seal_rx);
        let mut pack: Option<PackWriter> = None;
        let mut result: Result<()> = Ok(());
        for blob in rx.iter() {
            if result.is_err() {
                continue; // drain so senders do not block
            }
            result = (|| {
                let w = match pack.as_mut() {
                    Some(w) => w,
                    None => pack.insert(PackWriter::new(repo.backend().as_ref())?),
                };
                w.add(blob.id, blob.kind, blob.flags, blob.raw_len, &blob.data)?;
                let c = &sh.counters;
                c.objects.fetch_add(1, Ordering::Relaxed);
                c.raw.fetch_add(u64::from(blob.raw_len), Ordering::Relaxed);
                c.stored
                    .fetch_add(blob.data.len() as u64, Ordering::Relaxed);
                if w.len() >= target
                    && let Some(w) = pack.take()
                {
                    seal_tx
                        .send(w)
                        .map_err(|_| Error::other("pack sealing threads stopped"))?;
                }
                Ok(())
            })();
            if let Err(e) = &result {
                sh.fail(Error::new(e.kind(), format!("{e:#}")));
            }
        }
        if result.is_ok()
            && let Some(w) = pack.take()
        {
            if w.is_empty() {
                w.abort();
            } else if seal_tx.send(w).is_err() {
                result = Err(Error::other("pack sealing threads stopped"));
            }
        }
        drop(seal_tx);
        result
    })
}

fn seal(repo: &Repo, w: PackWriter, sh: &Shared) -> Result<()> {
    let (id, size, records) = w.finish()?;
    repo.index().add_pack(&id, size, &records)?;
    let mut p = sh
        .pending
        .lock()
        .map_err(|_| Error::other("saver lock poisoned"))?;
    for r in &records {
        p.remove(&r.id);
    }
    sh.counters.packs.fetch_add(1, Ordering::Release);
    Ok(())
}
