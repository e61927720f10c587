//! `puce migrate` end to end: an unencrypted repository with several spaces, tags, a merge, a
//! forget, a retention policy and a quota moves into an encrypted one, every snapshot restoring
//! byte for byte with the same records and history; a migration killed mid-way and run again
//! finishes without duplicates; `--new-key` makes a repository the old key cannot open; an
//! old repository is never misread.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use puce_core::format::snapshot::Snapshot;
use puce_core::{OpenOptions, Repo, SnapshotEntry, SnapshotId};
use puce_tests::{TestRepo, association_key, golden, manifest, random_bytes};
use serde_json::Value;

/// The repository at `path` opened in this process with `key` (none: unencrypted).
fn open(path: &Path, key: Option<&Path>) -> Repo {
    Repo::open_with(
        path,
        &OpenOptions {
            key_files: key.into_iter().map(Path::to_path_buf).collect(),
            ..OpenOptions::default()
        },
    )
    .unwrap()
}

fn write(src: &Path, name: &str, data: &[u8]) {
    let p = src.join(name);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, data).unwrap();
}

/// The snapshots `puce snapshots` lists (forgotten ones left out), by id.
fn listed(repo: &Repo) -> BTreeMap<SnapshotId, SnapshotEntry> {
    let forgotten = puce_core::forgotten::ids(repo).unwrap();
    repo.snapshots()
        .unwrap()
        .into_iter()
        .filter(|s| !forgotten.contains(&s.id))
        .map(|s| (s.id, s))
        .collect()
}

/// `puce --json migrate ARGS` in the environment of `t` (its key directory).
fn migrate(t: &TestRepo, args: &[&str]) -> Value {
    let mut a = vec!["--json", "migrate"];
    a.extend_from_slice(args);
    serde_json::from_str(&t.ok(&a)).unwrap()
}

/// The old id -> new id map a migration printed.
fn id_map(v: &Value) -> HashMap<SnapshotId, SnapshotId> {
    v["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let id = |k: &str| SnapshotId::from_hex(m[k].as_str().unwrap()).unwrap();
            (id("old"), id("new"))
        })
        .collect()
}

/// The old repository's content: spaces `docs` (a hard link, a symlink, tags, a second head
/// from "lyon" and the merge of both heads) and `photos` (its middle snapshot forgotten), a
/// snapshot of `scratch` forgotten, a retention policy and a quota. Returns photos' first and
/// forgotten snapshots.
fn fill_old(t: &TestRepo, work: &Path) -> (SnapshotId, SnapshotId) {
    let docs = work.join("docs");
    write(&docs, "report.txt", &"minutes\n".repeat(5000).into_bytes());
    write(&docs, "data/big.bin", &random_bytes(3 << 20, 1));
    std::os::unix::fs::symlink("report.txt", docs.join("link")).unwrap();
    fs::hard_link(docs.join("report.txt"), docs.join("report-again.txt")).unwrap();
    let d = docs.to_str().unwrap();
    t.ok(&["snapshot", d, "--space", "docs", "--tag", "v1"]);
    write(&docs, "data/big.bin", &random_bytes(3 << 20, 2));
    t.ok(&["snapshot", d, "--space", "docs", "--tag", "nightly"]);
    let other = work.join("other");
    write(&other, "report.txt", b"lyon's version\n");
    write(&other, "lyon.bin", &random_bytes(200_000, 3));
    let scratch = t.json(&["snapshot", other.to_str().unwrap(), "--space", "scratch"]);
    {
        // A second head of docs, as a sync from another site brings one (host lyon, parent
        // v1), then the merge a node writes for it.
        let repo = Arc::new(open(&t.path(), None));
        let all = repo.snapshots().unwrap();
        let tmp = all.iter().find(|s| s.snapshot.space == "scratch").unwrap();
        let v1 = all.iter().find(|s| s.snapshot.tags == ["v1"]).unwrap();
        repo.save_snapshot(&Snapshot {
            space: "docs".into(),
            host: "lyon".into(),
            time_ns: v1.snapshot.time_ns + 5_000_000,
            tags: vec!["from-lyon".into()],
            parents: vec![v1.id],
            ..tmp.snapshot.clone()
        })
        .unwrap();
        let merged = puce_core::merge::merge_heads(&repo, "docs")
            .unwrap()
            .unwrap();
        assert_eq!(merged.merges.len(), 1);
    }
    t.ok(&["forget", scratch["id"].as_str().unwrap()]);
    write(&docs, "after-merge.txt", b"written after the merge\n");
    t.ok(&["snapshot", d, "--space", "docs", "--tag", "v3"]);
    let photos = work.join("photos");
    let mut ids = Vec::new();
    for i in 0..3u64 {
        write(
            &photos,
            &format!("img{i}.raw"),
            &random_bytes(400_000, 10 + i),
        );
        let v = t.json(&["snapshot", photos.to_str().unwrap(), "--space", "photos"]);
        ids.push(SnapshotId::from_hex(v["id"].as_str().unwrap()).unwrap());
    }
    t.ok(&["forget", &ids[1].to_hex()]);
    t.ok(&["policy", "set", "docs", "--keep-last", "5"]);
    t.ok(&["space", "set", "photos", "--quota", "1GiB"]);
    (ids[0], ids[1])
}

