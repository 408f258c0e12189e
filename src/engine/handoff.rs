//! A one-shot reply between the commit leader and the applier that the
//! receiver first spins for, briefly, before it sleeps.
//!
//! A command's round trip (the leader hands the group to the applier, the
//! applier decides and replies) is a few microseconds of work; waking a
//! sleeping thread costs 20–30 µs on a virtual machine, twice per command,
//! all of it inside the commit lock. The receiver therefore polls for
//! [`SPIN_MAX`], yielding its core between looks (on two cores, the
//! appenders that wake meanwhile need it more than a spinner does), and
//! only then sleeps on a condition variable: a reply that comes in time
//! costs no wake-up, one that does not costs what it did.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How long a receiver polls before it sleeps.
pub(crate) const SPIN_MAX: Duration = Duration::from_micros(50);

#[derive(Debug)]
enum Slot<T> {
    Waiting,
    Sent(T),
    /// The sender went away without sending.
    Dropped,
}

#[derive(Debug)]
struct Shared<T> {
    /// Set once the slot is no longer `Waiting`.
    ready: AtomicBool,
    slot: Mutex<Slot<T>>,
    wake: Condvar,
}

/// The sending half: sends once; dropped unsent, the receiver gets `None`.
#[derive(Debug)]
pub(crate) struct ReplyTx<T> {
    shared: Option<Arc<Shared<T>>>,
}

/// The receiving half.
#[derive(Debug)]
pub(crate) struct ReplyRx<T> {
    shared: Arc<Shared<T>>,
}

/// A new one-shot reply.
pub(crate) fn reply<T>() -> (ReplyTx<T>, ReplyRx<T>) {
    let shared = Arc::new(Shared {
        ready: AtomicBool::new(false),
        slot: Mutex::new(Slot::Waiting),
        wake: Condvar::new(),
    });
    (
        ReplyTx {
            shared: Some(shared.clone()),
        },
        ReplyRx { shared },
    )
}

impl<T> Shared<T> {
    fn finish(&self, value: Slot<T>) {
        *self.slot.lock().unwrap_or_else(PoisonError::into_inner) = value;
        self.ready.store(true, Ordering::Release);
        self.wake.notify_one();
    }
}

impl<T> ReplyTx<T> {
    /// Sends the reply.
    pub(crate) fn send(mut self, value: T) {
        if let Some(shared) = self.shared.take() {
            shared.finish(Slot::Sent(value));
        }
    }
}

impl<T> Drop for ReplyTx<T> {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.take() {
            shared.finish(Slot::Dropped);
        }
    }
}

impl<T> ReplyRx<T> {
    /// Waits for the reply: `None` if the sender was dropped unsent.
    pub(crate) fn recv(self) -> Option<T> {
        let start = Instant::now();
        let mut spins = 0u32;
        while !self.shared.ready.load(Ordering::Acquire) {
            std::thread::yield_now();
            spins += 1;
            // The clock is read every few looks, not at each.
            if spins.is_multiple_of(4) && start.elapsed() >= SPIN_MAX {
                break;
            }
        }
        let mut slot = self
            .shared
            .slot
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        loop {
            match std::mem::replace(&mut *slot, Slot::Dropped) {
                Slot::Waiting => {
                    *slot = Slot::Waiting;
                    slot = self
                        .shared
                        .wake
                        .wait(slot)
                        .unwrap_or_else(PoisonError::into_inner);
                }
                Slot::Sent(v) => return Some(v),
                Slot::Dropped => return None,
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_sent_before_the_wait_is_received() {
        let (tx, rx) = reply();
        tx.send(7);
        assert_eq!(rx.recv(), Some(7));
    }

    #[test]
    fn a_reply_sent_after_the_spin_wakes_the_sleeper() {
        let (tx, rx) = reply::<u32>();
        let (started_tx, started) = std::sync::mpsc::channel();
        let waiter = std::thread::spawn(move || {
            started_tx.send(()).unwrap();
            rx.recv()
        });
        started.recv().unwrap();
        // Whether the receiver is still spinning or already asleep, the
        // reply reaches it.
        tx.send(9);
        assert_eq!(waiter.join().unwrap(), Some(9));
    }

    #[test]
    fn a_dropped_sender_is_none() {
        let (tx, rx) = reply::<u32>();
        let waiter = std::thread::spawn(move || rx.recv());
        drop(tx);
        assert_eq!(waiter.join().unwrap(), None);
    }
}
