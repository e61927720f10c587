//! Sessions between two nodes in this process over an in-memory link
//! ([`crate::transport::memory`]): real repositories in temporary directories, the real
//! session code on both sides (the pull on one, [`serve`] on the other); only QUIC is left
//! out. `tests/tests/node.rs` and its neighbours run the same over real QUIC between daemons.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use puce_core::format::pack::Kind;
use puce_core::format::snapshot::{Snapshot, Summary};
use puce_core::format::tree::{Entry, Node, Tree};
use puce_core::progress::NoProgress;
use puce_core::repo::InitOptions;
use puce_core::saver::Saver;
use puce_core::snapshot::SnapshotOptions;
use puce_core::{ObjectId, Repo, SnapshotId};
use tempfile::TempDir;

use super::pull::{PullOutcome, pull};
use super::{Conn, Fault, NodeCtx, serve};
use crate::auth::Permissions;
use crate::config::NodeConfig;
use crate::error::{ErrorKind, Result};
use crate::identity::Identity;
use crate::transport::memory;

/// Bound on every pull of these tests, far beyond what they need: a hang fails loudly.
const TIMEOUT: Duration = Duration::from_secs(300);

struct TestNode {
    dir: TempDir,
    repo: Arc<Repo>,
    ctx: Arc<NodeCtx>,
}

/// Two nodes: `lyon`, which pulls, and `grenoble`, which serves; `lyon_grants` is what lyon's
/// node.toml lets grenoble do per space, `grenoble_grants` what grenoble's lets lyon do (TOML
/// inline tables, as in node.toml). `faults`: the test faults of lyon and grenoble.
fn nodes(
    lyon_grants: &str,
    grenoble_grants: &str,
    faults: (Option<Fault>, Option<Fault>),
) -> (TestNode, TestNode) {
    let (li, gi) = (Identity::generate().unwrap(), Identity::generate().unwrap());
    let (lid, gid) = (li.id(), gi.id());
    let lyon = node(
        "lyon",
        li,
        "grenoble",
        &gid.to_string(),
        lyon_grants,
        faults.0,
    );
    let grenoble = node(
        "grenoble",
        gi,
        "lyon",
        &lid.to_string(),
        grenoble_grants,
        faults.1,
    );
    (lyon, grenoble)
}

fn node(
    name: &str,
    identity: Identity,
    peer: &str,
    peer_id: &str,
    grants: &str,
    fault: Option<Fault>,
) -> TestNode {
    node_with(
        name,
        identity,
        (peer, peer_id),
        grants,
        fault,
        &InitOptions::default(),
    )
}

/// As [`node`], with the repository made with `opts`; `grants` may be followed by more lines
/// of the peer's section.
fn node_with(
    name: &str,
    identity: Identity,
    (peer, peer_id): (&str, &str),
    grants: &str,
    fault: Option<Fault>,
    opts: &InitOptions,
) -> TestNode {
    let dir = TempDir::new().unwrap();
    let mut opts = opts.clone();
    if opts.key_dir.is_some() {
        opts.key_dir = Some(dir.path().join("keys"));
        opts.open.key_dir = opts.key_dir.clone();
        opts.open.key_files = Vec::new();
    }
    let repo = Arc::new(Repo::init(&dir.path().join("repo"), &opts).unwrap());
    let config = NodeConfig::parse(&format!(
        "[node]\nname = \"{name}\"\nlisten = \"127.0.0.1:0\"\n\n[[peer]]\nname = \"{peer}\"\n\
         id = \"{peer_id}\"\nspaces = {grants}\n"
    ))
    .unwrap();
    let mut ctx = NodeCtx::new(repo.clone(), config, dir.path().join("node"), identity);
    ctx.fault = fault;
    TestNode {
        dir,
        repo,
        ctx: Arc::new(ctx),
    }
}

