//! Helpers for the end-to-end tests: build and run the real `puce` binary, make and compare
//! folders on disk.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::io::Write as _;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

pub mod garage;
pub mod golden;
pub mod http;
pub mod mount;
pub mod node;
pub mod paused_gc;

/// The workspace root: of the checkout whose tests run (`cargo test` sets `CARGO_MANIFEST_DIR`
/// when it runs a test), else of the one this crate was compiled in. The two differ when a
/// target directory is copied from another checkout: this crate, unchanged, is not rebuilt,
/// and its compiled-in path names the other checkout, whose `puce` would then be tested.
pub fn workspace() -> PathBuf {
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest.parent().unwrap().to_path_buf()
}

/// Path to a freshly built `puce` binary (built once per test process).
pub fn puce_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        // Built as `cargo test --workspace` builds it (for puce-cli's own binary test): a plain
        // `cargo build -p puce-cli` resolves dependency features without the workspace's
        // dev-dependencies, and the next test run would rebuild them and the binary again.
        // Nor with the variables `cargo test` sets for this process: `ring`'s build script
        // reruns when `CARGO_MANIFEST_DIR` changes, and everything above it would be rebuilt.
        let mut c = Command::new(cargo);
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy();
            let set_by_cargo_test = [
                "CARGO_MANIFEST_",
                "CARGO_PKG_",
                "CARGO_CRATE_NAME",
                "CARGO_BIN_",
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_TARGET_TMPDIR",
                "CARGO_RUSTC_CURRENT_DIR",
                "OUT_DIR",
            ];
            if set_by_cargo_test.iter().any(|p| k.starts_with(p)) {
                c.env_remove(&*k);
            }
        }
        let st = c
            .args(["test", "-q", "--workspace", "--no-run", "--test", "binary"])
            .current_dir(workspace())
            .status()
            .expect("run cargo build");
        assert!(st.success(), "cargo build of puce failed");
        let target = std::env::var("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|_| workspace().join("target"));
        target.join("debug").join("puce")
    })
}

/// The key file the test repositories of this process share (`puce init --key-from`), unless
/// a test asks for another key (`--encrypt`) or none (`--no-encrypt`): like the sites of one
/// association, they sync and dedup with each other. The key is fixed
/// (`tests/fixtures/association.key`, made by `puce init`), so that chunk boundaries and ids,
/// which depend on it, are the same from run to run and a failure can be replayed;
/// `PUCE_TEST_RANDOM_KEY=1` makes a new one per process instead (`puce init`).
pub fn association_key() -> &'static Path {
    static KEY: OnceLock<PathBuf> = OnceLock::new();
    KEY.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("puce-test-key")
            .tempdir()
            .unwrap()
            .keep();
        let key = dir.join("association.key");
        if std::env::var_os("PUCE_TEST_RANDOM_KEY").is_none() {
            let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/association.key");
            fs::copy(&fixture, &key).unwrap();
            fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
            return key;
        }
        let out = Command::new(puce_bin())
            .env("XDG_CONFIG_HOME", dir.join("config"))
            .args(["--json", "init"])
            .arg(dir.join("repo"))
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&expect_ok("", &["init"], out)).unwrap();
        fs::rename(v["key_file"].as_str().unwrap(), &key).unwrap();
        fs::remove_dir_all(dir.join("repo")).unwrap();
        key
    })
}

/// The repository at `path`, opened in this process with the test association's key (see
/// [`association_key`]), and `cache_dir` as its cache directory if given.
pub fn open_repo(path: &Path, cache_dir: Option<PathBuf>) -> puce_core::Repo {
    puce_core::Repo::open_with(
        path,
        &puce_core::OpenOptions {
            cache_dir,
            key_files: vec![association_key().to_path_buf()],
            ..puce_core::OpenOptions::default()
        },
    )
    .unwrap()
}

/// Every file under `dir` (recursively), with its bytes.
pub fn files_with_bytes(dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files_with_bytes(&p, out);
        } else if p.is_file() {
            out.push((p.clone(), fs::read(&p).unwrap()));
        }
    }
}

