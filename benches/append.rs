//! Durable appends and replay, beside a raw `pwrite` + `fdatasync` loop,
//! redb used directly and SQLite (WAL mode, `synchronous=FULL`, one
//! transaction per event: what most users would pick instead of an
//! embedded event store), in the same run.
//!
//! ```sh
//! cargo bench --bench append                 # criterion + the side-by-side table
//! REPLAYDB_BENCH_SECS=20 REPLAYDB_BENCH_TABLE_ONLY=1 cargo bench --bench append
//! ```
//!
//! The disk's fdatasync rate swings by two orders of magnitude with the
//! neighbours' load, so the side-by-side table states every figure as a
//! ratio to the raw loop measured minutes apart at most.

use std::fs::File;
use std::hint::black_box;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use replaydb::{Db, Durability, ExpectedVersion, Options};

const EVENT_BYTES: usize = 100;
/// On-disk size of one single-event record: header, MessagePack framing.
const RECORD_BYTES: usize = 32 + EVENT_BYTES + 16;
const REDB_TABLE: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("events");

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir")
}

/// The floor: write a record-sized buffer at the end of a preallocated
/// file and fdatasync it, in a loop.
struct RawLoop {
    file: File,
    offset: u64,
    buf: Vec<u8>,
}

impl RawLoop {
    fn new(dir: &Path) -> RawLoop {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.join("raw"))
            .expect("raw file");
        fs4::FileExt::allocate(&file, 1 << 30).expect("preallocate");
        RawLoop {
            file,
            offset: 0,
            buf: vec![7u8; RECORD_BYTES],
        }
    }

    fn append(&mut self) {
        self.file
            .write_all_at(&self.buf, self.offset)
            .expect("write");
        self.offset += self.buf.len() as u64;
        self.file.sync_data().expect("fdatasync");
    }
}

fn redb_db(dir: &Path) -> redb::Database {
    let db = redb::Database::create(dir.join("direct.redb")).expect("redb");
    let tx = db.begin_write().expect("tx");
    tx.open_table(REDB_TABLE).expect("table");
    tx.commit().expect("commit");
    db
}

fn redb_append(db: &redb::Database, key: u64, value: &[u8]) {
    let tx = db.begin_write().expect("tx");
    tx.open_table(REDB_TABLE)
        .expect("table")
        .insert(key, value)
        .expect("insert");
    tx.commit().expect("commit");
}

/// A SQLite database in WAL mode with `synchronous=FULL` (a commit is
/// durable when it returns), with an `events` table.
fn sqlite_path(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("events.sqlite");
    let c = sqlite_connect(&path);
    c.execute_batch(
        "CREATE TABLE IF NOT EXISTS events (lsn INTEGER PRIMARY KEY, stream TEXT NOT NULL, data BLOB NOT NULL);",
    )
    .expect("create table");
    path
}

/// A connection, waiting up to 10 s for the write lock another holds.
/// Sixteen writers share one behind a mutex, as a careful user would: a
/// connection each, contending for SQLite's write lock through its busy
/// handler, measured 162–164 events/s here (docs/BENCHMARKS.md).
fn sqlite_connect(path: &Path) -> rusqlite::Connection {
    let c = rusqlite::Connection::open(path).expect("sqlite open");
    c.pragma_update(None, "journal_mode", "WAL")
        .expect("journal_mode");
    c.pragma_update(None, "synchronous", "FULL")
        .expect("synchronous");
    c.busy_timeout(Duration::from_secs(10))
        .expect("busy_timeout");
    c
}

/// One event, one (autocommit) transaction.
fn sqlite_append(c: &rusqlite::Connection, stream: &str, data: &[u8]) {
    c.prepare_cached("INSERT INTO events (stream, data) VALUES (?1, ?2)")
        .expect("prepare")
        .execute(rusqlite::params![stream, data])
        .expect("insert");
}

