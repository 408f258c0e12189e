//! Bodies of requests and replies, and errors as they cross the socket.
//!
//! Every body is MessagePack with field names (`rmp_serde::to_vec_named`),
//! so a field can be added without breaking an older peer. An error reply
//! carries a [`WireError`]: one variant per [`Error`] variant, named as it
//! is (the name is its stable wire code), so a client gets back the same
//! `Error` it would have got embedded.

use std::path::PathBuf;
use std::sync::Mutex;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::stream::{Event, ExpectedVersion};

/// What a client's hello must carry.
pub const MAGIC: &str = "replaydb";
/// Events one read or subscription page carries at most.
pub const PAGE_EVENTS_MAX: u64 = 4096;

/// The first request of a connection.
#[derive(Debug, Serialize, Deserialize)]
pub struct Hello {
    /// [`MAGIC`].
    pub magic: String,
    /// The protocol version the client speaks.
    pub version: u8,
}

/// The answer to a hello.
#[derive(Debug, Serialize, Deserialize)]
pub struct Welcome {
    /// The protocol version both speak.
    pub version: u8,
    /// This connection's id: never reused while the server runs.
    pub connection_id: u64,
    /// The serving process.
    pub server_pid: u32,
    /// The database directory it serves.
    pub dir: PathBuf,
    /// The largest batch it takes, encoded (`Options::record_bytes_max`).
    pub record_bytes_max: u64,
}

/// A ping's body, echoed.
#[derive(Debug, Serialize, Deserialize)]
pub struct Ping {
    /// Any bytes.
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
}

/// [`crate::Db::append`]'s arguments.
#[derive(Debug, Serialize, Deserialize)]
pub struct Append {
    /// The stream.
    pub stream: String,
    /// Its expected version.
    pub expected: ExpectedVersion,
    /// The events.
    pub events: Vec<serde_bytes::ByteBuf>,
}

/// [`crate::Db::read`]'s arguments.
#[derive(Debug, Serialize, Deserialize)]
pub struct Read {
    /// The first LSN.
    pub from_lsn: u64,
    /// Events at most (the server caps it at [`PAGE_EVENTS_MAX`] and a
    /// frame's bytes; fewer than asked does not mean the end).
    pub limit: u64,
}

/// [`crate::Db::read_stream`]'s arguments.
#[derive(Debug, Serialize, Deserialize)]
pub struct ReadStream {
    /// The stream.
    pub stream: String,
    /// The first version.
    pub from_version: u64,
    /// Events at most, capped as [`Read::limit`].
    pub limit: u64,
}

/// [`crate::Db::read_stream_from_lsn`]'s arguments.
#[derive(Debug, Serialize, Deserialize)]
pub struct ReadStreamFromLsn {
    /// The stream.
    pub stream: String,
    /// The first LSN.
    pub from_lsn: u64,
    /// Events at most, capped as [`Read::limit`].
    pub limit: u64,
}

/// A stream's name.
#[derive(Debug, Serialize, Deserialize)]
pub struct StreamName {
    /// The stream.
    pub stream: String,
}

/// [`crate::Db::set_retention`]'s arguments.
#[derive(Debug, Serialize, Deserialize)]
pub struct SetRetention {
    /// The stream.
    pub stream: String,
    /// What its history keeps.
    pub retention: crate::Retention,
}

/// [`crate::Db::backup`]'s argument.
#[derive(Debug, Serialize, Deserialize)]
pub struct Backup {
    /// Where the server writes the copy: an absolute path.
    pub dest: PathBuf,
}

/// [`crate::Db::subscribe`]'s argument.
#[derive(Debug, Serialize, Deserialize)]
pub struct Subscribe {
    /// The first LSN to deliver.
    pub from_lsn: u64,
}

/// Ends a subscription.
#[derive(Debug, Serialize, Deserialize)]
pub struct Cancel {
    /// The subscription's tag.
    pub tag: u64,
}

