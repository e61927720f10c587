//! Forgets carried across nodes (`docs/design.md`, "Forgetting across nodes").
//!
//! Before a pull decides which listed snapshots are new, it asks the peer, with `GetForgets`,
//! about every snapshot this node holds in the pulled spaces that the peer did not list: the
//! peer answers with its forget records of those, each signed by the peer's key. A record is
//! applied only if its signature is good, its signer is the peer on the connection (whose key
//! TLS authenticated) and may write the space here (`push` in node.toml), and it names the
//! space this node holds the snapshot in; anything else is ignored with a log line. Applying a
//! record stores it (as signed, to keep who asked) and forgets the snapshot here. A snapshot
//! with a forget record here is never new, whoever lists it.
//!
//! A node signs its records when it sends them, so that a record passed on from node to node
//! is always signed by the sender: each node needs to know only its own peers' keys.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use puce_core::forgotten;
use puce_core::format::forget::{Forget, Signature, Signer, node_id_of_key};
use puce_core::{SnapshotEntry, SnapshotId};

use super::{Conn, Fault, blocking, misbehaved};
use crate::auth::Permissions;
use crate::config::Peer;
use crate::error::Result;
use crate::identity::{Identity, NodeId};
use crate::protocol::{self, Code, GetForgets, Message, SpaceList};

/// `f` signed by `identity` (any signature it had replaced).
pub fn sign(identity: &Identity, f: Forget) -> Result<Forget> {
    let node = identity.id().0;
    let msg = f.signed_message(&node)?;
    let (public_key, sig) = identity.sign(&msg)?;
    Ok(Forget {
        signer: Some(Signer {
            node,
            public_key,
            signature: Signature::from_bytes(&sig)?,
        }),
        ..f
    })
}

/// The node that signed `f`, if the signature is good and its key is that node's.
pub fn verify(f: &Forget) -> std::result::Result<NodeId, String> {
    let Some(s) = &f.signer else {
        return Err("it is not signed".into());
    };
    if node_id_of_key(&s.public_key) != s.node {
        return Err(format!(
            "its key is not the key of node {}, which it names as signer",
            NodeId(s.node)
        ));
    }
    let msg = f.signed_message(&s.node).map_err(|e| e.to_string())?;
    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &s.public_key)
        .verify(&msg, &s.signature.to_bytes())
        .map_err(|_| format!("its signature by node {} is not valid", NodeId(s.node)))?;
    Ok(NodeId(s.node))
}

/// Whether a forget record received from `peer` may be applied here: well signed, by `peer`
/// itself, which may write the record's space here, and of `held_space`, the space this node
/// holds the snapshot in.
pub fn check(peer: &Permissions, f: &Forget, held_space: &str) -> std::result::Result<(), String> {
    let signer = verify(f)?;
    if signer != peer.id {
        return Err(format!(
            "it is signed by node {signer}, not by the peer (a node passes on forgets under its \
             own signature)"
        ));
    }
    if f.space != held_space {
        return Err(format!(
            "it names space '{}', but the snapshot is of space '{held_space}' here",
            f.space
        ));
    }
    if !peer.may_push(&f.space) {
        return Err(format!(
            "node.toml does not let peer '{}' write space '{}' here, so it may not forget there",
            peer.name, f.space
        ));
    }
    Ok(())
}

