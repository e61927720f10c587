//! Healing this node's repository from its peers: `puce repair --from PEER` and the daemon
//! after a scheduled check that found damage.
//!
//! This node connects to each peer named, checks that it speaks revision 2 of the protocol
//! (`FindObjects`), and hands the connections to [`puce_core::heal::heal`] as sources: the
//! damaged objects are asked for by id with `FindObjects`, damaged snapshot records with
//! `GetSnapshots`. Each peer serves only what is reachable from the spaces its `node.toml` lets
//! this node read (see `docs/protocol.md`); everything received is verified before it is stored.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use puce_core::check::CheckReport;
use puce_core::format::pack::Kind;
use puce_core::heal::{FetchedObject, HealReport, ObjectSource, SourceReport, heal};
use puce_core::progress::{NoProgress, Progress};
use puce_core::{ObjectId, Repo, SnapshotId};

use crate::config::Peer;
use crate::error::{Error, ErrorKind, Result};
use crate::protocol::{self, Code, FindObjects, GetSnapshots, Message};
use crate::session::{Conn, NodeCtx};
use crate::sync::{dial, load_node, runtime};
use crate::transport;

/// A connected peer, as a source of healthy copies. Used from a blocking thread.
struct PeerSource {
    name: String,
    conn: Arc<Conn>,
    handle: tokio::runtime::Handle,
}

fn to_core(e: Error) -> puce_core::Error {
    puce_core::Error::other(format!("{e:#}"))
}

fn misbehaved(conn: &Conn, why: String) -> Error {
    conn.cut_off(Code::Protocol, &why);
    Error::protocol(format!("{} {why}: cut off", conn.label))
}

impl ObjectSource for PeerSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn fetch_objects(&mut self, ids: &[ObjectId]) -> puce_core::Result<Vec<FetchedObject>> {
        self.handle
            .block_on(find_objects(&self.conn, ids))
            .map_err(to_core)
    }

    fn fetch_snapshot(&mut self, id: &SnapshotId) -> puce_core::Result<Option<Vec<u8>>> {
        self.handle
            .block_on(get_snapshot(&self.conn, id))
            .map_err(to_core)
    }
}

/// `FindObjects`: the objects of `ids` the peer serves, checked to come in request order.
async fn find_objects(conn: &Arc<Conn>, ids: &[ObjectId]) -> Result<Vec<FetchedObject>> {
    let mut recv = conn
        .request(&Message::FindObjects(FindObjects { ids: ids.to_vec() }))
        .await?;
    conn.counters.round_trips.fetch_add(1, Ordering::Relaxed);
    let mut out = Vec::new();
    let mut next = 0usize;
    loop {
        match conn.answer(&mut recv).await? {
            Message::Object(o) => {
                let Some(pos) = ids
                    .get(next..)
                    .and_then(|rest| rest.iter().position(|i| *i == o.id))
                else {
                    return Err(misbehaved(
                        conn,
                        format!("sent object {}, not asked for or out of order", o.id),
                    ));
                };
                next += pos + 1;
                let Ok(kind) = Kind::from_u8(o.kind) else {
                    return Err(misbehaved(
                        conn,
                        format!("sent object {} of unknown kind {}", o.id, o.kind),
                    ));
                };
                conn.ctx.recv_limit.take(o.data.len() as u64).await;
                conn.progress.add(0, o.data.len() as u64);
                out.push(FetchedObject {
                    id: o.id,
                    kind,
                    flags: o.flags,
                    raw_len: o.raw_len,
                    data: o.data,
                });
            }
            Message::End(e) if e.count as usize == out.len() => return Ok(out),
            other => {
                return Err(misbehaved(
                    conn,
                    format!(
                        "answered FindObjects with {} after {} objects",
                        other.name(),
                        out.len()
                    ),
                ));
            }
        }
    }
}

