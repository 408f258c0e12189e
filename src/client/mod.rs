//! The client: a database served by another process, with the same
//! operations as an embedded [`Db`](crate::Db) ([`Database`]).
//!
//! One connection carries every request of a client, each under its own
//! tag, so many threads' requests are in flight at once (and share the
//! server's group commit). There is no reader thread: one of the threads
//! waiting for a reply reads the socket, hands each reply to the thread
//! that waits for it, and once its own has come passes the reading on to
//! another waiter (a reader thread was one more wake-up on every
//! request's path). When the server goes, the client connects
//! again, with backoff and jitter, for up to
//! [`ClientOptions::reconnect_for`]: reads and subscriptions carry on
//! where they were (a subscription from the LSN after the last one it
//! delivered: nothing lost, nothing repeated). An append in flight when
//! the connection went is not sent again, since it may have been done:
//! it fails with [`Error::Disconnected`].

mod leases;
mod subscription;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

pub use subscription::RemoteSubscription;

use crate::database::Database;
use crate::engine::CheckpointOutcome;
use crate::error::{Error, Result};
use crate::remote::ViewCall;
use crate::server::frame::{self, Code, FLAG_ERROR, HEADER_BYTES, Header};
use crate::server::wire::{self, WireError};
use crate::stream::{Appended, Event, ExpectedVersion};

/// How a client behaves.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ClientOptions {
    /// How long the client keeps trying to connect (at first, and after
    /// the server went) before a request fails with
    /// [`Error::Disconnected`].
    pub reconnect_for: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            reconnect_for: Duration::from_secs(30),
        }
    }
}

impl ClientOptions {
    /// With `reconnect_for` set.
    pub fn reconnect_for(mut self, d: Duration) -> Self {
        self.reconnect_for = d;
        self
    }
}

/// The first wait between connection attempts; it doubles up to
/// [`RETRY_DELAY_MAX`], each with up to half of it again as jitter, so
/// clients that lost one server do not all knock at once.
const RETRY_DELAY_FIRST: Duration = Duration::from_millis(5);
const RETRY_DELAY_MAX: Duration = Duration::from_millis(500);
/// Times a request that changes nothing is sent again on a new connection
/// before it fails: a server that accepts and goes at once, again and
/// again, is not waited on forever.
pub(crate) const RESEND_MAX: u32 = 16;
/// The connection's read buffer: many small replies a read.
const READ_BUFFER_BYTES: usize = 64 << 10;

/// A connection to a database's server. Clones share the connection.
#[derive(Clone, Debug)]
pub struct Client {
    inner: Arc<Inner>,
}

/// What a client tries when no server answers, before it waits and
/// connects again: [`crate::SharedDb`]'s takeover (lock the directory,
/// recover, serve). `Ok(true)`: it serves now, connect at once.
pub(crate) type Takeover = Arc<dyn Fn() -> Result<bool> + Send + Sync>;

struct Inner {
    socket: PathBuf,
    options: ClientOptions,
    conn: Mutex<Option<Arc<Conn>>>,
    next_tag: AtomicU64,
    takeover: Option<Takeover>,
    /// The record limit the last server's hello gave.
    record_bytes_max: AtomicU64,
    /// The KV owners (leases) its handles hold: attached again on every
    /// new connection.
    leases: leases::Leases,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("socket", &self.socket)
            .field("options", &self.options)
            .field("takes_over", &self.takeover.is_some())
            .finish_non_exhaustive()
    }
}

/// What a waiting request gets.
#[derive(Debug)]
pub(crate) enum Reply {
    /// A reply frame.
    Frame { flags: u32, body: Vec<u8> },
    /// The connection went before the reply came.
    Lost(String),
    /// The reader has its reply: read the socket, if no one else does.
    Baton,
}

