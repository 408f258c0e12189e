//! Opening the log: list the segments, check every record, build the
//! index, and cut a torn tail. Shared by `Db::open`, `verify` and `repair`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::layout;
use crate::storage::{OpenMode, Storage};
use crate::wal::format::{self, SEGMENT_HEADER_BYTES};
use crate::wal::index::LogIndex;
use crate::wal::scan::{self, SegmentEnd};
use crate::wal::writer::{self, TailWriter};
use crate::wal::{repair, segment};

/// A torn tail found (and, on open, cut) by recovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    /// The tail segment.
    pub segment: PathBuf,
    /// Offset where valid records end.
    pub offset: u64,
    /// Bytes after it up to the last non-zero byte.
    pub garbage_bytes: u64,
    /// Why the bytes at `offset` are not a record.
    pub reason: String,
    /// Valid records after those bytes, cut with them: written before the
    /// bad bytes were synced, they reached the disk out of order at a
    /// power cut (0 for an ordinary torn tail).
    pub unsynced_records_after: u64,
}

/// What recovery found and did.
#[derive(Debug, Clone, Default)]
pub struct RecoveryReport {
    /// Segments read.
    pub segments: u64,
    /// Records (batches) recovered.
    pub records: u64,
    /// Events recovered.
    pub events: u64,
    /// LSN of the last recovered event (0 for an empty log).
    pub last_lsn: u64,
    /// The torn tail cut off, if any.
    pub torn_tail: Option<TornTail>,
    /// Where the torn tail's bytes were kept (`<segment>.cut`).
    pub torn_tail_kept_in: Option<PathBuf>,
    /// Temporary segment and snapshot files left by a crash, removed.
    pub removed_temp_files: Vec<PathBuf>,
    /// Time taken to open the log and the store and replay.
    pub duration: Duration,
    /// What opening the store found and did.
    pub store: crate::store::StoreReport,
    /// The LSN the store's last durable checkpoint covers (the log was
    /// replayed after it).
    pub checkpoint_lsn: u64,
    /// Views rebuilt from the history (new, or a schema change).
    pub views_rebuilt: Vec<String>,
    /// Views whose tables were migrated in place to a new schema version.
    pub views_migrated: Vec<String>,
    /// Events replayed from the log after the checkpoint.
    pub replayed_events: u64,
}

/// The log as scanned, before anything is changed on disk.
#[derive(Debug)]
pub struct ScannedLog {
    /// The index over every valid record.
    pub index: LogIndex,
    /// Segment paths in LSN order, with their first LSN.
    pub segments: Vec<(u64, PathBuf)>,
    /// Where the tail's valid records end (`None` with no segments).
    pub tail_end: Option<u64>,
    /// LSN the next record must carry.
    pub next_lsn: u64,
    /// The report (torn tail found, not yet cut).
    pub report: RecoveryReport,
    /// Leftover `.tmp` files.
    pub temp_files: Vec<PathBuf>,
}

/// Lists segment files (sorted by first LSN) and temporary files.
/// Segment files with their first LSN, in LSN order.
type SegmentList = Vec<(u64, PathBuf)>;

fn list_wal_dir(fs: &dyn Storage, wal_dir: &Path) -> Result<(SegmentList, Vec<PathBuf>)> {
    let mut segments = Vec::new();
    let mut temps = Vec::new();
    let names = fs
        .list_dir(wal_dir)
        .map_err(|e| Error::io("list WAL directory", wal_dir, e))?;
    for name in names {
        let Some(name) = name else {
            tracing::warn!(dir = %wal_dir.display(), "ignoring a file whose name is not UTF-8");
            continue;
        };
        let path = wal_dir.join(&name);
        if let Some(lsn) = layout::parse_segment_file_name(&name) {
            segments.push((lsn, path));
        } else if name.ends_with(layout::SEGMENT_TMP_SUFFIX) {
            temps.push(path);
        } else if !name.contains(layout::CUT_SUFFIX) && !name.starts_with(layout::SETTINGS_FILE) {
            tracing::warn!(file = %path.display(), "ignoring an unknown file in the WAL directory");
        }
    }
    segments.sort();
    // In name order, so what recovery does does not depend on the order
    // the file system lists entries in.
    temps.sort();
    Ok((segments, temps))
}

