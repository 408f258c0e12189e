//! The log on a NATS JetStream stream: one message per record, the
//! record's own bytes (header with its CRC, then the payload) as the
//! message's payload, so a record a replica serves damaged is caught by
//! replaydb's own check, end to end, and never applied.
//!
//! LSNs and stream sequences: a record holds one or more events, a
//! message one record, so the stream's sequence numbers records and the
//! LSNs inside them stay gapless. Each append publishes with
//! `Nats-Expected-Last-Sequence` (the stream's last record, as this log
//! knows it: a publish that finds another there is refused, and nothing
//! is written) and `Nats-Msg-Id` (the stream and the record's first LSN:
//! a publish sent again after a lost acknowledgement is not stored twice).
//! A record is durable once JetStream acknowledges it, which, with the
//! stream's replicas and `sync_interval: always` on every server (see
//! docs/DESIGN.md), means stored and synced on a quorum.
//!
//! Several databases (nodes) may share one stream. Each follows it with
//! an ordered consumer from where it opened: the stream's tail as this
//! node knows it moves with every record the consumer delivers, and the
//! last records' bytes are kept, so folding in what another node appended
//! seldom asks the cluster again. An append that finds another node's
//! record where it expected the end is refused by the cluster, and the
//! engine catches up and tries again (see `Log::is_shared`).
//!
//! A publish that gets no acknowledgement (a server gone, a leader being
//! elected, no quorum) is sent again, the same message with the same id
//! and expected sequence, with backoff, for [`APPEND_RETRY_FOR`]: a copy
//! the stream stored already is answered as a duplicate, so nothing is
//! stored twice. Then the append fails, naming the cluster, and may or
//! may not be in the stream: the next one finds out.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use futures_util::StreamExt;

use crate::error::{Error, Result};
use crate::log::{Log, LogRecord, LogStats, Truncated};
use crate::wal::format::{self, RecordView};

/// How long one call to the cluster may take before it fails.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an append keeps sending a record the cluster has not
/// acknowledged before it fails.
const APPEND_RETRY_FOR: Duration = Duration::from_secs(20);
/// How long one publish waits for its acknowledgement before it is sent
/// again.
const ACK_WAIT: Duration = Duration::from_secs(2);
/// The first and the longest pause between tries of an append, and
/// between restarts of the tail's consumer.
const BACKOFF_FIRST: Duration = Duration::from_millis(20);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Room left in a message for its headers (the message id and the
/// expected sequence take under 100 bytes).
const MESSAGE_HEADERS_BYTES_MAX: u64 = 1024;
/// Bytes of the stream's last records kept in memory for reads.
const RECENT_BYTES_MAX: u64 = 32 << 20;

#[derive(Debug)]
struct Tail {
    first_lsn: u64,
    last_lsn: u64,
    /// The stream sequence of the last record (0: none).
    last_seq: u64,
    records: u64,
    events: u64,
    bytes: u64,
    /// The last records, by stream sequence: checked when delivered.
    recent: BTreeMap<u64, bytes::Bytes>,
    recent_bytes: u64,
    /// A record past the tail failed its check: no append may follow it.
    damaged: Option<(u64, String)>,
}

/// What one message holds, by its records' headers.
#[derive(Debug, Clone, Copy)]
struct Holds {
    first_lsn: u64,
    last_lsn: u64,
    records: u64,
    events: u64,
}

impl Tail {
    /// The message `bytes`, delivered from the stream, is at sequence
    /// `seq`: checked (if it is past the tail) and then
    /// [`Tail::stored`].
    fn observe(&mut self, seq: u64, bytes: bytes::Bytes, record_bytes_max: u64) {
        let holds = if seq > self.last_seq {
            match records_of(&bytes, record_bytes_max) {
                Ok(records) => match (records.first(), records.last()) {
                    (Some(first), Some(last)) => Some(Holds {
                        first_lsn: first.first_lsn,
                        last_lsn: last.last_lsn(),
                        records: records.len() as u64,
                        events: records.iter().map(|r| u64::from(r.count)).sum(),
                    }),
                    _ => None,
                },
                Err((at, why)) => {
                    if self.damaged.is_none() {
                        self.damaged = Some((seq, format!("at byte {at}: {why}")));
                    }
                    None
                }
            }
        } else {
            None
        };
        self.stored(seq, bytes, holds);
    }

    /// The message `bytes`, holding `holds` (`None`: not known, it did
    /// not check out), is at sequence `seq`: the tail moves on if it is
    /// past it, and the bytes are kept. This log's own messages come here
    /// straight from their acknowledgement, with what they hold known
    /// already: no decoding again on the append's path.
    fn stored(&mut self, seq: u64, bytes: bytes::Bytes, holds: Option<Holds>) {
        if seq > self.last_seq {
            if let Some(h) = holds {
                if self.records == 0 {
                    self.first_lsn = h.first_lsn;
                }
                self.last_lsn = h.last_lsn;
                self.records += h.records;
                self.events += h.events;
            }
            self.last_seq = seq;
            self.bytes += bytes.len() as u64;
        }
        if seq + 1 >= self.first_seq_kept() {
            self.recent_bytes += bytes.len() as u64;
            if let Some(old) = self.recent.insert(seq, bytes) {
                self.recent_bytes -= old.len() as u64;
            }
            while self.recent_bytes > RECENT_BYTES_MAX {
                match self.recent.pop_first() {
                    Some((_, b)) => self.recent_bytes -= b.len() as u64,
                    None => break,
                }
            }
        }
    }

    fn first_seq_kept(&self) -> u64 {
        self.recent.keys().next().copied().unwrap_or(0)
    }
}

/// The records of one message, back to back, each checked; the offset
/// and the failure of the first that is not a record.
fn records_of(
    bytes: &[u8],
    record_bytes_max: u64,
) -> std::result::Result<Vec<RecordView<'_>>, (usize, String)> {
    let mut records = Vec::new();
    let mut at = 0usize;
    while let Some(rest) = bytes.get(at..).filter(|r| !r.is_empty()) {
        let r = format::decode_record(rest, record_bytes_max).map_err(|e| (at, e.to_string()))?;
        // A checked record's length is within the bytes it came from.
        at = usize::try_from(r.total_bytes)
            .ok()
            .and_then(|n| at.checked_add(n))
            .ok_or((at, "a record longer than its message".to_string()))?;
        records.push(r);
    }
    if records.is_empty() {
        return Err((0, "a message with no record".into()));
    }
    Ok(records)
}