/// Before a pull of `spaces` decides what is new (`list` from the peer, `local` this node's
/// snapshots): learn and apply the peer's forgets of snapshots held here that it no longer
/// lists. Returns every snapshot with a forget record here: none of them is new.
pub async fn before_pull(
    conn: &Arc<Conn>,
    spaces: &[String],
    list: &SpaceList,
    local: &[SnapshotEntry],
) -> Result<HashSet<SnapshotId>> {
    let repo = conn.ctx.repo.clone();
    let label = conn.label.clone();
    let known = blocking(move || {
        finish_ended_holds(&repo, &label)?;
        Ok(forgotten::ids(&repo)?)
    })
    .await?;
    let listed: HashSet<(SnapshotId, &str)> = list
        .spaces
        .iter()
        .flat_map(|st| st.snapshots.iter().map(|id| (*id, st.name.as_str())))
        .collect();
    // Held here in a pulled space, not listed by the peer under it, not known as forgotten.
    let held: HashMap<SnapshotId, &str> = local
        .iter()
        .filter(|s| spaces.contains(&s.snapshot.space))
        .filter(|s| !listed.contains(&(s.id, s.snapshot.space.as_str())))
        .filter(|s| !known.contains(&s.id))
        .map(|s| (s.id, s.snapshot.space.as_str()))
        .collect();
    if held.is_empty() || conn.version() < protocol::FORGETS_VERSION {
        return Ok(known);
    }
    let mut ask: Vec<SnapshotId> = held.keys().copied().collect();
    ask.sort();
    let mut accepted: Vec<Forget> = Vec::new();
    for batch in ask.chunks(protocol::MAX_SNAPSHOTS_PER_REQUEST) {
        let mut recv = conn
            .request(&Message::GetForgets(GetForgets {
                ids: batch.to_vec(),
            }))
            .await?;
        // Answers come in request order, each id at most once.
        let mut next = 0usize;
        let mut count = 0usize;
        loop {
            let rec = match conn.answer(&mut recv).await? {
                Message::Forget(r) => r,
                Message::End(e) if e.count as usize == count => break,
                other => {
                    return Err(misbehaved(
                        conn,
                        Code::Protocol,
                        format!("answered GetForgets with {} out of order", other.name()),
                    ));
                }
            };
            count += 1;
            let f = Forget::decode(&rec.bytes).map_err(|e| {
                misbehaved(
                    conn,
                    Code::Protocol,
                    format!("sent a forget record that cannot be read ({e})"),
                )
            })?;
            let Some(pos) = batch[next..].iter().position(|i| *i == f.snapshot) else {
                return Err(misbehaved(
                    conn,
                    Code::Protocol,
                    format!(
                        "sent a forget record of snapshot {}, not asked for or out of order",
                        f.snapshot
                    ),
                ));
            };
            next += pos + 1;
            let space = held.get(&f.snapshot).copied().unwrap_or_default();
            match check(&conn.peer, &f, space) {
                Ok(()) => accepted.push(f),
                Err(why) => tracing::warn!(
                    "ignored the forget of snapshot {} (space '{}') sent by {}: {why}; the \
                     snapshot is kept here",
                    f.snapshot,
                    f.space,
                    conn.label
                ),
            }
        }
    }
    let repo = conn.ctx.repo.clone();
    let label = conn.label.clone();
    let peer = conn.ctx.config.peer_by_id(&conn.peer.id).cloned();
    blocking(move || {
        let accepted = match &peer {
            Some(p) => put_off(&repo, p, accepted)?,
            None => accepted,
        };
        if accepted.is_empty() {
            return Ok(forgotten::ids(&repo)?);
        }
        let gone = forgotten::apply(&repo, &accepted)?;
        for f in &accepted {
            tracing::info!(
                "forgot snapshot {} of space '{}': {label} forgot it (at {})",
                f.snapshot,
                f.space,
                jiff::Timestamp::from_nanosecond(i128::from(f.time_ns))
                    .map(|t| t.to_string())
                    .unwrap_or_else(|_| f.time_ns.to_string())
            );
        }
        // The forgotten snapshots' scopes were emptied: rebuild them before the transfer, or
        // everything of those spaces would be sent again.
        if !gone.is_empty() {
            puce_core::reach::update(&repo)?;
        }
        Ok(forgotten::ids(&repo)?)
    })
    .await
}

/// Finish the forgets whose protection period has ended (their holds), before a pull of
/// `label` (that peer or another) decides what is new.
fn finish_ended_holds(repo: &puce_core::Repo, label: &str) -> Result<()> {
    let now = forgotten::hold_now();
    if !forgotten::holds(repo)?.iter().any(|h| h.until_ns <= now) {
        return Ok(());
    }
    let gone = forgotten::apply(repo, &[])?;
    for id in &gone {
        tracing::info!(
            "forgot snapshot {id}: its protection period has ended (before a pull from {label})"
        );
    }
    if !gone.is_empty() {
        puce_core::reach::update(repo)?;
    }
    Ok(())
}

/// The protection period of `peer` (`keep_min`): of its forget `records`, those of snapshots
/// that have not been here that long are put off (held, [`forgotten::hold`]) and logged; the
/// others are returned, to be applied now. A snapshot has been here since its first arrival
/// from a peer (its receipt), or since it was taken if it was taken here.
fn put_off(repo: &puce_core::Repo, peer: &Peer, records: Vec<Forget>) -> Result<Vec<Forget>> {
    let Some(keep_min) = peer.keep_min else {
        return Ok(records);
    };
    let keep_ns = i64::try_from(keep_min.as_nanos()).unwrap_or(i64::MAX);
    let arrivals = puce_core::reach::arrivals(repo)?;
    let snaps = repo.snapshots()?;
    let now = forgotten::hold_now();
    let (mut due, mut held) = (Vec::new(), Vec::new());
    for f in records {
        let since = match arrivals.get(&f.snapshot) {
            Some(r) => r.arrived_ns,
            None => snaps
                .iter()
                .find(|s| s.id == f.snapshot)
                .map_or(now, |s| s.snapshot.time_ns.min(now)),
        };
        let until = since.saturating_add(keep_ns);
        if until > now {
            tracing::warn!(
                "peer '{}' forgot snapshot {} of space '{}'; kept here until {} by its protection period (keep_min in node.toml); it can be restored by id meanwhile",
                peer.name,
                f.snapshot,
                f.space,
                jiff::Timestamp::from_nanosecond(i128::from(until))
                    .map(|t| t.to_string())
                    .unwrap_or_else(|_| until.to_string())
            );
            held.push((f, until));
        } else {
            due.push(f);
        }
    }
    forgotten::hold(repo, &held, &peer.name)?;
    Ok(due)
}

