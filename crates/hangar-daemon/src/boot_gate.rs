//! Admission control for boots: at most N VMs boot at once (from VMM start
//! to SSH ready, the CPU-heavy part); the others wait in a FIFO queue and
//! learn their place in it as it moves. Without it, twenty boots at once on
//! a small host share the CPU so thinly that none reaches SSH within the
//! boot timeout; with it, each boot runs at near its idle-host speed and
//! the timeout counts from when it is admitted.
//!
//! A waiter that is cancelled (or whose future is dropped) leaves the
//! queue at once, and the waiters behind it move up.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use hangar_vmm::Accel;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// The default number of concurrent boots for `cores` CPUs.
///
/// - TCG: one boot per two cores. A TCG guest runs one host thread per
///   vCPU and the default VM has two, so one boot can keep two cores busy;
///   more boots than that only slow each other down towards the timeout.
/// - KVM: two boots per core. A KVM boot spends most of its time waiting
///   (device setup, sshd start) rather than computing.
pub fn default_limit(cores: usize, accel: Accel) -> usize {
    match accel {
        Accel::Tcg => (cores / 2).max(1),
        Accel::Kvm => (cores * 2).max(1),
    }
}

/// `[vmm] max_concurrent_boots`, with 0 meaning [`default_limit`].
pub fn limit_from_config(configured: usize, accel: Accel) -> usize {
    match configured {
        0 => default_limit(
            std::thread::available_parallelism().map_or(1, |n| n.get()),
            accel,
        ),
        n => n,
    }
}

/// The boot was cancelled while it waited in the queue.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("cancelled while waiting for a boot slot")]
pub struct CancelledWhileQueued;

#[derive(Default)]
struct GateState {
    running: usize,
    /// Tickets of the waiting boots, first in line first.
    queue: VecDeque<u64>,
    next_ticket: u64,
}

/// The gate. Shared as `Arc<BootGate>` by every service that boots.
pub struct BootGate {
    limit: usize,
    state: Mutex<GateState>,
    /// Woken on every change: a slot freed, a waiter admitted or gone.
    changed: Notify,
}

/// A running boot's slot; dropping it lets the next boot in.
pub struct BootPermit {
    gate: Arc<BootGate>,
}

/// A place in the queue; leaving it early (cancel, drop) gives it up.
struct Waiting<'a> {
    gate: &'a BootGate,
    ticket: u64,
    admitted: bool,
}

