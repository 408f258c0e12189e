//! The KV view: buckets, keys, values, each bucket's changes and each
//! lease's keys, in the store's tables only (the leases' liveness is the
//! one thing in memory, and it is never logged).
//!
//! `lp(x)` is `x`'s length as u32 big-endian, then its bytes, so one
//! bucket's rows are one key range whatever bytes its name holds:
//!
//! | table     | key                                  | value |
//! |-----------|--------------------------------------|-------|
//! | `buckets` | bucket name                          | [`BucketRow`] |
//! | `keys`    | `lp(bucket) ++ key`                  | [`KeyRow`] |
//! | `values`  | `lp(bucket) ++ key`                  | the value's bytes, as given |
//! | `changes` | `lp(bucket) ++ revision (u64 BE)`    | [`ChangeRow`] |
//! | `leases`  | `lease (u64 BE) ++ lp(bucket) ++ key`| empty |

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::cache::{
    BucketCache, CACHED_BUCKET_BYTES_MAX, CACHED_BUCKET_KEYS_MAX, Entries, entry_bytes,
};
use super::lease::Leases;
use super::record::{DeleteReason, KV_STREAM, KvChange, KvRecord};
use crate::stream::EventRef;
use crate::views::{View, ViewTables, ViewTablesRead, encode_row, push_len_prefixed};

/// The view's name (it names its tables in the store).
pub const KV_VIEW: &str = "kv";

pub(crate) const BUCKETS: &str = "buckets";
pub(crate) const KEYS: &str = "keys";
pub(crate) const VALUES: &str = "values";
pub(crate) const CHANGES: &str = "changes";
pub(crate) const LEASES: &str = "leases";

/// A bucket's row.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketRow {
    /// How long a dead owner's keys outlive it, in ms.
    pub ttl_ms: u64,
    /// The revision that created it.
    pub created_revision: u64,
}

/// A key's row (its value is in `values`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRow {
    /// The revision that created the key (since it was last absent).
    pub create_revision: u64,
    /// The revision of its last put.
    pub mod_revision: u64,
    /// Puts since it was created, from 1.
    pub version: u64,
    /// Its owner's lease (0: none).
    pub lease: u64,
}

/// One change of a bucket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeRow {
    /// The key, relative to the bucket.
    pub key: String,
    /// The value put, or `None` for a delete.
    #[serde(with = "serde_bytes")]
    pub value: Option<Vec<u8>>,
    /// Why it was deleted (a delete only).
    pub reason: Option<DeleteReason>,
}

pub(crate) fn bucket_prefix(bucket: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(4 + bucket.len() + 16);
    push_len_prefixed(&mut k, bucket);
    k
}

pub(crate) fn key_key(bucket: &str, key: &str) -> Vec<u8> {
    let mut k = bucket_prefix(bucket);
    k.extend_from_slice(key.as_bytes());
    k
}

pub(crate) fn change_key(bucket: &str, revision: u64) -> Vec<u8> {
    let mut k = bucket_prefix(bucket);
    k.extend_from_slice(&revision.to_be_bytes());
    k
}

pub(crate) fn lease_key(lease: u64, bucket: &str, key: &str) -> Vec<u8> {
    let mut k = lease.to_be_bytes().to_vec();
    push_len_prefixed(&mut k, bucket);
    k.extend_from_slice(key.as_bytes());
    k
}

/// A lease key's bucket and key.
pub(crate) fn split_lease_key(k: &[u8]) -> Option<(u64, String, String)> {
    let lease = u64::from_be_bytes(<[u8; 8]>::try_from(k.get(..8)?).ok()?);
    let len = u32::from_be_bytes(<[u8; 4]>::try_from(k.get(8..12)?).ok()?) as usize;
    let bucket = std::str::from_utf8(k.get(12..12 + len)?).ok()?;
    let key = std::str::from_utf8(k.get(12 + len..)?).ok()?;
    Some((lease, bucket.to_string(), key.to_string()))
}

/// Typed reads of the view's tables.
pub(crate) struct Tables<'t, 'a> {
    pub read: &'t ViewTablesRead<'a>,
}

impl Tables<'_, '_> {
    fn get<T: DeserializeOwned>(&self, table: &str, key: &[u8]) -> crate::Result<Option<T>> {
        match self.read.get(table, key)? {
            Some(v) => rmp_serde::from_slice(&v)
                .map(Some)
                .map_err(|_| self.read.bad_value(table, key)),
            None => Ok(None),
        }
    }