#[derive(Debug)]
pub(crate) struct Conn {
    writer: Mutex<UnixStream>,
    /// Held by the one waiter that reads the socket.
    /// Buffered: a reply's header and body, and often the next replies,
    /// come in one read.
    reader: Mutex<std::io::BufReader<ReplyReader>>,
    /// Tags whose threads are blocked waiting for their reply: whom a
    /// reader that lets go passes the reading to.
    waiting: Mutex<std::collections::HashSet<u64>>,
    pending: Mutex<HashMap<u64, mpsc::Sender<Reply>>>,
    alive: AtomicBool,
    /// The server's hello.
    pub connection_id: u64,
    pub server_pid: u32,
    pub record_bytes_max: u64,
}

impl Conn {
    /// Waits for the reply to `tag`: reads the socket itself if no one
    /// else does, handing on every other reply, and passes the reading on
    /// once its own has come. Whenever a reader lets go with requests
    /// still waiting, one of them is told (a baton), so a reply on the
    /// socket always has a reader.
    pub(crate) fn wait(&self, tag: u64, rx: &mpsc::Receiver<Reply>) -> Reply {
        loop {
            match rx.try_recv() {
                Ok(Reply::Baton) => continue,
                Ok(reply) => return reply,
                Err(mpsc::TryRecvError::Disconnected) => {
                    return Reply::Lost("the connection went".into());
                }
                Err(mpsc::TryRecvError::Empty) => {}
            }
            // Said before trying to read: a reader that lets go after
            // this sees it and passes the baton here; one that let go
            // before it left the lock free for the try below.
            self.waiting(tag, true);
            let locked = match self.reader.try_lock() {
                Ok(g) => Some(g),
                // A reader that panicked left the stream whole between
                // frames or mid-frame; either way reading on is what
                // tells (a desynchronised stream fails its next header).
                Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
                Err(std::sync::TryLockError::WouldBlock) => None,
            };
            let Some(mut stream) = locked else {
                // Someone reads: wait for the reply, or for the baton.
                let got = rx.recv();
                self.waiting(tag, false);
                match got {
                    Ok(Reply::Baton) => continue,
                    Ok(reply) => return reply,
                    Err(_) => return Reply::Lost("the connection went".into()),
                }
            };
            self.waiting(tag, false);
            let mine = loop {
                // Delivered by the last reader before it let go, or just
                // now by this one.
                match rx.try_recv() {
                    Ok(Reply::Baton) | Err(mpsc::TryRecvError::Empty) => {}
                    Ok(reply) => break reply,
                    Err(mpsc::TryRecvError::Disconnected) => {
                        break Reply::Lost("the connection went".into());
                    }
                }
                if let Err(reason) = self.read_one(&mut stream) {
                    drop(stream);
                    self.lose(&reason);
                    return Reply::Lost(reason);
                }
            };
            drop(stream);
            self.pass_baton();
            return mine;
        }
    }

    fn waiting(&self, tag: u64, yes: bool) {
        let mut w = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        if yes {
            w.insert(tag);
        } else {
            w.remove(&tag);
        }
    }

    /// Reads one frame and hands it to whoever waits for its tag.
    fn read_one(
        &self,
        stream: &mut std::io::BufReader<ReplyReader>,
    ) -> std::result::Result<(), String> {
        let (header, body) =
            read_frame(stream).map_err(|e| format!("the server closed the connection ({e})"))?;
        if header.tag == 0 {
            if header.code == Code::Goodbye as u32 {
                // Nothing new is taken; what was in flight was answered
                // before the goodbye.
                return Err("the server stopped".into());
            }
            if header.flags & FLAG_ERROR != 0 {
                let e = wire_error(&body, Path::new(""));
                tracing::warn!(error = %e, "the server closed the connection with an error");
                return Err(e.to_string());
            }
            return Ok(());
        }
        let tx = self
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&header.tag);
        if let Some(tx) = tx {
            let _ = tx.send(Reply::Frame {
                flags: header.flags,
                body,
            });
        }
        Ok(())
    }

    /// Tells one thread blocked waiting (not a subscription nobody is
    /// reading from) to take the reading on.
    fn pass_baton(&self) {
        let waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        let pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(tx) = waiting.iter().find_map(|t| pending.get(t)) {
            let _ = tx.send(Reply::Baton);
        }
    }

    fn lose(&self, reason: &str) {
        self.alive.store(false, Ordering::Release);
        for (_, tx) in self
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
        {
            let _ = tx.send(Reply::Lost(reason.to_string()));
        }
    }
}

