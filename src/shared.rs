//! [`SharedDb`]: one database many processes open at once. Whoever gets
//! the directory's lock owns it and serves it; the others are clients of
//! it; when the owner dies, one of them takes over.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use crate::client::{Client, ClientOptions, RemoteSubscription, Takeover};
use crate::database::Database;
use crate::engine::{CheckpointOutcome, Db, Subscription};
use crate::error::{Error, Result};
use crate::options::Options;
use crate::server::{Server, default_socket};
use crate::stream::{Appended, Event, ExpectedVersion};
use crate::views::View;

/// How long [`SharedDb::open_or_connect`] waits for a server to answer on
/// a locked directory's socket.
const CONNECT_FOR_CLI: std::time::Duration = std::time::Duration::from_secs(2);

/// Makes the views a database is opened with: each owner, first or
/// taking over, registers the same ones.
pub type ViewsFactory = Arc<dyn Fn() -> Vec<Box<dyn View>> + Send + Sync>;

/// A database opened with [`SharedDb::open`]: the owner (embedded, and
/// serving the others) or a client of the owner, with the same
/// operations ([`Database`]).
///
/// ```
/// use replaydb::{Database, ExpectedVersion, Options, SharedDb};
///
/// let dir = tempfile::tempdir()?;
/// let first = SharedDb::open(dir.path(), Options::default(), || vec![])?;
/// let second = SharedDb::open(dir.path(), Options::default(), || vec![])?;
/// assert!(first.is_owner() && !second.is_owner());
/// second.append("orders", ExpectedVersion::Any, &[b"created".to_vec()])?;
/// assert_eq!(first.stream_version("orders")?, 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct SharedDb {
    mode: Mode,
}

#[derive(Debug)]
enum Mode {
    Owner {
        db: Db,
        /// `None`: opened with [`SharedDb::open_or_connect`], serving no one.
        server: Option<Server>,
    },
    Client {
        client: Client,
        /// What this process serves since it took over, if it did.
        took_over: Arc<Mutex<Option<(Db, Server)>>>,
    },
}

impl SharedDb {
    /// Opens the database at `dir`: if its lock is free, as its owner,
    /// serving on `DIR/replaydb.sock`; otherwise as a client of the owner.
    /// `views` makes the views an owner registers (this one now, or later
    /// if it takes over).
    pub fn open(
        dir: impl AsRef<Path>,
        options: Options,
        views: impl Fn() -> Vec<Box<dyn View>> + Send + Sync + 'static,
    ) -> Result<SharedDb> {
        SharedDb::open_with(dir, options, Arc::new(views), ClientOptions::default())
    }

    /// [`SharedDb::open`] with a views factory and client options.
    pub fn open_with(
        dir: impl AsRef<Path>,
        options: Options,
        views: ViewsFactory,
        client_options: ClientOptions,
    ) -> Result<SharedDb> {
        let dir = dir.as_ref().to_path_buf();
        let socket = default_socket(&dir);
        match Db::open_with_views(&dir, options.clone(), views()) {
            Ok(db) => {
                let server = Some(db.serve(&socket)?);
                Ok(SharedDb {
                    mode: Mode::Owner { db, server },
                })
            }
            Err(Error::Locked { .. }) => {
                let took_over = Arc::new(Mutex::new(None));
                let takeover = take_over(dir, socket.clone(), options, views, took_over.clone());
                let client = Client::connect_taking_over(&socket, client_options, Some(takeover))?;
                Ok(SharedDb {
                    mode: Mode::Client { client, took_over },
                })
            }
            Err(e) => Err(e),
        }
    }