/// Runs `per_thread` appends on each of `threads` threads; returns the
/// wall time and every append's latency.
fn concurrent(
    threads: usize,
    per_thread: u64,
    op: Arc<dyn Fn(usize, u64) + Send + Sync>,
) -> (Duration, Vec<Duration>) {
    let barrier = Arc::new(Barrier::new(threads + 1));
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (barrier, latencies, op) = (barrier.clone(), latencies.clone(), op.clone());
            std::thread::spawn(move || {
                let mut mine = Vec::with_capacity(per_thread as usize);
                barrier.wait();
                for i in 0..per_thread {
                    let start = Instant::now();
                    op(t, i);
                    mine.push(start.elapsed());
                }
                latencies.lock().expect("latencies").extend(mine);
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    for h in handles {
        h.join().expect("bench thread");
    }
    let elapsed = start.elapsed();
    let l = std::mem::take(&mut *latencies.lock().expect("latencies"));
    (elapsed, l)
}

struct Row {
    name: &'static str,
    events: u64,
    elapsed: Duration,
    fsyncs: Option<u64>,
    latencies: Vec<Duration>,
}

impl Row {
    fn rate(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64()
    }
    fn pct(&mut self, p: f64) -> f64 {
        self.latencies.sort();
        let i = ((self.latencies.len().saturating_sub(1)) as f64 * p).round() as usize;
        self.latencies.get(i).map_or(0.0, |d| d.as_secs_f64() * 1e6)
    }
}

/// One workload of the side-by-side table.
struct Workload {
    name: &'static str,
    threads: usize,
    op: Arc<dyn Fn(usize, u64) + Send + Sync>,
    fsyncs: Box<dyn Fn() -> Option<u64>>,
}

/// Runs every workload for about `secs` in all, interleaved in `ROUNDS`
/// short turns, so that a change in the disk's speed hits each alike.
fn interleaved(workloads: Vec<Workload>, secs: f64) -> Vec<Row> {
    const ROUNDS: u32 = 10;
    let turn_secs = secs / f64::from(ROUNDS);
    // Calibrate: a short run tells how many appends fit in a turn.
    let per_turn: Vec<u64> = workloads
        .iter()
        .map(|w| {
            let (probe, _) = concurrent(w.threads, 20, w.op.clone());
            ((turn_secs / probe.as_secs_f64()) * 20.0).clamp(5.0, 1e7) as u64
        })
        .collect();
    let mut rows: Vec<Row> = workloads
        .iter()
        .map(|w| Row {
            name: w.name,
            events: 0,
            elapsed: Duration::ZERO,
            fsyncs: Some(0),
            latencies: Vec::new(),
        })
        .collect();
    for _ in 0..ROUNDS {
        for ((w, row), n) in workloads.iter().zip(rows.iter_mut()).zip(&per_turn) {
            let before = (w.fsyncs)();
            let (elapsed, latencies) = concurrent(w.threads, *n, w.op.clone());
            let after = (w.fsyncs)();
            row.events += n * w.threads as u64;
            row.elapsed += elapsed;
            row.latencies.extend(latencies);
            row.fsyncs = match (row.fsyncs, before.zip(after)) {
                (Some(sum), Some((b, a))) => Some(sum + a - b),
                _ => None,
            };
        }
    }
    rows
}

fn side_by_side() {
    let secs: f64 = std::env::var("REPLAYDB_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let dir = tmp();
    let event = vec![42u8; EVENT_BYTES];
    let mut workloads = Vec::new();

    let raw = Arc::new(Mutex::new(RawLoop::new(dir.path())));
    workloads.push(Workload {
        name: "raw pwrite + fdatasync loop",
        threads: 1,
        op: Arc::new(move |_, _| raw.lock().expect("raw").append()),
        fsyncs: Box::new(|| None),
    });
    for (name, threads) in [("replaydb, 1 writer", 1usize), ("replaydb, 16 writers", 16)] {
        // Checkpoints by count and size, as by default, but none by time: a
        // timed one would land in another workload's turn and be charged
        // to it.
        let db = Db::open(
            dir.path().join(format!("replaydb-{threads}")),
            Options::default().checkpoint_every(None),
        )
        .expect("open");
        let (d2, ev) = (db.clone(), event.clone());
        workloads.push(Workload {
            name,
            threads,
            op: Arc::new(move |t: usize, _| {
                d2.append(&format!("stream-{t}"), ExpectedVersion::Any, &[&ev])
                    .expect("append");
            }),
            fsyncs: Box::new(move || Some(db.stats().expect("stats").fsyncs_since_open)),
        });
    }
    for (name, threads) in [
        ("redb direct, 1 writer", 1usize),
        ("redb direct, 16 writers", 16),
    ] {
        let db = Arc::new(redb_db(
            &dir.path().join(format!("redb-{threads}")).tap_mkdir(),
        ));
        let ev = event.clone();
        workloads.push(Workload {
            name,
            threads,
            op: Arc::new(move |t: usize, i: u64| redb_append(&db, ((t as u64) << 40) | i, &ev)),
            fsyncs: Box::new(|| None),
        });
    }
    for (name, threads) in [
        ("SQLite WAL FULL, 1 writer", 1usize),
        ("SQLite WAL FULL, 16 writers", 16),
    ] {
        let path = sqlite_path(&dir.path().join(format!("sqlite-{threads}")).tap_mkdir());
        // One connection the writers share, kept across turns.
        let conn = Arc::new(Mutex::new(sqlite_connect(&path)));
        let ev = event.clone();
        workloads.push(Workload {
            name,
            threads,
            op: Arc::new(move |t: usize, _| {
                let c = conn.lock().expect("conn");
                sqlite_append(&c, &format!("stream-{t}"), &ev);
            }),
            fsyncs: Box::new(|| None),
        });
    }
    let mut rows = interleaved(workloads, secs);

    let raw_rate = rows[0].rate();
    let redb = [rows[3].rate(), rows[4].rate()];
    let sqlite = [rows[5].rate(), rows[6].rate()];
    println!(
        "\n| workload | events/s | vs raw loop | vs redb (same writers) | vs SQLite (same writers) | events per fsync | p50 µs | p99 µs |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (i, row) in rows.iter_mut().enumerate() {
        let (vs_redb, vs_sqlite) = match i {
            1 => (
                format!("{:.2}x", row.rate() / redb[0]),
                format!("{:.2}x", row.rate() / sqlite[0]),
            ),
            2 => (
                format!("{:.2}x", row.rate() / redb[1]),
                format!("{:.2}x", row.rate() / sqlite[1]),
            ),
            _ => (String::new(), String::new()),
        };
        let per_fsync = match row.fsyncs {
            Some(f) if f > 0 => format!("{:.1}", row.events as f64 / f as f64),
            _ => {
                if i == 0 {
                    "1.0".into()
                } else {
                    "".into()
                }
            }
        };
        let (p50, p99) = (row.pct(0.5), row.pct(0.99));
        println!(
            "| {} | {:.0} | {:.2}x | {} | {} | {} | {:.0} | {:.0} |",
            row.name,
            row.rate(),
            row.rate() / raw_rate,
            vs_redb,
            vs_sqlite,
            per_fsync,
            p50,
            p99
        );
    }
    println!();
}

trait TapMkdir {
    fn tap_mkdir(self) -> Self;
}
impl TapMkdir for std::path::PathBuf {
    fn tap_mkdir(self) -> Self {
        std::fs::create_dir_all(&self).expect("mkdir");
        self
    }
}

fn bench_append(c: &mut Criterion) {
    let dir = tmp();
    let event = vec![42u8; EVENT_BYTES];
    let mut g = c.benchmark_group("append_durable");
    g.throughput(Throughput::Elements(1));
    g.sample_size(20);
    g.measurement_time(Duration::from_secs(5));

    let mut raw = RawLoop::new(dir.path());
    g.bench_function("raw_pwrite_fdatasync", |b| b.iter(|| raw.append()));

    let db = Db::open(dir.path().join("one"), Options::default()).expect("open");
    g.bench_function(BenchmarkId::new("replaydb", "1_writer"), |b| {
        b.iter(|| {
            db.append("s", ExpectedVersion::Any, &[&event])
                .expect("append")
        })
    });
    let rdb = redb_db(&dir.path().join("redb").tap_mkdir());
    let mut key = 0u64;
    g.bench_function(BenchmarkId::new("redb_direct", "1_writer"), |b| {
        b.iter(|| {
            key += 1;
            redb_append(&rdb, key, &event)
        })
    });

    let sqlite = sqlite_connect(&sqlite_path(&dir.path().join("sqlite").tap_mkdir()));
    g.bench_function(BenchmarkId::new("sqlite_wal_full", "1_writer"), |b| {
        b.iter(|| sqlite_append(&sqlite, "s", &event))
    });
    let sqlite16 = sqlite_path(&dir.path().join("sqlite16").tap_mkdir());
    let shared = Arc::new(Mutex::new(sqlite_connect(&sqlite16)));
    g.bench_function(BenchmarkId::new("sqlite_wal_full", "16_writers"), |b| {
        b.iter_custom(|iters| {
            let per_thread = iters.div_ceil(16);
            let (conn, ev) = (shared.clone(), event.clone());
            let (elapsed, _) = concurrent(
                16,
                per_thread,
                Arc::new(move |t, _| {
                    let c = conn.lock().expect("conn");
                    sqlite_append(&c, &format!("s{t}"), &ev);
                }),
            );
            elapsed.mul_f64(iters as f64 / (per_thread * 16) as f64)
        })
    });

    let db16 = Db::open(dir.path().join("sixteen"), Options::default()).expect("open");
    g.bench_function(BenchmarkId::new("replaydb", "16_writers"), |b| {
        b.iter_custom(|iters| {
            let per_thread = iters.div_ceil(16);
            let (d, ev) = (db16.clone(), event.clone());
            let (elapsed, _) = concurrent(
                16,
                per_thread,
                Arc::new(move |t, _| {
                    d.append(&format!("s{t}"), ExpectedVersion::Any, &[&ev])
                        .expect("append");
                }),
            );
            elapsed.mul_f64(iters as f64 / (per_thread * 16) as f64)
        })
    });
    g.finish();
}

fn bench_replay(c: &mut Criterion) {
    const EVENTS: u64 = 1_000_000;
    const STREAMS: u64 = 1000;
    let dir = tmp();
    let opts = Options::default().durability(Durability::Buffered {
        interval: Duration::from_millis(100),
    });
    let db = Db::open(dir.path(), opts).expect("open");
    let names: Vec<String> = (0..STREAMS).map(|s| format!("stream-{s}")).collect();
    let event = vec![42u8; EVENT_BYTES];
    for i in 0..EVENTS {
        db.append(
            &names[(i % STREAMS) as usize],
            ExpectedVersion::Any,
            &[&event],
        )
        .expect("append");
    }
    let mut g = c.benchmark_group("replay_1m_events_100b");
    g.throughput(Throughput::Elements(EVENTS));
    g.sample_size(10);
    g.bench_function("decode", |b| {
        b.iter(|| {
            let mut bytes = 0usize;
            let n = db.replay(1, |e| bytes += e.data.len()).expect("replay");
            assert_eq!(n, EVENTS);
            black_box(bytes)
        })
    });
    // A view: per stream, the count and the last event's length.
    g.bench_function("apply_to_view", |b| {
        b.iter(|| {
            let mut view: std::collections::HashMap<String, (u64, usize)> =
                std::collections::HashMap::new();
            db.replay(1, |e| match view.get_mut(e.stream) {
                Some(v) => *v = (v.0 + 1, e.data.len()),
                None => {
                    view.insert(e.stream.to_string(), (1, e.data.len()));
                }
            })
            .expect("replay");
            assert_eq!(view.len() as u64, STREAMS);
            black_box(view)
        })
    });
    g.finish();
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // `cargo test --benches` runs bench binaries with --test: skip the
    // side-by-side table there.
    if !args.iter().any(|a| a == "--test" || a == "--list") {
        side_by_side();
        if std::env::var_os("REPLAYDB_BENCH_TABLE_ONLY").is_some() {
            return;
        }
    }
    let mut c = Criterion::default().configure_from_args();
    bench_append(&mut c);
    bench_replay(&mut c);
    c.final_summary();
}
