//! A process-wide bound on how many protocol polls compute at once.
//!
//! A CGGMP21 round does its CPU work (Paillier and ZK proofs) inside one poll of the
//! protocol's future, on a thread of its own (`off_executor` in [`crate::ecdsa`]). With
//! many runs at once (several keys, a presignature refill beside a reshare, or many nodes
//! in one process as in tests and the devnet) every such thread competes with the async
//! executor's workers at equal weight: with fifty computing threads on two cores, the
//! tasks that answer pings, forward messages and send heartbeats got a few percent of
//! the CPU, so whole nodes looked dead for seconds (libp2p keepalives failed, signing
//! watchdogs aborted runs whose parties were merely queued behind others' proofs).
//!
//! [`ComputeGate`] lets at most as many polls compute as the machine has cores; the
//! others wait, first come first served, on their own threads. A poll holds its permit
//! only while it runs, never across a wait for messages, so runs cannot deadlock each
//! other through the gate. Waiting counts as computing for the session's heartbeats
//! ([`crate::wire::Tracked`] marks the poll as under way before it enters the gate), so
//! a party queued here is not mistaken for a silent one. A poll whose run is cancelled
//! (an abort, the run's deadline) while it waits leaves the queue without computing.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// How often a thread waiting at the gate for a cancellable poll checks whether its run
/// was cancelled (nothing wakes it for that: cancellation is an async signal).
const CANCEL_CHECK_INTERVAL: Duration = Duration::from_millis(50);

/// A fair counting semaphore for blocking threads (not for async tasks: `acquire`
/// blocks the calling thread).
///
/// Each waiter sleeps on a condition variable of its own, and a freed permit wakes only
/// the first in line (who may then wake the next if permits remain): with dozens of
/// threads waiting, a release does not wake them all only for all but one to sleep again.
pub(crate) struct ComputeGate {
    state: Mutex<GateState>,
}

struct GateState {
    free: usize,
    /// The threads waiting, in arrival order.
    queue: VecDeque<Waiter>,
    next_ticket: u64,
}

struct Waiter {
    ticket: u64,
    /// Only ever waited on with [`ComputeGate::state`] locked.
    wake: Arc<Condvar>,
}

impl GateState {
    /// Wakes the first waiter in line if a permit is free for it.
    fn wake_first(&self) {
        if self.free > 0 {
            if let Some(first) = self.queue.front() {
                first.wake.notify_one();
            }
        }
    }
}

/// A permit of a [`ComputeGate`]; given back on drop.
pub(crate) struct ComputePermit<'a> {
    gate: &'a ComputeGate,
}

impl ComputeGate {
    /// A gate with `permits` permits (at least one).
    pub(crate) fn new(permits: usize) -> Self {
        Self {
            state: Mutex::new(GateState {
                free: permits.max(1),
                queue: VecDeque::new(),
                next_ticket: 0,
            }),
        }
    }

