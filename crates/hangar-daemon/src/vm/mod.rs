//! VM lifecycle orchestration: create, start, stop, restart, delete,
//! reconcile after a daemon restart, and guest access.

pub mod boot;
pub mod create;
pub mod delete;
pub mod guest;
pub mod lifecycle;
pub mod locks;
pub mod prewarm;
pub mod reconcile;
pub mod snapshot;
pub mod watch;

use std::path::PathBuf;

use hangar_api::VmInfo;
use hangar_store::VmRecord;

use crate::daemon::Daemon;
use crate::error::Result;

impl Daemon {
    pub fn vm_dir(&self, id: &str) -> PathBuf {
        self.config.vms_dir().join(id)
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
            driver: rec.driver.clone(),
            pid: rec.runtime.as_ref().map(|r| r.pid),
            tap: rec.runtime.as_ref().map(|r| r.tap.clone()),
            api_socket: rec.runtime.as_ref().map(|r| r.api_socket.clone()),
            serial_log: self
                .vm_dir(&rec.id)
                .join("serial.log")
                .display()
                .to_string(),
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
        let m = hangar_vmm::read_latest_metrics(&self.vm_dir(&rec.id))?;
        serde_json::to_value(hangar_vmm::summarize_metrics(&m)).ok()
    }

    pub fn find_vm(&self, name: &str) -> Result<VmRecord> {
        Ok(self.store.get_vm_by_name(name)?)
    }

    pub fn list_vm_infos(&self) -> Result<Vec<VmInfo>> {
        let recs = self.store.list_vms()?;
        Ok(recs.iter().map(|r| self.vm_info(r)).collect())
    }
}
