//! Frames: a 20-byte header, then a MessagePack body (docs/PROTOCOL.md).
//!
//! | offset | size | field |
//! |-------:|-----:|-------|
//! | 0      | 8    | tag: the request's id, chosen by the client (u64 LE); a reply carries its request's |
//! | 8      | 4    | code: what the request is ([`Code`], u32 LE); a reply carries its request's |
//! | 12     | 4    | flags (u32 LE): bits 0–7 the protocol version, bit 8 reply, bit 9 error; the rest zero |
//! | 16     | 4    | size: the body's bytes (u32 LE), at most [`FRAME_BODY_BYTES_MAX`] |
//!
//! The header is the seed's (tag, request code, flags with a version and
//! a reply bit, body size); what the seed lacked is here: every field is
//! checked before the body is read, and a body's size is bounded before
//! it is allocated.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

/// Bytes of a frame's header.
pub const HEADER_BYTES: usize = 20;
/// The protocol version this build speaks (bits 0–7 of the flags).
pub const PROTOCOL_VERSION: u8 = 1;
/// Bytes a frame's body may hold: a batch at the record limit (16 MiB)
/// and its encoding's overhead.
pub const FRAME_BODY_BYTES_MAX: u32 = (16 << 20) + (64 << 10);
/// Once a frame's first byte has arrived, the rest of it must within this
/// long: a stalled peer never pins a connection's reader (an idle
/// connection, between frames, may wait as long as it likes).
pub const FRAME_READ_DEADLINE: Duration = Duration::from_secs(10);

/// Flag: this frame answers the request with its tag.
pub const FLAG_REPLY: u32 = 1 << 8;
/// Flag: the body is a [`super::wire::WireError`].
pub const FLAG_ERROR: u32 = 1 << 9;
const FLAGS_KNOWN: u32 = 0xff | FLAG_REPLY | FLAG_ERROR;

/// What a request asks for (a reply carries its request's code).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Code {
    /// The first request of a connection: versions and magic.
    Hello = 1,
    /// A round trip that touches nothing (the seed's Noop).
    Ping = 2,
    /// [`crate::Db::append`].
    Append = 3,
    /// [`crate::Db::read`].
    Read = 4,
    /// [`crate::Db::read_stream`].
    ReadStream = 5,
    /// [`crate::Db::stream_version`].
    StreamVersion = 6,
    /// [`crate::Db::last_lsn`].
    LastLsn = 7,
    /// A poll of a [`crate::Db::subscribe`]: the next page of events from
    /// an LSN, waiting for one.
    Subscribe = 8,
    /// Ends the poll whose tag the body names (with an empty page).
    Cancel = 9,
    /// [`crate::Db::sync`].
    Sync = 10,
    /// [`crate::Db::checkpoint`].
    Checkpoint = 11,
    /// From the server, tag 0: it is stopping; no new request is taken.
    Goodbye = 12,
    /// [`crate::Db::read_stream_from_lsn`].
    ReadStreamFromLsn = 13,
    /// One operation of a view (registry, runtime, KV): the body names it
    /// and carries its arguments; the reply carries its answer or its
    /// typed refusal.
    Call = 14,
    /// Waits until the store has applied past an LSN (at most
    /// [`super::WAIT_APPLIED_MAX`]): a remote watch's or subscription's
    /// wait for its next page.
    WaitApplied = 15,
    /// [`crate::Db::stats`].
    Stats = 16,
    /// [`crate::Db::retention`].
    Retention = 17,
    /// [`crate::Db::set_retention`].
    SetRetention = 18,
    /// [`crate::Db::backup`], written by the server.
    Backup = 19,
}

impl Code {
    /// Every code, in number order.
    const ALL: [Code; 19] = [
        Code::Hello,
        Code::Ping,
        Code::Append,
        Code::Read,
        Code::ReadStream,
        Code::StreamVersion,
        Code::LastLsn,
        Code::Subscribe,
        Code::Cancel,
        Code::Sync,
        Code::Checkpoint,
        Code::Goodbye,
        Code::ReadStreamFromLsn,
        Code::Call,
        Code::WaitApplied,
        Code::Stats,
        Code::Retention,
        Code::SetRetention,
        Code::Backup,
    ];

    /// The code for `n`, if it is one.
    pub fn from_u32(n: u32) -> Option<Code> {
        Code::ALL.into_iter().find(|c| *c as u32 == n)
    }
}

/// A frame's header, decoded and checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// The request's id.
    pub tag: u64,
    /// The raw code (checked against [`Code`] by the caller, who answers
    /// an unknown one with an error naming it).
    pub code: u32,
    /// The flags, without the version.
    pub flags: u32,
    /// The body's bytes.
    pub size: u32,
}

/// Why a frame was refused.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The peer closed the connection between frames.
    #[error("the peer closed the connection")]
    Closed,
    /// The peer closed or failed in the middle of a frame.
    #[error("the connection ended {at} bytes into a {expected}-byte frame")]
    Truncated {
        /// Bytes of the frame read.
        at: u64,
        /// Bytes the frame needed.
        expected: u64,
    },
    /// The rest of a started frame did not come in time.
    #[error("the frame stalled {at} bytes in: not complete within {deadline:?}")]
    Stalled {
        /// Bytes of the frame read.
        at: u64,
        /// The deadline.
        deadline: Duration,
    },
    /// A header that is not this protocol's.
    #[error("bad frame header: {0}")]
    BadHeader(String),
    /// A body over the limit.
    #[error("a frame body of {size} bytes is above the limit of {FRAME_BODY_BYTES_MAX}")]
    TooLarge {
        /// The size the header gave.
        size: u32,
    },
    /// Reading failed.
    #[error("reading a frame: {0}")]
    Io(#[from] std::io::Error),
}

