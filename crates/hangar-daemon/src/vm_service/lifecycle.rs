//! start / stop / restart as operations, each under the VM's lock.

use std::sync::Arc;
use std::time::Duration;

use hangar_api::{OpKind, Operation, VmState};
use hangar_ops::OpHandle;
use hangar_store::VmRecord;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::boot::handle_of;
use super::VmService;
use crate::error::Result;

impl VmService {
    pub fn begin_start(self: &Arc<Self>, name: &str) -> Result<Operation> {
        let rec = self.find_vm(name)?;
        self.check_vmm_ready()?;
        let this = self.clone();
        Ok(crate::op::begin(
            &self.infra.ops,
            OpKind::VmStart,
            name,
            move |op| async move {
                let _g = this.locks.lock(&rec.id).await;
                let rec = this.infra.store.get_vm(&rec.id)?;
                let rec = this.start_locked(&rec, &op).await?;
                Ok(serde_json::to_value(this.vm_info(&rec)).unwrap_or_default())
            },
        ))
    }

    pub fn begin_stop(self: &Arc<Self>, name: &str) -> Result<Operation> {
        let rec = self.find_vm(name)?;
        let this = self.clone();
        Ok(crate::op::begin(
            &self.infra.ops,
            OpKind::VmStop,
            name,
            move |op| async move {
                let _g = this.locks.lock(&rec.id).await;
                let rec = this.infra.store.get_vm(&rec.id)?;
                let rec = this.stop_locked(&rec, Some(&op)).await?;
                Ok(serde_json::to_value(this.vm_info(&rec)).unwrap_or_default())
            },
        ))
    }

    pub fn begin_restart(self: &Arc<Self>, name: &str) -> Result<Operation> {
        let rec = self.find_vm(name)?;
        self.check_vmm_ready()?;
        let this = self.clone();
        Ok(crate::op::begin(
            &self.infra.ops,
            OpKind::VmRestart,
            name,
            move |op| async move {
                let _g = this.locks.lock(&rec.id).await;
                let rec = this.infra.store.get_vm(&rec.id)?;
                let rec = this.stop_locked(&rec, Some(&op)).await?;
                let rec = this.start_locked(&rec, &op).await?;
                Ok(serde_json::to_value(this.vm_info(&rec)).unwrap_or_default())
            },
        ))
    }

    /// Boots a stopped VM. Starting a running VM is a no-op.
    async fn start_locked(&self, rec: &VmRecord, op: &OpHandle) -> Result<VmRecord> {
        let cancel: CancellationToken = op.cancel_token().clone();
        self.start_locked_until(rec, op, &cancel).await
    }

    /// [`Self::start_locked`], cancelled by `cancel` rather than by the
    /// operation: a VM an operation stopped for its own work is started
    /// again even when that operation was cancelled.
    pub(super) async fn start_locked_until(
        &self,
        rec: &VmRecord,
        op: &OpHandle,
        cancel: &CancellationToken,
    ) -> Result<VmRecord> {
        if let Some(rt) = &rec.runtime {
            if self.infra.driver.is_alive(&handle_of(rt)) {
                return Ok(rec.clone());
            }
        }
        self.infra
            .store
            .set_vm_state(&rec.id, VmState::Starting, None)?;
        match self.boot_vm(rec, Some(op), cancel).await {
            Ok(r) => Ok(r),
            Err(e) => {
                let message = crate::error::error_chain(&e);
                let _ = self
                    .infra
                    .store
                    .set_vm_state(&rec.id, VmState::Error, Some(&message));
                Err(e)
            }
        }
    }

    /// Stops a VM: ask the guest to power off (SSH `poweroff` and the VMM's
    /// own request), wait up to the stop timeout, then kill. Always ends
    /// with the TAP returned and the runtime cleared.
    pub async fn stop_locked(&self, rec: &VmRecord, op: Option<&OpHandle>) -> Result<VmRecord> {
        let Some(rt) = rec.runtime.clone() else {
            self.infra
                .store
                .set_vm_state(&rec.id, VmState::Stopped, None)?;
            return Ok(self.infra.store.get_vm(&rec.id)?);
        };
        let handle = handle_of(&rt);
        self.infra
            .store
            .set_vm_state(&rec.id, VmState::Stopping, None)?;
        if self.infra.driver.is_alive(&handle) {
            if let Some(op) = op {
                op.phase("graceful-stop");
            }
            self.ask_guest_to_power_off(rec).await;
            let timeout = Duration::from_secs(self.infra.config.vmm.stop_timeout_secs);
            match self.infra.driver.stop(&handle, timeout).await {
                Ok(outcome) => info!(vm = %rec.name, ?outcome, "VMM stopped"),
                Err(e) => warn!(vm = %rec.name, error = %e, "VMM stop failed; killing it"),
            }
        }
        // kill is idempotent and also removes the VMM's socket and reaps it.
        self.tear_down(&rec.id, &rt).await?;
        self.infra
            .store
            .set_vm_state(&rec.id, VmState::Stopped, None)?;
        info!(vm = %rec.name, "VM stopped");
        Ok(self.infra.store.get_vm(&rec.id)?)
    }

    /// Best effort: the guest agent (or the image's `poweroff`) syncs and
    /// unmounts cleanly.
    async fn ask_guest_to_power_off(&self, rec: &VmRecord) {
        let attempt = async {
            let client = self.guest_client(rec).await.ok()?;
            self.guests.forget(&rec.id);
            // The connection dies with the guest; the result is not needed.
            let _ = tokio::time::timeout(Duration::from_secs(2), client.request_power_off()).await;
            Some(())
        };
        let _ = tokio::time::timeout(Duration::from_secs(5), attempt).await;
    }
}
