//! Fetching objects for a pull: `GetObjects` batches over several streams at once, each answer
//! checked to hold the objects asked for, in order, of the kind asked for. Trees are collected
//! in memory (at most [`MAX_PULL_TREE_BYTES`](super::MAX_PULL_TREE_BYTES) of plaintext); data goes to the verifying threads.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use puce_core::ObjectId;
use puce_core::format::pack::Kind;

use super::max_pull_tree_bytes;
use crate::error::{Error, ErrorKind, Result};
use crate::protocol::{self, Code, GetObjects, Message, Object};
use crate::session::{Conn, misbehaved};
use crate::transport::Receiver;

/// Chunks asked for in the first requests of a pull, and at least in each.
pub(super) const CHUNK_BATCH: usize = 64;
/// Bytes of chunks a request asks for, estimated from the average size received so far: small
/// files go in batches of up to `MAX_OBJECTS_PER_REQUEST` chunks, so that a pull of many small
/// files makes few requests.
const BATCH_BYTES: u64 = 16 << 20;

pub(super) async fn expect_end(conn: &Conn, recv: &mut Receiver, n: usize) -> Result<()> {
    match conn.answer(recv).await? {
        Message::End(e) if e.count as usize == n => Ok(()),
        other => Err(misbehaved(
            conn,
            Code::Protocol,
            format!("ended an answer of {n} frames with {}", other.name()),
        )),
    }
}

/// Where fetched objects go.
#[derive(Clone)]
pub(super) enum Sink {
    /// Kept in memory (trees), their plaintext bytes counted against
    /// [`MAX_PULL_TREE_BYTES`](super::MAX_PULL_TREE_BYTES).
    Collect(Arc<Mutex<Vec<Object>>>, Arc<AtomicU64>),
    /// Handed to the verifying threads (data) in groups of up to `HANDOFF_GROUP` bytes, each
    /// fetching task to one of them; the bounded channels bound memory.
    Store(Vec<tokio::sync::mpsc::Sender<Vec<Object>>>),
}

/// Bytes of received objects per hand-off to a verifying thread.
const HANDOFF_GROUP: usize = 4 << 20;

/// Fetch one batch of objects of `kind`, handing each (checked to be the one asked for, in
/// order) to `sink`; the stored bytes received.
async fn fetch_batch(
    conn: &Arc<Conn>,
    ids: Vec<ObjectId>,
    kind: Kind,
    sink: &Sink,
    worker: usize,
) -> Result<u64> {
    let mut recv = conn
        .request(&Message::GetObjects(GetObjects { ids: ids.clone() }))
        .await?;
    let mut group: Vec<Object> = Vec::new();
    let r = receive_objects(conn, &mut recv, &ids, kind, sink, worker, &mut group).await;
    // After a failure too, what arrived whole goes on to be verified and stored: it is kept
    // unless the peer misbehaved (the pull's guard then discards the pack in progress).
    if let Sink::Store(txs) = sink
        && !group.is_empty()
    {
        let handed = hand_off(txs, worker, group).await;
        if r.is_ok() {
            handed?;
        }
    }
    let received = r?;
    expect_end(conn, &mut recv, ids.len()).await?;
    Ok(received)
}

/// Read the `Object` frames answering a request for `ids`, handing them to `sink` (data in
/// groups, the last one left in `group`); the stored bytes received.
async fn receive_objects(
    conn: &Arc<Conn>,
    recv: &mut Receiver,
    ids: &[ObjectId],
    kind: Kind,
    sink: &Sink,
    worker: usize,
    group: &mut Vec<Object>,
) -> Result<u64> {
    let mut group_bytes = 0usize;
    let mut received = 0u64;
    let max_trees = max_pull_tree_bytes();
    for want in ids {
        let o = match conn.answer(recv).await? {
            Message::Object(o) => o,
            other => {
                return Err(misbehaved(
                    conn,
                    Code::Protocol,
                    format!(
                        "answered GetObjects with {} before all objects",
                        other.name()
                    ),
                ));
            }
        };
        if o.id != *want || o.kind != kind as u8 {
            return Err(misbehaved(
                conn,
                Code::Protocol,
                format!(
                    "sent object {} (kind {}) where {want} (kind {}) was asked for",
                    o.id, o.kind, kind as u8
                ),
            ));
        }
        conn.ctx.recv_limit.take(o.data.len() as u64).await;
        conn.counters
            .fetched_objects
            .fetch_add(1, Ordering::Relaxed);
        conn.counters
            .fetched_bytes
            .fetch_add(o.data.len() as u64, Ordering::Relaxed);
        received += o.data.len() as u64;
        match sink {
            Sink::Collect(v, held) => {
                let raw = u64::from(o.raw_len);
                if held.fetch_add(raw, Ordering::AcqRel) + raw > max_trees {
                    return Err(Error::new(
                        ErrorKind::Incompatible,
                        format!(
                            "the new snapshots of {} hold more than {} of directory listings, \
                             more than one pull holds in memory: take the snapshots there in \
                             parts (a folder per space) and sync again",
                            conn.label,
                            bytesize::ByteSize(max_trees).display().iec()
                        ),
                    ));
                }
                if let Ok(mut v) = v.lock() {
                    v.push(o);
                }
            }
            Sink::Store(txs) => {
                group_bytes += o.data.len();
                group.push(o);
                if group_bytes >= HANDOFF_GROUP {
                    group_bytes = 0;
                    hand_off(txs, worker, std::mem::take(group)).await?;
                }
            }
        }
    }
    Ok(received)
}

