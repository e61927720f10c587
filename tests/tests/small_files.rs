//! Spaces of many small files between two real nodes: a sync delivers them in one run (the
//! requester batches and paces its requests under the other node's budget; a node serves a
//! requester beyond its budget more slowly instead of cutting it off), and a sync whose
//! receiver is killed with SIGKILL resumes without fetching again what it made durable.
//!
//! `PUCE_SMALL_FILES` sets the number of files of the large space (default 100 000).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::Path;
use std::process::Stdio;
use std::time::Instant;

use puce_tests::node::{TestNode, files_and_chunks, wait_for};
use puce_tests::{Rng, env_u64, random_bytes};

/// Write `n` files of 20 to 200 random bytes (distinct contents) under `dir`, 1000 per folder.
fn write_small_files(dir: &Path, n: usize, seed: u64) {
    let mut rng = Rng::new(seed);
    let sizes: Vec<usize> = (0..n).map(|_| 20 + (rng.next() % 181) as usize).collect();
    let data = random_bytes(sizes.iter().sum(), seed);
    let mut at = 0;
    for (i, len) in sizes.into_iter().enumerate() {
        let sub = dir.join(format!("d{:03}", i / 1000));
        if i % 1000 == 0 {
            fs::create_dir_all(&sub).unwrap();
        }
        fs::write(sub.join(format!("f{i:06}")), &data[at..at + len]).unwrap();
        at += len;
    }
}

fn u(v: &serde_json::Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or_else(|| panic!("no {k} in {v}"))
}

/// A node `grenoble` holding a snapshot of `n` small files in space `docs`, its daemon running.
fn sender(n: usize) -> (TestNode, std::path::PathBuf) {
    let b = TestNode::new("grenoble");
    let src = b.repo.dir.path().join("src");
    let t = Instant::now();
    write_small_files(&src, n, 7);
    eprintln!("wrote {n} files in {:?}", t.elapsed());
    let t = Instant::now();
    b.ok(&["-q", "snapshot", src.to_str().unwrap(), "--space", "docs"]);
    eprintln!("snapshot of {n} files in {:?}", t.elapsed());
    (b, src)
}

/// A fresh receiving node named `name`, peer of `b` both ways.
fn receiver(name: &str, b: &mut TestNode, extra: &str) -> TestNode {
    let perms = r#"{ docs = ["pull", "push"] }"#;
    let mut a = TestNode::new(name);
    a.extra = extra.into();
    a.add_peer(b, perms);
    b.add_peer(&a, perms);
    a
}

