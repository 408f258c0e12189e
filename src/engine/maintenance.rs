//! Offline checks and repair, run under the database lock, and online
//! backup.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::PoisonError;
use std::sync::atomic::Ordering;

use redb::{ReadableDatabase, ReadableTable, TableDefinition, TableHandle};

use crate::engine::Inner;
use crate::engine::lock::DirLock;
use crate::error::{Error, Result};
use crate::layout;
use crate::options::Options;
use crate::storage::{OpenMode, OverlayBackend};
use crate::store::{self, codec};
use crate::wal::recovery::{TornTail, scan_log};
use crate::wal::repair::{RepairPlan, apply_repair, plan_repair};

/// What a clean [`verify`] saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    /// Segment files checked.
    pub segments: u64,
    /// Records checked.
    pub records: u64,
    /// Events in them.
    pub events: u64,
    /// Last LSN.
    pub last_lsn: u64,
    /// A torn tail (an unacknowledged, interrupted write) that the next
    /// open will cut. Not corruption.
    pub torn_tail: Option<TornTail>,
    /// First LSN the log holds (above 1 once truncated behind a
    /// checkpoint).
    pub first_lsn: u64,
    /// The store checked (every page's checksum, its meta, and every
    /// record the log holds against it), and the LSN it reflects; `None`
    /// for a database written by release 0.1 that no open has migrated.
    pub store: Option<(PathBuf, u64)>,
    /// History rows checked against the log.
    pub history_rows_checked: u64,
}

/// The log [`verify`] checks.
enum Checked {
    Wal(PathBuf, Box<crate::wal::recovery::ScannedLog>),
    #[cfg(feature = "jetstream")]
    Stream(Box<crate::log::JetStreamLog>),
}

impl Checked {
    /// What a problem found in it names.
    fn name(&self) -> PathBuf {
        match self {
            Checked::Wal(wal, _) => wal.clone(),
            #[cfg(feature = "jetstream")]
            Checked::Stream(log) => PathBuf::from(format!("{log:?}")),
        }
    }
}

fn existing_wal_dir(options: &Options, dir: &Path) -> Result<PathBuf> {
    let wal = layout::wal_dir(dir);
    if !options.storage.is_dir(&wal) {
        return Err(Error::io(
            "open WAL directory",
            &wal,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no replaydb database here"),
        ));
    }
    Ok(wal)
}

