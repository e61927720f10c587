use std::sync::Arc;

use super::*;
use crate::format::receipt::Receipt;
use crate::gc::GcOptions;
use crate::progress::NoProgress;
use crate::repo::InitOptions;
use crate::snapshot::snapshot;
use crate::testkit::{Files, noise, snap_opts, write_files};
use crate::{SnapshotEntry, SnapshotId};

const P: [u8; 32] = [7; 32];
const Q: [u8; 32] = [9; 32];

fn take(repo: &Arc<Repo>, dir: &std::path::Path, space: &str, files: &[(&str, u64)]) -> SnapshotId {
    let files: Files = files
        .iter()
        .map(|(p, seed)| (p.to_string(), noise(150_000, *seed)))
        .collect();
    let src = dir.join("src");
    write_files(&src, &files);
    snapshot(repo, &src, &snap_opts(space, 1), &NoProgress)
        .unwrap()
        .id
}

fn deliver(repo: &Repo, snap: SnapshotId, space: &str, sender: [u8; 32]) {
    reach::write_receipt(
        repo,
        &Receipt {
            snapshot: snap,
            space: space.into(),
            sender,
            sender_name: "peer".into(),
            arrived_ns: 1,
        },
    )
    .unwrap();
}

/// This node's snapshot `a`; `b` delivered by P; `c` delivered by both P and Q. File `shared`
/// is in all three, `y` in b and c.
fn three(dir: &std::path::Path) -> (Arc<Repo>, Vec<SnapshotId>) {
    let repo = Arc::new(Repo::init(&dir.join("r"), &InitOptions::default()).unwrap());
    let a = take(&repo, dir, "a", &[("shared", 9), ("x", 1)]);
    let b = take(&repo, dir, "b", &[("shared", 9), ("y", 2)]);
    let c = take(&repo, dir, "c", &[("shared", 9), ("y", 2), ("z", 3)]);
    deliver(&repo, b, "b", P);
    deliver(&repo, c, "c", P);
    deliver(&repo, c, "c", Q);
    (repo, vec![a, b, c])
}

#[test]
fn fair_shares_add_up_to_the_stored_total_and_exclusive_bytes_are_the_owners_alone() {
    let d = tempfile::tempdir().unwrap();
    let (repo, _) = three(d.path());
    let l = compute(&repo).unwrap();
    assert_eq!(l.owners.len(), 3, "{l:?}");
    let fair: u64 = l.owners.iter().map(|o| o.fair_bytes).sum();
    assert_eq!(fair, l.bytes);
    let (me, p, q) = (&l.owners[0], l.peer(&P), l.peer(&Q));
    assert_eq!(me.peer, None);
    assert_eq!((me.snapshots, p.snapshots, q.snapshots), (1, 2, 1));
    assert_eq!(p.spaces.iter().collect::<Vec<_>>(), ["b", "c"]);
    // Everything but what this node's own snapshot reaches is P's alone (c is P's too); Q
    // shares z and c's trees with P, so they are Q's alone too (dropping Q frees them).
    let mine_only = me.exclusive_bytes;
    assert!(mine_only > 150_000 && mine_only < me.bytes, "{me:?}");
    let shared = me.bytes - mine_only;
    assert_eq!(p.exclusive_bytes, l.bytes - me.bytes);
    assert!(q.exclusive_bytes > 150_000 && q.exclusive_bytes < p.exclusive_bytes);
    assert_eq!(p.bytes, p.exclusive_bytes + shared);
    assert_eq!(p.in_transit_bytes, 0);
    assert_eq!(p.quota_use(), p.exclusive_bytes);
}

#[test]
fn dropping_a_peers_snapshots_frees_exactly_its_exclusive_bytes() {
    let d = tempfile::tempdir().unwrap();
    let (repo, ids) = three(d.path());
    let p = compute(&repo).unwrap().peer(&P);
    let gone: Vec<SnapshotEntry> = repo
        .snapshots()
        .unwrap()
        .into_iter()
        .filter(|s| ids[1..].contains(&s.id))
        .collect();
    crate::forgotten::forget(&repo, &ids[1..]).unwrap();
    reach::forget(&repo, &gone).unwrap();
    let opts = GcOptions {
        repack_unused: 0.0,
        ..GcOptions::default()
    };
    let g = crate::gc::gc(&repo, &opts, &NoProgress).unwrap();
    assert_eq!(g.objects_removed_bytes, p.exclusive_bytes, "{g:?}");
    assert_eq!(g.objects_removed, p.exclusive_objects);
    // What is left is this node's alone.
    let l = compute(&repo).unwrap();
    assert_eq!(l.owners.len(), 1);
    assert_eq!(l.owners[0].exclusive_bytes, l.bytes);
}

