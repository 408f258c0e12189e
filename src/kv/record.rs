//! The events of the `$kv` stream: one per bucket created, key put or key
//! deleted, decided in the writer and folded by [`KvView`](super::KvView).
//! A change's revision is its event's LSN.

use serde::{Deserialize, Serialize};

/// The stream holding KV events. `$` marks it internal: callers cannot
/// append to it.
pub const KV_STREAM: &str = "$kv";

/// One KV change, as it is logged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvRecord {
    /// Milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
    /// What changed.
    pub change: KvChange,
}

/// What one KV event changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KvChange {
    /// A bucket was created.
    BucketCreated {
        /// Its name.
        bucket: String,
        /// How long a dead owner's keys outlive it, in ms.
        ttl_ms: u64,
    },
    /// A key was written.
    Put {
        /// Its bucket.
        bucket: String,
        /// The key.
        key: String,
        /// The value.
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
        /// The owner's lease (0: none, the key never expires).
        lease: u64,
    },
    /// A key was deleted.
    Delete {
        /// Its bucket.
        bucket: String,
        /// The key.
        key: String,
        /// Why.
        reason: DeleteReason,
    },
}

/// Why a key was deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum DeleteReason {
    /// A caller deleted it.
    Deleted,
    /// Its owner's lease expired: the owner stopped without cleaning up.
    LeaseExpired {
        /// The lease.
        lease: u64,
    },
    /// Its owner shut down.
    Shutdown,
}

impl KvRecord {
    /// The record as event data (MessagePack with field names).
    pub fn encode(&self) -> Result<Vec<u8>, rmp_serde::encode::Error> {
        rmp_serde::to_vec_named(self)
    }

    /// A record from event data.
    pub fn decode(data: &[u8]) -> Result<KvRecord, rmp_serde::decode::Error> {
        rmp_serde::from_slice(data)
    }
}
