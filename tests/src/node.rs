//! Helpers for node tests: real `puce node run` daemons on loopback or in network namespaces,
//! configured by writing their `node.toml`.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::{TestRepo, puce_bin};

/// A free UDP port on loopback (bound, read, released).
pub fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A node: a repository, an identity, a `node.toml`, and maybe a running daemon.
pub struct TestNode {
    pub repo: TestRepo,
    pub name: String,
    /// IP address peers use to reach it.
    pub ip: String,
    pub port: u16,
    pub id: String,
    /// Network namespace its processes run in, if any.
    pub netns: Option<String>,
    /// `[[peer]]` sections.
    peers: Vec<String>,
    /// Extra configuration (TOML sections appended as is).
    pub extra: String,
    /// Extra environment of every `puce` process of this node (S3 credentials, ...).
    pub env: Vec<(String, String)>,
    daemon: Option<Child>,
    log: PathBuf,
}

impl TestNode {
    /// A node on loopback.
    pub fn new(name: &str) -> TestNode {
        TestNode::with(name, TestRepo::new(), "127.0.0.1", None)
    }

    /// A node whose processes run in network namespace `netns`, reachable at `ip`.
    pub fn in_netns(name: &str, ip: &str, netns: &str) -> TestNode {
        TestNode::with(name, TestRepo::new(), ip, Some(netns.to_string()))
    }

    /// A node over an existing repository.
    pub fn with(name: &str, repo: TestRepo, ip: &str, netns: Option<String>) -> TestNode {
        TestNode::with_env(name, repo, ip, netns, Vec::new())
    }