#[test]
fn a_space_of_many_small_files_syncs_in_one_run_and_resumes_after_kill_9() {
    let n = env_u64("PUCE_SMALL_FILES", 100_000) as usize;
    let started = Instant::now();
    let (mut b, _src) = sender(n);
    // Both receivers are configured before the daemon starts (it reads node.toml once).
    let c = receiver("lyon", &mut b, "");
    // a checkpoints every MiB and receives at 2 MiB/s, so that the kill lands mid-transfer.
    let mut a = receiver(
        "annecy",
        &mut b,
        "[transfer]\ncheckpoint = \"1 MiB\"\n[limits]\nbandwidth = \"2 MiB\"\n",
    );
    b.start();

    // 1. One run delivers the whole space.
    let t = Instant::now();
    let full = c.sync("grenoble", &["--pull"]);
    eprintln!(
        "full sync of {n} files in {:?}: {} requests, {} objects fetched",
        t.elapsed(),
        u(&full, "requests"),
        u(&full, "fetched_objects")
    );
    assert_eq!(u(&full["spaces"][0], "snapshots"), 1, "{full}");
    assert_eq!(c.snapshot_ids(), b.snapshot_ids());
    let total = u(&full, "fetched_objects");
    assert_eq!(u(&full, "received_objects"), total, "{full}");
    assert!(
        !b.log().contains("cut off"),
        "the sender cut the receiver off:\n{}",
        b.log()
    );

    // 2. Kill the receiver (`puce sync`, SIGKILL) once it made a few checkpoints durable.
    let mut sync = a
        .cmd()
        .args(["-q", "sync", "grenoble", "--pull"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("a to make some data durable", || a.pack_count() >= 3);
    sync.kill().unwrap();
    let status = sync.wait().unwrap();
    assert!(!status.success(), "the sync ended before it was killed");
    assert!(
        a.snapshot_ids().is_empty(),
        "a snapshot became visible half-stored"
    );
    let held = chunks_held(&a, &b);
    assert!(held > 0, "nothing was durable at the kill");

    // 3. Resume at full speed: only what was not durable crosses.
    a.extra = "[transfer]\ncheckpoint = \"1 MiB\"\n".into();
    a.write_config();
    let t = Instant::now();
    let rest = a.sync("grenoble", &["--pull"]);
    eprintln!(
        "resumed sync in {:?}: {held} chunks were durable, {} objects fetched of {total}",
        t.elapsed(),
        u(&rest, "fetched_objects")
    );
    assert_eq!(
        u(&rest, "fetched_objects") + held,
        total,
        "the resumed sync fetched again what was durable: {rest}"
    );
    assert_eq!(a.snapshot_ids(), b.snapshot_ids());
    a.ok(&["check"]);
    eprintln!("test of {n} small files: {:?} in all", started.elapsed());
}

/// A requester that does not pace itself (one chunk per request, no pause: a node that does
/// not know the budget) is served more slowly, not cut off, and its pull completes.
#[test]
fn a_requester_beyond_the_request_budget_is_slowed_down_not_cut_off() {
    let (mut b, src) = sender(2_000);
    let a = receiver("lyon", &mut b, "");
    b.start();
    let out = a
        .cmd()
        .env("PUCE_TEST_FAULT", "flood")
        .args(["--json", "sync", "grenoble", "--pull"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the flooding sync failed: {}\nsender's log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        b.log()
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        u(&r, "requests") > 1_000,
        "the fault did not flood (only {} requests)",
        u(&r, "requests")
    );
    assert!(!b.log().contains("cut off"), "{}", b.log());
    assert_eq!(
        puce_tests::manifest(&a.restored("docs@latest")),
        puce_tests::manifest(&src)
    );
}

/// The number of chunks of `b`'s latest snapshot of `docs` that `a` holds, once it indexed the
/// packs an interrupted process published (as the next pull does first).
fn chunks_held(a: &TestNode, b: &TestNode) -> u64 {
    let r = puce_tests::open_repo(&a.repo.path(), None);
    puce_core::orphans::index_orphan_packs(&r).unwrap();
    let reader = r.index().reader().unwrap();
    let mut held = std::collections::HashSet::new();
    for (_, chunks) in files_and_chunks(&b.repo.path(), "docs@latest") {
        for c in chunks {
            if reader.contains(&c).unwrap() {
                held.insert(c);
            }
        }
    }
    held.len() as u64
}

/// A peer that closes the connection in the middle of a pull, with an error code (here
/// `TooManyRequests`, as nodes before pacing did): the receiver keeps what it received and
/// verified, although no checkpoint was reached, and the next pull does not fetch it again.
#[test]
fn a_pull_cut_off_by_the_peer_keeps_what_it_received() {
    let (mut b, src) = sender(10_000);
    let a = receiver("lyon", &mut b, "");
    b.start_with(&[("PUCE_TEST_FAULT", "cut-off-midway")]);
    let err = a.sync_fails("grenoble", &["--pull"]);
    assert!(err.contains("too many requests"), "{err}");
    let held = chunks_held(&a, &b);
    assert!(held > 0, "nothing received before the cut was kept: {err}");
    b.stop();
    b.start();
    let rest = a.sync("grenoble", &["--pull"]);
    let fetched = u(&rest, "fetched_objects");
    eprintln!("{held} chunks kept after the cut; the next sync fetched {fetched} objects");
    // 10 000 chunks and 11 trees (10 folders and the root), each fetched once in all.
    assert_eq!(fetched + held, 10_011, "{rest}");
    assert_eq!(fetched, u(&rest["spaces"][0], "objects"), "{rest}");
    assert_eq!(
        puce_tests::manifest(&a.restored("docs@latest")),
        puce_tests::manifest(&src)
    );
}