/// Events: a read's answer, or one page of a subscription.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Events {
    /// In LSN order.
    pub events: Vec<Event>,
}

/// An LSN or a version.
#[derive(Debug, Serialize, Deserialize)]
pub struct Number {
    /// It.
    pub value: u64,
}

/// The body, encoded.
pub fn encode<T: Serialize>(body: &T) -> Vec<u8> {
    // Encoding our own types to a Vec cannot fail; an empty body (which
    // the peer refuses by name) is the answer if it ever did.
    rmp_serde::to_vec_named(body).unwrap_or_default()
}

/// A body, decoded, or a protocol error naming what it was meant to be.
pub fn decode<T: DeserializeOwned>(what: &str, body: &[u8]) -> Result<T, String> {
    rmp_serde::from_slice(body).map_err(|e| format!("a {what} body that does not decode: {e}"))
}

/// An [`Error`] as it crosses the socket: each variant is the `Error`
/// variant of the same name, with owned fields.
#[derive(Debug, Serialize, Deserialize)]
#[allow(missing_docs)]
pub enum WireError {
    Io {
        op: String,
        path: PathBuf,
        raw_os_error: Option<i32>,
        message: String,
    },
    Locked {
        path: PathBuf,
        pid: Option<u32>,
    },
    Corrupt {
        segment: PathBuf,
        offset: u64,
        reason: String,
    },
    UnsupportedVersion {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    WrongExpectedVersion {
        stream: String,
        expected: ExpectedVersion,
        actual: u64,
    },
    InvalidStreamName {
        name: String,
        reason: String,
    },
    RecordAboveLimit {
        segment: PathBuf,
        offset: u64,
        reason: String,
    },
    Store {
        op: String,
        path: PathBuf,
        reason: String,
    },
    StoreUnusable {
        path: PathBuf,
        reason: String,
        log_first_lsn: u64,
    },
    LogConflict {
        expected_last_lsn: u64,
        actual_last_lsn: u64,
        #[serde(default)]
        stored_records: u64,
    },
    Snapshot {
        op: String,
        path: PathBuf,
        reason: String,
    },
    ViewVersion {
        view: String,
        snapshot_version: u32,
        code_version: u32,
        log_first_lsn: u64,
    },
    NoUsableSnapshot {
        log_first_lsn: u64,
        details: String,
    },
    Compacted {
        what: String,
        oldest_available: u64,
    },
    Rejected {
        message: String,
    },
    InvalidArgument {
        op: String,
        reason: String,
    },
    RecordTooLarge {
        stream: String,
        size_bytes: u64,
        limit_bytes: u64,
    },
    Poisoned {
        cause: String,
    },
    ViewNotRegistered {
        op: String,
        view: String,
    },
    Closed {
        op: String,
    },
    InProgress {
        op: String,
        running: String,
    },
    Reentrant {
        op: String,
    },
    Unsupported {
        op: String,
        reason: String,
    },
    Encode {
        op: String,
        reason: String,
    },
    Internal {
        op: String,
        reason: String,
    },
    Protocol {
        socket: PathBuf,
        reason: String,
    },
    Busy {
        socket: PathBuf,
        limit: String,
        max: u64,
    },
    Disconnected {
        socket: PathBuf,
        reason: String,
    },
    PeerRefused {
        socket: PathBuf,
        reason: String,
    },
}

/// Strings that must be `&'static str` in [`Error`] (an operation's name,
/// a reason) are interned: the set is small and fixed in any one build,
/// so this stays bounded; past [`INTERNED_MAX`] distinct strings (a
/// hostile server) they are all "(from the server)".
const INTERNED_MAX: usize = 512;

pub(crate) fn intern(s: &str) -> &'static str {
    static SEEN: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());
    intern_in(&SEEN, s)
}

