//! Quotas and the ledger between nodes, end to end with real daemons: a transfer over a peer's
//! quota is refused on both sides with use and quota named, resumes once the quota is raised
//! without sending again what was stored; `puce report peers` figures against what gc frees.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;

use puce_tests::mount::Mount;
use puce_tests::node::{TestNode, pair};
use puce_tests::{Need, TestRepo, make_tree, manifest, random_bytes, require};
use serde_json::Value;

const MIB: u64 = 1 << 20;

/// `report peers --json` on `node`: the row of peer `name`, and the whole report.
fn peer_row(node: &TestNode, name: &str) -> (Value, Value) {
    let v = node.json(&["report", "peers"]);
    let row = v["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no peer {name} in {v}"))
        .clone();
    (row, v)
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not an integer: {v}"))
}

/// The fair shares of this node and every peer add up to the stored bytes.
fn assert_fair_shares_add_up(report: &Value) {
    let peers: u64 = report["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| u(&p["holds_for_peer"]["fair_bytes"]))
        .sum();
    assert_eq!(
        u(&report["this_node"]["fair_bytes"]) + peers,
        u(&report["stored_bytes"]),
        "{report}"
    );
}

fn set_quota(node: &mut TestNode, from: &str, to: &str) {
    let p = node.node_dir().join("node.toml");
    let text = fs::read_to_string(&p).unwrap();
    assert!(text.contains(from), "{text}");
    fs::write(&p, text.replace(from, to)).unwrap();
}

#[test]
fn a_transfer_over_the_quota_is_refused_on_both_sides_then_resumes_when_it_is_raised() {
    let (mut a, mut b) = pair(
        r#"{ docs = ["pull"] }"#,
        "{ docs = [\"push\"] }\nquota = \"6 MiB\"",
    );
    // 16 MiB that neither compress nor deduplicate: well over the quota.
    let src = a.repo.dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..8 {
        fs::write(src.join(format!("f{i}.bin")), random_bytes(2 << 20, i + 1)).unwrap();
    }
    let id = a.snapshot(&src, "docs");

    // Grenoble pulls from lyon: refused by grenoble itself, and lyon is told.
    a.start();
    let err = b.sync_fails("lyon", &[]);
    assert!(
        err.contains("quota exceeded: peer 'lyon' uses")
            && err.contains("of its quota of 6.0 MiB on node 'grenoble'"),
        "{err}"
    );
    wait_for_log(&a, "quota exceeded");
    a.stop();
    // Lyon pushes to grenoble: grenoble refuses with an Error frame naming use and quota.
    b.start();
    let err = a.sync_fails("grenoble", &[]);
    assert!(
        err.contains("reports: quota exceeded: peer 'lyon' uses")
            && err.contains("of its quota of 6.0 MiB"),
        "{err}"
    );
    assert!(
        b.log().contains("quota exceeded: peer 'lyon'"),
        "{}",
        b.log()
    );
    assert!(
        b.snapshot_ids().is_empty(),
        "a refused snapshot became visible"
    );

    // What arrived is kept, counted against lyon, and never over the quota.
    let (row, report) = peer_row(&b, "lyon");
    let held = u(&row["holds_for_peer"]["in_transit_bytes"]);
    assert!(held > 0, "nothing kept: {row}");
    assert!(u(&row["quota_use"]) <= 6 * MIB, "{row}");
    assert_eq!(u(&row["quota"]), 6 * MIB);
    assert_fair_shares_add_up(&report);

    // A node.toml that does not parse is not taken: the daemon keeps its configuration.
    set_quota(&mut b, "quota = \"6 MiB\"", "quota = \"100 MiB\"\n[[[");
    assert!(!b.reload(), "{}", b.log());
    assert!(b.is_running());
    let e = a.sync_fails("grenoble", &[]);
    assert!(e.contains("quota exceeded"), "{e}");
    // Raised, and reloaded (SIGHUP, no restart): the sync resumes, without sending again
    // what grenoble stored.
    set_quota(&mut b, "\n[[[", "");
    assert!(b.reload(), "{}", b.log());
    let r = a.sync("grenoble", &[]);
    let (mine, _) = peer_row(&a, "grenoble");
    let total = u(&a.json(&["report", "peers"])["stored_bytes"]);
    let sent = u(&r["sent_bytes"]);
    assert!(
        sent + held <= total + MIB,
        "sent {sent} again after {held} were kept, of {total}: {r}"
    );
    assert_eq!(b.snapshot_ids(), [id.as_str()]);
    assert_eq!(manifest(&b.restored(&id)), manifest(&src));

    // Both ledgers agree: grenoble holds for lyon what lyon stores, lyon sees it held.
    let own = b.repo.dir.path().join("own");
    make_tree(&own, 100);
    b.snapshot(&own, "local");
    let (row, report) = peer_row(&b, "lyon");
    puce_tests::golden::assert_json_schema("report-peers", &report);
    assert_eq!(u(&row["holds_for_peer"]["bytes"]), total, "{row}");
    assert_eq!(u(&row["quota_use"]), total);
    assert_eq!(u(&row["holds_for_peer"]["in_transit_bytes"]), 0);
    assert_fair_shares_add_up(&report);
    assert_eq!(u(&mine["peer_holds_for_me"]["bytes"]), total, "{mine}");
    assert_eq!(u(&mine["peer_holds_for_me"]["snapshots"]), 1);
    let text = a.ok(&["report", "peers"]);
    assert!(text.contains("it holds 16.0 MiB for me"), "{text}");
    // Each report recorded a point: the page charts them.
    let page = b.repo.dir.path().join("peers.html");
    b.ok(&["report", "peers", "--html", page.to_str().unwrap()]);
    let html = fs::read_to_string(&page).unwrap();
    let history = fs::read_to_string(b.node_dir().join("peers-history.jsonl")).unwrap();
    assert!(history.lines().count() >= 3, "{history}");
    assert!(
        html.contains("<svg class=\"chart\"")
            && html.contains("class=\"line\"")
            && html.contains("I hold for lyon")
            && html.contains("lyon holds for me"),
        "{html}"
    );
}

/// Wait until `node`'s daemon log has `what`.
fn wait_for_log(node: &TestNode, what: &str) {
    puce_tests::node::wait_for(&format!("'{what}' in the log of {}", node.name), || {
        node.log().contains(what)
    });
}

#[test]
fn dropping_a_peers_data_frees_exactly_what_the_ledger_says_is_only_its_own() {
    let (a, mut b) = pair(r#"{ docs = ["pull"] }"#, r#"{ docs = ["push"] }"#);
    let src = a.repo.dir.path().join("src");
    make_tree(&src, 3);
    a.snapshot(&src, "docs");
    fs::write(src.join("more.bin"), random_bytes(700_000, 77)).unwrap();
    a.snapshot(&src, "docs");
    b.start();
    a.sync("grenoble", &[]);
    // Grenoble's own space shares a file with lyon's: those bytes are not only lyon's.
    let own = b.repo.dir.path().join("own");
    make_tree(&own, 9);
    fs::copy(src.join("more.bin"), own.join("shared.bin")).unwrap();
    b.snapshot(&own, "local");

    let (row, report) = peer_row(&b, "lyon");
    assert_fair_shares_add_up(&report);
    let h = &row["holds_for_peer"];
    let only = u(&h["exclusive_bytes"]);
    assert!(only > 0 && only < u(&h["bytes"]), "{row}");
    assert_eq!(u(&h["snapshots"]), 2);

    b.stop();
    b.ok(&["node", "drop", "lyon", "--since", "2000-01-01T00:00:00Z"]);
    let g = b.json(&["gc", "--repack-unused", "0"]);
    assert_eq!(u(&g["objects_removed_bytes"]), only, "{g}\n{row}");
    assert_eq!(u(&g["objects_removed"]), u(&h["exclusive_objects"]));
    // Grenoble's own data is intact.
    b.ok(&["check", "--read-data"]);
    let (row, _) = peer_row(&b, "lyon");
    assert_eq!(u(&row["holds_for_peer"]["bytes"]), 0, "{row}");
}

#[test]
fn a_snapshot_over_the_space_quota_is_refused_until_the_quota_is_raised() {
    let repo = TestRepo::new();
    let src = repo.dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a.bin"), random_bytes(1 << 20, 1)).unwrap();
    repo.snapshot(&src, "docs");
    repo.snapshot(&src, "other");
    let v = repo.json(&["space", "set", "docs", "--quota", "1536KiB"]);
    assert_eq!(u(&v["quota"]), 1536 << 10, "{v}");
    // One more MiB would take docs over its quota: refused, nothing committed.
    fs::write(src.join("b.bin"), random_bytes(1 << 20, 2)).unwrap();
    let out = repo.run(&["snapshot", src.to_str().unwrap(), "--space", "docs"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a snapshot over the quota was taken");
    assert!(
        err.contains("space 'docs' would use") && err.contains("of its quota of 1572864"),
        "{err}"
    );
    assert_eq!(
        repo.json(&["snapshots", "--space", "docs"])
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // Other spaces have no quota.
    repo.snapshot(&src, "other");
    // Raised, it goes through.
    repo.ok(&["space", "set", "docs", "--quota", "10MiB"]);
    repo.snapshot(&src, "docs");
    assert_eq!(
        repo.json(&["snapshots", "--space", "docs"])
            .as_array()
            .unwrap()
            .len(),
        2
    );
    // A space at its quota refuses even a snapshot that adds nothing.
    repo.ok(&["space", "set", "docs", "--quota", "1MiB"]);
    let out = repo.run(&["snapshot", src.to_str().unwrap(), "--space", "docs"]);
    assert!(!out.status.success());
    repo.ok(&["space", "set", "docs", "--quota", "none"]);
    repo.snapshot(&src, "docs");
}

#[test]
fn a_write_through_the_mount_to_a_space_at_its_quota_gets_enospc() {
    if require(Need::Fuse).is_none() {
        return;
    }
    let repo = TestRepo::new();
    let src = repo.dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a.bin"), random_bytes(1 << 20, 1)).unwrap();
    repo.snapshot(&src, "docs");
    repo.snapshot(&src, "free");
    repo.ok(&["space", "set", "docs", "--quota", "512KiB"]);
    let m = Mount::start(&repo, &repo.dir.path().join("mnt"), &[]);
    let e = fs::write(m.space("docs").join("new.txt"), b"x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
    let e = fs::OpenOptions::new()
        .append(true)
        .open(m.space("docs").join("a.bin"))
        .unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
    // Another space takes writes.
    fs::write(m.space("free").join("new.txt"), b"x").unwrap();
    let log = m.stop();
    assert!(
        log.contains("space 'docs' would use") && log.contains("writes through the mount refused"),
        "{log}"
    );
}
