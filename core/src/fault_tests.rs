//! Fault injection: snapshot, gc and heal over a backend that refuses every mutating operation
//! after the N-th ([`FaultBackend`](crate::backend::fault::FaultBackend)), for every N up to
//! what the run needs. Whatever N, the repository checks clean (or with only unindexed packs, a
//! leftover the next gc removes), every snapshot committed before restores byte for byte, and
//! once the fault is gone the same operation succeeds.

use std::path::Path;

use tempfile::TempDir;

use crate::Repo;
use crate::backend::{Backend, FileKind};
use crate::gc::{GcOptions, forget, gc};
use crate::heal::heal;
use crate::progress::NoProgress;
use crate::snapshot::snapshot;
use crate::testkit::{
    FaultRepo, Files, RepoSource, check_data, noise, restore_files, snap_opts, write_files,
};

fn files(list: &[(&str, Vec<u8>)]) -> Files {
    list.iter()
        .map(|(p, d)| (p.to_string(), d.clone()))
        .collect()
}

/// Panics unless a full check finds nothing but unindexed packs.
fn assert_checks(repo: &Repo, what: &str) {
    let c = check_data(repo);
    assert!(c.is_ok(), "{what}: {:?}", c.problems);
}

/// Run `op` once without a limit in a repository set up by `setup`; returns how many mutating
/// backend operations it needs.
fn operations_needed(
    dir: &Path,
    setup: &dyn Fn(&Path) -> FaultRepo,
    op: &dyn Fn(&FaultRepo),
) -> u64 {
    let fr = setup(&dir.join("count"));
    let before = fr.backend.spent();
    op(&fr);
    fr.backend.spent() - before
}

#[test]
fn a_snapshot_interrupted_at_any_backend_operation_loses_nothing() {
    let d = TempDir::new().unwrap();
    let src = d.path().join("src");
    let out = d.path().join("out");
    let v1 = files(&[
        ("a.txt", b"first version".to_vec()),
        ("sub/b.bin", noise(1_500_000, 1)),
    ]);
    let v2 = files(&[
        ("a.txt", b"second version".to_vec()),
        ("sub/b.bin", noise(1_500_000, 1)),
        ("sub/c.bin", noise(2_200_000, 2)),
    ]);
    // A repository with one snapshot of v1; the snapshot of v2 is what gets interrupted.
    let setup = |local: &Path| {
        let (fr, repo) = FaultRepo::init(local);
        write_files(&src, &v1);
        snapshot(&repo, &src, &snap_opts("docs", 1), &NoProgress).unwrap();
        write_files(&src, &v2);
        fr
    };
    let second = |fr: &FaultRepo| {
        snapshot(&fr.reopen(), &src, &snap_opts("docs", 2), &NoProgress).map(|s| s.id)
    };
    let needed = operations_needed(d.path(), &setup, &|fr| {
        second(fr).unwrap();
    });
    assert!(
        needed >= 3,
        "a snapshot of 3.7 MB in 1 MiB packs: {needed} operations"
    );
    for n in 0..needed {
        let fr = setup(&d.path().join(format!("r{n}")));
        let first = fr.reopen().snapshots().unwrap()[0].id;
        fr.backend.set_budget(n as i64);
        let r = second(&fr);
        assert!(
            r.is_err(),
            "operation {n} of {needed} failed, yet the snapshot succeeded"
        );
        fr.backend.set_budget(-1);
        let repo = fr.reopen();
        assert_checks(&repo, &format!("snapshot interrupted at operation {n}"));
        assert_eq!(repo.snapshots().unwrap().len(), 1, "n={n}");
        assert!(
            restore_files(&repo, &first, &out) == v1,
            "n={n}: v1 differs"
        );
        // Without the fault, the same snapshot succeeds and holds v2.
        let id = snapshot(&repo, &src, &snap_opts("docs", 3), &NoProgress)
            .unwrap()
            .id;
        assert!(restore_files(&repo, &id, &out) == v2, "n={n}: v2 differs");
        assert!(
            restore_files(&repo, &first, &out) == v1,
            "n={n}: v1 differs"
        );
        assert_checks(&repo, &format!("snapshot after a fault at operation {n}"));
    }
}

