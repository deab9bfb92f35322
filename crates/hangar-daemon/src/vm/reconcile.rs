//! At start-up the store says what should exist; processes say what does.
//! Live VMMs (pid + start time match) are adopted; VMs whose process died
//! are marked stopped; creates interrupted by a daemon restart are undone.

use hangar_api::VmState;
use tracing::{info, warn};

use super::boot::handle_of;
use crate::daemon::Daemon;

impl Daemon {
    pub async fn reconcile(&self) {
        let vms = match self.store.list_vms() {
            Ok(v) => v,
            Err(e) => {
                warn!(error = %e, "cannot list VMs to reconcile");
                return;
            }
        };
        for rec in vms {
            if rec.state == VmState::Creating {
                info!(vm = %rec.name, "removing VM whose create was interrupted by a daemon restart");
                self.remove_vm_files_and_row(&rec).await;
                continue;
            }
            let Some(rt) = rec.runtime.clone() else {
                if matches!(
                    rec.state,
                    VmState::Running | VmState::Starting | VmState::Stopping
                ) {
                    let _ = self.store.set_vm_state(&rec.id, VmState::Stopped, None);
                }
                continue;
            };
            let handle = handle_of(&rt);
            match self.driver.adopt(&handle).await {
                Ok(true) => {
                    self.net.mark_in_use(&rt.tap);
                    let _ = self.store.set_vm_state(&rec.id, VmState::Running, None);
                    info!(vm = %rec.name, pid = rt.pid, "adopted running VM");
                }
                Ok(false) | Err(_) => {
                    info!(vm = %rec.name, pid = rt.pid, "VMM process is gone; VM marked stopped");
                    self.undo_boot(&rec.id, &handle, &rt.tap).await;
                    let _ = self.store.set_vm_runtime(&rec.id, None);
                    let _ = self.store.set_vm_state(&rec.id, VmState::Stopped, None);
                }
            }
        }
    }
}