fn intern_in(seen: &Mutex<Vec<&'static str>>, s: &str) -> &'static str {
    let mut seen = seen
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(found) = seen.iter().find(|x| **x == s) {
        return found;
    }
    if seen.len() >= INTERNED_MAX {
        return "(from the server)";
    }
    let leaked: &'static str = Box::leak(s.to_string().into_boxed_str());
    seen.push(leaked);
    leaked
}

impl From<&Error> for WireError {
    fn from(e: &Error) -> Self {
        match e {
            Error::Io { op, path, source } => WireError::Io {
                op: op.to_string(),
                path: path.clone(),
                raw_os_error: source.raw_os_error(),
                message: source.to_string(),
            },
            Error::Locked { path, pid } => WireError::Locked {
                path: path.clone(),
                pid: *pid,
            },
            Error::Corrupt {
                segment,
                offset,
                reason,
            } => WireError::Corrupt {
                segment: segment.clone(),
                offset: *offset,
                reason: reason.clone(),
            },
            Error::UnsupportedVersion {
                path,
                found,
                supported,
            } => WireError::UnsupportedVersion {
                path: path.clone(),
                found: *found,
                supported: *supported,
            },
            Error::WrongExpectedVersion {
                stream,
                expected,
                actual,
            } => WireError::WrongExpectedVersion {
                stream: stream.clone(),
                expected: *expected,
                actual: *actual,
            },
            Error::InvalidStreamName { name, reason } => WireError::InvalidStreamName {
                name: name.clone(),
                reason: reason.to_string(),
            },
            Error::RecordAboveLimit {
                segment,
                offset,
                reason,
            } => WireError::RecordAboveLimit {
                segment: segment.clone(),
                offset: *offset,
                reason: reason.clone(),
            },
            Error::Store { op, path, reason } => WireError::Store {
                op: op.to_string(),
                path: path.clone(),
                reason: reason.clone(),
            },
            Error::StoreUnusable {
                path,
                reason,
                log_first_lsn,
            } => WireError::StoreUnusable {
                path: path.clone(),
                reason: reason.clone(),
                log_first_lsn: *log_first_lsn,
            },
            Error::LogConflict {
                expected_last_lsn,
                actual_last_lsn,
                stored_records,
            } => WireError::LogConflict {
                expected_last_lsn: *expected_last_lsn,
                actual_last_lsn: *actual_last_lsn,
                stored_records: *stored_records,
            },
            Error::Snapshot { op, path, reason } => WireError::Snapshot {
                op: op.to_string(),
                path: path.clone(),
                reason: reason.clone(),
            },
            Error::ViewVersion {
                view,
                snapshot_version,
                code_version,
                log_first_lsn,
            } => WireError::ViewVersion {
                view: view.clone(),
                snapshot_version: *snapshot_version,
                code_version: *code_version,
                log_first_lsn: *log_first_lsn,
            },
            Error::NoUsableSnapshot {
                log_first_lsn,
                details,
            } => WireError::NoUsableSnapshot {
                log_first_lsn: *log_first_lsn,
                details: details.clone(),
            },
            Error::Compacted {
                what,
                oldest_available,
            } => WireError::Compacted {
                what: what.clone(),
                oldest_available: *oldest_available,
            },
            Error::Rejected(inner) => WireError::Rejected {
                message: inner.to_string(),
            },
            Error::InvalidArgument { op, reason } => WireError::InvalidArgument {
                op: op.to_string(),
                reason: reason.clone(),
            },
            Error::RecordTooLarge {
                stream,
                size_bytes,
                limit_bytes,
            } => WireError::RecordTooLarge {
                stream: stream.clone(),
                size_bytes: *size_bytes,
                limit_bytes: *limit_bytes,
            },
            Error::Poisoned { cause } => WireError::Poisoned {
                cause: cause.clone(),
            },
            Error::ViewNotRegistered { op, view } => WireError::ViewNotRegistered {
                op: op.to_string(),
                view: view.to_string(),
            },
            Error::Closed { op } => WireError::Closed { op: op.to_string() },
            Error::InProgress { op, running } => WireError::InProgress {
                op: op.to_string(),
                running: running.to_string(),
            },
            Error::Reentrant { op } => WireError::Reentrant { op: op.to_string() },
            Error::Unsupported { op, reason } => WireError::Unsupported {
                op: op.to_string(),
                reason: reason.clone(),
            },
            Error::Encode { op, reason } => WireError::Encode {
                op: op.to_string(),
                reason: reason.clone(),
            },
            Error::Internal { op, reason } => WireError::Internal {
                op: op.to_string(),
                reason: reason.clone(),
            },
            Error::Protocol { socket, reason } => WireError::Protocol {
                socket: socket.clone(),
                reason: reason.clone(),
            },
            Error::Busy { socket, limit, max } => WireError::Busy {
                socket: socket.clone(),
                limit: limit.to_string(),
                max: *max,
            },
            Error::Disconnected { socket, reason } => WireError::Disconnected {
                socket: socket.clone(),
                reason: reason.clone(),
            },
            Error::PeerRefused { socket, reason } => WireError::PeerRefused {
                socket: socket.clone(),
                reason: reason.clone(),
            },
        }
    }
}

/// A decision's refusal as the server saw it (its text; its type stays
/// on the server).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RemoteRejection(pub String);

impl From<WireError> for Error {
    fn from(e: WireError) -> Self {
        match e {
            WireError::Io {
                op,
                path,
                raw_os_error,
                message,
            } => Error::Io {
                op: intern(&op),
                path,
                source: match raw_os_error {
                    Some(code) => std::io::Error::from_raw_os_error(code),
                    None => std::io::Error::other(message),
                },
            },
            WireError::Locked { path, pid } => Error::Locked { path, pid },
            WireError::Corrupt {
                segment,
                offset,
                reason,
            } => Error::Corrupt {
                segment,
                offset,
                reason,
            },
            WireError::UnsupportedVersion {
                path,
                found,
                supported,
            } => Error::UnsupportedVersion {
                path,
                found,
                supported,
            },
            WireError::WrongExpectedVersion {
                stream,
                expected,
                actual,
            } => Error::WrongExpectedVersion {
                stream,
                expected,
                actual,
            },
            WireError::InvalidStreamName { name, reason } => Error::InvalidStreamName {
                name,
                reason: intern(&reason),
            },
            WireError::RecordAboveLimit {
                segment,
                offset,
                reason,
            } => Error::RecordAboveLimit {
                segment,
                offset,
                reason,
            },
            WireError::Store { op, path, reason } => Error::Store {
                op: intern(&op),
                path,
                reason,
            },
            WireError::StoreUnusable {
                path,
                reason,
                log_first_lsn,
            } => Error::StoreUnusable {
                path,
                reason,
                log_first_lsn,
            },
            WireError::LogConflict {
                expected_last_lsn,
                actual_last_lsn,
                stored_records,
            } => Error::LogConflict {
                expected_last_lsn,
                actual_last_lsn,
                stored_records,
            },
            WireError::Snapshot { op, path, reason } => Error::Snapshot {
                op: intern(&op),
                path,
                reason,
            },
            WireError::ViewVersion {
                view,
                snapshot_version,
                code_version,
                log_first_lsn,
            } => Error::ViewVersion {
                view,
                snapshot_version,
                code_version,
                log_first_lsn,
            },
            WireError::NoUsableSnapshot {
                log_first_lsn,
                details,
            } => Error::NoUsableSnapshot {
                log_first_lsn,
                details,
            },
            WireError::Compacted {
                what,
                oldest_available,
            } => Error::Compacted {
                what,
                oldest_available,
            },
            WireError::Rejected { message } => Error::rejected(RemoteRejection(message)),
            WireError::InvalidArgument { op, reason } => Error::InvalidArgument {
                op: intern(&op),
                reason,
            },
            WireError::RecordTooLarge {
                stream,
                size_bytes,
                limit_bytes,
            } => Error::RecordTooLarge {
                stream,
                size_bytes,
                limit_bytes,
            },
            WireError::Poisoned { cause } => Error::Poisoned { cause },
            WireError::ViewNotRegistered { op, view } => Error::ViewNotRegistered {
                op: intern(&op),
                view: intern(&view),
            },
            WireError::Closed { op } => Error::Closed { op: intern(&op) },
            WireError::InProgress { op, running } => Error::InProgress {
                op: intern(&op),
                running: intern(&running),
            },
            WireError::Reentrant { op } => Error::Reentrant { op: intern(&op) },
            WireError::Unsupported { op, reason } => Error::Unsupported {
                op: intern(&op),
                reason,
            },
            WireError::Encode { op, reason } => Error::Encode {
                op: intern(&op),
                reason,
            },
            WireError::Internal { op, reason } => Error::Internal {
                op: intern(&op),
                reason,
            },
            WireError::Protocol { socket, reason } => Error::Protocol { socket, reason },
            WireError::Busy { socket, limit, max } => Error::Busy {
                socket,
                limit: intern(&limit),
                max,
            },
            WireError::Disconnected { socket, reason } => Error::Disconnected { socket, reason },
            WireError::PeerRefused { socket, reason } => Error::PeerRefused { socket, reason },
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn an_error_crosses_the_socket_as_the_same_variant() {
        let e = Error::WrongExpectedVersion {
            stream: "s".into(),
            expected: ExpectedVersion::Exact(3),
            actual: 5,
        };
        let wire: WireError = decode("error", &encode(&WireError::from(&e))).unwrap();
        let back = Error::from(wire);
        assert_eq!(back.to_string(), e.to_string());
        assert!(matches!(
            back,
            Error::WrongExpectedVersion {
                actual: 5,
                expected: ExpectedVersion::Exact(3),
                ..
            }
        ));
        let io = Error::Io {
            op: "open segment",
            path: "/x".into(),
            source: std::io::Error::from_raw_os_error(libc::ENOSPC),
        };
        let back = Error::from(decode::<WireError>("e", &encode(&WireError::from(&io))).unwrap());
        assert_eq!(back.to_string(), io.to_string());
    }

    #[test]
    fn every_kind_of_error_comes_back_as_it_went() {
        let errors = vec![
            Error::ViewNotRegistered {
                op: "kv entries",
                view: "kv",
            },
            Error::Closed { op: "subscribe" },
            Error::InProgress {
                op: "checkpoint",
                running: "a backup",
            },
            Error::Reentrant { op: "append" },
            Error::Unsupported {
                op: "backup",
                reason: "in memory".into(),
            },
            Error::Encode {
                op: "save registry",
                reason: "x".into(),
            },
            Error::Internal {
                op: "execute",
                reason: "panicked".into(),
            },
            Error::Busy {
                socket: "/s".into(),
                limit: "connections",
                max: 256,
            },
            Error::Compacted {
                what: "LSN 5".into(),
                oldest_available: 9,
            },
            Error::Locked {
                path: "/d/LOCK".into(),
                pid: Some(7),
            },
        ];
        for e in errors {
            let back =
                Error::from(decode::<WireError>("e", &encode(&WireError::from(&e))).unwrap());
            assert_eq!(back.to_string(), e.to_string());
            assert_eq!(
                std::mem::discriminant(&back),
                std::mem::discriminant(&e),
                "{e:?}"
            );
        }
    }

    #[test]
    fn interned_strings_are_bounded() {
        let seen = Mutex::new(Vec::new());
        for i in 0..INTERNED_MAX {
            let _ = intern_in(&seen, &format!("op {i}"));
        }
        assert_eq!(intern_in(&seen, "op 3"), "op 3");
        assert_eq!(
            intern_in(&seen, "never seen, past the limit"),
            "(from the server)"
        );
    }
}
