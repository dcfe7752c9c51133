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
//! a party queued here is not mistaken for a silent one.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, OnceLock};

/// A fair counting semaphore for blocking threads (not for async tasks: `acquire`
/// blocks the calling thread).
pub(crate) struct ComputeGate {
    state: Mutex<GateState>,
    changed: Condvar,
}

struct GateState {
    free: usize,
    /// Tickets of the threads waiting, in arrival order.
    queue: VecDeque<u64>,
    next_ticket: u64,
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
            changed: Condvar::new(),
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
    pub(crate) fn acquire(&self) -> ComputePermit<'_> {
        let mut state = self.lock();
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        state.queue.push_back(ticket);
        while !(state.free > 0 && state.queue.front() == Some(&ticket)) {
            state = self
                .changed
                .wait(state)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
        state.queue.pop_front();
        state.free -= 1;
        drop(state);
        // The next in line may be able to go too.
        self.changed.notify_all();
        ComputePermit { gate: self }
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
        self.gate.lock().free += 1;
        self.gate.changed.notify_all();
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
}
