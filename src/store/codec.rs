//! The bytes of the store's values (docs/FORMAT.md, "Store").
//!
//! Every value carries a CRC-32 that also covers its key, so a flipped bit
//! in either, or a value found under another key, is caught when it is
//! read: redb checks its pages' checksums only in an integrity check.
//! Integers are little-endian and fixed-width; decoding never panics and
//! checks every length against the bytes there before using it.

use crate::retention::Retention;
use crate::wal::format::{self, EventBytes};

/// Bytes before a history row's payload.
pub const HISTORY_ROW_HEADER_BYTES: usize = 24;
/// Bytes of a stream's meta value.
pub const STREAM_META_BYTES: usize = 61;
/// Bytes of a view's meta value.
pub const VIEW_META_BYTES: usize = 16;
/// Bytes the CRC adds in front of a view table's value.
pub const VIEW_VALUE_CRC_BYTES: usize = 4;

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

/// Copies `b` into `v` at `at` (within bounds by construction).
fn put(v: &mut [u8], at: usize, b: &[u8]) {
    if let Some(dst) = v.get_mut(at..at + b.len()) {
        dst.copy_from_slice(b);
    }
}

/// CRC-32 of `key` followed by `rest`.
fn crc_of(key: &[u8], rest: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(key);
    h.update(rest);
    h.finalize()
}

/// Checks the CRC in the first four bytes of `value` against `key` and
/// the rest of `value`.
fn check_crc(key: &[u8], value: &[u8]) -> Result<(), String> {
    let stored = u32_at(value, 0).ok_or_else(|| format!("{} bytes, too short", value.len()))?;
    let computed = crc_of(key, value.get(4..).unwrap_or_default());
    if stored != computed {
        return Err(format!(
            "CRC mismatch (stored {stored:#010x}, computed {computed:#010x})"
        ));
    }
    Ok(())
}

/// One stored batch of the history: the events of one stream appended
/// together, under the LSN of its first event.
///
/// ```text
/// 0  u32 crc            CRC-32 of the key (first LSN, u64 LE) and bytes 4..
/// 4  u64 first_version
/// 12 u32 count
/// 16 u64 stored_at_ms   when the store took it in (max-age retention)
/// 24 payload            MessagePack [stream, [bin, ...]] as in the WAL
/// ```
#[derive(Debug, Clone, Copy)]
pub struct HistoryRow<'a> {
    /// LSN of the first event.
    pub first_lsn: u64,
    /// Stream version of the first event.
    pub first_version: u64,
    /// Events in the row.
    pub count: u32,
    /// Milliseconds since the Unix epoch when the store took it in.
    pub stored_at_ms: u64,
    /// The stream.
    pub stream: &'a str,
    events_bytes: &'a [u8],
}

impl<'a> HistoryRow<'a> {
    /// The events' data, in order.
    pub fn events(&self) -> EventBytes<'a> {
        EventBytes::new(self.events_bytes, self.count)
    }
}

/// Encodes a history row.
pub fn encode_history_row(
    first_lsn: u64,
    first_version: u64,
    count: u32,
    stored_at_ms: u64,
    payload: &[u8],
) -> Vec<u8> {
    let mut v = Vec::with_capacity(HISTORY_ROW_HEADER_BYTES + payload.len());
    v.extend_from_slice(&[0; 4]);
    v.extend_from_slice(&first_version.to_le_bytes());
    v.extend_from_slice(&count.to_le_bytes());
    v.extend_from_slice(&stored_at_ms.to_le_bytes());
    v.extend_from_slice(payload);
    let crc = crc_of(&first_lsn.to_le_bytes(), v.get(4..).unwrap_or_default());
    v.get_mut(..4)
        .unwrap_or_default()
        .copy_from_slice(&crc.to_le_bytes());
    v
}

/// Decodes and checks the history row stored under `first_lsn`.
pub fn decode_history_row(first_lsn: u64, value: &[u8]) -> Result<HistoryRow<'_>, String> {
    check_crc(&first_lsn.to_le_bytes(), value)?;
    let short = || format!("{} bytes, shorter than a row header", value.len());
    let first_version = u64_at(value, 4).ok_or_else(short)?;
    let count = u32_at(value, 12).ok_or_else(short)?;
    let stored_at_ms = u64_at(value, 16).ok_or_else(short)?;
    if count == 0 || first_version == 0 || first_lsn == 0 {
        return Err("zero count, version or LSN".into());
    }
    if first_lsn.checked_add(u64::from(count)).is_none()
        || first_version.checked_add(u64::from(count)).is_none()
    {
        return Err("LSN or version out of range".into());
    }
    let payload = value.get(HISTORY_ROW_HEADER_BYTES..).ok_or_else(short)?;
    let (stream, events_bytes) =
        format::decode_payload(payload, count).map_err(|e| e.to_string())?;
    Ok(HistoryRow {
        first_lsn,
        first_version,
        count,
        stored_at_ms,
        stream,
        events_bytes,
    })
}