/// The connection's reading half. It waits for a reply with
/// `poll(POLLIN)` before it reads: a thread blocked in `recv` on a Unix
/// socket is woken, too, whenever the server reads a request this client
/// sent (the kernel wakes every waiter on the socket when its send buffer
/// drains), only to find nothing and sleep again, while a `poll` for
/// input wakes for input alone. That is one context switch less on every
/// request's path (`perf stat`: see BENCHMARKS.md, "Sharing over a
/// socket").
#[derive(Debug)]
pub(crate) struct ReplyReader(UnixStream);

impl Read for ReplyReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::os::fd::AsRawFd;
        let mut ready = libc::pollfd {
            fd: self.0.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        loop {
            // SAFETY: one valid pollfd, for the count given, which lives
            // across the call. A hang-up or an error ends the wait too
            // (poll reports them whatever is asked), and the read below
            // then returns the end or the error.
            let n = unsafe { libc::poll(&mut ready, 1, -1) };
            if n >= 0 {
                break;
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        self.0.read(buf)
    }
}

fn read_frame(r: &mut impl Read) -> std::result::Result<(Header, Vec<u8>), String> {
    let mut head = [0u8; HEADER_BYTES];
    r.read_exact(&mut head).map_err(|e| e.to_string())?;
    let header = Header::decode(&head).map_err(|e| e.to_string())?;
    let mut body = vec![0u8; header.size as usize];
    r.read_exact(&mut body).map_err(|e| e.to_string())?;
    Ok((header, body))
}

impl Client {
    /// Connects to the server on `socket` (waiting for one to answer for
    /// up to [`ClientOptions::reconnect_for`]).
    pub fn connect(socket: impl AsRef<Path>) -> Result<Client> {
        Client::connect_with(socket, ClientOptions::default())
    }

    /// [`Client::connect`] with options.
    pub fn connect_with(socket: impl AsRef<Path>, options: ClientOptions) -> Result<Client> {
        Client::connect_taking_over(socket.as_ref(), options, None)
    }

    /// [`Client::connect_with`], trying `takeover` whenever no server
    /// answers.
    pub(crate) fn connect_taking_over(
        socket: &Path,
        options: ClientOptions,
        takeover: Option<Takeover>,
    ) -> Result<Client> {
        let client = Client {
            inner: Arc::new(Inner {
                socket: socket.to_path_buf(),
                options,
                conn: Mutex::new(None),
                next_tag: AtomicU64::new(1),
                takeover,
                record_bytes_max: AtomicU64::new(0),
                leases: leases::Leases::default(),
            }),
        };
        client.conn()?;
        Ok(client)
    }

    /// The socket it connects to.
    pub fn socket(&self) -> &Path {
        &self.inner.socket
    }

    /// The server's id for the current connection (never reused while
    /// the server runs; a new one after a reconnect).
    pub fn connection_id(&self) -> Result<u64> {
        Ok(self.conn()?.connection_id)
    }

    /// The pid of the serving process.
    pub fn server_pid(&self) -> Result<u32> {
        Ok(self.conn()?.server_pid)
    }

    fn disconnected(&self, reason: impl Into<String>) -> Error {
        Error::Disconnected {
            socket: self.inner.socket.clone(),
            reason: reason.into(),
        }
    }

    /// The live connection, connecting (with backoff) if there is none;
    /// the KV owners released since the last request are let go on it.
    pub(crate) fn conn(&self) -> Result<Arc<Conn>> {
        let conn = self.connection()?;
        for lease in self.inner.leases.take_released() {
            let call = ViewCall::Kv(crate::kv::remote::KvCall::Release { lease });
            self.forget(&conn, Code::Call, &wire::encode(&call));
        }
        Ok(conn)
    }

    fn connection(&self) -> Result<Arc<Conn>> {
        let mut slot = self
            .inner
            .conn
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(c) = slot.as_ref()
            && c.alive.load(Ordering::Acquire)
        {
            return Ok(c.clone());
        }
        let deadline = Instant::now() + self.inner.options.reconnect_for;
        let mut delay = RETRY_DELAY_FIRST;
        let mut rng = Jitter::new();
        loop {
            match self.open() {
                Ok(c) => {
                    self.inner
                        .record_bytes_max
                        .store(c.record_bytes_max, Ordering::Relaxed);
                    *slot = Some(c.clone());
                    return Ok(c);
                }
                // A refusal is an answer: trying again changes nothing.
                Err(
                    e @ (Error::PeerRefused { .. } | Error::Busy { .. } | Error::Protocol { .. }),
                ) => {
                    return Err(e);
                }
                Err(e) => {
                    if let Some(takeover) = &self.inner.takeover {
                        match takeover() {
                            Ok(true) => continue,
                            Ok(false) => {}
                            Err(e) => return Err(e),
                        }
                    }
                    let now = Instant::now();
                    if now >= deadline {
                        return Err(self.disconnected(format!(
                            "no server answered for {:?}: {e}",
                            self.inner.options.reconnect_for
                        )));
                    }
                    let wait = (delay + rng.up_to(delay / 2)).min(deadline - now);
                    std::thread::sleep(wait);
                    delay = (delay * 2).min(RETRY_DELAY_MAX);
                }
            }
        }
    }

    /// One connection: hello, then the welcome.
    fn open(&self) -> Result<Arc<Conn>> {
        let socket = &self.inner.socket;
        let mut stream =
            UnixStream::connect(socket).map_err(|e| Error::io("connect", socket, e))?;
        let hello = wire::Hello {
            magic: wire::MAGIC.into(),
            version: frame::PROTOCOL_VERSION,
        };
        stream
            .write_all(&frame::encode(
                0,
                Code::Hello as u32,
                0,
                &wire::encode(&hello),
            ))
            .map_err(|e| Error::io("send hello", socket, e))?;
        stream
            .set_read_timeout(Some(crate::server::HELLO_DEADLINE))
            .map_err(|e| Error::io("set a read timeout", socket, e))?;
        let (header, body) = read_frame(&mut stream).map_err(|e| self.disconnected(e))?;
        if header.flags & FLAG_ERROR != 0 {
            return Err(wire_error(&body, socket));
        }
        let welcome: wire::Welcome =
            wire::decode("welcome", &body).map_err(|reason| Error::Protocol {
                socket: socket.clone(),
                reason,
            })?;
        stream
            .set_read_timeout(None)
            .map_err(|e| Error::io("clear the read timeout", socket, e))?;
        let reader = stream
            .try_clone()
            .map_err(|e| Error::io("clone the socket", socket, e))?;
        let conn = Arc::new(Conn {
            writer: Mutex::new(stream),
            reader: Mutex::new(std::io::BufReader::with_capacity(
                READ_BUFFER_BYTES,
                ReplyReader(reader),
            )),
            waiting: Mutex::new(std::collections::HashSet::new()),
            pending: Mutex::new(HashMap::new()),
            alive: AtomicBool::new(true),
            connection_id: welcome.connection_id,
            server_pid: welcome.server_pid,
            record_bytes_max: welcome.record_bytes_max,
        });
        // The owners this client's handles hold live on the new
        // connection from now (the call attaches them idempotently, so it
        // may run after a KV call that attached one itself).
        let leases = self.inner.leases.held();
        if !leases.is_empty() {
            let call = ViewCall::Kv(crate::kv::remote::KvCall::Attach { leases });
            self.forget(&conn, Code::Call, &wire::encode(&call));
        }
        Ok(conn)
    }

    /// Sends a request; the receiver gets its replies.
    pub(crate) fn send(
        &self,
        conn: &Conn,
        code: Code,
        body: &[u8],
    ) -> Result<(u64, mpsc::Receiver<Reply>)> {
        if body.len() > frame::FRAME_BODY_BYTES_MAX as usize {
            return Err(Error::InvalidArgument {
                op: "send",
                reason: format!(
                    "a request of {} bytes is above the frame limit of {}",
                    body.len(),
                    frame::FRAME_BODY_BYTES_MAX
                ),
            });
        }
        let tag = self.inner.next_tag.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel();
        conn.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(tag, tx);
        let frame = frame::encode(tag, code as u32, 0, body);
        let written = conn
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .write_all(&frame);
        if let Err(e) = written {
            conn.lose(&format!("sending: {e}"));
            return Err(self.disconnected(format!("sending: {e}")));
        }
        // Lost after the insert: the reader drained before it; the
        // receiver would wait forever.
        if !conn.alive.load(Ordering::Acquire) {
            conn.lose("the connection went");
        }
        Ok((tag, rx))
    }

    /// Tells the server to end the subscription poll `tag` (best effort:
    /// a connection that is gone ended it already).
    pub(crate) fn cancel(&self, conn: &Conn, tag: u64) {
        conn.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&tag);
        if conn.alive.load(Ordering::Acquire) {
            let body = wire::encode(&wire::Cancel { tag });
            let frame = frame::encode(0, Code::Cancel as u32, 0, &body);
            let _ = conn
                .writer
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .write_all(&frame);
        }
    }

    /// One request, one reply. `retry`: the request changes nothing, so
    /// it is sent again on a new connection if the old one went.
    fn call(&self, code: Code, body: &[u8], retry: bool) -> Result<Vec<u8>> {
        for _ in 0..RESEND_MAX {
            let conn = self.conn()?;
            let (tag, rx) = match self.send(&conn, code, body) {
                Ok(sent) => sent,
                // Not sent whole, so not done: send it on a new
                // connection (the server went, and no one had read its
                // goodbye yet).
                Err(Error::Disconnected { .. }) => continue,
                Err(e) => return Err(e),
            };
            match conn.wait(tag, &rx) {
                Reply::Frame { flags, body } if flags & FLAG_ERROR != 0 => {
                    return Err(wire_error(&body, &self.inner.socket));
                }
                Reply::Frame { body, .. } => return Ok(body),
                Reply::Lost(reason) if !retry => {
                    return Err(self.disconnected(format!(
                        "{reason}; the request may or may not have been done"
                    )));
                }
                Reply::Lost(_) | Reply::Baton => continue,
            }
        }
        Err(self.disconnected(format!(
            "the connection went {RESEND_MAX} times before an answer"
        )))
    }

    fn decode<T: serde::de::DeserializeOwned>(&self, what: &str, body: &[u8]) -> Result<T> {
        wire::decode(what, body).map_err(|reason| Error::Protocol {
            socket: self.inner.socket.clone(),
            reason,
        })
    }

    /// A view's operation through the server: its answer, or its typed
    /// refusal, as embedded. `retry`: it changes nothing, so it is sent
    /// again on a new connection if the old one went (a command whose
    /// connection went is [`Error::Disconnected`]: done or not, unknown).
    pub(crate) fn call_view<T, E>(&self, call: &ViewCall, retry: bool) -> std::result::Result<T, E>
    where
        T: serde::de::DeserializeOwned,
        E: serde::de::DeserializeOwned + From<Error>,
    {
        let body = wire::encode(call);
        // A command no frame holds is over the server's record limit:
        // refused here, as embedded, not by the server closing the
        // connection.
        if body.len() > frame::FRAME_BODY_BYTES_MAX as usize {
            return Err(E::from(Error::RecordTooLarge {
                stream: call.stream().to_string(),
                size_bytes: body.len() as u64,
                limit_bytes: self.record_bytes_max(),
            }));
        }
        let reply = self.call(Code::Call, &body, retry)?;
        let answer: std::result::Result<T, E> = self.decode("view reply", &reply)?;
        answer
    }

    /// Waits until the server's store has applied past `lsn`, or for the
    /// server's wait limit ([`crate::server::WAIT_APPLIED_MAX`]), whichever
    /// is first: the caller reads again either way.
    pub(crate) fn wait_applied(&self, lsn: u64) -> Result<()> {
        let body = wire::encode(&wire::Number { value: lsn });
        self.call(Code::WaitApplied, &body, true).map(drop)
    }

    /// Counts one more handle of the KV owner `lease`: it is attached on
    /// every new connection, and a keeper pings while any is held, so an
    /// idle client notices a restarted (or taken-over) server within
    /// [`leases::KEEPALIVE_INTERVAL`] and attaches its owners there.
    pub(crate) fn hold_lease(&self, lease: u64) {
        if self.inner.leases.hold(lease) {
            leases::spawn_keeper(Arc::downgrade(&self.inner));
        }
    }

    /// Counts one handle of `lease` fewer; the last one's release goes to
    /// the server with the next request (or the keeper's ping). Never
    /// waits.
    pub(crate) fn release_lease(&self, lease: u64) {
        self.inner.leases.release(lease);
    }

    fn forget(&self, conn: &Conn, code: Code, body: &[u8]) {
        if !conn.alive.load(Ordering::Acquire) {
            return;
        }
        let tag = self.inner.next_tag.fetch_add(1, Ordering::Relaxed);
        let frame = frame::encode(tag, code as u32, 0, body);
        let _ = conn
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .write_all(&frame);
    }

    /// A round trip that touches nothing: `payload` comes back.
    pub fn ping(&self, payload: &[u8]) -> Result<Vec<u8>> {
        let body = wire::encode(&wire::Ping {
            payload: payload.to_vec(),
        });
        let reply: wire::Ping = self.decode("ping", &self.call(Code::Ping, &body, true)?)?;
        Ok(reply.payload)
    }

    /// Reads pages until `limit` events or the end.
    fn read_pages(
        &self,
        limit: usize,
        mut request: impl FnMut(Option<&Event>, u64) -> (Code, Vec<u8>),
    ) -> Result<Vec<Event>> {
        let mut out: Vec<Event> = Vec::new();
        while out.len() < limit {
            let (code, body) = request(out.last(), (limit - out.len()) as u64);
            let page: wire::Events = self.decode("events", &self.call(code, &body, true)?)?;
            if page.events.is_empty() {
                break;
            }
            out.extend(page.events);
        }
        out.truncate(limit);
        Ok(out)
    }
}

