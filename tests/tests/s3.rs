//! The S3 backend against a real Garage server started by the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use puce_tests::garage::Garage;
use puce_tests::{Manifest, is_mounted, make_tree, manifest, random_bytes};

/// A Garage server for the running test, with the test's directory; `None` when no garage
/// binary is installed (see [`puce_tests::require`]: the test skips, or fails under CI).
fn start_garage() -> Option<(tempfile::TempDir, Garage)> {
    let bin = puce_tests::require(puce_tests::Need::Garage)?;
    let dir = tempfile::tempdir().unwrap();
    let garage = Garage::start(bin, &dir.path().join("garage"), "puce");
    Some((dir, garage))
}

struct S3Repo {
    env: Vec<(&'static str, String)>,
    local: std::path::PathBuf,
    cache: std::path::PathBuf,
}

impl S3Repo {
    fn cmd(&self) -> Command {
        let mut c = Command::new(puce_tests::puce_bin());
        c.env("PUCE_REPO", &self.local)
            .env("XDG_CACHE_HOME", &self.cache)
            .env("XDG_CONFIG_HOME", self.cache.with_extension("config"))
            .env("PUCE_S3_RETRY_SECS", "4")
            .env_remove("PUCE_S3_CREDENTIALS");
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }
    fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().unwrap()
    }
    fn ok(&self, args: &[&str]) -> String {
        puce_tests::expect_ok("", args, self.run(args))
    }
    fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        serde_json::from_str(&self.ok(&a)).unwrap()
    }
}

/// The bucket of `repo`, opened directly (to see or damage what puce stored there).
fn bucket(garage: &Garage, repo: &S3Repo, dir: &Path) -> puce_s3::S3Backend {
    puce_s3::S3Backend::open(puce_s3::S3Config {
        location: puce_s3::S3Location::load(&repo.local).unwrap().unwrap(),
        credentials: puce_s3::Credentials {
            access_key_id: garage.key_id.clone(),
            secret_access_key: garage.secret.clone(),
            session_token: None,
        },
        retry_timeout: std::time::Duration::from_secs(10),
        cache_bytes: 0,
        tmp_dir: dir.join("s3-tmp"),
    })
    .unwrap()
}

fn init(garage: &Garage, dir: &Path, name: &str, extra: &[&str]) -> S3Repo {
    let r = S3Repo {
        env: garage.env(),
        local: dir.join(name),
        cache: dir.join(format!("cache-{name}")),
    };
    let url = format!("s3://{}/repo", garage.bucket);
    let mut args = vec![
        "init",
        "-q",
        "--backend",
        &url,
        "--endpoint",
        &garage.endpoint,
        "--region",
        "garage",
    ];
    args.extend_from_slice(extra);
    let key = puce_tests::association_key().to_str().unwrap();
    if !extra
        .iter()
        .any(|a| ["--encrypt", "--no-encrypt"].contains(a))
    {
        args.extend_from_slice(&["--key-from", key]);
    }
    r.ok(&args);
    r
}

