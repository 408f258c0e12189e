//! Watches: a bucket's (or a key prefix's) changes, read from the store.
//!
//! A watch owes its caller only the next revision. It reads the bucket's
//! `changes` rows from there, a page at a time; when there are none, it
//! waits for the store's applied LSN to move past the LSN that page
//! reflected. A snapshot ([`WatchEvent::Resync`]) and the revision after
//! it are read at one commit, so no change falls between them, and none
//! is lost or repeated however slow the reader: it never falls behind a
//! buffer, as there is none.

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::key::Key;
use super::record::DeleteReason;
use super::remote::{self, KvCall};
use super::view::{CHANGES, ChangeRow, VALUES, bucket_prefix, change_key, key_key};
use super::{KvError, read_at};
use crate::engine::Db;
use crate::remote::{Backend, Waiter};

/// Changes read from the store at a time.
const PAGE_CHANGES: usize = 256;
/// Bytes of values a page holds at most, beyond its first change (a
/// value is at most the record limit): a page always fits a frame, so a
/// watch through a server never meets a page it cannot be sent.
const PAGE_VALUE_BYTES_MAX: usize = 4 << 20;

/// A key with its value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    /// The key, relative to its bucket.
    pub key: Key,
    /// The value.
    pub value: Vec<u8>,
}

impl KeyValue {
    /// A key and value.
    pub fn new(key: Key, value: impl Into<Vec<u8>>) -> KeyValue {
        KeyValue {
            key,
            value: value.into(),
        }
    }
}

/// One thing a watch reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchEvent {
    /// A key was written.
    Put(KeyValue),
    /// A key was deleted.
    Delete(Key),
    /// Every key (under the watch's prefix) at one revision: the first
    /// event of [`Bucket::watch`](super::Bucket::watch).
    Resync(HashMap<Key, Vec<u8>>),
}

/// A watch event with its revision (an LSN) and, for a delete, why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revisioned {
    /// The revision of the change (for a `Resync`, the revision the
    /// snapshot reflects).
    pub revision: u64,
    /// Why the key was deleted (a delete only).
    pub reason: Option<DeleteReason>,
    /// The event.
    pub event: WatchEvent,
}

/// A bucket's changes, from a snapshot or a revision on.
#[derive(Debug)]
pub struct Watch {
    backend: Backend,
    bucket: String,
    prefix: String,
    /// The first revision not yet read.
    next_revision: u64,
    buffer: VecDeque<Revisioned>,
    applied: Waiter,
}

/// One page of a bucket's changes, as read at one commit.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ChangesPage {
    /// The changes under the watch's prefix, with their revisions.
    changes: Vec<(u64, ChangeRow)>,
    /// The last revision looked at (matching or not).
    last: Option<u64>,
    /// Whether the read stopped at its scan limit with rows left.
    capped: bool,
    /// The LSN the page reflects.
    lsn: u64,
}

/// Reads the page of `bucket`'s changes under `prefix` from
/// `next_revision`.
pub(crate) fn read_page(
    db: &Db,
    bucket: &str,
    want: &str,
    next_revision: u64,
) -> Result<ChangesPage, KvError> {
    let prefix = bucket_prefix(bucket);
    let from = change_key(bucket, next_revision);
    let ((changes, last, capped), lsn) = read_at(db, |t| {
        let mut page: Vec<(u64, ChangeRow)> = Vec::new();
        let mut last = None;
        // Rows looked at: a prefix that matches few keys of a busy
        // bucket must not make one page read its whole history.
        let mut scanned = 0usize;
        let mut bytes = 0usize;
        let mut full = false;
        t.scan(CHANGES, &prefix, &from, |rest, v| {
            let rev = <[u8; 8]>::try_from(rest)
                .map(u64::from_be_bytes)
                .map_err(|_| t.read.bad_value(CHANGES, rest))?;
            let row: ChangeRow = t.decode(CHANGES, rest, v)?;
            if row.key.starts_with(want) {
                let size = row.key.len() + row.value.as_ref().map_or(0, Vec::len);
                // Left for the next page, which starts at it.
                if !page.is_empty() && bytes + size > PAGE_VALUE_BYTES_MAX {
                    full = true;
                    return Ok(false);
                }
                bytes += size;
                page.push((rev, row));
            }
            scanned += 1;
            last = Some(rev);
            Ok(page.len() < PAGE_CHANGES && scanned < PAGE_CHANGES * 16)
        })?;
        Ok((page, last, full || scanned >= PAGE_CHANGES * 16))
    })?;
    Ok(ChangesPage {
        changes,
        last,
        capped,
        lsn,
    })
}

/// The keys of `bucket` under `prefix` with their values, and the LSN
/// they reflect.
pub(crate) fn read_snapshot(
    db: &Db,
    bucket: &str,
    prefix: &str,
) -> Result<(HashMap<Key, Vec<u8>>, u64), KvError> {
    let from = key_key(bucket, prefix);
    let bucket_keys = bucket_prefix(bucket);
    read_at(db, |t| {
        let mut state = HashMap::new();
        t.scan(VALUES, &bucket_keys, &from, |rest, v| {
            let key = t.text(VALUES, rest)?.to_string();
            if !key.starts_with(prefix) {
                return Ok(false);
            }
            state.insert(Key::new(key), v.to_vec());
            Ok(true)
        })?;
        Ok(state)
    })
}

