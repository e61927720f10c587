//! What a peer may learn that this node holds: the presence rule of transfers.
//!
//! A node that receives data from a peer asks only for what it lacks, so the peer learns from
//! what is *not* asked for that the node holds it. Asking against the whole repository would
//! let a peer with rights on one space test whether files of another space are held (snapshot a
//! candidate file into its space, push it, watch what is fetched), and a forged tree naming
//! known ids would be committed without its data ever crossing.
//!
//! So an object counts as present in a transfer with peer P only if it is indexed **and**
//! reachable from a *scope* P could know about:
//! - the space scopes `s/<space>` of the spaces P may read here (everything reachable from the
//!   space's snapshots);
//! - the peer scope `p/<node id>` of P: every object P sent (recorded just before its pack
//!   is published, so an interrupted transfer is not sent again), and, once rebuilt by [`update`],
//!   everything reachable from the snapshots P delivered, which its [`Receipt`]s record;
//! - or it arrived on the same connection (tracked by the transfer itself).
//!
//! Everything else is fetched from P, so a tree received from P can only name objects P sent or
//! could have: a forged tree naming data P does not have fails the transfer.
//!
//! The scopes live in the index (`reach` tables): updated when a snapshot is committed
//! ([`add_snapshot`]), caught up before a transfer ([`update`]: snapshots not yet walked,
//! e.g. after a crash or an upgrade), cleared for the spaces and peers concerned when
//! snapshots are forgotten ([`forget`]) and rebuilt by walking again. Receipts are files in the
//! repository (`receipts/`), so the peer scopes survive `repair index`.

use std::collections::{BTreeSet, HashMap, HashSet};

use crate::backend::FileKind;
use crate::error::{Error, ErrorKind, Result};
use crate::format::receipt::Receipt;
use crate::format::snapshot::SnapshotEntry;
use crate::format::tree::Node;
use crate::hash::{Hash, ObjectId, SnapshotId};
use crate::index::{IndexReader, ReachReader};
use crate::repo::Repo;

/// Objects added to a scope per index transaction while walking.
const BATCH: usize = 100_000;

/// The scope key of a space.
pub fn space_key(space: &str) -> String {
    format!("s/{space}")
}

/// The scope key of a peer, by node id.
pub fn peer_key(node: &[u8; 32]) -> String {
    format!("p/{}", Hash(*node).to_hex())
}

/// Scope additions gathered for one index transaction (see [`Pending::commit`]).
#[derive(Default)]
struct Pending {
    /// Per scope: the trees expanded so far (a later snapshot of the same scope stops at
    /// them) and the objects to add, children before their trees.
    scopes: HashMap<u32, (HashSet<ObjectId>, Vec<ObjectId>)>,
    /// (snapshot, scope) pairs to mark as wholly reached.
    reached: Vec<(SnapshotId, u32)>,
}

impl Pending {
    /// Walk `root` into `scope`, skipping trees the scope reaches already (in the index or
    /// in this batch) with their subtrees. Objects are listed children first, so a tree in a
    /// scope always comes with its whole subtree; a very large walk is written to the index as
    /// it goes, in that order.
    fn walk(&mut self, repo: &Repo, scope: u32, root: &ObjectId) -> Result<()> {
        let index = repo.index();
        let mut reach = index.reach_reader()?;
        let reader = index.reader()?;
        let (seen, out) = self.scopes.entry(scope).or_default();
        let mut stack: Vec<(ObjectId, bool)> = vec![(*root, false)];
        while let Some((id, expanded)) = stack.pop() {
            if expanded {
                out.push(id);
                if out.len() >= BATCH {
                    index.reach_insert(scope, out)?;
                    out.clear();
                    reach = index.reach_reader()?;
                }
                continue;
            }
            if seen.contains(&id) || reach.contains(scope, &id)? {
                continue;
            }
            let tree = repo.read_tree_with(&reader, &id)?;
            seen.insert(id);
            stack.push((id, true));
            for e in &tree.entries {
                match &e.node {
                    Node::Dir { tree } => stack.push((*tree, false)),
                    // Inserting a chunk already in the scope costs no more than looking it up.
                    Node::File { chunks, .. } => out.extend(chunks.iter().copied()),
                    // No content.
                    Node::Symlink { .. }
                    | Node::Fifo
                    | Node::Socket
                    | Node::CharDevice { .. }
                    | Node::BlockDevice { .. } => {}
                }
            }
        }
        Ok(())
    }

    /// Forget what a failed walk of `scope` gathered (its trees are walked again next time).
    fn drop_scope(&mut self, scope: u32) {
        self.scopes.remove(&scope);
    }

