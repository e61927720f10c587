//! Admin features end to end: forget with policies, gc (also concurrent with snapshots and
//! killed at random moments), and the dedup, retention and growth reports.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::fs;
use std::process::{Command, Stdio};
use std::time::Duration;

use puce_tests::golden::assert_json_schema;
use puce_tests::{Manifest, TestRepo, make_tree, manifest, random_bytes};

/// A repository with 6 daily snapshots of a changing folder in space "s".
fn history(repo: &TestRepo) -> (std::path::PathBuf, HashMap<String, Manifest>) {
    let src = repo.dir.path().join("src");
    make_tree(&src, 1);
    let mut expect = HashMap::new();
    for day in 1..=6u64 {
        fs::write(
            src.join(format!("day{day}.bin")),
            random_bytes(500_000, 1000 + day),
        )
        .unwrap();
        fs::write(src.join("changing.bin"), random_bytes(300_000, 100 + day)).unwrap();
        let v = repo.json(&[
            "snapshot",
            src.to_str().unwrap(),
            "--space",
            "s",
            "--time",
            &format!("2024-03-0{day}T02:00:00Z"),
        ]);
        expect.insert(v["id"].as_str().unwrap().to_string(), manifest(&src));
    }
    (src, expect)
}

fn stored(repo: &TestRepo) -> u64 {
    repo.json(&["report", "dedup"])["stored_bytes"]
        .as_u64()
        .unwrap()
}

fn restore_all(repo: &TestRepo, expect: &HashMap<String, Manifest>) -> usize {
    let snaps = repo.json(&["snapshots"]);
    let mut n = 0;
    for s in snaps.as_array().unwrap() {
        let id = s["id"].as_str().unwrap();
        let Some(m) = expect.get(id) else { continue };
        let out = repo.dir.path().join(format!("r-{id}"));
        repo.ok(&["restore", id, out.to_str().unwrap()]);
        assert_eq!(&manifest(&out), m, "snapshot {id}");
        fs::remove_dir_all(&out).unwrap();
        n += 1;
    }
    n
}

#[test]
fn forget_dry_run_explains_and_changes_nothing() {
    let repo = TestRepo::new();
    history(&repo);
    let v = repo.json(&[
        "forget",
        "--keep-last",
        "2",
        "--keep-tag",
        "none",
        "--dry-run",
    ]);
    assert_json_schema("forget-dry-run", &v);
    let d = v["decisions"].as_array().unwrap();
    assert_eq!(d.len(), 6);
    assert_eq!(d.iter().filter(|d| d["keep"] == true).count(), 2);
    assert_eq!(d[0]["reasons"][0], "last");
    assert_eq!(repo.json(&["snapshots"]).as_array().unwrap().len(), 6);
    let text = repo.ok(&["forget", "--keep-daily", "3", "-n"]);
    assert!(text.contains("would remove 3 of 6 snapshots"), "{text}");
    assert!(text.contains("daily"));
}

#[test]
fn stored_policy_is_applied_by_forget() {
    let repo = TestRepo::new();
    history(&repo);
    // No policy at all: forget refuses rather than guessing.
    assert_eq!(repo.run(&["forget"]).status.code(), Some(2));
    repo.ok(&["policy", "set", "s", "--keep-daily", "2"]);
    let shown = repo.json(&["policy", "show"]);
    assert_json_schema("policy-show", &shown);
    assert_eq!(shown[0]["space"], "s");
    assert_eq!(shown[0]["policy"]["keep_daily"], 2);
    let v = repo.json(&["forget"]);
    assert_json_schema("forget", &v);
    assert_eq!(v["removed"].as_array().unwrap().len(), 4);
    assert_eq!(repo.json(&["snapshots"]).as_array().unwrap().len(), 2);
    repo.ok(&["policy", "unset", "s"]);
    assert_eq!(repo.json(&["policy", "show"]).as_array().unwrap().len(), 0);
}

