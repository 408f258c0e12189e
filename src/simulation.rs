//! Deterministic simulation of power loss, against a model.
//!
//! [`run`] drives a database on a [`SimDisk`] through random appends
//! (batches, some with a wrong expected version), checkpoints (each one a
//! durable commit of the store and a truncation of the log), clean
//! reopens, and power cuts that fall between any two I/O calls, the
//! store's included. After every restart it checks the database against a
//! model of what was acknowledged:
//!
//! - every acknowledged event is present, in order, once;
//! - the one batch in flight at the cut (not acknowledged) is wholly
//!   present or wholly absent, and only at the end of the log;
//! - the whole history reads back from LSN 1, whatever was truncated;
//! - each stream's version, and a view's state, equal the model's fold of
//!   the log;
//! - `verify` finds nothing wrong;
//! - a subscriber, resumed after each restart from the last LSN it saw,
//!   never sees a gap, a duplicate, an LSN going back, or an event that
//!   differs from the log.
//!
//! Every choice (operation, payload, when the power goes, what survives)
//! comes from one [`Choices`] source: a seed ([`Seeded`]) for tests, a
//! fuzzer's bytes ([`FromBytes`]) for `fuzz/`. The same source replays the
//! same run.
//!
//! Compiled with the `simulation` feature; the test build turns it on.

use std::any::Any;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use crate::storage::{CrashOutcome, SimDisk, SimRng};
use crate::{
    Db, Durability, Error, Event, EventRef, ExpectedVersion, Options, Result, Subscription, View,
    ViewTables, ViewTablesRead,
};

/// Where a run's choices come from.
pub trait Choices {
    /// A number in `0..n`, or `None` when the source is used up (the run
    /// then ends, checked, as if its steps were done).
    fn choose(&mut self, n: u64) -> Option<u64>;
}

/// Choices from a seed.
#[derive(Debug, Clone)]
pub struct Seeded(SimRng);

impl Seeded {
    /// The choices of seed `seed`.
    pub fn new(seed: u64) -> Seeded {
        Seeded(SimRng::new(seed))
    }
}

impl Choices for Seeded {
    fn choose(&mut self, n: u64) -> Option<u64> {
        Some(self.0.below(n))
    }
}

/// Choices read from bytes (a fuzzer's input): one byte per choice below
/// 256, eight above.
#[derive(Debug, Clone)]
pub struct FromBytes<'a> {
    bytes: &'a [u8],
}

impl<'a> FromBytes<'a> {
    /// Choices taken from the front of `bytes`.
    pub fn new(bytes: &'a [u8]) -> FromBytes<'a> {
        FromBytes { bytes }
    }
}

impl Choices for FromBytes<'_> {
    fn choose(&mut self, n: u64) -> Option<u64> {
        let width = if n <= 256 { 1 } else { 8 };
        let (head, rest) = self.bytes.split_at_checked(width)?;
        self.bytes = rest;
        let mut v = [0u8; 8];
        v.get_mut(..width)?.copy_from_slice(head);
        Some(if n == 0 { 0 } else { u64::from_le_bytes(v) % n })
    }
}

/// How long a run is.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Operations per run.
    pub steps: u64,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig { steps: 200 }
    }
}

