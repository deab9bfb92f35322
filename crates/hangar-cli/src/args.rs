//! Command-line grammar (clap derive). Every argument, option and
//! subcommand has help text: `man` pages and shell completions are
//! generated from these definitions, and a test walks the tree to keep it so.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "hangar",
    version,
    about = "Disposable, isolated Linux VMs for developers and coding agents"
)]
pub struct Cli {
    /// Config file (the daemon reads it; the CLI finds the socket in it)
    /// [default: /etc/hangar/config.toml when it exists].
    #[arg(long, global = true, env = "HANGAR_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// API socket of the daemon [default: the config's runtime dir,
    /// /run/hangar/hangar.sock].
    #[arg(long, global = true, env = "HANGAR_SOCKET", value_name = "PATH")]
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
    /// Connect standard input and output to a TCP port of a VM (an OpenSSH
    /// ProxyCommand: `ssh -o ProxyCommand='hangar proxy %h' root@VM`).
    Proxy(ProxyArgs),
    /// Print OpenSSH Host entries (`ssh NAME.hangar`) for VMs; --install
    /// writes them to ~/.ssh/hangar/ and includes them from ~/.ssh/config.
    SshConfig(SshConfigArgs),
    /// Forward local TCP ports (127.0.0.1 only) to ports of a VM until Ctrl-C.
    PortForward(PortForwardArgs),
    /// Copy files, or directories with -r, between this machine and a VM
    /// (`hangar cp ./f dev:/tmp/`, `hangar cp -r dev:/etc .`).
    Cp(CpArgs),
    /// Long-lived sessions: commands that keep running in a VM while you
    /// attach, detach and come back.
    #[command(subcommand)]
    Session(SessionCommand),
    /// Workspaces: a git repository (with its uncommitted work) in a VM,
    /// and the VM's commits back as a branch.
    #[command(subcommand)]
    Workspace(WorkspaceCommand),
    /// Manage images.
    #[command(subcommand)]
    Image(ImageCommand),
    /// Follow and cancel long-running operations.
    #[command(subcommand)]
    Op(OpCommand),
    /// Print a shell completion script (needs no daemon).
    Completions(CompletionsArgs),
    /// Write man pages: hangar.1 and one page per subcommand (needs no daemon).
    Man(ManArgs),
}

