//! The byte layout of WAL segments and records (see `docs/FORMAT.md`).
//!
//! All integers are little-endian and fixed-width. Decoding never panics
//! and never allocates: it borrows from the segment's bytes and checks
//! every length against what is there and against the configured maximum
//! before using it.

/// First 8 bytes of every segment.
pub const SEGMENT_MAGIC: [u8; 8] = *b"RPLYWAL\0";
/// The segment format this build writes. Version 2 gave each record
/// header the offset its segment was durable to when it was written;
/// version 1 (that word zero) is still read.
pub const SEGMENT_FORMAT_VERSION: u32 = 2;
/// The oldest segment format this build reads.
pub const SEGMENT_FORMAT_VERSION_OLDEST: u32 = 1;
/// Bytes in a segment header.
pub const SEGMENT_HEADER_BYTES: usize = 32;
/// Bytes in a record header.
pub const RECORD_HEADER_BYTES: usize = 32;

// Segment header offsets.
const SH_MAGIC: usize = 0;
const SH_VERSION: usize = 8;
const SH_FLAGS: usize = 12;
const SH_FIRST_LSN: usize = 16;
const SH_RESERVED: usize = 24;
const SH_CRC: usize = 28;

// Record header offsets.
const RH_LEN: usize = 0;
const RH_CRC: usize = 4;
const RH_FIRST_LSN: usize = 8;
const RH_FIRST_VERSION: usize = 16;
const RH_COUNT: usize = 24;
const RH_SYNCED_TO: usize = 28;

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(b.try_into().ok()?))
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    let b = bytes.get(at..at.checked_add(8)?)?;
    Some(u64::from_le_bytes(b.try_into().ok()?))
}

/// Encodes a segment header for a segment whose first record has `first_lsn`.
pub fn encode_segment_header(first_lsn: u64) -> [u8; SEGMENT_HEADER_BYTES] {
    encode_segment_header_version(first_lsn, SEGMENT_FORMAT_VERSION)
}

/// Encodes a segment header of format `version` (tests and fuzzing of
/// older formats; the writer always uses [`encode_segment_header`]).
pub fn encode_segment_header_version(first_lsn: u64, version: u32) -> [u8; SEGMENT_HEADER_BYTES] {
    let mut h = [0u8; SEGMENT_HEADER_BYTES];
    h[SH_MAGIC..SH_MAGIC + 8].copy_from_slice(&SEGMENT_MAGIC);
    h[SH_VERSION..SH_VERSION + 4].copy_from_slice(&version.to_le_bytes());
    h[SH_FLAGS..SH_FLAGS + 4].copy_from_slice(&0u32.to_le_bytes());
    h[SH_FIRST_LSN..SH_FIRST_LSN + 8].copy_from_slice(&first_lsn.to_le_bytes());
    h[SH_RESERVED..SH_RESERVED + 4].copy_from_slice(&0u32.to_le_bytes());
    let crc = crc32fast::hash(&h[..SH_CRC]);
    h[SH_CRC..SH_CRC + 4].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Why a segment header was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderError {
    /// Fewer than [`SEGMENT_HEADER_BYTES`] bytes.
    Short(usize),
    /// The magic is not [`SEGMENT_MAGIC`].
    BadMagic,
    /// A version this build does not read.
    UnsupportedVersion(u32),
    /// The header CRC does not match.
    CrcMismatch {
        /// CRC stored in the header.
        stored: u32,
        /// CRC computed over the header.
        computed: u32,
    },
    /// Flags or reserved bytes are not zero.
    Reserved,
}

impl std::fmt::Display for HeaderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeaderError::Short(n) => write!(
                f,
                "segment header is {n} bytes, expected {SEGMENT_HEADER_BYTES}"
            ),
            HeaderError::BadMagic => f.write_str("bad segment magic (not a replaydb WAL segment)"),
            HeaderError::UnsupportedVersion(v) => {
                write!(f, "unsupported segment format version {v}")
            }
            HeaderError::CrcMismatch { stored, computed } => {
                write!(
                    f,
                    "segment header CRC mismatch (stored {stored:#010x}, computed {computed:#010x})"
                )
            }
            HeaderError::Reserved => {
                f.write_str("segment header flags or reserved bytes are not zero")
            }
        }
    }
}

