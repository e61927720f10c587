//! Healing from peers, end to end: a real daemon on loopback serves a peer whose repository
//! was damaged on disk (bits flipped, packs cut short or deleted); `puce repair --from PEER`
//! or the peer's own daemon (a scheduled check) brings every byte back, or says exactly what
//! could not be healed and which files it belongs to.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::PathBuf;
use std::process::Output;

use puce_tests::node::{
    TestNode, damage_object, files_and_chunks, flip_random_bits, pack_files, truncate_file,
    wait_for,
};
use puce_tests::{make_tree, manifest, random_bytes};

/// `a` (lyon) lets `b` (grenoble) read `docs`; `b` lets `a` write it (so `b` can pull).
fn pair() -> (TestNode, TestNode) {
    puce_tests::node::pair(r#"{ docs = ["pull"] }"#, r#"{ docs = ["push"] }"#)
}

fn json_of(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}):\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// `puce --json check --read-data`: (exit code, report).
fn check(node: &TestNode) -> (i32, serde_json::Value) {
    let out = node.run(&["--json", "check", "--read-data"]);
    (out.status.code().unwrap(), json_of(&out))
}

/// `puce --json repair --from PEER`: (exit code, report, stderr).
fn repair(node: &TestNode, peer: &str) -> (i32, serde_json::Value, String) {
    let out = node.run(&["--json", "repair", "--from", peer]);
    (
        out.status.code().unwrap(),
        json_of(&out),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Pack files of `node`, smallest first.
fn packs_by_size(node: &TestNode) -> Vec<PathBuf> {
    let mut p = pack_files(&node.repo.path());
    p.sort_by_key(|p| (fs::metadata(p).unwrap().len(), p.clone()));
    p
}

/// Three versions of a folder on `a`, each pulled by `b` (so `b` has packs of several syncs).
fn three_versions(a: &TestNode, b: &TestNode) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    for v in 0..3u64 {
        let src = a.repo.dir.path().join(format!("src{v}"));
        make_tree(&src, 10 + v);
        fs::write(src.join(format!("v{v}.bin")), random_bytes(700_000, 50 + v)).unwrap();
        let id = a.snapshot(&src, "docs");
        b.sync("lyon", &["--pull"]);
        out.push((id, src));
    }
    out
}

#[test]
fn flipped_truncated_and_deleted_packs_heal_from_a_peer() {
    let (mut a, b) = pair();
    a.start();
    let versions = three_versions(&a, &b);
    b.ok(&["check", "--read-data"]);
    let packs = packs_by_size(&b);
    assert!(packs.len() >= 4, "{packs:?}");
    // The smallest pack holds trees (each pull stores its trees apart): delete it. Cut the
    // largest short; flip random bits in another.
    let deleted = packs[0].clone();
    let truncated = packs[packs.len() - 1].clone();
    let flipped = packs[packs.len() - 2].clone();
    fs::remove_file(&deleted).unwrap();
    truncate_file(&truncated, 0.6);
    // And a snapshot record.
    let record = b.repo.path().join("snapshots").join(&versions[0].0);
    flip_random_bits(&record, 1, 78);
    let at = flip_random_bits(&flipped, 8, 77);
    eprintln!("flipped bits at {at:?} of {}", flipped.display());

    // The damage is seen, with the snapshots and files it hits.
    let (code, c) = check(&b);
    assert_eq!(code, 1, "{c}");
    let kinds: Vec<&str> = c["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"missing_pack"), "{kinds:?}");
    assert!(kinds.contains(&"corrupt_pack"), "{kinds:?}");
    let affected = c["affected"].as_array().unwrap();
    assert!(!affected.is_empty(), "{c}");
    assert!(
        affected
            .iter()
            .all(|s| !s["paths"].as_array().unwrap().is_empty()),
        "{c}"
    );

    // Healed from a.
    let (code, r, err) = repair(&b, "lyon");
    assert_eq!(code, 0, "{r}\n{err}");
    puce_tests::golden::assert_json_schema("repair-from", &r);
    let h = &r["heal"];
    let healed = h["healed"].as_array().unwrap().len();
    let trees = h["healed"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["kind"] == "tree")
        .count();
    eprintln!(
        "healed {healed} objects ({trees} trees) from lyon; {} good objects rewritten; {} packs \
         retired; {} packs written",
        h["objects_rewritten"], h["packs_retired"], h["packs_written"]
    );
    assert!(healed > 0 && trees > 0, "{r}");
    assert_eq!(h["lost"].as_array().unwrap().len(), 0, "{r}");
    assert_eq!(h["sources"][0]["name"], "lyon");
    assert_eq!(h["sources"][0]["objects"].as_u64().unwrap(), healed as u64);
    assert_eq!(h["packs_retired"], 3, "{r}");
    assert_eq!(
        h["snapshots_healed"],
        serde_json::json!([versions[0].0]),
        "{r}"
    );
    // The damaged files are gone: nothing references damaged bytes any more.
    for p in [&truncated, &flipped] {
        assert!(!p.exists(), "{} still there", p.display());
    }
    let (code, c) = check(&b);
    assert_eq!(code, 0, "{c}");
    for (id, src) in &versions {
        assert_eq!(manifest(&b.restored(&id[..12])), manifest(src), "{id}");
    }
    // Nothing left to do.
    let out = b.run(&["repair", "--from", "lyon"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("nothing to repair"));
}

#[test]
fn an_object_no_peer_has_is_reported_with_its_file_and_nothing_else_is_lost() {
    let (mut a, b) = pair();
    a.start();
    let src = a.repo.dir.path().join("src");
    make_tree(&src, 30);
    let from_a = a.snapshot(&src, "docs");
    b.sync("lyon", &["--pull"]);
    // A file only b has, in a snapshot taken on b.
    let bsrc = b.repo.dir.path().join("bsrc");
    make_tree(&bsrc, 30);
    fs::write(bsrc.join("only-here.txt"), random_bytes(20_000, 31)).unwrap();
    b.snapshot(&bsrc, "docs");
    let files = files_and_chunks(&b.repo.path(), "docs@latest");
    let only = &files.iter().find(|(p, _)| p == "only-here.txt").unwrap().1[0];
    damage_object(&b.repo.path(), only);
    // Some shared data is damaged too.
    let shared = &files.iter().find(|(p, _)| p == "docs/a.bin").unwrap().1;
    damage_object(&b.repo.path(), &shared[0]);

    let (code, r, err) = repair(&b, "lyon");
    assert_eq!(code, 1, "{r}\n{err}");
    let h = &r["heal"];
    let lost = h["lost"].as_array().unwrap();
    eprintln!(
        "healed {} objects, lost {}, rewrote {}",
        h["healed"].as_array().unwrap().len(),
        lost.len(),
        h["objects_rewritten"]
    );
    assert_eq!(lost.len(), 1, "{r}");
    assert_eq!(lost[0]["id"], only.to_hex());
    assert_eq!(lost[0]["path"], "only-here.txt");
    assert_eq!(lost[0]["space"], "docs");
    assert_eq!(h["healed"].as_array().unwrap().len(), 1, "{r}");
    assert_eq!(h["healed"][0]["id"], shared[0].to_hex());
    // The snapshot still damaged, and only that file in it.
    let aff = h["affected"].as_array().unwrap();
    assert_eq!(aff.len(), 1, "{r}");
    assert_eq!(aff[0]["paths"], serde_json::json!(["only-here.txt"]));
    assert!(err.contains("could not be healed"), "{err}");
    // The text output names the file too.
    let out = b.run(&["repair", "--from", "lyon"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("of 'only-here.txt'"), "{text}");
    // check agrees: exactly that file is damaged; everything else restores identical.
    let (code, c) = check(&b);
    assert_eq!(code, 1);
    assert_eq!(
        c["affected"][0]["paths"],
        serde_json::json!(["only-here.txt"])
    );
    assert_eq!(manifest(&b.restored(&from_a[..12])), manifest(&src));
    // (b's snapshot holds the same files plus only-here.txt: check, which reads every byte,
    // finds nothing else damaged.)
}

#[test]
fn the_daemon_heals_on_its_own_after_a_scheduled_check() {
    let (mut a, mut b) = pair();
    a.start();
    let src = a.repo.dir.path().join("src");
    make_tree(&src, 40);
    let id = a.snapshot(&src, "docs");
    b.sync("lyon", &["--pull"]);
    let packs = packs_by_size(&b);
    let big = packs.last().unwrap();
    flip_random_bits(big, 6, 41);
    b.extra = "[check]\ninterval = \"1h\"\nsample = \"100%\"\nrepair = true\n".into();
    b.write_config();
    b.start();
    wait_for("b's daemon to check and heal", || {
        b.log().contains("heal: ")
    });
    let log = b.log();
    assert!(log.contains("problems found"), "{log}");
    assert!(log.contains("from peer 'lyon'"), "{log}");
    assert!(log.contains(", 0 lost"), "{log}");
    b.stop();
    let st: serde_json::Value =
        serde_json::from_slice(&fs::read(b.node_dir().join("state.json")).unwrap()).unwrap();
    eprintln!("daemon check: {}", st["check"]);
    assert!(st["check"]["healed"].as_u64().unwrap() > 0, "{st}");
    assert_eq!(st["check"]["lost"], 0, "{st}");
    let (code, c) = check(&b);
    assert_eq!(code, 0, "{c}");
    assert_eq!(manifest(&b.restored(&id[..12])), manifest(&src));
}

#[test]
fn a_peer_cannot_obtain_objects_of_a_space_it_may_not_read_through_a_repair() {
    let (mut a, b) = pair();
    // a also holds `secret`, which b may not read.
    a.start();
    let docs = a.repo.dir.path().join("docs");
    make_tree(&docs, 50);
    a.snapshot(&docs, "docs");
    let secret = a.repo.dir.path().join("secret");
    make_tree(&secret, 51);
    a.snapshot(&secret, "secret");
    b.sync("lyon", &["--pull"]);
    // b happens to hold the same secret content (same chunks), then loses it.
    let bsecret = b.repo.dir.path().join("secret");
    make_tree(&bsecret, 51);
    b.snapshot(&bsecret, "secret");
    // Only chunks of the secret space alone: with the key's cut points, a chunk can also be in
    // docs (same bytes), and lyon may give that one back.
    let in_docs: std::collections::HashSet<puce_core::ObjectId> =
        files_and_chunks(&b.repo.path(), "docs@latest")
            .into_iter()
            .flat_map(|(_, c)| c)
            .collect();
    let secret_chunks: Vec<puce_core::ObjectId> = files_and_chunks(&b.repo.path(), "secret@latest")
        .into_iter()
        .filter(|(p, _)| p.ends_with(".bin"))
        .flat_map(|(_, c)| c)
        .filter(|c| !in_docs.contains(c))
        .collect();
    assert!(!secret_chunks.is_empty());
    for c in &secret_chunks {
        damage_object(&b.repo.path(), c);
    }
    // And some docs data, which b may read.
    let docs_chunk = files_and_chunks(&b.repo.path(), "docs@latest")
        .into_iter()
        .find(|(p, _)| p == "docs/a.bin")
        .unwrap()
        .1[0];
    damage_object(&b.repo.path(), &docs_chunk);

    let (code, r, err) = repair(&b, "lyon");
    assert_eq!(code, 1, "{r}\n{err}");
    let h = &r["heal"];
    let healed: Vec<&str> = h["healed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap())
        .collect();
    eprintln!(
        "asked {}, healed {}, lost {} (secret chunks: {})",
        h["sources"][0]["asked"],
        healed.len(),
        h["lost"].as_array().unwrap().len(),
        secret_chunks.len()
    );
    assert_eq!(healed, vec![docs_chunk.to_hex().as_str()], "{r}");
    let lost: Vec<&str> = h["lost"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap())
        .collect();
    for c in &secret_chunks {
        assert!(lost.contains(&c.to_hex().as_str()), "{c} not lost: {r}");
    }
    // b asked for them; a served none and named no space it may not read.
    assert_eq!(
        h["sources"][0]["asked"].as_u64().unwrap(),
        secret_chunks.len() as u64 + 1,
        "{r}"
    );
    assert!(!err.contains("'secret'"), "{err}");
    assert!(a.log().contains("to heal its repository"), "{}", a.log());
    // A snapshot record of `secret` asked for by id is answered as if absent, without its
    // space: b damages its copy of a's docs snapshot and of its own secret one.
    let a_secret = a
        .json(&["snapshots"])
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["space"] == "secret")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    // Plant a's secret record id on b as a damaged file: b asks a for it by id.
    let snapdir = b.repo.path().join("snapshots");
    fs::write(snapdir.join(&a_secret), b"garbage").unwrap();
    let (code, r, err) = repair(&b, "lyon");
    assert_eq!(code, 1, "{r}\n{err}");
    assert_eq!(
        r["heal"]["snapshots_lost"],
        serde_json::json!([a_secret]),
        "{r}"
    );
    assert!(!err.contains("secret"), "{err}");
    wait_for("a to log the refused record", || {
        a.log().contains(&format!("asked for snapshot {a_secret}"))
    });
}

#[test]
fn a_refusing_or_unreachable_peer_is_a_clear_error() {
    let (mut a, mut b) = pair();
    a.start();
    let src = a.repo.dir.path().join("src");
    make_tree(&src, 60);
    a.snapshot(&src, "docs");
    b.sync("lyon", &["--pull"]);
    fs::remove_file(&packs_by_size(&b)[0]).unwrap();
    // c does not know b: it refuses the connection.
    let mut c = TestNode::new("c");
    c.start();
    b.add_peer(&c, r#"{ docs = ["push"] }"#);
    let out = b.run(&["repair", "--from", "c"]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("peer 'c'"), "{err}");
    eprintln!("refused at {:?}: {err}", std::time::SystemTime::now());
    // With a refusing peer and a good one, the good one heals.
    let (code, r, err) = repair_from(&b, &["c", "lyon"]);
    assert_eq!(code, 0, "{r}\n{err}");
    assert_eq!(r["heal"]["sources"][1]["name"], "c", "{r}");
    assert!(r["heal"]["sources"][1]["error"].is_string(), "{r}");
    // Unreachable: nobody listens any more.
    fs::remove_file(&packs_by_size(&b)[0]).unwrap();
    a.stop();
    let out = b.run(&["repair", "--from", "lyon"]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("peer 'lyon'"), "{err}");
    eprintln!("unreachable at {:?}: {err}", std::time::SystemTime::now());
    // Usage errors.
    let out = b.run(&["repair"]);
    assert_eq!(out.status.code(), Some(2));
    let out = b.run(&["repair", "--from", "nobody"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no peer \"nobody\""));
}

fn repair_from(node: &TestNode, peers: &[&str]) -> (i32, serde_json::Value, String) {
    let mut a = vec!["--json", "repair"];
    for p in peers {
        a.push("--from");
        a.push(p);
    }
    let out = node.run(&a);
    (
        out.status.code().unwrap(),
        json_of(&out),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Every version restores on `node` to what was snapshotted.
fn same_versions(
    node: &TestNode,
    versions: &[(String, PathBuf)],
    expected: &[puce_tests::Manifest],
    when: &str,
) {
    for (i, (id, _)) in versions.iter().enumerate() {
        assert_eq!(
            manifest(&node.restored(id)),
            expected[i],
            "{when}: version {i} differs after healing"
        );
    }
}

/// Random damage, healed: in every trial one to three random packs of `b` get random bit
/// flips, are cut short at a random length or deleted; `check --read-data` must see it (or the
/// damage hit no byte that matters), `repair --from lyon` must heal all of it, and afterwards
/// `check --read-data` is clean and every version restores byte-identical.
/// `PUCE_HEAL_TRIALS` sets the number of trials (default 4; the full run uses 50).
#[test]
fn random_damage_always_heals_from_a_peer() {
    let trials = puce_tests::env_u64("PUCE_HEAL_TRIALS", 4);
    let (mut a, b) = pair();
    a.start();
    let versions = three_versions(&a, &b);
    let expected: Vec<_> = versions.iter().map(|(_, src)| manifest(src)).collect();
    let mut rng = puce_tests::Rng::new(0x7e57);
    let mut rnd = move || rng.next();
    let (mut detected, mut healed_objects, mut faults) = (0, 0u64, 0);
    for t in 0..trials {
        let packs = pack_files(&b.repo.path());
        let n = 1 + rnd() % 3;
        let mut what = Vec::new();
        for _ in 0..n {
            let p = &packs[(rnd() % packs.len() as u64) as usize];
            if !p.exists() {
                continue;
            }
            faults += 1;
            match rnd() % 3 {
                0 => {
                    flip_random_bits(p, 1 + (rnd() % 16) as usize, rnd());
                    what.push("flip");
                }
                1 => {
                    truncate_file(p, (rnd() % 1000) as f64 / 1000.0);
                    what.push("truncate");
                }
                _ => {
                    fs::remove_file(p).unwrap();
                    what.push("delete");
                }
            }
        }
        let (code, c) = check(&b);
        if code != 0 {
            detected += 1;
        }
        let (code, r, err) = repair(&b, "lyon");
        assert_eq!(code, 0, "trial {t} ({what:?}): {r}\n{err}");
        healed_objects += r["heal"]["healed"].as_array().map_or(0, |h| h.len()) as u64;
        let (code, after) = check(&b);
        assert_eq!(
            code, 0,
            "trial {t} ({what:?}): still damaged: {after}\nbefore: {c}"
        );
        same_versions(&b, &versions, &expected, &format!("trial {t} ({what:?})"));
    }
    eprintln!(
        "random heal: {trials} trials, {faults} faults injected, {detected} trials detected by \
         check, {healed_objects} objects healed, 0 lost"
    );
}

/// `puce repair --from` killed with SIGKILL at random moments: afterwards `check` (without
/// reading data) passes or names only the damage, a second repair heals everything, and every
/// version restores byte-identical. `PUCE_HEAL_KILLS` sets the number of kills (default 4; the
/// full run uses 40).
#[test]
fn repair_killed_at_random_moments_then_completed() {
    let kills = puce_tests::env_u64("PUCE_HEAL_KILLS", 4);
    let (mut a, b) = pair();
    a.start();
    let versions = three_versions(&a, &b);
    let expected: Vec<_> = versions.iter().map(|(_, src)| manifest(src)).collect();
    let mut rng = puce_tests::Rng::new(0x4ea1);
    let mut window = 300u64;
    let mut killed = 0;
    for t in 0..kills {
        // Damage two packs.
        let packs = pack_files(&b.repo.path());
        for _ in 0..2 {
            let p = &packs[rng.below(packs.len() as u64) as usize];
            if p.exists() {
                if rng.below(2) == 0 {
                    flip_random_bits(p, 4, rng.next());
                } else {
                    truncate_file(p, 0.5);
                }
            }
        }
        let mut child = b
            .cmd()
            .args(["-q", "repair", "--from", "lyon"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let delay = rng.below(window + 1);
        std::thread::sleep(std::time::Duration::from_millis(delay));
        let _ = child.kill();
        let st = child.wait().unwrap();
        if st.success() {
            window = window * 9 / 10;
        } else {
            killed += 1;
            window = window * 11 / 10 + 1;
        }
        // Whatever the kill left, a complete repair heals it.
        let (code, r, err) = repair(&b, "lyon");
        assert_eq!(code, 0, "kill {t} after {delay} ms: {r}\n{err}");
        let (code, after) = check(&b);
        assert_eq!(code, 0, "kill {t} after {delay} ms: still damaged: {after}");
        same_versions(&b, &versions, &expected, &format!("kill {t}"));
    }
    eprintln!("repair kill test: {kills} runs, {killed} repairs killed, 0 lost");
    assert!(kills == 0 || killed > 0, "no repair was interrupted");
}