#[derive(Debug, Subcommand)]
pub enum VmCommand {
    /// Create and boot a VM (builds the default image on first use).
    Create(CreateArgs),
    /// List VMs.
    Ls,
    /// Show one VM.
    Show {
        /// Name of the VM.
        name: String,
    },
    /// Boot a stopped VM.
    Start(LifecycleArgs),
    /// Power a VM off (gracefully, then forcibly after a timeout).
    Stop(LifecycleArgs),
    /// Stop and start a VM.
    Restart(LifecycleArgs),
    /// Print the guest's serial console log (current or last boot).
    Logs {
        /// Name of the VM.
        name: String,
        /// Only the last N bytes [default: the whole log].
        #[arg(long, value_name = "N")]
        tail_bytes: Option<u64>,
        /// Keep printing what the console writes (Ctrl-C to stop); ends
        /// when the VM is removed.
        #[arg(long, short)]
        follow: bool,
        /// Print the guest's bytes as they are, escape sequences included.
        /// Without it, a terminal gets control characters shown escaped
        /// (`\x1b[2J`), so a guest cannot drive your terminal; piped
        /// output is always raw.
        #[arg(long)]
        raw: bool,
    },
    /// Remove a VM and its disk.
    Rm {
        /// Name of the VM.
        name: String,
        /// Remove it even if it is running; also cancels a create, start,
        /// stop or image promotion of it in progress and waits for its
        /// cleanup.
        #[arg(long, short)]
        force: bool,
    },
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Name of the new VM (a DNS label: lowercase letters, digits, '-').
    pub name: String,
    /// Image name or digest [default: [defaults] image in the config,
    /// debian-12].
    #[arg(long)]
    pub image: Option<String>,
    /// Number of vCPUs [default: [defaults] cpus in the config, 2].
    #[arg(long, value_name = "N")]
    pub cpus: Option<u32>,
    /// Memory: a plain number is MiB (1024), or a size with a unit (2G)
    /// [default: [defaults] memory_mib in the config, 1024].
    #[arg(long, value_name = "SIZE")]
    pub memory: Option<String>,
    /// Root disk size with a unit, e.g. 8G, at least the image's size
    /// [default: the image's catalog entry's disk_size, else [defaults]
    /// disk_size in the config (either grown to the image's size), else the
    /// image's size].
    #[arg(long, value_name = "SIZE")]
    pub disk_size: Option<String>,
    /// Start the image's Entrypoint and Cmd as the session "entrypoint"
    /// at every boot (with its user, Env and WorkingDir): `hangar session
    /// attach NAME entrypoint`, `hangar session logs NAME entrypoint`.
    #[arg(long)]
    pub run_entrypoint: bool,
    /// The guest user your SSH keys (~/.ssh/*.pub) log in as, with
    /// `ssh NAME.hangar` (see `hangar ssh-config`) [default: the image's
    /// user; root for the default image]. Your keys may log in as this
    /// user only; `hangar ssh --user` and `exec --user` reach any user.
    #[arg(long, value_name = "USER")]
    pub ssh_user: Option<String>,
    /// Print the operation id and return at once.
    #[arg(long, conflicts_with = "workspace")]
    pub no_wait: bool,
    /// Once the VM runs, import this git repository (or directory) into
    /// it, as `hangar workspace import NAME PATH` does.
    #[arg(long, value_name = "PATH")]
    pub workspace: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct LifecycleArgs {
    /// Name of the VM.
    pub name: String,
    /// Print the operation id and return at once.
    #[arg(long)]
    pub no_wait: bool,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Name of the VM.
    pub name: String,
    /// Allocate a terminal.
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Do not forward standard input.
    #[arg(short = 'n', long)]
    pub no_stdin: bool,
    /// Environment for the command, NAME=VALUE (repeatable).
    #[arg(short = 'e', long = "env", value_name = "NAME=VALUE")]
    pub env: Vec<String>,
    /// Run as this user of the image (from its /etc/passwd) instead of root.
    #[arg(short = 'u', long)]
    pub user: Option<String>,
    /// The command and its arguments (after `--`).
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct CpArgs {
    /// Copy directories: the whole tree with modes and symlinks (as links).
    /// The copy is built beside the destination and renamed into place
    /// when complete; an existing destination tree is never merged into.
    #[arg(short = 'r', long)]
    pub recursive: bool,
    /// Source: a local file or directory, or VM:PATH.
    pub src: String,
    /// Destination: a local file or dir, or VM:PATH (a trailing `/` means into that dir).
    pub dst: String,
}

#[derive(Debug, Args)]
pub struct ProxyArgs {
    /// Name of the VM (a trailing `.hangar`, as in `ssh dev.hangar`, is
    /// ignored).
    pub name: String,
    /// TCP port in the VM [default: 22, its SSH server (Hangar's guest
    /// agent)]; also accepted as `--port PORT`.
    #[arg(value_name = "PORT", conflicts_with = "port")]
    pub port_arg: Option<u16>,
    /// TCP port in the VM (the same as the PORT argument).
    #[arg(short = 'p', long = "port", value_name = "PORT")]
    pub port: Option<u16>,
}

impl ProxyArgs {
    /// The port asked for, positional or `--port`; 22 when neither.
    pub fn port(&self) -> u16 {
        self.port_arg.or(self.port).unwrap_or(22)
    }
}

#[derive(Debug, Args)]
pub struct SshConfigArgs {
    /// VMs to write entries for [default: all VMs].
    #[arg(conflicts_with = "install")]
    pub vms: Vec<String>,
    /// Write the entries of all VMs to ~/.ssh/hangar/config and their
    /// pinned host keys to ~/.ssh/hangar/known_hosts (both regenerated on
    /// each run), and add one `Include` line at the top of ~/.ssh/config
    /// (once; your own entries are left as they are).
    #[arg(long)]
    pub install: bool,
}

#[derive(Debug, Args)]
pub struct PortForwardArgs {
    /// Name of the VM.
    pub name: String,
    /// Ports to forward, [LOCAL:]REMOTE (e.g. 8080:80; LOCAL 0 picks a free
    /// port; LOCAL defaults to REMOTE). Listens on 127.0.0.1 only.
    #[arg(required = true, value_name = "[LOCAL:]REMOTE")]
    pub forwards: Vec<String>,
}

#[derive(Debug, Args)]
pub struct SshArgs {
    /// Name of the VM.
    pub name: String,
    /// Log in as this user of the image (from its /etc/passwd) instead of root.
    #[arg(short = 'u', long)]
    pub user: Option<String>,
    /// Run this instead of the login shell (after `--`).
    #[arg(last = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum SessionCommand {
    /// Start a command in a new session; returns once it runs.
    Start(SessionStartArgs),
    /// List sessions (of one VM, or of all VMs).
    Ls {
        /// Only this VM's sessions.
        vm: Option<String>,
    },
    /// Attach your terminal to a session. Detach with the detach keys
    /// (Ctrl-\ unless --detach-keys); the session goes on. When its
    /// command exits, hangar exits with its exit code.
    Attach {
        /// Name of the VM.
        vm: String,
        /// Name of the session.
        name: String,
        /// Keys that detach, as a comma-separated sequence: ctrl-X or a
        /// single character, e.g. "ctrl-p,ctrl-q".
        #[arg(long, value_name = "KEYS", default_value = "ctrl-\\")]
        detach_keys: String,
    },
    /// Type into a session without attaching.
    Send(SessionSendArgs),
    /// Print everything a session printed (its log in the VM).
    Logs {
        /// Name of the VM.
        vm: String,
        /// Name of the session.
        name: String,
        /// Keep printing new output until the command exits.
        #[arg(long, short)]
        follow: bool,
        /// Only the last N lines.
        #[arg(long, value_name = "N")]
        tail: Option<u64>,
        /// Print the session's bytes as they are, escape sequences
        /// included. Without it, a terminal gets control characters shown
        /// escaped; piped output is always raw.
        #[arg(long)]
        raw: bool,
    },
    /// Stop a session: SIGTERM to its command, SIGKILL after the timeout.
    Stop {
        /// Name of the VM.
        vm: String,
        /// Name of the session.
        name: String,
        /// Seconds between SIGTERM and SIGKILL.
        #[arg(long, value_name = "SECS", default_value_t = 10)]
        timeout: u64,
    },
    /// Forget a session that has ended (its record and its log).
    Rm {
        /// Name of the VM.
        vm: String,
        /// Name of the session.
        name: String,
    },
}

#[derive(Debug, Args)]
pub struct SessionStartArgs {
    /// Name of the VM.
    pub vm: String,
    /// Name of the session (letters, digits, '.', '_', '-').
    pub name: String,
    /// Working directory in the VM [default: the image's WorkingDir, else
    /// the user's home].
    #[arg(long, value_name = "DIR")]
    pub cwd: Option<String>,
    /// Environment for the command, NAME=VALUE (repeatable).
    #[arg(short = 'e', long = "env", value_name = "NAME=VALUE")]
    pub env: Vec<String>,
    /// Run as this user of the image (from its /etc/passwd) [default: the
    /// image's USER, else root].
    #[arg(short = 'u', long)]
    pub user: Option<String>,
    /// The command and its arguments (after `--`), run without a shell:
    /// `-- sh -c '...'` for one.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct SessionSendArgs {
    /// Name of the VM.
    pub vm: String,
    /// Name of the session.
    pub name: String,
    /// Text to type, as is (no Enter added), or with --keys the keys to
    /// press: Enter, Tab, Escape, Space, BSpace, Up, Down, Left, Right,
    /// Home, End, C-x (Ctrl and a key); anything else is typed as text,
    /// like tmux send-keys.
    #[arg(required = true)]
    pub input: Vec<String>,
    /// Read INPUT as key names (see above).
    #[arg(long)]
    pub keys: bool,
}

#[derive(Debug, Subcommand)]
pub enum WorkspaceCommand {
    /// Copy a git repository into a VM: same branch and commit, full
    /// history (or --depth), remotes, staged, unstaged and untracked
    /// files (ignored files stay behind). A directory that is not a
    /// repository is copied as files, less what `.hangarignore` names.
    Import(WorkspaceImportArgs),
    /// Fetch the commits made in the VM into this repository as branch
    /// hangar/VM (or --branch); the working tree, index, HEAD and other
    /// branches are never touched.
    Export(WorkspaceExportArgs),
    /// Show the VM's workspace: branch, commits since the import,
    /// uncommitted files.
    Status(WorkspaceStatusArgs),
}

#[derive(Debug, Args)]
pub struct WorkspaceImportArgs {
    /// Name of the VM.
    pub vm: String,
    /// The repository (any directory inside it) or directory to import.
    #[arg(default_value = ".")]
    pub path: PathBuf,
    /// Where in the VM [default: /workspace/<repository name>].
    #[arg(long, value_name = "DIR")]
    pub dest: Option<String>,
    /// Only the last N commits of the current branch (a shallow clone in
    /// the VM) [default: full history].
    #[arg(long, value_name = "N")]
    pub depth: Option<u32>,
    /// Replace the destination if it exists.
    #[arg(long)]
    pub force: bool,
    /// Owner of the files in the VM [default: the image's USER, else root].
    #[arg(short = 'u', long)]
    pub user: Option<String>,
    /// Forward git credentials (not supported yet: refused).
    #[arg(long)]
    pub with_credentials: bool,
}

#[derive(Debug, Args)]
pub struct WorkspaceExportArgs {
    /// Name of the VM.
    pub vm: String,
    /// The repository on this machine to fetch into.
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub repo: PathBuf,
    /// The workspace in the VM [default: /workspace/<repository name>].
    #[arg(long, value_name = "DIR")]
    pub dest: Option<String>,
    /// Branch to create or update [default: hangar/VM].
    #[arg(long, value_name = "NAME")]
    pub branch: Option<String>,
    /// Overwrite the branch even when it is not a fast-forward.
    #[arg(long)]
    pub force: bool,
    /// Also export the VM's uncommitted changes, as one extra commit (the
    /// VM's branch and files are left as they are).
    #[arg(long)]
    pub include_uncommitted: bool,
    /// Run git in the VM as this user [default: the image's USER, else root].
    #[arg(short = 'u', long)]
    pub user: Option<String>,
}

#[derive(Debug, Args)]
pub struct WorkspaceStatusArgs {
    /// Name of the VM.
    pub vm: String,
    /// The repository on this machine (names the default workspace).
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub repo: PathBuf,
    /// The workspace in the VM [default: /workspace/<repository name>].
    #[arg(long, value_name = "DIR")]
    pub dest: Option<String>,
    /// Run git in the VM as this user [default: the image's USER, else root].
    #[arg(short = 'u', long)]
    pub user: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// List local images.
    Ls,
    /// Show the built-in catalog.
    Catalog,
    /// Fetch or build a catalog image, pull one from an OCI registry, or
    /// pull a Hangar bundle.
    ///
    /// A name with a `/` is an OCI reference (REGISTRY/REPOSITORY[:TAG]
    /// [@DIGEST]); credentials come from your ~/.docker/config.json.
    /// `https://...` and `file://...` name a bundle (`image export` output).
    Pull {
        /// Catalog name (see `hangar image catalog`), OCI reference, or
        /// bundle URL.
        name: String,
        /// Keep an OCI image under this name [default: the repository's
        /// last component].
        #[arg(long = "name", value_name = "NAME")]
        as_name: Option<String>,
        /// Plain HTTP, for a registry on a loopback address only.
        #[arg(long)]
        insecure: bool,
        /// For a bundle URL (https://, file://): the bundle file's sha256.
        #[arg(long, value_name = "HEX")]
        sha256: Option<String>,
        /// Print the operation id and return at once.
        #[arg(long)]
        no_wait: bool,
    },
    /// Export an image as a portable bundle (zstd tar with each part's
    /// sha256); prints the bundle's sha256 for `image pull URL --sha256`.
    Export {
        /// Image name or digest.
        name: String,
        /// The bundle file to write (e.g. NAME.hangar.tar.zst), or `-`.
        file: PathBuf,
    },
    /// Import an image archive: `docker save`/`podman save` output, an OCI
    /// archive (`buildah push IMG oci-archive:F`), or an OCI layout dir.
    Import {
        /// The archive file, an OCI layout directory, or `-` for stdin.
        source: PathBuf,
        /// Name to keep the image under.
        #[arg(long)]
        name: String,
        /// Print the operation id and return at once.
        #[arg(long)]
        no_wait: bool,
    },
    /// Register an image from local files (uploaded to the daemon; each
    /// must be a regular file you can read, not a symlink).
    Register {
        /// Name to register the image under.
        name: String,
        /// Kernel: an uncompressed ELF vmlinux (PVH), or a bzImage (qemu
        /// driver only).
        #[arg(long, value_name = "FILE")]
        kernel: PathBuf,
        /// Initial ramdisk [default: none].
        #[arg(long, value_name = "FILE")]
        initrd: Option<PathBuf>,
        /// Root filesystem: an ext4 image file.
        #[arg(long, value_name = "FILE")]
        rootfs: PathBuf,
    },
    /// Make a VM's current disk a new image (with its lineage).
    ///
    /// A running VM is refused unless --stop: a live disk is not a
    /// consistent copy. --stop stops it for the copy and starts it again
    /// after, whether the promotion worked or not.
    Promote {
        /// The VM whose disk to take.
        vm: String,
        /// The new image's name.
        name: String,
        /// Stop the VM for the copy if it runs (it is started again after).
        #[arg(long)]
        stop: bool,
        /// Print the operation id and return at once.
        #[arg(long)]
        no_wait: bool,
    },
    /// Show one image, with the sha256 of the files it was registered from.
    Show {
        /// Image name or digest.
        name: String,
    },
    /// Give an image another name: both name the same image, which stays
    /// until its last name is removed.
    Tag {
        /// The image: name or digest.
        image: String,
        /// The new name.
        name: String,
    },
    /// Remove an image name; the image goes with its last name (refused
    /// while a VM uses it).
    Rm {
        /// Image name, or digest (refused while the image has several
        /// names).
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum OpCommand {
    /// List operations.
    Ls,
    /// Show one operation.
    Show {
        /// Operation id (as `hangar op ls` or `--no-wait` print it).
        id: String,
        /// Wait for it to finish, showing progress.
        #[arg(long)]
        wait: bool,
    },
    /// Cancel a running operation (it cleans up what it made).
    Cancel {
        /// Operation id (as `hangar op ls` or `--no-wait` print it).
        id: String,
    },
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// Shell to complete for.
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write hangar.1 and hangar-SUBCOMMAND.1 pages into this directory
    /// (created if missing) [default: print hangar.1 to standard output].
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    /// Every argument and subcommand below `cmd` without help text, as
    /// `hangar vm create <cpus>` paths.
    fn missing_help(cmd: &clap::Command, path: &str, out: &mut Vec<String>) {
        for arg in cmd.get_arguments() {
            // clap's own flags; they carry clap's help.
            if matches!(arg.get_id().as_str(), "help" | "version") {
                continue;
            }
            if arg.get_help().is_none() && arg.get_long_help().is_none() {
                out.push(format!("{path} <{}>", arg.get_id()));
            }
        }
        for sub in cmd.get_subcommands() {
            let sub_path = format!("{path} {}", sub.get_name());
            if sub.get_about().is_none() && sub.get_long_about().is_none() {
                out.push(sub_path.clone());
            }
            missing_help(sub, &sub_path, out);
        }
    }

    #[test]
    fn every_argument_and_subcommand_has_help() {
        let mut cmd = Cli::command();
        // Built, so that global options are propagated and clap's own
        // `help` subcommand is present: the tree users actually see.
        cmd.build();
        let mut missing = Vec::new();

        missing_help(&cmd, "hangar", &mut missing);

        assert!(missing.is_empty(), "no help text: {missing:?}");
    }

    #[test]
    fn help_walk_finds_an_argument_without_help() {
        let cmd = clap::Command::new("t")
            .arg(
                clap::Arg::new("documented")
                    .long("documented")
                    .help("has help"),
            )
            .subcommand(
                clap::Command::new("sub")
                    .about("has about")
                    .arg(clap::Arg::new("bare")),
            )
            .subcommand(clap::Command::new("quiet"));
        let mut missing = Vec::new();

        missing_help(&cmd, "t", &mut missing);

        assert_eq!(missing, ["t sub <bare>", "t quiet"]);
    }

    #[test]
    fn clap_definitions_are_consistent() {
        Cli::command().debug_assert();
    }
}
