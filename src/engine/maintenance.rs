//! Offline checks and repair, run under the database lock.

use std::path::{Path, PathBuf};

use crate::engine::lock::DirLock;
use crate::error::{Error, Result};
use crate::layout;
use crate::options::Options;
use crate::snapshot;
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
    /// First LSN the log holds (above 1 once compacted).
    pub first_lsn: u64,
    /// Snapshot generations checked (page checksums, meta, and coverage
    /// against the log), newest first, with the LSN each covers.
    pub snapshots: Vec<(PathBuf, u64)>,
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

/// Checks every record's CRC, the LSN sequence and stream versions of the
/// database at `dir`, changing nothing. Takes the lock, so it fails with
/// [`Error::Locked`] while the database is open elsewhere. The first
/// problem is returned as [`Error::Corrupt`] naming segment and offset.
pub fn verify(dir: impl AsRef<Path>, options: &Options) -> Result<VerifyReport> {
    let dir = dir.as_ref();
    let wal = existing_wal_dir(options, dir)?;
    let _lock = DirLock::acquire(dir)?;
    let fs = options.storage.as_ref();
    let scanned = scan_log(fs, &wal, options.record_bytes_max)?;
    let first_lsn = scanned.index.first_lsn().unwrap_or(1);
    let last_lsn = scanned.next_lsn - 1;
    let mut snapshots = Vec::new();
    for (named_lsn, path) in snapshot::list(fs, dir)? {
        let contents = snapshot::check_copy(fs, &path)?;
        snapshot::check_joins_log(&contents, named_lsn, first_lsn, last_lsn)?;
        snapshots.push((path, contents.covered_lsn));
    }
    if first_lsn > 1 && snapshots.is_empty() {
        return Err(Error::NoUsableSnapshot {
            log_first_lsn: first_lsn,
            details: "the log is compacted but no snapshot is present".into(),
        });
    }
    Ok(VerifyReport {
        first_lsn,
        snapshots,
        segments: scanned.report.segments,
        records: scanned.report.records,
        events: scanned.report.events,
        last_lsn,
        torn_tail: scanned.report.torn_tail,
    })
}

/// A repair worked out and ready to apply, holding the database lock.
#[derive(Debug)]
pub struct Repair {
    _lock: DirLock,
    storage: std::sync::Arc<dyn crate::storage::Storage>,
    wal_dir: PathBuf,
    plan: RepairPlan,
}

impl Repair {
    /// Works out what repairing `dir` would cut, changing nothing yet.
    pub fn plan(dir: impl AsRef<Path>, options: &Options) -> Result<Repair> {
        let dir = dir.as_ref();
        let wal_dir = existing_wal_dir(options, dir)?;
        let lock = DirLock::acquire(dir)?;
        let plan = plan_repair(options.storage.as_ref(), &wal_dir, options.record_bytes_max)?;
        Ok(Repair {
            _lock: lock,
            storage: options.storage.clone(),
            wal_dir,
            plan,
        })
    }

    /// The problem found and the steps planned.
    pub fn steps(&self) -> &RepairPlan {
        &self.plan
    }

    /// Carries the plan out: cut bytes go to `.cut` files, fsynced, before
    /// anything is truncated or renamed.
    pub fn apply(self) -> Result<RepairPlan> {
        apply_repair(self.storage.as_ref(), &self.wal_dir, &self.plan)?;
        Ok(self.plan)
    }
}