#[test]
fn retention_report_predicts_exactly_what_gc_frees() {
    let repo = TestRepo::with_init(&["--pack-size", "1"]);
    let (_, expect) = history(&repo);
    let before = stored(&repo);
    let r = repo.json(&["report", "retention", "--keep-last", "2"]);
    assert_json_schema("report-retention", &r);
    assert_eq!(r["removed"], 4);
    let freed = r["freed_bytes"].as_u64().unwrap();
    assert!(freed > 1_000_000, "four days of unique data: {freed}");
    // gc --dry-run changes nothing.
    let plan = repo.json(&["gc", "--dry-run"]);
    assert_eq!(plan["packs_deleted"], 0);
    repo.json(&["forget", "--keep-last", "2"]);
    assert_json_schema("gc-dry-run", &repo.json(&["gc", "--dry-run"]));
    let packs_before: u64 = repo.json(&["gc", "--dry-run"])["bytes_before"]
        .as_u64()
        .unwrap();
    let g = repo.json(&["gc", "--repack-unused", "0"]);
    assert_json_schema("gc", &g);
    assert!(g["bytes_freed"].as_u64().unwrap() > 0);
    let after = stored(&repo);
    assert_eq!(
        before - after,
        freed,
        "report said {freed}, gc freed {}",
        before - after
    );
    let packs_after: u64 = repo.json(&["gc", "--dry-run"])["bytes_before"]
        .as_u64()
        .unwrap();
    assert!(packs_after < packs_before);
    repo.ok(&["check", "--read-data"]);
    assert_eq!(restore_all(&repo, &expect), 2);
    // Nothing left to do.
    let again = repo.json(&["gc", "--repack-unused", "0"]);
    assert_eq!(again["packs_deleted"], 0);
    assert_eq!(again["packs_repacked"], 0);
}

