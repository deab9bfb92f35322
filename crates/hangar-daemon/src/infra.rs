//! The infrastructure handles every subsystem shares. The composition root
//! ([`crate::Daemon`]) builds them once and hands each service a clone (all
//! handles are `Arc`s or cheap to clone); services keep their own state and
//! locks beside it.

use std::sync::Arc;

use hangar_config::Config;
use hangar_disk::DiskBackend;
use hangar_guest::DaemonKey;
use hangar_net::Network;
use hangar_ops::OpRegistry;
use hangar_store::Store;
use hangar_vmm::VmmDriver;
use tokio_util::sync::CancellationToken;

use crate::boot_gate::BootGate;

#[derive(Clone)]
pub struct Infra {
    pub config: Arc<Config>,
    pub store: Arc<Store>,
    pub ops: OpRegistry,
    pub net: Arc<Network>,
    pub driver: Arc<dyn VmmDriver>,
    pub disks: Arc<dyn DiskBackend>,
    /// The daemon's SSH key: in every guest's authorized keys.
    pub key: Arc<DaemonKey>,
    /// Tripped at shutdown; long work and background loops watch it.
    pub shutdown: CancellationToken,
    /// At most `[vmm] max_concurrent_boots` boots at once; the rest queue.
    pub boot_gate: Arc<BootGate>,
    /// Hangar's guest agent, brought into guests at boot
    /// ([`crate::guest_agent`]); none: guests run their image's sshd.
    pub agent: Option<Arc<hangar_image::GuestAgent>>,
}
