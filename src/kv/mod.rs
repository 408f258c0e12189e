//! The KV view: buckets of keys with revisions, leases and watches, the
//! contract of dynamo's key-value stores (file, memory, etcd) on the log.
//!
//! Every put and delete is one event on `$kv`, and its revision is its
//! LSN. Creates, deletes and compare-and-replace are decided in the writer
//! against the view's tables, so of N racing creators exactly one gets
//! `Created`; an overwrite decides nothing and is a plain append. Keys belong to their owner's
//! lease; an owner is alive while a [`KvStore`] of its lease exists in
//! this process (keep-alives are in memory and write nothing), and a dead
//! owner's keys are deleted, as events, a bucket's TTL later (see
//! [`lease`]). A watch reads a bucket's changes from the store, from a
//! snapshot or from any revision, so it never loses or repeats one.
//!
//! ```
//! use replaydb::kv::{Key, KvStore, StoreOutcome, WatchEvent};
//! # let tmp = tempfile::tempdir().unwrap();
//! let store = KvStore::open(tmp.path(), replaydb::Options::default(), vec![])?;
//! let bucket = store.get_or_create_bucket("v1/instances", None)?;
//! let key = Key::new("ns/component/endpoint/1a2b");
//! assert!(matches!(bucket.insert(&key, b"hello".to_vec(), 0)?, StoreOutcome::Created(_)));
//! assert!(matches!(bucket.insert(&key, b"other".to_vec(), 0)?, StoreOutcome::Exists(_)));
//! assert_eq!(bucket.get(&key)?.as_deref(), Some(&b"hello"[..]));
//! let mut watch = bucket.watch()?;
//! assert!(matches!(watch.next_blocking()?, WatchEvent::Resync(_)));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod cache;
mod key;
pub mod lease;
pub mod record;
pub(crate) mod remote;
pub mod view;
mod watch;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use cache::{CACHED_BUCKET_BYTES_MAX, CACHED_BUCKET_KEYS_MAX, CACHED_BYTES_MAX, Entries};
pub use key::{KEY_BYTES_MAX, Key};
pub use record::{DeleteReason, KV_STREAM, KvChange, KvRecord};
pub use view::{KV_VIEW, KeyRow, KvView};
pub use watch::{KeyValue, Revisioned, Watch, WatchEvent};

use crate::client::Client;
use crate::engine::Db;
use crate::remote::Backend;
use crate::stream::ExpectedVersion;
use crate::views::View;
use lease::{Leases, OwnerToken};
use remote::KvCall;
use serde_bytes::ByteBuf;
use view::{BUCKETS, KEYS, LEASES, Tables, VALUES, bucket_prefix, key_key, split_lease_key};

/// A bucket's TTL when none is given.
pub const TTL_DEFAULT: Duration = Duration::from_secs(10);
/// The shortest TTL: a shorter one is raised to it, with a warning.
pub const TTL_MIN: Duration = Duration::from_secs(1);
/// Deletes one expiry or shutdown command carries at most.
const DELETES_PER_COMMAND_MAX: usize = 512;

/// Everything a KV operation can refuse (the same through a server: it
/// crosses the socket as itself).
#[derive(Debug, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum KvError {
    /// No bucket of that name.
    #[error("Could not find bucket '{0}'")]
    MissingBucket(String),
    /// No such key (the bucket and the key).
    #[error("Could not find key '{0}'")]
    MissingKey(String),
    /// The value changed under a compare-and-replace: read and try again.
    #[error("Race condition, retry the call")]
    Retry,
    /// A request that is not valid (a name or key too long, ...).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The database failed.
    #[error(transparent)]
    Db(
        #[from]
        #[serde(with = "crate::remote::as_wire")]
        crate::Error,
    ),
}

/// What an insert did, with the revision of the key's value now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum StoreOutcome {
    /// This call wrote the value, at this revision.
    Created(u64),
    /// The key was there already (revision 0 asked to create only): its
    /// value is untouched, at this revision.
    Exists(u64),
}

