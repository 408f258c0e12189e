//! Live subscriptions to a runtime's events and to one worker's
//! transcript: read a page from the view; when it is empty, wait for the
//! store's applied LSN to move past the LSN that page reflected, then read
//! again. A subscription owes its caller only a cursor, so it resumes
//! without loss from wherever it was, after any length of absence.

use tokio::sync::watch;

use super::model::{
    EventCursor, RuntimeEventBatch, TranscriptProjection, TranscriptQuery, WorkerRef,
};
use super::{Runtime, RuntimeError};

/// What a subscription waits on: the applied LSN.
#[derive(Debug)]
struct Waiter {
    applied: watch::Receiver<u64>,
}

impl Waiter {
    fn new(runtime: &Runtime) -> Waiter {
        Waiter {
            applied: runtime.db.watch_applied(),
        }
    }

    /// Blocks until the store has applied past `lsn`.
    fn wait_past(&self, runtime: &Runtime, lsn: u64) -> Result<(), RuntimeError> {
        Ok(runtime.db.wait_applied(lsn + 1)?)
    }

    /// Waits, without blocking a tokio worker, until the store has applied
    /// past `lsn`.
    async fn wait_past_async(&mut self, runtime: &Runtime, lsn: u64) -> Result<(), RuntimeError> {
        loop {
            if *self.applied.borrow_and_update() > lsn {
                return Ok(runtime.db.check_poison()?);
            }
            runtime.db.kick_applier_past(lsn);
            if self.applied.changed().await.is_err() {
                return Err(RuntimeError::Db(crate::Error::InvalidArgument {
                    op: "subscribe runtime",
                    reason: "the database was closed".into(),
                }));
            }
        }
    }
}

/// A runtime's events from a cursor on, a batch at a time, waiting for
/// new ones.
#[derive(Debug)]
pub struct EventSubscription {
    runtime: Runtime,
    cursor: EventCursor,
    waiter: Waiter,
}

impl EventSubscription {
    pub(crate) fn new(runtime: Runtime, cursor: EventCursor) -> EventSubscription {
        EventSubscription {
            waiter: Waiter::new(&runtime),
            runtime,
            cursor,
        }
    }

    /// Where the next batch starts: save it to resume later.
    pub fn cursor(&self) -> &EventCursor {
        &self.cursor
    }

    /// The next events (at most `limit`) if there are any now.
    pub fn try_next(&mut self, limit: usize) -> Result<Option<RuntimeEventBatch>, RuntimeError> {
        Ok(match self.poll(limit)? {
            Poll::Page(b) => Some(b),
            Poll::Wait(_) | Poll::Done => None,
        })
    }

    /// The next batch if there is one now; `Done` once the runtime is
    /// stopped and its last event has been read (it records no more).
    fn poll(&mut self, limit: usize) -> Result<Poll<RuntimeEventBatch>, RuntimeError> {
        let (batch, lsn, running) = self.runtime.events_at(&self.cursor, limit)?;
        if batch.events.is_empty() {
            return Ok(if running { Poll::Wait(lsn) } else { Poll::Done });
        }
        self.cursor = batch.cursor.clone();
        Ok(Poll::Page(batch))
    }

    /// The next events (at most `limit`, at least one), blocking the
    /// thread until there are some; `None` once the runtime is stopped and
    /// its last event has been read. Not from inside an async runtime
    /// (use [`EventSubscription::next_async`]).
    pub fn next_blocking(
        &mut self,
        limit: usize,
    ) -> Result<Option<RuntimeEventBatch>, RuntimeError> {
        if limit == 0 {
            return Err(zero_limit());
        }
        loop {
            match self.poll(limit)? {
                Poll::Page(b) => return Ok(Some(b)),
                Poll::Done => return Ok(None),
                Poll::Wait(lsn) => self.waiter.wait_past(&self.runtime, lsn)?,
            }
        }
    }

    /// [`EventSubscription::next_blocking`] for async callers.
    pub async fn next_async(
        &mut self,
        limit: usize,
    ) -> Result<Option<RuntimeEventBatch>, RuntimeError> {
        if limit == 0 {
            return Err(zero_limit());
        }
        loop {
            match self.poll(limit)? {
                Poll::Page(b) => return Ok(Some(b)),
                Poll::Done => return Ok(None),
                Poll::Wait(lsn) => {
                    let runtime = self.runtime.clone();
                    self.waiter.wait_past_async(&runtime, lsn).await?;
                }
            }
        }
    }
}

/// One worker's transcript from an index on, a page at a time, waiting
/// for new entries.
#[derive(Debug)]
pub struct TranscriptSubscription {
    runtime: Runtime,
    worker_ref: WorkerRef,
    next_start: usize,
    waiter: Waiter,
}

impl TranscriptSubscription {
    pub(crate) fn new(runtime: Runtime, worker_ref: WorkerRef, start: usize) -> Self {
        TranscriptSubscription {
            waiter: Waiter::new(&runtime),
            runtime,
            worker_ref,
            next_start: start,
        }
    }

    /// The index of the next entry it yields: save it to resume later.
    pub fn next_start(&self) -> usize {
        self.next_start
    }

    /// The next page if there is one now; `done` when the worker is no
    /// longer running and every entry has been read.
    fn poll(&mut self, limit: usize) -> Result<Poll<TranscriptProjection>, RuntimeError> {
        let (page, lsn, active) = self.runtime.transcript_at(
            &self.worker_ref,
            TranscriptQuery::new(self.next_start, limit),
        )?;
        if page.items.is_empty() {
            return Ok(if active { Poll::Wait(lsn) } else { Poll::Done });
        }
        self.next_start += page.items.len();
        Ok(Poll::Page(page))
    }

    /// The next entries if there are any now.
    pub fn try_next(&mut self, limit: usize) -> Result<Option<TranscriptProjection>, RuntimeError> {
        Ok(match self.poll(limit)? {
            Poll::Page(p) => Some(p),
            Poll::Wait(_) | Poll::Done => None,
        })
    }

    /// The next entries (at most `limit`, at least one), blocking the
    /// thread until there are some; `None` once the worker is stopped or
    /// cancelled and its whole transcript has been read (it can get no
    /// more input).
    pub fn next_blocking(
        &mut self,
        limit: usize,
    ) -> Result<Option<TranscriptProjection>, RuntimeError> {
        if limit == 0 {
            return Err(zero_limit());
        }
        loop {
            match self.poll(limit)? {
                Poll::Page(p) => return Ok(Some(p)),
                Poll::Done => return Ok(None),
                Poll::Wait(lsn) => self.waiter.wait_past(&self.runtime, lsn)?,
            }
        }
    }

    /// [`TranscriptSubscription::next_blocking`] for async callers.
    pub async fn next_async(
        &mut self,
        limit: usize,
    ) -> Result<Option<TranscriptProjection>, RuntimeError> {
        if limit == 0 {
            return Err(zero_limit());
        }
        loop {
            match self.poll(limit)? {
                Poll::Page(p) => return Ok(Some(p)),
                Poll::Done => return Ok(None),
                Poll::Wait(lsn) => {
                    let runtime = self.runtime.clone();
                    self.waiter.wait_past_async(&runtime, lsn).await?;
                }
            }
        }
    }
}

/// What a look at the view found.
enum Poll<T> {
    Page(T),
    /// Nothing yet, as of this LSN.
    Wait(u64),
    Done,
}

fn zero_limit() -> RuntimeError {
    RuntimeError::InvalidRequest("a subscription's limit must be above zero".into())
}
