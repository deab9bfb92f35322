//! The `hangar` command line: one file per command group; each command is a
//! short function over the API client. `hangar daemon` is parsed here but
//! run by the binary crate, so this crate does not depend on the daemon.

pub mod args;
pub mod client;
pub mod cmd;
pub mod cp_tree;
pub mod download;
pub mod guest_run;
pub mod import;
pub mod local_file;
pub mod output;
pub mod progress;
pub mod registry_auth;
pub mod socket;
pub mod upload;
pub mod wait;

use std::process::ExitCode;

use clap::Parser;

use args::{Cli, Command};

/// Parses the command line; on a usage error prints it and exits, as clap
/// does.
pub fn parse() -> Cli {
    Cli::parse()
}

/// Runs every command except `hangar daemon` (the binary crate runs that
/// one, since it owns the daemon dependency).
pub fn run(cli: Cli) -> ExitCode {
    match &cli.command {
        Command::Daemon => {
            eprintln!("error: this build of hangar cannot run the daemon");
            return ExitCode::from(2);
        }
        // Generated from the definitions alone: no config, socket or runtime.
        Command::Completions(a) => return ExitCode::from(cmd::completions::run(a)),
        Command::Man(a) => return ExitCode::from(cmd::man::run(a)),
        _ => {}
    }
    let Some(rt) = runtime() else {
        return ExitCode::from(1);
    };
    let code = rt.block_on(cmd::dispatch(cli));
    // Exec streams may leave a blocking stdin reader behind; do not wait.
    rt.shutdown_background();
    ExitCode::from(code)
}

/// The multi-threaded tokio runtime both the CLI and the daemon run on.
pub fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => Some(rt),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            None
        }
    }
}
