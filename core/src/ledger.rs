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
