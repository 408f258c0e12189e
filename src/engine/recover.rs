//! Bringing views up to date on open: the newest good snapshot, then the
//! log after it. A damaged snapshot falls back to the generation before
//! it; a view whose schema changed is rebuilt from the log if the log
//! still starts at LSN 1.

use std::path::Path;

use crate::engine::read;
use crate::error::{Error, Result};
use crate::layout;
use crate::snapshot::{self, SnapshotContents};
use crate::storage::Storage;
use crate::views::{View, ViewSet};
use crate::wal::index::LogIndex;
use crate::wal::recovery::RecoveryReport;

/// Loads the views from `path`: meta, integrity, then each view whose
/// schema version matches. Views not loaded are left reset.
fn try_snapshot(
    fs: &dyn Storage,
    path: &Path,
    views: &mut [Box<dyn View>],
) -> Result<SnapshotContents> {
    let (db, contents) = snapshot::open(fs, path)?;
    for view in views.iter_mut() {
        view.reset();
        if contents.views.get(view.name()) == Some(&view.schema_version()) {
            snapshot::load_view(&db, path, view.as_mut())?;
        }
    }
    Ok(contents)
}

/// What view recovery hands the engine.
pub(crate) struct RecoveredViews {
    pub set: ViewSet,
    /// Views the loaded snapshot holds that this handle does not register.
    pub foreign: Vec<String>,
    /// The loaded snapshot's LSN, if it matches the registered views.
    pub usable_lsn: Option<u64>,
    /// Events replayed after it (counts toward the next snapshot).
    pub replayed_events: u64,
}

/// Recovers `views` against the scanned log; seeds stream versions from
/// the snapshot; fills in the report.
pub(crate) fn recover_views(
    fs: &dyn Storage,
    dir: &Path,
    index: &mut LogIndex,
    log_last_lsn: u64,
    record_bytes_max: u64,
    mut views: Vec<Box<dyn View>>,
    report: &mut RecoveryReport,
) -> Result<RecoveredViews> {
    let log_first = index.first_lsn().unwrap_or(1);
    let removed = snapshot::remove_temporary(fs, dir)?;
    for tmp in removed {
        tracing::info!(file = %tmp.display(), "removed a snapshot left unfinished by a crash");
        report.removed_temp_files.push(tmp);
    }
    let mut chosen: Option<SnapshotContents> = None;
    for (named_lsn, path) in snapshot::list(fs, dir)? {
        let tried = try_snapshot(fs, &path, &mut views).and_then(|c| {
            snapshot::check_joins_log(&c, named_lsn, log_first, log_last_lsn)?;
            Ok(c)
        });
        match tried {
            Ok(contents) => {
                chosen = Some(contents);
                break;
            }
            // The disk failed, not the file, or the file is from a newer
            // build: fail the open and set nothing aside.
            Err(e @ (Error::Io { .. } | Error::UnsupportedVersion { .. })) => return Err(e),
            Err(e) => {
                tracing::error!(snapshot = %path.display(), error = %e, "snapshot unusable; trying the generation before it");
                report.damaged_snapshots.push((path, e.to_string()));
                for v in views.iter_mut() {
                    v.reset();
                }
            }
        }
    }
    if chosen.is_none() && log_first > 1 {
        let details = if report.damaged_snapshots.is_empty() {
            "no snapshot found".to_string()
        } else {
            report
                .damaged_snapshots
                .iter()
                .map(|(p, e)| format!("{}: {e}", p.display()))
                .collect::<Vec<_>>()
                .join("; ")
        };
        return Err(Error::NoUsableSnapshot {
            log_first_lsn: log_first,
            details,
        });
    }
    // Recovery will succeed: set unusable snapshots aside (renamed, never
    // deleted) so that they no longer count as a generation.
    for (path, _) in &report.damaged_snapshots {
        let aside = layout::fresh_side_path(fs, path, layout::DAMAGED_SUFFIX)?;
        fs.rename(path, &aside)
            .map_err(|e| Error::io("set damaged snapshot aside", path, e))?;
        tracing::warn!(snapshot = %path.display(), to = %aside.display(), "damaged snapshot set aside");
    }
    if !report.damaged_snapshots.is_empty() {
        layout::sync_dir(fs, &layout::snapshot_dir(dir))?;
    }
    let covered = chosen.as_ref().map_or(0, |c| c.covered_lsn);
    if let Some(c) = &chosen {
        index.seed_stream_versions(&c.streams);
        report.snapshot = Some((c.path.clone(), covered));
    }

    // Where each view starts replaying.
    let mut starts = Vec::with_capacity(views.len());
    for v in &views {
        let in_snapshot = chosen.as_ref().and_then(|c| c.views.get(v.name()).copied());
        if in_snapshot == Some(v.schema_version()) {
            starts.push(covered + 1);
        } else {
            if log_first > 1 {
                return Err(Error::ViewVersion {
                    view: v.name().to_string(),
                    snapshot_version: in_snapshot.unwrap_or(0),
                    code_version: v.schema_version(),
                    log_first_lsn: log_first,
                });
            }
            report.views_rebuilt.push(v.name().to_string());
            starts.push(1);
        }
    }
    let mut set = ViewSet::new(views);
    if let Some(from) = starts.iter().copied().min() {
        let slices = index.slices_from(from);
        let mut replayed = 0u64;
        read::replay_slices(&slices, record_bytes_max, from, |event| {
            for (v, start) in set.views.iter_mut().zip(&starts) {
                if event.lsn >= *start {
                    v.apply(&event);
                }
            }
            replayed += 1;
            true
        })?;
        report.replayed_events = replayed;
    }
    set.applied_lsn = log_last_lsn;
    let (foreign, usable_lsn) = match chosen {
        Some(c) => {
            let foreign: Vec<String> = c
                .views
                .keys()
                .filter(|n| !set.views.iter().any(|v| v.name() == n.as_str()))
                .cloned()
                .collect();
            // The loaded generation can serve this code again only if it
            // holds every view, at the registered version.
            let usable = foreign.is_empty() && report.views_rebuilt.is_empty();
            (foreign, usable.then_some(c.covered_lsn))
        }
        None => (Vec::new(), None),
    };
    Ok(RecoveredViews {
        set,
        foreign,
        usable_lsn,
        replayed_events: report.replayed_events,
    })
}