/// Connect `from` to `to` in memory, each serving the other's requests, and say `Hello`: the
/// connection at `from`.
async fn connect(from: &TestNode, to: &TestNode) -> Arc<Conn> {
    let (dialled, accepted) = memory::pair();
    let end = |n: &TestNode, other: &TestNode, link: memory::MemoryLink| {
        let perms = Permissions::of(&n.ctx.config, &other.ctx.identity.id()).unwrap();
        Conn::over(n.ctx.clone(), Box::new(link), perms, Arc::new(NoProgress))
    };
    let here = end(from, to, dialled);
    let there = end(to, from, accepted);
    tokio::spawn(serve(there));
    tokio::spawn(serve(here.clone()));
    tokio::time::timeout(TIMEOUT, here.hello())
        .await
        .expect("no Welcome")
        .unwrap();
    here
}

/// Pull `spaces` from `from` into `into` over a new in-memory connection, then close it.
async fn pull_from(into: &TestNode, from: &TestNode, spaces: &[&str]) -> Result<PullOutcome> {
    let conn = connect(into, from).await;
    let spaces: Vec<String> = spaces.iter().map(|s| s.to_string()).collect();
    let r = tokio::time::timeout(TIMEOUT, pull(&conn, &spaces))
        .await
        .expect("the pull did not end");
    conn.done();
    r
}

/// Some bytes, different for each `seed`.
fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Every file (its bytes) and symlink (its target) under `root` of `repo`, by path.
fn contents(repo: &Repo, root: ObjectId) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![(String::new(), root)];
    while let Some((dir, id)) = stack.pop() {
        for e in repo.read_tree(&id).unwrap().entries {
            let path = format!("{dir}/{}", String::from_utf8_lossy(&e.name));
            match e.node {
                Node::Dir { tree } => stack.push((path, tree)),
                Node::File { chunks, .. } => {
                    let mut data = Vec::new();
                    for c in chunks {
                        data.extend(repo.read_object(&c).unwrap());
                    }
                    out.insert(path, data);
                }
                Node::Symlink { target } => {
                    out.insert(path, target);
                }
                other => {
                    out.insert(path, format!("{other:?}").into_bytes());
                }
            }
        }
    }
    out
}

fn ids(repo: &Repo) -> Vec<SnapshotId> {
    let mut v: Vec<SnapshotId> = repo.snapshots().unwrap().iter().map(|s| s.id).collect();
    v.sort();
    v
}

/// Snapshot into `space` of `n` a folder holding `files` (path, bytes); its root tree.
fn snapshot(n: &TestNode, space: &str, files: &BTreeMap<String, Vec<u8>>) -> ObjectId {
    let src = n.dir.path().join("src").join(space);
    for (path, data) in files {
        let p = src.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    }
    let opts = SnapshotOptions {
        space: Some(space.into()),
        threads: 1,
        ..SnapshotOptions::default()
    };
    let out = puce_core::snapshot::snapshot(&n.repo, &src, &opts, &NoProgress).unwrap();
    out.snapshot.root
}

/// Store the trees `build` makes (it calls the given function with each tree's entries, which
/// returns its id) unchecked, as a hostile node would, in one pack: a pack per tree would
/// make a chain of a thousand levels a thousand durable commits.
fn store_trees<T>(
    repo: &Arc<Repo>,
    build: impl FnOnce(&mut dyn FnMut(Vec<Entry>) -> ObjectId) -> T,
) -> T {
    let saver = Saver::new(repo.clone(), 1).unwrap();
    let reader = repo.index().reader().unwrap();
    let out = build(&mut |entries| {
        let bytes = Tree { entries }.encode().unwrap();
        let id = ObjectId::of(&bytes);
        saver.save(&reader, id, Kind::Tree, bytes).unwrap();
        id
    });
    saver.finish().unwrap();
    out
}

