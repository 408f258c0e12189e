//! The local write-ahead log as a [`Log`]: segment files of CRC-checked
//! records, one `pwrite` per segment per group, one fdatasync per sync.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::layout;
use crate::log::{Log, LogRecord, LogStats, Truncated};
use crate::storage::{OpenMode, Storage};
use crate::wal::format::{self, RecordView};
use crate::wal::index::{LogIndex, SegmentSlice};
use crate::wal::recovery::{self, RecoveryReport};
use crate::wal::settings;
use crate::wal::writer::{TailSync, TailWriter};

/// The writer's side: the tail and how much of it the index has mapped.
#[derive(Debug)]
struct Writer {
    tail: TailWriter,
    tail_map_len: u64,
}

/// See the module docs.
#[derive(Debug)]
pub struct WalLog {
    fs: Arc<dyn Storage>,
    wal_dir: PathBuf,
    record_bytes_max: u64,
    writer: Mutex<Writer>,
    index: RwLock<LogIndex>,
    /// The fdatasync that covers everything written so far.
    sync_target: Mutex<TailSync>,
    last_lsn: AtomicU64,
    durable_lsn: AtomicU64,
    syncs: AtomicU64,
    grew: (Mutex<()>, Condvar),
    report: RecoveryReport,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl WalLog {
    /// Opens (creating if needed) the log in `wal_dir` after a read-only
    /// scan (so that the caller can check what depends on the log before
    /// anything is changed): settings, then recovery (docs/DESIGN.md,
    /// "Recovery rules"). `segment_bytes_max` is used only when the log is
    /// new (see `settings::load_or_create`).
    pub fn open_scanned(
        fs: Arc<dyn Storage>,
        wal_dir: &Path,
        scanned: recovery::ScannedLog,
        record_bytes_max: u64,
        segment_bytes_max: Option<u64>,
    ) -> Result<WalLog> {
        layout::create_dir(fs.as_ref(), wal_dir)?;
        let settings = settings::load_or_create(
            fs.as_ref(),
            wal_dir,
            segment_bytes_max,
            crate::options::SEGMENT_BYTES_DEFAULT,
        )?;
        let opened = recovery::open_scanned(&fs, wal_dir, scanned, settings.segment_bytes_max)?;
        let last = opened.next_lsn - 1;
        let tail_map_len = opened
            .index
            .segments()
            .last()
            .map_or(0, |(_, s)| s.map.len() as u64);
        Ok(WalLog {
            sync_target: Mutex::new(opened.tail.sync_handle()),
            writer: Mutex::new(Writer {
                tail: opened.tail,
                tail_map_len,
            }),
            index: RwLock::new(opened.index),
            last_lsn: AtomicU64::new(last),
            // Open fdatasyncs the tail before trusting what it read.
            durable_lsn: AtomicU64::new(last),
            syncs: AtomicU64::new(0),
            grew: (Mutex::new(()), Condvar::new()),
            report: opened.report,
            fs,
            wal_dir: wal_dir.to_path_buf(),
            record_bytes_max,
        })
    }

    /// What recovery found and did at open.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.report
    }

    fn slices_from(&self, lsn: u64) -> Vec<SegmentSlice> {
        self.index
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .slices_from(lsn)
    }
}

/// Calls `visit` for each record in `slice` until it returns `false`.
/// Returns whether to go on with the next slice.
pub(crate) fn for_each_record(
    slice: &SegmentSlice,
    record_bytes_max: u64,
    mut visit: impl FnMut(&RecordView<'_>) -> Result<bool>,
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
        if !visit(&record)? {
            return Ok(false);
        }
        at += record.total_bytes as usize;
    }
    Ok(true)
}

impl Log for WalLog {
    fn first_lsn(&self) -> u64 {
        let index = self.index.read().unwrap_or_else(PoisonError::into_inner);
        index.first_lsn().unwrap_or(index.last_lsn + 1)
    }

    fn last_lsn(&self) -> u64 {
        self.last_lsn.load(Ordering::Acquire)
    }

    fn durable_lsn(&self) -> u64 {
        self.durable_lsn.load(Ordering::Acquire)
    }

