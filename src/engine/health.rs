//! Whether the handle may still work, what it has done, and how far the
//! store has applied the log: shared with the flusher and applier threads,
//! which must never keep the database itself alive.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;

use crate::error::{Error, Result};

/// Counters of what the engine did since open.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub appends: AtomicU64,
    pub groups: AtomicU64,
    pub checkpoints: AtomicU64,
    /// The LSN the store's last durable checkpoint covers.
    pub checkpoint_lsn: AtomicU64,
}

/// Poison state, counters and the applied LSN.
#[derive(Debug)]
pub(crate) struct Health {
    poisoned: AtomicBool,
    cause: Mutex<String>,
    pub counters: Counters,
    /// LSN of the last event the store (and every view) reflects.
    applied: Mutex<u64>,
    applied_changed: Condvar,
    /// The same, for async waiters; also bumped when the handle is poisoned.
    applied_watch: watch::Sender<u64>,
}

impl Health {
    pub(crate) fn new(applied_lsn: u64) -> Self {
        Health {
            poisoned: AtomicBool::new(false),
            cause: Mutex::new(String::new()),
            counters: Counters::default(),
            applied: Mutex::new(applied_lsn),
            applied_changed: Condvar::new(),
            applied_watch: watch::channel(applied_lsn).0,
        }
    }

    pub(crate) fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Acquire)
    }

    pub(crate) fn check(&self) -> Result<()> {
        if self.is_poisoned() {
            return Err(self.error());
        }
        Ok(())
    }

    pub(crate) fn error(&self) -> Error {
        let cause = self
            .cause
            .lock()
            .map(|c| c.clone())
            .unwrap_or_else(|_| "unknown".into());
        Error::Poisoned { cause }
    }

    /// Refuses all further work; the first cause is kept. Wakes everyone
    /// waiting for the store, so they see it.
    pub(crate) fn poison(&self, cause: String) {
        if let Ok(mut c) = self.cause.lock()
            && c.is_empty()
        {
            *c = cause;
        }
        self.poisoned.store(true, Ordering::Release);
        let _g = self.applied.lock().unwrap_or_else(PoisonError::into_inner);
        self.applied_changed.notify_all();
        self.applied_watch.send_modify(|_| {});
    }

    /// LSN of the last event the store reflects.
    pub(crate) fn applied_lsn(&self) -> u64 {
        *self.applied.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The store now reflects everything up to `lsn`.
    pub(crate) fn publish_applied(&self, lsn: u64) {
        let mut a = self.applied.lock().unwrap_or_else(PoisonError::into_inner);
        *a = (*a).max(lsn);
        self.applied_changed.notify_all();
        drop(a);
        self.applied_watch.send_if_modified(|v| {
            let changed = *v < lsn;
            *v = (*v).max(lsn);
            changed
        });
    }

    /// Waits until the store reflects `lsn` (read-your-writes: what was
    /// acknowledged before a read is in it), or the handle is poisoned.
    pub(crate) fn wait_applied(&self, lsn: u64) -> Result<()> {
        let mut a = self.applied.lock().unwrap_or_else(PoisonError::into_inner);
        while *a < lsn {
            if self.is_poisoned() {
                return Err(self.error());
            }
            a = self
                .applied_changed
                .wait_timeout(a, Duration::from_secs(1))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        drop(a);
        self.check()
    }

    /// A receiver that wakes when the applied LSN moves or the handle is
    /// poisoned.
    pub(crate) fn watch_applied(&self) -> watch::Receiver<u64> {
        self.applied_watch.subscribe()
    }
}
