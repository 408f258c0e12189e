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
use crate::store::{HISTORY, STREAM_BATCHES, STREAMS, VIEWS, open, redb_err};

/// The file release 0.1 recorded registered views in.
const LEGACY_VIEWS_FILE: &str = "VIEWS";

/// What a migration did.
#[derive(Debug, Default)]
pub(crate) struct Migrated {
    /// The generation the store was seeded from and the LSN it covered
    /// (`None` when the log held the whole history).
    pub from: Option<(PathBuf, u64)>,
    /// Generations that did not check out, set aside as `.damaged`.
    pub damaged: Vec<(PathBuf, String)>,
}

/// Creates the store of a release-0.1 database from its snapshots, if it
/// has any; `None` if there was nothing to migrate.
pub(crate) fn from_snapshots(fs: &dyn Storage, dir: &Path, log: &dyn Log) -> Result<Option<Migrated>> {
    let generations = snapshot::list(fs, dir)?;
    if generations.is_empty() {
        return Ok(None);
    }
    let (log_first, log_last) = (log.first_lsn(), log.last_lsn());
    let mut tried = Vec::new();
    if log_first <= 1 {
        // The log holds the whole history: the snapshots add nothing. Each
        // is still checked, so a damaged one is kept, not deleted.
        for (named_lsn, path) in &generations {
            let checked = snapshot::open(fs, path).and_then(|(_, contents)| {
                snapshot::check_joins_log(&contents, *named_lsn, log_first, log_last)
            });
            match checked {
                Ok(()) => {}
                Err(e @ (Error::Io { .. } | Error::UnsupportedVersion { .. })) => return Err(e),
                Err(e) => tried.push((path.clone(), e.to_string())),
            }
        }
        open::create(fs, dir, 1, |_| Ok(0))?;
        tracing::info!(dir = %dir.display(), "created the store; the log holds the whole history, so release 0.1's snapshots are not needed");
        remove_legacy(fs, dir, &generations, &tried)?;
        return Ok(Some(Migrated {
            from: None,
            damaged: tried,
        }));
    }
    for (named_lsn, path) in &generations {
        let opened = snapshot::open(fs, path).and_then(|(db, contents)| {
            snapshot::check_joins_log(&contents, *named_lsn, log_first, log_last)?;
            Ok((db, contents))
        });
        let (db, contents) = match opened {
            Ok(o) => o,
            Err(e @ (Error::Io { .. } | Error::UnsupportedVersion { .. })) => return Err(e),
            Err(e) => {
                tracing::error!(snapshot = %path.display(), error = %e, "snapshot unusable for the migration; trying the generation before it");
                tried.push((path.clone(), e.to_string()));
                continue;
            }
        };
        let covered = contents.covered_lsn;
        open::create(fs, dir, log_first, |store| {
            let op = "migrate snapshot";
            let mut w = store.begin_write()?;
            // What the log still holds of the history up to the snapshot.
            let mut seen: HashMap<String, (u64, u64, u64)> = HashMap::new();
            {
                let mut history = w.tx.open_table(HISTORY).map_err(|e| redb_err(op, &store.path, e))?;
                let mut index = w
                    .tx
                    .open_table(STREAM_BATCHES)
                    .map_err(|e| redb_err(op, &store.path, e))?;
                log.read(log_first, &mut |r| {
                    if r.first_lsn > covered {
                        return Ok(false);
                    }
                    let row = codec::encode_history_row(r.first_lsn, r.first_version, r.count, 0, r.payload);
                    history
                        .insert(r.first_lsn, row.as_slice())
                        .map_err(|e| redb_err(op, &store.path, e))?;
                    index
                        .insert((r.stream, r.first_version), r.first_lsn)
                        .map_err(|e| redb_err(op, &store.path, e))?;
                    let last_version = r.first_version + u64::from(r.count) - 1;
                    let e = seen.entry(r.stream.to_string()).or_insert((r.first_version, 0, 0));
                    e.1 = last_version;
                    e.2 = r.last_lsn();
                    Ok(true)
                })?;
            }
            {
                let mut streams = w.tx.open_table(STREAMS).map_err(|e| redb_err(op, &store.path, e))?;
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
                        .insert(name.as_str(), &codec::encode_stream_meta(name, &meta)[..])
                        .map_err(|e| redb_err(op, &store.path, e))?;
                }
                if let Some(name) = seen.keys().next() {
                    return Err(Error::corrupt(
                        path,
                        0,
                        format!("the log has stream {name:?} by LSN {covered} but the snapshot does not"),
                    ));
                }
            }
            {
                let mut views = w.tx.open_table(VIEWS).map_err(|e| redb_err(op, &store.path, e))?;
                for (name, schema) in &contents.views {
                    views
                        .insert(name.as_str(), &codec::encode_view_meta(name, *schema, covered)[..])
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
        remove_legacy(fs, dir, &generations, &tried)?;
        return Ok(Some(Migrated {
            from: Some((path.clone(), covered)),
            damaged: tried,
        }));
    }
    Err(Error::NoUsableSnapshot {
        log_first_lsn: log_first,
        details: tried
            .iter()
            .map(|(p, e)| format!("{}: {e}", p.display()))
            .collect::<Vec<_>>()
            .join("; "),
    })
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
    let views = dir.join(LEGACY_VIEWS_FILE);
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
