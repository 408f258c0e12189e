//! The tail writer: appends records to the newest segment and rolls to a
//! new one at the size limit. Owned by whoever holds the commit lock.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::storage::{Mapping, Storage, StorageFile};
use crate::wal::format::{RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES};
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

/// A record to write: its header and payload.
pub type OutRecord<'a> = ([u8; RECORD_HEADER_BYTES], &'a [u8]);

/// Appends to the tail segment.
#[derive(Debug)]
pub struct TailWriter {
    fs: Arc<dyn Storage>,
    wal_dir: PathBuf,
    file: Arc<dyn StorageFile>,
    path: PathBuf,
    segment_first_lsn: u64,
    offset: u64,
    segment_bytes_max: u64,
    buf: Vec<u8>,
}

impl TailWriter {
    /// A writer appending at `offset` of the open segment `file`.
    pub fn new(
        fs: Arc<dyn Storage>,
        wal_dir: PathBuf,
        file: Arc<dyn StorageFile>,
        path: PathBuf,
        segment_first_lsn: u64,
        offset: u64,
        segment_bytes_max: u64,
    ) -> Self {
        TailWriter {
            fs,
            wal_dir,
            file,
            path,
            segment_first_lsn,
            offset,
            segment_bytes_max,
            buf: Vec::new(),
        }
    }

    /// The tail segment's file, for a flusher to fsync without the lock.
    pub fn file(&self) -> Arc<dyn StorageFile> {
        self.file.clone()
    }

    /// The tail segment's path.
    pub fn path(&self) -> &Path {
        &self.path
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
        first_lsns: &[u64],
    ) -> Result<(Vec<Placed>, Vec<RolledSegment>)> {
        let mut placed = Vec::with_capacity(records.len());
        let mut rolled = Vec::new();
        self.buf.clear();
        for ((header, payload), &lsn) in records.iter().zip(first_lsns) {
            let total = (RECORD_HEADER_BYTES + payload.len()) as u64;
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
            self.buf.extend_from_slice(header);
            self.buf.extend_from_slice(payload);
        }
        self.flush_buf()?;
        Ok((placed, rolled))
    }

    fn flush_buf(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.file
            .write_all_at(&self.buf, self.offset)
            .map_err(|e| Error::io("write segment", &self.path, e))?;
        self.offset += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    /// fdatasyncs the tail segment.
    pub fn sync(&self) -> Result<()> {
        self.file
            .sync_data()
            .map_err(|e| Error::io("fdatasync segment", &self.path, e))
    }

    /// Seals the tail (fsync, cut the preallocated rest, fsync) and opens a
    /// new segment starting at `first_lsn`.
    fn roll(&mut self, first_lsn: u64) -> Result<RolledSegment> {
        self.sync()?;
        crate::failpoint::hit("roll.before_truncate");
        self.file
            .set_len(self.offset)
            .map_err(|e| Error::io("truncate sealed segment", &self.path, e))?;
        self.file
            .sync_all()
            .map_err(|e| Error::io("fsync sealed segment", &self.path, e))?;
        let sealed_map = segment::map_segment(self.file.as_ref(), &self.path)?;
        let sealed_first_lsn = self.segment_first_lsn;
        let (file, path) = segment::create_segment(
            self.fs.as_ref(),
            &self.wal_dir,
            first_lsn,
            self.segment_bytes_max,
        )?;
        let map = segment::map_segment(file.as_ref(), &path)?;
        self.file = file;
        self.path = path.clone();
        self.segment_first_lsn = first_lsn;
        self.offset = SEGMENT_HEADER_BYTES as u64;
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