fn entry(name: &str, node: Node) -> Entry {
    Entry {
        name: name.as_bytes().to_vec(),
        mode: if matches!(node, Node::Dir { .. }) {
            0o755
        } else {
            0o644
        },
        mtime_ns: 0,
        uid: 0,
        gid: 0,
        node,
        link: None,
    }
}

/// Save a snapshot of `root` in `space`; its id.
fn save_snapshot(repo: &Repo, space: &str, root: ObjectId, time_ns: i64) -> SnapshotId {
    repo.save_snapshot(&Snapshot {
        time_ns,
        space: space.into(),
        host: "h".into(),
        user: "u".into(),
        source: "/".into(),
        tags: vec![],
        parents: vec![],
        root,
        summary: Summary::default(),
        origin: String::new(),
    })
    .unwrap()
}

/// A chain of `depth` folders `d/d/...` ending in a symlink `leaf` and, with `below`, a
/// folder `e` holding that tree, stored in `space`; its root.
fn chain(
    repo: &Arc<Repo>,
    space: &str,
    depth: usize,
    leaf: &str,
    below: Option<ObjectId>,
) -> ObjectId {
    let mut entries = vec![entry(
        leaf,
        Node::Symlink {
            target: b"x".to_vec(),
        },
    )];
    if let Some(tree) = below {
        entries.push(entry("e", Node::Dir { tree }));
    }
    let root = store_trees(repo, |store| {
        let mut root = store(entries);
        for _ in 0..depth {
            root = store(vec![entry("d", Node::Dir { tree: root })]);
        }
        root
    });
    save_snapshot(repo, space, root, 1 + depth as i64);
    root
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_of_a_small_snapshot_ends_with_identical_data() {
    let grants = r#"{ docs = ["pull", "push"] }"#;
    let (lyon, grenoble) = nodes(grants, grants, (None, None));
    let files: BTreeMap<String, Vec<u8>> = [
        ("/a.txt", b"hello".to_vec()),
        ("/sub/big.bin", bytes(3 << 20, 1)),
        ("/sub/deeper/c.txt", bytes(10_000, 2)),
        ("/sub/deeper/same.txt", bytes(10_000, 2)),
    ]
    .into_iter()
    .map(|(p, d)| (p.to_string(), d))
    .collect();
    let root = snapshot(&grenoble, "docs", &files);

    let out = pull_from(&lyon, &grenoble, &["docs"]).await.unwrap();
    let rep = &out.reports[0];
    assert_eq!((rep.space.as_str(), rep.snapshots), ("docs", 1), "{rep:?}");
    assert!(rep.objects >= 5, "{rep:?}");
    assert_eq!(ids(&lyon.repo), ids(&grenoble.repo));
    assert_eq!(contents(&lyon.repo, root), files);
    assert_eq!(contents(&grenoble.repo, root), files);

    // Pulled again: nothing new, nothing fetched.
    let out = pull_from(&lyon, &grenoble, &["docs"]).await.unwrap();
    let rep = &out.reports[0];
    assert_eq!(
        (rep.result.as_str(), rep.objects),
        ("up to date", 0),
        "{rep:?}"
    );
}

/// The presence rule: lyon holds a file in `secret`, which grenoble may not read. A tree
/// grenoble sends that names the file's chunks (which grenoble does not have) must not be
/// completed with lyon's copy: lyon asks for them, grenoble cannot send them, nothing becomes
/// visible.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_tree_naming_data_the_peer_did_not_send_is_refused() {
    let (lyon, grenoble) = nodes(
        r#"{ public = ["push"] }"#,
        r#"{ public = ["pull"] }"#,
        (None, None),
    );
    let secret = bytes(2 << 20, 3);
    snapshot(
        &lyon,
        "secret",
        &BTreeMap::from([("/minutes.odt".to_string(), secret.clone())]),
    );
    let before = ids(&lyon.repo);
    let mut chunks = Vec::new();
    let mut pos = 0;
    for n in puce_core::chunking::chunk_lengths(&secret, &grenoble.repo.config().chunker) {
        chunks.push(ObjectId::of(&secret[pos..pos + n]));
        pos += n;
    }
    let size = secret.len() as u64;
    let root = store_trees(&grenoble.repo, |store| {
        store(vec![entry("guess.odt", Node::File { size, chunks })])
    });
    save_snapshot(&grenoble.repo, "public", root, 1);

    let e = pull_from(&lyon, &grenoble, &["public"]).await.unwrap_err();
    println!("the pull failed: {e:#}");
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e:#}");
    assert_eq!(
        ids(&lyon.repo),
        before,
        "the forged snapshot became visible"
    );
}

