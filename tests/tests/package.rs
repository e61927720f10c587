//! The Debian package (`packaging/`, docs/guide.md "The Debian package"), on this machine: built
//! by `packaging/build-deb.sh` from the debug binary the other tests use (no release build in
//! CI), installed with `dpkg -i`, checked (files, user, state directory, units, man pages,
//! completions, the README's main job), upgraded to a rebuilt package, removed and purged, with
//! a repository and a node identity made before the upgrade left byte for byte as they were.
//! One test function: it changes the whole machine (a package, a system user), and the test
//! binary's tests run in parallel. Whatever happens, it purges the package and deletes what it
//! made before it returns.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead as _, BufReader};
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use puce_tests::{
    Manifest, Need, expect_ok, make_tree, manifest, puce_bin, require, require_for, workspace,
};

const STATE: &str = "/var/lib/puce";
const REPO: &str = "/var/lib/puce/repo";
const BIN: &str = "/usr/bin/puce";

/// Run `c`, require success; stdout and stderr together (dpkg's and the scripts' messages).
fn run(what: &str, mut c: impl std::borrow::BorrowMut<Command>) -> String {
    let c = c.borrow_mut();
    let out = c
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run {c:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{text}",
        out.status
    );
    text
}

fn cmd(program: &str, args: &[&str]) -> Command {
    let mut c = Command::new(program);
    c.args(args);
    c
}

/// `puce args` as the package's `puce` user, as an admin runs it by hand (`sudo -u puce`).
fn as_puce(args: &[&str]) -> Output {
    Command::new("setpriv")
        .args(["--reuid", "puce", "--regid", "puce", "--init-groups", "--"])
        .args(["env", "HOME=/var/lib/puce", BIN, "--repo", REPO])
        .args(args)
        .output()
        .unwrap()
}

/// Build the package with Debian revision `revision` into `out`; its path.
fn build(out: &Path, revision: u32) -> PathBuf {
    let text = run(
        "packaging/build-deb.sh",
        Command::new(workspace().join("packaging/build-deb.sh"))
            .env("PROFILE", "dev")
            .env("REVISION", revision.to_string())
            .env("OUT", out)
            .stderr(Stdio::inherit()),
    );
    let deb = PathBuf::from(text.trim().lines().last().unwrap_or_default());
    assert!(
        deb.is_file()
            && deb
                .file_name()
                .is_some_and(|n| n.to_string_lossy().contains(&format!("-{revision}_"))),
        "build-deb.sh printed {text:?}, not the path of a .deb of revision {revision}"
    );
    deb
}

/// Purges the package and deletes the user and state it made, even when the test fails.
struct Cleanup;

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = cmd("dpkg", &["--purge", "puce"]).output();
        let _ = std::fs::remove_dir_all(STATE);
        let _ = std::fs::remove_dir_all("/var/cache/puce");
        let _ = cmd("userdel", &["puce"]).output();
        let _ = cmd("groupdel", &["puce"]).output();
    }
}

/// The state directory as it is: every file's content, mode and time, plus owners.
fn state() -> (Manifest, Vec<(u32, u32)>) {
    let mut owners = Vec::new();
    let mut todo = vec![PathBuf::from(STATE)];
    while let Some(p) = todo.pop() {
        let md = std::fs::symlink_metadata(&p).unwrap();
        owners.push((md.uid(), md.gid()));
        if md.is_dir() {
            todo.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        }
    }
    owners.sort_unstable();
    (manifest(Path::new(STATE)), owners)
}

