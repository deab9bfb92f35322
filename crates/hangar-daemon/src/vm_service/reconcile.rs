//! At start-up the store says what should exist; processes say what does.
//! Live VMMs (pid + start time match) are adopted; VMs whose process died
//! are marked stopped; creates interrupted by a daemon restart are undone.

use hangar_api::VmState;
use tracing::{info, warn};

use super::boot::handle_of;
use super::VmService;
use crate::blocking::off_runtime;

impl VmService {
    pub async fn reconcile(&self) {
        let vms = match self.infra.store.list_vms() {
            Ok(v) => v,
            Err(e) => {
                warn!(error = %e, "cannot list VMs to reconcile");
                return;
            }
        };
        for rec in vms {
            if rec.runtime.is_none() {
                // A daemon killed between spawning a VMM and recording it
                // leaves a process only the VM dir knows (its pid file, or
                // for a jailed Firecracker the socket link into its jail).
                self.infra.driver.kill_stray(self.vm_dir(&rec.id).path());
            }
            if rec.state == VmState::Creating {
                info!(vm = %rec.name, "removing VM whose create was interrupted by a daemon restart");
                self.remove_vm_files_and_row(&rec).await;
                continue;
            }
            // Only a clear "not there" counts: a disk that cannot be looked
            // at (EACCES, EIO) must not get its VM removed.
            if matches!(self.vm_dir(&rec.id).disk().try_exists(), Ok(false)) {
                // Only a removal deletes a VM's disk, and it deletes the
                // row last: a daemon killed in between leaves a row with
                // nothing to boot. Finish that removal.
                info!(vm = %rec.name, "removing VM whose removal was interrupted by a daemon restart");
                self.remove_vm_files_and_row(&rec).await;
                continue;
            }
            let Some(rt) = rec.runtime.clone() else {
                if matches!(
                    rec.state,
                    VmState::Running | VmState::Starting | VmState::Stopping
                ) {
                    // A start or restart killed before it recorded a VMM may
                    // have left the disk active (dm: a device and its loop
                    // devices); deactivating an inactive disk does nothing.
                    let (disks, disk) = (self.infra.disks.clone(), self.vm_dir(&rec.id).disk());
                    match off_runtime("disk deactivation", move || disks.deactivate(&disk)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => {
                            warn!(vm = %rec.name, error = %e, "cannot deactivate the disk of a VM whose boot was interrupted")
                        }
                        Err(e) => {
                            warn!(vm = %rec.name, error = %e, "cannot deactivate the disk of a VM whose boot was interrupted")
                        }
                    }
                    let _ = self
                        .infra
                        .store
                        .set_vm_state(&rec.id, VmState::Stopped, None);
                }
                continue;
            };
            let handle = handle_of(&rt);
            if hangar_image::identity::is_snapshot_drive(&self.vm_dir(&rec.id).config_drive()) {
                // The daemon died while this boot saved its snapshot: the
                // guest waits for a config drive no one will fill.
                info!(vm = %rec.name, pid = rt.pid, "boot was interrupted while saving its boot snapshot; VM stopped");
                self.tear_down_stopped(&rec.id, &rt).await;
                continue;
            }
            match self.infra.driver.adopt(&handle).await {
                Ok(true) => {
                    if rec.state == VmState::Starting {
                        // A boot the daemon did not finish may have left the
                        // VM paused (between saving its boot snapshot and
                        // resuming it). Resuming a running VM changes nothing.
                        if let Err(e) = self.infra.driver.resume(&handle).await {
                            warn!(vm = %rec.name, error = %e, "cannot resume a VM whose boot was interrupted");
                        }
                    }
                    self.infra.net.mark_in_use(&rt.tap);
                    // The daemon's start replaced the anti-spoofing table:
                    // bind the running VM's TAP to its addresses again.
                    if let Err(e) = self.infra.net.bind_tap(&rt.tap, &rec.mac, rec.ip).await {
                        warn!(vm = %rec.name, tap = %rt.tap, error = %e, "cannot bind the running VM's TAP; its network is cut off until it restarts");
                    }
                    let _ = self
                        .infra
                        .store
                        .set_vm_state(&rec.id, VmState::Running, None);
                    info!(vm = %rec.name, pid = rt.pid, "adopted running VM");
                }
                Ok(false) | Err(_) => {
                    info!(vm = %rec.name, pid = rt.pid, "VMM process is gone; VM marked stopped");
                    self.tear_down_stopped(&rec.id, &rt).await;
                }
            }
        }
    }
}