    pub fn bucket(&self, bucket: &str) -> crate::Result<Option<BucketRow>> {
        self.get(BUCKETS, bucket.as_bytes())
    }

    pub fn key(&self, bucket: &str, key: &str) -> crate::Result<Option<KeyRow>> {
        self.get(KEYS, &key_key(bucket, key))
    }

    pub fn value(&self, bucket: &str, key: &str) -> crate::Result<Option<Vec<u8>>> {
        self.read.get(VALUES, &key_key(bucket, key))
    }

    /// Visits `table`'s rows under `prefix` from `from` on (which starts
    /// with `prefix`), giving what follows the prefix, until `visit`
    /// says stop.
    pub fn scan(
        &self,
        table: &str,
        prefix: &[u8],
        from: &[u8],
        mut visit: impl FnMut(&[u8], &[u8]) -> crate::Result<bool>,
    ) -> crate::Result<()> {
        self.read
            .for_each_from(table, Some(from), |k, v| match k.strip_prefix(prefix) {
                Some(rest) => visit(rest, v),
                None => Ok(false),
            })
    }

    /// A key's text (a bucket name or a key are UTF-8; anything else in
    /// `table` is damage, never passed over or altered).
    pub fn text<'k>(&self, table: &str, k: &'k [u8]) -> crate::Result<&'k str> {
        std::str::from_utf8(k).map_err(|_| self.read.bad_value(table, k))
    }

    /// Decodes a row of `table` read by [`Tables::scan`].
    pub fn decode<T: DeserializeOwned>(
        &self,
        table: &str,
        key: &[u8],
        v: &[u8],
    ) -> crate::Result<T> {
        rmp_serde::from_slice(v).map_err(|_| self.read.bad_value(table, key))
    }
}

/// The fold of `$kv` events into the view's tables. Register it at open
/// ([`KvStore::open`](super::KvStore::open) does).
#[derive(Clone, Debug, Default)]
pub struct KvView {
    /// The leases' liveness, shared with every store handle on this
    /// database.
    pub(crate) leases: Arc<Leases>,
    /// Events on the KV stream that did not decode or did not follow on
    /// from the state (a put to a missing bucket, a delete of a missing
    /// key, a bucket created twice; never written by this code). Counted
    /// and logged, not applied.
    pub rejected_events: u64,
    /// Small buckets whole, for `entries()`.
    pub(crate) cache: BucketCache,
}

impl KvView {
    fn fold(
        &mut self,
        lsn: u64,
        record: &KvRecord,
        tables: &mut ViewTables<'_>,
    ) -> crate::Result<bool> {
        let current = |tables: &ViewTables<'_>, bucket: &str, key: &str| {
            Tables {
                read: &tables.read(),
            }
            .key(bucket, key)
        };
        let bucket_row = |tables: &ViewTables<'_>, bucket: &str| {
            Tables {
                read: &tables.read(),
            }
            .bucket(bucket)
        };
        match &record.change {
            KvChange::BucketCreated { bucket, ttl_ms } => {
                if bucket_row(tables, bucket)?.is_some() {
                    return Ok(false);
                }
                let row = BucketRow {
                    ttl_ms: *ttl_ms,
                    created_revision: lsn,
                };
                tables.put(
                    BUCKETS,
                    bucket.as_bytes(),
                    &encode_row("save kv bucket", &row)?,
                )?;
                self.cache.created(bucket);
            }
            KvChange::Put {
                bucket,
                key,
                value,
                lease,
            } => {
                if bucket_row(tables, bucket)?.is_none() {
                    return Ok(false);
                }
                let old = current(tables, bucket, key)?;
                if let Some(old) = old
                    && old.lease != 0
                    && old.lease != *lease
                {
                    tables.remove(LEASES, &lease_key(old.lease, bucket, key))?;
                }
                let row = KeyRow {
                    create_revision: old.map_or(lsn, |o| o.create_revision),
                    mod_revision: lsn,
                    version: old.map_or(1, |o| o.version + 1),
                    lease: *lease,
                };
                let k = key_key(bucket, key);
                tables.put(KEYS, &k, &encode_row("save kv key", &row)?)?;
                tables.put(VALUES, &k, value)?;
                if *lease != 0 {
                    tables.put(LEASES, &lease_key(*lease, bucket, key), &[])?;
                    self.leases.seen(*lease);
                }
                let change = ChangeRow {
                    key: key.clone(),
                    value: Some(value.clone()),
                    reason: None,
                };
                tables.put(
                    CHANGES,
                    &change_key(bucket, lsn),
                    &encode_row("save kv change", &change)?,
                )?;
                self.cache.put(bucket, &format!("{bucket}/{key}"), value);
            }
            KvChange::Delete {
                bucket,
                key,
                reason,
            } => {
                let Some(old) = current(tables, bucket, key)? else {
                    return Ok(false);
                };
                let k = key_key(bucket, key);
                tables.remove(KEYS, &k)?;
                tables.remove(VALUES, &k)?;
                if old.lease != 0 {
                    tables.remove(LEASES, &lease_key(old.lease, bucket, key))?;
                }
                let change = ChangeRow {
                    key: key.clone(),
                    value: None,
                    reason: Some(*reason),
                };
                tables.put(
                    CHANGES,
                    &change_key(bucket, lsn),
                    &encode_row("save kv change", &change)?,
                )?;
                self.cache.delete(bucket, &format!("{bucket}/{key}"));
            }
        }
        Ok(true)
    }
}