/// Decodes a segment header; returns the segment's first LSN.
pub fn decode_segment_header(bytes: &[u8]) -> Result<SegmentHeader, HeaderError> {
    let h = bytes
        .get(..SEGMENT_HEADER_BYTES)
        .ok_or(HeaderError::Short(bytes.len()))?;
    if h.get(SH_MAGIC..SH_MAGIC + 8) != Some(&SEGMENT_MAGIC[..]) {
        return Err(HeaderError::BadMagic);
    }
    let version = u32_at(h, SH_VERSION).ok_or(HeaderError::Short(h.len()))?;
    let stored = u32_at(h, SH_CRC).ok_or(HeaderError::Short(h.len()))?;
    let computed = crc32fast::hash(h.get(..SH_CRC).ok_or(HeaderError::Short(h.len()))?);
    if stored != computed {
        return Err(HeaderError::CrcMismatch { stored, computed });
    }
    // Version after CRC: a CRC-valid header with another version is a real
    // file of another format version, not damage.
    if !(SEGMENT_FORMAT_VERSION_OLDEST..=SEGMENT_FORMAT_VERSION).contains(&version) {
        return Err(HeaderError::UnsupportedVersion(version));
    }
    if u32_at(h, SH_FLAGS) != Some(0) || u32_at(h, SH_RESERVED) != Some(0) {
        return Err(HeaderError::Reserved);
    }
    Ok(SegmentHeader {
        version,
        first_lsn: u64_at(h, SH_FIRST_LSN).ok_or(HeaderError::Short(h.len()))?,
    })
}

/// A segment header that passed its checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Its format version (1 or 2).
    pub version: u32,
    /// LSN of its first record.
    pub first_lsn: u64,
}

/// A batch's payload, encoded and checksummed, ready for the writer to
/// give it an LSN and a version. Built outside the writer's lock.
#[derive(Debug, Clone)]
pub struct EncodedBatch {
    /// The MessagePack payload: `[stream, [event, ...]]`.
    pub payload: Vec<u8>,
    /// CRC-32 of `payload` alone; combined with the header's under the lock.
    pub payload_crc: crc32fast::Hasher,
    /// Number of events.
    pub count: u32,
}

/// Encodes a batch payload: a MessagePack array `[stream (str), events
/// (array of bin)]`.
pub fn encode_batch(stream: &str, events: &[impl AsRef<[u8]>]) -> EncodedBatch {
    let size: usize =
        16 + stream.len() + events.iter().map(|e| e.as_ref().len() + 5).sum::<usize>();
    let mut payload = Vec::with_capacity(size);
    // Writing into a Vec cannot fail; the results are infallible in practice.
    let _ = rmp::encode::write_array_len(&mut payload, 2);
    let _ = rmp::encode::write_str(&mut payload, stream);
    let _ = rmp::encode::write_array_len(&mut payload, events.len() as u32);
    for e in events {
        let _ = rmp::encode::write_bin(&mut payload, e.as_ref());
    }
    let mut payload_crc = crc32fast::Hasher::new();
    payload_crc.update(&payload);
    EncodedBatch {
        payload,
        payload_crc,
        count: events.len() as u32,
    }
}

/// Fills in a record header for `batch` at `first_lsn` / `first_version`.
/// `synced_to` is the offset up to which the record's segment was durable
/// when it was written (0 in a version 1 segment).
pub fn encode_record_header(
    batch: &EncodedBatch,
    first_lsn: u64,
    first_version: u64,
    synced_to: u32,
) -> [u8; RECORD_HEADER_BYTES] {
    let mut h = [0u8; RECORD_HEADER_BYTES];
    h[RH_LEN..RH_LEN + 4].copy_from_slice(&(batch.payload.len() as u32).to_le_bytes());
    h[RH_FIRST_LSN..RH_FIRST_LSN + 8].copy_from_slice(&first_lsn.to_le_bytes());
    h[RH_FIRST_VERSION..RH_FIRST_VERSION + 8].copy_from_slice(&first_version.to_le_bytes());
    h[RH_COUNT..RH_COUNT + 4].copy_from_slice(&batch.count.to_le_bytes());
    h[RH_SYNCED_TO..RH_SYNCED_TO + 4].copy_from_slice(&synced_to.to_le_bytes());
    let mut crc = crc32fast::Hasher::new();
    crc.update(&h[RH_FIRST_LSN..]);
    crc.combine(&batch.payload_crc);
    h[RH_CRC..RH_CRC + 4].copy_from_slice(&crc.finalize().to_le_bytes());
    h
}