/// What the store knows of one stream.
///
/// ```text
/// 0  u32 crc                 CRC-32 of the key (the name) and bytes 4..
/// 4  u64 version             events ever appended
/// 12 u64 first_held_version  the first version still in the history
///                            (version + 1 when none is)
/// 20 u64 last_lsn            LSN of its last event
/// 28 u8  retention flags     bit 0 max count, bit 1 max age, bit 2 truncate before
/// 29 u64 max_count
/// 37 u64 max_age_ms
/// 45 u64 truncate_before
/// 53 u64 removed_through_lsn the LSN of the last event retention removed
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StreamMeta {
    /// Events ever appended (the stream's version).
    pub version: u64,
    /// The first version whose event the history still holds.
    pub first_held_version: u64,
    /// LSN of the stream's last event.
    pub last_lsn: u64,
    /// What the history keeps.
    pub retention: Retention,
    /// LSN of the last event retention removed (0: none).
    pub removed_through_lsn: u64,
}

impl StreamMeta {
    /// A stream that does not exist yet.
    pub fn new() -> StreamMeta {
        StreamMeta {
            version: 0,
            first_held_version: 1,
            last_lsn: 0,
            retention: Retention::default(),
            removed_through_lsn: 0,
        }
    }
}

/// Encodes a stream's meta value.
pub fn encode_stream_meta(name: &str, m: &StreamMeta) -> [u8; STREAM_META_BYTES] {
    let mut v = [0u8; STREAM_META_BYTES];
    let r = &m.retention;
    let flags = u8::from(r.max_count.is_some())
        | u8::from(r.max_age_ms.is_some()) << 1
        | u8::from(r.truncate_before.is_some()) << 2;
    put(&mut v, 4, &m.version.to_le_bytes());
    put(&mut v, 12, &m.first_held_version.to_le_bytes());
    put(&mut v, 20, &m.last_lsn.to_le_bytes());
    put(&mut v, 28, &[flags]);
    put(&mut v, 29, &r.max_count.unwrap_or(0).to_le_bytes());
    put(&mut v, 37, &r.max_age_ms.unwrap_or(0).to_le_bytes());
    put(&mut v, 45, &r.truncate_before.unwrap_or(0).to_le_bytes());
    put(&mut v, 53, &m.removed_through_lsn.to_le_bytes());
    let crc = crc_of(name.as_bytes(), v.get(4..).unwrap_or_default());
    put(&mut v, 0, &crc.to_le_bytes());
    v
}

/// Decodes and checks the meta value of stream `name`.
pub fn decode_stream_meta(name: &str, value: &[u8]) -> Result<StreamMeta, String> {
    if value.len() != STREAM_META_BYTES {
        return Err(format!(
            "{} bytes, a stream's meta is {STREAM_META_BYTES}",
            value.len()
        ));
    }
    check_crc(name.as_bytes(), value)?;
    let bad = || "truncated".to_string();
    let flags = *value.get(28).ok_or_else(bad)?;
    if flags & !0b111 != 0 {
        return Err(format!("unknown retention flags {flags:#04x}"));
    }
    let opt = |bit: u8, at: usize| -> Result<Option<u64>, String> {
        let n = u64_at(value, at).ok_or_else(bad)?;
        Ok((flags & bit != 0).then_some(n))
    };
    let m = StreamMeta {
        version: u64_at(value, 4).ok_or_else(bad)?,
        first_held_version: u64_at(value, 12).ok_or_else(bad)?,
        last_lsn: u64_at(value, 20).ok_or_else(bad)?,
        retention: Retention {
            max_count: opt(1, 29)?,
            max_age_ms: opt(2, 37)?,
            truncate_before: opt(4, 45)?,
        },
        removed_through_lsn: u64_at(value, 53).ok_or_else(bad)?,
    };
    if m.first_held_version == 0 || m.first_held_version > m.version.saturating_add(1) {
        return Err(format!(
            "first held version {} outside 1..={}",
            m.first_held_version,
            m.version.saturating_add(1)
        ));
    }
    Ok(m)
}

