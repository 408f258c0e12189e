//! The in-memory index over the log: where each segment is, where records
//! start (sparsely), and where each stream's batches are.
//!
//! Reading a page costs one binary search plus at most
//! [`SPARSE_INDEX_EVERY_BYTES`] of scanning, however long the history is.

use std::collections::{BTreeMap, HashMap};
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

/// One batch of a stream: enough to find its record.
#[derive(Debug, Clone, Copy)]
struct StreamBatch {
    first_version: u64,
    first_lsn: u64,
    offset: u64,
}

#[derive(Debug, Default)]
struct StreamEntry {
    version: u64,
    /// The first version the log still holds (earlier ones were compacted).
    first_held_version: u64,
    batches: Vec<StreamBatch>,
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
    streams: HashMap<Box<str>, StreamEntry>,
    /// LSN of the last committed event; 0 when the log is empty.
    pub last_lsn: u64,
    /// Committed records (batches).
    pub records: u64,
    /// Committed events.
    pub events: u64,
}

/// A stream's version did not continue from the previous batch.
#[derive(Debug)]
pub struct VersionGap {
    /// Version the batch should have started at.
    pub expected: u64,
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
    #[allow(clippy::too_many_arguments)]
    pub fn add_record(
        &mut self,
        segment: u64,
        offset: u64,
        total_bytes: u64,
        stream: &str,
        first_lsn: u64,
        first_version: u64,
        count: u32,
    ) -> Result<(), VersionGap> {
        let log_compacted = self.first_lsn().is_some_and(|first| first > 1);
        let entry = match self.streams.get_mut(stream) {
            Some(e) => e,
            None => self.streams.entry(stream.into()).or_default(),
        };
        if entry.batches.is_empty() && entry.version == 0 {
            // The first batch of this stream the log holds. In a compacted
            // log its earlier versions live in the snapshot.
            if log_compacted {
                entry.version = first_version - 1;
            }
            entry.first_held_version = entry.version + 1;
        }
        if first_version != entry.version + 1 {
            return Err(VersionGap {
                expected: entry.version + 1,
            });
        }
        entry.version += u64::from(count);
        entry.batches.push(StreamBatch {
            first_version,
            first_lsn,
            offset,
        });
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
        Ok(())
    }

    /// Records the stream versions a snapshot holds, for streams the
    /// (compacted) log holds nothing of.
    pub fn seed_stream_versions(&mut self, streams: &[(String, u64)]) {
        for (name, version) in streams {
            if !self.streams.contains_key(name.as_str()) {
                self.streams.insert(
                    name.as_str().into(),
                    StreamEntry {
                        version: *version,
                        first_held_version: version + 1,
                        batches: Vec::new(),
                    },
                );
            }
        }
    }

    /// Every stream with its version.
    pub fn stream_versions(&self) -> Vec<(String, u64)> {
        let mut versions: Vec<(String, u64)> = self
            .streams
            .iter()
            .map(|(k, e)| (k.to_string(), e.version))
            .collect();
        // In name order, so a snapshot's bytes do not depend on hashing.
        versions.sort_unstable();
        versions
    }

    /// The first version of `stream` the log holds (1 if never compacted).
    pub fn stream_first_held_version(&self, stream: &str) -> u64 {
        self.streams
            .get(stream)
            .map_or(1, |e| e.first_held_version.max(1))
    }

    /// Removes every segment whose events are all at or below `lsn`, but
    /// never the tail; returns their paths for the caller to delete, and
    /// forgets the stream batches they held.
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
        if let Some(new_first) = self.first_lsn() {
            for entry in self.streams.values_mut() {
                let keep_from = entry.batches.partition_point(|b| b.first_lsn < new_first);
                if keep_from > 0 {
                    entry.batches.drain(..keep_from);
                    entry.first_held_version = entry
                        .batches
                        .first()
                        .map_or(entry.version + 1, |b| b.first_version);
                }
            }
        }
        paths
    }

    /// A stream's version (number of events); 0 for a stream never written.
    pub fn stream_version(&self, stream: &str) -> u64 {
        self.streams.get(stream).map_or(0, |e| e.version)
    }

    /// Number of streams.
    pub fn stream_count(&self) -> usize {
        self.streams.len()
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

    /// Slices holding, in order, at most `batches_max` batches of `stream`
    /// from the one holding `from_version` on; each slice starts exactly at
    /// a record of the stream.
    pub fn stream_slices(
        &self,
        stream: &str,
        from_version: u64,
        batches_max: usize,
    ) -> Vec<SegmentSlice> {
        let Some(entry) = self.streams.get(stream) else {
            return Vec::new();
        };
        let from_version = from_version.max(1);
        let i = entry
            .batches
            .partition_point(|b| b.first_version <= from_version);
        let first = i.saturating_sub(1);
        entry
            .batches
            .iter()
            .skip(first)
            .take(batches_max)
            .filter_map(|b| {
                let (_, seg) = self.segments.range(..=b.first_lsn).next_back()?;
                Some(SegmentSlice {
                    path: seg.path.clone(),
                    map: seg.map.clone(),
                    start: b.offset,
                    end: seg.end,
                })
            })
            .collect()
    }

    /// The first version of the stream whose event LSN is at least `lsn`:
    /// lets a stream be read "from an LSN".
    pub fn stream_version_at_lsn(&self, stream: &str, lsn: u64) -> u64 {
        let Some(entry) = self.streams.get(stream) else {
            return 1;
        };
        let i = entry.batches.partition_point(|b| b.first_lsn < lsn);
        match i.checked_sub(1).and_then(|j| entry.batches.get(j)) {
            // The batch before may still reach `lsn`; reading from its
            // first version and filtering by LSN is exact.
            Some(b) => b.first_version,
            // Every held batch is at or after `lsn`: start at the first
            // version the log holds (earlier ones may be compacted).
            None => entry.first_held_version.max(1),
        }
    }
}