/// A folder whose names and contents carry the markers `ZORGLUB-CONTENT` and `ZORGLUB-NAME`:
/// in incompressible data (stored raw), in a compressible text (stored compressed), in a file
/// name, a folder name and a link target.
pub fn make_marked_source(src: &Path) {
    fs::create_dir_all(src.join("ZORGLUB-NAME-folder")).unwrap();
    let mut noise = random_bytes(3 << 20, 11);
    noise[1_000_000..1_000_015].copy_from_slice(b"ZORGLUB-CONTENT");
    fs::write(src.join("ZORGLUB-NAME-folder/data.bin"), &noise).unwrap();
    fs::write(
        src.join("notes.txt"),
        "minutes of the meeting, ZORGLUB-CONTENT\n".repeat(2000),
    )
    .unwrap();
    std::os::unix::fs::symlink("ZORGLUB-NAME-target", src.join("link")).unwrap();
}

/// Assert that none of `files` holds any of `markers` in its bytes or its path.
pub fn assert_no_marker(files: &[(PathBuf, Vec<u8>)], markers: &[&str]) {
    for (path, bytes) in files {
        for m in markers {
            assert!(
                !bytes.windows(m.len()).any(|w| w == m.as_bytes()),
                "{m} in {}",
                path.display()
            );
            assert!(!path.to_string_lossy().contains(m), "{m} in a file name");
        }
    }
}

/// A repository in a temporary directory, with its own cache directory.
pub struct TestRepo {
    pub dir: tempfile::TempDir,
}

impl TestRepo {
    pub fn new() -> TestRepo {
        TestRepo::with_init(&[])
    }

    /// A repository created with extra `puce init` arguments.
    pub fn with_init(args: &[&str]) -> TestRepo {
        let t = TestRepo {
            dir: tempfile::tempdir().unwrap(),
        };
        let mut a = vec!["init", "-q"];
        a.extend_from_slice(args);
        let key = association_key().to_str().unwrap();
        if !args
            .iter()
            .any(|a| ["--no-encrypt", "--encrypt", "--key-from"].contains(a))
        {
            a.extend_from_slice(&["--key-from", key]);
        }
        let out = t.run(&a);
        assert!(
            out.status.success(),
            "init: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        t
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().join("repo")
    }

    /// A `puce` command on this repository.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(puce_bin());
        c.env("PUCE_REPO", self.path())
            .env("XDG_CACHE_HOME", self.dir.path().join("cache"))
            .env("XDG_DATA_HOME", self.dir.path().join("data"))
            .env("XDG_CONFIG_HOME", self.dir.path().join("config"));
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().unwrap()
    }

    /// Run and require success; return stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        expect_ok("", args, self.run(args))
    }

    /// Run with --json and parse.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        serde_json::from_str(&self.ok(&a)).unwrap()
    }

    /// Take a snapshot; return its id.
    pub fn snapshot(&self, dir: &Path, space: &str) -> String {
        let v = self.json(&["snapshot", dir.to_str().unwrap(), "--space", space]);
        v["id"].as_str().unwrap().to_string()
    }
}

impl Default for TestRepo {
    fn default() -> Self {
        Self::new()
    }
}

