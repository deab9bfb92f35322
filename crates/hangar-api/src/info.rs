//! What `GET /v1/info` tells about the daemon and the host choices it made.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The daemon's version and the backends it chose, with the reasons.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DaemonInfo {
    /// The daemon's crate version.
    pub version: String,
    /// The VMM driver in use: `qemu` or `firecracker`.
    pub driver: String,
    /// Why this driver (and acceleration) was chosen.
    pub driver_reason: String,
    /// The disk backend in use, e.g. `reflink` or `copy`.
    pub disk_backend: String,
    /// Why this disk backend was chosen.
    pub disk_reason: String,
    /// The network namespace holding the VM network; absent when it lives
    /// in the daemon's own namespace.
    pub netns: Option<String>,
    /// The VM subnet in CIDR notation.
    pub subnet: String,
    /// Where the daemon keeps its state.
    pub state_dir: String,
}
