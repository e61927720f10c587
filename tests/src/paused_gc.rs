//! A real `puce gc` paused between its plan and its deletions by the debug-build test hook
//! `PUCE_TEST_GC_PAUSE`, so that tests run other writers in that window.

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Stdio};

use crate::TestRepo;
use crate::node::wait_for;

/// A `puce gc` stopped by the test hook once its plan is made and its condemned objects are
/// recorded; [`PausedGc::resume`] lets it delete.
pub struct PausedGc {
    child: Option<Child>,
    dir: PathBuf,
    out: PathBuf,
}

impl PausedGc {
    pub fn start(repo: &TestRepo, args: &[&str]) -> PausedGc {
        let dir = repo.dir.path().join("gc-pause");
        fs::create_dir_all(&dir).unwrap();
        let out = repo.dir.path().join("gc.json");
        let child = repo
            .cmd()
            .args(["--json", "gc"])
            .args(args)
            .env("PUCE_TEST_GC_PAUSE", &dir)
            .stdout(fs::File::create(&out).unwrap())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut g = PausedGc {
            child: Some(child),
            dir,
            out,
        };
        wait_for("gc to pause between its plan and its deletions", || {
            if let Some(Ok(Some(st))) = g.child.as_mut().map(|c| c.try_wait()) {
                panic!("gc exited before pausing ({st}): {}", g.output());
            }
            g.dir.join("paused").exists()
        });
        g
    }

    pub fn output(&self) -> String {
        fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// Let gc go on; its report.
    pub fn resume(mut self) -> serde_json::Value {
        fs::write(self.dir.join("resume"), b"").unwrap();
        let st = self.child.take().unwrap().wait().unwrap();
        assert!(st.success(), "gc failed ({st}): {}", self.output());
        serde_json::from_str(&self.output()).unwrap()
    }
}

impl Drop for PausedGc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
