//! Model test: random sequences of file-system operations run against a space of a real
//! `puce mount` and against a plain directory; results (success or errno) and the resulting
//! trees must agree, while mounted, after a remount (committed state), and after a restore.
//!
//! `PUCE_MODEL_OPS` sets the number of operations (default 400), `PUCE_MODEL_SEED` the seed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, UNIX_EPOCH};

use puce_tests::{Need, Rng, TestRepo, is_mounted, random_bytes, require};

/// A running mount; killed and unmounted if the test fails.
struct Guard(Option<Child>, PathBuf);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
            let _ = Command::new("fusermount3")
                .args(["-u", "-z"])
                .arg(&self.1)
                .status();
        }
    }
}

fn mount(repo: &TestRepo, dir: &Path) -> Guard {
    fs::create_dir_all(dir).unwrap();
    let child = repo
        .cmd()
        .args(["mount", dir.to_str().unwrap(), "--commit-delay", "0.3"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(dir.with_extension("log")).unwrap())
        .spawn()
        .unwrap();
    let guard = Guard(Some(child), dir.to_path_buf());
    let deadline = Instant::now() + Duration::from_secs(120);
    while !is_mounted(dir) {
        assert!(Instant::now() < deadline, "mount did not appear");
        std::thread::sleep(Duration::from_millis(50));
    }
    guard
}

fn unmount(mut guard: Guard, dir: &Path) {
    let mut child = guard.0.take().unwrap();
    Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    let st = child.wait().unwrap();
    assert!(
        st.success(),
        "mount exited with {st}: {}",
        fs::read_to_string(dir.with_extension("log")).unwrap_or_default()
    );
}

/// Everything that must agree: kind, mode, size, content, mtime and link count of files, link
/// targets.
/// (Directory times are not compared.)
fn tree(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        let mut names: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        for n in names {
            let p = dir.join(&n);
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let md = fs::symlink_metadata(&p).unwrap();
            let mode = md.permissions().mode() & 0o7777;
            let d = if md.file_type().is_symlink() {
                format!("l {}", fs::read_link(&p).unwrap().display())
            } else if md.is_dir() {
                walk(root, &p, out);
                format!("d {mode:o}")
            } else {
                let data = fs::read(&p).unwrap();
                format!(
                    "f {mode:o} {} {} {} n{}",
                    data.len(),
                    blake3::hash(&data),
                    md.mtime(),
                    md.nlink()
                )
            };
            out.insert(rel, d);
        }
    }
    walk(root, root, &mut out);
    out
}

#[derive(Debug, Clone)]
enum Op {
    Write(String, usize, u64),
    Append(String, usize, u64),
    Truncate(String, u64),
    Overwrite(String, u64, usize, u64),
    Mkdir(String),
    Rmdir(String),
    Unlink(String),
    Rename(String, String),
    Chmod(String, u32),
    Symlink(String, String),
    Link(String, String),
}

fn path(rng: &mut Rng) -> String {
    const NAMES: [&str; 4] = ["a", "b", "c", "d"];
    let mut p = NAMES[rng.below(4) as usize].to_string();
    for _ in 0..rng.below(3) {
        p = format!("{p}/{}", NAMES[rng.below(4) as usize]);
    }
    p
}

/// A name for hard links (`e`, `f`, `g`, at the top or in `a/`), which writes, removals and
/// renames also use: links then succeed often enough, and their names get written and moved.
fn link_path(rng: &mut Rng) -> String {
    let dir = ["", "a/"][rng.below(2) as usize];
    format!("{dir}{}", ["e", "f", "g"][rng.below(3) as usize])
}

fn random_op(rng: &mut Rng) -> Op {
    let sizes = [0usize, 1, 100, 5_000, 70_000, 300_000];
    let size = |rng: &mut Rng| sizes[rng.below(sizes.len() as u64) as usize];
    match rng.below(13) {
        0 => Op::Write(path(rng), size(rng), rng.next()),
        1 => Op::Write(link_path(rng), size(rng), rng.next()),
        2 => Op::Append(path(rng), size(rng), rng.next()),
        3 => Op::Truncate(path(rng), rng.below(100_000)),
        4 => Op::Overwrite(path(rng), rng.below(200_000), size(rng), rng.next()),
        5 | 6 => Op::Mkdir(path(rng)),
        7 => Op::Rmdir(path(rng)),
        8 => Op::Unlink(if rng.below(2) == 0 {
            path(rng)
        } else {
            link_path(rng)
        }),
        9 => Op::Rename(link_path(rng), path(rng)),
        10 => Op::Chmod(
            path(rng),
            [0o600, 0o644, 0o755, 0o700][rng.below(4) as usize],
        ),
        11 => Op::Link(link_path(rng), link_path(rng)),
        _ => Op::Symlink(["a", "b", "d/a"][rng.below(3) as usize].into(), path(rng)),
    }
}

