//! The ledger: what this repository stores for whom, in stored bytes (objects as they are in
//! the packs, compressed; the unit of quotas).
//!
//! Each snapshot has *owners*: the peers whose receipts say they delivered it, or this node
//! when it has no receipt (taken, merged or committed here). An object belongs to the owners of
//! every snapshot that reaches it. For each owner O the ledger gives:
//! - `bytes`: every object O's snapshots reach (what this node holds for O);
//! - `exclusive_bytes`: the objects that only O's snapshots reach, every snapshot reaching them
//!   having O among its owners. Dropping O's data (`puce node drop`, which forgets every
//!   snapshot O delivered) and running gc frees exactly these;
//! - `fair_bytes`: each object's bytes split evenly between all its owners (the remainder of
//!   the division, a byte each, to the first owners in a fixed order): the fair shares of all
//!   owners add up to the stored bytes of every object a snapshot reaches;
//! - `in_transit_bytes` (peers only): objects the peer sent that no snapshot reaches yet (a
//!   transfer cut or refused before its commit), recorded in its reach scope.
//!
//! A peer's quota use is `exclusive_bytes + in_transit_bytes`: what this node holds only
//! because that peer delivered it.
//!
//! Cost: one walk of every snapshot (a tree is read again only when a snapshot with other
//! owners reaches it), and one map entry (about 80 bytes) per object reachable.

use std::collections::{BTreeSet, HashMap};

use crate::error::{Error, ErrorKind, Result};
use crate::format::tree::Node;
use crate::hash::ObjectId;
use crate::index::IndexReader;
use crate::reach;
use crate::repo::Repo;

/// Owners a ledger tells apart: this node and up to 63 peers (one bit each).
pub const MAX_OWNERS: usize = 64;

/// What the ledger says about one owner.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OwnerUse {
    /// The peer's node id; `None` for this node's own snapshots.
    pub peer: Option<[u8; 32]>,
    /// Snapshots it owns.
    pub snapshots: u64,
    /// The spaces of those snapshots.
    pub spaces: BTreeSet<String>,
    /// Objects its snapshots reach.
    pub objects: u64,
    /// Their stored bytes: what this node holds for it.
    pub bytes: u64,
    /// Objects only its snapshots reach.
    pub exclusive_objects: u64,
    /// Their stored bytes: what gc frees once its snapshots are dropped.
    pub exclusive_bytes: u64,
    /// Its fair share of the stored bytes.
    pub fair_bytes: u64,
    /// Objects it sent that no snapshot reaches yet.
    pub in_transit_objects: u64,
    /// Their stored bytes.
    pub in_transit_bytes: u64,
}

impl OwnerUse {
    /// What counts against a peer's quota: what this node holds only because it delivered it.
    pub fn quota_use(&self) -> u64 {
        self.exclusive_bytes + self.in_transit_bytes
    }
}

/// The ledger of a repository.
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    /// This node first, then each peer that delivered a snapshot here or has objects in
    /// transit, in node id order.
    pub owners: Vec<OwnerUse>,
    /// Objects any snapshot reaches.
    pub objects: u64,
    /// Their stored bytes (the sum of the fair shares).
    pub bytes: u64,
    /// Objects snapshots name that the index does not have (damage: `puce check`).
    pub missing: u64,
}

impl Ledger {
    /// The figures of a peer (zero if it owns nothing here).
    pub fn peer(&self, id: &[u8; 32]) -> OwnerUse {
        self.owners
            .iter()
            .find(|o| o.peer.as_ref() == Some(id))
            .cloned()
            .unwrap_or_else(|| OwnerUse {
                peer: Some(*id),
                ..OwnerUse::default()
            })
    }
}

/// Per object: the owners of every snapshot reaching it (`all`: intersection; `any`: union),
/// and its stored length.
struct Marks {
    all: u64,
    any: u64,
    len: u32,
}

struct Walker<'a> {
    repo: &'a Repo,
    reader: IndexReader,
    marks: HashMap<ObjectId, Marks>,
    missing: u64,
}

