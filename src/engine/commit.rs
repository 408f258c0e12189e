//! Group commit: one leader writes and syncs what every waiting appender
//! queued, then acknowledges them all.
//!
//! An appender pushes its batch on the queue. If no leader is at work it
//! becomes the leader; otherwise it sleeps on its own slot. The leader
//! drains the whole queue, decides each batch against current stream
//! versions, appends all records to the log (one `pwrite` per segment for
//! the WAL), syncs once, publishes the committed LSN, hands the group to
//! the store's applier, and completes (wakes) every slot of the group.
//! Then it hands leadership to the first appender that queued meanwhile,
//! which takes everything queued during the fsync as the next group, or
//! marks the queue leaderless. A group with commands is decided by the
//! applier, against the store as every earlier commit left it.
//!
//! A lone writer thus does its own fsync with no thread switch (a probe
//! here measured ~40% over handing off to a flusher thread), and waiters
//! never convoy on a lock: each is woken exactly once.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, mpsc};

use crate::engine::Inner;
use crate::engine::applier::{CommittedBatch, DecideItem, Decided, Job, Written};
use crate::error::{Error, Result};
use crate::log::LogRecord;
use crate::options::Durability;
use crate::stream::{Appended, ExpectedVersion};
use crate::views::ViewSet;
use crate::wal::format::{self, EncodedBatch};

/// Where an appender waits: for its result, or to be told to lead.
#[derive(Debug, Default)]
pub(crate) struct Slot {
    state: Mutex<SlotState>,
    wake: Condvar,
    /// For an async appender: notified with the condition variable (it
    /// keeps a permit if no one waits yet, so no wake-up is lost).
    wake_async: tokio::sync::Notify,
    /// Its async appender dropped its future while it waited (set under
    /// `state`'s lock).
    abandoned: std::sync::atomic::AtomicBool,
    /// Its appender is an async task, which leads on the blocking pool:
    /// a leader on the pool leads its group too rather than hand over.
    async_waiter: bool,
    /// No one waits on it: its result goes to this callback instead (see
    /// [`Slot::calling_back`]); taken when called.
    on_done: Mutex<Option<OnDone>>,
    calls_back: bool,
    /// Where a slot that calls back came from: a leader for its group is
    /// started on this runtime's blocking pool.
    runtime: Option<tokio::runtime::Handle>,
}

/// What a slot that calls back is completed with.
pub(crate) struct OnDone(pub Box<dyn FnOnce(Result<Appended>) + Send>);

impl std::fmt::Debug for OnDone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OnDone")
    }
}

#[derive(Debug, Default)]
enum SlotState {
    #[default]
    Waiting,
    /// The previous leader handed over: commit the queue.
    Lead,
    Done(Result<Appended>),
}

/// What a waiting appender is told.
pub(crate) enum Wakeup {
    Lead,
    Done(Result<Appended>),
}

impl Slot {
    /// The slot of an async appender.
    pub(crate) fn for_async() -> Slot {
        Slot {
            async_waiter: true,
            ..Slot::default()
        }
    }

    /// The slot of an append no one waits on: `on_done` gets its result,
    /// on the thread that completes it (a group's leader, holding the
    /// commit lock: it must not block or call the database). Like an
    /// abandoned async append, it is never handed the group's
    /// leadership: a leader is started for it on `runtime`'s pool.
    pub(crate) fn calling_back(on_done: OnDone, runtime: Option<tokio::runtime::Handle>) -> Slot {
        Slot {
            async_waiter: true,
            abandoned: std::sync::atomic::AtomicBool::new(true),
            on_done: Mutex::new(Some(on_done)),
            calls_back: true,
            runtime,
            ..Slot::default()
        }
    }

    /// For a slot that calls back, the runtime a leader for it is started
    /// on (`Some(None)`: a thread of its own); `None` for any other.
    pub(crate) fn leader_runtime(&self) -> Option<Option<&tokio::runtime::Handle>> {
        self.calls_back.then_some(self.runtime.as_ref())
    }

    /// Whether its appender is an async task.
    pub(crate) fn is_async(&self) -> bool {
        self.async_waiter
    }

