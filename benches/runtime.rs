//! The runtime view beside the seed's `fs_store`: a page of events at any
//! history length, a durable transcript entry with 16 workers, and what a
//! runtime with 1 M events and 100 k transcript entries costs to hold
//! open and to reopen.
//!
//! ```sh
//! cargo bench --bench runtime                        # the table, then criterion
//! REPLAYDB_BENCH_TABLE_ONLY=1 cargo bench --bench runtime
//! REPLAYDB_BENCH_EVENTS=100000 cargo bench --bench runtime  # a smaller largest runtime
//! ```
//!
//! Each history length is a database of its own holding one runtime: 16
//! workers with the transcript entries spread over them (100 k for the
//! largest), and workers created and cancelled for the rest of the events.
//! They are built once (with `Buffered` durability and 8 writers, which
//! does not change what is read) and kept under `target/` for later runs.
//! The seed's side is its `events.jsonl`, written with the same events;
//! its `read_events` parses the whole file on every call, as the seed does.
//! Memory and reopen are measured in child processes (this binary run
//! again): one opening a runtime with a single event, one opening the
//! largest; the difference is what the history costs to hold open.

use std::fs::{File, OpenOptions};
use std::hint::black_box;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::Criterion;

mod common;
use common::{concurrent, mb, median, raw_sync_loop, rss_bytes};
use replaydb::runtime::{
    CreateWorkerRequest, EventCursor, RuntimeEvent, RuntimeId, RuntimeOptions, Runtimes,
    TranscriptEntry, WorkerInput, WorkerRef,
};
use replaydb::{Durability, Options};

const WORKERS: usize = 16;
const PAGE: usize = 100;

