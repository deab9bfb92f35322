//! hangar-ops: the registry of asynchronous operations. Long work (VM
//! create, image pull) begins at once, runs in a task, and is followed
//! through `GET /v1/operations/{id}`; every operation is persisted so its
//! outcome survives a daemon restart.

// Tests may unwrap: a panic is the failure report.
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod handle;
mod registry;
mod transition;

pub use handle::OpHandle;
pub use registry::OpRegistry;
