//! Reopen time of a database holding 1 M events, with and without a
//! recent snapshot, in the same run.
//!
//! ```sh
//! cargo bench --bench recovery
//! ```
//!
//! Both databases hold the same 1 M 100-byte events over 1 000 streams and
//! register the same view (events and bytes per stream). Without a
//! snapshot, open checks every record and replays all of them into the
//! view. With snapshots every 20 000 records (4 MiB segments), the log
//! was compacted behind the older generation: open loads the newest
//! snapshot and checks and replays only the tail.

use std::collections::HashMap;
use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use criterion::{Criterion, Throughput};
use replaydb::{Db, Durability, EventRef, ExpectedVersion, Options, View, ViewReader, ViewWriter};

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
    fn apply(&mut self, e: &EventRef<'_>) {
        match self.0.get_mut(e.stream) {
            Some(v) => *v = (v.0 + 1, v.1 + e.data.len() as u64),
            None => {
                self.0
                    .insert(e.stream.to_string(), (1, e.data.len() as u64));
            }
        }
    }
    fn reset(&mut self) {
        self.0.clear()
    }
    fn save(&self, out: &mut ViewWriter<'_>) -> replaydb::Result<()> {
        for (k, (n, b)) in &self.0 {
            let mut v = n.to_le_bytes().to_vec();
            v.extend_from_slice(&b.to_le_bytes());
            out.put("per_stream", k.as_bytes(), &v)?;
        }
        Ok(())
    }
    fn load(&mut self, input: &ViewReader<'_>) -> replaydb::Result<()> {
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
    fn clone_view(&self) -> Box<dyn View> {
        Box::new(self.clone())
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

fn options(checkpoint_every_records: u64) -> Options {
    Options {
        durability: Durability::Buffered {
            interval: Duration::from_millis(100),
        },
        segment_bytes_max: Some(4 << 20),
        checkpoint_every_records,
        checkpoint_every_bytes: 0,
        ..Options::default()
    }
}

fn open(dir: &Path, opts: &Options) -> Db {
    Db::open_with_views(dir, opts.clone(), vec![Box::new(PerStream::default())]).expect("open")
}

fn fill(dir: &Path, opts: &Options) {
    let db = open(dir, opts);
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

fn bench_recovery(c: &mut Criterion) {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tmp");
    let without = tmp.path().join("without-snapshot");
    let with = tmp.path().join("with-snapshot");
    let (opts_without, opts_with) = (options(0), options(20_000));
    fill(&without, &opts_without);
    fill(&with, &opts_with);
    {
        let db = open(&with, &opts_with);
        let s = db.stats().expect("stats");
        eprintln!(
            "with snapshots: WAL {} bytes in {} segments from LSN {}, snapshot at LSN {} ({} bytes)",
            s.wal_bytes, s.segments, s.first_lsn, s.snapshot_lsn, s.snapshot_bytes
        );
        let db = open(&without, &opts_without);
        let s = db.stats().expect("stats");
        eprintln!(
            "without: WAL {} bytes in {} segments",
            s.wal_bytes, s.segments
        );
    }
    let mut g = c.benchmark_group("reopen_1m_events");
    g.throughput(Throughput::Elements(EVENTS));
    g.sample_size(10);
    g.bench_function("without_snapshot", |b| {
        b.iter(|| {
            let db = open(&without, &opts_without);
            assert_eq!(db.recovery_report().replayed_events, EVENTS);
            black_box(db)
        })
    });
    g.bench_function("with_recent_snapshot", |b| {
        b.iter(|| {
            let db = open(&with, &opts_with);
            assert!(db.recovery_report().snapshot.is_some());
            black_box(db)
        })
    });
    g.finish();
}

criterion::criterion_group!(benches, bench_recovery);
criterion::criterion_main!(benches);
