//! The store: one redb database holding everything the log derives.
//!
//! ```text
//! DIR/store.redb
//!   replaydb_meta            magic, format version, applied LSN, history start, checkpoints
//!   replaydb_history         first LSN -> a stored batch (codec::HistoryRow)
//!   replaydb_streams         (stream, 0) -> version, first held version, last LSN, retention
//!                            (stream, first version) -> first LSN of the batch
//!   replaydb_aged_streams    stream -> max age in ms (streams that age out)
//!   replaydb_views           view -> schema version, applied LSN
//!   view:<view>:<table>      a view's own tables
//! ```
//!
//! It is maintained incrementally: each applied group is one redb write
//! transaction, committed without an fsync; a checkpoint is one durable
//! commit (with the LSN it covers in the same transaction) and a persistent
//! savepoint, so it costs what changed since the last one, never the whole
//! state. Open is the store at its last durable checkpoint plus the log
//! after it. docs/FORMAT.md has the bytes; docs/DESIGN.md the reasons.

pub(crate) mod codec;
mod history;
pub(crate) mod migrate;
pub(crate) mod open;
mod write;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use crate::error::{Error, Result};
use crate::storage::{RedbBackend, StorageFile};

pub(crate) use history::StoreRead;
pub use open::StoreReport;
pub(crate) use open::{open_store, plan_store, read_meta};
pub(crate) use write::{BatchRef, StoreWrite};

/// The store format this build reads and writes.
pub const STORE_FORMAT_VERSION: u32 = 1;
/// Value of the `magic` key of the meta table.
pub const STORE_MAGIC: &[u8] = b"replaydb-store";
/// Persistent savepoints kept: the newest checkpoint's and the one before,
/// which a damaged newest checkpoint falls back to (a store's creation
/// makes the first).
pub const CHECKPOINTS_KEPT: usize = 2;

pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("replaydb_meta");
pub(crate) const HISTORY: TableDefinition<u64, &[u8]> = TableDefinition::new("replaydb_history");
/// A stream's meta under `(stream, 0)`, and the first LSN of each of its
/// batches under `(stream, first version)`: one table, so a change to a
/// stream touches one leaf page for both (a checkpoint writes what
/// changed, page by page).
pub(crate) const STREAMS: TableDefinition<(&str, u64), &[u8]> =
    TableDefinition::new("replaydb_streams");
pub(crate) const AGED_STREAMS: TableDefinition<&str, u64> =
    TableDefinition::new("replaydb_aged_streams");
pub(crate) const VIEWS: TableDefinition<&str, &[u8]> = TableDefinition::new("replaydb_views");

/// Meta keys.
pub(crate) const META_MAGIC: &str = "magic";
pub(crate) const META_FORMAT_VERSION: &str = "format_version";
/// LSN of the last event the store reflects.
pub(crate) const META_APPLIED_LSN: &str = "applied_lsn";
/// The first LSN whose history the store holds (1, unless migrated from a
/// compacted database).
pub(crate) const META_HISTORY_FROM_LSN: &str = "history_from_lsn";
/// The LSN the checkpoint before the newest one covers: the log is kept
/// from the LSN after it, for the fallback.
pub(crate) const META_PREVIOUS_CHECKPOINT_LSN: &str = "previous_checkpoint_lsn";

/// Streams ever written (or given a retention).
pub(crate) const META_STREAM_COUNT: &str = "stream_count";

/// The key of a stream's meta in [`STREAMS`].
pub(crate) fn meta_key(stream: &str) -> (&str, u64) {
    (stream, 0)
}

/// A batch's first LSN as stored in [`STREAMS`].
pub(crate) fn lsn_value(lsn: u64) -> [u8; 8] {
    lsn.to_le_bytes()
}

