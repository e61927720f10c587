//! gc interleaved with other writers, end to end: a real `puce gc` paused between its plan and
//! its deletions (the debug-build test hook `PUCE_TEST_GC_PAUSE`), and real `puce sync` and
//! `puce repair index` processes run in that window.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::Path;

use puce_tests::node::{TestNode, pack_files};
use puce_tests::paused_gc::PausedGc;
use puce_tests::{TestRepo, make_tree, manifest, random_bytes};

const BOTH: &str = r#"{ docs = ["pull", "push"] }"#;

/// Copy the pack files of `from` into `to`, as a pull that published its packs and died before
/// indexing them leaves them.
fn plant_unindexed_packs(from: &Path, to: &Path) -> usize {
    let packs = pack_files(from);
    for p in &packs {
        let rel = p.strip_prefix(from).unwrap();
        fs::create_dir_all(to.join(rel).parent().unwrap()).unwrap();
        fs::copy(p, to.join(rel)).unwrap();
    }
    packs.len()
}

/// Issue 14, item 2: gc decided to delete the packs the index did not list, a pull then indexed
/// them to skip fetching their objects and committed, and gc deleted them: the pulled snapshot
/// lost its data. Now adopting unindexed packs needs the gc lock: the pull fetches instead.
#[test]
fn gc_does_not_delete_unindexed_packs_that_a_pull_adopts_meanwhile() {
    let mut a = TestNode::new("lyon");
    let mut b = TestNode::new("grenoble");
    a.add_peer(&b, BOTH);
    b.add_peer(&a, BOTH);
    a.start();
    let src = a.repo.dir.path().join("src");
    make_tree(&src, 14);
    a.snapshot(&src, "docs");
    // An earlier pull into b was killed after publishing its packs, before indexing them.
    let planted = plant_unindexed_packs(&a.repo.path(), &b.repo.path());
    assert!(planted > 0);
    let gc = PausedGc::start(&b.repo, &[]);
    // In gc's window: the pull finds the unindexed packs.
    let r = b.sync("lyon", &["--pull"]);
    eprintln!(
        "pull during gc: {} objects received, {} unindexed packs on storage",
        r["received_objects"], planted
    );
    let report = gc.resume();
    assert_eq!(
        report["packs_orphaned"].as_u64(),
        Some(planted as u64),
        "gc planned to delete the unindexed packs: {report}"
    );
    b.ok(&["check", "--read-data"]);
    assert_eq!(manifest(&b.restored("docs@latest")), manifest(&src));
    // Nothing unindexed is left, and a later pull has nothing to do.
    let plan = b.json(&["gc", "--dry-run"]);
    assert_eq!(plan["packs_orphaned"], 0, "{plan}");
}

/// `puce repair index` rebuilds the index with new pack numbers and no condemned objects: beside
/// a gc that has planned with the old ones it could make gc retire the wrong packs. It refuses
/// while gc runs, and works once gc is done.
#[test]
fn repair_index_refuses_to_run_beside_gc() {
    let repo = TestRepo::with_init(&["--pack-size", "1"]);
    let src = repo.dir.path().join("src");
    make_tree(&src, 15);
    // The forgotten snapshot holds only old.bin, so its packs hold nothing else and gc deletes
    // them (with other files read in parallel, chunks of both could share every pack, and gc
    // would only repack).
    let only_old = repo.dir.path().join("old");
    fs::create_dir_all(&only_old).unwrap();
    fs::write(only_old.join("old.bin"), random_bytes(3_000_000, 1)).unwrap();
    let old = repo.snapshot(&only_old, "docs");
    repo.snapshot(&src, "docs");
    repo.ok(&["-q", "forget", &old]);
    let gc = PausedGc::start(&repo, &["--repack-unused", "0"]);
    let out = repo.run(&["repair", "index"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "repair index ran beside gc");
    assert!(err.contains("gc or a heal is running"), "{err}");
    let report = gc.resume();
    assert!(report["packs_deleted"].as_u64().unwrap() > 0, "{report}");
    repo.ok(&["repair", "index"]);
    repo.ok(&["check", "--read-data"]);
    let out = repo.dir.path().join("restored");
    repo.ok(&["-q", "restore", "docs@latest", out.to_str().unwrap()]);
    assert_eq!(manifest(&out), manifest(&src));
}

/// A snapshot taken in gc's window, of content gc has condemned (it was only in a forgotten
/// snapshot), stores its own copy: gc deletes the condemned one and the new snapshot is whole.
#[test]
fn a_snapshot_in_gcs_window_stores_its_own_copy_of_condemned_data() {
    let repo = TestRepo::with_init(&["--pack-size", "1"]);
    let src = repo.dir.path().join("src");
    make_tree(&src, 16);
    let old = repo.snapshot(&src, "docs");
    repo.ok(&["-q", "forget", &old]);
    let gc = PausedGc::start(&repo, &[]);
    repo.snapshot(&src, "docs");
    let report = gc.resume();
    assert!(report["packs_deleted"].as_u64().unwrap() > 0, "{report}");
    repo.ok(&["check", "--read-data"]);
    let out = repo.dir.path().join("restored");
    repo.ok(&["-q", "restore", "docs@latest", out.to_str().unwrap()]);
    assert_eq!(manifest(&out), manifest(&src));
}
