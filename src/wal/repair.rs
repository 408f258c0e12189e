//! `replaydb repair`: cut the log at its first bad record, keeping every
//! cut byte in a side file. Never deletes anything.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::layout;
use crate::storage::{OpenMode, Storage, StorageFile};
use crate::wal::format::SEGMENT_HEADER_BYTES;
use crate::wal::recovery::scan_log;

/// One step of a repair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepairAction {
    /// Move `bytes` bytes from `offset` of `segment` into `cut_file`, then
    /// truncate the segment at `offset`.
    Cut {
        /// The damaged segment.
        segment: PathBuf,
        /// Where its valid records end.
        offset: u64,
        /// Bytes moved (up to the last non-zero byte).
        bytes: u64,
        /// Where they go.
        cut_file: PathBuf,
    },
    /// Rename a whole segment aside: its header is bad, or it follows the
    /// cut and its records can no longer join the log without a gap.
    SetAside {
        /// The segment.
        segment: PathBuf,
        /// Its new name.
        to: PathBuf,
    },
}

impl std::fmt::Display for RepairAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RepairAction::Cut {
                segment,
                offset,
                bytes,
                cut_file,
            } => write!(
                f,
                "cut {bytes} bytes from {} at byte {offset}, keeping them in {}",
                segment.display(),
                cut_file.display()
            ),
            RepairAction::SetAside { segment, to } => {
                write!(f, "set {} aside as {}", segment.display(), to.display())
            }
        }
    }
}

/// What a repair will do, and why.
#[derive(Debug, Clone, Default)]
pub struct RepairPlan {
    /// The problem found (its display text), if any.
    pub problem: Option<String>,
    /// The steps, in order. Empty when the log is clean.
    pub actions: Vec<RepairAction>,
    /// What was done to the store once the log was cut, if it reflected
    /// events the cut removed (filled in by `Repair::apply`).
    pub store: Option<String>,
}

/// Works out what [`apply_repair`] would do, changing nothing.
pub fn plan_repair(fs: &dyn Storage, wal_dir: &Path, record_bytes_max: u64) -> Result<RepairPlan> {
    let (segment, offset, problem) = match scan_log(fs, wal_dir, record_bytes_max) {
        Ok(scanned) => match scanned.report.torn_tail {
            Some(t) => (
                t.segment.clone(),
                t.offset,
                format!("torn tail: {}", t.reason),
            ),
            None => return Ok(RepairPlan::default()),
        },
        Err(Error::Corrupt {
            segment,
            offset,
            reason,
        }) => {
            let problem = format!("corrupt {} at byte {offset}: {reason}", segment.display());
            (segment, offset, problem)
        }
        Err(other) => return Err(other),
    };
    let mut actions = Vec::new();
    if offset < SEGMENT_HEADER_BYTES as u64 {
        actions.push(RepairAction::SetAside {
            to: layout::fresh_side_path(fs, &segment, layout::CUT_SUFFIX)?,
            segment: segment.clone(),
        });
    } else {
        let file = layout::open(fs, &segment, OpenMode::Read, "open segment")?;
        let kept = layout::end_of_nonzero(file.as_ref(), &segment, offset)? - offset;
        actions.push(RepairAction::Cut {
            cut_file: layout::fresh_side_path(fs, &segment, layout::CUT_SUFFIX)?,
            segment: segment.clone(),
            offset,
            bytes: kept,
        });
    }
    let mut later: Vec<PathBuf> = fs
        .list_dir(wal_dir)
        .map_err(|e| Error::io("list WAL directory", wal_dir, e))?
        .into_iter()
        .flatten()
        .filter(|name| layout::parse_segment_file_name(name).is_some())
        .map(|name| wal_dir.join(name))
        .filter(|p| p.file_name() > segment.file_name())
        .collect();
    later.sort();
    for seg in later {
        actions.push(RepairAction::SetAside {
            to: layout::fresh_side_path(fs, &seg, layout::CUT_SUFFIX)?,
            segment: seg,
        });
    }
    Ok(RepairPlan {
        problem: Some(problem),
        actions,
        store: None,
    })
}

/// Copies `bytes` bytes at `offset` of `segment` into the new file
/// `side`, fsynced and with its directory entry fsynced, so that they are
/// safe before the segment is truncated.
pub fn keep_bytes(
    fs: &dyn Storage,
    wal_dir: &Path,
    file: &dyn StorageFile,
    segment: &Path,
    offset: u64,
    bytes: u64,
    side: &Path,
) -> Result<()> {
    layout::copy_range(fs, file, segment, offset, bytes, side, "keep cut bytes")?;
    layout::sync_dir(fs, wal_dir)
}

/// Carries out a plan from [`plan_repair`]. Each cut is written and fsynced
/// to its side file before the segment is truncated.
pub fn apply_repair(fs: &dyn Storage, wal_dir: &Path, plan: &RepairPlan) -> Result<()> {
    for action in &plan.actions {
        match action {
            RepairAction::Cut {
                segment,
                offset,
                bytes,
                cut_file,
            } => {
                let file =
                    layout::open(fs, segment, OpenMode::ReadWrite, "open segment for repair")?;
                keep_bytes(
                    fs,
                    wal_dir,
                    file.as_ref(),
                    segment,
                    *offset,
                    *bytes,
                    cut_file,
                )?;
                file.set_len(*offset)
                    .and_then(|_| file.sync_all())
                    .map_err(|e| Error::io("truncate segment", segment, e))?;
            }
            RepairAction::SetAside { segment, to } => {
                fs.rename(segment, to)
                    .map_err(|e| Error::io("set segment aside", segment, e))?;
            }
        }
    }
    layout::sync_dir(fs, wal_dir)
}
