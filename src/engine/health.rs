//! Whether the handle may still work, and what it has done: shared with
//! the flusher thread, which must never keep the database itself alive.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

use crate::error::{Error, Result};
use crate::stream::Event;

/// Counters of what the engine did since open.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub appends: AtomicU64,
    pub groups: AtomicU64,
    pub fsyncs: AtomicU64,
}

/// Poison state, counters and the live channel.
#[derive(Debug)]
pub(crate) struct Health {
    poisoned: AtomicBool,
    cause: Mutex<String>,
    pub counters: Counters,
    /// Committed groups, to live subscribers.
    pub live: broadcast::Sender<Arc<[Event]>>,
}

impl Health {
    pub(crate) fn new(live_capacity: usize) -> Self {
        Health {
            poisoned: AtomicBool::new(false),
            cause: Mutex::new(String::new()),
            counters: Counters::default(),
            live: broadcast::channel(live_capacity).0,
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

    /// Refuses all further work; the first cause is kept.
    pub(crate) fn poison(&self, cause: String) {
        if let Ok(mut c) = self.cause.lock()
            && c.is_empty()
        {
            *c = cause;
        }
        self.poisoned.store(true, Ordering::Release);
        // Wake waiting subscribers: an empty batch carries no events, and
        // their next step sees the poison.
        let _ = self.live.send(Arc::from(Vec::new()));
    }
}