async fn hand_off(
    txs: &[tokio::sync::mpsc::Sender<Vec<Object>>],
    worker: usize,
    group: Vec<Object>,
) -> Result<()> {
    let Some(tx) = txs.get(worker % txs.len().max(1)) else {
        return Err(Error::internal("no verifying thread"));
    };
    // The verifying thread stopped on an error: it reports it.
    tx.send(group)
        .await
        .map_err(|_| Error::internal("the verifying thread stopped"))
}

/// Ids to fetch, handed out in batches: `min` ids at first, then as many as make about
/// [`BATCH_BYTES`] at the average size received so far, between `min` and `max`.
pub(super) struct Batches {
    ids: VecDeque<ObjectId>,
    min: usize,
    max: usize,
    objects: u64,
    bytes: u64,
    requests: u64,
}

impl Batches {
    pub(super) fn new(ids: Vec<ObjectId>, min: usize, max: usize) -> Batches {
        let max = max.clamp(1, protocol::MAX_OBJECTS_PER_REQUEST);
        Batches {
            ids: ids.into(),
            min: min.clamp(1, max),
            max,
            objects: 0,
            bytes: 0,
            requests: 0,
        }
    }

    fn next(&mut self) -> Option<Vec<ObjectId>> {
        if self.ids.is_empty() {
            return None;
        }
        let n = match self.bytes.checked_div(self.objects) {
            Some(avg) => usize::try_from(BATCH_BYTES / avg.max(1)).unwrap_or(usize::MAX),
            None => self.min,
        };
        let n = n.clamp(self.min, self.max).min(self.ids.len());
        self.requests += 1;
        Some(self.ids.drain(..n).collect())
    }

    fn received(&mut self, objects: usize, bytes: u64) {
        self.objects += objects as u64;
        self.bytes += bytes;
    }
}

/// Fetch the ids of `queue` with up to `streams` requests in flight; the number of requests.
pub(super) async fn fetch_all(
    conn: &Arc<Conn>,
    queue: Batches,
    kind: Kind,
    streams: usize,
    sink: Sink,
) -> Result<u64> {
    let queue = Arc::new(Mutex::new(queue));
    let next = |q: &Mutex<Batches>| q.lock().ok().and_then(|mut q| q.next());
    let mut set = tokio::task::JoinSet::new();
    for worker in 0..streams {
        let conn = conn.clone();
        let queue = queue.clone();
        let sink = sink.clone();
        set.spawn(async move {
            while let Some(batch) = next(&queue) {
                let n = batch.len();
                match fetch_batch(&conn, batch, kind, &sink, worker).await {
                    Ok(bytes) => {
                        if let Ok(mut q) = queue.lock() {
                            q.received(n, bytes);
                        }
                    }
                    Err(e) => {
                        // No further batch for anyone; those in flight end as they can.
                        if let Ok(mut q) = queue.lock() {
                            q.ids.clear();
                        }
                        return Err(e);
                    }
                }
            }
            Ok(())
        });
    }
    drop(sink);
    join_all(set).await?;
    let requests = queue.lock().map(|q| q.requests).unwrap_or(0);
    Ok(requests)
}

/// Fetch tree batches; collect the objects, counting their plaintext bytes in `held`.
pub(super) async fn fetch_parallel(
    conn: &Arc<Conn>,
    batches: Vec<Vec<ObjectId>>,
    streams: usize,
    held: &Arc<AtomicU64>,
) -> Result<Vec<Object>> {
    let out = Arc::new(Mutex::new(Vec::new()));
    let max = protocol::MAX_OBJECTS_PER_REQUEST;
    let queue = Batches::new(batches.concat(), max, max);
    let sink = Sink::Collect(out.clone(), held.clone());
    fetch_all(conn, queue, Kind::Tree, streams, sink).await?;
    let mut v = out.lock().map_err(|_| Error::internal("lock poisoned"))?;
    Ok(std::mem::take(&mut *v))
}

/// Wait for every task; the first error. The others are not aborted: after a failure each
/// hands on what it received whole (a failure of the connection ends them all promptly).
async fn join_all(mut set: tokio::task::JoinSet<Result<()>>) -> Result<()> {
    let mut first: Option<Error> = None;
    while let Some(r) = set.join_next().await {
        let r = r.unwrap_or_else(|e| Err(Error::internal(format!("a transfer task failed: {e}"))));
        if let Err(e) = r
            && first.is_none()
        {
            first = Some(e);
        }
    }
    match first {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use puce_core::Hash;

    fn o(b: u8) -> ObjectId {
        ObjectId(Hash([b; 32]))
    }

    #[test]
    fn batches_grow_for_small_objects_and_stay_small_for_large_ones() {
        let ids: Vec<ObjectId> = (0..10_000u32).map(|i| o((i % 251) as u8)).collect();
        let mut q = Batches::new(ids.clone(), CHUNK_BATCH, protocol::MAX_OBJECTS_PER_REQUEST);
        assert_eq!(q.next().map(|b| b.len()), Some(CHUNK_BATCH));
        q.received(CHUNK_BATCH, 100 * CHUNK_BATCH as u64);
        assert_eq!(
            q.next().map(|b| b.len()),
            Some(protocol::MAX_OBJECTS_PER_REQUEST)
        );
        let mut q = Batches::new(ids.clone(), CHUNK_BATCH, protocol::MAX_OBJECTS_PER_REQUEST);
        q.received(10, 10 << 20);
        assert_eq!(q.next().map(|b| b.len()), Some(CHUNK_BATCH));
        let mut q = Batches::new(ids, 1, 1);
        q.received(1, 1);
        assert_eq!(q.next().map(|b| b.len()), Some(1));
        let mut n = 1;
        while q.next().is_some() {
            n += 1;
        }
        assert_eq!((n, q.requests), (10_000, 10_000));
    }
}
