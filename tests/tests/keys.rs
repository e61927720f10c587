//! Keys of encrypted repositories with the real binary (docs/guide.md, "Encrypted
//! repositories"): passphrase-protected key files and where their passphrase comes from,
//! `puce key add|list|remove|passwd`, a key change killed midway, the recovery sheet and
//! shares brought back by `puce key import` and `puce init --key-from`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use puce_tests::golden::assert_json_schema;
use puce_tests::{TestRepo, manifest, random_bytes};

/// A repository, and passphrase files `pw-<word>` beside it.
struct Repo {
    t: TestRepo,
}

impl Repo {
    /// `puce init --encrypt` with extra arguments and environment.
    fn init(args: &[&str], env: &[(&str, &str)]) -> Repo {
        let r = Repo {
            t: TestRepo {
                dir: tempfile::tempdir().unwrap(),
            },
        };
        let mut a = vec!["init", "-q", "--encrypt"];
        a.extend_from_slice(args);
        r.ok(env, &a);
        r
    }

    /// A file holding `word` as a passphrase (with a line end, as `echo` writes it).
    fn pw(&self, word: &str) -> String {
        let p = self.t.dir.path().join(format!("pw-{word}"));
        fs::write(&p, format!("{word}\n")).unwrap();
        p.to_str().unwrap().to_string()
    }

    fn cmd(&self, env: &[(&str, &str)], args: &[&str]) -> Command {
        let mut c = self.t.cmd();
        c.env_remove("PUCE_PASSWORD_FILE")
            .env_remove("PUCE_PASSWORD_COMMAND")
            .env_remove("CREDENTIALS_DIRECTORY")
            .env_remove("PUCE_KEY_FILE")
            .envs(env.iter().copied())
            .args(args);
        c
    }

    fn run(&self, env: &[(&str, &str)], args: &[&str]) -> Output {
        self.cmd(env, args).output().unwrap()
    }

    fn ok(&self, env: &[(&str, &str)], args: &[&str]) -> String {
        puce_tests::expect_ok("", args, self.run(env, args))
    }

    /// Run, require failure with exit code 1; stderr.
    fn fails(&self, env: &[(&str, &str)], args: &[&str]) -> String {
        let out = self.run(env, args);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(1), "puce {args:?}: {err}");
        err
    }

    fn key_dir(&self) -> PathBuf {
        self.t.dir.path().join("config/puce/keys")
    }

    fn keys(&self, env: &[(&str, &str)]) -> serde_json::Value {
        serde_json::from_str(&self.ok(env, &["--json", "key", "list"])).unwrap()
    }

    /// Whether the repository opens with this environment.
    fn opens(&self, env: &[(&str, &str)]) -> bool {
        self.run(env, &["snapshots"]).status.success()
    }

    fn src(&self) -> PathBuf {
        let src = self.t.dir.path().join("src");
        fs::create_dir_all(&src).unwrap();
        fs::write(
            src.join("minutes.txt"),
            "the meeting's minutes\n".repeat(100),
        )
        .unwrap();
        fs::write(src.join("data.bin"), random_bytes(300_000, 5)).unwrap();
        src
    }
}

/// Every file below `dir`.
fn all_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            all_files(&p, out);
        } else {
            out.push(p);
        }
    }
}

