//! The seam between the engine and the log.
//!
//! The engine decides, numbers and group-commits; a [`Log`] keeps the
//! numbered records: append after an expected last LSN, make them
//! durable, hand them back from an LSN, follow new ones, and drop what is
//! wholly before an LSN. [`WalLog`] is the local write-ahead
//! log (segment files, CRC-checked records, fdatasync per group);
//! [`MemoryLog`] keeps records in memory, so the engine's logic can be
//! tested without files. A replicated log (NATS JetStream) fits the same
//! shape: `expected_last_lsn` is `Nats-Expected-Last-Sequence`.
//!
//! Nothing above this trait knows of segments or files: compaction,
//! backup and the log's statistics go through it.

#[cfg(feature = "jetstream")]
mod jetstream;
mod memory;

use std::fmt::Debug;
use std::path::Path;
use std::time::Duration;

use crate::error::Result;
use crate::wal::format::{EncodedBatch, RecordView};

pub use crate::wal::WalLog;
#[cfg(feature = "jetstream")]
pub use jetstream::JetStreamLog;
pub use memory::MemoryLog;

/// A record to append: a batch, numbered.
#[derive(Debug, Clone, Copy)]
pub struct LogRecord<'a> {
    /// The encoded batch.
    pub batch: &'a EncodedBatch,
    /// LSN of its first event.
    pub first_lsn: u64,
    /// Stream version of its first event.
    pub first_version: u64,
}

impl LogRecord<'_> {
    /// LSN of its last event.
    pub fn last_lsn(&self) -> u64 {
        self.first_lsn + u64::from(self.batch.count) - 1
    }
}

/// What [`Log::truncate_before`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Truncated {
    /// The first LSN the log holds now.
    pub first_lsn: u64,
    /// What was removed, for people (segment files, say).
    pub removed: Vec<String>,
}

/// Counts describing a log.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct LogStats {
    /// Which log ("wal", "memory").
    pub kind: &'static str,
    /// Records (batches) held.
    pub records: u64,
    /// Events held.
    pub events: u64,
    /// Bytes held (records and their headers).
    pub bytes: u64,
    /// Files (segments) it keeps, 0 for a log without files.
    pub files: u64,
    /// First LSN held (`last_lsn + 1` when it holds nothing).
    pub first_lsn: u64,
    /// Last LSN appended.
    pub last_lsn: u64,
    /// Last LSN known durable.
    pub durable_lsn: u64,
    /// fsync and fdatasync calls since open.
    pub syncs: u64,
}

/// [`Log::wait_past`] for a log whose tail is `state` under a lock, told
/// of growth on `grew`: waits until `last(state)` is past `lsn` or
/// `timeout` passes; the last LSN.
fn wait_past<T>(
    state: &std::sync::Mutex<T>,
    grew: &std::sync::Condvar,
    lsn: u64,
    timeout: Duration,
    last: impl Fn(&T) -> u64,
) -> u64 {
    let deadline = std::time::Instant::now() + timeout;
    let mut s = state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    while last(&s) <= lsn {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            break;
        }
        s = grew
            .wait_timeout(s, left)
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .0;
    }
    last(&s)
}

/// The log under a database. See the module docs.
///
/// Appends come from one writer at a time (the engine's commit leader);
/// `sync`, reads and statistics may come from any thread meanwhile.
pub trait Log: Send + Sync + Debug + 'static {
    /// First LSN the log holds; `last_lsn() + 1` when it holds nothing.
    fn first_lsn(&self) -> u64;

    /// LSN of the last record appended (0 for an empty log).
    fn last_lsn(&self) -> u64;

    /// LSN up to which appends are known durable.
    fn durable_lsn(&self) -> u64;

    /// Appends `records`, numbered from `expected_last_lsn + 1` on with no
    /// gap, in one write where the log can. Fails without appending
    /// anything if the log's last LSN is not `expected_last_lsn`. Not
    /// durable until [`Log::sync`].
    fn append(&self, expected_last_lsn: u64, records: &[LogRecord<'_>]) -> Result<()>;

    /// Makes everything appended so far durable; returns the LSN durable
    /// now. A failed sync fails every later one (what was lost is unknown).
    fn sync(&self) -> Result<u64>;

    /// Calls `visit` with every record from the one holding `from_lsn` on,
    /// in order, each checked, until it returns `false`.
    fn read(
        &self,
        from_lsn: u64,
        visit: &mut dyn FnMut(&RecordView<'_>) -> Result<bool>,
    ) -> Result<()>;

    /// Waits until the log's last LSN is past `lsn`, or `timeout` passes;
    /// returns the last LSN. What a follower of a shared log uses.
    fn wait_past(&self, lsn: u64, timeout: Duration) -> u64;

    /// Removes what lies wholly before `lsn` (where the log can: the WAL
    /// removes whole segments, never the one being written).
    fn truncate_before(&self, lsn: u64) -> Result<Truncated>;

    /// Copies what the log holds up to `last_lsn` (at least) into the
    /// database directory `dest_dir`, durably, while appends go on.
    /// Returns the last LSN the copy holds.
    fn backup(&self, dest_dir: &Path, last_lsn: u64) -> Result<u64>;

    /// Counts.
    fn stats(&self) -> LogStats;

    /// Whether other databases append to this log too (a JetStream
    /// stream that several nodes share). The engine then follows the log:
    /// it folds what others appended into its store before it decides,
    /// takes a refused append ([`Error::LogConflict`](crate::Error)) as a
    /// race lost (catches up, decides again, retries), and never
    /// truncates the log at its own checkpoints.
    fn is_shared(&self) -> bool {
        false
    }

    /// The largest record payload the log can take, if it is less than
    /// what the database's options allow (a JetStream server's payload
    /// limit): the database refuses larger appends up front with
    /// [`Error::RecordTooLarge`](crate::Error).
    fn record_bytes_limit(&self) -> Option<u64> {
        None
    }
}
