//! The Hangar daemon: a composition root that owns every host resource and
//! serves the `/v1` API on a Unix socket. See ARCHITECTURE.md for the map.

pub mod api;
pub mod daemon;
pub mod doctor;
pub mod error;
pub mod images;
pub mod op;
pub mod pidfile;
pub mod timefmt;
pub mod vm;

pub use daemon::{run, Daemon};
