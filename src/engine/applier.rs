//! The applier: one thread that folds committed groups into the store and
//! takes checkpoints, off the append path.
//!
//! The commit leader acknowledges a group once the log has it (durably, in
//! `Immediate` mode) and hands it here; appenders never wait for the store,
//! so a checkpoint's fsync never holds a writer. Jobs are taken in order,
//! as many as are queued, into one store transaction, committed without an
//! fsync, then published (readers wait for it: what was acknowledged
//! before a read is in what it reads). A group with commands is decided
//! here, against the transaction that holds everything before it, and
//! committed only once the leader reports the log has it.
//!
//! Commands are on their caller's path, so that path is kept short: the
//! reply goes back before the group's last command is applied (the leader
//! writes and syncs while it is), the replies are polled for rather than
//! slept on (see `handoff`), and after a round of commands the
//! transaction stays open for the next command instead of being committed
//! between them (see [`LINGER_FOR_NEXT`]). A reader ends such a round at
//! once: it asks the applier to publish what it waits for.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::{Receiver, Sender};

use std::sync::{Arc, Condvar, Mutex, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::engine::commit::Decide;
use crate::engine::handoff::ReplyTx;
use crate::engine::health::Health;
use crate::error::{Error, Result};
use crate::log::Log;
use crate::options::{Durability, Options};
use crate::store::{BatchRef, Store, StoreWrite};
use crate::stream::ExpectedVersion;
use crate::views::{TablesAt, ViewSet, ViewStates};
use crate::wal::format::{self, EncodedBatch};

/// Bytes of memory committed groups the applier has queued may take
/// before the leader waits for it: memory stays bounded however far it
/// falls behind, and so does the wait of a reader after a burst (it
/// waits for the store to apply everything acknowledged before it).
pub(crate) const BACKLOG_BYTES_MAX: u64 = 16 << 20;
/// What a queued batch takes beyond its payload and stream name: the
/// batch itself and its two allocations. Counted, so a backlog of small
/// batches (a KV put is about 150 bytes) is bounded by the memory it
/// takes, not by its payload alone (which let 64 MiB of payload take
/// 150 MB).
pub(crate) const BACKLOG_BATCH_OVERHEAD_BYTES: u64 = 128;
/// Jobs taken into one store transaction at most.
const JOBS_PER_TRANSACTION_MAX: usize = 1024;
/// While groups keep coming, the applier looks for more this often
/// instead of being woken for each: a wake-up per group cost a lone
/// durable writer about 15% of its rate on a disk doing 10 k fsync/s (the
/// applier's thread contending with the fsync's completion); polling
/// every millisecond cost sixteen writers half an event per fsync. Anyone
/// who waits for the store kicks it awake.
const POLL_WHILE_BUSY: Duration = Duration::from_micros(250);
/// Bytes of queued groups that wake the applier at once.
const WAKE_BYTES: u64 = 1 << 20;
/// After a round that decided commands, the applier keeps its store
/// transaction open and polls (yielding its core between looks) this
/// long after the round's last group is written for the next job before
/// it commits: a caller issuing commands one after another sends the next
/// within microseconds, and committing a transaction (tens of µs) or
/// waking a sleeping applier (20–30 µs on a VM) between them would be on
/// every command's path. Anyone who waits for the store ends it at once.
const LINGER_FOR_NEXT: Duration = Duration::from_micros(100);
/// A transaction kept open for commands is committed after this long
/// however busy: subscribers (who do not wait) see changes this late at
/// worst.
const LINGER_ROUND_MAX: Duration = Duration::from_millis(2);
/// How long a round waits for blocked readers to take the views' lock
/// before it takes it.
const READERS_FIRST_MAX: Duration = Duration::from_millis(1);
/// A deferred apply copies the command's payload; larger ones are applied
/// before the reply instead.
const DEFER_PAYLOAD_BYTES_MAX: usize = 64 << 10;
/// Payload bytes one catch-up folds into one transaction at most; the
/// leader asks again while the log holds more.
const CATCH_UP_TRANSACTION_BYTES_MAX: u64 = 8 << 20;
/// The applier's nice value, above the default 0 of the threads that
/// commit and answer: folding into the store is throughput work that
/// may lag (within [`BACKLOG_BYTES_MAX`]), while a group's round trip is
/// latency. On two cores the applier took half a core at the default
/// priority, and the threads on the commit path waited behind it (`perf
/// sched`: 90 µs on average from wake-up to running); as a background
/// thread, sixteen socket clients went from about 43 to 35 µs an append
/// and sixteen embedded writers were unchanged (BENCHMARKS.md). RocksDB
/// lowers its compaction threads' priority alike. On Linux, where the
/// nice value is a thread's own.
const APPLIER_NICE: i32 = 10;

/// One committed batch, as the store applies it.
#[derive(Debug)]
pub(crate) struct CommittedBatch {
    pub stream: String,
    pub first_lsn: u64,
    pub first_version: u64,
    pub count: u32,
    pub payload: Vec<u8>,
}

impl CommittedBatch {
    fn as_ref(&self) -> BatchRef<'_> {
        BatchRef {
            first_lsn: self.first_lsn,
            first_version: self.first_version,
            count: self.count,
            stream: &self.stream,
            payload: &self.payload,
        }
    }
}

