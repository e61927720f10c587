//! Every walk over trees on hostile, very deep trees: a clean error or a correct result, never
//! a stack overflow (`MAX_TREE_DEPTH`, docs/format.md "Trees").

use std::path::Path;
use std::sync::Arc;

use tempfile::TempDir;

use crate::check::{CheckOptions, check};
use crate::format::pack::Kind;
use crate::format::snapshot::{Snapshot, Summary};
use crate::format::tree::{Entry, MAX_TREE_DEPTH, Node, Tree};
use crate::progress::NoProgress;
use crate::repo::InitOptions;
use crate::saver::Saver;
use crate::snapshot::{RestoreOptions, SnapshotOptions};
use crate::vfs::Resolved;
use crate::{ObjectId, Repo, SnapshotId};

/// Hostile trees are this deep: far beyond what the walks' recursion could survive.
const HOSTILE: usize = 100_000;
/// The stack of the threads the walks run on here: tokio's blocking threads have 2 MiB.
const STACK: usize = 2 << 20;

fn dir_entry(name: &[u8], tree: ObjectId) -> Entry {
    Entry {
        name: name.to_vec(),
        mode: 0o755,
        mtime_ns: 0,
        uid: 0,
        gid: 0,
        link: None,
        node: Node::Dir { tree },
    }
}

/// Store a chain of `depth` directories `d/d/...` whose deepest holds a symlink named `leaf`,
/// and a snapshot of it in space `docs`.
fn forge(repo: &Arc<Repo>, depth: usize, leaf: &[u8]) -> (SnapshotId, ObjectId) {
    let saver = Saver::new(repo.clone(), 1).unwrap();
    let reader = repo.index().reader().unwrap();
    let mut tree = Tree {
        entries: vec![Entry {
            name: leaf.to_vec(),
            mode: 0o777,
            mtime_ns: 0,
            uid: 0,
            gid: 0,
            link: None,
            node: Node::Symlink {
                target: b"x".to_vec(),
            },
        }],
    };
    let mut id = ObjectId::default();
    for level in 0..=depth {
        let bytes = tree.encode().unwrap();
        id = ObjectId::of(&bytes);
        saver.save(&reader, id, Kind::Tree, bytes).unwrap();
        if level < depth {
            tree = Tree {
                entries: vec![dir_entry(b"d", id)],
            };
        }
    }
    saver.finish().unwrap();
    let snap = Snapshot {
        time_ns: 1,
        space: "docs".into(),
        host: "h".into(),
        user: "u".into(),
        source: "/".into(),
        tags: vec![],
        parents: vec![],
        root: id,
        summary: Summary::default(),
        origin: String::new(),
    };
    (repo.save_snapshot(&snap).unwrap(), id)
}

/// Run `f` on a thread with a small stack: an overflow would abort the test binary.
fn small_stack<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .stack_size(STACK)
            .spawn_scoped(s, f)
            .unwrap()
            .join()
            .unwrap()
    })
}

fn assert_too_deep<T: std::fmt::Debug>(what: &str, r: crate::Result<T>) {
    let e = r.expect_err(what);
    assert!(
        e.to_string()
            .contains(&format!("deeper than {MAX_TREE_DEPTH} levels")),
        "{what}: {e:#}"
    );
}

