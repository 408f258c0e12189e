//! The KV view beside the seed's layout re-created faithfully (a
//! directory per bucket, a file per key written as a temporary file
//! renamed into place, with an fsync of the file and the directory, and
//! without), at 10 k keys: put, get, entries; replaydb with 16
//! concurrent putters; and what 1 M keys cost in resident memory.
//!
//! ```sh
//! cargo bench --bench kv
//! REPLAYDB_BENCH_KEYS=100000 cargo bench --bench kv   # a smaller memory run
//! ```
//!
//! Every workload runs in ten short turns, interleaved, after a warm-up
//! turn, so a change in the disk hits each alike; per operation, the
//! median over the turns. The raw `pwrite` + `fdatasync` loop of the same
//! run is the floor a durable put is measured against.

use std::fs::File;
use std::hint::black_box;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use replaydb::kv::{Bucket, Key, KvStore};

mod common;
use common::{concurrent, mb, median, raw_sync_loop, rss_bytes};
use replaydb::{Durability, Options};

const KEYS: usize = 10_000;
const WRITERS: usize = 16;

fn value(i: usize) -> Vec<u8> {
    format!(
        "{{\"instance\":{i},\"endpoint\":\"ns/component/generate\",\"addr\":\"10.0.0.{}:{}\"}}",
        i % 255,
        9000 + i % 1000
    )
    .into_bytes()
}

fn key(i: usize) -> Key {
    Key::new(format!("ns/component/generate/{i:016x}"))
}

/// The seed's put: a temporary file written, renamed over the key's file;
/// with `sync`, the file synced before the rename and the directory after.
fn seed_put(dir: &Path, k: &Key, v: &[u8], sync: bool, n: u64) {
    let tmp = dir.join(format!(".tmp_{n:016x}"));
    let mut f = File::create(&tmp).expect("create");
    f.write_all(v).expect("write");
    if sync {
        f.sync_all().expect("sync");
    }
    drop(f);
    std::fs::rename(&tmp, dir.join(k.url_safe())).expect("rename");
    if sync {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .expect("sync dir");
    }
}

fn seed_get(dir: &Path, k: &Key) -> Option<Vec<u8>> {
    std::fs::read(dir.join(k.url_safe())).ok()
}

/// The seed's `entries`: every file of the directory read, keys decoded.
fn seed_entries(dir: &Path) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(dir).expect("read_dir") {
        let e = e.expect("entry");
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(".tmp_") {
            continue;
        }
        black_box(Key::from_url_safe(&name));
        black_box(std::fs::read(e.path()).expect("read"));
        n += 1;
    }
    n
}

fn fill(bucket: &Bucket, n: usize) {
    std::thread::scope(|s| {
        for t in 0..WRITERS {
            s.spawn(move || {
                for i in (t..n).step_by(WRITERS) {
                    bucket.insert(&key(i), value(i), 1).expect("insert");
                }
            });
        }
    });
}

type Workload = Box<dyn Fn(u64) -> Duration>;

