//! The seam between replaydb and the file system.
//!
//! Every byte the WAL and the snapshots write, every fsync, create,
//! rename and delete under a database directory goes through a
//! [`Storage`]. Production uses [`OsStorage`] (plain files, `pwrite`,
//! `fdatasync`, `mmap`). Tests use `SimDisk` (feature `simulation`), which keeps what was
//! written but never synced apart from what is durable, and at a
//! simulated power cut drops, keeps or tears each unsynced write, chosen
//! by a seed: the crash a SIGKILL cannot show.
//!
//! The lock file is not behind the seam: it guards the process, not data.
//!
//! A replicated log sits behind [`crate::log::Log`], not here; this seam
//! is about one machine's disk.

mod os;
mod overlay;
mod redb_backend;
#[cfg(feature = "simulation")]
mod sim;

use std::fmt::Debug;
use std::io;
use std::ops::Deref;
use std::path::Path;
use std::sync::Arc;

pub use os::OsStorage;
pub(crate) use overlay::OverlayBackend;
pub(crate) use redb_backend::RedbBackend;
#[cfg(feature = "simulation")]
pub use sim::{CrashOutcome, SimDisk, SimRng};

/// How [`Storage::open`] opens a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenMode {
    /// Read only; the file must exist.
    Read,
    /// Read and write; the file must exist.
    ReadWrite,
    /// Read and write; the file must not exist (created 0600).
    CreateNew,
}

/// A file system: the operations replaydb needs, no more.
///
/// Paths are absolute or relative to the process's working directory,
/// exactly as `std::fs` takes them. Errors are plain `io::Error`s; the
/// caller names the operation and the path.
pub trait Storage: Send + Sync + Debug + 'static {
    /// Opens `path` as `mode` says.
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn StorageFile>>;
    /// Creates `path` and any missing parents, mode 0700. Not durable
    /// until the parent is synced ([`Storage::sync_dir`]).
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Whether `path` is a directory.
    fn is_dir(&self, path: &Path) -> bool;
    /// The names in directory `path` (unsorted). Names that are not UTF-8
    /// are returned as `None`, so the caller can say so.
    fn list_dir(&self, path: &Path) -> io::Result<Vec<Option<String>>>;
    /// The length of file `path`, `None` if there is no such file.
    fn file_len(&self, path: &Path) -> io::Result<Option<u64>>;
    /// Renames `from` to `to`, replacing `to`. Not durable until the
    /// directory is synced.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes file `path`. Not durable until the directory is synced.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Makes the entries created, renamed or removed in directory `path`
    /// durable.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
}

/// An open file. Every access is positional, so one file can be shared
/// between threads (the committing leader writes while the flusher syncs).
pub trait StorageFile: Send + Sync + Debug {
    /// The file's length.
    fn len(&self) -> io::Result<u64>;
    /// Whether the file is empty.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
    /// Reads up to `buf.len()` bytes at `offset`; 0 at the end.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// Reads exactly `buf.len()` bytes at `offset`.
    fn read_exact_at(&self, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
        while !buf.is_empty() {
            match self.read_at(buf, offset)? {
                0 => return Err(io::ErrorKind::UnexpectedEof.into()),
                n => {
                    buf = buf.get_mut(n..).unwrap_or_default();
                    offset += n as u64;
                }
            }
        }
        Ok(())
    }
    /// Writes all of `buf` at `offset`. Not durable until synced.
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Sets the length (zeros when it grows). Not durable until synced.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Reserves space up to `len` bytes, growing the file to `len` if it is
    /// shorter; where the file system cannot, it is just extended.
    fn allocate(&self, len: u64) -> io::Result<()>;
    /// Makes the file's data (and the size needed to read it) durable.
    fn sync_data(&self) -> io::Result<()>;
    /// Makes the file's data and metadata durable.
    fn sync_all(&self) -> io::Result<()>;
    /// Writes `len` bytes at `offset` out to the device and waits for
    /// them, promising nothing about durability (no metadata, no device
    /// cache flush): lets a large sync go out in pieces, so that a small
    /// fsync of another file never queues behind all of it. A no-op
    /// where the file system has no such call.
    fn write_back(&self, offset: u64, len: u64) -> io::Result<()> {
        let _ = (offset, len);
        Ok(())
    }
    /// The whole file, read-only. A mapping of a file that is later
    /// written through [`StorageFile::write_all_at`] sees those writes
    /// within its length (as a shared `mmap` does).
    fn map(&self) -> io::Result<Mapping>;
    /// Whether every byte of the file from `from` on is zero. `map` is
    /// this file's mapping; the default reads it, a real file asks the
    /// file system for its data extents first.
    fn is_zero_from(&self, map: &[u8], from: u64) -> bool {
        crate::wal::scan::zero_from(map, from)
    }
}

/// A read-only view of a whole file.
#[derive(Debug)]
pub struct Mapping(MappingBytes);

#[derive(Debug)]
enum MappingBytes {
    Mmap(memmap2::Mmap),
    Empty,
}

impl Mapping {
    /// A mapping of a real file.
    pub(crate) fn from_mmap(map: memmap2::Mmap) -> Mapping {
        Mapping(MappingBytes::Mmap(map))
    }

    /// The mapping of an empty file.
    pub(crate) fn empty() -> Mapping {
        Mapping(MappingBytes::Empty)
    }
}

impl Deref for Mapping {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match &self.0 {
            MappingBytes::Mmap(m) => m,
            MappingBytes::Empty => &[],
        }
    }
}

/// The storage `Options::default()` uses: the operating system's.
pub fn os() -> Arc<dyn Storage> {
    Arc::new(OsStorage)
}