    /// The process's gate: one permit per core the process may use.
    pub(crate) fn global() -> &'static ComputeGate {
        static GATE: OnceLock<ComputeGate> = OnceLock::new();
        GATE.get_or_init(|| {
            ComputeGate::new(std::thread::available_parallelism().map_or(2, |n| n.get()))
        })
    }

    /// Blocks the calling thread until it may compute, after every thread that asked
    /// before it.
    #[cfg(test)]
    pub(crate) fn acquire(&self) -> ComputePermit<'_> {
        self.acquire_unless_cancelled(None)
            .unwrap_or_else(|| unreachable!("no token, never cancelled"))
    }

    /// Like [`ComputeGate::acquire`], but with `cancel` it gives up once the token is
    /// cancelled (`None`), leaving the queue so that the threads behind it move up. The
    /// token is checked before waiting, every [`CANCEL_CHECK_INTERVAL`] while waiting
    /// (nothing else wakes the thread for it: cancellation is an async signal), and once
    /// more when the turn comes, so a thread whose run was cancelled never takes a permit.
    pub(crate) fn acquire_unless_cancelled(
        &self,
        cancel: Option<&CancellationToken>,
    ) -> Option<ComputePermit<'_>> {
        let cancelled = || cancel.is_some_and(CancellationToken::is_cancelled);
        let mut state = self.lock();
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        let wake = Arc::new(Condvar::new());
        state.queue.push_back(Waiter {
            ticket,
            wake: wake.clone(),
        });
        loop {
            if cancelled() {
                state.queue.retain(|w| w.ticket != ticket);
                // It may have been first in line, with a permit free.
                state.wake_first();
                return None;
            }
            if state.free > 0 && state.queue.front().map(|w| w.ticket) == Some(ticket) {
                state.queue.pop_front();
                state.free -= 1;
                // The next in line may be able to go too.
                state.wake_first();
                return Some(ComputePermit { gate: self });
            }
            state = match cancel {
                Some(_) => {
                    wake.wait_timeout(state, CANCEL_CHECK_INTERVAL)
                        .unwrap_or_else(|poisoned| poisoned.into_inner())
                        .0
                }
                None => wake
                    .wait(state)
                    .unwrap_or_else(|poisoned| poisoned.into_inner()),
            };
        }
    }

    /// How many threads wait now.
    #[cfg(test)]
    pub(crate) fn waiting(&self) -> usize {
        self.lock().queue.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        // The state stays consistent whatever panicked while holding the lock (every
        // update is a single step), so a poisoned lock is still usable.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for ComputePermit<'_> {
    fn drop(&mut self) {
        let mut state = self.gate.lock();
        state.free += 1;
        state.wake_first();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn no_more_than_the_permits_compute_at_once_and_everyone_gets_a_turn() {
        let gate = Arc::new(ComputeGate::new(2));
        let (inside, most, done) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
        );
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (gate, inside, most, done) =
                    (gate.clone(), inside.clone(), most.clone(), done.clone());
                std::thread::spawn(move || {
                    for _ in 0..5 {
                        let _permit = gate.acquire();
                        let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(2));
                        inside.fetch_sub(1, Ordering::SeqCst);
                    }
                    done.fetch_add(1, Ordering::SeqCst);
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(done.load(Ordering::SeqCst), 8, "every thread finished");
        assert_eq!(
            most.load(Ordering::SeqCst),
            2,
            "two computed at once, never more"
        );
    }

    #[test]
    fn a_waiting_thread_goes_before_one_that_asks_later() {
        let gate = Arc::new(ComputeGate::new(1));
        let held = gate.acquire();
        let order = Arc::new(Mutex::new(Vec::new()));
        let first = {
            let (gate, order) = (gate.clone(), order.clone());
            std::thread::spawn(move || {
                let _permit = gate.acquire();
                order.lock().unwrap().push("first");
            })
        };
        // `first` is queued before `second` asks.
        while gate.lock().queue.is_empty() {
            std::thread::yield_now();
        }
        let second = {
            let (gate, order) = (gate.clone(), order.clone());
            std::thread::spawn(move || {
                let _permit = gate.acquire();
                order.lock().unwrap().push("second");
            })
        };
        while gate.lock().queue.len() < 2 {
            std::thread::yield_now();
        }
        drop(held);
        first.join().unwrap();
        second.join().unwrap();
        assert_eq!(*order.lock().unwrap(), vec!["first", "second"]);
    }

    #[test]
    fn a_cancelled_waiter_leaves_the_queue_without_a_permit_and_the_next_one_goes() {
        let gate = Arc::new(ComputeGate::new(1));
        let held = gate.acquire();
        let token = CancellationToken::new();
        let cancelled = {
            let (gate, token) = (gate.clone(), token.clone());
            std::thread::spawn(move || gate.acquire_unless_cancelled(Some(&token)).is_some())
        };
        while gate.lock().queue.is_empty() {
            std::thread::yield_now();
        }
        let next = {
            let gate = gate.clone();
            std::thread::spawn(move || {
                let _permit = gate.acquire();
            })
        };
        while gate.lock().queue.len() < 2 {
            std::thread::yield_now();
        }
        // Cancelled while the permit is still held: it gives up without waiting for it.
        token.cancel();
        // It checks every 50 ms; the bound only ends a failing run (a loaded machine may
        // take seconds to schedule the thread).
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        while !cancelled.is_finished() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(
            cancelled.is_finished(),
            "the cancelled waiter gave up while the permit was held"
        );
        drop(held);
        assert!(!cancelled.join().unwrap(), "it got no permit");
        next.join().unwrap();
        assert_eq!(gate.lock().free, 1, "every permit is back");
        assert!(gate.lock().queue.is_empty());
    }
}
