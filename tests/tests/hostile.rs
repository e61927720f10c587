//! A repository holding a malicious tree (written by a buggy or hostile peer): restore must
//! refuse the unsafe entries, write nothing outside the target, and say what is wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::sync::Arc;

use puce_core::format::pack::Kind;
use puce_core::format::snapshot::{Snapshot, Summary};
use puce_core::format::tree::{Entry, Node, Tree};
use puce_core::saver::Saver;
use puce_core::{ObjectId, Repo};
use puce_tests::node::{pair, wait_for};
use puce_tests::{Need, TestRepo, is_mounted, require};
use serde_json::json;

fn file(name: &[u8], chunk: ObjectId) -> Entry {
    Entry {
        name: name.to_vec(),
        mode: 0o644,
        mtime_ns: 0,
        uid: 0,
        gid: 0,
        link: None,
        node: Node::File {
            size: 6,
            chunks: vec![chunk],
        },
    }
}

/// The repository of `repo`, opened in this process (with its own cache directory).
fn open(repo: &TestRepo) -> Arc<Repo> {
    Arc::new(puce_tests::open_repo(
        &repo.path(),
        Some(repo.dir.path().join("cache")),
    ))
}

/// Store `root` (entries not validated, as a hostile writer would) and a snapshot of it.
fn plant(repo: &TestRepo, entries: Vec<Entry>, sub: Option<Vec<Entry>>) -> String {
    let r = open(repo);
    let saver = Saver::new(r.clone(), 1).unwrap();
    let reader = r.index().reader().unwrap();
    let data = b"pwned!".to_vec();
    let chunk = r.object_id(&data);
    saver.save(&reader, chunk, Kind::Data, data).unwrap();
    let mut entries = entries;
    for e in entries.iter_mut() {
        if let Node::File { chunks, .. } = &mut e.node {
            *chunks = vec![chunk];
        }
    }
    if let Some(sub) = sub {
        let mut sub = sub;
        for e in sub.iter_mut() {
            if let Node::File { chunks, .. } = &mut e.node {
                *chunks = vec![chunk];
            }
        }
        let bytes = Tree { entries: sub }.encode().unwrap();
        let id = r.object_id(&bytes);
        saver.save(&reader, id, Kind::Tree, bytes).unwrap();
        for e in entries.iter_mut() {
            if let Node::Dir { tree } = &mut e.node {
                *tree = id;
            }
        }
    }
    let bytes = Tree { entries }.encode().unwrap();
    let root = r.object_id(&bytes);
    saver.save(&reader, root, Kind::Tree, bytes).unwrap();
    saver.finish().unwrap();
    let snap = Snapshot {
        time_ns: 1,
        space: "evil".into(),
        host: "h".into(),
        user: "u".into(),
        source: "/".into(),
        tags: vec![],
        parents: vec![],
        root,
        summary: Summary::default(),
        origin: String::new(),
    };
    r.save_snapshot(&snap).unwrap().to_hex()
}

fn dir(name: &[u8]) -> Entry {
    Entry {
        name: name.to_vec(),
        mode: 0o755,
        mtime_ns: 0,
        uid: 0,
        gid: 0,
        link: None,
        node: Node::Dir {
            tree: ObjectId::default(),
        },
    }
}

#[test]
fn restore_refuses_entries_that_escape_the_target() {
    type Case = (&'static str, Vec<Entry>, Option<Vec<Entry>>);
    let cases: Vec<Case> = vec![
        (
            "dotdot dir",
            vec![dir(b"..")],
            Some(vec![file(b"escaped", ObjectId::default())]),
        ),
        ("dotdot file", vec![file(b"..", ObjectId::default())], None),
        (
            "absolute",
            vec![file(b"/tmp/escaped", ObjectId::default())],
            None,
        ),
        (
            "slash",
            vec![file(b"a/../../escaped", ObjectId::default())],
            None,
        ),
        ("nul", vec![file(b"a\0b", ObjectId::default())], None),
        (
            "dot",
            vec![dir(b".")],
            Some(vec![file(b"x", ObjectId::default())]),
        ),
        ("empty", vec![file(b"", ObjectId::default())], None),
    ];
    for (what, entries, sub) in cases {
        let repo = TestRepo::new();
        let id = plant(&repo, entries, sub);
        let base = repo.dir.path().join("jail");
        let target = base.join("target");
        fs::create_dir_all(&target).unwrap();
        let out = repo.run(&["restore", &id, target.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1), "{what}: restore must fail");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("unsafe entry name"), "{what}: {err}");
        // Nothing was written beside the target, nor in it.
        let beside: Vec<_> = fs::read_dir(&base)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(beside, vec![std::ffi::OsString::from("target")], "{what}");
        assert_eq!(fs::read_dir(&target).unwrap().count(), 0, "{what}");
        assert!(!std::path::Path::new("/tmp/escaped").exists());
        // `ls` and `check` name the problem instead of panicking.
        let ls = repo.run(&["ls", "-R", &id]);
        assert_eq!(ls.status.code(), Some(1), "{what}");
        let check = repo.run(&["check"]);
        assert_eq!(check.status.code(), Some(1), "{what}");
    }
}

