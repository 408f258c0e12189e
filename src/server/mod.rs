//! The server: one database shared with other processes over a Unix
//! socket (docs/PROTOCOL.md).
//!
//! redb cannot be opened by two processes, and neither can the log: the
//! process that holds the directory's lock owns the database and serves
//! it; every other process is a [`Client`](crate::client::Client) of it,
//! with the same operations. The server is a tokio runtime of its own:
//! one task accepts, one task per connection reads frames; an append is
//! queued on the group commit from there and answered by the leader that
//! acknowledges its group, and every other request is a task of its own
//! (the database's blocking calls on tokio's blocking pool), so one
//! connection can have many requests in flight and sixteen clients'
//! appends share one fsync as sixteen threads' would.
//!
//! What the seed got wrong is each a rule here: a started frame must
//! complete within [`frame::FRAME_READ_DEADLINE`]; every length is checked
//! before it is allocated; bad input is answered with an error naming it
//! before the connection is closed; a stop stops accepting, answers what
//! is in flight, tells every client, joins every task and removes the
//! socket; a socket a live server answers on is never unlinked; and
//! connections and requests in flight are bounded, with an error naming
//! the limit when one is hit.

mod connection;
mod socket;
mod views;
pub(crate) use views::ConnectionViews;
pub use views::LEASES_PER_CONNECTION_MAX;
pub mod frame;
pub mod wire;

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::UnixListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::engine::Db;
use crate::error::{Error, Result};

/// The socket's file name in the database directory.
pub const SOCKET_FILE: &str = "replaydb.sock";
/// Connections served at once; one more is answered with
/// [`Error::Busy`] and closed.
pub const CONNECTIONS_MAX: usize = 256;
/// Requests one connection may have in flight; one more is answered with
/// [`Error::Busy`] (the connection stays open).
pub const REQUESTS_IN_FLIGHT_MAX: usize = 256;
/// Subscription polls and watch waits one connection may have in flight
/// (each a small task waiting for a commit); one more is
/// [`Error::Busy`]. Apart from [`REQUESTS_IN_FLIGHT_MAX`], so idle
/// watches never starve a client's requests.
pub const POLLS_IN_FLIGHT_MAX: usize = 4096;
/// Bytes of request bodies the server holds at once, over every
/// connection; past it, connections are not read until requests are
/// answered (back-pressure, not an error). Sixteen frames at the limit.
pub const REQUEST_BYTES_IN_FLIGHT_MAX: u32 = 256 << 20;
/// A new connection's hello must arrive within this long.
pub const HELLO_DEADLINE: Duration = Duration::from_secs(10);
/// How long a stop waits for requests in flight to be answered before it
/// closes their connections anyway.
pub const STOP_DRAIN_MAX: Duration = Duration::from_secs(30);
/// What a frame's body holds beyond a batch or an event at the record
/// limit: its encoding's fields.
pub(crate) const FRAME_OVERHEAD_BYTES: u64 = 32 << 10;
/// How long a [`frame::Code::WaitApplied`] waits at most before it is
/// answered anyway (the client reads again, and waits again): an idle
/// watch costs a round trip this often, and a dropped one holds its slot
/// no longer than this.
pub const WAIT_APPLIED_MAX: Duration = Duration::from_secs(5);
/// Threads the server's blocking calls into the database use at most.
const BLOCKING_THREADS_MAX: usize = 64;

/// A running server; [`Server::stop`] (or dropping it) stops it cleanly.
#[derive(Debug)]
pub struct Server {
    socket: PathBuf,
    stop: watch::Sender<bool>,
    runtime: Option<tokio::runtime::Runtime>,
    accept: Option<tokio::task::JoinHandle<()>>,
    shared: Arc<Shared>,
}

/// What every connection of one server shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub db: Db,
    pub socket: PathBuf,
    pub uid: u32,
    next_connection_id: AtomicU64,
    pub connections_served: AtomicU64,
    /// Bytes of request bodies in flight, over every connection, at most
    /// [`REQUEST_BYTES_IN_FLIGHT_MAX`].
    pub request_bytes: Arc<Semaphore>,
    /// Held while it serves a KV view: its expirer runs, so a client
    /// that goes leaves keys that expire a TTL later even if no other
    /// client holds a KV store.
    _kv: Option<crate::kv::KvStore>,
}

/// Runs `f`, which blocks on the server's own runtime, on a thread of its
/// own when the caller is inside an async runtime already (a host that
/// serves, stops a server, or takes over as a `SharedDb` client from
/// async code): blocking on, or dropping, a runtime there would panic.
fn outside_async<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    if tokio::runtime::Handle::try_current().is_err() {
        return f();
    }
    std::thread::scope(|s| match s.spawn(f).join() {
        Ok(v) => v,
        Err(panic) => std::panic::resume_unwind(panic),
    })
}

/// The default socket of the database at `dir`.
pub fn default_socket(dir: &Path) -> PathBuf {
    dir.join(SOCKET_FILE)
}