#[test]
fn debian_package_installs_upgrades_keeps_data_and_purges() {
    let Some(_) = require(Need::DebPackage) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    // The debug binary the other tests use; the script packages it as it is.
    puce_bin();
    let deb1 = build(&tmp.path().join("v1"), 1);
    let deb2 = build(&tmp.path().join("v2"), 2);
    let _cleanup = Cleanup;

    let out = run("dpkg -i", cmd("dpkg", &["-i", deb1.to_str().unwrap()]));
    eprintln!("dpkg -i:\n{out}");
    check_installed();
    readme_main_job(tmp.path());

    // A repository and a node identity, made as an admin does (docs/guide.md), with data.
    let data = tmp.path().join("data");
    make_tree(&data, 7);
    run(
        "chmod",
        cmd("chmod", &["-R", "a+rX", tmp.path().to_str().unwrap()]),
    );
    expect_ok("as puce: ", &["init"], as_puce(&["init", REPO]));
    expect_ok(
        "as puce: ",
        &["node", "init"],
        as_puce(&["node", "init", "--name", "pkgtest"]),
    );
    let snap = data.to_str().unwrap();
    expect_ok(
        "as puce: ",
        &["snapshot"],
        as_puce(&["snapshot", snap, "--space", "pkg"]),
    );
    if require_for("the mount as puce-mount@.service runs it", Need::Fuse).is_some() {
        mount_as_the_unit_does(tmp.path());
    }
    let id = expect_ok("as puce: ", &["node", "id"], as_puce(&["node", "id"]));
    let before = state();
    assert!(
        before.0.keys().any(|k| k.ends_with(b"node/key.pem")),
        "no node key in {STATE}: {:?}",
        before
            .0
            .keys()
            .map(|k| String::from_utf8_lossy(k))
            .collect::<Vec<_>>()
    );

    // Upgrade: the rebuilt package replaces the program; the data is untouched.
    let out = run(
        "dpkg -i (upgrade)",
        cmd("dpkg", &["-i", deb2.to_str().unwrap()]),
    );
    eprintln!("dpkg -i (upgrade):\n{out}");
    let version = run(
        "dpkg-query",
        cmd("dpkg-query", &["-W", "-f", "${Version}", "puce"]),
    );
    assert_eq!(version, "0.1.0-2", "the upgrade did not install revision 2");
    assert!(
        before == state(),
        "the upgrade changed {STATE}: {:#?}",
        diff(&before.0, &state().0)
    );
    assert_eq!(
        id,
        expect_ok("as puce: ", &["node", "id"], as_puce(&["node", "id"]))
    );
    expect_ok("as puce: ", &["check"], as_puce(&["check", "--read-data"]));
    // `check` writes into the stat cache (`~puce/.cache`): what remove and purge keep is the
    // state as it is now.
    remove_and_purge(&deb2, &state());
}

