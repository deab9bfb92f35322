//! `hangar daemon`: wired here, in the binary, so that the CLI library does
//! not depend on the daemon crate.

use std::process::ExitCode;

use hangar_cli::args::Cli;
use tracing_subscriber::EnvFilter;

pub fn run(cli: &Cli) -> ExitCode {
    let config = match hangar_cli::socket::load_config(cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    let filter =
        EnvFilter::try_from_env("HANGAR_LOG").unwrap_or_else(|_| EnvFilter::new(&config.log_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let Some(rt) = hangar_cli::runtime() else {
        return ExitCode::from(1);
    };
    match rt.block_on(hangar_daemon::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