#[test]
fn reports_have_stable_json_and_sane_numbers() {
    let repo = TestRepo::new();
    let (src, _) = history(&repo);
    let d = repo.json(&["report", "dedup"]);
    let dirs = d["largest_dirs"].as_array().unwrap();
    let docs = dirs
        .iter()
        .find(|x| x["path"] == "docs")
        .expect("docs is listed");
    assert!(docs["unique_bytes"].as_u64().unwrap() > 3_000_000, "{docs}");
    // A second space holding a copy of the same files: dedup across spaces.
    let copy = repo.dir.path().join("copy");
    assert!(
        Command::new("cp")
            .arg("-a")
            .arg(&src)
            .arg(&copy)
            .status()
            .unwrap()
            .success()
    );
    repo.ok(&[
        "snapshot",
        copy.to_str().unwrap(),
        "--space",
        "t",
        "--time",
        "2024-03-07T02:00:00Z",
    ]);
    // A time a 64-bit count of nanoseconds cannot hold is refused (it was stored wrapped).
    let out = repo.run(&[
        "snapshot",
        copy.to_str().unwrap(),
        "--space",
        "t",
        "--time",
        "9000-01-01T00:00:00Z",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("out of the range 1678 to 2262"), "{err}");
    let d = repo.json(&["report", "dedup"]);
    assert_json_schema("report-dedup", &d);
    for k in [
        "logical_bytes",
        "unique_bytes",
        "stored_bytes",
        "pack_bytes",
    ] {
        assert!(d[k].as_u64().unwrap() > 0, "{k}");
    }
    assert!(d["dedup_ratio"].as_f64().unwrap() > 3.0);
    let spaces = d["spaces"].as_array().unwrap();
    assert_eq!(spaces.len(), 2);
    let t = spaces.iter().find(|s| s["space"] == "t").unwrap();
    // Everything in t is also in s: same content and times, so even the trees are shared.
    assert_eq!(t["unique_bytes"], 0, "{t}");
    // The copy of every file is listed as stored twice.
    let dup = &d["duplicates"][0];
    assert_eq!(dup["copies"], 2);
    assert!(dup["paths"][0].as_str().unwrap().starts_with("s:"));
    assert!(dup["paths"][1].as_str().unwrap().starts_with("t:"));
    // Now docs/ is shared with space t: no longer unique to a folder.
    let dirs = d["largest_dirs"].as_array().unwrap();
    assert!(!dirs.iter().any(|x| x["path"] == "docs"), "{dirs:?}");
    // Snapshot rows: the first added most, each has bytes only it holds (changing.bin).
    let snaps = d["snapshots"].as_array().unwrap();
    assert_eq!(snaps.len(), 7);
    assert!(snaps[0]["added_bytes"].as_u64().unwrap() > snaps[1]["added_bytes"].as_u64().unwrap());
    assert!(snaps[1]["only_bytes"].as_u64().unwrap() >= 300_000 / 2);
    let g = repo.json(&["report", "growth"]);
    assert_json_schema("report-growth", &g);
    let days = g["days"].as_array().unwrap();
    assert_eq!(days.len(), 7);
    assert_eq!(
        days[6]["total"].as_u64().unwrap(),
        g["stored_bytes"].as_u64().unwrap()
    );
    assert!(g["bytes_per_day"].as_f64().unwrap() > 0.0);
    assert!(g["days_to_full"].as_f64().unwrap() > 0.0);
    assert!(g["full_on"].as_str().unwrap().len() == 10);
    // Scoped to a space.
    let ds = repo.json(&["report", "dedup", "--space", "s"]);
    assert_eq!(ds["spaces"].as_array().unwrap().len(), 1);
    assert_eq!(
        repo.run(&["report", "dedup", "--space", "nope"])
            .status
            .code(),
        Some(1)
    );
    // Tables print.
    let text = repo.ok(&["report", "dedup"]);
    assert!(text.contains("Largest folders") && text.contains("Files stored most often"));
    let text = repo.ok(&["report", "growth"]);
    assert!(text.contains("2024-03-07"));
}

/// The `--json` output of the commands not pinned above keeps its fields and their types
/// (golden files in `tests/golden/json/`, see [`puce_tests::golden`]); the values that do
/// not vary are checked too.
#[test]
fn json_outputs_keep_their_golden_schemas() {
    let repo = TestRepo::new();
    let other = repo.dir.path().join("other");
    let v = repo.json(&["init", "--encrypt", "--repo", other.to_str().unwrap()]);
    assert_json_schema("init", &v);
    assert!(other.join("config").is_file(), "{v}");
    let src = repo.dir.path().join("src");
    make_tree(&src, 3);
    let first = repo.json(&["snapshot", src.to_str().unwrap(), "--space", "s"]);
    assert_json_schema("snapshot", &first);
    fs::write(src.join("readme.txt"), "changed").unwrap();
    fs::remove_file(src.join("docs/empty.txt")).unwrap();
    fs::write(src.join("new.txt"), "new").unwrap();
    let second = repo.json(&["snapshot", src.to_str().unwrap(), "--space", "s"]);
    let snaps = repo.json(&["snapshots"]);
    assert_json_schema("snapshots", &snaps);
    assert_eq!(snaps.as_array().unwrap().len(), 2);
    let ls = repo.json(&["ls", "s@latest"]);
    assert_json_schema("ls", &ls);
    assert!(ls.as_array().unwrap().iter().any(|e| e["path"] == "link"));
    let (a, b) = (
        first["id"].as_str().unwrap(),
        second["id"].as_str().unwrap(),
    );
    let d = repo.json(&["diff", a, b]);
    assert_json_schema("diff", &d);
    assert_eq!(d["changes"].as_array().unwrap().len(), 3, "{d}");
    let out = repo.dir.path().join("out");
    let r = repo.json(&["restore", "s@latest", out.to_str().unwrap()]);
    assert_json_schema("restore", &r);
    assert_eq!(r["snapshot"], second["id"]);
    assert_eq!(manifest(&out), manifest(&src));
    let c = repo.json(&["check", "--read-data"]);
    assert_json_schema("check", &c);
    assert_eq!(c["ok"], true);
    let ri = repo.json(&["repair", "index"]);
    assert_json_schema("repair-index", &ri);
    assert_eq!(ri["snapshots"], 2);
    let p = repo.json(&["policy", "set", "s", "--keep-daily", "2"]);
    assert_json_schema("policy-set", &p);
    assert_eq!(p["policy"]["keep_daily"], 2);
}

#[test]
fn html_reports_render_in_headless_chromium() {
    let Some(chrome) = puce_tests::require(puce_tests::Need::Chromium) else {
        return;
    };
    let repo = TestRepo::new();
    history(&repo);
    let dir = repo.dir.path();
    for (name, args) in [
        ("dedup", vec!["report", "dedup"]),
        ("growth", vec!["report", "growth"]),
        ("retention", vec!["report", "retention", "--keep-last", "2"]),
    ] {
        let html = dir.join(format!("{name}.html"));
        let mut a = args.clone();
        a.extend(["--html", html.to_str().unwrap()]);
        repo.ok(&a);
        let page = fs::read_to_string(&html).unwrap();
        assert!(
            !page.contains("http://") && !page.contains("https://"),
            "self-contained"
        );
        let base = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ];
        let profile = dir.join(format!("chrome-{name}"));
        let url = format!("file://{}", html.display());
        let dom = Command::new(&chrome)
            .args(base)
            .arg(format!("--user-data-dir={}", profile.display()))
            .args(["--virtual-time-budget=3000", "--dump-dom", &url])
            .stderr(Stdio::null())
            .output()
            .unwrap();
        let dom = String::from_utf8_lossy(&dom.stdout);
        assert!(
            dom.contains(r#"data-charts-rendered="3""#),
            "{name}: the three charts did not render:\n{}",
            &dom[..dom.len().min(500)]
        );
        for id in ["chart-growth", "chart-spaces", "chart-savings"] {
            assert!(dom.contains(id), "{name}: {id} missing");
        }
        let png = dir.join(format!("{name}.png"));
        let st = Command::new(&chrome)
            .args(base)
            .arg(format!("--user-data-dir={}", profile.display()))
            .args([
                "--window-size=1100,1600",
                &format!("--screenshot={}", png.display()),
                &url,
            ])
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success());
        let img = fs::read(&png).unwrap();
        assert_eq!(&img[1..4], b"PNG");
        assert!(img.len() > 20_000, "{name}: screenshot looks empty");
        if let Ok(keep) = std::env::var("PUCE_KEEP_SCREENSHOTS") {
            fs::copy(
                &png,
                std::path::Path::new(&keep).join(format!("report-{name}.png")),
            )
            .unwrap();
        }
    }
}