/// A record that passed every check, borrowed from the segment bytes.
#[derive(Debug, Clone, Copy)]
pub struct RecordView<'a> {
    /// LSN of the batch's first event.
    pub first_lsn: u64,
    /// Stream version of the batch's first event.
    pub first_version: u64,
    /// Number of events.
    pub count: u32,
    /// Offset up to which its segment was durable when it was written (0
    /// in a version 1 segment). Recovery uses it to tell a hole left by an
    /// unsynced write from damage to synced bytes.
    pub synced_to: u32,
    /// The stream the batch belongs to.
    pub stream: &'a str,
    /// Encoded events (MessagePack), decoded lazily by [`RecordView::events`].
    events_bytes: &'a [u8],
    /// The whole payload, `[stream, [bin, ...]]` (what the store keeps).
    pub payload: &'a [u8],
    /// Bytes the record occupies (header + payload).
    pub total_bytes: u64,
}

impl<'a> RecordView<'a> {
    /// LSN of the batch's last event.
    pub fn last_lsn(&self) -> u64 {
        self.first_lsn + u64::from(self.count) - 1
    }

    /// The event payloads, in order. The payload was fully validated when
    /// the record was decoded, so iteration cannot fail.
    pub fn events(&self) -> EventBytes<'a> {
        EventBytes {
            rest: self.events_bytes,
            left: self.count,
        }
    }
}

/// Iterator over the event payloads of a [`RecordView`].
#[derive(Debug, Clone)]
pub struct EventBytes<'a> {
    rest: &'a [u8],
    left: u32,
}

impl<'a> Iterator for EventBytes<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let (data, rest) = take_bin(self.rest)?;
        self.rest = rest;
        Some(data)
    }
}

/// Why the bytes at an offset are not a valid record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordError {
    /// The header or payload runs past the end of the available bytes.
    Truncated {
        /// Bytes the record needs.
        need: u64,
        /// Bytes available from its offset.
        have: u64,
    },
    /// A record that checks out (length fits, CRC matches) but is longer
    /// than the configured maximum: written under a larger limit. Never
    /// treated as damage.
    AboveLimit {
        /// Payload length.
        len: u64,
        /// The maximum.
        max: u64,
    },
    /// The length field exceeds the configured maximum and the bytes do
    /// not check out as a record.
    TooLarge {
        /// Payload length claimed.
        len: u64,
        /// The maximum.
        max: u64,
    },
    /// The CRC does not match.
    CrcMismatch {
        /// Stored CRC.
        stored: u32,
        /// Computed CRC.
        computed: u32,
    },
    /// CRC-valid, but the fields are inconsistent (count 0, reserved bits,
    /// or a payload that is not the documented MessagePack shape).
    Malformed(&'static str),
}

impl std::fmt::Display for RecordError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecordError::Truncated { need, have } => {
                write!(f, "record needs {need} bytes but only {have} remain")
            }
            RecordError::AboveLimit { len, max } => write!(
                f,
                "a valid record of {len} bytes exceeds record_bytes_max ({max}); open with a larger limit"
            ),
            RecordError::TooLarge { len, max } => {
                write!(f, "record length {len} exceeds the maximum of {max} bytes")
            }
            RecordError::CrcMismatch { stored, computed } => {
                write!(
                    f,
                    "record CRC mismatch (stored {stored:#010x}, computed {computed:#010x})"
                )
            }
            RecordError::Malformed(what) => write!(f, "malformed record: {what}"),
        }
    }
}

/// Whether `bytes` starts with an all-zero record header: the end of the
/// written part of a preallocated segment.
pub fn is_zero_header(bytes: &[u8]) -> bool {
    bytes
        .get(..RECORD_HEADER_BYTES)
        .is_some_and(|h| h.iter().all(|&b| b == 0))
}

/// The first LSN and event count a record's header claims, unchecked:
/// for seeking only (a log that finds a record by its LSN); what is then
/// read is decoded with [`decode_record`], which checks it all.
#[cfg_attr(not(feature = "jetstream"), allow(dead_code))]
pub fn peek_lsns(bytes: &[u8]) -> Option<(u64, u32)> {
    let lsn = bytes.get(RH_FIRST_LSN..RH_FIRST_LSN + 8)?;
    let count = bytes.get(RH_COUNT..RH_COUNT + 4)?;
    Some((
        u64::from_le_bytes(lsn.try_into().ok()?),
        u32::from_le_bytes(count.try_into().ok()?),
    ))
}

