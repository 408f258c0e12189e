//! Live subscriptions to a runtime's events and to one worker's
//! transcript: read a page from the view; when it is empty, wait for the
//! store's applied LSN to move past the LSN that page reflected, then read
//! again. A subscription owes its caller only a cursor, so it resumes
//! without loss from wherever it was, after any length of absence.

use super::model::{
    EventCursor, RuntimeEventBatch, TranscriptProjection, TranscriptQuery, WorkerRef,
};
use super::{Runtime, RuntimeError};
use crate::remote::Waiter;

/// What a look at the view found.
enum Poll<T> {
    Page(T),
    /// Nothing yet, as of this LSN.
    Wait(u64),
    /// Nothing, and nothing can come.
    Done,
}

/// What a subscription reads a page of, and where it goes on from.
trait Pager: Clone + Send + 'static {
    type Page: Send + 'static;
    fn poll(&mut self, runtime: &Runtime, limit: usize) -> Result<Poll<Self::Page>, RuntimeError>;
}

/// The one follow loop both subscriptions share.
#[derive(Debug)]
struct Follow<P> {
    runtime: Runtime,
    pager: P,
    waiter: Waiter,
}

impl<P: Pager> Follow<P> {
    fn new(runtime: Runtime, pager: P) -> Follow<P> {
        Follow {
            waiter: Waiter::new(&runtime.backend),
            runtime,
            pager,
        }
    }

    fn try_next(&mut self, limit: usize) -> Result<Option<P::Page>, RuntimeError> {
        Ok(match self.pager.poll(&self.runtime, limit)? {
            Poll::Page(p) => Some(p),
            Poll::Wait(_) | Poll::Done => None,
        })
    }

    fn next_blocking(&mut self, limit: usize) -> Result<Option<P::Page>, RuntimeError> {
        check_limit(limit)?;
        loop {
            match self.pager.poll(&self.runtime, limit)? {
                Poll::Page(p) => return Ok(Some(p)),
                Poll::Done => return Ok(None),
                Poll::Wait(lsn) => self.waiter.wait_past(lsn)?,
            }
        }
    }

    /// One look at the view without blocking a tokio worker: through a
    /// server, the round trip is a blocking-pool task.
    async fn poll_async(&mut self, limit: usize) -> Result<Poll<P::Page>, RuntimeError> {
        if self.runtime.remote_client().is_none() {
            return self.pager.poll(&self.runtime, limit);
        }
        let (runtime, mut pager) = (self.runtime.clone(), self.pager.clone());
        let (pager, polled) = tokio::task::spawn_blocking(move || {
            let polled = pager.poll(&runtime, limit);
            (pager, polled)
        })
        .await
        .map_err(|e| {
            RuntimeError::Db(crate::Error::Internal {
                op: "runtime subscription",
                reason: format!("the page's task failed: {e}"),
            })
        })?;
        self.pager = pager;
        polled
    }

    async fn next_async(&mut self, limit: usize) -> Result<Option<P::Page>, RuntimeError> {
        check_limit(limit)?;
        loop {
            match self.poll_async(limit).await? {
                Poll::Page(p) => return Ok(Some(p)),
                Poll::Done => return Ok(None),
                Poll::Wait(lsn) => self.waiter.wait_past_async(lsn).await?,
            }
        }
    }
}

fn check_limit(limit: usize) -> Result<(), RuntimeError> {
    if limit == 0 {
        return Err(RuntimeError::InvalidRequest(
            "a subscription's limit must be above zero".into(),
        ));
    }
    Ok(())
}

/// Events from a cursor on; done once the runtime is stopped and its last
/// event has been read (it records no more).
#[derive(Clone, Debug)]
struct EventPager {
    cursor: EventCursor,
}

impl Pager for EventPager {
    type Page = RuntimeEventBatch;

