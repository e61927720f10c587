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
use crate::pack::codec::Codec;
use crate::repo::Repo;
use crate::writer_session::WriterSession;

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
}

struct Blob {
    id: ObjectId,
    kind: Kind,
    flags: u8,
    raw_len: u32,
    data: Vec<u8>,
}

/// What the pack writer thread receives.
enum ToWriter {
    Blob(Blob),
    /// Seal the current pack once `after` blobs have been received; with `wait`, answer once
    /// every pack sealed so far is indexed.
    Flush {
        after: u64,
        wait: bool,
        done: Sender<Result<()>>,
    },
}

struct Shared {
    pending: Mutex<HashSet<ObjectId>>,
    error: Mutex<Option<Error>>,
    counters: Counters,
    /// Jobs handed to the compression threads so far (see [`Saver::flush`]).
    submitted: AtomicU64,
    /// Set by [`Saver::abort`]: the writer discards the pack in progress instead of sealing it.
    aborted: std::sync::atomic::AtomicBool,
    /// Reach scope the objects of each sealed pack join (0: none), see
    /// [`Saver::set_reach_scope`].
    reach_scope: AtomicU64,
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
    session: Option<WriterSession>,
    shared: Arc<Shared>,
    jobs: Option<Sender<Job>>,
    blobs: Option<Sender<ToWriter>>,
    compressors: Vec<JoinHandle<()>>,
    writer: Option<JoinHandle<()>>,
}

impl Saver {
    /// Start a saver on `repo` with `threads` compression threads, registering a writer session
    /// described by `what` (see [`crate::writer_session`]). Create the saver before reading anything
    /// the new objects will build on (a parent snapshot), so that gc spares it.
    pub fn new(repo: Arc<Repo>, threads: usize) -> Result<Saver> {
        Saver::with_session(repo, threads, "write")
    }

    /// [`Saver::new`] with a description of the session.
    pub fn with_session(repo: Arc<Repo>, threads: usize, what: &str) -> Result<Saver> {
        let session = WriterSession::begin(&repo, what)?;
        let shared = Arc::new(Shared {
            pending: Mutex::new(HashSet::new()),
            error: Mutex::new(None),
            counters: Counters::default(),
            submitted: AtomicU64::new(0),
            aborted: std::sync::atomic::AtomicBool::new(false),
            reach_scope: AtomicU64::new(0),
        });
        let threads = threads.max(1);
        let (job_tx, job_rx) = bounded::<Job>(threads * 4);
        let (blob_tx, blob_rx) = bounded::<ToWriter>(threads * 4);
        let level = repo.config().compression.zstd_level;
        let mut compressors = Vec::new();
        for i in 0..threads {
            let rx = job_rx.clone();
            let tx = blob_tx.clone();
            let sh = shared.clone();
            let codec = repo.codec().clone();
            let h = std::thread::Builder::new()
                .name(format!("puce-zstd-{i}"))
                .spawn(move || compress_loop(level, &codec, rx, tx, sh))
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
    ///
    /// Stored objects need no compression: they go straight to the pack writer, in the order
    /// of the calls. Full packs are sealed by several threads at once, so packs may be indexed
    /// out of order: a caller that needs some objects indexed before others are written (a
    /// tree after everything it reaches) puts a [`Saver::flush`] between them.
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
        let tx = self
            .blobs
            .as_ref()
            .ok_or_else(|| Error::other("saver already finished"))?;
        self.shared.submitted.fetch_add(1, Ordering::AcqRel);
        let blob = Blob {
            id,
            kind,
            flags,
            raw_len,
            data,
        };
        if tx.send(ToWriter::Blob(blob)).is_err() {
            self.shared.check()?;
            return Err(Error::other("saver stopped"));
        }
        Ok(true)
    }

    fn send_job(&self, job: Job) -> Result<()> {
        let tx = self
            .jobs
            .as_ref()
            .ok_or_else(|| Error::other("saver already finished"))?;
        self.shared.submitted.fetch_add(1, Ordering::AcqRel);
        if tx.send(job).is_err() {
            self.shared.check()?;
            return Err(Error::other("saver stopped"));
        }
        Ok(())
    }

    /// Seal the pack in progress now (even if smaller than the target size) and return once
    /// every object saved before this call is durable and indexed. Long transfers call it
    /// periodically so that an interruption loses little; the saver stays usable.
    pub fn flush(&self) -> Result<()> {
        let done_rx = self.send_flush(true)?;
        loop {
            match done_rx.recv_timeout(std::time::Duration::from_millis(200)) {
                Ok(r) => return r,
                // A failed compression thread never delivers its blobs: report its error.
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => self.shared.check()?,
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                    self.shared.check()?;
                    return Err(Error::other("the pack writer stopped during a flush"));
                }
            }
        }
    }