    /// A node over an existing repository whose processes get `env` too.
    pub fn with_env(
        name: &str,
        repo: TestRepo,
        ip: &str,
        netns: Option<String>,
        env: Vec<(String, String)>,
    ) -> TestNode {
        let port = if netns.is_some() { 7878 } else { free_port() };
        let log = repo.dir.path().join(format!("{name}.log"));
        let mut n = TestNode {
            repo,
            name: name.to_string(),
            ip: ip.to_string(),
            port,
            id: String::new(),
            netns,
            peers: Vec::new(),
            extra: String::new(),
            env,
            daemon: None,
            log,
        };
        let listen = n.listen();
        let out = n.run(&["node", "init", "--name", name, "--listen", &listen]);
        assert!(
            out.status.success(),
            "node init: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        n.id = n.ok(&["node", "id"]).trim().to_string();
        n.write_config();
        n
    }

    pub fn listen(&self) -> String {
        if self.netns.is_some() {
            format!("0.0.0.0:{}", self.port)
        } else {
            format!("{}:{}", self.ip, self.port)
        }
    }

    pub fn address(&self) -> String {
        format!("{}:{}", self.ip, self.port)
    }

    pub fn node_dir(&self) -> PathBuf {
        self.repo.path().join("node")
    }

    /// Let `other` be a peer of this node; `spaces` is the TOML inline table of permissions,
    /// e.g. `{ docs = ["pull", "push"] }`.
    pub fn add_peer(&mut self, other: &TestNode, spaces: &str) {
        self.add_peer_raw(&other.name, &other.id, Some(&other.address()), spaces);
    }

    /// Let `other` be a peer, with more keys of its `[[peer]]` section (TOML lines, e.g.
    /// `hold_blind = true`).
    pub fn add_peer_with(&mut self, other: &TestNode, spaces: &str, more: &str) {
        self.add_peer(other, spaces);
        if let Some(p) = self.peers.last_mut() {
            p.push_str(more);
            p.push('\n');
        }
        self.write_config();
    }

    pub fn add_peer_raw(&mut self, name: &str, id: &str, address: Option<&str>, spaces: &str) {
        let mut s = format!("[[peer]]\nname = \"{name}\"\nid = \"{id}\"\n");
        if let Some(a) = address {
            writeln!(s, "address = \"{a}\"").unwrap();
        }
        writeln!(s, "spaces = {spaces}").unwrap();
        self.peers.push(s);
        self.write_config();
    }

    /// Rewrite `node.toml`: no window, quick retries, a daemon that does not sync on its own
    /// unless `[schedule]` is given in `extra`.
    pub fn write_config(&self) {
        let mut s = format!(
            "[node]\nname = \"{}\"\nlisten = \"{}\"\n[retry]\ninitial = \"1s\"\nmax = \"2s\"\n",
            self.name,
            self.listen()
        );
        if !self.extra.contains("[schedule]") {
            // Effectively never on its own: tests call `puce sync`.
            s.push_str("[schedule]\ninterval = \"1000d\"\n");
        }
        s.push_str(&self.extra);
        s.push('\n');
        for p in &self.peers {
            s.push_str(p);
        }
        fs::write(self.node_dir().join("node.toml"), s).unwrap();
    }

    /// A `puce` command for this node (inside its namespace if it has one).
    pub fn cmd(&self) -> Command {
        let mut c = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(puce_bin());
                c
            }
            None => Command::new(puce_bin()),
        };
        c.env("PUCE_REPO", self.repo.path())
            .env("XDG_CACHE_HOME", self.repo.dir.path().join("cache"))
            .env("XDG_DATA_HOME", self.repo.dir.path().join("data"))
            .env("XDG_CONFIG_HOME", self.repo.dir.path().join("config"))
            .env_remove("PUCE_TEST_FAULT")
            .env_remove("PUCE_NODE_DIR");
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().unwrap()
    }

    /// Run and require success; return stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        crate::expect_ok(&format!("[{}] ", self.name), args, self.run(args))
    }

    /// Run with --json and parse.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        serde_json::from_str(&self.ok(&a)).unwrap()
    }

    /// Take a snapshot of `dir` into `space`, recorded as taken on host `self.name`.
    pub fn snapshot(&self, dir: &Path, space: &str) -> String {
        let v = self.json(&[
            "snapshot",
            dir.to_str().unwrap(),
            "--space",
            space,
            "--host",
            &self.name,
        ]);
        v["id"].as_str().unwrap().to_string()
    }

    /// Snapshot ids, oldest first.
    pub fn snapshot_ids(&self) -> Vec<String> {
        let v = self.json(&["snapshots"]);
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect()
    }

    /// `puce sync PEER args...` with --json; the parsed report.
    pub fn sync(&self, peer: &str, args: &[&str]) -> serde_json::Value {
        let mut a = vec!["--json", "sync", peer];
        a.extend_from_slice(args);
        serde_json::from_str(&self.ok(&a)).unwrap()
    }

    /// `puce sync` expected to fail: its stderr.
    pub fn sync_fails(&self, peer: &str, args: &[&str]) -> String {
        let mut a = vec!["sync", peer];
        a.extend_from_slice(args);
        let out = self.run(&a);
        assert!(
            !out.status.success(),
            "[{}] sync {peer} {args:?} succeeded, expected a failure:\n{}",
            self.name,
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Start the daemon (with extra environment) and wait until it listens.
    pub fn start_with(&mut self, env: &[(&str, &str)]) {
        assert!(
            self.daemon.is_none(),
            "daemon of {} already running",
            self.name
        );
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut c = self.cmd();
        c.args(["node", "run"])
            .env("PUCE_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        for (k, v) in env {
            c.env(k, v);
        }
        self.daemon = Some(c.spawn().unwrap());
        let marker = format!("listening on {}", self.listen());
        wait_for(&format!("daemon of {} to listen", self.name), || {
            if let Some(d) = self.daemon.as_mut()
                && let Ok(Some(st)) = d.try_wait()
            {
                panic!("daemon of {} exited ({st}):\n{}", self.name, self.log());
            }
            self.log().contains(&marker)
        });
    }

    pub fn start(&mut self) {
        self.start_with(&[]);
    }

    /// Whether the daemon is still running (it was started and has not exited).
    pub fn is_running(&mut self) -> bool {
        self.daemon
            .as_mut()
            .is_some_and(|d| matches!(d.try_wait(), Ok(None)))
    }

    /// Kill the daemon with SIGKILL.
    pub fn kill9(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            let _ = d.kill();
            let _ = d.wait();
        }
    }

    /// Send SIGHUP to the daemon and wait until it says whether it reloaded `node.toml`;
    /// whether it did.
    pub fn reload(&mut self) -> bool {
        let count = |log: &str| {
            log.matches("node.toml reloaded").count()
                + log.matches("node.toml not reloaded").count()
        };
        let before = count(&self.log());
        let d = self.daemon.as_ref().expect("daemon running");
        let pid = rustix::process::Pid::from_raw(d.id() as i32).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::HUP).unwrap();
        wait_for(&format!("daemon of {} to reload", self.name), || {
            count(&self.log()) > before
        });
        let log = self.log();
        let last = log
            .rfind("node.toml reloaded")
            .max(log.rfind("node.toml not reloaded"));
        last == log.rfind("node.toml reloaded")
    }

    /// Stop the daemon with SIGTERM and wait for it.
    pub fn stop(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            if let Some(pid) = rustix::process::Pid::from_raw(d.id() as i32) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            }
            let _ = d.wait();
        }
    }

    /// Restore `spec` into a fresh folder of this node's temporary directory; return it.
    pub fn restored(&self, spec: &str) -> PathBuf {
        let out = self
            .repo
            .dir
            .path()
            .join(format!("restore-{}", spec.replace(['@', '~'], "_")));
        let _ = fs::remove_dir_all(&out);
        self.ok(&["-q", "restore", spec, out.to_str().unwrap_or_default()]);
        out
    }

    /// Wait for the first data check of the daemon (`[check]`), as its node state records it;
    /// that check.
    pub fn wait_checked(&self) -> serde_json::Value {
        let mut check = serde_json::Value::Null;
        wait_for(&format!("the first data check of {}", self.name), || {
            let st = fs::read(self.node_dir().join("state.json")).unwrap_or_default();
            check = serde_json::from_slice::<serde_json::Value>(&st).unwrap_or_default()["check"]
                .clone();
            check["last_ns"].is_i64()
        });
        check
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Number of pack files.
    pub fn pack_count(&self) -> usize {
        pack_files(&self.repo.path()).len()
    }

    /// Total size of the pack files.
    pub fn pack_bytes(&self) -> u64 {
        pack_files(&self.repo.path())
            .iter()
            .map(|p| fs::metadata(p).map(|m| m.len()).unwrap_or(0))
            .sum()
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Pack files under `repo/packs` (any depth).
pub fn pack_files(repo: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![repo.join("packs")];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if !p.to_string_lossy().ends_with(".tmp")
                && p.file_name().is_some_and(|n| n.len() == 64)
            {
                out.push(p);
            }
        }
    }
    out
}