/// `puce mount` as `puce-mount@.service` runs it: as the puce user, with no way to gain a
/// privilege and CAP_SYS_ADMIN as its only capability (mount(2) without fusermount3), other
/// users let in. A file written through it by root is committed when SIGTERM stops it.
fn mount_as_the_unit_does(tmp: &Path) {
    let mp = tmp.join("shared");
    std::fs::create_dir(&mp).unwrap();
    let mut child = Command::new("setpriv")
        .args(["--reuid", "puce", "--regid", "puce", "--init-groups"])
        .args(["--inh-caps", "+sys_admin", "--ambient-caps", "+sys_admin"])
        .args(["--bounding-set", "-all,+sys_admin", "--no-new-privs", "--"])
        .args([
            "env",
            "HOME=/var/lib/puce",
            &format!("PUCE_REPO={REPO}"),
            BIN,
            "mount",
        ])
        .arg(&mp)
        .args(["--allow-other", "--notify-ready"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(Duration::from_secs(120))
        .unwrap_or_default();
    if !line.starts_with("ready ") {
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        panic!(
            "the mount as the unit runs it did not start (stdout {line:?}):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let written = std::fs::create_dir(mp.join("spaces/unit"))
        .and_then(|()| std::fs::write(mp.join("spaces/unit/hello.txt"), b"through the unit\n"));
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&child),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "the mount did not stop within 120 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    written.unwrap_or_else(|e| panic!("cannot write through the mount as root: {e}"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !puce_tests::is_mounted(&mp),
        "{} still mounted",
        mp.display()
    );
    let cat = expect_ok(
        "as puce: ",
        &["cat"],
        as_puce(&["cat", "unit@latest:hello.txt"]),
    );
    assert_eq!(cat, "through the unit\n");
}

/// Remove keeps everything; purge keeps a state directory that holds data and says so; purge
/// of an empty one deletes it and the user.
fn remove_and_purge(deb: &Path, now: &(Manifest, Vec<(u32, u32)>)) {
    let out = run("dpkg -r", cmd("dpkg", &["-r", "puce"]));
    eprintln!("dpkg -r:\n{out}");
    assert!(!Path::new(BIN).exists(), "dpkg -r left {BIN}");
    assert!(*now == state(), "dpkg -r changed {STATE}");
    assert!(getent_puce().is_some(), "dpkg -r deleted the puce user");

    let out = run("dpkg --purge", cmd("dpkg", &["--purge", "puce"]));
    eprintln!("dpkg --purge:\n{out}");
    assert!(
        out.contains("keeping /var/lib/puce") && out.contains("puce:   repo"),
        "purge did not say that it keeps {STATE} and what is in it:\n{out}"
    );
    assert!(*now == state(), "dpkg --purge changed {STATE}");
    assert!(
        getent_puce().is_some(),
        "purge deleted the user that owns {STATE}"
    );
    assert!(!Path::new("/var/cache/puce").exists());

    // The admin deletes the data (the repository and its key); a package installed and purged
    // again leaves nothing.
    std::fs::remove_dir_all(Path::new(STATE).join("repo")).unwrap();
    std::fs::remove_dir_all(Path::new(STATE).join(".config/puce/keys")).unwrap();
    let _ = std::fs::remove_dir_all(Path::new(STATE).join(".config"));
    let _ = std::fs::remove_dir_all(Path::new(STATE).join(".cache"));
    run(
        "dpkg -i (again)",
        cmd("dpkg", &["-i", deb.to_str().unwrap()]),
    );
    let out = run("dpkg --purge (empty)", cmd("dpkg", &["--purge", "puce"]));
    eprintln!("dpkg --purge (empty):\n{out}");
    assert!(
        out.contains("deleting /var/lib/puce (empty)")
            && out.contains("deleting the system user and group puce"),
        "purge did not say what it deletes:\n{out}"
    );
    assert!(!Path::new(STATE).exists(), "purge left the empty {STATE}");
    assert!(getent_puce().is_none(), "purge left the puce user");
    assert!(
        !cmd("dpkg", &["-s", "puce"])
            .output()
            .unwrap()
            .status
            .success(),
        "dpkg still knows the package after purge"
    );
}

fn getent_puce() -> Option<Vec<String>> {
    let out = cmd("getent", &["passwd", "puce"]).output().unwrap();
    out.status.success().then(|| {
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .split(':')
            .map(String::from)
            .collect()
    })
}

/// Paths whose description differs between two manifests.
fn diff(a: &Manifest, b: &Manifest) -> Vec<String> {
    let keys: std::collections::BTreeSet<_> = a.keys().chain(b.keys()).collect();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| {
            format!(
                "{}: {:?} -> {:?}",
                String::from_utf8_lossy(k),
                a.get(k),
                b.get(k)
            )
        })
        .collect()
}

/// What the package installed: files, user, state directory, units, man pages, completions.
fn check_installed() {
    // The program: the binary the tests use, with its version and commit.
    let version = run("puce --version", cmd(BIN, &["--version"]));
    let ours = run(
        "puce --version",
        cmd(puce_bin().to_str().unwrap(), &["--version"]),
    );
    assert_eq!(version, ours);
    assert!(version.contains("(commit "), "{version}");
    let md = std::fs::metadata(BIN).unwrap();
    assert_eq!(md.permissions().mode() & 0o7777, 0o755);

    // The user and its state directory, private to it.
    let user = getent_puce().expect("no puce user after dpkg -i");
    assert_eq!(user[5], STATE, "home of the puce user: {user:?}");
    assert_eq!(
        user[6], "/usr/sbin/nologin",
        "shell of the puce user: {user:?}"
    );
    let uid: u32 = user[2].parse().unwrap();
    assert!(uid < 1000, "puce is not a system user: {user:?}");
    let md = std::fs::metadata(STATE).unwrap();
    assert!(md.is_dir());
    let mode = format!("{:o}", md.permissions().mode() & 0o7777);
    assert_eq!(mode, "700", "mode of {STATE}");
    assert_eq!(md.uid(), uid, "owner of {STATE}");
    assert_eq!(
        std::fs::read_dir(STATE).unwrap().count(),
        0,
        "{STATE} is not empty after install"
    );

    // The units: the files of packaging/systemd, valid, neither enabled nor started.
    let units = Path::new("/usr/lib/systemd/system");
    for u in ["puce-node.service", "puce-mount@.service"] {
        let installed = std::fs::read(units.join(u)).unwrap();
        let ours = std::fs::read(workspace().join("packaging/systemd").join(u)).unwrap();
        assert!(installed == ours, "{u} differs from packaging/systemd/{u}");
    }
    let out = run(
        "systemd-analyze verify",
        cmd(
            "systemd-analyze",
            &[
                "verify",
                "/usr/lib/systemd/system/puce-node.service",
                "puce-mount@srv-shared.service",
            ],
        ),
    );
    assert!(
        out.trim().is_empty(),
        "systemd-analyze verify found problems:\n{out}"
    );
    for u in ["puce-node.service", "puce-mount@srv-shared.service"] {
        let out = cmd("systemctl", &["is-enabled", u]).output().unwrap();
        let state = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(
            ["disabled", "indirect"].contains(&state.as_str()),
            "{u} is {state:?} after install"
        );
        if Path::new("/run/systemd/system").exists() {
            let out = cmd("systemctl", &["is-active", u]).output().unwrap();
            let active = String::from_utf8_lossy(&out.stdout).trim().to_string();
            assert_eq!(active, "inactive", "{u} after install");
        }
    }
    let procs = cmd("pgrep", &["-u", "puce"]).output().unwrap();
    assert!(
        procs.stdout.is_empty(),
        "processes run as puce after install: {}",
        String::from_utf8_lossy(&procs.stdout)
    );

    check_docs();
}

/// Man pages render; completions are installed where each shell looks, and bash loads them.
fn check_docs() {
    for (page, want) in [("puce", "snapshot"), ("puce-mount", "--allow-other")] {
        let out = run(
            "man",
            cmd("man", &[page])
                .env("MANPATH", "/usr/share/man")
                .env("MANPAGER", "cat")
                .env("MANWIDTH", "100"),
        );
        assert!(
            out.contains("NAME") && out.contains("SYNOPSIS") && out.contains(want),
            "man {page} does not render the page:\n{out}"
        );
    }
    let out = run(
        "bash completion",
        cmd(
            "bash",
            &[
                "-c",
                "source /usr/share/bash-completion/completions/puce && complete -p puce",
            ],
        ),
    );
    assert!(out.contains("complete") && out.contains("puce"), "{out}");
    for (f, head) in [
        ("/usr/share/zsh/vendor-completions/_puce", "#compdef puce"),
        (
            "/usr/share/fish/vendor_completions.d/puce.fish",
            "complete -c puce",
        ),
    ] {
        let text = std::fs::read_to_string(f).unwrap();
        assert!(text.contains(head), "{f} does not look like a completion");
        assert!(
            text.contains("snapshot"),
            "{f} does not complete subcommands"
        );
    }
}

/// The README's main job with the packaged program: snapshot `docs/` into the default
/// repository, list the snapshots; then restore it and compare.
fn readme_main_job(tmp: &Path) {
    let home = tmp.join("home");
    let puce = |args: &[&str]| {
        let mut c = cmd(BIN, args);
        c.current_dir(workspace())
            .env("HOME", &home)
            .env("XDG_DATA_HOME", home.join("data"))
            .env("XDG_CACHE_HOME", home.join("cache"))
            .env_remove("PUCE_REPO");
        run(&format!("{BIN} {args:?}"), &mut c)
    };
    let out = puce(&["snapshot", "docs"]);
    assert!(out.contains("created the default repository"), "{out}");
    let list = puce(&["snapshots"]);
    assert!(list.lines().any(|l| l.contains("docs")), "{list}");
    let target = tmp.join("restored");
    puce(&["restore", "docs@latest", target.to_str().unwrap()]);
    assert!(
        manifest(&workspace().join("docs")) == manifest(&target),
        "the restored docs differ from docs/"
    );
}
