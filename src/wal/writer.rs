//! The tail writer: appends records to the newest segment and rolls to a
//! new one at the size limit. Owned by whoever holds the commit lock.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::error::{Error, Result};
use crate::storage::{Mapping, Storage, StorageFile};
use crate::wal::format::{
    self, EncodedBatch, RECORD_HEADER_BYTES, SEGMENT_FORMAT_VERSION, SEGMENT_HEADER_BYTES,
};
use crate::wal::segment;

/// Where a record landed.
#[derive(Debug, Clone, Copy)]
pub struct Placed {
    /// First LSN of the segment holding it.
    pub segment: u64,
    /// Offset of its header in that segment.
    pub offset: u64,
    /// Header + payload bytes.
    pub total_bytes: u64,
}

/// A roll: the segment sealed, mapped afresh at its final length (it may
/// have outgrown its old mapping), and the segment created.
#[derive(Debug)]
pub struct RolledSegment {
    /// First LSN of the segment sealed.
    pub sealed_first_lsn: u64,
    /// The sealed segment's new mapping.
    pub sealed_map: Arc<Mapping>,
    /// Its first LSN.
    pub first_lsn: u64,
    /// Its path.
    pub path: PathBuf,
    /// Its mapping.
    pub map: Arc<Mapping>,
}

/// A record to write: its batch, first LSN and first stream version. The
/// writer fills in the header, since only it knows how far the segment
/// the record lands in is synced.
pub type OutRecord<'a> = (&'a EncodedBatch, u64, u64);

/// How far a segment is known durable: raised after each fdatasync (by
/// the committing leader, the flusher, `Db::sync` or a snapshot) to the
/// offset written before it.
pub type SyncedTo = Arc<AtomicU64>;

/// Shared by every fdatasync of the tail, whoever makes it. Linux reports
/// a writeback error to one fdatasync only, so two running at once could
/// see one fail and the other succeed over the same lost pages: they take
/// turns, and after one failure every later one fails too.
#[derive(Debug, Clone, Default)]
struct SyncGate {
    turn: Arc<Mutex<()>>,
    failed: Arc<AtomicBool>,
}

impl SyncGate {
    /// fdatasyncs `file`, then raises `synced_to` to `written`.
    fn sync(
        &self,
        file: &dyn StorageFile,
        path: &Path,
        synced_to: &AtomicU64,
        written: u64,
    ) -> Result<()> {
        let _turn = self.turn.lock().unwrap_or_else(PoisonError::into_inner);
        let failed = || {
            Error::io(
                "fdatasync segment",
                path,
                std::io::Error::other("an earlier fdatasync of the log failed"),
            )
        };
        if self.failed.load(Ordering::Acquire) {
            return Err(failed());
        }
        if let Err(e) = file.sync_data() {
            self.failed.store(true, Ordering::Release);
            return Err(Error::io("fdatasync segment", path, e));
        }
        synced_to.fetch_max(written, Ordering::AcqRel);
        Ok(())
    }
}

/// An fdatasync of the tail to make without holding the writer: taken
/// after a write (so `written` covers every record written), used by
/// whoever syncs.
#[derive(Debug, Clone)]
pub struct TailSync {
    file: Arc<dyn StorageFile>,
    path: Arc<Path>,
    synced_to: SyncedTo,
    written: u64,
    gate: SyncGate,
    /// LSN of the last record below `written`.
    pub last_lsn: u64,
}

impl TailSync {
    /// fdatasyncs the segment that was the tail, making everything
    /// written to it before this handle was taken durable.
    pub fn sync(&self) -> Result<()> {
        self.gate.sync(
            self.file.as_ref(),
            &self.path,
            &self.synced_to,
            self.written,
        )
    }
}

