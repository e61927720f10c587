//! Monitoring, end to end: a real daemon on loopback serves its Prometheus metrics; the page
//! passes `promtool check metrics` and says what `puce node status --json`, `puce report` and
//! the node state say.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::process::{Command, Stdio};

use puce_tests::node::{CHECK_ALL, TestNode, pack_files, wait_for};
use puce_tests::{Need, http, make_tree, random_bytes, require};

/// A free TCP port on loopback (bound, read, released).
fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `a` (lyon) lets `b` (grenoble) read `docs`; `b` lets `a` write it (so `b` can pull); `b`
/// serves metrics and checks all of its data once at start. Returns the metrics address too.
fn pair() -> (TestNode, TestNode, String) {
    let mut a = TestNode::new("lyon");
    let mut b = TestNode::new("grenoble");
    a.add_peer(&b, r#"{ docs = ["pull"] }"#);
    b.add_peer(&a, r#"{ docs = ["push"] }"#);
    let metrics = format!("127.0.0.1:{}", free_tcp_port());
    b.extra = format!(
        "[check]\ninterval = \"1h\"\nsample = \"100%\"\nrepair = true\n\
         [metrics]\nlisten = \"{metrics}\"\nrefresh = \"1h\"\n"
    );
    b.write_config();
    (a, b, metrics)
}

/// The samples of a metrics page, by `name{labels}` as printed.
fn samples(page: &str) -> BTreeMap<String, f64> {
    page.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').unwrap();
            (k.to_string(), v.parse().unwrap())
        })
        .collect()
}

fn scrape(addr: &str) -> String {
    let (code, head, body) = http::get(addr, "/metrics");
    assert_eq!(code, 200, "{head}\n{body}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text"),
        "{head}"
    );
    body
}

/// The value of `key`, which must be on the page.
fn value(m: &BTreeMap<String, f64>, key: &str) -> f64 {
    *m.get(key)
        .unwrap_or_else(|| panic!("no sample {key} on the page:\n{m:#?}"))
}