/// Trees deeper than `MAX_TREE_DEPTH` are refused, whether the new trees alone are too deep or
/// only together with trees this node already has; the peer is cut off, nothing is visible.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_too_deep_tree_is_refused() {
    let grants = r#"{ docs = ["pull", "push"], photos = ["pull", "push"] }"#;
    // A hostile peer answers as many requests as lyon makes (one per tree level).
    let faults = (Some(Fault::Flood), Some(Fault::NoRequestLimit));
    let (lyon, grenoble) = nodes(grants, grants, faults);
    let limit = puce_core::format::tree::MAX_TREE_DEPTH;
    chain(&grenoble.repo, "docs", limit + 1, "a", None);
    let e = pull_from(&lyon, &grenoble, &["docs"]).await.unwrap_err();
    println!("the pull failed: {e:#}");
    assert_eq!(e.kind(), ErrorKind::BadObject, "{e:#}");
    assert!(e.to_string().contains("deeper than 1024 levels"), "{e:#}");
    assert!(
        ids(&lyon.repo).is_empty(),
        "a refused snapshot became visible"
    );

    // 600 levels that both nodes have (in a space grenoble may read at lyon: present for it)
    // are fine; 600 more on top of them, ending in that tree, are not.
    let first = chain(&lyon.repo, "photos", 600, "a", None);
    assert_eq!(chain(&grenoble.repo, "photos", 600, "a", None), first);
    let before = ids(&lyon.repo);
    pull_from(&lyon, &grenoble, &["photos"]).await.unwrap();
    assert_eq!(ids(&lyon.repo), before);
    chain(&grenoble.repo, "photos", 600, "b", Some(first));
    let e = pull_from(&lyon, &grenoble, &["photos"]).await.unwrap_err();
    println!("the second pull failed: {e:#}");
    assert!(e.to_string().contains("deeper than 1024 levels"), "{e:#}");
    assert_eq!(ids(&lyon.repo), before, "a refused snapshot became visible");
}

