//! Walking a segment's bytes record by record, and telling a torn tail
//! from corruption.
//!
//! The rule (docs/DESIGN.md, "Recovery rules"): the first bad record of a
//! segment is a *torn tail* when nothing valid follows it, the leftover of
//! a write that never completed and was never acknowledged. If a valid
//! record follows, it depends on what that record says was durable when
//! it was written (format version 2): if the bad bytes lay below that
//! offset, they had been synced, so they are *corruption*, and nothing may
//! be cut without the operator saying so; if not, the bad bytes and the
//! records after them were one unsynced run that reached the disk out of
//! order, and the whole run is a torn tail. In a version 1 segment, which
//! does not record it, any valid record after bad bytes is corruption.

use std::path::Path;

use crate::error::{Error, Result};
use crate::options::RECORD_BYTES_LIMIT;
use crate::wal::format::{
    self, HeaderError, RECORD_HEADER_BYTES, RecordError, RecordView, SEGMENT_FORMAT_VERSION,
    SEGMENT_HEADER_BYTES, SegmentHeader,
};

/// How the written part of a segment ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SegmentEnd {
    /// Every byte up to `end` is valid records; after it only zeros (the
    /// preallocated part) or nothing.
    Clean {
        /// Offset just past the last valid record.
        end: u64,
    },
    /// Valid records up to `end`, then bytes that are not a record and
    /// are followed by no valid record.
    TornTail {
        /// Offset just past the last valid record.
        end: u64,
        /// Why the bytes at `end` are not a record.
        reason: String,
        /// Bytes from `end` to the last non-zero byte of the file.
        garbage_bytes: u64,
        /// Valid records after the bad bytes that were written before
        /// those bytes were synced: one unsynced run, cut with them.
        unsynced_records_after: u64,
    },
    /// A bad record with a valid record after it, or a valid record out of
    /// LSN order.
    Corrupt {
        /// Offset of the first bad byte.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
}

/// What scanning one segment found.
#[derive(Debug, Clone)]
pub struct SegmentScan {
    /// LSN the next record after the last valid one must carry.
    pub next_lsn: u64,
    /// How the segment ends.
    pub end: SegmentEnd,
}

/// Checks the header of the segment at `path` (named for `named_lsn`).
pub fn check_segment_header(bytes: &[u8], path: &Path, named_lsn: u64) -> Result<SegmentHeader> {
    let header = format::decode_segment_header(bytes).map_err(|e| match e {
        HeaderError::UnsupportedVersion(found) => Error::UnsupportedVersion {
            path: path.to_path_buf(),
            found,
            supported: SEGMENT_FORMAT_VERSION,
        },
        other => Error::corrupt(path, 0, other.to_string()),
    })?;
    let first_lsn = header.first_lsn;
    if first_lsn != named_lsn {
        return Err(Error::corrupt(
            path,
            16,
            format!(
                "header says the first LSN is {first_lsn} but the file is named for {named_lsn}"
            ),
        ));
    }
    Ok(header)
}

/// Whether every byte of `bytes` from `from` on is zero: the plain way,
/// touching every page.
pub fn zero_from(bytes: &[u8], from: u64) -> bool {
    bytes.get(from as usize..).is_none_or(all_zero)
}

/// Whether every byte is zero. Folds 4 KiB at a time without an early
/// exit inside a block, which the compiler vectorises.
pub fn all_zero(bytes: &[u8]) -> bool {
    bytes
        .chunks(4096)
        .all(|block| block.iter().fold(0u8, |acc, &b| acc | b) == 0)
}

