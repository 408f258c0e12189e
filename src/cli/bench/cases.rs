//! The cases of `replaydb bench`, in the order they run: the disk's own
//! limits first (every other durable figure is read against its fdatasync
//! rate), then each workload through replaydb beside the seeds' layout of
//! it, and redb used directly.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use replaydb::kv::{Key, KvStore};
use replaydb::registry::{Registration, Registry, RegistryState, ScopeRule, decide};
use replaydb::runtime::{
    CreateWorkerRequest, EventCursor, RuntimeId, RuntimeOptions, Runtimes, WorkerInput,
};
use replaydb::{Db, Durability, ExpectedVersion, Options};

use super::seeds::{self, io_error};
use super::{Case, Measured, Plan};

pub(crate) const DISK_FDATASYNC: &str = "disk-fdatasync";
pub(crate) const DISK_SEQUENTIAL: &str = "disk-sequential-write";
pub(crate) const REPLAYDB_APPEND_1: &str = "replaydb-append-1-writer";
pub(crate) const REPLAYDB_APPEND_16: &str = "replaydb-append-16-writers";
const REPLAYDB_REGISTRY: &str = "replaydb-registry-change";
const REPLAYDB_READ_EVENTS: &str = "replaydb-runtime-read-events";
const REPLAYDB_KV_PUT: &str = "replaydb-kv-put";
const REPLAYDB_KV_ENTRIES: &str = "replaydb-kv-entries";

/// An event the size of an order's: what every append case writes.
const EVENT: &[u8] = b"{\"order\":42,\"state\":\"paid\",\"amount_cents\":1999,\"at\":1764547200}";
/// Concurrent writers of the group-commit case.
const WRITERS: usize = 16;
/// Events a `read_events` page holds.
const PAGE: usize = 100;
/// Keys the put cases overwrite in turn.
const PUT_KEYS: u64 = 1_000;

fn db_error(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// Runs `op` until `budget` has passed (at least once); operations a
/// second.
fn timed(budget: Duration, mut op: impl FnMut(u64) -> Result<(), String>) -> Result<f64, String> {
    let start = Instant::now();
    let mut n = 0u64;
    while n == 0 || start.elapsed() < budget {
        op(n)?;
        n += 1;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// `threads` threads each running `op(thread, i)` until `budget` has
/// passed; operations a second, over all of them.
fn timed_concurrent(
    threads: usize,
    budget: Duration,
    op: impl Fn(usize, u64) -> Result<(), String> + Sync,
) -> Result<f64, String> {
    let done = AtomicU64::new(0);
    let start = Instant::now();
    let deadline = start + budget;
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (op, done) = (&op, &done);
                s.spawn(move || -> Result<(), String> {
                    let mut i = 0u64;
                    while i == 0 || Instant::now() < deadline {
                        op(t, i)?;
                        i += 1;
                    }
                    done.fetch_add(i, Ordering::Relaxed);
                    Ok(())
                })
            })
            .collect();
        // Every thread joined, then the first error.
        let results: Vec<Result<(), String>> = handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("a writer panicked".into())))
            .collect();
        results.into_iter().collect::<Result<(), String>>()
    })?;
    Ok(done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64())
}

fn durable(dir: &Path) -> Result<Db, String> {
    Db::open(dir, Options::default()).map_err(db_error)
}

/// Fast to fill: what a setup writes need not be durable to be read.
fn buffered() -> Options {
    Options::default().durability(Durability::Buffered {
        interval: Duration::from_millis(50),
    })
}

fn registration(name: &str, target: &str) -> Result<Registration, String> {
    Ok(Registration {
        name: name.to_string(),
        pid: std::process::id(),
        socket: PathBuf::from(format!("/run/pods/{name}.sock")),
        allow: vec![
            ScopeRule::write(target).map_err(db_error)?,
            ScopeRule::read("/shared").map_err(db_error)?,
        ],
        deny: vec![],
        segment: uuid::Uuid::new_v4(),
    })
}

fn kv_key(i: u64) -> Key {
    Key::new(format!("ns/component/generate/{i:016x}"))
}

