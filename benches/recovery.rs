//! Reopen time of a database holding 1 M events, after a clean close and
//! after a crash, in the same run.
//!
//! ```sh
//! cargo bench --bench recovery
//! ```
//!
//! Both databases hold the same 1 M 100-byte events over 1 000 streams and
//! register the same view (events and bytes per stream). After a clean
//! close (checkpoints every 100 000 records, as by default) the last
//! checkpoint covers everything: open checks the store's meta and the
//! log kept since the previous checkpoint, and replays nothing. The crash image is a copy of the
//! directory taken while the database was open with no checkpoint since
//! the start (checkpoints off): open scans the whole log (36 segments)
//! and replays what the store's recovered state does not hold.

use std::collections::HashMap;
use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use criterion::{Criterion, Throughput};
use replaydb::{
    Db, Durability, EventRef, ExpectedVersion, Options, View, ViewTables, ViewTablesRead,
};

const EVENTS: u64 = 1_000_000;
const STREAMS: u64 = 1_000;

/// Per stream: events and bytes.
#[derive(Clone, Default)]
struct PerStream(HashMap<String, (u64, u64)>);

impl View for PerStream {
    fn name(&self) -> &str {
        "per_stream"
    }
    fn schema_version(&self) -> u32 {
        1
    }
    fn apply(&mut self, e: &EventRef<'_>, tables: &mut ViewTables<'_>) -> replaydb::Result<()> {
        let v = match self.0.get_mut(e.stream) {
            Some(v) => {
                *v = (v.0 + 1, v.1 + e.data.len() as u64);
                *v
            }
            None => {
                let v = (1, e.data.len() as u64);
                self.0.insert(e.stream.to_string(), v);
                v
            }
        };
        let mut value = v.0.to_le_bytes().to_vec();
        value.extend_from_slice(&v.1.to_le_bytes());
        tables.put("per_stream", e.stream.as_bytes(), &value)
    }
    fn reset(&mut self) {
        self.0.clear()
    }
    fn load(&mut self, input: &ViewTablesRead<'_>) -> replaydb::Result<()> {
        input.for_each("per_stream", |k, v| {
            let n = v
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_le_bytes);
            let b = v
                .get(8..16)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_le_bytes);
            let (Some(n), Some(b)) = (n, b) else {
                return Err(input.bad_value("per_stream", k));
            };
            self.0
                .insert(String::from_utf8_lossy(k).into_owned(), (n, b));
            Ok(())
        })
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

fn options(checkpoint_every_records: u64) -> Options {
    Options::default()
        .durability(Durability::Buffered {
            interval: Duration::from_millis(100),
        })
        .segment_bytes_max(Some(4 << 20))
        .checkpoint_every_records(checkpoint_every_records)
        .checkpoint_every_bytes(0)
}

fn open(dir: &Path, opts: &Options) -> Db {
    Db::open_with_views(dir, opts.clone(), vec![Box::new(PerStream::default())]).expect("open")
}

fn fill(db: &Db) {
    let names: Vec<String> = (0..STREAMS).map(|s| format!("stream-{s}")).collect();
    let event = vec![42u8; 100];
    for i in 0..EVENTS {
        db.append(
            &names[(i % STREAMS) as usize],
            ExpectedVersion::Any,
            &[&event],
        )
        .expect("append");
    }
}

/// Copies a directory tree, as a crash would leave it.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else if entry.file_name() != "LOCK" {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

fn bench_recovery(c: &mut Criterion) {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tmp");
    let clean = tmp.path().join("closed-cleanly");
    let crashed = tmp.path().join("crash-image");
    // The clean one with checkpoints as by default (every 100 000 records),
    // the crash image with none since the start.
    let opts = options(100_000);
    let no_checkpoints = options(0).checkpoint_every(None);
    {
        let db = open(&clean, &opts);
        fill(&db);
    }
    let source = tmp.path().join("crash-source");
    {
        let db = open(&source, &no_checkpoints);
        fill(&db);
        db.sync().expect("sync");
        copy_dir(&source, &crashed);
    }
    for dir in [&clean, &crashed] {
        let image = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tmp");
        copy_dir(dir, image.path());
        let s = open(image.path(), &opts).stats().expect("stats");
        eprintln!(
            "{}: WAL {} bytes in {} segments from LSN {}, store {} bytes at checkpoint LSN {}",
            dir.display(),
            s.wal_bytes,
            s.segments,
            s.log_first_lsn,
            s.store_bytes,
            s.checkpoint_lsn
        );
    }
    let mut g = c.benchmark_group("reopen_1m_events");
    g.throughput(Throughput::Elements(EVENTS));
    g.sample_size(10);
    g.bench_function("after_a_clean_close", |b| {
        b.iter(|| {
            let db = open(&clean, &opts);
            assert_eq!(db.recovery_report().replayed_events, 0);
            black_box(db)
        })
    });
    g.bench_function("after_a_crash", |b| {
        // Timed: the open alone, not the copy before it nor the close (and
        // its checkpoint) after it. What redb recovers of the store
        // decides how much of the log is replayed.
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let image = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tmp");
                copy_dir(&crashed, image.path());
                let t = std::time::Instant::now();
                let db = open(image.path(), &opts);
                total += t.elapsed();
                black_box(db.recovery_report().replayed_events);
                drop(db);
            }
            total
        })
    });
    g.finish();
}

criterion::criterion_group!(benches, bench_recovery);
criterion::criterion_main!(benches);
