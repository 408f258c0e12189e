//! Neither the log nor the store grows forever: after a million updates
//! over a thousand keys, each keeping its last ten events, and a
//! checkpoint, the WAL holds no more than the tail since the previous
//! checkpoint (plus a segment of slack either side), and the store's
//! history only what retention keeps.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use replaydb::{
    Db, Durability, EventRef, ExpectedVersion, Options, Retention, View, ViewTables, ViewTablesRead,
};

/// Key to last value: the live state.
#[derive(Clone, Default)]
struct LastValue(HashMap<u16, u64>);

impl View for LastValue {
    fn name(&self) -> &str {
        "last_value"
    }
    fn schema_version(&self) -> u32 {
        1
    }
    fn apply(&mut self, e: &EventRef<'_>, tables: &mut ViewTables<'_>) -> replaydb::Result<()> {
        if !e.stream.starts_with("key-") {
            return Ok(());
        }
        if let (Some(k), Some(v)) = (e.data.get(..2), e.data.get(2..10)) {
            self.0.insert(
                u16::from_le_bytes(k.try_into().unwrap()),
                u64::from_le_bytes(v.try_into().unwrap()),
            );
            tables.put("kv", k, v)?;
        }
        Ok(())
    }
    fn reset(&mut self) {
        self.0.clear()
    }
    fn load(&mut self, input: &ViewTablesRead<'_>) -> replaydb::Result<()> {
        input.for_each("kv", |k, v| {
            let key = u16::from_le_bytes(k.try_into().map_err(|_| input.bad_value("kv", k))?);
            let value = u64::from_le_bytes(v.try_into().map_err(|_| input.bad_value("kv", k))?);
            self.0.insert(key, value);
            Ok(())
        })
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

const UPDATES: u64 = 1_000_000;
const KEYS: u64 = 1_000;
const PER_BATCH: u64 = 10;

#[test]
fn a_million_updates_over_a_thousand_keys_leave_a_bounded_log_and_store() {
    let tmp = tempfile::tempdir().unwrap();
    let segment_bytes_max = 256 * 1024;
    let checkpoint_every_records = 2_000;
    let opts = Options::default()
        .durability(Durability::Buffered {
            interval: Duration::from_millis(50),
        })
        .segment_bytes_max(Some(segment_bytes_max))
        .checkpoint_every_records(checkpoint_every_records)
        .checkpoint_every_bytes(0);
    let db = Db::open_with_views(
        tmp.path(),
        opts.clone(),
        vec![Box::new(LastValue::default())],
    )
    .unwrap();
    for key in 0..KEYS {
        db.set_retention(&format!("key-{key}"), Retention::max_count(PER_BATCH))
            .unwrap();
    }
    // Records differ only by the stream name's length ("key-0" to "key-999").
    let header_bytes = db.stats().unwrap().wal_bytes;
    let mut record_bytes_max = 0u64;
    for n in 0..UPDATES / PER_BATCH {
        let key = (n % KEYS) as u16;
        let batch: Vec<Vec<u8>> = (0..PER_BATCH)
            .map(|i| {
                let mut e = key.to_le_bytes().to_vec();
                e.extend_from_slice(&(n * PER_BATCH + i).to_le_bytes());
                e
            })
            .collect();
        db.append(&format!("key-{key}"), ExpectedVersion::Any, &batch)
            .unwrap();
        if n == 0 {
            record_bytes_max = db.stats().unwrap().wal_bytes - header_bytes + 3;
        }
    }
    let written_bytes = (UPDATES / PER_BATCH) * (record_bytes_max - 3);
    db.checkpoint().unwrap();
    let stats = db.stats().unwrap();
    // The bound: what the previous checkpoint does not cover (at most two
    // checkpoint intervals of records) plus one partly covered segment and
    // the tail's header.
    let bound = 2 * checkpoint_every_records * record_bytes_max + 2 * segment_bytes_max;
    eprintln!(
        "wrote {written_bytes} WAL bytes; {} remain in {} segments (bound {bound}); store {} bytes, {} history batches",
        stats.wal_bytes, stats.segments, stats.store_bytes, stats.history_batches
    );
    assert!(
        stats.wal_bytes <= bound,
        "WAL holds {} bytes, bound {bound}",
        stats.wal_bytes
    );
    assert!(
        stats.wal_bytes * 5 < written_bytes,
        "truncation removed most of the log"
    );
    // One batch of ten per key (and the retention events themselves).
    assert!(
        stats.history_batches <= 2 * KEYS,
        "the history keeps what retention says: {stats:?}"
    );
    assert!(
        stats.store_bytes < written_bytes,
        "the store is bounded by retention: {stats:?}"
    );
    let on_disk: u64 = common::segments(tmp.path())
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert!(
        on_disk <= bound + segment_bytes_max,
        "files on disk: {on_disk}"
    );

    // The live state is whole, and survives reopen.
    let expect = |db: &Db| {
        let state = db.view(|v: &LastValue| v.0.clone()).unwrap().unwrap().value;
        assert_eq!(state.len() as u64, KEYS);
        for (k, v) in state {
            let last_batch = (UPDATES / PER_BATCH - KEYS) + u64::from(k);
            assert_eq!(v, last_batch * PER_BATCH + PER_BATCH - 1, "key {k}");
        }
    };
    expect(&db);
    drop(db);
    let db = Db::open_with_views(tmp.path(), opts, vec![Box::new(LastValue::default())]).unwrap();
    expect(&db);
}