/// Require that `puce args` (run as `who`, a prefix for the message) succeeded; its stdout.
pub fn expect_ok(who: &str, args: &[&str], out: Output) -> String {
    assert!(
        out.status.success(),
        "{who}puce {args:?} failed ({:?}):\n{}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// What a tree looks like on disk: path -> (kind, mode, mtime, content hash or link target).
pub type Manifest = BTreeMap<Vec<u8>, String>;

/// Describe every entry below `root` (not `root` itself), with content hashes, modes and mtimes.
pub fn manifest(root: &Path) -> Manifest {
    let mut m = BTreeMap::new();
    walk(root, root, &mut m);
    m
}

fn walk(root: &Path, dir: &Path, m: &mut Manifest) {
    let mut names: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    for n in names {
        let p = dir.join(&n);
        let rel = p
            .strip_prefix(root)
            .unwrap()
            .as_os_str()
            .as_bytes()
            .to_vec();
        let md = fs::symlink_metadata(&p).unwrap();
        let mode = md.permissions().mode() & 0o7777;
        let desc = if md.file_type().is_symlink() {
            format!("l {}", fs::read_link(&p).unwrap().display())
        } else if md.is_dir() {
            walk(root, &p, m);
            format!("d {mode:o} {}", md.mtime())
        } else {
            let data = fs::read(&p).unwrap();
            format!(
                "f {mode:o} {} {} {}",
                md.mtime(),
                data.len(),
                blake3::hash(&data)
            )
        };
        m.insert(rel, desc);
    }
}

/// Deterministic pseudo-random bytes.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        v.extend_from_slice(&s.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// Write a small but varied folder: text, binary, empty and large files, nested and empty
/// directories, a symlink, a non-UTF-8 name, odd modes.
pub fn make_tree(root: &Path, seed: u64) {
    fs::create_dir_all(root.join("docs/deep/er")).unwrap();
    fs::create_dir_all(root.join("empty")).unwrap();
    fs::write(
        root.join("readme.txt"),
        format!("hello {seed}\n").repeat(100),
    )
    .unwrap();
    fs::write(root.join("docs/a.bin"), random_bytes(300_000, seed)).unwrap();
    fs::write(
        root.join("docs/deep/er/big.bin"),
        random_bytes(3_000_000, seed + 1),
    )
    .unwrap();
    fs::write(root.join("docs/empty.txt"), b"").unwrap();
    fs::write(
        root.join(OsStr::from_bytes(b"caf\xe9-latin1.txt")),
        b"non-utf8 name",
    )
    .unwrap();
    std::os::unix::fs::symlink("docs/a.bin", root.join("link")).unwrap();
    fs::set_permissions(root.join("docs/a.bin"), fs::Permissions::from_mode(0o640)).unwrap();
    fs::set_permissions(root.join("readme.txt"), fs::Permissions::from_mode(0o755)).unwrap();
}

/// Entries below `root` (and `root` itself) that other users can read, write or enter: each
/// path with its mode. Symlinks are not followed (their own mode means nothing).
pub fn open_to_others(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(p) = todo.pop() {
        let md = fs::symlink_metadata(&p).unwrap();
        if md.file_type().is_symlink() {
            continue;
        }
        if md.mode() & 0o077 != 0 {
            out.push(format!("{} {:o}", p.display(), md.mode() & 0o7777));
        }
        if md.is_dir() {
            for e in fs::read_dir(&p).unwrap() {
                todo.push(e.unwrap().path());
            }
        }
    }
    out.sort();
    out
}

/// Make the umask of this test process (and of the `puce` processes it starts) the common
/// 022, under which files are world-readable unless puce asks for less.
pub fn umask_022() {
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o022));
}

/// Whether the current user is root.
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// A small deterministic generator (xorshift64) for randomised tests: a seed replays a run.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (any value).
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    #[allow(clippy::should_implement_trait)] // Not an iterator: it never ends.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform-ish below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// A number from the environment variable `k` (trial counts, seeds), else `default`.
pub fn env_u64(k: &str, default: u64) -> u64 {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Something an end-to-end test needs from the machine beyond what `cargo test` builds. CI
/// installs all of them (`.ci/run`) and runs as root, so that nothing skips there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// FUSE mounts: `/dev/fuse` and `fusermount3`.
    Fuse,
    /// Network namespaces (`ip netns`): root and iproute2.
    Netns,
    /// A Garage S3 server binary.
    Garage,
    /// Headless Chromium, to render the HTML reports.
    Chromium,
    /// Mounting a small tmpfs: root.
    Tmpfs,
    /// Running a command as another user with `setpriv`: root.
    SwitchUser,
    /// Root, e.g. to give restored files their owners.
    Root,
    /// Installing the Debian package on this machine: root, dpkg, cargo-deb, systemd-analyze,
    /// man, and no puce package, `puce` user or `/var/lib/puce` already here (the test makes
    /// and purges them).
    DebPackage,
    /// Prometheus's `promtool`, to validate the metrics page.
    Promtool,
    /// Python with `aiosmtpd`, a real SMTP server for the email notifications.
    Aiosmtpd,
}

impl Need {
    /// What it is and how to get it, for the skip line.
    fn describe(self) -> (&'static str, &'static str) {
        match self {
            Need::Fuse => ("/dev/fuse and fusermount3", "apt-get install fuse3"),
            Need::Netns => (
                "root and the `ip` command for network namespaces",
                "run the tests as root; apt-get install iproute2",
            ),
            Need::Garage => (
                "garage, the S3 server",
                "cargo install garage --locked, or set GARAGE_BIN",
            ),
            Need::Chromium => ("chromium", "apt-get install chromium"),
            Need::Tmpfs => ("root to mount a small tmpfs", "run the tests as root"),
            Need::SwitchUser => (
                "root and setpriv to run puce as another user",
                "run the tests as root; apt-get install util-linux",
            ),
            Need::Root => ("root", "run the tests as root"),
            Need::DebPackage => (
                "root, dpkg, cargo-deb, systemd-analyze, man, and no puce package, puce user or \
                 /var/lib/puce on the machine",
                "run the tests as root; cargo install cargo-deb --version 3.8.0 --locked; \
                 apt-get install systemd man-db; `dpkg --purge puce` first",
            ),
            Need::Promtool => ("promtool", "apt-get install prometheus"),
            Need::Aiosmtpd => ("python3 with aiosmtpd", "apt-get install python3-aiosmtpd"),
        }
    }

