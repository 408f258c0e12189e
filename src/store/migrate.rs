//! Migrating a database written by release 0.1 (snapshot generations in
//! `DIR/snapshots/`, no store) into the store, at its first open.
//!
//! - If the log still starts at LSN 1, the snapshots hold nothing the log
//!   does not: the store is created empty and built from the log.
//! - Otherwise the newest usable generation seeds it: every stream's
//!   version, every view's tables (each value now behind its CRC) at the
//!   view's schema version, and, for the events the log still holds up to
//!   the snapshot's LSN, their history. The log after it is replayed as on
//!   any open.
//!
//! The store is written as a temporary file and renamed into place, so a
//! crash leaves either the old database untouched or the store complete.
//! Only then are the generations (and `DIR/VIEWS`, which the store's view
//! table replaces) removed; a generation set aside as `.damaged` stays.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use redb::TableDefinition;

use crate::error::{Error, Result};
use crate::layout;
use crate::log::Log;
use crate::snapshot;
use crate::storage::Storage;
use crate::store::codec::{self, StreamMeta};
use crate::store::{
    HISTORY, META, META_STREAM_COUNT, STREAMS, VIEWS, lsn_value, meta_key, open, redb_err,
};

/// What a migration did.
#[derive(Debug, Default)]
pub(crate) struct Migrated {
    /// The generation the store was seeded from and the LSN it covered
    /// (`None` when the log held the whole history).
    pub from: Option<(PathBuf, u64)>,
    /// Generations that did not check out, set aside as `.damaged`.
    pub damaged: Vec<(PathBuf, String)>,
}

/// A migration decided, before anything is changed.
#[derive(Debug)]
pub(crate) struct Plan {
    generations: Vec<(u64, PathBuf)>,
    /// The generation to seed the store from; `None` when the log holds
    /// the whole history.
    seed: Option<PathBuf>,
    damaged: Vec<(PathBuf, String)>,
    log_first: u64,
}

/// Whether the database at `dir` is one of release 0.1 (snapshots, no
/// store), and how to migrate it: every generation is checked (meta,
/// pages, and its reach into a log holding `log_first..=log_last`),
/// changing nothing. Fails with [`Error::NoUsableSnapshot`] when none is
/// usable and the log no longer starts at LSN 1.
pub(crate) fn plan(
    fs: &dyn Storage,
    dir: &Path,
    log_first: u64,
    log_last: u64,
) -> Result<Option<Plan>> {
    let generations = snapshot::list(fs, dir)?;
    if generations.is_empty() {
        return Ok(None);
    }
    let mut damaged = Vec::new();
    let mut seed = None;
    for (named_lsn, path) in &generations {
        let checked = snapshot::open(fs, path).and_then(|(_, contents)| {
            snapshot::check_joins_log(&contents, *named_lsn, log_first, log_last)
        });
        match checked {
            Ok(()) => {
                // The log holds the whole history: no snapshot is needed,
                // but each is still checked, so a damaged one is kept.
                if seed.is_none() && log_first > 1 {
                    seed = Some(path.clone());
                }
            }
            Err(e @ (Error::Io { .. } | Error::UnsupportedVersion { .. })) => return Err(e),
            Err(e) => {
                tracing::error!(snapshot = %path.display(), error = %e, "release 0.1 snapshot unusable");
                damaged.push((path.clone(), e.to_string()));
            }
        }
    }
    if seed.is_none() && log_first > 1 {
        return Err(Error::NoUsableSnapshot {
            log_first_lsn: log_first,
            details: damaged
                .iter()
                .map(|(p, e)| format!("{}: {e}", p.display()))
                .collect::<Vec<_>>()
                .join("; "),
        });
    }
    Ok(Some(Plan {
        generations,
        seed,
        damaged,
        log_first,
    }))
}

