//! The background fdatasync of `Durability::Buffered`.
//!
//! The thread holds the commit state and the health record, never the
//! database itself: closing the last handle closes the database (and
//! releases its lock) at once, and joins this thread.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::engine::commit::CommitState;
use crate::engine::health::Health;

/// The running flusher.
#[derive(Debug)]
pub(crate) struct Flusher {
    stop: mpsc::Sender<()>,
    thread: JoinHandle<()>,
}

impl Flusher {
    /// Starts a thread that fdatasyncs the tail every `interval`.
    pub(crate) fn start(
        commit: Arc<Mutex<CommitState>>,
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
                    // Take the file under the lock, sync it outside: writers
                    // go on while the disk works. A roll syncs the segment it
                    // seals itself, so syncing an older tail here is harmless.
                    let tail = match commit.lock() {
                        Ok(state) => state.tail.sync_handle(),
                        Err(_) => return,
                    };
                    if let Err(e) = tail.sync() {
                        tracing::error!(path = %tail.path().display(), error = %e, "background fdatasync failed; poisoning");
                        health.poison(e.to_string());
                        return;
                    }
                    health.counters.fsyncs.fetch_add(1, Ordering::Relaxed);
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
