//! Subscriptions: every committed event from an LSN on, in order, with no
//! gap and no duplicate, read from the store's history a page at a time.
//!
//! A subscription owes its caller the next LSN. When its buffer is empty
//! it reads the history from that LSN up to what the store has applied;
//! when the store has nothing more, it waits for the applied LSN to move
//! (a condition variable for blocking callers, a `watch` channel for
//! async ones). Nothing is held in memory for a subscriber that falls
//! behind: it reads on from the store, whatever the distance.

use std::collections::VecDeque;

use tokio::sync::watch;

use crate::engine::Db;
use crate::error::{Error, Result};
use crate::stream::Event;

/// Events read from the store at a time.
const PAGE_EVENTS: usize = 1024;

/// A position in the log that yields every committed event from there on.
///
/// Use it as a blocking [`Iterator`] from a plain thread, or through
/// [`Subscription::next_async`] / [`Subscription::into_stream`] from async
/// code. A subscription keeps the database open while it lives.
#[derive(Debug)]
pub struct Subscription {
    db: Db,
    applied: AppliedWatch,
    next_lsn: u64,
    buffer: VecDeque<Event>,
    failed: bool,
}

enum Step {
    Ready(Event),
    Wait,
}

impl Subscription {
    pub(crate) fn new(db: Db, from_lsn: u64) -> Self {
        Subscription {
            applied: AppliedWatch::new(&db),
            db,
            next_lsn: from_lsn,
            buffer: VecDeque::new(),
            failed: false,
        }
    }

    /// The LSN of the next event this subscription will yield.
    pub fn next_lsn(&self) -> u64 {
        self.next_lsn
    }

    /// Reads the next page from the store, up to what it has applied.
    /// Events that retention removed are passed over.
    fn fill(&mut self) -> Result<()> {
        let r = self.db.inner.store.begin_read()?;
        let applied = r.applied_lsn();
        if applied < self.next_lsn {
            return Ok(());
        }
        let mut page = Vec::new();
        r.replay(self.next_lsn, |e| {
            page.push(e.to_owned());
            page.len() < PAGE_EVENTS
        })?;
        match page.last() {
            Some(_) => self.buffer.extend(page),
            // Nothing held up to `applied`: removed by retention.
            None => self.next_lsn = applied + 1,
        }
        Ok(())
    }

    /// One step without waiting.
    fn step(&mut self) -> Result<Step> {
        self.db.inner.check_poison()?;
        loop {
            if let Some(event) = self.buffer.pop_front() {
                if event.lsn < self.next_lsn {
                    continue;
                }
                self.next_lsn = event.lsn + 1;
                return Ok(Step::Ready(event));
            }
            if self.db.inner.health.applied_lsn() < self.next_lsn {
                return Ok(Step::Wait);
            }
            self.fill()?;
            if self.buffer.is_empty() && self.db.inner.health.applied_lsn() < self.next_lsn {
                return Ok(Step::Wait);
            }
        }
    }

    fn finish(&mut self, r: Result<Event>) -> Option<Result<Event>> {
        if self.failed {
            return None;
        }
        if r.is_err() {
            self.failed = true;
        }
        Some(r)
    }

    /// Waits for the next event without blocking a tokio worker. Returns
    /// `None` after an error has been returned once.
    pub async fn next_async(&mut self) -> Option<Result<Event>> {
        if self.failed {
            return None;
        }
        loop {
            match self.step() {
                Ok(Step::Ready(e)) => return self.finish(Ok(e)),
                Ok(Step::Wait) => {}
                Err(e) => return self.finish(Err(e)),
            }
            let waited = self.applied.wait_past_async(self.next_lsn - 1).await;
            if let Err(e) = waited {
                return self.finish(Err(e));
            }
        }
    }

    /// Waits for the next event, blocking the thread. Must not be called
    /// from inside an async runtime (use [`Subscription::next_async`]).
    pub fn next_blocking(&mut self) -> Option<Result<Event>> {
        if self.failed {
            return None;
        }
        loop {
            match self.step() {
                Ok(Step::Ready(e)) => return self.finish(Ok(e)),
                Ok(Step::Wait) => {}
                Err(e) => return self.finish(Err(e)),
            }
            if let Err(e) = self.db.inner.wait_applied(self.next_lsn) {
                return self.finish(Err(e));
            }
        }
    }

    /// The next event if one is committed already, without waiting.
    pub fn try_next(&mut self) -> Option<Result<Event>> {
        if self.failed {
            return None;
        }
        match self.step() {
            Ok(Step::Ready(e)) => self.finish(Ok(e)),
            Ok(Step::Wait) => None,
            Err(e) => self.finish(Err(e)),
        }
    }

    /// This subscription as a `futures` [`Stream`](futures_core::Stream).
    pub fn into_stream(self) -> impl futures_core::Stream<Item = Result<Event>> + Send {
        futures_util::stream::unfold(self, |mut sub| async move {
            let item = sub.next_async().await?;
            Some((item, sub))
        })
    }
}

impl Iterator for Subscription {
    type Item = Result<Event>;

    /// Blocks until the next event; see [`Subscription::next_blocking`].
    fn next(&mut self) -> Option<Result<Event>> {
        self.next_blocking()
    }
}

fn closed() -> Error {
    Error::Closed { op: "subscribe" }
}

/// What a view's own follower (a runtime subscription, a KV watch) waits
/// on: the store's applied LSN moving past the LSN its last page
/// reflected. One place for the blocking and the async wait.
#[derive(Debug)]
pub(crate) struct AppliedWatch {
    db: Db,
    applied: watch::Receiver<u64>,
}

impl AppliedWatch {
    pub(crate) fn new(db: &Db) -> AppliedWatch {
        AppliedWatch {
            db: db.clone(),
            applied: db.inner.health.watch_applied(),
        }
    }

    /// Blocks the thread until the store has applied past `lsn`.
    pub(crate) fn wait_past(&self, lsn: u64) -> Result<()> {
        self.db.inner.wait_applied(lsn + 1)
    }

    /// Waits, without blocking a tokio worker, until the store has
    /// applied past `lsn`.
    pub(crate) async fn wait_past_async(&mut self, lsn: u64) -> Result<()> {
        loop {
            if *self.applied.borrow_and_update() > lsn {
                return self.db.inner.check_poison();
            }
            if self.db.last_lsn() > lsn {
                self.db.inner.applier.kick();
            }
            if self.applied.changed().await.is_err() {
                return Err(closed());
            }
        }
    }
}