    /// Ask for the pack in progress to be sealed once everything saved so far has reached the
    /// writer, without waiting for it (a checkpoint that does not stall the caller).
    pub fn seal_soon(&self) -> Result<()> {
        // Nobody waits for the answer.
        self.send_flush(false).map(drop)
    }

    /// Ask the pack writer to seal the pack in progress once everything saved so far has
    /// reached it; with `wait`, it answers once every pack sealed so far is indexed.
    fn send_flush(&self, wait: bool) -> Result<crossbeam_channel::Receiver<Result<()>>> {
        self.shared.check()?;
        let after = self.shared.submitted.load(Ordering::Acquire);
        let tx = self
            .blobs
            .as_ref()
            .ok_or_else(|| Error::other("saver already finished"))?;
        let (done_tx, done_rx) = bounded(1);
        if tx
            .send(ToWriter::Flush {
                after,
                wait,
                done: done_tx,
            })
            .is_err()
        {
            self.shared.check()?;
            return Err(Error::other("saver stopped"));
        }
        Ok(done_rx)
    }

    /// Stop without sealing the pack in progress: objects queued since the last sealed pack
    /// are thrown away (packs already sealed stay, they are complete and indexed). Used when
    /// what was being received turns out to be bad (a misbehaving peer).
    pub fn abort(mut self) -> SaverStats {
        self.shared.aborted.store(true, Ordering::Release);
        self.stop();
        self.stats()
    }

    /// Add the objects of every pack this saver seals from now on to reach scope `scope`, just
    /// before the pack is published: a transfer records what the peer sent, so that it is not
    /// asked for again, even after an interruption ([`crate::reach`]).
    pub fn set_reach_scope(&self, scope: u32) {
        self.shared
            .reach_scope
            .store(u64::from(scope), Ordering::Release);
    }

    /// Add objects the peer sent that the repository already held (so [`Saver::save_stored`]
    /// did not store them) to the reach scope set by [`Saver::set_reach_scope`], if any: the
    /// peer sent them, so it knows this node holds them.
    pub fn note_sent_present(&self, ids: &[ObjectId]) -> Result<()> {
        let scope = self.shared.reach_scope.load(Ordering::Acquire);
        match u32::try_from(scope) {
            Ok(s) if s != 0 => self.repo.index().reach_insert(s, ids),
            _ => Ok(()),
        }
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
    pub fn finish_keep_session(mut self) -> Result<(SaverStats, WriterSession)> {
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

/// Compress (and, in an encrypted repository, seal) the objects of the jobs.
fn compress_loop(
    level: i32,
    codec: &Codec,
    rx: Receiver<Job>,
    tx: Sender<ToWriter>,
    sh: Arc<Shared>,
) {
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
                if codec.keys().is_some() {
                    match codec.seal(&blob.id, blob.kind, std::mem::take(&mut blob.data)) {
                        Ok(sealed) => blob.data = sealed,
                        Err(e) => {
                            sh.fail(e);
                            return;
                        }
                    }
                }
                blob
            }
        };
        if tx.send(ToWriter::Blob(blob)).is_err() {
            return;
        }
    }
}

/// Packs being sealed (fsync and publish, or upload, then indexing) at once.
const SEALERS: usize = 3;

/// Packs handed to the sealing threads and not sealed yet: a flush waits for none to be left.
#[derive(Default)]
struct InFlight {
    n: Mutex<usize>,
    idle: std::sync::Condvar,
}

impl InFlight {
    fn start(&self) {
        if let Ok(mut n) = self.n.lock() {
            *n += 1;
        }
    }

