//! Opening the store: create it, migrate into it, check it, and fall back
//! when it is damaged, never losing what the log acknowledged.
//!
//! Every check runs first against an overlay of the file (reads from the
//! file, writes kept in memory), so a damaged store is never "repaired"
//! in place before its evidence is kept:
//!
//! 1. the meta (magic, format version, and the applied LSN against the
//!    log's range) always; redb's integrity check when the file is at most
//!    `store_check_on_open_bytes_max`;
//! 2. if that fails: restore the previous checkpoint's savepoint, on the
//!    overlay, and check again; if it holds and the log still reaches back
//!    to it, keep a copy of the damaged file (`store.redb.damaged`) and
//!    restore it for real;
//! 3. otherwise, if the log still starts at LSN 1, set the damaged file
//!    aside and rebuild the store from the log;
//! 4. otherwise fail with [`Error::StoreUnusable`], having changed nothing.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{ReadableDatabase, ReadableTable};

use crate::error::{Error, Result};
use crate::layout;
use crate::log::Log;
use crate::storage::{OpenMode, OverlayBackend, Storage, StorageFile};
use crate::store::{
    META, META_APPLIED_LSN, META_FORMAT_VERSION, META_HISTORY_FROM_LSN, META_MAGIC,
    META_PREVIOUS_CHECKPOINT_LSN, STORE_FORMAT_VERSION, STORE_MAGIC, Store, damaged, migrate,
    read_u64, redb_err,
};

/// What opening the store found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreReport {
    /// The store file.
    pub path: PathBuf,
    /// It was created by this open.
    pub created: bool,
    /// It was created from a database of release 0.1.
    pub migrated: bool,
    /// The release-0.1 snapshot generation it was seeded from, and the LSN
    /// it covered (none when the log held the whole history).
    pub migrated_from: Option<(PathBuf, u64)>,
    /// Release-0.1 generations that did not check out, set aside as
    /// `.damaged`, with the reason.
    pub legacy_snapshots_damaged: Vec<(PathBuf, String)>,
    /// redb's integrity check ran over the whole file.
    pub integrity_checked: bool,
    /// What was wrong with it, if anything.
    pub damage: Option<String>,
    /// The previous checkpoint it fell back to (the LSN it covers).
    pub fell_back_to_lsn: Option<u64>,
    /// It was rebuilt from the log.
    pub rebuilt: bool,
    /// Where the damaged file was kept.
    pub damaged_kept_in: Option<PathBuf>,
}

/// The store, open, and where it stands.
#[derive(Debug)]
pub(crate) struct OpenedStore {
    pub store: Store,
    /// The LSN its durable state reflects: the log is replayed after it.
    pub applied_lsn: u64,
    pub report: StoreReport,
}

/// The meta of an opened store.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StoreMeta {
    pub applied_lsn: u64,
    pub history_from_lsn: u64,
    pub previous_checkpoint_lsn: u64,
}

/// Reads and checks the meta of `db`.
pub(crate) fn read_meta(db: &redb::Database, path: &Path) -> Result<StoreMeta> {
    crate::snapshot::guarded("read store meta", path, || {
        let tx = db
            .begin_read()
            .map_err(|e| redb_err("read store meta", path, e))?;
        let meta = tx
            .open_table(META)
            .map_err(|e| redb_err("read store meta", path, e))?;
        let magic = meta
            .get(META_MAGIC)
            .map_err(|e| redb_err("read store meta", path, e))?
            .map(|v| v.value().to_vec());
        if magic.as_deref() != Some(STORE_MAGIC) {
            return Err(damaged(path, "not a replaydb store (bad magic)".into()));
        }
        let version = meta
            .get(META_FORMAT_VERSION)
            .map_err(|e| redb_err("read store meta", path, e))?
            .and_then(|v| <[u8; 4]>::try_from(v.value()).ok())
            .map(u32::from_le_bytes)
            .ok_or_else(|| damaged(path, "format_version missing or not 4 bytes".into()))?;
        if version != STORE_FORMAT_VERSION {
            return Err(Error::UnsupportedVersion {
                path: path.to_path_buf(),
                found: version,
                supported: STORE_FORMAT_VERSION,
            });
        }
        let m = StoreMeta {
            applied_lsn: read_u64(&meta, META_APPLIED_LSN, path)?,
            history_from_lsn: read_u64(&meta, META_HISTORY_FROM_LSN, path)?,
            previous_checkpoint_lsn: read_u64(&meta, META_PREVIOUS_CHECKPOINT_LSN, path)?,
        };
        if m.history_from_lsn == 0
            || m.history_from_lsn > m.applied_lsn + 1
            || m.previous_checkpoint_lsn > m.applied_lsn
        {
            return Err(damaged(
                path,
                format!(
                    "inconsistent meta: applied LSN {}, history from {}, previous checkpoint {}",
                    m.applied_lsn, m.history_from_lsn, m.previous_checkpoint_lsn
                ),
            ));
        }
        Ok(m)
    })
}