#[test]
fn a_passphrase_protected_key_opens_from_each_source_and_only_with_its_passphrase() {
    let probe = tempfile::tempdir().unwrap();
    let pwfile = probe.path().join("pw");
    fs::write(&pwfile, "correct horse\n").unwrap();
    let good = pwfile.to_str().unwrap();
    let r = Repo::init(&["--passphrase"], &[("PUCE_PASSWORD_FILE", good)]);
    let src = r.src();
    let env = [("PUCE_PASSWORD_FILE", good)];
    r.ok(
        &env,
        &["snapshot", src.to_str().unwrap(), "--space", "docs"],
    );

    // One key file, protected, private, outside the repository; nothing in the repository
    // is a key file.
    let v = r.keys(&[]);
    assert_json_schema("key-list", &v);
    assert_eq!(v["keys"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["keys"][0]["kind"], "passphrase", "{v}");
    assert_eq!(v["keys"][0]["id"], "default", "{v}");
    assert_eq!(v["exported"], false, "{v}");
    let key = PathBuf::from(v["keys"][0]["path"].as_str().unwrap());
    assert_eq!(
        fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(!key.starts_with(r.t.path()));
    let mut files = Vec::new();
    all_files(&r.t.path(), &mut files);
    for f in files {
        let head = fs::read(&f).unwrap();
        assert!(
            !head.starts_with(b"PUCEKEY\0"),
            "a key file in the repository: {}",
            f.display()
        );
    }

    // No source and no terminal; a wrong passphrase; an empty file: each says so.
    let err = r.fails(&[], &["snapshots"]);
    assert!(
        err.contains("no terminal") && err.contains("PUCE_PASSWORD_FILE"),
        "{err}"
    );
    let wrong = r.pw("battery");
    let err = r.fails(&[], &["--password-file", &wrong, "snapshots"]);
    assert!(err.contains("wrong passphrase"), "{err}");
    let empty = r.t.dir.path().join("empty");
    fs::write(&empty, "\n").unwrap();
    let err = r.fails(
        &[],
        &["--password-file", empty.to_str().unwrap(), "snapshots"],
    );
    assert!(err.contains("is empty"), "{err}");

    // Each source: the option, the environment, a command, a systemd credential.
    assert!(r.opens(&[("PUCE_PASSWORD_FILE", good)]));
    let list = r.ok(&[], &["--password-file", good, "snapshots"]);
    assert!(list.contains("docs"), "{list}");
    let cat = format!("cat {good}");
    assert!(r.opens(&[("PUCE_PASSWORD_COMMAND", &cat)]));
    let creds = r.t.dir.path().join("creds");
    fs::create_dir(&creds).unwrap();
    fs::copy(&pwfile, creds.join("puce-passphrase")).unwrap();
    assert!(r.opens(&[("CREDENTIALS_DIRECTORY", creds.to_str().unwrap())]));
    // The option comes before the command, the command before the credential.
    assert!(!r.opens(&[
        ("PUCE_PASSWORD_FILE", &wrong),
        ("PUCE_PASSWORD_COMMAND", &cat)
    ]));

    // A command that fails, or that does not stop printing, is a clear error.
    let err = r.fails(
        &[("PUCE_PASSWORD_COMMAND", "echo oops >&2; exit 3")],
        &["snapshots"],
    );
    assert!(
        err.contains("PUCE_PASSWORD_COMMAND") && err.contains("failed"),
        "{err}"
    );
    assert!(err.contains("exit status: 3"), "{err}");
    let err = r.fails(&[("PUCE_PASSWORD_COMMAND", "yes")], &["snapshots"]);
    assert!(err.contains("more than 65536 bytes"), "{err}");

    // Restored byte for byte with the passphrase.
    let out = r.t.dir.path().join("out");
    r.ok(&env, &["restore", "docs@latest", out.to_str().unwrap()]);
    assert_eq!(manifest(&out), manifest(&src));
}

#[test]
fn keys_are_added_listed_rewrapped_and_removed_but_never_the_last() {
    let r = Repo::init(&[], &[]);
    let (alice, bob, carol) = (r.pw("alice"), r.pw("bob"), r.pw("carol"));
    // The plain key from init opens without a passphrase; add two passphrases.
    r.ok(
        &[("PUCE_NEW_PASSWORD_FILE", &alice)],
        &["key", "add", "--label", "alice"],
    );
    r.ok(
        &[],
        &["key", "add", "--label", "bob", "--new-password-file", &bob],
    );
    let v = r.keys(&[]);
    let keys = v["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 3, "{v}");
    assert_eq!(keys[0]["id"], "default");
    assert_eq!(keys[0]["kind"], "plain");
    let id_of = |label: &str| {
        let v = r.keys(&[]);
        v["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["label"] == label)
            .map(|k| k["id"].as_str().unwrap().to_string())
            .unwrap()
    };
    let (a, b) = (id_of("alice"), id_of("bob"));
    let human = r.ok(&[], &["key", "list"]);
    assert!(human.contains(&a) && human.contains("passphrase") && human.contains("alice"));

    // Without the plain key, each passphrase opens it, and only those.
    r.ok(&[], &["key", "remove", "default"]);
    assert!(r.opens(&[("PUCE_PASSWORD_FILE", &alice)]));
    assert!(r.opens(&[("PUCE_PASSWORD_FILE", &bob)]));
    let err = r.fails(&[("PUCE_PASSWORD_FILE", &carol)], &["snapshots"]);
    assert!(
        err.contains("wrong passphrase") && err.contains("2 passphrase-protected"),
        "{err}"
    );

    // passwd: bob's key now opens with carol's passphrase, not bob's; alice's is untouched.
    let err = r.fails(
        &[("PUCE_PASSWORD_FILE", &alice)],
        &["key", "passwd", "--new-password-file", &carol],
    );
    assert!(err.contains("several keys have a passphrase"), "{err}");
    r.ok(
        &[("PUCE_PASSWORD_FILE", &bob)],
        &["key", "passwd", &b, "--new-password-file", &carol],
    );
    assert!(r.opens(&[("PUCE_PASSWORD_FILE", &carol)]));
    assert!(!r.opens(&[("PUCE_PASSWORD_FILE", &bob)]));
    assert!(r.opens(&[("PUCE_PASSWORD_FILE", &alice)]));
    let err = r.fails(
        &[("PUCE_PASSWORD_FILE", &bob)],
        &["key", "passwd", &a, "--new-password-file", &carol],
    );
    assert!(err.contains("wrong passphrase for key 'alice'"), "{err}");

    // A plain key file elsewhere (a USB stick) opens it with --key-file.
    let usb = r.t.dir.path().join("usb.key");
    r.ok(
        &[("PUCE_PASSWORD_FILE", &alice)],
        &["key", "add", "--key-file-out", usb.to_str().unwrap()],
    );
    assert_eq!(
        fs::metadata(&usb).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(r.opens(&[("PUCE_KEY_FILE", usb.to_str().unwrap())]));

    // Remove down to one; the last is refused, and stays.
    r.ok(&[], &["key", "remove", &b]);
    let err = r.fails(&[], &["key", "remove", &a]);
    assert!(err.contains("last key file"), "{err}");
    assert!(r.opens(&[("PUCE_PASSWORD_FILE", &alice)]));
    let err = r.fails(&[], &["key", "remove", "nosuch"]);
    assert!(err.contains("no key 'nosuch'"), "{err}");
}

/// Wait for `path` to exist (a test hook's signal), loudly bounded.
fn wait_for(path: &Path) {
    let start = Instant::now();
    while !path.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "{} did not appear in 2 minutes",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Start `puce args` with the key-change test hook, wait until it has written and fsynced its
/// new key file, and SIGKILL it before the rename.
fn kill_during_key_change(r: &Repo, env: &[(&str, &str)], args: &[&str]) {
    let hook = tempfile::tempdir().unwrap();
    let mut child = r
        .cmd(env, args)
        .env("PUCE_TEST_KEY_PAUSE", hook.path())
        .spawn()
        .unwrap();
    wait_for(&hook.path().join("paused"));
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success());
}

#[test]
fn a_key_change_killed_midway_loses_no_key() {
    let r = Repo::init(&[], &[]);
    let (old, new) = (r.pw("old"), r.pw("new"));
    r.ok(&[], &["key", "add", "--new-password-file", &old]);
    r.ok(&[], &["key", "remove", "default"]);
    let before = fs::read_dir(r.key_dir()).unwrap().count();

    // passwd killed after writing the rewrapped file, before the rename: the old passphrase
    // still opens, nothing else changed in what opens it.
    kill_during_key_change(
        &r,
        &[("PUCE_PASSWORD_FILE", &old)],
        &["key", "passwd", "--new-password-file", &new],
    );
    assert!(r.opens(&[("PUCE_PASSWORD_FILE", &old)]));
    assert!(!r.opens(&[("PUCE_PASSWORD_FILE", &new)]));
    assert_eq!(r.keys(&[])["keys"].as_array().unwrap().len(), 1);

    // add killed the same way: the key is there as before, and the next add works.
    kill_during_key_change(
        &r,
        &[("PUCE_PASSWORD_FILE", &old)],
        &["key", "add", "--new-password-file", &new],
    );
    assert!(r.opens(&[("PUCE_PASSWORD_FILE", &old)]));
    assert_eq!(r.keys(&[])["keys"].as_array().unwrap().len(), 1);
    // The killed runs left their temporary files (private, and read by nothing).
    let left: Vec<_> = fs::read_dir(r.key_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "tmp"))
        .collect();
    assert_eq!(left.len(), 2, "{left:?} ({before} files before)");
    for l in &left {
        assert_eq!(fs::metadata(l).unwrap().permissions().mode() & 0o777, 0o600);
    }

    // Run to the end, the change takes effect whole.
    r.ok(
        &[("PUCE_PASSWORD_FILE", &old)],
        &["key", "passwd", "--new-password-file", &new],
    );
    assert!(r.opens(&[("PUCE_PASSWORD_FILE", &new)]));
    assert!(!r.opens(&[("PUCE_PASSWORD_FILE", &old)]));
}

#[test]
fn a_damaged_or_missing_key_file_is_a_clear_error_and_another_key_still_opens() {
    let r = Repo::init(&[], &[]);
    let pw = r.pw("secret");
    r.ok(&[], &["key", "add", "--new-password-file", &pw]);
    let v = r.keys(&[]);
    let plain = PathBuf::from(v["keys"][0]["path"].as_str().unwrap());
    let wrapped = PathBuf::from(v["keys"][1]["path"].as_str().unwrap());

    // The plain key damaged: listed as damaged, and the passphrase-protected one opens.
    let mut bytes = fs::read(&plain).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0x10;
    fs::write(&plain, &bytes).unwrap();
    let v = r.keys(&[]);
    assert_eq!(v["keys"][0]["kind"], "damaged", "{v}");
    assert!(
        v["keys"][0]["error"].as_str().unwrap().contains("checksum"),
        "{v}"
    );
    assert!(r.opens(&[("PUCE_PASSWORD_FILE", &pw)]));
    // With only damaged files, the error names each and says what to do.
    let mut bytes = fs::read(&wrapped).unwrap();
    let n = bytes.len();
    bytes[n - 20] ^= 0x01;
    fs::write(&wrapped, &bytes).unwrap();
    let err = r.fails(&[("PUCE_PASSWORD_FILE", &pw)], &["snapshots"]);
    assert!(
        err.contains("was not found") && err.contains("checksum"),
        "{err}"
    );
    assert!(err.contains(plain.to_str().unwrap()), "{err}");
    assert!(err.contains("puce key import"), "{err}");
    // None at all.
    fs::remove_dir_all(r.key_dir()).unwrap();
    let err = r.fails(&[], &["snapshots"]);
    assert!(
        err.contains("was not found") && err.contains("no key file"),
        "{err}"
    );
    // A passphrase-protected key file given with --key-file asks for its passphrase.
    let wrapped_copy = r.t.dir.path().join("given.key");
    let other = Repo::init(&["--passphrase"], &[("PUCE_PASSWORD_FILE", &pw)]);
    let path = other.keys(&[])["keys"][0]["path"]
        .as_str()
        .unwrap()
        .to_string();
    fs::copy(&path, &wrapped_copy).unwrap();
    let given = wrapped_copy.to_str().unwrap();
    assert!(other.opens(&[("PUCE_KEY_FILE", given), ("PUCE_PASSWORD_FILE", &pw)]));
    let err = other.fails(&[("PUCE_KEY_FILE", given)], &["snapshots"]);
    assert!(err.contains("no terminal"), "{err}");
}

/// The `key` lines of a recovery sheet, typed back by a person into a file of their own.
fn typed_back(sheet: &str, dir: &Path) -> PathBuf {
    let lines: String = sheet
        .lines()
        .filter(|l| l.starts_with("key ") || l.starts_with("fingerprint"))
        .map(|l| format!("{}\n", l.replace("  ", " ")))
        .collect();
    let p = dir.join("typed.txt");
    fs::write(&p, lines).unwrap();
    p
}

#[test]
fn a_recovery_sheet_and_shares_bring_the_key_back() {
    let r = Repo::init(&[], &[]);
    let src = r.src();
    r.ok(&[], &["snapshot", src.to_str().unwrap(), "--space", "docs"]);
    let fingerprint = r.keys(&[])["fingerprint"].as_str().unwrap().to_string();
    let dir = r.t.dir.path();

    // The sheet names the repository, the key's fingerprint, and the node's peers (none yet).
    let sheet = r.ok(&[], &["key", "export", "--paper"]);
    assert!(
        sheet.contains(&format!("fingerprint  {fingerprint}")),
        "{sheet}"
    );
    assert!(sheet.contains("(from node.toml):\n  none\n"), "{sheet}");
    assert_eq!(r.keys(&[])["exported"], true);
    let exported = fs::read_dir(r.key_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "exported"))
        .unwrap();
    assert!(fs::read_to_string(&exported).unwrap().contains(" paper\n"));

    // The key is lost; the sheet typed back brings it back.
    let typed = typed_back(&sheet, dir);
    fs::remove_dir_all(r.key_dir()).unwrap();
    assert!(!r.opens(&[]));
    let mistyped = dir.join("mistyped.txt");
    let text = fs::read_to_string(&typed).unwrap();
    let line3 = text.lines().find(|l| l.starts_with("key 3")).unwrap();
    let digit = line3.as_bytes()[7];
    let swapped = if digit == b'0' { '1' } else { '0' };
    let bad = format!("{}{swapped}{}", &line3[..7], &line3[8..]);
    fs::write(&mistyped, text.replace(line3, &bad)).unwrap();
    let err = r.fails(&[], &["key", "import", mistyped.to_str().unwrap()]);
    assert!(
        err.contains("line 'key 3'") && err.contains("mistyped"),
        "{err}"
    );
    r.ok(&[], &["key", "import", typed.to_str().unwrap()]);
    let out = dir.join("out");
    r.ok(&[], &["restore", "docs@latest", out.to_str().unwrap()]);
    assert_eq!(manifest(&out), manifest(&src));

    // Shares: 3 of 5. Any 3 bring the key back, 2 are refused, a share of another split too.
    let shares = dir.join("shares");
    r.ok(
        &[],
        &[
            "key",
            "split",
            "--shares",
            "5",
            "--threshold",
            "3",
            "--out",
            shares.to_str().unwrap(),
        ],
    );
    let share = |i: u32| shares.join(format!("share-{i}-of-5.txt"));
    for i in 1..=5 {
        assert_eq!(
            fs::metadata(share(i)).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let record = fs::read_to_string(&exported).unwrap();
    assert!(record.contains(" shares 3 of 5, set "), "{record}");
    let printed = r.ok(&[], &["key", "split", "--shares", "3", "--threshold", "2"]);
    let foreign = dir.join("foreign.txt");
    fs::write(
        &foreign,
        printed.split("----- cut here -----").next().unwrap(),
    )
    .unwrap();

    let s = |i: u32| share(i).to_str().unwrap().to_string();
    let site = |args: &[String]| {
        let second = TestRepo {
            dir: tempfile::tempdir().unwrap(),
        };
        let mut a = vec!["init", "-q", "--encrypt"];
        for f in args {
            a.extend(["--key-from", f.as_str()]);
        }
        (second.run(&a), second)
    };
    let (out2, _) = site(&[s(1), s(4)]);
    let err = String::from_utf8_lossy(&out2.stderr);
    assert!(
        err.contains("2 different share(s)") && err.contains("3 are needed"),
        "{err}"
    );
    let (out2, _) = site(&[s(1), s(4), foreign.to_str().unwrap().to_string()]);
    let err = String::from_utf8_lossy(&out2.stderr);
    assert!(
        err.contains("foreign.txt is a share of another set"),
        "{err}"
    );
    let (out2, second) = site(&[s(5), s(2), s(4)]);
    assert!(
        out2.status.success(),
        "{}",
        String::from_utf8_lossy(&out2.stderr)
    );
    let v = second.json(&["key", "list"]);
    assert_eq!(
        v["fingerprint"],
        fingerprint.as_str(),
        "a second site with the same key"
    );

    // On this repository too, after losing the key again.
    fs::remove_dir_all(r.key_dir()).unwrap();
    r.ok(&[], &["key", "import", &s(3), &s(1), &s(2)]);
    assert!(r.opens(&[]));
    let err = r.fails(&[], &["key", "import", &s(3)]);
    assert!(err.contains("1 different share(s)"), "{err}");
}

#[test]
fn the_recovery_sheet_lists_the_peers_of_node_toml() {
    let r = Repo::init(&[], &[]);
    r.ok(
        &[],
        &[
            "node",
            "init",
            "--name",
            "lyon",
            "--listen",
            "127.0.0.1:7878",
        ],
    );
    let other = TestRepo::new();
    other.ok(&["node", "init", "--name", "grenoble"]);
    let id = other.ok(&["node", "id"]).trim().to_string();
    let toml = r.t.path().join("node/node.toml");
    let mut text = fs::read_to_string(&toml).unwrap();
    text.push_str(&format!(
        "\n[[peer]]\nname = \"grenoble\"\nid = \"{id}\"\naddress = \"grenoble.example.org:7878\"\n\
         spaces = {{ docs = [\"pull\"] }}\n"
    ));
    fs::write(&toml, text).unwrap();
    let sheet = r.ok(&[], &["key", "export", "--paper"]);
    let holders = sheet.split("(from node.toml):\n").nth(1).unwrap();
    assert!(
        holders.contains(&format!(
            "grenoble  id {id}  address grenoble.example.org:7878"
        )),
        "{sheet}"
    );
}

/// The daemon has no terminal: it reads the passphrase from a systemd credential
/// (`$CREDENTIALS_DIRECTORY/puce-passphrase`), serves a sync into its protected repository, and
/// without a source it stops at once, saying what to set, instead of waiting for a prompt.
#[test]
fn the_daemon_reads_the_passphrase_from_a_systemd_credential() {
    use puce_tests::node::TestNode;
    let lyon_repo = TestRepo {
        dir: tempfile::tempdir().unwrap(),
    };
    let creds = lyon_repo.dir.path().join("creds");
    fs::create_dir(&creds).unwrap();
    let secret = creds.join("puce-passphrase");
    fs::write(&secret, "lyon passphrase\n").unwrap();
    let pw = [("PUCE_PASSWORD_FILE", secret.to_str().unwrap())];
    let init = ["init", "-q", "--encrypt", "--passphrase"];
    puce_tests::expect_ok(
        "",
        &init,
        lyon_repo.cmd().envs(pw).args(init).output().unwrap(),
    );
    // Grenoble joins the association from lyon's recovery sheet.
    let sheet = lyon_repo
        .cmd()
        .envs(pw)
        .args(["key", "export", "--paper"])
        .output()
        .unwrap();
    let sheet_file = lyon_repo.dir.path().join("sheet.txt");
    fs::write(&sheet_file, &sheet.stdout).unwrap();
    let grenoble_repo =
        TestRepo::with_init(&["--encrypt", "--key-from", sheet_file.to_str().unwrap()]);

    let env = vec![(
        "CREDENTIALS_DIRECTORY".to_string(),
        creds.to_str().unwrap().to_string(),
    )];
    let grants = r#"{ docs = ["pull", "push"] }"#;
    let mut lyon = TestNode::with_env("lyon", lyon_repo, "127.0.0.1", None, env);
    let mut grenoble = TestNode::with("grenoble", grenoble_repo, "127.0.0.1", None);
    lyon.add_peer(&grenoble, grants);
    grenoble.add_peer(&lyon, grants);

    // Without the credential, the daemon stops at once and says why.
    let out = lyon
        .cmd()
        .env_remove("CREDENTIALS_DIRECTORY")
        .args(["node", "run"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("no terminal") && err.contains("puce-passphrase"),
        "{err}"
    );

    lyon.start();
    let src = grenoble.repo.dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("minutes.txt"), "written at grenoble\n".repeat(50)).unwrap();
    let snap = grenoble.snapshot(&src, "docs");
    grenoble.sync("lyon", &["--push"]);
    assert!(lyon.snapshot_ids().contains(&snap));
    assert_eq!(manifest(&lyon.restored("docs@latest")), manifest(&src));
    lyon.stop();
}