/// See the module docs.
pub struct JetStreamLog {
    /// Where every call to the cluster runs.
    rt: tokio::runtime::Handle,
    /// The runtime itself, shut down without waiting when the log is
    /// dropped (which may happen inside another runtime's task, where a
    /// runtime may not be dropped the ordinary way).
    runtime: Option<tokio::runtime::Runtime>,
    js: jetstream::Context,
    stream: stream::Stream,
    name: String,
    subject: String,
    /// This log's own id, in its records' message ids: no other writer
    /// (another node, or this one after a restart) uses it.
    writer: String,
    /// Named in errors: the servers and the stream.
    endpoint: PathBuf,
    state: Arc<Mutex<Tail>>,
    grew: Arc<Condvar>,
    record_bytes_max: u64,
    /// The largest message this log publishes: the servers' payload limit
    /// less room for the headers.
    message_bytes_max: u64,
}

impl std::fmt::Debug for JetStreamLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamLog")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl JetStreamLog {
    /// Connects to `servers` (`nats://host:port`) and opens the stream
    /// `name` (created with `replicas` replicas on file storage if it does
    /// not exist), and finds its first and last LSN.
    pub fn open(
        servers: &[String],
        name: &str,
        replicas: usize,
        record_bytes_max: u64,
    ) -> Result<JetStreamLog> {
        JetStreamLog::open_with(servers, name, Some(replicas), record_bytes_max)
    }

    /// [`JetStreamLog::open`] of a stream that must exist already (what a
    /// check opens: it creates nothing).
    pub fn open_existing(
        servers: &[String],
        name: &str,
        record_bytes_max: u64,
    ) -> Result<JetStreamLog> {
        JetStreamLog::open_with(servers, name, None, record_bytes_max)
    }

    /// Opens the stream, creating it with `create` replicas if asked.
    fn open_with(
        servers: &[String],
        name: &str,
        create: Option<usize>,
        record_bytes_max: u64,
    ) -> Result<JetStreamLog> {
        let endpoint = PathBuf::from(format!("{}/{name}", servers.join(",")));
        let fail = |op: &'static str, e: &dyn std::fmt::Display| {
            Error::io(op, &endpoint, std::io::Error::other(e.to_string()))
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("replaydb-jetstream")
            .enable_all()
            .build()
            .map_err(|e| Error::io("start the JetStream client", &endpoint, e))?;
        let subject = format!("{name}.log");
        let addrs: Vec<async_nats::ServerAddr> = servers
            .iter()
            .map(|s| s.parse())
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| fail("parse the server addresses", &e))?;
        let config = stream::Config {
            name: name.to_string(),
            subjects: vec![subject.clone()],
            num_replicas: create.unwrap_or(1),
            storage: stream::StorageType::File,
            allow_direct: true,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        };
        let (js, stream, max_payload) = on(rt.handle(), CALL_TIMEOUT, async move {
            let client = async_nats::ConnectOptions::new()
                .connection_timeout(CALL_TIMEOUT)
                .connect(addrs)
                .await
                .map_err(|e| e.to_string())?;
            let max_payload = client.server_info().max_payload as u64;
            let mut js = jetstream::new(client);
            js.set_timeout(ACK_WAIT);
            let stream = match create {
                Some(_) => js
                    .get_or_create_stream(config)
                    .await
                    .map_err(|e| e.to_string())?,
                None => js
                    .get_stream(&config.name)
                    .await
                    .map_err(|e| format!("{e} (no stream {:?})", config.name))?,
            };
            Ok::<_, String>((js, stream, max_payload))
        })
        .and_then(|r| r)
        .map_err(|e| fail("open the stream", &e))?;
        let log = JetStreamLog {
            rt: rt.handle().clone(),
            runtime: Some(rt),
            js,
            stream,
            name: name.to_string(),
            subject,
            writer: uuid::Uuid::new_v4().simple().to_string(),
            endpoint,
            state: Arc::new(Mutex::new(Tail {
                first_lsn: 1,
                last_lsn: 0,
                last_seq: 0,
                records: 0,
                events: 0,
                bytes: 0,
                recent: BTreeMap::new(),
                recent_bytes: 0,
                damaged: None,
            })),
            grew: Arc::new(Condvar::new()),
            record_bytes_max,
            message_bytes_max: max_payload.saturating_sub(MESSAGE_HEADERS_BYTES_MAX),
        };
        log.load_tail()?;
        let from_seq = log.lock().last_seq + 1;
        log.rt.spawn(follow_tail(
            log.stream.clone(),
            log.subject.clone(),
            log.state.clone(),
            log.grew.clone(),
            from_seq,
            record_bytes_max,
        ));
        Ok(log)
    }

    fn fail(&self, op: &'static str, e: &dyn std::fmt::Display) -> Error {
        Error::io(op, &self.endpoint, std::io::Error::other(e.to_string()))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tail> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The stream's message counts and sequences, as the cluster has them
    /// now.
    fn stream_state(&self) -> Result<stream::State> {
        let mut stream = self.stream.clone();
        on(&self.rt, CALL_TIMEOUT, async move {
            stream
                .info()
                .await
                .map(|i| i.state.clone())
                .map_err(|e| e.to_string())
        })
        .and_then(|r| r)
        .map_err(|e| self.fail("read the stream's state", &e))
    }

    /// The stream's first and last records, as the cluster has them now.
    fn load_tail(&self) -> Result<()> {
        let info = self.stream_state()?;
        let mut tail = self.lock();
        tail.records = info.messages;
        tail.bytes = info.bytes;
        if info.messages == 0 {
            // Empty (or purged whole): it goes on after its last sequence.
            tail.last_seq = info.last_sequence;
            return Ok(());
        }
        drop(tail);
        let first = self.record_at(info.first_sequence)?;
        let last = self.record_at(info.last_sequence)?;
        let mut tail = self.lock();
        tail.first_lsn = first.0;
        tail.last_lsn = last.1;
        tail.last_seq = info.last_sequence;
        tail.events = (last.1 + 1).saturating_sub(first.0);
        Ok(())
    }

    /// The stream's tail as the cluster has it now, after an append found
    /// another node's record there: the last record is read, so the tail
    /// (and the engine, which folds the stream up to it) moves past it.
    fn refresh_tail(&self) -> Result<()> {
        let info = self.stream_state()?;
        if info.last_sequence <= self.lock().last_seq {
            return Ok(());
        }
        if self.lock().records == 0 {
            // Its first record too, not only its last.
            self.load_tail()?;
            self.grew.notify_all();
            return Ok(());
        }
        let bytes = self.message(info.last_sequence)?;
        let mut tail = self.lock();
        tail.observe(info.last_sequence, bytes, self.record_bytes_max);
        tail.records = info.messages;
        tail.bytes = info.bytes;
        drop(tail);
        self.grew.notify_all();
        Ok(())
    }

    /// The message at `seq`, its bytes: kept from the tail's consumer, or
    /// asked of the cluster.
    fn message(&self, seq: u64) -> Result<bytes::Bytes> {
        if let Some(b) = self.lock().recent.get(&seq) {
            return Ok(b.clone());
        }
        let stream = self.stream.clone();
        on(&self.rt, CALL_TIMEOUT, async move {
            // From the stream's leader: a direct get may be answered by a
            // replica that has not stored the message yet.
            stream
                .get_raw_message(seq)
                .await
                .map(|m| m.payload)
                .map_err(|e| e.to_string())
        })
        .and_then(|r| r)
        .map_err(|e| self.fail("read a record", &e))
    }

    /// The first and last LSN of the record at `seq`, checked.
    fn record_at(&self, seq: u64) -> Result<(u64, u64)> {
        let bytes = self.message(seq)?;
        let records = self.decode(seq, &bytes)?;
        match (records.first(), records.last()) {
            (Some(first), Some(last)) => Ok((first.first_lsn, last.last_lsn())),
            _ => Err(Error::corrupt(
                &self.endpoint,
                seq,
                "a message with no record",
            )),
        }
    }

    /// The records of the message at `seq`, each checked.
    fn decode<'b>(&self, seq: u64, bytes: &'b [u8]) -> Result<Vec<RecordView<'b>>> {
        records_of(bytes, self.record_bytes_max).map_err(|(at, e)| {
            // The LSN its header claims, for the report (unchecked: the
            // record failed its check).
            let claims = bytes
                .get(at..)
                .and_then(format::peek_lsns)
                .map_or(String::new(), |(lsn, _)| format!(" (it claims LSN {lsn})"));
            Error::corrupt(
                &self.endpoint,
                seq,
                format!(
                    "stream {} sequence {seq}, byte {at}{claims}: {e}",
                    self.name
                ),
            )
        })
    }

    /// The sequence of the record holding `lsn` (a binary search over
    /// direct gets), or the first after it if none holds it.
    fn seq_of(&self, lsn: u64) -> Result<u64> {
        {
            // Among the records kept, if they reach back to it: the last
            // one starting at or before it (a read starting a record
            // early skips what it does not need).
            let t = self.lock();
            let starts = |b: &bytes::Bytes| format::peek_lsns(b).map(|(first, _)| first);
            if let Some((_, oldest)) = t.recent.first_key_value()
                && starts(oldest).is_some_and(|first| first <= lsn)
                && let Some((seq, _)) = t
                    .recent
                    .iter()
                    .rev()
                    .find(|(_, b)| starts(b).is_some_and(|first| first <= lsn))
            {
                return Ok(*seq);
            }
        }
        let info = self.stream_state()?;
        if info.messages == 0 {
            return Ok(info.last_sequence + 1);
        }
        // The last message whose first record starts at or before `lsn`
        // (the first message if none does).
        let (mut lo, mut hi) = (info.first_sequence, info.last_sequence);
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            // The header's claim, unchecked, steers the search (a damaged
            // record in the middle must not hide the ones before it); what
            // is read is checked whole.
            let bytes = self.message(mid)?;
            let (first, _) = format::peek_lsns(&bytes).ok_or_else(|| {
                Error::corrupt(
                    &self.endpoint,
                    mid,
                    format!("stream {} sequence {mid}: not a record", self.name),
                )
            })?;
            if first <= lsn {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        Ok(lo)
    }
}

