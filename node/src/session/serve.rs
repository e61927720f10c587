//! Serving the other node's requests on a connection.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use puce_core::backend::FileKind;
use puce_core::format::pack::Kind;
use puce_core::format::tree::{Node, Tree};
use puce_core::{SnapshotEntry, SnapshotId};
use tokio::io::AsyncWriteExt;

use super::{Conn, Fault, check_chunking, check_key, send_error, software};
use crate::error::{Error, ErrorKind, Result};
use crate::protocol::{
    self, Code, End, GetObjects, GetSnapshots, Hello, ListSpaces, Message, Object, Push,
    SnapshotRecord, SpaceList, SpaceState, Welcome,
};
use crate::transport::{Receiver, Sender};

/// Bytes of objects read from packs per hand-off to the sending task.
const READ_GROUP: usize = 4 << 20;

/// Serve the peer's requests until the connection closes. The node that accepted the
/// connection expects `Hello` first.
pub async fn serve(conn: Arc<Conn>) {
    loop {
        let (send, recv) = match conn.link.accept().await {
            Ok(s) => s,
            Err(e) => {
                match &e {
                    quinn::ConnectionError::ApplicationClosed(c)
                        if c.error_code != Code::Done.varint() =>
                    {
                        tracing::warn!(
                            "{} closed the connection: {}",
                            conn.label,
                            crate::error::connection_error(&conn.label, &e)
                        );
                    }
                    _ => tracing::debug!("{}: connection ended: {e}", conn.label),
                }
                return;
            }
        };
        // Beyond its budget, a peer is served more slowly, not cut off: no further stream is
        // accepted meanwhile, and QUIC's stream limit (`MAX_STREAMS`) holds the peer back.
        let wait = conn.spend_request();
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        let c = conn.clone();
        tokio::spawn(async move {
            handle(c, send, recv).await;
        });
    }
}

/// The outcome of a request that failed: refuse it (the connection goes on) or cut off the
/// peer (it broke the protocol).
pub(crate) enum Failure {
    Refuse(Code, String),
    CutOff(Code, String),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        match e.kind() {
            ErrorKind::Protocol if protocol::is_too_large(&e) => {
                Failure::CutOff(Code::TooLarge, e.to_string())
            }
            ErrorKind::Protocol => Failure::CutOff(Code::Protocol, e.to_string()),
            _ => Failure::Refuse(e.code(), format!("{e:#}")),
        }
    }
}

async fn handle(conn: Arc<Conn>, mut send: Sender, mut recv: Receiver) {
    let req = match protocol::read_expecting(&mut recv, protocol::Expect::Request).await {
        Ok(Some(m)) => m,
        Ok(None) => {
            conn.cut_off(Code::Protocol, "it opened a stream and sent no request");
            return;
        }
        Err(e) => {
            let e = conn.explain(e);
            match Failure::from(e) {
                Failure::CutOff(code, why) => conn.cut_off(code, &format!("it sent {why}")),
                Failure::Refuse(_, why) => tracing::debug!("{}: {why}", conn.label),
            }
            return;
        }
    };
    let is_hello = matches!(req, Message::Hello(_));
    let negotiated = if is_hello {
        conn.is_negotiated()
    } else {
        conn.wait_negotiated().await
    };
    let result = match req {
        Message::Hello(h) if !negotiated && conn.link.accepted() => {
            hello(&conn, &mut send, h).await
        }
        Message::Hello(_) => Err(Failure::CutOff(
            Code::Protocol,
            "it sent Hello twice, or as the node that was called".into(),
        )),
        m if !negotiated => Err(Failure::CutOff(
            Code::Protocol,
            format!("it sent {} before Hello", m.name()),
        )),
        Message::ListSpaces(r) => list_spaces(&conn, &mut send, r).await,
        Message::GetSnapshots(r) => get_snapshots(&conn, &mut send, r).await,
        Message::GetObjects(r) => get_objects(&conn, &mut send, r).await,
        Message::FindObjects(r) => find_objects(&conn, &mut send, r).await,
        Message::GetForgets(r) => get_forgets(&conn, &mut send, r).await,
        Message::GetChecks(r) => super::checks::serve(&conn, &mut send, r).await,
        Message::Push(r) => push(&conn, &mut send, r).await,
        Message::GetManifest(r) => crate::blind::serve_manifest(&conn, &mut send, r).await,
        Message::GetFile(r) => crate::blind::serve_file(&conn, &mut send, r).await,
        m => Err(Failure::CutOff(
            Code::Protocol,
            format!("it sent {} as a request", m.name()),
        )),
    };
    match result {
        Ok(()) => {
            send.finish();
        }
        Err(Failure::Refuse(code, why)) => {
            tracing::warn!("refused a request of {}: {why}", conn.label);
            send_error(&mut send, code, &why).await;
        }
        Err(Failure::CutOff(code, why)) => {
            send_error(&mut send, code, &why).await;
            conn.cut_off(code, &why);
        }
    }
}

