//! Blind holders and the key fingerprint in the handshake (protocol revision 5), with real
//! daemons on loopback: nodes with different keys are refused at once, naming both keys; a
//! partner of another association holds an encrypted repository's spaces without the key,
//! learns nothing of names or contents, frees what the owner forgot, and gives everything back
//! to a new node of the owner after a disaster (docs/design.md, "Blind holders").
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::Path;

use puce_tests::node::{TestNode, wait_for};
use puce_tests::{TestRepo, key_file, manifest, random_bytes};

/// Strings that must appear nowhere at the holder.
const MARKERS: [&str; 3] = ["ZORGLUB-CONTENT", "ZORGLUB-NAME", "ZORGLUB-SPACE"];

/// The fingerprint of a repository's key, as nodes show it.
fn fingerprint(t: &TestRepo) -> String {
    let kf = puce_core::crypto::KeyFile::decode(&fs::read(key_file(t)).unwrap()).unwrap();
    kf.fingerprint.to_string()
}

/// Assert that no marker is anywhere under `dir`, in contents or names.
fn no_marker_in(dir: &Path) {
    let mut all = Vec::new();
    puce_tests::files_with_bytes(dir, &mut all);
    assert!(!all.is_empty());
    puce_tests::assert_no_marker(&all, &MARKERS);
}

fn dir_bytes(dir: &Path) -> u64 {
    let mut all = Vec::new();
    puce_tests::files_with_bytes(dir, &mut all);
    all.iter().map(|(_, b)| b.len() as u64).sum()
}

