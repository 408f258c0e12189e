//! The store at a million streams: memory, checkpoints, a durable writer
//! beside them, reopen, and the history after truncation.
//!
//! ```sh
//! cargo bench --bench store                      # the table, then criterion
//! REPLAYDB_BENCH_STREAMS=100000 cargo bench --bench store   # smaller
//! ```
//!
//! The program of issue 9: one user view holding a key per stream (in its
//! tables), 1 M streams with one 100-byte event each, `Buffered`, 16 MiB
//! segments. Resident memory is read from `/proc/self/status`; the reopen
//! is measured in a child process (this binary run again), so that its
//! memory is what the open took, above an empty process.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::Criterion;

mod common;
use common::{mb, median, percentile, rss_bytes};
use replaydb::{
    Db, Durability, EventRef, ExpectedVersion, Options, View, ViewTables, ViewTablesRead,
};

/// Per stream: its last event's data, one row per stream.
#[derive(Default)]
struct LastEvent;

impl View for LastEvent {
    fn name(&self) -> &str {
        "last_event"
    }
    fn schema_version(&self) -> u32 {
        1
    }
    fn apply(&mut self, e: &EventRef<'_>, tables: &mut ViewTables<'_>) -> replaydb::Result<()> {
        tables.put("last", e.stream.as_bytes(), e.data)
    }
    fn load(&mut self, _: &ViewTablesRead<'_>) -> replaydb::Result<()> {
        Ok(())
    }
    fn reset(&mut self) {}
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

fn streams() -> u64 {
    std::env::var("REPLAYDB_BENCH_STREAMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

fn options(durability: Durability) -> Options {
    Options::default()
        .durability(durability)
        .segment_bytes_max(Some(16 << 20))
        .checkpoint_every_records(0)
        .checkpoint_every_bytes(0)
        .checkpoint_every(None)
}

fn buffered() -> Durability {
    Durability::Buffered {
        interval: Duration::from_millis(100),
    }
}

fn open(dir: &Path, durability: Durability) -> Db {
    Db::open_with_views(dir, options(durability), vec![Box::new(LastEvent)]).expect("open")
}

fn name(i: u64) -> String {
    format!("key-{i:08}")
}

/// The child: open the database at `dir`, report time and memory as one
/// line, exit.
fn child_reopen(dir: &Path) {
    let before = rss_bytes();
    let t = Instant::now();
    let db = open(dir, buffered());
    let took = t.elapsed();
    let after = rss_bytes();
    println!(
        "reopen {} {} {}",
        took.as_micros(),
        after.saturating_sub(before),
        db.recovery_report().replayed_events
    );
}

fn reopen_in_child(dir: &Path) -> (Duration, u64) {
    let out = std::process::Command::new(std::env::current_exe().expect("exe"))
        .env("REPLAYDB_BENCH_CHILD_REOPEN", dir)
        .output()
        .expect("child");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("reopen "))
        .unwrap_or_else(|| {
            panic!(
                "child said: {text} {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let mut f = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse::<u64>().unwrap_or(0));
    let (us, rss) = (f.next().unwrap_or(0), f.next().unwrap_or(0));
    (Duration::from_micros(us), rss)
}

/// The side-by-side table: every figure of issue 9's "must show" that
/// this bench measures.
fn table(dir: &Path) {
    let n = streams();
    let event = vec![42u8; 100];
    println!("store bench: {n} streams, one 100-byte event each, a view key per stream");
    // 3: memory for the streams.
    let rss_empty_db;
    {
        let db = open(dir, buffered());
        rss_empty_db = rss_bytes();
        let t = Instant::now();
        for i in 0..n {
            db.append(&name(i), ExpectedVersion::NoStream, &[&event])
                .expect("append");
        }
        let fill = t.elapsed();
        db.sync().expect("sync");
        let rss = rss_bytes();
        println!(
            "fill: {:.1} s ({:.0} streams/s); resident memory grew by {:.0} MB ({:.0} B a stream)",
            fill.as_secs_f64(),
            n as f64 / fill.as_secs_f64(),
            mb(rss.saturating_sub(rss_empty_db)),
            rss.saturating_sub(rss_empty_db) as f64 / n as f64
        );
        let t = Instant::now();
        let first = db.checkpoint().expect("checkpoint");
        println!(
            "first checkpoint of it all: {:.0} ms (covers LSN {})",
            t.elapsed().as_secs_f64() * 1e3,
            first.covered_lsn
        );
    }
    // 1: a checkpoint after 1 000 changes, and a durable writer beside it.
    {
        let db = open(dir, Durability::Immediate);
        let mut took = Vec::new();
        for round in 0..10u64 {
            for k in 0..1_000u64 {
                let key = (round * 7_919 + k * 104_729) % n;
                db.append(&name(key), ExpectedVersion::Any, &[&event])
                    .expect("append");
            }
            let t = Instant::now();
            db.checkpoint().expect("checkpoint");
            took.push(t.elapsed());
        }
        println!(
            "checkpoint after 1 000 changes: median {:.1} ms, worst {:.1} ms (10 rounds)",
            median(took.clone()).as_secs_f64() * 1e3,
            took.iter().max().copied().unwrap_or_default().as_secs_f64() * 1e3
        );
        let writer = |db: Db, stop: std::sync::Arc<std::sync::atomic::AtomicBool>| {
            std::thread::spawn(move || {
                let mut lat = Vec::new();
                let mut i = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let t = Instant::now();
                    db.append("durable-writer", ExpectedVersion::Any, &[&[7u8; 100][..]])
                        .expect("append");
                    lat.push(t.elapsed());
                    i += 1;
                }
                let _ = i;
                lat
            })
        };
        let run = |checkpoints: bool| {
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let w = writer(db.clone(), stop.clone());
            let t = Instant::now();
            let mut in_checkpoint = Vec::new();
            while t.elapsed() < Duration::from_secs(8) {
                for k in 0..1_000u64 {
                    let key = (t.elapsed().as_nanos() as u64 + k * 104_729) % n;
                    db.append(&name(key), ExpectedVersion::Any, &[&event])
                        .expect("append");
                }
                if checkpoints {
                    let s = Instant::now();
                    db.checkpoint().expect("checkpoint");
                    in_checkpoint.push((s - t, s.elapsed()));
                }
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            let mut lat = w.join().expect("writer");
            lat.sort();
            lat
        };
        let quiet = run(false);
        let busy = run(true);
        let p99 = percentile(&quiet, 0.99);
        let worst = busy.last().copied().unwrap_or_default();
        println!(
            "durable writer: p50 {:.2} ms, p99 {:.2} ms, worst {:.2} ms without checkpoints ({} appends); worst {:.2} ms with a checkpoint after every 1 000 changes ({} appends, p99 {:.2} ms): {:.1}x its p99",
            percentile(&quiet, 0.5).as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3,
            quiet.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
            quiet.len(),
            worst.as_secs_f64() * 1e3,
            busy.len(),
            percentile(&busy, 0.99).as_secs_f64() * 1e3,
            worst.as_secs_f64() / p99.as_secs_f64().max(1e-9)
        );
    }
    // 2: reopen with a recent checkpoint, in a fresh process.
    let reopens: Vec<(Duration, u64)> = (0..5).map(|_| reopen_in_child(dir)).collect();
    let time = median(reopens.iter().map(|r| r.0).collect());
    let rss = reopens.iter().map(|r| r.1).max().unwrap_or(0);
    println!(
        "reopen with a recent checkpoint: median {:.1} ms of 5; resident memory above the empty process: at most {:.0} MB",
        time.as_secs_f64() * 1e3,
        mb(rss)
    );
    // 4: the whole history after truncation.
    {
        let db = open(dir, buffered());
        let s = db.stats().expect("stats");
        let t = Instant::now();
        let all = db.replay(1, |e| {
            black_box(e);
        });
        let took = t.elapsed();
        let first = db.read_stream(&name(5), 1, 10).expect("read_stream");
        println!(
            "history: read from LSN 1 gives {} events ({:.1} M events/s), read_stream(\"{}\", 1) gives {} (version {}); the log holds LSNs {}.. in {} segments of 16 MiB, {:.1} MB",
            all.expect("replay"),
            s.last_lsn as f64 / took.as_secs_f64() / 1e6,
            name(5),
            first.len(),
            first.first().map_or(0, |e| e.version),
            s.log_first_lsn,
            s.segments,
            mb(s.wal_bytes)
        );
        println!(
            "store: {:.0} MB, {} history batches, {} streams",
            mb(s.store_bytes),
            s.history_batches,
            s.streams
        );
    }
}

fn bench_criterion(c: &mut Criterion, dir: &Path) {
    let db = open(dir, Durability::Immediate);
    let n = streams();
    let event = vec![42u8; 100];
    let mut g = c.benchmark_group("store_1m_streams");
    g.sample_size(10);
    let mut round = 0u64;
    g.bench_function("checkpoint_after_1000_changes", |b| {
        b.iter_batched(
            || {
                round += 1;
                for k in 0..1_000u64 {
                    db.append(
                        &name((round * 31 + k * 104_729) % n),
                        ExpectedVersion::Any,
                        &[&event],
                    )
                    .expect("append");
                }
            },
            |()| db.checkpoint().expect("checkpoint"),
            criterion::BatchSize::PerIteration,
        )
    });
    g.bench_function("read_stream_from_version_1", |b| {
        let mut i = 0u64;
        b.iter(|| {
            i = (i + 7_919) % n;
            black_box(db.read_stream(&name(i), 1, 10).expect("read"))
        })
    });
    g.finish();
}

fn main() {
    if let Some(dir) = std::env::var_os("REPLAYDB_BENCH_CHILD_REOPEN") {
        child_reopen(&PathBuf::from(dir));
        return;
    }
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tmp");
    let dir = tmp.path().join("db");
    table(&dir);
    if std::env::var_os("REPLAYDB_BENCH_TABLE_ONLY").is_none() {
        let mut c = Criterion::default().configure_from_args();
        bench_criterion(&mut c, &dir);
        c.final_summary();
    }
}
