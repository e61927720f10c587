//! The store against a model: random sequences of snapshot (of a small random tree), forget,
//! gc and restore, after each of which every snapshot kept restores to what a plain map of
//! paths to contents says it holds.

use std::path::Path;
use std::sync::Arc;

use proptest::prelude::*;
use tempfile::TempDir;

use crate::gc::{GcOptions, forget, gc};
use crate::progress::NoProgress;
use crate::repo::InitOptions;
use crate::snapshot::snapshot;
use crate::testkit::{Files, check_data, noise, restore_files, snap_opts, write_files};
use crate::{Repo, SnapshotId};

/// One step of a run.
#[derive(Debug, Clone)]
enum Op {
    /// Snapshot a folder holding these files.
    Snapshot(Files),
    /// Forget the kept snapshot at this index (modulo their number).
    Forget(usize),
    /// Collect garbage.
    Gc,
    /// Restore the kept snapshot at this index (modulo their number).
    Restore(usize),
}

/// File contents: small ones, or one of a few larger blobs (several chunks, shared between
/// files and snapshots so that packs end up partly referenced).
fn contents() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => prop::collection::vec(any::<u8>(), 0..64),
        1 => (1u64..4).prop_map(|seed| noise(150_000, seed)),
    ]
}

fn tree() -> impl Strategy<Value = Files> {
    let path = prop::sample::select(vec!["a", "b.txt", "d/c", "d/e/f", "g/h"]);
    prop::collection::btree_map(path.prop_map(String::from), contents(), 0..4)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => tree().prop_map(Op::Snapshot),
        1 => any::<usize>().prop_map(Op::Forget),
        1 => Just(Op::Gc),
        1 => any::<usize>().prop_map(Op::Restore),
    ]
}

/// Run `ops` on a new repository in `dir`, checking the model after each.
fn run(dir: &Path, ops: &[Op]) -> Result<(), TestCaseError> {
    let repo = Arc::new(Repo::init(&dir.join("repo"), &InitOptions::default()).unwrap());
    let (src, out) = (dir.join("src"), dir.join("out"));
    let mut model: Vec<(SnapshotId, Files)> = Vec::new();
    for (step, op) in ops.iter().enumerate() {
        match op {
            Op::Snapshot(files) => {
                write_files(&src, files);
                let opts = snap_opts("docs", step as i64 + 1);
                let s = snapshot(&repo, &src, &opts, &NoProgress).unwrap();
                model.push((s.id, files.clone()));
            }
            Op::Forget(i) if !model.is_empty() => {
                let (id, _) = model.remove(i % model.len());
                forget(&repo, &[id]).unwrap();
            }
            Op::Gc => {
                gc(&repo, &GcOptions::default(), &NoProgress).unwrap();
            }
            Op::Restore(i) if !model.is_empty() => {
                let (id, files) = &model[i % model.len()];
                prop_assert_eq!(&restore_files(&repo, id, &out), files, "step {}", step);
            }
            Op::Forget(_) | Op::Restore(_) => {}
        }
        let listed: Vec<SnapshotId> = repo.snapshots().unwrap().iter().map(|s| s.id).collect();
        let kept: Vec<SnapshotId> = model.iter().map(|(id, _)| *id).collect();
        prop_assert_eq!(listed.len(), kept.len(), "step {}: {:?}", step, op);
        for (id, files) in &model {
            prop_assert!(listed.contains(id), "step {}: {} is not listed", step, id);
            let restored = restore_files(&repo, id, &out);
            prop_assert_eq!(&restored, files, "step {}: {:?}", step, op);
        }
    }
    let c = check_data(&repo);
    prop_assert!(c.problems.is_empty(), "{:?}", c.problems);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Whatever the sequence, every snapshot kept restores to what was snapshotted.
    #[test]
    fn kept_snapshots_always_restore_to_the_model(ops in prop::collection::vec(op(), 1..10)) {
        let dir = TempDir::new().unwrap();
        run(dir.path(), &ops)?;
    }
}
