//! `vm rm`: refuses a running or busy VM unless forced; removes every host
//! resource the VM owns. Forced, it first cancels the VM's create, start,
//! stop, restart or image promotion and waits for that operation to clean
//! up, as `docker rm -f` does.

use std::time::Duration;

use hangar_api::{OpKind, VmState};
use hangar_store::{StoreError, VmRecord};
use tracing::info;

use super::VmService;
use crate::error::{DaemonError, Result};

/// How long a forced removal waits for a cancelled operation to clean up
/// (a boot's undo, or a stop that does not watch cancellation and ends
/// within its stop timeout).
const CANCEL_WAIT: Duration = Duration::from_secs(120);

/// How many times a removal looks its VM up again when the name moved to
/// another VM between the lookup and the lock.
const LOOKUP_TRIES: usize = 5;

impl VmService {
    /// Removes VM `name`. The VM removed is the one the name maps to while
    /// its lock is held: a lookup and a lock are two steps, and between
    /// them the VM may be removed and another created under the same name,
    /// so after locking the name is looked up again and must still map to
    /// the id locked (else the lookup starts over).
    pub async fn delete_vm(&self, name: &str, force: bool) -> Result<()> {
        for _ in 0..LOOKUP_TRIES {
            let Some(rec) = self.lookup_for_removal(name, force).await? else {
                return Ok(());
            };
            crate::pause_point!("rm.after_lookup");
            let guard = match self.locks.try_lock(&rec.id) {
                Some(g) => g,
                None if force => {
                    self.cancel_vm_ops(name, Some(&rec.id)).await?;
                    self.locks.lock(&rec.id).await
                }
                None => {
                    return Err(DaemonError::conflict(format!(
                        "VM {name:?} is busy (being created, started, stopped or promoted to an image); wait for that operation or cancel it (`hangar op ls`, `hangar op cancel ID`), or remove it anyway with `hangar vm rm --force {name}`"
                    )))
                }
            };
            crate::crash_point!("rm.after_lock");
            match self.find_vm(name) {
                Ok(current) if current.id == rec.id => {
                    let removed = self.remove_locked(current, force).await;
                    drop(guard);
                    return removed;
                }
                // A cancelled create removes its VM itself.
                Err(DaemonError::Store(StoreError::NotFound { .. })) if force => {
                    if self.infra.store.get_vm(&rec.id).is_err() {
                        self.locks.forget(&rec.id);
                    }
                    return Ok(());
                }
                // The name now names another VM (or none): look again.
                Ok(_) | Err(DaemonError::Store(StoreError::NotFound { .. })) => {
                    info!(vm = name, id = %rec.id, "the VM changed while its removal waited; looking it up again");
                }
                Err(e) => return Err(e),
            }
        }
        Err(DaemonError::conflict(format!(
            "VM {name:?} was replaced {LOOKUP_TRIES} times while being removed; try again"
        )))
    }

    /// The stored VM named `name`. Forced, a create still pulling its
    /// image (no row yet) is cancelled first; `None` when nothing is left
    /// to remove after that.
    async fn lookup_for_removal(&self, name: &str, force: bool) -> Result<Option<VmRecord>> {
        match self.find_vm(name) {
            Err(DaemonError::Store(StoreError::NotFound { .. }))
                if force && self.pending_names.contains(name) =>
            {
                // If it stored its VM before the cancel landed (or
                // finished), that VM is removed like any other.
                self.cancel_vm_ops(name, None).await?;
                match self.find_vm(name) {
                    Err(DaemonError::Store(StoreError::NotFound { .. })) => Ok(None),
                    other => other.map(Some),
                }
            }
            other => other.map(Some),
        }
    }

    /// Removes `rec`, whose lock the caller holds.
    async fn remove_locked(&self, rec: VmRecord, force: bool) -> Result<()> {
        let name = &rec.name;
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
        Ok(())
    }

    /// Cancels every running lifecycle operation of VM `name`, and every
    /// promotion of VM `id`, and waits until each has finished (cleaned
    /// up what it made).
    async fn cancel_vm_ops(&self, name: &str, id: Option<&str>) -> Result<()> {
        let ops = &self.infra.ops;
        let lifecycle = [
            OpKind::VmCreate,
            OpKind::VmStart,
            OpKind::VmStop,
            OpKind::VmRestart,
        ];
        let mut running: Vec<String> = ops
            .list()
            .into_iter()
            .filter(|o| o.target == name && !o.state.is_terminal() && lifecycle.contains(&o.kind))
            .map(|o| o.id)
            .collect();
        if let Some(id) = id {
            running.extend(self.promotions.mark_removing(id));
        }
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