    fn end(&self) {
        if let Ok(mut n) = self.n.lock() {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.idle.notify_all();
            }
        }
    }

    fn wait_idle(&self) {
        let Ok(mut n) = self.n.lock() else {
            return;
        };
        while *n > 0 {
            match self.idle.wait(n) {
                Ok(g) => n = g,
                Err(_) => return,
            }
        }
    }
}

fn send_seal(tx: &Sender<PackWriter>, in_flight: &InFlight, w: PackWriter) -> Result<()> {
    in_flight.start();
    tx.send(w).map_err(|_| {
        in_flight.end();
        Error::other("pack sealing threads stopped")
    })
}

fn write_loop(repo: &Repo, rx: Receiver<ToWriter>, sh: &Shared) -> Result<()> {
    let target = repo.config().pack_target_size;
    // Full packs are sealed by a few threads while the next pack fills: with a remote backend
    // several uploads are in flight; locally, fsyncs overlap with writing. Packs may therefore
    // be indexed out of order; a flush that waits is the barrier callers use when order
    // matters.
    let (seal_tx, seal_rx) = bounded::<PackWriter>(SEALERS);
    let in_flight = InFlight::default();
    std::thread::scope(|scope| {
        for _ in 0..SEALERS {
            let rx = seal_rx.clone();
            let in_flight = &in_flight;
            scope.spawn(move || {
                for w in rx {
                    if let Err(e) = seal(repo, w, sh) {
                        sh.fail(e);
                    }
                    in_flight.end();
                }
            });
        }
        drop(seal_rx);
        let mut pack: Option<PackWriter> = None;
        let mut result: Result<()> = Ok(());
        let mut received = 0u64;
        let mut flushes: Vec<(u64, bool, Sender<Result<()>>)> = Vec::new();
        let aborted = || sh.aborted.load(Ordering::Acquire);
        for msg in rx.iter() {
            let blob = match msg {
                ToWriter::Blob(b) => {
                    received += 1;
                    Some(b)
                }
                ToWriter::Flush { after, wait, done } => {
                    flushes.push((after, wait, done));
                    None
                }
            };
            if result.is_ok()
                && !aborted()
                && let Some(blob) = blob
            {
                result = (|| {
                    let w = match pack.as_mut() {
                        Some(w) => w,
                        None => {
                            pack.insert(PackWriter::new(repo.backend().as_ref(), repo.codec())?)
                        }
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
                        send_seal(&seal_tx, &in_flight, w)?;
                    }
                    Ok(())
                })();
                if let Err(e) = &result {
                    sh.fail(Error::new(e.kind(), format!("{e:#}")));
                }
            }
            // Flushes whose objects have all arrived: seal the pack in progress; those that
            // wait get their answer once every pack handed to the sealers is indexed.
            if flushes.iter().any(|(after, _, _)| *after <= received) {
                if result.is_ok()
                    && !aborted()
                    && let Some(w) = pack.take()
                {
                    if w.is_empty() {
                        w.abort();
                    } else if let Err(e) = send_seal(&seal_tx, &in_flight, w) {
                        sh.fail(Error::new(e.kind(), format!("{e:#}")));
                        result = Err(e);
                    }
                }
                if flushes
                    .iter()
                    .any(|(after, wait, _)| *after <= received && *wait)
                {
                    in_flight.wait_idle();
                }
                let sealed = sh.check();
                flushes.retain(|(after, _, done)| {
                    if *after > received {
                        return true;
                    }
                    let answer = match (&result, &sealed) {
                        (Ok(()), Ok(())) if aborted() => Err(Error::other("the saver was aborted")),
                        (Ok(()), Ok(())) => Ok(()),
                        (Err(e), _) | (_, Err(e)) => Err(Error::new(e.kind(), format!("{e:#}"))),
                    };
                    let _ = done.send(answer);
                    false
                });
            }
        }
        for (_, _, done) in flushes {
            let _ = done.send(Err(Error::other(
                "the saver stopped before the flush completed",
            )));
        }
        if let Some(w) = pack.take() {
            if w.is_empty() || aborted() || result.is_err() {
                w.abort();
            } else if let Err(e) = send_seal(&seal_tx, &in_flight, w) {
                result = Err(e);
            }
        }
        drop(seal_tx);
        result
    })
}