/// Checks the database at `dir`, changing nothing: every record's CRC and
/// the LSN sequence of the log; the store's pages (redb's integrity check,
/// against an overlay so the file is never touched), its meta and its
/// reach into the log; and every record the log holds against the store:
/// a record the store has applied must be in its history exactly (unless
/// retention removed it), and a record after it must continue its
/// stream's version. Takes the lock, so it fails with [`Error::Locked`]
/// while the database is open elsewhere. The first problem is returned as
/// [`Error::Corrupt`] or [`Error::Store`], naming where.
pub fn verify(dir: impl AsRef<Path>, options: &Options) -> Result<VerifyReport> {
    let dir = dir.as_ref();
    let fs = options.storage.as_ref();
    // Refused before the lock is taken (which would create the directory).
    let wal = match &options.log {
        crate::options::LogKind::JetStream { .. } => {
            if !options.storage.is_dir(dir) {
                return Err(Error::io(
                    "open database directory",
                    dir,
                    std::io::Error::new(std::io::ErrorKind::NotFound, "no replaydb database here"),
                ));
            }
            None
        }
        _ => Some(existing_wal_dir(options, dir)?),
    };
    let _lock = DirLock::acquire(dir)?;
    let (log, mut report) = match (&options.log, wal) {
        #[cfg(feature = "jetstream")]
        (
            crate::options::LogKind::JetStream {
                servers, stream, ..
            },
            _,
        ) => {
            // The store is here; the log is the stream, read (and each
            // record checked) from the cluster; one that is not there is
            // not created.
            let log =
                crate::log::JetStreamLog::open_existing(servers, stream, options.record_bytes_max)?;
            let stats = crate::log::Log::stats(&log);
            let report = VerifyReport {
                first_lsn: stats.first_lsn,
                store: None,
                history_rows_checked: 0,
                segments: 0,
                records: stats.records,
                events: stats.events,
                last_lsn: stats.last_lsn,
                torn_tail: None,
            };
            (Checked::Stream(Box::new(log)), report)
        }
        (_, wal) => {
            let wal = wal.unwrap_or_else(|| layout::wal_dir(dir));
            let scanned = scan_log(fs, &wal, options.record_bytes_max)?;
            let report = VerifyReport {
                first_lsn: scanned.index.first_lsn().unwrap_or(1),
                store: None,
                history_rows_checked: 0,
                segments: scanned.report.segments,
                records: scanned.report.records,
                events: scanned.report.events,
                last_lsn: scanned.next_lsn - 1,
                torn_tail: scanned.report.torn_tail.clone(),
            };
            (Checked::Wal(wal, Box::new(scanned)), report)
        }
    };
    let (first_lsn, last_lsn) = (report.first_lsn, report.last_lsn);
    let wal = log.name();
    let path = layout::store_path(dir);
    if fs
        .file_len(&path)
        .map_err(|e| Error::io("stat store", &path, e))?
        .is_none()
    {
        if !crate::snapshot::list(fs, dir)?.is_empty() {
            // Release 0.1's layout: the next open migrates it.
            return Ok(report);
        }
        if first_lsn > 1 {
            return Err(Error::StoreUnusable {
                path,
                reason: "there is no store".into(),
                log_first_lsn: first_lsn,
            });
        }
        return Ok(report);
    }
    let file = layout::open(fs, &path, OpenMode::Read, "open store")?;
    let overlay = OverlayBackend::new(file).map_err(|e| Error::io("open store", &path, e))?;
    let mut db = crate::snapshot::guarded("open store", &path, || {
        redb::Database::builder()
            .set_cache_size(options.store_cache_bytes)
            .create_with_backend(overlay)
            .map_err(|e| store::redb_err("open store", &path, e))
    })?;
    let whole = crate::snapshot::guarded("check store", &path, || {
        db.check_integrity()
            .map_err(|e| store::redb_err("check store", &path, e))
    })?;
    if !whole {
        return Err(store::damaged(
            &path,
            "redb's integrity check found damage".into(),
        ));
    }
    let meta = store::read_meta(&db, &path)?;
    if meta.applied_lsn > last_lsn || meta.applied_lsn + 1 < first_lsn {
        return Err(store::damaged(
            &path,
            format!(
                "the store reflects LSN {} but the log holds LSNs {first_lsn}..={last_lsn}",
                meta.applied_lsn
            ),
        ));
    }
    let tx = db
        .begin_read()
        .map_err(|e| store::redb_err("read store", &path, e))?;
    let history = tx
        .open_table(store::HISTORY)
        .map_err(|e| store::redb_err("read store", &path, e))?;
    let streams = tx
        .open_table(store::STREAMS)
        .map_err(|e| store::redb_err("read store", &path, e))?;
    let meta_of = |stream: &str| -> Result<Option<codec::StreamMeta>> {
        let Some(v) = streams
            .get(store::meta_key(stream))
            .map_err(|e| store::redb_err("read store", &path, e))?
        else {
            return Ok(None);
        };
        codec::decode_stream_meta(stream, v.value())
            .map(Some)
            .map_err(|why| store::damaged(&path, format!("stream {stream:?} meta: {why}")))
    };
    // Versions of the streams written after the store's LSN, as the log
    // continues them (bounded by the log's length).
    let mut after: HashMap<String, u64> = HashMap::new();
    let mut checked = 0u64;
    let mut problem: Option<Error> = None;
    let mut visit = |r: &crate::wal::format::RecordView<'_>| -> Result<bool> {
        let stream_meta = meta_of(r.stream)?;
        if r.last_lsn() <= meta.applied_lsn {
            let Some(m) = stream_meta else {
                problem = Some(store::damaged(
                    &path,
                    format!(
                        "the log has stream {:?} at LSN {} but the store does not",
                        r.stream, r.first_lsn
                    ),
                ));
                return Ok(false);
            };
            let held = !m.retention.is_state_only() && r.first_version >= m.first_held_version;
            if held {
                let row_bytes = history
                    .get(r.first_lsn)
                    .map_err(|e| store::redb_err("read store", &path, e))?;
                let same = row_bytes.as_ref().is_some_and(|v| {
                    codec::decode_history_row(r.first_lsn, v.value()).is_ok_and(|row| {
                        row.stream == r.stream
                            && row.first_version == r.first_version
                            && row.count == r.count
                            && row.events().eq(r.events())
                    })
                });
                if !same {
                    problem = Some(store::damaged(
                        &path,
                        format!(
                            "the history row at LSN {} differs from the log's record ({:?} version {})",
                            r.first_lsn, r.stream, r.first_version
                        ),
                    ));
                    return Ok(false);
                }
                checked += 1;
            }
            return Ok(true);
        }
        let version = match after.get(r.stream) {
            Some(v) => *v,
            None => stream_meta.map_or(0, |m| m.version),
        };
        if r.first_version != version + 1 {
            problem = Some(Error::corrupt(
                &wal,
                r.first_lsn,
                format!(
                    "the record at LSN {} starts stream {:?} at version {} but its next version is {}",
                    r.first_lsn,
                    r.stream,
                    r.first_version,
                    version + 1
                ),
            ));
            return Ok(false);
        }
        after.insert(r.stream.to_string(), version + u64::from(r.count));
        Ok(true)
    };
    match &log {
        Checked::Wal(_, scanned) => {
            for slice in scanned.index.slices_from(first_lsn) {
                let go_on =
                    crate::wal::log::for_each_record(&slice, options.record_bytes_max, &mut visit)?;
                if !go_on {
                    break;
                }
            }
        }
        #[cfg(feature = "jetstream")]
        Checked::Stream(log) => crate::log::Log::read(log.as_ref(), first_lsn, &mut visit)?,
    }
    if let Some(p) = problem {
        return Err(p);
    }
    report.store = Some((path.clone(), meta.applied_lsn));
    report.history_rows_checked = checked;
    Ok(report)
}

