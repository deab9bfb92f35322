//! Command-line grammar (clap derive).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "hangar",
    version,
    about = "Disposable, isolated Linux VMs for developers and coding agents"
)]
pub struct Cli {
    /// Config file (the daemon reads it; the CLI finds the socket in it).
    #[arg(long, global = true, env = "HANGAR_CONFIG")]
    pub config: Option<PathBuf>,
    /// API socket of the daemon.
    #[arg(long, global = true, env = "HANGAR_SOCKET")]
    pub socket: Option<PathBuf>,
    /// Print machine-readable JSON.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon (as root).
    Daemon,
    /// Check whether this host is ready, and how to fix what is not.
    Doctor,
    /// Manage VMs.
    #[command(subcommand)]
    Vm(VmCommand),
    /// Run a command in a VM; its exit code becomes hangar's.
    Exec(ExecArgs),
    /// Open an interactive shell in a VM.
    Ssh(SshArgs),
    /// Manage images.
    #[command(subcommand)]
    Image(ImageCommand),
    /// Follow and cancel long-running operations.
    #[command(subcommand)]
    Op(OpCommand),
}

#[derive(Debug, Subcommand)]
pub enum VmCommand {
    /// Create and boot a VM (builds the default image on first use).
    Create(CreateArgs),
    /// List VMs.
    Ls,
    /// Show one VM.
    Show { name: String },
    /// Boot a stopped VM.
    Start(LifecycleArgs),
    /// Power a VM off (gracefully, then forcibly after a timeout).
    Stop(LifecycleArgs),
    /// Stop and start a VM.
    Restart(LifecycleArgs),
    /// Print the guest's serial console log (current or last boot).
    Logs {
        name: String,
        /// Only the last N bytes.
        #[arg(long)]
        tail_bytes: Option<u64>,
        /// Keep printing what the console writes (Ctrl-C to stop); ends
        /// when the VM is removed.
        #[arg(long, short)]
        follow: bool,
    },
    /// Remove a VM and its disk.
    Rm {
        name: String,
        /// Remove it even if it is running.
        #[arg(long, short)]
        force: bool,
    },
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    pub name: String,
    /// Image name or digest (default: the configured default image).
    #[arg(long)]
    pub image: Option<String>,
    #[arg(long)]
    pub cpus: Option<u32>,
    /// Memory, e.g. 1024 (MiB) or 2G.
    #[arg(long)]
    pub memory: Option<String>,
    /// Root disk size, e.g. 8G (at least the image size).
    #[arg(long)]
    pub disk_size: Option<String>,
    /// Print the operation id and return at once.
    #[arg(long)]
    pub no_wait: bool,
}

#[derive(Debug, Args)]
pub struct LifecycleArgs {
    pub name: String,
    #[arg(long)]
    pub no_wait: bool,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    pub name: String,
    /// Allocate a terminal.
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Do not forward standard input.
    #[arg(short = 'n', long)]
    pub no_stdin: bool,
    /// Environment for the command, NAME=VALUE.
    #[arg(short = 'e', long = "env")]
    pub env: Vec<String>,
    /// The command and its arguments (after `--`).
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct SshArgs {
    pub name: String,
    /// Run this instead of the login shell.
    #[arg(last = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// List local images.
    Ls,
    /// Show the built-in catalog.
    Catalog,
    /// Fetch or build a catalog image.
    Pull {
        name: String,
        #[arg(long)]
        no_wait: bool,
    },
    /// Register an image from local files.
    Register {
        name: String,
        #[arg(long)]
        kernel: PathBuf,
        #[arg(long)]
        initrd: Option<PathBuf>,
        #[arg(long)]
        rootfs: PathBuf,
    },
    /// Remove an image (refused while a VM uses it).
    Rm { name: String },
}

#[derive(Debug, Subcommand)]
pub enum OpCommand {
    /// List operations.
    Ls,
    /// Show one operation.
    Show {
        id: String,
        /// Wait for it to finish, showing progress.
        #[arg(long)]
        wait: bool,
    },
    /// Cancel a running operation (it cleans up what it made).
    Cancel { id: String },
}
