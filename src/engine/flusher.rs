//! The background fdatasync of `Durability::Buffered`.

use std::sync::Weak;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use crate::engine::Inner;

/// Starts the flusher; dropping the returned sender stops it.
pub(crate) fn start(inner: Weak<Inner>, interval: Duration) -> std::io::Result<mpsc::Sender<()>> {
    let (stop, stopped) = mpsc::channel::<()>();
    std::thread::Builder::new()
        .name("replaydb-flusher".into())
        .spawn(move || {
            while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(interval) {
                let Some(inner) = inner.upgrade() else { return };
                if inner.poisoned.load(Ordering::Acquire) {
                    return;
                }
                // Take the file under the lock, sync it outside: writers go
                // on while the disk works. A roll syncs the segment it seals
                // itself, so syncing an older tail here is harmless.
                let (file, path) = match inner.commit.lock() {
                    Ok(state) => (state.tail.file(), state.tail.path().to_path_buf()),
                    Err(_) => return,
                };
                if let Err(e) = file.sync_data() {
                    tracing::error!(path = %path.display(), error = %e, "background fdatasync failed; poisoning");
                    inner.poison(format!("fdatasync {}: {e}", path.display()));
                    return;
                }
                inner.counters.fsyncs.fetch_add(1, Ordering::Relaxed);
            }
        })?;
    Ok(stop)
}