/// Reads and checks every segment without changing anything on disk.
pub fn scan_log(fs: &dyn Storage, wal_dir: &Path, record_bytes_max: u64) -> Result<ScannedLog> {
    let started = Instant::now();
    let (segments, temp_files) = list_wal_dir(fs, wal_dir)?;
    let mut index = LogIndex::default();
    let mut report = RecoveryReport::default();
    let mut next_lsn: Option<u64> = None;
    let mut tail_end = None;
    let count = segments.len();
    for (i, (named_lsn, path)) in segments.iter().enumerate() {
        let is_tail = i + 1 == count;
        let file = layout::open(fs, path, OpenMode::Read, "open segment")?;
        let map = segment::map_segment(file.as_ref(), path)?;
        if map.is_empty() {
            return Err(Error::corrupt(path, 0, "empty segment file (no header)"));
        }
        if let Some(expected) = next_lsn
            && *named_lsn != expected
        {
            return Err(Error::corrupt(
                path,
                0,
                format!(
                    "segment starts at LSN {named_lsn} but the previous segment ends before LSN {expected}"
                ),
            ));
        }
        index.add_segment(
            *named_lsn,
            path.clone(),
            map.clone(),
            SEGMENT_HEADER_BYTES as u64,
        );
        let is_zero_from = |from: u64| file.is_zero_from(&map, from);
        let scanned = scan::scan_segment(
            &map,
            path,
            *named_lsn,
            record_bytes_max,
            &is_zero_from,
            |offset, record| {
                index.add_record(
                    *named_lsn,
                    offset,
                    record.total_bytes,
                    record.first_lsn,
                    record.count,
                );
                Ok(())
            },
        )?;
        report.segments += 1;
        next_lsn = Some(scanned.next_lsn);
        match scanned.end {
            SegmentEnd::Clean { end } => tail_end = Some(end),
            SegmentEnd::TornTail {
                end,
                reason,
                garbage_bytes,
                unsynced_records_after,
            } => {
                if !is_tail {
                    return Err(Error::corrupt(
                        path,
                        end,
                        format!("{reason}, in a sealed segment (later segments exist)"),
                    ));
                }
                tail_end = Some(end);
                report.torn_tail = Some(TornTail {
                    segment: path.clone(),
                    offset: end,
                    garbage_bytes,
                    reason,
                    unsynced_records_after,
                });
            }
            SegmentEnd::Corrupt { offset, reason } => {
                return Err(Error::corrupt(path, offset, reason));
            }
        }
    }
    report.records = index.records;
    report.events = index.events;
    report.last_lsn = next_lsn.unwrap_or(1) - 1;
    report.duration = started.elapsed();
    Ok(ScannedLog {
        index,
        next_lsn: next_lsn.unwrap_or(1),
        segments,
        tail_end,
        report,
        temp_files,
    })
}

/// The log, opened for appending.
#[derive(Debug)]
pub struct OpenedLog {
    /// Index over every committed record.
    pub index: LogIndex,
    /// The writer for the tail segment.
    pub tail: TailWriter,
    /// LSN the next record gets.
    pub next_lsn: u64,
    /// What recovery found and did.
    pub report: RecoveryReport,
}

/// [`scan_log`], or an empty scan when `wal_dir` does not exist yet (a new
/// database): changes nothing either way.
pub fn scan_existing(
    fs: &dyn Storage,
    wal_dir: &Path,
    record_bytes_max: u64,
) -> Result<ScannedLog> {
    if fs.is_dir(wal_dir) {
        return scan_log(fs, wal_dir, record_bytes_max);
    }
    Ok(ScannedLog {
        index: LogIndex::default(),
        segments: Vec::new(),
        tail_end: None,
        next_lsn: 1,
        report: RecoveryReport::default(),
        temp_files: Vec::new(),
    })
}