/// Two nodes, `lyon` and `grenoble` (daemons not started): lyon's node.toml gives grenoble
/// `lyon_grants`, grenoble's gives lyon `grenoble_grants` (TOML inline tables of permissions,
/// optionally followed by more lines of the `[[peer]]` section, e.g. `keep_min`).
pub fn pair(lyon_grants: &str, grenoble_grants: &str) -> (TestNode, TestNode) {
    let mut a = TestNode::new("lyon");
    let mut b = TestNode::new("grenoble");
    a.add_peer(&b, lyon_grants);
    b.add_peer(&a, grenoble_grants);
    (a, b)
}

/// `[check]` of a node that reads all of its data at each check (one an hour, the first at
/// start): its copies count towards replica rules once that first check is done.
pub const CHECK_ALL: &str = "[check]\ninterval = \"1h\"\nsample = \"100%\"\n";

/// Wait (up to two minutes, polling) until `f` holds. Waiting is not asserting on time: the
/// limit only stops a test that would otherwise hang.
pub fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Network namespaces joined by a bridge: each node gets its own address on 10.77.N.0/24.
pub struct Lan {
    pub prefix: String,
    pub hosts: Vec<(String, String)>,
    bridge_ns: String,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Lan {
    /// `n` hosts (namespaces) on one bridge. Needs root and `ip`: ask with
    /// [`crate::require`]`(`[`crate::Need::Netns`]`)` first.
    pub fn new(n: usize) -> Lan {
        let id = std::process::id() % 100_000;
        let prefix = format!("puce{id}");
        let bridge_ns = format!("{prefix}-br");
        let net = 1 + (id % 200);
        ip(&["netns", "add", &bridge_ns]);
        let mut lan = Lan {
            prefix: prefix.clone(),
            hosts: Vec::new(),
            bridge_ns: bridge_ns.clone(),
        };
        ip(&["-n", &bridge_ns, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &bridge_ns, "link", "set", "br0", "up"]);
        for i in 0..n {
            let ns = format!("{prefix}-h{i}");
            ip(&["netns", "add", &ns]);
            lan.hosts
                .push((ns.clone(), format!("10.77.{net}.{}", i + 1)));
            let veth = format!("p{id}v{i}");
            ip(&[
                "link",
                "add",
                &veth,
                "netns",
                &ns,
                "type",
                "veth",
                "peer",
                "name",
                &format!("p{id}b{i}"),
                "netns",
                &bridge_ns,
            ]);
            ip(&[
                "-n",
                &bridge_ns,
                "link",
                "set",
                &format!("p{id}b{i}"),
                "master",
                "br0",
            ]);
            ip(&["-n", &bridge_ns, "link", "set", &format!("p{id}b{i}"), "up"]);
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("10.77.{net}.{}/24", i + 1),
                "dev",
                &veth,
            ]);
            ip(&["-n", &ns, "link", "set", &veth, "up"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
        }
        lan
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for (ns, _) in &self.hosts {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.bridge_ns])
            .status();
        let _ = &self.prefix;
    }
}

