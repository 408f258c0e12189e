//! Durable appends with the log on a three-node NATS JetStream cluster
//! (`sync_interval: always`, three replicas, on loopback, the same two
//! cores) beside the local WAL, 1 and 16 writers, interleaved in turns.
//!
//! ```sh
//! cargo bench --bench jetstream
//! REPLAYDB_BENCH_SECS=10 cargo bench --bench jetstream
//! ```

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use replaydb::{Db, ExpectedVersion, LogKind, Options};

#[path = "../tests/common/nats.rs"]
#[allow(dead_code)]
mod nats;

mod common;
use common::concurrent;

const EVENT: &[u8] = b"{\"order\":42,\"state\":\"paid\",\"amount_cents\":1999}";
const TURNS: u32 = 6;

fn open(dir: &Path, log: LogKind) -> Db {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match Db::open(dir, Options::default().log(log.clone())) {
            Ok(db) => return db,
            // The stream's first open can race the cluster's election.
            Err(e) if Instant::now() < deadline => {
                eprintln!("opening again: {e}");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("{e}"),
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let secs: f64 = std::env::var("REPLAYDB_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4.0);
    let cluster = nats::Cluster::start();
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tmp");
    let mut rows = Vec::new();
    for (name, log) in [
        ("local WAL", LogKind::Wal),
        (
            "JetStream, 3 replicas",
            LogKind::JetStream {
                servers: cluster.urls.clone(),
                stream: "bench".into(),
                replicas: 3,
            },
        ),
    ] {
        let db = Arc::new(open(&tmp.path().join(name.replace(' ', "-")), log));
        rows.push((name, 1usize, db.clone(), Vec::new(), 0u64, 0u64));
        rows.push((name, 16usize, db, Vec::new(), 0u64, 0u64));
    }
    // Calibrate each to a turn's share, then interleave the turns.
    let turn = secs / f64::from(TURNS);
    let per_turn: Vec<u64> = rows
        .iter()
        .map(|(_, threads, db, ..)| {
            let db = db.clone();
            let probe = concurrent(*threads, 32, move |t, _| {
                db.append(&format!("w{t}"), ExpectedVersion::Any, &[EVENT])
                    .expect("append");
            });
            ((turn / probe.as_secs_f64()) as u64).clamp(32, 1_000_000)
        })
        .collect();
    for _ in 0..TURNS {
        for ((_, threads, db, times, appends, fsyncs), n) in rows.iter_mut().zip(&per_turn) {
            let before = db.stats().expect("stats");
            let d = db.clone();
            let per = concurrent(*threads, *n, move |t, _| {
                d.append(&format!("w{t}"), ExpectedVersion::Any, &[EVENT])
                    .expect("append");
            });
            let after = db.stats().expect("stats");
            times.push(per);
            *appends += after.appends_since_open - before.appends_since_open;
            *fsyncs += after.groups_since_open - before.groups_since_open;
        }
    }
    println!(
        "| log | writers | events/s (median turn) | vs the local WAL, same writers | appends per group |"
    );
    println!("|---|---:|---:|---:|---:|");
    let rate = |v: &Vec<Duration>| {
        let mut v = v.clone();
        v.sort();
        1.0 / v[v.len() / 2].as_secs_f64()
    };
    let wal: Vec<f64> = rows.iter().take(2).map(|r| rate(&r.3)).collect();
    for (i, (name, threads, _, times, appends, groups)) in rows.iter().enumerate() {
        let r = rate(times);
        println!(
            "| {name} | {threads} | {r:.0} | {:.2}x | {:.1} |",
            r / wal[i % 2],
            *appends as f64 / (*groups).max(1) as f64
        );
    }
}
