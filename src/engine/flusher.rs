//! The background fdatasync of `Durability::Buffered`.
//!
//! The thread holds the log and the health record, never the database
//! itself: closing the last handle closes the database (and releases its
//! lock) at once, and joins this thread.

use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::engine::health::Health;
use crate::log::Log;

/// The running flusher.
#[derive(Debug)]
pub(crate) struct Flusher {
    stop: mpsc::Sender<()>,
    thread: JoinHandle<()>,
}

impl Flusher {
    /// Starts a thread that makes the log durable every `interval`.
    pub(crate) fn start(
        log: Arc<dyn Log>,
        health: Arc<Health>,
        interval: Duration,
    ) -> std::io::Result<Flusher> {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("replaydb-flusher".into())
            .spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(interval) {
                    if health.is_poisoned() {
                        return;
                    }
                    // The log takes what covers every record written, and
                    // syncs it without holding the writer.
                    if let Err(e) = log.sync() {
                        tracing::error!(error = %e, "background fdatasync failed; poisoning");
                        health.poison(e.to_string());
                        return;
                    }
                }
            })?;
        Ok(Flusher { stop, thread })
    }

    /// Stops the thread and waits for it (at most one fdatasync).
    pub(crate) fn stop(self) {
        drop(self.stop);
        if self.thread.join().is_err() {
            tracing::error!("the flusher thread panicked");
        }
    }
}
