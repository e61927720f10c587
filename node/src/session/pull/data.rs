//! Stage 5 of a pull: the missing chunks, fetched over `streams` requests at once, verified
//! against their ids and stored as received by [`VERIFIERS`] threads sharing the saver, made
//! durable every `checkpoint` bytes. What the sender sent that this node already had is
//! recorded as known to the sender (`note_sent_present`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use puce_core::ObjectId;
use puce_core::format::pack::Kind;
use puce_core::saver::Saver;

use super::fetch::{Batches, CHUNK_BATCH, Sink, fetch_all};
use super::quota::Quota;
use super::{Guard, Pull, Stored};
use crate::error::{Error, ErrorKind, Result};
use crate::protocol::{self, Code, Object};
use crate::session::{Fault, misbehaved};

/// Threads verifying and storing received chunks.
const VERIFIERS: usize = 2;

/// Stage 5: fetch and store `chunks` with the saver of `guard` (given back to it, also after
/// a failure); what was stored.
pub(super) async fn fetch(
    p: &Pull<'_>,
    guard: &mut Guard,
    chunks: Vec<ObjectId>,
) -> Result<Stored> {
    let conn = p.conn;
    let streams = conn.ctx.config.streams;
    let saver = Arc::new(guard.take()?);
    let checkpoint = conn.ctx.config.checkpoint;
    let progress = conn.progress.clone();
    progress.set_total(chunks.len() as u64, 0);
    let since = Arc::new(AtomicU64::new(0));
    let mut senders = Vec::new();
    let mut verifiers = Vec::new();
    for i in 0..VERIFIERS {
        let (tx, rx) = tokio::sync::mpsc::channel::<Vec<Object>>(2);
        senders.push(tx);
        let (r2, s2, p2, c2, q2) = (
            p.repo.clone(),
            saver.clone(),
            progress.clone(),
            since.clone(),
            p.quota.clone(),
        );
        let h = std::thread::Builder::new()
            .name(format!("puce-sync-verify-{i}"))
            .spawn(move || store_chunks(&r2, &s2, rx, checkpoint, &c2, q2.as_ref(), &*p2))
            .map_err(|e| Error::internal(format!("cannot start a thread: {e}")))?;
        verifiers.push(h);
    }
    let queue = if conn.ctx.fault == Some(Fault::Flood) {
        Batches::new(chunks, 1, 1)
    } else {
        Batches::new(chunks, CHUNK_BATCH, protocol::MAX_OBJECTS_PER_REQUEST)
    };
    let fetched = fetch_all(conn, queue, Kind::Data, streams, Sink::Store(senders))
        .await
        .map(|requests| {
            conn.counters
                .round_trips
                .fetch_add(requests.div_ceil(streams as u64), Ordering::Relaxed);
        });
    let mut stored = Stored::default();
    let mut first_err: Option<Error> = None;
    for h in verifiers {
        match h.join() {
            Ok(Ok(st)) => stored = stored.plus(st),
            Ok(Err(e)) => {
                // A bad object outranks the errors it caused elsewhere.
                if first_err
                    .as_ref()
                    .is_none_or(|f| f.kind() != ErrorKind::BadObject)
                {
                    first_err = Some(e);
                }
            }
            Err(_) => first_err = Some(Error::internal("a verifying thread panicked")),
        }
    }
    guard.saver =
        Some(Arc::try_unwrap(saver).map_err(|_| Error::internal("the saver is still shared"))?);
    match first_err {
        Some(e) if e.kind() == ErrorKind::BadObject => {
            return Err(misbehaved(conn, Code::BadObject, e.message().to_string()));
        }
        Some(e) => return Err(e),
        None => {}
    }
    fetched?;
    Ok(stored)
}

/// A verifying thread: check each chunk against its id, store it, ask for a checkpoint
/// every `checkpoint` bytes (counted over all threads in `since`). A chunk that would exceed
/// the peer's `quota` is not stored: the pull is refused.
fn store_chunks(
    repo: &puce_core::Repo,
    saver: &Saver,
    mut rx: tokio::sync::mpsc::Receiver<Vec<Object>>,
    checkpoint: u64,
    since: &AtomicU64,
    quota: Option<&Quota>,
    progress: &dyn puce_core::progress::Progress,
) -> Result<Stored> {
    let mut st = Stored::default();
    let mut reader = repo.index().reader()?;
    let mut g = saver.generation();
    while let Some(group) = rx.blocking_recv() {
        let mut present = Vec::new();
        for o in group {
            let checked = Kind::from_u8(o.kind).and_then(|kind| {
                repo.codec()
                    .verify_object(&o.id, kind, o.flags, o.raw_len, &o.data)
            });
            if let Err(e) = checked {
                return Err(Error::new(
                    ErrorKind::BadObject,
                    format!("sent data that does not match its id {} ({e})", o.id),
                ));
            }
            if saver.generation() != g {
                reader = repo.index().reader()?;
                g = saver.generation();
            }
            let len = o.data.len() as u64;
            let raw = u64::from(o.raw_len);
            let id = o.id;
            if let Some(q) = quota {
                q.reserve(len)?;
            }
            if saver.save_stored(&reader, id, Kind::Data, o.flags, o.raw_len, o.data)? {
                st.add(len, raw);
            } else {
                if let Some(q) = quota {
                    q.release(len);
                }
                st.present += 1;
                present.push(id);
            }
            let total = since.fetch_add(len, Ordering::AcqRel) + len;
            if total / checkpoint != (total - len) / checkpoint {
                saver.seal_soon()?;
            }
            progress.add(1, len);
        }
        saver.note_sent_present(&present)?;
    }
    Ok(st)
}