fn largest() -> u64 {
    std::env::var("REPLAYDB_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

fn sizes() -> Vec<u64> {
    let mut v = vec![1_000, 100_000, largest()];
    v.sort_unstable();
    v.dedup();
    v
}

fn options(durability: Durability) -> Options {
    Options::default().durability(durability)
}

fn buffered() -> Durability {
    Durability::Buffered {
        interval: Duration::from_millis(50),
    }
}

fn rt() -> RuntimeId {
    RuntimeId::new("bench").expect("id")
}

fn open(dir: &Path, durability: Durability) -> Runtimes {
    Runtimes::open(dir, options(durability), vec![]).expect("open")
}

/// Transcript entries for a history of `events` (1 in 10, 100 k at 1 M).
fn entries_for(events: u64) -> u64 {
    events / 10
}

fn content(i: u64) -> String {
    format!("input {i}: {}", "lorem ipsum ".repeat(4))
}

/// Builds (once) the database of a runtime with `events` events; returns
/// its directory.
fn build(root: &Path, events: u64) -> PathBuf {
    let dir = root.join(format!("runtime-{events}"));
    let done = dir.join("BUILT");
    if done.exists() {
        return dir;
    }
    let _ = std::fs::remove_dir_all(&dir);
    let t = Instant::now();
    let runtimes = open(&dir, buffered());
    let runtime = runtimes
        .open_runtime(RuntimeOptions {
            runtime_id: Some(rt()),
            ..RuntimeOptions::default()
        })
        .expect("runtime");
    let workers: Vec<WorkerRef> = (0..WORKERS)
        .map(|_| {
            runtime
                .create_worker(CreateWorkerRequest::default())
                .expect("worker")
                .worker_ref
        })
        .collect();
    let entries = entries_for(events);
    // The rest: workers created and cancelled, two events each.
    let pairs = events
        .saturating_sub(1 + WORKERS as u64 + entries)
        .div_ceil(2);
    let threads = 8u64;
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (runtime, workers) = (runtime.clone(), workers.clone());
            std::thread::spawn(move || {
                let mut i = t;
                while i < entries {
                    let w = &workers[(i % WORKERS as u64) as usize];
                    runtime
                        .send_input(w, WorkerInput::user(content(i)))
                        .expect("send");
                    i += threads;
                }
                let mut p = t;
                while p < pairs {
                    let w = runtime
                        .create_worker(CreateWorkerRequest::default())
                        .expect("create");
                    runtime.cancel_worker(&w.worker_ref, None).expect("cancel");
                    p += threads;
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("builder");
    }
    let last = runtime.summary().expect("summary").last_event_id;
    runtimes
        .db()
        .expect("embedded")
        .checkpoint()
        .expect("checkpoint");
    // The seed's events.jsonl, with the same events.
    let mut out = BufWriter::new(File::create(dir.join("events.jsonl")).expect("jsonl"));
    let mut cursor = runtime.event_cursor_from_start();
    loop {
        let batch = runtime.read_events(&cursor, 256).expect("read");
        for e in &batch.events {
            serde_json::to_writer(&mut out, e).expect("json");
            out.write_all(b"\n").expect("write");
        }
        cursor = batch.cursor;
        if !batch.has_more {
            break;
        }
    }
    out.flush().expect("flush");
    drop((runtime, runtimes));
    std::fs::write(&done, last.to_string()).expect("mark");
    println!(
        "built a runtime of {last} events ({entries} transcript entries) in {:.0} s",
        t.elapsed().as_secs_f64()
    );
    dir
}

/// The seed's `read_events`: parse every line of `events.jsonl`, keep
/// `limit` from the cursor.
fn seed_read_events(path: &Path, next_event_id: u64, limit: usize) -> Vec<RuntimeEvent> {
    let reader = BufReader::new(File::open(path).expect("open"));
    let mut events = Vec::new();
    for line in reader.lines() {
        let line = line.expect("line");
        if line.trim().is_empty() {
            continue;
        }
        events.push(serde_json::from_str::<RuntimeEvent>(&line).expect("parse"));
    }
    events
        .into_iter()
        .filter(|e| e.id >= next_event_id)
        .take(limit)
        .collect()
}

/// The seed's `append_json_line`: append one line and `sync_all`.
fn seed_append(path: &Path, entry: &TranscriptEntry) {
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open");
    serde_json::to_writer(&mut file, entry).expect("json");
    file.write_all(b"\n").expect("write");
    file.flush().expect("flush");
    file.sync_all().expect("sync");
}

/// The child: open the runtime at `dir`, read a page of events and of a
/// transcript from the middle, report the open's time and the resident
/// memory after as one line, exit.
fn child_open(dir: &Path) {
    let t = Instant::now();
    let runtimes = open(dir, Durability::Immediate);
    let runtime = runtimes
        .open_runtime(RuntimeOptions {
            runtime_id: Some(rt()),
            ..RuntimeOptions::default()
        })
        .expect("runtime");
    let took = t.elapsed();
    let last = runtime.summary().expect("summary").last_event_id;
    let cursor = EventCursor {
        runtime_id: rt(),
        next_event_id: last / 2,
    };
    black_box(runtime.read_events(&cursor, PAGE).expect("read"));
    let first = WorkerRef::new(rt(), replaydb::runtime::WorkerId::generated(1));
    if let Ok(w) = runtime.worker_detail(&first) {
        let query = replaydb::runtime::TranscriptQuery::new(w.transcript_len / 2, PAGE);
        black_box(
            runtime
                .transcript_projection(&first, query)
                .expect("transcript"),
        );
    }
    println!("open {} {} {last}", took.as_micros(), rss_bytes());
}

fn open_in_child(dir: &Path) -> (Duration, u64) {
    let out = std::process::Command::new(std::env::current_exe().expect("exe"))
        .env("REPLAYDB_BENCH_CHILD_OPEN", dir)
        .output()
        .expect("child");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("open "))
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
    (
        Duration::from_micros(f.next().unwrap_or(0)),
        f.next().unwrap_or(0),
    )
}

fn empty_runtime(root: &Path) -> PathBuf {
    let dir = root.join("runtime-empty");
    if !dir.exists() {
        let runtimes = open(&dir, Durability::Immediate);
        runtimes
            .open_runtime(RuntimeOptions {
                runtime_id: Some(rt()),
                ..RuntimeOptions::default()
            })
            .expect("runtime");
    }
    dir
}

fn table(root: &Path) {
    let big = build(root, largest());
    let empty = empty_runtime(root);
    let runs = 5;
    let e: Vec<_> = (0..runs).map(|_| open_in_child(&empty)).collect();
    let b: Vec<_> = (0..runs).map(|_| open_in_child(&big)).collect();
    let rss = |v: &[(Duration, u64)]| v.iter().map(|r| r.1).max().unwrap_or(0);
    let time = |v: &[(Duration, u64)]| median(v.iter().map(|r| r.0).collect());
    println!(
        "open and reopen, {runs} child processes each: a runtime of 1 event {:.1} ms, {:.0} MB resident; of {} events and {} transcript entries {:.1} ms, {:.0} MB resident: {:.0} MB more",
        time(&e).as_secs_f64() * 1e3,
        mb(rss(&e)),
        largest(),
        entries_for(largest()),
        time(&b).as_secs_f64() * 1e3,
        mb(rss(&b)),
        mb(rss(&b).saturating_sub(rss(&e)))
    );
    let store = std::fs::metadata(big.join("store.redb")).map_or(0, |m| m.len());
    let jsonl = std::fs::metadata(big.join("events.jsonl")).map_or(0, |m| m.len());
    println!(
        "on disk: store.redb {:.0} MB (events, transcripts, workers and the history); the seed's events.jsonl alone {:.0} MB",
        mb(store),
        mb(jsonl)
    );
}

/// The seed's `write_json_atomic`: a temporary file written and synced,
/// renamed over the old one, the directory synced.
fn seed_write_atomic(path: &Path, value: &impl serde::Serialize) {
    let tmp = path.with_extension("json.tmp");
    let mut file = File::create(&tmp).expect("create");
    serde_json::to_writer_pretty(&mut file, value).expect("json");
    file.write_all(b"\n").expect("write");
    file.sync_all().expect("sync");
    drop(file);
    std::fs::rename(&tmp, path).expect("rename");
    File::open(path.parent().expect("parent"))
        .and_then(|d| d.sync_all())
        .expect("sync dir");
}

/// One durable input as the original's `send_input` persists it with its
/// fs-store, under the runtime's one lock: `runtime.json` and the
/// worker's `worker.json` rewritten atomically, then a line appended
/// (and synced) to `events.jsonl` and to the worker's `transcript.jsonl`.
fn seed_send_input(dir: &Path, lock: &std::sync::Mutex<u64>, worker: usize, i: u64) {
    let mut next_event = lock.lock().expect("lock");
    *next_event += 1;
    let w = dir.join(format!("workers/{worker}"));
    seed_write_atomic(
        &dir.join("runtime.json"),
        &serde_json::json!({"runtime_id": "bench", "status": "running", "next_event_id": *next_event}),
    );
    seed_write_atomic(
        &w.join("worker.json"),
        &serde_json::json!({"worker_id": worker, "status": "running", "next_transcript_sequence": i + 2}),
    );
    let event = RuntimeEvent {
        id: *next_event,
        worker_ref: None,
        kind: replaydb::runtime::RuntimeEventKind::WorkerInputAccepted,
        message: "worker input accepted".into(),
    };
    let mut events = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("events.jsonl"))
        .expect("open");
    serde_json::to_writer(&mut events, &event).expect("json");
    events.write_all(b"\n").expect("write");
    events.sync_all().expect("sync");
    let entry = transcript_entry(worker, i);
    seed_append(&w.join("transcript.jsonl"), &entry);
}

fn transcript_entry(worker: usize, i: u64) -> TranscriptEntry {
    TranscriptEntry {
        sequence: i + 1,
        worker_ref: WorkerRef::new(
            rt(),
            replaydb::runtime::WorkerId::generated(worker as u64 + 1),
        ),
        role: replaydb::runtime::TranscriptRole::User,
        content: content(i),
        event_id: i,
    }
}

/// A fresh database with a runtime of 16 workers, for the append runs.
fn append_setup(
    root: &Path,
) -> (
    PathBuf,
    Runtimes,
    replaydb::runtime::Runtime,
    Vec<WorkerRef>,
) {
    let dir = root.join("appends");
    let _ = std::fs::remove_dir_all(&dir);
    let runtimes = open(&dir.join("db"), Durability::Immediate);
    let runtime = runtimes
        .open_runtime(RuntimeOptions::default())
        .expect("runtime");
    let workers: Vec<WorkerRef> = (0..WORKERS)
        .map(|_| {
            runtime
                .create_worker(CreateWorkerRequest::default())
                .expect("worker")
                .worker_ref
        })
        .collect();
    (dir, runtimes, runtime, workers)
}

/// Appending a transcript entry durably, 16 workers at once, side by
/// side: every workload in ten short turns, interleaved, so a change in
/// the disk hits each alike. Per entry, the median over the turns.
fn append_table(root: &Path) {
    let (dir, runtimes, runtime, workers) = append_setup(root);
    let seed_dir = dir.join("seed");
    for w in 0..WORKERS {
        std::fs::create_dir_all(seed_dir.join(format!("workers/{w}"))).expect("seed dir");
    }
    let lock = Arc::new(std::sync::Mutex::new(0u64));
    let db = runtimes.db().expect("embedded").clone();
    type Workload = Box<dyn Fn(u64) -> Duration>;
    let workloads: Vec<(&str, Workload)> = vec![
        ("raw pwrite + fdatasync loop, 1 thread", {
            let p = dir.join("raw");
            Box::new(move |n| raw_sync_loop(&p, n))
        }),
        ("replaydb plain durable append, 16 threads", {
            let db = db.clone();
            Box::new(move |n| {
                let db = db.clone();
                concurrent(WORKERS, n, move |t, i| {
                    db.append(
                        &format!("plain-{t}"),
                        replaydb::ExpectedVersion::Any,
                        &[content(i).as_bytes()],
                    )
                    .expect("append");
                })
            })
        }),
        ("replaydb send_input, 16 workers", {
            let (runtime, workers) = (runtime.clone(), workers.clone());
            Box::new(move |n| {
                let (runtime, workers) = (runtime.clone(), workers.clone());
                concurrent(WORKERS, n, move |t, i| {
                    runtime
                        .send_input(&workers[t], WorkerInput::user(content(i)))
                        .expect("send");
                })
            })
        }),
        ("seed transcript line append + fsync, 16 workers", {
            let seed_dir = seed_dir.clone();
            Box::new(move |n| {
                let seed_dir = seed_dir.clone();
                concurrent(WORKERS, n, move |t, i| {
                    seed_append(
                        &seed_dir.join(format!("workers/{t}/transcript-only.jsonl")),
                        &transcript_entry(t, i),
                    );
                })
            })
        }),
        ("seed send_input as the original persists it, 16 workers", {
            let (seed_dir, lock) = (seed_dir.clone(), lock.clone());
            Box::new(move |n| {
                let (seed_dir, lock) = (seed_dir.clone(), lock.clone());
                concurrent(WORKERS, n / 8, move |t, i| {
                    seed_send_input(&seed_dir, &lock, t, i)
                })
            })
        }),
    ];
    let turns = 10;
    let per_turn = 320u64;
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); workloads.len()];
    for turn in 0..=turns {
        for (k, (_, w)) in workloads.iter().enumerate() {
            let t = w(if k == 0 { per_turn / 2 } else { per_turn });
            // Turn 0 warms up and is not counted.
            if turn > 0 {
                times[k].push(t);
            }
        }
    }
    let medians: Vec<Duration> = times.into_iter().map(median).collect();
    let send = medians[2];
    println!("| workload | per entry | entries/s | vs replaydb send_input |");
    println!("|---|---:|---:|---:|");
    for ((name, _), m) in workloads.iter().zip(&medians) {
        println!(
            "| {name} | {:.1} µs | {:.0} | {:.2}x |",
            m.as_secs_f64() * 1e6,
            1.0 / m.as_secs_f64(),
            m.as_secs_f64() / send.as_secs_f64()
        );
    }
}