    fn append(&self, expected_last_lsn: u64, records: &[LogRecord<'_>]) -> Result<()> {
        let mut w = lock(&self.writer);
        if w.tail.last_lsn() != expected_last_lsn {
            return Err(Error::LogConflict {
                expected_last_lsn,
                actual_last_lsn: w.tail.last_lsn(),
                stored_records: 0,
            });
        }
        let out: Vec<_> = records
            .iter()
            .map(|r| (r.batch, r.first_lsn, r.first_version))
            .collect();
        let (placed, rolled) = w.tail.write(&out)?;
        self.syncs
            .fetch_add(2 * rolled.len() as u64, Ordering::Relaxed);
        if let Some(r) = rolled.last() {
            w.tail_map_len = r.map.len() as u64;
        }
        let mut tail_map = None;
        if w.tail.offset() > w.tail_map_len {
            // The reservation grew (or a record outgrew the segment).
            let map = w.tail.map()?;
            w.tail_map_len = map.len() as u64;
            tail_map = Some(map);
        }
        {
            let mut index = self.index.write().unwrap_or_else(PoisonError::into_inner);
            for r in rolled {
                index.remap_segment(r.sealed_first_lsn, r.sealed_map);
                index.add_segment(
                    r.first_lsn,
                    r.path,
                    r.map,
                    format::SEGMENT_HEADER_BYTES as u64,
                );
            }
            if let Some(map) = tail_map {
                index.remap_segment(w.tail.segment_first_lsn(), map);
            }
            for (r, at) in records.iter().zip(&placed) {
                index.add_record(
                    at.segment,
                    at.offset,
                    at.total_bytes,
                    r.first_lsn,
                    r.batch.count,
                );
            }
        }
        *lock(&self.sync_target) = w.tail.sync_handle();
        self.last_lsn.store(w.tail.last_lsn(), Ordering::Release);
        drop(w);
        let _g = lock(&self.grew.0);
        self.grew.1.notify_all();
        Ok(())
    }

    fn sync(&self) -> Result<u64> {
        let target = lock(&self.sync_target).clone();
        target.sync()?;
        self.syncs.fetch_add(1, Ordering::Relaxed);
        Ok(self
            .durable_lsn
            .fetch_max(target.last_lsn, Ordering::AcqRel)
            .max(target.last_lsn))
    }

    fn read(
        &self,
        from_lsn: u64,
        visit: &mut dyn FnMut(&RecordView<'_>) -> Result<bool>,
    ) -> Result<()> {
        let from_lsn = from_lsn.max(1);
        for slice in self.slices_from(from_lsn) {
            let go_on = for_each_record(&slice, self.record_bytes_max, |record| {
                if record.last_lsn() < from_lsn {
                    return Ok(true);
                }
                visit(record)
            })?;
            if !go_on {
                break;
            }
        }
        Ok(())
    }

    fn wait_past(&self, lsn: u64, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        let mut g = lock(&self.grew.0);
        loop {
            let last = self.last_lsn();
            let left = deadline.saturating_duration_since(Instant::now());
            if last > lsn || left.is_zero() {
                return last;
            }
            g = self
                .grew
                .1
                .wait_timeout(g, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    fn truncate_before(&self, lsn: u64) -> Result<Truncated> {
        let doomed = self
            .index
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .compact_through(lsn.saturating_sub(1));
        crate::failpoint::hit("compaction.before_delete");
        // Oldest first, each unlink durable before the next: a crash
        // leaves a shorter log, never one with a gap.
        for (i, path) in doomed.iter().enumerate() {
            self.fs
                .remove_file(path)
                .map_err(|e| Error::io("delete compacted segment", path, e))?;
            if i == 0 {
                crate::failpoint::hit("compaction.after_first_delete");
            }
            layout::sync_dir(self.fs.as_ref(), &self.wal_dir)?;
        }
        Ok(Truncated {
            first_lsn: self.first_lsn(),
            removed: doomed.iter().map(|p| p.display().to_string()).collect(),
        })
    }

    fn backup(&self, dest_dir: &Path, _last_lsn: u64) -> Result<u64> {
        let fs = self.fs.as_ref();
        // Segments only grow: a prefix copied at any moment is a valid log,
        // and every record below these ends is in it.
        let (segments, covered): (Vec<(PathBuf, u64)>, u64) = {
            let index = self.index.read().unwrap_or_else(PoisonError::into_inner);
            (
                index
                    .segments()
                    .map(|(_, s)| (s.path.to_path_buf(), s.end))
                    .collect(),
                index.last_lsn,
            )
        };
        let wal = layout::wal_dir(dest_dir);
        layout::create_dir(fs, &wal)?;
        let copy = |from: &Path, to: &Path, len: u64| -> Result<()> {
            let src = layout::open(fs, from, OpenMode::Read, "open for backup")?;
            layout::copy_range(fs, src.as_ref(), from, 0, len, to, "copy for backup")
        };
        let settings = self.wal_dir.join(layout::SETTINGS_FILE);
        copy(
            &settings,
            &wal.join(layout::SETTINGS_FILE),
            settings::SETTINGS_BYTES as u64,
        )?;
        for (path, end) in &segments {
            let name = path.file_name().unwrap_or_default();
            copy(path, &wal.join(name), *end)?;
        }
        layout::sync_dir(fs, &wal)?;
        Ok(covered)
    }

    fn stats(&self) -> LogStats {
        let index = self.index.read().unwrap_or_else(PoisonError::into_inner);
        LogStats {
            kind: "wal",
            records: index.records,
            events: index.events,
            bytes: index.segments().map(|(_, s)| s.end).sum(),
            files: index.segments().count() as u64,
            first_lsn: index.first_lsn().unwrap_or(index.last_lsn + 1),
            last_lsn: index.last_lsn,
            durable_lsn: self.durable_lsn(),
            syncs: self.syncs.load(Ordering::Relaxed),
        }
    }
}