/// A batch or command of a group to decide in the applier.
pub(crate) struct DecideItem {
    pub stream: String,
    pub expected: ExpectedVersion,
    pub batch: EncodedBatch,
    pub decide: Option<Decide>,
}

/// What the applier decided for one item: the batch to write with its
/// first LSN and version, nothing (`Ok(None)`), or a refusal.
pub(crate) type Decided = Result<Option<(EncodedBatch, u64, u64)>>;

/// A group's decisions, and the decisions' functions handed back (a shared
/// log may need them again).
pub(crate) type DecidedGroup = (Vec<Decided>, Vec<Option<Decide>>);

/// What became of a decided group's log write, as the leader reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Written {
    /// The log has it: the transaction holding it may commit.
    Yes,
    /// A shared log did not take it (another node appended first, or the
    /// cluster did not answer): its effects are dropped, and the log,
    /// followed, says what happened.
    RolledBack,
    /// The write failed and the handle is poisoned.
    No,
}

/// What a checkpoint did, from [`Db::checkpoint`](crate::Db::checkpoint).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CheckpointOutcome {
    /// The LSN the store's durable state now reflects.
    pub covered_lsn: u64,
    /// The checkpoint before it, which a damaged store falls back to; the
    /// log is kept from the LSN after it.
    pub previous_lsn: u64,
    /// Whether a durable commit was made (false: nothing since the last).
    pub written: bool,
    /// Events that max-age retention removed at this checkpoint.
    pub aged_out_events: u64,
    /// The first LSN the log holds now.
    pub log_first_lsn: u64,
    /// What the log removed (segment files, for the WAL).
    pub log_removed: Vec<String>,
}

pub(crate) enum Job {
    /// Committed batches, their payload bytes, and whom to tell once they
    /// are applied (and any checkpoint they made due is taken).
    Apply(Vec<CommittedBatch>, u64, Option<Sender<()>>),
    Decide {
        items: Vec<DecideItem>,
        next_lsn: u64,
        reply: ReplyTx<DecidedGroup>,
        written: Receiver<Written>,
        done: Option<Sender<()>>,
    },
    Checkpoint(Sender<Result<CheckpointOutcome>>),
    /// Folds what the log holds past the applied LSN (records another
    /// node appended to a shared log) into the store, a bounded amount at
    /// a time; answers the LSN applied now.
    CatchUp(Sender<Result<u64>>),
    Stop,
}

/// Bytes queued for the applier.
#[derive(Debug, Default)]
pub(crate) struct Backlog {
    bytes: Mutex<u64>,
    drained: Condvar,
}

