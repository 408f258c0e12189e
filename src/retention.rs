//! Stream retention: what a stream's history keeps.
//!
//! Every stream keeps every event unless its retention says otherwise, as
//! KurrentDB's stream metadata does (`$maxCount`, `$maxAge`, `$tb`). A
//! policy is itself an event (on the internal stream `$retention`), so it
//! is replayed with everything else; it removes history only, never the
//! stream's version, and reads of what it removed get
//! [`Error::Compacted`](crate::Error::Compacted).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The internal stream that carries retention changes.
pub const RETENTION_STREAM: &str = "$retention";

/// What a stream's history keeps. The default keeps everything; the
/// fields combine (an event stays only if every set limit keeps it).
///
/// ```
/// use replaydb::Retention;
/// let last_ten = Retention::max_count(10);
/// assert_eq!(last_ten.first_kept_version(25), 16);
/// assert!(Retention::state_only().is_state_only());
/// assert_eq!(Retention::default(), Retention::keep_all());
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retention {
    /// Keep at most this many of the newest events (0: none, state only).
    pub max_count: Option<u64>,
    /// Keep events for this many milliseconds after the store took them
    /// in; older ones go at the next checkpoint.
    pub max_age_ms: Option<u64>,
    /// Remove every event below this stream version.
    pub truncate_before: Option<u64>,
}

impl Retention {
    /// Keeps every event (the default).
    pub fn keep_all() -> Retention {
        Retention::default()
    }

    /// Keeps the newest `n` events.
    pub fn max_count(n: u64) -> Retention {
        Retention {
            max_count: Some(n),
            ..Retention::default()
        }
    }

    /// Keeps events for `age` after they were stored.
    pub fn max_age(age: Duration) -> Retention {
        Retention {
            max_age_ms: Some(u64::try_from(age.as_millis()).unwrap_or(u64::MAX)),
            ..Retention::default()
        }
    }

    /// Removes every event below `version`.
    pub fn truncate_before(version: u64) -> Retention {
        Retention {
            truncate_before: Some(version),
            ..Retention::default()
        }
    }

    /// Keeps no history: the stream's version (and whatever views fold
    /// from it) only. For internal streams whose state lives in a view.
    pub fn state_only() -> Retention {
        Retention::max_count(0)
    }

    /// Whether this keeps no event at all.
    pub fn is_state_only(&self) -> bool {
        self.max_count == Some(0)
    }

    /// Whether this keeps everything.
    pub fn is_keep_all(&self) -> bool {
        *self == Retention::default()
    }

    /// The first version kept by the count and truncate limits, for a
    /// stream at `version` (age is applied at checkpoints).
    pub fn first_kept_version(&self, version: u64) -> u64 {
        let by_count = self
            .max_count
            .map_or(1, |n| version.saturating_sub(n).saturating_add(1));
        let by_truncate = self.truncate_before.unwrap_or(1);
        by_count.max(by_truncate).max(1)
    }

    /// Checks the policy is meaningful.
    pub(crate) fn validate(&self) -> crate::Result<()> {
        let bad = |reason: &str| {
            Err(crate::Error::InvalidArgument {
                op: "set_retention",
                reason: reason.into(),
            })
        };
        if self.max_age_ms == Some(0) {
            return bad("max age must be above zero (use Retention::state_only to keep nothing)");
        }
        if self.truncate_before == Some(0) {
            return bad("truncate_before is a stream version, from 1");
        }
        Ok(())
    }
}

impl std::fmt::Display for Retention {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_keep_all() {
            return f.write_str("keep all");
        }
        if self.is_state_only() {
            return f.write_str("state only");
        }
        let mut parts = Vec::new();
        if let Some(n) = self.max_count {
            parts.push(format!("max count {n}"));
        }
        if let Some(ms) = self.max_age_ms {
            parts.push(format!("max age {ms} ms"));
        }
        if let Some(v) = self.truncate_before {
            parts.push(format!("truncate before version {v}"));
        }
        f.write_str(&parts.join(", "))
    }
}

/// The event on [`RETENTION_STREAM`] that sets a stream's retention.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RetentionChange {
    pub stream: String,
    pub retention: Retention,
}
