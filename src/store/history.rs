//! Reading the store: stream versions and the history, through an MVCC
//! read transaction that sees one commit and never blocks the writer.
//!
//! Every row's CRC is checked on the way out, and a row is cross-checked
//! against the index entry that led to it.

use std::path::PathBuf;

use redb::{ReadTransaction, ReadableTable, ReadableTableMetadata};

use crate::error::{Error, Result};
use crate::store::codec::{self, HistoryRow, StreamMeta};
use crate::store::{
    HISTORY, META, META_APPLIED_LSN, META_HISTORY_FROM_LSN, META_STREAM_COUNT, STREAMS, damaged,
    decode_lsn_value, meta_key, read_u64, redb_err,
};
use crate::stream::{Event, EventRef};

/// An open store read transaction.
pub(crate) struct StoreRead {
    pub(crate) tx: ReadTransaction,
    pub(crate) path: PathBuf,
    applied_lsn: u64,
    history_from_lsn: u64,
}

impl StoreRead {
    pub(crate) fn new(tx: ReadTransaction, path: PathBuf) -> Result<StoreRead> {
        let (applied_lsn, history_from_lsn) = {
            let meta = tx
                .open_table(META)
                .map_err(|e| redb_err("read store meta", &path, e))?;
            (
                read_u64(&meta, META_APPLIED_LSN, &path)?,
                read_u64(&meta, META_HISTORY_FROM_LSN, &path)?,
            )
        };
        Ok(StoreRead {
            tx,
            path,
            applied_lsn,
            history_from_lsn,
        })
    }

    /// LSN of the last event this transaction sees.
    pub(crate) fn applied_lsn(&self) -> u64 {
        self.applied_lsn
    }

    /// The first LSN whose history the store was built with.
    pub(crate) fn history_from_lsn(&self) -> u64 {
        self.history_from_lsn
    }

    /// The store's meta of `stream`.
    pub(crate) fn stream_meta(&self, stream: &str) -> Result<Option<StreamMeta>> {
        let t = match self.tx.open_table(STREAMS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(redb_err("read stream meta", &self.path, e)),
        };
        let Some(v) = t
            .get(meta_key(stream))
            .map_err(|e| redb_err("read stream meta", &self.path, e))?
        else {
            return Ok(None);
        };
        codec::decode_stream_meta(stream, v.value())
            .map(Some)
            .map_err(|why| damaged(&self.path, format!("stream {stream:?} meta: {why}")))
    }

    /// Number of streams ever written.
    pub(crate) fn stream_count(&self) -> Result<u64> {
        let meta = self
            .tx
            .open_table(META)
            .map_err(|e| redb_err("read streams", &self.path, e))?;
        read_u64(&meta, META_STREAM_COUNT, &self.path)
    }

    /// Number of stored batches and the first LSN the history holds.
    pub(crate) fn history_extent(&self) -> Result<(u64, Option<u64>)> {
        let t = self
            .tx
            .open_table(HISTORY)
            .map_err(|e| redb_err("read history", &self.path, e))?;
        let rows = t
            .len()
            .map_err(|e| redb_err("read history", &self.path, e))?;
        let first = t
            .first()
            .map_err(|e| redb_err("read history", &self.path, e))?
            .map(|(k, _)| k.value());
        Ok((rows, first))
    }

    fn row_error(&self, lsn: u64, why: String) -> Error {
        damaged(&self.path, format!("history row at LSN {lsn}: {why}"))
    }

