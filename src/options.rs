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

/// Where the log lives.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum LogKind {
    /// The local write-ahead log in `DIR/wal` (the default).
    #[default]
    Wal,
    /// A log and a store in memory: nothing touches the disk and nothing
    /// survives the process. For tests of the engine, and scratch data.
    Memory,
    /// The log on a NATS JetStream stream (feature `jetstream`); the store
    /// stays in `DIR`. An append is acknowledged once the cluster has
    /// stored it on its replicas; the servers must run with
    /// `sync_interval: always` for that to survive a power loss (see
    /// docs/DESIGN.md). One database writes a stream at a time.
    JetStream {
        /// The servers, `nats://host:port`.
        servers: Vec<String>,
        /// The stream (created with `replicas` replicas if missing).
        stream: String,
        /// Replicas of a stream it creates (3 for a cluster that must
        /// survive losing one server).
        replicas: usize,
    },
}

/// Options for [`Db::open`](crate::Db::open).
///
/// ```
/// use replaydb::{Durability, Options};
/// let opts = Options::default()
///     .durability(Durability::Buffered { interval: std::time::Duration::from_millis(10) });
/// assert_eq!(opts.segment_bytes_max, None); // the database's own, 64 MiB when new
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Options {
    /// When appends are acknowledged.
    pub durability: Durability,
    /// For a new database only: a segment is sealed and a new one started
    /// once the next record would take it past this size. `None`: 64 MiB.
    /// A database keeps the size it was created with; another value at a
    /// later open is ignored with a warning.
    pub segment_bytes_max: Option<u64>,
    /// Largest encoded batch accepted on append and read back from disk.
    /// Default 16 MiB.
    pub record_bytes_max: u64,
    /// Take a checkpoint (one durable commit of the store, then the log
    /// behind the previous checkpoint is deleted) once this many records
    /// were applied since the last one; 0: never by count. Default 100 000.
    pub checkpoint_every_records: u64,
    /// The same, once this many bytes of records were applied; 0: never by
    /// size. Default 64 MiB, so the log stays within a few segments.
    pub checkpoint_every_bytes: u64,
    /// The same, once this long has passed since the last one with
    /// something applied; `None`: never by time. Default 30 s.
    pub checkpoint_every: Option<Duration>,
    /// Memory the store's page cache may use. Default 32 MiB.
    pub store_cache_bytes: usize,
    /// A store up to this size is checked whole at open (redb's integrity
    /// check, run against an overlay so the file is never changed); a
    /// larger one only by `replaydb verify`, since the check reads every
    /// page (about 190 ms for a 285 MB store). Default 64 MiB.
    pub store_check_on_open_bytes_max: u64,
    /// Where the log lives: the local WAL (default) or memory.
    pub log: LogKind,
    /// Acknowledge a group only once the store has applied it (and taken
    /// any checkpoint it made due). Off by default: appends never wait for
    /// the store. On, every I/O call happens in one order, which the
    /// power-loss simulation needs to replay a seed exactly.
    pub synchronous_apply: bool,
    /// The file system under the database: the operating system's by
    /// default; a `SimDisk` (feature `simulation`) in crash tests.
    pub storage: Arc<dyn Storage>,
}

/// The segment size of a new database unless its options say otherwise.
pub const SEGMENT_BYTES_DEFAULT: u64 = 64 << 20;
/// Smallest segment size accepted: a header and one small record.
pub const SEGMENT_BYTES_MIN: u64 = 4096;
/// Largest segment size accepted: offsets in record headers are `u32`.
pub const SEGMENT_BYTES_LIMIT: u64 = u32::MAX as u64;
/// Largest record size accepted: lengths are `u32` on disk.
pub const RECORD_BYTES_LIMIT: u64 = u32::MAX as u64;

/// A builder: each setter takes and returns the options, so new fields
/// can come without breaking a caller.
///
/// ```
/// use replaydb::{Durability, Options};
/// let o = Options::default()
///     .durability(Durability::Buffered { interval: std::time::Duration::from_millis(10) })
///     .checkpoint_every_records(0);
/// assert_eq!(o.checkpoint_every_records, 0);
/// ```
impl Options {
    /// Sets [`Options::durability`]: When appends are acknowledged.
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Sets [`Options::segment_bytes_max`]: For a new database only: the segment size (`None`: 64 MiB).
    pub fn segment_bytes_max(mut self, segment_bytes_max: Option<u64>) -> Self {
        self.segment_bytes_max = segment_bytes_max;
        self
    }

