//! A process sending input to several workers, killed with SIGKILL at any
//! moment, loses no acknowledged entry: after every kill the runtime
//! reopens, each worker's transcript is every entry acknowledged for it, in
//! the order sent (and possibly the next ones, durable but not yet
//! acknowledged), the events run 1..=last with no gap, and every page of
//! both reads whole.
//!
//! Cycles: 20 by default; `REPLAYDB_CRASH_CYCLES=500` for a long run.

mod common;

use replaydb::Options;
use replaydb::runtime::{
    RuntimeEventKind, RuntimeId, Runtimes, TranscriptQuery, WorkerId, WorkerRef,
};

const WORKERS: u64 = 4;
/// Small segments and frequent checkpoints, so kills land around segment
/// rolls, checkpoints and log truncation too.
const FLAGS: [&str; 4] = [
    "--segment-bytes-max",
    "16384",
    "--checkpoint-every-records",
    "40",
];

/// The `i`-th input of the run: its worker and its content.
fn input(i: u64) -> (WorkerId, String) {
    (
        WorkerId::generated(i % WORKERS + 1),
        format!("entry {i} {}", "x".repeat((i * 37 % 200) as usize)),
    )
}

fn args<'a>(rest: &[&'a str]) -> Vec<&'a str> {
    FLAGS.iter().copied().chain(rest.iter().copied()).collect()
}

/// Checks the runtime against the inputs and returns how many are durable.
fn check(dir: &std::path::Path, acked: u64) -> u64 {
    let runtimes = Runtimes::open(dir, Options::default(), vec![]).unwrap();
    let runtime = runtimes.runtime(&RuntimeId::new("rt").unwrap()).unwrap();
    let last = runtime.summary().unwrap().last_event_id;
    // Event 1 started the runtime, 2..=WORKERS+1 created the workers.
    let durable = last - 1 - WORKERS;
    assert!(durable >= acked, "{durable} durable < {acked} acknowledged");

    let mut cursor = runtime.event_cursor_from_start();
    let mut next_id = 1;
    loop {
        let batch = runtime.read_events(&cursor, 97).unwrap();
        for e in &batch.events {
            assert_eq!(e.id, next_id, "events in order, no gap");
            if e.id > 1 + WORKERS {
                assert_eq!(e.kind, RuntimeEventKind::WorkerInputAccepted);
                let (w, _) = input(e.id - 2 - WORKERS);
                assert_eq!(e.worker_ref.as_ref().map(|r| &r.worker_id), Some(&w));
            }
            next_id += 1;
        }
        cursor = batch.cursor;
        if !batch.has_more {
            break;
        }
    }
    assert_eq!(next_id, last + 1);

    for k in 1..=WORKERS {
        let w = WorkerRef::new(runtime.runtime_id().clone(), WorkerId::generated(k));
        let want: Vec<String> = (0..durable)
            .map(input)
            .filter(|(id, _)| *id == w.worker_id)
            .map(|(_, c)| c)
            .collect();
        let mut got = Vec::new();
        let mut start = Some(0);
        while let Some(s) = start {
            let page = runtime
                .transcript_projection(&w, TranscriptQuery::new(s, 13))
                .unwrap();
            assert_eq!(page.total_items, want.len());
            for (j, e) in page.items.iter().enumerate() {
                assert_eq!(e.sequence as usize, s + j + 1, "a whole page, in order");
            }
            got.extend(page.items.into_iter().map(|e| e.content));
            start = page.next_start;
        }
        assert_eq!(got, want, "worker {k}'s transcript");
    }
    durable
}

#[test]
fn sigkill_while_sending_input_loses_no_acknowledged_entry() {
    let mut rng = common::crash_rng();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    let out = common::cli(&dir, &args(&["runtime", "create", "--id", "rt"]));
    assert!(out.status.success(), "{out:?}");
    for _ in 0..WORKERS {
        let out = common::cli(&dir, &args(&["runtime", "worker", "create", "rt"]));
        assert!(out.status.success(), "{out:?}");
    }
    let mut durable = 0;
    for _ in 0..common::crash_cycles() {
        let kill_after = rng.usize(1..80);
        let offset = durable;
        let acked = common::append_until_killed(
            &dir,
            &args(&["runtime", "worker", "send", "rt", "--stdin"]),
            kill_after,
            move |i| {
                let (w, content) = input(offset + i);
                format!("{w}\t{content}")
            },
        );
        assert!(acked.len() >= kill_after);
        // Each acknowledgement is the event id of the line sent in order.
        for (i, id) in acked.iter().enumerate() {
            assert_eq!(*id, offset + i as u64 + 2 + WORKERS);
        }
        durable = check(&dir, offset + acked.len() as u64);
    }
}