#[test]
fn objects_a_peer_sent_that_no_snapshot_reaches_are_in_transit() {
    let d = tempfile::tempdir().unwrap();
    let (repo, _) = three(d.path());
    let ids: Vec<ObjectId> = {
        let r = repo.index().reader().unwrap();
        let mut v = Vec::new();
        // Objects of this node's snapshot count as sent by Q, but a snapshot reaches them.
        let a = repo.snapshots().unwrap();
        let root = a
            .iter()
            .find(|s| s.snapshot.space == "a")
            .unwrap()
            .snapshot
            .root;
        assert!(r.get(&root).unwrap().is_some());
        v.push(root);
        v
    };
    let scope = repo.index().scope_or_create(&reach::peer_key(&Q)).unwrap();
    repo.index().reach_insert(scope, &ids).unwrap();
    assert_eq!(compute(&repo).unwrap().peer(&Q).in_transit_bytes, 0);
    // A snapshot gone without gc: its objects are still stored, reached by nothing.
    let c = repo.snapshots().unwrap();
    let x = c.iter().find(|s| s.snapshot.space == "a").unwrap().clone();
    crate::gc::forget(&repo, &[x.id]).unwrap();
    let l = compute(&repo).unwrap();
    let q = l.peer(&Q);
    assert_eq!(q.in_transit_objects, 1);
    assert!(q.in_transit_bytes > 0);
    assert_eq!(q.quota_use(), q.exclusive_bytes + q.in_transit_bytes);
}

#[test]
fn a_pull_records_the_peers_use_and_the_next_reads_it_until_the_repository_changes_otherwise() {
    let d = tempfile::tempdir().unwrap();
    let (repo, ids) = three(d.path());
    let walked = |repo: &Repo| compute(repo).unwrap().peer(&P).quota_use();
    let lock = lock_peer(&repo, &P).unwrap();
    // No use recorded yet: walked.
    let a = begin_pull(&repo, &P, &lock).unwrap();
    assert!(!a.recorded);
    assert_eq!(a.before, walked(&repo));
    // The pull delivers a snapshot of new data.
    let total = |repo: &Repo| compute(repo).unwrap().bytes;
    let t0 = total(&repo);
    let e = take(&repo, d.path(), "b", &[("w", 4)]);
    deliver(&repo, e, "b", P);
    let stored = total(&repo) - t0;
    assert!(stored > 150_000);
    // A wrong count is caught by the debug check (the tests run it) and not recorded.
    assert!(end_pull(&repo, &a, &[e], stored + 1, 0).is_err());
    // Objects sent that this node had: not recorded (only a walk can tell).
    assert!(!end_pull(&repo, &a, &[e], stored, 1).unwrap());
    // A snapshot it did not account for: not recorded.
    assert!(!end_pull(&repo, &a, &[], stored, 0).unwrap());
    assert!(end_pull(&repo, &a, &[e], stored, 0).unwrap());
    // The next pull reads it (the debug check walks too, and agrees).
    let b = begin_pull(&repo, &P, &lock).unwrap();
    assert!(b.recorded, "{b:?}");
    assert_eq!(b.before, a.before + stored);
    // A snapshot of this node's, objects removed, a receipt added, objects added to P's
    // scope (an interrupted pull): each makes the next pull walk.
    let scope = repo.index().scope_or_create(&reach::peer_key(&P)).unwrap();
    let changes: [&dyn Fn(); 4] = [
        &|| {
            take(&repo, d.path(), "a", &[("v", 5)]);
        },
        &|| {
            let id = repo.snapshots().unwrap()[0].snapshot.root;
            let loc = repo.index().reader().unwrap().get(&id).unwrap().unwrap();
            assert_eq!(repo.index().condemn(&[(id, loc)]).unwrap(), 1);
            repo.index().rescue(&[id]).unwrap();
        },
        &|| deliver(&repo, ids[0], "a", Q),
        &|| {
            let id = repo.snapshots().unwrap()[0].snapshot.root;
            repo.index().reach_insert(scope, &[id]).unwrap();
        },
    ];
    for (i, change) in changes.iter().enumerate() {
        let x = begin_pull(&repo, &P, &lock).unwrap();
        assert!(end_pull(&repo, &x, &[], 0, 0).unwrap());
        assert!(begin_pull(&repo, &P, &lock).unwrap().recorded);
        change();
        let y = begin_pull(&repo, &P, &lock).unwrap();
        assert!(!y.recorded, "change {i}");
        assert_eq!(y.before, walked(&repo), "change {i}");
    }
}
