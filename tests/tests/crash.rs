//! Durability: `puce snapshot` killed with SIGKILL at random moments. After every kill,
//! `puce check` passes and every snapshot that is listed (and every one reported committed)
//! restores byte-identical to the folder it was taken of.
//!
//! `PUCE_CRASH_ITERS` sets the number of kills (default 12; the full run uses 60+).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::fs;
use std::time::{Duration, Instant};

use puce_tests::{Manifest, Rng, TestRepo, make_tree, manifest, random_bytes};

#[test]
fn kill_snapshot_at_random_moments() {
    let iters: u64 = std::env::var("PUCE_CRASH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    let seed: u64 = std::env::var("PUCE_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed);
    let mut rng = Rng::new(seed);
    // Small packs: a run seals several, so kills land between pack commits too.
    let repo = TestRepo::with_init(&["--pack-size", "1"]);
    let src = repo.dir.path().join("src");
    make_tree(&src, 1);
    for i in 0..40 {
        fs::write(src.join(format!("f{i:02}.bin")), random_bytes(400_000, i)).unwrap();
    }
    let mut expected: HashMap<String, Manifest> = HashMap::new();
    expected.insert("calib0".into(), manifest(&src));
    repo.ok(&[
        "-q",
        "snapshot",
        src.to_str().unwrap(),
        "--space",
        "s",
        "--tag",
        "calib0",
    ]);
    // Calibrate: how long does a typical run (8 changed files) take?
    for _ in 0..8 {
        let f = rng.next() % 40;
        fs::write(
            src.join(format!("f{f:02}.bin")),
            random_bytes(400_000, rng.next()),
        )
        .unwrap();
    }
    expected.insert("calib1".into(), manifest(&src));
    let t = Instant::now();
    repo.ok(&[
        "-q",
        "snapshot",
        src.to_str().unwrap(),
        "--space",
        "s",
        "--tag",
        "calib1",
    ]);
    // Kill delays are drawn below `window`, which adapts so that about half the runs are cut.
    let mut window = t.elapsed().as_millis().max(20) as u64;

    let mut verified: std::collections::HashSet<String> = Default::default();
    let mut committed_by_exit = 0;
    let mut killed = 0;
    for it in 0..iters {
        // Change some files so the run has new data to write.
        for _ in 0..8 {
            let f = rng.next() % 40;
            fs::write(
                src.join(format!("f{f:02}.bin")),
                random_bytes(400_000, rng.next()),
            )
            .unwrap();
        }
        let tag = format!("it{it}");
        expected.insert(tag.clone(), manifest(&src));
        let mut child = repo
            .cmd()
            .args([
                "-q",
                "snapshot",
                src.to_str().unwrap(),
                "--space",
                "s",
                "--tag",
                &tag,
            ])
            .spawn()
            .unwrap();
        let delay = rng.next() % (window + 1);
        std::thread::sleep(Duration::from_millis(delay));
        let _ = child.kill();
        let status = child.wait().unwrap();
        if status.success() {
            committed_by_exit += 1;
            window = window * 9 / 10;
        } else {
            killed += 1;
            window = window * 11 / 10 + 1;
        }
        // The repository is consistent.
        let out = repo.run(&["--json", "check"]);
        assert!(
            out.status.success(),
            "check failed after iteration {it} (kill after {delay} ms):\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        // Every listed snapshot restores to exactly what was snapshotted.
        let snaps = repo.json(&["snapshots", "--space", "s"]);
        let listed: Vec<(String, String)> = snaps
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["id"].as_str().unwrap().to_string(),
                    s["tags"][0].as_str().unwrap().to_string(),
                )
            })
            .collect();
        if status.success() {
            assert!(
                listed.iter().any(|(_, t)| *t == tag),
                "iteration {it} exited 0 but its snapshot is not listed"
            );
        }
        for (id, tag) in listed {
            if verified.contains(&id) {
                continue;
            }
            let out = repo.dir.path().join(format!("restore-{id}"));
            repo.ok(&["restore", &id, out.to_str().unwrap()]);
            assert_eq!(
                manifest(&out),
                expected[&tag],
                "snapshot {id} ({tag}) does not restore to what was snapshotted"
            );
            fs::remove_dir_all(&out).unwrap();
            verified.insert(id);
        }
    }
    repo.ok(&["check", "--read-data"]);
    eprintln!(
        "crash test: {iters} runs, {killed} killed, {committed_by_exit} completed, \
         {} snapshots verified",
        verified.len()
    );
    assert!(killed > 0, "no run was actually interrupted");
}