fn not_registered(op: &'static str) -> KvError {
    KvError::Db(crate::Error::ViewNotRegistered { op, view: "kv" })
}

fn check_len(what: &str, s: &str) -> Result<(), KvError> {
    if s.len() > KEY_BYTES_MAX {
        return Err(KvError::InvalidRequest(format!(
            "{what} is {} bytes, above the limit of {KEY_BYTES_MAX}",
            s.len()
        )));
    }
    Ok(())
}

fn encode(op: &'static str, change: KvChange) -> crate::Result<Vec<u8>> {
    KvRecord {
        at_unix_ms: crate::stream::now_unix_ms(),
        change,
    }
    .encode()
    .map_err(|e| crate::Error::Encode {
        op,
        reason: e.to_string(),
    })
}

/// One owner of keys on a database: a connection, in dynamo's words.
/// Clones share the owner; the owner is alive while one of them is.
/// Embedded, or through the process that serves the database
/// ([`KvStore::remote`]), with the same API.
#[derive(Clone, Debug)]
pub struct KvStore {
    backend: Backend,
    connection_id: u64,
    _held: Held,
}

/// What keeps an owner alive.
#[derive(Clone, Debug)]
enum Held {
    Local {
        /// The owner is alive while one of its handles is. `None`: its
        /// keys carry no lease and never expire.
        _owner: Option<Arc<OwnerToken>>,
        /// The expirer runs while any store handle lives.
        _expirer: Arc<lease::ExpirerLink>,
    },
    /// Through a server: the server holds the owner while the client's
    /// connection lives and one of these handles does (the server's
    /// expirer runs there).
    Remote {
        _owner: Option<Arc<remote::RemoteOwner>>,
    },
}

impl KvStore {
    /// Opens the database at `dir` with the KV view (and `views`)
    /// registered, as a new owner.
    pub fn open(
        dir: impl AsRef<Path>,
        options: crate::Options,
        mut views: Vec<Box<dyn View>>,
    ) -> Result<KvStore, KvError> {
        views.insert(0, Box::new(KvView::default()));
        KvStore::new(Db::open_with_views(dir, options, views)?)
    }

    /// A new owner on `db` (opened with a [`KvView`]), with a random
    /// connection id.
    pub fn new(db: Db) -> Result<KvStore, KvError> {
        KvStore::with_connection_id(db, random_connection_id())
    }

    /// The owner `connection_id` (not 0) on `db`: after a restart, an
    /// owner that attaches again within its grace keeps its keys.
    pub fn with_connection_id(db: Db, connection_id: u64) -> Result<KvStore, KvError> {
        if connection_id == 0 {
            return Err(KvError::InvalidRequest(
                "connection id 0 means no lease".into(),
            ));
        }
        let leases = leases_of(&db)?;
        let owner = leases.attach(connection_id, start_expirer(&db, &leases));
        Ok(KvStore {
            _held: Held::Local {
                _expirer: owner.expirer(),
                _owner: Some(owner),
            },
            backend: Backend::Local(db),
            connection_id,
        })
    }

    /// An owner whose keys carry no lease: they stay until deleted (the
    /// CLI writes this way unless asked for a TTL). It still runs the
    /// expirer for the others' while it lives.
    pub fn without_lease(db: Db) -> Result<KvStore, KvError> {
        let leases = leases_of(&db)?;
        Ok(KvStore {
            _held: Held::Local {
                _expirer: leases.expirer(start_expirer(&db, &leases)),
                _owner: None,
            },
            backend: Backend::Local(db),
            connection_id: 0,
        })
    }

    /// A new owner, with a random id, on the database `client`'s server
    /// serves (opened there with a [`KvView`]). The server keeps it alive
    /// while this client is connected and one of its handles lives; a
    /// client that reconnects (the server restarted, or another process
    /// took over) attaches it again, so its keys outlive a gap shorter
    /// than their bucket's TTL.
    pub fn remote(client: Client) -> Result<KvStore, KvError> {
        KvStore::remote_with_connection_id(client, random_connection_id())
    }