impl Backlog {
    /// Waits until the backlog is under its limit (or `health` is poisoned).
    pub(crate) fn wait_for_room(&self, health: &Health) {
        let mut b = self.bytes.lock().unwrap_or_else(PoisonError::into_inner);
        while *b > BACKLOG_BYTES_MAX && !health.is_poisoned() {
            b = self
                .drained
                .wait_timeout(b, Duration::from_millis(100))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    pub(crate) fn add(&self, n: u64) {
        *self.bytes.lock().unwrap_or_else(PoisonError::into_inner) += n;
    }

    fn release(&self, n: u64) {
        let mut b = self.bytes.lock().unwrap_or_else(PoisonError::into_inner);
        *b = b.saturating_sub(n);
        self.drained.notify_all();
    }
}

/// When to checkpoint, and what has happened since the last one.
#[derive(Debug)]
struct Policy {
    every_records: u64,
    every_bytes: u64,
    every: Option<Duration>,
    records: u64,
    bytes: u64,
    since: Instant,
    /// After a failed automatic checkpoint, none is tried before this.
    retry_at: Instant,
}

/// How long a failed automatic checkpoint waits before the next try.
const CHECKPOINT_RETRY_AFTER: Duration = Duration::from_secs(1);

impl Policy {
    fn due(&self) -> bool {
        if Instant::now() < self.retry_at {
            return false;
        }
        (self.every_records > 0 && self.records >= self.every_records)
            || (self.every_bytes > 0 && self.bytes >= self.every_bytes)
            || (self.records > 0 && self.every.is_some_and(|d| self.since.elapsed() >= d))
    }

    /// How long to wait for a job before a checkpoint falls due (by time,
    /// or a retry).
    fn wait(&self) -> Duration {
        let retry = self.retry_at.saturating_duration_since(Instant::now());
        if self.records > 0 && !retry.is_zero() {
            return retry;
        }
        match self.every {
            Some(d) if self.records > 0 => d.saturating_sub(self.since.elapsed()),
            _ => Duration::from_secs(3600),
        }
    }
}

/// The applier's own state.
struct State {
    store: Arc<Store>,
    views: Arc<RwLock<ViewStates>>,
    log: Arc<dyn Log>,
    health: Arc<Health>,
    backlog: Arc<Backlog>,
    maintenance: Arc<Mutex<()>>,
    durability: Durability,
    record_bytes_max: u64,
    /// Apply a command group's last item after the reply (not with
    /// `Options::synchronous_apply`, whose I/O must happen in one order).
    defer_last_apply: bool,
    /// The log is shared with other nodes (see [`Log::is_shared`]): a
    /// decided group may be rolled back, so it gets a transaction of its
    /// own.
    shared: bool,
    policy: Policy,
    /// The LSN the last durable checkpoint covers.
    checkpoint_lsn: u64,
    applied_lsn: u64,
}

/// The queue between the leader and the applier.
#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    /// Payload bytes of the queued `Apply` jobs.
    bytes: u64,
    /// The applier sleeps with nothing to do: the next job wakes it.
    idle: bool,
    /// Someone waits for the store: wake the applier now.
    kicked: bool,
    /// The applier has stopped: nothing more is taken.
    closed: bool,
}

impl Queue {
    /// Takes up to `n` jobs, oldest first, and recounts the bytes left.
    fn take_up_to(&mut self, n: usize) -> Vec<Job> {
        let n = self.jobs.len().min(n);
        let jobs: Vec<Job> = self.jobs.drain(..n).collect();
        self.bytes = self
            .jobs
            .iter()
            .map(|j| match j {
                Job::Apply(_, b, _) => *b,
                _ => 0,
            })
            .sum();
        jobs
    }
}

#[derive(Default)]
struct Jobs {
    queue: Mutex<Queue>,
    wake: Condvar,
    /// Bumped by every send and kick: what a lingering applier polls.
    signal: std::sync::atomic::AtomicU64,
    /// Readers blocked on the views' lock: a round neither lingers nor
    /// starts while there are any.
    readers_waiting: std::sync::atomic::AtomicUsize,
}

impl std::fmt::Debug for Jobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let q = self.lock();
        f.debug_struct("Jobs")
            .field("queued", &q.jobs.len())
            .field("bytes", &q.bytes)
            .field("idle", &q.idle)
            .finish()
    }
}

impl Jobs {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn readers_waiting(&self) -> usize {
        self.readers_waiting
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Before a round takes the views' lock: lets readers blocked on it
    /// in first (for a millisecond at most), so rounds that follow each
    /// other closely cannot keep a reader out.
    fn let_readers_in(&self) {
        let start = Instant::now();
        while self.readers_waiting() > 0 && start.elapsed() < READERS_FIRST_MAX {
            std::thread::yield_now();
        }
    }

    /// Takes no more jobs, and drops those still queued: whoever waits
    /// on one (a leader for its decision, a checkpoint, a synchronous
    /// apply) is told it will not be done, instead of waiting forever.
    fn close(&self) {
        let left = {
            let mut q = self.lock();
            q.closed = true;
            std::mem::take(&mut q.jobs)
        };
        drop(left);
    }
}

/// The running applier.
#[derive(Debug)]
pub(crate) struct Applier {
    jobs: Arc<Jobs>,
    thread: Mutex<Option<JoinHandle<()>>>,
    pub backlog: Arc<Backlog>,
}

/// Everything the applier thread is given.
pub(crate) struct Start {
    pub store: Arc<Store>,
    pub views: Arc<RwLock<ViewStates>>,
    pub log: Arc<dyn Log>,
    pub health: Arc<Health>,
    pub maintenance: Arc<Mutex<()>>,
    pub checkpoint_lsn: u64,
    pub applied_lsn: u64,
    /// Records and bytes applied since the last checkpoint (the replay).
    pub since: (u64, u64),
}

/// Gives the calling thread [`APPLIER_NICE`]. A refusal costs only speed,
/// so it is logged, not returned.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid has no preconditions; setpriority takes plain
        // integers and reports failure through its result.
        let set = unsafe {
            let tid = libc::gettid();
            libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, APPLIER_NICE)
        };
        if set != 0 {
            let e = std::io::Error::last_os_error();
            tracing::debug!(error = %e, "the applier's priority could not be lowered");
        }
    }
}

