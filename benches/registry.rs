//! Registry changes: replaydb beside the seed's layout re-created
//! faithfully: one `pods.json` rewritten whole under an exclusive `flock`
//! with an fsync per change, a writer that cannot get the lock retrying
//! every 25 ms. Both decide with the same rules (`replaydb::registry::
//! decide`), so what differs is the storage.
//!
//! ```sh
//! cargo bench --bench registry                       # 100, 1 k, 10 k allocations; 1 and 8 registrants
//! REPLAYDB_BENCH_RUNS=5 cargo bench --bench registry # medians over more runs (after one warm-up)
//! REPLAYDB_BENCH_SIZES=10000 cargo bench --bench registry # some table sizes only
//! ```
//!
//! A change here is a registration of a new pod with a disjoint scope or
//! the release of one: the table stays at its size. Beside both, in the
//! same run and the same database, a plain durable append of an event the
//! size of a registration's: what a change costs with no table at all.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use replaydb::registry::{Allocation, Registration, Registry, RegistryState, ScopeRule, decide};
use replaydb::{Durability, ExpectedVersion, Options};

mod common;
use common::median;
use serde::{Deserialize, Serialize};

#[derive(Default, Serialize, Deserialize)]
struct LockFile {
    #[serde(default)]
    allocations: Vec<Allocation>,
}

fn allocation(name: &str, target: &str) -> Allocation {
    Allocation {
        pod_name: name.to_string(),
        pid: std::process::id(),
        socket: PathBuf::from(format!("/run/pods/{name}.sock")),
        allow: vec![
            ScopeRule::write(target).expect("rule"),
            ScopeRule::read("/shared").expect("rule"),
        ],
        deny: vec![],
        delegated_from: None,
        segment_id: Some(uuid::Uuid::new_v4()),
    }
}

/// The seed: lock, read and parse the table, decide, rewrite, fsync, unlock.
fn seed_change(path: &Path, op: impl FnOnce(&RegistryState) -> Vec<replaydb::registry::Change>) {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .expect("open");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match file.try_lock() {
            Ok(()) => break,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(25)),
            Err(e) => panic!("lock timed out: {e:?}"),
        }
    }
    let mut text = String::new();
    file.read_to_string(&mut text).expect("read");
    let table: LockFile = if text.trim().is_empty() {
        LockFile::default()
    } else {
        serde_json::from_str(&text).expect("parse")
    };
    let mut state = RegistryState::from_allocations(table.allocations);
    for change in op(&state) {
        state.apply(&change);
    }
    let out = LockFile {
        allocations: state.allocations().cloned().collect(),
    };
    let json = serde_json::to_vec_pretty(&out).expect("json");
    file.seek(SeekFrom::Start(0)).expect("seek");
    file.set_len(0).expect("truncate");
    file.write_all(&json).expect("write");
    file.sync_data().expect("fsync");
    drop(file); // unlocks
}

fn seed_setup(dir: &Path, size: usize) -> PathBuf {
    let path = dir.join("pods.json");
    let table = LockFile {
        allocations: (0..size)
            .map(|i| allocation(&format!("pod-{i}"), &format!("/base/{i}")))
            .collect(),
    };
    let mut f = File::create(&path).expect("create");
    f.write_all(&serde_json::to_vec_pretty(&table).expect("json"))
        .expect("write");
    f.sync_all().expect("fsync");
    path
}

fn replaydb_setup(dir: &Path, size: usize) -> Registry {
    let fast = Options::default().durability(Durability::Buffered {
        interval: Duration::from_millis(100),
    });
    {
        let reg = Registry::open(dir, fast, vec![]).expect("open");
        for i in 0..size {
            let a = allocation(&format!("pod-{i}"), &format!("/base/{i}"));
            reg.register_pod(
                &a.pod_name,
                a.pid,
                &a.socket,
                a.allow,
                vec![],
                a.segment_id.expect("segment"),
            )
            .expect("register")
            .keep();
        }
    }
    Registry::open(dir, Options::default(), vec![]).expect("open")
}

/// Runs `changes` changes on each of `threads` threads (register, then
/// release, alternating) and returns the wall time per change.
fn run(
    threads: usize,
    changes: usize,
    change: Arc<dyn Fn(usize, usize) + Send + Sync>,
) -> Duration {
    common::concurrent(threads, (threads * changes) as u64, move |t, i| {
        change(t, i as usize)
    })
}

/// Blocks the append and replaydb alternate in, per run (each an even
/// number of changes: a registration and its release).
const BLOCKS: usize = 20;