/// `GetSnapshots` of one record; `None` when the peer does not have it (or may not show it).
async fn get_snapshot(conn: &Arc<Conn>, id: &SnapshotId) -> Result<Option<Vec<u8>>> {
    let mut recv = conn
        .request(&Message::GetSnapshots(GetSnapshots { ids: vec![*id] }))
        .await?;
    conn.counters.round_trips.fetch_add(1, Ordering::Relaxed);
    let rec = match conn.answer(&mut recv).await {
        Ok(Message::Snapshot(r)) if r.id == *id => r,
        Ok(other) => {
            return Err(misbehaved(
                conn,
                format!("answered GetSnapshots {id} with {}", other.name()),
            ));
        }
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    match conn.answer(&mut recv).await? {
        Message::End(e) if e.count == 1 => Ok(Some(rec.bytes)),
        other => Err(misbehaved(
            conn,
            format!("ended a GetSnapshots answer with {}", other.name()),
        )),
    }
}

/// Connect to `peer` and check it can serve a heal.
async fn connect(ctx: &Arc<NodeCtx>, endpoint: &quinn::Endpoint, peer: &Peer) -> Result<Arc<Conn>> {
    let address = peer.address.clone().ok_or_else(|| {
        Error::new(
            ErrorKind::Config,
            format!(
                "peer '{}' has no address in node.toml: this node cannot call it to heal from it",
                peer.name
            ),
        )
    })?;
    let conn = dial(ctx, endpoint, peer, &address, Arc::new(NoProgress)).await?;
    let w = conn.hello().await?;
    if w.version < protocol::FIND_OBJECTS_VERSION {
        conn.done();
        return Err(Error::new(
            ErrorKind::Incompatible,
            format!(
                "{} speaks protocol revision {}, which cannot serve a repair (revision {} or \
                 later is needed): upgrade puce on that node",
                conn.label,
                w.version,
                protocol::FIND_OBJECTS_VERSION
            ),
        ));
    }
    Ok(conn)
}

/// Heal what `damage` found from `peers`, asked in order, over `endpoint`. Fails only if no
/// peer could be reached; a peer that fails later is reported in [`HealReport::sources`].
pub async fn heal_from(
    ctx: &Arc<NodeCtx>,
    endpoint: &quinn::Endpoint,
    peers: &[Peer],
    damage: CheckReport,
    progress: Arc<dyn Progress>,
) -> Result<HealReport> {
    let mut conns = Vec::new();
    let mut unreachable = Vec::new();
    let mut first_err = None;
    for p in peers {
        match connect(ctx, endpoint, p).await {
            Ok(c) => conns.push((p.name.clone(), c)),
            Err(e) => {
                tracing::info!("cannot heal from peer '{}': {e:#}", p.name);
                unreachable.push(SourceReport {
                    name: p.name.clone(),
                    error: Some(format!("{e:#}")),
                    ..SourceReport::default()
                });
                first_err.get_or_insert(e);
            }
        }
    }
    if conns.is_empty() {
        return Err(first_err.unwrap_or_else(|| {
            Error::new(
                ErrorKind::Config,
                "no peer to heal from: name one with `puce repair --from PEER`",
            )
        }));
    }
    let handle = tokio::runtime::Handle::current();
    let mut sources: Vec<PeerSource> = conns
        .iter()
        .map(|(name, c)| PeerSource {
            name: name.clone(),
            conn: c.clone(),
            handle: handle.clone(),
        })
        .collect();
    let repo = ctx.repo.clone();
    let r = tokio::task::spawn_blocking(move || {
        let mut refs: Vec<&mut dyn ObjectSource> = sources
            .iter_mut()
            .map(|s| s as &mut dyn ObjectSource)
            .collect();
        heal(&repo, &damage, &mut refs, progress.as_ref())
    })
    .await
    .map_err(|e| Error::internal(format!("the heal thread failed: {e}")))?;
    for (_, c) in &conns {
        c.done();
    }
    let mut report = r?;
    report.sources.extend(unreachable);
    Ok(report)
}

/// `puce repair --from PEER...`: heal what `damage` found, from a blocking context.
pub fn repair_now(
    repo: Arc<Repo>,
    dir: &Path,
    peers: &[String],
    damage: CheckReport,
    progress: Arc<dyn Progress>,
) -> Result<HealReport> {
    let ctx = load_node(repo, dir)?;
    let peers: Vec<Peer> = peers
        .iter()
        .map(|n| ctx.config.find_peer(n).cloned())
        .collect::<Result<_>>()?;
    let rt = runtime()?;
    rt.block_on(async {
        let mut remote = None;
        for p in &peers {
            if let Some(a) = &p.address
                && let Ok(r) = transport::resolve(a).await
            {
                remote = Some(r);
                break;
            }
        }
        let Some(remote) = remote else {
            // Let the first peer's own connection attempt say what is wrong.
            let endpoint = transport::dial_only(std::net::SocketAddr::from(([0, 0, 0, 0], 0)))?;
            return heal_from(&ctx, &endpoint, &peers, damage, progress).await;
        };
        let endpoint = transport::dial_only(remote)?;
        let r = heal_from(&ctx, &endpoint, &peers, damage, progress).await;
        endpoint.close(Code::Done.varint(), b"done");
        let _ = tokio::time::timeout(Duration::from_secs(3), endpoint.wait_idle()).await;
        r
    })
}

/// Log what a heal did (the daemon's record of it).
pub fn log_report(r: &HealReport) {
    for s in &r.sources {
        if s.objects > 0 || s.snapshots > 0 {
            tracing::info!(
                "healed {} objects ({} bytes) and {} snapshot records from peer '{}'",
                s.objects,
                s.bytes,
                s.snapshots,
                s.name
            );
        }
        if let Some(e) = &s.error {
            tracing::warn!("healing from peer '{}' stopped: {e}", s.name);
        }
    }
    tracing::info!(
        "heal: {} damaged packs retired, {} good objects rewritten, {} objects healed, {} lost",
        r.packs_retired,
        r.objects_rewritten,
        r.healed.len(),
        r.lost.len()
    );
    for l in r.lost.iter().take(50) {
        tracing::warn!(
            "could not heal {} object {}: no peer has it; it belongs to '{}' in snapshot {} of \
             space '{}'",
            l.kind,
            l.id,
            l.path,
            l.snapshot.get(..12).unwrap_or(&l.snapshot),
            l.space
        );
    }
    for s in &r.snapshots_lost {
        tracing::warn!("could not heal snapshot record {s}: no peer has it");
    }
}