/// Runs `f` on the log's runtime and waits for it, `timeout` at most:
/// from any thread, in or out of an async runtime (the wait blocks this
/// thread, as a file read would).
fn on<T: Send + 'static>(
    rt: &tokio::runtime::Handle,
    timeout: Duration,
    f: impl std::future::Future<Output = T> + Send + 'static,
) -> std::result::Result<T, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    rt.spawn(async move {
        let done = tokio::time::timeout(timeout, f).await;
        let _ = tx.send(done);
    });
    match rx.recv() {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(_)) => Err(format!("no answer within {timeout:?}")),
        Err(_) => Err("the JetStream client stopped".into()),
    }
}

/// Why the cluster did not take a record.
enum Failed {
    /// The stream did not end where the record expected: another writer.
    Stale,
    Other(String),
}

/// Publishes one message and waits for its acknowledgement: one that
/// does not come (a server gone, a leader being elected, no quorum) is
/// sent again, the same message with the same id, with backoff, until
/// [`APPEND_RETRY_FOR`] has passed.
async fn publish(
    js: jetstream::Context,
    subject: String,
    headers: async_nats::HeaderMap,
    bytes: bytes::Bytes,
) -> std::result::Result<jetstream::publish::PublishAck, Failed> {
    use async_nats::jetstream::context::PublishErrorKind;
    let deadline = tokio::time::Instant::now() + APPEND_RETRY_FOR;
    let mut backoff = BACKOFF_FIRST;
    loop {
        let sent = js
            .publish_with_headers(subject.clone(), headers.clone(), bytes.clone())
            .await;
        let error = match sent {
            Ok(ack) => match ack.await {
                Ok(ack) => return Ok(ack),
                Err(e) => e,
            },
            Err(e) => e,
        };
        match error.kind() {
            PublishErrorKind::WrongLastSequence | PublishErrorKind::WrongLastMessageId => {
                return Err(Failed::Stale);
            }
            PublishErrorKind::MaxPayloadExceeded => return Err(Failed::Other(error.to_string())),
            _ => {}
        }
        if tokio::time::Instant::now() + backoff >= deadline {
            return Err(Failed::Other(format!(
                "not acknowledged within {APPEND_RETRY_FOR:?} ({error})"
            )));
        }
        tracing::debug!(error = %error, "a record not acknowledged; sending it again");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Follows the stream from `from_seq` with an ordered consumer for as long
/// as the log is open (the task ends with its runtime): every record
/// delivered moves the tail and is kept for reads. A consumer that fails
/// (a server gone, the stream's leader moved) is made again, with
/// backoff, from the record after the last one delivered.
async fn follow_tail(
    stream: stream::Stream,
    subject: String,
    state: Arc<Mutex<Tail>>,
    grew: Arc<Condvar>,
    mut from_seq: u64,
    record_bytes_max: u64,
) {
    let mut backoff = BACKOFF_FIRST;
    loop {
        let config = consumer::pull::OrderedConfig {
            filter_subject: subject.clone(),
            deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                start_sequence: from_seq.max(1),
            },
            ..Default::default()
        };
        let messages = match stream.create_consumer(config).await {
            Ok(c) => c.messages().await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match messages {
            Ok(mut messages) => {
                while let Some(m) = messages.next().await {
                    let Ok(m) = m else { break };
                    let Ok(seq) = m.info().map(|i| i.stream_sequence) else {
                        // Its sequence unknown, it moves nothing: the next
                        // message moves the tail past it, and a read asks
                        // the leader for it. Said, not skipped silently.
                        tracing::warn!("a message of the stream without its sequence; not kept");
                        continue;
                    };
                    backoff = BACKOFF_FIRST;
                    from_seq = seq + 1;
                    state
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .observe(seq, m.message.payload.clone(), record_bytes_max);
                    grew.notify_all();
                }
            }
            Err(e) => tracing::debug!(error = %e, "following the JetStream stream; trying again"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

impl Drop for JetStreamLog {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl Log for JetStreamLog {
    fn first_lsn(&self) -> u64 {
        self.lock().first_lsn
    }

    fn last_lsn(&self) -> u64 {
        self.lock().last_lsn
    }

    fn durable_lsn(&self) -> u64 {
        // Acknowledged means stored on a quorum.
        self.lock().last_lsn
    }

    fn append(&self, expected_last_lsn: u64, records: &[LogRecord<'_>]) -> Result<()> {
        let last_seq = {
            let s = self.lock();
            if let Some((seq, why)) = &s.damaged {
                return Err(Error::corrupt(
                    &self.endpoint,
                    *seq,
                    format!("stream {} sequence {seq}: {why}", self.name),
                ));
            }
            if s.last_lsn != expected_last_lsn {
                return Err(Error::LogConflict {
                    expected_last_lsn,
                    actual_last_lsn: s.last_lsn,
                    stored_records: 0,
                });
            }
            s.last_seq
        };
        // The group's records, numbered and with their headers, back to
        // back in as few messages as the servers' payload limit allows
        // (one, nearly always: a message is stored whole or not at all).
        let mut next = expected_last_lsn + 1;
        let mut messages: Vec<(Holds, Vec<u8>)> = Vec::new();
        for r in records {
            if r.first_lsn != next {
                return Err(Error::Internal {
                    op: "append to log",
                    reason: format!("record numbered {} where {next} was next", r.first_lsn),
                });
            }
            let header = format::encode_record_header(r.batch, r.first_lsn, r.first_version, 0);
            let size = (header.len() + r.batch.payload.len()) as u64;
            if size > self.message_bytes_max {
                return Err(Error::RecordTooLarge {
                    stream: "(a group of the log)".into(),
                    size_bytes: size,
                    limit_bytes: self.message_bytes_max,
                });
            }
            match messages.last_mut() {
                Some((holds, bytes)) if (bytes.len() as u64) + size <= self.message_bytes_max => {
                    bytes.extend_from_slice(&header);
                    bytes.extend_from_slice(&r.batch.payload);
                    holds.last_lsn = r.last_lsn();
                    holds.records += 1;
                    holds.events += u64::from(r.batch.count);
                }
                _ => {
                    let mut bytes = header.to_vec();
                    bytes.extend_from_slice(&r.batch.payload);
                    let holds = Holds {
                        first_lsn: r.first_lsn,
                        last_lsn: r.last_lsn(),
                        records: 1,
                        events: u64::from(r.batch.count),
                    };
                    messages.push((holds, bytes));
                }
            }
            next = r.last_lsn() + 1;
        }
        // Each message expects the stream to end where the one before it
        // (or the tail) did, and carries an id of this writer's alone, so a
        // copy sent again after a lost acknowledgement is stored once.
        let mut stored_seq = last_seq;
        let mut stored_records = 0u64;
        for (holds, bytes) in messages {
            let first_lsn = holds.first_lsn;
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(
                async_nats::header::NATS_EXPECTED_LAST_SEQUENCE,
                stored_seq.to_string().as_str(),
            );
            headers.insert(
                async_nats::header::NATS_MESSAGE_ID,
                format!("{}-{first_lsn}", self.writer).as_str(),
            );
            let bytes = bytes::Bytes::from(bytes);
            let (js, subject) = (self.js.clone(), self.subject.clone());
            let ack = on(
                &self.rt,
                APPEND_RETRY_FOR + CALL_TIMEOUT,
                publish(js, subject, headers, bytes.clone()),
            )
            .map_err(|e| self.fail("append a record", &e))?;
            let conflict = Error::LogConflict {
                expected_last_lsn,
                actual_last_lsn: first_lsn - 1,
                stored_records,
            };
            let refused = match ack {
                // Another group of this writer's under the same id: one
                // whose append failed unacknowledged, yet was stored. The
                // stream has moved on without this log knowing: a race
                // lost, to its own earlier self.
                Ok(ack) if ack.duplicate && self.message(ack.sequence)? != bytes => {
                    Some(Err(conflict))
                }
                Ok(ack) if ack.sequence != stored_seq + 1 => Some(Err(self.fail(
                    "append a record",
                    &format!(
                        "stored at sequence {}, where {} was next",
                        ack.sequence,
                        stored_seq + 1
                    ),
                ))),
                Ok(ack) => {
                    stored_seq = ack.sequence;
                    stored_records += holds.records;
                    self.lock().stored(stored_seq, bytes, Some(holds));
                    self.grew.notify_all();
                    None
                }
                // Another writer appended since this log last looked: the
                // cluster refused the message, and nothing more is sent.
                Err(Failed::Stale) => Some(Err(conflict)),
                // The group's first messages are stored: said as a race
                // lost after them, so their appenders are answered; the
                // rest is tried again, and fails again while the cluster
                // does not answer.
                Err(Failed::Other(_)) if stored_records > 0 => Some(Err(conflict)),
                Err(Failed::Other(e)) => Some(Err(self.fail(
                    "append a record",
                    &format!("{e}; it may or may not be in the stream"),
                ))),
            };
            if let Some(refused) = refused {
                if matches!(refused, Err(Error::LogConflict { .. }))
                    && let Err(e) = self.refresh_tail()
                {
                    // The consumer moves the tail on when it can.
                    tracing::warn!(error = %e, "reading the stream's tail after a refused append");
                }
                return refused;
            }
        }
        Ok(())
    }

    fn sync(&self) -> Result<u64> {
        // Every append was acknowledged once stored: nothing to sync.
        Ok(self.lock().last_lsn)
    }

    fn read(
        &self,
        from_lsn: u64,
        visit: &mut dyn FnMut(&RecordView<'_>) -> Result<bool>,
    ) -> Result<()> {
        let last_seq = self.lock().last_seq;
        let mut seq = self.seq_of(from_lsn.max(1))?;
        // Each record must follow the one before it: a record missing or
        // numbered apart (a message deleted, another publisher's) is
        // damage, said with its sequence, never a silent gap.
        let mut expected: Option<u64> = None;
        while seq <= last_seq {
            let bytes = self.message(seq)?;
            for record in self.decode(seq, &bytes)? {
                if let Some(want) = expected
                    && record.first_lsn != want
                {
                    return Err(Error::corrupt(
                        &self.endpoint,
                        seq,
                        format!(
                            "stream {} sequence {seq}: a record of LSN {} where {want} was next",
                            self.name, record.first_lsn
                        ),
                    ));
                }
                expected = Some(record.last_lsn() + 1);
                if record.last_lsn() >= from_lsn && !visit(&record)? {
                    return Ok(());
                }
            }
            seq += 1;
        }
        Ok(())
    }

    fn wait_past(&self, lsn: u64, timeout: Duration) -> u64 {
        super::wait_past(&self.state, &self.grew, lsn, timeout, |s| s.last_lsn)
    }

    fn is_shared(&self) -> bool {
        true
    }

    fn record_bytes_limit(&self) -> Option<u64> {
        Some(
            self.message_bytes_max
                .saturating_sub(format::RECORD_HEADER_BYTES as u64),
        )
    }

    fn truncate_before(&self, lsn: u64) -> Result<Truncated> {
        let first = self.lock().first_lsn;
        if lsn <= first {
            return Ok(Truncated {
                first_lsn: first,
                removed: Vec::new(),
            });
        }
        // The record holding `lsn` stays; every one before it goes.
        let keep_from = self.seq_of(lsn)?;
        let stream = self.stream.clone();
        let purged = on(&self.rt, CALL_TIMEOUT, async move {
            stream
                .purge()
                .sequence(keep_from)
                .await
                .map(|p| p.purged)
                .map_err(|e| e.to_string())
        })
        .and_then(|r| r)
        .map_err(|e| self.fail("truncate the stream", &e))?;
        self.load_tail()?;
        Ok(Truncated {
            first_lsn: self.lock().first_lsn,
            removed: if purged > 0 {
                vec![format!("{purged} messages of stream {}", self.name)]
            } else {
                Vec::new()
            },
        })
    }

    fn backup(&self, _dest_dir: &Path, _last_lsn: u64) -> Result<u64> {
        Err(Error::Unsupported {
            op: "backup",
            reason: "the log lives on the JetStream cluster: back the cluster up".into(),
        })
    }

    fn stats(&self) -> LogStats {
        let s = self.lock();
        LogStats {
            kind: "jetstream",
            records: s.records,
            events: s.events,
            bytes: s.bytes,
            files: 0,
            first_lsn: s.first_lsn,
            last_lsn: s.last_lsn,
            durable_lsn: s.last_lsn,
            syncs: 0,
        }
    }
}
