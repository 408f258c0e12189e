//! Taking snapshots, compacting the log behind them, and online backup.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{PoisonError, TryLockError};

use crate::engine::Inner;
use crate::error::{Error, Result};
use crate::layout;
use crate::options::Durability;
use crate::snapshot;
use crate::storage::{OpenMode, Storage};

/// What [`Db::snapshot`](crate::Db::snapshot) did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotOutcome {
    /// The snapshot file (new, or the existing one at the same LSN).
    pub path: PathBuf,
    /// The LSN it covers.
    pub covered_lsn: u64,
    /// Whether a new file was written (false: nothing committed since).
    pub written: bool,
    /// Older snapshot generations deleted.
    pub deleted_snapshots: Vec<PathBuf>,
    /// WAL segments deleted because the previous generation covers them.
    pub deleted_segments: Vec<PathBuf>,
}

/// One snapshot generation on disk, from [`Db::snapshots`](crate::Db::snapshots).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SnapshotFile {
    /// The file.
    pub path: PathBuf,
    /// The LSN it covers.
    pub covered_lsn: u64,
    /// Its size.
    pub bytes: u64,
}

fn copy_prefix(fs: &dyn Storage, from: &Path, to: &Path, len: u64) -> Result<()> {
    let src = layout::open(fs, from, OpenMode::Read, "open for backup")?;
    layout::copy_range(fs, src.as_ref(), from, 0, len, to, "copy for backup")
}

fn file_len(fs: &dyn Storage, path: &Path, op: &'static str) -> Result<u64> {
    fs.file_len(path)
        .map_err(|e| Error::io(op, path, e))?
        .ok_or_else(|| Error::io(op, path, std::io::ErrorKind::NotFound.into()))
}

impl Inner {
    /// Takes a snapshot of the views and stream versions at the current
    /// committed LSN, keeps it and the newest older generation that holds
    /// every registered view, and deletes the WAL segments that older
    /// generation covers. With `wait` false, returns `Ok(None)` at once if
    /// another snapshot, compaction or backup is running.
    pub(crate) fn take_snapshot(&self, wait: bool) -> Result<Option<SnapshotOutcome>> {
        let _one_at_a_time = if wait {
            self.snapshot_lock
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
        } else {
            match self.snapshot_lock.try_lock() {
                Ok(g) => g,
                Err(TryLockError::Poisoned(p)) => p.into_inner(),
                Err(TryLockError::WouldBlock) => return Ok(None),
            }
        };
        self.check_poison()?;
        if !self.foreign_views.is_empty() {
            return Err(Error::InvalidArgument {
                op: "snapshot",
                reason: format!(
                    "this database's programs register views this handle does not ({}); a snapshot without them would compact away the history they need. Take snapshots from the program that registers them",
                    self.foreign_views.join(", ")
                ),
            });
        }
        // A consistent cut: with the commit lock held no group is in
        // flight, so views, stream versions and the LSN agree. Writers wait
        // only for these copies. A panic in a view's clone is caught here,
        // inside the lock, so that it poisons nothing.
        let (views, streams, covered_lsn, tail, counted) = {
            let state = self.commit.lock().map_err(|_| self.poisoned_error())?;
            let views = self.views.read().map_err(|_| self.poisoned_error())?;
            let index = self.index.read().map_err(|_| self.poisoned_error())?;
            // A group whose write failed may have applied its commands to
            // the views before poisoning the handle: those views hold
            // events the log does not. Check under the lock, not before it.
            self.check_poison()?;
            let committed = self.committed_lsn.load(Ordering::Acquire);
            if views.applied_lsn != committed {
                return Err(Error::InvalidArgument {
                    op: "snapshot",
                    reason: format!(
                        "the views reflect LSN {} but the log is committed to LSN {committed}; no snapshot taken",
                        views.applied_lsn
                    ),
                });
            }
            let clones = catch_unwind(AssertUnwindSafe(|| {
                views
                    .views
                    .iter()
                    .map(|v| v.clone_view())
                    .collect::<Vec<_>>()
            }))
            .map_err(|_| Error::InvalidArgument {
                op: "snapshot",
                reason: "a view's clone_view panicked; no snapshot taken".into(),
            })?;
            (
                clones,
                index.stream_versions(),
                self.committed_lsn.load(Ordering::Acquire),
                state.tail.sync_handle(),
                (
                    self.since_snapshot_records.load(Ordering::Relaxed),
                    self.since_snapshot_bytes.load(Ordering::Relaxed),
                ),
            )
        };
        // A snapshot must never cover events the log could still lose.
        if matches!(self.options.durability, Durability::Buffered { .. }) {
            tail.sync().inspect_err(|e| self.poison(e.to_string()))?;
        }
        let mut usable = self
            .usable_generations
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let existing = snapshot::list(self.fs(), &self.dir)?;
        let mut outcome = SnapshotOutcome {
            covered_lsn,
            ..SnapshotOutcome::default()
        };
        match existing.first() {
            // Reuse only a file known to hold every registered view.
            Some((lsn, path)) if *lsn == covered_lsn && usable.contains(lsn) => {
                outcome.path = path.clone()
            }
            _ => {
                outcome.path = catch_unwind(AssertUnwindSafe(|| {
                    snapshot::write(self.fs(), &self.dir, covered_lsn, &views, &streams)
                }))
                .map_err(|_| Error::InvalidArgument {
                    op: "snapshot",
                    reason: "a view's save panicked; no snapshot taken".into(),
                })??;
                outcome.written = true;
            }
        }
        usable.insert(covered_lsn);
        self.since_snapshot_records
            .fetch_sub(counted.0, Ordering::Relaxed);
        self.since_snapshot_bytes
            .fetch_sub(counted.1, Ordering::Relaxed);

        // Generations: this one, and the newest older one known usable.
        // Without such a one, nothing older is deleted and nothing compacted.
        let all = snapshot::list(self.fs(), &self.dir)?;
        let older_usable = all
            .iter()
            .map(|(lsn, _)| *lsn)
            .find(|lsn| *lsn < covered_lsn && usable.contains(lsn));
        if let Some(keep) = older_usable {
            crate::failpoint::hit("snapshot.before_delete_old");
            for (lsn, old) in &all {
                if *lsn != covered_lsn && *lsn != keep {
                    self.fs()
                        .remove_file(old)
                        .map_err(|e| Error::io("delete old snapshot", old, e))?;
                    usable.remove(lsn);
                    outcome.deleted_snapshots.push(old.clone());
                }
            }
            if !outcome.deleted_snapshots.is_empty() {
                layout::sync_dir(self.fs(), &layout::snapshot_dir(&self.dir))?;
            }
            // Compaction: what the older kept generation covers can go, so
            // a damaged newest snapshot still has its predecessor plus the
            // log. Oldest first, each unlink made durable before the next,
            // so a crash leaves a shorter log, never one with a gap.
            let doomed = self
                .index
                .write()
                .map_err(|_| self.poisoned_error())?
                .compact_through(keep);
            let wal = layout::wal_dir(&self.dir);
            crate::failpoint::hit("compaction.before_delete");
            for (i, path) in doomed.iter().enumerate() {
                self.fs()
                    .remove_file(path)
                    .map_err(|e| Error::io("delete compacted segment", path, e))?;
                if i == 0 {
                    crate::failpoint::hit("compaction.after_first_delete");
                }
                layout::sync_dir(self.fs(), &wal)?;
            }
            outcome.deleted_segments = doomed;
        }
        Ok(Some(outcome))
    }