pub(crate) async fn write(conn: &Conn, send: &mut Sender, m: &Message) -> Result<(), Failure> {
    protocol::write(send, m)
        .await
        .map_err(|e| Failure::from(conn.explain(e)))
}

async fn hello(conn: &Arc<Conn>, send: &mut Sender, h: Hello) -> Result<(), Failure> {
    let version = h.max_version.min(conn.ctx.max_version());
    if version < h.min_version.max(protocol::MIN_VERSION) {
        let why = format!(
            "no common protocol revision: {} speaks {}..={}, this node {}..={}; upgrade the older node",
            conn.label,
            h.min_version,
            h.max_version,
            protocol::MIN_VERSION,
            protocol::VERSION
        );
        return Err(Failure::CutOff(Code::Version, why));
    }
    if let Err(e) = check_chunking(&conn.label, conn.ctx.chunking(), h.chunking) {
        tracing::warn!("refused {}: {e}", conn.label);
        send_error(send, Code::Incompatible, &e.to_string()).await;
        // Let the answer reach the peer before closing.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), send.stopped()).await;
        conn.link
            .close(Code::Incompatible, b"different chunking parameters");
        return Ok(());
    }
    if version >= protocol::BLIND_VERSION
        && let Err(e) = check_key(&conn.label, &conn.peer, conn.ctx.key(), h.key)
    {
        tracing::warn!("refused {}: {e}", conn.label);
        send_error(send, Code::Incompatible, &e.to_string()).await;
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), send.stopped()).await;
        conn.link.close(Code::Incompatible, b"different keys");
        return Ok(());
    }
    if let Ok(mut n) = conn.remote_name.lock() {
        n.clone_from(&h.node);
    }
    let w = Welcome {
        version,
        node: conn.ctx.config.name.clone(),
        software: software(),
        chunking: conn.ctx.chunking(),
        key: (version >= protocol::BLIND_VERSION)
            .then(|| conn.ctx.key())
            .flatten(),
    };
    // Marked before answering: the peer's next request may arrive as soon as it reads this.
    conn.version.store(version, Ordering::Release);
    conn.negotiated.send_replace(true);
    write(conn, send, &Message::Welcome(w)).await?;
    tracing::info!(
        "{} connected (node '{}', {})",
        conn.label,
        h.node,
        h.software
    );
    Ok(())
}

pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T, Failure> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(Failure::from),
        Err(e) => Err(Failure::Refuse(
            Code::Internal,
            format!("internal error: {e}"),
        )),
    }
}

/// Snapshots grouped by space.
fn by_space(all: &[SnapshotEntry]) -> BTreeMap<&str, Vec<&SnapshotEntry>> {
    let mut m: BTreeMap<&str, Vec<&SnapshotEntry>> = BTreeMap::new();
    for s in all {
        m.entry(s.snapshot.space.as_str()).or_default().push(s);
    }
    m
}

fn not_readable(conn: &Conn, space: &str) -> Failure {
    tracing::warn!(
        "refused {}: it asked to read space '{space}', which node.toml does not let it read \
         (add \"pull\" to spaces.{space} of peer '{}' to allow it)",
        conn.label,
        conn.peer.name
    );
    Failure::Refuse(
        Code::NotAllowed,
        format!(
            "node '{}' does not let this node read space '{space}' (its node.toml must grant \
             \"pull\" on it to this node's id)",
            conn.ctx.config.name
        ),
    )
}