/// `promtool check metrics` on the page: it must pass without a remark.
fn promtool_accepts(promtool: &std::path::Path, page: &str) {
    let mut c = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(page.as_bytes()).unwrap();
    let out = c.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\npage:\n{page}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Two versions of a folder on `a` (the second shares most of its data with the first).
fn two_versions(a: &TestNode) {
    let src = a.repo.dir.path().join("src");
    make_tree(&src, 70);
    fs::write(src.join("big.bin"), random_bytes(900_000, 71)).unwrap();
    a.snapshot(&src, "docs");
    fs::write(src.join("new.bin"), random_bytes(300_000, 72)).unwrap();
    a.snapshot(&src, "docs");
}

#[test]
fn the_metrics_pass_promtool_and_say_what_status_and_reports_say() {
    let Some(promtool) = require(Need::Promtool) else {
        return;
    };
    let (mut a, mut b, addr) = pair();
    a.start();
    two_versions(&a);
    b.sync("lyon", &["--pull"]);
    b.start();
    assert!(
        b.log()
            .contains(&format!("metrics on http://{addr}/metrics"))
    );
    let mut m = BTreeMap::new();
    wait_for(
        "b's figures and its first check on the metrics page",
        || {
            m = samples(&scrape(&addr));
            m.contains_key("puce_repository_figures_timestamp_seconds")
                && m.contains_key("puce_check_last_run_timestamp_seconds")
        },
    );
    let page = scrape(&addr);
    promtool_accepts(&promtool, &page);
    eprintln!("{page}");
    let m = samples(&page);

    // The peer, as `node status --json` says.
    let st = b.json(&["node", "status"]);
    let peer = &st["peers"][0];
    let rep = &peer["last_report"];
    let lyon = r#"{peer="lyon"}"#;
    for (metric, field) in [
        ("puce_sync_last_received_objects", "received_objects"),
        ("puce_sync_last_received_bytes", "received_bytes"),
        ("puce_sync_last_sent_objects", "sent_objects"),
        ("puce_sync_last_wire_received_bytes", "wire_received_bytes"),
    ] {
        assert_eq!(
            value(&m, &format!("{metric}{lyon}")),
            rep[field].as_u64().unwrap() as f64,
            "{metric} against last_report.{field}"
        );
    }
    assert!(rep["received_objects"].as_u64().unwrap() > 0, "{rep}");
    let started = rep["started_ns"].as_i64().unwrap() as f64 / 1e9;
    for metric in [
        "puce_sync_last_success_timestamp_seconds",
        "puce_sync_last_attempt_timestamp_seconds",
    ] {
        let v = value(&m, &format!("{metric}{lyon}"));
        assert!((v - started).abs() < 1e-3, "{metric} {v} != {started}");
    }
    let docs = r#"{peer="lyon",space="docs"}"#;
    for metric in [
        "puce_space_sync_last_success_timestamp_seconds",
        "puce_space_sync_last_attempt_timestamp_seconds",
    ] {
        let v = value(&m, &format!("{metric}{docs}"));
        assert!((v - started).abs() < 1e-3, "{metric} {v} != {started}");
    }
    assert_eq!(value(&m, &format!("puce_sync_last_ok{lyon}")), 1.0);
    assert_eq!(
        value(&m, &format!("puce_sync_consecutive_failures{lyon}")),
        peer["failures"].as_u64().unwrap() as f64
    );
    let pulled = r#"{peer="lyon",space="docs",direction="pull"}"#;
    assert_eq!(value(&m, &format!("puce_space_sync_last_ok{pulled}")), 1.0);
    assert_eq!(
        value(&m, &format!("puce_space_sync_last_objects{pulled}")),
        rep["spaces"][0]["objects"].as_u64().unwrap() as f64
    );

    // The repository, as `report dedup` and `report growth` say.
    let d = b.json(&["report", "dedup"]);
    for (metric, field) in [
        ("puce_repository_logical_bytes", "logical_bytes"),
        ("puce_repository_unique_bytes", "unique_bytes"),
        ("puce_repository_stored_bytes", "stored_bytes"),
        ("puce_repository_pack_bytes", "pack_bytes"),
    ] {
        assert_eq!(
            value(&m, metric),
            d[field].as_u64().unwrap() as f64,
            "{metric} against report dedup's {field}"
        );
    }
    let ratio = value(&m, "puce_repository_dedup_ratio");
    assert!(
        ratio > 1.0,
        "two versions sharing data: dedup ratio {ratio}"
    );
    assert!((ratio - d["dedup_ratio"].as_f64().unwrap()).abs() < 1e-9);
    let space = &d["spaces"][0];
    assert_eq!(space["space"], "docs");
    assert_eq!(value(&m, r#"puce_space_snapshots{space="docs"}"#), 2.0);
    assert_eq!(
        value(&m, r#"puce_space_stored_bytes{space="docs"}"#),
        space["stored_bytes"].as_u64().unwrap() as f64
    );
    let g = b.json(&["report", "growth"]);
    let free = value(&m, "puce_disk_free_bytes");
    let reported = g["disk_free_bytes"].as_u64().unwrap() as f64;
    // Other processes write to the same disk: within 1 GiB.
    assert!(
        (free - reported).abs() < f64::from(1u32 << 30),
        "{free} vs {reported}"
    );

    // The check, as the node state says.
    let state: serde_json::Value =
        serde_json::from_slice(&fs::read(b.node_dir().join("state.json")).unwrap()).unwrap();
    assert_eq!(value(&m, "puce_check_last_ok"), 1.0, "{}", state["check"]);
    assert_eq!(value(&m, "puce_check_last_problems"), 0.0);
    assert_eq!(value(&m, "puce_check_coverage_ratio"), 1.0);
    assert_eq!(
        value(&m, "puce_check_last_packs_read"),
        pack_files(&b.repo.path()).len() as f64
    );

    // A failed sync shows at the next scrape, as in the status.
    a.stop();
    b.sync_fails("lyon", &["--pull"]);
    let m = samples(&scrape(&addr));
    let st = b.json(&["node", "status"]);
    assert_eq!(value(&m, &format!("puce_sync_last_ok{lyon}")), 0.0);
    assert_eq!(
        value(&m, &format!("puce_sync_consecutive_failures{lyon}")),
        st["peers"][0]["failures"].as_u64().unwrap() as f64
    );
    assert_eq!(st["peers"][0]["failures"], 1);
    let v = value(
        &m,
        &format!("puce_sync_last_success_timestamp_seconds{lyon}"),
    );
    assert!(
        (v - started).abs() < 1e-3,
        "the last success is still {started}: {v}"
    );

    // Anything but /metrics is not found.
    let (code, _, _) = http::get(&addr, "/");
    assert_eq!(code, 404);
    b.stop();
}

#[test]
fn damage_found_and_healed_by_the_daemon_shows_in_the_metrics() {
    let (mut a, mut b, addr) = pair();
    a.start();
    two_versions(&a);
    b.sync("lyon", &["--pull"]);
    let mut packs = pack_files(&b.repo.path());
    packs.sort_by_key(|p| fs::metadata(p).unwrap().len());
    puce_tests::node::flip_random_bits(packs.last().unwrap(), 6, 73);
    b.start();
    let mut m = BTreeMap::new();
    wait_for("b's check and heal on the metrics page", || {
        m = samples(&scrape(&addr));
        m.contains_key("puce_check_last_run_timestamp_seconds")
    });
    assert!(b.log().contains("heal: "), "{}", b.log());
    let state: serde_json::Value =
        serde_json::from_slice(&fs::read(b.node_dir().join("state.json")).unwrap()).unwrap();
    let c = &state["check"];
    assert!(c["problems"].as_u64().unwrap() > 0, "{c}");
    assert_eq!(value(&m, "puce_check_last_ok"), 0.0);
    for (metric, field) in [
        ("puce_check_last_problems", "problems"),
        ("puce_check_last_healed_objects", "healed"),
        ("puce_check_last_lost_objects", "lost"),
    ] {
        assert_eq!(value(&m, metric), c[field].as_u64().unwrap() as f64, "{c}");
    }
    assert!(value(&m, "puce_check_last_healed_objects") > 0.0);
    assert_eq!(value(&m, "puce_check_last_lost_objects"), 0.0);
    b.stop();
}

/// `puce --json report replicas` on `node`: (exit code, report).
fn replicas(node: &TestNode) -> (i32, serde_json::Value) {
    let out = node.run(&["--json", "report", "replicas"]);
    let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}):\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap(), v)
}

/// The copy of `node` in the report of space 0.
fn copy_of<'a>(r: &'a serde_json::Value, node: &str) -> &'a serde_json::Value {
    r["spaces"][0]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["node"] == node)
        .unwrap_or_else(|| panic!("no copy of {node} in {r:#}"))
}