impl Applier {
    pub(crate) fn start(s: Start, options: &Options) -> std::io::Result<Applier> {
        let jobs = Arc::new(Jobs::default());
        let rx = jobs.clone();
        let backlog = Arc::new(Backlog::default());
        let shared = s.log.is_shared();
        let mut state = State {
            store: s.store,
            views: s.views,
            log: s.log,
            health: s.health,
            backlog: backlog.clone(),
            maintenance: s.maintenance,
            durability: options.durability,
            record_bytes_max: options.record_bytes_max,
            defer_last_apply: !options.synchronous_apply,
            shared,
            policy: Policy {
                every_records: options.checkpoint_every_records,
                every_bytes: options.checkpoint_every_bytes,
                every: options.checkpoint_every,
                records: s.since.0,
                bytes: s.since.1,
                since: Instant::now(),
                retry_at: Instant::now(),
            },
            checkpoint_lsn: s.checkpoint_lsn,
            applied_lsn: s.applied_lsn,
        };
        let thread = std::thread::Builder::new()
            .name("replaydb-applier".into())
            .spawn(move || {
                lower_priority();
                let health = state.health.clone();
                let queue = rx.clone();
                if catch_unwind(AssertUnwindSafe(|| state.run(rx))).is_err() {
                    health.poison("the store applier panicked".into());
                    queue.close();
                }
            })?;
        Ok(Applier {
            jobs,
            thread: Mutex::new(Some(thread)),
            backlog,
        })
    }

    /// Queues a job; false if the applier is gone. A group of plain
    /// batches wakes it only if it sleeps idle or much is queued; anything
    /// someone waits on wakes it at once.
    pub(crate) fn send(&self, job: Job) -> bool {
        let mut q = self.jobs.lock();
        if q.closed {
            return false;
        }
        let urgent = match &job {
            Job::Apply(_, bytes, done) => {
                q.bytes += bytes;
                done.is_some() || q.bytes >= WAKE_BYTES
            }
            _ => true,
        };
        q.jobs.push_back(job);
        let wake = urgent || q.idle || q.kicked;
        drop(q);
        self.jobs
            .signal
            .fetch_add(1, std::sync::atomic::Ordering::Release);
        if wake {
            self.jobs.wake.notify_one();
        }
        true
    }

    /// Someone waits for the store to apply what is queued: wake the
    /// applier now.
    pub(crate) fn kick(&self) {
        let mut q = self.jobs.lock();
        q.kicked = true;
        drop(q);
        self.jobs
            .signal
            .fetch_add(1, std::sync::atomic::Ordering::Release);
        self.jobs.wake.notify_one();
    }

    /// Runs `read` (which blocks on the views' lock the applier holds)
    /// as a waiting reader: the applier ends a lingering round for it and
    /// lets it in before the next round.
    pub(crate) fn as_waiting_reader<R>(&self, read: impl FnOnce() -> R) -> R {
        use std::sync::atomic::Ordering;
        self.jobs.readers_waiting.fetch_add(1, Ordering::AcqRel);
        self.kick();
        let out = read();
        self.jobs.readers_waiting.fetch_sub(1, Ordering::AcqRel);
        out
    }

    /// Stops the thread after what is queued (and a last checkpoint) and
    /// waits for it.
    pub(crate) fn stop(&self) {
        self.send(Job::Stop);
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(t) = thread
            && t.join().is_err()
        {
            tracing::error!("the store applier panicked");
        }
    }
}

impl State {
    /// Takes the next round of jobs: waits while there are none, polling
    /// every [`POLL_WHILE_BUSY`] after a round that did work, and sleeping
    /// until woken (or a checkpoint is due by time) after an empty one.
    /// `None` when a checkpoint fell due with nothing queued.
    fn take(&mut self, rx: &Jobs, busy: bool) -> Option<(Vec<Job>, bool)> {
        let mut q = rx.lock();
        let mut polled = false;
        while q.jobs.is_empty() {
            let wait = if busy && !polled {
                POLL_WHILE_BUSY
            } else {
                q.idle = true;
                self.policy.wait()
            };
            let (g, timeout) = rx
                .wake
                .wait_timeout(q, wait)
                .unwrap_or_else(PoisonError::into_inner);
            q = g;
            q.idle = false;
            polled = true;
            if timeout.timed_out() && q.jobs.is_empty() && self.policy.due() {
                return None;
            }
        }
        // Whoever kicked waits for this round: it must not linger.
        let kicked = std::mem::take(&mut q.kicked);
        Some((q.take_up_to(JOBS_PER_TRANSACTION_MAX), kicked))
    }

    fn run(&mut self, rx: Arc<Jobs>) {
        let mut busy = false;
        loop {
            let Some((jobs, kicked)) = self.take(&rx, busy) else {
                self.checkpoint_now(false, None);
                busy = false;
                continue;
            };
            busy = true;
            let mut checkpoints = Vec::new();
            let mut catch_ups = Vec::new();
            let mut stop = false;
            let mut dones = Vec::new();
            let round = Round {
                rx: &rx,
                kicked,
                checkpoints: &mut checkpoints,
                catch_ups: &mut catch_ups,
                stop: &mut stop,
                dones: &mut dones,
            };
            let applied = self.apply(jobs, round);
            // Told after this round, checkpoint included (or failure).
            let _tell = TellOnDrop(dones);
            if applied.is_err() {
                for reply in checkpoints {
                    let _ = reply.send(Err(self.health.error()));
                }
                for reply in catch_ups {
                    let _ = reply.send(Err(self.health.error()));
                }
                rx.close();
                return;
            }
            for reply in catch_ups {
                let _ = reply.send(self.catch_up());
            }
            if stop {
                rx.close();
                if (self.policy.records > 0 || self.applied_lsn > self.checkpoint_lsn)
                    && !self.health.is_poisoned()
                {
                    self.checkpoint_now(true, None);
                }
                for reply in checkpoints {
                    let _ = reply.send(Err(self.health.error()));
                }
                return;
            }
            let mut replies = checkpoints.into_iter();
            if let Some(first) = replies.next() {
                self.checkpoint_now(true, Some(first));
                for reply in replies {
                    let _ = reply.send(self.checkpoint(true));
                }
            } else if self.policy.due() {
                self.checkpoint_now(false, None);
            }
        }
    }