/// A request naming more than `max` items is a protocol violation: the peer is cut off.
pub(super) fn at_most(what: &str, n: usize, max: usize) -> Result<(), Failure> {
    if n > max {
        return Err(Failure::CutOff(
            Code::Protocol,
            format!("it asked for {n} {what} in one request (at most {max})"),
        ));
    }
    Ok(())
}

async fn list_spaces(conn: &Arc<Conn>, send: &mut Sender, r: ListSpaces) -> Result<(), Failure> {
    if r.spaces.len() > 4096 {
        return Err(Failure::CutOff(
            Code::Protocol,
            "it asked for more than 4096 spaces".into(),
        ));
    }
    for s in &r.spaces {
        if !conn.peer.may_pull(s) {
            return Err(not_readable(conn, s));
        }
    }
    let repo = conn.ctx.repo.clone();
    let (all, lineage) = blocking(move || {
        // A snapshot with a forget record (its forget interrupted) is not offered.
        let forgotten = puce_core::forgotten::ids(&repo)?;
        let mut all = repo.snapshots()?;
        all.retain(|s| !forgotten.contains(&s.id));
        let lineage = puce_core::forgotten::lineage(&repo, &all)?;
        Ok((all, lineage))
    })
    .await?;
    let groups = by_space(&all);
    let names: Vec<String> = if r.spaces.is_empty() {
        let mut n: Vec<String> = groups
            .keys()
            .filter(|s| conn.peer.may_pull(s))
            .map(|s| s.to_string())
            .collect();
        // Spaces named in node.toml that have no snapshot yet are listed too.
        if let Some(p) = conn.ctx.config.peer_by_id(&conn.peer.id) {
            for (s, a) in &p.spaces {
                if s != "*" && a.pull && !n.contains(s) {
                    n.push(s.clone());
                }
            }
        }
        n.sort();
        n
    } else {
        r.spaces
    };
    let mut spaces = Vec::new();
    for name in names {
        let snaps = groups.get(name.as_str()).cloned().unwrap_or_default();
        let heads = puce_core::history::heads(&all, &lineage, &name)
            .iter()
            .map(|s| s.id)
            .collect();
        spaces.push(SpaceState {
            name,
            heads,
            snapshots: snaps.iter().map(|s| s.id).collect(),
        });
    }
    write(conn, send, &Message::SpaceList(SpaceList { spaces })).await
}

async fn get_snapshots(
    conn: &Arc<Conn>,
    send: &mut Sender,
    r: GetSnapshots,
) -> Result<(), Failure> {
    at_most(
        "snapshots",
        r.ids.len(),
        protocol::MAX_SNAPSHOTS_PER_REQUEST,
    )?;
    let repo = conn.ctx.repo.clone();
    let all = blocking(move || Ok(repo.snapshots()?)).await?;
    let by_id: std::collections::HashMap<SnapshotId, &SnapshotEntry> =
        all.iter().map(|s| (s.id, s)).collect();
    let mut wanted = Vec::new();
    for id in &r.ids {
        // A snapshot of a space the peer may not read is answered as if absent: naming its
        // space (or confirming it exists) would tell the peer what it may not see.
        let readable = by_id
            .get(id)
            .filter(|s| conn.peer.may_pull(&s.snapshot.space));
        let Some(s) = readable else {
            if let Some(s) = by_id.get(id) {
                tracing::warn!(
                    "refused {}: it asked for snapshot {id} of space '{}', which node.toml does                      not let it read",
                    conn.label,
                    s.snapshot.space
                );
            }
            return Err(Failure::Refuse(
                Code::NotFound,
                format!(
                    "snapshot {id} is not on node '{}', or not in a space it lets this node read",
                    conn.ctx.config.name
                ),
            ));
        };
        wanted.push((*id, s.snapshot.root));
    }
    let repo = conn.ctx.repo.clone();
    let ids: Vec<SnapshotId> = wanted.iter().map(|w| w.0).collect();
    let records = blocking(move || {
        let mut out = Vec::new();
        for id in ids {
            out.push((id, repo.backend().read(FileKind::Snapshot, &id.to_hex())?));
        }
        Ok(out)
    })
    .await?;
    conn.allow_objects(wanted.iter().map(|w| w.1));
    let n = records.len() as u32;
    for (id, bytes) in records {
        write(conn, send, &Message::Snapshot(SnapshotRecord { id, bytes })).await?;
    }
    write(conn, send, &Message::End(End { count: n })).await
}