/// Every remaining snapshot of `old` is in `new` (and nothing else) with the same record but
/// for its root and parents (mapped, a forgotten parent replaced by its own parent), and
/// restores to the same files.
fn assert_same_history(
    t: &TestRepo,
    new_path: &Path,
    map: &HashMap<SnapshotId, SnapshotId>,
    forgotten_parent: Option<(SnapshotId, SnapshotId)>,
    key: &Path,
) {
    let old = listed(&open(&t.path(), None));
    let new = listed(&open(new_path, Some(key)));
    assert_eq!(new.len(), old.len(), "no snapshot more, none missing");
    assert_eq!(map.len(), old.len());
    let out = t.dir.path().join("restored");
    for (id, s) in &old {
        let n = &new[&map[id]].snapshot;
        let mut parents: Vec<SnapshotId> = s
            .snapshot
            .parents
            .iter()
            .map(|p| match forgotten_parent {
                Some((first, gone)) if *p == gone => map[&first],
                _ => map[p],
            })
            .collect();
        parents.sort();
        let mut got = n.parents.clone();
        got.sort();
        assert_eq!(got, parents, "parents of {id}");
        let same = Snapshot {
            parents: s.snapshot.parents.clone(),
            root: s.snapshot.root,
            ..n.clone()
        };
        assert_eq!(same, s.snapshot, "the record of {id}");
        let (a, b) = (out.join(format!("old-{id}")), out.join(format!("new-{id}")));
        t.ok(&["restore", &id.to_hex(), a.to_str().unwrap()]);
        let np = new_path.to_str().unwrap();
        t.ok(&[
            "--repo",
            np,
            "restore",
            &map[id].to_hex(),
            b.to_str().unwrap(),
        ]);
        assert_eq!(
            manifest(&a),
            manifest(&b),
            "snapshot {id} restores the same"
        );
    }
}

/// An unencrypted repository moves into a new encrypted one: same records, history, diffs,
/// settings and files; run again, it copies nothing.
#[test]
fn an_unencrypted_repository_migrates_with_its_history() {
    let t = TestRepo::with_init(&["--no-encrypt"]);
    let work = t.dir.path().join("work");
    let (first, gone) = fill_old(&t, &work);
    let new_path = t.dir.path().join("new");
    let np = new_path.to_str().unwrap();
    let v = migrate(&t, &["--from", t.path().to_str().unwrap(), np]);
    golden::assert_json_schema("migrate", &v);
    assert_eq!(v["created"], true);
    assert_eq!(v["copied"], 7, "{v}");
    assert_eq!(v["already"], 0);
    assert_eq!(v["forgotten"], 2, "scratch and the middle of photos");
    assert_eq!(v["space_settings"], 2);
    let key = PathBuf::from(v["key_file"].as_str().unwrap());
    let map = id_map(&v);
    assert_same_history(&t, &new_path, &map, Some((first, gone)), &key);
    // The merge is still a merge, its heads and history read the same.
    let new = open(&new_path, Some(&key));
    let merges = new.snapshots().unwrap();
    let merge = merges
        .iter()
        .find(|s| s.snapshot.tags == ["merge"])
        .unwrap();
    assert_eq!(merge.snapshot.parents.len(), 2);
    assert_eq!(
        new.latest("docs").unwrap().unwrap().snapshot.tags,
        ["v3"],
        "one head"
    );
    let diff = |repo: &str, a: &str, b: &str| -> Value {
        let v: Value =
            serde_json::from_str(&t.ok(&["--repo", repo, "--json", "diff", a, b])).unwrap();
        serde_json::json!([v["changes"], v["stats"]])
    };
    let old_path = t.path();
    let op = old_path.to_str().unwrap();
    assert_eq!(
        diff(op, "docs@latest~4", "docs@latest"),
        diff(np, "docs@latest~4", "docs@latest")
    );
    // Settings moved: the retention policy and the quota.
    let show = |repo: &str| t.ok(&["--repo", repo, "policy", "show"]);
    assert_eq!(show(op), show(np));
    let s = new.space_settings("photos").unwrap().unwrap();
    assert_eq!(s.quota, Some(1 << 30));
    // Everything checks; nothing of the old names is readable in the new repository's files.
    t.ok(&["--repo", np, "check", "--read-data"]);
    let mut files = Vec::new();
    for d in ["packs", "snapshots", "spaces", "forgets", "receipts"] {
        puce_tests::files_with_bytes(&new_path.join(d), &mut files);
    }
    puce_tests::assert_no_marker(&files, &["minutes", "lyon", "report.txt"]);
    // Run again: nothing to do, no duplicate.
    let again = migrate(&t, &["--from", op, np]);
    assert_eq!(again["copied"], 0);
    assert_eq!(again["already"], 7);
    assert_eq!(again["objects"], 0);
    assert_eq!(id_map(&again), map);
}

