//! The promotions running, by VM, so that `vm rm --force` can cancel them
//! as it cancels the VM's lifecycle operations (a promotion's target is
//! the new image's name, so the operations list cannot tell its VM).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

/// One running promotion.
struct Entry {
    vm_id: String,
    /// Cancelled when the VM is being removed: the VM it stopped is then
    /// not started again.
    removing: CancellationToken,
}

/// Running promotions, keyed by operation id.
#[derive(Default)]
pub struct Promotions {
    running: Arc<Mutex<HashMap<String, Entry>>>,
}

impl Promotions {
    /// Records operation `op_id` as promoting VM `vm_id` until the guard
    /// is dropped.
    pub fn register(&self, op_id: &str, vm_id: &str) -> PromotionGuard {
        let removing = CancellationToken::new();
        if let Ok(mut map) = self.running.lock() {
            map.insert(
                op_id.to_string(),
                Entry {
                    vm_id: vm_id.to_string(),
                    removing: removing.clone(),
                },
            );
        }
        PromotionGuard {
            running: self.running.clone(),
            op_id: op_id.to_string(),
            removing,
        }
    }

    /// Marks the promotions of VM `vm_id` as promoting a VM being removed
    /// and returns their operation ids (to cancel and wait for).
    pub fn mark_removing(&self, vm_id: &str) -> Vec<String> {
        let Ok(map) = self.running.lock() else {
            return Vec::new();
        };
        map.iter()
            .filter(|(_, e)| e.vm_id == vm_id)
            .map(|(op, e)| {
                e.removing.cancel();
                op.clone()
            })
            .collect()
    }
}

/// Held by a running promotion; unregisters it when dropped.
pub struct PromotionGuard {
    running: Arc<Mutex<HashMap<String, Entry>>>,
    op_id: String,
    removing: CancellationToken,
}

impl PromotionGuard {
    /// Whether `vm rm --force` is removing the promoted VM.
    pub fn vm_is_being_removed(&self) -> bool {
        self.removing.is_cancelled()
    }
}

impl Drop for PromotionGuard {
    fn drop(&mut self) {
        if let Ok(mut map) = self.running.lock() {
            map.remove(&self.op_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_removed_vm_s_promotions_are_marked_and_a_guard_unregisters() {
        let p = Promotions::default();
        let a = p.register("op-a", "vm-1");
        let b = p.register("op-b", "vm-2");
        assert_eq!(p.mark_removing("vm-1"), vec!["op-a".to_string()]);
        assert!(a.vm_is_being_removed());
        assert!(!b.vm_is_being_removed());
        drop(a);
        assert!(p.mark_removing("vm-1").is_empty());
        assert_eq!(p.mark_removing("vm-2"), vec!["op-b".to_string()]);
    }
}
