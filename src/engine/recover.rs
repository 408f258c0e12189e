//! Opening a database: the log, then the store at its last durable
//! checkpoint (created, migrated or fallen back as needed), then every
//! view brought to the store's LSN, then the log after it replayed into
//! both.

use std::path::Path;
use std::sync::Arc;

use redb::ReadableTable;

use crate::error::{Error, Result};
use crate::layout;
use crate::log::{Log, MemoryLog};
use crate::options::{LogKind, Options};
use crate::store::{self, BatchRef, Store, codec};
use crate::stream::Event;
use crate::views::{TablesAt, View, ViewSlot, ViewStates, ViewTables, ViewTablesRead};
use crate::wal::WalLog;
use crate::wal::recovery::RecoveryReport;

/// Bytes of records applied in one store transaction while replaying.
const REPLAY_TRANSACTION_BYTES_MAX: u64 = 16 << 20;
/// Events read from the history at a time while a view catches up.
const CATCH_UP_EVENTS: usize = 4096;

/// What open hands the engine.
pub(crate) struct Opened {
    pub log: Arc<dyn Log>,
    pub store: Arc<Store>,
    pub views: ViewStates,
    /// The LSN the store's durable state reflects (the last checkpoint).
    pub checkpoint_lsn: u64,
    /// Records and bytes replayed after it.
    pub since: (u64, u64),
    pub report: RecoveryReport,
}

/// Opens the log and the store of `dir` (or both in memory) and brings
/// `views` up to date.
pub(crate) fn open(dir: &Path, options: &Options, views: Vec<Box<dyn View>>) -> Result<Opened> {
    let (log, store, checkpoint_lsn, mut report): (Arc<dyn Log>, Store, u64, RecoveryReport) =
        match &options.log {
            #[cfg(feature = "jetstream")]
            LogKind::JetStream {
                servers,
                stream,
                replicas,
            } => {
                let fs = options.storage.clone();
                let log = crate::log::JetStreamLog::open(
                    servers,
                    stream,
                    *replicas,
                    options.record_bytes_max,
                )?;
                let (plan, store_report) = store::plan_store(
                    &fs,
                    dir,
                    log.first_lsn(),
                    log.last_lsn(),
                    options.store_check_on_open_bytes_max,
                )?;
                let opened = store::open_store(
                    &fs,
                    dir,
                    plan,
                    store_report,
                    Some(&log),
                    options.store_cache_bytes,
                )?;
                let mut report = RecoveryReport::default();
                report.store = opened.report;
                report.checkpoint_lsn = opened.applied_lsn;
                (Arc::new(log), opened.store, opened.applied_lsn, report)
            }
            #[cfg(not(feature = "jetstream"))]
            LogKind::JetStream { .. } => {
                return Err(Error::Unsupported {
                    op: "open",
                    reason: "this build has no JetStream log (feature `jetstream`)".into(),
                });
            }
            LogKind::Wal => {
                let fs = options.storage.clone();
                let wal_dir = layout::wal_dir(dir);
                // Read-only first: whether the store can be used, or how it
                // will be made, is decided before the log or the store is
                // changed, so an open that must fail touches nothing.
                let scanned = crate::wal::recovery::scan_existing(
                    fs.as_ref(),
                    &wal_dir,
                    options.record_bytes_max,
                )?;
                let log_first = scanned.index.first_lsn().unwrap_or(scanned.next_lsn);
                let (plan, store_report) = store::plan_store(
                    &fs,
                    dir,
                    log_first,
                    scanned.next_lsn - 1,
                    options.store_check_on_open_bytes_max,
                )?;
                let wal = WalLog::open_scanned(
                    fs.clone(),
                    &wal_dir,
                    scanned,
                    options.record_bytes_max,
                    options.segment_bytes_max,
                )?;
                let mut report = wal.recovery_report().clone();
                let opened = store::open_store(
                    &fs,
                    dir,
                    plan,
                    store_report,
                    Some(&wal),
                    options.store_cache_bytes,
                )?;
                report.store = opened.report;
                report.checkpoint_lsn = opened.applied_lsn;
                (Arc::new(wal), opened.store, opened.applied_lsn, report)
            }
            LogKind::Memory => (
                Arc::new(MemoryLog::new(options.record_bytes_max)),
                Store::in_memory()?,
                0,
                RecoveryReport::default(),
            ),
        };
    let meta = store::read_meta(&store.db, &store.path)?;
    let mut slots = prepare_views(
        &store,
        views,
        checkpoint_lsn,
        meta.history_from_lsn,
        &mut report,
    )?;
    let since = replay_log(&store, log.as_ref(), checkpoint_lsn, &mut slots)?;
    report.replayed_events = since.2;
    // A shared log may have grown while it was replayed: what the store
    // holds is what was replayed, and the first catch-up folds the rest.
    let applied_lsn = if log.is_shared() {
        checkpoint_lsn + since.2
    } else {
        log.last_lsn().max(checkpoint_lsn)
    };
    Ok(Opened {
        log,
        store: Arc::new(store),
        views: ViewStates { slots, applied_lsn },
        checkpoint_lsn,
        since: (since.0, since.1),
        report,
    })
}

