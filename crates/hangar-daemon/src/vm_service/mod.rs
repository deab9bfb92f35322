//! The VM service: lifecycle orchestration — create, start, stop, restart,
//! delete — plus reconcile after a daemon restart, the watcher of VMs that
//! exit on their own, and guest access. It owns the per-VM locks, the
//! create lock, the names of VMs being created, the cached SSH
//! connections to guests and the console logs' rotation.

pub mod boot;
pub mod create;
pub mod delete;
pub mod dir;
pub mod entrypoint;
pub mod guest;
pub mod lifecycle;
pub mod locks;
pub mod promote;
pub mod promotions;
pub mod reconcile;
pub mod ssh_user;
pub mod watch;

use std::sync::Arc;

use hangar_api::VmInfo;
use hangar_store::VmRecord;

use self::create::PendingNames;
use self::dir::VmDir;
use self::guest::GuestClients;
use self::locks::VmLocks;
use crate::console_log::ConsoleLogs;
use crate::error::Result;
use crate::image_service::ImageService;
use crate::infra::Infra;
use crate::snapshot_service::SnapshotService;

pub struct VmService {
    infra: Infra,
    images: Arc<ImageService>,
    snapshots: Arc<SnapshotService>,
    /// One lock per VM: serialises that VM's lifecycle; may be held across
    /// its VMM and guest I/O.
    locks: VmLocks,
    /// Serialises name uniqueness checks and IP allocation. Narrow: never
    /// held across guest or VMM I/O; taken after a VM lock.
    create_lock: std::sync::Mutex<()>,
    /// Names of VMs being created whose rows are not stored yet.
    pending_names: PendingNames,
    /// Cached SSH connections to running guests.
    guests: GuestClients,
    /// The VMs' console logs: rotation and reading.
    console_logs: Arc<ConsoleLogs>,
    /// Running promotions by VM, for `vm rm --force`.
    promotions: promotions::Promotions,
}

impl VmService {
    pub fn new(infra: Infra, images: Arc<ImageService>, snapshots: Arc<SnapshotService>) -> Self {
        VmService {
            images,
            snapshots,
            locks: VmLocks::default(),
            create_lock: std::sync::Mutex::new(()),
            pending_names: PendingNames::default(),
            guests: GuestClients::default(),
            console_logs: Arc::new(ConsoleLogs::new(infra.config.vmm.console_log_max_bytes)),
            promotions: promotions::Promotions::default(),
            infra,
        }
    }

    /// The VMs' console logs.
    pub fn console_logs(&self) -> &Arc<ConsoleLogs> {
        &self.console_logs
    }

    pub fn vm_dir(&self, id: &str) -> VmDir {
        VmDir::of(&self.infra.config.vms_dir(), id)
    }

    pub fn vm_info(&self, rec: &VmRecord) -> VmInfo {
        VmInfo {
            id: rec.id.clone(),
            name: rec.name.clone(),
            state: rec.state,
            image: rec.image_name.clone(),
            image_digest: rec.image_digest.clone(),
            cpus: rec.cpus,
            memory_mib: rec.memory_mib,
            disk_bytes: rec.disk_bytes,
            ip: rec.ip.to_string(),
            mac: rec.mac.clone(),
            host_key: rec.host_key_public.clone(),
            ssh_user: ssh_user::read(&self.vm_dir(&rec.id)),
            driver: rec.driver.clone(),
            pid: rec.runtime.as_ref().map(|r| r.pid),
            tap: rec.runtime.as_ref().map(|r| r.tap.clone()),
            api_socket: rec.runtime.as_ref().map(|r| r.api_socket.clone()),
            serial_log: self.vm_dir(&rec.id).serial_log().display().to_string(),
            // Read only for one VM (`vm show`), not on every listing.
            metrics: None,
            created_at: rec.created_at.clone(),
            last_error: rec.last_error.clone(),
        }
    }

    /// One VM with its VMM's latest metrics, for `vm show`.
    pub fn vm_info_detailed(&self, rec: &VmRecord) -> VmInfo {
        VmInfo {
            metrics: self.vm_metrics(rec),
            ..self.vm_info(rec)
        }
    }

    /// A summary of the VMM's latest metrics (Firecracker writes them).
    fn vm_metrics(&self, rec: &VmRecord) -> Option<serde_json::Value> {
        rec.runtime.as_ref()?;
        let m = hangar_vmm::read_latest_metrics(self.vm_dir(&rec.id).path())?;
        serde_json::to_value(hangar_vmm::summarize_metrics(&m)).ok()
    }

    pub fn find_vm(&self, name: &str) -> Result<VmRecord> {
        Ok(self.infra.store.get_vm_by_name(name)?)
    }

    pub fn list_vm_infos(&self) -> Result<Vec<VmInfo>> {
        let recs = self.infra.store.list_vms()?;
        Ok(recs.iter().map(|r| self.vm_info(r)).collect())
    }
}
