//! redb's storage backend over a [`StorageFile`], so snapshot files go
//! through the same seam as the WAL (and the simulated disk sees them).

use std::io;
use std::sync::Arc;

use super::StorageFile;

/// A snapshot file as redb sees it. No locking: the database directory's
/// lock already excludes a second writer.
#[derive(Debug)]
pub(crate) struct RedbBackend(pub(crate) Arc<dyn StorageFile>);

impl redb::StorageBackend for RedbBackend {
    fn len(&self) -> io::Result<u64> {
        self.0.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.0.read_exact_at(out, offset)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.0.write_all_at(data, offset)
    }
}
