//! The database handle: open, append, read, subscribe.

mod commit;
mod flusher;
mod health;
mod known_views;
pub(crate) mod lock;
pub mod maintenance;
mod read;
mod recover;
mod reentry;
mod snapshots;
pub mod subscribe;

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use crate::error::{Error, Result};
use crate::layout;
use crate::options::{Durability, Options};
use crate::stream::{Appended, Event, EventRef, ExpectedVersion, validate_stream_name};
use crate::views::{AtLsn, View, ViewSet};
use crate::wal::format;
use crate::wal::index::LogIndex;
use crate::wal::recovery::{self, RecoveryReport};

use commit::{CommitState, Pending, Queue, Slot, Wakeup};
use health::Health;
use lock::DirLock;
pub use snapshots::{SnapshotFile, SnapshotOutcome};
pub use subscribe::Subscription;

/// Shared state behind every [`Db`] clone.
#[derive(Debug)]
pub(crate) struct Inner {
    pub dir: PathBuf,
    pub options: Options,
    pub index: RwLock<LogIndex>,
    pub commit: Arc<Mutex<CommitState>>,
    pub queue: Mutex<Queue>,
    /// LSN of the last event visible to readers (0: none).
    pub committed_lsn: AtomicU64,
    pub health: Arc<Health>,
    /// The views, and the LSN they reflect.
    pub views: RwLock<ViewSet>,
    /// One snapshot, compaction or backup at a time.
    pub snapshot_lock: Mutex<()>,
    /// Views the loaded snapshot holds that this handle does not register.
    pub foreign_views: Vec<String>,
    /// Snapshot generations known to hold every registered view at its
    /// version: the only ones compaction may rely on.
    pub usable_generations: Mutex<std::collections::BTreeSet<u64>>,
    /// Records and bytes committed since the last snapshot.
    pub since_snapshot_records: AtomicU64,
    pub since_snapshot_bytes: AtomicU64,
    /// An automatic snapshot has been claimed by an appender.
    pub snapshot_claimed: std::sync::atomic::AtomicBool,
    pub report: RecoveryReport,
    pub flusher: Mutex<Option<flusher::Flusher>>,
    pub lock: DirLock,
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

/// Counts describing the database, from [`Db::stats`].
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    /// Records (batches) in the log.
    pub records: u64,
    /// Events in the log.
    pub events: u64,
    /// Streams with at least one event.
    pub streams: u64,
    /// Segment files.
    pub segments: u64,
    /// Bytes of records and headers in all segments (not preallocation).
    pub wal_bytes: u64,
    /// First LSN the log holds (0 if empty).
    pub first_lsn: u64,
    /// Last LSN committed (0 if empty).
    pub last_lsn: u64,
    /// Appends acknowledged since open.
    pub appends_since_open: u64,
    /// Commit groups written since open.
    pub groups_since_open: u64,
    /// fsync and fdatasync calls on segments since open.
    pub fsyncs_since_open: u64,
    /// LSN the newest snapshot covers (0: no snapshot).
    pub snapshot_lsn: u64,
    /// Size of the newest snapshot file.
    pub snapshot_bytes: u64,
    /// Snapshot generations on disk (at most 2).
    pub snapshot_generations: u64,
}

impl Db {
    /// Opens (creating if needed, mode 0700) the database at `dir`, takes
    /// its lock and recovers the log.
    ///
    /// Fails with [`Error::Locked`] if another handle holds it,
    /// [`Error::Corrupt`] if the log is damaged anywhere but a torn tail,
    /// and [`Error::UnsupportedVersion`] for files of another format.
    pub fn open(dir: impl AsRef<Path>, options: Options) -> Result<Db> {
        Db::open_with_views(dir, options, Vec::new())
    }

