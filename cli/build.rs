//! Records the git commit `puce` is built from, for `puce --version`: `PUCE_COMMIT` if set (a
//! build from a tarball that knows its commit), else `git rev-parse` of this checkout, else
//! "unknown" (a tarball without `.git`, or no git installed).

use std::path::Path;
use std::process::Command;

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .ok()?;
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !s.is_empty()).then_some(s)
}

fn main() {
    println!("cargo:rerun-if-env-changed=PUCE_COMMIT");
    let manifest = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into());
    let dir = Path::new(&manifest);
    let commit = std::env::var("PUCE_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| git(dir, &["rev-parse", "--short=12", "HEAD"]));
    // Rebuilt when HEAD moves: HEAD itself (a checkout), the branch it names (a commit) and the
    // packed refs. Only files that exist: a missing one would rerun this script on every build.
    if commit.is_some() {
        let mut watch = vec!["HEAD".to_string(), "packed-refs".to_string()];
        watch.extend(git(dir, &["symbolic-ref", "-q", "HEAD"]));
        for w in watch {
            if let Some(p) = git(
                dir,
                &["rev-parse", "--path-format=absolute", "--git-path", &w],
            ) && Path::new(&p).exists()
            {
                println!("cargo:rerun-if-changed={p}");
            }
        }
    }
    let commit = commit.unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=PUCE_COMMIT={commit}");
}
