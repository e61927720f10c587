//! The presence rule, end to end (issue 14, item 1): a peer cannot learn what this node holds
//! in spaces it may not read, by pushing candidate files or forged trees to a real daemon.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::Path;
use std::sync::Arc;

use puce_core::format::pack::Kind;
use puce_core::format::snapshot::Snapshot;
use puce_core::format::tree::{Entry, Node, Tree};
use puce_core::saver::Saver;
use puce_core::{ObjectId, Repo};
use puce_tests::node::TestNode;
use puce_tests::{manifest, random_bytes};

const SIZE: usize = 3_000_000;

fn u(v: &serde_json::Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or_else(|| panic!("no {k} in {v}"))
}

/// `lyon` holds a file in space `secret`; `grenoble` may only push `public` into it.
fn victim_and_prober() -> (TestNode, TestNode, Vec<u8>) {
    let mut lyon = TestNode::new("lyon");
    let mut grenoble = TestNode::new("grenoble");
    lyon.add_peer(&grenoble, r#"{ public = ["push"] }"#);
    grenoble.add_peer(&lyon, r#"{ public = ["pull"] }"#);
    let secret = lyon.repo.dir.path().join("secret");
    fs::create_dir_all(&secret).unwrap();
    let file = random_bytes(SIZE, 14);
    fs::write(secret.join("minutes.odt"), &file).unwrap();
    lyon.snapshot(&secret, "secret");
    lyon.start();
    (lyon, grenoble, file)
}

#[test]
fn pushing_a_file_held_only_in_an_unreadable_space_sends_all_its_bytes() {
    let (lyon, grenoble, file) = victim_and_prober();
    // The prober snapshots the candidate file into the space it may push, and pushes.
    let src = grenoble.repo.dir.path().join("public");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("guess.odt"), &file).unwrap();
    fs::write(src.join("note.txt"), b"hello").unwrap();
    grenoble.snapshot(&src, "public");
    let r = grenoble.sync("lyon", &["--push"]);
    // Every byte of the file crossed: what lyon holds in `secret` was not revealed by not
    // asking for it (before the fix: 1 object, a few hundred bytes).
    assert!(
        u(&r, "sent_bytes") >= SIZE as u64,
        "the prober sent only {} bytes: lyon revealed it holds the file\n{r}",
        u(&r, "sent_bytes")
    );
    assert_eq!(manifest(&lyon.restored("public@latest")), manifest(&src));
    // The next nightly push sends only what is new: what the prober delivered counts as
    // known to it.
    fs::write(src.join("day2.txt"), random_bytes(20_000, 2)).unwrap();
    grenoble.snapshot(&src, "public");
    let r = grenoble.sync("lyon", &["--push"]);
    let sent = u(&r, "sent_bytes");
    assert!(
        (20_000..200_000).contains(&sent),
        "the second push sent {sent} bytes, expected the new file only\n{r}"
    );
    assert_eq!(manifest(&lyon.restored("public@latest")), manifest(&src));
    // The receipts record who delivered each snapshot.
    let receipts = fs::read_dir(lyon.repo.path().join("receipts"))
        .unwrap()
        .count();
    assert_eq!(receipts, 2);
    lyon.ok(&["check", "--read-data"]);
}

/// The chunk ids of `data` under the repository's chunking parameters.
fn chunk_ids(repo: &Repo, data: &[u8]) -> Vec<ObjectId> {
    let mut ids = Vec::new();
    let mut pos = 0;
    let gear = repo.codec().gear();
    for n in puce_core::chunking::chunk_lengths_with(data, &repo.config().chunker, gear.as_deref())
    {
        ids.push(repo.object_id(&data[pos..pos + n]));
        pos += n;
    }
    ids
}

/// Write into `repo_path` a snapshot of `space` whose tree names `data` by its chunk ids only:
/// the chunks themselves are not stored.
fn forge_snapshot(repo_path: &Path, space: &str, data: &[u8]) {
    let repo = Arc::new(puce_tests::open_repo(repo_path, None));
    let parent = repo.latest(space).unwrap().unwrap();
    let mut tree = repo.read_tree(&parent.snapshot.root).unwrap();
    let chunks = chunk_ids(&repo, data);
    tree.entries.push(Entry {
        name: b"zz-forged.odt".to_vec(),
        mode: 0o644,
        mtime_ns: 0,
        uid: 0,
        gid: 0,
        link: None,
        node: Node::File {
            size: data.len() as u64,
            chunks,
        },
    });
    tree.entries.sort_by(|a, b| a.name.cmp(&b.name));
    let bytes = tree.encode().unwrap();
    Tree::decode(&bytes).unwrap();
    let id = repo.object_id(&bytes);
    let saver = Saver::new(repo.clone(), 1).unwrap();
    let reader = repo.index().reader().unwrap();
    saver.save(&reader, id, Kind::Tree, bytes).unwrap();
    saver.finish().unwrap();
    let mut snap: Snapshot = parent.snapshot.clone();
    snap.root = id;
    snap.parents = vec![parent.id];
    snap.time_ns += 1_000_000_000;
    repo.save_snapshot(&snap).unwrap();
}

#[test]
fn a_forged_tree_naming_data_the_peer_does_not_have_is_refused() {
    let (lyon, grenoble, file) = victim_and_prober();
    let src = grenoble.repo.dir.path().join("public");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("note.txt"), b"hello").unwrap();
    grenoble.snapshot(&src, "public");
    grenoble.sync("lyon", &["--push"]);
    let before = lyon.snapshot_ids();
    // The prober knows the file (so its chunk ids), not lyon's copy: it names them in a tree.
    forge_snapshot(&grenoble.repo.path(), "public", &file);
    let err = grenoble.sync_fails("lyon", &["--push"]);
    assert!(!err.is_empty());
    // Nothing was committed: lyon asked for the chunks, which the prober could not send.
    assert_eq!(lyon.snapshot_ids(), before, "{}", lyon.log());
    assert_eq!(
        fs::read_dir(lyon.restored("public@latest"))
            .unwrap()
            .count(),
        1,
        "only note.txt"
    );
    lyon.ok(&["check", "--read-data"]);
}