fn kv_value(i: u64) -> Vec<u8> {
    format!(
        "{{\"instance\":{i},\"endpoint\":\"ns/component/generate\",\"addr\":\"10.0.0.{}:{}\"}}",
        i % 255,
        9000 + i % 1000
    )
    .into_bytes()
}

/// Every case, in order.
pub(crate) fn all(plan: Plan) -> Vec<Case> {
    let history = Arc::new(std::sync::OnceLock::<Result<PathBuf, String>>::new());
    // Durable single writes run interleaved; the rest (long setups, or a
    // disk-wide load) once each.
    let case = |name, what: String, vs, durable, run: super::CaseFn| Case {
        name,
        what,
        vs,
        durable,
        interleaved: durable,
        run,
    };
    let pods = plan.registry_pods;
    let (events, keys) = (plan.history_events, plan.kv_keys);
    let history_for_ours = history.clone();
    let history_for_seed = history;
    vec![
        case(
            DISK_FDATASYNC,
            "disk: 148-byte pwrite + fdatasync, one at a time".into(),
            Some(REPLAYDB_APPEND_1),
            true,
            Box::new(disk_fdatasync),
        ),
        case(
            REPLAYDB_APPEND_1,
            "replaydb: durable append, 1 writer".into(),
            Some(REPLAYDB_APPEND_1),
            true,
            Box::new(|dir, plan| {
                let db = durable(dir)?;
                timed(plan.budget, |_| {
                    db.append("orders", ExpectedVersion::Any, &[EVENT])
                        .map(drop)
                        .map_err(db_error)
                })
                .map(Measured::rate)
            }),
        ),
        case(
            REPLAYDB_APPEND_16,
            "replaydb: durable append, 16 writers".into(),
            Some(REPLAYDB_APPEND_16),
            true,
            Box::new(append_16),
        ),
        case(
            "redb-direct",
            "redb used directly: one durable write transaction per event".into(),
            Some(REPLAYDB_APPEND_1),
            true,
            Box::new(redb_direct),
        ),
        case(
            "seed-jsonl-append",
            "seed (runtime): JSON line appended + sync_all".into(),
            Some(REPLAYDB_APPEND_1),
            true,
            Box::new(|dir, plan| {
                let path = dir.join("events.jsonl");
                let value = serde_json::json!({"order": 42, "state": "paid", "amount_cents": 1999});
                timed(plan.budget, |_| seeds::jsonl_append(&path, &value)).map(Measured::rate)
            }),
        ),
        case(
            REPLAYDB_REGISTRY,
            format!("replaydb: registry change at {pods} pods"),
            Some(REPLAYDB_REGISTRY),
            true,
            Box::new(registry_ours),
        ),
        case(
            "seed-registry-flock",
            format!("seed (registry): pods.json rewritten under flock + fsync, at {pods} pods"),
            Some(REPLAYDB_REGISTRY),
            true,
            Box::new(registry_seed),
        ),
        case(
            REPLAYDB_READ_EVENTS,
            format!("replaydb: runtime read_events page of {PAGE} at {events} events"),
            Some(REPLAYDB_READ_EVENTS),
            false,
            Box::new(move |dir, plan| {
                let built = history_for_ours.get_or_init(|| build_history(dir, plan));
                read_events_ours(built.as_ref().map_err(Clone::clone)?, plan)
            }),
        ),
        case(
            "seed-jsonl-read-events",
            format!("seed (runtime): read_events page of {PAGE}, parsing events.jsonl of {events}"),
            Some(REPLAYDB_READ_EVENTS),
            false,
            Box::new(move |dir, plan| {
                let built = history_for_seed.get_or_init(|| build_history(dir, plan));
                let path = built.as_ref().map_err(Clone::clone)?.join("events.jsonl");
                let middle = plan.history_events / 2;
                timed(plan.budget, |_| {
                    seeds::jsonl_read_events(&path, middle, PAGE).map(drop)
                })
                .map(Measured::rate)
            }),
        ),
        case(
            REPLAYDB_KV_PUT,
            "replaydb: KV durable put".into(),
            Some(REPLAYDB_KV_PUT),
            true,
            Box::new(|dir, plan| {
                let store = KvStore::open(dir, Options::default(), vec![]).map_err(db_error)?;
                let bucket = store
                    .get_or_create_bucket("v1/instances", None)
                    .map_err(db_error)?;
                timed(plan.budget, |i| {
                    let k = i % PUT_KEYS;
                    bucket
                        .insert(&kv_key(k), kv_value(k), 1)
                        .map(drop)
                        .map_err(db_error)
                })
                .map(Measured::rate)
            }),
        ),
        case(
            "seed-kv-file-put-fsync",
            "seed (KV) made durable: file per key, temp file + rename, fsync file and dir (the seed does not fsync)".into(),
            Some(REPLAYDB_KV_PUT),
            true,
            Box::new(|dir, plan| {
                timed(plan.budget, |i| {
                    let k = i % PUT_KEYS;
                    seeds::file_put(dir, &kv_key(k), &kv_value(k), true, i)
                })
                .map(Measured::rate)
            }),
        ),
        case(
            "seed-kv-file-put-nosync",
            "seed (KV) as it is: file per key, temp file + rename, no fsync (not durable)".into(),
            Some(REPLAYDB_KV_PUT),
            false,
            Box::new(|dir, plan| {
                timed(plan.budget, |i| {
                    let k = i % PUT_KEYS;
                    seeds::file_put(dir, &kv_key(k), &kv_value(k), false, i)
                })
                .map(Measured::rate)
            }),
        ),
        case(
            REPLAYDB_KV_ENTRIES,
            format!("replaydb: KV entries() of {keys} keys, every entry visited"),
            Some(REPLAYDB_KV_ENTRIES),
            false,
            Box::new(entries_ours),
        ),
        case(
            "seed-kv-file-entries",
            format!("seed (KV): entries() of {keys} keys, read_dir + every file read"),
            Some(REPLAYDB_KV_ENTRIES),
            false,
            Box::new(|dir, plan| {
                for i in 0..plan.kv_keys as u64 {
                    seeds::file_put(dir, &kv_key(i), &kv_value(i), false, i)?;
                }
                let root = dir.canonicalize().map_err(|e| io_error("canonicalize", dir, e))?;
                timed(plan.budget, |_| {
                    let n = seeds::file_entries(dir, &root)?.len();
                    if n != plan.kv_keys {
                        return Err(format!("{n} entries, {} written", plan.kv_keys));
                    }
                    Ok(())
                })
                .map(Measured::rate)
            }),
        ),
        case(
            DISK_SEQUENTIAL,
            "disk: sequential 1 MiB writes, fdatasync each 64 MiB (MiB/s)".into(),
            None,
            false,
            Box::new(disk_sequential),
        ),
    ]
}

