//! A running `puce mount` for the end-to-end tests: started, waited for, stopped cleanly or
//! killed, and unmounted whatever happens.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

pub use crate::node::wait_for;
use crate::{TestRepo, is_mounted};

/// A running `puce mount`.
pub struct Mount {
    pub child: Option<Child>,
    pub dir: PathBuf,
    pub stderr: PathBuf,
    /// Leave a stale mount in place on drop (after `kill9`).
    pub leave_stale: bool,
}

impl Mount {
    pub fn start(repo: &TestRepo, dir: &Path, extra: &[&str]) -> Mount {
        Mount::start_cmd(repo.cmd(), dir, extra)
    }

    pub fn start_cmd(mut cmd: Command, dir: &Path, extra: &[&str]) -> Mount {
        fs::create_dir_all(dir).unwrap();
        let stderr = dir.with_extension("log");
        cmd.args(["mount", dir.to_str().unwrap(), "--poll", "0.2"]);
        if !extra.contains(&"--commit-delay") {
            cmd.args(["--commit-delay", "0.2"]);
        }
        let child = cmd
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        let mut m = Mount {
            child: Some(child),
            dir: dir.to_path_buf(),
            stderr,
            leave_stale: false,
        };
        wait_for("the mount to appear", || {
            if let Some(Ok(Some(st))) = m.child.as_mut().map(|c| c.try_wait()) {
                panic!("puce mount exited early ({st}): {}", m.log());
            }
            is_mounted(&m.dir)
        });
        m
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    pub fn space(&self, s: &str) -> PathBuf {
        self.dir.join("spaces").join(s)
    }

    /// SIGTERM: commit and unmount; wait for the process.
    pub fn stop(mut self) -> String {
        let mut c = self.child.take().unwrap();
        unsafe_free_kill(c.id(), "TERM");
        let st = c.wait().unwrap();
        assert!(st.success(), "puce mount exited with {st}: {}", self.log());
        assert!(!is_mounted(&self.dir));
        self.log()
    }

    /// SIGKILL: the process dies at once, leaving a stale mount.
    pub fn kill9(mut self) {
        let mut c = self.child.take().unwrap();
        c.kill().unwrap();
        c.wait().unwrap();
        self.leave_stale = true;
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if !self.leave_stale && is_mounted(&self.dir) {
            let _ = Command::new("fusermount3")
                .args(["-u", "-z"])
                .arg(&self.dir)
                .status();
        }
    }
}

pub fn unsafe_free_kill(pid: u32, sig: &str) {
    let st = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(st.success());
}
