//! Every file name under a database directory, in one place.
//!
//! ```text
//! DIR/                 0700
//!   LOCK               0600  record-locked by the owner; holds its pid
//!   store.redb         0600  the store: state and history (docs/FORMAT.md)
//!   store.redb.tmp           a store being created (removed on open)
//!   store.redb.damaged[.N]   a store set aside as unusable (never deleted)
//!   wal/               0700
//!     SETTINGS                       the log's format settings
//!     <20-digit first LSN>.wal       a segment (docs/FORMAT.md)
//!     <20-digit first LSN>.wal.tmp   a segment being created (removed on open)
//!     <name>.cut[.N]                 bytes cut away by `replaydb repair` or a torn tail
//!   snapshots/         0700  written by release 0.1 only: migrated into the
//!                            store on open, then removed
//! ```

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::storage::{OpenMode, Storage, StorageFile};

/// The lock file, relative to the database directory.
pub const LOCK_FILE: &str = "LOCK";
/// The WAL directory, relative to the database directory.
pub const WAL_DIR: &str = "wal";
/// Extension of a WAL segment.
pub const SEGMENT_EXT: &str = "wal";
/// Suffix of a segment being created.
pub const SEGMENT_TMP_SUFFIX: &str = ".wal.tmp";
/// Suffix of bytes cut away by repair.
pub const CUT_SUFFIX: &str = ".cut";
/// The log's format settings, in the WAL directory.
pub const SETTINGS_FILE: &str = "SETTINGS";
/// The store, relative to the database directory.
pub const STORE_FILE: &str = "store.redb";
/// Suffix of a store being created (removed on open).
pub const STORE_TMP_SUFFIX: &str = ".tmp";

/// `DIR/store.redb`.
pub fn store_path(db_dir: &Path) -> PathBuf {
    db_dir.join(STORE_FILE)
}

/// Digits in a segment's file name.
pub const SEGMENT_NAME_DIGITS: usize = 20;

/// The snapshot directory, relative to the database directory.
pub const SNAPSHOT_DIR: &str = "snapshots";
/// Extension of a snapshot file.
pub const SNAPSHOT_EXT: &str = "redb";

/// `DIR/snapshots`.
pub fn snapshot_dir(db_dir: &Path) -> PathBuf {
    db_dir.join(SNAPSHOT_DIR)
}

/// Parses a snapshot file name back into the LSN it covers.
pub fn parse_snapshot_file_name(name: &str) -> Option<u64> {
    parse_lsn_name(name, SNAPSHOT_EXT)
}

/// `<20 digits>.<ext>` back to its number.
fn parse_lsn_name(name: &str, ext: &str) -> Option<u64> {
    let digits = name.strip_suffix(ext)?.strip_suffix('.')?;
    if digits.len() != SEGMENT_NAME_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Suffix of a snapshot set aside as unusable (never deleted).
pub const DAMAGED_SUFFIX: &str = ".damaged";
/// The file recording which views the database's owners register.
pub const VIEWS_FILE: &str = "VIEWS";

/// Permission bits of every file replaydb creates.
pub const FILE_MODE: u32 = 0o600;
/// Permission bits of every directory replaydb creates.
pub const DIR_MODE: u32 = 0o700;

/// `DIR/wal`.
pub fn wal_dir(db_dir: &Path) -> PathBuf {
    db_dir.join(WAL_DIR)
}

/// The file name of the segment whose first record has `first_lsn`.
pub fn segment_file_name(first_lsn: u64) -> String {
    format!("{first_lsn:020}.{SEGMENT_EXT}")
}

/// Parses a segment file name back into its first LSN; `None` for any
/// other file name.
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    parse_lsn_name(name, SEGMENT_EXT).filter(|&lsn| lsn > 0)
}

/// Creates a directory (and its parents) with mode 0700. When it is new,
/// its parent is fsynced so that the entry survives power loss.
pub fn create_dir(fs: &dyn Storage, path: &Path) -> Result<()> {
    if fs.is_dir(path) {
        return Ok(());
    }
    fs.create_dir_all(path)
        .map_err(|e| Error::io("create directory", path, e))?;
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => sync_dir(fs, parent),
        _ => sync_dir(fs, Path::new(".")),
    }
}