#[test]
fn snapshot_restore_check_gc_and_repair_on_garage() {
    let Some((dir, garage)) = start_garage() else {
        return;
    };
    let repo = init(&garage, dir.path(), "local", &["--pack-size", "1"]);
    assert!(repo.local.join("backend.toml").is_file());
    let marker = fs::read_to_string(repo.local.join("backend.toml")).unwrap();
    assert!(
        !marker.contains(&garage.secret),
        "credentials must not be stored"
    );
    // No pack and no config on local disk: they live in the bucket.
    assert!(!repo.local.join("config").exists());

    let src = dir.path().join("src");
    make_tree(&src, 21);
    let mut expect: HashMap<String, Manifest> = HashMap::new();
    for day in 0..4u64 {
        fs::write(src.join("day.bin"), random_bytes(1_500_000, 300 + day)).unwrap();
        let v = repo.json(&["snapshot", src.to_str().unwrap(), "--space", "s"]);
        expect.insert(v["id"].as_str().unwrap().to_string(), manifest(&src));
    }
    repo.ok(&["check", "--read-data"]);

    // The config in the bucket damaged: the next command writes it back from the local
    // index's copy, and check reports it once.
    {
        use puce_core::backend::{Backend, FileKind};
        let backend = bucket(&garage, &repo, dir.path());
        let pristine = backend.read(FileKind::Config, "config").unwrap();
        let mut damaged = pristine.clone();
        damaged[pristine.len() / 2] ^= 0x04;
        backend.write(FileKind::Config, "config", &damaged).unwrap();
        let c = repo.run(&["--json", "check"]);
        assert_eq!(c.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&c.stdout).contains("config_healed"));
        assert!(String::from_utf8_lossy(&c.stderr).contains("restored it from the copy"));
        assert_eq!(backend.read(FileKind::Config, "config").unwrap(), pristine);
        repo.ok(&["check"]);
    }
    for (id, m) in &expect {
        let out = dir.path().join(format!("out-{id}"));
        repo.ok(&["restore", id, out.to_str().unwrap()]);
        assert_eq!(&manifest(&out), m);
    }
    // gc on S3: forget two, collect, everything left still checks and restores.
    repo.ok(&["forget", "--keep-last", "2"]);
    let g = repo.json(&["gc", "--repack-unused", "0"]);
    assert!(g["bytes_freed"].as_u64().unwrap() > 1_000_000, "{g}");
    repo.ok(&["check", "--read-data"]);
    let kept: Vec<String> = repo
        .json(&["snapshots"])
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(kept.len(), 2);

    // A fresh machine: a second, empty local index attached to the same bucket.
    let other = S3Repo {
        env: garage.env(),
        local: dir.path().join("second"),
        cache: dir.path().join("cache-second"),
    };
    let url = format!("s3://{}/repo", garage.bucket);
    // Without --attach, init refuses to overwrite the existing repository.
    let refused = other.run(&["init", "--backend", &url, "--endpoint", &garage.endpoint]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--attach"));
    let attach = [
        "init",
        "-q",
        "--backend",
        &url,
        "--endpoint",
        &garage.endpoint,
        "--attach",
    ];
    // The new machine needs the association's key, and says so.
    let keyless = other.run(&attach);
    assert_eq!(keyless.status.code(), Some(1));
    let err = String::from_utf8_lossy(&keyless.stderr);
    assert!(
        err.contains("encrypted") && err.contains("--key-file"),
        "{err}"
    );
    let key = puce_tests::association_key().to_str().unwrap();
    other.ok(&[&attach[..], &["--key-from", key]].concat());
    // The key is kept on the new machine: later commands find it without being told.
    let r = other.json(&["repair", "index"]);
    assert_eq!(r["snapshots"], 2);
    other.ok(&["check", "--read-data"]);
    for id in &kept {
        let out = dir.path().join(format!("second-{id}"));
        other.ok(&["restore", id, out.to_str().unwrap()]);
        assert_eq!(&manifest(&out), &expect[id]);
    }
}