fn main() {
    if std::env::args().any(|a| a == "--test" || a == "--list") {
        return;
    }
    let runs: usize = std::env::var("REPLAYDB_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    println!(
        "| allocations | registrants | plain durable append | replaydb per change | vs append | seed pods.json per change | seed / replaydb |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    let sizes: Vec<usize> = std::env::var("REPLAYDB_BENCH_SIZES")
        .ok()
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![100, 1_000, 10_000]);
    for size in sizes {
        let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tmp");
        let seed_path = seed_setup(tmp.path(), size);
        let reg = replaydb_setup(&tmp.path().join("replaydb"), size);
        for threads in [1usize, 8] {
            // Enough changes for a stable figure, few enough for the seed.
            let seed_changes = match size {
                100 => 40,
                1_000 => 20,
                _ => 6,
            };
            // replaydb's side: enough for the figure to settle.
            let changes = if threads == 1 { 1_000 } else { 400 };
            let mut seed_times = Vec::new();
            let mut ours = Vec::new();
            let mut plain = Vec::new();
            // An event the size of a registration's.
            let event = vec![0x5a_u8; 300];
            // Run 0 warms up (caches, the first commands after open) and
            // is not counted.
            for run_no in 0..=runs {
                let (db, event) = (reg.db().expect("embedded").clone(), event.clone());
                let plain_change: Arc<dyn Fn(usize, usize) + Send + Sync> =
                    Arc::new(move |t, _| {
                        db.append(&format!("plain-{t}"), ExpectedVersion::Any, &[&event])
                            .expect("append");
                    });
                let reg = reg.clone();
                let ours_change: Arc<dyn Fn(usize, usize) + Send + Sync> = Arc::new(move |t, i| {
                    let name = format!("new-{run_no}-{t}-{}", i / 2);
                    if i % 2 == 0 {
                        let a = allocation(&name, &format!("/new/{run_no}/{t}/{i}"));
                        reg.register_pod(
                            &name,
                            a.pid,
                            &a.socket,
                            a.allow,
                            vec![],
                            uuid::Uuid::new_v4(),
                        )
                        .expect("register")
                        .keep();
                    } else {
                        reg.release_pod(&name).expect("release");
                    }
                });
                // The append and replaydb in alternating blocks: this
                // disk's fsync time drifts by tens of percent over seconds,
                // and blocks this short see the same drift.
                let (mut p, mut o) = (Duration::ZERO, Duration::ZERO);
                for block in 0..BLOCKS {
                    let per_block = changes / BLOCKS;
                    if block % 2 == 0 {
                        p += run(threads, per_block, plain_change.clone());
                        o += run(threads, per_block, ours_change.clone());
                    } else {
                        o += run(threads, per_block, ours_change.clone());
                        p += run(threads, per_block, plain_change.clone());
                    }
                }
                plain.push(p / BLOCKS as u32);
                ours.push(o / BLOCKS as u32);
            }
            // The seed after: interleaved, its whole-file rewrites and
            // fsyncs slowed what ran next (by 20-30% here, and not equally
            // for both of the others).
            for run_no in 0..=runs {
                let path = seed_path.clone();
                let seed: Arc<dyn Fn(usize, usize) + Send + Sync> = Arc::new(move |t, i| {
                    let name = format!("new-{run_no}-{t}-{}", i / 2);
                    if i % 2 == 0 {
                        let a = allocation(&name, &format!("/new/{run_no}/{t}/{i}"));
                        let r = Registration {
                            name: a.pod_name,
                            pid: a.pid,
                            socket: a.socket,
                            allow: a.allow,
                            deny: vec![],
                            segment: uuid::Uuid::new_v4(),
                        };
                        seed_change(&path, move |s| {
                            decide::register(s, r, &decide::process_alive).expect("register")
                        });
                    } else {
                        seed_change(&path, move |s| decide::release(s, &name).expect("release"));
                    }
                });
                seed_times.push(run(threads, seed_changes, seed));
            }
            let counted = |mut v: Vec<Duration>| median(v.split_off(1));
            let (s, o, p) = (counted(seed_times), counted(ours), counted(plain));
            println!(
                "| {size} | {threads} | {:.3} ms | {:.3} ms | {:.2}x | {:.3} ms | {:.1}x |",
                p.as_secs_f64() * 1e3,
                o.as_secs_f64() * 1e3,
                o.as_secs_f64() / p.as_secs_f64(),
                s.as_secs_f64() * 1e3,
                s.as_secs_f64() / o.as_secs_f64()
            );
        }
    }
}
