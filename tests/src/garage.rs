//! A real Garage server for tests: single node, its own config and data in a temporary
//! directory, loopback only, a bucket and a key made with its own `garage` command.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The garage binary, if installed (`cargo install garage --locked`, or `GARAGE_BIN`). Tests
/// ask for it with [`crate::require`]`(`[`crate::Need::Garage`]`)`.
pub fn garage_bin() -> Option<PathBuf> {
    match std::env::var_os("GARAGE_BIN") {
        Some(p) => Some(PathBuf::from(p)),
        None => crate::program("garage"),
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A running single-node Garage.
pub struct Garage {
    pub bin: PathBuf,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub endpoint: String,
    pub key_id: String,
    pub secret: String,
    pub bucket: String,
    child: Option<Child>,
}

impl Garage {
    /// Start Garage in `dir` and create bucket `bucket` with a key allowed to use it.
    pub fn start(bin: PathBuf, dir: &Path, bucket: &str) -> Garage {
        std::fs::create_dir_all(dir).unwrap();
        let (rpc, s3, admin) = (free_port(), free_port(), free_port());
        let config = dir.join("garage.toml");
        let secret: String = (0..32)
            .map(|i| format!("{:02x}", (i * 37 + 11) % 256))
            .collect();
        std::fs::write(
            &config,
            format!(
                r#"metadata_dir = "{meta}"
data_dir = "{data}"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:{rpc}"
rpc_public_addr = "127.0.0.1:{rpc}"
rpc_secret = "{secret}"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:{s3}"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:{admin}"
admin_token = "puce-test-admin-token"
"#,
                meta = dir.join("meta").display(),
                data = dir.join("data").display(),
            ),
        )
        .unwrap();
        let mut g = Garage {
            bin,
            dir: dir.to_path_buf(),
            config,
            endpoint: format!("http://127.0.0.1:{s3}"),
            key_id: String::new(),
            secret: String::new(),
            bucket: bucket.to_string(),
            child: None,
        };
        g.spawn();
        // One-node layout.
        let id = g.cli(&["node", "id", "-q"]);
        let id = id.trim().split('@').next().unwrap().to_string();
        g.cli(&["layout", "assign", "-z", "dc1", "-c", "1G", &id]);
        g.cli(&["layout", "apply", "--version", "1"]);
        g.cli(&["bucket", "create", bucket]);
        let key = g.cli(&["key", "create", "puce-test-key"]);
        for line in key.lines() {
            let l = line.trim();
            if let Some(v) = l.strip_prefix("Key ID:") {
                g.key_id = v.trim().to_string();
            }
            if let Some(v) = l.strip_prefix("Secret key:") {
                g.secret = v.trim().to_string();
            }
        }
        assert!(
            !g.key_id.is_empty() && !g.secret.is_empty(),
            "cannot read the key from `garage key create`:\n{key}"
        );
        g.cli(&[
            "bucket",
            "allow",
            "--read",
            "--write",
            "--owner",
            bucket,
            "--key",
            "puce-test-key",
        ]);
        g.wait_s3();
        g
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.join("garage.log")).unwrap();
        let child = Command::new(&self.bin)
            .arg("-c")
            .arg(&self.config)
            .arg("server")
            .env("RUST_LOG", "garage=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start garage");
        self.child = Some(child);
        // Wait until the RPC side answers.
        let start = Instant::now();
        loop {
            let out = Command::new(&self.bin)
                .arg("-c")
                .arg(&self.config)
                .arg("status")
                .output()
                .unwrap();
            if out.status.success() {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "garage did not start: {}\n{}",
                String::from_utf8_lossy(&out.stderr),
                std::fs::read_to_string(self.dir.join("garage.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn wait_s3(&self) {
        let port: u16 = self.endpoint.rsplit(':').next().unwrap().parse().unwrap();
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "garage S3 API not listening"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Run a `garage` admin command; panics on failure.
    pub fn cli(&self, args: &[&str]) -> String {
        let start = Instant::now();
        loop {
            let out = Command::new(&self.bin)
                .arg("-c")
                .arg(&self.config)
                .args(args)
                .output()
                .unwrap();
            if out.status.success() {
                return String::from_utf8_lossy(&out.stdout).into_owned();
            }
            // The layout takes a moment to settle after apply.
            if start.elapsed() > Duration::from_secs(30) {
                panic!(
                    "garage {args:?} failed:\n{}\n{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// Kill the server (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start it again on the same data.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
        self.wait_s3();
    }

    /// Environment for a `puce` process using this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", self.key_id.clone()),
            ("AWS_SECRET_ACCESS_KEY", self.secret.clone()),
        ]
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        self.kill();
    }
}