    /// The program it needs, when everything it needs is here.
    fn find(self) -> Option<PathBuf> {
        let root = || is_root().then_some(());
        match self {
            Need::Fuse => Path::new("/dev/fuse")
                .exists()
                .then(|| program("fusermount3"))?
                .filter(|p| runs(p, "-V")),
            Need::Netns => root()
                .and_then(|()| program("ip"))
                .filter(|p| runs(p, "-V")),
            Need::Garage => garage::garage_bin(),
            Need::Chromium => program("chromium").or_else(|| program("chromium-browser")),
            Need::Tmpfs => root().and_then(|()| program("mount")),
            Need::SwitchUser => root().and_then(|()| program("setpriv")),
            Need::Root => root().map(|()| PathBuf::from("/")),
            Need::DebPackage => root()
                .filter(|()| {
                    ["dpkg", "systemd-analyze", "man"]
                        .iter()
                        .all(|p| program(p).is_some())
                })
                .filter(|()| {
                    !Command::new("dpkg")
                        .args(["-s", "puce"])
                        .output()
                        .is_ok_and(|o| o.status.success())
                })
                .filter(|()| {
                    !Path::new("/var/lib/puce").exists()
                        && !fs::read_to_string("/etc/passwd")
                            .unwrap_or_default()
                            .lines()
                            .any(|l| l.starts_with("puce:"))
                })
                .and_then(|()| program("cargo-deb")),
            Need::Promtool => program("promtool"),
            // Debian's package installs for the system Python, which a python3 earlier in PATH
            // (pyenv, a venv) may not be.
            Need::Aiosmtpd => [Some(PathBuf::from("/usr/bin/python3")), program("python3")]
                .into_iter()
                .flatten()
                .find(|p| {
                    Command::new(p)
                        .args(["-c", "import aiosmtpd"])
                        .output()
                        .is_ok_and(|o| o.status.success())
                }),
        }
    }
}

/// Whether `bin arg` exits successfully.
fn runs(bin: &Path, arg: &str) -> bool {
    Command::new(bin)
        .arg(arg)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Program `name` from `PATH`, or from `~/.cargo/bin` (where `cargo install` puts it).
pub fn program(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(Path::new(&home).join(".cargo/bin"));
    }
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

/// What the running test needs from the machine: the program it uses (`/` for [`Need::Root`])
/// when it is here. When it is missing, a developer's machine gets one line on stderr saying
/// what is missing and how to get it, and `None` (the test returns: skipped); under CI
/// (`CI` set) the test fails instead, so that nothing skips there unnoticed.
pub fn require(need: Need) -> Option<PathBuf> {
    require_for("", need)
}

/// [`require`] for a part of a test (`part` names it), which the test leaves out when `None`.
pub fn require_for(part: &str, need: Need) -> Option<PathBuf> {
    let found = need.find();
    if found.is_none() {
        let thread = std::thread::current();
        // The test harness names each test's thread after the test.
        let test = thread.name().unwrap_or("this test");
        let what = if part.is_empty() {
            test.to_string()
        } else {
            format!("{part} in {test}")
        };
        let (missing, how) = need.describe();
        assert!(
            std::env::var_os("CI").is_none(),
            "{what} cannot run under CI (CI is set): it needs {missing} ({how})"
        );
        // Straight to stderr: the test harness captures `eprintln!`, and shows it only when a
        // test fails.
        let line = format!("SKIPPED {what}: needs {missing} ({how})\n");
        let _ = std::io::stderr().write_all(line.as_bytes());
    }
    found
}

/// Whether `p` is a mount point now (from /proc/self/mountinfo).
pub fn is_mounted(p: &Path) -> bool {
    let want = fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| {
            l.split(' ').nth(4).map(|m| m.replace("\\040", " ")) == Some(want.display().to_string())
        })
}

/// The key file of an encrypted repository made by a [`TestRepo`] (in its own config
/// directory, outside the repository).
pub fn key_file(t: &TestRepo) -> PathBuf {
    let keys = t.dir.path().join("config/puce/keys");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&keys)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(found.len(), 1, "{found:?}");
    found.remove(0)
}