/// Appends to the tail segment.
#[derive(Debug)]
pub struct TailWriter {
    fs: Arc<dyn Storage>,
    wal_dir: PathBuf,
    file: Arc<dyn StorageFile>,
    /// Shared with every sync handle taken (one per group): no copy each.
    path: Arc<Path>,
    segment_first_lsn: u64,
    offset: u64,
    segment_bytes_max: u64,
    /// Format version of the tail segment (an old tail is appended to in
    /// its own format).
    segment_version: u32,
    synced_to: SyncedTo,
    gate: SyncGate,
    buf: Vec<u8>,
    /// Bytes reserved for the tail so far: grown in steps (doubling from
    /// [`PREALLOCATE_BYTES_MIN`]) so that a small log stays small.
    allocated: u64,
    /// LSN of the last record written.
    last_lsn: u64,
}

/// The first reservation of a new segment; each growth doubles it, up to
/// the segment size.
pub const PREALLOCATE_BYTES_MIN: u64 = 64 << 10;

/// The reservation to make for a segment holding `needed` bytes: the next
/// step of the doubling from [`PREALLOCATE_BYTES_MIN`] at or past it,
/// capped at the segment size (a record larger than a segment gets what it
/// needs).
pub fn preallocation_step(allocated: u64, needed: u64, segment_bytes_max: u64) -> u64 {
    let mut step = allocated.max(PREALLOCATE_BYTES_MIN.min(segment_bytes_max));
    while step < needed && step < segment_bytes_max {
        step = step.saturating_mul(2);
    }
    step.min(segment_bytes_max).max(needed)
}