/// Where an object of a repository is stored: its pack file, offset and stored length.
pub struct StoredAt {
    pub pack: PathBuf,
    pub offset: u64,
    pub len: u64,
}

/// The files of snapshot `spec` of the repository at `repo` with their chunk ids, by path
/// (read with puce-core, not through the CLI).
pub fn files_and_chunks(repo: &Path, spec: &str) -> Vec<(String, Vec<puce_core::ObjectId>)> {
    use puce_core::format::tree::Node;
    let r = crate::open_repo(repo, None);
    let s = r.resolve_snapshot(spec).unwrap();
    let mut out = Vec::new();
    let mut stack = vec![(s.snapshot.root, String::new())];
    while let Some((t, prefix)) = stack.pop() {
        for e in r.read_tree(&t).unwrap().entries {
            let name = String::from_utf8_lossy(&e.name).into_owned();
            let p = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            match e.node {
                Node::File { chunks, .. } => out.push((p, chunks)),
                Node::Dir { tree } => stack.push((tree, p)),
                // No content.
                Node::Symlink { .. }
                | Node::Fifo
                | Node::Socket
                | Node::CharDevice { .. }
                | Node::BlockDevice { .. } => {}
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Where the index of the repository at `repo` says object `id` is stored.
pub fn stored_at(repo: &Path, id: &puce_core::ObjectId) -> StoredAt {
    let r = crate::open_repo(repo, None);
    let reader = r.index().reader().unwrap();
    let loc = reader.get(id).unwrap().expect("object indexed");
    let pack = r.pack_id(&reader, loc.pack).unwrap().to_hex();
    StoredAt {
        pack: repo.join("packs").join(&pack[..2]).join(&pack),
        offset: u64::from(loc.offset),
        len: u64::from(loc.stored_len),
    }
}

/// Flip one bit in the middle of the stored bytes of object `id`.
pub fn damage_object(repo: &Path, id: &puce_core::ObjectId) -> PathBuf {
    let at = stored_at(repo, id);
    let mut b = fs::read(&at.pack).unwrap();
    let i = (at.offset + at.len / 2) as usize;
    b[i] ^= 0x10;
    fs::write(&at.pack, b).unwrap();
    at.pack
}

/// Flip `n` bits at pseudo-random places (from `seed`) of the file at `p`; returns the offsets.
pub fn flip_random_bits(p: &Path, n: usize, seed: u64) -> Vec<usize> {
    let mut b = fs::read(p).unwrap();
    let r = crate::random_bytes(n * 8, seed);
    let mut at = Vec::new();
    for i in 0..n {
        let mut w = [0u8; 8];
        w.copy_from_slice(&r[i * 8..i * 8 + 8]);
        let v = u64::from_le_bytes(w);
        let pos = (v % b.len() as u64) as usize;
        b[pos] ^= 1 << (v >> 61);
        at.push(pos);
    }
    fs::write(p, b).unwrap();
    at
}

/// Cut the file at `p` to `keep` of its length (0 < keep < 1).
pub fn truncate_file(p: &Path, keep: f64) {
    let len = fs::metadata(p).unwrap().len();
    let f = fs::OpenOptions::new().write(true).open(p).unwrap();
    f.set_len((len as f64 * keep) as u64).unwrap();
    f.sync_all().unwrap();
}