#[test]
fn gc_and_snapshots_run_concurrently_without_loss() {
    let rounds: u64 = std::env::var("PUCE_GC_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let repo = TestRepo::with_init(&["--pack-size", "1"]);
    let src = repo.dir.path().join("src");
    make_tree(&src, 2);
    let mut expect: HashMap<String, Manifest> = HashMap::new();
    // gc loop in the background: forget all but the 2 newest, then gc, again and again.
    let stop = repo.dir.path().join("stop");
    let gc_loop = {
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg(format!(
                "while [ ! -e {stop} ]; do {puce} -q forget --keep-last 2 >/dev/null 2>&1; \
                 {puce} --json gc --repack-unused 0 >> {log} 2>&1 || echo GCFAIL >> {log}; done",
                stop = stop.display(),
                puce = puce_tests::puce_bin().display(),
                log = repo.dir.path().join("gc.log").display()
            ))
            .env("PUCE_REPO", repo.path())
            .env("XDG_CACHE_HOME", repo.dir.path().join("cache"))
            .env("XDG_CONFIG_HOME", repo.dir.path().join("config"));
        c.spawn().unwrap()
    };
    for r in 0..rounds {
        for i in 0..6 {
            fs::write(
                src.join(format!("f{i}.bin")),
                random_bytes(250_000, r * 100 + i),
            )
            .unwrap();
        }
        // Some content shared with earlier rounds, so dedup hits objects gc may be condemning.
        fs::write(src.join("shared.bin"), random_bytes(400_000, r % 3)).unwrap();
        let m = manifest(&src);
        let v = repo.json(&["snapshot", src.to_str().unwrap(), "--space", "s"]);
        expect.insert(v["id"].as_str().unwrap().to_string(), m);
    }
    fs::write(&stop, b"").unwrap();
    let mut gc_loop = gc_loop;
    gc_loop.wait().unwrap();
    let log = fs::read_to_string(repo.dir.path().join("gc.log")).unwrap_or_default();
    assert!(!log.contains("GCFAIL"), "a gc failed:\n{log}");
    let gcs = log
        .lines()
        .filter(|l| l.contains("\"live_objects\""))
        .count();
    let sum = |k: &str| -> u64 {
        log.lines()
            .filter_map(|l| l.trim().strip_prefix(&format!("\"{k}\": ")))
            .filter_map(|v| v.trim_end_matches(',').parse::<u64>().ok())
            .sum()
    };
    eprintln!(
        "concurrent gc: {} waits for running snapshots, {} objects rescued, {} bytes freed",
        sum("sessions_waited"),
        sum("rescued"),
        sum("bytes_freed")
    );
    assert!(gcs > 0, "no gc ran:\n{log}");
    repo.ok(&["check", "--read-data"]);
    let n = restore_all(&repo, &expect);
    assert!(n >= 2, "the kept snapshots restore ({n})");
    // A final gc finds a clean repository: nothing condemned left behind.
    repo.ok(&["gc"]);
    repo.ok(&["check", "--read-data"]);
    eprintln!("concurrent gc: {rounds} snapshots, {gcs} gc runs, {n} snapshots verified");
}

#[test]
fn gc_killed_at_random_moments_leaves_a_consistent_repository() {
    let iters: u64 = std::env::var("PUCE_GC_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let mut seed = 0x9e37_79b9u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let repo = TestRepo::with_init(&["--pack-size", "1"]);
    let src = repo.dir.path().join("src");
    make_tree(&src, 3);
    let mut expect: HashMap<String, Manifest> = HashMap::new();
    let mut killed = 0;
    let mut window = 40u64;
    for it in 0..iters {
        // New garbage each round: snapshots, then forget most.
        for r in 0..3 {
            for i in 0..4 {
                fs::write(
                    src.join(format!("f{i}.bin")),
                    random_bytes(200_000, it * 1000 + r * 10 + i),
                )
                .unwrap();
            }
            let m = manifest(&src);
            let v = repo.json(&["snapshot", src.to_str().unwrap(), "--space", "s"]);
            expect.insert(v["id"].as_str().unwrap().to_string(), m);
        }
        repo.ok(&["-q", "forget", "--keep-last", "2"]);
        let mut child = repo
            .cmd()
            .args(["-q", "gc", "--repack-unused", "0"])
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(next() % (window + 1)));
        let _ = child.kill();
        if child.wait().unwrap().success() {
            window = window * 9 / 10;
        } else {
            killed += 1;
            window = window * 11 / 10 + 1;
        }
        repo.ok(&["check"]);
        restore_all(&repo, &expect);
    }
    // The next gc finishes the job: afterwards nothing is left to delete or repack.
    repo.ok(&["gc", "--repack-unused", "0"]);
    let plan = repo.json(&["gc", "--dry-run", "--repack-unused", "0"]);
    assert_eq!(plan["packs_deleted"], 0, "{plan}");
    assert_eq!(plan["packs_repacked"], 0, "{plan}");
    assert_eq!(plan["packs_orphaned"], 0, "{plan}");
    repo.ok(&["check", "--read-data"]);
    assert!(killed > 0, "no gc was interrupted");
    eprintln!("gc kill test: {iters} runs, {killed} killed");
}