/// Decodes and checks the record at the start of `bytes`.
///
/// `record_bytes_max` bounds the payload length before anything else is
/// done with it.
pub fn decode_record(bytes: &[u8], record_bytes_max: u64) -> Result<RecordView<'_>, RecordError> {
    let have = bytes.len() as u64;
    let header = bytes
        .get(..RECORD_HEADER_BYTES)
        .ok_or(RecordError::Truncated {
            need: RECORD_HEADER_BYTES as u64,
            have,
        })?;
    let trunc = RecordError::Truncated {
        need: RECORD_HEADER_BYTES as u64,
        have,
    };
    let len = u64::from(u32_at(header, RH_LEN).ok_or(trunc.clone())?);
    if len > record_bytes_max {
        // Decoding borrows and never allocates, so checking the CRC of an
        // over-long record costs no memory. A record that checks out was
        // written under a larger limit: say so instead of calling it damage.
        let crc_ok = bytes
            .get(RH_FIRST_LSN..RECORD_HEADER_BYTES + len as usize)
            .is_some_and(|covered| Some(crc32fast::hash(covered)) == u32_at(header, RH_CRC));
        return Err(if crc_ok {
            RecordError::AboveLimit {
                len,
                max: record_bytes_max,
            }
        } else {
            RecordError::TooLarge {
                len,
                max: record_bytes_max,
            }
        });
    }
    let total = RECORD_HEADER_BYTES as u64 + len;
    let record = bytes
        .get(..total as usize)
        .ok_or(RecordError::Truncated { need: total, have })?;
    let stored = u32_at(header, RH_CRC).ok_or(trunc.clone())?;
    let computed = crc32fast::hash(record.get(RH_FIRST_LSN..).ok_or(trunc.clone())?);
    if stored != computed {
        return Err(RecordError::CrcMismatch { stored, computed });
    }
    let first_lsn = u64_at(header, RH_FIRST_LSN).ok_or(trunc.clone())?;
    let first_version = u64_at(header, RH_FIRST_VERSION).ok_or(trunc.clone())?;
    let count = u32_at(header, RH_COUNT).ok_or(trunc.clone())?;
    let synced_to = u32_at(header, RH_SYNCED_TO).ok_or(trunc.clone())?;
    if count == 0 {
        return Err(RecordError::Malformed("batch of zero events"));
    }
    if first_lsn == 0 || first_lsn.checked_add(u64::from(count)).is_none() {
        return Err(RecordError::Malformed("LSN out of range"));
    }
    if first_version == 0 || first_version.checked_add(u64::from(count)).is_none() {
        return Err(RecordError::Malformed("stream version out of range"));
    }
    let payload = record.get(RECORD_HEADER_BYTES..).ok_or(trunc)?;
    let (stream, events_bytes) = decode_payload(payload, count)?;
    Ok(RecordView {
        first_lsn,
        first_version,
        count,
        synced_to,
        stream,
        events_bytes,
        payload,
        total_bytes: total,
    })
}

/// Checks the payload's MessagePack shape and returns the stream name and
/// the bytes of the events array's elements.
pub(crate) fn decode_payload(payload: &[u8], count: u32) -> Result<(&str, &[u8]), RecordError> {
    let mut rd = payload;
    let n = rmp::decode::read_array_len(&mut rd)
        .map_err(|_| RecordError::Malformed("payload is not an array"))?;
    if n != 2 {
        return Err(RecordError::Malformed(
            "payload array is not [stream, events]",
        ));
    }
    let len = rmp::decode::read_str_len(&mut rd)
        .map_err(|_| RecordError::Malformed("stream is not a string"))?;
    let (name, rest) = rd
        .split_at_checked(len as usize)
        .ok_or(RecordError::Malformed("stream name runs past the payload"))?;
    let stream = std::str::from_utf8(name)
        .map_err(|_| RecordError::Malformed("stream name is not UTF-8"))?;
    let mut rd = rest;
    let n = rmp::decode::read_array_len(&mut rd)
        .map_err(|_| RecordError::Malformed("events are not an array"))?;
    if n != count {
        return Err(RecordError::Malformed(
            "event count differs from the header",
        ));
    }
    let events = rd;
    let mut rest = rd;
    for _ in 0..count {
        let (_, r) = take_bin(rest).ok_or(RecordError::Malformed(
            "event is not a bin or runs past the payload",
        ))?;
        rest = r;
    }
    if !rest.is_empty() {
        return Err(RecordError::Malformed("trailing bytes after the events"));
    }
    Ok((stream, events))
}