/// Whether state derived up to `lsn` can join a log holding
/// `first..=last`: nothing past the log's end, and the log reaches back to
/// the LSN after it. Says why not, as "`what` ...". Shared by the store and
/// release 0.1's snapshots.
pub(crate) fn lsn_joins_log(
    what: &str,
    lsn: u64,
    log_first: u64,
    log_last: u64,
) -> std::result::Result<(), String> {
    if lsn > log_last {
        return Err(format!(
            "{what} LSN {lsn} but the log ends at LSN {log_last}"
        ));
    }
    if lsn + 1 < log_first {
        return Err(format!(
            "{what} LSN {lsn} but the log starts at LSN {log_first}"
        ));
    }
    Ok(())
}

fn joins_log(applied: u64, log_first: u64, log_last: u64) -> std::result::Result<(), String> {
    lsn_joins_log("the store reflects", applied, log_first, log_last)
}

/// A store the open must not use, and why.
enum Verdict {
    Good(StoreMeta),
    Damaged(String),
}

/// Checks the file against an overlay: meta, log range, and the whole file
/// when it is small enough. I/O errors and newer formats fail the open;
/// anything else is damage.
fn check(
    file: &Arc<dyn StorageFile>,
    path: &Path,
    log_first: u64,
    log_last: u64,
    whole: bool,
) -> Result<Verdict> {
    let overlay =
        OverlayBackend::new(file.clone()).map_err(|e| Error::io("open store", path, e))?;
    let opened = crate::snapshot::guarded("open store", path, || {
        redb::Database::builder()
            .set_cache_size(4 << 20)
            .create_with_backend(overlay)
            .map_err(|e| redb_err("open store", path, e))
    });
    let mut db = match opened {
        Ok(db) => db,
        Err(e @ Error::Io { .. }) => return Err(e),
        Err(e) => return Ok(Verdict::Damaged(e.to_string())),
    };
    if whole {
        let checked = crate::snapshot::guarded("check store", path, || {
            db.check_integrity()
                .map_err(|e| redb_err("check store", path, e))
        });
        match checked {
            Ok(true) => {}
            Ok(false) => {
                return Ok(Verdict::Damaged(
                    "redb's integrity check found damage".into(),
                ));
            }
            Err(e @ Error::Io { .. }) => return Err(e),
            Err(e) => return Ok(Verdict::Damaged(e.to_string())),
        }
    }
    let meta = match read_meta(&db, path) {
        Ok(m) => m,
        Err(e @ (Error::Io { .. } | Error::UnsupportedVersion { .. })) => return Err(e),
        Err(e) => return Ok(Verdict::Damaged(e.to_string())),
    };
    Ok(match joins_log(meta.applied_lsn, log_first, log_last) {
        Ok(()) => Verdict::Good(meta),
        Err(why) => Verdict::Damaged(why),
    })
}

/// The persistent savepoints of `db`, newest first.
fn savepoints(db: &redb::Database, path: &Path) -> Result<Vec<u64>> {
    let op = "list checkpoints";
    let tx = db.begin_write().map_err(|e| redb_err(op, path, e))?;
    let mut ids: Vec<u64> = tx
        .list_persistent_savepoints()
        .map_err(|e| redb_err(op, path, e))?
        .collect();
    tx.abort().map_err(|e| redb_err(op, path, e))?;
    ids.sort_unstable_by(|a, b| b.cmp(a));
    Ok(ids)
}