    /// [`Db::open`] with views: each is recovered from the newest good
    /// snapshot plus the log after it, then kept up to date with every
    /// commit. View names must be unique.
    ///
    /// The built-in views (the registry) are registered too, unless a view
    /// of the same name is given.
    pub fn open_with_views(
        dir: impl AsRef<Path>,
        options: Options,
        mut views: Vec<Box<dyn View>>,
    ) -> Result<Db> {
        options.validate()?;
        if !views
            .iter()
            .any(|v| v.name() == crate::registry::REGISTRY_VIEW)
        {
            views.insert(0, Box::new(crate::registry::RegistryView::default()));
        }
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
        let fs = options.storage.clone();
        layout::create_dir(fs.as_ref(), &dir)?;
        let lock = DirLock::acquire(&dir)?;
        let started = std::time::Instant::now();
        let mut opened = recovery::open_log(
            &fs,
            &layout::wal_dir(&dir),
            options.record_bytes_max,
            options.segment_bytes_max,
        )?;
        let recorded_views = known_views::read(fs.as_ref(), &dir)?;
        known_views::record(fs.as_ref(), &dir, &views, &recorded_views)?;
        let recovered = recover::recover_views(
            fs.as_ref(),
            &dir,
            &mut opened.index,
            opened.next_lsn - 1,
            options.record_bytes_max,
            views,
            &mut opened.report,
        )?;
        opened.report.duration = started.elapsed();
        // Views the database's programs use that this handle lacks: it must
        // not snapshot (and so compact) for them.
        let mut foreign_views = recovered.foreign.clone();
        for (name, _) in &recorded_views {
            if !recovered.set.views.iter().any(|v| v.name() == name)
                && !foreign_views.contains(name)
            {
                foreign_views.push(name.clone());
            }
        }

        if let Some(t) = &opened.report.torn_tail {
            tracing::warn!(segment = %t.segment.display(), offset = t.offset, "recovered after cutting a torn tail");
        }
        let tail_map_len = opened
            .index
            .segments()
            .last()
            .map_or(0, |(_, s)| s.map.len() as u64);
        let inner = Arc::new(Inner {
            committed_lsn: AtomicU64::new(opened.next_lsn - 1),
            views: RwLock::new(recovered.set),
            usable_generations: Mutex::new(recovered.usable_lsn.into_iter().collect()),
            snapshot_lock: Mutex::new(()),
            foreign_views,
            since_snapshot_records: AtomicU64::new(recovered.replayed_events),
            since_snapshot_bytes: AtomicU64::new(0),
            snapshot_claimed: std::sync::atomic::AtomicBool::new(false),
            index: RwLock::new(opened.index),
            commit: Arc::new(Mutex::new(CommitState {
                tail: opened.tail,
                next_lsn: opened.next_lsn,
                tail_map_len,
            })),
            queue: Mutex::new(Queue::default()),
            health: Arc::new(Health::new(options.subscriber_buffer_batches)),
            report: opened.report,
            flusher: Mutex::new(None),
            lock,
            dir,
            options,
        });
        if let Durability::Buffered { interval } = inner.options.durability {
            let f = flusher::Flusher::start(inner.commit.clone(), inner.health.clone(), interval)
                .map_err(|e| Error::io("start flusher thread", &inner.dir, e))?;
            if let Ok(mut slot) = inner.flusher.lock() {
                *slot = Some(f);
            }
        }
        Ok(Db { inner })
    }