    /// [`KvStore::remote`] as the owner `connection_id` (not 0).
    pub fn remote_with_connection_id(
        client: Client,
        connection_id: u64,
    ) -> Result<KvStore, KvError> {
        if connection_id == 0 {
            return Err(KvError::InvalidRequest(
                "connection id 0 means no lease".into(),
            ));
        }
        let owner = remote::RemoteOwner::attach(client.clone(), connection_id)?;
        Ok(KvStore {
            backend: Backend::Remote(client),
            connection_id,
            _held: Held::Remote {
                _owner: Some(owner),
            },
        })
    }

    /// [`KvStore::without_lease`] through `client`'s server.
    pub fn remote_without_lease(client: Client) -> Result<KvStore, KvError> {
        remote::call::<()>(&client, KvCall::Attach { leases: vec![0] }, true)?;
        Ok(KvStore {
            backend: Backend::Remote(client),
            connection_id: 0,
            _held: Held::Remote { _owner: None },
        })
    }

    /// The KV store of a [`SharedDb`](crate::SharedDb), as a new owner:
    /// embedded if it owns the database, through its owner otherwise.
    pub fn shared(db: &crate::SharedDb) -> Result<KvStore, KvError> {
        match db.backend() {
            Backend::Local(db) => KvStore::new(db),
            Backend::Remote(client) => KvStore::remote(client),
        }
    }

    /// [`KvStore::shared`] with keys that carry no lease.
    pub fn shared_without_lease(db: &crate::SharedDb) -> Result<KvStore, KvError> {
        match db.backend() {
            Backend::Local(db) => KvStore::without_lease(db),
            Backend::Remote(client) => KvStore::remote_without_lease(client),
        }
    }

    /// The embedded database (`None` through a server).
    pub fn db(&self) -> Option<&Db> {
        self.backend.db()
    }

    fn remote_client(&self) -> Option<&Client> {
        self.backend.client()
    }

    /// This owner's id (its lease; 0 for [`KvStore::without_lease`]).
    pub fn connection_id(&self) -> u64 {
        self.connection_id
    }

    /// The bucket `name`, created with `ttl` (default 10 s; under 1 s is
    /// raised to 1 s with a warning) if it does not exist; an existing
    /// bucket keeps its own TTL.
    pub fn get_or_create_bucket(
        &self,
        name: &str,
        ttl: Option<Duration>,
    ) -> Result<Bucket, KvError> {
        check_len("bucket name", name)?;
        let mut ttl = ttl.unwrap_or(TTL_DEFAULT);
        if ttl < TTL_MIN {
            tracing::warn!(
                bucket = name,
                ?ttl,
                "ttl is too short, increasing to {TTL_MIN:?}"
            );
            ttl = TTL_MIN;
        }
        let bucket = name.to_string();
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        if let Some(c) = self.remote_client() {
            let call = KvCall::GetOrCreateBucket {
                lease: self.connection_id,
                name: bucket,
                ttl_ms: Some(ttl_ms),
            };
            // Idempotent: a create that was done is found the next time.
            let row: u64 = remote::call(c, call, true)?;
            return Ok(self.bucket_handle(name, row));
        }
        let row = self.command("get_or_create_bucket", move |tables, _| {
            if let Some(row) = tables.bucket(&bucket)? {
                return Ok((Vec::new(), row.ttl_ms));
            }
            Ok((
                vec![KvChange::BucketCreated {
                    bucket: bucket.clone(),
                    ttl_ms,
                }],
                ttl_ms,
            ))
        })?;
        Ok(self.bucket_handle(name, row))
    }

    /// The bucket `name`, if it exists.
    pub fn get_bucket(&self, name: &str) -> Result<Option<Bucket>, KvError> {
        check_len("bucket name", name)?;
        if let Some(c) = self.remote_client() {
            let call = KvCall::GetBucket {
                name: name.to_string(),
            };
            let row: Option<u64> = remote::call(c, call, true)?;
            return Ok(row.map(|ttl_ms| self.bucket_handle(name, ttl_ms)));
        }
        let row = self.read(|t| Ok(t.bucket(name)?))?;
        Ok(row.map(|r| self.bucket_handle(name, r.ttl_ms)))
    }