/// The records to answer `GetForgets` with: for each id (once) with a forget record here in a
/// space `peer` may read, the record signed by this node, encoded. A damaged record is left
/// out (and logged).
pub fn records_for(conn: &Conn, ids: &[SnapshotId]) -> Result<Vec<Vec<u8>>> {
    let repo = &conn.ctx.repo;
    let foreign = if conn.ctx.fault == Some(Fault::ForeignForgets) {
        Some(Identity::generate()?)
    } else {
        None
    };
    let key = foreign.as_ref().unwrap_or(&conn.ctx.identity);
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for id in ids {
        if !seen.insert(*id) {
            continue;
        }
        let f = match forgotten::read(repo, id) {
            Ok(Some(f)) => f,
            Ok(None) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    puce_core::ErrorKind::Corrupt | puce_core::ErrorKind::UnsupportedVersion
                ) =>
            {
                tracing::warn!("forget record {id} cannot be read, not sent: {e:#}");
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        if !conn.peer.may_pull(&f.space) {
            continue;
        }
        out.push(sign(key, f)?.encode()?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::NodeConfig;
    use puce_core::Hash;

    fn record() -> Forget {
        Forget {
            snapshot: SnapshotId(Hash([0x11; 32])),
            space: "docs".into(),
            time_ns: 1_700_000_000_000_000_000,
            signer: None,
        }
    }

    fn peer(id: NodeId, spaces: &str) -> Permissions {
        let toml = format!(
            "[node]\nname = \"here\"\n[[peer]]\nname = \"lyon\"\nid = \"{id}\"\nspaces = {spaces}\n"
        );
        let config: NodeConfig = NodeConfig::parse(&toml).unwrap();
        Permissions::of(&config, &id).unwrap()
    }

    #[test]
    fn a_signed_record_verifies_and_its_signer_is_the_node() {
        let me = Identity::generate().unwrap();
        let f = sign(&me, record()).unwrap();
        assert_eq!(verify(&f).unwrap(), me.id());
        // Round trip through the file bytes.
        assert_eq!(
            verify(&Forget::decode(&f.encode().unwrap()).unwrap()).unwrap(),
            me.id()
        );
        let p = peer(me.id(), r#"{ docs = ["pull", "push"] }"#);
        check(&p, &f, "docs").unwrap();
    }

    #[test]
    fn forged_or_tampered_records_are_refused() {
        let me = Identity::generate().unwrap();
        let other = Identity::generate().unwrap();
        let good = sign(&me, record()).unwrap();
        let p = peer(me.id(), r#"{ docs = ["push"] }"#);
        // Unsigned.
        assert!(
            check(&p, &record(), "docs")
                .unwrap_err()
                .contains("not signed")
        );
        // Each signed field tampered with.
        let mut t = good.clone();
        t.space = "other".into();
        assert!(verify(&t).unwrap_err().contains("not valid"));
        let mut t = good.clone();
        t.time_ns += 1;
        assert!(verify(&t).unwrap_err().contains("not valid"));
        let mut t = good.clone();
        t.snapshot = SnapshotId(Hash([0x12; 32]));
        assert!(verify(&t).unwrap_err().contains("not valid"));
        // The signature itself.
        let mut t = good.clone();
        if let Some(s) = &mut t.signer {
            s.signature.s[0] ^= 1;
        }
        assert!(verify(&t).unwrap_err().contains("not valid"));
        // Signed by another key, claiming to be `me`: the key is not me's.
        let mut t = sign(&other, record()).unwrap();
        if let Some(s) = &mut t.signer {
            s.node = me.id().0;
        }
        assert!(verify(&t).unwrap_err().contains("not the key of node"));
        // Signed by another key, with that key's own id and the peer's key swapped in: the
        // signature does not hold.
        let mut t = sign(&other, record()).unwrap();
        if let (Some(s), Some(g)) = (&mut t.signer, &good.signer) {
            s.public_key = g.public_key;
            s.node = g.node;
        }
        assert!(verify(&t).unwrap_err().contains("not valid"));
        // Well signed by a node that is not the peer.
        let f = sign(&other, record()).unwrap();
        assert!(
            check(&p, &f, "docs")
                .unwrap_err()
                .contains("not by the peer")
        );
        // Signed by the peer, but for a snapshot held here in another space.
        assert!(check(&p, &good, "photos").unwrap_err().contains("space"));
        // Signed by the peer, which may only read the space here.
        let reader = peer(me.id(), r#"{ docs = ["pull"] }"#);
        assert!(
            check(&reader, &good, "docs")
                .unwrap_err()
                .contains("may not forget")
        );
        check(&p, &good, "docs").unwrap();
    }
}