    /// Hands `result` to the slot's callback, if it calls back (once:
    /// a second result is dropped); gives it back otherwise.
    fn deliver(&self, result: Result<Appended>) -> Option<Result<Appended>> {
        if !self.calls_back {
            return Some(result);
        }
        let on_done = self
            .on_done
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(OnDone(call)) = on_done {
            // The leader completes the rest of its group whatever a
            // callback does.
            let called = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| call(result)));
            if called.is_err() {
                tracing::error!("an append's completion callback panicked");
            }
        }
        None
    }

    fn set(&self, new: SlotState) {
        if let Ok(mut g) = self.state.lock() {
            *g = new;
        }
        self.wake.notify_one();
        self.wake_async.notify_one();
    }

    pub(crate) fn complete(&self, result: Result<Appended>) {
        if let Some(result) = self.deliver(result) {
            self.set(SlotState::Done(result));
        }
    }

    /// Completes the slot unless a result is already there.
    pub(crate) fn complete_if_waiting(&self, result: Result<Appended>) {
        let Some(result) = self.deliver(result) else {
            return;
        };
        let mut g = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !matches!(*g, SlotState::Done(_)) {
            *g = SlotState::Done(result);
            self.wake.notify_one();
            self.wake_async.notify_one();
        }
    }

    /// Makes this slot's appender the leader; false if it has gone
    /// (an abandoned async append), when the caller leads on instead.
    pub(crate) fn hand_leadership(&self) -> bool {
        let mut g = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.abandoned.load(std::sync::atomic::Ordering::Acquire) {
            return false;
        }
        *g = SlotState::Lead;
        drop(g);
        self.wake.notify_one();
        self.wake_async.notify_one();
        true
    }

    /// Its async appender has gone: no leader may hand it the group.
    /// Returns whether it had been handed it already (the caller must
    /// lead then).
    pub(crate) fn abandon(&self) -> bool {
        let mut g = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.abandoned
            .store(true, std::sync::atomic::Ordering::Release);
        matches!(std::mem::take(&mut *g), SlotState::Lead)
    }

    /// Blocks until the slot is completed or made leader.
    pub(crate) fn wait(&self) -> Option<Wakeup> {
        let mut g = self.state.lock().ok()?;
        loop {
            match std::mem::take(&mut *g) {
                SlotState::Waiting => g = self.wake.wait(g).ok()?,
                SlotState::Lead => return Some(Wakeup::Lead),
                SlotState::Done(r) => return Some(Wakeup::Done(r)),
            }
        }
    }

    /// [`Slot::wait`] without blocking the task's thread.
    pub(crate) async fn wait_async(&self) -> Option<Wakeup> {
        loop {
            {
                let mut g = self.state.lock().ok()?;
                match std::mem::take(&mut *g) {
                    SlotState::Waiting => {}
                    SlotState::Lead => return Some(Wakeup::Lead),
                    SlotState::Done(r) => return Some(Wakeup::Done(r)),
                }
            }
            self.wake_async.notified().await;
        }
    }

    /// The result, if completed.
    pub(crate) fn take(&self) -> Option<Result<Appended>> {
        let mut g = self.state.lock().ok()?;
        match std::mem::take(&mut *g) {
            SlotState::Done(r) => Some(r),
            other => {
                *g = other;
                None
            }
        }
    }
}

/// Appenders waiting for a leader, and whether one is at work.
#[derive(Debug, Default)]
pub(crate) struct Queue {
    pub pending: Vec<Pending>,
    pub leader_active: bool,
}

/// A batch waiting for the leader.
pub(crate) struct Pending {
    pub stream: String,
    pub expected: ExpectedVersion,
    pub batch: EncodedBatch,
    /// A command: decides the batch in the leader, against the views.
    pub decide: Option<Decide>,
    pub slot: Arc<Slot>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("stream", &self.stream)
            .field("expected", &self.expected)
            .field("count", &self.batch.count)
            .field("command", &self.decide.is_some())
            .finish()
    }
}

/// What the leader owns.
#[derive(Debug)]
pub(crate) struct CommitState {
    /// LSN the next accepted event gets.
    pub next_lsn: u64,
}

/// Tries a group makes on a shared log, each after folding in what other
/// nodes appended, before its appenders get the conflict.
const SHARED_LOG_TRIES_MAX: u32 = 256;