fn side_by_side(root: &Path) {
    let store = KvStore::open(root.join("db"), Options::default(), vec![]).expect("open");
    let bucket = store
        .get_or_create_bucket("v1/instances", None)
        .expect("bucket");
    fill(&bucket, KEYS);
    let seed = root.join("seed/v1/instances");
    std::fs::create_dir_all(&seed).expect("seed dir");
    for i in 0..KEYS {
        seed_put(&seed, &key(i), &value(i), false, i as u64);
    }
    let db = store.db().expect("embedded").clone();
    let fsyncs = |db: &replaydb::Db| db.stats().expect("stats").fsyncs_since_open;
    let mut sixteen = (0u64, 0u64); // (puts, fsyncs)
    let counter = Arc::new(std::sync::atomic::AtomicU64::new(1 << 40));
    let workloads: Vec<(&str, Workload)> = vec![
        ("raw pwrite + fdatasync loop", {
            let p = root.join("raw");
            Box::new(move |n| raw_sync_loop(&p, n))
        }),
        ("replaydb put, durable, 1 writer", {
            let b = bucket.clone();
            Box::new(move |n| {
                let t = Instant::now();
                for i in 0..n as usize {
                    b.insert(&key(i % KEYS), value(i), 1).expect("insert");
                }
                t.elapsed() / n as u32
            })
        }),
        (
            "seed put, temp file + rename + fsync file and dir, 1 writer",
            {
                let (s, c) = (seed.clone(), counter.clone());
                Box::new(move |n| {
                    let t = Instant::now();
                    for i in 0..n as usize {
                        let m = c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        seed_put(&s, &key(i % KEYS), &value(i), true, m);
                    }
                    t.elapsed() / n as u32
                })
            },
        ),
        ("seed put, temp file + rename, no fsync, 1 writer", {
            let (s, c) = (seed.clone(), counter.clone());
            Box::new(move |n| {
                let t = Instant::now();
                for i in 0..n as usize {
                    let m = c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    seed_put(&s, &key(i % KEYS), &value(i), false, m);
                }
                t.elapsed() / n as u32
            })
        }),
        ("replaydb put, durable, 16 writers", {
            let b = bucket.clone();
            Box::new(move |n| {
                let b = b.clone();
                concurrent(WRITERS, n * 4, move |t, i| {
                    let k = (t * 613 + i as usize * 7) % KEYS;
                    b.insert(&key(k), value(k), 1).expect("insert");
                })
            })
        }),
        ("seed put, fsync file and dir, 16 writers", {
            let (s, c) = (seed.clone(), counter.clone());
            Box::new(move |n| {
                let (s, c) = (s.clone(), c.clone());
                concurrent(WRITERS, n, move |t, i| {
                    let k = (t * 613 + i as usize * 7) % KEYS;
                    let m = c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    seed_put(&s, &key(k), &value(k), true, m);
                })
            })
        }),
        ("replaydb get", {
            let b = bucket.clone();
            Box::new(move |n| {
                let t = Instant::now();
                for i in 0..n as usize * 20 {
                    black_box(b.get(&key(i * 7919 % KEYS)).expect("get"));
                }
                t.elapsed() / (n as u32 * 20)
            })
        }),
        ("seed get (read the key's file)", {
            let s = seed.clone();
            Box::new(move |n| {
                let t = Instant::now();
                for i in 0..n as usize * 20 {
                    black_box(seed_get(&s, &key(i * 7919 % KEYS)));
                }
                t.elapsed() / (n as u32 * 20)
            })
        }),
        ("replaydb entries() of 10 k keys, every entry visited", {
            let b = bucket.clone();
            Box::new(move |n| {
                let calls = (n / 10).max(1) as u32;
                let t = Instant::now();
                for _ in 0..calls {
                    let entries = b.entries().expect("entries");
                    let bytes: usize = entries.iter().map(|(k, v)| k.len() + v.len()).sum();
                    assert_eq!(entries.len(), KEYS);
                    black_box(bytes);
                }
                t.elapsed() / calls
            })
        }),
        (
            "seed entries() of 10 k keys (read_dir + read every file)",
            {
                let s = seed.clone();
                Box::new(move |n| {
                    let calls = (n / 10).max(1) as u32;
                    let t = Instant::now();
                    for _ in 0..calls {
                        assert!(seed_entries(&s) >= KEYS);
                    }
                    t.elapsed() / calls
                })
            },
        ),
        (
            "replaydb entries().to_map() of 10 k keys (an owned copy)",
            {
                let b = bucket.clone();
                Box::new(move |n| {
                    let calls = (n / 10).max(1) as u32;
                    let t = Instant::now();
                    for _ in 0..calls {
                        assert_eq!(b.entries().expect("entries").to_map().len(), KEYS);
                    }
                    t.elapsed() / calls
                })
            },
        ),
    ];
    let turns = 10;
    let per_turn = 100u64;
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); workloads.len()];
    for turn in 0..=turns {
        for (k, (name, w)) in workloads.iter().enumerate() {
            let (before, puts_before) =
                (fsyncs(&db), db.stats().expect("stats").appends_since_open);
            let t = w(per_turn);
            if turn > 0 {
                times[k].push(t);
                if name.starts_with("replaydb put, durable, 16") {
                    sixteen.0 += db.stats().expect("stats").appends_since_open - puts_before;
                    sixteen.1 += fsyncs(&db) - before;
                }
            }
        }
    }
    let m: Vec<Duration> = times.into_iter().map(median).collect();
    println!("| workload | per operation | operations/s |");
    println!("|---|---:|---:|");
    for ((name, _), d) in workloads.iter().zip(&m) {
        println!(
            "| {name} | {:.1} µs | {:.0} |",
            d.as_secs_f64() * 1e6,
            1.0 / d.as_secs_f64()
        );
    }
    let ratio = |a: usize, b: usize| m[a].as_secs_f64() / m[b].as_secs_f64();
    println!(
        "durable put vs the raw loop: {:.2}x its rate; 16 writers: {:.1} puts per fsync; entries (every entry visited): {:.0}x the seed's, as an owned copy {:.0}x; durable put {:.1}x the seed's durable put",
        ratio(0, 1),
        sixteen.0 as f64 / sixteen.1.max(1) as f64,
        ratio(9, 8),
        ratio(9, 10),
        ratio(2, 1)
    );
}

fn memory(root: &Path) {
    let n: usize = std::env::var("REPLAYDB_BENCH_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let options = Options::default().durability(Durability::Buffered {
        interval: Duration::from_millis(50),
    });
    let store = KvStore::open(root.join("memory"), options, vec![]).expect("open");
    let bucket = store
        .get_or_create_bucket("v1/instances", None)
        .expect("bucket");
    let empty = rss_bytes();
    let t = Instant::now();
    fill(&bucket, n);
    store.db().expect("embedded").sync().expect("sync");
    let written = t.elapsed();
    // A read waits for the store to apply what was acknowledged; one key's
    // read leaves the store's cache as the writes left it.
    assert!(bucket.get(&key(0)).expect("get").is_some());
    let applied = t.elapsed();
    let filled = rss_bytes();
    let count_t = Instant::now();
    let count = bucket.count("").expect("count");
    let count_ms = count_t.elapsed().as_secs_f64() * 1e3;
    println!(
        "{n} keys written in {:.1} s by {WRITERS} writers (Buffered), applied in {:.1} s; resident memory grew by {:.0} MB, by {:.0} MB once count() had read every key (the store's cache filled); count() of them {count_ms:.0} ms",
        written.as_secs_f64(),
        applied.as_secs_f64(),
        mb(filled.saturating_sub(empty)),
        mb(rss_bytes().saturating_sub(empty)),
    );
    assert_eq!(count, n as u64);
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tmp");
    if std::env::args().any(|a| a == "--test") {
        let store = KvStore::open(tmp.path().join("t"), Options::default(), vec![]).expect("open");
        let b = store.get_or_create_bucket("b", None).expect("bucket");
        fill(&b, 100);
        assert_eq!(b.entries().expect("entries").len(), 100);
        return;
    }
    side_by_side(tmp.path());
    memory(tmp.path());
}
