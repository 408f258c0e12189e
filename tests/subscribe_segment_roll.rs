//! A subscriber sees every committed event exactly once, in LSN order,
//! whether it starts before, during or after the writes, across segment
//! rolls, and when it falls behind the in-memory buffer.

mod common;

use std::sync::mpsc;

use replaydb::{Db, Event, ExpectedVersion};

const EVENTS: u64 = 1500;

fn data(i: u64) -> Vec<u8> {
    format!("event {i} {}", "p".repeat((i % 50) as usize)).into_bytes()
}

fn check(events: &[Event], from: u64) {
    for (i, e) in events.iter().enumerate() {
        let lsn = from + i as u64;
        assert_eq!(e.lsn, lsn, "gap or duplicate");
        assert_eq!(e.data, data(lsn - 1), "lsn {lsn}");
    }
    assert_eq!(events.len() as u64, EVENTS + 1 - from);
}

/// Writes EVENTS single-event batches (and a few multi-event ones) from
/// two threads; returns once all are acknowledged.
fn write_all(db: &Db, started: mpsc::Sender<()>) {
    let next = std::sync::Arc::new(std::sync::Mutex::new(0u64));
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let db = db.clone();
            let next = next.clone();
            let started = started.clone();
            std::thread::spawn(move || {
                loop {
                    // Numbering under the lock keeps data(i) at LSN i + 1.
                    let mut n = next.lock().unwrap();
                    if *n >= EVENTS {
                        return;
                    }
                    let batch: Vec<Vec<u8>> =
                        (*n..(*n + 1 + *n % 3).min(EVENTS)).map(data).collect();
                    db.append("s", ExpectedVersion::Any, &batch).unwrap();
                    *n += batch.len() as u64;
                    if *n > EVENTS / 2 {
                        let _ = started.send(());
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

fn collect(mut sub: replaydb::Subscription, from: u64) -> std::thread::JoinHandle<Vec<Event>> {
    std::thread::spawn(move || {
        let mut out = Vec::new();
        while (out.len() as u64) < EVENTS + 1 - from {
            out.push(sub.next_blocking().unwrap().unwrap());
        }
        out
    })
}

#[test]
fn subscribers_before_during_and_after_segment_rolls_see_every_event_once() {
    let tmp = tempfile::tempdir().unwrap();
    let db = Db::open(tmp.path(), common::small_segments(4096)).unwrap();
    let before = collect(db.subscribe(1).unwrap(), 1);
    let (tx, rx) = mpsc::channel();
    let writer = {
        let db = db.clone();
        std::thread::spawn(move || write_all(&db, tx))
    };
    rx.recv().unwrap(); // half the events are committed
    let during = collect(db.subscribe(1).unwrap(), 1);
    let during_mid = collect(db.subscribe(EVENTS / 3).unwrap(), EVENTS / 3);
    writer.join().unwrap();
    let after = collect(db.subscribe(1).unwrap(), 1);
    let after_mid = collect(db.subscribe(EVENTS - 10).unwrap(), EVENTS - 10);

    assert!(
        db.stats().unwrap().segments > 10,
        "the writes rolled many segments"
    );
    check(&before.join().unwrap(), 1);
    check(&during.join().unwrap(), 1);
    check(&during_mid.join().unwrap(), EVENTS / 3);
    check(&after.join().unwrap(), 1);
    check(&after_mid.join().unwrap(), EVENTS - 10);
}

#[test]
fn a_subscriber_that_falls_far_behind_continues_from_the_store() {
    let tmp = tempfile::tempdir().unwrap();
    let db = Db::open(tmp.path(), common::small_segments(4096)).unwrap();
    let mut sub = db.subscribe(1).unwrap();
    let (tx, _rx) = mpsc::channel();
    write_all(&db, tx); // nobody reads meanwhile: nothing is held for it
    let mut got = Vec::new();
    while (got.len() as u64) < EVENTS {
        got.push(sub.next_blocking().unwrap().unwrap());
    }
    check(&got, 1);
    assert!(sub.try_next().is_none(), "nothing more is committed");
    db.append("s", ExpectedVersion::Any, &[data(EVENTS)])
        .unwrap();
    assert_eq!(sub.next_blocking().unwrap().unwrap().lsn, EVENTS + 1);
}

#[test]
fn async_stream_follows_live_appends() {
    use futures_util::StreamExt;
    let tmp = tempfile::tempdir().unwrap();
    let db = Db::open(tmp.path(), common::small_segments(4096)).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let stream = db.subscribe(1).unwrap().into_stream();
        let reader = tokio::spawn(stream.take(EVENTS as usize).collect::<Vec<_>>());
        for i in 0..EVENTS {
            db.append_async("s".into(), ExpectedVersion::Exact(i), vec![data(i)])
                .await
                .unwrap();
        }
        let events: Vec<Event> = reader
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.unwrap())
            .collect();
        check(&events, 1);
    });
}