#[test]
fn garage_killed_during_a_snapshot() {
    let Some((dir, mut garage)) = start_garage() else {
        return;
    };
    let repo = init(&garage, dir.path(), "local", &["--pack-size", "1"]);
    let src = dir.path().join("src");
    make_tree(&src, 22);
    let first = repo.json(&["snapshot", src.to_str().unwrap(), "--space", "s"]);
    let first_id = first["id"].as_str().unwrap().to_string();
    let first_manifest = manifest(&src);
    // A big change, then kill the server once the upload is under way (its data directory
    // has grown by a few packs).
    for i in 0..60 {
        fs::write(
            src.join(format!("big{i}.bin")),
            random_bytes(2_000_000, 500 + i),
        )
        .unwrap();
    }
    let data_size = || dir_size(&garage.dir.join("data"));
    let before = data_size();
    let mut child = repo
        .cmd()
        .args(["snapshot", src.to_str().unwrap(), "--space", "s"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    while data_size() < before + 3_000_000 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the snapshot ended before the kill"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    garage.kill();
    let out = child.wait_with_output().unwrap();
    assert!(
        !out.status.success(),
        "the snapshot must fail when the server is gone"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    eprintln!("what the user saw: {}", err.trim());
    assert!(
        err.contains("did not answer") || err.contains("failed"),
        "unclear error: {err}"
    );
    assert!(
        err.contains("s3://puce/repo"),
        "the error names the store: {err}"
    );
    // Back up: nothing committed is lost, and the next snapshot succeeds.
    garage.restart();
    repo.ok(&["check"]);
    let out_dir = dir.path().join("out-first");
    repo.ok(&["restore", &first_id, out_dir.to_str().unwrap()]);
    assert_eq!(manifest(&out_dir), first_manifest);
    let second = repo.json(&["snapshot", src.to_str().unwrap(), "--space", "s"]);
    let out2 = dir.path().join("out-second");
    repo.ok(&[
        "restore",
        second["id"].as_str().unwrap(),
        out2.to_str().unwrap(),
    ]);
    assert_eq!(manifest(&out2), manifest(&src));
    repo.ok(&["check", "--read-data"]);
}

fn dir_size(p: &Path) -> u64 {
    let mut n = 0;
    if let Ok(rd) = fs::read_dir(p) {
        for e in rd.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => n += dir_size(&e.path()),
                Ok(_) => n += e.metadata().map(|m| m.len()).unwrap_or(0),
                Err(_) => {}
            }
        }
    }
    n
}

#[test]
fn missing_credentials_are_explained() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(puce_tests::puce_bin())
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env("PUCE_S3_CREDENTIALS", dir.path().join("none.toml"))
        .env("PUCE_REPO", dir.path().join("r"))
        .args([
            "init",
            "--backend",
            "s3://b/p",
            "--endpoint",
            "http://127.0.0.1:1",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("AWS_ACCESS_KEY_ID"));
}

/// Replication works the same with packs on S3: a node whose repository lives on Garage serves
/// a pull (objects read from the bucket) and receives a push (packs written to the bucket).
#[test]
fn a_node_on_garage_replicates_both_ways() {
    use puce_tests::node::TestNode;
    let Some((dir, garage)) = start_garage() else {
        return;
    };
    let env: Vec<(String, String)> = garage
        .env()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .chain([("PUCE_S3_RETRY_SECS".to_string(), "4".to_string())])
        .collect();
    // The repository of `paris` is on Garage (its index and node files stay local).
    let repo = puce_tests::TestRepo {
        dir: tempfile::tempdir().unwrap(),
    };
    let url = format!("s3://{}/paris", garage.bucket);
    let args = [
        "init",
        "-q",
        "--backend",
        &url,
        "--endpoint",
        &garage.endpoint,
        "--region",
        "garage",
        "--key-from",
        puce_tests::association_key().to_str().unwrap(),
    ];
    let out = repo
        .cmd()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .args(args)
        .output()
        .unwrap();
    puce_tests::expect_ok("", &args, out);
    let mut paris = TestNode::with_env("paris", repo, "127.0.0.1", None, env);
    let mut lyon = TestNode::new("lyon");
    let both = r#"{ docs = ["pull", "push"] }"#;
    paris.add_peer(&lyon, both);
    lyon.add_peer(&paris, both);
    paris.start();

    // Pull from the node on S3.
    let src = dir.path().join("src");
    make_tree(&src, 21);
    fs::write(src.join("big.bin"), random_bytes(3_000_000, 21)).unwrap();
    paris.snapshot(&src, "docs");
    lyon.sync("paris", &["--pull"]);
    let out = lyon.repo.dir.path().join("from-paris");
    lyon.ok(&["-q", "restore", "docs@latest", out.to_str().unwrap()]);
    assert_eq!(manifest(&out), manifest(&src));

    // Push into the node on S3.
    let lsrc = lyon.repo.dir.path().join("lsrc");
    fs::rename(&out, &lsrc).unwrap();
    fs::write(lsrc.join("new.bin"), random_bytes(2_000_000, 22)).unwrap();
    lyon.snapshot(&lsrc, "docs");
    lyon.sync("paris", &["--push"]);
    paris.stop();
    let back = dir.path().join("back");
    paris.ok(&["-q", "restore", "docs@latest", back.to_str().unwrap()]);
    assert_eq!(manifest(&back), manifest(&lsrc));
    paris.ok(&["check", "--read-data"]);
    // Nothing of the repository's data is on the local disk of `paris`.
    assert!(puce_tests::node::pack_files(&paris.repo.path()).is_empty());
}

/// Removes a mount left behind by a failed test.
struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        if is_mounted(&self.0) {
            let _ = Command::new("fusermount3")
                .args(["-u", "-z"])
                .arg(&self.0)
                .status();
        }
    }
}