/// Revision 4: a peer says which of the snapshots asked about it holds, only for spaces the
/// asker may read; an answer claiming anything not asked is refused; an older peer says nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_checks_answers_only_what_was_asked_and_may_be_read() {
    use super::checks::{Reported, accept, ask};
    use crate::protocol::{self, Checks, GetChecks, Message, SpaceCheck, SpaceIds};
    let (lyon, grenoble) = nodes(
        r#"{ docs = ["push"], secret = ["push"] }"#,
        r#"{ docs = ["pull"], backup = ["push"] }"#,
        (None, None),
    );
    let file = |seed| BTreeMap::from([("/a".to_string(), bytes(1000, seed))]);
    snapshot(&grenoble, "docs", &file(1));
    snapshot(&grenoble, "secret", &file(2));
    let id_in = |space: &str| {
        let all = grenoble.repo.snapshots().unwrap();
        all.iter().find(|s| s.snapshot.space == space).unwrap().id
    };
    let (docs, secret) = (id_in("docs"), id_in("secret"));
    let conn = connect(&lyon, &grenoble).await;
    let out = pull(&conn, &["docs".to_string()]).await.unwrap();
    let Reported::Said { asked, checks } = ask(&conn, &out.peer_spaces).await.unwrap() else {
        panic!("grenoble speaks revision 4");
    };
    assert_eq!(asked, ["docs"]);
    let (space, said) = &checks[0];
    assert_eq!((space.as_str(), &said.held), ("docs", &vec![docs.to_hex()]));
    // grenoble's daemon never checked: no time, no damage.
    assert_eq!((said.checked_ns, said.damaged), (None, false));

    // Asked directly: a snapshot of another space is not held in `docs`; `secret`, which lyon
    // may neither read nor write, is left out; `backup`, which it may write, is answered.
    let req = GetChecks {
        spaces: vec![
            SpaceIds {
                name: "docs".into(),
                ids: vec![secret, docs, docs],
            },
            SpaceIds {
                name: "secret".into(),
                ids: vec![secret],
            },
            SpaceIds {
                name: "backup".into(),
                ids: vec![secret],
            },
        ],
    };
    let mut recv = conn
        .request(&Message::GetChecks(req.clone()))
        .await
        .unwrap();
    let Message::Checks(c) = conn.answer(&mut recv).await.unwrap() else {
        panic!("not a Checks answer");
    };
    assert_eq!(c.spaces.len(), 2, "{c:?}");
    assert_eq!(
        (c.spaces[0].name.as_str(), &c.spaces[0].held),
        ("docs", &vec![docs])
    );
    assert_eq!(
        (c.spaces[1].name.as_str(), c.spaces[1].held.len()),
        ("backup", 0)
    );
    assert!(accept(&conn, &req.spaces, c, 5).is_ok());

    // A hostile answer: a snapshot not asked about, spaces out of order, a time no node has.
    let check = |name: &str, held: Vec<SnapshotId>, checked_ns| SpaceCheck {
        name: name.into(),
        held,
        checked_ns,
        damaged: false,
    };
    for (forged, why) in [
        (
            vec![check(
                "docs",
                vec![SnapshotId(puce_core::Hash([7; 32]))],
                None,
            )],
            "not asked about",
        ),
        (
            vec![check("docs", vec![docs, secret], None)],
            "not asked about or out of order",
        ),
        (
            vec![check("secret", vec![], None), check("docs", vec![], None)],
            "out of order",
        ),
        (
            vec![check("docs", vec![], Some(u64::MAX))],
            "after the year 2262",
        ),
    ] {
        let e = accept(&conn, &req.spaces, Checks { spaces: forged }, 5).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Protocol, "{e:#}");
        assert!(e.to_string().contains(why), "{e:#}");
    }
    // A check time after the question is taken as the question's time.
    let later = Checks {
        spaces: vec![check("docs", vec![docs], Some(10))],
    };
    assert_eq!(
        accept(&conn, &req.spaces, later, 5).unwrap()[0]
            .1
            .checked_ns,
        Some(5)
    );

    // Too many ids in one request: grenoble cuts lyon off.
    let many = GetChecks {
        spaces: vec![SpaceIds {
            name: "docs".into(),
            ids: vec![docs; protocol::MAX_CHECKS_PER_REQUEST + 1],
        }],
    };
    let conn = connect(&lyon, &grenoble).await;
    let mut recv = conn.request(&Message::GetChecks(many)).await.unwrap();
    let e = conn.answer(&mut recv).await.unwrap_err();
    assert!(e.to_string().contains("at most 1024"), "{e:#}");

    // A peer of revision 3 is not asked.
    let (lyon, grenoble) = nodes(
        r#"{ docs = ["push"] }"#,
        r#"{ docs = ["pull"] }"#,
        (None, Some(Fault::Revision3)),
    );
    snapshot(&grenoble, "docs", &file(3));
    let conn = connect(&lyon, &grenoble).await;
    assert_eq!(conn.version(), 3);
    let out = pull(&conn, &["docs".to_string()]).await.unwrap();
    assert_eq!(
        ask(&conn, &out.peer_spaces).await.unwrap(),
        Reported::Unsupported(3)
    );
}

mod blind;