    /// Opens the database at `dir` embedded if its lock is free, serving
    /// no one (the CLI's way: a command is brief); otherwise connects to
    /// the process that serves it. A directory locked by a process that
    /// does not serve it is [`Error::Locked`], as for [`Db::open`].
    pub fn open_or_connect(
        dir: impl AsRef<Path>,
        options: Options,
        views: Vec<Box<dyn View>>,
    ) -> Result<SharedDb> {
        let dir = dir.as_ref();
        match Db::open_with_views(dir, options, views) {
            Ok(db) => Ok(SharedDb {
                mode: Mode::Owner { db, server: None },
            }),
            Err(locked @ Error::Locked { .. }) => {
                let socket = default_socket(dir);
                let quick = ClientOptions::default().reconnect_for(CONNECT_FOR_CLI);
                match Client::connect_with(&socket, quick) {
                    Ok(client) => Ok(SharedDb {
                        mode: Mode::Client {
                            client,
                            took_over: Arc::new(Mutex::new(None)),
                        },
                    }),
                    // Locked, and no server answers: the lock's error
                    // names the holder.
                    Err(Error::Disconnected { .. } | Error::Io { .. }) => Err(locked),
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Whether this handle owns the database (it opened it first). A
    /// client that took over serves the others too, but stays a client
    /// of its own server.
    pub fn is_owner(&self) -> bool {
        matches!(self.mode, Mode::Owner { .. })
    }

    /// Whether this process serves the database now: it owns it, or took
    /// over when the owner died.
    pub fn serves(&self) -> bool {
        match &self.mode {
            Mode::Owner { .. } => true,
            Mode::Client { took_over, .. } => took_over
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_some(),
        }
    }

    /// The embedded database, if this handle owns it.
    pub fn db(&self) -> Option<&Db> {
        match &self.mode {
            Mode::Owner { db, .. } => Some(db),
            Mode::Client { .. } => None,
        }
    }

    /// Where a view handle of this database works: the embedded
    /// database, or the client of its owner.
    pub(crate) fn backend(&self) -> crate::remote::Backend {
        match &self.mode {
            Mode::Owner { db, .. } => crate::remote::Backend::Local(db.clone()),
            Mode::Client { client, .. } => crate::remote::Backend::Remote(client.clone()),
        }
    }

    /// The owner's server, if this handle owns it and serves.
    pub fn server(&self) -> Option<&Server> {
        match &self.mode {
            Mode::Owner { server, .. } => server.as_ref(),
            Mode::Client { .. } => None,
        }
    }
}

/// The client's takeover: lock the directory and serve it, if no one
/// holds it.
fn take_over(
    dir: PathBuf,
    socket: PathBuf,
    options: Options,
    views: ViewsFactory,
    slot: Arc<Mutex<Option<(Db, Server)>>>,
) -> Takeover {
    Arc::new(move || {
        let mut slot = slot.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.is_some() {
            // This process serves already: its server is starting or
            // gone; the client's backoff decides.
            return Ok(false);
        }
        match Db::open_with_views(&dir, options.clone(), views()) {
            Ok(db) => {
                let server = db.serve(&socket)?;
                tracing::warn!(
                    dir = %dir.display(),
                    "the owner is gone: this process recovered the database and serves it"
                );
                *slot = Some((db, server));
                Ok(true)
            }
            // Another client was first: connect to it.
            Err(Error::Locked { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    })
}

/// [`Database::subscribe`] of a [`SharedDb`].
#[derive(Debug)]
pub enum SharedSubscription {
    /// The owner's, embedded.
    Local(Subscription),
    /// A client's, through the owner.
    Remote(RemoteSubscription),
}

impl Iterator for SharedSubscription {
    type Item = Result<Event>;

    fn next(&mut self) -> Option<Result<Event>> {
        match self {
            SharedSubscription::Local(s) => s.next(),
            SharedSubscription::Remote(s) => s.next(),
        }
    }
}

macro_rules! either {
    ($self:ident, $h:ident => $e:expr) => {
        match &$self.mode {
            Mode::Owner { db: $h, .. } => $e,
            Mode::Client { client: $h, .. } => $e,
        }
    };
}

impl Database for SharedDb {
    type Subscription = SharedSubscription;

    fn append<E: AsRef<[u8]>>(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: &[E],
    ) -> Result<Appended> {
        either!(self, h => Database::append(h, stream, expected, events))
    }

    fn read(&self, from_lsn: u64, limit: usize) -> Result<Vec<Event>> {
        either!(self, h => Database::read(h, from_lsn, limit))
    }

    fn read_stream(&self, stream: &str, from_version: u64, limit: usize) -> Result<Vec<Event>> {
        either!(self, h => Database::read_stream(h, stream, from_version, limit))
    }

    fn read_stream_from_lsn(
        &self,
        stream: &str,
        from_lsn: u64,
        limit: usize,
    ) -> Result<Vec<Event>> {
        either!(self, h => Database::read_stream_from_lsn(h, stream, from_lsn, limit))
    }

    fn stream_version(&self, stream: &str) -> Result<u64> {
        either!(self, h => Database::stream_version(h, stream))
    }

    fn record_bytes_max(&self) -> u64 {
        either!(self, h => Database::record_bytes_max(h))
    }

    fn last_lsn(&self) -> Result<u64> {
        either!(self, h => Database::last_lsn(h))
    }

    fn subscribe(&self, from_lsn: u64) -> Result<SharedSubscription> {
        match &self.mode {
            Mode::Owner { db, .. } => db.subscribe(from_lsn).map(SharedSubscription::Local),
            Mode::Client { client, .. } => {
                Database::subscribe(client, from_lsn).map(SharedSubscription::Remote)
            }
        }
    }

    fn sync(&self) -> Result<u64> {
        either!(self, h => Database::sync(h))
    }

    fn checkpoint(&self) -> Result<CheckpointOutcome> {
        either!(self, h => Database::checkpoint(h))
    }

    fn stats(&self) -> Result<crate::engine::Stats> {
        either!(self, h => Database::stats(h))
    }

    fn retention(&self, stream: &str) -> Result<crate::Retention> {
        either!(self, h => Database::retention(h, stream))
    }

    fn set_retention(&self, stream: &str, retention: crate::Retention) -> Result<Appended> {
        either!(self, h => Database::set_retention(h, stream, retention))
    }

    fn backup(&self, dest: &Path) -> Result<u64> {
        either!(self, h => Database::backup(h, dest))
    }
}
