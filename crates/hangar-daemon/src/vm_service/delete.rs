//! `vm rm`: refuses a running or busy VM unless forced; removes every host
//! resource the VM owns. Forced, it first cancels the VM's create, start,
//! stop or restart and waits for that operation to clean up, as
//! `docker rm -f` does.

use std::time::Duration;

use hangar_api::{OpKind, VmState};
use hangar_store::StoreError;
use tracing::info;

use super::VmService;
use crate::error::{DaemonError, Result};

/// How long a forced removal waits for a cancelled operation to clean up
/// (a boot's undo, or a stop that does not watch cancellation and ends
/// within its stop timeout).
const CANCEL_WAIT: Duration = Duration::from_secs(120);

impl VmService {
    pub async fn delete_vm(&self, name: &str, force: bool) -> Result<()> {
        let rec = match self.find_vm(name) {
            Err(DaemonError::Store(StoreError::NotFound { .. }))
                if force && self.pending_names.contains(name) =>
            {
                // A create still pulling its image has no row yet. If it
                // stored its VM before the cancel landed (or finished),
                // that VM is removed below like any other.
                self.cancel_vm_ops(name).await?;
                match self.find_vm(name) {
                    Err(DaemonError::Store(StoreError::NotFound { .. })) => return Ok(()),
                    other => other?,
                }
            }
            other => other?,
        };
        let guard = match self.locks.try_lock(&rec.id) {
            Some(g) => g,
            None if force => {
                self.cancel_vm_ops(name).await?;
                self.locks.lock(&rec.id).await
            }
            None => {
                return Err(DaemonError::conflict(format!(
                    "VM {name:?} is busy (being created, started or stopped); wait for that operation or cancel it (`hangar op ls`, `hangar op cancel ID`), or remove it anyway with `hangar vm rm --force {name}`"
                )))
            }
        };
        crate::crash_point!("rm.after_lock");
        let rec = match self.infra.store.get_vm(&rec.id) {
            // A cancelled create removes its VM itself.
            Err(StoreError::NotFound { .. }) if force => {
                self.locks.forget(&rec.id);
                return Ok(());
            }
            other => other?,
        };
        let running =
            rec.runtime.is_some() || matches!(rec.state, VmState::Running | VmState::Starting);
        if running && !force {
            return Err(DaemonError::conflict(format!(
                "VM {name:?} is running; stop it first (`hangar vm stop {name}`) or use --force"
            )));
        }
        if rec.runtime.is_some() {
            self.stop_locked(&rec, None).await?;
            crate::crash_point!("rm.after_stop");
        }
        self.remove_vm_files_and_row(&rec).await;
        drop(guard);
        Ok(())
    }

    /// Cancels every running lifecycle operation of VM `name` and waits
    /// until each has finished (cleaned up what it made).
    async fn cancel_vm_ops(&self, name: &str) -> Result<()> {
        let ops = &self.infra.ops;
        let lifecycle = [
            OpKind::VmCreate,
            OpKind::VmStart,
            OpKind::VmStop,
            OpKind::VmRestart,
        ];
        let running: Vec<String> = ops
            .list()
            .into_iter()
            .filter(|o| o.target == name && !o.state.is_terminal() && lifecycle.contains(&o.kind))
            .map(|o| o.id)
            .collect();
        for id in &running {
            // One that finished meanwhile cannot be cancelled: nothing to do.
            if ops.cancel(id).is_ok() {
                info!(vm = name, op = %id, "operation cancelled to remove the VM");
            }
        }
        for id in &running {
            // An operation no one knows any more is over.
            let Ok(op) = ops.wait(id, CANCEL_WAIT).await else {
                continue;
            };
            if !op.state.is_terminal() {
                return Err(DaemonError::conflict(format!(
                    "operation {id} on VM {name:?} did not finish within {} s of being cancelled; try again later",
                    CANCEL_WAIT.as_secs()
                )));
            }
        }
        Ok(())
    }
}