/// Wait (at most two minutes) until `ready` holds, panicking with `what` otherwise.
fn wait_for(what: &str, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ready() {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "timed out: {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn count(dir: &Path) -> usize {
    fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

/// A migration killed with SIGKILL while it copies data, between a snapshot record and its line
/// in the map, and once two snapshots are done, then run again, ends with every snapshot once.
#[test]
fn a_killed_migration_run_again_finishes_without_duplicates() {
    let t = TestRepo::with_init(&["--no-encrypt"]);
    let work = t.dir.path().join("work");
    let (first, gone) = fill_old(&t, &work);
    let new_path = t.dir.path().join("new");
    let (op, np) = (t.path(), new_path.clone());
    let spawn = |pause: &str| {
        t.cmd()
            .env("PUCE_TEST_MIGRATE_PAUSE_MS", pause)
            .args(["migrate", "--from"])
            .args([&op, &np])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    // 1. Killed while it copies data: as soon as a pack is being written (in tmp/), before
    // any record.
    let mut c = spawn("0");
    wait_for("a pack being written", || count(&new_path.join("tmp")) > 0);
    c.kill().unwrap();
    c.wait().unwrap();
    assert_eq!(count(&new_path.join("snapshots")), 0);
    let map_file = fs::read_dir(&new_path)
        .unwrap()
        .flatten()
        .find(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("migrated-from-")
        })
        .unwrap()
        .path();
    let lines = || fs::read_to_string(&map_file).unwrap().lines().count();
    // 2. Killed in the pause after its first snapshot record, before the map has it.
    let mut c = spawn("600000");
    wait_for("a first snapshot record", || {
        count(&new_path.join("snapshots")) >= 1
    });
    c.kill().unwrap();
    c.wait().unwrap();
    assert_eq!(count(&new_path.join("snapshots")), 1);
    assert_eq!(lines(), 0, "the record is not mapped yet");
    // 3. Killed once two snapshots are mapped.
    let mut c = spawn("200");
    wait_for("two lines in the map", || lines() >= 2);
    c.kill().unwrap();
    c.wait().unwrap();
    let mapped = lines();
    eprintln!(
        "killed after {} records, {mapped} mapped",
        count(&new_path.join("snapshots"))
    );
    // 3. Run again to the end.
    let v = migrate(&t, &["--from", op.to_str().unwrap(), np.to_str().unwrap()]);
    assert_eq!(v["created"], false);
    assert_eq!(v["already"], mapped, "{v}");
    assert_eq!(v["copied"], 7 - mapped, "{v}");
    let key = PathBuf::from(v["key_file"].as_str().unwrap());
    assert_eq!(count(&new_path.join("snapshots")), 7, "no duplicate record");
    assert_eq!(lines(), 7);
    assert_same_history(&t, &new_path, &id_map(&v), Some((first, gone)), &key);
    t.ok(&["--repo", np.to_str().unwrap(), "check"]);
}

/// Every file below `dir` (recursively) with its bytes, by path.
fn tree_bytes(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = Vec::new();
    puce_tests::files_with_bytes(dir, &mut files);
    files.into_iter().collect()
}

/// After a leak: `--new-key` copies an encrypted repository under a brand new key, which the
/// old key cannot open and the new one can, everything restoring; the old repository is left
/// as it was; a target under the old key is refused.
#[test]
fn new_key_makes_a_repository_the_old_key_cannot_open() {
    let t = TestRepo::new();
    let work = t.dir.path().join("work");
    let docs = work.join("docs");
    write(&docs, "a.txt", &"text\n".repeat(10_000).into_bytes());
    write(&docs, "b.bin", &random_bytes(2 << 20, 7));
    t.snapshot(&docs, "docs");
    write(&docs, "c.bin", &random_bytes(300_000, 8));
    t.snapshot(&docs, "docs");
    t.snapshot(&docs, "other");
    let before: Vec<BTreeMap<PathBuf, Vec<u8>>> = ["snapshots", "packs", "spaces"]
        .iter()
        .map(|d| tree_bytes(&t.path().join(d)))
        .collect();
    let new_path = t.dir.path().join("rekeyed");
    let np = new_path.to_str().unwrap();
    // Without a directory for the new repository: a usage error naming what to give.
    let out = t.run(&["migrate", "--new-key"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("migrate --new-key NEW"));
    let text = t.ok(&["migrate", "--new-key", np]);
    assert!(text.contains("next steps"), "{text}");
    assert!(text.contains("receive everything again"), "{text}");
    let after: Vec<BTreeMap<PathBuf, Vec<u8>>> = ["snapshots", "packs", "spaces"]
        .iter()
        .map(|d| tree_bytes(&t.path().join(d)))
        .collect();
    assert!(before == after, "the old repository was not changed");
    // The old key does not open the new repository; the new one does.
    let old_key = association_key().to_str().unwrap();
    let out = t.run(&["--repo", np, "--key-file", old_key, "snapshots"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("the key of another repository"), "{err}");
    let v = migrate(&t, &["--new-key", np]);
    assert_eq!(v["already"], 3, "run again: nothing copied");
    let new = open(&new_path, Some(Path::new(v["key_file"].as_str().unwrap())));
    let old = open(&t.path(), Some(association_key()));
    assert_ne!(
        new.config().encryption.unwrap().fingerprint,
        old.config().encryption.unwrap().fingerprint
    );
    let map = id_map(&v);
    let out = t.dir.path().join("restored");
    for (o, n) in &map {
        let (a, b) = (out.join(format!("o{o}")), out.join(format!("n{n}")));
        t.ok(&["restore", &o.to_hex(), a.to_str().unwrap()]);
        t.ok(&["--repo", np, "restore", &n.to_hex(), b.to_str().unwrap()]);
        assert_eq!(manifest(&a), manifest(&b));
    }
    t.ok(&["--repo", np, "check", "--read-data"]);
    // A target under the old key is refused with --new-key.
    let same = t.dir.path().join("same-key");
    let same = same.to_str().unwrap();
    t.ok(&["init", "-q", same, "--key-from", old_key]);
    let out = t.run(&["migrate", "--new-key", same]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("must have a new key"), "{err}");
}

/// A repository of an older sealing scheme is refused with an error naming `puce migrate`, by
/// every command, `puce migrate` itself included (it is never read under the wrong scheme).
#[test]
fn an_old_repository_is_never_misread() {
    let t = TestRepo::new();
    let docs = t.dir.path().join("docs");
    write(&docs, "a.txt", b"hello\n");
    t.snapshot(&docs, "docs");
    let mut config = open(&t.path(), Some(association_key())).config().clone();
    config.encryption.as_mut().unwrap().scheme = 0;
    fs::write(t.path().join("config"), config.encode().unwrap()).unwrap();
    let out = t.run(&["snapshots"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("older puce") && err.contains("puce migrate"),
        "{err}"
    );
    let new_path = t.dir.path().join("new");
    let out = t.run(&[
        "migrate",
        "--from",
        t.path().to_str().unwrap(),
        new_path.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("puce migrate"), "{err}");
    assert!(
        !new_path.exists(),
        "nothing made from a repository it cannot read"
    );

    // A damaged snapshot record is named, not silently dropped.
    let t = TestRepo::with_init(&["--no-encrypt"]);
    t.snapshot(&docs, "docs");
    let bad = "ab".repeat(32);
    fs::write(t.path().join("snapshots").join(&bad), b"PUCESNAP damaged").unwrap();
    let v = migrate(
        &t,
        &[
            "--from",
            t.path().to_str().unwrap(),
            new_path.to_str().unwrap(),
        ],
    );
    assert_eq!(v["copied"], 1);
    assert_eq!(v["unreadable"], serde_json::json!([bad]));
}

/// Put the repository at `new` in place of `repo` (the node directory moving with it: the
/// node's identity and node.toml), keeping the old one at `leaked`: the guide's step 1.
fn swap_in(repo: &Path, new: &Path, leaked: &Path) {
    fs::rename(repo.join("node"), new.join("node")).unwrap();
    fs::rename(repo, leaked).unwrap();
    fs::rename(new, repo).unwrap();
}

/// After `--new-key` on lyon, grenoble (a replica of the same association, with the old key)
/// is refused until it has the new key; given it, in an empty repository, the next sync sends
/// it everything again (every id changed) and it restores byte for byte.
#[test]
fn after_new_key_the_replica_receives_everything_again() {
    use puce_tests::node::TestNode;
    let grants = r#"{ docs = ["pull", "push"] }"#;
    let mut lyon = TestNode::new("lyon");
    let mut grenoble = TestNode::new("grenoble");
    lyon.add_peer(&grenoble, grants);
    grenoble.add_peer(&lyon, grants);
    grenoble.start();
    let src = lyon.repo.dir.path().join("src");
    write(&src, "a.bin", &random_bytes(3 << 20, 21));
    write(&src, "notes.txt", &"agenda\n".repeat(20_000).into_bytes());
    lyon.snapshot(&src, "docs");
    write(&src, "b.bin", &random_bytes(1 << 20, 22));
    lyon.snapshot(&src, "docs");
    let first = lyon.sync("grenoble", &["--push"]);
    let first_bytes = first["sent_bytes"].as_u64().unwrap();
    assert!(first_bytes > 4 << 20, "{first}");

    // Grenoble's receipts (lyon delivered both snapshots) move with a migration, naming the
    // new ids, with the same sender and arrival.
    let g_copy = grenoble.repo.dir.path().join("copy");
    let g_path = grenoble.repo.path();
    let v = grenoble.json(&[
        "migrate",
        "--from",
        g_path.to_str().unwrap(),
        g_copy.to_str().unwrap(),
    ]);
    assert_eq!(v["receipts"], 2, "{v}");
    let map = id_map(&v);
    let receipts = |repo: &Repo| {
        let mut r: Vec<(String, i64)> = puce_core::reach::receipts(repo)
            .unwrap()
            .into_iter()
            .map(|r| (r.sender_name, r.arrived_ns))
            .collect();
        r.sort();
        r
    };
    let old_g = open(&g_path, Some(association_key()));
    let copy = open(&g_copy, Some(Path::new(v["key_file"].as_str().unwrap())));
    assert_eq!(receipts(&copy), receipts(&old_g));
    for r in puce_core::reach::receipts(&copy).unwrap() {
        assert!(map.values().any(|n| *n == r.snapshot), "{r:?}");
    }

    let lyon_repo = lyon.repo.path();
    let new = lyon.repo.dir.path().join("new");
    let v = lyon.json(&["migrate", "--new-key", new.to_str().unwrap()]);
    let new_key = v["key_file"].as_str().unwrap().to_string();
    swap_in(&lyon_repo, &new, &lyon.repo.dir.path().join("leaked"));
    // Grenoble still has the old key: refused, naming the key.
    let err = lyon.sync_fails("grenoble", &["--push"]);
    assert!(err.contains("must share the association's key"), "{err}");
    // Grenoble gets the new key, in an empty repository put in place of its own.
    grenoble.stop();
    let g_repo = grenoble.repo.path();
    let g_new = grenoble.repo.dir.path().join("new");
    grenoble.ok(&[
        "init",
        "-q",
        g_new.to_str().unwrap(),
        "--key-from",
        &new_key,
    ]);
    swap_in(&g_repo, &g_new, &grenoble.repo.dir.path().join("leaked"));
    grenoble.start();
    let again = lyon.sync("grenoble", &["--push"]);
    let again_bytes = again["sent_bytes"].as_u64().unwrap();
    eprintln!("sent {first_bytes} bytes in the first sync, {again_bytes} after --new-key");
    assert!(
        again_bytes * 10 >= first_bytes * 9,
        "everything is sent again: {again_bytes} bytes after {first_bytes}"
    );
    assert_eq!(grenoble.snapshot_ids(), lyon.snapshot_ids());
    assert_eq!(manifest(&grenoble.restored("docs@latest")), manifest(&src));
    grenoble.ok(&["check", "--read-data"]);
    grenoble.stop();
}
