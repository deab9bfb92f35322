//! What every Hangar crate needs from the host, written once: finding a
//! binary on `PATH` ([`path`]), running a tool with a time limit, a cancel
//! and process-group kill ([`process`]), quoting for a shell ([`quote`]),
//! the one timestamp format ([`time`]), byte counts for people
//! ([`bytes`]), the one way to make private files and dirs ([`private`]),
//! the safe removal of a crashed build's directory ([`sweep`]: kill,
//! unmount, remove without crossing a mount) and guest bytes made safe for
//! a terminal ([`sanitize`]).

pub mod bytes;
pub mod elf;
pub mod path;
pub mod private;
pub mod process;
pub mod quote;
pub mod sanitize;
pub mod sweep;
pub mod time;
pub mod version;

pub use path::which;
pub use process::{Tool, ToolError};
pub use quote::shell_quote;
