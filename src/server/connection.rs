//! One client connection: its hello, its requests, its replies.
//!
//! The reader takes frames one after another and starts each request:
//! an append is queued on the group commit with a callback that answers
//! it, every other request is a task. Replies are written whole under
//! the connection's writer lock, by the leader that acknowledged an
//! append when the socket is free and has room, else by a task, so a
//! slow client slows only its own requests. A frame that is not this
//! protocol's is answered with an error naming what was wrong, and the
//! connection is closed: after a bad header nothing that follows can be
//! trusted to be a frame.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::net::UnixStream;
use tokio::runtime::Handle;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot, watch};
use tokio::task::JoinSet;

use super::frame::{self, Code, FLAG_ERROR, FLAG_REPLY, FRAME_READ_DEADLINE, Header};
use super::socket::Socket;
use super::views::ConnectionViews;
use super::wire::{self, WireError};
use super::{
    CONNECTIONS_MAX, HELLO_DEADLINE, POLLS_IN_FLIGHT_MAX, REQUESTS_IN_FLIGHT_MAX, STOP_DRAIN_MAX,
    Shared,
};
use crate::error::Error;
use crate::remote::ViewCall;
use crate::stream::Event;

/// Bytes of events one page carries at most, under the frame limit.
const PAGE_BYTES_MAX: usize =
    (frame::FRAME_BODY_BYTES_MAX as usize) - (super::FRAME_OVERHEAD_BYTES as usize);

/// The connection's writing half, shared by its request tasks and the
/// leaders that answer its appends: each frame is written whole under
/// the lock, by the task or leader whose reply it is (a hand-off to a
/// writer task was one more wake-up on every request's path).
#[derive(Clone)]
struct Outbox(Arc<tokio::sync::Mutex<Socket>>);

impl Outbox {
    async fn send(&self, frame: Vec<u8>) -> Result<(), std::io::Error> {
        self.0.lock().await.write_all(&frame).await
    }

    /// [`Outbox::send`] from any thread, without waiting: the frame is
    /// written at once when no other is being written and the socket has
    /// room (the common case), else by a task on `runtime`. `sent` is
    /// dropped once it is written (or the connection is found broken).
    fn send_now<T: Send + 'static>(&self, frame: Vec<u8>, runtime: &Handle, sent: T) {
        let outbox = match self.0.clone().try_lock_owned() {
            Ok(socket) => match socket.write_now(&frame) {
                Ok(n) if n == frame.len() => return,
                Ok(n) => {
                    // Part of it is out: the rest goes before any other
                    // frame, under the same lock.
                    runtime.spawn(async move {
                        let _ = socket.write_all(frame.get(n..).unwrap_or_default()).await;
                        drop(sent);
                    });
                    return;
                }
                // Broken: the connection's reader finds it closed.
                Err(_) => return,
            },
            Err(_) => self.clone(),
        };
        runtime.spawn(async move {
            let _ = outbox.send(frame).await;
            drop(sent);
        });
    }

    /// [`Outbox::send`] on the way out (a goodbye, a last error): a client
    /// that does not read cannot hold a stopping server past
    /// [`LAST_WRITE_DEADLINE`].
    async fn send_bounded(&self, frame: Vec<u8>) -> Result<(), std::io::Error> {
        match tokio::time::timeout(LAST_WRITE_DEADLINE, self.send(frame)).await {
            Ok(sent) => sent,
            Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
        }
    }

    async fn close(&self) {
        let _ = tokio::time::timeout(LAST_WRITE_DEADLINE, async {
            let _ = self.0.lock().await.shutdown();
        })
        .await;
    }
}

/// How long a last frame to a client (a goodbye, the error before a
/// close) may take to write.
const LAST_WRITE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(2);

/// Reads one frame, handing the read half back with it.
/// The connection's read buffer: a request's header and body, and often
/// the next requests, in one read.
const READ_BUFFER_BYTES: usize = 64 << 10;

type Reader = tokio::io::BufReader<Socket>;

async fn read_owned(mut rd: Reader) -> (Reader, Result<(Header, Vec<u8>), frame::FrameError>) {
    let frame = frame::read(&mut rd, FRAME_READ_DEADLINE).await;
    (rd, frame)
}