impl BootGate {
    pub fn new(limit: usize) -> Arc<BootGate> {
        Arc::new(BootGate {
            limit: limit.max(1),
            state: Mutex::default(),
            changed: Notify::new(),
        })
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Boots running now.
    pub fn running(&self) -> usize {
        self.lock().running
    }

    /// Boots waiting now.
    pub fn queued(&self) -> usize {
        self.lock().queue.len()
    }

    fn lock(&self) -> MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits for a boot slot. `on_wait(ahead)` is called when the boot has
    /// to wait and again each time the number of boots queued before it
    /// changes (it runs outside the gate's lock).
    pub async fn acquire(
        self: &Arc<Self>,
        cancel: &CancellationToken,
        mut on_wait: impl FnMut(usize),
    ) -> Result<BootPermit, CancelledWhileQueued> {
        let ticket = {
            let mut s = self.lock();
            if s.queue.is_empty() && s.running < self.limit {
                s.running += 1;
                return Ok(BootPermit { gate: self.clone() });
            }
            let t = s.next_ticket;
            s.next_ticket += 1;
            s.queue.push_back(t);
            t
        };
        let mut waiting = Waiting {
            gate: self,
            ticket,
            admitted: false,
        };
        let mut told = None;
        loop {
            // Registered before looking, so no change between the look and
            // the wait is missed.
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let ahead = {
                let mut s = self.lock();
                let ahead = s.queue.iter().position(|t| *t == ticket).unwrap_or(0);
                if ahead == 0 && s.running < self.limit {
                    s.queue.pop_front();
                    s.running += 1;
                    waiting.admitted = true;
                    None
                } else {
                    Some(ahead)
                }
            };
            let Some(ahead) = ahead else {
                // The next in line may fit as well.
                self.changed.notify_waiters();
                return Ok(BootPermit { gate: self.clone() });
            };
            if told != Some(ahead) {
                told = Some(ahead);
                on_wait(ahead);
            }
            tokio::select! {
                () = &mut changed => {}
                () = cancel.cancelled() => return Err(CancelledWhileQueued),
            }
        }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.admitted {
            return;
        }
        self.gate.lock().queue.retain(|t| *t != self.ticket);
        self.gate.changed.notify_waiters();
    }
}

impl Drop for BootPermit {
    fn drop(&mut self) {
        {
            let mut s = self.gate.lock();
            s.running = s.running.saturating_sub(1);
        }
        self.gate.changed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::sync::mpsc;

    /// Starts a waiter that reports its positions and its admission on `tx`.
    fn waiter(
        gate: &Arc<BootGate>,
        name: &'static str,
        cancel: CancellationToken,
        tx: mpsc::UnboundedSender<(&'static str, Option<usize>)>,
    ) -> tokio::task::JoinHandle<Result<BootPermit, CancelledWhileQueued>> {
        let gate = gate.clone();
        tokio::spawn(async move {
            let tx2 = tx.clone();
            let r = gate
                .acquire(&cancel, move |ahead| {
                    let _ = tx2.send((name, Some(ahead)));
                })
                .await;
            if r.is_ok() {
                let _ = tx.send((name, None));
            }
            r
        })
    }

    async fn next(
        rx: &mut mpsc::UnboundedReceiver<(&'static str, Option<usize>)>,
    ) -> (&'static str, Option<usize>) {
        tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("an event within 5 s")
            .expect("channel open")
    }

    #[tokio::test]
    async fn boots_beyond_the_limit_wait_and_enter_in_order() {
        let gate = BootGate::new(2);
        let none = CancellationToken::new();
        let a = gate
            .acquire(&none, |_| panic!("a must not wait"))
            .await
            .unwrap();
        let b = gate
            .acquire(&none, |_| panic!("b must not wait"))
            .await
            .unwrap();
        assert_eq!(gate.running(), 2);

        let (tx, mut rx) = mpsc::unbounded_channel();
        let c = waiter(&gate, "c", none.clone(), tx.clone());
        assert_eq!(next(&mut rx).await, ("c", Some(0)));
        let d = waiter(&gate, "d", none.clone(), tx.clone());
        assert_eq!(next(&mut rx).await, ("d", Some(1)));
        let e = waiter(&gate, "e", none.clone(), tx);
        assert_eq!(next(&mut rx).await, ("e", Some(2)));
        assert_eq!(gate.queued(), 3);

        drop(a);
        // c enters; d and e each move up one place.
        let mut events = vec![
            next(&mut rx).await,
            next(&mut rx).await,
            next(&mut rx).await,
        ];
        events.sort();
        assert_eq!(events, vec![("c", None), ("d", Some(0)), ("e", Some(1))]);
        let c = c.await.unwrap().unwrap();
        assert_eq!((gate.running(), gate.queued()), (2, 2));

        drop(b);
        let mut events = vec![next(&mut rx).await, next(&mut rx).await];
        events.sort();
        assert_eq!(events, vec![("d", None), ("e", Some(0))]);
        drop(c);
        assert_eq!(next(&mut rx).await, ("e", None));
        let (d, e) = (d.await.unwrap().unwrap(), e.await.unwrap().unwrap());
        drop((d, e));
        assert_eq!((gate.running(), gate.queued()), (0, 0));
    }

    #[tokio::test]
    async fn a_boot_cancelled_while_queued_leaves_and_those_behind_move_up() {
        let gate = BootGate::new(1);
        let none = CancellationToken::new();
        let running = gate.acquire(&none, |_| {}).await.unwrap();

        let (tx, mut rx) = mpsc::unbounded_channel();
        let cancel_b = CancellationToken::new();
        let b = waiter(&gate, "b", cancel_b.clone(), tx.clone());
        assert_eq!(next(&mut rx).await, ("b", Some(0)));
        let c = waiter(&gate, "c", none.clone(), tx);
        assert_eq!(next(&mut rx).await, ("c", Some(1)));

        cancel_b.cancel();
        assert_eq!(b.await.unwrap().err(), Some(CancelledWhileQueued));
        assert_eq!(next(&mut rx).await, ("c", Some(0)));
        assert_eq!(gate.queued(), 1);

        drop(running);
        assert_eq!(next(&mut rx).await, ("c", None));
        drop(c.await.unwrap().unwrap());
        assert_eq!((gate.running(), gate.queued()), (0, 0));
    }

    #[tokio::test]
    async fn a_dropped_waiter_gives_up_its_place() {
        let gate = BootGate::new(1);
        let none = CancellationToken::new();
        let running = gate.acquire(&none, |_| {}).await.unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let b = waiter(&gate, "b", none.clone(), tx);
        assert_eq!(next(&mut rx).await, ("b", Some(0)));
        b.abort();
        let _ = b.await;
        assert_eq!(gate.queued(), 0);
        drop(running);
        // The freed slot is free indeed: a new boot enters at once.
        let _p = gate
            .acquire(&none, |_| panic!("must not wait"))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_newcomer_does_not_overtake_the_queue() {
        let gate = BootGate::new(1);
        let none = CancellationToken::new();
        let running = gate.acquire(&none, |_| {}).await.unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let b = waiter(&gate, "b", none.clone(), tx.clone());
        assert_eq!(next(&mut rx).await, ("b", Some(0)));
        drop(running);
        let c = waiter(&gate, "c", none.clone(), tx);
        // Whatever the order of wake-ups, b enters first and c waits for it.
        loop {
            match next(&mut rx).await {
                ("b", None) => break,
                ("c", None) => panic!("c overtook b"),
                _ => {}
            }
        }
        drop(b.await.unwrap().unwrap());
        while next(&mut rx).await != ("c", None) {}
        drop(c.await.unwrap().unwrap());
    }

    #[test]
    fn default_limits_follow_cores_and_accelerator() {
        assert_eq!(default_limit(1, Accel::Tcg), 1);
        assert_eq!(default_limit(2, Accel::Tcg), 1);
        assert_eq!(default_limit(8, Accel::Tcg), 4);
        assert_eq!(default_limit(2, Accel::Kvm), 4);
        assert_eq!(limit_from_config(7, Accel::Tcg), 7);
        assert!(limit_from_config(0, Accel::Tcg) >= 1);
    }
}