/// Every file and directory under `p`, following nothing, ignoring what cannot be listed.
fn walk(p: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    let Ok(rd) = fs::read_dir(p) else { return };
    for e in rd.flatten() {
        let path = e.path();
        out.push(path.clone());
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            walk(&path, out);
        }
    }
}

#[test]
fn a_mount_shows_no_entry_that_escapes() {
    if require(Need::Fuse).is_none() {
        return;
    }
    type Case = (&'static str, Vec<Entry>, Option<Vec<Entry>>);
    let cases: Vec<Case> = vec![
        (
            "dotdot dir",
            vec![dir(b"..")],
            Some(vec![file(b"escaped", ObjectId::default())]),
        ),
        (
            "slash",
            vec![file(b"a/../../escaped", ObjectId::default())],
            None,
        ),
        (
            "absolute",
            vec![file(b"/tmp/escaped", ObjectId::default())],
            None,
        ),
        ("nul", vec![file(b"a\0b", ObjectId::default())], None),
    ];
    for (what, entries, sub) in cases {
        let repo = TestRepo::new();
        plant(&repo, entries, sub);
        let mnt = repo.dir.path().join("mnt");
        fs::create_dir_all(&mnt).unwrap();
        let mut child = repo
            .cmd()
            .args(["mount", mnt.to_str().unwrap(), "--read-only"])
            .stdout(std::process::Stdio::null())
            .stderr(fs::File::create(repo.dir.path().join("mount.log")).unwrap())
            .spawn()
            .unwrap();
        let start = std::time::Instant::now();
        while !is_mounted(&mnt) {
            assert!(child.try_wait().unwrap().is_none(), "{what}: mount exited");
            assert!(start.elapsed().as_secs() < 60, "{what}: no mount");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        // Walk everything the mount shows: the hostile snapshot fails to list (EIO), and no
        // path leads outside the mount.
        let mut seen = Vec::new();
        walk(&mnt.join("snapshots"), &mut seen);
        let canon_mnt = fs::canonicalize(&mnt).unwrap();
        for p in &seen {
            assert!(p.starts_with(&mnt), "{what}: {p:?}");
            let name = p.file_name().unwrap().as_encoded_bytes();
            assert!(name != b".." && name != b"." && !name.is_empty(), "{what}");
            if let Ok(c) = fs::canonicalize(p) {
                assert!(c.starts_with(&canon_mnt), "{what}: {p:?} leads to {c:?}");
            }
        }
        let evil = mnt.join("snapshots/evil");
        // Paths, not `DirEntry`s: an entry keeps its directory open (and the mount busy).
        let snaps: Vec<_> = fs::read_dir(&evil)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        assert_eq!(snaps.len(), 1, "{what}: the snapshot is listed");
        let err = fs::read_dir(&snaps[0])
            .and_then(|mut d| d.next().transpose())
            .err();
        assert_eq!(
            err.and_then(|e| e.raw_os_error()),
            Some(libc::EIO),
            "{what}: listing a hostile tree must fail with EIO"
        );
        assert!(!std::path::Path::new("/tmp/escaped").exists());
        assert!(!repo.dir.path().join("escaped").exists());
        // The mount is still alive after the refusal.
        assert!(fs::read_dir(mnt.join("spaces")).is_ok(), "{what}");
        let o = std::process::Command::new("fusermount3")
            .arg("-u")
            .arg(&mnt)
            .output()
            .unwrap();
        assert!(o.status.success(), "{what}: unmount: {o:?}");
        let st = child.wait().unwrap();
        assert!(st.success(), "{what}: mount exited with {st}");
    }
}

/// Store a chain of `depth` folders `d/d/...` in space `space` of `repo`, whose deepest folder
/// holds a symlink named `leaf` and, with `below`, a folder `e` holding the tree `below`.
/// Returns the snapshot's root tree.
fn forge_deep(
    repo: &TestRepo,
    space: &str,
    depth: usize,
    leaf: &[u8],
    below: Option<ObjectId>,
) -> ObjectId {
    let r = open(repo);
    let saver = Saver::new(r.clone(), 1).unwrap();
    let reader = r.index().reader().unwrap();
    let mut entries = vec![Entry {
        name: leaf.to_vec(),
        mode: 0o777,
        mtime_ns: 0,
        uid: 0,
        gid: 0,
        link: None,
        node: Node::Symlink {
            target: b"x".to_vec(),
        },
    }];
    if let Some(tree) = below {
        entries.push(Entry {
            node: Node::Dir { tree },
            ..dir(b"e")
        });
    }
    let mut tree = Tree { entries };
    let mut root = ObjectId::default();
    for level in 0..=depth {
        let bytes = tree.encode().unwrap();
        root = r.object_id(&bytes);
        saver.save(&reader, root, Kind::Tree, bytes).unwrap();
        if level < depth {
            tree = Tree {
                entries: vec![Entry {
                    node: Node::Dir { tree: root },
                    ..dir(b"d")
                }],
            };
        }
    }
    saver.finish().unwrap();
    let snap = Snapshot {
        time_ns: 1,
        space: space.into(),
        host: "h".into(),
        user: "u".into(),
        source: "/".into(),
        tags: vec![],
        parents: vec![],
        root,
        summary: Summary::default(),
        origin: String::new(),
    };
    r.save_snapshot(&snap).unwrap();
    root
}

/// Issue 14: two pushed snapshots 5,000 folders deep overflowed the stack of the receiving
/// daemon's merge, and every later sync of the space crashed it again. Trees deeper than
/// `MAX_TREE_DEPTH` (1024) are now refused as they arrive, also when they are deep only
/// together with trees the receiver already has; the daemon stays up and says what it refused.
#[test]
fn deep_trees_pushed_by_a_peer_are_refused_and_the_daemon_stays_up() {
    let spaces =
        r#"{ docs = ["pull", "push"], photos = ["pull", "push"], notes = ["pull", "push"] }"#;
    let (mut a, mut b) = pair(spaces, spaces);
    // A hostile node answers as many requests as the receiver makes (one per tree level).
    a.env
        .push(("PUCE_TEST_FAULT".into(), "no-request-limit".into()));
    b.start();
    let t0 = std::time::Instant::now();
    // Two heads differing at the bottom: their merge would walk all 5,000 levels.
    forge_deep(&a.repo, "docs", 5000, b"a", None);
    forge_deep(&a.repo, "docs", 5000, b"b", None);
    println!("forged after {:?}", t0.elapsed());
    let err = a.sync_fails("grenoble", &["--space", "docs", "--push"]);
    println!(
        "pushed after {:?}; the pushing side was told: {err}",
        t0.elapsed()
    );
    wait_for("grenoble to log the refusal or to die", || {
        b.log().contains("deeper than 1024 levels") || !b.is_running()
    });
    assert!(b.is_running(), "the daemon died:\n{}", b.log());
    let log = b.log();
    let line = log
        .lines()
        .find(|l| l.contains("deeper than 1024 levels"))
        .unwrap();
    println!("grenoble logged: {line}");
    assert!(
        line.contains("peer 'lyon'") && line.contains("space 'docs'"),
        "{line}"
    );
    assert!(
        b.snapshot_ids().is_empty(),
        "a refused snapshot became visible"
    );

    // 600 levels are fine; 600 more on top of them, ending in the tree already sent, are not.
    let first = forge_deep(&a.repo, "photos", 600, b"a", None);
    a.sync("grenoble", &["--space", "photos", "--push"]);
    assert_eq!(b.snapshot_ids().len(), 1);
    forge_deep(&a.repo, "photos", 600, b"b", Some(first));
    a.sync_fails("grenoble", &["--space", "photos", "--push"]);
    wait_for("grenoble to log the second refusal or to die", || {
        b.log().matches("deeper than 1024 levels").count() >= 2 || !b.is_running()
    });
    assert!(b.is_running(), "the daemon died:\n{}", b.log());
    assert_eq!(
        b.snapshot_ids().len(),
        1,
        "a refused snapshot became visible"
    );
    println!("second refusal after {:?}", t0.elapsed());

    // An honest sync still works.
    let src = a.repo.dir.path().join("src");
    puce_tests::make_tree(&src, 3);
    a.snapshot(&src, "notes");
    a.sync("grenoble", &["--space", "notes", "--push"]);
    assert_eq!(
        puce_tests::manifest(&b.restored("notes@latest")),
        puce_tests::manifest(&src)
    );
    assert!(b.is_running());
    b.stop();
}

/// Issue 14: strings a peer sends (space names, host, tags, file names) were taken as they came
/// and printed raw. A record with a control character in its host is now refused on receipt;
/// names from snapshots are printed with control characters escaped.
#[test]
fn hostile_strings_are_refused_from_peers_and_printed_escaped() {
    let spaces = r#"{ docs = ["pull", "push"] }"#;
    let (a, mut b) = pair(spaces, spaces);
    // A file name that would clear the terminal.
    let id = plant(&a.repo, vec![file(b"a\x1b[2Jb", ObjectId::default())], None);
    let ls = a.ok(&["ls", &id]);
    assert!(!ls.contains('\x1b'), "{ls:?}");
    assert!(ls.contains("a\\u{1b}[2Jb"), "{ls:?}");
    // A record whose host would rewrite the terminal's title, pushed to b.
    let r = puce_tests::open_repo(&a.repo.path(), Some(a.repo.dir.path().join("cache")));
    let root = r.snapshots().unwrap()[0].snapshot.root;
    r.save_snapshot(&Snapshot {
        time_ns: 2,
        space: "docs".into(),
        host: "evil\x1b]0;pwned\x07".into(),
        user: "u".into(),
        source: "/".into(),
        tags: vec![],
        parents: vec![],
        root,
        summary: Summary::default(),
        origin: String::new(),
    })
    .unwrap();
    let snaps = a.ok(&["snapshots"]);
    assert!(
        !snaps.contains('\x1b') && snaps.contains("evil\\u{1b}]0;pwned\\u{7}"),
        "{snaps:?}"
    );
    b.start();
    let err = a.sync_fails("grenoble", &["--space", "docs", "--push"]);
    println!("the pushing side was told: {err}");
    wait_for("grenoble to log the refusal or to die", || {
        b.log().contains("invalid host") || !b.is_running()
    });
    assert!(b.is_running(), "the daemon died:\n{}", b.log());
    let log = b.log();
    let line = log.lines().find(|l| l.contains("invalid host")).unwrap();
    println!("grenoble logged: {line}");
    assert!(!line.contains('\x1b'), "{line:?}");
    assert!(
        b.snapshot_ids().is_empty(),
        "a refused snapshot became visible"
    );
    b.stop();
}

/// Issue 14: what a pull holds in memory before it commits is bounded (`MAX_PULL_TREE_BYTES`,
/// 512 MiB, lowered here to 64 KiB by a debug-build hook): a peer whose new snapshots hold more
/// directory listings than that is refused with an error saying what to do, nothing becomes
/// visible, and the same pull within the bound then succeeds.
#[test]
fn a_pull_holding_more_directory_listings_than_the_bound_is_refused() {
    let spaces = r#"{ docs = ["pull", "push"] }"#;
    let (mut a, mut b) = pair(spaces, spaces);
    // 200 directories of 20 files with long names: about 400 KiB of listings.
    let src = b.repo.dir.path().join("src");
    for i in 0..200 {
        let d = src.join(format!("directory-{i:04}"));
        fs::create_dir_all(&d).unwrap();
        for j in 0..20 {
            let name = format!("a-rather-long-file-name-to-fill-listings-{j:04}.txt");
            fs::write(d.join(name), format!("{i} {j}")).unwrap();
        }
    }
    b.snapshot(&src, "docs");
    b.start();
    a.env
        .push(("PUCE_TEST_MAX_PULL_TREE_BYTES".into(), "65536".into()));
    let err = a.sync_fails("grenoble", &["--pull"]);
    assert!(
        err.contains("of directory listings") && err.contains("KiB"),
        "{err}"
    );
    assert!(a.snapshot_ids().is_empty(), "a refused snapshot is visible");
    a.env.clear();
    a.sync("grenoble", &["--pull"]);
    assert_eq!(
        puce_tests::manifest(&a.restored("docs@latest")),
        puce_tests::manifest(&src)
    );
    b.stop();
}

/// Issue 18: a peer with push dates the snapshots it sends years ahead, so that they would be
/// the newest of their space and push the real history out of every `keep_*` window of the
/// holder's next `forget`. Retention counts a received snapshot at the earlier of its own time
/// and its arrival, and `node status` flags snapshots dated more than a day after arriving.
#[test]
fn snapshots_dated_ahead_by_a_peer_do_not_push_real_history_out_of_retention() {
    let spaces = r#"{ docs = ["pull", "push"] }"#;
    let (a, mut b) = pair(spaces, spaces);
    let src = a.repo.dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let times = [
        "2024-03-01T02:00:00Z",
        "2024-03-02T02:00:00Z",
        "2024-03-03T02:00:00Z",
        "2030-01-01T00:00:00Z",
        "2030-01-02T00:00:00Z",
    ];
    let mut ids = Vec::new();
    for (i, t) in times.iter().enumerate() {
        std::fs::write(src.join("minutes.txt"), format!("version {i}")).unwrap();
        let v = a.json(&[
            "snapshot",
            src.to_str().unwrap(),
            "--space",
            "docs",
            "--time",
            t,
        ]);
        ids.push(v["id"].as_str().unwrap().to_string());
    }
    b.start();
    a.sync("grenoble", &["--space", "docs", "--push"]);
    b.stop();
    assert_eq!(b.snapshot_ids().len(), 5);

    // Four days: the two forged snapshots arrived today (one day), then the three real days.
    let v = b.json(&["forget", "--keep-daily", "4", "--dry-run"]);
    println!("{v:#}");
    let removed: Vec<&str> = v["removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i.as_str().unwrap())
        .collect();
    for (id, t) in ids.iter().zip(times).take(3) {
        assert!(
            !removed.contains(&id.as_str()),
            "the real snapshot of {t} would be removed"
        );
    }
    for d in v["decisions"].as_array().unwrap() {
        let forged = ids[3..].contains(&d["id"].as_str().unwrap().to_string());
        assert_eq!(d["claimed_time"].is_string(), forged, "{d}");
    }

    let st = b.json(&["node", "status"]);
    let mut flagged: Vec<&str> = st["dated_ahead"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            assert_eq!((&f["space"], &f["from"]), (&json!("docs"), &json!("lyon")));
            f["snapshot"].as_str().unwrap()
        })
        .collect();
    flagged.sort_unstable();
    let mut forged: Vec<&str> = ids[3..].iter().map(String::as_str).collect();
    forged.sort_unstable();
    assert_eq!(flagged, forged);
    let text = b.ok(&["node", "status"]);
    assert!(text.contains("flagged: snapshot"), "{text}");
}

/// Issue 18: a sync that removes a large share of a space (a wrong `rm -rf` on the owner, or
/// an intruder emptying it) is accepted, history keeping the previous state, but flagged in
/// the holder's log and `node status`.
#[test]
fn a_snapshot_removing_most_files_is_accepted_and_flagged() {
    let spaces = r#"{ docs = ["pull", "push"] }"#;
    let (a, mut b) = pair(spaces, spaces);
    let src = a.repo.dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..10 {
        std::fs::write(src.join(format!("file-{i}.txt")), format!("file {i}")).unwrap();
    }
    let full = a.snapshot(&src, "docs");
    // Three files gone: 30 %, not flagged.
    for i in 0..3 {
        std::fs::remove_file(src.join(format!("file-{i}.txt"))).unwrap();
    }
    a.snapshot(&src, "docs");
    b.start();
    a.sync("grenoble", &["--space", "docs", "--push"]);
    for i in 3..7 {
        std::fs::remove_file(src.join(format!("file-{i}.txt"))).unwrap();
    }
    let emptied = a.snapshot(&src, "docs");
    a.sync("grenoble", &["--space", "docs", "--push"]);
    b.stop();
    assert_eq!(b.snapshot_ids().len(), 3, "history kept");
    assert!(
        b.log().contains("flagged as a mass deletion"),
        "{}",
        b.log()
    );
    let st = b.json(&["node", "status"]);
    let flagged = st["mass_deletions"].as_array().unwrap();
    assert_eq!(flagged.len(), 1, "{st}");
    assert_eq!(flagged[0]["snapshot"], json!(emptied));
    assert_eq!(
        (&flagged[0]["files_before"], &flagged[0]["files_after"]),
        (&json!(7), &json!(3))
    );
    assert_eq!(puce_tests::manifest(&b.restored(&full)).len(), 10);
}
