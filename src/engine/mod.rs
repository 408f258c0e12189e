//! The database handle: open, append, read, subscribe, checkpoint.

mod applier;
mod commit;
mod flusher;
mod handoff;
mod health;
pub(crate) mod lock;
pub mod maintenance;
mod recover;
mod reentry;
pub mod subscribe;
mod versions;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use crate::error::{Error, Result};
use crate::layout;
use crate::log::{Log, LogStats};
use crate::options::{Durability, LogKind, Options};
use crate::retention::{RETENTION_STREAM, Retention, RetentionChange};
use crate::store::Store;
use crate::stream::{
    Appended, Event, EventRef, ExpectedVersion, validate_internal_stream_name, validate_stream_name,
};
use crate::views::{AtLsn, TablesAt, View, ViewSet, ViewStates, ViewTablesRead};
use crate::wal::format;
use crate::wal::recovery::RecoveryReport;

use applier::{Applier, Job};
use commit::{CommitState, Pending, Queue, Slot, Wakeup};
use health::Health;
use lock::DirLock;
use versions::VersionCache;

pub use applier::CheckpointOutcome;
pub(crate) use subscribe::AppliedWatch;
pub use subscribe::Subscription;

/// Shared state behind every [`Db`] clone.
#[derive(Debug)]
pub(crate) struct Inner {
    pub dir: PathBuf,
    pub options: Options,
    pub log: Arc<dyn Log>,
    pub store: Arc<Store>,
    /// The views, and the LSN they reflect (written by the applier).
    pub views: Arc<RwLock<ViewStates>>,
    pub commit: Mutex<CommitState>,
    pub queue: Mutex<Queue>,
    /// Appends the last group held (see [`Inner::lead_one_group`]).
    pub last_group: std::sync::atomic::AtomicUsize,
    pub versions: Mutex<VersionCache>,
    /// LSN of the last event acknowledged (0: none).
    pub committed_lsn: AtomicU64,
    pub health: Arc<Health>,
    pub applier: Applier,
    /// Held by a backup; checkpoints (which truncate the log) wait for it.
    pub maintenance: Arc<Mutex<()>>,
    pub report: RecoveryReport,
    pub flusher: Mutex<Option<flusher::Flusher>>,
    /// On a shared log: the thread that folds in what other nodes append.
    pub follower: Mutex<Option<Follower>>,
    pub lock: Option<DirLock>,
}

/// How long the follower waits for a shared log to grow before it looks
/// again (and sees whether its handle was closed).
const FOLLOW_WAIT: std::time::Duration = std::time::Duration::from_millis(100);
/// How long the follower waits for a busy commit leader, who folds the
/// log itself before each group, before it looks again.
const FOLLOW_BUSY_WAIT: std::time::Duration = std::time::Duration::from_millis(1);

/// The thread following a shared log.
#[derive(Debug)]
pub(crate) struct Follower {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

/// An open database. Cheap to clone; every clone is the same database.
///
/// ```
/// use replaydb::{Db, ExpectedVersion, Options};
/// # let tmp = tempfile::tempdir().unwrap();
/// let db = Db::open(tmp.path().join("db"), Options::default())?;
/// let done = db.append("orders", ExpectedVersion::NoStream, &[b"created".to_vec()])?;
/// assert_eq!((done.first_lsn, done.version), (1, 1));
/// let events = db.read(1, 10)?;
/// assert_eq!(events[0].data, b"created");
/// # Ok::<(), replaydb::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Db {
    inner: Arc<Inner>,
}

/// A [`Db`] that does not keep it open.
#[derive(Clone, Debug)]
pub(crate) struct WeakDb(std::sync::Weak<Inner>);

impl WeakDb {
    /// The database, if it is still open.
    pub(crate) fn upgrade(&self) -> Option<Db> {
        self.0.upgrade().map(|inner| Db { inner })
    }
}

/// Counts describing the database, from [`Db::stats`].
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
// A field added later decodes as 0 from a peer without it.
#[serde(default)]
pub struct Stats {
    /// Records (batches) the log holds.
    pub records: u64,
    /// Events the log holds.
    pub events: u64,
    /// Streams ever written.
    pub streams: u64,
    /// Files the log keeps (WAL segments).
    pub segments: u64,
    /// Bytes of records and headers in the log (not preallocation).
    pub wal_bytes: u64,
    /// First LSN the log holds (what a checkpoint has not truncated).
    pub log_first_lsn: u64,
    /// First LSN the history holds (1, unless retention or a migration
    /// from a compacted database says otherwise; 0 if empty).
    pub first_lsn: u64,
    /// Last LSN committed (0 if empty).
    pub last_lsn: u64,
    /// Batches the history holds.
    pub history_batches: u64,
    /// LSN the store reflects.
    pub applied_lsn: u64,
    /// LSN the store's last durable checkpoint covers.
    pub checkpoint_lsn: u64,
    /// Size of the store file.
    pub store_bytes: u64,
    /// Appends acknowledged since open.
    pub appends_since_open: u64,
    /// Commit groups written since open.
    pub groups_since_open: u64,
    /// fsync and fdatasync calls on the log since open.
    pub fsyncs_since_open: u64,
    /// Checkpoints taken since open.
    pub checkpoints_since_open: u64,
}

