//! `hangar-agent`: Hangar's guest agent, one static binary brought into
//! every guest by Hangar's initramfs (see `docs/architecture.md`, "Guest
//! agent"). It depends on nothing in the image: no libc, no shell, no sshd.
//!
//! - `hangar-agent init`: PID 1 after `switch_root`. Reseeds the kernel
//!   RNG, starts the SSH server as its child (restarting it if it dies),
//!   reaps orphans and powers the machine off on SIGTERM/SIGINT.
//! - `hangar-agent serve`: the SSH server (keys from the config drive).
//! - `hangar-agent sftp-server`: the sftp subsystem on stdin/stdout, run by
//!   `serve` as the logged-in user (like OpenSSH's `sftp-server`).

mod args;
mod init;
mod passwd;
mod rng;
mod server;
mod sessions;
mod sftp;
mod sftp_ext;
mod sftp_names;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let parsed = match args::parse(&args) {
        Ok(p) => p,
        Err(msg) => {
            eprintln!("hangar-agent: {msg}\n\n{}", args::USAGE);
            return ExitCode::from(2);
        }
    };
    let result = match parsed {
        args::Mode::Init => init::run(),
        args::Mode::Serve(opts) => run_async(server::serve(opts)),
        args::Mode::SftpServer => run_async(sftp::serve_stdio()),
        args::Mode::Help => {
            println!("{}", args::USAGE);
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hangar-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_async(fut: impl std::future::Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    init_logging();
    // Guests are small (often one vCPU): one thread serves every session;
    // the work is I/O between channels and processes.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(fut)
}

/// Logs go to stderr, which is the serial console for `init` and `serve`.
fn init_logging() {
    let filter = std::env::var("HANGAR_AGENT_LOG").unwrap_or_else(|_| "info".into());
    let level = filter.parse().unwrap_or(tracing::Level::INFO);
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_target(false)
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .try_init();
}