impl TailWriter {
    /// A writer appending at `offset` of the open segment `file`, of
    /// format `segment_version`, which is durable up to `offset` and has
    /// `allocated` bytes reserved; `last_lsn` is the last record's.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        fs: Arc<dyn Storage>,
        wal_dir: PathBuf,
        file: Arc<dyn StorageFile>,
        path: PathBuf,
        (segment_first_lsn, segment_version): (u64, u32),
        (offset, allocated): (u64, u64),
        segment_bytes_max: u64,
        last_lsn: u64,
    ) -> Self {
        TailWriter {
            allocated,
            last_lsn,
            fs,
            wal_dir,
            file,
            path: Arc::from(path),
            segment_first_lsn,
            offset,
            segment_bytes_max,
            segment_version,
            synced_to: Arc::new(AtomicU64::new(offset)),
            gate: SyncGate::default(),
            buf: Vec::new(),
        }
    }

    /// An fdatasync of everything written so far, to make after letting
    /// go of the commit lock (the flusher, `Db::sync`, a snapshot).
    pub fn sync_handle(&self) -> TailSync {
        TailSync {
            file: self.file.clone(),
            path: self.path.clone(),
            synced_to: self.synced_to.clone(),
            written: self.offset,
            gate: self.gate.clone(),
            last_lsn: self.last_lsn,
        }
    }

    /// LSN of the last record written.
    pub fn last_lsn(&self) -> u64 {
        self.last_lsn
    }

    /// First LSN of the tail segment.
    pub fn segment_first_lsn(&self) -> u64 {
        self.segment_first_lsn
    }

    /// Offset just past the last written record.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Writes `records` (already numbered, in LSN order) after the last
    /// one, rolling to new segments as they fill. Sealed segments are
    /// fsynced; the final tail is not: the caller syncs per its durability
    /// mode. Returns where each record landed and the segments created.
    pub fn write(
        &mut self,
        records: &[OutRecord<'_>],
    ) -> Result<(Vec<Placed>, Vec<RolledSegment>)> {
        let mut placed = Vec::with_capacity(records.len());
        let mut rolled = Vec::new();
        self.buf.clear();
        for &(batch, lsn, version) in records {
            let total = (RECORD_HEADER_BYTES + batch.payload.len()) as u64;
            let used = self.offset + self.buf.len() as u64;
            let segment_has_records = used > SEGMENT_HEADER_BYTES as u64;
            if segment_has_records && used + total > self.segment_bytes_max {
                self.flush_buf()?;
                rolled.push(self.roll(lsn)?);
            }
            placed.push(Placed {
                segment: self.segment_first_lsn,
                offset: self.offset + self.buf.len() as u64,
                total_bytes: total,
            });
            // Version 1 segments carry zero; segment sizes are validated
            // to fit a u32, and a record starts below the size limit.
            let synced_to = if self.segment_version >= 2 {
                let synced = self.synced_to.load(Ordering::Acquire);
                debug_assert!(synced <= self.offset + self.buf.len() as u64);
                // Never above the record's own offset, which is below the
                // segment size limit (u32::MAX): the conversion holds.
                u32::try_from(synced).unwrap_or(SEGMENT_HEADER_BYTES as u32)
            } else {
                0
            };
            let header = format::encode_record_header(batch, lsn, version, synced_to);
            self.buf.extend_from_slice(&header);
            self.buf.extend_from_slice(&batch.payload);
            self.last_lsn = lsn + u64::from(batch.count) - 1;
        }
        self.flush_buf()?;
        Ok((placed, rolled))
    }

    fn flush_buf(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let needed = self.offset + self.buf.len() as u64;
        if needed > self.allocated {
            let step = preallocation_step(self.allocated, needed, self.segment_bytes_max);
            // Best effort: without the reservation the write still works,
            // and the next fdatasync also records the new size.
            match self.file.allocate(step) {
                Ok(()) => self.allocated = step,
                Err(e) => {
                    tracing::warn!(segment = %self.path.display(), error = %e, "could not grow the segment's reservation");
                    self.allocated = needed;
                }
            }
        }
        self.file
            .write_all_at(&self.buf, self.offset)
            .map_err(|e| Error::io("write segment", &*self.path, e))?;
        self.offset += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    /// fdatasyncs the tail segment.
    pub fn sync(&self) -> Result<()> {
        self.gate
            .sync(self.file.as_ref(), &self.path, &self.synced_to, self.offset)
    }

    /// Format version of the tail segment.
    pub fn segment_version(&self) -> u32 {
        self.segment_version
    }

    /// Seals the tail, which must hold a record, and starts a new segment
    /// at `first_lsn` (the next LSN): what open does to a tail of an older
    /// format.
    pub fn roll_to(&mut self, first_lsn: u64) -> Result<RolledSegment> {
        self.roll(first_lsn)
    }

    /// Seals the tail (fsync, cut the preallocated rest, fsync) and opens a
    /// new segment starting at `first_lsn`.
    fn roll(&mut self, first_lsn: u64) -> Result<RolledSegment> {
        self.sync()?;
        crate::failpoint::hit("roll.before_truncate");
        self.file
            .set_len(self.offset)
            .map_err(|e| Error::io("truncate sealed segment", &*self.path, e))?;
        self.file
            .sync_all()
            .map_err(|e| Error::io("fsync sealed segment", &*self.path, e))?;
        let sealed_map = segment::map_segment(self.file.as_ref(), &self.path)?;
        let sealed_first_lsn = self.segment_first_lsn;
        let allocated = PREALLOCATE_BYTES_MIN.min(self.segment_bytes_max);
        let (file, path) =
            segment::create_segment(self.fs.as_ref(), &self.wal_dir, first_lsn, allocated)?;
        self.allocated = allocated;
        let map = segment::map_segment(file.as_ref(), &path)?;
        self.file = file;
        self.path = Arc::from(path.as_path());
        self.segment_first_lsn = first_lsn;
        self.offset = SEGMENT_HEADER_BYTES as u64;
        self.segment_version = SEGMENT_FORMAT_VERSION;
        // The header was synced when the segment was made.
        self.synced_to = Arc::new(AtomicU64::new(self.offset));
        Ok(RolledSegment {
            sealed_first_lsn,
            sealed_map,
            first_lsn,
            path,
            map,
        })
    }

    /// Maps the tail segment afresh (after it grew past its mapping).
    pub fn map(&self) -> Result<Arc<Mapping>> {
        segment::map_segment(self.file.as_ref(), &self.path)
    }
}
