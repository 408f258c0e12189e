//! Streams, versions and the events read back from the log.

use std::fmt;

use crate::error::{Error, Result};

/// Longest stream name accepted, in bytes.
pub const STREAM_NAME_BYTES_MAX: usize = 200;

/// What the caller believes a stream's version is before appending.
///
/// A stream's version is the number of events in it: a stream that does
/// not exist is at version 0, and the first event appended gets version 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ExpectedVersion {
    /// Append whatever the stream's version is.
    Any,
    /// The stream must have no events yet (version 0).
    NoStream,
    /// The stream must be at exactly this version.
    Exact(u64),
}

impl ExpectedVersion {
    /// Whether a stream at `actual` satisfies this expectation.
    pub fn admits(self, actual: u64) -> bool {
        match self {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => actual == 0,
            ExpectedVersion::Exact(n) => actual == n,
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedVersion::Any => f.write_str("any"),
            ExpectedVersion::NoStream => f.write_str("no stream (version 0)"),
            ExpectedVersion::Exact(n) => write!(f, "version {n}"),
        }
    }
}

/// Checks a stream name: 1 to [`STREAM_NAME_BYTES_MAX`] bytes of ASCII
/// letters, digits and `-_.:@/`, not starting with `/` or `.`.
///
/// Names never become file names today, but the rule keeps them safe to
/// use as such (no `..`, no NUL, no control characters) and printable.
pub fn validate_stream_name(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        Some("empty")
    } else if name.len() > STREAM_NAME_BYTES_MAX {
        Some("longer than 200 bytes")
    } else if name.starts_with('/') || name.starts_with('.') {
        Some("starts with '/' or '.'")
    } else if name
        .split('/')
        .any(|part| part == ".." || part == "." || part.is_empty())
    {
        Some("has an empty, '.' or '..' path component")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.:@/".contains(&b))
    {
        Some("only ASCII letters, digits and -_.:@/ are allowed")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Error::InvalidStreamName {
            name: name.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

/// Checks a stream name that may be internal: `$` followed by a valid
/// name (`$registry`), or a valid name. Internal streams are written only
/// by the views that own them (through commands,
/// [`Db::execute`](crate::Db::execute), or the crate's own appends of
/// changes that decide nothing), never by a caller's plain appends.
pub fn validate_internal_stream_name(name: &str) -> Result<()> {
    match name.strip_prefix('$') {
        Some(rest) => validate_stream_name(rest).map_err(|e| match e {
            Error::InvalidStreamName { reason, .. } => Error::InvalidStreamName {
                name: name.to_string(),
                reason,
            },
            other => other,
        }),
        None => validate_stream_name(name),
    }
}

/// One committed event, owned.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Event {
    /// Its position in the global log (1-based, gapless).
    pub lsn: u64,
    /// The stream it belongs to.
    pub stream: String,
    /// Its version within the stream (1-based, gapless).
    pub version: u64,
    /// The payload as the appender gave it. By convention MessagePack
    /// (rmp-serde); the CLI stores JSON values that way.
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

impl Event {
    /// The event, borrowed.
    pub fn as_ref(&self) -> EventRef<'_> {
        EventRef {
            lsn: self.lsn,
            stream: &self.stream,
            version: self.version,
            data: &self.data,
        }
    }
}

/// One committed event, borrowed from the store (or the log).
///
/// Handed to [`Db::replay`](crate::Db::replay) visitors so that a full replay
/// allocates nothing per event, and to [`View::apply`](crate::View::apply).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventRef<'a> {
    /// Its position in the global log.
    pub lsn: u64,
    /// The stream it belongs to.
    pub stream: &'a str,
    /// Its version within the stream.
    pub version: u64,
    /// The payload bytes.
    pub data: &'a [u8],
}

impl EventRef<'_> {
    /// Copies the event out of the log.
    pub fn to_owned(&self) -> Event {
        Event {
            lsn: self.lsn,
            stream: self.stream.to_string(),
            version: self.version,
            data: self.data.to_vec(),
        }
    }
}

/// What a successful append did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Appended {
    /// LSN of the first event of the batch.
    pub first_lsn: u64,
    /// LSN of the last event of the batch (`first_lsn + count - 1`).
    pub last_lsn: u64,
    /// The stream's version after the batch (that of its last event).
    pub version: u64,
}

/// Milliseconds since the Unix epoch (0 before it), as events and rows
/// record their time.
pub(crate) fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn names_that_could_escape_or_confuse_are_refused() {
        for bad in [
            "", "/abs", ".hidden", "a/../b", "a//b", "a/", "sp ace", "nul\0", "é",
        ] {
            assert!(validate_stream_name(bad).is_err(), "{bad:?} accepted");
        }
        let long = "x".repeat(STREAM_NAME_BYTES_MAX + 1);
        assert!(validate_stream_name(&long).is_err());
        for good in [
            "orders",
            "pod-registry",
            "kv/bucket:key",
            "user@host",
            "a.b_c-1",
        ] {
            validate_stream_name(good).unwrap();
        }
    }

    #[test]
    fn expected_version_admits() {
        assert!(ExpectedVersion::Any.admits(7));
        assert!(ExpectedVersion::NoStream.admits(0));
        assert!(!ExpectedVersion::NoStream.admits(1));
        assert!(ExpectedVersion::Exact(3).admits(3));
        assert!(!ExpectedVersion::Exact(3).admits(2));
    }
}