/// `puce mount` of a repository on Garage: a 24 MiB file read back through `snapshots/` and
/// `spaces/` (long enough for the mount to ask for windows ahead), a file written in a space,
/// then SIGTERM. The change is committed and the mount removed: the S3
/// client's threads, started when the repository is opened, must not take the signal (they
/// did, and the process died leaving a stale mount).
#[test]
fn a_mount_on_garage_serves_commits_and_unmounts_on_sigterm() {
    if puce_tests::require(puce_tests::Need::Fuse).is_none() {
        return;
    }
    let Some((dir, garage)) = start_garage() else {
        return;
    };
    let repo = init(&garage, dir.path(), "m", &[]);
    let src = dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    let big = random_bytes(24 << 20, 11);
    fs::write(src.join("big.bin"), &big).unwrap();
    repo.ok(&["snapshot", "-q", src.to_str().unwrap(), "--space", "s"]);
    let mnt = dir.path().join("mnt");
    fs::create_dir_all(&mnt).unwrap();
    let _guard = Unmount(mnt.clone());
    let log = dir.path().join("mount.log");
    let mut child = repo
        .cmd()
        .args(["mount", mnt.to_str().unwrap(), "--commit-delay", "60"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !is_mounted(&mnt) {
        if let Some(st) = child.try_wait().unwrap() {
            panic!(
                "puce mount exited ({st}): {}",
                fs::read_to_string(&log).unwrap()
            );
        }
        assert!(std::time::Instant::now() < deadline, "no mount after 60 s");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let snap = fs::read_dir(mnt.join("snapshots/s"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert!(fs::read(snap.join("big.bin")).unwrap() == big);
    assert!(fs::read(mnt.join("spaces/s/big.bin")).unwrap() == big);
    fs::write(mnt.join("spaces/s/new.txt"), b"written before SIGTERM").unwrap();
    // With a 60 s commit delay, only the SIGTERM path commits it.
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let st = child.wait().unwrap();
    let text = fs::read_to_string(&log).unwrap();
    assert!(st.success(), "puce mount ended with {st}: {text}");
    assert!(!is_mounted(&mnt), "a stale mount is left: {text}");
    assert_eq!(
        repo.run(&["cat", "s@latest:new.txt"]).stdout,
        b"written before SIGTERM"
    );
}

/// An encrypted repository whose packs and records are in Garage: no marker of names or
/// contents is in any object of the bucket, and everything restores byte for byte.
#[test]
fn an_encrypted_repository_on_garage_shows_nothing_of_names_and_contents() {
    use puce_core::backend::{Backend, FileKind};
    let Some((dir, garage)) = start_garage() else {
        return;
    };
    let repo = init(
        &garage,
        dir.path(),
        "local",
        &["--pack-size", "1", "--encrypt"],
    );
    let src = dir.path().join("src");
    fs::create_dir_all(src.join("MARKER-NAME-dir")).unwrap();
    let mut noise = random_bytes(2 << 20, 5);
    noise[500_000..515_000].copy_from_slice(&b"MARKER-CONTENT-".repeat(1000));
    fs::write(src.join("MARKER-NAME-dir/data.bin"), &noise).unwrap();
    fs::write(src.join("notes.txt"), "MARKER-CONTENT\n".repeat(5000)).unwrap();
    let v = repo.json(&["snapshot", src.to_str().unwrap(), "--space", "MARKER-SPACE"]);
    let id = v["id"].as_str().unwrap().to_string();
    repo.ok(&["policy", "set", "MARKER-SPACE", "--keep-daily", "3"]);
    let backend = bucket(&garage, &repo, dir.path());
    let mut total = 0usize;
    for kind in [FileKind::Pack, FileKind::Snapshot, FileKind::Space] {
        let files = backend.list(kind).unwrap();
        assert!(!files.is_empty(), "{kind:?}");
        for (name, _) in files {
            assert!(!name.contains("MARKER"), "{name}");
            let bytes = backend.read(kind, &name).unwrap();
            total += bytes.len();
            assert!(
                !bytes.windows(6).any(|w| w == b"MARKER"),
                "a marker in {kind:?} {name}"
            );
        }
    }
    // At least the incompressible part of the data (2 MiB less the repeated markers).
    assert!(
        total >= (2 << 20) - 15_000,
        "the data is in the bucket ({total} bytes)"
    );
    let out = dir.path().join("out");
    repo.ok(&["restore", &id, out.to_str().unwrap()]);
    assert_eq!(manifest(&out), manifest(&src));
    repo.ok(&["check", "--read-data"]);
}

/// `puce migrate` fills a repository made beforehand in a bucket, from a local unencrypted one:
/// every snapshot restores from the bucket byte for byte.
#[test]
fn a_local_repository_migrates_into_a_bucket() {
    let Some((dir, garage)) = start_garage() else {
        return;
    };
    let r = init(&garage, dir.path(), "local", &[]);
    let old = dir.path().join("old");
    let old_s = old.to_str().unwrap();
    r.ok(&["init", "-q", "--no-encrypt", old_s]);
    let src = dir.path().join("src");
    make_tree(&src, 5);
    r.ok(&[
        "--repo",
        old_s,
        "snapshot",
        src.to_str().unwrap(),
        "--space",
        "docs",
    ]);
    let first = manifest(&src);
    fs::write(src.join("added.bin"), random_bytes(500_000, 9)).unwrap();
    r.ok(&[
        "--repo",
        old_s,
        "snapshot",
        src.to_str().unwrap(),
        "--space",
        "docs",
    ]);
    let v = r.json(&["migrate", "--from", old_s]);
    assert_eq!(v["created"], false, "{v}");
    assert_eq!(v["copied"], 2, "{v}");
    let out = dir.path().join("out");
    r.ok(&["restore", "docs@latest~1", out.join("1").to_str().unwrap()]);
    r.ok(&["restore", "docs@latest", out.join("2").to_str().unwrap()]);
    assert_eq!(manifest(&out.join("1")), first);
    assert_eq!(manifest(&out.join("2")), manifest(&src));
    r.ok(&["check", "--read-data"]);
    // Into the bucket, not the local directory.
    use puce_core::backend::{Backend, FileKind};
    let backend = bucket(&garage, &r, dir.path());
    assert_eq!(backend.list(FileKind::Snapshot).unwrap().len(), 2);
    assert!(!r.local.join("snapshots").exists());
}
