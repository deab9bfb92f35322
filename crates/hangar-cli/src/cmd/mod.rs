//! One module per command group.

pub mod completions;
pub mod cp;
pub mod doctor;
pub mod exec;
pub mod image;
pub mod man;
pub mod op;
pub mod port_forward;
pub mod proxy;
pub mod session;
pub mod ssh_config;
pub mod vm;
pub mod workspace;

use hangar_api::ApiError;

use crate::args::{Cli, Command};
use crate::client::Client;

/// Runs a client command; returns the process exit code.
pub async fn dispatch(cli: Cli) -> u8 {
    let socket = match crate::socket::resolve(&cli) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e:#}");
            return 1;
        }
    };
    let client = Client::new(&socket);
    let result = match &cli.command {
        // Handled before a socket is needed (see `crate::run`).
        Command::Daemon | Command::Completions(_) | Command::Man(_) => return 1,
        Command::Doctor => return doctor::run(&cli, &client).await,
        Command::Vm(c) => vm::run(&cli, &client, c).await,
        Command::Exec(a) => return exec::exec(&client, a).await,
        Command::Ssh(a) => return exec::ssh(&client, a).await,
        Command::Proxy(a) => proxy::run(&client, a).await,
        Command::SshConfig(a) => ssh_config::run(&cli, &client, a).await,
        Command::PortForward(a) => port_forward::run(&client, a).await,
        Command::Cp(a) => cp::run(&client, a).await,
        Command::Session(c) => return session::run(&cli, &client, c).await,
        Command::Workspace(c) => workspace::run(&cli, &client, c).await,
        Command::Image(c) => image::run(&cli, &client, c).await,
        Command::Op(c) => op::run(&cli, &client, c).await,
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            report(&e);
            1
        }
    }
}

pub fn report(e: &ApiError) {
    eprintln!("error: {}", e.message);
}

/// Encodes a path segment (names are DNS labels, but ids and user input
/// may not be).
pub fn seg(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