    /// Write everything gathered in one index transaction.
    fn commit(self, repo: &Repo) -> Result<()> {
        let adds: Vec<(u32, Vec<ObjectId>)> = self
            .scopes
            .into_iter()
            .map(|(n, (_, ids))| (n, ids))
            .collect();
        repo.index().reach_commit(&adds, &self.reached)
    }
}

/// Record snapshots in scopes, in one index transaction: each of `walk` (snapshot, scope key,
/// root) by walking it into the scope (unless done already), each of `delivered` (snapshot,
/// scope key) without walking, its objects being in the scope already.
pub fn record(
    repo: &Repo,
    walk: &[(SnapshotId, String, ObjectId)],
    delivered: &[(SnapshotId, String)],
) -> Result<()> {
    let index = repo.index();
    let mut pending = Pending::default();
    for (snap, key) in delivered {
        pending.reached.push((*snap, index.scope_or_create(key)?));
    }
    for (snap, key, root) in walk {
        let scope = index.scope_or_create(key)?;
        if index.is_reached(snap, scope)? {
            continue;
        }
        pending.walk(repo, scope, root)?;
        pending.reached.push((*snap, scope));
    }
    pending.commit(repo)
}

/// Add a snapshot just committed to the scope of its space.
pub fn add_snapshot(repo: &Repo, id: &SnapshotId, space: &str, root: &ObjectId) -> Result<()> {
    record(repo, &[(*id, space_key(space), *root)], &[])
}

/// What [`update`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct UpdateReport {
    /// (snapshot, scope) pairs walked and recorded.
    pub walked: u64,
    /// Pairs that could not be walked (a tree missing or damaged): their objects are not
    /// counted as present, so transfers send them again (safe; `puce check` says what is
    /// damaged).
    pub skipped: u64,
}

/// Bring every scope up to date: each snapshot into its space's scope, each snapshot with a
/// receipt into its sender's scope.
pub fn update(repo: &Repo) -> Result<UpdateReport> {
    let snaps = repo.snapshots()?;
    let mut reached: HashSet<(SnapshotId, u32)> = repo.index().reached()?.into_iter().collect();
    // A scope that reached a snapshot now gone (forgotten by a process that stopped before
    // emptying the scope) is emptied and rebuilt.
    let exists: HashSet<SnapshotId> = snaps.iter().map(|s| s.id).collect();
    let stale: BTreeSet<u32> = reached
        .iter()
        .filter(|(s, _)| !exists.contains(s))
        .map(|(_, n)| *n)
        .collect();
    if !stale.is_empty() {
        let stale: Vec<u32> = stale.into_iter().collect();
        repo.index().clear_scopes(&stale)?;
        reached.retain(|(_, n)| !stale.contains(n));
    }
    let mut report = UpdateReport::default();
    let mut todo: Vec<(String, &SnapshotEntry)> = Vec::new();
    for s in &snaps {
        todo.push((space_key(&s.snapshot.space), s));
    }
    let by_id: std::collections::HashMap<SnapshotId, &SnapshotEntry> =
        snaps.iter().map(|s| (s.id, s)).collect();
    for (name, _) in repo.backend().list(FileKind::Receipt)? {
        let Some((snap, sender)) = parse_receipt_name(&name) else {
            continue;
        };
        if let Some(s) = by_id.get(&snap) {
            todo.push((peer_key(&sender), s));
        }
    }
    let mut pending = Pending::default();
    for (key, s) in todo {
        let scope = match repo.index().scope(&key)? {
            Some(n) if reached.contains(&(s.id, n)) => continue,
            Some(n) => n,
            None => repo.index().scope_or_create(&key)?,
        };
        match pending.walk(repo, scope, &s.snapshot.root) {
            Ok(()) => pending.reached.push((s.id, scope)),
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::NotFound
                        | ErrorKind::Corrupt
                        | ErrorKind::UnsafePath
                        | ErrorKind::UnsupportedVersion
                ) =>
            {
                // What the scope gathered in this batch is dropped with the failed walk (the
                // snapshots already walked into it are walked again next time).
                pending.drop_scope(scope);
                pending.reached.retain(|(_, n)| *n != scope);
                report.skipped += 1
            }
            Err(e) => return Err(e),
        }
    }
    report.walked = pending.reached.len() as u64;
    pending.commit(repo)?;
    Ok(report)
}

fn parse_receipt_name(name: &str) -> Option<(SnapshotId, [u8; 32])> {
    let (snap, sender) = name.split_once('.')?;
    Some((
        SnapshotId::from_hex(snap).ok()?,
        Hash::from_hex(sender).ok()?.0,
    ))
}

/// Write the receipt of a snapshot delivered by a peer (durably, before its record).
pub fn write_receipt(repo: &Repo, r: &Receipt) -> Result<()> {
    repo.backend()
        .write(FileKind::Receipt, &r.file_name(), &r.encode()?)
}

