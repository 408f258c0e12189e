//! A subscriber racing compaction never sees a gap, a duplicate or an LSN
//! going back: it either keeps up, or is told `Compacted` with the oldest
//! LSN still held, and may resume there explicitly.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use replaydb::{Db, Error, ExpectedVersion, Options};

const EVENTS: u64 = 3_000;

#[test]
fn a_subscriber_behind_compaction_gets_compacted_never_a_silent_gap() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = Options {
        segment_bytes_max: 4096,
        snapshot_every_records: 0,
        subscriber_buffer_batches: 4,
        ..Options::default()
    };
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
                    db.snapshot().unwrap();
                }
            }
            done.store(true, Ordering::Release);
        })
    };
    // The checker: every LSN received is the previous + 1, except for an
    // explicit, announced jump after `Compacted`.
    let mut sub = db.subscribe(1).unwrap();
    let mut expected = 1u64;
    let mut jumps = 0;
    let mut received = 0u64;
    while expected <= EVENTS {
        match sub.next_blocking() {
            Some(Ok(e)) => {
                assert_eq!(e.lsn, expected, "gap, duplicate or LSN going back");
                expected += 1;
                received += 1;
                // Fall behind now and then, so that compaction overtakes.
                if e.lsn % 500 == 0 {
                    while !done.load(Ordering::Acquire) && db.last_lsn() < e.lsn + 800 {
                        std::thread::yield_now();
                    }
                }
            }
            Some(Err(Error::Compacted {
                oldest_available, ..
            })) => {
                assert!(oldest_available > expected, "Compacted must move forward");
                jumps += 1;
                expected = oldest_available;
                sub = db.subscribe(expected).unwrap();
            }
            Some(Err(e)) => panic!("{e}"),
            None => panic!("the subscription ended"),
        }
    }
    writer.join().unwrap();
    eprintln!("received {received} events, {jumps} announced jumps over compacted history");
    assert!(received > 0);
}
