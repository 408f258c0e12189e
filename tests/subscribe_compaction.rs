//! A subscriber racing checkpoints (each truncates the log behind the
//! previous one) never sees a gap, a duplicate or an LSN going back, and,
//! since the history outlives the log, falls behind without losing a
//! single event.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use replaydb::{Db, ExpectedVersion, Options};

const EVENTS: u64 = 3_000;

#[test]
fn a_subscriber_behind_checkpoints_gets_every_event_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = Options::default()
        .segment_bytes_max(Some(4096))
        .checkpoint_every_records(0);
    let db = Db::open(tmp.path(), opts).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let (db, done) = (db.clone(), done.clone());
        std::thread::spawn(move || {
            for i in 0..EVENTS {
                db.append(
                    "s",
                    ExpectedVersion::Any,
                    &[vec![b'e'; 40 + (i % 30) as usize]],
                )
                .unwrap();
                if i % 200 == 199 {
                    db.checkpoint().unwrap();
                }
            }
            done.store(true, Ordering::Release);
        })
    };
    // The checker: every LSN received is the previous + 1.
    let mut sub = db.subscribe(1).unwrap();
    let mut expected = 1u64;
    let mut received = 0u64;
    while expected <= EVENTS {
        match sub.next_blocking() {
            Some(Ok(e)) => {
                assert_eq!(e.lsn, expected, "gap, duplicate or LSN going back");
                expected += 1;
                received += 1;
                // Fall behind now and then, so that truncation overtakes.
                if e.lsn % 500 == 0 {
                    while !done.load(Ordering::Acquire) && db.last_lsn() < e.lsn + 800 {
                        std::thread::yield_now();
                    }
                }
            }
            Some(Err(e)) => panic!("{e}"),
            None => panic!("the subscription ended"),
        }
    }
    writer.join().unwrap();
    assert_eq!(received, EVENTS);
    let stats = db.stats().unwrap();
    assert!(
        stats.log_first_lsn > 1,
        "the log was truncated behind the subscriber: {stats:?}"
    );
}