/// What a run did (all checks passed).
#[derive(Debug, Clone, Default)]
pub struct SimReport {
    /// Operations run.
    pub steps: u64,
    /// Events acknowledged.
    pub events_acked: u64,
    /// Batches in flight at a power cut that survived it.
    pub in_doubt_kept: u64,
    /// Batches in flight at a power cut that did not.
    pub in_doubt_lost: u64,
    /// Power cuts.
    pub power_cuts: u64,
    /// Clean reopens.
    pub reopens: u64,
    /// Checkpoints taken on request.
    pub checkpoints: u64,
    /// Events a subscriber saw.
    pub events_seen: u64,
    /// Times the subscriber fell behind compaction and was told so.
    pub subscriber_compacted: u64,
    /// Opens cut short by another power cut during recovery.
    pub cuts_during_recovery: u64,
    /// Acknowledged events a `Buffered` run lost at power cuts (never
    /// synced, as that mode allows).
    pub buffered_lost: u64,
    /// Times a `Buffered` subscriber had seen events a cut took back.
    pub subscriber_rewound: u64,
    /// Events whose LSN, stream and data were compared with the model
    /// (log reads after every open, and subscriber deliveries).
    pub events_checked: u64,
    /// Torn tails recovery cut after a power cut.
    pub torn_tails_cut: u64,
    /// Of those, unsynced runs that reached the disk out of order (valid
    /// records after a hole).
    pub out_of_order_runs_cut: u64,
    /// Pending writes and entry changes at the cuts, and their fates.
    pub crash: CrashOutcome,
}

impl SimReport {
    /// Adds `other`'s counts to these (totals over many runs).
    pub fn add(&mut self, other: &SimReport) {
        // Destructured, so that a new field cannot be forgotten here.
        let SimReport {
            steps,
            events_acked,
            in_doubt_kept,
            in_doubt_lost,
            power_cuts,
            reopens,
            checkpoints,
            events_seen,
            subscriber_compacted,
            cuts_during_recovery,
            buffered_lost,
            subscriber_rewound,
            events_checked,
            torn_tails_cut,
            out_of_order_runs_cut,
            crash,
        } = other;
        self.steps += steps;
        self.events_acked += events_acked;
        self.in_doubt_kept += in_doubt_kept;
        self.in_doubt_lost += in_doubt_lost;
        self.power_cuts += power_cuts;
        self.reopens += reopens;
        self.checkpoints += checkpoints;
        self.events_seen += events_seen;
        self.subscriber_compacted += subscriber_compacted;
        self.cuts_during_recovery += cuts_during_recovery;
        self.buffered_lost += buffered_lost;
        self.subscriber_rewound += subscriber_rewound;
        self.events_checked += events_checked;
        self.torn_tails_cut += torn_tails_cut;
        self.out_of_order_runs_cut += out_of_order_runs_cut;
        self.crash.add(crash);
    }
}

/// A failed check: the step, what was wrong, and the operations leading
/// to it.
#[derive(Debug, Clone)]
pub struct SimFailure {
    /// The step at which the check failed.
    pub step: u64,
    /// What was wrong.
    pub message: String,
    /// The operations run, in order.
    pub trace: Vec<String>,
}

impl std::fmt::Display for SimFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "step {}: {}", self.step, self.message)?;
        let skip = self.trace.len().saturating_sub(40);
        if skip > 0 {
            writeln!(f, "  ... {skip} earlier operations")?;
        }
        for line in self.trace.iter().skip(skip) {
            writeln!(f, "  {line}")?;
        }
        Ok(())
    }
}

/// The view the simulation checks: per stream, the event count and a
/// running hash of its payloads in order, in memory and in its table
/// `tally` (stream name to count u64 LE and hash u32 LE).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally(pub BTreeMap<String, (u64, u32)>);

impl Tally {
    fn add(&mut self, stream: &str, data: &[u8]) -> (u64, u32) {
        let e = self.0.entry(stream.to_string()).or_default();
        e.0 += 1;
        let mut h = crc32fast::Hasher::new_with_initial(e.1);
        h.update(data);
        e.1 = h.finalize();
        *e
    }
}