    /// Every bucket's name, in name order.
    pub fn buckets(&self) -> Result<Vec<String>, KvError> {
        if let Some(c) = self.remote_client() {
            return remote::call(c, KvCall::Buckets, true);
        }
        self.read(|t| {
            let mut out = Vec::new();
            t.scan(BUCKETS, &[], &[], |k, _| {
                out.push(t.text(BUCKETS, k)?.to_string());
                Ok(true)
            })?;
            Ok(out)
        })
    }

    fn bucket_handle(&self, name: &str, ttl_ms: u64) -> Bucket {
        Bucket {
            store: self.clone(),
            name: name.to_string(),
            ttl: Duration::from_millis(ttl_ms),
        }
    }

    /// Deletes every key this owner wrote (events with reason
    /// `Shutdown`); returns how many. The owner stays usable.
    pub fn shutdown(&self) -> Result<u64, KvError> {
        if self.connection_id == 0 {
            return Ok(0);
        }
        if let Some(c) = self.remote_client() {
            let call = KvCall::Shutdown {
                lease: self.connection_id,
            };
            return remote::call(c, call, false);
        }
        let n = delete_lease_keys(
            self.backend.local("kv shutdown")?,
            self.connection_id,
            DeleteReason::Shutdown,
            |_| true,
            None,
            &|| true,
        )?;
        Ok(n)
    }

    /// Runs a command: `decide` reads the tables (and gets the revision
    /// the first event will have) and returns the changes and the answer.
    fn command<T: Send + 'static>(
        &self,
        op: &'static str,
        decide: impl Fn(&Tables<'_, '_>, u64) -> Result<(Vec<KvChange>, T), KvError> + Send + 'static,
    ) -> Result<T, KvError> {
        command(self.backend.local(op)?, op, decide)
    }

    fn read<T>(&self, f: impl FnOnce(&Tables<'_, '_>) -> Result<T, KvError>) -> Result<T, KvError> {
        read_at(self.backend.local("kv read")?, f).map(|(v, _)| v)
    }
}

fn random_connection_id() -> u64 {
    loop {
        let id = uuid::Uuid::new_v4().as_u64_pair().0;
        if id != 0 {
            return id;
        }
    }
}

/// What starts the expirer thread, if none runs.
fn start_expirer(
    db: &Db,
    leases: &Arc<Leases>,
) -> impl FnOnce(std::sync::mpsc::Receiver<()>) -> Option<std::thread::JoinHandle<()>> {
    let (expirer_db, expirer_leases) = (db.downgrade(), leases.clone());
    move |stop| {
        let spawned = std::thread::Builder::new()
            .name("replaydb-kv-expirer".into())
            .spawn(move || expire_loop(expirer_db, expirer_leases, stop));
        match spawned {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::error!(error = %e, "the KV expirer thread did not start");
                None
            }
        }
    }
}

fn leases_of(db: &Db) -> Result<Arc<Leases>, KvError> {
    db.view(|v: &KvView| v.leases.clone())?
        .map(|at| at.value)
        .ok_or_else(|| not_registered("kv"))
}

fn command<T: Send + 'static>(
    db: &Db,
    op: &'static str,
    decide: impl Fn(&Tables<'_, '_>, u64) -> Result<(Vec<KvChange>, T), KvError> + Send + 'static,
) -> Result<T, KvError> {
    let result = db.execute_with(KV_STREAM, ExpectedVersion::Any, move |views| {
        let read = views
            .tables::<KvView>()
            .ok_or_else(|| crate::Error::ViewNotRegistered { op, view: "kv" })?;
        // The first event of this command gets the next LSN.
        let revision = views.applied_lsn() + 1;
        let (changes, value) =
            decide(&Tables { read: &read }, revision).map_err(crate::Error::rejected)?;
        let events = changes
            .into_iter()
            .map(|c| encode(op, c))
            .collect::<crate::Result<Vec<_>>>()?;
        Ok((events, value))
    });
    match result {
        Ok((_, value)) => Ok(value),
        Err(e) => Err(e.into_rejected::<KvError>().unwrap_or_else(KvError::Db)),
    }
}

