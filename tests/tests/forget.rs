//! Forgets carried across nodes, end to end: a snapshot forgotten on one node does not come back
//! at the next sync, is forgotten by the nodes that replicate its space, and a forget that is
//! not signed by a node allowed to write the space there is ignored.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;

use puce_tests::make_tree;
use puce_tests::node::{TestNode, pair};

const BOTH: &str = r#"{ docs = ["pull", "push"] }"#;

/// `node` with two snapshots of `docs` (the older one first), both synced to `other`.
fn two_versions(node: &TestNode) -> (String, String) {
    let src = node.repo.dir.path().join("src");
    make_tree(&src, 1);
    let old = node.snapshot(&src, "docs");
    fs::write(src.join("docs/new.txt"), b"second version").unwrap();
    let new = node.snapshot(&src, "docs");
    (old, new)
}

fn forget_and_prune(node: &TestNode, id: &str) {
    node.ok(&["forget", id, "--prune"]);
    assert!(!node.snapshot_ids().contains(&id.to_string()));
}

fn has_forget_record(node: &TestNode, id: &str) -> bool {
    node.repo.path().join("forgets").join(id).exists()
}

#[test]
fn a_forgotten_snapshot_does_not_come_back_and_is_forgotten_by_the_replicas() {
    let mut a = TestNode::new("lyon");
    let mut b = TestNode::new("grenoble");
    let mut c = TestNode::new("annecy");
    a.add_peer(&b, BOTH);
    b.add_peer(&a, BOTH);
    b.add_peer(&c, BOTH);
    c.add_peer(&b, BOTH);
    b.start();
    let (old, new) = two_versions(&a);
    a.sync("grenoble", &[]);
    c.sync("grenoble", &[]);
    for n in [&b, &c] {
        let ids = n.snapshot_ids();
        assert!(
            ids.contains(&old) && ids.contains(&new),
            "{}: {ids:?}",
            n.name
        );
    }

    // Forgotten and its data collected on lyon; then a sync both ways with grenoble.
    forget_and_prune(&a, &old);
    let r = a.sync("grenoble", &[]);
    assert!(
        !a.snapshot_ids().contains(&old),
        "the forgotten snapshot came back to lyon at the sync: {r}"
    );
    assert!(has_forget_record(&a, &old));
    assert!(
        !b.snapshot_ids().contains(&old),
        "grenoble still holds the snapshot lyon forgot: {r}\n{}",
        b.log()
    );
    assert!(b.snapshot_ids().contains(&new));
    assert!(has_forget_record(&b, &old));
    assert!(
        b.log().contains(&format!("forgot snapshot {old}")),
        "{}",
        b.log()
    );

    // Annecy knows only grenoble: grenoble passes the forget on under its own signature.
    let r = c.sync("grenoble", &[]);
    assert!(
        !c.snapshot_ids().contains(&old),
        "annecy still holds the snapshot forgotten by lyon, then grenoble: {r}"
    );
    assert!(c.snapshot_ids().contains(&new));

    // Again, both ways: nothing comes back anywhere, and the repositories are sound.
    a.sync("grenoble", &[]);
    c.sync("grenoble", &[]);
    for n in [&a, &b, &c] {
        assert!(!n.snapshot_ids().contains(&old), "{}", n.name);
        n.ok(&["check"]);
    }
    a.ok(&[
        "restore",
        &new,
        a.repo.dir.path().join("out").to_str().unwrap(),
    ]);
}

