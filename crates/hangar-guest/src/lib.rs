//! hangar-guest: the daemon's SSH access to its guests.
//!
//! The daemon owns one ed25519 key pair ([`DaemonKey`]) and generates a
//! fresh host key for every VM ([`generate_host_key`]); the host key reaches
//! the guest at boot and is pinned here, so there is no trust-on-first-use.
//! [`wait_ready`] decides when a booting guest is usable (SSH handshake and
//! auth succeed), and [`GuestClient`] runs commands with separate
//! stdout/stderr streams, stdin, exit codes and an optional PTY.

mod client;
mod error;
mod exec;
mod files;
mod keys;
mod power;
mod ready;
mod sessions;
mod signal;
mod tcp;
mod tree;

pub use client::{direct_connector, ConnectFn, GuestClient, GuestTarget};
pub use error::GuestError;
pub use exec::{is_shell_identifier, CommandOutput, ExecSpec, Input, Output};
pub use files::{GuestFileInfo, GuestFiles};
pub use hangar_session_proto as session_proto;
pub use keys::{generate_host_key, DaemonKey, HostKey};
pub use power::POWEROFF_SUBSYSTEM;
pub use ready::wait_ready;
pub use sessions::{SessionEvent, SessionInput, SessionStream};
pub use tcp::GuestTcpStream;
pub use tree::{read_entry, TreeFail, TreeRoot, TreeWritten};