    /// Applies `jobs` in one store transaction; collects checkpoint
    /// requests and a stop for after it. After a round that decided
    /// commands, it takes the jobs that come within [`LINGER_FOR_NEXT`]
    /// into the same transaction (see there). A failure poisons the handle
    /// before the views' lock is let go: no reader sees in memory what a
    /// dropped transaction did.
    fn apply(&mut self, jobs: Vec<Job>, round: Round<'_>) -> Result<()> {
        self.health.check()?;
        round.rx.let_readers_in();
        let views_lock = self.views.clone();
        let mut views = views_lock.write().unwrap_or_else(PoisonError::into_inner);
        let result = self.apply_round(jobs, round, &mut views);
        if let Err(e) = &result {
            tracing::error!(error = %e, "applying to the store failed; poisoning the handle");
            self.health
                .poison(format!("applying to the store failed: {e}"));
        }
        drop(views);
        let released = result?;
        self.backlog.release(released);
        Ok(())
    }

    /// [`State::apply`] with the views locked; returns the backlog bytes
    /// applied.
    fn apply_round(
        &mut self,
        mut jobs: Vec<Job>,
        round: Round<'_>,
        views: &mut ViewStates,
    ) -> Result<u64> {
        let Round {
            rx,
            kicked,
            checkpoints,
            catch_ups,
            stop,
            dones,
        } = round;
        let store = self.store.clone();
        let mut w: Option<StoreWrite<'_>> = None;
        let mut released = 0u64;
        // Groups decided here whose log write is still to be reported:
        // the transaction holds their effects, so it commits only once
        // each is written.
        let mut unwritten: Vec<Receiver<Written>> = Vec::new();
        let round_start = Instant::now();
        let mut taken = 0usize;
        loop {
            let mut decided_commands = false;
            taken += jobs.len();
            for job in jobs {
                match job {
                    Job::Apply(batches, bytes, done) => {
                        dones.extend(done);
                        let w = match w.as_mut() {
                            Some(w) => w,
                            None => w.insert(store.begin_write()?),
                        };
                        for b in &batches {
                            w.apply_batch(&b.as_ref(), &mut views.slots)?;
                            self.count(
                                b.payload.len() as u64,
                                b.first_lsn + u64::from(b.count) - 1,
                            );
                        }
                        released += bytes;
                    }
                    Job::Decide {
                        items,
                        next_lsn,
                        reply,
                        written,
                        done,
                    } => {
                        dones.extend(done);
                        decided_commands = true;
                        // A group decided earlier in this round whose write
                        // failed poisoned the handle: decide nothing more.
                        check_written(&mut unwritten, false)?;
                        if self.shared
                            && let Some(earlier) = w.take()
                        {
                            // What came before is committed first, so a
                            // rollback drops this group alone.
                            self.commit_round(earlier, views)?;
                        }
                        let tx = match w.as_mut() {
                            Some(w) => w,
                            None => w.insert(store.begin_write()?),
                        };
                        let ((decided, decides), deferred) =
                            self.decide(tx, views, items, next_lsn)?;
                        let last = decided
                            .iter()
                            .filter_map(|d| d.as_ref().ok().and_then(|o| o.as_ref()))
                            .map(|(b, lsn, _)| {
                                (b.payload.len() as u64, lsn + u64::from(b.count) - 1)
                            })
                            .collect::<Vec<_>>();
                        // The leader writes the group while the last
                        // command's effects are applied here.
                        reply.send((decided, decides));
                        if let Some(d) = deferred {
                            tx.apply_batch(&d.as_ref(), &mut views.slots)?;
                        }
                        if self.shared {
                            // Known at once, before anything more joins
                            // the transaction.
                            match written.recv() {
                                Ok(Written::Yes) => {}
                                Ok(Written::RolledBack) => {
                                    drop(w.take());
                                    self.reload_views(views)?;
                                    continue;
                                }
                                _ => return Err(written_failed()),
                            }
                        } else {
                            unwritten.push(written);
                        }
                        for (bytes, lsn) in last {
                            self.count(bytes, lsn);
                        }
                    }
                    Job::Checkpoint(reply) => checkpoints.push(reply),
                    Job::CatchUp(reply) => catch_ups.push(reply),
                    Job::Stop => *stop = true,
                }
            }
            let must_end = *stop
                || kicked
                || rx.readers_waiting() > 0
                || !checkpoints.is_empty()
                || !catch_ups.is_empty()
                || !dones.is_empty()
                || taken >= JOBS_PER_TRANSACTION_MAX
                || round_start.elapsed() >= LINGER_ROUND_MAX;
            if !decided_commands || must_end {
                break;
            }
            match linger(
                rx,
                JOBS_PER_TRANSACTION_MAX - taken,
                &mut unwritten,
                round_start,
            )? {
                Some(more) => jobs = more,
                None => break,
            }
        }
        check_written(&mut unwritten, true)?;
        if let Some(w) = w {
            self.commit_round(w, views)?;
        }
        Ok(released)
    }

