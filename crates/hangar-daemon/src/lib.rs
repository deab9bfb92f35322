//! The Hangar daemon: a composition root that owns every host resource and
//! serves the `/v1` API on a Unix socket. See docs/architecture.md for the map.

pub mod api;
mod blocking;
pub mod boot_gate;
pub mod confine;
mod console;
pub mod console_log;
pub mod daemon;
pub mod error;
pub mod failpoint;
pub mod guest_agent;
pub mod image_service;
pub mod infra;
pub mod machine;
pub mod op;
pub mod pidfile;
mod private_dirs;
pub mod session_service;
pub mod snapshot_service;
pub mod vm_service;

pub use daemon::{run, Daemon};