impl Walker<'_> {
    /// Add `class` (an owner set) to `id`; whether its marks changed (for a tree: whether to
    /// descend). A tree whose marks do not change needs no descent: its subtree was marked with
    /// sets whose intersection is within `class` and whose union covers it.
    fn mark(&mut self, id: &ObjectId, class: u64) -> Result<bool> {
        if let Some(m) = self.marks.get_mut(id) {
            let (all, any) = (m.all & class, m.any | class);
            let changed = (all, any) != (m.all, m.any);
            (m.all, m.any) = (all, any);
            return Ok(changed);
        }
        let Some(loc) = self.reader.get(id)? else {
            self.missing += 1;
            return Ok(false);
        };
        self.marks.insert(
            *id,
            Marks {
                all: class,
                any: class,
                len: loc.stored_len,
            },
        );
        Ok(true)
    }

    /// Mark everything `root` reaches with `class` (iteratively).
    fn walk(&mut self, root: ObjectId, class: u64) -> Result<()> {
        let mut stack = vec![root];
        while let Some(t) = stack.pop() {
            if !self.mark(&t, class)? {
                continue;
            }
            let tree = match self.repo.read_tree_with(&self.reader, &t) {
                Ok(tree) => tree,
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    self.missing += 1;
                    continue;
                }
                Err(e) => return Err(e),
            };
            for e in tree.entries {
                match e.node {
                    Node::File { chunks, .. } => {
                        for c in &chunks {
                            self.mark(c, class)?;
                        }
                    }
                    Node::Dir { tree } => stack.push(tree),
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
}

/// The owners' bit numbers: this node is bit 0, peers get the next free bit.
struct Owners {
    peers: Vec<[u8; 32]>,
}

impl Owners {
    fn bit(&mut self, peer: &[u8; 32]) -> Result<u64> {
        let i = match self.peers.iter().position(|p| p == peer) {
            Some(i) => i,
            None => {
                if self.peers.len() + 1 >= MAX_OWNERS {
                    return Err(Error::other(format!(
                        "the ledger tells apart at most {} peers, and this repository holds \
                         snapshots delivered by more",
                        MAX_OWNERS - 1
                    )));
                }
                self.peers.push(*peer);
                self.peers.len() - 1
            }
        };
        Ok(1 << (i + 1))
    }
}

/// Compute the ledger of `repo` (see the module documentation).
pub fn compute(repo: &Repo) -> Result<Ledger> {
    let snaps = repo.snapshots()?;
    let receipts = reach::receipts(repo)?;
    let mut owners = Owners { peers: Vec::new() };
    let mut class: HashMap<crate::hash::SnapshotId, u64> = HashMap::new();
    for r in &receipts {
        let bit = owners.bit(&r.sender)?;
        *class.entry(r.snapshot).or_default() |= bit;
    }
    let mut walker = Walker {
        repo,
        reader: repo.index().reader()?,
        marks: HashMap::new(),
        missing: 0,
    };
    let mut uses = vec![OwnerUse::default(); MAX_OWNERS];
    // Snapshots grouped by owner set, so that a shared tree is read once per set.
    let mut sorted: Vec<(u64, &crate::format::snapshot::SnapshotEntry)> = snaps
        .iter()
        .map(|s| (class.get(&s.id).copied().unwrap_or(1), s))
        .collect();
    sorted.sort_by_key(|(c, s)| (*c, s.id));
    for (c, s) in &sorted {
        for (bit, u) in uses.iter_mut().enumerate() {
            if c & (1 << bit) != 0 {
                u.snapshots += 1;
                u.spaces.insert(s.snapshot.space.clone());
            }
        }
        walker.walk(s.snapshot.root, *c)?;
    }
    let mut ledger = Ledger {
        missing: walker.missing,
        ..Ledger::default()
    };
    for m in walker.marks.values() {
        let len = u64::from(m.len);
        ledger.objects += 1;
        ledger.bytes += len;
        let k = u64::from(m.any.count_ones());
        let mut rest = len % k;
        for (bit, u) in uses.iter_mut().enumerate() {
            if m.any & (1 << bit) == 0 {
                continue;
            }
            u.objects += 1;
            u.bytes += len;
            u.fair_bytes += len / k + u64::from(rest > 0);
            rest = rest.saturating_sub(1);
            if m.all & (1 << bit) != 0 {
                u.exclusive_objects += 1;
                u.exclusive_bytes += len;
            }
        }
    }
    in_transit(repo, &walker, &mut owners, &mut uses)?;
    uses[0].peer = None;
    ledger.owners.push(std::mem::take(&mut uses[0]));
    let mut peers: Vec<OwnerUse> = owners
        .peers
        .iter()
        .enumerate()
        .map(|(i, p)| OwnerUse {
            peer: Some(*p),
            ..std::mem::take(&mut uses[i + 1])
        })
        .collect();
    peers.sort_by_key(|u| u.peer);
    ledger.owners.extend(peers);
    Ok(ledger)
}

/// The objects snapshots `ids` reach (those this repository holds), and their stored bytes:
/// measured here, what a peer holding these snapshots stores for them (objects travel as
/// stored). Snapshots not held here are left out.
pub fn reached(repo: &Repo, ids: &[crate::hash::SnapshotId]) -> Result<(u64, u64)> {
    let mut walker = Walker {
        repo,
        reader: repo.index().reader()?,
        marks: HashMap::new(),
        missing: 0,
    };
    for s in repo.snapshots()?.iter().filter(|s| ids.contains(&s.id)) {
        walker.walk(s.snapshot.root, 1)?;
    }
    let bytes = walker.marks.values().map(|m| u64::from(m.len)).sum();
    Ok((walker.marks.len() as u64, bytes))
}

/// The stored bytes the snapshots of `space` reach (shared objects counted in full: the space's
/// own footprint), the use its quota is compared with. Read from the space's reach scope,
/// brought up to date first (a walk only of snapshots not yet in their scopes).
pub fn space_use(repo: &Repo, space: &str) -> Result<u64> {
    reach::update(repo)?;
    let Some(scope) = repo.index().scope(&reach::space_key(space))? else {
        return Ok(0);
    };
    let reader = repo.index().reader()?;
    let mut bytes = 0u64;
    repo.index().reach_scan(scope, |id| {
        if let Some(loc) = reader.get_live(id)? {
            bytes += u64::from(loc.stored_len);
        }
        Ok(())
    })?;
    Ok(bytes)
}

/// The refusal of a write to `space` that would take its use to `used` bytes, over `quota`.
pub fn space_quota_error(space: &str, used: u64, quota: u64, what: &str) -> Error {
    Error::new(
        ErrorKind::Quota,
        format!(
            "space '{space}' would use {used} bytes of its quota of {quota} (stored bytes its \
             snapshots reach): {what}. Free space (`puce forget`, then `puce gc`) or raise the \
             quota with `puce space set {space} --quota SIZE`"
        ),
    )
}

/// Check a space's quota before a write: an error when `space` has a quota and its use plus
/// `more` bytes would exceed it.
pub fn check_space_quota(repo: &Repo, space: &str, more: u64, what: &str) -> Result<()> {
    let Some(quota) = repo.space_settings(space)?.and_then(|s| s.quota) else {
        return Ok(());
    };
    let used = space_use(repo, space)?;
    if used + more > quota || (more == 0 && used >= quota) {
        return Err(space_quota_error(space, used + more, quota, what));
    }
    Ok(())
}

/// A peer's quota use through one pull from it, without a walk when nothing else changed the
/// repository since its last pull.
///
/// Pulls from a peer with a quota hold its lock (`quota/<node id hex>.lock` in the repository,
/// [`lock_peer`]): one at a time, across processes, so that each counts against the quota what
/// the others stored. The use at the end of a pull is recorded in `quota/<node id hex>.use`
/// with a *stamp* of the state it is exact for: the snapshot and receipt file names, the epoch
/// of object removals (bumped by gc, heal, repair and cleared scopes) and the count of index
/// transactions that added objects to the peer's reach scope (each bumped in the transaction
/// making the change). The next pull reads it back when its own stamp is the same, and walks
/// every snapshot ([`compute`]) otherwise (an interrupted pull added to the peer's scope, a
/// snapshot was taken, merged or forgotten, gc ran...). The use is recorded only when the
/// pull changed the snapshots and receipts by exactly what it delivered, removed nothing, and
/// was sent nothing this node had already (such an object may or may not count against the
/// peer: only a walk can tell). The file is a hint: lost or damaged, it costs a walk.
#[derive(Debug)]
pub struct PullAccount {
    peer: [u8; 32],
    epoch: u64,
    snapshots: BTreeSet<String>,
    receipts: BTreeSet<String>,
    /// The peer's quota use when the pull started.
    pub before: u64,
    /// Whether `before` was read from the record rather than walked.
    pub recorded: bool,
    /// How long measuring it took.
    pub took: std::time::Duration,
}

/// The lock of the pulls from a peer (held until dropped).
#[derive(Debug)]
pub struct PeerLock {
    _file: std::fs::File,
}

fn quota_path(repo: &Repo, peer: &[u8; 32], ext: &str) -> std::path::PathBuf {
    repo.root()
        .join("quota")
        .join(format!("{}.{ext}", crate::hash::Hash(*peer).to_hex()))
}

/// Wait for, then take, the lock of the pulls from `peer`.
pub fn lock_peer(repo: &Repo, peer: &[u8; 32]) -> Result<PeerLock> {
    use crate::error::IoContext;
    let path = quota_path(repo, peer, "lock");
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).io_ctx("cannot create", dir)?;
    }
    let f = crate::fsutil::private_file()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .io_ctx("cannot open", &path)?;
    use rustix::fs::FlockOperation;
    if rustix::fs::flock(&f, FlockOperation::NonBlockingLockExclusive).is_err() {
        tracing::info!(
            "waiting for another pull from peer {} to end (one at a time with a quota)",
            crate::hash::Hash(*peer).short(12)
        );
        rustix::fs::flock(&f, FlockOperation::LockExclusive)
            .map_err(|e| Error::io("cannot lock", &path, e.into()))?;
    }
    Ok(PeerLock { _file: f })
}

