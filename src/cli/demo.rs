//! `replaydb demo`: a realistic workload on the database directory, then
//! what the engine did.
//!
//! Sixteen order services write order streams concurrently (create with
//! `NoStream`, then items, then payment, each with an exact expected
//! version), an inventory stream takes shared writes, two counters race
//! on one stream with optimistic concurrency, and a live subscriber
//! follows everything. Then a worker runtime takes inputs for eight
//! workers at once, and sixteen services register in a KV bucket and race
//! for one claim. Then the database is closed, reopened (timed) and
//! verified.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use replaydb::{Error, ExpectedVersion, Options};
use serde_json::json;

use crate::cli::{CmdResult, json as j};

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Concurrent order services.
    #[arg(long, default_value_t = 16)]
    writers: usize,
    /// Orders each service writes.
    #[arg(long, default_value_t = 250)]
    orders: usize,
}

const CONTENDED_INCREMENTS: u64 = 200;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted.get(i).copied().unwrap_or_default()
}

pub fn run(dir: &Path, options: &Options, args: &DemoArgs) -> CmdResult {
    println!("replaydb demo on {}", dir.display());
    let db = crate::cli::open_db(dir, options, "runs its workload on a database it owns")?;
    let before = db.stats()?;
    let run_tag = before.last_lsn;
    println!(
        "opened: {} events already in the log ({} segments)\n",
        before.events, before.segments
    );

    // A live subscriber from the current end.
    let follow_from = db.last_lsn() + 1;
    let seen = Arc::new(AtomicU64::new(0));
    let mut subscription = db.subscribe(follow_from)?;

    let started = Instant::now();
    let conflicts = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::new();
    for w in 0..args.writers {
        let db = db.clone();
        let orders = args.orders;
        handles.push(std::thread::spawn(move || -> replaydb::Result<Vec<Duration>> {
            let mut latencies = Vec::with_capacity(orders * 4);
            for o in 0..orders {
                let stream = format!("order-{run_tag}-{w}-{o}");
                let mut timed = |expected, events: Vec<serde_json::Value>, stream: &str| {
                    let data: Vec<Vec<u8>> = events.iter().map(j::encode).collect();
                    let t = Instant::now();
                    let r = db.append(stream, expected, &data);
                    latencies.push(t.elapsed());
                    r
                };
                timed(ExpectedVersion::NoStream, vec![json!({"type": "created", "customer": w, "order": o})], &stream)?;
                timed(
                    ExpectedVersion::Exact(1),
                    vec![
                        json!({"type": "item_added", "sku": format!("sku-{}", o % 17), "qty": 1 + o % 3}),
                        json!({"type": "item_added", "sku": format!("sku-{}", o % 5), "qty": 1}),
                    ],
                    &stream,
                )?;
                timed(ExpectedVersion::Exact(3), vec![json!({"type": "paid", "cents": 1299 + o})], &stream)?;
                if o % 10 == 0 {
                    timed(ExpectedVersion::Any, vec![json!({"type": "reserved", "order": stream})], "inventory")?;
                }
            }
            Ok(latencies)
        }));
    }
    for _ in 0..2 {
        let db = db.clone();
        let conflicts = conflicts.clone();
        let stream = format!("counter-{run_tag}");
        handles.push(std::thread::spawn(
            move || -> replaydb::Result<Vec<Duration>> {
                let mut done = 0;
                while done < CONTENDED_INCREMENTS / 2 {
                    let v = db.stream_version(&stream)?;
                    match db.append(
                        &stream,
                        ExpectedVersion::Exact(v),
                        &[j::encode(&json!({"inc": 1}))],
                    ) {
                        Ok(_) => done += 1,
                        Err(Error::WrongExpectedVersion { .. }) => {
                            conflicts.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => return Err(e),
                    }
                }
                Ok(Vec::new())
            },
        ));
    }
    let mut latencies = Vec::new();
    for h in handles {
        let l = h.join().map_err(|_| "a demo writer thread panicked")??;
        latencies.extend(l);
    }
    let elapsed = started.elapsed();
    let after = db.stats()?;
    let end_lsn = after.last_lsn;
    while seen.load(Ordering::Relaxed) < end_lsn + 1 - follow_from {
        match subscription.next_blocking() {
            Some(Ok(_)) => {
                seen.fetch_add(1, Ordering::Relaxed);
            }
            Some(Err(e)) => return Err(e.into()),
            None => break,
        }
    }
    drop(subscription);
    latencies.sort();

    let events = after.events - before.events;
    let appends = after.appends_since_open;
    let fsyncs = after.fsyncs_since_open.max(1);
    println!(
        "workload: {} order services x {} orders, 2 contended counters, 1 live subscriber",
        args.writers, args.orders
    );
    println!("  events appended      {events}");
    println!("  appends (batches)    {appends}");
    println!("  commit groups        {}", after.groups_since_open);
    println!("  fsyncs               {fsyncs}");
    println!(
        "  events per fsync     {:.1}",
        events as f64 / fsyncs as f64
    );
    println!(
        "  appends per fsync    {:.1}",
        appends as f64 / fsyncs as f64
    );
    println!(
        "  throughput           {:.0} events/s, {:.0} appends/s over {:.2} s",
        events as f64 / elapsed.as_secs_f64(),
        appends as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64()
    );
    println!(
        "  append latency       p50 {:.2} ms, p99 {:.2} ms",
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3
    );
    println!(
        "  version conflicts    {} (retried; counter ended at {})",
        conflicts.load(Ordering::Relaxed),
        db.stream_version(&format!("counter-{run_tag}"))?
    );
    println!(
        "  subscriber saw       {} events live, in order",
        seen.load(Ordering::Relaxed)
    );

    let sample = format!("order-{run_tag}-0-0");
    println!("\nstream {sample}:");
    for e in db.read_stream(&sample, 1, 10)? {
        println!(
            "  v{} lsn {}  {}",
            e.version,
            e.lsn,
            j::decode(&e.data).unwrap_or_default()
        );
    }
    runtime_part(&db, run_tag)?;
    kv_part(&db, run_tag)?;

    let done = db.checkpoint()?;
    let s = db.stats()?;
    println!(
        "\ncheckpoint at LSN {}: {} WAL segment(s) deleted, the log kept from LSN {}; the history still holds every event from LSN {} ({} batches, store {} KiB)",
        done.covered_lsn,
        done.log_removed.len(),
        done.log_first_lsn,
        s.first_lsn,
        s.history_batches,
        s.store_bytes / 1024
    );
    drop(db);

    let t = Instant::now();
    let db = crate::cli::open_db(dir, options, "runs its workload on a database it owns")?;
    let reopen = t.elapsed();
    let r = db.recovery_report();
    println!(
        "reopen (recovery): {:.1} ms: {} segments ({} records) checked, store at checkpoint LSN {}, {} events replayed{}",
        reopen.as_secs_f64() * 1e3,
        r.segments,
        r.records,
        r.checkpoint_lsn,
        r.replayed_events,
        if r.torn_tail.is_some() {
            ", torn tail cut"
        } else {
            ""
        }
    );
    drop(db);
    let v = replaydb::verify(dir, options)?;
    println!(
        "verify: ok, {} records, {} events, LSNs {}..={} gapless, every CRC checked, store checked page by page, {} history rows match the log",
        v.records, v.events, v.first_lsn, v.last_lsn, v.history_rows_checked
    );
    Ok(())
}

/// Workers a demo runtime drives at once, and inputs each takes.
const RUNTIME_WORKERS: u64 = 8;
const RUNTIME_INPUTS: u64 = 50;

/// A worker runtime on the same database: eight workers take inputs at
/// once, each one event decided in the writer; then a page of its events
/// and of one transcript.
fn runtime_part(db: &replaydb::Db, run_tag: u64) -> CmdResult {
    use replaydb::runtime::{
        CreateWorkerRequest, EventCursor, RuntimeId, RuntimeOptions, Runtimes, TranscriptQuery,
        WorkerInput, WorkerIntent,
    };
    let runtimes = Runtimes::new(db.clone());
    let id = RuntimeId::new(format!("demo-{run_tag}")).ok_or("a demo runtime id")?;
    let runtime = runtimes.open_runtime(RuntimeOptions {
        runtime_id: Some(id),
        display_name: Some("demo".into()),
        ..RuntimeOptions::default()
    })?;
    let started = Instant::now();
    let mut handles = Vec::new();
    for w in 0..RUNTIME_WORKERS {
        let runtime = runtime.clone();
        handles.push(std::thread::spawn(
            move || -> Result<(), replaydb::runtime::RuntimeError> {
                let worker = runtime.create_worker(CreateWorkerRequest {
                    intent: WorkerIntent::Task {
                        objective: format!("task {w}"),
                    },
                    ..CreateWorkerRequest::default()
                })?;
                for i in 0..RUNTIME_INPUTS {
                    runtime.send_input(
                        &worker.worker_ref,
                        WorkerInput::user(format!("step {i} of task {w}")),
                    )?;
                }
                runtime.stop_worker(&worker.worker_ref, Some("task done".into()))?;
                Ok(())
            },
        ));
    }
    for h in handles {
        h.join().map_err(|_| "a demo worker thread panicked")??;
    }
    let elapsed = started.elapsed();
    let summary = runtime.summary()?;
    println!(
        "\nruntime {}: {} workers took {} inputs in {:.2} s ({:.0} durable inputs/s), {} events, {} diagnostics",
        summary.runtime_id,
        summary.worker_count,
        RUNTIME_WORKERS * RUNTIME_INPUTS,
        elapsed.as_secs_f64(),
        (RUNTIME_WORKERS * RUNTIME_INPUTS) as f64 / elapsed.as_secs_f64(),
        summary.last_event_id,
        summary.diagnostic_count
    );
    let middle = EventCursor {
        runtime_id: summary.runtime_id.clone(),
        next_event_id: summary.last_event_id / 2,
    };
    for e in runtime.read_events(&middle, 3)?.events {
        let worker = e.worker_ref.as_ref().map_or("-", |w| w.worker_id.as_str());
        println!("  event {} {worker}: {}", e.id, e.message);
    }
    let first = runtime
        .list_workers()?
        .into_iter()
        .next()
        .ok_or("a demo worker")?;
    let page = runtime.transcript_projection(&first.worker_ref, TranscriptQuery::new(0, 2))?;
    for e in &page.items {
        println!(
            "  {} transcript {}: {}",
            first.worker_id, e.sequence, e.content
        );
    }
    println!(
        "  ({} of {} entries; `replaydb runtime transcript {} {}` shows more)",
        page.items.len(),
        page.total_items,
        summary.runtime_id,
        first.worker_id
    );
    Ok(())
}

/// Service discovery on the KV view: sixteen services register their
/// instances (create-if-absent), race for one claim (one winner), and a
/// watcher started before them sees every registration.
fn kv_part(db: &replaydb::Db, run_tag: u64) -> CmdResult {
    use replaydb::kv::{Key, KvStore, StoreOutcome, WatchEvent};
    let watcher = KvStore::without_lease(db.clone())?;
    let instances = watcher.get_or_create_bucket(&format!("demo-{run_tag}/v1/instances"), None)?;
    let claims = watcher.get_or_create_bucket(&format!("demo-{run_tag}/v1/claims"), None)?;
    let mut watch = instances.watch()?;
    let started = Instant::now();
    let mut handles = Vec::new();
    for s in 0..16u64 {
        let db = db.clone();
        let (instances, claims) = (instances.name().to_string(), claims.name().to_string());
        handles.push(std::thread::spawn(
            move || -> Result<(bool, KvStore), replaydb::kv::KvError> {
                let service = KvStore::new(db)?;
                let mine = service.get_or_create_bucket(&instances, None)?;
                for i in 0..8u64 {
                    let key = Key::new(format!("ns/service-{s}/generate/{:016x}", s << 8 | i));
                    mine.insert(&key, format!("{{\"addr\":\"10.0.{s}.{i}:9000\"}}"), 0)?;
                }
                let claim = service.get_or_create_bucket(&claims, None)?;
                let won = matches!(
                    claim.insert(&Key::new("leader"), format!("service-{s}"), 0)?,
                    StoreOutcome::Created(_)
                );
                // Kept alive until the demo ends, as a running service would be.
                Ok((won, service))
            },
        ));
    }
    let mut winners = 0;
    let mut services = Vec::new();
    for h in handles {
        let (won, service) = h.join().map_err(|_| "a demo service thread panicked")??;
        winners += usize::from(won);
        services.push(service);
    }
    let elapsed = started.elapsed();
    let mut seen = 0;
    if let WatchEvent::Resync(state) = watch.next_blocking()? {
        seen += state.len();
    }
    while seen < 16 * 8 {
        if let WatchEvent::Put(_) = watch.next_blocking()? {
            seen += 1;
        }
    }
    let leader = claims.get(&Key::new("leader"))?.unwrap_or_default();
    println!(
        "\nkv: 16 services registered {} instances in {:.2} s (each a durable put, create-if-absent); {winners} of 16 racers won the claim ({}); a watcher started before them saw all {seen}",
        instances.count("ns/")?,
        elapsed.as_secs_f64(),
        String::from_utf8_lossy(&leader)
    );
    for s in &services {
        s.shutdown()?;
    }
    println!(
        "  after the services shut down: {} instances left (`replaydb kv watch {}` shows the deletes)",
        instances.count("")?,
        instances.name()
    );
    Ok(())
}