/// Tries, on an overlay and newest first, whether restoring a checkpoint's
/// savepoint gives a store that checks out and joins the log: the first
/// that does, its id and meta.
fn plan_fallback(
    file: &Arc<dyn StorageFile>,
    path: &Path,
    log_first: u64,
    log_last: u64,
) -> Option<(u64, StoreMeta)> {
    let open = || -> Option<redb::Database> {
        let overlay = OverlayBackend::new(file.clone()).ok()?;
        crate::snapshot::guarded("open store", path, || {
            redb::Database::builder()
                .set_cache_size(4 << 20)
                .create_with_backend(overlay)
                .map_err(|e| redb_err("open store", path, e))
        })
        .ok()
    };
    let ids = crate::snapshot::guarded("list checkpoints", path, || {
        open().map_or(Ok(Vec::new()), |db| savepoints(&db, path))
    })
    .ok()?;
    for id in ids {
        // A fresh overlay for each: a failed try leaves nothing behind.
        let Some(mut db) = open() else { continue };
        let tried = crate::snapshot::guarded("try a checkpoint", path, || {
            restore(&db, path, id)?;
            if !db
                .check_integrity()
                .map_err(|e| redb_err("check store", path, e))?
            {
                return Ok(None);
            }
            let meta = read_meta(&db, path)?;
            Ok(joins_log(meta.applied_lsn, log_first, log_last)
                .ok()
                .map(|()| meta))
        });
        if let Ok(Some(meta)) = tried {
            return Some((id, meta));
        }
    }
    None
}

/// Restores persistent savepoint `id`, deletes the savepoints newer than
/// it (the checkpoints that failed), records its LSN, and commits.
fn restore(db: &redb::Database, path: &Path, id: u64) -> Result<()> {
    let op = "restore a checkpoint";
    let mut tx = db.begin_write().map_err(|e| redb_err(op, path, e))?;
    let ids: Vec<u64> = tx
        .list_persistent_savepoints()
        .map_err(|e| redb_err(op, path, e))?
        .collect();
    let sp_err = |e: redb::SavepointError| damaged(path, format!("{op}: {e}"));
    let savepoint = tx.get_persistent_savepoint(id).map_err(sp_err)?;
    tx.restore_savepoint(&savepoint).map_err(sp_err)?;
    drop(savepoint);
    for newer in ids.into_iter().filter(|&n| n > id) {
        tx.delete_persistent_savepoint(newer).map_err(sp_err)?;
    }
    {
        let mut meta = tx.open_table(META).map_err(|e| redb_err(op, path, e))?;
        let lsn = read_u64(&meta, META_APPLIED_LSN, path)?;
        meta.insert(
            crate::store::savepoint_key(id).as_str(),
            &lsn.to_le_bytes()[..],
        )
        .map_err(|e| redb_err(op, path, e))?;
    }
    tx.set_quick_repair(true);
    tx.commit().map_err(|e| redb_err(op, path, e))
}

/// Creates an empty store at `path` reflecting `applied_lsn`, by way of a
/// temporary file, so a crash never leaves half a store under its name.
pub(crate) fn create(
    fs: &dyn Storage,
    dir: &Path,
    history_from_lsn: u64,
    fill: impl FnOnce(&Store) -> Result<u64>,
) -> Result<()> {
    let path = layout::store_path(dir);
    let tmp = PathBuf::from(format!("{}{}", path.display(), layout::STORE_TMP_SUFFIX));
    match fs.remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("remove unfinished store", &tmp, e)),
    }
    let file = layout::create_new(fs, &tmp, "create store")?;
    {
        let store = Store::on_file(file.clone(), &tmp, 8 << 20)?;
        let applied = fill(&store)?;
        init_meta(&store, history_from_lsn, applied)?;
    }
    file.sync_all()
        .map_err(|e| Error::io("fsync new store", &tmp, e))?;
    crate::failpoint::hit("store.before_rename");
    fs.rename(&tmp, &path)
        .map_err(|e| Error::io("rename store into place", &path, e))?;
    layout::sync_dir(fs, dir)
}

