//! The one error type of the crate.
//!
//! Every variant names what failed and where: the operation, the path and,
//! for on-disk problems, the byte offset. Callers match on variants; the
//! `Display` text is for humans and logs.

use std::io;
use std::path::PathBuf;

use crate::stream::ExpectedVersion;

/// Result alias used throughout replaydb.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in replaydb.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system call failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What replaydb was doing ("open segment", "fdatasync", ...).
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// Another handle, in this process or another one, holds the database.
    #[error("database is locked: {path} is held by {}", holder(*.pid))]
    Locked {
        /// The lock file.
        path: PathBuf,
        /// The pid recorded by the holder, if it could be read.
        pid: Option<u32>,
    },

    /// Bytes on disk fail a check. Nothing has been deleted; `replaydb repair`
    /// is the explicit way to cut the damage.
    #[error("corrupt {segment} at byte {offset}: {reason}")]
    Corrupt {
        /// The file holding the bad bytes.
        segment: PathBuf,
        /// Byte offset of the first bad byte range within `segment`.
        offset: u64,
        /// What check failed.
        reason: String,
    },

    /// A file carries a format version this build does not read.
    #[error(
        "{path}: format version {found} is not supported (this build reads versions up to {supported})"
    )]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// The version found in its header.
        found: u32,
        /// The newest version this build reads (and the one it writes).
        supported: u32,
    },

    /// An optimistic-concurrency check failed; nothing was appended.
    #[error(
        "wrong expected version for stream {stream:?}: expected {expected}, stream is at {actual}"
    )]
    WrongExpectedVersion {
        /// The stream appended to.
        stream: String,
        /// What the caller expected.
        expected: ExpectedVersion,
        /// The stream's version when the append was decided.
        actual: u64,
    },

    /// A stream name fails validation.
    #[error("invalid stream name {name:?}: {reason}")]
    InvalidStreamName {
        /// The rejected name.
        name: String,
        /// Why it was rejected.
        reason: &'static str,
    },

    /// The log holds a valid record longer than `Options::record_bytes_max`:
    /// it was written with a larger limit. Nothing is cut; reopen with a
    /// limit at least as large.
    #[error("{segment} at byte {offset}: {reason}")]
    RecordAboveLimit {
        /// The segment holding it.
        segment: PathBuf,
        /// Its offset.
        offset: u64,
        /// Its size and the limit.
        reason: String,
    },

    /// The store holds something that fails a check (a value's CRC, its
    /// meta, redb's own checks), or redb failed otherwise.
    #[error("{op} {path}: {reason}")]
    Store {
        /// What replaydb was doing.
        op: &'static str,
        /// The store file.
        path: PathBuf,
        /// What went wrong, and where in it.
        reason: String,
    },

    /// The store cannot be used (damaged, or missing), no earlier checkpoint
    /// in it is usable, and the log no longer starts at LSN 1 to rebuild
    /// it. Nothing has been changed.
    #[error(
        "the store {path} cannot be used ({reason}), and the log starts at LSN {log_first_lsn}, so it cannot be rebuilt; restore a backup"
    )]
    StoreUnusable {
        /// The store file.
        path: PathBuf,
        /// Why it cannot be used.
        reason: String,
        /// The first LSN the log holds.
        log_first_lsn: u64,
    },

    /// The log's last LSN is not the one an append expected: another
    /// writer appended first.
    #[error("the log ends at LSN {actual_last_lsn}, not at the expected {expected_last_lsn}")]
    LogConflict {
        /// What the append expected.
        expected_last_lsn: u64,
        /// Where the log ends.
        actual_last_lsn: u64,
        /// Records of the append, from its first, that the log did store
        /// before another writer's came between (a shared log, whose
        /// records are published one after another; 0 on any other).
        stored_records: u64,
    },

    /// A snapshot file of release 0.1 could not be read.
    #[error("{op} {path}: {reason}")]
    Snapshot {
        /// What replaydb was doing.
        op: &'static str,
        /// The snapshot file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },

    /// A view's state in the store has another schema version than the
    /// code (or the view is new, or far behind), and the store's history no
    /// longer starts at LSN 1 to rebuild it.
    #[error(
        "view {view:?}: the store holds schema version {snapshot_version}, the code has {code_version}, and the history no longer starts at LSN 1 to rebuild it (it starts at {log_first_lsn})"
    )]
    ViewVersion {
        /// The view.
        view: String,
        /// The version in the snapshot (0: the view is not in it).
        snapshot_version: u32,
        /// The version of the registered view.
        code_version: u32,
        /// The first LSN the log holds.
        log_first_lsn: u64,
    },

    /// Every snapshot is damaged and the log cannot rebuild the state.
    /// Nothing has been deleted.
    #[error("no usable snapshot, and the log starts at LSN {log_first_lsn}: {details}")]
    NoUsableSnapshot {
        /// The first LSN the log holds.
        log_first_lsn: u64,
        /// Each snapshot tried and why it failed.
        details: String,
    },

    /// The history no longer holds the requested position: a stream's
    /// retention removed it, or the database was migrated from a compacted
    /// one. Restart from the views, or from `oldest_available`.
    #[error("{what} was removed from the history; the oldest available is {oldest_available}")]
    Compacted {
        /// What was asked for ("LSN 5", "stream s version 3").
        what: String,
        /// The oldest LSN (or stream version) still available.
        oldest_available: u64,
    },

    /// A command's decision refused; the boxed error is the decision's own
    /// (the registry's `RegistryError`, say). Nothing was appended.
    #[error("{0}")]
    Rejected(#[source] Box<dyn std::error::Error + Send + Sync>),

    /// A caller passed an argument outside what the operation accepts.
    #[error("{op}: {reason}")]
    InvalidArgument {
        /// The operation called.
        op: &'static str,
        /// What was wrong.
        reason: String,
    },

    /// A batch encodes to more than `Options::record_size_bytes_max`.
    #[error(
        "append to {stream:?}: batch encodes to {size_bytes} bytes, above the limit of {limit_bytes}"
    )]
    RecordTooLarge {
        /// The stream appended to.
        stream: String,
        /// Encoded size of the batch.
        size_bytes: u64,
        /// The configured limit.
        limit_bytes: u64,
    },

    /// The view an operation needs is not registered on this handle
    /// (open the database with it: `KvStore::open`, `Db::open_with_views`).
    #[error("{op}: the {view} view is not registered on this database handle")]
    ViewNotRegistered {
        /// The operation called.
        op: &'static str,
        /// The view it needs ("kv", "runtime", "registry").
        view: &'static str,
    },

    /// The database was closed under the operation (its last handle went).
    #[error("{op}: the database was closed")]
    Closed {
        /// The operation called.
        op: &'static str,
    },

    /// Another operation that excludes this one is running; retry after it.
    #[error("{op}: {running} is running; retry after it")]
    InProgress {
        /// The operation called.
        op: &'static str,
        /// What runs ("a backup").
        running: &'static str,
    },

    /// Called from inside [`Db::view`](crate::Db::view) or a command's
    /// decision, where it would wait for itself; use what the callback is
    /// given instead.
    #[error(
        "{op}: called from inside Db::view or a command's decision, where it would wait for itself; read what the callback is given instead"
    )]
    Reentrant {
        /// The operation called.
        op: &'static str,
    },

    /// The operation is not possible on this kind of database (a backup
    /// of one in memory).
    #[error("{op}: {reason}")]
    Unsupported {
        /// The operation called.
        op: &'static str,
        /// Why not.
        reason: String,
    },

    /// A value could not be encoded (a record or a row of a view).
    #[error("{op}: could not encode: {reason}")]
    Encode {
        /// What was being encoded.
        op: &'static str,
        /// The encoder's message.
        reason: String,
    },

    /// Something that must not happen did (a task that panicked, a
    /// decision that panicked, a broken internal promise): a bug, reported
    /// rather than hidden; nothing half-done was committed.
    #[error("{op}: internal error: {reason}")]
    Internal {
        /// What was being done.
        op: &'static str,
        /// What went wrong.
        reason: String,
    },

    /// The peer on a database's socket broke the protocol (a frame that
    /// is not this protocol's, a body that does not decode). The
    /// connection is closed.
    #[error("socket {socket}: protocol error: {reason}")]
    Protocol {
        /// The socket.
        socket: PathBuf,
        /// What was wrong, and where.
        reason: String,
    },

    /// A server's limit was hit (connections, requests in flight on one
    /// connection); nothing was done. Retry later, or with fewer.
    #[error("socket {socket}: the server's limit of {max} {limit} is reached")]
    Busy {
        /// The socket.
        socket: PathBuf,
        /// Which limit ("connections", "requests in flight").
        limit: &'static str,
        /// Its value.
        max: u64,
    },

    /// The connection to the database's server was lost and could not be
    /// made again in time. A request that was in flight may or may not
    /// have been done (an append's outcome is unknown: read to find out).
    #[error("socket {socket}: disconnected from the server: {reason}")]
    Disconnected {
        /// The socket.
        socket: PathBuf,
        /// What happened.
        reason: String,
    },

    /// The server refused this peer (its uid is not the server's).
    #[error("socket {socket}: refused: {reason}")]
    PeerRefused {
        /// The socket.
        socket: PathBuf,
        /// Why.
        reason: String,
    },

    /// A write or fsync failed earlier; the handle refuses all further work.
    /// Reopen the database to recover from what is on disk.
    #[error(
        "database handle is poisoned after an earlier write or fsync failure ({cause}); reopen it"
    )]
    Poisoned {
        /// The failure that poisoned the handle.
        cause: String,
    },
}