    fn poll(&mut self, runtime: &Runtime, limit: usize) -> Result<Poll<Self::Page>, RuntimeError> {
        let (batch, lsn, running) = runtime.events_at(&self.cursor, limit)?;
        if batch.events.is_empty() {
            return Ok(if running { Poll::Wait(lsn) } else { Poll::Done });
        }
        self.cursor = batch.cursor.clone();
        Ok(Poll::Page(batch))
    }
}

/// A transcript from an index on; done once the worker is no longer
/// running and every entry has been read.
#[derive(Clone, Debug)]
struct TranscriptPager {
    worker_ref: WorkerRef,
    next_start: usize,
}

impl Pager for TranscriptPager {
    type Page = TranscriptProjection;

    fn poll(&mut self, runtime: &Runtime, limit: usize) -> Result<Poll<Self::Page>, RuntimeError> {
        let query = TranscriptQuery::new(self.next_start, limit);
        let (page, lsn, active) = runtime.transcript_at(&self.worker_ref, query)?;
        if page.items.is_empty() {
            return Ok(if active { Poll::Wait(lsn) } else { Poll::Done });
        }
        self.next_start += page.items.len();
        Ok(Poll::Page(page))
    }
}

/// A runtime's events from a cursor on, a batch at a time, waiting for
/// new ones.
#[derive(Debug)]
pub struct EventSubscription(Follow<EventPager>);

impl EventSubscription {
    pub(crate) fn new(runtime: Runtime, cursor: EventCursor) -> EventSubscription {
        EventSubscription(Follow::new(runtime, EventPager { cursor }))
    }

    /// Where the next batch starts: save it to resume later.
    pub fn cursor(&self) -> &EventCursor {
        &self.0.pager.cursor
    }

    /// The next events (at most `limit`) if there are any now.
    pub fn try_next(&mut self, limit: usize) -> Result<Option<RuntimeEventBatch>, RuntimeError> {
        self.0.try_next(limit)
    }

    /// The next events (at most `limit`, at least one), blocking the
    /// thread until there are some; `None` once the runtime is stopped and
    /// its last event has been read. Not from inside an async runtime
    /// (use [`EventSubscription::next_async`]).
    pub fn next_blocking(
        &mut self,
        limit: usize,
    ) -> Result<Option<RuntimeEventBatch>, RuntimeError> {
        self.0.next_blocking(limit)
    }

    /// [`EventSubscription::next_blocking`] for async callers.
    pub async fn next_async(
        &mut self,
        limit: usize,
    ) -> Result<Option<RuntimeEventBatch>, RuntimeError> {
        self.0.next_async(limit).await
    }
}

/// One worker's transcript from an index on, a page at a time, waiting
/// for new entries.
#[derive(Debug)]
pub struct TranscriptSubscription(Follow<TranscriptPager>);

impl TranscriptSubscription {
    pub(crate) fn new(runtime: Runtime, worker_ref: WorkerRef, start: usize) -> Self {
        let pager = TranscriptPager {
            worker_ref,
            next_start: start,
        };
        TranscriptSubscription(Follow::new(runtime, pager))
    }

    /// The index of the next entry it yields: save it to resume later.
    pub fn next_start(&self) -> usize {
        self.0.pager.next_start
    }

    /// The next entries if there are any now.
    pub fn try_next(&mut self, limit: usize) -> Result<Option<TranscriptProjection>, RuntimeError> {
        self.0.try_next(limit)
    }

    /// The next entries (at most `limit`, at least one), blocking the
    /// thread until there are some; `None` once the worker is stopped or
    /// cancelled and its whole transcript has been read (it can get no
    /// more input).
    pub fn next_blocking(
        &mut self,
        limit: usize,
    ) -> Result<Option<TranscriptProjection>, RuntimeError> {
        self.0.next_blocking(limit)
    }

    /// [`TranscriptSubscription::next_blocking`] for async callers.
    pub async fn next_async(
        &mut self,
        limit: usize,
    ) -> Result<Option<TranscriptProjection>, RuntimeError> {
        self.0.next_async(limit).await
    }
}
