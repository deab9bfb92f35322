//! What the work of an operation holds: its id, its cancel token and a way
//! to report progress.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hangar_api::{Operation, Progress};
use hangar_host::time::now_utc;
use hangar_store::Store;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Same-phase progress reaches the store at most this often; memory (and so
/// `GET`) always has the latest.
const PERSIST_INTERVAL: Duration = Duration::from_millis(500);

/// One live operation: its latest snapshot (watched by waiters), its cancel
/// token, and when it was last written to the store.
pub(crate) struct Slot {
    pub(crate) tx: watch::Sender<Operation>,
    pub(crate) token: CancellationToken,
    /// Held while writing to the store, so an older snapshot can never be
    /// written after a newer one (e.g. progress after the terminal state).
    persisted_at: Mutex<Instant>,
}

impl Slot {
    pub(crate) fn new(op: Operation) -> Self {
        Slot {
            tx: watch::Sender::new(op),
            token: CancellationToken::new(),
            persisted_at: Mutex::new(Instant::now()),
        }
    }

    pub(crate) fn snapshot(&self) -> Operation {
        self.tx.borrow().clone()
    }

    /// Writes the latest snapshot to the store, if `due` says so given the
    /// time of the last write. Failures are logged: memory stays
    /// authoritative while the daemon lives.
    pub(crate) fn persist_if(&self, store: &Store, due: impl FnOnce(Instant) -> bool) {
        let mut at = self.persisted_at.lock().unwrap_or_else(|p| p.into_inner());
        if !due(*at) {
            return;
        }
        *at = Instant::now();
        let op = self.snapshot();
        let res = match store.update_op(&op) {
            // The insert at begin failed; try once more now.
            Err(hangar_store::StoreError::NotFound { .. }) => store.insert_op(&op),
            other => other,
        };
        if let Err(e) = res {
            tracing::warn!(op = %op.id, error = %e, "could not persist operation");
        }
    }
}

/// Given to the work of an operation. Cheap to clone, so sub-tasks can
/// report progress too.
#[derive(Clone)]
pub struct OpHandle {
    id: String,
    slot: Arc<Slot>,
    store: Arc<Store>,
}

impl OpHandle {
    pub(crate) fn new(id: String, slot: Arc<Slot>, store: Arc<Store>) -> Self {
        OpHandle { id, slot, store }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Tripped when someone cancels the operation; the work should notice,
    /// clean up what it made and return `Err`.
    pub fn cancel_token(&self) -> &CancellationToken {
        &self.slot.token
    }

    pub fn is_cancelled(&self) -> bool {
        self.slot.token.is_cancelled()
    }

    /// Replaces the progress. Ignored once the operation has finished.
    pub fn progress(&self, p: Progress) {
        let mut phase_changed = false;
        let changed = self.slot.tx.send_if_modified(|op| {
            if op.state.is_terminal() {
                return false;
            }
            phase_changed = op.progress.phase != p.phase;
            op.progress = p;
            op.updated_at = now_utc();
            true
        });
        if changed {
            self.slot.persist_if(&self.store, |last| {
                phase_changed || last.elapsed() >= PERSIST_INTERVAL
            });
        }
    }

    /// Enters a new phase with no counts or detail.
    pub fn phase(&self, phase: &str) {
        self.progress(Progress {
            phase: phase.to_string(),
            ..Progress::default()
        });
    }
}