/// What one try at a group came to.
enum Attempt {
    /// Every slot of the group is completed.
    Done,
    /// A shared log refused it (another node appended first), maybe
    /// after storing its first records: the slots those settle, with
    /// their results, and the rest of the group, undecided, to try again.
    Lost {
        done: Vec<(Arc<Slot>, Result<Appended>)>,
        again: Vec<Pending>,
    },
}

/// What a log write came to.
enum LogWrite {
    Written,
    /// A shared log refused it: another node appended first. It stored
    /// this many of the first records.
    Lost(u64),
    /// It failed: on a local log the handle is poisoned; on a shared log
    /// the record may or may not be in it, and following the log says.
    Failed(Error),
}

impl Inner {
    /// Fails every slot of `group` with the poison error.
    fn fail_all<'a>(&self, slots: impl IntoIterator<Item = &'a Arc<Slot>>) {
        for slot in slots {
            slot.complete_if_waiting(Err(self.poisoned_error()));
        }
    }

    /// Fails every slot of `slots` with `e`.
    fn fail_with<'a>(&self, slots: impl IntoIterator<Item = &'a Arc<Slot>>, e: &Error) {
        for slot in slots {
            slot.complete_if_waiting(Err(e.again()));
        }
    }

    /// Leads one group: everything queued right now.
    pub(crate) fn commit_group(&self, state: &mut CommitState, group: Vec<Pending>) {
        if self.check_poison().is_err() {
            self.fail_all(group.iter().map(|p| &p.slot));
            return;
        }
        // Never more queued for the store than it can take: memory stays
        // bounded however far the applier falls behind.
        self.applier.backlog.wait_for_room(&self.health);
        if !self.log.is_shared() {
            // A local log has one writer: a try always completes.
            let _ = self.commit_once(state, group);
            return;
        }
        let mut group = group;
        for _ in 0..SHARED_LOG_TRIES_MAX {
            // What other nodes appended first: the group is decided
            // against it.
            if let Err(e) = self.catch_up(state) {
                self.fail_with(group.iter().map(|p| &p.slot), &e);
                return;
            }
            match self.commit_once(state, group) {
                Attempt::Done => return,
                Attempt::Lost { done, again } => {
                    if !done.is_empty() {
                        // Their records are in the log: folded in first
                        // (a failure here is met by the next try's), then
                        // acknowledged.
                        let _ = self.catch_up(state);
                        self.count_group(done.iter().filter(|(_, r)| r.is_ok()).count());
                        for (slot, result) in done {
                            slot.complete(result);
                        }
                    }
                    if again.is_empty() {
                        return;
                    }
                    group = again;
                }
            }
        }
        let e = Error::LogConflict {
            expected_last_lsn: state.next_lsn - 1,
            actual_last_lsn: self.log.last_lsn(),
            stored_records: 0,
        };
        tracing::warn!(error = %e, tries = SHARED_LOG_TRIES_MAX, "a group lost every race for the shared log");
        self.fail_with(group.iter().map(|p| &p.slot), &e);
    }

    fn commit_once(&self, state: &mut CommitState, group: Vec<Pending>) -> Attempt {
        if group.iter().any(|p| p.decide.is_some()) {
            self.commit_commands(state, group)
        } else {
            self.commit_batches(state, group)
        }
    }

    /// Folds what the log holds past this node's last commit into the
    /// store (records other nodes appended to a shared log), until the
    /// store has what the log is known to hold.
    pub(crate) fn catch_up(&self, state: &mut CommitState) -> Result<()> {
        while self.log.last_lsn() >= state.next_lsn {
            let (tx, rx) = mpsc::channel();
            if !self.applier.send(Job::CatchUp(tx)) {
                self.poison("the store applier stopped".into());
                return Err(self.poisoned_error());
            }
            let applied = rx.recv().map_err(|_| self.poisoned_error())??;
            if applied < state.next_lsn {
                return Err(Error::Internal {
                    op: "follow the shared log",
                    reason: format!(
                        "the log ends at LSN {} but yields nothing from LSN {}",
                        self.log.last_lsn(),
                        state.next_lsn
                    ),
                });
            }
            // The store reflects every commit now: each version it holds
            // is exact, and the cache may not be (other nodes wrote).
            self.versions
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clear();
            state.next_lsn = applied + 1;
            self.committed_lsn.fetch_max(applied, Ordering::AcqRel);
        }
        Ok(())
    }

    /// Writes `records` to the log and, in `Immediate` mode, makes them
    /// durable. On a local log a failure poisons the handle: the bytes may
    /// or may not be on disk, and the views may not match the log. On a
    /// shared log the log is the truth, and the next group folds whatever
    /// it holds: a failure fails this group alone.
    fn write_to_log(&self, state: &CommitState, records: &[LogRecord<'_>]) -> LogWrite {
        let written = self.log.append(state.next_lsn - 1, records).and_then(|()| {
            let planted = crate::failpoint::planted(crate::failpoint::PlantedBug::AckBeforeFsync);
            if self.options.durability == Durability::Immediate && !planted {
                self.log.sync()?;
            }
            Ok(())
        });
        match written {
            Ok(()) => LogWrite::Written,
            Err(Error::LogConflict { stored_records, .. }) if self.log.is_shared() => {
                LogWrite::Lost(stored_records)
            }
            Err(e) if self.log.is_shared() => {
                tracing::warn!(error = %e, "the shared log did not take a group");
                LogWrite::Failed(e)
            }
            Err(e) => {
                tracing::error!(error = %e, "write or fsync failed; poisoning the database handle");
                self.poison(e.to_string());
                LogWrite::Failed(e)
            }
        }
    }

    /// A group of plain batches: decided against stream versions here,
    /// written, acknowledged, then handed to the store.
    fn commit_batches(&self, state: &mut CommitState, group: Vec<Pending>) -> Attempt {
        let mut versions = self
            .versions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Opened after the cache is locked: a stream the cache does not
        // hold was last written at or below the LSN the store has applied
        // (and published), so this reader sees its version.
        let mut reader = None;
        // On a shared log the versions this group moves are kept apart
        // until the log has it (a race lost leaves the cache as it was);
        // on a local log a failed write poisons, so they go straight in.
        let shared = self.log.is_shared();
        let mut moved: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
        let mut decided: Vec<(Pending, Result<(u64, u64)>)> = Vec::with_capacity(group.len());
        let mut next_lsn = state.next_lsn;
        for p in group {
            let current = match moved
                .get(&p.stream)
                .copied()
                .or_else(|| versions.get(&p.stream))
            {
                Some(v) => Ok(v),
                None => match reader.as_ref() {
                    Some(r) => Ok(r),
                    None => self.store.begin_read().map(|r| &*reader.insert(r)),
                }
                .and_then(|r| r.stream_meta(&p.stream))
                .map(|m| m.map_or(0, |m| m.version)),
            };
            let outcome = current.and_then(|current| {
                if p.expected.admits(current) {
                    Ok(current)
                } else {
                    Err(Error::WrongExpectedVersion {
                        stream: p.stream.clone(),
                        expected: p.expected,
                        actual: current,
                    })
                }
            });
            let outcome = outcome.map(|current| {
                let count = u64::from(p.batch.count);
                if shared {
                    moved.insert(p.stream.clone(), current + count);
                } else {
                    versions.set(&p.stream, current + count, next_lsn + count - 1);
                }
                let at = (next_lsn, current + 1);
                next_lsn += count;
                at
            });
            decided.push((p, outcome));
        }
        drop(reader);
        let records: Vec<LogRecord<'_>> = decided
            .iter()
            .filter_map(|(p, d)| {
                d.as_ref().ok().map(|(lsn, version)| LogRecord {
                    batch: &p.batch,
                    first_lsn: *lsn,
                    first_version: *version,
                })
            })
            .collect();
        if !records.is_empty() {
            match self.write_to_log(state, &records) {
                LogWrite::Written => {}
                LogWrite::Lost(stored) => {
                    drop(records);
                    // The items up to the last record stored are settled
                    // (refusals among them were decided against what the
                    // log holds before it); the rest go again.
                    let mut done = Vec::new();
                    let mut again = Vec::new();
                    let mut left = stored;
                    for (p, d) in decided {
                        if left == 0 {
                            again.push(p);
                            continue;
                        }
                        let result = d.map(|(lsn, version)| {
                            left -= 1;
                            let count = u64::from(p.batch.count);
                            Appended {
                                first_lsn: lsn,
                                last_lsn: lsn + count - 1,
                                version: version + count - 1,
                            }
                        });
                        done.push((p.slot, result));
                    }
                    return Attempt::Lost { done, again };
                }
                LogWrite::Failed(e) => {
                    drop(records);
                    drop(versions);
                    self.fail_with(decided.iter().map(|(p, _)| &p.slot), &e);
                    return Attempt::Done;
                }
            }
        }
        drop(records);
        let last_lsn = next_lsn - 1;
        let accepted = decided.iter().filter(|(_, d)| d.is_ok()).count();
        if accepted > 0 {
            if shared {
                for (p, d) in &decided {
                    if let Ok((lsn, version)) = d {
                        let count = u64::from(p.batch.count);
                        versions.set(&p.stream, version + count - 1, lsn + count - 1);
                    }
                }
            }
            state.next_lsn = next_lsn;
            versions.trim(self.health.applied_lsn());
        }
        drop(versions);
        if accepted == 0 {
            for (p, d) in decided {
                if let Err(e) = d {
                    p.slot.complete(Err(e));
                }
            }
            return Attempt::Done;
        }
        self.committed_lsn.store(last_lsn, Ordering::Release);
        self.count_group(accepted);
        let mut bytes = 0u64;
        let mut batches = Vec::with_capacity(accepted);
        let mut done = Vec::with_capacity(decided.len());
        for (p, d) in decided {
            let (lsn, version) = match d {
                Ok(at) => at,
                Err(e) => {
                    done.push((p.slot, Err(e)));
                    continue;
                }
            };
            let count = u64::from(p.batch.count);
            bytes += p.batch.payload.len() as u64
                + p.stream.len() as u64
                + super::applier::BACKLOG_BATCH_OVERHEAD_BYTES;
            done.push((
                p.slot,
                Ok(Appended {
                    first_lsn: lsn,
                    last_lsn: lsn + count - 1,
                    version: version + count - 1,
                }),
            ));
            batches.push(CommittedBatch {
                stream: p.stream,
                first_lsn: lsn,
                first_version: version,
                count: p.batch.count,
                payload: p.batch.payload,
            });
        }
        self.applier.backlog.add(bytes);
        let (tell, applied) = self.apply_waiter();
        if !self.applier.send(Job::Apply(batches, bytes, tell)) {
            self.poison("the store applier stopped".into());
        }
        if let Some(applied) = applied {
            let _ = applied.recv();
        }
        for (slot, result) in done {
            slot.complete(result);
        }
        Attempt::Done
    }

    /// A group with commands: decided in the applier, against the store
    /// transaction that holds every earlier commit; written here; then
    /// the applier may commit it.
    fn commit_commands(&self, state: &mut CommitState, group: Vec<Pending>) -> Attempt {
        let shared = self.log.is_shared();
        let mut slots = Vec::with_capacity(group.len());
        let mut streams: Vec<String> = Vec::with_capacity(group.len());
        let mut items = Vec::with_capacity(group.len());
        // A shared log may refuse the group: what it takes to try again
        // (the decisions themselves come back from the applier).
        let mut again = Vec::new();
        for p in group {
            if shared {
                again.push((p.expected, p.decide.is_none().then(|| p.batch.clone())));
            }
            slots.push(p.slot);
            streams.push(p.stream.clone());
            items.push(DecideItem {
                stream: p.stream,
                expected: p.expected,
                batch: p.batch,
                decide: p.decide,
            });
        }
        let (reply, decided) = crate::engine::handoff::reply();
        let (written_tx, written) = mpsc::channel();
        let (tell, applied) = self.apply_waiter();
        let sent = self.applier.send(Job::Decide {
            items,
            next_lsn: state.next_lsn,
            reply,
            written,
            done: tell,
        });
        let (decided, decides) = match decided.recv() {
            Some((d, f)) if sent && d.len() == slots.len() && f.len() == slots.len() => (d, f),
            _ => {
                self.poison("the store applier stopped".into());
                self.fail_all(&slots);
                return Attempt::Done;
            }
        };
        let mut outcomes: Vec<(Arc<Slot>, Decided)> = slots.into_iter().zip(decided).collect();
        let records: Vec<LogRecord<'_>> = outcomes
            .iter()
            .filter_map(|(_, d)| d.as_ref().ok().and_then(|o| o.as_ref()))
            .map(|(batch, lsn, version)| LogRecord {
                batch,
                first_lsn: *lsn,
                first_version: *version,
            })
            .collect();
        let last_lsn = records.last().map(|r| r.last_lsn());
        if let Some(last_lsn) = last_lsn {
            let write = self.write_to_log(state, &records);
            drop(records);
            match write {
                LogWrite::Written => {
                    let _ = written_tx.send(Written::Yes);
                }
                LogWrite::Lost(stored) => {
                    // The store drops the whole group; the catch-up folds
                    // in what the log took of it.
                    let _ = written_tx.send(Written::RolledBack);
                    // The items up to the last record stored are settled;
                    // the rest are decided anew after the catch-up.
                    let mut done = Vec::new();
                    let mut back = Vec::with_capacity(outcomes.len());
                    let mut left = stored;
                    let mut next = state.next_lsn;
                    let items = outcomes.into_iter().zip(streams).zip(again).zip(decides);
                    for ((((slot, outcome), stream), (expected, batch)), decide) in items {
                        if left > 0 {
                            let result = outcome.map(|o| match o {
                                Some((batch, lsn, version)) => {
                                    left -= 1;
                                    let count = u64::from(batch.count);
                                    next = lsn + count;
                                    Appended {
                                        first_lsn: lsn,
                                        last_lsn: lsn + count - 1,
                                        version: version + count - 1,
                                    }
                                }
                                None => Appended {
                                    first_lsn: next,
                                    last_lsn: next - 1,
                                    version: 0,
                                },
                            });
                            done.push((slot, result));
                            continue;
                        }
                        let batch =
                            batch.unwrap_or_else(|| format::encode_batch(&stream, &[] as &[&[u8]]));
                        back.push(Pending {
                            stream,
                            expected,
                            batch,
                            decide,
                            slot,
                        });
                    }
                    return Attempt::Lost { done, again: back };
                }
                LogWrite::Failed(e) => {
                    let _ = written_tx.send(if shared {
                        Written::RolledBack
                    } else {
                        Written::No
                    });
                    self.fail_with(outcomes.iter().map(|(s, _)| s), &e);
                    return Attempt::Done;
                }
            }
            state.next_lsn = last_lsn + 1;
            let mut versions = self
                .versions
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for (stream, (_, d)) in streams.iter().zip(&outcomes) {
                if let Ok(Some((batch, lsn, version))) = d {
                    let count = u64::from(batch.count);
                    versions.set(stream, version + count - 1, lsn + count - 1);
                }
            }
            drop(versions);
            self.committed_lsn.store(last_lsn, Ordering::Release);
            self.count_group(
                outcomes
                    .iter()
                    .filter(|(_, d)| matches!(d, Ok(Some(_))))
                    .count(),
            );
        } else {
            drop(records);
            let _ = written_tx.send(Written::Yes);
        }
        if let Some(applied) = applied {
            let _ = applied.recv();
        }
        let next_lsn = state.next_lsn;
        for (slot, outcome) in outcomes.drain(..) {
            slot.complete(match outcome {
                Ok(Some((batch, lsn, version))) => {
                    let count = u64::from(batch.count);
                    Ok(Appended {
                        first_lsn: lsn,
                        last_lsn: lsn + count - 1,
                        version: version + count - 1,
                    })
                }
                // Decided to append nothing: an empty result.
                Ok(None) => Ok(Appended {
                    first_lsn: next_lsn,
                    last_lsn: next_lsn - 1,
                    version: 0,
                }),
                Err(e) => Err(e),
            });
        }
        Attempt::Done
    }

    /// With `Options::synchronous_apply`, a channel to wait on until the
    /// applier is done with the group.
    fn apply_waiter(&self) -> (Option<mpsc::Sender<()>>, Option<mpsc::Receiver<()>>) {
        if self.options.synchronous_apply {
            let (tx, rx) = mpsc::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        }
    }

    fn count_group(&self, appends: usize) {
        self.health.counters.groups.fetch_add(1, Ordering::Relaxed);
        self.health
            .counters
            .appends
            .fetch_add(appends as u64, Ordering::Relaxed);
    }
}

/// A command's decision, run in the applier against the views as every
/// earlier commit left them. A panic in it fails that command alone.
pub(crate) type Decide = Box<dyn Fn(&ViewSet<'_>) -> Result<Vec<Vec<u8>>> + Send>;