#[test]
fn walks_over_a_100000_deep_tree_end_cleanly_on_a_small_stack() {
    let d = TempDir::new().unwrap();
    let repo = Arc::new(Repo::init(&d.path().join("r"), &InitOptions::default()).unwrap());
    // Two heads of the same space, differing only at the bottom: the merge must go all the way.
    let (_, a) = forge(&repo, HOSTILE, b"a");
    let (_, b) = forge(&repo, HOSTILE, b"b");

    let report = small_stack(|| check(&repo, &CheckOptions::default(), &NoProgress)).unwrap();
    assert!(
        report.problems.iter().any(|p| p.kind == "too_deep"),
        "{:?}",
        report.problems
    );
    assert_eq!(report.affected.len(), 2, "{:?}", report.affected);
    assert_too_deep(
        "report",
        small_stack(|| crate::report::Census::build(&repo).map(|_| ())),
    );
    assert_too_deep(
        "merge",
        small_stack(|| crate::merge::merge_heads(&repo, "docs")),
    );
    assert_too_deep(
        "diff",
        small_stack(|| crate::snapshot::diff(&repo, a, b, &mut |_| Ok(()))),
    );
    assert_too_deep(
        "walk",
        small_stack(|| {
            let reader = repo.index().reader()?;
            crate::vfs::walk(&repo, &reader, a, b"", &mut |_, _| Ok(()))
        }),
    );
    assert_too_deep(
        "merge3",
        small_stack(|| {
            let saver = Saver::new(repo.clone(), 1)?;
            crate::merge::merge3(&repo, &saver, None, a, b, "n", 1)
        }),
    );
    let target = d.path().join("out");
    let stats = small_stack(|| {
        crate::snapshot::restore(
            &repo,
            &Resolved::Root(a),
            &target,
            &RestoreOptions::default(),
            &NoProgress,
        )
    });
    let msgs = match stats {
        Ok(s) => s.messages.join("\n"),
        Err(e) => format!("{e:#}"),
    };
    assert!(msgs.contains("deeper than"), "{msgs}");
    // gc's and heal's walks are iterative: they finish.
    small_stack(|| crate::gc::gc(&repo, &crate::gc::GcOptions::default(), &NoProgress)).unwrap();
}

#[test]
fn trees_at_the_limit_are_walked_and_one_level_more_is_refused() {
    let d = TempDir::new().unwrap();
    let repo = Arc::new(Repo::init(&d.path().join("r"), &InitOptions::default()).unwrap());
    let (_, ok) = forge(&repo, MAX_TREE_DEPTH, b"a");
    let reader = repo.index().reader().unwrap();
    let mut n = 0;
    small_stack(|| {
        crate::vfs::walk(&repo, &reader, ok, b"", &mut |_, _| {
            n += 1;
            Ok(())
        })
    })
    .unwrap();
    assert_eq!(n, MAX_TREE_DEPTH + 1);
    let report = small_stack(|| check(&repo, &CheckOptions::default(), &NoProgress)).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    let (_, deep) = forge(&repo, MAX_TREE_DEPTH + 1, b"a");
    let reader = repo.index().reader().unwrap();
    assert_too_deep(
        "walk",
        crate::vfs::walk(&repo, &reader, deep, b"", &mut |_, _| Ok(())),
    );
}

/// Make `depth` nested folders `d/d/...` below `root` (relative steps: no path limit).
fn nest(root: &Path, depth: usize) {
    let mut cur = std::fs::File::open(root).unwrap();
    for _ in 0..depth {
        rustix::fs::mkdirat(&cur, "d", rustix::fs::Mode::from_raw_mode(0o755)).unwrap();
        let next = rustix::fs::openat(
            &cur,
            "d",
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY,
            rustix::fs::Mode::empty(),
        )
        .unwrap();
        cur = std::fs::File::from(next);
    }
}

#[test]
fn a_folder_deeper_than_the_limit_is_refused_when_a_snapshot_is_taken() {
    let d = TempDir::new().unwrap();
    let repo = Arc::new(Repo::init(&d.path().join("r"), &InitOptions::default()).unwrap());
    let opts = SnapshotOptions {
        space: Some("docs".into()),
        threads: 1,
        ..SnapshotOptions::default()
    };
    let src = d.path().join("at-limit");
    std::fs::create_dir(&src).unwrap();
    nest(&src, MAX_TREE_DEPTH);
    crate::snapshot::snapshot(&repo, &src, &opts, &NoProgress).unwrap();
    let src = d.path().join("deeper");
    std::fs::create_dir(&src).unwrap();
    nest(&src, MAX_TREE_DEPTH + 1);
    let e = crate::snapshot::snapshot(&repo, &src, &opts, &NoProgress).unwrap_err();
    let msg = format!("{e:#}");
    assert!(
        msg.contains(&format!("more than {MAX_TREE_DEPTH} folders deep")),
        "{msg}"
    );
}