/// Reads a batch's first LSN back from [`STREAMS`].
pub(crate) fn decode_lsn_value(path: &Path, stream: &str, version: u64, v: &[u8]) -> Result<u64> {
    <[u8; 8]>::try_from(v).map(u64::from_le_bytes).map_err(|_| {
        damaged(
            path,
            format!("stream {stream:?} version {version}: a batch's LSN is not 8 bytes"),
        )
    })
}

/// Prefix of every view table's name.
pub(crate) fn view_table_prefix(view: &str) -> String {
    format!("view:{view}:")
}

/// A redb error: an I/O error from the device stays an I/O error (the
/// file may be fine, so recovery must not set it aside as damaged); a
/// read past the end (a truncated file) and anything else mean the file
/// is not usable as it is.
pub(crate) fn redb_err(op: &'static str, path: &Path, e: impl Into<redb::Error>) -> Error {
    match e.into() {
        redb::Error::Io(io)
            if !matches!(
                io.kind(),
                std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::InvalidData
            ) =>
        {
            Error::io(op, path, io)
        }
        other => Error::Store {
            op,
            path: path.to_path_buf(),
            reason: other.to_string(),
        },
    }
}

/// A value in the store that fails its check.
pub(crate) fn damaged(path: &Path, what: String) -> Error {
    Error::Store {
        op: "read store",
        path: path.to_path_buf(),
        reason: what,
    }
}

/// The open store.
#[derive(Debug)]
pub(crate) struct Store {
    pub(crate) db: redb::Database,
    pub(crate) path: PathBuf,
    /// Set: the backend refuses every write (see [`Store::freeze`]).
    frozen: Option<Arc<std::sync::atomic::AtomicBool>>,
}

impl Store {
    /// A redb database over `file`, through the storage seam.
    pub(crate) fn on_file(
        file: Arc<dyn StorageFile>,
        path: &Path,
        cache_bytes: usize,
    ) -> Result<Store> {
        let backend = RedbBackend::new(file);
        let frozen = backend.frozen();
        let db = crate::snapshot::guarded("open store", path, || {
            redb::Database::builder()
                .set_cache_size(cache_bytes)
                .create_with_backend(backend)
                .map_err(|e| redb_err("open store", path, e))
        })?;
        Ok(Store {
            db,
            path: path.to_path_buf(),
            frozen: Some(frozen),
        })
    }

    /// A store in memory, for a database whose log is in memory too.
    pub(crate) fn in_memory() -> Result<Store> {
        let path = PathBuf::from("<memory>");
        let db = redb::Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(|e| redb_err("create store", &path, e))?;
        let store = Store {
            db,
            path,
            frozen: None,
        };
        open::init_meta(&store, 1, 0)?;
        Ok(store)
    }

    /// A read transaction: what the last commit left, never blocking the
    /// writer.
    pub(crate) fn begin_read(&self) -> Result<StoreRead> {
        let tx = self
            .db
            .begin_read()
            .map_err(|e| redb_err("begin store read", &self.path, e))?;
        StoreRead::new(tx, self.path.clone())
    }

