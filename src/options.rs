//! How a database is opened.

use std::sync::Arc;
use std::time::Duration;

use crate::storage::Storage;

/// When an append is acknowledged, and so what a crash can lose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Acknowledge after the group's records are fdatasynced. Loses nothing
    /// acknowledged, on process crash or power loss. The default.
    Immediate,
    /// Acknowledge after the records are written to the OS; fdatasync every
    /// `interval` in the background. A process crash loses nothing (the
    /// kernel has the bytes); power loss or a kernel crash loses at most
    /// the appends acknowledged in the last `interval` (plus the time of
    /// one fdatasync), always as a suffix of the log and whole batches.
    Buffered {
        /// Time between background fdatasyncs.
        interval: Duration,
    },
}

/// Options for [`Db::open`](crate::Db::open).
///
/// ```
/// use replaydb::{Durability, Options};
/// let opts = Options {
///     durability: Durability::Buffered { interval: std::time::Duration::from_millis(10) },
///     ..Options::default()
/// };
/// assert_eq!(opts.segment_bytes_max, 64 << 20);
/// ```
#[derive(Clone, Debug)]
pub struct Options {
    /// When appends are acknowledged.
    pub durability: Durability,
    /// A segment is sealed and a new one started once the next record
    /// would take it past this size. Default 64 MiB.
    pub segment_bytes_max: u64,
    /// Largest encoded batch accepted on append and read back from disk.
    /// Default 16 MiB.
    pub record_bytes_max: u64,
    /// Committed batches buffered in memory for live subscribers; one that
    /// falls further behind continues from disk. Default 4096.
    pub subscriber_buffer_batches: usize,
    /// Take a snapshot (and compact) once this many records were committed
    /// since the last one; 0: never by count. Default 100 000.
    pub snapshot_every_records: u64,
    /// Take a snapshot (and compact) once this many WAL bytes were written
    /// since the last one; 0: never by size. Default 256 MiB.
    pub snapshot_every_bytes: u64,
    /// The file system under the database: the operating system's by
    /// default; a [`SimDisk`](crate::storage::SimDisk) in crash tests.
    pub storage: Arc<dyn Storage>,
}

/// Smallest segment size accepted: a header and one small record.
pub const SEGMENT_BYTES_MIN: u64 = 4096;
/// Largest segment size accepted: offsets in record headers are `u32`.
pub const SEGMENT_BYTES_LIMIT: u64 = u32::MAX as u64;
/// Largest record size accepted: lengths are `u32` on disk.
pub const RECORD_BYTES_LIMIT: u64 = u32::MAX as u64;

impl Default for Options {
    fn default() -> Self {
        Options {
            durability: Durability::Immediate,
            segment_bytes_max: 64 << 20,
            record_bytes_max: 16 << 20,
            subscriber_buffer_batches: 4096,
            snapshot_every_records: 100_000,
            snapshot_every_bytes: 256 << 20,
            storage: crate::storage::os(),
        }
    }
}

impl Options {
    /// Checks the options are usable.
    pub(crate) fn validate(&self) -> crate::Result<()> {
        let bad = |reason: String| Err(crate::Error::InvalidArgument { op: "open", reason });
        if !(SEGMENT_BYTES_MIN..=SEGMENT_BYTES_LIMIT).contains(&self.segment_bytes_max) {
            return bad(format!(
                "segment_bytes_max must be between {SEGMENT_BYTES_MIN} and {SEGMENT_BYTES_LIMIT}"
            ));
        }
        if self.record_bytes_max == 0 || self.record_bytes_max > RECORD_BYTES_LIMIT {
            return bad(format!(
                "record_bytes_max must be between 1 and {RECORD_BYTES_LIMIT}"
            ));
        }
        if self.subscriber_buffer_batches == 0 {
            return bad("subscriber_buffer_batches must be at least 1".into());
        }
        if let Durability::Buffered { interval } = self.durability
            && interval.is_zero()
        {
            return bad("a Buffered interval must be above zero".into());
        }
        Ok(())
    }
}
