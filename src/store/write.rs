//! Writing into the store: one write transaction per applied group.
//!
//! A batch goes in as a history row under its first LSN, an entry in its
//! stream's batch index, and its stream's new meta; every registered view
//! folds its events inside the same transaction, so what a view's tables
//! say and what the history holds never disagree. Retention trims the
//! history as it goes (count and truncate limits) or at checkpoints (age).

use std::path::Path;

use redb::{ReadableTable, WriteTransaction};

use crate::error::{Error, Result};
use crate::retention::{RETENTION_STREAM, Retention, RetentionChange};
use crate::store::codec::{self, StreamMeta};
use crate::store::{
    AGED_STREAMS, HISTORY, META, META_APPLIED_LSN, META_STREAM_COUNT, STREAMS, VIEWS, damaged,
    decode_lsn_value, lsn_value, meta_key, read_u64, redb_err,
};
use crate::stream::EventRef;
use crate::views::{ViewSlot, ViewTables};
use crate::wal::format;

/// A batch to apply: what the log holds of it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchRef<'a> {
    /// LSN of the first event.
    pub first_lsn: u64,
    /// Stream version of the first event.
    pub first_version: u64,
    /// Events.
    pub count: u32,
    /// The stream.
    pub stream: &'a str,
    /// The MessagePack payload `[stream, [bin, ...]]`, as in the log.
    pub payload: &'a [u8],
}

impl<'a> BatchRef<'a> {
    /// The batch a record of the log holds.
    pub(crate) fn of(r: &crate::wal::format::RecordView<'a>) -> BatchRef<'a> {
        BatchRef {
            first_lsn: r.first_lsn,
            first_version: r.first_version,
            count: r.count,
            stream: r.stream,
            payload: r.payload,
        }
    }
}

impl BatchRef<'_> {
    fn last_lsn(&self) -> u64 {
        self.first_lsn + u64::from(self.count) - 1
    }
}

/// An open store write transaction.
pub(crate) struct StoreWrite<'s> {
    pub(crate) tx: WriteTransaction,
    pub(crate) path: &'s Path,
    /// The LSN the store reflects once this commits.
    applied_lsn: Option<u64>,
    now_ms: u64,
}