fn error_frame(tag: u64, code: u32, e: &Error) -> Vec<u8> {
    frame::encode(
        tag,
        code,
        FLAG_REPLY | FLAG_ERROR,
        &wire::encode(&WireError::from(e)),
    )
}

fn protocol_error(shared: &Shared, reason: String) -> Error {
    Error::Protocol {
        socket: shared.socket.clone(),
        reason,
    }
}

/// Serves one connection until the client goes, it breaks the protocol,
/// or the server stops.
pub(crate) async fn serve(
    stream: UnixStream,
    id: u64,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
    permit: Option<OwnedSemaphorePermit>,
) {
    let peer = stream.peer_cred();
    let mut rd = match Socket::new(stream) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(connection = id, error = %e, "could not register a connection's socket");
            return;
        }
    };
    let wr = rd.clone();
    let refuse = |e: Error| error_frame(0, Code::Hello as u32, &e);
    let Some(_permit) = permit else {
        tracing::warn!(connection = id, "refused: the connection limit is reached");
        let e = Error::Busy {
            socket: shared.socket.clone(),
            limit: "connections",
            max: CONNECTIONS_MAX as u64,
        };
        let _ = wr.write_all(&refuse(e)).await;
        return;
    };
    let peer_pid = match peer {
        Ok(cred) if cred.uid() == shared.uid => cred.pid().and_then(|p| u32::try_from(p).ok()),
        Ok(cred) => {
            tracing::warn!(
                connection = id,
                peer_uid = cred.uid(),
                peer_pid = cred.pid(),
                "refused a peer of another user"
            );
            let e = Error::PeerRefused {
                socket: shared.socket.clone(),
                reason: format!("uid {} is not the server's ({})", cred.uid(), shared.uid),
            };
            let _ = wr.write_all(&refuse(e)).await;
            return;
        }
        Err(e) => {
            tracing::warn!(connection = id, error = %e, "refused a peer whose credentials could not be read");
            return;
        }
    };
    if let Err(reply) = hello(&mut rd, id, &shared).await {
        let _ = wr.write_all(&reply).await;
        return;
    }
    let outbox = Outbox(Arc::new(tokio::sync::Mutex::new(wr)));
    let welcome = wire::Welcome {
        version: frame::PROTOCOL_VERSION,
        connection_id: id,
        server_pid: std::process::id(),
        dir: shared.db.dir().to_path_buf(),
        record_bytes_max: shared.db.options().record_bytes_max,
    };
    let _ = outbox
        .send(frame::encode(
            0,
            Code::Hello as u32,
            FLAG_REPLY,
            &wire::encode(&welcome),
        ))
        .await;
    let views = Arc::new(ConnectionViews::new(
        shared.db.clone(),
        shared.socket.clone(),
        peer_pid,
    ));
    let mut conn = Connection {
        views,
        shared,
        outbox,
        in_flight: Arc::new(Semaphore::new(REQUESTS_IN_FLIGHT_MAX)),
        polls: Arc::new(Semaphore::new(POLLS_IN_FLIGHT_MAX)),
        subscriptions: Arc::new(Mutex::new(HashMap::new())),
        tasks: JoinSet::new(),
        stop,
        socket: rd.clone(),
    };
    // Buffered only after the hello, which is read exactly.
    let rd = tokio::io::BufReader::with_capacity(READ_BUFFER_BYTES, rd);
    conn.read_loop(rd, id).await;
    let outbox = conn.outbox.clone();
    conn.finish().await;
    outbox.close().await;
}

