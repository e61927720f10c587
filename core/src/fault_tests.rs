//! Fault injection: snapshot, gc and heal over a backend that refuses the mutating operations
//! after the N-th, all of them or only the next one ([`FaultBackend`]), for every N up to what
//! the run needs. Whatever N, the repository checks clean (or with only unindexed packs, a
//! leftover the next gc removes), every snapshot committed before restores byte for byte, and
//! once the fault is gone the same operation succeeds.

use std::path::Path;

use tempfile::TempDir;

use crate::Repo;
use crate::backend::fault::FaultBackend;
use crate::backend::memory::MemoryBackend;
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

/// The faults injected at operation `n`: every operation from it on fails, or only that one.
const MODES: [&str; 2] = ["from", "only"];

fn inject(backend: &FaultBackend<MemoryBackend>, mode: &str, n: u64) {
    if mode == "only" {
        backend.fail_once_after(n);
    } else {
        backend.set_budget(n as i64);
    }
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
    for (n, mode) in (0..needed).flat_map(|n| MODES.map(|m| (n, m))) {
        let fr = setup(&d.path().join(format!("r{n}{mode}")));
        let first = fr.reopen().snapshots().unwrap()[0].id;
        inject(&fr.backend, mode, n);
        let r = second(&fr);
        assert!(
            r.is_err(),
            "{mode} operation {n} of {needed} failed, yet the snapshot succeeded"
        );
        fr.backend.set_budget(-1);
        let repo = fr.reopen();
        assert_checks(&repo, &format!("snapshot interrupted {mode} operation {n}"));
        assert_eq!(repo.snapshots().unwrap().len(), 1, "n={n} {mode}");
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
        assert_checks(
            &repo,
            &format!("snapshot after a fault {mode} operation {n}"),
        );
    }
}