fn file_names(repo: &Repo, kind: crate::backend::FileKind) -> Result<BTreeSet<String>> {
    Ok(repo
        .backend()
        .list(kind)?
        .into_iter()
        .map(|(n, _)| n)
        .collect())
}

fn stamp(
    snapshots: &BTreeSet<String>,
    receipts: &BTreeSet<String>,
    epoch: u64,
    inserts: u64,
) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key("puce 2026-12 quota use stamp");
    for set in [snapshots, receipts] {
        h.update(&(set.len() as u64).to_le_bytes());
        for n in set {
            h.update(&(n.len() as u64).to_le_bytes());
            h.update(n.as_bytes());
        }
    }
    h.update(&epoch.to_le_bytes());
    h.update(&inserts.to_le_bytes());
    *h.finalize().as_bytes()
}

/// The epoch and the insert count of the scope of `peer`.
fn counters(repo: &Repo, peer: &[u8; 32]) -> Result<(u64, u64)> {
    let scope = repo.index().scope(&reach::peer_key(peer))?;
    repo.index().quota_counters(scope)
}

/// In debug builds (the tests), a recorded use is checked against a walk.
fn checked(repo: &Repo, peer: &[u8; 32], used: u64, what: &str) -> Result<()> {
    if cfg!(debug_assertions) {
        let walked = compute(repo)?.peer(peer).quota_use();
        if walked != used {
            return Err(Error::other(format!(
                "the quota use {what} for peer {} is {used} bytes, but a walk of the snapshots \
                 gives {walked}: a bug in puce's accounting",
                crate::hash::Hash(*peer).to_hex()
            )));
        }
    }
    Ok(())
}