impl<'a> EventBytes<'a> {
    /// The `count` events of an events array already validated by
    /// [`decode_payload`].
    pub(crate) fn new(events_bytes: &'a [u8], count: u32) -> EventBytes<'a> {
        EventBytes {
            rest: events_bytes,
            left: count,
        }
    }
}

fn take_bin(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut rd = bytes;
    let len = rmp::decode::read_bin_len(&mut rd).ok()?;
    rd.split_at_checked(len as usize)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn record(first_lsn: u64, first_version: u64, stream: &str, events: &[&[u8]]) -> Vec<u8> {
        let batch = encode_batch(stream, events);
        let mut out = encode_record_header(&batch, first_lsn, first_version, 32).to_vec();
        out.extend_from_slice(&batch.payload);
        out
    }

    #[test]
    fn record_round_trips() {
        let bytes = record(7, 3, "orders", &[b"a", b"", b"ccc"]);
        let r = decode_record(&bytes, 1 << 20).unwrap();
        assert_eq!(
            (r.first_lsn, r.first_version, r.count, r.stream),
            (7, 3, 3, "orders")
        );
        assert_eq!(r.last_lsn(), 9);
        assert_eq!(r.total_bytes, bytes.len() as u64);
        let events: Vec<&[u8]> = r.events().collect();
        assert_eq!(events, vec![&b"a"[..], b"", b"ccc"]);
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let bytes = record(1, 1, "s", &[b"hello world"]);
        for i in 0..bytes.len() * 8 {
            let mut b = bytes.clone();
            b[i / 8] ^= 1 << (i % 8);
            assert!(
                decode_record(&b, 1 << 20).is_err(),
                "flip of bit {i} went unnoticed"
            );
        }
    }

    #[test]
    fn every_truncation_is_detected() {
        let bytes = record(1, 1, "s", &[b"hello world"]);
        for cut in 0..bytes.len() {
            match decode_record(&bytes[..cut], 1 << 20) {
                Err(RecordError::Truncated { .. }) => {}
                other => panic!("cut at {cut}: {other:?}"),
            }
        }
    }

    #[test]
    fn length_is_bounded_before_use() {
        let mut bytes = record(1, 1, "s", &[b"x"]);
        bytes[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            decode_record(&bytes, 1024),
            Err(RecordError::TooLarge { .. })
        ));
    }

    #[test]
    fn a_valid_record_above_the_limit_is_not_damage() {
        let bytes = record(1, 1, "s", &[&[7u8; 100]]);
        assert!(matches!(
            decode_record(&bytes, 50),
            Err(RecordError::AboveLimit { .. })
        ));
        assert!(decode_record(&bytes, 1000).is_ok());
    }

    #[test]
    fn segment_header_round_trips_and_refuses_other_versions() {
        let h = encode_segment_header(42);
        assert_eq!(
            decode_segment_header(&h),
            Ok(SegmentHeader {
                version: 2,
                first_lsn: 42
            })
        );
        let with_version = |v: u32| {
            let mut h = h;
            h[8..12].copy_from_slice(&v.to_le_bytes());
            let crc = crc32fast::hash(&h[..28]);
            h[28..32].copy_from_slice(&crc.to_le_bytes());
            h
        };
        assert_eq!(
            decode_segment_header(&with_version(1)).map(|h| h.version),
            Ok(1)
        );
        for v in [0, 3, u32::MAX] {
            assert_eq!(
                decode_segment_header(&with_version(v)),
                Err(HeaderError::UnsupportedVersion(v))
            );
        }
        let mut bad = h;
        bad[0] = b'X';
        assert_eq!(decode_segment_header(&bad), Err(HeaderError::BadMagic));
        let mut flipped = h;
        flipped[20] ^= 1;
        assert!(matches!(
            decode_segment_header(&flipped),
            Err(HeaderError::CrcMismatch { .. })
        ));
        assert_eq!(decode_segment_header(&h[..10]), Err(HeaderError::Short(10)));
    }
}
