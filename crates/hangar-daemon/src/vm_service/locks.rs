//! Per-VM locks. Lock order (ARCHITECTURE.md): vm lock → {create lock,
//! image lock} → subsystem-local locks. A VM lock may be held across VMM and
//! guest I/O for that VM (it only serialises that VM's own lifecycle); the
//! create and image locks never are.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::OwnedMutexGuard;

#[derive(Default)]
pub struct VmLocks {
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl VmLocks {
    /// Waits for and takes the lock of VM `id`.
    pub async fn lock(&self, id: &str) -> OwnedMutexGuard<()> {
        let m = {
            let mut map = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(id.to_string()).or_default().clone()
        };
        m.lock_owned().await
    }

    /// Takes the lock only if free (used to refuse conflicting requests
    /// instead of queueing them behind a long boot).
    pub fn try_lock(&self, id: &str) -> Option<OwnedMutexGuard<()>> {
        let m = {
            let mut map = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(id.to_string()).or_default().clone()
        };
        m.try_lock_owned().ok()
    }

    /// Drops the entry of a deleted VM.
    pub fn forget(&self, id: &str) {
        let mut map = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lock_excludes_try_lock_of_same_vm_only() {
        let locks = VmLocks::default();
        let _g = locks.lock("a").await;
        assert!(locks.try_lock("a").is_none());
        assert!(locks.try_lock("b").is_some());
    }

    #[tokio::test]
    async fn lock_is_free_again_after_guard_drops() {
        let locks = VmLocks::default();
        drop(locks.lock("a").await);
        assert!(locks.try_lock("a").is_some());
    }
}