    /// The database directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
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
        self.inner.check_poison()?;
        validate_stream_name(stream)?;
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
        self.submit(Pending {
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
    /// `decide` runs on the committing thread while other writers wait:
    /// keep it to a check against the views.
    pub fn execute(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        decide: impl FnOnce(&ViewSet) -> Result<Vec<Vec<u8>>> + Send + 'static,
    ) -> Result<Option<Appended>> {
        validate_stream_name(stream)?;
        self.execute_internal(stream, expected, decide)
    }

    /// [`Db::execute`] on any stream, internal ones (`$...`) included.
    pub(crate) fn execute_internal(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        decide: impl FnOnce(&ViewSet) -> Result<Vec<Vec<u8>>> + Send + 'static,
    ) -> Result<Option<Appended>> {
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

    /// Queues a batch or command and waits for its group to commit; leads
    /// the group if no one else is.
    fn submit(&self, pending: Pending) -> Result<Appended> {
        reentry::check("append")?;
        let slot = pending.slot.clone();
        let lead = {
            let mut queue = self
                .inner
                .queue
                .lock()
                .map_err(|_| self.inner.poisoned_error())?;
            queue.pending.push(pending);
            !std::mem::replace(&mut queue.leader_active, true)
        };
        if !lead {
            match slot.wait() {
                Some(Wakeup::Done(result)) => {
                    self.inner.maybe_snapshot();
                    return result;
                }
                Some(Wakeup::Lead) => {}
                None => return Err(self.inner.poisoned_error()),
            }
        }
        self.inner.lead();
        let result = slot
            .take()
            .unwrap_or_else(|| Err(self.inner.poisoned_error()));
        self.inner.maybe_snapshot();
        result
    }

    /// [`Db::append`] for async callers: runs on tokio's blocking pool.
    pub async fn append_async(
        &self,
        stream: String,
        expected: ExpectedVersion,
        events: Vec<Vec<u8>>,
    ) -> Result<Appended> {
        let db = self.clone();
        tokio::task::spawn_blocking(move || db.append(&stream, expected, &events))
            .await
            .map_err(|e| Error::InvalidArgument {
                op: "append_async",
                reason: format!("append task failed: {e}"),
            })?
    }

    /// The stream's version: the number of events in it (0 if none).
    pub fn stream_version(&self, stream: &str) -> Result<u64> {
        reentry::check("stream_version")?;
        let index = self
            .inner
            .index
            .read()
            .map_err(|_| self.inner.poisoned_error())?;
        Ok(index.stream_version(stream))
    }

    /// LSN of the last committed event (0 for an empty log).
    pub fn last_lsn(&self) -> u64 {
        self.inner.committed_lsn.load(Ordering::Acquire)
    }

    /// Up to `limit` events of the global log from `from_lsn` on.
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
    pub fn read_stream(&self, stream: &str, from_version: u64, limit: usize) -> Result<Vec<Event>> {
        reentry::check("read_stream")?;
        self.inner.check_poison()?;
        validate_stream_name(stream)?;
        read::read_stream(&self.inner, stream, from_version, limit)
    }

    /// Up to `limit` events of `stream` whose LSN is at least `from_lsn`.
    pub fn read_stream_from_lsn(
        &self,
        stream: &str,
        from_lsn: u64,
        limit: usize,
    ) -> Result<Vec<Event>> {
        validate_stream_name(stream)?;
        self.read_stream_internal_from_lsn(stream, from_lsn, limit)
    }

    /// [`Db::read_stream_from_lsn`] on any stream, internal ones included.
    pub(crate) fn read_stream_internal_from_lsn(
        &self,
        stream: &str,
        from_lsn: u64,
        limit: usize,
    ) -> Result<Vec<Event>> {
        reentry::check("read_stream")?;
        self.inner.check_poison()?;
        let from_version = {
            let index = self
                .inner
                .index
                .read()
                .map_err(|_| self.inner.poisoned_error())?;
            read::check_not_compacted(&index, from_lsn)?;
            index.stream_version_at_lsn(stream, from_lsn)
        };
        let mut out = Vec::new();
        let mut version = from_version;
        while out.len() < limit {
            let page = read::read_stream(&self.inner, stream, version, limit)?;
            let Some(last) = page.last() else { break };
            version = last.version + 1;
            out.extend(page.into_iter().filter(|e| e.lsn >= from_lsn));
        }
        out.truncate(limit);
        Ok(out)
    }

    /// Calls `visit` with every committed event from `from_lsn` on, borrowed
    /// from the mapped log: no allocation per event. Returns the number of
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
        reentry::check("replay_until")?;
        self.inner.check_poison()?;
        read::replay(&self.inner, from_lsn, visit)
    }

    /// A subscription to every committed event from `from_lsn` on: first
    /// what is on disk, then live, with no gap and no duplicate.
    pub fn subscribe(&self, from_lsn: u64) -> Result<Subscription> {
        reentry::check("subscribe")?;
        self.inner.check_poison()?;
        Ok(Subscription::new(
            self.clone(),
            self.inner.health.live.subscribe(),
            from_lsn.max(1),
        ))
    }

    /// Reads the registered view of type `V` through `read`, consistently:
    /// the views reflect whole batches only, up to the returned LSN.
    /// `None` if no view of that type is registered.
    ///
    /// `read` must not call back into the database (append, execute or
    /// view): that would wait for itself, and returns an error instead.
    pub fn view<V: View, R>(&self, read: impl FnOnce(&V) -> R) -> Result<Option<AtLsn<R>>> {
        reentry::check("view")?;
        let views = self
            .inner
            .views
            .read()
            .map_err(|_| self.inner.poisoned_error())?;
        // Checked with the lock held: a group that failed its fsync after
        // applying a command's events poisons before it lets readers in.
        self.inner.check_poison()?;
        let _inside = reentry::Inside::enter();
        Ok(views.get::<V>().map(|v| AtLsn {
            value: read(v),
            lsn: views.applied_lsn,
        }))
    }

    /// Takes a snapshot now (if anything was committed since the last),
    /// keeps the newest two generations, and deletes the WAL segments the
    /// older one covers. Writers wait only while the views are copied.
    pub fn snapshot(&self) -> Result<SnapshotOutcome> {
        reentry::check("snapshot")?;
        self.inner
            .take_snapshot(true)?
            .ok_or_else(|| Error::InvalidArgument {
                op: "snapshot",
                reason: "another snapshot is running".into(),
            })
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
        let (tail, lsn) = {
            let state = self
                .inner
                .commit
                .lock()
                .map_err(|_| self.inner.poisoned_error())?;
            (
                state.tail.sync_handle(),
                self.inner.committed_lsn.load(Ordering::Acquire),
            )
        };
        if let Err(e) = tail.sync() {
            self.inner.poison(e.to_string());
            return Err(e);
        }
        self.inner
            .health
            .counters
            .fsyncs
            .fetch_add(1, Ordering::Relaxed);
        Ok(lsn)
    }

    /// The snapshot generations on disk, newest first.
    pub fn snapshots(&self) -> Result<Vec<SnapshotFile>> {
        self.inner.snapshot_files()
    }

    /// Writes a consistent copy of the database to `dest` (which must not
    /// exist or be empty) while writers go on: the newest snapshot and the
    /// log. Returns the last LSN the copy is certain to hold; it opens as
    /// a database of its own.
    pub fn backup(&self, dest: impl AsRef<Path>) -> Result<u64> {
        reentry::check("backup")?;
        self.inner.backup(dest.as_ref())
    }

    /// Counts describing the database.
    pub fn stats(&self) -> Result<Stats> {
        reentry::check("stats")?;
        let snapshots = self.inner.snapshot_files()?;
        let index = self
            .inner
            .index
            .read()
            .map_err(|_| self.inner.poisoned_error())?;
        let c = &self.inner.health.counters;
        Ok(Stats {
            records: index.records,
            events: index.events,
            streams: index.stream_count() as u64,
            segments: index.segments().count() as u64,
            wal_bytes: index.segments().map(|(_, s)| s.end).sum(),
            first_lsn: if index.last_lsn == 0 {
                0
            } else {
                index.first_lsn().unwrap_or(0)
            },
            last_lsn: index.last_lsn,
            appends_since_open: c.appends.load(Ordering::Relaxed),
            groups_since_open: c.groups.load(Ordering::Relaxed),
            fsyncs_since_open: c.fsyncs.load(Ordering::Relaxed),
            snapshot_lsn: snapshots.first().map_or(0, |s| s.covered_lsn),
            snapshot_bytes: snapshots.first().map_or(0, |s| s.bytes),
            snapshot_generations: snapshots.len() as u64,
        })
    }
}

impl Inner {
    /// The file system under the database.
    pub(crate) fn fs(&self) -> &dyn crate::storage::Storage {
        self.options.storage.as_ref()
    }

    /// Commits one group as leader, then hands leadership on.
    ///
    /// Whatever happens inside (even a panic, say in a tracing layer),
    /// every slot of the group is completed and leadership is handed on,
    /// so no appender waits forever.
    fn lead(&self) {
        // The queue lock guards only pushes and takes, which cannot panic
        // half-way; a poisoned queue lock is still consistent.
        let group = std::mem::take(
            &mut self
                .queue
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pending,
        );
        let slots: Vec<Arc<Slot>> = group.iter().map(|p| p.slot.clone()).collect();
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| match self.commit.lock() {
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
        let mut q = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        match q.pending.first() {
            Some(next) => next.slot.hand_leadership(),
            None => q.leader_active = false,
        }
    }

    pub(crate) fn check_poison(&self) -> Result<()> {
        self.health.check()
    }

    /// Takes a snapshot on this (appending) thread if one is due and no
    /// one else is taking it, as SQLite's auto-checkpoint does: the
    /// append is already durable, only its return waits.
    fn maybe_snapshot(&self) {
        let o = &self.options;
        let due = (o.snapshot_every_records > 0
            && self.since_snapshot_records.load(Ordering::Relaxed) >= o.snapshot_every_records)
            || (o.snapshot_every_bytes > 0
                && self.since_snapshot_bytes.load(Ordering::Relaxed) >= o.snapshot_every_bytes);
        // A handle lacking views the database's programs register never
        // snapshots on its own (Db::snapshot says why, when asked).
        if !due
            || !self.foreign_views.is_empty()
            || self.snapshot_claimed.swap(true, Ordering::AcqRel)
        {
            return;
        }
        match self.take_snapshot(false) {
            Ok(_) => {}
            Err(e) => {
                tracing::error!(error = %e, "automatic snapshot failed; the log keeps growing until one succeeds")
            }
        }
        self.snapshot_claimed.store(false, Ordering::Release);
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
        // Stop the flusher, then make buffered appends durable on a clean
        // close. (In Immediate mode everything is synced already.)
        if let Some(f) = self.flusher.lock().ok().and_then(|mut f| f.take()) {
            f.stop();
        }
        if matches!(self.options.durability, Durability::Buffered { .. })
            && !self.health.is_poisoned()
            && let Ok(state) = self.commit.lock()
            && let Err(e) = state.tail.sync()
        {
            tracing::error!(error = %e, "final fdatasync on close failed");
        }
        tracing::debug!(lock = %self.lock.path().display(), "database closed");
    }
}