/// Writes the meta of a new store reflecting `applied`, durably.
pub(crate) fn init_meta(store: &Store, history_from_lsn: u64, applied: u64) -> Result<()> {
    let op = "create store";
    let path = store.path.clone();
    let mut w = store.begin_write()?;
    {
        let mut meta = w.tx.open_table(META).map_err(|e| redb_err(op, &path, e))?;
        let mut put = |k: &str, v: &[u8]| {
            meta.insert(k, v)
                .map(drop)
                .map_err(|e| redb_err(op, &path, e))
        };
        put(META_MAGIC, STORE_MAGIC)?;
        put(META_FORMAT_VERSION, &STORE_FORMAT_VERSION.to_le_bytes())?;
        put(META_HISTORY_FROM_LSN, &history_from_lsn.to_le_bytes())?;
        put(META_PREVIOUS_CHECKPOINT_LSN, &applied.to_le_bytes())?;
        // Set by a migration that filled the store; 0 for a new one.
        if meta
            .get(crate::store::META_STREAM_COUNT)
            .map_err(|e| redb_err(op, &path, e))?
            .is_none()
        {
            meta.insert(crate::store::META_STREAM_COUNT, &0u64.to_le_bytes()[..])
                .map_err(|e| redb_err(op, &path, e))?;
        }
    }
    // Every table exists from the start: readers never meet a missing one.
    let e = |e| redb_err(op, &path, e);
    w.tx.open_table(crate::store::HISTORY).map_err(e)?;
    w.tx.open_table(crate::store::STREAMS).map_err(e)?;
    w.tx.open_table(crate::store::AGED_STREAMS).map_err(e)?;
    w.tx.open_table(crate::store::VIEWS).map_err(e)?;
    w.set_applied_lsn(applied);
    w.commit_durably()?;
    // The first way back: a savepoint of the store as created.
    let op = "checkpoint new store";
    let tx = store.db.begin_write().map_err(|e| redb_err(op, &path, e))?;
    let sp = |e: redb::SavepointError| damaged(&path, format!("{op}: {e}"));
    let id = tx.persistent_savepoint().map_err(sp)?;
    tx.open_table(META)
        .map_err(|e| redb_err(op, &path, e))?
        .insert(
            crate::store::savepoint_key(id).as_str(),
            &applied.to_le_bytes()[..],
        )
        .map_err(|e| redb_err(op, &path, e))?;
    tx.commit().map_err(|e| redb_err(op, &path, e))
}

/// What opening the store will do, decided before anything is changed.
#[derive(Debug)]
pub(crate) enum StorePlan {
    /// Use it as it is.
    Use(StoreMeta),
    /// Create it empty (a new database).
    Create,
    /// Create it from a release-0.1 database's snapshots.
    Migrate(migrate::Plan),
    /// Keep a copy of the damaged file, then restore the previous
    /// checkpoint's savepoint `id`, which reflects `meta`.
    Fallback { id: u64, meta: StoreMeta, len: u64 },
    /// Set the damaged file aside and rebuild from the log.
    Rebuild,
}

