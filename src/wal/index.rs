//! The in-memory index over the log: where each segment is and where
//! records start (sparsely). Streams are the store's business: memory
//! here is a few words per segment and per 4 KiB of log, whatever the
//! number of streams.
//!
//! Reading from an LSN costs one binary search plus at most
//! [`SPARSE_INDEX_EVERY_BYTES`] of scanning.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::storage::Mapping;

/// A sparse index entry is kept for the first record at or after every
/// this many bytes of a segment.
pub const SPARSE_INDEX_EVERY_BYTES: u64 = 4096;

/// One segment as the index knows it.
#[derive(Debug)]
pub struct SegmentEntry {
    /// Path of the file (shared with every slice handed to readers, which
    /// need it only to name the file in an error).
    pub path: Arc<Path>,
    /// The file, mapped. For the tail it covers the preallocated size.
    pub map: Arc<Mapping>,
    /// Offset just past the last committed record.
    pub end: u64,
    /// LSN of the last committed event (`first_lsn - 1` when empty).
    pub last_lsn: u64,
    /// `(first_lsn, offset)` of records, sparse.
    sparse: Vec<(u64, u64)>,
    /// Records in this segment.
    records: u64,
}

/// A contiguous range of committed bytes to decode, outside any lock.
#[derive(Debug, Clone)]
pub struct SegmentSlice {
    /// The segment's file.
    pub path: Arc<Path>,
    /// Its mapping.
    pub map: Arc<Mapping>,
    /// Where to start decoding.
    pub start: u64,
    /// Where committed bytes end.
    pub end: u64,
}

impl SegmentSlice {
    /// The bytes from `start` to `end`; `None` if the mapping does not
    /// cover them (an engine bug, reported rather than read as empty).
    pub fn bytes(&self) -> Option<&[u8]> {
        self.map.get(self.start as usize..self.end as usize)
    }
}

/// The whole index.
#[derive(Debug, Default)]
pub struct LogIndex {
    segments: BTreeMap<u64, SegmentEntry>,
    /// LSN of the last committed event; 0 when the log is empty.
    pub last_lsn: u64,
    /// Committed records (batches).
    pub records: u64,
    /// Committed events.
    pub events: u64,
}

impl LogIndex {
    /// Registers a segment (empty so far) starting at `first_lsn`.
    pub fn add_segment(&mut self, first_lsn: u64, path: PathBuf, map: Arc<Mapping>, end: u64) {
        // A segment starting at N means the log holds everything before N
        // (or held it, before compaction).
        self.last_lsn = self.last_lsn.max(first_lsn - 1);
        self.segments.insert(
            first_lsn,
            SegmentEntry {
                path: Arc::from(path),
                map,
                end,
                last_lsn: first_lsn - 1,
                sparse: Vec::new(),
                records: 0,
            },
        );
    }

    /// Replaces the mapping of a segment (the tail grew past it).
    pub fn remap_segment(&mut self, first_lsn: u64, map: Arc<Mapping>) {
        if let Some(s) = self.segments.get_mut(&first_lsn) {
            s.map = map;
        }
    }

    /// The segments, in LSN order.
    pub fn segments(&self) -> impl Iterator<Item = (&u64, &SegmentEntry)> {
        self.segments.iter()
    }

    /// Records a committed record of `segment` at `offset`.
    pub fn add_record(
        &mut self,
        segment: u64,
        offset: u64,
        total_bytes: u64,
        first_lsn: u64,
        count: u32,
    ) {
        let last_lsn = first_lsn + u64::from(count) - 1;
        if let Some(seg) = self.segments.get_mut(&segment) {
            let due = seg
                .sparse
                .last()
                .is_none_or(|&(_, at)| offset >= at + SPARSE_INDEX_EVERY_BYTES);
            if due {
                seg.sparse.push((first_lsn, offset));
            }
            seg.end = offset + total_bytes;
            seg.last_lsn = last_lsn;
            seg.records += 1;
        }
        self.last_lsn = last_lsn;
        self.records += 1;
        self.events += u64::from(count);
    }

    /// Removes every segment whose events are all at or below `lsn`, but
    /// never the tail; returns their paths for the caller to delete.
    pub fn compact_through(&mut self, lsn: u64) -> Vec<PathBuf> {
        let tail = self.segments.keys().next_back().copied();
        let doomed: Vec<u64> = self
            .segments
            .iter()
            .filter(|(first, seg)| Some(**first) != tail && seg.last_lsn <= lsn)
            .map(|(first, _)| *first)
            .collect();
        let mut paths = Vec::new();
        for first in doomed {
            if let Some(seg) = self.segments.remove(&first) {
                self.records -= seg.records;
                self.events -= (seg.last_lsn + 1).saturating_sub(first);
                paths.push(seg.path.to_path_buf());
            }
        }
        paths
    }

    /// First LSN still held by the log (1 for a log never compacted);
    /// `None` when there are no segments.
    pub fn first_lsn(&self) -> Option<u64> {
        self.segments.keys().next().copied()
    }

    /// Slices to decode, in order, to read from `lsn` on. The first slice
    /// starts at the record holding `lsn` or a little before it.
    pub fn slices_from(&self, lsn: u64) -> Vec<SegmentSlice> {
        let lsn = lsn.max(1);
        let mut out = Vec::new();
        let start_key = self
            .segments
            .range(..=lsn)
            .next_back()
            .map(|(k, _)| *k)
            .or_else(|| self.first_lsn());
        let Some(start_key) = start_key else {
            return out;
        };
        for (first, seg) in self.segments.range(start_key..) {
            let start = if *first == start_key {
                let i = seg.sparse.partition_point(|&(l, _)| l <= lsn);
                match i.checked_sub(1).and_then(|i| seg.sparse.get(i)) {
                    Some(&(_, off)) => off,
                    None => crate::wal::format::SEGMENT_HEADER_BYTES as u64,
                }
            } else {
                crate::wal::format::SEGMENT_HEADER_BYTES as u64
            };
            out.push(SegmentSlice {
                path: seg.path.clone(),
                map: seg.map.clone(),
                start,
                end: seg.end,
            });
        }
        out
    }
}