impl Server {
    /// Serves `db` on `socket`. A socket file left by a server that is
    /// gone is replaced; one a live server answers on is an error, as is
    /// anything at `socket` that is not a socket.
    pub fn start(db: Db, socket: impl AsRef<Path>) -> Result<Server> {
        let socket = socket.as_ref().to_path_buf();
        // Every batch and every event must fit a frame.
        let limit = u64::from(frame::FRAME_BODY_BYTES_MAX) - FRAME_OVERHEAD_BYTES;
        if db.options().record_bytes_max > limit {
            return Err(Error::InvalidArgument {
                op: "serve",
                reason: format!(
                    "record_bytes_max is {} bytes; a served database takes at most {limit}, what a frame holds",
                    db.options().record_bytes_max
                ),
            });
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .max_blocking_threads(BLOCKING_THREADS_MAX)
            .thread_name("replaydb-server")
            .enable_all()
            .build()
            .map_err(|e| Error::io("start the server's runtime", &socket, e))?;
        let listener = outside_async(|| runtime.block_on(bind(&socket)))?;
        // `None` when the database has no KV view.
        let kv = crate::kv::KvStore::without_lease(db.clone()).ok();
        let shared = Arc::new(Shared {
            _kv: kv,
            db,
            socket: socket.clone(),
            // SAFETY: geteuid has no preconditions and cannot fail.
            uid: unsafe { libc::geteuid() },
            // Ids start from the clock (ms << 20), so a restarted server
            // never hands out an id of the one before it either (unless it
            // accepted a million connections a millisecond).
            next_connection_id: AtomicU64::new((crate::stream::now_unix_ms() << 20).max(1)),
            connections_served: AtomicU64::new(0),
            request_bytes: Arc::new(Semaphore::new(REQUEST_BYTES_IN_FLIGHT_MAX as usize)),
        });
        let (stop, stopped) = watch::channel(false);
        let accept = runtime.spawn(accept_loop(listener, shared.clone(), stopped));
        tracing::info!(socket = %socket.display(), "serving");
        Ok(Server {
            socket,
            stop,
            runtime: Some(runtime),
            accept: Some(accept),
            shared,
        })
    }

    /// The socket it serves on.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Connections accepted since it started.
    pub fn connections_served(&self) -> u64 {
        self.shared.connections_served.load(Ordering::Relaxed)
    }

    /// Blocks until the server stops (after [`Server::stop`] from another
    /// thread, or a signal handler that calls it).
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle(self.stop.clone())
    }

    /// Stops: accepts no more connections, answers every request in
    /// flight (waiting at most [`STOP_DRAIN_MAX`]), ends subscriptions,
    /// tells every client it is going (a `Goodbye` frame), joins every
    /// task and removes the socket.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let _ = self.stop.send(true);
        if let (Some(rt), Some(accept)) = (self.runtime.take(), self.accept.take()) {
            outside_async(move || {
                let _ = rt.block_on(accept);
                rt.shutdown_timeout(Duration::from_secs(1));
            });
        }
        match std::fs::remove_file(&self.socket) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(socket = %self.socket.display(), error = %e, "the socket could not be removed");
            }
        }
    }

    /// Waits until [`StopHandle::stop`] is called, then stops.
    pub fn run_until_stopped(mut self) {
        let mut stopped = self.stop.subscribe();
        if let Some(rt) = &self.runtime {
            outside_async(|| {
                rt.block_on(async {
                    let _ = stopped.wait_for(|s| *s).await;
                })
            });
        }
        self.shutdown();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.runtime.is_some() {
            self.shutdown();
        }
    }
}

/// Tells a server to stop, from any thread.
#[derive(Clone, Debug)]
pub struct StopHandle(watch::Sender<bool>);

impl StopHandle {
    /// Asks the server to stop; [`Server::run_until_stopped`] returns.
    pub fn stop(&self) {
        let _ = self.0.send(true);
    }
}

/// Binds `socket`, 0600. Whoever holds the database's lock serves it, so
/// a socket file found here is a server's that is gone, unless one
/// answers on it (a server of another database given the same path).
async fn bind(socket: &Path) -> Result<UnixListener> {
    match std::fs::symlink_metadata(socket) {
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(Error::InvalidArgument {
                op: "serve",
                reason: format!("{} exists and is not a socket", socket.display()),
            });
        }
        Ok(_) => match tokio::net::UnixStream::connect(socket).await {
            // Refused: no one listens. Anything else (a full accept
            // backlog answers EAGAIN) may be a live server: never unlink
            // it.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                std::fs::remove_file(socket)
                    .map_err(|e| Error::io("remove a gone server's socket", socket, e))?
            }
            Ok(_) => {
                return Err(Error::Locked {
                    path: socket.to_path_buf(),
                    pid: None,
                });
            }
            Err(e) => return Err(Error::io("connect to the socket found there", socket, e)),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("look at the socket path", socket, e)),
    }
    let listener = UnixListener::bind(socket).map_err(|e| Error::io("bind", socket, e))?;
    // The database directory is 0700, so no other user could reach the
    // socket in the moment before this; a socket elsewhere is guarded by
    // the peer's uid check.
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| Error::io("chmod the socket", socket, e))?;
    Ok(listener)
}

async fn accept_loop(listener: UnixListener, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let connections = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    let mut tasks = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            accepted = listener.accept() => accepted,
            // Reap finished connections as they go.
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                // EMFILE and the like: give the system a moment.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let id = shared.next_connection_id.fetch_add(1, Ordering::Relaxed);
        shared.connections_served.fetch_add(1, Ordering::Relaxed);
        let permit = connections.clone().try_acquire_owned().ok();
        tasks.spawn(connection::serve(
            stream,
            id,
            shared.clone(),
            stop.clone(),
            permit,
        ));
    }
    drop(listener);
    while tasks.join_next().await.is_some() {}
}
