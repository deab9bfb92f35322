//! The `hangar` command line: one file per command group; each command is a
//! short function over the API client.

pub mod args;
pub mod client;
pub mod cmd;
pub mod output;
pub mod socket;
pub mod wait;

use std::process::ExitCode;

use clap::Parser;

use args::{Cli, Command};

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Daemon = cli.command {
        return cmd::daemon::run(&cli);
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
pub(crate) fn runtime() -> Option<tokio::runtime::Runtime> {
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