fn disk_fdatasync(dir: &Path, plan: Plan) -> Result<Measured, String> {
    let path = dir.join("fdatasync.bin");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| io_error("open", &path, e))?;
    // Written out whole first: every timed write overwrites allocated
    // blocks, the pure ceiling of a small durable write.
    file.write_all_at(&vec![0u8; 1 << 20], 0)
        .and_then(|()| file.sync_all())
        .map_err(|e| io_error("preallocate", &path, e))?;
    let buf = [0x5au8; 148];
    let slots = (1u64 << 20) / 148;
    timed(plan.budget, |i| {
        file.write_all_at(&buf, (i % slots) * 148)
            .and_then(|()| file.sync_data())
            .map_err(|e| io_error("write", &path, e))
    })
    .map(Measured::rate)
}

fn disk_sequential(dir: &Path, plan: Plan) -> Result<Measured, String> {
    const BLOCK: u64 = 1 << 20;
    // Written over and over: the disk's rate without filling it.
    const FILE_BYTES: u64 = 256 << 20;
    let path = dir.join("sequential.bin");
    let file = std::fs::File::create(&path).map_err(|e| io_error("create", &path, e))?;
    let buf = vec![0x5au8; BLOCK as usize];
    let start = Instant::now();
    let mut blocks = 0u64;
    while blocks == 0 || start.elapsed() < plan.budget {
        let at = (blocks * BLOCK) % FILE_BYTES;
        file.write_all_at(&buf, at)
            .map_err(|e| io_error("write", &path, e))?;
        blocks += 1;
        if blocks.is_multiple_of(64) {
            file.sync_data().map_err(|e| io_error("sync", &path, e))?;
        }
    }
    file.sync_data().map_err(|e| io_error("sync", &path, e))?;
    Ok(Measured::rate(
        blocks as f64 / start.elapsed().as_secs_f64(),
    ))
}

