#![cfg(feature = "jetstream")]
//! The log on a three-node JetStream cluster keeps records in order with
//! gapless LSNs; refuses an append after a stale last LSN, and one made
//! behind another writer's back; finds its tail again when reopened;
//! truncates; reports a record whose bytes were changed in the stream,
//! by its sequence, never handing it on; and may be dropped inside an
//! async task.

mod common;

use std::time::{Duration, Instant};

use common::nats::Cluster;
use replaydb::Error;
use replaydb::log::{JetStreamLog, Log, LogRecord};
use replaydb::wal::format::encode_batch;

const RECORD_BYTES_MAX: u64 = 1 << 20;

/// Opens (creating) the stream `name` with three replicas, retrying while
/// the cluster elects its leaders.
fn open(cluster: &Cluster, name: &str) -> JetStreamLog {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match JetStreamLog::open(&cluster.urls, name, 3, RECORD_BYTES_MAX) {
            Ok(log) => return log,
            Err(e) if Instant::now() < deadline => {
                eprintln!("opening {name} again: {e}");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("{e}"),
        }
    }
}

/// Tries to append one event to stream `a` as LSN `expected_last + 1`, at
/// `version`, after `expected_last`.
fn try_append(
    log: &JetStreamLog,
    expected_last: u64,
    version: u64,
    event: &str,
) -> replaydb::Result<()> {
    let batch = encode_batch("a", &[event]);
    log.append(
        expected_last,
        &[LogRecord {
            batch: &batch,
            first_lsn: expected_last + 1,
            first_version: version,
        }],
    )
}

/// Appends one batch of `events` to `stream` after `log`'s last LSN.
fn append(log: &JetStreamLog, stream: &str, version: u64, events: &[&str]) -> u64 {
    let batch = encode_batch(stream, events);
    let last = log.last_lsn();
    log.append(
        last,
        &[LogRecord {
            batch: &batch,
            first_lsn: last + 1,
            first_version: version,
        }],
    )
    .unwrap();
    last + events.len() as u64
}