fn holder(pid: Option<u32>) -> String {
    match pid {
        Some(pid) => format!("pid {pid}"),
        None => "an unknown process".to_string(),
    }
}

impl Error {
    /// A decision's refusal, `e`, as [`Error::Rejected`].
    pub fn rejected(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Error::Rejected(Box::new(e))
    }

    /// The decision's own refusal back, if this is an [`Error::Rejected`]
    /// holding an `E`; otherwise the error itself.
    pub fn into_rejected<E: std::error::Error + 'static>(self) -> std::result::Result<E, Error> {
        match self {
            Error::Rejected(e) => match e.downcast::<E>() {
                Ok(e) => Ok(*e),
                Err(other) => Err(Error::Rejected(other)),
            },
            other => Err(other),
        }
    }

    /// Builds an [`Error::Io`].
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// The same failure again, for a second caller it fails (errors are
    /// not `Clone`: an I/O error keeps its kind and message).
    pub(crate) fn again(&self) -> Self {
        match self {
            Error::Io { op, path, source } => Error::Io {
                op,
                path: path.clone(),
                source: io::Error::new(source.kind(), source.to_string()),
            },
            Error::LogConflict {
                expected_last_lsn,
                actual_last_lsn,
                stored_records,
            } => Error::LogConflict {
                expected_last_lsn: *expected_last_lsn,
                actual_last_lsn: *actual_last_lsn,
                stored_records: *stored_records,
            },
            Error::Poisoned { cause } => Error::Poisoned {
                cause: cause.clone(),
            },
            other => Error::Internal {
                op: "append",
                reason: other.to_string(),
            },
        }
    }

    /// Builds an [`Error::Corrupt`].
    pub(crate) fn corrupt(
        segment: impl Into<PathBuf>,
        offset: u64,
        reason: impl Into<String>,
    ) -> Self {
        Error::Corrupt {
            segment: segment.into(),
            offset,
            reason: reason.into(),
        }
    }
}