/// The first frame must be a hello of this protocol, within
/// [`HELLO_DEADLINE`]; the error frame to send otherwise.
async fn hello(rd: &mut Socket, id: u64, shared: &Shared) -> Result<(), Vec<u8>> {
    let refuse = |reason: String| {
        tracing::warn!(connection = id, reason, "refused a connection's hello");
        error_frame(0, Code::Hello as u32, &protocol_error(shared, reason))
    };
    let read = tokio::time::timeout(HELLO_DEADLINE, frame::read(rd, FRAME_READ_DEADLINE)).await;
    let (header, body) = match read {
        Err(_) => return Err(refuse(format!("no hello within {HELLO_DEADLINE:?}"))),
        Ok(Err(e)) => return Err(refuse(e.to_string())),
        Ok(Ok(f)) => f,
    };
    if header.code != Code::Hello as u32 {
        return Err(refuse(format!(
            "the first request must be a hello (code {}), not code {}",
            Code::Hello as u32,
            header.code
        )));
    }
    let hello: wire::Hello = wire::decode("hello", &body).map_err(refuse)?;
    if hello.magic != wire::MAGIC {
        return Err(refuse(format!("a hello with magic {:?}", hello.magic)));
    }
    if hello.version != frame::PROTOCOL_VERSION {
        return Err(refuse(format!(
            "protocol version {}, this server speaks {}",
            hello.version,
            frame::PROTOCOL_VERSION
        )));
    }
    Ok(())
}

struct Connection {
    shared: Arc<Shared>,
    outbox: Outbox,
    in_flight: Arc<Semaphore>,
    /// Subscription polls and watch waits in flight.
    polls: Arc<Semaphore>,
    /// Each live subscription's tag, and what ends it.
    subscriptions: Arc<Mutex<HashMap<u64, oneshot::Sender<()>>>>,
    tasks: JoinSet<()>,
    stop: watch::Receiver<bool>,
    /// The views' handles and this connection's KV owners.
    views: Arc<ConnectionViews>,
    /// The socket itself, to break off without the writer's lock.
    socket: Socket,
}