impl Db {
    /// Opens (creating if needed, mode 0700) the database at `dir`, takes
    /// its lock and recovers: the log, then the store at its last
    /// checkpoint plus the log after it.
    ///
    /// Fails with [`Error::Locked`] if another handle holds it,
    /// [`Error::Corrupt`] if the log is damaged anywhere but a torn tail,
    /// [`Error::StoreUnusable`] if the store is damaged and the log no
    /// longer holds what rebuilding it needs, and
    /// [`Error::UnsupportedVersion`] for files of another format.
    pub fn open(dir: impl AsRef<Path>, options: Options) -> Result<Db> {
        Db::open_with_views(dir, options, Vec::new())
    }

    /// A database whose log and store are in memory: nothing touches the
    /// disk, nothing survives the handle.
    pub fn open_in_memory(mut options: Options, views: Vec<Box<dyn View>>) -> Result<Db> {
        options.log = LogKind::Memory;
        Db::open_with_views("<memory>", options, views)
    }

    /// [`Db::open`] with views: each is loaded from the store (or rebuilt
    /// from the history if it is new or its schema changed), caught up,
    /// then kept up to date with every commit. View names must be unique.
    pub fn open_with_views(
        dir: impl AsRef<Path>,
        options: Options,
        views: Vec<Box<dyn View>>,
    ) -> Result<Db> {
        options.validate()?;
        let mut names = std::collections::HashSet::new();
        for v in &views {
            if !crate::views::validate_view_name(v.name()) || !names.insert(v.name().to_string()) {
                return Err(Error::InvalidArgument {
                    op: "open",
                    reason: format!("view name {:?} is invalid or registered twice", v.name()),
                });
            }
        }
        let dir = dir.as_ref().to_path_buf();
        let lock = match &options.log {
            LogKind::Memory => None,
            _ => {
                layout::create_dir(options.storage.as_ref(), &dir)?;
                Some(DirLock::acquire(&dir)?)
            }
        };
        let started = std::time::Instant::now();
        let mut opened = recover::open(&dir, &options, views)?;
        let mut options = options;
        if let Some(limit) = opened.log.record_bytes_limit() {
            options.record_bytes_max = options.record_bytes_max.min(limit);
        }
        opened.report.duration = started.elapsed();
        if let Some(t) = &opened.report.torn_tail {
            tracing::warn!(segment = %t.segment.display(), offset = t.offset, "recovered after cutting a torn tail");
        }
        let applied_lsn = opened.views.applied_lsn;
        // On a shared log, what this node's store holds; the rest is
        // another node's to be folded in, not this node's commit.
        let last_lsn = if opened.log.is_shared() {
            applied_lsn
        } else {
            opened.log.last_lsn()
        };
        let health = Arc::new(Health::new(applied_lsn));
        health
            .counters
            .checkpoint_lsn
            .store(opened.checkpoint_lsn, Ordering::Release);
        let views = Arc::new(RwLock::new(opened.views));
        let maintenance = Arc::new(Mutex::new(()));
        let applier = Applier::start(
            applier::Start {
                store: opened.store.clone(),
                views: views.clone(),
                log: opened.log.clone(),
                health: health.clone(),
                maintenance: maintenance.clone(),
                checkpoint_lsn: opened.checkpoint_lsn,
                applied_lsn,
                since: opened.since,
            },
            &options,
        )
        .map_err(|e| Error::io("start the store applier", &dir, e))?;
        let inner = Arc::new(Inner {
            committed_lsn: AtomicU64::new(last_lsn),
            log: opened.log,
            store: opened.store,
            views,
            commit: Mutex::new(CommitState {
                next_lsn: last_lsn + 1,
            }),
            queue: Mutex::new(Queue::default()),
            last_group: std::sync::atomic::AtomicUsize::new(0),
            versions: Mutex::new(VersionCache::default()),
            health,
            applier,
            maintenance,
            report: opened.report,
            flusher: Mutex::new(None),
            follower: Mutex::new(None),
            lock,
            dir,
            options,
        });
        if let Durability::Buffered { interval } = inner.options.durability {
            let f = flusher::Flusher::start(inner.log.clone(), inner.health.clone(), interval)
                .map_err(|e| Error::io("start flusher thread", &inner.dir, e))?;
            if let Ok(mut slot) = inner.flusher.lock() {
                *slot = Some(f);
            }
        }
        if inner.log.is_shared() {
            let f = Inner::start_follower(&inner)
                .map_err(|e| Error::io("start the log follower thread", &inner.dir, e))?;
            *inner
                .follower
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(f);
        }
        Ok(Db { inner })
    }

    /// The database directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Serves this database to other processes on the Unix socket
    /// `socket` (see [`crate::server`]); [`crate::server::default_socket`]
    /// is the usual path. The server stops when the returned handle is
    /// stopped or dropped.
    pub fn serve(&self, socket: impl AsRef<Path>) -> Result<crate::server::Server> {
        crate::server::Server::start(self.clone(), socket)
    }