    /// Calls `visit` with every event the history holds from `from_lsn` on,
    /// in LSN order, until it returns `false`. Events that retention
    /// removed are not there; what the store never held (a log compacted
    /// before the store existed) is `Compacted`. Returns the events visited.
    pub(crate) fn replay(
        &self,
        from_lsn: u64,
        mut visit: impl FnMut(EventRef<'_>) -> bool,
    ) -> Result<u64> {
        let from_lsn = from_lsn.max(1);
        if from_lsn < self.history_from_lsn {
            return Err(Error::Compacted {
                what: format!("LSN {from_lsn}"),
                oldest_available: self.history_from_lsn,
            });
        }
        let op = "read history";
        let t = self
            .tx
            .open_table(HISTORY)
            .map_err(|e| redb_err(op, &self.path, e))?;
        // The row holding `from_lsn` starts at or before it.
        let start = t
            .range(..=from_lsn)
            .map_err(|e| redb_err(op, &self.path, e))?
            .next_back()
            .transpose()
            .map_err(|e| redb_err(op, &self.path, e))?
            .map_or(from_lsn, |(k, _)| k.value());
        let mut visited = 0;
        for entry in t.range(start..).map_err(|e| redb_err(op, &self.path, e))? {
            let (k, v) = entry.map_err(|e| redb_err(op, &self.path, e))?;
            let lsn = k.value();
            if lsn > self.applied_lsn {
                break;
            }
            let row =
                codec::decode_history_row(lsn, v.value()).map_err(|w| self.row_error(lsn, w))?;
            for (i, data) in row.events().enumerate() {
                let lsn = row.first_lsn + i as u64;
                if lsn < from_lsn {
                    continue;
                }
                visited += 1;
                let event = EventRef {
                    lsn,
                    stream: row.stream,
                    version: row.first_version + i as u64,
                    data,
                };
                if !visit(event) {
                    return Ok(visited);
                }
            }
        }
        Ok(visited)
    }

    /// Up to `limit` events of `stream` from version `from_version` on.
    /// Versions that retention removed are `Compacted`, naming the first
    /// version still held.
    pub(crate) fn read_stream(
        &self,
        stream: &str,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<Event>> {
        let mut out = Vec::new();
        self.visit_stream(stream, from_version, |e| {
            out.push(e.to_owned());
            out.len() < limit
        })?;
        Ok(out)
    }

    /// Calls `visit` with the events of `stream` from `from_version` on
    /// until it returns `false`.
    pub(crate) fn visit_stream(
        &self,
        stream: &str,
        from_version: u64,
        mut visit: impl FnMut(EventRef<'_>) -> bool,
    ) -> Result<()> {
        let from_version = from_version.max(1);
        let Some(meta) = self.stream_meta(stream)? else {
            return Ok(());
        };
        if from_version > meta.version {
            return Ok(());
        }
        if from_version < meta.first_held_version {
            return Err(Error::Compacted {
                what: format!("stream {stream:?} version {from_version}"),
                oldest_available: meta.first_held_version,
            });
        }
        let op = "read stream";
        let index = self
            .tx
            .open_table(STREAMS)
            .map_err(|e| redb_err(op, &self.path, e))?;
        let history = self
            .tx
            .open_table(HISTORY)
            .map_err(|e| redb_err(op, &self.path, e))?;
        let start = index
            .range((stream, 1u64)..=(stream, from_version))
            .map_err(|e| redb_err(op, &self.path, e))?
            .next_back()
            .transpose()
            .map_err(|e| redb_err(op, &self.path, e))?
            .map_or(from_version, |(k, _)| k.value().1);
        for entry in index
            .range((stream, start)..=(stream, meta.version))
            .map_err(|e| redb_err(op, &self.path, e))?
        {
            let (k, lsn) = entry.map_err(|e| redb_err(op, &self.path, e))?;
            let first_version = k.value().1;
            let lsn = decode_lsn_value(&self.path, stream, first_version, lsn.value())?;
            if lsn > self.applied_lsn {
                break;
            }
            let v = history
                .get(lsn)
                .map_err(|e| redb_err(op, &self.path, e))?
                .ok_or_else(|| {
                    self.row_error(
                        lsn,
                        format!("missing; stream {stream:?} version {first_version} points at it"),
                    )
                })?;
            let row =
                codec::decode_history_row(lsn, v.value()).map_err(|w| self.row_error(lsn, w))?;
            check_row(&row, stream, first_version).map_err(|w| self.row_error(lsn, w))?;
            for (i, data) in row.events().enumerate() {
                let version = row.first_version + i as u64;
                if version < from_version {
                    continue;
                }
                let event = EventRef {
                    lsn: row.first_lsn + i as u64,
                    stream: row.stream,
                    version,
                    data,
                };
                if !visit(event) {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// The first version of `stream` whose event's LSN is at least `lsn`
    /// (one past the stream's version if none is): a binary search over
    /// the stream's batches, O(log² n).
    pub(crate) fn stream_version_at_lsn(&self, stream: &str, lsn: u64) -> Result<u64> {
        let Some(meta) = self.stream_meta(stream)? else {
            return Ok(1);
        };
        if lsn > meta.last_lsn {
            return Ok(meta.version + 1);
        }
        let op = "read stream";
        let index = self
            .tx
            .open_table(STREAMS)
            .map_err(|e| redb_err(op, &self.path, e))?;
        let history = self
            .tx
            .open_table(HISTORY)
            .map_err(|e| redb_err(op, &self.path, e))?;
        // The batch holding version `v`: (its first version, first LSN, count).
        let batch_of = |v: u64| -> Result<Option<(u64, u64, u32)>> {
            let Some(entry) = index
                .range((stream, 1u64)..=(stream, v))
                .map_err(|e| redb_err(op, &self.path, e))?
                .next_back()
            else {
                return Ok(None);
            };
            let (k, first_lsn) = entry.map_err(|e| redb_err(op, &self.path, e))?;
            let first_lsn = decode_lsn_value(&self.path, stream, k.value().1, first_lsn.value())?;
            let value = history
                .get(first_lsn)
                .map_err(|e| redb_err(op, &self.path, e))?
                .ok_or_else(|| self.row_error(first_lsn, "missing".into()))?;
            let row = codec::decode_history_row(first_lsn, value.value())
                .map_err(|w| self.row_error(first_lsn, w))?;
            Ok(Some((k.value().1, first_lsn, row.count)))
        };
        // Smallest version in [first_held, version] whose LSN >= lsn.
        let (mut lo, mut hi) = (meta.first_held_version, meta.version + 1);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let at = match batch_of(mid)? {
                Some((fv, first_lsn, _)) => first_lsn + (mid - fv),
                None => 0,
            };
            if at >= lsn {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        Ok(lo)
    }
}

/// Whether a row reached through the stream index is the one it names.
fn check_row(row: &HistoryRow<'_>, stream: &str, first_version: u64) -> Result<(), String> {
    if row.stream != stream || row.first_version != first_version {
        return Err(format!(
            "holds {:?} version {}, but the index says {stream:?} version {first_version}",
            row.stream, row.first_version
        ));
    }
    Ok(())
}