/// Which of the snapshots named this node forgot (revision 3): its forget records of them, in
/// spaces the peer may read, signed by this node; the others left out without saying why.
async fn get_forgets(
    conn: &Arc<Conn>,
    send: &mut Sender,
    r: protocol::GetForgets,
) -> Result<(), Failure> {
    at_most(
        "snapshots",
        r.ids.len(),
        protocol::MAX_SNAPSHOTS_PER_REQUEST,
    )?;
    let c = conn.clone();
    let records = blocking(move || super::forget::records_for(&c, &r.ids)).await?;
    let n = records.len() as u32;
    for bytes in records {
        write(
            conn,
            send,
            &Message::Forget(protocol::ForgetRecord { bytes }),
        )
        .await?;
    }
    write(conn, send, &Message::End(End { count: n })).await
}

async fn get_objects(conn: &Arc<Conn>, send: &mut Sender, r: GetObjects) -> Result<(), Failure> {
    at_most("objects", r.ids.len(), protocol::MAX_OBJECTS_PER_REQUEST)?;
    if let Some(id) = r.ids.iter().find(|id| !conn.is_served(id)) {
        // A node following the protocol asks only for objects reachable from snapshots it was
        // sent: anything else is probing for data it may not read.
        return Err(Failure::CutOff(
            Code::NotAllowed,
            format!("it asked for object {id}, which is not in any snapshot it was sent"),
        ));
    }
    send_objects(conn, send, r.ids, false).await
}

/// Objects asked for by id alone (a peer healing its repository). Served are only those
/// reachable from a snapshot of a space the peer may read (checked by walking those snapshots'
/// trees, once per id per connection) and held here undamaged; the others are left out
/// without saying why, so the answer reveals nothing of the spaces the peer may not read.
async fn find_objects(
    conn: &Arc<Conn>,
    send: &mut Sender,
    r: protocol::FindObjects,
) -> Result<(), Failure> {
    at_most("objects", r.ids.len(), protocol::MAX_OBJECTS_PER_REQUEST)?;
    if !conn.peer.may_pull_any() {
        return Err(Failure::Refuse(
            Code::NotAllowed,
            format!(
                "node '{}' lets this node read no space, so it cannot heal from it (its                  node.toml must grant \"pull\" on a space to this node's id)",
                conn.ctx.config.name
            ),
        ));
    }
    // One request at a time per connection, one walk at a time in the node: a walk reads
    // every tree of the readable spaces.
    let mut st = conn.finding.lock().await;
    let mut seen = std::collections::HashSet::new();
    let ids: Vec<puce_core::ObjectId> = r.ids.into_iter().filter(|id| seen.insert(*id)).collect();
    let unknown: Vec<puce_core::ObjectId> = ids
        .iter()
        .filter(|id| !conn.is_served(id))
        .copied()
        .collect();
    if !unknown.is_empty() {
        let repo = conn.ctx.repo.clone();
        let digest = blocking(move || Ok(snapshots_digest(&repo.snapshots()?))).await?;
        if st.walked != Some(digest) {
            st.misses.clear();
        }
        let asked = unknown.len();
        let unknown: Vec<puce_core::ObjectId> = unknown
            .into_iter()
            .filter(|id| !st.misses.contains(id))
            .collect();
        if unknown.len() < asked {
            tracing::info!(
                "{} asks again for {} objects a walk did not find: not walking for them",
                conn.label,
                asked - unknown.len()
            );
        }
        if !unknown.is_empty() {
            if let Some(at) = st.next_walk {
                tokio::time::sleep_until(at).await;
            }
            let _walk = conn.ctx.walking.lock().await;
            let started = tokio::time::Instant::now();
            let c = conn.clone();
            let asked = unknown.clone();
            let (found, digest) = blocking(move || {
                let digest = snapshots_digest(&c.ctx.repo.snapshots()?);
                let may = |space: &str| c.peer.may_pull(space);
                let found = puce_core::heal::find_reachable(&c.ctx.repo, &may, &asked)?;
                Ok((found, digest))
            })
            .await?;
            let now = tokio::time::Instant::now();
            st.next_walk = Some(now + (now - started));
            tracing::info!(
                "walked the snapshots {} may read for {} objects in {:?}: {} found",
                conn.label,
                unknown.len(),
                now - started,
                found.len()
            );
            if st.walked != Some(digest) {
                st.misses.clear();
                st.walked = Some(digest);
            }
            for id in unknown.iter().filter(|id| !found.contains(id)) {
                if st.misses.len() >= super::MAX_FIND_MISSES {
                    break;
                }
                st.misses.insert(*id);
            }
            conn.allow_objects(found);
        }
    }
    let ids: Vec<puce_core::ObjectId> = ids.into_iter().filter(|id| conn.is_served(id)).collect();
    tracing::info!(
        "{} asks for {} objects to heal its repository",
        conn.label,
        ids.len()
    );
    send_objects(conn, send, ids, true).await
}