/// An error reply's body as the [`Error`] it is.
fn wire_error(body: &[u8], socket: &Path) -> Error {
    match wire::decode::<WireError>("error", body) {
        Ok(e) => Error::from(e),
        Err(reason) => Error::Protocol {
            socket: socket.to_path_buf(),
            reason,
        },
    }
}

/// A few lines of xorshift for the retry jitter: no dependency for it.
struct Jitter(u64);

impl Jitter {
    fn new() -> Jitter {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Jitter((t ^ u64::from(std::process::id()) << 32) | 1)
    }

    fn up_to(&mut self, max: Duration) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        let nanos = max.as_nanos() as u64;
        Duration::from_nanos(if nanos == 0 { 0 } else { self.0 % nanos })
    }
}

impl Database for Client {
    type Subscription = RemoteSubscription;

    fn append<E: AsRef<[u8]>>(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: &[E],
    ) -> Result<Appended> {
        let body = wire::encode(&wire::Append {
            stream: stream.to_string(),
            expected,
            events: events
                .iter()
                .map(|e| serde_bytes::ByteBuf::from(e.as_ref().to_vec()))
                .collect(),
        });
        // A batch no frame holds is over the server's record limit (which
        // a server keeps under the frame's): refused here, as embedded,
        // rather than by the server closing the connection.
        if body.len() > frame::FRAME_BODY_BYTES_MAX as usize {
            return Err(Error::RecordTooLarge {
                stream: stream.to_string(),
                size_bytes: body.len() as u64,
                limit_bytes: self.record_bytes_max(),
            });
        }
        self.decode("appended", &self.call(Code::Append, &body, false)?)
    }

