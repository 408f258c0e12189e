//! redb's storage backend over a [`StorageFile`], so the store goes
//! through the same seam as the WAL (and the simulated disk sees it).
//!
//! A durable redb commit writes every page dirtied since the last one and
//! then syncs. Issued at once, that is megabytes in the device's queue,
//! and a WAL fdatasync arriving meanwhile waits behind all of it. So the
//! backend remembers what was written since its last sync and, before the
//! sync, writes it out [`WRITE_BACK_BYTES`] at a time, waiting for each
//! piece: an appender's fsync waits for one piece at most.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use super::StorageFile;

/// Dirty bytes written out per piece before a sync.
pub(crate) const WRITE_BACK_BYTES: u64 = 1 << 20;
/// Write ranges remembered between syncs before they are merged into one.
const DIRTY_RANGES_MAX: usize = 1 << 20;

/// A store (or legacy snapshot) file as redb sees it. No locking: the
/// database directory's lock already excludes a second writer.
#[derive(Debug)]
pub(crate) struct RedbBackend {
    file: Arc<dyn StorageFile>,
    /// `(offset, len)` of writes since the last sync.
    dirty: Mutex<Vec<(u64, u64)>>,
    /// Set: every write, resize and sync fails (a poisoned handle's store).
    frozen: Arc<AtomicBool>,
}

impl RedbBackend {
    pub(crate) fn new(file: Arc<dyn StorageFile>) -> RedbBackend {
        RedbBackend {
            file,
            dirty: Mutex::new(Vec::new()),
            frozen: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The switch that makes this backend refuse writes.
    pub(crate) fn frozen(&self) -> Arc<AtomicBool> {
        self.frozen.clone()
    }

    fn check_frozen(&self) -> io::Result<()> {
        if self.frozen.load(Ordering::Acquire) {
            return Err(io::Error::other(
                "the database handle is poisoned: its store takes no more writes",
            ));
        }
        Ok(())
    }

    /// Writes the dirty ranges out in pieces of about [`WRITE_BACK_BYTES`].
    fn write_back(&self) -> io::Result<()> {
        let mut ranges =
            std::mem::take(&mut *self.dirty.lock().unwrap_or_else(PoisonError::into_inner));
        if ranges.is_empty() {
            return Ok(());
        }
        ranges.sort_unstable();
        let first = ranges.first().map_or(0, |r| r.0);
        let (mut start, mut end, mut bytes) = (first, first, 0u64);
        for (offset, len) in ranges {
            if bytes >= WRITE_BACK_BYTES {
                self.file.write_back(start, end - start)?;
                (start, bytes) = (offset, 0);
            }
            end = end.max(offset + len);
            bytes += len;
        }
        self.file.write_back(start, end.saturating_sub(start))
    }
}

impl redb::StorageBackend for RedbBackend {
    fn len(&self) -> io::Result<u64> {
        self.file.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.file.read_exact_at(out, offset)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.check_frozen()?;
        self.file.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.check_frozen()?;
        self.write_back()?;
        self.file.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.check_frozen()?;
        self.file.write_all_at(data, offset)?;
        let mut dirty = self.dirty.lock().unwrap_or_else(PoisonError::into_inner);
        dirty.push((offset, data.len() as u64));
        if dirty.len() > DIRTY_RANGES_MAX {
            // Bounded memory: one range over all of them writes back the
            // same pages (clean ones cost no I/O).
            let lo = dirty.iter().map(|r| r.0).min().unwrap_or(0);
            let hi = dirty.iter().map(|r| r.0 + r.1).max().unwrap_or(0);
            dirty.clear();
            dirty.push((lo, hi - lo));
        }
        Ok(())
    }
}