/// Every receipt in the repository (damaged ones are reported as errors). A receipt never
/// changes once written: those this `Repo` read before are not read again (the daemon's
/// metrics and notifications ask every few minutes; on S3 each read is a request).
pub fn receipts(repo: &Repo) -> Result<Vec<Receipt>> {
    let names = repo.backend().list(FileKind::Receipt)?;
    let mut cache = repo
        .receipts
        .lock()
        .map_err(|_| Error::other("receipt cache lock poisoned"))?;
    let listed: HashSet<&str> = names.iter().map(|(n, _)| n.as_str()).collect();
    cache.retain(|n, _| listed.contains(n.as_str()));
    let mut out = Vec::with_capacity(names.len());
    for (name, _) in &names {
        if let Some(r) = cache.get(name) {
            out.push(r.clone());
            continue;
        }
        let b = repo.backend().read(FileKind::Receipt, name)?;
        let r = Receipt::decode(&b).map_err(|e| e.context(format!("receipt {name}")))?;
        cache.insert(name.clone(), r.clone());
        out.push(r);
    }
    Ok(out)
}

/// The first receipt of each snapshot received from a peer (when it first arrived here, and
/// from whom).
pub fn arrivals(repo: &Repo) -> Result<HashMap<SnapshotId, Receipt>> {
    let mut out: HashMap<SnapshotId, Receipt> = HashMap::new();
    for r in receipts(repo)? {
        match out.get(&r.snapshot) {
            Some(first) if first.arrived_ns <= r.arrived_ns => {}
            _ => {
                out.insert(r.snapshot, r);
            }
        }
    }
    Ok(out)
}

/// Snapshots `forgotten` are gone: empty the scopes they were part of (their spaces', their
/// senders') so that these are rebuilt from what remains, and remove their receipts.
pub fn forget(repo: &Repo, forgotten: &[SnapshotEntry]) -> Result<()> {
    if forgotten.is_empty() {
        return Ok(());
    }
    let ids: HashSet<SnapshotId> = forgotten.iter().map(|s| s.id).collect();
    let mut keys: BTreeSet<String> = forgotten
        .iter()
        .map(|s| space_key(&s.snapshot.space))
        .collect();
    let mut gone = Vec::new();
    for (name, _) in repo.backend().list(FileKind::Receipt)? {
        if let Some((snap, sender)) = parse_receipt_name(&name)
            && ids.contains(&snap)
        {
            keys.insert(peer_key(&sender));
            gone.push(name);
        }
    }
    let mut scopes = Vec::new();
    for k in &keys {
        if let Some(n) = repo.index().scope(k)? {
            scopes.push(n);
        }
    }
    repo.index().clear_scopes(&scopes)?;
    for name in gone {
        repo.backend().remove(FileKind::Receipt, &name)?;
    }
    Ok(())
}

/// The presence rule for one transfer with one peer (see the module documentation).
pub struct Presence {
    index: IndexReader,
    reach: ReachReader,
    scopes: Vec<u32>,
}

impl Presence {
    /// Presence for a transfer with peer `node`, which may read `spaces` here.
    pub fn for_peer(repo: &Repo, node: &[u8; 32], spaces: &[String]) -> Result<Presence> {
        let mut scopes = Vec::new();
        for key in spaces.iter().map(|s| space_key(s)).chain([peer_key(node)]) {
            if let Some(n) = repo.index().scope(&key)? {
                scopes.push(n);
            }
        }
        Ok(Presence {
            index: repo.index().reader()?,
            reach: repo.index().reach_reader()?,
            scopes,
        })
    }

