//! One module per subcommand; `run` dispatches.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use puce_core::{ErrorKind, InitOptions, OpenOptions, Repo};

use crate::args::{Cli, Command, NodeCommand, RepairCommand};

mod check;
mod diff;
mod forget;
mod gc;
mod generate;
mod init;
mod key;
mod ls;
mod migrate;
mod mount;
mod node;
mod peers;
mod policy;
mod repair;
mod replicas;
mod report;
mod restore;
mod snapshot;
mod snapshots;
mod sync;

/// Global options every command sees.
pub struct Ctx {
    pub repo: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub password_file: Option<PathBuf>,
    pub json: bool,
    pub quiet: bool,
}

impl Ctx {
    /// The repository path: `--repo`, `PUCE_REPO`, or the default under the XDG data directory.
    pub fn repo_path(&self) -> Result<(PathBuf, bool)> {
        if let Some(p) = &self.repo {
            return Ok((p.clone(), false));
        }
        let dirs = directories::ProjectDirs::from("", "", "puce").context(
            "no home directory to put the default repository in: give --repo or set PUCE_REPO",
        )?;
        Ok((dirs.data_dir().join("repo"), true))
    }

    /// How repositories are opened: the stat cache goes to the user's cache directory, the key
    /// of an encrypted repository comes from `--key-file` or the user's key directory.
    pub fn open_options(&self) -> OpenOptions {
        let dirs = directories::ProjectDirs::from("", "", "puce");
        OpenOptions {
            cache_dir: dirs.as_ref().map(|d| d.cache_dir().to_path_buf()),
            key_files: self.key_file.iter().cloned().collect(),
            key_dir: key_dir(),
            passphrase: Some(crate::passphrase::source(self.password_file.clone())),
            ..OpenOptions::default()
        }
    }

    /// The S3 backend of the repository at `path`, if its data lives in a bucket.
    pub fn s3_backend(
        &self,
        path: &std::path::Path,
    ) -> Result<Option<Arc<dyn puce_core::backend::Backend>>> {
        let Some(loc) = puce_s3::S3Location::load(path)? else {
            return Ok(None);
        };
        Ok(Some(Arc::new(s3_open(path, loc)?)))
    }

    /// Open the repository; the default one is created on first use.
    pub fn open(&self) -> Result<Arc<Repo>> {
        let repo = self.open_quietly()?;
        for note in repo.healed() {
            eprintln!("warning: {note}; a damaged file is often the first sign of a failing disk");
        }
        Ok(repo)
    }

    fn open_quietly(&self) -> Result<Arc<Repo>> {
        let (path, is_default) = self.repo_path()?;
        if let Some(backend) = self.s3_backend(&path)? {
            return Ok(Arc::new(Repo::open_with_backend(
                &path,
                backend,
                &self.open_options(),
            )?));
        }
        if is_default && !path.join("config").exists() && !path.join("index.redb").exists() {
            let opts = InitOptions {
                open: self.open_options(),
                ..InitOptions::default()
            };
            let opts = InitOptions {
                key_dir: Some(key_dir().context(
                    "no home directory to keep the key file in: set HOME (or XDG_CONFIG_HOME)",
                )?),
                ..opts
            };
            let repo = Repo::init(&path, &opts)?;
            if !self.json {
                eprintln!("created the default repository at {}", path.display());
            }
            // Said even with --json (on stderr): losing that file is losing the data.
            {
                if let Some(e) = &repo.config().encryption {
                    let file = key_dir()
                        .unwrap_or_default()
                        .join(puce_core::keyfile::file_name(repo.config()));
                    eprintln!("{}", key_notice(&e.fingerprint.to_string(), &file));
                }
            }
            return Ok(Arc::new(repo));
        }
        Ok(Arc::new(Repo::open_with(&path, &self.open_options())?))
    }
}