impl View for Tally {
    fn name(&self) -> &str {
        "sim_tally"
    }
    fn schema_version(&self) -> u32 {
        1
    }
    fn apply(&mut self, e: &EventRef<'_>, tables: &mut ViewTables<'_>) -> Result<()> {
        let (count, hash) = self.add(e.stream, e.data);
        let mut v = count.to_le_bytes().to_vec();
        v.extend_from_slice(&hash.to_le_bytes());
        tables.put("tally", e.stream.as_bytes(), &v)
    }
    fn reset(&mut self) {
        self.0.clear();
    }
    fn load(&mut self, input: &ViewTablesRead<'_>) -> Result<()> {
        self.0.clear();
        input.for_each("tally", |key, value| {
            let bad = || input.bad_value("tally", key);
            let (count, hash) = value.split_at_checked(8).ok_or_else(bad)?;
            let count = u64::from_le_bytes(count.try_into().map_err(|_| bad())?);
            let hash = u32::from_le_bytes(hash.try_into().map_err(|_| bad())?);
            self.0
                .insert(String::from_utf8_lossy(key).into_owned(), (count, hash));
            Ok(())
        })
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

type Batch = (String, Vec<Vec<u8>>);

/// The model: what was acknowledged, in LSN order.
#[derive(Debug, Default)]
struct Model {
    /// Event `lsn` is `events[lsn - 1]`: (stream, data).
    events: Vec<(String, Vec<u8>)>,
    /// The LSN of each batch's last event.
    batch_ends: std::collections::BTreeSet<u64>,
    versions: BTreeMap<String, u64>,
    tally: Tally,
    /// Events known durable: all acknowledged ones in `Immediate` mode; in
    /// `Buffered`, those before the last checkpoint, clean close or restart.
    durable: u64,
}

impl Model {
    fn push(&mut self, (stream, events): &Batch) {
        for data in events {
            self.events.push((stream.clone(), data.clone()));
            *self.versions.entry(stream.clone()).or_default() += 1;
            self.tally.add(stream, data);
        }
        self.batch_ends.insert(self.events.len() as u64);
    }

    /// Forgets every event after `last` (what `Buffered` mode may lose).
    fn truncate(&mut self, last: u64) {
        let kept: Vec<_> = self.events.drain(..).take(last as usize).collect();
        self.versions.clear();
        self.tally = Tally::default();
        for (stream, data) in &kept {
            *self.versions.entry(stream.clone()).or_default() += 1;
            self.tally.add(stream, data);
        }
        self.events = kept;
        self.batch_ends.retain(|&end| end <= last);
    }

    fn version(&self, stream: &str) -> u64 {
        self.versions.get(stream).copied().unwrap_or(0)
    }
}

const STREAMS: [&str; 3] = ["a", "b", "c"];

struct Run<'c> {
    choices: &'c mut dyn Choices,
    disk: SimDisk,
    dir: std::path::PathBuf,
    options: Options,
    db: Option<Db>,
    sub: Option<Subscription>,
    /// LSN of the last event the subscriber saw.
    seen_lsn: u64,
    model: Model,
    next_event: u64,
    step: u64,
    trace: Vec<String>,
    report: SimReport,
    exhausted: bool,
    fallback: SimRng,
}

/// Why a run stopped early: a check failed.
enum Stop {
    Failed(String),
}

/// Runs one simulation in the (empty) directory `root`.
pub fn run(
    root: &Path,
    choices: &mut dyn Choices,
    config: &SimConfig,
) -> std::result::Result<SimReport, SimFailure> {
    let fail = |message: String| SimFailure {
        step: 0,
        message,
        trace: Vec::new(),
    };
    let disk = SimDisk::new(root).map_err(|e| fail(format!("simulated disk: {e}")))?;
    let mut run = Run {
        dir: disk.root().join("db"),
        options: Options::default(),
        disk,
        choices,
        db: None,
        sub: None,
        seen_lsn: 0,
        model: Model::default(),
        next_event: 0,
        step: 0,
        trace: Vec::new(),
        report: SimReport::default(),
        exhausted: false,
        fallback: SimRng::new(0),
    };
    let outcome = run.drive(config);
    // Close before the disk's directory goes away.
    run.sub = None;
    run.db = None;
    match outcome {
        Ok(()) => Ok(run.report),
        Err(Stop::Failed(message)) => Err(SimFailure {
            step: run.step,
            message,
            trace: run.trace,
        }),
    }
}

/// Runs the simulation of `seed` in the (empty) directory `root`.
pub fn run_seed(
    root: &Path,
    seed: u64,
    config: &SimConfig,
) -> std::result::Result<SimReport, SimFailure> {
    run(root, &mut Seeded::new(seed), config)
}

impl Run<'_> {
    /// The next choice. Once the source runs out, the run finishes its
    /// current step from a fixed generator and ends, checked.
    fn pick(&mut self, n: u64) -> u64 {
        match self.choices.choose(n) {
            Some(v) => v,
            None => {
                self.exhausted = true;
                self.fallback.below(n)
            }
        }
    }