/// Decides how to open the store of the database at `dir` against a log
/// holding `log_first..=log_last`, changing nothing (see the module docs).
/// Fails, with nothing touched, when the store cannot be used and the log
/// cannot rebuild it.
pub(crate) fn plan_store(
    fs: &Arc<dyn Storage>,
    dir: &Path,
    log_first: u64,
    log_last: u64,
    check_bytes_max: u64,
) -> Result<(StorePlan, StoreReport)> {
    let path = layout::store_path(dir);
    let mut report = StoreReport {
        path: path.clone(),
        ..StoreReport::default()
    };
    let exists = fs
        .file_len(&path)
        .map_err(|e| Error::io("stat store", &path, e))?
        .is_some();
    if !exists {
        if let Some(plan) = migrate::plan(fs.as_ref(), dir, log_first, log_last)? {
            return Ok((StorePlan::Migrate(plan), report));
        }
        if log_first > 1 {
            return Err(Error::StoreUnusable {
                path,
                reason: "there is no store".into(),
                log_first_lsn: log_first,
            });
        }
        return Ok((StorePlan::Create, report));
    }
    let file = layout::open(fs.as_ref(), &path, OpenMode::Read, "open store")?;
    let len = file.len().map_err(|e| Error::io("stat store", &path, e))?;
    let whole = len <= check_bytes_max;
    report.integrity_checked = whole;
    let why = match check(&file, &path, log_first, log_last, whole)? {
        Verdict::Good(meta) => return Ok((StorePlan::Use(meta), report)),
        Verdict::Damaged(why) => why,
    };
    tracing::error!(store = %path.display(), reason = %why, "the store is damaged");
    report.damage = Some(why.clone());
    if let Some((id, meta)) = plan_fallback(&file, &path, log_first, log_last) {
        return Ok((StorePlan::Fallback { id, meta, len }, report));
    }
    if log_first > 1 {
        return Err(Error::StoreUnusable {
            path,
            reason: why,
            log_first_lsn: log_first,
        });
    }
    Ok((StorePlan::Rebuild, report))
}

/// Carries `plan` out against the opened `log`.
pub(crate) fn open_store(
    fs: &Arc<dyn Storage>,
    dir: &Path,
    plan: StorePlan,
    mut report: StoreReport,
    log: Option<&dyn Log>,
    cache_bytes: usize,
) -> Result<OpenedStore> {
    let path = layout::store_path(dir);
    let open_file = || layout::open(fs.as_ref(), &path, OpenMode::ReadWrite, "open store");
    let applied_lsn = match plan {
        StorePlan::Use(meta) => meta.applied_lsn,
        StorePlan::Create => {
            create(fs.as_ref(), dir, 1, |_| Ok(0))?;
            report.created = true;
            0
        }
        StorePlan::Migrate(plan) => {
            let log = log.ok_or_else(|| Error::Internal {
                op: "open store",
                reason: "a migration needs the log".into(),
            })?;
            let m = migrate::carry_out(fs.as_ref(), dir, plan, log)?;
            report.migrated = true;
            report.migrated_from = m.from;
            report.legacy_snapshots_damaged = m.damaged;
            let file = open_file()?;
            let store = Store::on_file(file, &path, cache_bytes)?;
            let meta = read_meta(&store.db, &path)?;
            return Ok(OpenedStore {
                store,
                applied_lsn: meta.applied_lsn,
                report,
            });
        }
        StorePlan::Fallback { id, meta, len } => {
            let file = open_file()?;
            // Evidence first, then the change.
            let kept = layout::fresh_side_path(fs.as_ref(), &path, layout::DAMAGED_SUFFIX)?;
            layout::copy_range(
                fs.as_ref(),
                file.as_ref(),
                &path,
                0,
                len,
                &kept,
                "keep the damaged store",
            )?;
            layout::sync_dir(fs.as_ref(), dir)?;
            let store = Store::on_file(file, &path, cache_bytes)?;
            restore(&store.db, &path, id)?;
            tracing::warn!(store = %path.display(), lsn = meta.applied_lsn, kept = %kept.display(), "fell back to the previous checkpoint");
            report.fell_back_to_lsn = Some(meta.applied_lsn);
            report.damaged_kept_in = Some(kept);
            return Ok(OpenedStore {
                store,
                applied_lsn: meta.applied_lsn,
                report,
            });
        }
        StorePlan::Rebuild => {
            let kept = layout::fresh_side_path(fs.as_ref(), &path, layout::DAMAGED_SUFFIX)?;
            fs.rename(&path, &kept)
                .map_err(|e| Error::io("set the damaged store aside", &path, e))?;
            layout::sync_dir(fs.as_ref(), dir)?;
            tracing::warn!(store = %path.display(), kept = %kept.display(), "rebuilding the store from the log");
            create(fs.as_ref(), dir, 1, |_| Ok(0))?;
            report.rebuilt = true;
            report.damaged_kept_in = Some(kept);
            0
        }
    };
    let store = Store::on_file(open_file()?, &path, cache_bytes)?;
    Ok(OpenedStore {
        store,
        applied_lsn,
        report,
    })
}
