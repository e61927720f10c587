//! Command-line arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// The version `puce --version` prints: the crate version and the commit built (`build.rs`).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("PUCE_COMMIT"),
    ")"
);

/// puce: a deduplicating store for an association's shared folders.
#[derive(Debug, Parser)]
#[command(name = "puce", version = VERSION, about, max_term_width = 100)]
pub struct Cli {
    /// Repository directory [default: $XDG_DATA_HOME/puce/repo, created on first use]
    #[arg(long, global = true, env = "PUCE_REPO", value_name = "PATH")]
    pub repo: Option<PathBuf>,

    /// Key file of an encrypted repository [default: $XDG_CONFIG_HOME/puce/keys/<repository
    /// id>.key]
    #[arg(long, global = true, env = "PUCE_KEY_FILE", value_name = "FILE")]
    pub key_file: Option<PathBuf>,

    /// File whose first line is the passphrase of a protected key (else PUCE_PASSWORD_COMMAND,
    /// the systemd credential `puce-passphrase`, or the terminal)
    #[arg(long, global = true, env = "PUCE_PASSWORD_FILE", value_name = "FILE")]
    pub password_file: Option<PathBuf>,

    /// Print machine-readable JSON instead of tables
    #[arg(long, global = true)]
    pub json: bool,

    /// Print only errors (no progress, no summary lines)
    #[arg(long, short, global = true)]
    pub quiet: bool,

    /// More log output (repeat for more)
    #[arg(long, short, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a repository
    Init(InitArgs),
    /// Take a snapshot of a folder
    Snapshot(SnapshotArgs),
    /// List snapshots
    Snapshots(SnapshotsArgs),
    /// List the files of a snapshot: SNAP[:PATH]
    Ls(LsArgs),
    /// Write a file of a snapshot to standard output: SNAP:PATH
    Cat(CatArgs),
    /// Restore a snapshot, or a path in it, into a folder: SNAP[:PATH] TARGET
    Restore(RestoreArgs),
    /// Show what changed between two snapshots
    Diff(DiffArgs),
    /// Verify the repository
    Check(CheckArgs),
    /// Repair the repository: heal damaged data from peers (--from PEER), or rebuild the index
    Repair(RepairArgs),
    /// Remove snapshots, by id or by a retention policy
    Forget(ForgetArgs),
    /// Delete data no snapshot needs any more, and compact packs
    Gc(GcArgs),
    /// Show or set the retention policy stored for a space
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Reports for admins: dedup, retention, growth
    #[command(subcommand)]
    Report(ReportCommand),
    /// Mount the spaces (read-write) and every snapshot (read-only) as a folder
    Mount(MountArgs),
    /// This node: identity, daemon, status (replication between sites)
    #[command(subcommand)]
    Node(NodeCommand),
    /// Sync spaces with a peer node now: PEER [--space S] [--pull | --push]
    Sync(SyncArgs),
    /// Write the man pages or shell completions into a folder (for packagers)
    #[command(subcommand, hide = true)]
    Generate(GenerateCommand),
    /// Rules per space for this node: how many copies the sites must hold
    #[command(subcommand)]
    Space(SpaceCommand),
    /// Keys of an encrypted repository: passphrases, key files, recovery sheet, shares
    #[command(subcommand)]
    Key(KeyCommand),
    /// Copy every snapshot of a repository into a new encrypted one (--from OLD), or into one
    /// under a new key after the key leaked (--new-key)
    Migrate(MigrateArgs),
}

/// `puce migrate`.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// The new repository directory, created if it does not exist (run again after an
    /// interruption, it goes on) [default: --repo; required with --new-key]
    pub path: Option<PathBuf>,
    /// The old repository (unencrypted, or encrypted with a key this machine has) [default
    /// with --new-key: --repo]
    #[arg(long, value_name = "PATH", required_unless_present = "new_key")]
    pub from: Option<PathBuf>,
    /// Key file of the old repository [default: --key-file, else its key in the key directory]
    #[arg(long, value_name = "FILE")]
    pub from_key_file: Option<PathBuf>,
    /// The key leaked: the new repository gets a brand new key (never the old one's), and
    /// every object a new id
    #[arg(long, conflicts_with = "key_from")]
    pub new_key: bool,
    /// Use the association's key from this key file, recovery sheet, or share (repeat for each
    /// share) for the new repository, instead of a new random key
    #[arg(long, value_name = "FILE")]
    pub key_from: Vec<PathBuf>,
    /// Protect the new repository's key file by a passphrase (from --new-password-file or
    /// asked twice)
    #[arg(long)]
    pub passphrase: bool,
    #[command(flatten)]
    pub new: NewPassphraseArg,
}