    fn read(&self, from_lsn: u64, limit: usize) -> Result<Vec<Event>> {
        self.read_pages(limit, |last, left| {
            let from = last.map_or(from_lsn, |e| e.lsn + 1);
            let body = wire::encode(&wire::Read {
                from_lsn: from,
                limit: left,
            });
            (Code::Read, body)
        })
    }

    fn read_stream(&self, stream: &str, from_version: u64, limit: usize) -> Result<Vec<Event>> {
        self.read_pages(limit, |last, left| {
            let from = last.map_or(from_version, |e| e.version + 1);
            let body = wire::encode(&wire::ReadStream {
                stream: stream.to_string(),
                from_version: from,
                limit: left,
            });
            (Code::ReadStream, body)
        })
    }

    fn read_stream_from_lsn(
        &self,
        stream: &str,
        from_lsn: u64,
        limit: usize,
    ) -> Result<Vec<Event>> {
        self.read_pages(limit, |last, left| {
            let from = last.map_or(from_lsn, |e| e.lsn + 1);
            let body = wire::encode(&wire::ReadStreamFromLsn {
                stream: stream.to_string(),
                from_lsn: from,
                limit: left,
            });
            (Code::ReadStreamFromLsn, body)
        })
    }

    /// The server's, as its last hello said (a client is connected once
    /// before it is returned, so there always was one).
    fn record_bytes_max(&self) -> u64 {
        self.inner.record_bytes_max.load(Ordering::Relaxed)
    }