    fn drive(&mut self, config: &SimConfig) -> std::result::Result<(), Stop> {
        self.options = Options {
            // Buffered with a flusher that never fires: only rolls,
            // snapshots and closes sync, and the run stays deterministic.
            durability: if self.pick(4) == 0 {
                Durability::Buffered {
                    interval: std::time::Duration::from_secs(24 * 3600),
                }
            } else {
                Durability::Immediate
            },
            segment_bytes_max: Some(crate::SEGMENT_BYTES_MIN),
            checkpoint_every_records: match self.pick(3) {
                0 => 0,
                1 => 7,
                _ => 25,
            },
            checkpoint_every_bytes: 0,
            checkpoint_every: None,
            // Every I/O call in one order, so a seed replays exactly.
            synchronous_apply: true,
            storage: Arc::new(self.disk.handle()),
            ..Options::default()
        };
        self.open("open")?;
        while self.step < config.steps && !self.exhausted {
            self.step += 1;
            self.report.steps = self.step;
            let op = self.pick(100);
            match op {
                0..58 => self.append()?,
                58..66 => self.checkpoint()?,
                66..72 => {
                    self.trace.push("reopen".into());
                    self.drain()?;
                    // Sync first: a drop cannot say whether its sync worked.
                    if self.sync()? {
                        self.close();
                        self.report.reopens += 1;
                        if self.disk.is_off() {
                            self.restart(None)?;
                        } else {
                            self.open("reopen")?;
                        }
                    }
                }
                72..76 => {
                    self.trace.push("sync".into());
                    self.sync()?;
                }
                76..84 => {
                    let ops = 1 + self.pick(40);
                    self.trace
                        .push(format!("power cut armed: after {ops} I/O calls"));
                    self.disk.power_cut_after(ops);
                }
                84..88 => {
                    self.trace.push("power cut now".into());
                    self.disk.power_cut();
                }
                _ => self.drain()?,
            }
            if self.disk.is_off() {
                self.restart(None)?;
            } else {
                self.credit_checkpoints()?;
            }
        }
        // End on a disk with the power on and no cut armed (a restart may
        // arm one during its recovery).
        loop {
            self.disk.disarm();
            if !self.disk.is_off() {
                break;
            }
            self.restart(None)?;
        }
        // Read back what the last open has not seen: sync, close, open.
        self.drain()?;
        if self.sync()? {
            self.close();
            self.open("final reopen")?;
            self.drain()?;
        }
        self.close();
        self.verify()
    }

    fn db(&self) -> std::result::Result<&Db, Stop> {
        self.db
            .as_ref()
            .ok_or_else(|| Stop::Failed("no open database".into()))
    }

    /// The database with the simulation's view, on this boot's handle.
    fn open_db(&self) -> Result<Db> {
        Db::open_with_views(
            &self.dir,
            self.options.clone(),
            vec![Box::new(Tally::default())],
        )
    }

    fn open(&mut self, why: &str) -> std::result::Result<(), Stop> {
        match self.open_db() {
            Ok(db) if self.disk.is_off() => {
                self.db = Some(db);
                self.trace
                    .push(format!("  {why} finished, but the power went during it"));
                self.restart(None)
            }
            Ok(db) => {
                self.db = Some(db);
                self.check_log()?;
                self.resubscribe()
            }
            Err(e) if self.disk.is_off() => {
                self.trace
                    .push(format!("  {why} failed at the power cut: {e}"));
                self.restart(None)
            }
            Err(e) => Err(Stop::Failed(format!("{why}: {e}"))),
        }
    }