/// Reads a file through, so that its pages are in the OS page cache.
fn warm(path: &Path) {
    let mut file = File::open(path).expect("open");
    std::io::copy(&mut file, &mut std::io::sink()).expect("read");
}

fn bench_reads(c: &mut Criterion, root: &Path) {
    let mut g = c.benchmark_group("runtime_read_events_100");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(3));
    for events in sizes() {
        let dir = build(root, events);
        // Every size measured with its files in the OS page cache (this
        // VM drops them now and then: a page then costs a disk read).
        warm(&dir.join("store.redb"));
        warm(&dir.join("events.jsonl"));
        let runtimes = open(&dir, Durability::Immediate);
        let runtime = runtimes.runtime(&rt()).expect("runtime");
        let last = runtime.summary().expect("summary").last_event_id;
        let mut k = 0u64;
        g.bench_function(format!("replaydb/{events}"), |b| {
            b.iter(|| {
                // Pages from all over the history.
                k = (k + 7_919) % last.saturating_sub(PAGE as u64).max(1);
                let cursor = EventCursor {
                    runtime_id: rt(),
                    next_event_id: k + 1,
                };
                black_box(runtime.read_events(&cursor, PAGE).expect("read"))
            })
        });
        let jsonl = dir.join("events.jsonl");
        g.bench_function(format!("seed_jsonl/{events}"), |b| {
            b.iter(|| {
                k = (k + 7_919) % last.saturating_sub(PAGE as u64).max(1);
                black_box(seed_read_events(&jsonl, k + 1, PAGE))
            })
        });
    }
    g.finish();
}