    /// Commits what `w` applied and publishes it.
    fn commit_round(&self, w: StoreWrite<'_>, views: &mut ViewStates) -> Result<()> {
        w.record_views(&views.slots)?;
        w.commit()?;
        views.applied_lsn = self.applied_lsn;
        self.health.publish_applied(self.applied_lsn);
        Ok(())
    }

    /// After a dropped transaction: the views' memory is rebuilt from
    /// their tables as last committed, and the applied LSN is that
    /// commit's again.
    fn reload_views(&mut self, views: &mut ViewStates) -> Result<()> {
        let r = self.store.begin_read()?;
        let recorded = crate::engine::recover::read_view_meta(&r, &self.store)?;
        for slot in &mut views.slots {
            slot.view.reset();
            let tables = crate::views::ViewTablesRead {
                at: TablesAt::Read(&r.tx),
                view: &slot.name,
                path: &self.store.path,
            };
            slot.view.load(&tables)?;
            slot.applied_lsn = recorded
                .iter()
                .find(|(n, _, _)| *n == slot.name)
                .map_or(0, |(_, _, lsn)| *lsn);
        }
        self.applied_lsn = views.applied_lsn;
        Ok(())
    }

    /// Folds the log past the applied LSN into the store: what other
    /// nodes appended to a shared log. At most
    /// [`CATCH_UP_TRANSACTION_BYTES_MAX`] a call, in one transaction; the
    /// LSN applied after it. A record that fails its check, or that does
    /// not follow the store's state, is never applied: it poisons the
    /// handle, naming its LSN. A read that fails applies nothing.
    fn catch_up(&mut self) -> Result<u64> {
        self.health.check()?;
        let from = self.applied_lsn + 1;
        if self.log.last_lsn() < from {
            return Ok(self.applied_lsn);
        }
        // Read first, without the views' lock: a cluster slow to answer
        // (a call may take seconds) keeps no reader of this node waiting.
        let mut batches = Vec::new();
        let mut bytes = 0u64;
        let read = self.log.read(from, &mut |r| {
            if r.last_lsn() < from {
                return Ok(true);
            }
            bytes += r.payload.len() as u64;
            batches.push(CommittedBatch {
                stream: r.stream.to_string(),
                first_lsn: r.first_lsn,
                first_version: r.first_version,
                count: r.count,
                payload: r.payload.to_vec(),
            });
            Ok(bytes < CATCH_UP_TRANSACTION_BYTES_MAX)
        });
        let health = self.health.clone();
        let poison_if_damage = move |e: Error| {
            if matches!(e, Error::Corrupt { .. }) {
                tracing::error!(error = %e, "a record of the shared log is damaged; poisoning the handle");
                health.poison(e.to_string());
            }
            e
        };
        read.map_err(&poison_if_damage)?;
        let views_lock = self.views.clone();
        let mut views = views_lock.write().unwrap_or_else(PoisonError::into_inner);
        let store = self.store.clone();
        let mut w = store.begin_write()?;
        let mut next = from;
        for b in &batches {
            let applied = crate::engine::recover::apply_record(
                &mut w,
                &b.as_ref(),
                next,
                &mut views.slots,
                "folding the shared log into the store",
            );
            if let Err(e) = applied {
                drop(w);
                self.reload_views(&mut views)?;
                return Err(poison_if_damage(e));
            }
            next = b.first_lsn + u64::from(b.count);
        }
        // Counted once committed: a commit that fails leaves the applied
        // LSN where the store is, and poisons (the views' memory holds
        // what the store dropped).
        let before = self.applied_lsn;
        for b in &batches {
            self.count(b.payload.len() as u64, b.first_lsn + u64::from(b.count) - 1);
        }
        if let Err(e) = self.commit_round(w, &mut views) {
            self.applied_lsn = before;
            self.health
                .poison(format!("folding the shared log into the store failed: {e}"));
            return Err(e);
        }
        Ok(self.applied_lsn)
    }

    fn count(&mut self, bytes: u64, last_lsn: u64) {
        self.policy.records += 1;
        self.policy.bytes += bytes;
        self.applied_lsn = self.applied_lsn.max(last_lsn);
    }