    /// Whether `id` is indexed and reachable from one of the peer's scopes.
    pub fn has(&self, id: &ObjectId) -> Result<bool> {
        if !self.index.contains(id)? {
            return Ok(false);
        }
        for &s in &self.scopes {
            if self.reach.contains(s, id)? {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::InitOptions;
    use std::sync::Arc;

    fn repo() -> (tempfile::TempDir, Arc<Repo>) {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repo::init(&dir.path().join("r"), &InitOptions::default()).unwrap();
        (dir, Arc::new(repo))
    }

    fn snap(repo: &Arc<Repo>, src: &std::path::Path, space: &str) -> SnapshotEntry {
        let opts = crate::snapshot::archive::SnapshotOptions {
            space: Some(space.into()),
            ..Default::default()
        };
        let out =
            crate::snapshot::archive::snapshot(repo, src, &opts, &crate::progress::NoProgress)
                .unwrap();
        SnapshotEntry {
            id: out.id,
            snapshot: out.snapshot,
        }
    }

    fn chunks_of(repo: &Repo, root: &ObjectId) -> Vec<ObjectId> {
        let t = repo.read_tree(root).unwrap();
        let mut out = Vec::new();
        for e in &t.entries {
            if let Node::File { chunks, .. } = &e.node {
                out.extend(chunks.iter().copied());
            }
        }
        out
    }

    #[test]
    fn an_object_is_present_only_for_peers_of_a_space_that_reaches_it() {
        let (d, repo) = repo();
        let secret = d.path().join("secret");
        std::fs::create_dir_all(&secret).unwrap();
        std::fs::write(secret.join("f"), b"only in the secret space".repeat(100)).unwrap();
        let public = d.path().join("public");
        std::fs::create_dir_all(&public).unwrap();
        std::fs::write(public.join("g"), b"in the public space".repeat(100)).unwrap();
        let s = snap(&repo, &secret, "secret");
        let p = snap(&repo, &public, "public");
        let in_secret = chunks_of(&repo, &s.snapshot.root);
        let in_public = chunks_of(&repo, &p.snapshot.root);
        let peer = [7u8; 32];
        let pres = Presence::for_peer(&repo, &peer, &["public".into()]).unwrap();
        assert!(pres.has(&p.snapshot.root).unwrap());
        assert!(pres.has(&in_public[0]).unwrap());
        assert!(!pres.has(&s.snapshot.root).unwrap());
        assert!(!pres.has(&in_secret[0]).unwrap());
        // A receipt from the peer for the secret snapshot: it delivered it, so it knows it.
        write_receipt(
            &repo,
            &Receipt {
                snapshot: s.id,
                space: "secret".into(),
                sender: peer,
                sender_name: "x".into(),
                arrived_ns: 1,
            },
        )
        .unwrap();
        assert_eq!(update(&repo).unwrap().walked, 1);
        assert_eq!(update(&repo).unwrap().walked, 0, "nothing left to walk");
        let pres = Presence::for_peer(&repo, &peer, &["public".into()]).unwrap();
        assert!(pres.has(&in_secret[0]).unwrap());
        let other = Presence::for_peer(&repo, &[8u8; 32], &["public".into()]).unwrap();
        assert!(!other.has(&in_secret[0]).unwrap());
        // Forgetting the secret snapshot empties the scopes it was in, and its receipt goes.
        crate::gc::forget(&repo, &[s.id]).unwrap();
        assert!(receipts(&repo).unwrap().is_empty());
        update(&repo).unwrap();
        let pres = Presence::for_peer(&repo, &peer, &["public".into(), "secret".into()]).unwrap();
        assert!(!pres.has(&in_secret[0]).unwrap());
        assert!(pres.has(&in_public[0]).unwrap());
    }

    /// Receipts are read once per `Repo`; one deleted since is no longer returned, a new one is.
    #[test]
    fn receipts_are_read_once_and_follow_the_files() {
        let (_d, repo) = repo();
        let receipt = |n: u8| Receipt {
            snapshot: SnapshotId(crate::hash::Hash([n; 32])),
            space: "docs".into(),
            sender: [9; 32],
            sender_name: "lyon".into(),
            arrived_ns: i64::from(n),
        };
        write_receipt(&repo, &receipt(1)).unwrap();
        write_receipt(&repo, &receipt(2)).unwrap();
        let arrived = |repo: &Repo| -> Vec<i64> {
            let mut v: Vec<i64> = receipts(repo)
                .unwrap()
                .iter()
                .map(|r| r.arrived_ns)
                .collect();
            v.sort_unstable();
            v
        };
        assert_eq!(arrived(&repo), vec![1, 2]);
        // Damaged on disk after it was read: the copy read is kept (a receipt never changes).
        let name = receipt(2).file_name();
        repo.backend()
            .write(FileKind::Receipt, &name, b"junk")
            .unwrap();
        assert_eq!(arrived(&repo), vec![1, 2]);
        repo.backend().remove(FileKind::Receipt, &name).unwrap();
        write_receipt(&repo, &receipt(3)).unwrap();
        assert_eq!(arrived(&repo), vec![1, 3]);
    }

    #[test]
    fn update_rebuilds_the_scopes_after_repair_index() {
        let (d, repo) = repo();
        let src = d.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("f"), b"some content".repeat(1000)).unwrap();
        let s = snap(&repo, &src, "docs");
        let c = chunks_of(&repo, &s.snapshot.root);
        crate::reindex::rebuild_index(&repo, &crate::progress::NoProgress).unwrap();
        let pres = Presence::for_peer(&repo, &[1; 32], &["docs".into()]).unwrap();
        assert!(!pres.has(&c[0]).unwrap(), "cleared by the rebuild");
        update(&repo).unwrap();
        let pres = Presence::for_peer(&repo, &[1; 32], &["docs".into()]).unwrap();
        assert!(pres.has(&c[0]).unwrap());
        assert!(pres.has(&s.snapshot.root).unwrap());
    }
}