fn bench_appends(c: &mut Criterion, root: &Path) {
    let (dir, _runtimes, runtime, workers) = append_setup(root);
    let seed_dir = dir.join("seed");
    std::fs::create_dir_all(&seed_dir).expect("seed dir");
    let mut g = c.benchmark_group("runtime_transcript_append_16_workers");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(5));
    g.bench_function("replaydb_send_input", |b| {
        b.iter_custom(|iters| {
            let (runtime, workers) = (runtime.clone(), workers.clone());
            concurrent(WORKERS, iters, move |t, i| {
                runtime
                    .send_input(&workers[t], WorkerInput::user(content(i)))
                    .expect("send");
            }) * u32::try_from(iters).unwrap_or(u32::MAX)
        })
    });
    g.bench_function("seed_jsonl_append_fsync", |b| {
        b.iter_custom(|iters| {
            let (seed_dir, workers) = (seed_dir.clone(), workers.clone());
            concurrent(WORKERS, iters, move |t, i| {
                let entry = TranscriptEntry {
                    sequence: i + 1,
                    worker_ref: workers[t].clone(),
                    role: replaydb::runtime::TranscriptRole::User,
                    content: content(i),
                    event_id: i,
                };
                seed_append(&seed_dir.join(format!("transcript-{t}.jsonl")), &entry);
            }) * u32::try_from(iters).unwrap_or(u32::MAX)
        })
    });
    g.finish();
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if let Some(dir) = std::env::var_os("REPLAYDB_BENCH_CHILD_OPEN") {
        child_open(&PathBuf::from(dir));
        return;
    }
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bench-runtime");
    std::fs::create_dir_all(&root).expect("root");
    if std::env::args().any(|a| a == "--test") {
        // `cargo test --benches`: one small build and one read each.
        let dir = build(&root, 1_000);
        let runtime = open(&dir, Durability::Immediate)
            .runtime(&rt())
            .expect("runtime");
        assert_eq!(
            runtime
                .read_events(&runtime.event_cursor_from_start(), PAGE)
                .expect("read")
                .events
                .len(),
            PAGE
        );
        assert_eq!(
            seed_read_events(&dir.join("events.jsonl"), 1, PAGE).len(),
            PAGE
        );
        return;
    }
    table(&root);
    append_table(&root);
    if std::env::var_os("REPLAYDB_BENCH_TABLE_ONLY").is_none() {
        let mut c = Criterion::default().configure_from_args();
        bench_reads(&mut c, &root);
        bench_appends(&mut c, &root);
        c.final_summary();
    }
}