fn read_at<T>(
    db: &Db,
    f: impl FnOnce(&Tables<'_, '_>) -> Result<T, KvError>,
) -> Result<(T, u64), KvError> {
    let at = db
        .view_tables(|_: &KvView, read| Ok(f(&Tables { read })))?
        .ok_or_else(|| not_registered("kv read"))?;
    at.value.map(|v| (v, at.lsn))
}

/// Bytes of keys one expiry or shutdown command deletes at most, so a
/// command stays well under any record limit.
const DELETE_BYTES_PER_COMMAND_MAX: usize = 256 << 10;

/// Deletes the keys of `lease` in the buckets `which` selects, a bounded
/// batch per command, each key checked to be the lease's still (and,
/// with `unless_alive`, the lease to have no live owner: one that
/// attached again since the sweep keeps its keys). Stops between batches
/// once `keep_going` says so. Returns how many went.
fn delete_lease_keys(
    db: &Db,
    lease: u64,
    reason: DeleteReason,
    which: impl Fn(&str) -> bool,
    unless_alive: Option<Arc<Leases>>,
    keep_going: &dyn Fn() -> bool,
) -> Result<u64, KvError> {
    let mut deleted = 0u64;
    let mut idle_rounds = 0;
    while keep_going() {
        let prefix = lease.to_be_bytes();
        let mut batch: Vec<(String, String)> = Vec::new();
        let mut bytes = 0usize;
        read_at(db, |t| {
            t.read.for_each_from(LEASES, Some(&prefix), |k, _| {
                if !k.starts_with(&prefix) {
                    return Ok(false);
                }
                if let Some((_, bucket, key)) = split_lease_key(k)
                    && which(&bucket)
                {
                    bytes += bucket.len() + key.len();
                    batch.push((bucket, key));
                }
                Ok(batch.len() < DELETES_PER_COMMAND_MAX && bytes < DELETE_BYTES_PER_COMMAND_MAX)
            })?;
            Ok(())
        })?;
        if batch.is_empty() {
            break;
        }
        let leases = unless_alive.clone();
        let n = command(db, "delete_lease_keys", move |t, _| {
            if leases.as_ref().is_some_and(|l| l.is_alive(lease)) {
                return Ok((Vec::new(), 0));
            }
            let mut changes = Vec::new();
            for (bucket, key) in batch.iter().cloned() {
                if t.key(&bucket, &key)?.is_some_and(|r| r.lease == lease) {
                    changes.push(KvChange::Delete {
                        bucket,
                        key,
                        reason,
                    });
                }
            }
            let n = changes.len() as u64;
            Ok((changes, n))
        })?;
        if n == 0 {
            // Nothing listed was deleted: taken over or deleted meanwhile
            // (then the index no longer lists it), or the owner is back.
            idle_rounds += 1;
            if idle_rounds >= 3 || unless_alive.as_ref().is_some_and(|l| l.is_alive(lease)) {
                break;
            }
            continue;
        }
        deleted += n;
    }
    Ok(deleted)
}

/// The expirer: every check interval, refreshes the live owners and
/// deletes the keys of dead ones whose bucket's TTL has passed since they
/// were last alive. Stops as soon as the last owner is gone.
fn expire_loop(
    db: crate::engine::WeakDb,
    leases: Arc<Leases>,
    stop: std::sync::mpsc::Receiver<()>,
) {
    let mut interval = lease::CHECK_INTERVAL_MIN;
    loop {
        if !lease::wait(&stop, interval) {
            return;
        }
        // Held only for this check: the database closes with its users.
        let Some(db) = db.upgrade() else { return };
        let keep_going = || matches!(stop.try_recv(), Err(std::sync::mpsc::TryRecvError::Empty));
        interval = expire_once(&db, &leases, &keep_going);
    }
}