fn append_16(dir: &Path, plan: Plan) -> Result<Measured, String> {
    let db = durable(dir)?;
    let before = db.stats().map_err(db_error)?;
    let streams: Vec<String> = (0..WRITERS).map(|t| format!("writer-{t}")).collect();
    let rate = timed_concurrent(WRITERS, plan.budget, |t, _| {
        let stream = streams.get(t).ok_or("a stream per writer")?;
        db.append(stream, ExpectedVersion::Any, &[EVENT])
            .map(drop)
            .map_err(db_error)
    })?;
    let after = db.stats().map_err(db_error)?;
    let fsyncs = after.fsyncs_since_open - before.fsyncs_since_open;
    let appends = after.appends_since_open - before.appends_since_open;
    Ok(Measured {
        ops_per_sec: rate,
        events_per_fsync: Some(appends as f64 / fsyncs.max(1) as f64),
    })
}

fn redb_direct(dir: &Path, plan: Plan) -> Result<Measured, String> {
    const TABLE: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("events");
    let path = dir.join("direct.redb");
    let db = redb::Database::create(&path).map_err(|e| io_error("create", &path, e))?;
    timed(plan.budget, |i| {
        let tx = db.begin_write().map_err(|e| io_error("begin", &path, e))?;
        {
            let mut t = tx
                .open_table(TABLE)
                .map_err(|e| io_error("open table", &path, e))?;
            t.insert(i, EVENT)
                .map_err(|e| io_error("insert", &path, e))?;
        }
        tx.commit().map_err(|e| io_error("commit", &path, e))
    })
    .map(Measured::rate)
}

fn registry_ours(dir: &Path, plan: Plan) -> Result<Measured, String> {
    let reg = Registry::open(dir, Options::default(), vec![]).map_err(db_error)?;
    for i in 0..plan.registry_pods {
        let r = registration(&format!("pod-{i}"), &format!("/base/{i}"))?;
        reg.register_pod(&r.name, r.pid, &r.socket, r.allow, r.deny, r.segment)
            .map_err(db_error)?
            .keep();
    }
    // A registration, then its release: the table stays at its size.
    timed(plan.budget, |i| {
        let name = format!("new-{}", i / 2);
        if i % 2 == 0 {
            let r = registration(&name, &format!("/new/{i}"))?;
            reg.register_pod(&r.name, r.pid, &r.socket, r.allow, r.deny, r.segment)
                .map_err(db_error)?
                .keep();
            Ok(())
        } else {
            reg.release_pod(&name).map_err(db_error)
        }
    })
    .map(Measured::rate)
}

fn registry_seed(dir: &Path, plan: Plan) -> Result<Measured, String> {
    // The table the same rules make of the same registrations.
    let mut state = RegistryState::default();
    for i in 0..plan.registry_pods {
        let r = registration(&format!("pod-{i}"), &format!("/base/{i}"))?;
        for change in decide::register(&state, r, &|_| true).map_err(db_error)? {
            state.apply(&change);
        }
    }
    let table = state.allocations().cloned().collect();
    let path = seeds::registry_table(dir, table)?;
    timed(plan.budget, |i| {
        let name = format!("new-{}", i / 2);
        let mut refused = None;
        let decided = |s: &RegistryState| {
            let changes = if i % 2 == 0 {
                registration(&name, &format!("/new/{i}"))
                    .and_then(|r| decide::register(s, r, &|_| true).map_err(db_error))
            } else {
                decide::release(s, &name).map_err(db_error)
            };
            changes.unwrap_or_else(|e| {
                refused = Some(e);
                Vec::new()
            })
        };
        seeds::registry_change(&path, decided)?;
        refused.map_or(Ok(()), Err)
    })
    .map(Measured::rate)
}