/// Publishes `bytes` straight to `subject`, as another publisher would,
/// sent again under the message id `id` until acknowledged (30 s at
/// most: the cluster may be electing the stream's leader), so it is
/// stored once.
async fn publish_raw(js: &async_nats::jetstream::Context, subject: &str, id: &str, bytes: Vec<u8>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, id);
        let sent = match js
            .publish_with_headers(subject.to_string(), headers, bytes.clone().into())
            .await
        {
            Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match sent {
            Ok(()) => return,
            Err(e) if Instant::now() < deadline => {
                eprintln!("publishing again: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("publish to {subject}: {e}"),
        }
    }
}

fn lsns_from(log: &JetStreamLog, from: u64) -> Vec<(u64, u64, String)> {
    let mut seen = Vec::new();
    log.read(from, &mut |r| {
        seen.push((r.first_lsn, r.last_lsn(), r.stream.to_string()));
        Ok(true)
    })
    .unwrap();
    seen
}

#[test]
fn records_are_kept_in_order_found_again_and_truncated() {
    let cluster = Cluster::start();
    let log = open(&cluster, "orders");
    assert_eq!((log.first_lsn(), log.last_lsn()), (1, 0));
    assert_eq!(append(&log, "a", 1, &["e1", "e2", "e3"]), 3);
    assert_eq!(append(&log, "b", 1, &["f1"]), 4);
    assert_eq!(append(&log, "a", 4, &["e4", "e5"]), 6);
    assert_eq!(log.sync().unwrap(), 6);
    assert_eq!(
        lsns_from(&log, 1),
        vec![
            (1, 3, "a".into()),
            (4, 4, "b".into()),
            (6 - 1, 6, "a".into())
        ]
    );
    // From inside a record: the record holding it, first.
    assert_eq!(lsns_from(&log, 2).first().map(|r| r.0), Some(1));
    assert_eq!(lsns_from(&log, 5).len(), 1);
    assert!(lsns_from(&log, 7).is_empty());

    // A stale last LSN is refused, and nothing is written.
    let stale = try_append(&log, 3, 6, "late");
    assert!(matches!(stale, Err(Error::LogConflict { .. })), "{stale:?}");

    // Another writer on the same stream: this one's next append, which
    // expects the stream's last record to be its own, is refused by the
    // cluster (Nats-Expected-Last-Sequence), and nothing is written.
    let other = open(&cluster, "orders");
    assert_eq!(other.last_lsn(), 6, "a reopened log finds its tail");
    append(&other, "c", 1, &["g1"]);
    let behind = try_append(&log, 6, 6, "behind");
    assert!(
        matches!(behind, Err(Error::LogConflict { .. })),
        "an append behind another writer's back: {behind:?}"
    );
    assert_eq!(lsns_from(&other, 7), vec![(7, 7, "c".into())]);
    // Behind it by a record of another LSN (another message id): the
    // cluster's expected-sequence check refuses it.
    let stale_seq = try_append(&log, 6, 6, "later");
    assert!(
        matches!(stale_seq, Err(Error::LogConflict { .. })),
        "{stale_seq:?}"
    );
    append(&other, "c", 2, &["g2", "g3"]);
    let refused = try_append(&log, 6, 6, "far behind");
    assert!(
        matches!(refused, Err(Error::LogConflict { .. })),
        "{refused:?}"
    );

    // Truncation drops whole records before the one holding the LSN.
    let t = other.truncate_before(5).unwrap();
    assert_eq!(t.first_lsn, 5);
    assert_eq!(lsns_from(&other, 1).first().map(|r| r.0), Some(5));
    let reopened = open(&cluster, "orders");
    assert_eq!((reopened.first_lsn(), reopened.last_lsn()), (5, 9));
}

#[test]
fn a_record_changed_in_the_stream_is_reported_with_its_sequence() {
    let cluster = Cluster::start();
    let first = open(&cluster, "damaged");
    append(&first, "a", 1, &["good"]);
    // A record whose bytes were changed, published straight to the
    // stream's subject (as a replica serving damaged data would hand it
    // on), and a good one after it.
    let record = |lsn: u64, event: &str| {
        let batch = encode_batch("a", &[event]);
        let mut bytes = replaydb::wal::format::encode_record_header(&batch, lsn, lsn, 0).to_vec();
        bytes.extend_from_slice(&batch.payload);
        bytes
    };
    let mut bad = record(2, "evil");
    let end = bad.len() - 1;
    bad[end] ^= 0x40;
    let good = record(3, "after");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let urls = cluster.urls.clone();
    rt.block_on(async move {
        let client = async_nats::connect(urls.first().unwrap().as_str())
            .await
            .unwrap();
        let js = async_nats::jetstream::new(client);
        publish_raw(&js, "damaged.log", "bad", bad).await;
        publish_raw(&js, "damaged.log", "good", good).await;
    });
    let log = open(&cluster, "damaged");
    assert_eq!(log.last_lsn(), 3);
    let mut seen = Vec::new();
    let read = log.read(1, &mut |r| {
        seen.push(r.first_lsn);
        Ok(true)
    });
    assert_eq!(seen, vec![1], "the good record, and nothing of the bad");
    match read {
        Err(Error::Corrupt { offset, reason, .. }) => {
            assert_eq!(offset, 2, "the stream sequence of the bad record");
            assert!(reason.contains("sequence 2"), "{reason}");
            assert!(reason.contains("claims LSN 2"), "{reason}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn a_record_numbered_apart_is_reported_not_skipped() {
    let cluster = Cluster::start();
    let first = open(&cluster, "gapped");
    append(&first, "a", 1, &["one"]);
    // A record whose own check passes but whose LSN does not follow:
    // another publisher's, or one after a deleted message.
    let batch = encode_batch("a", &["five"]);
    let mut bytes = replaydb::wal::format::encode_record_header(&batch, 5, 2, 0).to_vec();
    bytes.extend_from_slice(&batch.payload);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let urls = cluster.urls.clone();
    rt.block_on(async move {
        let client = async_nats::connect(urls.first().unwrap().as_str())
            .await
            .unwrap();
        let js = async_nats::jetstream::new(client);
        publish_raw(&js, "gapped.log", "apart", bytes).await;
    });
    let log = open(&cluster, "gapped");
    let mut seen = Vec::new();
    let read = log.read(1, &mut |r| {
        seen.push(r.first_lsn);
        Ok(true)
    });
    assert_eq!(seen, vec![1]);
    match read {
        Err(Error::Corrupt { offset, reason, .. }) => {
            assert_eq!(offset, 2);
            assert!(reason.contains("LSN 5 where 2 was next"), "{reason}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn a_log_dropped_inside_an_async_task_does_not_panic() {
    let cluster = Cluster::start();
    let log = open(&cluster, "dropped");
    append(&log, "a", 1, &["x"]);
    // A runtime dropped the ordinary way inside another's task panics.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move { drop(log) });
    let again = open(&cluster, "dropped");
    assert_eq!(again.last_lsn(), 1);
}