/// Lyon, an owner whose repository has a key of its own, and `holders` (other associations,
/// under their own keys) holding its spaces blind, with `holder_extra` in their sections on
/// lyon after `hold_blind = true`. Its key file is also kept outside the repository (a
/// disaster leaves it): the directory that keeps it, and its path.
fn owner_held_by(
    holders: &mut [&mut TestNode],
    holder_extra: &str,
) -> (TestNode, tempfile::TempDir, std::path::PathBuf) {
    let lyon_repo = TestRepo::with_init(&["--encrypt"]);
    let kept_key = tempfile::tempdir().unwrap();
    let key = kept_key.path().join("lyon.key");
    fs::copy(key_file(&lyon_repo), &key).unwrap();
    let mut lyon = TestNode::with("lyon", lyon_repo, "127.0.0.1", None);
    for h in holders.iter_mut() {
        lyon.add_peer_with(h, "{}", r#"holds_blind = ["*"]"#);
        h.add_peer_with(&lyon, "{}", &format!("hold_blind = true{holder_extra}"));
    }
    (lyon, kept_key, key)
}

#[test]
fn nodes_with_different_keys_are_refused_at_once_naming_both_keys() {
    let grants = r#"{ docs = ["pull", "push"] }"#;
    let lyon_repo = TestRepo::with_init(&["--encrypt"]);
    let annecy_repo = TestRepo::with_init(&["--encrypt"]);
    let (fa, fc) = (fingerprint(&lyon_repo), fingerprint(&annecy_repo));
    let mut a = TestNode::with("lyon", lyon_repo, "127.0.0.1", None);
    let mut c = TestNode::with("annecy", annecy_repo, "127.0.0.1", None);
    let mut p = TestNode::with(
        "plain",
        TestRepo::with_init(&["--no-encrypt"]),
        "127.0.0.1",
        None,
    );
    a.add_peer(&c, grants);
    c.add_peer(&a, grants);
    a.add_peer(&p, grants);
    p.add_peer(&a, grants);
    let src = a.repo.dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a.txt"), random_bytes(100_000, 1)).unwrap();
    a.snapshot(&src, "docs");

    // Refused in the handshake, before anything moves: both nodes say why, with both keys.
    c.start();
    let err = a.sync_fails("annecy", &["--push"]);
    assert!(
        err.contains(&fa) && err.contains(&fc) && err.contains("--key-from"),
        "{err}"
    );
    wait_for("annecy to log the refusal", || {
        let log = c.log();
        log.contains(&fa) && log.contains(&fc)
    });
    assert!(c.snapshot_ids().is_empty());
    c.stop();

    // An unencrypted node is refused too, whichever side calls.
    a.start();
    let err = p.sync_fails("lyon", &["--pull"]);
    assert!(
        err.contains(&fa) && err.contains("is not encrypted") && err.contains("--key-from"),
        "{err}"
    );
    assert!(p.snapshot_ids().is_empty());
    a.stop();
}

/// The issue's target: markers in incompressible content (compression on) and in names,
/// synced to a blind holder: the holder stores at least the data's size, no marker appears
/// anywhere in its directory, it frees what the owner forgot, checks what it holds without
/// the key, and a new node with the key restores every snapshot byte for byte from it.
#[test]
fn a_blind_holder_keeps_an_opaque_copy_that_restores_after_a_disaster() {
    // The partner is another association: a repository of its own, under its own key.
    let mut partner = TestNode::new("partner");
    let (mut lyon, _kept, key) = owner_held_by(&mut [&mut partner], "");

    let src = lyon.repo.dir.path().join("src");
    puce_tests::make_marked_source(&src);
    let first = lyon.snapshot(&src, "ZORGLUB-SPACE");
    fs::write(src.join("later.bin"), random_bytes(1 << 20, 12)).unwrap();
    let second = lyon.snapshot(&src, "ZORGLUB-SPACE");

    lyon.start();
    // Nothing is given to a blind holder before the key was exported once.
    let err = partner.sync_fails("lyon", &[]);
    assert!(
        err.contains("never exported") && err.contains("key export"),
        "{err}"
    );
    assert!(!partner.repo.path().join("holds").exists());
    lyon.ok(&["key", "export", "--paper"]);
    let r = partner.sync("lyon", &[]);
    assert!(r["blind_files"].as_u64().unwrap() >= 3, "{r}");
    let holds = partner.repo.path().join("holds");
    let held = dir_bytes(&holds);
    assert!(
        held >= (4 << 20),
        "the holder stores the data: {held} bytes"
    );
    no_marker_in(partner.repo.dir.path());
    // Nothing new: nothing moves.
    let r = partner.sync("lyon", &[]);
    assert_eq!(r["blind_files"].as_u64(), Some(0), "{r}");
    let c = partner.json(&["check", "--read-data"]);
    assert_eq!(c["problems"].as_array().unwrap().len(), 0, "{c}");
    listed_opaque_and_refused(&partner, &second);
    damage_is_found_without_the_key(&partner);

    // The owner forgets and collects: the holder frees what no manifest lists any more.
    lyon.ok(&["forget", &first]);
    lyon.ok(&["gc"]);
    let first_record = |p: &TestNode| {
        let mut all = Vec::new();
        puce_tests::files_with_bytes(&p.repo.path().join("holds"), &mut all);
        all.iter().any(|(path, _)| path.ends_with(&first))
    };
    assert!(first_record(&partner));
    partner.sync("lyon", &[]);
    assert!(!first_record(&partner), "the forgotten snapshot is freed");
    // A third snapshot: the copy holds two.
    let second_state = lyon.restored(&second);
    fs::write(
        src.join("notes.txt"),
        "ZORGLUB-CONTENT changed\n".repeat(500),
    )
    .unwrap();
    let third = lyon.snapshot(&src, "ZORGLUB-SPACE");
    partner.sync("lyon", &[]);
    no_marker_in(partner.repo.dir.path());

    // Disaster: lyon's repository is gone. A new node made with the key file is admitted by
    // the holder (pinned as a node of lyon) and gets everything back.
    lyon.stop();
    let lyon_id = lyon.id.clone();
    fs::remove_dir_all(lyon.repo.path()).unwrap();
    let repo2 = TestRepo::with_init(&["--encrypt", "--key-from", key.to_str().unwrap()]);
    let mut lyon2 = TestNode::with("lyon2", repo2, "127.0.0.1", None);
    lyon2.add_peer_with(&partner, "{}", r#"holds_blind = ["*"]"#);
    // Not admitted yet: the holder serves nothing of lyon's to another key.
    partner.add_peer(&lyon2, "{}");
    partner.start();
    let err = lyon2.sync_fails("partner", &[]);
    assert!(err.contains("holds nothing blind"), "{err}");
    partner.stop();
    partner = readmit(partner, &lyon2, &lyon_id);
    partner.start();
    let r = lyon2.sync("partner", &[]);
    assert!(r["blind_files"].as_u64().unwrap() >= 2, "{r}");
    assert_eq!(lyon2.snapshot_ids(), vec![second.clone(), third.clone()]);
    assert_eq!(manifest(&lyon2.restored(&second)), manifest(&second_state));
    assert_eq!(manifest(&lyon2.restored(&third)), manifest(&src));
    let c = lyon2.json(&["check", "--read-data"]);
    assert_eq!(c["problems"].as_array().unwrap().len(), 0, "{c}");
    partner.stop();
}

/// The holder lists what it holds as opaque entries, and refuses to restore them, saying why.
fn listed_opaque_and_refused(partner: &TestNode, snapshot: &str) {
    let list = partner.ok(&["snapshots"]);
    assert!(list.contains("Held blind for other nodes"), "{list}");
    assert!(!list.contains("ZORGLUB"), "{list}");
    assert!(partner.snapshot_ids().is_empty());
    let st = partner.json(&["node", "status"]);
    let held = st["held_blind"].as_array().unwrap();
    assert_eq!(held.len(), 1, "{st}");
    assert_eq!(held[0]["spaces"].as_array().unwrap().len(), 1, "{st}");
    assert!(held[0]["stored_bytes"].as_u64().unwrap() >= 4 << 20, "{st}");
    let out = partner.repo.dir.path().join("nope");
    let r = partner.run(&["restore", &snapshot[..12], out.to_str().unwrap()]);
    assert!(!r.status.success());
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        err.contains("held here blind") && err.contains("does not have"),
        "{err}"
    );
}

/// A damaged held file is reported by `check --read-data` on the holder (no key there), and a
/// missing one comes back at the next sync with the owner.
fn damage_is_found_without_the_key(partner: &TestNode) {
    let mut packs = Vec::new();
    puce_tests::files_with_bytes(&partner.repo.path().join("holds"), &mut packs);
    let (pack, mut bytes) = packs
        .into_iter()
        .filter(|(p, _)| p.to_string_lossy().contains("/files/packs/"))
        .max_by_key(|(_, b)| b.len())
        .unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0x40;
    fs::write(&pack, &bytes).unwrap();
    let r = partner.run(&["--json", "check", "--read-data"]);
    assert!(!r.status.success());
    let c: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    let problems = c["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{c}");
    assert_eq!(problems[0]["kind"], "held_file", "{c}");
    assert!(
        problems[0]["detail"].as_str().unwrap().contains("damaged"),
        "{c}"
    );
    fs::remove_file(&pack).unwrap();
    let r = partner.sync("lyon", &[]);
    assert_eq!(r["blind_files"].as_u64(), Some(1), "{r}");
    let c = partner.json(&["check", "--read-data"]);
    assert_eq!(c["problems"].as_array().unwrap().len(), 0, "{c}");
}

/// `partner` with `lyon2` admitted to the copy held for `owner`.
fn readmit(partner: TestNode, lyon2: &TestNode, owner: &str) -> TestNode {
    let toml = partner.node_dir().join("node.toml");
    let text = fs::read_to_string(&toml).unwrap();
    let text = text.replace(
        &format!("id = \"{}\"", lyon2.id),
        &format!("id = \"{}\"\nowner = \"{owner}\"", lyon2.id),
    );
    fs::write(&toml, &text).unwrap();
    partner
}

/// `puce --json sync PEER` on `node` with the test clock `days` later: the report and stderr.
fn sync_later(node: &TestNode, peer: &str, days: &str) -> (serde_json::Value, String) {
    let args = ["--json", "sync", peer];
    let out = node
        .cmd()
        .env("PUCE_TEST_DAYS_LATER", days)
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let stdout = puce_tests::expect_ok(&format!("[{}] ", node.name), &args, out);
    (serde_json::from_str(&stdout).unwrap(), stderr)
}

/// Issue 18's break-in, for a blind holder with a protection period (`keep_min = "30d"` for
/// the owner): the owner's history is forgotten and collected and junk takes its place; the
/// holder accepts the manifest, flags the mass removal, keeps the old files, and a brand new
/// node with the key restores every snapshot held before, byte for byte. Once the period has
/// passed (test clock), the next sync frees them.
#[test]
fn a_break_in_on_the_owner_leaves_every_snapshot_restorable_from_a_blind_holder() {
    let mut partner = TestNode::new("partner");
    let (mut lyon, _kept, key) = owner_held_by(&mut [&mut partner], "\nkeep_min = \"30d\"");
    let (src1, src2) = (
        lyon.repo.dir.path().join("src1"),
        lyon.repo.dir.path().join("src2"),
    );
    fs::create_dir_all(&src1).unwrap();
    fs::write(src1.join("a.bin"), random_bytes(2 << 20, 21)).unwrap();
    let first = lyon.snapshot(&src1, "docs");
    puce_tests::make_tree(&src2, 22);
    fs::write(src2.join("b.bin"), random_bytes(2 << 20, 23)).unwrap();
    let second = lyon.snapshot(&src2, "docs");
    lyon.ok(&["key", "export", "--paper"]);
    lyon.start();
    partner.sync("lyon", &[]);
    let holds = partner.repo.path().join("holds");
    let before = dir_bytes(&holds);
    assert!(before >= 4 << 20, "{before}");

    // The break-in: everything forgotten and collected on lyon, junk in its place.
    lyon.ok(&["forget", &first]);
    lyon.ok(&["forget", &second]);
    lyon.ok(&["gc"]);
    let junk = lyon.repo.dir.path().join("junk");
    fs::create_dir_all(&junk).unwrap();
    fs::write(junk.join("junk.bin"), random_bytes(10_000, 24)).unwrap();
    lyon.snapshot(&junk, "junk");
    let out = partner.run(&["--json", "sync", "lyon"]);
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{log}");
    assert!(log.contains("a mass removal, flagged"), "{log}");
    // Accepted, flagged, nothing freed; the copy still checks out without the key.
    assert!(dir_bytes(&holds) >= before, "nothing freed");
    let st = partner.json(&["node", "status"]);
    let flags = st["blind_flags"].as_array().unwrap();
    assert_eq!(flags.len(), 1, "{st}");
    assert_eq!(flags[0]["kind"], "mass_removal", "{st}");
    assert_eq!(flags[0]["peer"], "lyon", "{st}");
    assert!(flags[0]["kept_until"].is_string(), "{st}");
    let protected = st["held_blind"][0]["protected"].as_array().unwrap();
    assert_eq!(protected.len(), 1, "{st}");
    assert_eq!(protected[0]["snapshots"], 2, "{st}");
    let text = partner.ok(&["node", "status"]);
    println!("{text}");
    assert!(
        text.contains("a mass removal?") && text.contains("kept by the protection period"),
        "{text}"
    );
    let c = partner.json(&["check", "--read-data"]);
    assert_eq!(c["problems"].as_array().unwrap().len(), 0, "{c}");

    // A brand new node with the key, admitted by the holder, restores every snapshot held
    // before the break-in, byte for byte.
    let lyon_id = lyon.id.clone();
    let repo2 = TestRepo::with_init(&["--encrypt", "--key-from", key.to_str().unwrap()]);
    let mut lyon2 = TestNode::with("lyon2", repo2, "127.0.0.1", None);
    lyon2.add_peer_with(&partner, "{}", r#"holds_blind = ["*"]"#);
    partner.add_peer(&lyon2, "{}");
    partner = readmit(partner, &lyon2, &lyon_id);
    partner.start();
    let r = lyon2.sync("partner", &[]);
    assert!(r["blind_files"].as_u64().unwrap() >= 4, "{r}");
    let ids = lyon2.snapshot_ids();
    assert!(
        ids.contains(&first) && ids.contains(&second),
        "{ids:?} lacks {first} or {second}"
    );
    assert_eq!(manifest(&lyon2.restored(&first)), manifest(&src1));
    assert_eq!(manifest(&lyon2.restored(&second)), manifest(&src2));
    let c = lyon2.json(&["check", "--read-data"]);
    assert_eq!(c["problems"].as_array().unwrap().len(), 0, "{c}");
    partner.stop();

    // 29 days later the period still keeps them; 31 days later the next sync frees them.
    sync_later(&partner, "lyon", "29");
    assert!(dir_bytes(&holds) >= before, "still kept at 29 days");
    let (r, log) = sync_later(&partner, "lyon", "31");
    assert!(r["blind_files"].as_u64().is_some(), "{r}");
    let after = dir_bytes(&holds);
    assert!(
        after < 1 << 20,
        "freed after the period: {after} bytes left ({log})"
    );
    let c = partner.json(&["check", "--read-data"]);
    assert_eq!(c["problems"].as_array().unwrap().len(), 0, "{c}");

    // lyon's node directory goes back to an old state (its last sequence number with it)
    // after signing a manifest far ahead: what it sends now is a rollback, refused, recorded.
    let seq = lyon.node_dir().join("blind-seq");
    fs::write(&seq, (u64::MAX / 2).to_string()).unwrap();
    partner.sync("lyon", &[]);
    fs::write(&seq, "1").unwrap();
    let err = partner.sync_fails("lyon", &[]);
    assert!(err.contains("a rollback, refused"), "{err}");
    let st = partner.json(&["node", "status"]);
    let flags = st["blind_flags"].as_array().unwrap();
    assert_eq!(flags.last().unwrap()["kind"], "rollback", "{st}");
    assert_eq!(
        flags.last().unwrap()["seq_before"],
        u64::MAX / 2 + 1,
        "{st}"
    );
    let text = partner.ok(&["node", "status"]);
    assert!(text.contains("a rollback, refused"), "{text}");
    lyon.stop();
}

/// Issue 16: two holders of one owner that admit each other for its copy (`owner` in each
/// other's section) heal each other while the owner is offline: files lost or cut short on
/// one come back from the other, checked against the owner's signed manifest.
/// What a protection period keeps for a blind owner still counts against its quota on the
/// holder: a compromised owner cannot make room by dropping what it sent. Once the period
/// has passed, the room is given back.
#[test]
fn what_the_protection_period_keeps_counts_against_a_blind_owners_quota() {
    let mut partner = TestNode::new("partner");
    let (mut lyon, _, _) = owner_held_by(
        &mut [&mut partner],
        "\nkeep_min = \"30d\"\nquota = \"6 MiB\"",
    );
    let (src1, src2) = (
        lyon.repo.dir.path().join("src1"),
        lyon.repo.dir.path().join("src2"),
    );
    fs::create_dir_all(&src1).unwrap();
    fs::create_dir_all(&src2).unwrap();
    fs::write(src1.join("a.bin"), random_bytes(4 << 20, 31)).unwrap();
    fs::write(src2.join("b.bin"), random_bytes(4 << 20, 32)).unwrap();
    let first = lyon.snapshot(&src1, "docs");
    lyon.ok(&["key", "export", "--paper"]);
    lyon.start();
    partner.sync("lyon", &[]);
    let holds = partner.repo.path().join("holds");
    let before = dir_bytes(&holds);
    assert!(before >= 4 << 20, "{before}");
    // Lyon drops its 4 MiB and sends 4 MiB more: alone under the quota, over it with what
    // the period keeps.
    lyon.ok(&["forget", &first]);
    lyon.ok(&["gc"]);
    lyon.snapshot(&src2, "docs");
    let e = partner.sync_fails("lyon", &[]);
    assert!(
        e.contains("quota exceeded") && e.contains("what the protection period keeps"),
        "{e}"
    );
    assert!(
        dir_bytes(&holds) < before + (1 << 20),
        "fetched over the quota"
    );
    // Thirty-one days later the period has passed: the new manifest fits.
    let (r, log) = sync_later(&partner, "lyon", "31");
    assert!(r["blind_files"].as_u64().unwrap() >= 1, "{r}\n{log}");
    let after = dir_bytes(&holds);
    assert!(
        (4 << 20..6 << 20).contains(&after),
        "{after}: the old 4 MiB should be freed, the new 4 MiB held"
    );
}

/// The holder's scheduled check (`repair = true`) moves a held file damaged in place aside
/// (no key needed: it does not match the owner's manifest), and the next sync fetches it again.
#[test]
fn the_holders_check_sets_a_damaged_held_file_aside_and_the_next_sync_fetches_it_again() {
    let mut partner = TestNode::new("partner");
    let (mut lyon, _, _) = owner_held_by(&mut [&mut partner], "");
    partner.extra = "[check]\ninterval = \"1h\"\nsample = \"100%\"\nrepair = true\n".into();
    partner.write_config();
    let src = lyon.repo.dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a.bin"), random_bytes(1 << 20, 41)).unwrap();
    lyon.snapshot(&src, "docs");
    lyon.ok(&["key", "export", "--paper"]);
    lyon.start();
    partner.sync("lyon", &[]);
    let mut files = Vec::new();
    puce_tests::files_with_bytes(&partner.repo.path().join("holds"), &mut files);
    let (pack, mut bytes) = files
        .into_iter()
        .filter(|(p, _)| p.to_string_lossy().contains("/files/packs/"))
        .max_by_key(|(_, b)| b.len())
        .unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0x40;
    fs::write(&pack, &bytes).unwrap();
    // The daemon's first check runs at its start.
    partner.start();
    let check = partner.wait_checked();
    assert_eq!(check["problems"], 1, "{check}");
    assert!(!pack.exists(), "the damaged file is still in place");
    let aside: Vec<_> = fs::read_dir(pack.ancestors().nth(3).unwrap().join("damaged"))
        .unwrap()
        .collect();
    assert_eq!(aside.len(), 1);
    assert!(partner.log().contains("moved to"), "{}", partner.log());
    let r = partner.sync("lyon", &[]);
    assert_eq!(r["blind_files"].as_u64(), Some(1), "{r}");
    assert_eq!(fs::read(&pack).unwrap().len(), n);
    let c = partner.json(&["check", "--read-data"]);
    assert_eq!(c["problems"].as_array().unwrap().len(), 0, "{c}");
}

/// After a disaster, a new node restoring from two holders is warned when they disagree: one
/// holds an older copy (it did not sync since, or was rolled back).
#[test]
fn a_restore_warns_when_the_holders_disagree() {
    let (mut p1, mut p2) = (TestNode::new("p1"), TestNode::new("p2"));
    let (mut lyon, _kept, key) = owner_held_by(&mut [&mut p1, &mut p2], "");
    let src = lyon.repo.dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a.bin"), random_bytes(100_000, 51)).unwrap();
    lyon.snapshot(&src, "docs");
    lyon.ok(&["key", "export", "--paper"]);
    lyon.start();
    p1.sync("lyon", &[]);
    p2.sync("lyon", &[]);
    // A second snapshot reaches p1 only.
    fs::write(src.join("b.bin"), random_bytes(100_000, 52)).unwrap();
    let second = lyon.snapshot(&src, "docs");
    p1.sync("lyon", &[]);
    lyon.stop();

    let lyon_id = lyon.id.clone();
    let repo2 = TestRepo::with_init(&["--encrypt", "--key-from", key.to_str().unwrap()]);
    let mut lyon2 = TestNode::with("lyon2", repo2, "127.0.0.1", None);
    let mut holders = Vec::new();
    for mut p in [p1, p2] {
        lyon2.add_peer_with(&p, "{}", r#"holds_blind = ["*"]"#);
        p.add_peer(&lyon2, "{}");
        let mut p = readmit(p, &lyon2, &lyon_id);
        p.start();
        holders.push(p);
    }
    // A hostile holder serves another association's copy (grenoble's, many manifests on):
    // refused for its key, and not taken as a holder of lyon's copy ahead of the others.
    let mut grenoble = TestNode::with(
        "grenoble",
        TestRepo::with_init(&["--encrypt"]),
        "127.0.0.1",
        None,
    );
    let mut evil = TestNode::new("evil");
    grenoble.add_peer_with(&evil, "{}", r#"holds_blind = ["*"]"#);
    evil.add_peer_with(&grenoble, "{}", "hold_blind = true");
    grenoble.ok(&["key", "export", "--paper"]);
    grenoble.start();
    let gsrc = grenoble.repo.dir.path().join("src");
    fs::create_dir_all(&gsrc).unwrap();
    for i in 0..4 {
        fs::write(gsrc.join(format!("{i}.bin")), random_bytes(10_000, 60 + i)).unwrap();
        grenoble.snapshot(&gsrc, "docs");
        evil.sync("grenoble", &[]);
    }
    grenoble.stop();
    lyon2.add_peer_with(&evil, "{}", r#"holds_blind = ["*"]"#);
    evil.add_peer(&lyon2, "{}");
    let mut evil = readmit(evil, &lyon2, &grenoble.id);
    evil.start();
    let e = lyon2.sync_fails("evil", &[]);
    assert!(
        e.contains("holds a copy made with the key of fingerprint"),
        "{e}"
    );
    let r = lyon2.sync("p1", &[]);
    assert!(r["warnings"].as_array().unwrap().is_empty(), "{r}");
    assert!(lyon2.snapshot_ids().contains(&second));
    let r = lyon2.sync("p2", &[]);
    let warnings = r["warnings"].to_string();
    assert!(
        warnings.contains("holders disagree: peer 'p2'")
            && warnings.contains("peer 'p1' served manifest"),
        "{r}"
    );
}

#[test]
fn a_blind_holder_heals_from_another_holder_while_the_owner_is_offline() {
    let mut a = TestNode::new("a");
    let mut b = TestNode::new("b");
    let (mut lyon, _, _) = owner_held_by(&mut [&mut a, &mut b], "");
    let admit = format!("owner = \"{}\"", lyon.id);
    a.add_peer_with(&b, "{}", &admit);
    b.add_peer_with(&a, "{}", &admit);
    let src = lyon.repo.dir.path().join("src");
    puce_tests::make_tree(&src, 31);
    fs::write(src.join("big.bin"), random_bytes(3 << 20, 32)).unwrap();
    lyon.snapshot(&src, "docs");
    lyon.ok(&["key", "export", "--paper"]);
    lyon.start();
    a.sync("lyon", &[]);
    b.sync("lyon", &[]);
    lyon.stop();

    // Nothing missing: nothing moves.
    b.start();
    let r = a.sync("b", &[]);
    assert_eq!(r["blind_files"].as_u64(), Some(0), "{r}");
    // A pack lost and a snapshot record cut short on a, with lyon offline.
    let mut held = Vec::new();
    puce_tests::files_with_bytes(&a.repo.path().join("holds"), &mut held);
    let pack = held
        .iter()
        .filter(|(p, _)| p.to_string_lossy().contains("/files/packs/"))
        .max_by_key(|(_, b)| b.len())
        .unwrap();
    let record = held
        .iter()
        .find(|(p, _)| p.to_string_lossy().contains("/files/snapshots/"))
        .unwrap();
    fs::remove_file(&pack.0).unwrap();
    fs::write(&record.0, &record.1[..record.1.len() / 2]).unwrap();
    let r = a.run(&["--json", "check", "--read-data"]);
    assert!(!r.status.success());
    let r = a.sync("b", &[]);
    assert_eq!(r["blind_files"].as_u64(), Some(2), "{r}");
    assert_eq!(fs::read(&pack.0).unwrap(), pack.1);
    assert_eq!(fs::read(&record.0).unwrap(), record.1);
    let c = a.json(&["check", "--read-data"]);
    assert_eq!(c["problems"].as_array().unwrap().len(), 0, "{c}");
    b.stop();
}