/// Every bucket's TTL.
fn bucket_ttls(db: &Db) -> Result<HashMap<String, Duration>, KvError> {
    read_at(db, |t| {
        let mut ttls = HashMap::new();
        t.scan(BUCKETS, &[], &[], |k, v| {
            let row: view::BucketRow = t.decode(BUCKETS, k, v)?;
            ttls.insert(
                t.text(BUCKETS, k)?.to_string(),
                Duration::from_millis(row.ttl_ms),
            );
            Ok(true)
        })?;
        Ok(ttls)
    })
    .map(|(t, _)| t)
}

/// One look: deletes what is due; returns the next check interval (a
/// third of the shortest bucket TTL, at least the minimum).
fn expire_once(db: &Db, leases: &Arc<Leases>, keep_going: &dyn Fn() -> bool) -> Duration {
    let ttls = match bucket_ttls(db) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "the KV expirer could not read the buckets");
            return lease::CHECK_INTERVAL_MIN;
        }
    };
    let shortest = ttls.values().copied().min().unwrap_or(TTL_DEFAULT);
    for (lease_id, last_alive) in leases.sweep() {
        let now = Instant::now();
        let due = |bucket: &str| {
            let ttl = ttls.get(bucket).copied().unwrap_or(TTL_DEFAULT);
            now.duration_since(last_alive) >= ttl
        };
        let reason = DeleteReason::LeaseExpired { lease: lease_id };
        match delete_lease_keys(db, lease_id, reason, due, Some(leases.clone()), keep_going) {
            Ok(0) => {}
            Ok(n) => tracing::info!(lease = lease_id, keys = n, "a dead owner's keys expired"),
            Err(e) => {
                tracing::error!(lease = lease_id, error = %e, "expiring a lease's keys failed");
            }
        }
        let prefix = lease_id.to_be_bytes();
        let left = read_at(db, |t| {
            let mut any = false;
            t.scan(LEASES, &prefix, &prefix, |_, _| {
                any = true;
                Ok(false)
            })?;
            Ok(any)
        });
        if matches!(left, Ok((false, _))) {
            leases.forget(lease_id);
        }
    }
    (shortest / 3).max(lease::CHECK_INTERVAL_MIN)
}

/// A bucket: keys relative to it, a TTL for a dead owner's keys.
#[derive(Clone, Debug)]
pub struct Bucket {
    store: KvStore,
    name: String,
    ttl: Duration,
}