#[test]
fn a_replica_rule_breaks_holds_and_breaks_again_as_copies_come_and_go() {
    // lyon has `docs`; grenoble pulls it from lyon and pushes it to paris; grenoble wants 3
    // copies: itself, lyon and paris (each checked by its daemon).
    let mut a = TestNode::new("lyon");
    let mut b = TestNode::new("grenoble");
    let mut c = TestNode::new("paris");
    a.add_peer(&b, r#"{ docs = ["pull"] }"#);
    b.add_peer(&a, r#"{ docs = ["push"] }"#);
    b.add_peer(&c, r#"{ docs = ["pull"] }"#);
    c.add_peer(&b, r#"{ docs = ["push"] }"#);
    let addr = format!("127.0.0.1:{}", free_tcp_port());
    b.extra = format!("{CHECK_ALL}[metrics]\nlisten = \"{addr}\"\n");
    b.write_config();
    for n in [&mut a, &mut c] {
        n.extra = CHECK_ALL.into();
        n.write_config();
    }
    let src = a.repo.dir.path().join("src");
    make_tree(&src, 80);
    let head = a.snapshot(&src, "docs");
    b.ok(&["space", "set", "docs", "--copies", "3"]);
    a.start();
    a.wait_checked();
    // paris is down: grenoble's daemon pulls from lyon at start, and fails to reach paris.
    b.start();
    let rule = r#"{space="docs"}"#;
    let mut m = BTreeMap::new();
    wait_for("grenoble to pull from lyon and check its data", || {
        m = samples(&scrape(&addr));
        m.get(&format!("puce_space_replicas{rule}")) == Some(&2.0)
    });
    assert_eq!(value(&m, &format!("puce_space_replicas_wanted{rule}")), 3.0);
    assert_eq!(value(&m, &format!("puce_space_replica_rule_ok{rule}")), 0.0);
    let (code, r) = replicas(&b);
    assert_eq!(code, 1, "{r:#}");
    assert_eq!(r["ok"], false);
    let s = &r["spaces"][0];
    assert_eq!(s["space"], "docs");
    assert_eq!(s["heads"], serde_json::json!([head]));
    assert_eq!(
        (s["copies"].clone(), s["copies_wanted"].clone()),
        (2.into(), 3.into())
    );
    assert_eq!(copy_of(&r, "grenoble")["checked"], true, "{r:#}");
    assert_eq!(copy_of(&r, "lyon")["counts"], true, "{r:#}");
    assert_eq!(copy_of(&r, "lyon")["checked"], true, "{r:#}");
    assert_eq!(copy_of(&r, "paris")["counts"], false, "{r:#}");
    assert!(
        copy_of(&r, "paris")["why_not"]
            .as_str()
            .unwrap()
            .starts_with("never synced"),
        "{r:#}"
    );

    // paris comes up: grenoble's retries push `docs` there, and once paris checked its data
    // and said so at a sync, the rule holds.
    c.start();
    c.wait_checked();
    wait_for("grenoble to push to paris after its check", || {
        let _ = b.run(&["sync", "paris", "--push"]);
        m = samples(&scrape(&addr));
        m.get(&format!("puce_space_replica_rule_ok{rule}")) == Some(&1.0)
    });
    assert_eq!(value(&m, &format!("puce_space_replicas{rule}")), 3.0);
    let paris = r#"{space="docs",node="paris"}"#;
    assert_eq!(value(&m, &format!("puce_replica_counts{paris}")), 1.0);
    let (code, r) = replicas(&b);
    assert_eq!(code, 0, "{r:#}");
    let since = value(
        &m,
        &format!("puce_replica_checked_timestamp_seconds{paris}"),
    );
    let said = copy_of(&r, "paris")["checked_since"].as_str().unwrap();
    let said = said.parse::<jiff::Timestamp>().unwrap().as_nanosecond() as f64 / 1e9;
    assert!((since - said).abs() < 1e-3, "{since} != {said}");
    puce_tests::golden::assert_json_schema("report-replicas", &r);
    assert_eq!(copy_of(&r, "paris")["heads"], serde_json::json!([head]));
    assert!(copy_of(&r, "paris")["age_seconds"].as_u64().unwrap() < 3600);
    let text = b.run(&["report", "replicas"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("3 of 3 copies wanted: ok"), "{text}");

    // A new head here that no peer has yet: only this node's copy is current.
    let src2 = b.repo.dir.path().join("src2");
    make_tree(&src2, 81);
    b.snapshot(&src2, "docs");
    let (code, r) = replicas(&b);
    assert_eq!(code, 1, "{r:#}");
    assert_eq!(r["spaces"][0]["copies"], 1, "{r:#}");
    assert_eq!(
        copy_of(&r, "paris")["why_not"],
        "held 0 of 1 heads at the last contact",
        "{r:#}"
    );
    let m = samples(&scrape(&addr));
    assert_eq!(value(&m, &format!("puce_space_replica_rule_ok{rule}")), 0.0);
    // The same as a page for people, escaped.
    let page = b.repo.dir.path().join("replicas.html");
    let out = b.run(&["report", "replicas", "--html", page.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.starts_with("<!doctype html>"), "{html}");
    assert!(html.contains("1 of 3 copies wanted: RULE BROKEN"), "{html}");
    assert!(
        html.contains("<td>paris</td>") && html.contains("held 0 of 1 heads"),
        "{html}"
    );
    assert!(html.contains("grenoble (this node)"), "{html}");
    b.stop();
    c.stop();
    a.stop();
}

#[test]
fn a_copy_counts_once_its_holder_says_it_checked_its_data_and_not_from_an_older_peer() {
    // grenoble wants 2 copies of `docs`: itself and lyon, which holds it. lyon's daemon does
    // not check its data at first; paris speaks protocol revision 3 (no GetChecks).
    let mut a = TestNode::new("lyon");
    let mut b = TestNode::new("grenoble");
    let mut c = TestNode::new("paris");
    a.add_peer(&b, r#"{ docs = ["pull"] }"#);
    b.add_peer(&a, r#"{ docs = ["push"] }"#);
    b.add_peer(&c, r#"{ docs = ["pull"] }"#);
    c.add_peer(&b, r#"{ docs = ["push"] }"#);
    b.extra = CHECK_ALL.into();
    b.write_config();
    c.extra = CHECK_ALL.into();
    c.write_config();
    let src = a.repo.dir.path().join("src");
    make_tree(&src, 82);
    a.snapshot(&src, "docs");
    b.ok(&["space", "set", "docs", "--copies", "2"]);
    a.start();
    c.start_with(&[("PUCE_TEST_FAULT", "revision-3")]);
    b.start();
    b.wait_checked();
    c.wait_checked();
    b.sync("lyon", &["--pull"]);
    b.sync("paris", &["--push"]);
    let (code, r) = replicas(&b);
    assert_eq!(code, 1, "{r:#}");
    assert_eq!(r["spaces"][0]["copies"], 1, "{r:#}");
    assert_eq!(copy_of(&r, "grenoble")["counts"], true, "{r:#}");
    let lyon = copy_of(&r, "lyon");
    assert_eq!(
        (&lyon["complete"], &lyon["counts"]),
        (&true.into(), &false.into())
    );
    assert_eq!(
        lyon["why_not"],
        "it says its checks have not yet read all of its data ([check] in node.toml)",
        "{r:#}"
    );
    let paris = copy_of(&r, "paris");
    assert_eq!(
        (&paris["complete"], &paris["counts"]),
        (&true.into(), &false.into())
    );
    assert_eq!(
        paris["why_not"],
        "unchecked: it speaks protocol revision 3, which does not report data checks \
         (revision 4 does): upgrade puce there",
        "{r:#}"
    );
    let text = String::from_utf8_lossy(&b.run(&["report", "replicas"]).stdout).into_owned();
    assert!(text.contains("1 of 2 copies wanted: RULE BROKEN"), "{text}");
    assert!(
        text.contains("no: unchecked: it speaks protocol revision 3"),
        "{text}"
    );

    // lyon's daemon now checks its data; at the next sync it says so, and the rule holds.
    a.stop();
    a.extra = CHECK_ALL.into();
    a.write_config();
    a.start();
    let check = a.wait_checked();
    b.sync("lyon", &["--pull"]);
    let (code, r) = replicas(&b);
    assert_eq!(code, 0, "{r:#}");
    let lyon = copy_of(&r, "lyon");
    assert_eq!(
        (&lyon["checked"], &lyon["counts"]),
        (&true.into(), &true.into()),
        "{r:#}"
    );
    // Since the start of its check, as lyon's node state says.
    let since =
        jiff::Timestamp::from_nanosecond(i128::from(check["last_ns"].as_i64().unwrap())).unwrap();
    assert_eq!(lyon["checked_since"], since.to_string(), "{r:#}");
    b.stop();
    c.stop();
    a.stop();
}
