//! Segment files: creating them so that a half-made one is never seen
//! under its final name, and mapping them for reading.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::layout;
use crate::storage::{Mapping, Storage, StorageFile};
use crate::wal::format;

/// Creates the segment whose first record will be `first_lsn`: header
/// written and space preallocated in a `.tmp` file, fsynced, renamed into
/// place, and the directory fsynced. Returns the open file (read + write).
pub fn create_segment(
    fs: &dyn Storage,
    wal_dir: &Path,
    first_lsn: u64,
    preallocate_bytes: u64,
) -> Result<(Arc<dyn StorageFile>, PathBuf)> {
    let path = wal_dir.join(layout::segment_file_name(first_lsn));
    let tmp = wal_dir.join(format!("{first_lsn:020}{}", layout::SEGMENT_TMP_SUFFIX));
    match fs.remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("remove stale temporary segment", &tmp, e)),
    }
    let file = layout::create_new(fs, &tmp, "create segment")?;
    file.write_all_at(&format::encode_segment_header(first_lsn), 0)
        .map_err(|e| Error::io("write segment header", &tmp, e))?;
    // Best effort: without the reservation appends still work, each one
    // just also updates the file size.
    if let Err(e) = file.allocate(preallocate_bytes) {
        tracing::warn!(segment = %tmp.display(), error = %e, "could not preallocate a new segment");
    }
    file.sync_all()
        .map_err(|e| Error::io("fsync new segment", &tmp, e))?;
    crate::failpoint::hit("segment.before_rename");
    fs.rename(&tmp, &path)
        .map_err(|e| Error::io("rename new segment into place", &path, e))?;
    if crate::failpoint::planted(crate::failpoint::PlantedBug::SkipSegmentDirSync) {
        return Ok((file, path));
    }
    layout::sync_dir(fs, wal_dir)?;
    Ok((file, path))
}

/// Maps a whole segment file read-only.
pub fn map_segment(file: &dyn StorageFile, path: &Path) -> Result<Arc<Mapping>> {
    file.map()
        .map(Arc::new)
        .map_err(|e| Error::io("map segment", path, e))
}