#[test]
fn a_forget_signed_by_an_unknown_key_is_ignored() {
    let (mut a, b) = pair(BOTH, BOTH);
    // Lyon's daemon signs the forget records it sends with a key of no configured node.
    a.start_with(&[("PUCE_TEST_FAULT", "foreign-forgets")]);
    let (old, new) = two_versions(&a);
    b.sync("lyon", &[]);
    assert!(b.snapshot_ids().contains(&old));
    forget_and_prune(&a, &old);
    let out = b.run(&["sync", "lyon"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        b.snapshot_ids().contains(&old),
        "grenoble forgot a snapshot on a forged forget record"
    );
    assert!(
        err.contains(&format!("ignored the forget of snapshot {old}"))
            && err.contains("peer 'lyon'")
            && err.contains("not by the peer"),
        "no clear log line naming the peer: {err}"
    );
    assert!(!has_forget_record(&b, &old));
    // The sync pushed back to lyon: the forgotten snapshot stays forgotten there.
    assert!(!a.snapshot_ids().contains(&old));
    assert!(a.snapshot_ids().contains(&new));
}

#[test]
fn a_forget_by_a_peer_that_may_only_read_the_space_is_not_applied() {
    // Grenoble lets lyon read docs, not write it: lyon may not forget there either.
    let (a, mut b) = pair(BOTH, r#"{ docs = ["pull"] }"#);
    b.start();
    let src = b.repo.dir.path().join("src");
    make_tree(&src, 2);
    let old = b.snapshot(&src, "docs");
    fs::write(src.join("docs/new.txt"), b"second version").unwrap();
    let new = b.snapshot(&src, "docs");
    a.sync("grenoble", &[]);
    assert!(a.snapshot_ids().contains(&old));
    forget_and_prune(&a, &old);
    let r = a.sync("grenoble", &[]);
    // Lyon does not fetch it again from grenoble, which keeps it.
    assert!(!a.snapshot_ids().contains(&old), "{r}");
    assert!(a.snapshot_ids().contains(&new));
    assert!(b.snapshot_ids().contains(&old), "{}", b.log());
    assert!(!has_forget_record(&b, &old));
}

/// Retention thins a history in its middle: lyon forgets v2 of v1 <- v2 <- v3 (v2 deleted a
/// file, v3 changed another). No snapshot names v1 as a parent any more; it must stay an
/// ancestor, not become a head: before lineage records, the next sync merged v1's old state
/// into v3 on both nodes (the deleted file came back, the changed one as a conflict copy).
#[test]
fn forgetting_the_middle_of_a_history_does_not_merge_the_old_state_back() {
    let (a, mut b) = pair(BOTH, BOTH);
    b.start();
    let src = a.repo.dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("minutes.txt"), b"first").unwrap();
    fs::write(src.join("old.txt"), b"to be deleted").unwrap();
    let _v1 = a.snapshot(&src, "docs");
    fs::remove_file(src.join("old.txt")).unwrap();
    let v2 = a.snapshot(&src, "docs");
    fs::write(src.join("minutes.txt"), b"second").unwrap();
    let v3 = a.snapshot(&src, "docs");
    a.sync("grenoble", &[]);
    assert_eq!(b.snapshot_ids().len(), 3);

    a.ok(&["forget", &v2]);
    for _ in 0..2 {
        let r = a.sync("grenoble", &[]);
        for s in r["spaces"].as_array().unwrap() {
            assert_eq!(s["merges"], 0, "a sync merged: {r}");
        }
    }
    for n in [&a, &b] {
        let ids = n.snapshot_ids();
        assert_eq!(ids.len(), 2, "{}: {ids:?}\n{}", n.name, b.log());
        assert!(!ids.contains(&v2), "{}: {ids:?}", n.name);
        let out = n.restored("docs@latest");
        let mut names: Vec<String> = fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["minutes.txt"], "{}: docs@latest", n.name);
        assert_eq!(fs::read(out.join("minutes.txt")).unwrap(), b"second");
        let latest = n.json(&["snapshots"]);
        let latest = latest.as_array().unwrap().last().unwrap()["id"].clone();
        assert_eq!(latest, serde_json::json!(v3), "{}", n.name);
    }
    b.stop();
}

/// Issue 18: lyon forgets a snapshot and collects its data (or an intruder on lyon does).
/// Grenoble gives lyon a protection period of 30 days: it keeps the snapshot (not listed, not
/// a head, restorable by id, its data kept by gc) and applies lyon's forget only once the
/// snapshot has been there 30 days (seen with the debug-build clock hook
/// `PUCE_TEST_DAYS_LATER`); then gc frees its data.
#[test]
fn a_peers_forget_waits_for_the_protection_period() {
    let (a, mut b) = pair(BOTH, &format!("{BOTH}\nkeep_min = \"30d\""));
    let src = a.repo.dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("report.bin"), puce_tests::random_bytes(1 << 20, 1)).unwrap();
    let old = a.snapshot(&src, "docs");
    fs::write(src.join("report.bin"), puce_tests::random_bytes(1 << 20, 2)).unwrap();
    let new = a.snapshot(&src, "docs");
    b.start();
    a.sync("grenoble", &[]);
    forget_and_prune(&a, &old);
    a.sync("grenoble", &[]);
    assert!(b.log().contains("kept here until"), "{}", b.log());
    assert_eq!(
        b.snapshot_ids(),
        vec![new.clone()],
        "the held snapshot is listed"
    );
    let st = b.json(&["node", "status"]);
    assert_eq!(st["held"][0]["snapshot"], serde_json::json!(old), "{st}");
    let gc = b.json(&["gc"]);
    assert_eq!(
        gc["bytes_freed"], 0,
        "gc freed data of the held snapshot: {gc}"
    );
    let kept = b.restored(&old);
    assert_eq!(
        fs::read(kept.join("report.bin")).unwrap(),
        puce_tests::random_bytes(1 << 20, 1)
    );
    // Syncing again does not shorten the period; grenoble's own retention does not decide on
    // the held snapshot.
    a.sync("grenoble", &[]);
    let v = b.json(&["forget", "--keep-last", "1"]);
    assert_eq!(v["removed"], serde_json::json!([]), "{v}");
    assert!(b.restored(&old).join("report.bin").exists());

    // 31 days later, the forget is applied at the next sync, and gc frees the data.
    b.stop();
    b.start_with(&[("PUCE_TEST_DAYS_LATER", "31")]);
    a.sync("grenoble", &[]);
    b.stop();
    let out = b.run(&[
        "restore",
        &old,
        a.repo.dir.path().join("x").to_str().unwrap(),
    ]);
    assert!(
        !out.status.success(),
        "the held snapshot was kept after its period"
    );
    let gc = b.json(&["gc"]);
    assert!(
        gc["bytes_freed"].as_u64().unwrap() >= 1 << 20,
        "gc did not free the forgotten data: {gc}"
    );
    assert_eq!(b.snapshot_ids(), vec![new]);
}