    fn close(&mut self) {
        self.sub = None;
        self.db = None;
    }

    fn append(&mut self) -> std::result::Result<(), Stop> {
        let i = self.pick(STREAMS.len() as u64) as usize;
        let stream = STREAMS.get(i).copied().unwrap_or("a").to_string();
        let count = 1 + self.pick(4);
        let mut events = Vec::new();
        for _ in 0..count {
            self.next_event += 1;
            let pad = self.pick(300) as usize;
            let mut data = format!("event {} ", self.next_event).into_bytes();
            data.resize(data.len() + pad, b'.');
            events.push(data);
        }
        let version = self.model.version(&stream);
        let (expected, wrong) = match self.pick(10) {
            0 => (ExpectedVersion::Exact(version + 1), true),
            1 => (ExpectedVersion::Exact(version), false),
            _ => (ExpectedVersion::Any, false),
        };
        self.trace.push(format!(
            "append {count} events to {stream:?} ({expected:?}), first {}",
            self.next_event + 1 - count
        ));
        let result = self.db()?.append(&stream, expected, &events);
        let batch = (stream, events);
        match result {
            Ok(a) => {
                if wrong {
                    return Err(Stop::Failed(format!(
                        "append with a wrong expected version was accepted: {a:?}"
                    )));
                }
                let want = self.model.events.len() as u64 + 1;
                let want_version = self.model.version(&batch.0) + count;
                if (a.first_lsn, a.last_lsn, a.version) != (want, want + count - 1, want_version) {
                    return Err(Stop::Failed(format!(
                        "append acknowledged as {a:?}; the model says LSNs {want}..={} at version {want_version}",
                        want + count - 1
                    )));
                }
                self.model.push(&batch);
                if self.options.durability == Durability::Immediate {
                    self.model.durable = self.model.events.len() as u64;
                }
                self.report.events_acked += count;
                Ok(())
            }
            Err(Error::WrongExpectedVersion { .. }) if wrong => Ok(()),
            Err(e) if self.disk.is_off() => {
                self.trace.push(format!("  failed at the power cut: {e}"));
                self.restart(Some((batch, wrong)))
            }
            Err(e) => Err(Stop::Failed(format!("append failed: {e}"))),
        }
    }

    /// A checkpoint (automatic ones too) syncs the log up to what it
    /// covers first, so that much is durable in `Buffered` mode as well.
    fn credit_checkpoints(&mut self) -> std::result::Result<(), Stop> {
        let Some(db) = self.db.as_ref() else {
            return Ok(());
        };
        let covered = db
            .stats()
            .map_err(|e| Stop::Failed(format!("stats: {e}")))?
            .checkpoint_lsn;
        self.model.durable = self.model.durable.max(covered);
        Ok(())
    }

    /// `Db::sync`: everything acknowledged is durable once it returns.
    /// Returns false if the power went instead (the restart is done).
    fn sync(&mut self) -> std::result::Result<bool, Stop> {
        match self.db()?.sync() {
            Ok(lsn) => {
                let acked = self.model.events.len() as u64;
                if lsn != acked {
                    return Err(Stop::Failed(format!(
                        "sync says LSN {lsn} is durable, but LSN {acked} was the last acknowledged"
                    )));
                }
                self.model.durable = acked;
                Ok(true)
            }
            Err(e) if self.disk.is_off() => {
                self.trace.push(format!("  failed at the power cut: {e}"));
                self.restart(None)?;
                Ok(false)
            }
            Err(e) => Err(Stop::Failed(format!("sync failed: {e}"))),
        }
    }