    /// Sets [`Options::record_bytes_max`]: The largest encoded batch accepted on append and read back.
    pub fn record_bytes_max(mut self, record_bytes_max: u64) -> Self {
        self.record_bytes_max = record_bytes_max;
        self
    }

    /// Sets [`Options::checkpoint_every_records`]: Checkpoint after this many records applied (0: never by count).
    pub fn checkpoint_every_records(mut self, checkpoint_every_records: u64) -> Self {
        self.checkpoint_every_records = checkpoint_every_records;
        self
    }

    /// Sets [`Options::checkpoint_every_bytes`]: Checkpoint after this many bytes applied (0: never by size).
    pub fn checkpoint_every_bytes(mut self, checkpoint_every_bytes: u64) -> Self {
        self.checkpoint_every_bytes = checkpoint_every_bytes;
        self
    }

    /// Sets [`Options::checkpoint_every`]: Checkpoint after this long with something applied (`None`: never by time).
    pub fn checkpoint_every(mut self, checkpoint_every: Option<Duration>) -> Self {
        self.checkpoint_every = checkpoint_every;
        self
    }

    /// Sets [`Options::store_cache_bytes`]: Memory the store's page cache may use.
    pub fn store_cache_bytes(mut self, store_cache_bytes: usize) -> Self {
        self.store_cache_bytes = store_cache_bytes;
        self
    }

    /// Sets [`Options::store_check_on_open_bytes_max`]: A store up to this size is checked whole at open.
    pub fn store_check_on_open_bytes_max(mut self, store_check_on_open_bytes_max: u64) -> Self {
        self.store_check_on_open_bytes_max = store_check_on_open_bytes_max;
        self
    }

    /// Sets [`Options::log`]: Where the log lives.
    pub fn log(mut self, log: LogKind) -> Self {
        self.log = log;
        self
    }

    /// Sets [`Options::synchronous_apply`]: Acknowledge a group only once the store has applied it.
    pub fn synchronous_apply(mut self, synchronous_apply: bool) -> Self {
        self.synchronous_apply = synchronous_apply;
        self
    }

    /// Sets [`Options::storage`]: The file system under the database.
    pub fn storage(mut self, storage: Arc<dyn Storage>) -> Self {
        self.storage = storage;
        self
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            durability: Durability::Immediate,
            segment_bytes_max: None,
            record_bytes_max: 16 << 20,
            checkpoint_every_records: 100_000,
            checkpoint_every_bytes: 64 << 20,
            checkpoint_every: Some(Duration::from_secs(30)),
            store_cache_bytes: 32 << 20,
            store_check_on_open_bytes_max: 64 << 20,
            log: LogKind::Wal,
            synchronous_apply: false,
            storage: crate::storage::os(),
        }
    }
}

impl Options {
    /// Checks the options are usable.
    pub(crate) fn validate(&self) -> crate::Result<()> {
        let bad = |reason: String| Err(crate::Error::InvalidArgument { op: "open", reason });
        if let Some(n) = self.segment_bytes_max
            && !(SEGMENT_BYTES_MIN..=SEGMENT_BYTES_LIMIT).contains(&n)
        {
            return bad(format!(
                "segment_bytes_max must be between {SEGMENT_BYTES_MIN} and {SEGMENT_BYTES_LIMIT}"
            ));
        }
        if self.record_bytes_max == 0 || self.record_bytes_max > RECORD_BYTES_LIMIT {
            return bad(format!(
                "record_bytes_max must be between 1 and {RECORD_BYTES_LIMIT}"
            ));
        }
        if self.checkpoint_every.is_some_and(|d| d.is_zero()) {
            return bad("checkpoint_every must be above zero (None: never by time)".into());
        }
        if self.store_cache_bytes < (1 << 20) {
            return bad("store_cache_bytes must be at least 1 MiB".into());
        }
        if let Durability::Buffered { interval } = self.durability
            && interval.is_zero()
        {
            return bad("a Buffered interval must be above zero".into());
        }
        Ok(())
    }
}