/// Run `op` under `root`; the result is what must agree (Ok, or the errno).
fn apply(root: &Path, op: &Op, step: u64) -> Result<(), i32> {
    let t = UNIX_EPOCH + Duration::from_secs(1_600_000_000 + step);
    let j = |p: &str| root.join(p);
    let stamp = |p: &PathBuf| -> std::io::Result<()> {
        fs::OpenOptions::new().write(true).open(p)?.set_modified(t)
    };
    let r: std::io::Result<()> = match op {
        Op::Write(p, n, seed) => {
            fs::write(j(p), random_bytes(*n, *seed)).and_then(|_| stamp(&j(p)))
        }
        Op::Append(p, n, seed) => fs::OpenOptions::new()
            .append(true)
            .open(j(p))
            .and_then(|mut f| f.write_all(&random_bytes(*n, *seed)))
            .and_then(|_| stamp(&j(p))),
        Op::Truncate(p, n) => fs::OpenOptions::new()
            .write(true)
            .open(j(p))
            .and_then(|f| f.set_len(*n))
            .and_then(|_| stamp(&j(p))),
        Op::Overwrite(p, off, n, seed) => fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(j(p))
            .and_then(|mut f| {
                f.seek(SeekFrom::Start(*off))?;
                f.write_all(&random_bytes(*n, *seed))
            })
            .and_then(|_| stamp(&j(p))),
        Op::Mkdir(p) => fs::create_dir(j(p)),
        Op::Rmdir(p) => fs::remove_dir(j(p)),
        Op::Unlink(p) => fs::remove_file(j(p)),
        Op::Rename(a, b) => fs::rename(j(a), j(b)),
        Op::Chmod(p, m) => {
            // Not through symlinks: chmod of a link's target is covered by direct paths.
            match fs::symlink_metadata(j(p)) {
                Ok(md) if md.file_type().is_symlink() => Ok(()),
                _ => fs::set_permissions(j(p), fs::Permissions::from_mode(*m)),
            }
        }
        Op::Symlink(target, p) => std::os::unix::fs::symlink(target, j(p)),
        Op::Link(a, b) => fs::hard_link(j(a), j(b)),
    };
    r.map_err(|e| e.raw_os_error().unwrap_or(-1))
}

#[test]
fn random_operations_agree_with_a_plain_directory() {
    if require(Need::Fuse).is_none() {
        return;
    }
    let ops: u64 = std::env::var("PUCE_MODEL_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400);
    let seed: u64 = std::env::var("PUCE_MODEL_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x6d6f_64656c);
    let repo = TestRepo::new();
    let model = repo.dir.path().join("model");
    fs::create_dir_all(&model).unwrap();
    // Start from a committed state with a little content.
    fs::create_dir_all(model.join("a")).unwrap();
    fs::write(model.join("a/b"), random_bytes(200_000, 1)).unwrap();
    fs::write(model.join("c"), b"seed").unwrap();
    repo.snapshot(&model, "m");
    let mnt = repo.dir.path().join("mnt");
    let child = mount(&repo, &mnt);
    let space = mnt.join("spaces/m");
    assert_eq!(tree(&space), tree(&model), "initial state");
    let mut rng = Rng::new(seed);
    let mut log = Vec::new();
    for step in 0..ops {
        let op = random_op(&mut rng);
        let want = apply(&model, &op, step);
        let got = apply(&space, &op, step);
        log.push(format!("{step}: {op:?} -> {want:?}"));
        assert_eq!(
            got,
            want,
            "step {step} {op:?}: mount and plain directory disagree (seed {seed}); ops:\n{}",
            log.join("\n")
        );
        if step % 150 == 149 {
            // Quiet for longer than the commit delay: the mount commits mid-run, and later
            // operations apply on top of the new snapshot.
            std::thread::sleep(Duration::from_millis(600));
        }
        if step % 25 == 24 {
            assert_eq!(
                tree(&space),
                tree(&model),
                "after step {step} (seed {seed})"
            );
        }
    }
    let final_tree = tree(&model);
    assert_eq!(tree(&space), final_tree, "at the end (seed {seed})");
    // Unmount (commits), mount again: the committed state is the same.
    unmount(child, &mnt);
    let child = mount(&repo, &mnt);
    assert_eq!(tree(&space), final_tree, "after a remount (seed {seed})");
    unmount(child, &mnt);
    let out = repo.dir.path().join("restored");
    repo.ok(&["restore", "m@latest", out.to_str().unwrap()]);
    assert_eq!(tree(&out), final_tree, "restored (seed {seed})");
}