impl KvView {
    /// Reads every bucket's entries, up to the first past a bucket's
    /// limits, and holds those within them: O(buckets × a bucket's
    /// limits) at most.
    fn load_cache(&mut self, tables: &ViewTablesRead<'_>) -> crate::Result<()> {
        self.cache.clear();
        let t = Tables { read: tables };
        let mut names = Vec::new();
        tables.for_each_from(BUCKETS, None, |k, _| {
            names.push(t.text(BUCKETS, k)?.to_string());
            Ok(true)
        })?;
        for bucket in names {
            let prefix = bucket_prefix(&bucket);
            let mut entries = Entries::default();
            let (mut over, mut bytes) = (false, 0u64);
            t.scan(VALUES, &prefix, &prefix, |rest, v| {
                let key = format!("{bucket}/{}", t.text(VALUES, rest)?);
                bytes += entry_bytes(&key, v);
                // Stopped at the first entry past a limit: a large bucket
                // costs the open no more than a held one would.
                if entries.len() >= CACHED_BUCKET_KEYS_MAX || bytes > CACHED_BUCKET_BYTES_MAX {
                    over = true;
                    return Ok(false);
                }
                entries.insert(&key, v);
                Ok(true)
            })?;
            if !over {
                self.cache.load(&bucket, entries);
            }
        }
        Ok(())
    }
}

impl View for KvView {
    fn name(&self) -> &str {
        KV_VIEW
    }

    fn schema_version(&self) -> u32 {
        1
    }

    fn apply(&mut self, event: &EventRef<'_>, tables: &mut ViewTables<'_>) -> crate::Result<()> {
        if event.stream != KV_STREAM {
            return Ok(());
        }
        let folded = match KvRecord::decode(event.data) {
            Ok(record) => self.fold(event.lsn, &record, tables)?,
            Err(_) => false,
        };
        if !folded {
            self.rejected_events += 1;
            tracing::warn!(
                lsn = event.lsn,
                "a KV event that does not follow on from the view was not applied"
            );
        }
        Ok(())
    }

    /// Every lease that owns a key gets a fresh TTL of grace from now: a
    /// restart never expires a live owner's keys. Found by seeking from
    /// one lease to the next, O(leases × log n). Small buckets are held
    /// in memory again (see `kv/cache.rs`).
    fn load(&mut self, tables: &ViewTablesRead<'_>) -> crate::Result<()> {
        self.load_cache(tables)?;
        let mut from = 0u64;
        loop {
            let mut next = None;
            tables.for_each_from(LEASES, Some(&from.to_be_bytes()), |k, _| {
                let lease = k
                    .get(..8)
                    .and_then(|b| <[u8; 8]>::try_from(b).ok())
                    .map(u64::from_be_bytes)
                    .ok_or_else(|| tables.bad_value(LEASES, k))?;
                next = Some(lease);
                Ok(false)
            })?;
            match next {
                Some(lease) => {
                    self.leases.seen(lease);
                    match lease.checked_add(1) {
                        Some(n) => from = n,
                        None => break,
                    }
                }
                None => break,
            }
        }
        Ok(())
    }

    fn reset(&mut self) {
        // The leases stay shared with the handles that hold them.
        self.rejected_events = 0;
        self.cache.clear();
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}