impl Connection {
    async fn read_loop(&mut self, rd: Reader, id: u64) {
        // One read future lives across the loop's turns and is replaced
        // only once it has a whole frame: a turn that ends for another
        // branch (a finished task) must not drop the bytes read so far.
        let mut read = Box::pin(read_owned(rd));
        let mut stop = self.stop.clone();
        loop {
            let (rd, frame) = tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                done = &mut read => done,
                Some(_) = self.tasks.join_next(), if !self.tasks.is_empty() => continue,
            };
            let (header, body) = match frame {
                Ok(f) => f,
                Err(frame::FrameError::Closed) => return,
                Err(e) => {
                    tracing::warn!(connection = id, error = %e, "closing a connection that sent a bad frame");
                    let e = protocol_error(&self.shared, e.to_string());
                    let _ = self.outbox.send_bounded(error_frame(0, 0, &e)).await;
                    return;
                }
            };
            // The server's budget of request bytes in flight: past it, this
            // connection is not read until requests are answered.
            let size = u32::try_from(body.len()).unwrap_or(u32::MAX).max(1);
            let Ok(bytes) = self
                .shared
                .request_bytes
                .clone()
                .acquire_many_owned(size)
                .await
            else {
                return;
            };
            match self.request(header, body, bytes) {
                Ok(None) => {}
                // Answered here, not by a task: a client that sends more
                // than the limit without reading its replies stops being
                // read, instead of growing the server's memory.
                Ok(Some(reply)) => {
                    if self.outbox.send(reply).await.is_err() {
                        return;
                    }
                }
                Err(reason) => {
                    tracing::warn!(
                        connection = id,
                        tag = header.tag,
                        reason,
                        "closing a connection that sent a bad request"
                    );
                    let e = protocol_error(&self.shared, reason);
                    let _ = self
                        .outbox
                        .send_bounded(error_frame(header.tag, header.code, &e))
                        .await;
                    return;
                }
            }
            read.set(read_owned(rd));
        }
    }

    /// Ends subscriptions, answers what is in flight (at most
    /// [`STOP_DRAIN_MAX`]), and says goodbye if the server is stopping.
    async fn finish(mut self) {
        for (_, end) in self
            .subscriptions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
        {
            let _ = end.send(());
        }
        let drained = tokio::time::timeout(STOP_DRAIN_MAX, async {
            while self.tasks.join_next().await.is_some() {}
            // Appends have no task: each holds its permit until answered.
            let all = u32::try_from(REQUESTS_IN_FLIGHT_MAX).unwrap_or(u32::MAX);
            let _ = self.in_flight.acquire_many(all).await;
        })
        .await;
        if drained.is_err() {
            tracing::warn!("requests still in flight after {STOP_DRAIN_MAX:?}; closing anyway");
            // An answer still waiting for room in a client that does not
            // read fails now, and frees what it holds.
            self.socket.break_off();
            self.tasks.shutdown().await;
        }
        if *self.stop.borrow() {
            let _ = self
                .outbox
                .send_bounded(frame::encode(0, Code::Goodbye as u32, 0, &[]))
                .await;
        }
    }

    /// Registers the poll `tag`, which a cancel or the connection's end
    /// ends: what tells it, and what forgets it once it is answered.
    fn poll_slot(&self, tag: u64) -> (oneshot::Receiver<()>, impl FnOnce() + Send + 'static) {
        let (end, ended) = oneshot::channel();
        self.subscriptions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(tag, end);
        let subscriptions = self.subscriptions.clone();
        let done = move || {
            subscriptions
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&tag);
        };
        (ended, done)
    }

    /// Starts one request, or gives the reply to send at once (a
    /// refusal); an error is a protocol error (the connection is closed
    /// after it is answered).
    fn request(
        &mut self,
        header: Header,
        body: Vec<u8>,
        bytes: OwnedSemaphorePermit,
    ) -> Result<Option<Vec<u8>>, String> {
        if header.flags & (FLAG_REPLY | FLAG_ERROR) != 0 {
            return Err(format!("a request with reply flags {:#x}", header.flags));
        }
        let code = Code::from_u32(header.code)
            .ok_or_else(|| format!("unknown request code {}", header.code))?;
        let (tag, raw) = (header.tag, header.code);
        if code == Code::Cancel {
            let cancel: wire::Cancel = wire::decode("cancel", &body)?;
            if let Some(end) = self
                .subscriptions
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&cancel.tag)
            {
                let _ = end.send(());
            }
            return Ok(None);
        }
        // A poll (a subscription's, a watch's wait) may wait long for
        // nothing to happen: polls have a budget of their own, so many
        // idle watches on one client never starve its requests.
        let is_poll = matches!(code, Code::Subscribe | Code::WaitApplied);
        let (budget, limit, max) = if is_poll {
            (
                &self.polls,
                "polls in flight on one connection",
                POLLS_IN_FLIGHT_MAX,
            )
        } else {
            (
                &self.in_flight,
                "requests in flight on one connection",
                REQUESTS_IN_FLIGHT_MAX,
            )
        };
        let Ok(permit) = budget.clone().try_acquire_owned() else {
            let e = Error::Busy {
                socket: self.shared.socket.clone(),
                limit,
                max: max as u64,
            };
            return Ok(Some(error_frame(tag, raw, &e)));
        };
        // Held as long as the request: the bytes it came with count
        // against the server's budget until it is answered.
        let permit = (permit, bytes);
        let request = Request::decode(code, &body)?;
        let (shared, outbox) = (self.shared.clone(), self.outbox.clone());
        if let Request::Append(a) = request {
            // Queued from here, and answered by whoever acknowledges its
            // group, with no task of its own to wake: the permit is held
            // until the answer is written, so a stop still waits for it.
            let runtime = Handle::current();
            shared
                .db
                .append_then(&a.stream, a.expected, &a.events, move |done| {
                    let frame = match done {
                        Ok(done) => frame::encode(tag, raw, FLAG_REPLY, &wire::encode(&done)),
                        Err(e) => error_frame(tag, raw, &e),
                    };
                    outbox.send_now(frame, &runtime, permit);
                });
            return Ok(None);
        }
        if let Request::WaitApplied(lsn) = request {
            let (ended, done) = self.poll_slot(tag);
            self.tasks.spawn(async move {
                let mut applied = crate::engine::AppliedWatch::new(&shared.db);
                // Ended by a stop or a cancel, or past the limit: answered
                // all the same, and the client reads again.
                let waited = tokio::select! {
                    _ = ended => Ok(()),
                    _ = tokio::time::sleep(super::WAIT_APPLIED_MAX) => Ok(()),
                    done = applied.wait_past_async(lsn) => done,
                };
                let frame = match waited {
                    Ok(()) => frame::encode(tag, raw, FLAG_REPLY, &[]),
                    Err(e) => error_frame(tag, raw, &e),
                };
                done();
                let _ = outbox.send(frame).await;
                drop(permit);
            });
            return Ok(None);
        }
        if let Request::Subscribe(from_lsn) = request {
            let (ended, done) = self.poll_slot(tag);
            self.tasks.spawn(async move {
                subscribe(&shared, &outbox, tag, from_lsn, ended).await;
                done();
                drop(permit);
            });
            return Ok(None);
        }
        let views = self.views.clone();
        self.tasks.spawn(async move {
            let db = shared.db.clone();
            let reply = tokio::task::spawn_blocking(move || request.run(&db, &views)).await;
            let frame = match reply {
                Ok(Ok(body)) if body.len() > frame::FRAME_BODY_BYTES_MAX as usize => {
                    let e = Error::Unsupported {
                        op: "serve",
                        reason: format!(
                            "the answer is {} bytes, above the frame limit of {}: ask for less \
                             (a narrower prefix, a smaller page)",
                            body.len(),
                            frame::FRAME_BODY_BYTES_MAX
                        ),
                    };
                    error_frame(tag, raw, &e)
                }
                Ok(Ok(body)) => frame::encode(tag, raw, FLAG_REPLY, &body),
                Ok(Err(e)) => error_frame(tag, raw, &e),
                Err(e) => error_frame(
                    tag,
                    raw,
                    &Error::Internal {
                        op: "serve",
                        reason: format!("the request's task failed: {e}"),
                    },
                ),
            };
            let _ = outbox.send(frame).await;
            drop(permit);
        });
        Ok(None)
    }
}