impl Header {
    /// The header's bytes, with this build's protocol version.
    pub fn encode(&self) -> [u8; HEADER_BYTES] {
        let flags = (self.flags & !0xff) | u32::from(PROTOCOL_VERSION);
        let [t0, t1, t2, t3, t4, t5, t6, t7] = self.tag.to_le_bytes();
        let [c0, c1, c2, c3] = self.code.to_le_bytes();
        let [f0, f1, f2, f3] = flags.to_le_bytes();
        let [s0, s1, s2, s3] = self.size.to_le_bytes();
        [
            t0, t1, t2, t3, t4, t5, t6, t7, c0, c1, c2, c3, f0, f1, f2, f3, s0, s1, s2, s3,
        ]
    }

    /// Decodes and checks a header: the version, no unknown flag, the
    /// body's size within the limit.
    pub fn decode(b: &[u8; HEADER_BYTES]) -> Result<Header, FrameError> {
        let [
            t0,
            t1,
            t2,
            t3,
            t4,
            t5,
            t6,
            t7,
            c0,
            c1,
            c2,
            c3,
            f0,
            f1,
            f2,
            f3,
            s0,
            s1,
            s2,
            s3,
        ] = *b;
        let tag = u64::from_le_bytes([t0, t1, t2, t3, t4, t5, t6, t7]);
        let code = u32::from_le_bytes([c0, c1, c2, c3]);
        let flags = u32::from_le_bytes([f0, f1, f2, f3]);
        let size = u32::from_le_bytes([s0, s1, s2, s3]);
        let version = (flags & 0xff) as u8;
        if version != PROTOCOL_VERSION {
            return Err(FrameError::BadHeader(format!(
                "protocol version {version}, this server speaks {PROTOCOL_VERSION}"
            )));
        }
        if flags & !FLAGS_KNOWN != 0 {
            return Err(FrameError::BadHeader(format!(
                "unknown flags {:#x}",
                flags & !FLAGS_KNOWN
            )));
        }
        if size > FRAME_BODY_BYTES_MAX {
            return Err(FrameError::TooLarge { size });
        }
        Ok(Header {
            tag,
            code,
            flags: flags & !0xff,
            size,
        })
    }
}

/// Encodes a whole frame.
pub fn encode(tag: u64, code: u32, flags: u32, body: &[u8]) -> Vec<u8> {
    let size = u32::try_from(body.len()).unwrap_or(u32::MAX);
    let header = Header {
        tag,
        code,
        flags,
        size,
    };
    let mut out = Vec::with_capacity(HEADER_BYTES + body.len());
    out.extend_from_slice(&header.encode());
    out.extend_from_slice(body);
    out
}

/// Reads one frame: waits as long as it takes for its first byte, then at
/// most `deadline` for the rest. The body is allocated only once the
/// header has bounded it.
pub async fn read<R: AsyncRead + Unpin>(
    r: &mut R,
    deadline: Duration,
) -> Result<(Header, Vec<u8>), FrameError> {
    let mut head = [0u8; HEADER_BYTES];
    let first = r.read(&mut head).await?;
    if first == 0 {
        return Err(FrameError::Closed);
    }
    let started = tokio::time::Instant::now();
    let stalled = |at: usize| FrameError::Stalled {
        at: at as u64,
        deadline,
    };
    let mut got = first;
    while got < HEADER_BYTES {
        let rest = head.get_mut(got..).unwrap_or_default();
        let n = tokio::time::timeout_at(started + deadline, r.read(rest))
            .await
            .map_err(|_| stalled(got))??;
        if n == 0 {
            return Err(FrameError::Truncated {
                at: got as u64,
                expected: HEADER_BYTES as u64,
            });
        }
        got += n;
    }
    let header = Header::decode(&head)?;
    let mut body = vec![0u8; header.size as usize];
    let mut at = 0usize;
    while at < body.len() {
        let rest = body.get_mut(at..).unwrap_or_default();
        let n = tokio::time::timeout_at(started + deadline, r.read(rest))
            .await
            .map_err(|_| stalled(HEADER_BYTES + at))??;
        if n == 0 {
            return Err(FrameError::Truncated {
                at: (HEADER_BYTES + at) as u64,
                expected: HEADER_BYTES as u64 + u64::from(header.size),
            });
        }
        at += n;
    }
    Ok((header, body))
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn every_code_is_found_by_its_number_and_no_other_number_is() {
        for (i, c) in Code::ALL.into_iter().enumerate() {
            assert_eq!(c as u32, i as u32 + 1);
            assert_eq!(Code::from_u32(c as u32), Some(c));
        }
        assert_eq!(Code::from_u32(0), None);
        assert_eq!(Code::from_u32(Code::ALL.len() as u32 + 1), None);
    }

    #[test]
    fn a_header_round_trips_and_bad_ones_are_refused_by_name() {
        let h = Header {
            tag: 7,
            code: Code::Ping as u32,
            flags: FLAG_REPLY | FLAG_ERROR,
            size: 3,
        };
        assert_eq!(Header::decode(&h.encode()).ok(), Some(h));
        let mut b = h.encode();
        b[12] = 9;
        assert!(
            matches!(Header::decode(&b), Err(FrameError::BadHeader(m)) if m.contains("version 9"))
        );
        let mut b = h.encode();
        b[15] = 0x80;
        assert!(matches!(Header::decode(&b), Err(FrameError::BadHeader(m)) if m.contains("flags")));
        let big = Header {
            size: FRAME_BODY_BYTES_MAX + 1,
            ..h
        };
        assert!(matches!(
            Header::decode(&big.encode()),
            Err(FrameError::TooLarge { .. })
        ));
    }
}
