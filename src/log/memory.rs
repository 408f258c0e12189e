//! A log in memory: every record kept as its encoded bytes, checked again
//! when it is read back. For testing the engine without files, and for
//! databases that need no durability.

use std::path::Path;
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::log::{Log, LogRecord, LogStats, Truncated};
use crate::wal::format::{self, RecordView};

#[derive(Debug, Default)]
struct Records {
    /// `(first_lsn, record bytes)` in LSN order.
    records: std::collections::VecDeque<(u64, Vec<u8>)>,
    first_lsn: u64,
    last_lsn: u64,
    events: u64,
    bytes: u64,
}

/// See the module docs. Durable means "appended": nothing survives the
/// process.
#[derive(Debug)]
pub struct MemoryLog {
    state: Mutex<Records>,
    grew: Condvar,
    record_bytes_max: u64,
}

impl MemoryLog {
    /// An empty log accepting records up to `record_bytes_max`.
    pub fn new(record_bytes_max: u64) -> MemoryLog {
        MemoryLog {
            state: Mutex::new(Records {
                first_lsn: 1,
                ..Records::default()
            }),
            grew: Condvar::new(),
            record_bytes_max,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Records> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Log for MemoryLog {
    fn first_lsn(&self) -> u64 {
        self.lock().first_lsn
    }

    fn last_lsn(&self) -> u64 {
        self.lock().last_lsn
    }

    fn durable_lsn(&self) -> u64 {
        self.lock().last_lsn
    }

    fn append(&self, expected_last_lsn: u64, records: &[LogRecord<'_>]) -> Result<()> {
        let mut s = self.lock();
        if s.last_lsn != expected_last_lsn {
            return Err(Error::LogConflict {
                expected_last_lsn,
                actual_last_lsn: s.last_lsn,
                stored_records: 0,
            });
        }
        let mut next = expected_last_lsn + 1;
        let mut encoded = Vec::with_capacity(records.len());
        for r in records {
            if r.first_lsn != next {
                return Err(Error::Internal {
                    op: "append to log",
                    reason: format!("record numbered {} where {next} was next", r.first_lsn),
                });
            }
            let mut bytes = format::encode_record_header(
                r.batch,
                r.first_lsn,
                r.first_version,
                format::SEGMENT_HEADER_BYTES as u32,
            )
            .to_vec();
            bytes.extend_from_slice(&r.batch.payload);
            encoded.push((r.first_lsn, bytes, r.batch.count));
            next = r.last_lsn() + 1;
        }
        for (lsn, bytes, count) in encoded {
            s.bytes += bytes.len() as u64;
            s.events += u64::from(count);
            s.records.push_back((lsn, bytes));
        }
        s.last_lsn = next - 1;
        drop(s);
        self.grew.notify_all();
        Ok(())
    }

    fn sync(&self) -> Result<u64> {
        Ok(self.lock().last_lsn)
    }

    fn read(
        &self,
        from_lsn: u64,
        visit: &mut dyn FnMut(&RecordView<'_>) -> Result<bool>,
    ) -> Result<()> {
        let from_lsn = from_lsn.max(1);
        // Copies out under the lock, decodes outside it.
        let held: Vec<(u64, Vec<u8>)> = {
            let s = self.lock();
            let start = s.records.partition_point(|(lsn, _)| *lsn <= from_lsn);
            s.records
                .iter()
                .skip(start.saturating_sub(1))
                .cloned()
                .collect()
        };
        for (lsn, bytes) in &held {
            let record = format::decode_record(bytes, self.record_bytes_max).map_err(|e| {
                Error::corrupt("<memory log>", *lsn, format!("record at LSN {lsn}: {e}"))
            })?;
            if record.last_lsn() < from_lsn {
                continue;
            }
            if !visit(&record)? {
                break;
            }
        }
        Ok(())
    }

    fn wait_past(&self, lsn: u64, timeout: Duration) -> u64 {
        super::wait_past(&self.state, &self.grew, lsn, timeout, |s| s.last_lsn)
    }

    fn truncate_before(&self, lsn: u64) -> Result<Truncated> {
        let mut s = self.lock();
        let mut removed = 0u64;
        while let Some((first, bytes)) = s.records.front() {
            let count = format::decode_record(bytes, self.record_bytes_max)
                .map(|r| r.count)
                .unwrap_or(1);
            let last = first + u64::from(count) - 1;
            if last >= lsn {
                break;
            }
            s.bytes -= bytes.len() as u64;
            s.events -= u64::from(count);
            s.records.pop_front();
            s.first_lsn = last + 1;
            removed += 1;
        }
        let removed = if removed > 0 {
            vec![format!("{removed} records")]
        } else {
            Vec::new()
        };
        Ok(Truncated {
            first_lsn: s.first_lsn,
            removed,
        })
    }

    fn backup(&self, _dest_dir: &Path, _last_lsn: u64) -> Result<u64> {
        Err(Error::Unsupported {
            op: "backup",
            reason: "a log in memory has no files to copy".into(),
        })
    }

    fn stats(&self) -> LogStats {
        let s = self.lock();
        LogStats {
            kind: "memory",
            records: s.records.len() as u64,
            events: s.events,
            bytes: s.bytes,
            files: 0,
            first_lsn: s.first_lsn,
            last_lsn: s.last_lsn,
            durable_lsn: s.last_lsn,
            syncs: 0,
        }
    }
}