/// Scans a whole segment, calling `visit(offset, record)` for each valid
/// record in order. `bytes` is the entire file; `is_zero_from(offset)`
/// says whether nothing but zeros follows `offset` (see [`zero_from`];
/// recovery answers it from the file's data extents instead, so that the
/// preallocated rest of a tail is not read page by page).
pub fn scan_segment(
    bytes: &[u8],
    path: &Path,
    named_lsn: u64,
    record_bytes_max: u64,
    is_zero_from: &dyn Fn(u64) -> bool,
    mut visit: impl FnMut(u64, &RecordView<'_>) -> Result<()>,
) -> Result<SegmentScan> {
    let header = check_segment_header(bytes, path, named_lsn)?;
    let first_lsn = header.first_lsn;
    let mut offset = SEGMENT_HEADER_BYTES as u64;
    let mut next_lsn = first_lsn;
    let end = loop {
        let rest = bytes.get(offset as usize..).unwrap_or(&[]);
        let zero_header = rest
            .get(..RECORD_HEADER_BYTES)
            .map_or_else(|| all_zero(rest), all_zero);
        if zero_header && is_zero_from(offset) {
            // Nothing, or only the preallocated zeros, remains.
            break SegmentEnd::Clean { end: offset };
        }
        let bad = if format::is_zero_header(rest) {
            "a zeroed record header followed by non-zero bytes".to_string()
        } else {
            match format::decode_record(rest, record_bytes_max) {
                // CRC-valid but impossible: a writer's bug or a forgery,
                // never a tear.
                Ok(record) if !synced_to_fits(header.version, &record, offset) => {
                    break SegmentEnd::Corrupt {
                        offset,
                        reason: format!(
                            "record says its segment was synced to byte {}, impossible for a version {} record at byte {offset}",
                            record.synced_to, header.version
                        ),
                    };
                }
                Ok(record) if record.first_lsn == next_lsn => {
                    visit(offset, &record)?;
                    next_lsn = record.last_lsn() + 1;
                    offset += record.total_bytes;
                    continue;
                }
                Ok(record) => {
                    break SegmentEnd::Corrupt {
                        offset,
                        reason: format!(
                            "LSN gap: expected LSN {next_lsn}, found {}",
                            record.first_lsn
                        ),
                    };
                }
                Err(e @ RecordError::AboveLimit { .. }) => {
                    return Err(Error::RecordAboveLimit {
                        segment: path.to_path_buf(),
                        offset,
                        reason: e.to_string(),
                    });
                }
                Err(e) => e.to_string(),
            }
        };
        // The search after bad bytes accepts records of any size the
        // format allows: a synced record written under a larger
        // `record_bytes_max` still proves that what lies before it was
        // synced. Decoding borrows, so a large length costs no memory.
        break classify_bad(
            bytes,
            header.version,
            offset,
            next_lsn,
            RECORD_BYTES_LIMIT,
            bad,
        );
    };
    Ok(SegmentScan { next_lsn, end })
}

/// Whether a record's `synced_to` is possible: zero in a version 1
/// segment; in a later one, between the header's end and the record itself.
fn synced_to_fits(version: u32, record: &RecordView<'_>, offset: u64) -> bool {
    let synced_to = u64::from(record.synced_to);
    if version < 2 {
        synced_to == 0
    } else {
        (SEGMENT_HEADER_BYTES as u64..=offset).contains(&synced_to)
    }
}

/// Decides whether the bad bytes at `offset` are a torn tail or corruption
/// (the rule is at the top of this module).
fn classify_bad(
    bytes: &[u8],
    version: u32,
    offset: u64,
    next_lsn: u64,
    record_bytes_max: u64,
    reason: String,
) -> SegmentEnd {
    // The search stops at the last non-zero byte, found once.
    let written = bytes.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
    let bytes_written = bytes.get(..written).unwrap_or(&[]);
    let mut from = offset + 1;
    let mut lsn_min = next_lsn;
    let mut unsynced_after = 0u64;
    loop {
        // After a record, the next one most likely starts right behind it.
        let direct = bytes_written
            .get(from as usize..)
            .and_then(|rest| format::decode_record(rest, record_bytes_max).ok())
            .filter(|r| r.first_lsn >= lsn_min && unsynced_after > 0)
            .map(|_| from);
        let Some(valid_at) =
            direct.or_else(|| find_valid_record(bytes_written, from, lsn_min, record_bytes_max))
        else {
            break;
        };
        let Some(record) = bytes_written
            .get(valid_at as usize..)
            .and_then(|rest| format::decode_record(rest, record_bytes_max).ok())
        else {
            break;
        };
        if version < 2 {
            return SegmentEnd::Corrupt {
                offset,
                reason: format!("{reason}; a valid record follows at byte {valid_at}"),
            };
        }
        if !synced_to_fits(version, &record, valid_at) || u64::from(record.synced_to) > offset {
            return SegmentEnd::Corrupt {
                offset,
                reason: format!(
                    "{reason}; the record at byte {valid_at} was written after the segment was synced to byte {}, so these bytes had been synced",
                    record.synced_to
                ),
            };
        }
        unsynced_after += 1;
        lsn_min = record.last_lsn() + 1;
        from = valid_at + record.total_bytes;
    }
    let rest = bytes.get(offset as usize..).unwrap_or(&[]);
    let garbage_bytes = rest
        .iter()
        .rposition(|&b| b != 0)
        .map_or(0, |p| p as u64 + 1);
    let reason = if unsynced_after > 0 {
        format!(
            "{reason}; {unsynced_after} valid record(s) after it were written before it was synced (an unsynced write reached the disk out of order)"
        )
    } else {
        reason
    };
    SegmentEnd::TornTail {
        end: offset,
        reason,
        garbage_bytes,
        unsynced_records_after: unsynced_after,
    }
}

/// Finds the first offset at or after `from` holding a valid record whose
/// first LSN is at least `lsn_min`. Only on the error path: it tries every
/// byte offset, with cheap field checks before the CRC.
///
/// `bytes` ends at the last non-zero byte (the caller cuts it there, once),
/// and an LSN can be at most one per remaining byte ahead (an event takes at least a byte), which
/// rules out nearly every false candidate before its CRC is computed.
fn find_valid_record(bytes: &[u8], from: u64, lsn_min: u64, record_bytes_max: u64) -> Option<u64> {
    let last = bytes.len().checked_sub(RECORD_HEADER_BYTES)?;
    (from as usize..=last)
        .find(|&pos| {
            let Some(rest) = bytes.get(pos..) else {
                return false;
            };
            let lsn = rest
                .get(8..16)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_le_bytes)
                .unwrap_or(0);
            if lsn < lsn_min || lsn - lsn_min > (bytes.len() - pos) as u64 {
                return false;
            }
            format::decode_record(rest, record_bytes_max).is_ok()
        })
        .map(|p| p as u64)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::wal::format::{encode_batch, encode_record_header, encode_segment_header};

    fn segment(records: &[(u64, &[u8])], zeros: usize) -> (Vec<u8>, Vec<u64>) {
        let mut bytes = encode_segment_header(records.first().map_or(1, |r| r.0)).to_vec();
        let mut offsets = vec![];
        for (i, (lsn, data)) in records.iter().enumerate() {
            offsets.push(bytes.len() as u64);
            let b = encode_batch("s", &[*data]);
            // Each record in a group of its own: synced up to itself.
            let synced_to = bytes.len() as u32;
            bytes.extend_from_slice(&encode_record_header(&b, *lsn, i as u64 + 1, synced_to));
            bytes.extend_from_slice(&b.payload);
        }
        bytes.resize(bytes.len() + zeros, 0);
        (bytes, offsets)
    }

    fn scan(bytes: &[u8]) -> SegmentScan {
        scan_segment(
            bytes,
            Path::new("x.wal"),
            1,
            1 << 20,
            &|at| zero_from(bytes, at),
            |_, _| Ok(()),
        )
        .unwrap()
    }

    #[test]
    fn clean_with_and_without_preallocated_zeros() {
        for zeros in [0, 5, 4096] {
            let (bytes, _) = segment(&[(1, b"a"), (2, b"b")], zeros);
            let s = scan(&bytes);
            assert_eq!(s.next_lsn, 3);
            assert_eq!(
                s.end,
                SegmentEnd::Clean {
                    end: (bytes.len() - zeros) as u64
                }
            );
        }
    }

    #[test]
    fn flipped_middle_record_is_corrupt_and_flipped_last_is_torn() {
        let (bytes, offsets) = segment(&[(1, b"aaaa"), (2, b"bbbb"), (3, b"cccc")], 100);
        let mut middle = bytes.clone();
        middle[offsets[1] as usize + 40] ^= 0x10;
        match scan(&middle).end {
            SegmentEnd::Corrupt { offset, .. } => assert_eq!(offset, offsets[1]),
            other => panic!("{other:?}"),
        }
        let mut last = bytes.clone();
        last[offsets[2] as usize + 40] ^= 0x10;
        match scan(&last).end {
            SegmentEnd::TornTail { end, .. } => assert_eq!(end, offsets[2]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn lsn_gap_is_corrupt() {
        let (bytes, offsets) = segment(&[(1, b"a"), (3, b"b")], 0);
        assert_eq!(
            scan(&bytes).end,
            SegmentEnd::Corrupt {
                offset: offsets[1],
                reason: "LSN gap: expected LSN 2, found 3".into()
            }
        );
    }
}
