//! Reading committed records back: every record's CRC is checked again on
//! the way out, and a failure names the segment and offset.

use crate::engine::Inner;
use crate::error::{Error, Result};
use crate::stream::{Event, EventRef};
use crate::wal::format::{self, RecordView};
use crate::wal::index::{LogIndex, SegmentSlice};

/// Calls `visit` for each record in `slice` until it returns `false`.
/// Returns whether to go on with the next slice.
fn for_each_record(
    slice: &SegmentSlice,
    record_bytes_max: u64,
    mut visit: impl FnMut(&RecordView<'_>) -> bool,
) -> Result<bool> {
    let bytes = slice.bytes().ok_or_else(|| {
        Error::corrupt(
            &*slice.path,
            slice.start,
            format!(
                "committed bytes up to {} lie outside the segment's mapping",
                slice.end
            ),
        )
    })?;
    let mut at = 0usize;
    while at < bytes.len() {
        let rest = bytes.get(at..).unwrap_or(&[]);
        let record = format::decode_record(rest, record_bytes_max).map_err(|e| {
            Error::corrupt(
                &*slice.path,
                slice.start + at as u64,
                format!("on read: {e}"),
            )
        })?;
        if !visit(&record) {
            return Ok(false);
        }
        at += record.total_bytes as usize;
    }
    Ok(true)
}

/// Visits every committed event from `from_lsn` on until `visit` says stop.
pub(crate) fn replay(
    inner: &Inner,
    from_lsn: u64,
    visit: impl FnMut(EventRef<'_>) -> bool,
) -> Result<u64> {
    let slices = {
        let index = inner.index.read().map_err(|_| inner.poisoned_error())?;
        check_not_compacted(&index, from_lsn)?;
        index.slices_from(from_lsn)
    };
    replay_slices(&slices, inner.options.record_bytes_max, from_lsn, visit)
}

/// Fails with `Compacted` if the log no longer holds `from_lsn`.
pub(crate) fn check_not_compacted(index: &LogIndex, from_lsn: u64) -> Result<()> {
    let first = index.first_lsn().unwrap_or(1);
    if from_lsn.max(1) < first {
        return Err(Error::Compacted {
            what: format!("LSN {from_lsn}"),
            oldest_available: first,
        });
    }
    Ok(())
}

/// Visits the events of `slices` from `from_lsn` on until `visit` says stop.
pub(crate) fn replay_slices(
    slices: &[SegmentSlice],
    max: u64,
    from_lsn: u64,
    mut visit: impl FnMut(EventRef<'_>) -> bool,
) -> Result<u64> {
    let mut visited = 0u64;
    for slice in slices {
        let go_on = for_each_record(slice, max, |record| {
            if record.last_lsn() < from_lsn {
                return true;
            }
            for (i, data) in record.events().enumerate() {
                let lsn = record.first_lsn + i as u64;
                if lsn < from_lsn {
                    continue;
                }
                visited += 1;
                let event = EventRef {
                    lsn,
                    stream: record.stream,
                    version: record.first_version + i as u64,
                    data,
                };
                if !visit(event) {
                    return false;
                }
            }
            true
        })?;
        if !go_on {
            break;
        }
    }
    Ok(visited)
}

/// Up to `limit` events of `stream` from `from_version` on.
pub(crate) fn read_stream(
    inner: &Inner,
    stream: &str,
    from_version: u64,
    limit: usize,
) -> Result<Vec<Event>> {
    let mut out = Vec::new();
    if limit == 0 {
        return Ok(out);
    }
    let slices = {
        let index = inner.index.read().map_err(|_| inner.poisoned_error())?;
        let first_held = index.stream_first_held_version(stream);
        if from_version.max(1) < first_held {
            return Err(Error::Compacted {
                what: format!("stream {stream:?} version {from_version}"),
                oldest_available: first_held,
            });
        }
        index.stream_slices(stream, from_version, limit)
    };
    let max = inner.options.record_bytes_max;
    for slice in &slices {
        let mut first = true;
        for_each_record(slice, max, |record| {
            // Each slice starts at one of the stream's records; only that
            // record belongs to this slice.
            if !first {
                return false;
            }
            first = false;
            for (i, data) in record.events().enumerate() {
                let version = record.first_version + i as u64;
                if version >= from_version && out.len() < limit {
                    out.push(Event {
                        lsn: record.first_lsn + i as u64,
                        stream: record.stream.to_string(),
                        version,
                        data: data.to_vec(),
                    });
                }
            }
            false
        })?;
        if out.len() >= limit {
            break;
        }
    }
    Ok(out)
}