/// A repair worked out and ready to apply, holding the database lock.
#[derive(Debug)]
pub struct Repair {
    _lock: DirLock,
    storage: std::sync::Arc<dyn crate::storage::Storage>,
    dir: PathBuf,
    wal_dir: PathBuf,
    record_bytes_max: u64,
    plan: RepairPlan,
}

impl Repair {
    /// Works out what repairing `dir` would cut, changing nothing yet.
    pub fn plan(dir: impl AsRef<Path>, options: &Options) -> Result<Repair> {
        let dir = dir.as_ref();
        if matches!(options.log, crate::options::LogKind::JetStream { .. }) {
            return Err(Error::Unsupported {
                op: "repair",
                reason: "the log lives on the JetStream cluster, whose servers keep and repair \
                         their own files; `verify` names a damaged message by its sequence"
                    .into(),
            });
        }
        let wal_dir = existing_wal_dir(options, dir)?;
        let lock = DirLock::acquire(dir)?;
        let plan = plan_repair(options.storage.as_ref(), &wal_dir, options.record_bytes_max)?;
        Ok(Repair {
            _lock: lock,
            storage: options.storage.clone(),
            dir: dir.to_path_buf(),
            wal_dir,
            record_bytes_max: options.record_bytes_max,
            plan,
        })
    }

    /// The problem found and the steps planned.
    pub fn steps(&self) -> &RepairPlan {
        &self.plan
    }

    /// Carries the plan out: cut bytes go to `.cut` files, fsynced, before
    /// anything is truncated or renamed. A store that reflects events the
    /// cut removed then goes back to its previous checkpoint, if that one
    /// fits the log, or is set aside (never deleted) to be rebuilt from a
    /// log that starts at LSN 1; otherwise the store is left as it is and
    /// the error says why.
    pub fn apply(mut self) -> Result<RepairPlan> {
        let fs = self.storage.as_ref();
        apply_repair(fs, &self.wal_dir, &self.plan)?;
        if self.plan.problem.is_none()
            || fs
                .file_len(&layout::store_path(&self.dir))
                .ok()
                .flatten()
                .is_none()
        {
            return Ok(self.plan);
        }
        let scanned = scan_log(fs, &self.wal_dir, self.record_bytes_max)?;
        let first = scanned.index.first_lsn().unwrap_or(scanned.next_lsn);
        let (plan, report) = store::plan_store(
            &self.storage,
            &self.dir,
            first,
            scanned.next_lsn - 1,
            u64::MAX,
        )?;
        let what = match &plan {
            store::open::StorePlan::Use(_) => None,
            store::open::StorePlan::Fallback { meta, .. } => Some(format!(
                "the store reflected events the cut removed: restored its previous checkpoint (LSN {}), keeping a copy of it",
                meta.applied_lsn
            )),
            store::open::StorePlan::Rebuild => Some(
                "the store reflected events the cut removed: set it aside, to be rebuilt from the log at the next open"
                    .into(),
            ),
            _ => None,
        };
        if what.is_some() {
            store::open_store(&self.storage, &self.dir, plan, report, None, 8 << 20)?;
        }
        self.plan.store = what;
        Ok(self.plan)
    }
}

