//! Durability of replication: syncs between two real nodes killed with SIGKILL at random
//! moments, on both sides and in both directions. After every kill, `puce check` passes on both
//! nodes, no snapshot is visible half-stored, every snapshot either node lists restores
//! byte-identical to the folder it was taken of, and a sync that exited 0 delivered its
//! snapshot. A final sync then completes and both nodes hold the same history.
//!
//! `PUCE_CRASH_ITERS` sets the number of kills (default 6; the full run in
//! `docs/reliability.md` uses 100), `PUCE_CRASH_SEED` the seed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use puce_tests::node::TestNode;
use puce_tests::{Manifest, Rng, env_u64, manifest, random_bytes};

/// Change a few files of `src` (new random content) so the next snapshot has data to send.
fn churn(src: &Path, rng: &mut Rng) {
    for _ in 0..6 {
        let f = rng.next() % 24;
        fs::write(
            src.join(format!("f{f:02}.bin")),
            random_bytes(300_000, rng.next()),
        )
        .unwrap();
    }
}

/// Snapshot `src` on `node` into `space`, tagged `tag`.
fn snap(node: &TestNode, src: &Path, space: &str, tag: &str) {
    node.ok(&[
        "-q",
        "snapshot",
        src.to_str().unwrap(),
        "--space",
        space,
        "--tag",
        tag,
    ]);
}

/// (id, first tag) of every snapshot `node` lists.
fn listed(node: &TestNode) -> Vec<(String, String)> {
    let v = node.json(&["snapshots"]);
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap().to_string(),
                s["tags"][0].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// `check` passes on `node`, and every snapshot it lists restores to what was snapshotted.
fn verify(
    node: &TestNode,
    expected: &HashMap<String, Manifest>,
    verified: &mut HashSet<(String, String)>,
    when: &str,
) -> Vec<String> {
    let out = node.run(&["--json", "check"]);
    assert!(
        out.status.success(),
        "check failed on {} {when}:\n{}\n{}",
        node.name,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut tags = Vec::new();
    for (id, tag) in listed(node) {
        tags.push(tag.clone());
        if !verified.insert((node.name.clone(), id.clone())) {
            continue;
        }
        let want = expected.get(&tag).unwrap_or_else(|| {
            panic!("{} lists snapshot {id} with unknown tag '{tag}'", node.name)
        });
        let out = node.repo.dir.path().join(format!("restore-{id}"));
        node.ok(&["-q", "restore", &id, out.to_str().unwrap()]);
        assert_eq!(
            manifest(&out),
            *want,
            "snapshot {id} ({tag}) on {} does not restore to what was snapshotted ({when})",
            node.name
        );
        fs::remove_dir_all(&out).unwrap();
    }
    tags
}

fn spawn_sync(node: &TestNode, peer: &str, args: &[&str]) -> Child {
    node.cmd()
        .args(["-q", "sync", peer])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn kill_syncs_at_random_moments_on_both_sides() {
    let iters = env_u64("PUCE_CRASH_ITERS", 6);
    let mut rng = Rng::new(env_u64("PUCE_CRASH_SEED", 0x5eed));
    let perms = r#"{ pulled = ["pull", "push"], pushed = ["pull", "push"] }"#;
    let mut a = TestNode::new("lyon");
    let mut b = TestNode::new("grenoble");
    a.add_peer(&b, perms);
    b.add_peer(&a, perms);
    // `pulled` is written on b and pulled by a; `pushed` is written on a and pushed to b: one
    // writer per space, so every snapshot's content is known.
    let src_b = b.repo.dir.path().join("src-pulled");
    let src_a = a.repo.dir.path().join("src-pushed");
    for (src, seed) in [(&src_b, 100), (&src_a, 200)] {
        fs::create_dir_all(src).unwrap();
        for i in 0..24 {
            fs::write(
                src.join(format!("f{i:02}.bin")),
                random_bytes(300_000, seed + i),
            )
            .unwrap();
        }
    }
    let mut expected: HashMap<String, Manifest> = HashMap::new();
    expected.insert("b0".into(), manifest(&src_b));
    expected.insert("a0".into(), manifest(&src_a));
    snap(&b, &src_b, "pulled", "b0");
    snap(&a, &src_a, "pushed", "a0");
    b.start();

    // Calibrate the kill window on one complete pull.
    let t = Instant::now();
    a.sync("grenoble", &["--pull", "--space", "pulled"]);
    let mut window = t.elapsed().as_millis().max(20) as u64;

    let mut verified = HashSet::new();
    let (mut killed_receiver, mut killed_sender, mut completed) = (0, 0, 0);
    for it in 0..iters {
        let pull = it.is_multiple_of(2);
        // The writer of this direction makes a new snapshot.
        let tag = format!("{}{}", if pull { "b" } else { "a" }, it + 1);
        let (writer, src, space) = if pull {
            (&b, &src_b, "pulled")
        } else {
            (&a, &src_a, "pushed")
        };
        churn(src, &mut rng);
        expected.insert(tag.clone(), manifest(src));
        snap(writer, src, space, &tag);

        let dir = if pull { "--pull" } else { "--push" };
        let mut sync = spawn_sync(&a, "grenoble", &[dir, "--space", space]);
        // Kill either the `puce sync` process of a or the daemon of b, whichever side is
        // sending or receiving in this direction.
        let kill_daemon = rng.next().is_multiple_of(2);
        let delay = rng.next() % (window + 1);
        std::thread::sleep(Duration::from_millis(delay));
        let status = if kill_daemon {
            // The daemon comes back at once (as under systemd), recovering what its killed
            // process left; the sync learns of the restart from the new daemon's reset.
            b.kill9();
            b.start();
            sync.wait().unwrap()
        } else {
            let _ = sync.kill();
            sync.wait().unwrap()
        };
        let receiver_killed = pull != kill_daemon;
        if status.success() {
            completed += 1;
            window = window * 9 / 10;
        } else {
            if receiver_killed {
                killed_receiver += 1;
            } else {
                killed_sender += 1;
            }
            window = window * 11 / 10 + 1;
        }
        let when = format!(
            "after iteration {it} ({} {}, killed after {delay} ms)",
            if pull { "pull" } else { "push" },
            if kill_daemon { "daemon" } else { "sync" }
        );
        verify(&a, &expected, &mut verified, &when);
        let on_b = verify(&b, &expected, &mut verified, &when);
        if status.success() {
            let receiver_tags = if pull {
                listed(&a).into_iter().map(|(_, t)| t).collect()
            } else {
                on_b
            };
            assert!(
                receiver_tags.contains(&tag),
                "the sync of {tag} exited 0 but the receiver does not list it ({when})"
            );
        }
    }

    // Finish: complete syncs in both directions; both nodes hold every snapshot.
    a.sync("grenoble", &["--pull", "--space", "pulled"]);
    a.sync("grenoble", &["--push", "--space", "pushed"]);
    let ids = |n: &TestNode| -> HashSet<String> { listed(n).into_iter().map(|(i, _)| i).collect() };
    assert_eq!(ids(&a), ids(&b), "the nodes hold different histories");
    verify(&a, &expected, &mut verified, "at the end");
    verify(&b, &expected, &mut verified, "at the end");
    a.ok(&["check", "--read-data"]);
    b.ok(&["check", "--read-data"]);
    eprintln!(
        "sync crash test: {iters} runs, {killed_receiver} receivers killed, {killed_sender} \
         senders killed, {completed} completed, {} restores verified",
        verified.len()
    );
    assert!(
        killed_receiver + killed_sender > 0,
        "no sync was actually interrupted"
    );
}