/// A digest of the ids of `snapshots`: what a `FindObjects` walk walked.
fn snapshots_digest(snapshots: &[SnapshotEntry]) -> blake3::Hash {
    let mut h = blake3::Hasher::new();
    for s in snapshots {
        h.update(s.id.as_bytes());
    }
    h.finalize()
}

/// Send `ids` (each already allowed) as `Object` frames, then `End`. With `skip_bad`, an
/// object missing or damaged here is left out (and logged) instead of failing the answer.
async fn send_objects(
    conn: &Arc<Conn>,
    send: &mut Sender,
    ids: Vec<puce_core::ObjectId>,
    skip_bad: bool,
) -> Result<(), Failure> {
    if conn.ctx.fault == Some(Fault::Oversized) {
        // Test fault: a frame header declaring far more than an Object may carry.
        let mut head = u32::MAX.to_le_bytes().to_vec();
        head.push(protocol::MessageType::Object as u8);
        let _ = send.write_all(&head).await;
        send.finish();
        return Ok(());
    }
    // Objects are read off the async threads in groups of up to READ_GROUP bytes (one
    // hand-off per group, not per object); two groups in flight bound the memory.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Vec<Object>>>(2);
    let c = conn.clone();
    let reader_task = tokio::task::spawn_blocking(move || {
        let repo = &c.ctx.repo;
        let reader = match repo.index().reader() {
            Ok(r) => r,
            Err(e) => {
                let _ = tx.blocking_send(Err(e.into()));
                return;
            }
        };
        let mut group: Vec<Object> = Vec::new();
        let mut group_bytes = 0usize;
        for id in ids {
            let r = (|| -> Result<Object> {
                let loc = reader.get(&id)?.ok_or_else(|| {
                    Error::new(
                        ErrorKind::NotFound,
                        format!(
                            "object {id} is missing on node '{}' (its repository is damaged: \
                             run `puce check` there)",
                            c.ctx.config.name
                        ),
                    )
                })?;
                let mut data = repo.read_stored(&reader, &loc)?;
                if skip_bad {
                    // Never hand out damaged bytes to a node that is healing.
                    repo.codec()
                        .verify_object(&id, loc.kind, loc.flags, loc.raw_len, &data)?;
                }
                if loc.kind == Kind::Tree {
                    // Children of a served tree may be asked for next.
                    let plain =
                        repo.codec()
                            .decode_object(&id, loc.kind, loc.flags, loc.raw_len, &data)?;
                    let tree = Tree::decode(&plain)?;
                    c.allow_objects(tree.entries.iter().flat_map(|e| match &e.node {
                        Node::Dir { tree } => vec![*tree],
                        Node::File { chunks, .. } => chunks.clone(),
                        _ => vec![], // symlinks and special files: no content
                    }));
                } else if c.ctx.fault == Some(Fault::CorruptData)
                    && let Some(b) = data.last_mut()
                {
                    *b ^= 0x55;
                }
                Ok(Object {
                    id,
                    kind: loc.kind as u8,
                    flags: loc.flags,
                    raw_len: loc.raw_len,
                    data,
                })
            })();
            match r {
                Ok(o) => {
                    group_bytes += o.data.len();
                    group.push(o);
                    if group_bytes >= READ_GROUP {
                        group_bytes = 0;
                        if tx.blocking_send(Ok(std::mem::take(&mut group))).is_err() {
                            return;
                        }
                    }
                }
                Err(e)
                    if skip_bad
                        && matches!(
                            e.kind(),
                            ErrorKind::NotFound | ErrorKind::Store | ErrorKind::BadObject
                        ) =>
                {
                    tracing::warn!(
                        "object {id} asked for by {} is missing or damaged here, left out: {e:#} \
                         (run `puce check --read-data` on this node)",
                        c.label
                    );
                }
                Err(e) => {
                    let _ = tx.blocking_send(Ok(std::mem::take(&mut group)));
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
        }
        if !group.is_empty() {
            let _ = tx.blocking_send(Ok(group));
        }
    });
    let mut count = 0u32;
    while let Some(group) = rx.recv().await {
        for obj in group.map_err(Failure::from)? {
            let len = obj.data.len() as u64;
            conn.ctx.send_limit.take(len).await;
            // The data goes to QUIC without a copy.
            let head = protocol::object_frame_head(&obj).map_err(Failure::from)?;
            let mut chunks = [bytes::Bytes::from(head), bytes::Bytes::from(obj.data)];
            send.write_chunks(&mut chunks).await.map_err(|e| {
                Failure::from(conn.explain(crate::error::Error::new(
                    crate::error::ErrorKind::Network,
                    format!("stream failed: {e}"),
                )))
            })?;
            count += 1;
            let sent = conn.counters.sent_objects.fetch_add(1, Ordering::Relaxed) + 1;
            if conn.ctx.fault == Some(Fault::CutOffMidway) && sent == 3000 {
                conn.cut_off(Code::TooManyRequests, "too many requests (test fault)");
            }
            conn.counters.sent_bytes.fetch_add(len, Ordering::Relaxed);
            conn.progress.add(1, len);
        }
    }
    let _ = reader_task.await;
    write(conn, send, &Message::End(End { count })).await
}

async fn push(conn: &Arc<Conn>, send: &mut Sender, r: Push) -> Result<(), Failure> {
    if !conn.peer.may_push(&r.space) {
        tracing::warn!(
            "refused {}: it asked to push space '{}', which node.toml does not let it write \
             (add \"push\" to spaces.{} of peer '{}' to allow it)",
            conn.label,
            r.space,
            r.space,
            conn.peer.name
        );
        return Err(Failure::Refuse(
            Code::NotAllowed,
            format!(
                "node '{}' does not let this node write space '{}' (its node.toml must grant \
                 \"push\" on it to this node's id)",
                conn.ctx.config.name, r.space
            ),
        ));
    }
    if conn.pulling.swap(true, Ordering::AcqRel) {
        return Err(Failure::Refuse(
            Code::Busy,
            "a push is already in progress on this connection".into(),
        ));
    }
    tracing::info!("{} pushes space '{}'", conn.label, r.space);
    let res = super::pull::pull(conn, std::slice::from_ref(&r.space)).await;
    conn.pulling.store(false, Ordering::Release);
    let rep = match res {
        Ok(rep) => rep,
        Err(e) => {
            tracing::warn!(
                "push of space '{}' by {} failed: {e:#}",
                r.space,
                conn.label
            );
            crate::sync::record_incoming(conn, Err(&e), None);
            // (If the peer misbehaved, the pull has already cut the connection off.)
            return Err(Failure::Refuse(e.code(), format!("{e:#}")));
        }
    };
    crate::sync::record_incoming(conn, Ok(()), Some(&rep));
    let Some(rep) = rep.reports.into_iter().next() else {
        return Err(Failure::Refuse(
            Code::Internal,
            "the pull reported nothing".into(),
        ));
    };
    let done = protocol::PushDone {
        snapshots: rep.snapshots as u32,
        objects: rep.objects,
        bytes: rep.bytes,
        raw_bytes: rep.raw_bytes,
        logical_bytes: rep.logical_bytes,
        merges: rep.merges as u32,
        conflicts: rep.conflicts.len() as u32,
    };
    tracing::info!(
        "push of space '{}' by {}: {} snapshots, {} objects, {} bytes stored, {} merges",
        r.space,
        conn.label,
        done.snapshots,
        done.objects,
        done.bytes,
        done.merges
    );
    write(conn, send, &Message::PushDone(done)).await
}