#[derive(Debug, Subcommand)]
pub enum GenerateCommand {
    /// Man pages: puce.1 and one page per subcommand (puce-snapshot.1, ...)
    Man {
        /// Folder to write into (created if needed)
        dir: PathBuf,
    },
    /// Completions for bash (puce.bash), zsh (_puce) and fish (puce.fish)
    Completions {
        /// Folder to write into (created if needed)
        dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum SpaceCommand {
    /// Set the replica rule of a space (this node plus at least COPIES-1 peers hold its
    /// latest snapshots, checked by `puce report replicas` and the daemon's metrics) and/or
    /// its quota (the most stored bytes its snapshots may reach, enforced by snapshots and the
    /// mount)
    Set {
        /// The space
        space: String,
        /// Copies wanted, this node's included
        #[arg(long, value_name = "N", required_unless_present = "quota")]
        copies: Option<u32>,
        /// Quota in stored bytes, e.g. 50GiB; `none` removes it
        #[arg(long, value_name = "SIZE")]
        quota: Option<String>,
        #[command(flatten)]
        dir: NodeDirArg,
    },
    /// Remove the replica rule of a space
    Unset {
        /// The space
        space: String,
        #[command(flatten)]
        dir: NodeDirArg,
    },
}

#[derive(Debug, Args)]
pub struct ForgetArgs {
    /// Snapshots to forget (id prefixes or SPACE@latest); none: apply a policy
    pub snapshots: Vec<String>,
    /// Only snapshots of this space (repeatable)
    #[arg(long = "space", value_name = "SPACE")]
    pub spaces: Vec<String>,
    #[command(flatten)]
    pub policy: puce_core::retention::Policy,
    /// Group snapshots by space (default) or by space and host before applying the policy
    #[arg(long, value_enum, default_value_t = GroupByArg::Space)]
    pub group_by: GroupByArg,
    /// Print what would be removed and why, remove nothing
    #[arg(long, short = 'n')]
    pub dry_run: bool,
    /// Run gc afterwards to free the space
    #[arg(long)]
    pub prune: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum GroupByArg {
    /// One group per space
    Space,
    /// One group per space and host
    Host,
}

#[derive(Debug, Args)]
pub struct GcArgs {
    /// Print the plan (what would be deleted, repacked and freed), change nothing
    #[arg(long, short = 'n')]
    pub dry_run: bool,
    /// Repack a pack when more than this percentage of it is unused
    #[arg(long, default_value_t = 20.0, value_name = "PERCENT")]
    pub repack_unused: f64,
    /// Wait at most this many seconds for running writers before leaving the rest to the next gc
    #[arg(long, default_value_t = 600, value_name = "SECONDS")]
    pub max_wait: u64,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Store a retention policy for a space (used by `puce forget` without flags and by nodes)
    Set {
        /// The space
        space: String,
        #[command(flatten)]
        policy: puce_core::retention::Policy,
    },
    /// Show the stored policies
    Show {
        /// Only this space
        space: Option<String>,
    },
    /// Remove the stored policy of a space
    Unset {
        /// The space
        space: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ReportCommand {
    /// Logical and stored bytes, dedup and compression, per space and snapshot, largest
    /// folders, most duplicated files
    Dedup(ReportArgs),
    /// Which snapshots a policy would remove, and exactly how many bytes that frees
    Retention(RetentionReportArgs),
    /// Stored bytes over time, growth rate, and when the disk fills
    Growth(ReportArgs),
    /// Which nodes hold which heads of each space, how old each copy is, and whether the
    /// replica rules hold (exit status 1 when one is broken)
    Replicas(ReplicasArgs),
    /// What this node holds for each peer (against its quota) and what each peer holds for
    /// this node as of the last sync: bytes only its data uses, fair shares
    Peers(PeersArgs),
}

#[derive(Debug, Args)]
pub struct PeersArgs {
    /// Also write a self-contained HTML page with a chart over time
    #[arg(long, value_name = "FILE")]
    pub html: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub dir: NodeDirArg,
}

#[derive(Debug, Args)]
pub struct ReplicasArgs {
    /// Only this space
    #[arg(long)]
    pub space: Option<String>,
    /// Also write a self-contained HTML page
    #[arg(long, value_name = "FILE")]
    pub html: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub dir: NodeDirArg,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Only this space
    #[arg(long)]
    pub space: Option<String>,
    /// Also write a self-contained HTML page with charts
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// How many rows in top lists
    #[arg(long, default_value_t = 15)]
    pub top: usize,
}

#[derive(Debug, Args)]
pub struct RetentionReportArgs {
    /// Only snapshots of this space (repeatable)
    #[arg(long = "space", value_name = "SPACE")]
    pub spaces: Vec<String>,
    #[command(flatten)]
    pub policy: puce_core::retention::Policy,
    /// Group snapshots by space (default) or by space and host
    #[arg(long, value_enum, default_value_t = GroupByArg::Space)]
    pub group_by: GroupByArg,
    /// Also write a self-contained HTML page with charts
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Repository directory (same as --repo)
    pub path: Option<PathBuf>,
    /// Smallest chunk, bytes (even)
    #[arg(long, value_name = "BYTES")]
    pub chunk_min: Option<u32>,
    /// Average chunk, bytes (even)
    #[arg(long, value_name = "BYTES")]
    pub chunk_avg: Option<u32>,
    /// Largest chunk, bytes (even)
    #[arg(long, value_name = "BYTES")]
    pub chunk_max: Option<u32>,
    /// zstd compression level (0: none)
    #[arg(long, default_value_t = 3, value_name = "LEVEL")]
    pub compression: i32,
    /// Pack size target, MiB
    #[arg(long, default_value_t = 32, value_name = "MIB")]
    pub pack_size: u64,
    /// Keep packs and records in an S3-compatible store: s3://BUCKET/PREFIX (the index stays in
    /// the local repository directory)
    #[arg(long, value_name = "URL")]
    pub backend: Option<String>,
    /// S3 endpoint URL (e.g. http://127.0.0.1:3900 for Garage)
    #[arg(long, value_name = "URL", requires = "backend")]
    pub endpoint: Option<String>,
    /// S3 region
    #[arg(long, default_value = "garage", requires = "backend")]
    pub region: String,
    /// Attach to a repository that already exists in the bucket (then `puce repair index`)
    #[arg(long, requires = "backend")]
    pub attach: bool,
    /// Encrypt the repository (the default): a new random key, its key file written to
    /// $XDG_CONFIG_HOME/puce/keys/<repository id>.key (keep a copy elsewhere: without it the
    /// data cannot be read)
    #[arg(long)]
    pub encrypt: bool,
    /// Use the association's key from this key file, recovery sheet, or share (repeat for each
    /// share) (a second site of the same association; dedup and sync with its other sites need
    /// the same key)
    #[arg(long, value_name = "FILE", conflicts_with = "no_encrypt")]
    pub key_from: Vec<std::path::PathBuf>,
    /// Protect the key file by a passphrase (from --password-file, PUCE_PASSWORD_FILE,
    /// PUCE_PASSWORD_COMMAND, or asked twice on the terminal)
    #[arg(long, conflicts_with = "no_encrypt")]
    pub passphrase: bool,
    /// Store everything in clear (names, contents): only for data that is public anyway, or
    /// to compare with older versions; whoever holds the disk, the bucket or a replica reads it
    #[arg(long, conflicts_with = "encrypt")]
    pub no_encrypt: bool,
}

#[derive(Debug, Args)]
pub struct SnapshotArgs {
    /// Folder to snapshot
    pub path: PathBuf,
    /// Space (shared folder) the snapshot belongs to [default: the folder's name]
    #[arg(long)]
    pub space: Option<String>,
    /// Tag to record (repeatable)
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Exclude names (no '/') or paths relative to the folder (with '/') matching a glob
    /// (repeatable)
    #[arg(long = "exclude", value_name = "GLOB")]
    pub excludes: Vec<String>,
    /// Read every file, even those that look unchanged
    #[arg(long)]
    pub force_read: bool,
    /// Host name to record
    #[arg(long)]
    pub host: Option<String>,
    /// Reader threads [default: number of CPUs]
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Record this time instead of now (RFC 3339, e.g. 2024-03-01T02:00:00Z), for imports
    #[arg(long, value_name = "TIME")]
    pub time: Option<String>,
}

#[derive(Debug, Args)]
pub struct SnapshotsArgs {
    /// Only this space
    #[arg(long)]
    pub space: Option<String>,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// SNAP[:PATH]: a snapshot id prefix or SPACE@latest, then a path inside it
    pub target: String,
    /// List subdirectories too
    #[arg(long, short = 'R')]
    pub recursive: bool,
    /// Long listing: mode, size, time
    #[arg(long, short)]
    pub long: bool,
}

#[derive(Debug, Args)]
pub struct CatArgs {
    /// SNAP:PATH
    pub target: String,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// SNAP[:PATH]
    pub source: String,
    /// Folder to restore into (created if needed)
    pub target: PathBuf,
    /// Writer threads [default: number of CPUs]
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Restore the set-user-ID and set-group-ID bits of files (dropped by default: a snapshot
    /// may come from a partner)
    #[arg(long)]
    pub preserve_suid: bool,
    /// Create the device nodes the snapshot holds (needs root; not by default: a snapshot may
    /// come from a partner, and a device node gives access to this machine's hardware)
    #[arg(long)]
    pub preserve_devices: bool,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The older snapshot
    pub a: String,
    /// The newer snapshot
    pub b: String,
    /// Also list metadata-only changes
    #[arg(long)]
    pub metadata: bool,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Read and verify every byte of data
    #[arg(long)]
    pub read_data: bool,
    /// With --read-data: read only this share of the packs (e.g. 5%), continuing where the last
    /// sampled check stopped, so that a nightly check covers everything over time
    #[arg(long, value_name = "PERCENT", value_parser = parse_percent, requires = "read_data")]
    pub sample: Option<f64>,
}

fn parse_percent(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("'{s}' is not a percentage"))?;
    if v > 0.0 && v <= 100.0 {
        Ok(v / 100.0)
    } else {
        Err(format!("'{s}': give a percentage above 0 and at most 100"))
    }
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct RepairArgs {
    #[command(subcommand)]
    pub command: Option<RepairCommand>,
    /// Heal from this peer (its name in node.toml, or its id; repeatable, asked in order):
    /// check every byte, fetch what is damaged or missing from the peers that have it, verify
    /// it, and rewrite the damaged packs
    #[arg(long = "from", value_name = "PEER")]
    pub from: Vec<String>,
    #[command(flatten)]
    pub dir: NodeDirArg,
}

#[derive(Debug, Subcommand)]
pub enum RepairCommand {
    /// Rebuild the index from the packs and snapshot files
    Index,
}

#[derive(Debug, Args)]
pub struct MountArgs {
    /// Directory to mount on (must exist)
    pub mountpoint: PathBuf,
    /// Show only this space (a new one is created by the first change)
    #[arg(long)]
    pub space: Option<String>,
    /// Refuse every change
    #[arg(long)]
    pub read_only: bool,
    /// Return once mounted and keep serving in the background
    #[arg(long)]
    pub background: bool,
    /// Log file of a background mount [default: the user's cache directory, puce/mount.log]
    #[arg(long, value_name = "FILE")]
    pub log: Option<PathBuf>,
    /// Quiet time after the last change before committing it, seconds
    #[arg(long, default_value_t = 2.0, value_name = "SECONDS")]
    pub commit_delay: f64,
    /// How often to look for snapshots made elsewhere (replication), seconds
    #[arg(long, default_value_t = 2.0, value_name = "SECONDS")]
    pub poll: f64,
    /// Chunk cache size, MiB
    #[arg(long, default_value_t = 64, value_name = "MIB")]
    pub cache: usize,
    /// Let other users use the mount (needs user_allow_other in /etc/fuse.conf for non-root)
    #[arg(long)]
    pub allow_other: bool,
    /// Request-handling threads [default: 1 when the kernel wakes the mount on the caller's
    /// CPU (fuse wake_here), else 4]
    #[arg(long)]
    pub threads: Option<usize>,
    /// Serve reads and writes of changed files through the mount even when the kernel can do
    /// them itself (passthrough: root, Linux 6.9 and later); for comparison, or a kernel that
    /// misbehaves
    #[arg(long)]
    pub no_passthrough: bool,
    /// Internal: print one line on stdout once mounted (used by --background)
    #[arg(long, hide = true)]
    pub notify_ready: bool,
}

/// Where the node's files are.
#[derive(Debug, Args)]
pub struct NodeDirArg {
    /// Node directory: key, certificate, node.toml, state [default: REPO/node]
    #[arg(long, env = "PUCE_NODE_DIR", value_name = "PATH")]
    pub node_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Create this node's key pair, certificate and node.toml
    Init(NodeInitArgs),
    /// Print this node's id (give it to the admins of peer nodes)
    Id(NodeDirArg),
    /// Run the daemon: serve peers, sync on schedule (stop with SIGTERM or Ctrl-C)
    Run(NodeDirArg),
    /// Show peers, last successful syncs and what is pending
    Status(NodeDirArg),
    /// Forget the snapshots a peer delivered since a time (junk from a compromised peer)
    Drop(NodeDropArgs),
}

#[derive(Debug, Args)]
pub struct NodeDropArgs {
    #[command(flatten)]
    pub dir: NodeDirArg,
    /// The peer: its name in node.toml, or its id
    pub peer: String,
    /// Snapshots that arrived from it at or after this time (RFC 3339, e.g.
    /// 2026-12-01T00:00:00Z)
    #[arg(long)]
    pub since: String,
    /// Only list what would be dropped
    #[arg(long, short = 'n')]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct NodeInitArgs {
    #[command(flatten)]
    pub dir: NodeDirArg,
    /// Node name, shown to peers and used in conflict copies [default: the host name]
    #[arg(long)]
    pub name: Option<String>,
    /// UDP address to listen on
    #[arg(long, default_value = "0.0.0.0:7878", value_name = "IP:PORT")]
    pub listen: String,
}

#[derive(Debug, Args)]
pub struct SyncArgs {
    #[command(flatten)]
    pub dir: NodeDirArg,
    /// The peer: its name in node.toml, or its id
    pub peer: String,
    /// Only this space (repeatable) [default: every space node.toml shares with the peer]
    #[arg(long = "space", value_name = "SPACE")]
    pub spaces: Vec<String>,
    /// Only receive the peer's snapshots
    #[arg(long, conflicts_with = "push")]
    pub pull: bool,
    /// Only send this node's snapshots
    #[arg(long)]
    pub push: bool,
}

/// `puce key`: the key files of an encrypted repository, in the user's key directory
/// ($XDG_CONFIG_HOME/puce/keys), never in the repository.
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Add a way to open the key: a passphrase-protected key file in the key directory (the
    /// new passphrase from --new-password-file or asked twice), or a plain key file elsewhere
    Add {
        /// A label to tell keys apart (who holds the passphrase)
        #[arg(long, default_value = "")]
        label: String,
        /// Write a plain key file (no passphrase) to this path instead, e.g. on a USB stick
        #[arg(long, value_name = "PATH")]
        key_file_out: Option<PathBuf>,
        #[command(flatten)]
        new: NewPassphraseArg,
    },
    /// List the key files of the repository in the key directory
    List,
    /// Remove a key file (refused for the last one)
    Remove {
        /// Its id, from `puce key list`
        id: String,
    },
    /// Set a new passphrase on a key file (a plain one gets its first passphrase)
    Passwd {
        /// Its id, from `puce key list` [default: the only passphrase-protected key]
        id: Option<String>,
        #[command(flatten)]
        new: NewPassphraseArg,
    },
    /// Print the key in a form to keep on paper (recovery sheet)
    Export {
        /// Print a recovery sheet (the only form for now)
        #[arg(long, required = true)]
        paper: bool,
        #[command(flatten)]
        dir: NodeDirArg,
    },
    /// Split the key into shares, any THRESHOLD of which bring it back
    Split {
        /// How many shares
        #[arg(long, value_name = "N")]
        shares: u8,
        /// How many shares are needed to bring the key back
        #[arg(long, value_name = "K")]
        threshold: u8,
        /// Write each share to its own file in this folder instead of printing them
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Bring the key back into the key directory from a key file, a recovery sheet, or shares
    Import {
        /// A key file, a recovery sheet (typed back), or shares (several files)
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Protect the imported key by a passphrase (from --new-password-file or asked twice)
        #[arg(long)]
        passphrase: bool,
        #[command(flatten)]
        new: NewPassphraseArg,
    },
}

/// Where a new passphrase comes from.
#[derive(Debug, Args)]
pub struct NewPassphraseArg {
    /// File whose first line is the new passphrase [default: asked twice on the terminal]
    #[arg(long, env = "PUCE_NEW_PASSWORD_FILE", value_name = "FILE")]
    pub new_password_file: Option<PathBuf>,
}