    /// Decides a group's batches and commands in order against `w`, and
    /// applies the accepted ones to it: each before the next is decided,
    /// but the last one (if small) is handed back to be applied after the
    /// reply, since nothing in the group depends on it.
    fn decide(
        &self,
        w: &mut StoreWrite<'_>,
        views: &mut ViewStates,
        items: Vec<DecideItem>,
        mut next_lsn: u64,
    ) -> Result<(DecidedGroup, Option<DeferredApply>)> {
        let mut out = Vec::with_capacity(items.len());
        let mut decides = Vec::with_capacity(items.len());
        let mut deferred: Option<DeferredApply> = None;
        for item in items {
            if let Some(d) = deferred.take() {
                w.apply_batch(&d.as_ref(), &mut views.slots)?;
            }
            decides.push(item.decide);
            let batch = match decides.last().and_then(Option::as_ref) {
                Some(decide) => {
                    let set = ViewSet {
                        slots: &views.slots,
                        applied_lsn: next_lsn - 1,
                        at: TablesAt::Write(&w.tx),
                        path: w.path,
                    };
                    match run_command(decide, &set, &item.stream, self.record_bytes_max) {
                        Ok(Some(batch)) => batch,
                        Ok(None) => {
                            out.push(Ok(None));
                            continue;
                        }
                        Err(e) => {
                            out.push(Err(e));
                            continue;
                        }
                    }
                }
                None => item.batch,
            };
            let current = w.stream_version(&item.stream)?;
            if !item.expected.admits(current) {
                out.push(Err(Error::WrongExpectedVersion {
                    stream: item.stream,
                    expected: item.expected,
                    actual: current,
                }));
                continue;
            }
            if self.defer_last_apply && batch.payload.len() <= DEFER_PAYLOAD_BYTES_MAX {
                deferred = Some(DeferredApply {
                    first_lsn: next_lsn,
                    first_version: current + 1,
                    count: batch.count,
                    stream: item.stream,
                    payload: batch.payload.clone(),
                });
            } else {
                w.apply_batch(
                    &BatchRef {
                        first_lsn: next_lsn,
                        first_version: current + 1,
                        count: batch.count,
                        stream: &item.stream,
                        payload: &batch.payload,
                    },
                    &mut views.slots,
                )?;
            }
            let count = u64::from(batch.count);
            out.push(Ok(Some((batch, next_lsn, current + 1))));
            next_lsn += count;
        }
        // Only the last accepted item may still be deferred.
        Ok(((out, decides), deferred))
    }

    /// Takes a checkpoint and answers `reply` (or logs a failure).
    fn checkpoint_now(&mut self, wait: bool, reply: Option<Sender<Result<CheckpointOutcome>>>) {
        let result = self.checkpoint(wait);
        match reply {
            Some(r) => {
                let _ = r.send(result);
            }
            None => {
                if let Err(e) = result {
                    tracing::warn!(error = %e, "automatic checkpoint not taken; retrying in a second");
                    // What is owed stays owed; only the next try waits.
                    self.policy.retry_at = Instant::now() + CHECKPOINT_RETRY_AFTER;
                }
            }
        }
    }

    /// A durable checkpoint of what is applied, then the log before the
    /// previous checkpoint is removed. A backup in progress (which needs
    /// the log it is copying) refuses it: the applier never waits for a
    /// backup, so readers never do either.
    fn checkpoint(&mut self, _explicit: bool) -> Result<CheckpointOutcome> {
        self.health.check()?;
        let maintenance = self.maintenance.clone();
        let _no_backup = match maintenance.try_lock() {
            Ok(g) => g,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => {
                return Err(Error::InProgress {
                    op: "checkpoint",
                    running: "a backup",
                });
            }
        };
        let mut outcome = CheckpointOutcome {
            covered_lsn: self.checkpoint_lsn,
            ..CheckpointOutcome::default()
        };
        let mut w = self.store.begin_write()?;
        outcome.aged_out_events = w.age_out()?;
        w.commit()?;
        if self.applied_lsn > self.checkpoint_lsn
            || self.policy.records > 0
            || outcome.aged_out_events > 0
        {
            // The store must never be durable ahead of the log.
            if matches!(self.durability, Durability::Buffered { .. }) {
                self.log.sync().inspect_err(|e| {
                    self.health.poison(e.to_string());
                })?;
            }
            let (covered, previous) = self.store.checkpoint()?;
            outcome.covered_lsn = covered;
            outcome.previous_lsn = previous;
            outcome.written = true;
            self.checkpoint_lsn = covered;
            let c = &self.health.counters;
            c.checkpoints
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            c.checkpoint_lsn
                .store(covered, std::sync::atomic::Ordering::Release);
        } else {
            outcome.previous_lsn = self.store_previous_checkpoint()?;
        }
        // The fallback (the previous checkpoint) needs the log after it.
        crate::failpoint::hit("checkpoint.before_truncate");
        if self.shared {
            // Other nodes, and any that joins later, read the log from
            // their own checkpoints: a shared log is not this node's to
            // cut (the cluster's retention limits are).
            outcome.log_first_lsn = self.log.first_lsn();
        } else {
            let truncated = self.log.truncate_before(outcome.previous_lsn + 1)?;
            outcome.log_first_lsn = truncated.first_lsn;
            outcome.log_removed = truncated.removed;
        }
        self.policy.records = 0;
        self.policy.bytes = 0;
        self.policy.since = Instant::now();
        Ok(outcome)
    }