impl<'s> StoreWrite<'s> {
    pub(crate) fn new(tx: WriteTransaction, path: &'s Path) -> StoreWrite<'s> {
        StoreWrite {
            tx,
            path,
            applied_lsn: None,
            now_ms: crate::stream::now_unix_ms(),
        }
    }

    /// The store's meta of `stream` (`None` if it was never written).
    pub(crate) fn stream_meta(&self, stream: &str) -> Result<Option<StreamMeta>> {
        let t = self
            .tx
            .open_table(STREAMS)
            .map_err(|e| redb_err("read stream meta", self.path, e))?;
        let Some(v) = t
            .get(meta_key(stream))
            .map_err(|e| redb_err("read stream meta", self.path, e))?
        else {
            return Ok(None);
        };
        codec::decode_stream_meta(stream, v.value())
            .map(Some)
            .map_err(|why| damaged(self.path, format!("stream {stream:?} meta: {why}")))
    }

    /// The version of `stream` (0 if never written).
    pub(crate) fn stream_version(&self, stream: &str) -> Result<u64> {
        Ok(self.stream_meta(stream)?.map_or(0, |m| m.version))
    }

    /// Writes a stream's meta; `new` when the stream had none (it counts).
    fn put_stream_meta(&self, stream: &str, meta: &StreamMeta, new: bool) -> Result<()> {
        let op = "write stream meta";
        let mut t = self
            .tx
            .open_table(STREAMS)
            .map_err(|e| redb_err(op, self.path, e))?;
        t.insert(
            meta_key(stream),
            &codec::encode_stream_meta(stream, meta)[..],
        )
        .map_err(|e| redb_err(op, self.path, e))?;
        if new {
            let mut m = self
                .tx
                .open_table(META)
                .map_err(|e| redb_err(op, self.path, e))?;
            let n = read_u64(&m, META_STREAM_COUNT, self.path)?;
            m.insert(META_STREAM_COUNT, &(n + 1).to_le_bytes()[..])
                .map_err(|e| redb_err(op, self.path, e))?;
        }
        Ok(())
    }

    /// Applies one batch: history, stream meta, retention, then every view
    /// that has not folded it yet. The batch must continue its stream.
    pub(crate) fn apply_batch(&mut self, b: &BatchRef<'_>, views: &mut [ViewSlot]) -> Result<()> {
        let found = self.stream_meta(b.stream)?;
        let new = found.is_none();
        let mut meta = found.unwrap_or_else(StreamMeta::new);
        if b.first_version != meta.version + 1 {
            return Err(Error::Store {
                op: "apply batch",
                path: self.path.to_path_buf(),
                reason: format!(
                    "stream {:?} is at version {} but the batch at LSN {} starts at version {}",
                    b.stream, meta.version, b.first_lsn, b.first_version
                ),
            });
        }
        let was_held = meta.first_held_version;
        meta.version += u64::from(b.count);
        meta.last_lsn = b.last_lsn();
        if meta.retention.is_state_only() {
            meta.first_held_version = meta.version + 1;
            meta.removed_through_lsn = meta.removed_through_lsn.max(b.last_lsn());
        } else {
            let row = codec::encode_history_row(
                b.first_lsn,
                b.first_version,
                b.count,
                self.now_ms,
                b.payload,
            );
            let op = "write history";
            self.tx
                .open_table(HISTORY)
                .map_err(|e| redb_err(op, self.path, e))?
                .insert(b.first_lsn, row.as_slice())
                .map_err(|e| redb_err(op, self.path, e))?;
            self.tx
                .open_table(STREAMS)
                .map_err(|e| redb_err(op, self.path, e))?
                .insert((b.stream, b.first_version), &lsn_value(b.first_lsn)[..])
                .map_err(|e| redb_err(op, self.path, e))?;
            let keep_from = meta.retention.first_kept_version(meta.version);
            // Never past the next version: a truncate-before far ahead of
            // the stream keeps nothing yet, and no more.
            meta.first_held_version = meta.first_held_version.max(keep_from).min(meta.version + 1);
        }
        if meta.first_held_version > was_held {
            let removed = self.trim_below(b.stream, meta.first_held_version)?;
            meta.removed_through_lsn = meta.removed_through_lsn.max(removed);
        }
        self.put_stream_meta(b.stream, &meta, new)?;
        if b.stream == RETENTION_STREAM {
            self.apply_retention_changes(b)?;
        }
        self.apply_to_views(b, views)?;
        self.applied_lsn = Some(b.last_lsn());
        Ok(())
    }

    fn apply_to_views(&self, b: &BatchRef<'_>, views: &mut [ViewSlot]) -> Result<()> {
        if views.iter().all(|v| v.applied_lsn >= b.last_lsn()) {
            return Ok(());
        }
        let (_, events) = format::decode_payload(b.payload, b.count).map_err(|e| Error::Store {
            op: "apply batch",
            path: self.path.to_path_buf(),
            reason: format!("batch at LSN {}: {e}", b.first_lsn),
        })?;
        for (i, data) in format::EventBytes::new(events, b.count).enumerate() {
            let event = EventRef {
                lsn: b.first_lsn + i as u64,
                stream: b.stream,
                version: b.first_version + i as u64,
                data,
            };
            for slot in views.iter_mut().filter(|s| s.applied_lsn < event.lsn) {
                let mut tables = ViewTables::new(&self.tx, &slot.name, self.path);
                slot.view.apply(&event, &mut tables)?;
                slot.applied_lsn = event.lsn;
            }
        }
        Ok(())
    }

    /// Sets the retention of the streams the batch's events name.
    fn apply_retention_changes(&mut self, b: &BatchRef<'_>) -> Result<()> {
        let (_, events) = format::decode_payload(b.payload, b.count).map_err(|e| Error::Store {
            op: "apply retention",
            path: self.path.to_path_buf(),
            reason: e.to_string(),
        })?;
        for data in format::EventBytes::new(events, b.count) {
            // Written by `Db::set_retention` only ($ streams are closed to
            // callers); one that does not decode is reported, not guessed.
            let change: RetentionChange =
                rmp_serde::from_slice(data).map_err(|e| Error::Store {
                    op: "apply retention",
                    path: self.path.to_path_buf(),
                    reason: format!("undecodable event at LSN {}: {e}", b.first_lsn),
                })?;
            self.set_retention(&change.stream, change.retention)?;
        }
        Ok(())
    }

    /// Gives `stream` a retention and removes at once what its count and
    /// truncate limits no longer keep.
    fn set_retention(&mut self, stream: &str, retention: Retention) -> Result<()> {
        let found = self.stream_meta(stream)?;
        let new = found.is_none();
        let mut meta = found.unwrap_or_else(StreamMeta::new);
        meta.retention = retention;
        let keep_from = if retention.is_state_only() {
            meta.version + 1
        } else {
            retention.first_kept_version(meta.version)
        };
        if keep_from > meta.first_held_version {
            meta.first_held_version = keep_from.min(meta.version + 1);
            let removed = self.trim_below(stream, meta.first_held_version)?;
            meta.removed_through_lsn = meta.removed_through_lsn.max(removed);
        }
        self.put_stream_meta(stream, &meta, new)?;
        let mut aged = self
            .tx
            .open_table(AGED_STREAMS)
            .map_err(|e| redb_err("write aged streams", self.path, e))?;
        match retention.max_age_ms {
            Some(ms) => aged.insert(stream, ms).map(drop),
            None => aged.remove(stream).map(drop),
        }
        .map_err(|e| redb_err("write aged streams", self.path, e))
    }

    /// Removes `stream`'s history below version `keep_from`; a batch that
    /// straddles it is rewritten to hold only the kept events. Returns the
    /// LSN of the last event removed (0 if none).
    fn trim_below(&mut self, stream: &str, keep_from: u64) -> Result<u64> {
        let mut removed_through = 0u64;
        let op = "trim history";
        let doomed: Vec<(u64, u64)> = {
            let index = self
                .tx
                .open_table(STREAMS)
                .map_err(|e| redb_err(op, self.path, e))?;
            let range = index
                .range((stream, 1u64)..(stream, keep_from))
                .map_err(|e| redb_err(op, self.path, e))?;
            let mut out = Vec::new();
            for entry in range {
                let (k, v) = entry.map_err(|e| redb_err(op, self.path, e))?;
                let version = k.value().1;
                out.push((
                    version,
                    decode_lsn_value(self.path, stream, version, v.value())?,
                ));
            }
            out
        };
        let mut history = self
            .tx
            .open_table(HISTORY)
            .map_err(|e| redb_err(op, self.path, e))?;
        let mut index = self
            .tx
            .open_table(STREAMS)
            .map_err(|e| redb_err(op, self.path, e))?;
        for (first_version, first_lsn) in doomed {
            let value = history
                .remove(first_lsn)
                .map_err(|e| redb_err(op, self.path, e))?
                .ok_or_else(|| {
                    damaged(
                        self.path,
                        format!(
                            "stream {stream:?} version {first_version}: no history row at LSN {first_lsn}"
                        ),
                    )
                })?;
            index
                .remove((stream, first_version))
                .map_err(|e| redb_err(op, self.path, e))?;
            let row = codec::decode_history_row(first_lsn, value.value()).map_err(|why| {
                damaged(self.path, format!("history row at LSN {first_lsn}: {why}"))
            })?;
            if row.stream != stream || row.first_version != first_version {
                return Err(damaged(
                    self.path,
                    format!(
                        "history row at LSN {first_lsn} is {:?} version {}, the index says {stream:?} version {first_version}",
                        row.stream, row.first_version
                    ),
                ));
            }
            let last_version = first_version + u64::from(row.count) - 1;
            if last_version < keep_from {
                removed_through = removed_through.max(first_lsn + u64::from(row.count) - 1);
                continue;
            }
            // The kept tail of a straddling batch, under its own first LSN.
            let skip = keep_from - first_version;
            removed_through = removed_through.max(first_lsn + skip - 1);
            let kept: Vec<&[u8]> = row.events().skip(skip as usize).collect();
            let batch = format::encode_batch(stream, &kept);
            let new_lsn = first_lsn + skip;
            let new_row = codec::encode_history_row(
                new_lsn,
                keep_from,
                batch.count,
                row.stored_at_ms,
                &batch.payload,
            );
            drop(value);
            history
                .insert(new_lsn, new_row.as_slice())
                .map_err(|e| redb_err(op, self.path, e))?;
            index
                .insert((stream, keep_from), &lsn_value(new_lsn)[..])
                .map_err(|e| redb_err(op, self.path, e))?;
        }
        Ok(removed_through)
    }

    /// Removes history that its stream's max age no longer keeps (events
    /// stored before `now - max age`). Returns the events removed.
    pub(crate) fn age_out(&mut self) -> Result<u64> {
        let op = "age out history";
        let aged: Vec<(String, u64)> = {
            let t = self
                .tx
                .open_table(AGED_STREAMS)
                .map_err(|e| redb_err(op, self.path, e))?;
            let mut out = Vec::new();
            for entry in t.iter().map_err(|e| redb_err(op, self.path, e))? {
                let (k, v) = entry.map_err(|e| redb_err(op, self.path, e))?;
                out.push((k.value().to_string(), v.value()));
            }
            out
        };
        let mut removed = 0;
        for (stream, max_age_ms) in aged {
            let Some(meta) = self.stream_meta(&stream)? else {
                continue;
            };
            let cutoff = self.now_ms.saturating_sub(max_age_ms);
            // The first batch stored at or after the cutoff: its first
            // version is the first kept. Batches are stored in order, so
            // their times only grow.
            let mut keep_from = meta.version + 1;
            {
                let index = self
                    .tx
                    .open_table(STREAMS)
                    .map_err(|e| redb_err(op, self.path, e))?;
                let history = self
                    .tx
                    .open_table(HISTORY)
                    .map_err(|e| redb_err(op, self.path, e))?;
                let range = index
                    .range((stream.as_str(), meta.first_held_version)..=(stream.as_str(), u64::MAX))
                    .map_err(|e| redb_err(op, self.path, e))?;
                for entry in range {
                    let (k, lsn) = entry.map_err(|e| redb_err(op, self.path, e))?;
                    let lsn = decode_lsn_value(self.path, &stream, k.value().1, lsn.value())?;
                    let v = history
                        .get(lsn)
                        .map_err(|e| redb_err(op, self.path, e))?
                        .ok_or_else(|| {
                            damaged(self.path, format!("no history row at LSN {lsn}"))
                        })?;
                    let row = codec::decode_history_row(lsn, v.value()).map_err(|why| {
                        damaged(self.path, format!("history row at LSN {lsn}: {why}"))
                    })?;
                    if row.stored_at_ms >= cutoff {
                        keep_from = k.value().1.max(meta.first_held_version);
                        break;
                    }
                }
            }
            if keep_from > meta.first_held_version {
                removed += keep_from - meta.first_held_version;
                let through = self.trim_below(&stream, keep_from)?;
                let mut m = meta;
                m.first_held_version = keep_from;
                m.removed_through_lsn = m.removed_through_lsn.max(through);
                self.put_stream_meta(&stream, &m, false)?;
            }
        }
        Ok(removed)
    }

    /// Records what each view has folded.
    pub(crate) fn record_views(&self, views: &[ViewSlot]) -> Result<()> {
        let mut t = self
            .tx
            .open_table(VIEWS)
            .map_err(|e| redb_err("write view meta", self.path, e))?;
        for slot in views {
            let name = slot.name.as_str();
            t.insert(
                name,
                &codec::encode_view_meta(name, slot.view.schema_version(), slot.applied_lsn)[..],
            )
            .map_err(|e| redb_err("write view meta", self.path, e))?;
        }
        Ok(())
    }

    /// Sets the LSN the store reflects (done by `apply_batch` as it goes).
    pub(crate) fn set_applied_lsn(&mut self, lsn: u64) {
        self.applied_lsn = Some(lsn);
    }

    /// Commits, without an fsync: visible to readers at once, durable at
    /// the next checkpoint.
    pub(crate) fn commit(self) -> Result<()> {
        let path = self.path;
        if let Some(lsn) = self.applied_lsn {
            let mut meta = self
                .tx
                .open_table(META)
                .map_err(|e| redb_err("write store meta", path, e))?;
            meta.insert(META_APPLIED_LSN, &lsn.to_le_bytes()[..])
                .map_err(|e| redb_err("write store meta", path, e))?;
        }
        self.tx
            .commit()
            .map_err(|e| redb_err("commit store", path, e))
    }

    /// Commits durably (an fsync), as the store's creation or a migration
    /// does before anything relies on it.
    pub(crate) fn commit_durably(mut self) -> Result<()> {
        self.tx
            .set_durability(redb::Durability::Immediate)
            .map_err(|e| Error::Store {
                op: "commit store",
                path: self.path.to_path_buf(),
                reason: e.to_string(),
            })?;
        self.tx.set_quick_repair(true);
        self.commit()
    }
}