/// Issue 18: a compromised lyon fills grenoble with junk snapshots. Grenoble's admin drops
/// what lyon delivered since a time, after a dry run: those snapshots are forgotten for good
/// (a sync does not bring them back), the earlier ones stay, each drop is logged.
#[test]
fn an_admin_drops_what_a_peer_delivered_since_a_time() {
    let (a, mut b) = pair(BOTH, BOTH);
    let src = a.repo.dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("minutes.txt"), b"real").unwrap();
    let real = a.snapshot(&src, "docs");
    b.start();
    a.sync("grenoble", &[]);
    let mut junk = Vec::new();
    let mut since = None;
    for i in 0..2 {
        fs::write(src.join("junk.bin"), puce_tests::random_bytes(4096, i)).unwrap();
        junk.push(a.snapshot(&src, "docs"));
        let r = a.sync("grenoble", &["--push"]);
        since.get_or_insert(r["started_ns"].as_i64().unwrap());
    }
    b.stop();
    let since = jiff::Timestamp::from_nanosecond(i128::from(since.unwrap())).unwrap();
    let since = since.to_string();

    let dry = b.json(&["node", "drop", "lyon", "--since", &since, "--dry-run"]);
    let listed: Vec<&str> = dry["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["snapshot"].as_str().unwrap())
        .collect();
    assert_eq!(listed, junk, "{dry}");
    puce_tests::golden::assert_json_schema("node-drop", &dry);
    assert_eq!(b.snapshot_ids().len(), 3, "the dry run dropped something");
    b.ok(&["node", "drop", "lyon", "--since", &since]);
    assert_eq!(b.snapshot_ids(), vec![real.clone()]);
    let log = fs::read_to_string(b.node_dir().join("drops.log")).unwrap();
    assert_eq!(log.lines().count(), 2, "{log}");
    assert!(log.contains(&junk[0]) && log.contains("'lyon'"), "{log}");
    b.start();
    a.sync("grenoble", &[]);
    b.stop();
    assert_eq!(b.snapshot_ids(), vec![real], "a dropped snapshot came back");
}

/// Issue 18, the break-in: an intruder on lyon pushes a forged snapshot dated years ahead
/// that deletes everything, then forgets the real history and runs gc, and syncs. Grenoble,
/// which gives lyon a protection period, still restores every snapshot it held, and says what
/// it flagged: the forged date, the mass deletion, the held snapshots.
#[test]
fn a_break_in_on_the_owner_does_not_destroy_the_holders_copy() {
    let (a, mut b) = pair(BOTH, &format!("{BOTH}\nkeep_min = \"30d\""));
    let src = a.repo.dir.path().join("src");
    make_tree(&src, 7);
    let v1 = a.snapshot(&src, "docs");
    fs::write(src.join("minutes.txt"), b"second version").unwrap();
    let v2 = a.snapshot(&src, "docs");
    b.start();
    a.sync("grenoble", &[]);
    let before: Vec<_> = [&v1, &v2]
        .iter()
        .map(|id| puce_tests::manifest(&b.restored(id)))
        .collect();

    // The intruder: everything deleted, dated 2030, then the real history forgotten.
    fs::remove_dir_all(&src).unwrap();
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("README.txt"), b"your files are gone").unwrap();
    let forged = a.json(&[
        "snapshot",
        src.to_str().unwrap(),
        "--space",
        "docs",
        "--time",
        "2030-01-01T00:00:00Z",
    ])["id"]
        .as_str()
        .unwrap()
        .to_string();
    a.sync("grenoble", &[]);
    a.ok(&["forget", &v1, &v2, "--prune"]);
    a.sync("grenoble", &[]);
    b.stop();

    for (id, m) in [&v1, &v2].iter().zip(&before) {
        assert_eq!(
            &puce_tests::manifest(&b.restored(id)),
            m,
            "grenoble lost snapshot {id}"
        );
    }
    b.ok(&["check", "--read-data"]);
    let st = b.json(&["node", "status"]);
    println!("{st:#}");
    let ids = |k: &str| -> Vec<String> {
        let mut v: Vec<String> = st[k]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["snapshot"].as_str().unwrap().to_string())
            .collect();
        v.sort();
        v
    };
    let mut real = vec![v1.clone(), v2.clone()];
    real.sort();
    assert_eq!(ids("held"), real);
    assert_eq!(ids("dated_ahead"), vec![forged.clone()]);
    assert_eq!(ids("mass_deletions"), vec![forged]);
    // Retention on grenoble does not let the forged date push the real history out either.
    let v = b.json(&["forget", "--keep-daily", "1", "--dry-run"]);
    assert_eq!(v["removed"], serde_json::json!([]), "{v}");
}
