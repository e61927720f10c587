//! Faults: random bit flips and truncations in every kind of repository file, and a full disk.
//! Every fault must be detected or harmless; no command may ever return wrong bytes or panic.
//!
//! `PUCE_CORRUPT_TRIALS` sets the number of corruption trials (default 40; the full run in
//! docs/reliability.md uses 400).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use puce_tests::{Manifest, Rng, TestRepo, make_tree, manifest, random_bytes};

fn files_under(p: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = fs::read_dir(p) {
        for e in rd {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                out.extend(files_under(&e.path()));
            } else {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

fn copy_dir(from: &Path, to: &Path) {
    let _ = fs::remove_dir_all(to);
    assert!(
        Command::new("cp")
            .arg("-a")
            .arg(from)
            .arg(to)
            .status()
            .unwrap()
            .success()
    );
}

/// A repository with three snapshots of a varied folder, and the expected content of each.
fn sample_repo(repo: &TestRepo) -> HashMap<String, Manifest> {
    let src = repo.dir.path().join("src");
    make_tree(&src, 7);
    let mut expect = HashMap::new();
    for day in 0..3u64 {
        fs::write(src.join("day.bin"), random_bytes(700_000, 50 + day)).unwrap();
        fs::write(
            src.join(format!("notes{day}.txt")),
            "compte rendu\n".repeat(2000),
        )
        .unwrap();
        let id = repo.snapshot(&src, "s");
        expect.insert(id, manifest(&src));
    }
    expect
}

#[derive(Debug, Default)]
struct Tally {
    trials: u64,
    detected_by_check: u64,
    harmless: u64,
    restores_refused: u64,
    restores_identical: u64,
    healed: u64,
}

#[test]
fn random_corruption_is_detected_never_returned() {
    let trials: u64 = std::env::var("PUCE_CORRUPT_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    let mut rng = Rng::new(0xc0ff_ee11);
    let repo = TestRepo::with_init(&["--pack-size", "1"]);
    let expect = sample_repo(&repo);
    let pristine = repo.dir.path().join("pristine");
    copy_dir(&repo.path(), &pristine);
    let mut tally: HashMap<&str, Tally> = HashMap::new();
    for t in 0..trials {
        copy_dir(&pristine, &repo.path());
        // Pick a file class, then a file, then a fault.
        let class = ["pack", "pack", "pack", "snapshot", "config", "index"][rng.below(6) as usize];
        let candidates: Vec<PathBuf> = match class {
            "pack" => files_under(&repo.path().join("packs")),
            "snapshot" => files_under(&repo.path().join("snapshots")),
            "config" => vec![repo.path().join("config")],
            _ => vec![repo.path().join("index.redb")],
        };
        let file = &candidates[rng.below(candidates.len() as u64) as usize];
        let mut data = fs::read(file).unwrap();
        let truncate = rng.below(4) == 0;
        let what = if truncate {
            let keep = rng.below(data.len() as u64) as usize;
            data.truncate(keep);
            format!("truncated {} to {keep} bytes", file.display())
        } else {
            let pos = rng.below(data.len() as u64) as usize;
            data[pos] ^= 1 << rng.below(8);
            format!("flipped a bit at {pos} of {}", file.display())
        };
        fs::write(file, &data).unwrap();
        let tl = tally.entry(class).or_default();
        tl.trials += 1;

        let check = repo.run(&["--json", "check", "--read-data"]);
        let stderr = String::from_utf8_lossy(&check.stderr);
        assert!(
            !stderr.contains("panicked"),
            "trial {t}: check panicked after {what}:\n{stderr}"
        );
        let detected = !check.status.success();
        if detected {
            tl.detected_by_check += 1;
            assert!(
                stderr.contains("error:") || !check.stdout.is_empty(),
                "trial {t}: check failed without saying why ({what})"
            );
        }
        // Packs and snapshot records are fully covered: any damage to them must be found.
        if class == "pack" || class == "snapshot" || class == "config" {
            assert!(detected, "trial {t}: check --read-data missed: {what}");
        }
        // A damaged config is healed from the index's copy as soon as the repository is
        // opened: check says so, the file is back byte for byte, and the next check is clean.
        if class == "config" {
            assert!(
                String::from_utf8_lossy(&check.stdout).contains("config_healed"),
                "trial {t}: check did not report the config it restored ({what}):\n{}",
                String::from_utf8_lossy(&check.stdout)
            );
            assert_eq!(
                fs::read(file).unwrap(),
                fs::read(pristine.join("config")).unwrap(),
                "trial {t}: the config was not restored after {what}"
            );
            repo.ok(&["check", "--read-data"]);
            tl.healed += 1;
        }
        // Whatever the fault, a restore either refuses or gives exactly the right bytes.
        let mut refused = false;
        for (id, m) in &expect {
            let out = repo.dir.path().join("out");
            let _ = fs::remove_dir_all(&out);
            let r = repo.run(&["restore", id, out.to_str().unwrap()]);
            let e = String::from_utf8_lossy(&r.stderr);
            assert!(
                !e.contains("panicked"),
                "trial {t}: restore panicked after {what}:\n{e}"
            );
            if r.status.success() {
                assert_eq!(
                    &manifest(&out),
                    m,
                    "trial {t}: restore returned wrong bytes after {what}"
                );
                tl.restores_identical += 1;
            } else {
                refused = true;
                tl.restores_refused += 1;
            }
        }
        if !detected && !refused {
            tl.harmless += 1;
        }
        if class == "index" && (detected || refused) {
            // The cure for a damaged index: rebuild it from the packs.
            let _ = fs::remove_file(repo.path().join("index.redb"));
            repo.ok(&["repair", "index"]);
            repo.ok(&["check", "--read-data"]);
        }
    }
    let mut classes: Vec<_> = tally.into_iter().collect();
    classes.sort_by_key(|(k, _)| *k);
    for (k, v) in classes {
        eprintln!("corruption {k}: {v:?}");
    }
}

#[test]
fn full_disk_gives_a_clear_error_and_loses_nothing() {
    if puce_tests::require(puce_tests::Need::Tmpfs).is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("small");
    fs::create_dir_all(&mnt).unwrap();
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=24m", "tmpfs"])
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(ok.success(), "mount tmpfs");
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _guard = Unmount(mnt.clone());
    let repo_path = mnt.join("repo");
    let cache = dir.path().join("cache");
    let puce = |args: &[&str]| {
        Command::new(puce_tests::puce_bin())
            .env("PUCE_REPO", &repo_path)
            .env("XDG_CACHE_HOME", &cache)
            .env("XDG_CONFIG_HOME", dir.path().join("config"))
            .args(args)
            .output()
            .unwrap()
    };
    assert!(puce(&["init", "-q", "--pack-size", "1"]).status.success());
    let src = dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    let mut expect: HashMap<String, Manifest> = HashMap::new();
    let mut full = None;
    for round in 0..20u64 {
        // Each night the folder's content is new: every snapshot holds 4 MB of its own.
        fs::write(src.join("current.bin"), random_bytes(4_000_000, round)).unwrap();
        let out = puce(&["--json", "snapshot", src.to_str().unwrap(), "--space", "s"]);
        if out.status.success() {
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            expect.insert(v["id"].as_str().unwrap().to_string(), manifest(&src));
        } else {
            full = Some(String::from_utf8_lossy(&out.stderr).into_owned());
            break;
        }
    }
    let err = full.expect("the 24 MiB disk never filled");
    assert!(err.contains("disk is full"), "unclear error: {err}");
    assert!(!err.contains("panicked"));
    assert!(!expect.is_empty());
    // Nothing committed is damaged.
    let check = puce(&["check", "--read-data"]);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    for (id, m) in &expect {
        let out = dir.path().join(format!("out-{id}"));
        let r = puce(&["restore", id, out.to_str().unwrap()]);
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
        assert_eq!(&manifest(&out), m);
    }
    // Free space (forget the oldest snapshots, gc) and the repository works again.
    let f = puce(&["forget", "--keep-last", "1", "--prune"]);
    assert!(f.status.success(), "{}", String::from_utf8_lossy(&f.stderr));
    for p in fs::read_dir(&src).unwrap() {
        fs::remove_file(p.unwrap().path()).unwrap();
    }
    fs::write(src.join("after.bin"), random_bytes(1_000_000, 999)).unwrap();
    let out = puce(&["snapshot", src.to_str().unwrap(), "--space", "s"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(puce(&["check", "--read-data"]).status.success());
}

#[test]
fn sampled_check_rotates_over_all_packs() {
    let repo = TestRepo::with_init(&["--pack-size", "1"]);
    sample_repo(&repo);
    let packs = files_under(&repo.path().join("packs")).len() as u64;
    assert!(packs >= 3);
    let mut read = 0;
    let mut runs = 0;
    loop {
        let v = repo.json(&["check", "--read-data", "--sample", "25%"]);
        read += v["packs_read"].as_u64().unwrap();
        runs += 1;
        if v["sample_position"].as_f64().unwrap() >= 1.0 {
            break;
        }
        assert!(runs < 10);
    }
    assert_eq!(read, packs, "one rotation reads every pack once");
    // A damaged pack is found by the sampled check within one rotation.
    let victim = &files_under(&repo.path().join("packs"))[1];
    let mut d = fs::read(victim).unwrap();
    let n = d.len() / 2;
    d[n] ^= 0x10;
    fs::write(victim, d).unwrap();
    let mut found = false;
    for _ in 0..runs {
        if !repo
            .run(&["check", "--read-data", "--sample", "25%"])
            .status
            .success()
        {
            found = true;
            break;
        }
    }
    assert!(found, "the rotation never reached the damaged pack");
}
