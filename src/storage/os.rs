//! The real file system: `std::fs`, positional I/O, `mmap`.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Arc;

use super::{Mapping, OpenMode, Storage, StorageFile};
use crate::layout::{DIR_MODE, FILE_MODE};

/// The operating system's file system. What `Options::default()` uses.
#[derive(Clone, Copy, Debug, Default)]
pub struct OsStorage;

impl Storage for OsStorage {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn StorageFile>> {
        Ok(Arc::new(OsFile::open(path, mode)?))
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(path)
    }

    fn is_dir(&self, path: &Path) -> bool {
        path.is_dir()
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<Option<String>>> {
        fs::read_dir(path)?
            .map(|entry| entry.map(|e| e.file_name().into_string().ok()))
            .collect()
    }

    fn file_len(&self, path: &Path) -> io::Result<Option<u64>> {
        match fs::symlink_metadata(path) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        File::open(path)?.sync_all()
    }
}

/// A real file.
#[derive(Debug)]
pub(crate) struct OsFile(File);

impl OsFile {
    pub(crate) fn open(path: &Path, mode: OpenMode) -> io::Result<OsFile> {
        let mut o = OpenOptions::new();
        o.read(true);
        match mode {
            OpenMode::Read => {}
            OpenMode::ReadWrite => {
                o.write(true);
            }
            OpenMode::CreateNew => {
                o.write(true).create_new(true).mode(FILE_MODE);
            }
        }
        o.open(path).map(OsFile)
    }
}

impl StorageFile for OsFile {
    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.0.read_at(buf, offset)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.0.write_all_at(buf, offset)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }

    fn allocate(&self, len: u64) -> io::Result<()> {
        // fallocate keeps appends inside the reserved range from changing
        // the file size, which lets fdatasync skip a metadata update.
        // Where the file system cannot (EOPNOTSUPP), the file is merely
        // extended: the zeros read back the same; only the speed-up is lost.
        match fs4::FileExt::allocate(&self.0, len) {
            Ok(()) => Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EOPNOTSUPP | libc::ENOSYS | libc::EINVAL)
                ) =>
            {
                if self.len()? < len {
                    self.0.set_len(len)?;
                }
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn sync_all(&self) -> io::Result<()> {
        self.0.sync_all()
    }

    fn write_back(&self, offset: u64, len: u64) -> io::Result<()> {
        let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
            return Ok(());
        };
        let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE
            | libc::SYNC_FILE_RANGE_WRITE
            | libc::SYNC_FILE_RANGE_WAIT_AFTER;
        // SAFETY: a plain system call on a descriptor this file owns.
        let rc = unsafe { libc::sync_file_range(self.0.as_raw_fd(), offset, len, flags) };
        if rc == 0 {
            return Ok(());
        }
        match io::Error::last_os_error() {
            // Not on every file system: then the sync does it all at once.
            e if matches!(
                e.raw_os_error(),
                Some(libc::ENOSYS | libc::EINVAL | libc::EOPNOTSUPP)
            ) =>
            {
                Ok(())
            }
            e => Err(e),
        }
    }

    fn map(&self) -> io::Result<Mapping> {
        if self.len()? == 0 {
            return Ok(Mapping::empty());
        }
        // SAFETY: replaydb never shrinks a mapped file below bytes that a
        // reader will touch: readers stay below the committed end, a tail
        // is only truncated down to that end when it is sealed, and a
        // second writer is excluded by the directory lock. The usual hazard
        // of a mapping (another process truncating the file) is the one
        // every mmap-based store accepts.
        let map = unsafe { memmap2::Mmap::map(&self.0) }?;
        Ok(Mapping::from_mmap(map))
    }

    /// Reads only the file's data extents (`SEEK_DATA` / `SEEK_HOLE`): the
    /// preallocated, never written rest of a tail segment is unwritten
    /// extents, reported as holes, so a clean open does not fault in
    /// 64 MiB of zero pages. Where the file system cannot say, every byte
    /// is read.
    fn is_zero_from(&self, map: &[u8], from: u64) -> bool {
        let all_zero = |from: u64| crate::wal::scan::zero_from(map, from);
        let fd = self.0.as_raw_fd();
        let len = map.len() as u64;
        let mut pos = from;
        while pos < len {
            // SAFETY: lseek on a descriptor we own; it moves only the file
            // offset, which replaydb never uses (all I/O is positional).
            let data = unsafe { libc::lseek(fd, pos as libc::off_t, libc::SEEK_DATA) };
            if data < 0 {
                if io::Error::last_os_error().raw_os_error() == Some(libc::ENXIO) {
                    return true;
                }
                return all_zero(pos);
            }
            // SAFETY: as above.
            let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
            let hole = if hole < 0 {
                len
            } else {
                (hole as u64).min(len)
            };
            let data = data as u64;
            if data >= len {
                return true;
            }
            if !zero_range_pread(&self.0, data, hole).unwrap_or_else(|_| all_zero(data)) {
                return false;
            }
            pos = hole.max(data + 1);
        }
        true
    }
}

/// Whether the file holds only zeros in `[from, to)`, read with `pread`
/// in 1 MiB chunks: copying from the page cache is several times cheaper
/// than faulting the same range in through the mapping.
fn zero_range_pread(file: &File, from: u64, to: u64) -> io::Result<bool> {
    let mut buf = vec![0u8; crate::layout::COPY_CHUNK_BYTES];
    let mut pos = from;
    while pos < to {
        let want = ((to - pos) as usize).min(buf.len());
        let chunk = buf.get_mut(..want).unwrap_or_default();
        let n = file.read_at(chunk, pos)?;
        if n == 0 {
            return Ok(true);
        }
        if !crate::wal::scan::all_zero(chunk.get(..n).unwrap_or_default()) {
            return Ok(false);
        }
        pos += n as u64;
    }
    Ok(true)
}
