//! hangar-store: the SQLite database that is the single source of truth
//! across daemon restarts — VMs, their IP leases, images, operations and
//! the last known state of each VM's sessions.
//!
//! One [`Store`] wraps one connection behind a mutex: every call is a short
//! statement or transaction, so serialising them costs little and keeps the
//! multi-step writes (VM + lease) atomic without a connection pool.

// Tests may unwrap: a panic is the failure report.
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod error;
mod images;
mod leases;
mod ops;
mod schema;
mod sessions;
mod store;
mod vms;

pub use error::{Result, StoreError};
pub use images::{ImageRecord, NameRemoval};
pub use leases::{lowest_free_ip, mac_for_ip};
pub use schema::migrations;
pub use sessions::SessionRecord;
pub use store::Store;
pub use vms::{VmRecord, VmRuntime};