/// Creates the store as `plan` says, reading what the log still holds of
/// the history up to the seed's LSN from `log`.
pub(crate) fn carry_out(
    fs: &dyn Storage,
    dir: &Path,
    plan: Plan,
    log: &dyn Log,
) -> Result<Migrated> {
    let Some(path) = plan.seed else {
        open::create(fs, dir, 1, |_| Ok(0))?;
        tracing::info!(dir = %dir.display(), "created the store; the log holds the whole history, so release 0.1's snapshots are not needed");
        remove_legacy(fs, dir, &plan.generations, &plan.damaged)?;
        return Ok(Migrated {
            from: None,
            damaged: plan.damaged,
        });
    };
    let log_first = plan.log_first;
    let (db, contents) = snapshot::open(fs, &path)?;
    let path = &path;
    {
        {
            let covered = contents.covered_lsn;
            open::create(fs, dir, log_first, |store| {
                let op = "migrate snapshot";
                let mut w = store.begin_write()?;
                let migrated_at_ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
                // What the log still holds of the history up to the snapshot.
                let mut seen: HashMap<String, (u64, u64, u64)> = HashMap::new();
                {
                    let mut history =
                        w.tx.open_table(HISTORY)
                            .map_err(|e| redb_err(op, &store.path, e))?;
                    let mut index =
                        w.tx.open_table(STREAMS)
                            .map_err(|e| redb_err(op, &store.path, e))?;
                    log.read(log_first, &mut |r| {
                        if r.first_lsn > covered {
                            return Ok(false);
                        }
                        // Stamped now: max age never removes what it cannot date.
                        let row = codec::encode_history_row(
                            r.first_lsn,
                            r.first_version,
                            r.count,
                            migrated_at_ms,
                            r.payload,
                        );
                        history
                            .insert(r.first_lsn, row.as_slice())
                            .map_err(|e| redb_err(op, &store.path, e))?;
                        index
                            .insert((r.stream, r.first_version), &lsn_value(r.first_lsn)[..])
                            .map_err(|e| redb_err(op, &store.path, e))?;
                        let last_version = r.first_version + u64::from(r.count) - 1;
                        let e = seen
                            .entry(r.stream.to_string())
                            .or_insert((r.first_version, 0, 0));
                        e.1 = last_version;
                        e.2 = r.last_lsn();
                        Ok(true)
                    })?;
                }
                {
                    let mut streams =
                        w.tx.open_table(STREAMS)
                            .map_err(|e| redb_err(op, &store.path, e))?;
                    for (name, version) in &contents.streams {
                        let (first_held, last_version, last_lsn) =
                            seen.remove(name).unwrap_or((version + 1, *version, 0));
                        if last_version != *version {
                            return Err(Error::corrupt(
                                path,
                                0,
                                format!(
                                    "stream {name:?} is at version {version} in the snapshot, but the log has it at {last_version} by LSN {covered}"
                                ),
                            ));
                        }
                        let meta = StreamMeta {
                            version: *version,
                            first_held_version: first_held,
                            last_lsn,
                            ..StreamMeta::new()
                        };
                        streams
                            .insert(meta_key(name), &codec::encode_stream_meta(name, &meta)[..])
                            .map_err(|e| redb_err(op, &store.path, e))?;
                    }
                    w.tx.open_table(META)
                        .map_err(|e| redb_err(op, &store.path, e))?
                        .insert(
                            META_STREAM_COUNT,
                            &(contents.streams.len() as u64).to_le_bytes()[..],
                        )
                        .map_err(|e| redb_err(op, &store.path, e))?;
                    if let Some(name) = seen.keys().next() {
                        return Err(Error::corrupt(
                            path,
                            0,
                            format!(
                                "the log has stream {name:?} by LSN {covered} but the snapshot does not"
                            ),
                        ));
                    }
                }
                {
                    let mut views =
                        w.tx.open_table(VIEWS)
                            .map_err(|e| redb_err(op, &store.path, e))?;
                    for (name, schema) in &contents.views {
                        views
                            .insert(
                                name.as_str(),
                                &codec::encode_view_meta(name, *schema, covered)[..],
                            )
                            .map_err(|e| redb_err(op, &store.path, e))?;
                    }
                }
                for name in contents.views.keys() {
                    snapshot::for_each_view_entry(&db, path, name, |table, key, value| {
                        let full = format!("view:{name}:{table}");
                        let def: TableDefinition<&[u8], &[u8]> = TableDefinition::new(&full);
                        w.tx.open_table(def)
                            .map_err(|e| redb_err(op, &store.path, e))?
                            .insert(key, codec::encode_view_value(table, key, value).as_slice())
                            .map_err(|e| redb_err(op, &store.path, e))?;
                        Ok(())
                    })?;
                }
                w.set_applied_lsn(covered);
                w.commit()?;
                Ok(covered)
            })?;
            tracing::info!(snapshot = %path.display(), lsn = covered, "migrated release 0.1's snapshot into the store");
            remove_legacy(fs, dir, &plan.generations, &plan.damaged)?;
            Ok(Migrated {
                from: Some((path.clone(), covered)),
                damaged: plan.damaged,
            })
        }
    }
}

/// Removes the migrated generations and the views file, once the store
/// holding what they held is durable; damaged generations are renamed
/// `.damaged` instead, never deleted.
fn remove_legacy(
    fs: &dyn Storage,
    dir: &Path,
    generations: &[(u64, PathBuf)],
    damaged: &[(PathBuf, String)],
) -> Result<()> {
    for (_, path) in generations {
        if damaged.iter().any(|(p, _)| p == path) {
            let aside = layout::fresh_side_path(fs, path, layout::DAMAGED_SUFFIX)?;
            fs.rename(path, &aside)
                .map_err(|e| Error::io("set damaged snapshot aside", path, e))?;
        } else {
            fs.remove_file(path)
                .map_err(|e| Error::io("remove migrated snapshot", path, e))?;
        }
    }
    let snapshots = layout::snapshot_dir(dir);
    layout::sync_dir(fs, &snapshots)?;
    let views = dir.join(crate::layout::VIEWS_FILE);
    if fs
        .file_len(&views)
        .map_err(|e| Error::io("stat views file", &views, e))?
        .is_some()
    {
        fs.remove_file(&views)
            .map_err(|e| Error::io("remove views file", &views, e))?;
        layout::sync_dir(fs, dir)?;
    }
    Ok(())
}
