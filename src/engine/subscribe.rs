//! Subscriptions: catch up from disk, then follow live commits, with no
//! gap and no duplicate.
//!
//! The receiver of the live channel is created *before* anything is read
//! from disk, so every batch committed after that moment reaches it (or,
//! if the subscriber lags past the buffer, is still on disk). The
//! subscription tracks the next LSN it owes the caller and treats the two
//! sources alike: events below it are dropped, a live batch that starts
//! above it means some were missed, and the gap is filled from disk.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::broadcast::{self, error::RecvError, error::TryRecvError};

use crate::engine::Db;
use crate::error::{Error, Result};
use crate::stream::Event;

/// Events read from disk at a time while catching up.
const CATCH_UP_PAGE_EVENTS: usize = 1024;

/// A position in the log that yields every committed event from there on.
///
/// Use it as a blocking [`Iterator`] from a plain thread, or through
/// [`Subscription::next_async`] / [`Subscription::into_stream`] from async
/// code. A subscription keeps the database open while it lives.
#[derive(Debug)]
pub struct Subscription {
    db: Db,
    rx: broadcast::Receiver<Arc<[Event]>>,
    next_lsn: u64,
    buffer: VecDeque<Event>,
    failed: bool,
}

enum Step {
    Ready(Event),
    Wait,
}

impl Subscription {
    pub(crate) fn new(db: Db, rx: broadcast::Receiver<Arc<[Event]>>, from_lsn: u64) -> Self {
        Subscription {
            db,
            rx,
            next_lsn: from_lsn,
            buffer: VecDeque::new(),
            failed: false,
        }
    }

    /// The LSN of the next event this subscription will yield.
    pub fn next_lsn(&self) -> u64 {
        self.next_lsn
    }

    fn fill_from_disk(&mut self) -> Result<()> {
        let page = self.db.read(self.next_lsn, CATCH_UP_PAGE_EVENTS)?;
        if page.first().is_some_and(|e| e.lsn != self.next_lsn) || page.is_empty() {
            return Err(Error::InvalidArgument {
                op: "subscribe",
                reason: format!("the log no longer holds LSN {}", self.next_lsn),
            });
        }
        self.buffer.extend(page);
        Ok(())
    }

    fn take_live(&mut self, batch: &[Event]) -> Result<()> {
        let (Some(first), Some(last)) = (batch.first(), batch.last()) else {
            return Ok(());
        };
        if last.lsn < self.next_lsn {
            return Ok(());
        }
        if first.lsn > self.next_lsn {
            // Missed batches (committed before we subscribed, or dropped
            // while we lagged): they are on disk.
            return self.fill_from_disk();
        }
        self.buffer
            .extend(batch.iter().filter(|e| e.lsn >= self.next_lsn).cloned());
        Ok(())
    }

    /// One step without waiting.
    fn step(&mut self) -> Result<Step> {
        self.db.inner.check_poison()?;
        loop {
            if let Some(event) = self.buffer.pop_front() {
                self.next_lsn = event.lsn + 1;
                return Ok(Step::Ready(event));
            }
            match self.rx.try_recv() {
                Ok(batch) => self.take_live(&batch)?,
                Err(TryRecvError::Lagged(_)) => continue,
                Err(TryRecvError::Empty) => {
                    if self.db.last_lsn() >= self.next_lsn {
                        self.fill_from_disk()?;
                    } else {
                        return Ok(Step::Wait);
                    }
                }
                Err(TryRecvError::Closed) => return Err(closed()),
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
            match self.rx.recv().await {
                Ok(batch) => {
                    if let Err(e) = self.take_live(&batch) {
                        return self.finish(Err(e));
                    }
                }
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return self.finish(Err(closed())),
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
            match self.rx.blocking_recv() {
                Ok(batch) => {
                    if let Err(e) = self.take_live(&batch) {
                        return self.finish(Err(e));
                    }
                }
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return self.finish(Err(closed())),
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
    Error::InvalidArgument {
        op: "subscribe",
        reason: "the database was closed".into(),
    }
}