    fn checkpoint(&mut self) -> std::result::Result<(), Stop> {
        self.trace.push("checkpoint".into());
        self.drain()?;
        match self.db()?.checkpoint() {
            Ok(_) => {
                self.report.checkpoints += 1;
                // A checkpoint syncs the log first.
                self.model.durable = self.model.events.len() as u64;
                Ok(())
            }
            Err(e) if self.disk.is_off() => {
                self.trace.push(format!("  failed at the power cut: {e}"));
                self.restart(None)
            }
            Err(e) => Err(Stop::Failed(format!("checkpoint failed: {e}"))),
        }
    }

    /// The power is off (or goes off now): close, restart the disk with a
    /// chosen outcome, verify, reopen (sometimes with the power going
    /// again during recovery, and again, until an open completes), check.
    /// `in_doubt` is the batch in flight at the cut, and whether its
    /// expected version was wrong (then it must not survive).
    fn restart(&mut self, in_doubt: Option<(Batch, bool)>) -> std::result::Result<(), Stop> {
        // What the subscriber saw before the cut must survive it.
        self.drain_what_is_left()?;
        self.disk.power_cut();
        self.close();
        loop {
            let seed = self.pick(u64::MAX);
            let outcome = self
                .disk
                .restart(seed)
                .map_err(|e| Stop::Failed(format!("restart the simulated disk: {e}")))?;
            self.trace.push(format!("restart: {outcome:?}"));
            // A handle for this boot: anything left from before is dead.
            self.options.storage = Arc::new(self.disk.handle());
            self.report.power_cuts += 1;
            self.report.crash.add(&outcome);
            self.verify()?;
            if self.pick(4) == 0 {
                let ops = 1 + self.pick(30);
                self.trace.push(format!(
                    "power cut armed during recovery: after {ops} I/O calls"
                ));
                self.disk.power_cut_after(ops);
            }
            match self.open_db() {
                // Open may succeed past a failed best-effort step (say,
                // preallocation) at which the power went: a cut all the same.
                Ok(_) if self.disk.is_off() => {
                    self.trace
                        .push("  open finished, but the power went during it".into());
                    self.report.cuts_during_recovery += 1;
                }
                Ok(db) => {
                    if let Some(t) = &db.recovery_report().torn_tail {
                        self.report.torn_tails_cut += 1;
                        if t.unsynced_records_after > 0 {
                            self.report.out_of_order_runs_cut += 1;
                        }
                    }
                    self.db = Some(db);
                    break;
                }
                Err(e) if self.disk.is_off() => {
                    self.trace
                        .push(format!("  open failed at the power cut: {e}"));
                    self.report.cuts_during_recovery += 1;
                }
                Err(e) => return Err(Stop::Failed(format!("open after the power cut: {e}"))),
            }
        }
        let last = self.db()?.last_lsn();
        let acked = self.model.events.len() as u64;
        if last < acked {
            // Only what was never synced may go (nothing, in Immediate
            // mode), and only whole batches.
            if last < self.model.durable {
                return Err(Stop::Failed(format!(
                    "the log ends at LSN {last}, but LSN {} was acknowledged and durable",
                    self.model.durable
                )));
            }
            if last > 0 && !self.model.batch_ends.contains(&last) {
                return Err(Stop::Failed(format!(
                    "the log ends at LSN {last}, inside an acknowledged batch"
                )));
            }
            self.trace.push(format!(
                "  lost LSNs {}..={acked}, acknowledged but never synced (Buffered)",
                last + 1
            ));
            self.report.buffered_lost += acked - last;
            self.model.truncate(last);
        }
        // The batch in flight: all of it or none of it, at the end.
        if let Some((batch, wrong)) = in_doubt {
            let acked = self.model.events.len() as u64;
            let n = batch.1.len() as u64;
            if last == acked + n {
                if wrong {
                    return Err(Stop::Failed(
                        "an append with a wrong expected version survived the power cut".into(),
                    ));
                }
                self.trace.push("  the batch in flight survived".into());
                self.model.push(&batch);
                self.report.in_doubt_kept += 1;
            } else {
                self.report.in_doubt_lost += 1;
            }
        }
        let last = self.db()?.last_lsn();
        self.model.durable = last;
        if self.seen_lsn > last {
            if self.options.durability == Durability::Immediate {
                return Err(Stop::Failed(format!(
                    "the subscriber saw LSN {} before the power cut, but the log now ends at LSN {last}",
                    self.seen_lsn
                )));
            }
            // Buffered: subscribers see acknowledged events, which a power
            // cut may take back; the subscriber is told by starting over.
            self.trace.push(format!(
                "  subscriber saw up to LSN {}, lost with the cut; resumes after {last}",
                self.seen_lsn
            ));
            self.seen_lsn = last;
            self.report.subscriber_rewound += 1;
        }
        self.check_log()?;
        self.resubscribe()
    }