/// Loads each view the store holds at its schema version; drops and
/// rebuilds the others from the history; catches every one up to
/// `applied_lsn` (a view the last handle did not register is behind).
fn prepare_views(
    store: &Store,
    views: Vec<Box<dyn View>>,
    applied_lsn: u64,
    history_from_lsn: u64,
    report: &mut RecoveryReport,
) -> Result<Vec<ViewSlot>> {
    let mut slots = Vec::with_capacity(views.len());
    let mut rebuild = Vec::new();
    {
        let r = store.begin_read()?;
        let recorded = read_view_meta(&r, store)?;
        for mut view in views {
            let name = view.name().to_string();
            let usable = match recorded.iter().find(|(n, _, _)| *n == name) {
                Some((_, schema, lsn)) if *schema == view.schema_version() => {
                    if *lsn > applied_lsn {
                        return Err(store::damaged(
                            &store.path,
                            format!(
                                "view {name:?} reflects LSN {lsn}, past the store's {applied_lsn}"
                            ),
                        ));
                    }
                    Some(*lsn)
                }
                _ => None,
            };
            let applied = match usable {
                Some(lsn) => {
                    let tables = ViewTablesRead {
                        at: TablesAt::Read(&r.tx),
                        view: &name,
                        path: &store.path,
                    };
                    view.load(&tables)?;
                    lsn
                }
                None => {
                    let stored = recorded.iter().find(|(n, _, _)| *n == name);
                    let (snapshot_version, code_version) =
                        (stored.map_or(0, |(_, s, _)| *s), view.schema_version());
                    view.reset();
                    if history_from_lsn > 1 && applied_lsn > 0 {
                        // No rebuild is possible: the view may migrate its
                        // tables in place, or the open fails naming it.
                        let migrated = match stored {
                            Some((_, from, lsn)) => {
                                migrate_view(store, &r, view.as_mut(), *from, *lsn)?
                            }
                            None => None,
                        };
                        let Some(lsn) = migrated else {
                            return Err(Error::ViewVersion {
                                view: name,
                                snapshot_version,
                                code_version,
                                log_first_lsn: history_from_lsn,
                            });
                        };
                        report.views_migrated.push(name.clone());
                        // Loaded from what the migration committed.
                        let fresh = store.begin_read()?;
                        let tables = ViewTablesRead {
                            at: TablesAt::Read(&fresh.tx),
                            view: &name,
                            path: &store.path,
                        };
                        view.load(&tables)?;
                        slots.push(ViewSlot::new(view, lsn));
                        continue;
                    }
                    rebuild.push(name.clone());
                    0
                }
            };
            if applied + 1 < history_from_lsn && applied < applied_lsn {
                return Err(Error::ViewVersion {
                    view: name,
                    snapshot_version: view.schema_version(),
                    code_version: view.schema_version(),
                    log_first_lsn: history_from_lsn,
                });
            }
            slots.push(ViewSlot::new(view, applied));
        }
    }
    if !rebuild.is_empty() {
        let w = store.begin_write()?;
        for name in &rebuild {
            drop_view_tables(&w.tx, name, &store.path)?;
        }
        w.record_views(&slots)?;
        w.commit()?;
        report.views_rebuilt = rebuild;
    }
    catch_up(store, &mut slots, applied_lsn)?;
    Ok(slots)
}

/// Runs `view`'s migration from schema `from` in one store transaction;
/// the LSN it reflects (unchanged) if it migrated.
fn migrate_view(
    store: &Store,
    r: &store::StoreRead,
    view: &mut dyn View,
    from: u32,
    lsn: u64,
) -> Result<Option<u64>> {
    let w = store.begin_write()?;
    let name = view.name().to_string();
    let migrated = {
        let mut tables = ViewTables::new(&w.tx, &name, &store.path);
        let mut history = crate::views::ViewHistory { read: r };
        view.migrate(from, &mut tables, &mut history)?
    };
    if !migrated {
        return Ok(None);
    }
    let t = w.tx.open_table(store::VIEWS);
    t.map_err(|e| store::redb_err("write view meta", &store.path, e))?
        .insert(
            name.as_str(),
            &codec::encode_view_meta(&name, view.schema_version(), lsn)[..],
        )
        .map_err(|e| store::redb_err("write view meta", &store.path, e))?;
    w.commit()?;
    tracing::info!(view = %name, from, to = view.schema_version(), "migrated a view's tables");
    Ok(Some(lsn))
}

/// `(name, schema version, applied LSN)` of every view the store records.
pub(crate) fn read_view_meta(
    r: &store::StoreRead,
    store: &Store,
) -> Result<Vec<(String, u32, u64)>> {
    let t = match r.tx.open_table(store::VIEWS) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(e) => return Err(store::redb_err("read view meta", &store.path, e)),
    };
    let mut out = Vec::new();
    for entry in t
        .iter()
        .map_err(|e| store::redb_err("read view meta", &store.path, e))?
    {
        let (k, v) = entry.map_err(|e| store::redb_err("read view meta", &store.path, e))?;
        let name = k.value().to_string();
        let (schema, lsn) = codec::decode_view_meta(&name, v.value())
            .map_err(|why| store::damaged(&store.path, format!("view {name:?} meta: {why}")))?;
        out.push((name, schema, lsn));
    }
    Ok(out)
}