/// What to tell, once, when a repository gets a new key.
pub fn key_notice(fingerprint: &str, file: &std::path::Path) -> String {
    format!(
        "encrypted with key {fingerprint}, kept in {}: copy that file somewhere safe (another \
         machine, a USB stick), or print a recovery sheet with `puce key export --paper`; \
         without the key nobody can read this repository",
        file.display()
    )
}

/// Where the key files of encrypted repositories are kept: `$XDG_CONFIG_HOME/puce/keys`.
pub fn key_dir() -> Option<PathBuf> {
    directories::ProjectDirs::from("", "", "puce").map(|d| d.config_dir().join("keys"))
}

/// Connect to the bucket described by `loc`, for the local repository directory `path`.
pub fn s3_open(path: &std::path::Path, loc: puce_s3::S3Location) -> Result<puce_s3::S3Backend> {
    let config_dir =
        directories::ProjectDirs::from("", "", "puce").map(|d| d.config_dir().to_path_buf());
    let (credentials, mut warnings) = puce_s3::Credentials::discover(config_dir.as_deref())?;
    warnings.extend(loc.warnings());
    for w in warnings {
        eprintln!("warning: {w}");
    }
    Ok(puce_s3::S3Backend::open(puce_s3::S3Config {
        location: loc,
        credentials,
        retry_timeout: std::time::Duration::from_secs(
            std::env::var("PUCE_S3_RETRY_SECS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(60),
        ),
        cache_bytes: 64 << 20,
        tmp_dir: path.join("tmp"),
    })?)
}

/// Run the parsed command; returns the exit code.
pub fn run(cli: Cli) -> Result<i32> {
    let ctx = Ctx {
        repo: cli.repo,
        key_file: cli.key_file,
        password_file: cli.password_file,
        json: cli.json,
        quiet: cli.quiet,
    };
    match cli.command {
        Command::Init(a) => init::run(&ctx, a),
        Command::Snapshot(a) => snapshot::run(&ctx, a),
        Command::Snapshots(a) => snapshots::run(&ctx, a),
        Command::Ls(a) => ls::run_ls(&ctx, a),
        Command::Cat(a) => ls::run_cat(&ctx, a),
        Command::Restore(a) => restore::run(&ctx, a),
        Command::Diff(a) => diff::run(&ctx, a),
        Command::Check(a) => check::run(&ctx, a),
        Command::Repair(a) => match a.command {
            Some(RepairCommand::Index) => repair::run_index(&ctx),
            None => repair::run_heal(&ctx, a),
        },
        Command::Forget(a) => forget::run(&ctx, a),
        Command::Gc(a) => gc::run(&ctx, a),
        Command::Policy(c) => policy::run(&ctx, c),
        Command::Report(c) => report::run(&ctx, c),
        Command::Mount(a) => mount::run(&ctx, a),
        Command::Node(NodeCommand::Init(a)) => node::run_init(&ctx, a),
        Command::Node(NodeCommand::Id(a)) => node::run_id(&ctx, a),
        Command::Node(NodeCommand::Run(a)) => node::run_daemon(&ctx, a),
        Command::Node(NodeCommand::Status(a)) => node::run_status(&ctx, a),
        Command::Node(NodeCommand::Drop(a)) => node::run_drop(&ctx, a),
        Command::Sync(a) => sync::run(&ctx, a),
        Command::Generate(c) => generate::run(&c),
        Command::Space(c) => replicas::run_space(&ctx, c),
        Command::Key(c) => key::run(&ctx, c),
        Command::Migrate(a) => migrate::run(&ctx, a),
    }
}

/// The exit code for an error: 2 for bad usage, 1 otherwise.
pub fn exit_code(e: &anyhow::Error) -> i32 {
    match e.downcast_ref::<puce_core::Error>().map(|e| e.kind()) {
        Some(ErrorKind::InvalidInput) => 2,
        _ => 1,
    }
}

/// Split `SNAP[:PATH]` at the first `:`.
pub fn split_target(s: &str) -> (&str, &str) {
    match s.split_once(':') {
        Some((a, b)) => (a, b),
        None => (s, ""),
    }
}
