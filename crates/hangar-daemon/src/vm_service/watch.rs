//! Notices VMs whose VMM exited on its own (a `poweroff` or `reboot` inside
//! the guest, a crash) and records them as stopped, returning their TAP and
//! disk device, so the store never claims a dead VM runs.

use std::sync::Arc;
use std::time::Duration;

use hangar_api::VmState;
use tracing::{info, warn};

use super::boot::handle_of;
use super::VmService;

/// How often running VMs are checked.
const PERIOD: Duration = Duration::from_secs(2);

impl VmService {
    /// Runs until shutdown.
    pub fn spawn_vm_watcher(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(PERIOD) => this.sweep_exited_vms().await,
                    _ = this.infra.shutdown.cancelled() => return,
                }
            }
        })
    }

    /// One pass: every VM recorded as running whose process is gone.
    pub async fn sweep_exited_vms(&self) {
        let vms = match self.infra.store.list_vms() {
            Ok(v) => v,
            Err(e) => {
                warn!(error = %e, "cannot list VMs to watch");
                return;
            }
        };
        for rec in vms {
            let Some(rt) = rec.runtime.clone() else {
                continue;
            };
            if rec.state != VmState::Running || self.infra.driver.is_alive(&handle_of(&rt)) {
                continue;
            }
            // A VM being started, stopped or removed is that operation's
            // business; look again next time.
            let Some(_g) = self.locks.try_lock(&rec.id) else {
                continue;
            };
            let Ok(current) = self.infra.store.get_vm(&rec.id) else {
                continue;
            };
            if current.runtime.as_ref() != Some(&rt) || self.infra.driver.is_alive(&handle_of(&rt))
            {
                continue;
            }
            info!(vm = %rec.name, pid = rt.pid, "VMM exited on its own (guest powered off or crashed); VM marked stopped");
            self.tear_down_stopped(&rec.id, &rt).await;
        }
    }
}