/// Opens (creating with mode 0600) a file for reading and writing, outside
/// the storage seam: only the lock file, which guards the process, not data.
pub fn open_rw_create(path: &Path, op: &'static str) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(FILE_MODE)
        .open(path)
        .map_err(|e| Error::io(op, path, e))
}

/// Creates a new file with mode 0600, failing if it exists.
pub fn create_new(fs: &dyn Storage, path: &Path, op: &'static str) -> Result<Arc<dyn StorageFile>> {
    fs.open(path, OpenMode::CreateNew)
        .map_err(|e| Error::io(op, path, e))
}

/// Opens an existing file.
pub fn open(
    fs: &dyn Storage,
    path: &Path,
    mode: OpenMode,
    op: &'static str,
) -> Result<Arc<dyn StorageFile>> {
    fs.open(path, mode).map_err(|e| Error::io(op, path, e))
}

/// fsyncs a directory so that entries created, renamed or removed in it
/// survive power loss.
pub fn sync_dir(fs: &dyn Storage, path: &Path) -> Result<()> {
    fs.sync_dir(path)
        .map_err(|e| Error::io("fsync directory", path, e))
}

/// Bytes moved per `pread`/`write` when copying or scanning a file.
pub const COPY_CHUNK_BYTES: usize = 1 << 20;

/// Copies `len` bytes at `offset` of `src` into the new file `dst`
/// (created 0600), a chunk at a time, and fsyncs it. Memory stays at one
/// chunk however large the range.
pub fn copy_range(
    fs: &dyn Storage,
    src: &dyn StorageFile,
    src_path: &Path,
    offset: u64,
    len: u64,
    dst: &Path,
    op: &'static str,
) -> Result<()> {
    let out = create_new(fs, dst, op)?;
    let mut buf = vec![0u8; COPY_CHUNK_BYTES];
    let mut done = 0u64;
    while done < len {
        let want = ((len - done) as usize).min(buf.len());
        let chunk = buf.get_mut(..want).unwrap_or_default();
        src.read_exact_at(chunk, offset + done)
            .map_err(|e| Error::io(op, src_path, e))?;
        out.write_all_at(chunk, done)
            .map_err(|e| Error::io(op, dst, e))?;
        done += want as u64;
    }
    out.sync_all().map_err(|e| Error::io(op, dst, e))
}

/// Offset just past the last non-zero byte of `file` at or after `from`
/// (`from` itself if there is none), read a chunk at a time.
pub fn end_of_nonzero(file: &dyn StorageFile, path: &Path, from: u64) -> Result<u64> {
    let len = file.len().map_err(|e| Error::io("stat", path, e))?;
    let mut buf = vec![0u8; COPY_CHUNK_BYTES];
    let mut end = from;
    let mut at = from;
    while at < len {
        let want = ((len - at) as usize).min(buf.len());
        let chunk = buf.get_mut(..want).unwrap_or_default();
        file.read_exact_at(chunk, at)
            .map_err(|e| Error::io("read", path, e))?;
        if let Some(p) = chunk.iter().rposition(|&b| b != 0) {
            end = at + p as u64 + 1;
        }
        at += want as u64;
    }
    Ok(end)
}

/// A path beside `path` with `suffix` appended that does not exist yet
/// (`x.cut`, then `x.cut.1`, `x.cut.2`, ...), so nothing is overwritten.
/// A failure to tell is an error, never a guess.
pub fn fresh_side_path(fs: &dyn Storage, path: &Path, suffix: &str) -> Result<PathBuf> {
    let base = format!("{}{suffix}", path.display());
    let mut candidate = PathBuf::from(&base);
    let mut n = 1u32;
    while fs
        .file_len(&candidate)
        .map_err(|e| Error::io("look for a free side file name", &candidate, e))?
        .is_some()
    {
        candidate = PathBuf::from(format!("{base}.{n}"));
        n += 1;
    }
    Ok(candidate)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_round_trip() {
        for lsn in [1, 42, u64::MAX] {
            let name = segment_file_name(lsn);
            assert_eq!(name.len(), SEGMENT_NAME_DIGITS + 4);
            assert_eq!(parse_segment_file_name(&name), Some(lsn));
        }
        for other in [
            "00000000000000000000.wal",
            "1.wal",
            "0000000000000000000a.wal",
            "00000000000000000001.wal.tmp",
            "LOCK",
        ] {
            assert_eq!(parse_segment_file_name(other), None, "{other}");
        }
    }
}