/// Start a pull from `peer`, its lock held: the peer's quota use now.
pub fn begin_pull(repo: &Repo, peer: &[u8; 32], _lock: &PeerLock) -> Result<PullAccount> {
    let t0 = std::time::Instant::now();
    let (epoch, inserts) = counters(repo, peer)?;
    let snapshots = file_names(repo, crate::backend::FileKind::Snapshot)?;
    let receipts = file_names(repo, crate::backend::FileKind::Receipt)?;
    let now = stamp(&snapshots, &receipts, epoch, inserts);
    let record = std::fs::read(quota_path(repo, peer, "use")).ok();
    let used = record
        .filter(|r| r.len() == 40 && r[..32] == now)
        .map(|r| u64::from_le_bytes(r[32..].try_into().unwrap_or_default()));
    let (before, recorded) = match used {
        Some(used) => {
            checked(repo, peer, used, "recorded at the end of the last pull")?;
            (used, true)
        }
        None => (compute(repo)?.peer(peer).quota_use(), false),
    };
    Ok(PullAccount {
        peer: *peer,
        epoch,
        snapshots,
        receipts,
        before,
        recorded,
        took: t0.elapsed(),
    })
}

/// End a pull, its lock still held, that delivered the snapshots `delivered`, stored
/// `stored_bytes` and was sent `present` objects this node had: record the peer's use if the
/// repository changed by exactly that (see [`PullAccount`]). Returns whether it was recorded.
pub fn end_pull(
    repo: &Repo,
    a: &PullAccount,
    delivered: &[crate::hash::SnapshotId],
    stored_bytes: u64,
    present: u64,
) -> Result<bool> {
    let path = quota_path(repo, &a.peer, "use");
    // Whatever happens next, the old record no longer holds.
    let _ = std::fs::remove_file(&path);
    let (epoch, inserts) = counters(repo, &a.peer)?;
    if present > 0 || epoch != a.epoch {
        return Ok(false);
    }
    let snapshots = file_names(repo, crate::backend::FileKind::Snapshot)?;
    let receipts = file_names(repo, crate::backend::FileKind::Receipt)?;
    let (mut want_s, mut want_r) = (a.snapshots.clone(), a.receipts.clone());
    for id in delivered {
        want_s.insert(id.to_hex());
        want_r.insert(crate::format::receipt::Receipt::name_of(id, &a.peer));
    }
    if snapshots != want_s || receipts != want_r {
        return Ok(false);
    }
    let used = a.before + stored_bytes;
    checked(repo, &a.peer, used, "counted through the pull")?;
    let mut record = stamp(&snapshots, &receipts, epoch, inserts).to_vec();
    record.extend_from_slice(&used.to_le_bytes());
    // A hint, not fsynced: a crash loses it or leaves it, and the stamp decides.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, &record)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|e| Error::io("cannot write", &path, e))?;
    Ok(true)
}

/// Count, per peer with a reach scope, the objects it sent that no snapshot reaches.
fn in_transit(
    repo: &Repo,
    walker: &Walker<'_>,
    owners: &mut Owners,
    uses: &mut [OwnerUse],
) -> Result<()> {
    for (key, scope) in repo.index().scopes()? {
        let Some(hex) = key.strip_prefix("p/") else {
            continue;
        };
        let Ok(peer) = crate::hash::Hash::from_hex(hex) else {
            continue;
        };
        let mut objects = 0u64;
        let mut bytes = 0u64;
        repo.index().reach_scan(scope, |id| {
            if walker.marks.contains_key(id) {
                return Ok(());
            }
            if let Some(loc) = walker.reader.get_live(id)? {
                objects += 1;
                bytes += u64::from(loc.stored_len);
            }
            Ok(())
        })?;
        if objects > 0 {
            let bit = owners.bit(&peer.0)?.trailing_zeros() as usize;
            uses[bit].in_transit_objects += objects;
            uses[bit].in_transit_bytes += bytes;
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "ledger_tests.rs"]
mod tests;
