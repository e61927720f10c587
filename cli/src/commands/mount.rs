//! `puce mount`: the spaces and their history as a folder.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use puce_fuse::{KernelOptions, MountConfig};

use super::Ctx;
use crate::args::MountArgs;

fn seconds(v: f64, what: &str) -> Result<Duration> {
    if !(0.0..=86_400.0).contains(&v) {
        return Err(puce_core::Error::invalid(format!(
            "--{what} must be between 0 and 86400 seconds"
        ))
        .into());
    }
    Ok(Duration::from_secs_f64(v))
}

pub fn run(ctx: &Ctx, a: MountArgs) -> Result<i32> {
    if a.background {
        return background(ctx, &a);
    }
    // Before the repository is opened: a network backend starts threads there, and they must
    // not take SIGTERM (the mount's signal thread commits and unmounts).
    puce_fuse::block_stop_signals()?;
    let repo = ctx.open()?;
    let cfg = MountConfig {
        mountpoint: a.mountpoint.clone(),
        space: a.space.clone(),
        read_only: a.read_only,
        commit_delay: seconds(a.commit_delay, "commit-delay")?,
        poll_interval: seconds(a.poll, "poll")?.max(Duration::from_millis(100)),
        cache_bytes: a.cache.clamp(4, 1 << 20) << 20,
        ..MountConfig::default()
    };
    let kopts = KernelOptions {
        allow_other: a.allow_other,
        threads: a.threads.map(|t| t.clamp(1, 64)),
        no_passthrough: a.no_passthrough,
    };
    let (quiet, notify) = (ctx.quiet, a.notify_ready);
    puce_fuse::mount(repo, cfg, &kopts, |fs| {
        let mp = fs.config().mountpoint.display().to_string();
        if notify {
            let mut out = std::io::stdout();
            let _ = writeln!(out, "ready {mp}");
            let _ = out.flush();
        } else if !quiet {
            eprintln!(
                "mounted {} at {mp}{}: spaces/ and snapshots/; Ctrl-C (or `fusermount3 -u {mp}`) \
                 commits pending changes and unmounts",
                fs.repo().root().display(),
                if fs.config().read_only {
                    " read-only"
                } else {
                    ""
                }
            );
        }
    })?;
    Ok(0)
}

/// Start the same command in the foreground as a detached child and return once it mounted.
fn background(ctx: &Ctx, a: &MountArgs) -> Result<i32> {
    let log = match &a.log {
        Some(l) => l.clone(),
        None => directories::ProjectDirs::from("", "", "puce")
            .context("no home directory for the log file: give --log")?
            .cache_dir()
            .join("mount.log"),
    };
    if let Some(d) = log.parent() {
        puce_core::fsutil::create_private_dirs(d)
            .with_context(|| format!("cannot create {}", d.display()))?;
    }
    let logf = puce_core::fsutil::private_file()
        .create(true)
        .append(true)
        .open(&log)
        .with_context(|| format!("cannot open the log file {}", log.display()))?;
    let exe = std::env::current_exe().context("cannot find the puce executable")?;
    let args: Vec<_> = std::env::args_os()
        .skip(1)
        .filter(|x| x != "--background")
        .collect();
    let mut child = Command::new(exe)
        .args(args)
        .arg("--notify-ready")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(logf)
        .process_group(0)
        .spawn()
        .context("cannot start the background mount")?;
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        let _ = BufReader::new(out).read_line(&mut line);
    }
    if let Some(mp) = line.strip_prefix("ready ") {
        if !ctx.quiet {
            eprintln!(
                "mounted at {} in the background (pid {}, log {}); unmount with \
                 `fusermount3 -u {}` or `kill {}`",
                mp.trim(),
                child.id(),
                log.display(),
                mp.trim(),
                child.id()
            );
        }
        return Ok(0);
    }
    let status = child.wait()?;
    let tail = std::fs::read_to_string(&log).unwrap_or_default();
    let tail: Vec<&str> = tail.lines().rev().take(5).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    bail!(
        "the background mount exited ({status}) before it was ready; its log ({}) ends with:\n{}",
        log.display(),
        tail.join("\n")
    )
}