/// The runtime of `plan.history_events` events (16 workers, inputs spread
/// over them), and the seed's `events.jsonl` of the same events; its
/// directory.
fn build_history(dir: &Path, plan: Plan) -> Result<PathBuf, String> {
    let dir = dir.parent().unwrap_or(dir).join("runtime-history");
    let runtimes = Runtimes::open(&dir, buffered(), vec![]).map_err(db_error)?;
    let runtime = runtimes
        .open_runtime(RuntimeOptions {
            runtime_id: RuntimeId::new("bench"),
            ..RuntimeOptions::default()
        })
        .map_err(db_error)?;
    let workers = (0..16)
        .map(|_| {
            runtime
                .create_worker(CreateWorkerRequest::default())
                .map(|w| w.worker_ref)
                .map_err(db_error)
        })
        .collect::<Result<Vec<_>, String>>()?;
    let inputs = plan.history_events.saturating_sub(17);
    // A zero budget: each of the eight threads runs its share once.
    timed_concurrent(8, Duration::ZERO, |t, _| {
        let mut i = t as u64;
        while i < inputs {
            let w = workers
                .get((i % workers.len() as u64) as usize)
                .ok_or("a worker")?;
            runtime
                .send_input(
                    w,
                    WorkerInput::user(format!("input {i}: lorem ipsum dolor")),
                )
                .map_err(db_error)?;
            i += 8;
        }
        Ok(())
    })?;
    let jsonl = dir.join("events.jsonl");
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(&jsonl).map_err(|e| io_error("create", &jsonl, e))?,
    );
    let mut cursor = runtime.event_cursor_from_start();
    loop {
        let batch = runtime.read_events(&cursor, 256).map_err(db_error)?;
        for e in &batch.events {
            use std::io::Write;
            serde_json::to_writer(&mut out, e).map_err(|e| io_error("write", &jsonl, e))?;
            out.write_all(b"\n")
                .map_err(|e| io_error("write", &jsonl, e))?;
        }
        cursor = batch.cursor;
        if !batch.has_more {
            break;
        }
    }
    std::io::Write::flush(&mut out).map_err(|e| io_error("write", &jsonl, e))?;
    Ok(dir)
}

fn read_events_ours(history: &Path, plan: Plan) -> Result<Measured, String> {
    let runtimes = Runtimes::open(history, Options::default(), vec![]).map_err(db_error)?;
    let id = RuntimeId::new("bench").ok_or("a runtime id")?;
    let runtime = runtimes.runtime(&id).map_err(db_error)?;
    let cursor = EventCursor {
        runtime_id: id,
        next_event_id: plan.history_events / 2,
    };
    timed(plan.budget, |_| {
        let page = runtime.read_events(&cursor, PAGE).map_err(db_error)?;
        if page.events.len() != PAGE {
            return Err(format!(
                "a page of {} events, {PAGE} asked",
                page.events.len()
            ));
        }
        Ok(())
    })
    .map(Measured::rate)
}

fn entries_ours(dir: &Path, plan: Plan) -> Result<Measured, String> {
    let store = KvStore::open(dir, buffered(), vec![]).map_err(db_error)?;
    let bucket = store
        .get_or_create_bucket("v1/instances", None)
        .map_err(db_error)?;
    for i in 0..plan.kv_keys as u64 {
        bucket
            .insert(&kv_key(i), kv_value(i), 1)
            .map_err(db_error)?;
    }
    timed(plan.budget, |_| {
        let entries = bucket.entries().map_err(db_error)?;
        let mut n = 0usize;
        for (k, v) in &entries {
            std::hint::black_box((k, v));
            n += 1;
        }
        if n != plan.kv_keys {
            return Err(format!("{n} entries, {} written", plan.kv_keys));
        }
        Ok(())
    })
    .map(Measured::rate)
}