    /// A write transaction, committed without an fsync unless it is made a
    /// checkpoint.
    pub(crate) fn begin_write(&self) -> Result<StoreWrite<'_>> {
        let mut tx = self
            .db
            .begin_write()
            .map_err(|e| redb_err("begin store write", &self.path, e))?;
        tx.set_durability(redb::Durability::None)
            .map_err(|e| Error::Store {
                op: "begin store write",
                path: self.path.clone(),
                reason: e.to_string(),
            })?;
        Ok(StoreWrite::new(tx, &self.path))
    }

    /// A durable checkpoint of everything committed so far: a persistent
    /// savepoint of it (a way back for the checkpoints after it), its LSN
    /// recorded under `savepoint:<id>`, the savepoints before the kept
    /// ones deleted, all in one durable, quick-repair commit. Returns the
    /// LSN it covers and that of the oldest savepoint kept, the one the
    /// log must still reach back to.
    pub(crate) fn checkpoint(&self) -> Result<(u64, u64)> {
        let op = "checkpoint store";
        let mut tx = self
            .db
            .begin_write()
            .map_err(|e| redb_err(op, &self.path, e))?;
        tx.set_quick_repair(true);
        let sp = |e: redb::SavepointError| Error::Store {
            op,
            path: self.path.clone(),
            reason: e.to_string(),
        };
        // Before any table is opened: it captures the state as committed.
        let id = tx.persistent_savepoint().map_err(sp)?;
        let mut ids: Vec<u64> = tx
            .list_persistent_savepoints()
            .map_err(|e| redb_err(op, &self.path, e))?
            .collect();
        ids.sort_unstable();
        let doomed = ids.len().saturating_sub(CHECKPOINTS_KEPT);
        for old in ids.iter().take(doomed) {
            tx.delete_persistent_savepoint(*old).map_err(sp)?;
        }
        let (covered, oldest_kept) = {
            let mut meta = tx
                .open_table(META)
                .map_err(|e| redb_err(op, &self.path, e))?;
            for old in ids.iter().take(doomed) {
                meta.remove(savepoint_key(*old).as_str())
                    .map_err(|e| redb_err(op, &self.path, e))?;
            }
            let covered = read_u64(&meta, META_APPLIED_LSN, &self.path)?;
            meta.insert(savepoint_key(id).as_str(), &covered.to_le_bytes()[..])
                .map_err(|e| redb_err(op, &self.path, e))?;
            // The way back is the oldest savepoint kept: the log must still
            // hold everything after it. A savepoint whose LSN is unknown
            // keeps the whole log.
            let oldest = ids.get(doomed).copied().unwrap_or(id);
            let oldest_kept = match meta
                .get(savepoint_key(oldest).as_str())
                .map_err(|e| redb_err(op, &self.path, e))?
            {
                Some(v) => <[u8; 8]>::try_from(v.value())
                    .map(u64::from_le_bytes)
                    .unwrap_or(0),
                None => 0,
            };
            let oldest_kept = if oldest == id { covered } else { oldest_kept };
            meta.insert(META_PREVIOUS_CHECKPOINT_LSN, &oldest_kept.to_le_bytes()[..])
                .map_err(|e| redb_err(op, &self.path, e))?;
            (covered, oldest_kept)
        };
        crate::failpoint::hit("checkpoint.before_commit");
        tx.commit().map_err(|e| redb_err(op, &self.path, e))?;
        Ok((covered, oldest_kept))
    }

    /// No more writes reach the file: what a poisoned handle's store must
    /// not do (redb's close would otherwise make its uncheckpointed
    /// commits durable, which may hold events the log lost).
    pub(crate) fn freeze(&self) {
        if let Some(f) = &self.frozen {
            f.store(true, std::sync::atomic::Ordering::Release);
        }
    }
}

/// The meta key recording the LSN a persistent savepoint captured.
pub(crate) fn savepoint_key(id: u64) -> String {
    format!("savepoint:{id}")
}

/// The LSN of the checkpoint before the newest, as a reader sees it.
pub(crate) fn previous_checkpoint_lsn(r: &StoreRead) -> Result<u64> {
    let meta =
        r.tx.open_table(META)
            .map_err(|e| redb_err("read store meta", &r.path, e))?;
    read_u64(&meta, META_PREVIOUS_CHECKPOINT_LSN, &r.path)
}

/// A u64 meta value.
pub(crate) fn read_u64(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
    path: &Path,
) -> Result<u64> {
    let v = meta
        .get(key)
        .map_err(|e| redb_err("read store meta", path, e))?
        .ok_or_else(|| damaged(path, format!("store meta has no {key:?}")))?;
    let bytes: [u8; 8] = v
        .value()
        .try_into()
        .map_err(|_| damaged(path, format!("store meta {key:?} is not 8 bytes")))?;
    Ok(u64::from_le_bytes(bytes))
}