/// Copies a consistent database to `dest`: the store at one commit (table
/// by table, into a new file), then the log from before that commit to
/// now. Writers go on; checkpoints (which truncate the log) wait.
pub(crate) fn backup(inner: &Inner, dest: &Path) -> Result<u64> {
    if inner.options.log == crate::options::LogKind::Memory {
        return Err(Error::Unsupported {
            op: "backup",
            reason: "a database in memory has no files to copy".into(),
        });
    }
    // Before the lock: the applier must be free to apply what was
    // acknowledged (it never waits for the lock; a checkpoint meanwhile is
    // refused instead), and the applied LSN only grows.
    let acknowledged = inner.committed_lsn.load(Ordering::Acquire);
    inner.wait_applied(acknowledged)?;
    let _no_truncation = inner
        .maintenance
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    inner.check_poison()?;
    let fs = inner.fs();
    if fs.is_dir(dest)
        && !fs
            .list_dir(dest)
            .map_err(|e| Error::io("read backup destination", dest, e))?
            .is_empty()
    {
        return Err(Error::InvalidArgument {
            op: "backup",
            reason: format!("{} exists and is not empty", dest.display()),
        });
    }
    layout::create_dir(fs, dest)?;
    let r = inner.store.begin_read()?;
    let store_lsn = r.applied_lsn();
    store::open::create(fs, dest, r.history_from_lsn(), |copy| {
        copy_tables(&r, copy)?;
        Ok(store_lsn)
    })?;
    drop(r);
    // Everything acknowledged before the call is at or below the log's end
    // now, and the log still reaches back past the store's LSN: no
    // checkpoint could truncate it meanwhile.
    let covered = inner.log.backup(dest, acknowledged)?;
    layout::sync_dir(fs, dest)?;
    Ok(covered.max(acknowledged))
}

/// Copies every table of the store `r` reads into `copy` (meta included;
/// `create` then writes its own).
fn copy_tables(r: &store::StoreRead, copy: &store::Store) -> Result<()> {
    let op = "copy store for backup";
    let w = copy.begin_write()?;
    let names: Vec<String> =
        r.tx.list_tables()
            .map_err(|e| store::redb_err(op, &r.path, e))?
            .map(|h| h.name().to_string())
            .collect();
    for name in names {
        macro_rules! copy_table {
            ($k:ty, $v:ty) => {{
                let def: TableDefinition<$k, $v> = TableDefinition::new(&name);
                let src =
                    r.tx.open_table(def)
                        .map_err(|e| store::redb_err(op, &r.path, e))?;
                let mut dst =
                    w.tx.open_table(def)
                        .map_err(|e| store::redb_err(op, &copy.path, e))?;
                for entry in src.iter().map_err(|e| store::redb_err(op, &r.path, e))? {
                    let (k, v) = entry.map_err(|e| store::redb_err(op, &r.path, e))?;
                    dst.insert(k.value(), v.value())
                        .map_err(|e| store::redb_err(op, &copy.path, e))?;
                }
            }};
        }
        match name.as_str() {
            n if n == store::HISTORY.name() => copy_table!(u64, &[u8]),
            n if n == store::STREAMS.name() => copy_table!((&str, u64), &[u8]),
            n if n == store::AGED_STREAMS.name() => copy_table!(&str, u64),
            n if n == store::META.name() || n == store::VIEWS.name() => {
                copy_table!(&str, &[u8])
            }
            n if n.starts_with("view:") => copy_table!(&[u8], &[u8]),
            other => {
                return Err(store::damaged(
                    &r.path,
                    format!("unknown table {other:?} in the store"),
                ));
            }
        }
    }
    w.commit()
}