    fn store_previous_checkpoint(&self) -> Result<u64> {
        let r = self.store.begin_read()?;
        crate::store::previous_checkpoint_lsn(&r)
    }
}

/// What one round of the applier is given, and what it gathers for after
/// its commit.
struct Round<'a> {
    rx: &'a Jobs,
    /// Someone waits for this round: it does not linger.
    kicked: bool,
    checkpoints: &'a mut Vec<Sender<Result<CheckpointOutcome>>>,
    catch_ups: &'a mut Vec<Sender<Result<u64>>>,
    stop: &'a mut bool,
    dones: &'a mut Vec<Sender<()>>,
}

/// An accepted batch of a decided group, to apply to the store after the
/// reply: a batch as committed ones are.
type DeferredApply = CommittedBatch;

/// Checks the log writes reported for the groups decided this round;
/// with `wait`, waits for every one (before the transaction commits).
/// Any write not done poisons: the transaction holds its effects.
fn check_written(unwritten: &mut Vec<Receiver<Written>>, wait: bool) -> Result<()> {
    let poisoned = written_failed;
    let mut i = 0;
    while let Some(rx) = unwritten.get(i) {
        let got = if wait {
            rx.recv().ok()
        } else {
            match rx.try_recv() {
                Ok(v) => Some(v),
                Err(std::sync::mpsc::TryRecvError::Empty) => {
                    i += 1;
                    continue;
                }
                Err(std::sync::mpsc::TryRecvError::Disconnected) => None,
            }
        };
        if got != Some(Written::Yes) {
            return Err(poisoned());
        }
        unwritten.swap_remove(i);
    }
    Ok(())
}

fn written_failed() -> Error {
    Error::Poisoned {
        cause: "a group decided in the store was not written to the log".into(),
    }
}

/// Polls for the next jobs, taking at most `room`, for up to
/// [`LINGER_FOR_NEXT`] after the last group decided is written (while it
/// is being written, no next group can come, and the poll goes on; the
/// round as a whole lasts [`LINGER_ROUND_MAX`] at most): `None` when none
/// came, or someone waits for the store.
fn linger(
    rx: &Jobs,
    room: usize,
    unwritten: &mut Vec<Receiver<Written>>,
    round_start: Instant,
) -> Result<Option<Vec<Job>>> {
    use std::sync::atomic::Ordering;
    let mut since = Instant::now();
    // What was sent before the poll began is looked for first.
    let mut seen = None;
    let mut spins = 0u32;
    loop {
        let now = rx.signal.load(Ordering::Acquire);
        if seen != Some(now) {
            seen = Some(now);
            let mut q = rx.lock();
            if q.kicked || q.closed || rx.readers_waiting() > 0 {
                return Ok(None);
            }
            if !q.jobs.is_empty() {
                return Ok(Some(q.take_up_to(room)));
            }
        }
        std::thread::yield_now();
        spins += 1;
        if spins.is_multiple_of(4) {
            if !unwritten.is_empty() {
                check_written(unwritten, false)?;
                since = Instant::now();
            }
            if since.elapsed() >= LINGER_FOR_NEXT
                || round_start.elapsed() >= LINGER_ROUND_MAX
                || rx.readers_waiting() > 0
            {
                return Ok(None);
            }
        }
    }
}

/// Tells everyone waiting for a round when it is over, however it ends.
struct TellOnDrop(Vec<Sender<()>>);

impl Drop for TellOnDrop {
    fn drop(&mut self) {
        for done in self.0.drain(..) {
            let _ = done.send(());
        }
    }
}

/// Runs a command's decision and encodes what it decided. A panic in it
/// fails that command alone.
fn run_command(
    decide: &Decide,
    views: &ViewSet<'_>,
    stream: &str,
    record_bytes_max: u64,
) -> Result<Option<EncodedBatch>> {
    let _inside = crate::engine::reentry::Inside::enter();
    let events =
        catch_unwind(AssertUnwindSafe(|| decide(views))).map_err(|_| Error::Internal {
            op: "execute",
            reason: "the command's decision panicked; nothing was appended".into(),
        })??;
    if events.is_empty() {
        return Ok(None);
    }
    let batch = format::encode_batch(stream, &events);
    if batch.payload.len() as u64 > record_bytes_max {
        return Err(Error::RecordTooLarge {
            stream: stream.to_string(),
            size_bytes: batch.payload.len() as u64,
            limit_bytes: record_bytes_max,
        });
    }
    Ok(Some(batch))
}
