//! The Hangar daemon: a composition root that owns every host resource and
//! serves the `/v1` API on a Unix socket. See ARCHITECTURE.md for the map.

pub mod api;
mod console;
pub mod daemon;
pub mod error;
pub mod images;
pub mod infra;
pub mod machine;
pub mod op;
pub mod pidfile;
pub mod snapshots;
pub mod vms;

pub use daemon::{run, Daemon};