/// What the store knows of one view: its schema version and the LSN up
/// to which it has folded the log.
///
/// ```text
/// 0  u32 crc             CRC-32 of the key (the name) and bytes 4..
/// 4  u32 schema_version
/// 8  u64 applied_lsn
/// ```
pub fn encode_view_meta(
    name: &str,
    schema_version: u32,
    applied_lsn: u64,
) -> [u8; VIEW_META_BYTES] {
    let mut v = [0u8; VIEW_META_BYTES];
    if let Some(d) = v.get_mut(4..8) {
        d.copy_from_slice(&schema_version.to_le_bytes());
    }
    if let Some(d) = v.get_mut(8..16) {
        d.copy_from_slice(&applied_lsn.to_le_bytes());
    }
    let crc = crc_of(name.as_bytes(), v.get(4..).unwrap_or_default());
    if let Some(d) = v.get_mut(..4) {
        d.copy_from_slice(&crc.to_le_bytes());
    }
    v
}

/// Decodes a view's meta value: `(schema_version, applied_lsn)`.
pub fn decode_view_meta(name: &str, value: &[u8]) -> Result<(u32, u64), String> {
    if value.len() != VIEW_META_BYTES {
        return Err(format!(
            "{} bytes, a view's meta is {VIEW_META_BYTES}",
            value.len()
        ));
    }
    check_crc(name.as_bytes(), value)?;
    let bad = || "truncated".to_string();
    Ok((
        u32_at(value, 4).ok_or_else(bad)?,
        u64_at(value, 8).ok_or_else(bad)?,
    ))
}

/// A view table's value as stored: a CRC-32 of the table name, the key and
/// the value, then the value.
pub fn encode_view_value(table: &str, key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(VIEW_VALUE_CRC_BYTES + value.len());
    let mut h = crc32fast::Hasher::new();
    h.update(table.as_bytes());
    h.update(key);
    h.update(value);
    v.extend_from_slice(&h.finalize().to_le_bytes());
    v.extend_from_slice(value);
    v
}

/// The value of a view table's entry, its CRC checked.
pub fn decode_view_value<'a>(
    table: &str,
    key: &[u8],
    stored: &'a [u8],
) -> Result<&'a [u8], String> {
    let crc = u32_at(stored, 0).ok_or_else(|| format!("{} bytes, too short", stored.len()))?;
    let value = stored.get(VIEW_VALUE_CRC_BYTES..).unwrap_or_default();
    let mut h = crc32fast::Hasher::new();
    h.update(table.as_bytes());
    h.update(key);
    h.update(value);
    let computed = h.finalize();
    if crc != computed {
        return Err(format!(
            "CRC mismatch (stored {crc:#010x}, computed {computed:#010x})"
        ));
    }
    Ok(value)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn history_rows_round_trip_and_catch_every_flip() {
        let batch = format::encode_batch("orders", &[b"a".as_slice(), b"bcd"]);
        let row = encode_history_row(7, 3, 2, 99, &batch.payload);
        let r = decode_history_row(7, &row).unwrap();
        assert_eq!(
            (
                r.first_lsn,
                r.first_version,
                r.count,
                r.stored_at_ms,
                r.stream
            ),
            (7, 3, 2, 99, "orders")
        );
        assert_eq!(r.events().collect::<Vec<_>>(), vec![&b"a"[..], b"bcd"]);
        assert!(
            decode_history_row(8, &row).is_err(),
            "a row under another key"
        );
        for bit in 0..row.len() * 8 {
            let mut bad = row.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(decode_history_row(7, &bad).is_err(), "flip of bit {bit}");
        }
        for cut in 0..row.len() {
            assert!(decode_history_row(7, &row[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn stream_meta_round_trips() {
        let m = StreamMeta {
            version: 10,
            first_held_version: 4,
            last_lsn: 77,
            retention: Retention {
                max_count: Some(7),
                max_age_ms: None,
                truncate_before: Some(4),
            },
            removed_through_lsn: 12,
        };
        let v = encode_stream_meta("s", &m);
        assert_eq!(decode_stream_meta("s", &v), Ok(m));
        assert!(decode_stream_meta("t", &v).is_err());
        for bit in 0..v.len() * 8 {
            let mut bad = v;
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(decode_stream_meta("s", &bad).is_err(), "flip of bit {bit}");
        }
    }

    #[test]
    fn view_values_and_meta_round_trip() {
        let v = encode_view_value("t", b"k", b"value");
        assert_eq!(decode_view_value("t", b"k", &v), Ok(&b"value"[..]));
        assert!(decode_view_value("t", b"j", &v).is_err());
        assert!(decode_view_value("u", b"k", &v).is_err());
        let m = encode_view_meta("counts", 3, 42);
        assert_eq!(decode_view_meta("counts", &m), Ok((3, 42)));
        assert!(decode_view_meta("other", &m).is_err());
    }
}
