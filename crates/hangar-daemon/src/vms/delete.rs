//! `vm rm`: refuses a running VM unless forced; removes every host resource
//! the VM owns.

use hangar_api::VmState;

use super::VmService;
use crate::error::{DaemonError, Result};

impl VmService {
    pub async fn delete_vm(&self, name: &str, force: bool) -> Result<()> {
        let rec = self.find_vm(name)?;
        let Some(_g) = self.locks.try_lock(&rec.id) else {
            return Err(DaemonError::conflict(format!(
                "VM {name:?} is busy (being created, started or stopped); wait for that operation or cancel it (`hangar op ls`, `hangar op cancel ID`)"
            )));
        };
        let rec = self.find_vm(name)?;
        let running =
            rec.runtime.is_some() || matches!(rec.state, VmState::Running | VmState::Starting);
        if running && !force {
            return Err(DaemonError::conflict(format!(
                "VM {name:?} is running; stop it first (`hangar vm stop {name}`) or use --force"
            )));
        }
        if rec.runtime.is_some() {
            self.stop_locked(&rec, None).await?;
        }
        self.remove_vm_files_and_row(&rec).await;
        Ok(())
    }
}