/// A request, decoded.
enum Request {
    Ping(wire::Ping),
    Append(wire::Append),
    Read(wire::Read),
    ReadStream(wire::ReadStream),
    ReadStreamFromLsn(wire::ReadStreamFromLsn),
    StreamVersion(wire::StreamName),
    LastLsn,
    Subscribe(u64),
    Sync,
    Checkpoint,
    Call(ViewCall),
    WaitApplied(u64),
    Stats,
    Retention(wire::StreamName),
    SetRetention(wire::SetRetention),
    Backup(wire::Backup),
}

impl Request {
    fn decode(code: Code, body: &[u8]) -> Result<Request, String> {
        Ok(match code {
            Code::Ping => Request::Ping(wire::decode("ping", body)?),
            Code::Append => Request::Append(wire::decode("append", body)?),
            Code::Read => Request::Read(wire::decode("read", body)?),
            Code::ReadStream => Request::ReadStream(wire::decode("read_stream", body)?),
            Code::ReadStreamFromLsn => {
                Request::ReadStreamFromLsn(wire::decode("read_stream_from_lsn", body)?)
            }
            Code::StreamVersion => Request::StreamVersion(wire::decode("stream_version", body)?),
            Code::LastLsn => Request::LastLsn,
            Code::Subscribe => {
                Request::Subscribe(wire::decode::<wire::Subscribe>("subscribe", body)?.from_lsn)
            }
            Code::Sync => Request::Sync,
            Code::Checkpoint => Request::Checkpoint,
            Code::Call => Request::Call(wire::decode("view call", body)?),
            Code::WaitApplied => {
                Request::WaitApplied(wire::decode::<wire::Number>("wait_applied", body)?.value)
            }
            Code::Stats => Request::Stats,
            Code::Retention => Request::Retention(wire::decode("retention", body)?),
            Code::SetRetention => Request::SetRetention(wire::decode("set_retention", body)?),
            Code::Backup => Request::Backup(wire::decode("backup", body)?),
            Code::Hello => return Err("a second hello".into()),
            Code::Goodbye | Code::Cancel => {
                return Err(format!("code {} is not a request here", code as u32));
            }
        })
    }