impl Bucket {
    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How long a dead owner's keys outlive it.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn full(&self, key: &str) -> String {
        format!("{}/{key}", self.name)
    }

    /// Writes `value` under `key`, owned by this store's lease. Revision 0
    /// creates only: `Created` if this call wrote it, `Exists` (value
    /// untouched) if the key was there. Any other revision overwrites and
    /// is `Created`. The outcome carries the key's revision (an LSN).
    pub fn insert(
        &self,
        key: &Key,
        value: impl Into<Vec<u8>>,
        revision: u64,
    ) -> Result<StoreOutcome, KvError> {
        check_len("key", key.as_str())?;
        let (bucket, key, value) = (self.name.clone(), key.as_str().to_string(), value.into());
        let lease = self.store.connection_id;
        if let Some(c) = self.store.remote_client() {
            let call = KvCall::Insert {
                lease,
                bucket,
                key: Key::new(key),
                value: ByteBuf::from(value),
                revision,
            };
            return remote::call(c, call, false);
        }
        if revision != 0 {
            // An overwrite decides nothing: buckets are never deleted, so
            // this handle's exists (the fold checks it all the same). So it
            // is a plain append, without a command's hand-off to the
            // applier and back on its path.
            let put = encode(
                "insert",
                KvChange::Put {
                    bucket,
                    key,
                    value,
                    lease,
                },
            )?;
            let appended = self
                .store
                .backend
                .local("insert")?
                .append_internal(KV_STREAM, &[put])?;
            return Ok(StoreOutcome::Created(appended.first_lsn));
        }
        self.store.command("insert", move |t, rev| {
            if let Some(row) = t.key(&bucket, &key)? {
                return Ok((Vec::new(), StoreOutcome::Exists(row.mod_revision)));
            }
            Ok((
                vec![KvChange::Put {
                    bucket: bucket.clone(),
                    key: key.clone(),
                    value: value.clone(),
                    lease,
                }],
                StoreOutcome::Created(rev),
            ))
        })
    }

    /// Replaces `key`'s value with `value` only if it is `expected` now:
    /// a missing key is `MissingKey` (and is not created), another value
    /// `Retry`. Returns the new revision.
    pub fn compare_and_replace(
        &self,
        key: &Key,
        expected: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
    ) -> Result<StoreOutcome, KvError> {
        check_len("key", key.as_str())?;
        let (bucket, key, expected, value) = (
            self.name.clone(),
            key.as_str().to_string(),
            expected.into(),
            value.into(),
        );
        let full = self.full(&key);
        let lease = self.store.connection_id;
        if let Some(c) = self.store.remote_client() {
            let call = KvCall::CompareAndReplace {
                lease,
                bucket,
                key: Key::new(key),
                expected: ByteBuf::from(expected),
                value: ByteBuf::from(value),
            };
            return remote::call(c, call, false);
        }
        self.store.command("compare_and_replace", move |t, rev| {
            if t.bucket(&bucket)?.is_none() {
                return Err(KvError::MissingBucket(bucket.clone()));
            }
            match t.value(&bucket, &key)? {
                None => Err(KvError::MissingKey(full.clone())),
                Some(v) if v != expected => Err(KvError::Retry),
                Some(_) => Ok((
                    vec![KvChange::Put {
                        bucket: bucket.clone(),
                        key: key.clone(),
                        value: value.clone(),
                        lease,
                    }],
                    StoreOutcome::Created(rev),
                )),
            }
        })
    }

    /// The value of `key`, if any.
    pub fn get(&self, key: &Key) -> Result<Option<Vec<u8>>, KvError> {
        if let Some(c) = self.store.remote_client() {
            let call = KvCall::Get {
                bucket: self.name.clone(),
                key: key.clone(),
            };
            let value: Option<ByteBuf> = remote::call(c, call, true)?;
            return Ok(value.map(ByteBuf::into_vec));
        }
        self.store.read(|t| Ok(t.value(&self.name, key.as_str())?))
    }

    /// The value of `key` with its revisions and lease.
    pub fn get_with_revision(&self, key: &Key) -> Result<Option<(Vec<u8>, KeyRow)>, KvError> {
        if let Some(c) = self.store.remote_client() {
            let call = KvCall::GetWithRevision {
                bucket: self.name.clone(),
                key: key.clone(),
            };
            let found: Option<(ByteBuf, KeyRow)> = remote::call(c, call, true)?;
            return Ok(found.map(|(v, row)| (v.into_vec(), row)));
        }
        self.store.read(|t| {
            Ok(
                match (
                    t.key(&self.name, key.as_str())?,
                    t.value(&self.name, key.as_str())?,
                ) {
                    (Some(row), Some(v)) => Some((v, row)),
                    _ => None,
                },
            )
        })
    }

    /// Deletes `key`: `MissingKey` (naming it) if it is not there.
    /// Returns the delete's revision.
    pub fn delete(&self, key: &Key) -> Result<u64, KvError> {
        check_len("key", key.as_str())?;
        let (bucket, key) = (self.name.clone(), key.as_str().to_string());
        let full = self.full(&key);
        if let Some(c) = self.store.remote_client() {
            let call = KvCall::Delete {
                lease: self.store.connection_id,
                bucket,
                key: Key::new(key),
            };
            return remote::call(c, call, false);
        }
        self.store.command("delete", move |t, rev| {
            if t.key(&bucket, &key)?.is_none() {
                return Err(KvError::MissingKey(full.clone()));
            }
            Ok((
                vec![KvChange::Delete {
                    bucket: bucket.clone(),
                    key: key.clone(),
                    reason: DeleteReason::Deleted,
                }],
                rev,
            ))
        })
    }

    /// Every key with its value, keys in full (`bucket/key`), as one
    /// snapshot. A small bucket's is taken from memory in O(1); a large
    /// one is read from the tables (see [`CACHED_BUCKET_KEYS_MAX`]).
    pub fn entries(&self) -> Result<Entries, KvError> {
        if let Some(c) = self.store.remote_client() {
            let call = KvCall::Entries {
                bucket: self.name.clone(),
            };
            let pairs: Vec<(String, ByteBuf)> = remote::call(c, call, true)?;
            let mut out = Entries::default();
            for (k, v) in pairs {
                out.insert(&k, &v);
            }
            return Ok(out);
        }
        let held = self
            .store
            .backend
            .local("kv entries")?
            .view(|v: &KvView| v.cache.entries(&self.name))?
            .ok_or_else(|| not_registered("kv entries"))?;
        if let Some(entries) = held.value {
            return Ok(entries);
        }
        let prefix = bucket_prefix(&self.name);
        self.store.read(|t| {
            let mut out = Entries::default();
            t.scan(VALUES, &prefix, &prefix, |rest, v| {
                out.insert(&self.full(t.text(VALUES, rest)?), v);
                Ok(true)
            })?;
            Ok(out)
        })
    }

    /// The keys (relative to the bucket) that start with `prefix`, in key
    /// order, without reading a value.
    pub fn keys(&self, prefix: &str) -> Result<Vec<Key>, KvError> {
        if let Some(c) = self.store.remote_client() {
            let call = KvCall::Keys {
                bucket: self.name.clone(),
                prefix: prefix.to_string(),
            };
            return remote::call(c, call, true);
        }
        let mut out = Vec::new();
        self.scan_keys(prefix, |k| {
            out.push(Key::new(k));
            true
        })?;
        Ok(out)
    }

    /// How many keys start with `prefix`, without reading a value.
    pub fn count(&self, prefix: &str) -> Result<u64, KvError> {
        if let Some(c) = self.store.remote_client() {
            let call = KvCall::Count {
                bucket: self.name.clone(),
                prefix: prefix.to_string(),
            };
            return remote::call(c, call, true);
        }
        let mut n = 0u64;
        self.scan_keys(prefix, |_| {
            n += 1;
            true
        })?;
        Ok(n)
    }

    fn scan_keys(
        &self,
        prefix: &str,
        mut visit: impl FnMut(String) -> bool,
    ) -> Result<(), KvError> {
        let from = key_key(&self.name, prefix);
        let bucket = bucket_prefix(&self.name);
        self.store.read(|t| {
            t.scan(KEYS, &bucket, &from, |rest, _| {
                let k = t.text(KEYS, rest)?.to_string();
                if !k.starts_with(prefix) {
                    return Ok(false);
                }
                Ok(visit(k))
            })?;
            Ok(())
        })
    }

    /// A watch of the whole bucket: one [`WatchEvent::Resync`] with its
    /// state, then every change after it, in order.
    pub fn watch(&self) -> Result<Watch, KvError> {
        Watch::snapshot(self.store.backend.clone(), self.name.clone(), String::new())
    }

    /// A watch of the keys under `prefix`: a snapshot of them, then their
    /// changes.
    pub fn watch_prefix(&self, prefix: &str) -> Result<Watch, KvError> {
        Watch::snapshot(
            self.store.backend.clone(),
            self.name.clone(),
            prefix.to_string(),
        )
    }

    /// The changes of keys under `prefix` from `revision` on (inclusive),
    /// without a snapshot: resume where a watch stopped with the revision
    /// after the last one it saw.
    pub fn watch_from(&self, prefix: &str, revision: u64) -> Result<Watch, KvError> {
        Ok(Watch::from_revision(
            self.store.backend.clone(),
            self.name.clone(),
            prefix.to_string(),
            revision,
        ))
    }
}
