//! The registry: starts operations, answers for them, cancels, waits,
//! prunes and drains.

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::FutureExt;
use hangar_api::{ApiError, OpKind, OpState, Operation, Progress};
use hangar_host::time::{format_utc, now_utc};
use hangar_store::{Store, StoreError};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tokio::sync::watch;

use crate::handle::{OpHandle, Slot};
use crate::transition::{check_cancellable, finish, Outcome};

/// How often the background pruner runs.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// Tracks every operation of this daemon. Cheap to clone (an `Arc` inside).
#[derive(Clone)]
pub struct OpRegistry {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<Store>,
    /// How long finished operations stay visible.
    retention: Duration,
    /// Operations begun by this process, until pruned. A leaf lock: held
    /// only to look up, insert or remove.
    slots: Mutex<HashMap<String, Arc<Slot>>>,
    /// How many operations are running, for `drain`.
    running: watch::Sender<usize>,
}

impl Inner {
    fn slots(&self) -> MutexGuard<'_, HashMap<String, Arc<Slot>>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn slot(&self, id: &str) -> Option<Arc<Slot>> {
        self.slots().get(id).cloned()
    }

    /// The single terminal transition of `slot`, then its persistence.
    fn complete(&self, slot: &Slot, outcome: Outcome) {
        let cancel_requested = slot.token.is_cancelled();
        slot.tx.send_if_modified(|op| match finish(op.state, cancel_requested, outcome) {
            Ok(t) => {
                op.state = t.state;
                op.result = t.result;
                op.error = t.error;
                op.updated_at = now_utc();
                true
            }
            Err(e) => {
                tracing::error!(op = %op.id, error = %e, "operation finished twice; keeping the first outcome");
                false
            }
        });
        slot.persist_if(&self.store, |_| true);
        let op = slot.snapshot();
        match &op.error {
            None => {
                tracing::info!(op = %op.id, kind = op.kind.as_str(), target = %op.target, state = op.state.as_str(), "operation finished")
            }
            Some(e) => {
                tracing::warn!(op = %op.id, kind = op.kind.as_str(), target = %op.target, state = op.state.as_str(), error = %e.message, "operation finished")
            }
        }
        self.running.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// A store failure as the wire error the registry answers with, kind for
/// kind as the daemon maps it (`api/error.rs`); anything else is internal,
/// with its causes.
fn wire_error(e: StoreError) -> ApiError {
    match e {
        StoreError::NotFound { what } => ApiError::not_found(what),
        StoreError::Conflict { what } => ApiError::conflict(what),
        StoreError::Invalid { what } => ApiError::invalid(what),
        other => {
            let mut message = other.to_string();
            let mut cause = std::error::Error::source(&other);
            while let Some(c) = cause {
                message.push_str(": ");
                message.push_str(&c.to_string());
                cause = c.source();
            }
            ApiError::internal(message)
        }
    }
}

/// A fresh id: `op-` and 12 hex digits (48 random bits).
fn new_id() -> String {
    format!("op-{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff)
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_string())
}

impl OpRegistry {
    /// `retention`: how long finished operations stay visible before the
    /// pruner removes them. Operations a previous daemon left running are
    /// not touched here: the daemon calls `Store::fail_running_ops` first.
    pub fn new(store: Arc<Store>, retention: Duration) -> Self {
        OpRegistry {
            inner: Arc::new(Inner {
                store,
                retention,
                slots: Mutex::new(HashMap::new()),
                running: watch::Sender::new(0),
            }),
        }
    }

    /// Registers a running operation (persisted) and runs `work` in a new
    /// tokio task with its handle. Returns the running snapshot at once.
    /// Must be called inside a tokio runtime.
    pub fn begin<F, Fut>(&self, kind: OpKind, target: &str, work: F) -> Operation
    where
        F: FnOnce(OpHandle) -> Fut + Send + 'static,
        Fut: Future<Output = Result<serde_json::Value, ApiError>> + Send + 'static,
    {
        let op = self.register(kind, target);
        let slot = Arc::new(Slot::new(op.clone()));
        self.inner.slots().insert(op.id.clone(), Arc::clone(&slot));
        self.inner.running.send_modify(|n| *n += 1);
        tracing::info!(op = %op.id, kind = kind.as_str(), target, "operation started");

        let handle = OpHandle::new(
            op.id.clone(),
            Arc::clone(&slot),
            Arc::clone(&self.inner.store),
        );
        let inner = Arc::clone(&self.inner);
        tokio::spawn(async move {
            // Calling `work` inside the guarded future catches a panic in
            // its synchronous part too.
            let guarded = AssertUnwindSafe(async move { work(handle).await }).catch_unwind();
            let outcome = match guarded.await {
                Ok(Ok(v)) => Outcome::Done(v),
                Ok(Err(e)) => Outcome::Failed(e),
                Err(payload) => Outcome::Panicked(panic_message(payload.as_ref())),
            };
            inner.complete(&slot, outcome);
        });
        op
    }

    /// Builds the running snapshot and writes it to the store, drawing a new
    /// id on the (unlikely) collision. A store failure is logged, not fatal:
    /// the operation still runs and is retried at its next persistence.
    fn register(&self, kind: OpKind, target: &str) -> Operation {
        let now = now_utc();
        let mut op = Operation {
            id: new_id(),
            kind,
            target: target.to_string(),
            state: OpState::Running,
            progress: Progress::default(),
            result: None,
            error: None,
            created_at: now.clone(),
            updated_at: now,
        };
        for _ in 0..3 {
            match self.inner.store.insert_op(&op) {
                Err(StoreError::Conflict { .. }) => op.id = new_id(),
                Err(e) => {
                    tracing::warn!(op = %op.id, error = %e, "could not persist new operation");
                    break;
                }
                Ok(()) => break,
            }
        }
        op
    }

    /// The latest snapshot: from memory for this daemon's operations, else
    /// from the store.
    pub fn get(&self, id: &str) -> Result<Operation, ApiError> {
        match self.inner.slot(id) {
            Some(slot) => Ok(slot.snapshot()),
            None => self.inner.store.get_op(id).map_err(wire_error),
        }
    }

    /// Every known operation, newest first: the store's, with this daemon's
    /// fresher in-memory snapshots in their place.
    pub fn list(&self) -> Vec<Operation> {
        let mut by_id: HashMap<String, Operation> = match self.inner.store.list_ops() {
            Ok(ops) => ops.into_iter().map(|o| (o.id.clone(), o)).collect(),
            Err(e) => {
                tracing::warn!(error = %e, "could not list stored operations; showing this daemon's only");
                HashMap::new()
            }
        };
        let live: Vec<Operation> = self.inner.slots().values().map(|s| s.snapshot()).collect();
        by_id.extend(live.into_iter().map(|o| (o.id.clone(), o)));
        let mut ops: Vec<Operation> = by_id.into_values().collect();
        ops.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
        ops
    }

    /// Trips the operation's cancel token and returns its snapshot (still
    /// running: the work decides when it has cleaned up). Cancelling twice
    /// is harmless; cancelling a finished operation is a conflict.
    pub fn cancel(&self, id: &str) -> Result<Operation, ApiError> {
        let Some(slot) = self.inner.slot(id) else {
            let op = self.inner.store.get_op(id).map_err(wire_error)?;
            check_cancellable(&op)?;
            return Err(ApiError::conflict(format!(
                "operation {id} was started by a previous daemon and no longer runs"
            )));
        };
        let op = slot.snapshot();
        check_cancellable(&op)?;
        slot.token.cancel();
        tracing::info!(op = %id, "operation cancel requested");
        Ok(op)
    }

    /// Trips the cancel token of every running operation (daemon shutdown);
    /// returns how many.
    pub fn cancel_all(&self) -> usize {
        let slots: Vec<Arc<Slot>> = self.inner.slots().values().cloned().collect();
        slots
            .iter()
            .filter(|s| !s.tx.borrow().state.is_terminal())
            .inspect(|s| s.token.cancel())
            .count()
    }

    /// Waits until the operation is finished or `timeout` passes, then
    /// returns its latest snapshot (long-polling).
    pub async fn wait(&self, id: &str, timeout: Duration) -> Result<Operation, ApiError> {
        let Some(slot) = self.inner.slot(id) else {
            return self.get(id);
        };
        let mut rx = slot.tx.subscribe();
        // The sender lives in `slot`, which we hold, so `wait_for` can only
        // end by the predicate or the timeout.
        let _ = tokio::time::timeout(timeout, rx.wait_for(|op| op.state.is_terminal())).await;
        let op = rx.borrow().clone();
        Ok(op)
    }

    /// Removes finished operations last updated longer ago than the
    /// retention, from memory and store. Returns how many the store dropped.
    pub fn prune(&self) -> usize {
        let retention =
            time::Duration::try_from(self.inner.retention).unwrap_or(time::Duration::MAX);
        let Some(cutoff) = OffsetDateTime::now_utc().checked_sub(retention) else {
            return 0;
        };
        let expired = |op: &Operation| {
            op.state.is_terminal()
                && OffsetDateTime::parse(&op.updated_at, &Rfc3339).is_ok_and(|t| t < cutoff)
        };
        let from_memory = {
            let mut slots = self.inner.slots();
            let before = slots.len();
            slots.retain(|_, s| !expired(&s.tx.borrow()));
            before - slots.len()
        };
        let from_store = match self.inner.store.prune_ops(&format_utc(cutoff)) {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "could not prune stored operations");
                0
            }
        };
        if from_memory + from_store > 0 {
            tracing::debug!(from_memory, from_store, "pruned finished operations");
        }
        from_store
    }

    /// Prunes every minute until the returned task is aborted.
    pub fn spawn_pruner(&self) -> tokio::task::JoinHandle<()> {
        let registry = self.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(PRUNE_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                registry.prune();
            }
        })
    }

    /// Returns once no operation is running, or after `timeout`.
    pub async fn drain(&self, timeout: Duration) {
        let mut rx = self.inner.running.subscribe();
        if tokio::time::timeout(timeout, rx.wait_for(|n| *n == 0))
            .await
            .is_err()
        {
            tracing::warn!(
                running = *rx.borrow(),
                "operations still running after the drain timeout"
            );
        }
    }
}

#[cfg(test)]
mod tests;
