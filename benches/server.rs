//! Sixteen concurrent clients over the socket beside sixteen threads of
//! the embedded database: durable single-event appends, group-committed.
//! The goal (issue 13): the socket reaches at least half the embedded
//! rate.
//!
//! ```sh
//! cargo bench --bench server                       # the side-by-side table, then criterion
//! REPLAYDB_BENCH_TABLE_ONLY=1 cargo bench --bench server
//! REPLAYDB_BENCH_ONLY=socket cargo bench --bench server  # 100 000 appends of one, to profile
//! ```
//!
//! The table runs each workload in ten short turns, interleaved, after a
//! warm-up turn, so a change in the disk hits each alike; per append, the
//! median over the turns. Criterion then runs each for seconds, each on a
//! fresh database of its own (see [`bench`]). Clients are in this process (each with its own
//! connection), so the socket, the framing and the server's tasks are all
//! on the path; a client in another process adds only its own scheduling.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use replaydb::client::Client;
use replaydb::server::{Server, default_socket};
use replaydb::{Database, Db, ExpectedVersion, Options};

mod common;
use common::{concurrent, median};

const WRITERS: usize = 16;
const EVENT: &[u8] = b"{\"order\":42,\"state\":\"paid\",\"amount_cents\":1999}";

struct Setup {
    db: Db,
    _server: Server,
    clients: Arc<Vec<Client>>,
    _tmp: tempfile::TempDir,
}

fn setup() -> Setup {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tmp");
    let db = Db::open(tmp.path().join("db"), Options::default()).expect("open");
    let socket = default_socket(&tmp.path().join("db"));
    let server = db.serve(&socket).expect("serve");
    let clients = (0..WRITERS)
        .map(|_| Client::connect(&socket).expect("connect"))
        .collect();
    Setup {
        db,
        _server: server,
        clients: Arc::new(clients),
        _tmp: tmp,
    }
}

fn embedded(db: &Db, n: u64) -> Duration {
    let db = db.clone();
    concurrent(WRITERS, n, move |t, _| {
        db.append(&format!("writer-{t}"), ExpectedVersion::Any, &[EVENT])
            .expect("append");
    })
}

fn socket(clients: &Arc<Vec<Client>>, n: u64) -> Duration {
    let clients = clients.clone();
    concurrent(WRITERS, n, move |t, _| {
        let c = clients.get(t).expect("a client per writer");
        Database::append(c, &format!("writer-{t}"), ExpectedVersion::Any, &[EVENT])
            .expect("append");
    })
}

fn side_by_side(s: &Setup) {
    let fsyncs = |db: &Db| db.stats().expect("stats").fsyncs_since_open;
    let turns = 10;
    let per_turn = 2_000u64;
    let (mut e, mut c) = (Vec::new(), Vec::new());
    let (mut per_fsync_e, mut per_fsync_c) = ((0u64, 0u64), (0u64, 0u64));
    for turn in 0..=turns {
        let (f0, a0) = (fsyncs(&s.db), s.db.last_lsn());
        let te = embedded(&s.db, per_turn);
        let (f1, a1) = (fsyncs(&s.db), s.db.last_lsn());
        let tc = socket(&s.clients, per_turn);
        let (f2, a2) = (fsyncs(&s.db), s.db.last_lsn());

        if turn > 0 {
            e.push(te);
            c.push(tc);
            per_fsync_e = (per_fsync_e.0 + a1 - a0, per_fsync_e.1 + f1 - f0);
            per_fsync_c = (per_fsync_c.0 + a2 - a1, per_fsync_c.1 + f2 - f1);
        }
    }
    let (me, mc) = (median(e), median(c));
    let rate = |d: Duration| 1.0 / d.as_secs_f64();
    println!(
        "| {WRITERS} writers, durable single-event appends | per append | appends/s | appends per fsync |"
    );
    println!("|---|---:|---:|---:|");
    for (name, m, (a, f)) in [
        ("embedded (16 threads)", me, per_fsync_e),
        ("over the socket (16 clients)", mc, per_fsync_c),
    ] {
        println!(
            "| {name} | {:.1} µs | {:.0} | {:.1} |",
            m.as_secs_f64() * 1e6,
            rate(m),
            a as f64 / f.max(1) as f64
        );
    }
    println!(
        "the socket reaches {:.2}x the embedded rate (goal: at least 0.5x)",
        rate(mc) / rate(me)
    );
}

/// Writes back what the runs before left dirty in the page cache, and
/// waits for it: otherwise the kernel flushes the last run's store (a
/// hundred megabytes after criterion's embedded run) during the next
/// one, whose fsyncs then queue behind it.
fn settle() {
    let synced = std::process::Command::new("sync").status();
    assert!(
        synced.as_ref().is_ok_and(|s| s.success()),
        "sync: {synced:?}"
    );
}

/// Each workload on a database of its own, fresh: the one measured
/// second must not pay for the store the first grew (criterion's long
/// runs write hundreds of thousands of events, and a store past its
/// cache costs the applier, which shares the cores, more per event).
fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("sixteen_writers_durable");
    g.throughput(Throughput::Elements(1));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(5));
    settle();
    let e = setup();
    g.bench_function("embedded", |b| {
        b.iter_custom(|iters| embedded(&e.db, iters.max(WRITERS as u64)) * iters as u32)
    });
    drop(e);
    settle();
    let s = setup();
    g.bench_function("socket", |b| {
        b.iter_custom(|iters| socket(&s.clients, iters.max(WRITERS as u64)) * iters as u32)
    });
    g.finish();
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let s = setup();
    if args.iter().any(|a| a == "--test") {
        // `cargo test --benches`: one short turn of each, checked.
        embedded(&s.db, 64);
        socket(&s.clients, 64);
        assert_eq!(s.db.last_lsn(), 128);
        return;
    }
    if let Some(only) = std::env::var_os("REPLAYDB_BENCH_ONLY") {
        // One workload alone, for `perf stat` or `perf record`: a fixed
        // count, so counters divide into a figure per append.
        let n = 100_000;
        let took = match only.to_str() {
            Some("embedded") => embedded(&s.db, n),
            Some("socket") => socket(&s.clients, n),
            _ => panic!("REPLAYDB_BENCH_ONLY is embedded or socket, not {only:?}"),
        };
        let per_fsync = n as f64 / s.db.stats().expect("stats").fsyncs_since_open as f64;
        println!(
            "{n} appends: {:.1} µs each, {per_fsync:.1} per fsync",
            took.as_secs_f64() * 1e6
        );
        return;
    }
    let started = Instant::now();
    side_by_side(&s);
    eprintln!("side by side in {:.1} s", started.elapsed().as_secs_f64());
    if std::env::var_os("REPLAYDB_BENCH_TABLE_ONLY").is_some() {
        return;
    }
    drop(s);
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
    let _ = Path::new(".");
}