#[test]
fn a_gc_interrupted_at_any_backend_operation_loses_nothing() {
    let d = TempDir::new().unwrap();
    let src = d.path().join("src");
    let out = d.path().join("out");
    let kept = files(&[
        ("a_keep.bin", noise(300_000, 1)),
        ("c_keep.bin", noise(600_000, 5)),
        ("new.bin", noise(1_200_000, 3)),
    ]);
    // Snapshots of `kept` and of two others that are forgotten: gc repacks the two packs
    // shared with `kept` (the keep files around the dropped one), deletes the others, and an
    // unindexed pack.
    let setup = |local: &Path| {
        let (fr, repo) = FaultRepo::init(local);
        let v1 = files(&[
            ("a_keep.bin", noise(300_000, 1)),
            ("b_drop.bin", noise(1_500_000, 2)),
            ("c_keep.bin", noise(600_000, 5)),
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
        assert!(r.packs_repacked >= 2 && r.packs_deleted >= 2, "{r:?}");
        assert_eq!(r.packs_orphaned, 1, "{r:?}");
    });
    assert!(needed >= 4, "gc: {needed} operations");
    for (n, mode) in (0..=needed).flat_map(|n| MODES.map(|m| (n, m))) {
        let fr = setup(&d.path().join(format!("r{n}{mode}")));
        let keep = fr.reopen().snapshots().unwrap()[0].id;
        inject(&fr.backend, mode, n);
        let r = run_gc(&fr);
        assert_eq!(
            r.is_ok(),
            n == needed,
            "gc, {mode} operation {n} of {needed}: {r:?}"
        );
        fr.backend.set_budget(-1);
        let repo = fr.reopen();
        assert_checks(&repo, &format!("gc interrupted {mode} operation {n}"));
        assert!(restore_files(&repo, &keep, &out) == kept, "n={n}");
        // Without the fault, gc finishes the work: nothing is left over.
        gc(&repo, &GcOptions::default(), &NoProgress).unwrap();
        let c = check_data(&repo);
        assert!(c.problems.is_empty(), "n={n} {mode}: {:?}", c.problems);
        assert!(restore_files(&repo, &keep, &out) == kept, "n={n} {mode}");
        let again = crate::gc::plan(&repo, &GcOptions::default(), &NoProgress).unwrap();
        assert_eq!(again.report().bytes_freed, 0, "n={n} {mode}: {again:?}");
    }
}

/// The location of the first chunk of file `name` in the root of snapshot `root`.
fn first_chunk(repo: &Repo, root: &crate::ObjectId, name: &str) -> (crate::PackId, u64, u64) {
    let tree = repo.read_tree(root).unwrap();
    let e = tree
        .entries
        .iter()
        .find(|e| e.name == name.as_bytes())
        .unwrap();
    let crate::format::tree::Node::File { chunks, .. } = &e.node else {
        panic!("{name} is not a file")
    };
    let reader = repo.index().reader().unwrap();
    let loc = reader.get(&chunks[0]).unwrap().unwrap();
    let pack = repo.pack_id(&reader, loc.pack).unwrap();
    (pack, u64::from(loc.offset), u64::from(loc.stored_len))
}

#[test]
fn a_heal_interrupted_at_any_backend_operation_loses_nothing() {
    let d = TempDir::new().unwrap();
    let src = d.path().join("src");
    let out = d.path().join("out");
    let lost = files(&[("a.bin", noise(1_500_000, 1)), ("b.txt", b"hi".to_vec())]);
    let mixed = files(&[("c.bin", noise(400_000, 2)), ("y.bin", noise(300_000, 6))]);
    let untouched = files(&[("z.txt", b"untouched".to_vec())]);
    // Three snapshots. The source is a copy of the repository that then lost y.bin (forgotten,
    // collected): the good objects of a damaged pack that holds y.bin exist only here. Then the
    // first snapshot's first pack is lost, its record damaged, and a chunk of c.bin damaged.
    let setup = |local: &Path| {
        let (fr, repo) = FaultRepo::init(local);
        let mut ids = Vec::new();
        for (i, (files, space)) in [(&lost, "docs"), (&mixed, "other"), (&untouched, "third")]
            .into_iter()
            .enumerate()
        {
            write_files(&src, files);
            let s = snapshot(&repo, &src, &snap_opts(space, i as i64 + 1), &NoProgress).unwrap();
            ids.push(s);
        }
        let (_, first) = repo.index().packs().unwrap()[0].clone();
        let (pack, offset, len) = first_chunk(&repo, &ids[1].snapshot.root, "c.bin");
        drop(repo);
        let copy = fr.fork(&local.with_extension("source"));
        forget(&copy, &[ids[1].id]).unwrap();
        write_files(&src, &files(&[("c.bin", noise(400_000, 2))]));
        snapshot(&copy, &src, &snap_opts("other", 4), &NoProgress).unwrap();
        gc(&copy, &GcOptions::default(), &NoProgress).unwrap();
        let source = RepoSource {
            name: "source".into(),
            repo: copy,
            tamper: false,
        };
        let mem = fr.backend.inner();
        mem.remove(FileKind::Pack, &first.id.to_hex()).unwrap();
        mem.put_raw(FileKind::Snapshot, &ids[0].id.to_hex(), b"damaged".to_vec())
            .unwrap();
        let mut bytes = mem.read(FileKind::Pack, &pack.to_hex()).unwrap();
        bytes[(offset + len / 2) as usize] ^= 1;
        mem.put_raw(FileKind::Pack, &pack.to_hex(), bytes).unwrap();
        (fr, source, ids.iter().map(|s| s.id).collect::<Vec<_>>())
    };
    let run_heal = |repo: &Repo, source: &mut RepoSource| {
        heal(repo, &check_data(repo), &mut [source], &NoProgress)
    };
    let needed = {
        let (fr, mut source, _) = setup(&d.path().join("count"));
        let before = fr.backend.spent();
        let r = run_heal(&fr.reopen(), &mut source).unwrap();
        assert!(r.is_complete() && r.snapshots_healed.len() == 1, "{r:?}");
        assert!(
            r.objects_rewritten > 0,
            "the damaged pack's good objects: {r:?}"
        );
        fr.backend.spent() - before
    };
    assert!(needed >= 3, "heal: {needed} operations");
    for (n, mode) in (0..needed).flat_map(|n| MODES.map(|m| (n, m))) {
        let (fr, mut source, ids) = setup(&d.path().join(format!("r{n}{mode}")));
        inject(&fr.backend, mode, n);
        let r = run_heal(&fr.reopen(), &mut source);
        assert!(r.is_err(), "heal, {mode} operation {n} of {needed}: {r:?}");
        fr.backend.set_budget(-1);
        // What was healthy still is; a heal without the fault heals everything.
        let repo = fr.reopen();
        assert!(
            restore_files(&repo, &ids[2], &out) == untouched,
            "n={n} {mode}"
        );
        let r = run_heal(&repo, &mut source).unwrap();
        assert!(r.is_complete(), "n={n} {mode}: {r:?}");
        // The packs the interrupted heal sealed are unindexed leftovers, for gc.
        assert_checks(&repo, &format!("heal after a fault {mode} operation {n}"));
        gc(&repo, &GcOptions::default(), &NoProgress).unwrap();
        let c = check_data(&repo);
        assert!(c.problems.is_empty(), "n={n} {mode}: {:?}", c.problems);
        for (id, files) in ids.iter().zip([&lost, &mixed, &untouched]) {
            assert!(restore_files(&repo, id, &out) == *files, "n={n} {mode}");
        }
    }
}