    fn stream_version(&self, stream: &str) -> Result<u64> {
        let body = wire::encode(&wire::StreamName {
            stream: stream.to_string(),
        });
        let n: wire::Number =
            self.decode("number", &self.call(Code::StreamVersion, &body, true)?)?;
        Ok(n.value)
    }

    fn last_lsn(&self) -> Result<u64> {
        let n: wire::Number = self.decode("number", &self.call(Code::LastLsn, &[], true)?)?;
        Ok(n.value)
    }

    fn subscribe(&self, from_lsn: u64) -> Result<RemoteSubscription> {
        RemoteSubscription::start(self.clone(), from_lsn)
    }

    fn sync(&self) -> Result<u64> {
        let n: wire::Number = self.decode("number", &self.call(Code::Sync, &[], true)?)?;
        Ok(n.value)
    }

    fn checkpoint(&self) -> Result<CheckpointOutcome> {
        self.decode("checkpoint", &self.call(Code::Checkpoint, &[], true)?)
    }

    fn stats(&self) -> Result<crate::Stats> {
        self.decode("stats", &self.call(Code::Stats, &[], true)?)
    }

    fn retention(&self, stream: &str) -> Result<crate::Retention> {
        let body = wire::encode(&wire::StreamName {
            stream: stream.to_string(),
        });
        self.decode("retention", &self.call(Code::Retention, &body, true)?)
    }

    fn set_retention(&self, stream: &str, retention: crate::Retention) -> Result<Appended> {
        let body = wire::encode(&wire::SetRetention {
            stream: stream.to_string(),
            retention,
        });
        self.decode("appended", &self.call(Code::SetRetention, &body, false)?)
    }

    /// The server writes the copy; `dest` is made absolute here, from
    /// this process's working directory.
    fn backup(&self, dest: &Path) -> Result<u64> {
        let dest = std::path::absolute(dest).map_err(|e| Error::io("backup", dest, e))?;
        // A path crosses the socket as a string: one that is not UTF-8
        // is refused here, not sent as a body the server cannot read.
        if dest.to_str().is_none() {
            return Err(Error::InvalidArgument {
                op: "backup",
                reason: format!(
                    "{} is not UTF-8, which a backup through a server needs",
                    dest.display()
                ),
            });
        }
        let body = wire::encode(&wire::Backup { dest });
        // Not sent again: a copy half made leaves its directory non-empty.
        let n: wire::Number = self.decode("number", &self.call(Code::Backup, &body, false)?)?;
        Ok(n.value)
    }
}