/// The second half of [`open_log`]: what a scan found made ready for
/// appending (temporary files removed, a torn tail cut, the tail
/// reserved and synced, an old-format tail rolled).
pub fn open_scanned(
    fs: &Arc<dyn Storage>,
    wal_dir: &Path,
    mut scanned: ScannedLog,
    segment_bytes_max: u64,
) -> Result<OpenedLog> {
    layout::create_dir(fs.as_ref(), wal_dir)?;
    let started = Instant::now();
    for tmp in &scanned.temp_files {
        // A .tmp segment was never renamed into place, so no record in it
        // was ever acknowledged.
        fs.remove_file(tmp)
            .map_err(|e| Error::io("remove temporary segment", tmp, e))?;
        tracing::info!(file = %tmp.display(), "removed a temporary segment left by a crash");
    }
    scanned.report.removed_temp_files = scanned.temp_files.clone();
    let (tail, map) = match (scanned.segments.last(), scanned.tail_end) {
        (Some((first_lsn, path)), Some(end)) => {
            let file = layout::open(fs.as_ref(), path, OpenMode::ReadWrite, "open tail segment")?;
            if let Some(torn) = &scanned.report.torn_tail {
                tracing::warn!(
                    segment = %torn.segment.display(),
                    offset = torn.offset,
                    garbage_bytes = torn.garbage_bytes,
                    reason = %torn.reason,
                    "cutting a torn tail (an unacknowledged write interrupted by a crash)"
                );
                // Unacknowledged bytes, but bytes: kept beside the segment.
                if torn.garbage_bytes > 0 {
                    let side = layout::fresh_side_path(fs.as_ref(), path, layout::CUT_SUFFIX)?;
                    repair::keep_bytes(
                        fs.as_ref(),
                        wal_dir,
                        file.as_ref(),
                        path,
                        end,
                        torn.garbage_bytes,
                        &side,
                    )?;
                    scanned.report.torn_tail_kept_in = Some(side);
                }
                file.set_len(end)
                    .map_err(|e| Error::io("truncate torn tail", path, e))?;
                file.sync_all()
                    .map_err(|e| Error::io("fsync truncated segment", path, e))?;
            }
            // Best effort, as for a new segment: the next step of the
            // doubling past what the tail holds.
            let len = file
                .len()
                .map_err(|e| Error::io("stat tail segment", path, e))?;
            let mut allocated = len.max(end);
            let step = writer::preallocation_step(0, end, segment_bytes_max);
            if step > len {
                match file.allocate(step) {
                    Ok(()) => allocated = step,
                    Err(e) => {
                        tracing::warn!(segment = %path.display(), error = %e, "could not preallocate the tail segment")
                    }
                }
            }
            // What a crashed process left in the page cache reads back as
            // valid records but may never have reached the disk: make it
            // durable before records claim the segment is synced to `end`.
            file.sync_data()
                .map_err(|e| Error::io("fdatasync tail segment", path, e))?;
            let map = segment::map_segment(file.as_ref(), path)?;
            let version = format::decode_segment_header(&map)
                .map_err(|e| Error::corrupt(path, 0, e.to_string()))?
                .version;
            let tail = TailWriter::new(
                fs.clone(),
                wal_dir.to_path_buf(),
                file,
                path.clone(),
                (*first_lsn, version),
                (end, allocated),
                segment_bytes_max,
                scanned.next_lsn - 1,
            );
            (tail, map)
        }
        _ => {
            let allocated = writer::PREALLOCATE_BYTES_MIN.min(segment_bytes_max);
            let (file, path) = segment::create_segment(fs.as_ref(), wal_dir, 1, allocated)?;
            let map = segment::map_segment(file.as_ref(), &path)?;
            scanned
                .index
                .add_segment(1, path.clone(), map.clone(), SEGMENT_HEADER_BYTES as u64);
            let tail = TailWriter::new(
                fs.clone(),
                wal_dir.to_path_buf(),
                file,
                path,
                (1, format::SEGMENT_FORMAT_VERSION),
                (SEGMENT_HEADER_BYTES as u64, allocated),
                segment_bytes_max,
                0,
            );
            (tail, map)
        }
    };
    let (mut tail, mut map) = (tail, map);
    if tail.segment_version() < format::SEGMENT_FORMAT_VERSION {
        // Appends go to a segment of the current format, so that what a
        // power cut leaves is judged by the current rule (FORMAT.md).
        if tail.offset() > SEGMENT_HEADER_BYTES as u64 {
            let rolled = tail.roll_to(scanned.next_lsn)?;
            scanned
                .index
                .remap_segment(rolled.sealed_first_lsn, rolled.sealed_map);
            scanned.index.add_segment(
                rolled.first_lsn,
                rolled.path.clone(),
                rolled.map.clone(),
                SEGMENT_HEADER_BYTES as u64,
            );
            map = rolled.map;
        } else {
            // No records: replace it (atomically, by rename) with an empty
            // segment of the current format.
            let first_lsn = tail.segment_first_lsn();
            let allocated = writer::PREALLOCATE_BYTES_MIN.min(segment_bytes_max);
            let (file, path) = segment::create_segment(fs.as_ref(), wal_dir, first_lsn, allocated)?;
            map = segment::map_segment(file.as_ref(), &path)?;
            tail = TailWriter::new(
                fs.clone(),
                wal_dir.to_path_buf(),
                file,
                path,
                (first_lsn, format::SEGMENT_FORMAT_VERSION),
                (SEGMENT_HEADER_BYTES as u64, allocated),
                segment_bytes_max,
                scanned.next_lsn - 1,
            );
        }
    }
    scanned.index.remap_segment(tail.segment_first_lsn(), map);
    scanned.report.duration = started.elapsed();
    Ok(OpenedLog {
        index: scanned.index,
        tail,
        next_lsn: scanned.next_lsn,
        report: scanned.report,
    })
}