    /// Drains the subscriber as far as it goes with the power off: what
    /// it hands out from memory it must have been allowed to.
    fn drain_what_is_left(&mut self) -> std::result::Result<(), Stop> {
        self.drain_with(true)
    }

    /// `verify` on the closed database (before reopening it, so that it
    /// sees what the crash left, torn tail and all).
    fn verify(&mut self) -> std::result::Result<(), Stop> {
        if !self.dir.exists() {
            return if self.model.events.is_empty() {
                Ok(())
            } else {
                Err(Stop::Failed(
                    "the database directory is gone but events were acknowledged".into(),
                ))
            };
        }
        match crate::verify(&self.dir, &self.options) {
            Ok(report) if report.last_lsn < self.model.durable => Err(Stop::Failed(format!(
                "verify finds the log ending at LSN {}, but LSN {} was acknowledged and durable",
                report.last_lsn, self.model.durable
            ))),
            Ok(_) => Ok(()),
            // A wal directory whose creation was lost with everything in it.
            Err(Error::Io { source, .. })
                if self.model.events.is_empty()
                    && source.kind() == std::io::ErrorKind::NotFound =>
            {
                Ok(())
            }
            Err(e) => Err(Stop::Failed(format!("verify: {e}"))),
        }
    }

    /// The open database against the model.
    fn check_log(&mut self) -> std::result::Result<(), Stop> {
        let db = self.db()?;
        let acked = self.model.events.len() as u64;
        let last = db.last_lsn();
        if last != acked {
            return Err(Stop::Failed(format!(
                "the log ends at LSN {last}, but LSN {acked} is the last acknowledged"
            )));
        }
        // The history is whole from LSN 1, however much of the log was
        // truncated; the log was truncated only behind a checkpoint.
        let first = 1;
        let stats = db
            .stats()
            .map_err(|e| Stop::Failed(format!("stats: {e}")))?;
        if stats.log_first_lsn > stats.checkpoint_lsn + 1 {
            return Err(Stop::Failed(format!(
                "the log starts at LSN {}, but the store's checkpoint covers only up to LSN {}",
                stats.log_first_lsn, stats.checkpoint_lsn
            )));
        }
        let events = db
            .read(first, usize::MAX)
            .map_err(|e| Stop::Failed(format!("read from LSN {first}: {e}")))?;
        let mut lsn = first;
        for e in &events {
            self.check_event(e, lsn)?;
            lsn += 1;
        }
        let checked = events.len() as u64;
        if lsn != last + 1 {
            return Err(Stop::Failed(format!(
                "reading from LSN {first} gave events up to LSN {}, not {last}",
                lsn - 1
            )));
        }
        for stream in STREAMS {
            let v = db
                .stream_version(stream)
                .map_err(|e| Stop::Failed(format!("stream version: {e}")))?;
            if v != self.model.version(stream) {
                return Err(Stop::Failed(format!(
                    "stream {stream:?} is at version {v}, the model at {}",
                    self.model.version(stream)
                )));
            }
        }
        let tally = db
            .view(|t: &Tally| t.clone())
            .map_err(|e| Stop::Failed(format!("view: {e}")))?
            .ok_or_else(|| Stop::Failed("the tally view is not registered".into()))?;
        if tally.value != self.model.tally || tally.lsn != last {
            return Err(Stop::Failed(format!(
                "the view at LSN {} is {:?}; the model's fold at LSN {last} is {:?}",
                tally.lsn, tally.value, self.model.tally
            )));
        }
        self.report.events_checked += checked;
        Ok(())
    }