impl Watch {
    pub(crate) fn snapshot(
        backend: Backend,
        bucket: String,
        prefix: String,
    ) -> Result<Watch, KvError> {
        let (state, lsn) = match &backend {
            Backend::Local(db) => read_snapshot(db, &bucket, &prefix)?,
            Backend::Remote(c) => {
                let call = KvCall::WatchSnapshot {
                    bucket: bucket.clone(),
                    prefix: prefix.clone(),
                };
                let (pairs, lsn): (Vec<(Key, serde_bytes::ByteBuf)>, u64) =
                    remote::call(c, call, true)?;
                let state = pairs.into_iter().map(|(k, v)| (k, v.into_vec())).collect();
                (state, lsn)
            }
        };
        let mut w = Watch::from_revision(backend, bucket, prefix, lsn + 1);
        w.buffer.push_back(Revisioned {
            revision: lsn,
            reason: None,
            event: WatchEvent::Resync(state),
        });
        Ok(w)
    }

    pub(crate) fn from_revision(
        backend: Backend,
        bucket: String,
        prefix: String,
        revision: u64,
    ) -> Watch {
        Watch {
            applied: Waiter::new(&backend),
            backend,
            bucket,
            prefix,
            next_revision: revision.max(1),
            buffer: VecDeque::new(),
        }
    }

    /// The revision the next change will have at least: where to resume.
    pub fn next_revision(&self) -> u64 {
        self.next_revision
    }

    /// Reads the next page: the LSN it reflects, or `None` if it stopped
    /// at its scan limit with rows left to read (read again at once).
    fn fill(&mut self) -> Result<Option<u64>, KvError> {
        let page = match &self.backend {
            Backend::Local(db) => read_page(db, &self.bucket, &self.prefix, self.next_revision)?,
            Backend::Remote(c) => remote::call(c, self.page_call(), true)?,
        };
        Ok(self.absorb(page))
    }

    /// [`Watch::fill`] without blocking a tokio worker: through a server,
    /// the round trip is a blocking-pool task.
    async fn fill_async(&mut self) -> Result<Option<u64>, KvError> {
        let Backend::Remote(c) = &self.backend else {
            return self.fill();
        };
        let (c, call) = (c.clone(), self.page_call());
        let page = tokio::task::spawn_blocking(move || remote::call(&c, call, true))
            .await
            .map_err(|e| {
                KvError::Db(crate::Error::Internal {
                    op: "kv watch",
                    reason: format!("the page's task failed: {e}"),
                })
            })??;
        Ok(self.absorb(page))
    }

    fn page_call(&self) -> KvCall {
        KvCall::WatchPage {
            bucket: self.bucket.clone(),
            prefix: self.prefix.clone(),
            next_revision: self.next_revision,
        }
    }

    /// Takes a page's changes in: the LSN it reflects, or `None` if it
    /// stopped with rows left to read.
    fn absorb(&mut self, page: ChangesPage) -> Option<u64> {
        let ChangesPage {
            changes,
            last,
            capped,
            lsn,
        } = page;
        for (revision, row) in changes {
            let key = Key::new(row.key);
            let event = match row.value {
                Some(value) => WatchEvent::Put(KeyValue { key, value }),
                None => WatchEvent::Delete(key),
            };
            self.buffer.push_back(Revisioned {
                revision,
                reason: row.reason,
                event,
            });
        }
        if let Some(last) = last {
            self.next_revision = last + 1;
        }
        (!capped).then_some(lsn)
    }

    /// The next event if one is there now.
    pub fn try_next_revisioned(&mut self) -> Result<Option<Revisioned>, KvError> {
        while self.buffer.is_empty() && self.fill()?.is_none() {}
        Ok(self.buffer.pop_front())
    }

    /// The next event, blocking the thread until there is one. Not from
    /// inside an async runtime (use [`Watch::next_async`]).
    pub fn next_revisioned_blocking(&mut self) -> Result<Revisioned, KvError> {
        loop {
            if let Some(e) = self.buffer.pop_front() {
                return Ok(e);
            }
            if let Some(lsn) = self.fill()?
                && self.buffer.is_empty()
            {
                self.applied.wait_past(lsn)?;
            }
        }
    }

    /// The next event, blocking the thread until there is one.
    pub fn next_blocking(&mut self) -> Result<WatchEvent, KvError> {
        self.next_revisioned_blocking().map(|r| r.event)
    }

    /// The next event, without blocking a tokio worker.
    pub async fn next_revisioned_async(&mut self) -> Result<Revisioned, KvError> {
        loop {
            if let Some(e) = self.buffer.pop_front() {
                return Ok(e);
            }
            let Some(lsn) = self.fill_async().await? else {
                continue;
            };
            if self.buffer.is_empty() {
                self.applied.wait_past_async(lsn).await?;
            }
        }
    }

    /// The next event, without blocking a tokio worker.
    pub async fn next_async(&mut self) -> Result<WatchEvent, KvError> {
        self.next_revisioned_async().await.map(|r| r.event)
    }
}
