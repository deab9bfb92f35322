//! The one undo of a boot. [`BootUndo`] records what a boot has made — the
//! disk's block-device view, a TAP, a VMM process, the runtime row — and
//! [`BootUndo::undo`] reverses them in order. A failed or cancelled boot
//! uses it, and so does every path that ends a running VM (stop, delete,
//! a VMM that exited on its own, reconcile), from the recorded runtime.

use std::path::PathBuf;

use hangar_store::{StoreError, VmRuntime};
use hangar_vmm::VmmHandle;
use tracing::warn;

use crate::infra::Infra;

/// What a boot made so far. Dropping it armed (neither undone nor kept)
/// logs a warning: the next reconcile cleans up what it held.
#[must_use = "call undo() on failure or keep() on success"]
pub struct BootUndo {
    infra: Infra,
    vm_id: String,
    /// The VM's disk file, whose block-device view (dm backend) the boot
    /// activated; the file itself is never removed here.
    disk: PathBuf,
    disk_active: bool,
    tap: Option<String>,
    vmm: Option<VmmHandle>,
    runtime_recorded: bool,
    armed: bool,
}

impl BootUndo {
    /// Nothing made yet.
    pub fn new(infra: Infra, vm_id: &str, disk: PathBuf) -> Self {
        BootUndo {
            infra,
            vm_id: vm_id.to_string(),
            disk,
            disk_active: false,
            tap: None,
            vmm: None,
            runtime_recorded: false,
            armed: true,
        }
    }

    /// Everything a finished boot made, as its stored runtime records it.
    pub fn of_runtime(infra: Infra, vm_id: &str, disk: PathBuf, rt: &VmRuntime) -> Self {
        let mut undo = BootUndo::new(infra, vm_id, disk);
        undo.disk_active = true;
        undo.tap = Some(rt.tap.clone());
        undo.vmm = Some(handle_of(rt));
        undo.runtime_recorded = true;
        undo
    }

    pub fn disk_activated(&mut self) {
        self.disk_active = true;
    }

    pub fn tap_acquired(&mut self, tap: &str) {
        self.tap = Some(tap.to_string());
    }

    pub fn vmm_started(&mut self, handle: &VmmHandle) {
        self.vmm = Some(handle.clone());
    }

    pub fn runtime_recorded(&mut self) {
        self.runtime_recorded = true;
    }

    /// The boot succeeded: keep what it made.
    pub fn keep(mut self) {
        self.armed = false;
    }

    /// Kills the VMM (idempotent: also reaps it and removes its socket),
    /// returns the TAP, deactivates the disk and only then clears the
    /// runtime row: the row is the record of the TAP and the disk's view,
    /// so a daemon that dies half way leaves reconcile something to finish.
    /// Each step is tried even when an earlier one failed; a runtime row
    /// that cannot be cleared is the error returned (the rest is logged).
    pub async fn undo(mut self) -> Result<(), StoreError> {
        self.armed = false;
        let infra = &self.infra;
        if let Some(h) = self.vmm.take() {
            if let Err(e) = infra.driver.kill(&h).await {
                warn!(pid = h.pid, error = %e, "cannot kill VMM");
            }
            crate::crash_point!("undo.after_vmm_killed");
        }
        if let Some(tap) = self.tap.take() {
            if let Err(e) = infra.net.release_tap(&tap).await {
                warn!(tap, error = %e, "cannot release TAP device");
            }
            crate::crash_point!("undo.after_tap_released");
        }
        if self.disk_active {
            let disks = infra.disks.clone();
            let disk = self.disk.clone();
            match crate::blocking::off_runtime("disk deactivation", move || disks.deactivate(&disk))
                .await
            {
                Ok(Ok(())) => {}
                Ok(Err(e)) => warn!(vm = %self.vm_id, error = %e, "cannot deactivate VM disk"),
                Err(e) => warn!(vm = %self.vm_id, error = %e, "cannot deactivate VM disk"),
            }
        }
        if self.runtime_recorded {
            if let Err(e) = infra.store.set_vm_runtime(&self.vm_id, None) {
                warn!(vm = %self.vm_id, error = %e, "cannot clear the VM's runtime");
                return Err(e);
            }
        }
        Ok(())
    }
}

impl Drop for BootUndo {
    fn drop(&mut self) {
        if self.armed {
            warn!(vm = %self.vm_id, tap = ?self.tap, vmm_pid = ?self.vmm.as_ref().map(|h| h.pid), disk_active = self.disk_active, "a boot ended without undoing what it made: a TAP or disk view nobody recorded may be left (`hangar doctor` lists leftovers); the next daemon start kills an unrecorded VMM");
        }
    }
}

/// The VMM handle recorded for a VM's running process.
pub fn handle_of(runtime: &VmRuntime) -> VmmHandle {
    VmmHandle {
        pid: runtime.pid,
        start_time: runtime.start_time,
        api_socket: runtime.api_socket.clone().into(),
    }
}