    /// Copies a consistent database to `dest`: the newest snapshot and the
    /// log's committed bytes. Writers go on; compaction waits.
    pub(crate) fn backup(&self, dest: &Path) -> Result<u64> {
        let _no_compaction = self
            .snapshot_lock
            .lock()
            .map_err(|_| self.poisoned_error())?;
        self.check_poison()?;
        let fs = self.fs();
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
        // Everything acknowledged before this point is below these ends:
        // the LSN is read first, and a group reaches the index before its
        // LSN is published, so the ends read next cover it.
        let covered = self.committed_lsn.load(Ordering::Acquire);
        let segments: Vec<(PathBuf, u64)> = {
            let index = self.index.read().map_err(|_| self.poisoned_error())?;
            index
                .segments()
                .map(|(_, s)| (s.path.to_path_buf(), s.end))
                .collect()
        };
        if let Some((_, newest)) = snapshot::list(self.fs(), &self.dir)?.first() {
            let dir = layout::snapshot_dir(dest);
            layout::create_dir(fs, &dir)?;
            let len = file_len(fs, newest, "stat snapshot")?;
            let name = newest.file_name().unwrap_or_default();
            copy_prefix(fs, newest, &dir.join(name), len)?;
            layout::sync_dir(fs, &dir)?;
        }
        let wal = layout::wal_dir(dest);
        layout::create_dir(fs, &wal)?;
        for (path, end) in &segments {
            let name = path.file_name().unwrap_or_default();
            copy_prefix(fs, path, &wal.join(name), *end)?;
        }
        layout::sync_dir(fs, &wal)?;
        // The views the database's programs register travel with it, so
        // that the copy keeps refusing snapshots that would drop them.
        let views = self.dir.join(layout::VIEWS_FILE);
        if let Ok(Some(len)) = fs.file_len(&views) {
            copy_prefix(fs, &views, &dest.join(layout::VIEWS_FILE), len)?;
        }
        layout::sync_dir(fs, dest)?;
        Ok(covered)
    }

    /// The snapshot generations on disk, newest first.
    pub(crate) fn snapshot_files(&self) -> Result<Vec<SnapshotFile>> {
        snapshot::list(self.fs(), &self.dir)?
            .into_iter()
            .map(|(covered_lsn, path)| {
                let bytes = file_len(self.fs(), &path, "stat snapshot")?;
                Ok(SnapshotFile {
                    path,
                    covered_lsn,
                    bytes,
                })
            })
            .collect()
    }
}
