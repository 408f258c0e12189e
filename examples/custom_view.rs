//! A user's own view, registered at open, kept in the store and recovered.
//!
//! `StreamStats` keeps, per stream, how many events it has and its last
//! event's data. Run it twice: the second run loads the view from the
//! store's checkpoint plus the log after it.
//!
//! ```sh
//! cargo run --example custom_view -- /tmp/custom-view-db
//! ```

use std::any::Any;
use std::collections::BTreeMap;

use replaydb::{Db, EventRef, ExpectedVersion, Options, Result, View, ViewTables, ViewTablesRead};

/// Per stream: the event count and the last event's data, in memory and
/// in the view's table `by_stream` (stream name to `count (u64 LE) ++ last
/// data`), one row written per event applied.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamStats {
    pub streams: BTreeMap<String, (u64, Vec<u8>)>,
}

impl View for StreamStats {
    fn name(&self) -> &str {
        "stream_stats"
    }

    fn schema_version(&self) -> u32 {
        1
    }

    fn apply(&mut self, e: &EventRef<'_>, tables: &mut ViewTables<'_>) -> Result<()> {
        let entry = self.streams.entry(e.stream.to_string()).or_default();
        entry.0 += 1;
        entry.1 = e.data.to_vec();
        let mut value = entry.0.to_le_bytes().to_vec();
        value.extend_from_slice(&entry.1);
        tables.put("by_stream", e.stream.as_bytes(), &value)
    }

    fn reset(&mut self) {
        self.streams.clear();
    }

    fn load(&mut self, input: &ViewTablesRead<'_>) -> Result<()> {
        self.streams.clear();
        input.for_each("by_stream", |key, value| {
            let (count, last) = value
                .split_at_checked(8)
                .ok_or_else(|| input.bad_value("by_stream", key))?;
            let count = u64::from_le_bytes(
                count
                    .try_into()
                    .map_err(|_| input.bad_value("by_stream", key))?,
            );
            self.streams.insert(
                String::from_utf8_lossy(key).into_owned(),
                (count, last.to_vec()),
            );
            Ok(())
        })
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

fn main() -> Result<()> {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "./custom-view-data".into());
    let db = Db::open_with_views(
        &dir,
        Options::default(),
        vec![Box::new(StreamStats::default())],
    )?;
    let report = db.recovery_report();
    println!(
        "recovered from the store's checkpoint at LSN {} plus {} events of log",
        report.checkpoint_lsn, report.replayed_events
    );
    for i in 0..5 {
        db.append(
            &format!("sensor-{}", i % 2),
            ExpectedVersion::Any,
            &[format!("reading {i}").into_bytes()],
        )?;
    }
    let done = db.checkpoint()?;
    println!("checkpoint at LSN {}", done.covered_lsn);
    db.append(
        "sensor-0",
        ExpectedVersion::Any,
        &[b"after the checkpoint".to_vec()],
    )?;
    let stats = db
        .view(|v: &StreamStats| v.streams.clone())?
        .expect("registered");
    println!("as of LSN {}:", stats.lsn);
    for (stream, (count, last)) in &stats.value {
        println!(
            "  {stream}: {count} events, last {:?}",
            String::from_utf8_lossy(last)
        );
    }
    Ok(())
}