    /// The options it was opened with.
    pub fn options(&self) -> &Options {
        &self.inner.options
    }

    /// What recovery found and did when this handle opened the database.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.inner.report
    }

    /// Appends `events` to `stream` as one atomic batch with contiguous
    /// LSNs, if the stream's version satisfies `expected`. Returns once the
    /// batch is durable per the durability mode.
    pub fn append<E: AsRef<[u8]>>(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: &[E],
    ) -> Result<Appended> {
        validate_stream_name(stream)?;
        self.append_unchecked_name(stream, expected, events)
    }

    /// [`Db::append`] to a stream a view owns (`$...`), which plain appends
    /// cannot write: for a view's change that needs no decision (the
    /// view's fold still checks it), so it takes the plain append's path
    /// instead of a command's hand-off to the applier and back.
    pub(crate) fn append_internal<E: AsRef<[u8]>>(
        &self,
        stream: &str,
        events: &[E],
    ) -> Result<Appended> {
        reentry::check("append")?;
        validate_internal_stream_name(stream)?;
        self.append_unchecked_name(stream, ExpectedVersion::Any, events)
    }

    fn append_unchecked_name<E: AsRef<[u8]>>(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: &[E],
    ) -> Result<Appended> {
        let pending = self.pending_append(stream, expected, events)?;
        self.submit(pending)
    }

    /// A checked, encoded append, ready to queue.
    fn pending_append<E: AsRef<[u8]>>(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: &[E],
    ) -> Result<Pending> {
        self.inner.check_poison()?;
        if events.is_empty() {
            return Err(Error::InvalidArgument {
                op: "append",
                reason: "a batch needs at least one event".into(),
            });
        }
        if events.len() > u32::MAX as usize {
            return Err(Error::InvalidArgument {
                op: "append",
                reason: "too many events in one batch".into(),
            });
        }
        let batch = format::encode_batch(stream, events);
        let size = batch.payload.len() as u64;
        if size > self.inner.options.record_bytes_max {
            return Err(Error::RecordTooLarge {
                stream: stream.to_string(),
                size_bytes: size,
                limit_bytes: self.inner.options.record_bytes_max,
            });
        }
        Ok(Pending {
            stream: stream.to_string(),
            expected,
            batch,
            decide: None,
            slot: Arc::new(Slot::default()),
        })
    }

    /// Runs a command: `decide` sees the views as every earlier commit left
    /// them and returns the events to append to `stream` (checked against
    /// `expected`), all inside the writer, so two commands can never both
    /// pass a check only one should pass. An error, or no events, appends
    /// nothing: `Ok(None)` for no events.
    ///
    /// `stream` may be internal (`$...`): that is how a view writes the
    /// stream it owns, which plain appends cannot. `decide` runs on the
    /// store's thread while other writers wait: keep it to a check
    /// against the views.
    pub fn execute(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        decide: impl Fn(&ViewSet<'_>) -> Result<Vec<Vec<u8>>> + Send + 'static,
    ) -> Result<Option<Appended>> {
        reentry::check("execute")?;
        validate_internal_stream_name(stream)?;
        self.inner.check_poison()?;
        let done = self.submit(Pending {
            stream: stream.to_string(),
            expected,
            batch: format::encode_batch(stream, &[] as &[&[u8]]),
            decide: Some(Box::new(decide)),
            slot: Arc::new(Slot::default()),
        })?;
        Ok((done.last_lsn >= done.first_lsn).then_some(done))
    }

    /// [`Db::execute`] for a decision that also answers its caller:
    /// `decide` returns the events and a value, which is handed back once
    /// the events are committed (durable, in the default mode). A refusal
    /// is [`Error::rejected`], turned back with [`Error::into_rejected`].
    pub fn execute_with<T: Send + 'static>(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        decide: impl Fn(&ViewSet<'_>) -> Result<(Vec<Vec<u8>>, T)> + Send + 'static,
    ) -> Result<(Option<Appended>, T)> {
        let answer: Arc<Mutex<Option<T>>> = Arc::new(Mutex::new(None));
        let out = answer.clone();
        let appended = self.execute(stream, expected, move |views| {
            let (events, value) = decide(views)?;
            *out.lock().unwrap_or_else(PoisonError::into_inner) = Some(value);
            Ok(events)
        })?;
        let value = answer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .ok_or(Error::Internal {
                op: "execute",
                reason: "the command was committed without being decided".into(),
            })?;
        Ok((appended, value))
    }

    /// Sets what `stream`'s history keeps (see [`Retention`]). The change
    /// is an event on `$retention`, so it survives like any other; it
    /// removes at once what a count or truncate limit no longer keeps,
    /// and what an age limit no longer keeps at each checkpoint. The
    /// stream's version never changes.
    pub fn set_retention(&self, stream: &str, retention: Retention) -> Result<Appended> {
        validate_internal_stream_name(stream)?;
        retention.validate()?;
        let change = RetentionChange {
            stream: stream.to_string(),
            retention,
        };
        let data = rmp_serde::to_vec(&change).map_err(|e| Error::Encode {
            op: "set_retention",
            reason: e.to_string(),
        })?;
        let batch = format::encode_batch(RETENTION_STREAM, &[data]);
        self.submit(Pending {
            stream: RETENTION_STREAM.to_string(),
            expected: ExpectedVersion::Any,
            batch,
            decide: None,
            slot: Arc::new(Slot::default()),
        })
    }

    /// What `stream`'s history keeps.
    pub fn retention(&self, stream: &str) -> Result<Retention> {
        validate_internal_stream_name(stream)?;
        let r = self.inner.read_store("retention")?;
        Ok(r.stream_meta(stream)?
            .map(|m| m.retention)
            .unwrap_or_default())
    }

    /// Queues a batch or command and waits for its group to commit; leads
    /// the group if no one else is.
    fn submit(&self, pending: Pending) -> Result<Appended> {
        reentry::check("append")?;
        let slot = pending.slot.clone();
        if !self.enqueue(pending)? {
            match slot.wait() {
                Some(Wakeup::Done(result)) => return result,
                Some(Wakeup::Lead) => {}
                None => return Err(self.inner.poisoned_error()),
            }
        }
        self.inner.lead();
        slot.take()
            .unwrap_or_else(|| Err(self.inner.poisoned_error()))
    }

    /// Queues `pending`; whether its appender leads the group (no one
    /// else is at work).
    fn enqueue(&self, pending: Pending) -> Result<bool> {
        let mut queue = self
            .inner
            .queue
            .lock()
            .map_err(|_| self.inner.poisoned_error())?;
        queue.pending.push(pending);
        Ok(!std::mem::replace(&mut queue.leader_active, true))
    }

    /// [`Db::append`] for async callers. The append is queued from the
    /// calling task and its group's fsync is awaited without a thread of
    /// its own; only when this append must lead its group (no other is
    /// at work) is the write and fsync done on tokio's blocking pool.
    pub async fn append_async(
        &self,
        stream: String,
        expected: ExpectedVersion,
        events: Vec<Vec<u8>>,
    ) -> Result<Appended> {
        validate_stream_name(&stream)?;
        let pending = self.pending_append(&stream, expected, &events)?;
        self.submit_async(pending).await
    }

    /// [`Db::append`] for a caller that does not wait, the server's:
    /// `on_done` gets the result, on the thread that commits the group
    /// (so it must not block), or at once for a refusal before queueing.
    /// An async caller's task thus is not woken to answer: the answer is
    /// given where the group is acknowledged, under the commit lock, so
    /// `on_done` must neither block nor call the database. A group with
    /// no leader yet is led on the calling runtime's blocking pool (on a
    /// thread of its own outside one).
    pub(crate) fn append_then<E: AsRef<[u8]>>(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: &[E],
        on_done: impl FnOnce(Result<Appended>) + Send + 'static,
    ) {
        let pending = validate_stream_name(stream)
            .and_then(|()| self.pending_append(stream, expected, events));
        let mut pending = match pending {
            Ok(p) => p,
            Err(e) => return on_done(Err(e)),
        };
        let runtime = tokio::runtime::Handle::try_current().ok();
        let slot = Arc::new(Slot::calling_back(
            commit::OnDone(Box::new(on_done)),
            runtime.clone(),
        ));
        pending.slot = slot.clone();
        match self.enqueue(pending) {
            Ok(true) => self.inner.lead_elsewhere(runtime.as_ref()),
            Ok(false) => {}
            Err(e) => slot.complete(Err(e)),
        }
    }

    /// [`Db::submit`] for async callers: waits on the slot without
    /// blocking the task's thread, and leads on the blocking pool.
    async fn submit_async(&self, mut pending: Pending) -> Result<Appended> {
        pending.slot = Arc::new(Slot::for_async());
        let slot = pending.slot.clone();
        let mut lead = self.enqueue(pending)?;
        loop {
            if lead {
                // The group is led on the blocking pool, by a thread that
                // leads on while the next appender is async too (a hand-
                // over to a task would cost it a hop to the pool again),
                // and this task waits for its slot like any other. A
                // blocking-pool task runs to its end even if this future
                // is dropped.
                self.inner
                    .lead_elsewhere(tokio::runtime::Handle::try_current().ok().as_ref());
            }
            // Dropped while it waits (a timeout, a task aborted), the
            // future must not take the group's leadership with it.
            let mut guard = LeadIfAbandoned {
                slot: slot.clone(),
                inner: self.inner.clone(),
                armed: true,
            };
            let woke = slot.wait_async().await;
            guard.armed = false;
            match woke {
                Some(Wakeup::Done(result)) => return result,
                Some(Wakeup::Lead) => lead = true,
                None => return Err(self.inner.poisoned_error()),
            }
        }
    }

    /// The stream's version: the number of events ever appended to it (0
    /// if none), whatever its retention removed.
    pub fn stream_version(&self, stream: &str) -> Result<u64> {
        validate_internal_stream_name(stream)?;
        let r = self.inner.read_store("stream_version")?;
        Ok(r.stream_meta(stream)?.map_or(0, |m| m.version))
    }

    /// A handle that does not keep the database open (for a view's own
    /// background thread).
    pub(crate) fn downgrade(&self) -> WeakDb {
        WeakDb(Arc::downgrade(&self.inner))
    }

    /// LSN of the last committed event (0 for an empty log).
    pub fn last_lsn(&self) -> u64 {
        self.inner.committed_lsn.load(Ordering::Acquire)
    }

    /// Up to `limit` events of the global log from `from_lsn` on, as the
    /// history holds them (events retention removed are skipped).
    pub fn read(&self, from_lsn: u64, limit: usize) -> Result<Vec<Event>> {
        let mut out = Vec::with_capacity(limit.min(4096));
        if limit == 0 {
            return Ok(out);
        }
        self.replay_until(from_lsn, |e| {
            out.push(e.to_owned());
            out.len() < limit
        })?;
        Ok(out)
    }

    /// Up to `limit` events of `stream` from version `from_version` on.
    /// Versions its retention removed are [`Error::Compacted`].
    pub fn read_stream(&self, stream: &str, from_version: u64, limit: usize) -> Result<Vec<Event>> {
        validate_internal_stream_name(stream)?;
        if limit == 0 {
            return Ok(Vec::new());
        }
        let r = self.inner.read_store("read_stream")?;
        r.read_stream(stream, from_version, limit)
    }

    /// Up to `limit` events of `stream` whose LSN is at least `from_lsn`.
    /// From an LSN at or below an event its retention removed, it is
    /// [`Error::Compacted`] naming the first LSN that read can start at.
    pub fn read_stream_from_lsn(
        &self,
        stream: &str,
        from_lsn: u64,
        limit: usize,
    ) -> Result<Vec<Event>> {
        validate_internal_stream_name(stream)?;
        let r = self.inner.read_store("read_stream")?;
        if let Some(m) = r.stream_meta(stream)?
            && from_lsn.max(1) <= m.removed_through_lsn
        {
            return Err(Error::Compacted {
                what: format!("stream {stream:?} from LSN {from_lsn}"),
                oldest_available: m.removed_through_lsn + 1,
            });
        }
        let from_version = r.stream_version_at_lsn(stream, from_lsn)?;
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        r.visit_stream(stream, from_version, |e| {
            if e.lsn >= from_lsn {
                out.push(e.to_owned());
            }
            out.len() < limit
        })?;
        Ok(out)
    }

    /// Calls `visit` with every committed event from `from_lsn` on, borrowed
    /// from the store: no allocation per event. Returns the number of
    /// events visited.
    pub fn replay(&self, from_lsn: u64, mut visit: impl FnMut(EventRef<'_>)) -> Result<u64> {
        self.replay_until(from_lsn, |e| {
            visit(e);
            true
        })
    }

    /// Like [`Db::replay`], stopping when `visit` returns `false`.
    pub fn replay_until(
        &self,
        from_lsn: u64,
        visit: impl FnMut(EventRef<'_>) -> bool,
    ) -> Result<u64> {
        let r = self.inner.read_store("replay_until")?;
        r.replay(from_lsn, visit)
    }

    /// A subscription to every committed event from `from_lsn` on: what the
    /// history holds, then each event as the store takes it in, with no gap
    /// and no duplicate.
    pub fn subscribe(&self, from_lsn: u64) -> Result<Subscription> {
        reentry::check("subscribe")?;
        self.inner.check_poison()?;
        let from_lsn = from_lsn.max(1);
        let history_from = self.inner.read_store("subscribe")?.history_from_lsn();
        if from_lsn < history_from {
            return Err(Error::Compacted {
                what: format!("LSN {from_lsn}"),
                oldest_available: history_from,
            });
        }
        Ok(Subscription::new(self.clone(), from_lsn))
    }

    /// Reads the in-memory part of the registered view of type `V` through
    /// `read`, consistently: the views reflect whole batches only, up to
    /// the returned LSN. `None` if no view of that type is registered.
    ///
    /// `read` must not call back into the database (append, execute or
    /// view): that returns an error instead of waiting for itself.
    pub fn view<V: View, R>(&self, read: impl FnOnce(&V) -> R) -> Result<Option<AtLsn<R>>> {
        let views = self.inner.read_views()?;
        let _inside = reentry::Inside::enter();
        Ok(views
            .slots
            .iter()
            .find_map(|s| s.view.as_any().downcast_ref::<V>())
            .map(|v| AtLsn {
                value: read(v),
                lsn: views.applied_lsn,
            }))
    }

    /// Reads the registered view of type `V` with its tables, at one commit
    /// of the store (an MVCC read: it never blocks the writer).
    pub fn view_tables<V: View, R>(
        &self,
        read: impl FnOnce(&V, &ViewTablesRead<'_>) -> Result<R>,
    ) -> Result<Option<AtLsn<R>>> {
        let views = self.inner.read_views()?;
        // Begun under the views' lock: the tables are at the same commit
        // as the views' memory.
        let r = self.inner.store.begin_read()?;
        let _inside = reentry::Inside::enter();
        let set = ViewSet {
            slots: &views.slots,
            applied_lsn: views.applied_lsn,
            at: TablesAt::Read(&r.tx),
            path: &self.inner.store.path,
        };
        let Some(view) = set.get::<V>() else {
            return Ok(None);
        };
        let Some(tables) = set.tables::<V>() else {
            return Ok(None);
        };
        Ok(Some(AtLsn {
            value: read(view, &tables)?,
            lsn: views.applied_lsn,
        }))
    }

    /// Takes a checkpoint now: one durable commit of the store covering
    /// everything committed before the call, then deletes the log behind
    /// the previous checkpoint (kept for the fallback). Writers never wait
    /// for it.
    pub fn checkpoint(&self) -> Result<CheckpointOutcome> {
        reentry::check("checkpoint")?;
        self.inner.check_poison()?;
        let (reply, outcome) = std::sync::mpsc::channel();
        if !self.inner.applier.send(Job::Checkpoint(reply)) {
            return Err(self.inner.poisoned_error());
        }
        outcome
            .recv()
            .unwrap_or_else(|_| Err(self.inner.poisoned_error()))
    }

    /// Makes every append acknowledged so far durable and returns the last
    /// LSN that is now certain to survive power loss. In `Immediate` mode
    /// they already are and this does nothing; in `Buffered` mode it is one
    /// fdatasync, taken without holding writers back (as the flusher's).
    /// A failed fdatasync poisons the handle, as any failed write does.
    ///
    /// Dropping the last handle also syncs a `Buffered` database, but a
    /// drop cannot report failure: call `sync` first to know.
    ///
    /// Until another record is written after it, bit rot in what this
    /// made durable cannot be told from a torn write (docs/FORMAT.md).
    pub fn sync(&self) -> Result<u64> {
        reentry::check("sync")?;
        self.inner.check_poison()?;
        if self.inner.options.durability == Durability::Immediate {
            // Published only after its group's fdatasync.
            return Ok(self.inner.committed_lsn.load(Ordering::Acquire));
        }
        // Every group acknowledged by now was appended to the log before
        // its LSN was published, so the sync covers it.
        let lsn = self.inner.committed_lsn.load(Ordering::Acquire);
        match self.inner.log.sync() {
            Ok(_) => Ok(lsn),
            Err(e) => {
                self.inner.poison(e.to_string());
                Err(e)
            }
        }
    }

    /// Writes a consistent copy of the database to `dest` (which must not
    /// exist or be empty) while writers go on: the store at one commit and
    /// the log from before it to now. Returns the last LSN the copy is
    /// certain to hold; it opens as a database of its own.
    pub fn backup(&self, dest: impl AsRef<Path>) -> Result<u64> {
        reentry::check("backup")?;
        maintenance::backup(&self.inner, dest.as_ref())
    }

    /// Counts describing the database.
    pub fn stats(&self) -> Result<Stats> {
        reentry::check("stats")?;
        let log: LogStats = self.inner.log.stats();
        let r = self.inner.read_store("stats")?;
        let (history_batches, first_held) = r.history_extent()?;
        let store_bytes = match &self.inner.options.log {
            LogKind::Memory => 0,
            _ => self
                .inner
                .fs()
                .file_len(&self.inner.store.path)
                .map_err(|e| Error::io("stat store", &self.inner.store.path, e))?
                .unwrap_or(0),
        };
        let c = &self.inner.health.counters;
        Ok(Stats {
            records: log.records,
            events: log.events,
            streams: r.stream_count()?,
            segments: log.files,
            wal_bytes: log.bytes,
            log_first_lsn: log.first_lsn,
            first_lsn: first_held.unwrap_or(0),
            last_lsn: self.last_lsn(),
            history_batches,
            applied_lsn: r.applied_lsn(),
            checkpoint_lsn: c.checkpoint_lsn.load(Ordering::Acquire),
            store_bytes,
            appends_since_open: c.appends.load(Ordering::Relaxed),
            groups_since_open: c.groups.load(Ordering::Relaxed),
            fsyncs_since_open: log.syncs,
            checkpoints_since_open: c.checkpoints.load(Ordering::Relaxed),
        })
    }

    /// The log's own counts.
    pub fn log_stats(&self) -> LogStats {
        self.inner.log.stats()
    }
}

/// Guards an async append waiting on its slot: dropped before it woke, it
/// marks the slot abandoned, so no leader hands it the group, and leads
/// itself (on a thread of its own) if it was handed it already.
struct LeadIfAbandoned {
    slot: Arc<Slot>,
    inner: Arc<Inner>,
    armed: bool,
}

/// A leader on its way to the queue: it leads when run, and if it is
/// dropped unrun (a runtime that refused the task), on a thread of its
/// own.
struct LeadWhenDropped(Option<Arc<Inner>>);

impl LeadWhenDropped {
    fn lead_now(mut self) {
        if let Some(inner) = self.0.take() {
            inner.lead_on_pool();
        }
    }
}

impl Drop for LeadWhenDropped {
    fn drop(&mut self) {
        if let Some(inner) = self.0.take() {
            inner.lead_on_a_thread();
        }
    }
}

impl Drop for LeadIfAbandoned {
    fn drop(&mut self) {
        if self.armed && self.slot.abandon() {
            self.inner.lead_on_a_thread();
        }
    }
}

impl Inner {
    /// The file system under the database.
    pub(crate) fn fs(&self) -> &dyn crate::storage::Storage {
        self.options.storage.as_ref()
    }

    /// A read of the store that sees everything acknowledged so far.
    pub(crate) fn read_store(&self, op: &'static str) -> Result<crate::store::StoreRead> {
        reentry::check(op)?;
        self.check_poison()?;
        self.wait_applied(self.committed_lsn.load(Ordering::Acquire))?;
        self.store.begin_read()
    }

    /// The views, once they reflect everything acknowledged so far.
    fn read_views(&self) -> Result<std::sync::RwLockReadGuard<'_, ViewStates>> {
        reentry::check("view")?;
        self.wait_applied(self.committed_lsn.load(Ordering::Acquire))?;
        let views = match self.views.try_read() {
            Ok(v) => v,
            Err(std::sync::TryLockError::Poisoned(_)) => return Err(self.poisoned_error()),
            Err(std::sync::TryLockError::WouldBlock) => {
                // The applier holds them through a round that may linger
                // for more commands: it ends the round for a waiting
                // reader, and lets it in before the next.
                self.applier
                    .as_waiting_reader(|| self.views.read())
                    .map_err(|_| self.poisoned_error())?
            }
        };
        // Checked with the lock held: a group that failed after the
        // applier took it leaves the handle poisoned before readers enter.
        self.check_poison()?;
        Ok(views)
    }

    /// Waits until the store reflects `lsn`, waking the applier for it.
    pub(crate) fn wait_applied(&self, lsn: u64) -> Result<()> {
        if self.health.applied_lsn() < lsn {
            self.applier.kick();
        }
        self.health.wait_applied(lsn)
    }

    /// Commits one group as leader, then hands leadership on.
    ///
    /// Whatever happens inside (even a panic, say in a tracing layer),
    /// every slot of the group is completed and leadership is handed on,
    /// so no appender waits forever.
    fn lead(self: &Arc<Self>) {
        // The next appender may have gone (an async append dropped while
        // queued): then this leader commits the next group too.
        while self.lead_one_group(false) {}
    }

    /// [`Inner::lead`] on a blocking-pool thread for async appenders: it
    /// also leads the next group while the next appender is async.
    fn lead_on_pool(self: &Arc<Self>) {
        while self.lead_one_group(true) {}
    }

    /// Leads the queue on a thread of its own, for a leader that cannot
    /// lead where it is (a dropped future, a refused pool task); here if
    /// no thread can be started.
    fn lead_on_a_thread(self: &Arc<Self>) {
        let inner = self.clone();
        let spawned = std::thread::Builder::new()
            .name("replaydb-lead".into())
            .spawn(move || inner.lead_on_pool());
        if spawned.is_err() {
            self.lead_on_pool();
        }
    }

    /// Starts a leader for the queue, whose `leader_active` this caller
    /// set or holds, on `runtime`'s blocking pool, or on a thread of its
    /// own if there is no runtime or it refuses (it is shutting down):
    /// the queue says a leader is at work, so one must come.
    fn lead_elsewhere(self: &Arc<Self>, runtime: Option<&tokio::runtime::Handle>) {
        let leader = LeadWhenDropped(Some(self.clone()));
        match runtime {
            Some(rt) => drop(rt.spawn_blocking(move || leader.lead_now())),
            None => drop(leader),
        }
    }

    /// [`Inner::lead`] for one group; whether to lead the next as well.
    fn lead_one_group(self: &Arc<Self>, on_pool: bool) -> bool {
        // The queue lock guards only pushes and takes, which cannot panic
        // half-way; a poisoned queue lock is still consistent.
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        // Fewer queued than the last group held: its appenders, just
        // woken, are on their way back. One yield of the CPU lets them
        // queue (on two cores the leader otherwise takes its group before
        // most of them run): sixteen writers went from 13.2 to 15.5
        // appends an fsync and 5% more appends a second. A lone writer
        // (its last group was itself) never yields.
        if queue.pending.len() < self.last_group.load(Ordering::Relaxed) {
            drop(queue);
            std::thread::yield_now();
            queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        }
        let group = std::mem::take(&mut queue.pending);
        self.last_group.store(group.len(), Ordering::Relaxed);
        drop(queue);
        let slots: Vec<Arc<Slot>> = group.iter().map(|p| p.slot.clone()).collect();
        let outcome =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match self.commit.lock() {
                Ok(mut state) => self.commit_group(&mut state, group),
                Err(_) => self.poison("commit lock poisoned by a panic".into()),
            }));
        if outcome.is_err() {
            self.poison("a panic while committing a group".into());
        }
        if self.health.is_poisoned() {
            // Slots the group completed keep their result; the rest fail.
            for slot in &slots {
                slot.complete_if_waiting(Err(self.poisoned_error()));
            }
        }
        self.hand_on(on_pool)
    }

    /// What a leader does once its group (or a follower's fold) is done:
    /// marks the queue leaderless if it is empty, else passes the queue
    /// on. Whether this thread leads the next group itself.
    ///
    /// A pool leader leads on while the next appender is async. Else the
    /// next appender is handed the group, unless no one waits on it to
    /// take it: an abandoned async append, which this thread leads for,
    /// or one that calls back, for which a leader is started on its
    /// runtime's pool while this thread (maybe an embedded caller's,
    /// whose own append is done) goes back to its work.
    fn hand_on(self: &Arc<Self>, on_pool: bool) -> bool {
        let mut q = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(next) = q.pending.first() else {
            q.leader_active = false;
            return false;
        };
        if on_pool && next.slot.is_async() {
            return true;
        }
        if let Some(runtime) = next.slot.leader_runtime() {
            let runtime = runtime.cloned();
            drop(q);
            self.lead_elsewhere(runtime.as_ref());
            return false;
        }
        !next.slot.hand_leadership()
    }

    /// Starts the thread that folds into the store what other nodes
    /// append to a shared log, while this one does not write: readers and
    /// subscribers see it within a wait of the log growing.
    fn start_follower(inner: &Arc<Inner>) -> std::io::Result<Follower> {
        let weak = Arc::downgrade(inner);
        let log = inner.log.clone();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::Builder::new()
            .name("replaydb-follower".into())
            .spawn(move || {
                let mut retry = FOLLOW_BUSY_WAIT;
                while !stopped.load(Ordering::Acquire) {
                    let Some(committed) = weak
                        .upgrade()
                        .map(|i| i.committed_lsn.load(Ordering::Acquire))
                    else {
                        return;
                    };
                    if log.wait_past(committed, FOLLOW_WAIT) <= committed
                        || stopped.load(Ordering::Acquire)
                    {
                        continue;
                    }
                    match weak.upgrade() {
                        Some(inner) if !inner.health.is_poisoned() => match inner.follow() {
                            None => std::thread::sleep(FOLLOW_BUSY_WAIT),
                            Some(true) => retry = FOLLOW_BUSY_WAIT,
                            Some(false) => {
                                // The cluster did not answer: after a pause
                                // that grows, as the log's own retries do.
                                drop(inner);
                                std::thread::sleep(retry);
                                retry = (retry * 2).min(FOLLOW_WAIT * 10);
                            }
                        },
                        Some(_) => std::thread::sleep(FOLLOW_WAIT),
                        None => return,
                    }
                }
            })?;
        Ok(Follower { stop, thread })
    }

    /// Folds what other nodes appended as the commit leader, if no one
    /// leads (a leader folds it before its group): `None` if one does,
    /// else whether it folded it all.
    fn follow(self: &Arc<Self>) -> Option<bool> {
        {
            let mut q = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
            if std::mem::replace(&mut q.leader_active, true) {
                return None;
            }
        }
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            match self.commit.lock() {
                Ok(mut state) => match self.catch_up(&mut state) {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::warn!(error = %e, "folding in the shared log failed; trying again");
                        false
                    }
                },
                Err(_) => {
                    self.poison("commit lock poisoned by a panic".into());
                    false
                }
            }
        }));
        let folded = outcome.unwrap_or_else(|_| {
            self.poison("a panic while folding in the shared log".into());
            false
        });
        // Leadership is handed on as a leader hands it.
        if self.hand_on(false) {
            self.lead();
        }
        Some(folded)
    }

    pub(crate) fn check_poison(&self) -> Result<()> {
        self.health.check()
    }

    pub(crate) fn poisoned_error(&self) -> Error {
        self.health.error()
    }

    pub(crate) fn poison(&self, cause: String) {
        self.health.poison(cause);
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Stop the flusher; let the applier finish what is queued and take
        // a last checkpoint, so the next open replays little; then make
        // buffered appends durable. (In Immediate mode they are already.)
        if let Some(f) = self.flusher.lock().ok().and_then(|mut f| f.take()) {
            f.stop();
        }
        if let Some(f) = self.follower.lock().ok().and_then(|mut f| f.take()) {
            f.stop.store(true, Ordering::Release);
            // The follower may hold the last handle itself.
            if f.thread.thread().id() != std::thread::current().id() {
                let _ = f.thread.join();
            }
        }
        self.applier.stop();
        if self.health.is_poisoned() {
            // The store may hold groups the log lost (a failed sync): its
            // close must not make them durable.
            self.store.freeze();
        }
        if matches!(self.options.durability, Durability::Buffered { .. })
            && !self.health.is_poisoned()
            && let Err(e) = self.log.sync()
        {
            tracing::error!(error = %e, "final fdatasync on close failed");
        }
        if let Some(lock) = &self.lock {
            tracing::debug!(lock = %lock.path().display(), "database closed");
        }
    }
}