/// Deletes every table of view `name`.
fn drop_view_tables(tx: &redb::WriteTransaction, name: &str, path: &Path) -> Result<()> {
    let prefix = store::view_table_prefix(name);
    let doomed: Vec<String> = tx
        .list_tables()
        .map_err(|e| store::redb_err("list view tables", path, e))?
        .map(|h| redb::TableHandle::name(&h).to_string())
        .filter(|n| n.starts_with(&prefix))
        .collect();
    for table in doomed {
        let def: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new(&table);
        tx.delete_table(def)
            .map_err(|e| store::redb_err("drop view table", path, e))?;
    }
    Ok(())
}

/// Folds the history into every view that is behind `applied_lsn`, a page
/// at a time.
fn catch_up(store: &Store, slots: &mut [ViewSlot], applied_lsn: u64) -> Result<()> {
    loop {
        let Some(from) = slots
            .iter()
            .map(|s| s.applied_lsn)
            .filter(|&lsn| lsn < applied_lsn)
            .min()
        else {
            return Ok(());
        };
        let page: Vec<Event> = {
            let r = store.begin_read()?;
            let mut page = Vec::new();
            r.replay(from + 1, |e| {
                page.push(e.to_owned());
                page.len() < CATCH_UP_EVENTS
            })?;
            page
        };
        let w = store.begin_write()?;
        for e in &page {
            let event = e.as_ref();
            for slot in slots.iter_mut().filter(|s| s.applied_lsn < e.lsn) {
                let mut tables = ViewTables::new(&w.tx, &slot.name, &store.path);
                slot.view.apply(&event, &mut tables)?;
                slot.applied_lsn = e.lsn;
            }
        }
        if page.len() < CATCH_UP_EVENTS {
            // The rest of the history is folded: what retention removed
            // is gone for every view alike.
            for slot in slots.iter_mut() {
                slot.applied_lsn = slot.applied_lsn.max(applied_lsn);
            }
        }
        w.record_views(slots)?;
        w.commit()?;
    }
}

/// Applies the record `r` of the log, which must start at `next`, to the
/// store and every view; one that does not follow the store's state is
/// damage at its LSN (`doing` says where it was met).
pub(crate) fn apply_record(
    tx: &mut store::StoreWrite<'_>,
    r: &BatchRef<'_>,
    next: u64,
    slots: &mut [ViewSlot],
    doing: &str,
) -> Result<()> {
    if r.first_lsn != next {
        return Err(Error::corrupt(
            "<log>",
            r.first_lsn,
            format!("the log has LSN {} where LSN {next} was next", r.first_lsn),
        ));
    }
    tx.apply_batch(r, slots).map_err(|e| match e {
        Error::Store { reason, .. } => {
            Error::corrupt("<log>", r.first_lsn, format!("{doing}: {reason}"))
        }
        other => other,
    })
}

/// Replays the log after `applied_lsn` into the store and every view.
/// Returns the records, bytes and events replayed.
fn replay_log(
    store: &Store,
    log: &dyn Log,
    applied_lsn: u64,
    slots: &mut [ViewSlot],
) -> Result<(u64, u64, u64)> {
    let mut w = Some(store.begin_write()?);
    let (mut records, mut bytes, mut events, mut in_tx) = (0u64, 0u64, 0u64, 0u64);
    // Where the log ended when the replay began (a shared log grows on).
    let end = log.last_lsn();
    let mut next = applied_lsn + 1;
    log.read(applied_lsn + 1, &mut |r| {
        if r.last_lsn() <= applied_lsn {
            return Ok(true);
        }
        let Some(tx) = w.as_mut() else {
            return Err(Error::Internal {
                op: "open",
                reason: "replay lost its store transaction".into(),
            });
        };
        apply_record(
            tx,
            &BatchRef::of(r),
            next,
            slots,
            "replaying the log into the store",
        )?;
        next = r.last_lsn() + 1;
        records += 1;
        events += u64::from(r.count);
        bytes += r.payload.len() as u64;
        in_tx += r.payload.len() as u64;
        if in_tx >= REPLAY_TRANSACTION_BYTES_MAX
            && let Some(tx) = w.take()
        {
            tx.record_views(slots)?;
            tx.commit()?;
            w = Some(store.begin_write()?);
            in_tx = 0;
        }
        Ok(true)
    })?;
    if let Some(tx) = w {
        tx.record_views(slots)?;
        tx.commit()?;
    }
    if next <= end {
        return Err(Error::corrupt(
            "<log>",
            next,
            format!("the log ends at LSN {end} but yields nothing from LSN {next}"),
        ));
    }
    Ok((records, bytes, events))
}
