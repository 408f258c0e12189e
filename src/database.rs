//! The operations a host uses the same way on an embedded database and on
//! one another process serves: [`Database`], for [`Db`] and
//! [`Client`](crate::client::Client).

use std::path::Path;

use crate::engine::{CheckpointOutcome, Db, Stats, Subscription};
use crate::error::Result;
use crate::retention::Retention;
use crate::stream::{Appended, Event, ExpectedVersion};

/// A database, embedded or shared: write host code against this and it
/// runs on either.
///
/// ```
/// use replaydb::{Database, Db, ExpectedVersion, Options};
///
/// fn record(db: &impl Database, order: &str) -> replaydb::Result<u64> {
///     let done = db.append(order, ExpectedVersion::Any, &[b"created".to_vec()])?;
///     Ok(done.last_lsn)
/// }
///
/// let dir = tempfile::tempdir()?;
/// let db = Db::open(dir.path(), Options::default())?;
/// assert_eq!(record(&db, "order-1")?, 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait Database: Send + Sync {
    /// What [`Database::subscribe`] returns: every committed event from an
    /// LSN on, blocking.
    type Subscription: Iterator<Item = Result<Event>> + Send;

    /// [`Db::append`].
    fn append<E: AsRef<[u8]>>(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: &[E],
    ) -> Result<Appended>;

    /// [`Db::read`].
    fn read(&self, from_lsn: u64, limit: usize) -> Result<Vec<Event>>;

    /// [`Db::read_stream`].
    fn read_stream(&self, stream: &str, from_version: u64, limit: usize) -> Result<Vec<Event>>;

    /// [`Db::read_stream_from_lsn`].
    fn read_stream_from_lsn(&self, stream: &str, from_lsn: u64, limit: usize)
    -> Result<Vec<Event>>;

    /// [`Db::stream_version`].
    fn stream_version(&self, stream: &str) -> Result<u64>;

    /// The largest batch an append takes, encoded
    /// ([`Options::record_bytes_max`](crate::Options::record_bytes_max) of
    /// whoever opened the database).
    fn record_bytes_max(&self) -> u64;

    /// [`Db::last_lsn`].
    fn last_lsn(&self) -> Result<u64>;

    /// [`Db::subscribe`].
    fn subscribe(&self, from_lsn: u64) -> Result<Self::Subscription>;

    /// [`Db::sync`].
    fn sync(&self) -> Result<u64>;

    /// [`Db::checkpoint`].
    fn checkpoint(&self) -> Result<CheckpointOutcome>;

    /// [`Db::stats`].
    fn stats(&self) -> Result<Stats>;

    /// [`Db::retention`].
    fn retention(&self, stream: &str) -> Result<Retention>;

    /// [`Db::set_retention`].
    fn set_retention(&self, stream: &str, retention: Retention) -> Result<Appended>;

    /// [`Db::backup`]. Through a server, the serving process writes the
    /// copy (a relative `dest` is taken from this process's directory).
    fn backup(&self, dest: &Path) -> Result<u64>;
}

impl Database for Db {
    type Subscription = Subscription;

    fn append<E: AsRef<[u8]>>(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: &[E],
    ) -> Result<Appended> {
        Db::append(self, stream, expected, events)
    }

    fn read(&self, from_lsn: u64, limit: usize) -> Result<Vec<Event>> {
        Db::read(self, from_lsn, limit)
    }

    fn read_stream(&self, stream: &str, from_version: u64, limit: usize) -> Result<Vec<Event>> {
        Db::read_stream(self, stream, from_version, limit)
    }

    fn read_stream_from_lsn(
        &self,
        stream: &str,
        from_lsn: u64,
        limit: usize,
    ) -> Result<Vec<Event>> {
        Db::read_stream_from_lsn(self, stream, from_lsn, limit)
    }

    fn stream_version(&self, stream: &str) -> Result<u64> {
        Db::stream_version(self, stream)
    }

    fn record_bytes_max(&self) -> u64 {
        self.options().record_bytes_max
    }

    fn last_lsn(&self) -> Result<u64> {
        Ok(Db::last_lsn(self))
    }

    fn subscribe(&self, from_lsn: u64) -> Result<Subscription> {
        Db::subscribe(self, from_lsn)
    }

    fn sync(&self) -> Result<u64> {
        Db::sync(self)
    }

    fn checkpoint(&self) -> Result<CheckpointOutcome> {
        Db::checkpoint(self)
    }

    fn stats(&self) -> Result<Stats> {
        Db::stats(self)
    }

    fn retention(&self, stream: &str) -> Result<Retention> {
        Db::retention(self, stream)
    }

    fn set_retention(&self, stream: &str, retention: Retention) -> Result<Appended> {
        Db::set_retention(self, stream, retention)
    }

    fn backup(&self, dest: &Path) -> Result<u64> {
        Db::backup(self, dest)
    }
}