#[test]
fn a_gc_interrupted_at_any_backend_operation_loses_nothing() {
    let d = TempDir::new().unwrap();
    let src = d.path().join("src");
    let out = d.path().join("out");
    let kept = files(&[
        ("keep.bin", noise(300_000, 1)),
        ("new.bin", noise(1_200_000, 3)),
    ]);
    // Snapshots of `kept` and of two others that are forgotten: gc repacks the pack shared
    // with `kept` (keep.bin), deletes the others, and an unindexed pack.
    let setup = |local: &Path| {
        let (fr, repo) = FaultRepo::init(local);
        let v1 = files(&[
            ("keep.bin", noise(300_000, 1)),
            ("drop.bin", noise(1_500_000, 2)),
        ]);
        write_files(&src, &v1);
        let s1 = snapshot(&repo, &src, &snap_opts("docs", 1), &NoProgress).unwrap();
        write_files(&src, &kept);
        snapshot(&repo, &src, &snap_opts("docs", 2), &NoProgress).unwrap();
        write_files(&src, &files(&[("gone.bin", noise(500_000, 4))]));
        let s3 = snapshot(&repo, &src, &snap_opts("other", 3), &NoProgress).unwrap();
        forget(&repo, &[s1.id, s3.id]).unwrap();
        let orphan = "ab".repeat(32);
        repo.backend()
            .write(FileKind::Pack, &orphan, b"left by a crash")
            .unwrap();
        fr
    };
    let run_gc = |fr: &FaultRepo| gc(&fr.reopen(), &GcOptions::default(), &NoProgress);
    let needed = operations_needed(d.path(), &setup, &|fr| {
        let r = run_gc(fr).unwrap();
        assert!(r.packs_repacked >= 1 && r.packs_deleted >= 2, "{r:?}");
        assert_eq!(r.packs_orphaned, 1, "{r:?}");
    });
    assert!(needed >= 4, "gc: {needed} operations");
    for n in 0..=needed {
        let fr = setup(&d.path().join(format!("r{n}")));
        let keep = fr.reopen().snapshots().unwrap()[0].id;
        fr.backend.set_budget(n as i64);
        let r = run_gc(&fr);
        assert_eq!(
            r.is_ok(),
            n == needed,
            "gc with {n} of {needed} operations: {r:?}"
        );
        fr.backend.set_budget(-1);
        let repo = fr.reopen();
        assert_checks(&repo, &format!("gc interrupted at operation {n}"));
        assert!(restore_files(&repo, &keep, &out) == kept, "n={n}");
        // Without the fault, gc finishes the work: nothing is left over.
        gc(&repo, &GcOptions::default(), &NoProgress).unwrap();
        let c = check_data(&repo);
        assert!(c.problems.is_empty(), "n={n}: {:?}", c.problems);
        assert!(restore_files(&repo, &keep, &out) == kept, "n={n}");
        let again = crate::gc::plan(&repo, &GcOptions::default(), &NoProgress).unwrap();
        assert_eq!(again.report().bytes_freed, 0, "n={n}: {again:?}");
    }
}

#[test]
fn a_heal_interrupted_at_any_backend_operation_loses_nothing() {
    let d = TempDir::new().unwrap();
    let src = d.path().join("src");
    let out = d.path().join("out");
    let damaged = files(&[("a.bin", noise(1_500_000, 1)), ("b.txt", b"hi".to_vec())]);
    let healthy = files(&[("c.bin", noise(400_000, 2))]);
    // Two snapshots; a copy of the repository is the source; then the first snapshot's first
    // pack is lost and its record is damaged.
    let setup = |local: &Path| {
        let (fr, repo) = FaultRepo::init(local);
        write_files(&src, &damaged);
        let s1 = snapshot(&repo, &src, &snap_opts("docs", 1), &NoProgress).unwrap();
        write_files(&src, &healthy);
        let s2 = snapshot(&repo, &src, &snap_opts("other", 2), &NoProgress).unwrap();
        let (_, first) = repo.index().packs().unwrap()[0].clone();
        drop(repo);
        let source = RepoSource {
            name: "source".into(),
            repo: fr.fork(&local.with_extension("source")),
            tamper: false,
        };
        fr.backend
            .inner()
            .remove(FileKind::Pack, &first.id.to_hex())
            .unwrap();
        fr.backend
            .inner()
            .put_raw(FileKind::Snapshot, &s1.id.to_hex(), b"damaged".to_vec())
            .unwrap();
        (fr, source, s1.id, s2.id)
    };
    let run_heal = |repo: &Repo, source: &mut RepoSource| {
        heal(repo, &check_data(repo), &mut [source], &NoProgress)
    };
    let needed = {
        let (fr, mut source, _, _) = setup(&d.path().join("count"));
        let before = fr.backend.spent();
        let r = run_heal(&fr.reopen(), &mut source).unwrap();
        assert!(r.is_complete() && r.snapshots_healed.len() == 1, "{r:?}");
        fr.backend.spent() - before
    };
    assert!(needed >= 3, "heal: {needed} operations");
    for n in 0..needed {
        let (fr, mut source, s1, s2) = setup(&d.path().join(format!("r{n}")));
        fr.backend.set_budget(n as i64);
        let r = run_heal(&fr.reopen(), &mut source);
        assert!(r.is_err(), "heal with {n} of {needed} operations: {r:?}");
        fr.backend.set_budget(-1);
        // What was healthy still is; a heal without the fault heals everything.
        let repo = fr.reopen();
        assert!(restore_files(&repo, &s2, &out) == healthy, "n={n}");
        let r = run_heal(&repo, &mut source).unwrap();
        assert!(r.is_complete(), "n={n}: {r:?}");
        let c = check_data(&repo);
        assert!(c.problems.is_empty(), "n={n}: {:?}", c.problems);
        assert!(restore_files(&repo, &s1, &out) == damaged, "n={n}");
        assert!(restore_files(&repo, &s2, &out) == healthy, "n={n}");
    }
}