fn seal(repo: &Repo, w: PackWriter, sh: &Shared) -> Result<()> {
    let scope = u32::try_from(sh.reach_scope.load(Ordering::Acquire))
        .ok()
        .filter(|s| *s != 0);
    if let Some(scope) = scope {
        // Before the pack is published: if the process dies between publishing and indexing,
        // the next transfer indexes the pack (an orphan) and still knows who sent it.
        let ids: Vec<ObjectId> = w.ids().collect();
        repo.index().reach_insert(scope, &ids)?;
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::FileKind;
    use crate::repo::InitOptions;

    fn repo() -> (tempfile::TempDir, Arc<Repo>) {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repo::init(&dir.path().join("r"), &InitOptions::default()).unwrap();
        (dir, Arc::new(repo))
    }

    fn obj(i: u32) -> (ObjectId, Vec<u8>) {
        let data = format!("object number {i} ").repeat(100).into_bytes();
        (ObjectId::of(&data), data)
    }

    #[test]
    fn flush_seals_a_small_pack_and_the_saver_goes_on() {
        let (_d, repo) = repo();
        let saver = Saver::new(repo.clone(), 2).unwrap();
        let reader = repo.index().reader().unwrap();
        for i in 0..50 {
            let (id, data) = obj(i);
            assert!(saver.save(&reader, id, Kind::Data, data).unwrap());
        }
        saver.flush().unwrap();
        let fresh = repo.index().reader().unwrap();
        for i in 0..50 {
            assert!(fresh.contains(&obj(i).0).unwrap(), "object {i} after flush");
        }
        assert_eq!(saver.stats().packs, 1);
        // A flush with nothing new does not write an empty pack.
        saver.flush().unwrap();
        assert_eq!(saver.stats().packs, 1);
        for i in 50..60 {
            let (id, data) = obj(i);
            saver.save(&fresh, id, Kind::Data, data).unwrap();
        }
        let st = saver.finish().unwrap();
        assert_eq!((st.objects, st.packs), (60, 2));
        assert_eq!(repo.backend().list(FileKind::Pack).unwrap().len(), 2);
    }

    #[test]
    fn flush_is_a_barrier_over_packs_sealed_in_parallel() {
        let dir = tempfile::tempdir().unwrap();
        let opts = InitOptions {
            pack_target_size: 1 << 20,
            ..InitOptions::default()
        };
        let repo = Arc::new(Repo::init(&dir.path().join("r"), &opts).unwrap());
        let saver = Saver::new(repo.clone(), 4).unwrap();
        let reader = repo.index().reader().unwrap();
        let mut ids = Vec::new();
        for i in 0..120u32 {
            let data = format!("{i}-").repeat(15_000).into_bytes();
            let id = ObjectId::of(&data);
            let n = data.len() as u32;
            saver
                .save_stored(&reader, id, Kind::Data, 0, n, data)
                .unwrap();
            ids.push(id);
            if i == 20 {
                saver.seal_soon().unwrap();
            }
        }
        // Several full packs are being sealed at once: after the flush, all are indexed.
        saver.flush().unwrap();
        let r = repo.index().reader().unwrap();
        for id in &ids {
            assert!(r.contains(id).unwrap(), "{id:?} not indexed after flush");
        }
        let st = saver.finish().unwrap();
        assert!(st.packs >= 4, "{st:?}");
    }

    #[test]
    fn abort_discards_the_pack_in_progress_only() {
        let (_d, repo) = repo();
        let saver = Saver::new(repo.clone(), 2).unwrap();
        let reader = repo.index().reader().unwrap();
        for i in 0..10 {
            let (id, data) = obj(i);
            saver.save(&reader, id, Kind::Data, data).unwrap();
        }
        saver.flush().unwrap();
        for i in 10..20 {
            let (id, data) = obj(i);
            saver.save(&reader, id, Kind::Data, data).unwrap();
        }
        saver.abort();
        let fresh = repo.index().reader().unwrap();
        assert!(fresh.contains(&obj(3).0).unwrap());
        assert!(!fresh.contains(&obj(13).0).unwrap());
        assert_eq!(repo.backend().list(FileKind::Pack).unwrap().len(), 1);
        assert!(
            crate::writer_session::live_sessions(&repo)
                .unwrap()
                .is_empty()
        );
    }
}