    /// Runs it against the database; the reply's body.
    fn run(self, db: &crate::Db, views: &ConnectionViews) -> crate::Result<Vec<u8>> {
        Ok(match self {
            Request::Ping(p) => wire::encode(&p),
            Request::Append(a) => wire::encode(&db.append(&a.stream, a.expected, &a.events)?),
            Request::Read(r) => page(db.read(r.from_lsn, page_limit(r.limit))?),
            Request::ReadStream(r) => {
                page(db.read_stream(&r.stream, r.from_version, page_limit(r.limit))?)
            }
            Request::ReadStreamFromLsn(r) => {
                page(db.read_stream_from_lsn(&r.stream, r.from_lsn, page_limit(r.limit))?)
            }
            Request::StreamVersion(s) => wire::encode(&wire::Number {
                value: db.stream_version(&s.stream)?,
            }),
            Request::LastLsn => wire::encode(&wire::Number {
                value: db.last_lsn(),
            }),
            Request::Sync => wire::encode(&wire::Number { value: db.sync()? }),
            Request::Checkpoint => wire::encode(&db.checkpoint()?),
            Request::Call(call) => views.run(call)?,
            Request::Stats => wire::encode(&db.stats()?),
            Request::Retention(s) => wire::encode(&db.retention(&s.stream)?),
            Request::SetRetention(r) => wire::encode(&db.set_retention(&r.stream, r.retention)?),
            Request::Backup(b) => {
                // The server's working directory is not the client's.
                if !b.dest.is_absolute() {
                    return Err(Error::InvalidArgument {
                        op: "backup",
                        reason: format!(
                            "{} is not an absolute path (a client sends one)",
                            b.dest.display()
                        ),
                    });
                }
                wire::encode(&wire::Number {
                    value: db.backup(&b.dest)?,
                })
            }
            Request::Subscribe(_) | Request::WaitApplied(_) => {
                return Err(Error::Internal {
                    op: "serve",
                    reason: "a poll is not a one-shot request".into(),
                });
            }
        })
    }
}

fn page_limit(limit: u64) -> usize {
    limit.min(wire::PAGE_EVENTS_MAX) as usize
}

/// Events, cut to what fits a frame (always at least one).
fn page(mut events: Vec<Event>) -> Vec<u8> {
    let mut bytes = 0usize;
    let fits = events
        .iter()
        .position(|e| {
            bytes += e.data.len() + e.stream.len() + 32;
            bytes > PAGE_BYTES_MAX
        })
        .unwrap_or(events.len())
        .max(1);
    events.truncate(fits);
    wire::encode(&wire::Events { events })
}

/// Answers a subscription's poll: the next page of events from
/// `from_lsn`, waiting until at least one is committed, with every one
/// committed already up to a page. The client cancelling or the server
/// stopping answers an empty page. A subscription is a sequence of these
/// polls, so nothing is sent that was not asked for: a slow subscriber
/// holds at most one page, on either side.
async fn subscribe(
    shared: &Shared,
    outbox: &Outbox,
    tag: u64,
    from_lsn: u64,
    mut ended: oneshot::Receiver<()>,
) {
    let raw = Code::Subscribe as u32;
    let mut sub = match shared.db.subscribe(from_lsn) {
        Ok(s) => s,
        Err(e) => {
            let _ = outbox.send(error_frame(tag, raw, &e)).await;
            return;
        }
    };
    let mut next = tokio::select! {
        _ = &mut ended => None,
        next = sub.next_async() => next,
    };
    let (mut events, mut bytes) = (Vec::new(), 0usize);
    loop {
        match next {
            Some(Ok(e)) => {
                let size = e.data.len() + e.stream.len() + 32;
                // An event that would take the page past the frame's
                // limit waits for the next poll (which starts at it).
                if !events.is_empty() && bytes + size > PAGE_BYTES_MAX {
                    break;
                }
                bytes += size;
                events.push(e);
            }
            // An error after events: they go now, and the next poll,
            // from after them, meets the error.
            Some(Err(e)) if events.is_empty() => {
                let _ = outbox.send(error_frame(tag, raw, &e)).await;
                return;
            }
            Some(Err(_)) | None => break,
        }
        if events.len() as u64 >= wire::PAGE_EVENTS_MAX || bytes >= PAGE_BYTES_MAX / 2 {
            break;
        }
        next = sub.try_next();
    }
    let body = wire::encode(&wire::Events { events });
    let _ = outbox
        .send(frame::encode(tag, raw, FLAG_REPLY, &body))
        .await;
}
