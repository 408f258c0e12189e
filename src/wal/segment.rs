//! Segment files: creating them so that a half-made one is never seen
//! under its final name, and mapping them for reading.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;

use crate::error::{Error, Result};
use crate::layout;
use crate::wal::format;

/// Creates the segment whose first record will be `first_lsn`: header
/// written and space preallocated in a `.tmp` file, fsynced, renamed into
/// place, and the directory fsynced. Returns the open file (read + write).
pub fn create_segment(
    wal_dir: &Path,
    first_lsn: u64,
    preallocate_bytes: u64,
) -> Result<(File, PathBuf)> {
    let path = wal_dir.join(layout::segment_file_name(first_lsn));
    let tmp = wal_dir.join(format!("{first_lsn:020}{}", layout::SEGMENT_TMP_SUFFIX));
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("remove stale temporary segment", &tmp, e)),
    }
    let mut file = layout::create_new(&tmp, "create segment")?;
    file.write_all(&format::encode_segment_header(first_lsn))
        .map_err(|e| Error::io("write segment header", &tmp, e))?;
    preallocate(&file, preallocate_bytes);
    file.sync_all()
        .map_err(|e| Error::io("fsync new segment", &tmp, e))?;
    crate::failpoint::hit("segment.before_rename");
    fs::rename(&tmp, &path).map_err(|e| Error::io("rename new segment into place", &path, e))?;
    layout::sync_dir(wal_dir)?;
    Ok((file, path))
}

/// Reserves `bytes` for the file so that appends inside it do not change
/// the file size, which lets fdatasync skip a metadata update. Where the
/// file system cannot (EOPNOTSUPP), the file is merely extended: the
/// zeros read back the same, and only the speed-up is lost.
fn preallocate(file: &File, bytes: u64) {
    if fs4::FileExt::allocate(file, bytes).is_err() {
        let _ = file.set_len(bytes);
    }
}

/// Maps a whole segment file read-only.
pub fn map_segment(file: &File, path: &Path) -> Result<Arc<Mmap>> {
    // SAFETY: replaydb never shrinks a mapped segment below bytes that a
    // reader will touch: readers stay below the committed end, the tail is
    // only truncated down to that end when it is sealed, and a second
    // writer is excluded by the directory lock. The usual hazard of a
    // mapping (another process truncating the file) is the same one every
    // mmap-based store accepts.
    let map = unsafe { Mmap::map(file) }.map_err(|e| Error::io("map segment", path, e))?;
    Ok(Arc::new(map))
}
