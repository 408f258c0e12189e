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
//! This first version has one writer (the database that opened it) and
//! finds a record by its LSN with a binary search over direct gets.

use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::Duration;

use async_nats::jetstream::{self, stream};

use crate::error::{Error, Result};
use crate::log::{Log, LogRecord, LogStats, Truncated};
use crate::wal::format::{self, RecordView};

/// How long one call to the cluster may take before it fails.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug)]
struct Tail {
    first_lsn: u64,
    last_lsn: u64,
    /// The stream sequence of the last record (0: none).
    last_seq: u64,
    records: u64,
    events: u64,
    bytes: u64,
}

/// See the module docs.
pub struct JetStreamLog {
    rt: tokio::runtime::Runtime,
    js: jetstream::Context,
    stream: stream::Stream,
    name: String,
    subject: String,
    /// Named in errors: the servers and the stream.
    endpoint: PathBuf,
    state: Mutex<Tail>,
    grew: Condvar,
    record_bytes_max: u64,
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
            num_replicas: replicas,
            storage: stream::StorageType::File,
            allow_direct: true,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        };
        let (js, stream) = on(&rt, async move {
            let client = async_nats::ConnectOptions::new()
                .connection_timeout(CALL_TIMEOUT)
                .connect(addrs)
                .await
                .map_err(|e| e.to_string())?;
            let js = jetstream::new(client);
            let stream = js
                .get_or_create_stream(config)
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>((js, stream))
        })
        .and_then(|r| r)
        .map_err(|e| fail("open the stream", &e))?;
        let log = JetStreamLog {
            rt,
            js,
            stream,
            name: name.to_string(),
            subject,
            endpoint,
            state: Mutex::new(Tail {
                first_lsn: 1,
                last_lsn: 0,
                last_seq: 0,
                records: 0,
                events: 0,
                bytes: 0,
            }),
            grew: Condvar::new(),
            record_bytes_max,
        };
        log.load_tail()?;
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
        on(&self.rt, async move {
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

    /// The message at `seq`, its bytes.
    fn message(&self, seq: u64) -> Result<bytes::Bytes> {
        let stream = self.stream.clone();
        on(&self.rt, async move {
            stream
                .direct_get(seq)
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
        let r = self.decode(seq, &bytes)?;
        Ok((r.first_lsn, r.last_lsn()))
    }

    fn decode<'b>(&self, seq: u64, bytes: &'b [u8]) -> Result<RecordView<'b>> {
        format::decode_record(bytes, self.record_bytes_max).map_err(|e| {
            // The LSN its header claims, for the report (unchecked: the
            // record failed its check).
            let claims = format::peek_lsns(bytes)
                .map_or(String::new(), |(lsn, _)| format!(" (it claims LSN {lsn})"));
            Error::corrupt(
                &self.endpoint,
                seq,
                format!("stream {} sequence {seq}{claims}: {e}", self.name),
            )
        })
    }

    /// The sequence of the record holding `lsn` (a binary search over
    /// direct gets), or the first after it if none holds it.
    fn seq_of(&self, lsn: u64) -> Result<u64> {
        let info = self.stream_state()?;
        let (mut lo, mut hi) = (info.first_sequence, info.last_sequence);
        if info.messages == 0 {
            return Ok(info.last_sequence + 1);
        }
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            // The header's claim, unchecked, steers the search (a damaged
            // record in the middle must not hide the ones before it); what
            // is read is checked whole.
            let bytes = self.message(mid)?;
            let (first, count) = format::peek_lsns(&bytes).ok_or_else(|| {
                Error::corrupt(
                    &self.endpoint,
                    mid,
                    format!("stream {} sequence {mid}: not a record", self.name),
                )
            })?;
            // Unchecked bytes: no arithmetic on them may overflow.
            let last = first.saturating_add(u64::from(count.max(1)) - 1);
            if last < lsn {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(lo)
    }
}

/// Runs `f` on the log's runtime and waits for it: from any thread, in
/// or out of an async runtime (the wait blocks this thread, as a file
/// read would).
fn on<T: Send + 'static>(
    rt: &tokio::runtime::Runtime,
    f: impl std::future::Future<Output = T> + Send + 'static,
) -> std::result::Result<T, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    rt.spawn(async move {
        let done = tokio::time::timeout(CALL_TIMEOUT, f).await;
        let _ = tx.send(done);
    });
    match rx.recv() {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(_)) => Err(format!("no answer within {CALL_TIMEOUT:?}")),
        Err(_) => Err("the JetStream client stopped".into()),
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
            if s.last_lsn != expected_last_lsn {
                return Err(Error::LogConflict {
                    expected_last_lsn,
                    actual_last_lsn: s.last_lsn,
                });
            }
            s.last_seq
        };
        // Every record of the group, numbered and with its headers: the
        // k-th expects the stream to end at `last_seq + k`.
        let mut next = expected_last_lsn + 1;
        let mut out = Vec::with_capacity(records.len());
        for (k, r) in (0u64..).zip(records) {
            if r.first_lsn != next {
                return Err(Error::Internal {
                    op: "append to log",
                    reason: format!("record numbered {} where {next} was next", r.first_lsn),
                });
            }
            let mut bytes =
                format::encode_record_header(r.batch, r.first_lsn, r.first_version, 0).to_vec();
            bytes.extend_from_slice(&r.batch.payload);
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(
                async_nats::header::NATS_EXPECTED_LAST_SEQUENCE,
                (last_seq + k).to_string().as_str(),
            );
            headers.insert(
                async_nats::header::NATS_MESSAGE_ID,
                format!("{}-{}", self.name, r.first_lsn).as_str(),
            );
            out.push((headers, bytes::Bytes::from(bytes)));
            next = r.last_lsn() + 1;
        }
        // Published one after another without waiting, then the acks
        // awaited in order: a group costs one round trip, not one a
        // record. The cluster applies them in order, each checking the
        // sequence before it.
        let (js, subject) = (self.js.clone(), self.subject.clone());
        let sent: Vec<bytes::Bytes> = out.iter().map(|(_, b)| b.clone()).collect();
        let acks = on(&self.rt, async move {
            use async_nats::jetstream::context::PublishErrorKind;
            let stale = |e: &async_nats::jetstream::context::PublishError| {
                e.kind() == PublishErrorKind::WrongLastSequence
            };
            let mut pending = Vec::with_capacity(out.len());
            let mut unsent = None;
            for (headers, bytes) in out {
                match js
                    .publish_with_headers(subject.clone(), headers, bytes)
                    .await
                {
                    Ok(f) => pending.push(f),
                    Err(e) => {
                        unsent = Some(Err((stale(&e), e.to_string())));
                        break;
                    }
                }
            }
            // The acks of what was sent come first, even after a failed
            // send: what the stream stored, this log must know it holds.
            let mut acks = Vec::with_capacity(pending.len() + 1);
            for f in pending {
                let ack = f.await.map_err(|e| (stale(&e), e.to_string()));
                let failed = ack.is_err();
                acks.push(ack);
                if failed {
                    return acks;
                }
            }
            acks.extend(unsent);
            acks
        })
        .map_err(|e| self.fail("append a record", &e))?;
        let mut stored_seq = last_seq;
        let mut outcome = Ok(());
        for ((r, ack), mine) in records.iter().zip(acks).zip(sent) {
            let ack = match ack {
                Ok(ack) => ack,
                // Another writer appended since this log last looked: the
                // cluster refused the record, and nothing more was written.
                Err((true, _)) => {
                    outcome = Err(Error::LogConflict {
                        expected_last_lsn,
                        actual_last_lsn: r.last_lsn(),
                    });
                    break;
                }
                Err((false, e)) => {
                    outcome = Err(self.fail("append a record", &e));
                    break;
                }
            };
            // A duplicate: a record of this message id (this first LSN) is
            // stored already, and the cluster did not check the expected
            // sequence. Ours, sent again after a lost acknowledgement, or
            // another writer's, who took the LSN first.
            if ack.duplicate && self.message(ack.sequence)? != mine {
                outcome = Err(Error::LogConflict {
                    expected_last_lsn,
                    actual_last_lsn: r.last_lsn(),
                });
                break;
            }
            if ack.sequence != stored_seq + 1 {
                outcome = Err(self.fail(
                    "append a record",
                    &format!(
                        "stored at sequence {}, where {} was next: another writer",
                        ack.sequence,
                        stored_seq + 1
                    ),
                ));
                break;
            }
            stored_seq = ack.sequence;
            let mut s = self.lock();
            s.last_seq = stored_seq;
            s.last_lsn = r.last_lsn();
            s.records += 1;
            s.events += u64::from(r.batch.count);
            s.bytes += mine.len() as u64;
        }
        self.grew.notify_all();
        outcome
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
            let record = self.decode(seq, &bytes)?;
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
                break;
            }
            seq += 1;
        }
        Ok(())
    }

    fn wait_past(&self, lsn: u64, timeout: Duration) -> u64 {
        super::wait_past(&self.state, &self.grew, lsn, timeout, |s| s.last_lsn)
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
        let purged = on(&self.rt, async move {
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
