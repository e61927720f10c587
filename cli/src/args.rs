//! Command-line arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// puce: a deduplicating store for an association's shared folders.
#[derive(Debug, Parser)]
#[command(name = "puce", version, about, max_term_width = 100)]
pub struct Cli {
    /// Repository directory [default: $XDG_DATA_HOME/puce/repo, created on first use]
    #[arg(long, global = true, env = "PUCE_REPO", value_name = "PATH")]
    pub repo: Option<PathBuf>,

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
    /// Repair the repository
    #[command(subcommand)]
    Repair(RepairCommand),
    /// This node: identity, daemon, status (replication between sites)
    #[command(subcommand)]
    Node(NodeCommand),
    /// Sync spaces with a peer node now: PEER [--space S] [--pull | --push]
    Sync(SyncArgs),
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
}

#[derive(Debug, Subcommand)]
pub enum RepairCommand {
    /// Rebuild the index from the packs and snapshot files
    Index,
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