    fn check_event(&self, e: &Event, lsn: u64) -> std::result::Result<(), Stop> {
        let want = usize::try_from(lsn - 1)
            .ok()
            .and_then(|i| self.model.events.get(i));
        match want {
            Some((stream, data)) if e.lsn == lsn && &e.stream == stream && &e.data == data => {
                Ok(())
            }
            _ => Err(Stop::Failed(format!(
                "expected LSN {lsn} = {:?}, got LSN {} in {:?}: {:?}",
                want.map(|(s, d)| (s, String::from_utf8_lossy(d))),
                e.lsn,
                e.stream,
                String::from_utf8_lossy(&e.data)
            ))),
        }
    }

    /// A subscriber resumes from the LSN after the last one it saw.
    fn resubscribe(&mut self) -> std::result::Result<(), Stop> {
        match self.db()?.subscribe(self.seen_lsn + 1) {
            Ok(sub) => {
                self.sub = Some(sub);
                Ok(())
            }
            Err(Error::Compacted {
                oldest_available, ..
            }) => self.skip_compacted(oldest_available),
            Err(e) => Err(Stop::Failed(format!(
                "subscribe from LSN {}: {e}",
                self.seen_lsn + 1
            ))),
        }
    }

    /// The subscriber fell behind compaction and was told so (an explicit
    /// error, as etcd's watch reports a compacted revision, never a silent
    /// gap): it starts again from the oldest event still held.
    fn skip_compacted(&mut self, oldest_available: u64) -> std::result::Result<(), Stop> {
        if oldest_available <= self.seen_lsn + 1 {
            return Err(Stop::Failed(format!(
                "subscriber told LSN {} was compacted, but LSN {oldest_available} is held",
                self.seen_lsn + 1
            )));
        }
        self.trace.push(format!(
            "  subscriber fell behind compaction; resumes at LSN {oldest_available}"
        ));
        self.report.subscriber_compacted += 1;
        self.seen_lsn = oldest_available - 1;
        self.resubscribe()
    }

    /// Takes what the subscriber has: each event must be the next LSN and
    /// equal the log's.
    fn drain(&mut self) -> std::result::Result<(), Stop> {
        self.drain_with(false)
    }

    /// Drains the subscriber. With `power_off`, the subscription failing
    /// (it cannot read a dead disk, or the handle is poisoned) ends the
    /// drain quietly; what it does hand out is checked all the same.
    fn drain_with(&mut self, power_off: bool) -> std::result::Result<(), Stop> {
        let Some(mut sub) = self.sub.take() else {
            return Ok(());
        };
        while let Some(next) = sub.try_next() {
            let e = match next {
                Ok(e) => e,
                Err(Error::Compacted {
                    oldest_available, ..
                }) if !power_off => return self.skip_compacted(oldest_available),
                Err(e) if power_off => {
                    self.trace.push(format!("  subscriber stopped: {e}"));
                    return Ok(());
                }
                Err(e) => return Err(Stop::Failed(format!("subscriber: {e}"))),
            };
            let want = self.seen_lsn + 1;
            if e.lsn != want {
                return Err(Stop::Failed(format!(
                    "subscriber saw LSN {} after LSN {} (a gap, a duplicate, or going back)",
                    e.lsn, self.seen_lsn
                )));
            }
            self.check_event(&e, want)?;
            self.seen_lsn = want;
            self.report.events_seen += 1;
            self.report.events_checked += 1;
        }
        self.sub = Some(sub);
        Ok(())
    }
}
