//! The `hangar` binary: wires the CLI (`hangar-cli`) and the daemon
//! (`hangar-daemon`) together; everything else lives in the libraries.

mod daemon_cmd;

use std::process::ExitCode;

use hangar_cli::args::Command;

fn main() -> ExitCode {
    let cli = hangar_cli::parse();
    if let Command::Daemon = cli.command {
        return daemon_cmd::run(&cli);
    }
    hangar_cli::run(cli)
}
