//! What every Hangar crate needs from the host, written once: finding a
//! binary on `PATH` ([`path`]) and running a tool with a time limit
//! ([`process`]).

pub mod path;
pub mod process;
pub mod version;

pub use path::which;
