//! A user's own view, registered at open, snapshotted and recovered.
//!
//! `StreamStats` keeps, per stream, how many events it has and its last
//! event's data. Run it twice: the second run recovers the view from the
//! snapshot plus the log after it.
//!
//! ```sh
//! cargo run --example custom_view -- /tmp/custom-view-db
//! ```

use std::any::Any;
use std::collections::BTreeMap;

use replaydb::{Db, EventRef, ExpectedVersion, Options, Result, View, ViewReader, ViewWriter};

/// Per stream: the event count and the last event's data.
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

    fn apply(&mut self, e: &EventRef<'_>) {
        let entry = self.streams.entry(e.stream.to_string()).or_default();
        entry.0 += 1;
        entry.1 = e.data.to_vec();
    }

    fn reset(&mut self) {
        self.streams.clear();
    }

    /// One table, `by_stream`: stream name to `count (u64 LE) ++ last data`.
    fn save(&self, out: &mut ViewWriter<'_>) -> Result<()> {
        for (stream, (count, last)) in &self.streams {
            let mut value = count.to_le_bytes().to_vec();
            value.extend_from_slice(last);
            out.put("by_stream", stream.as_bytes(), &value)?;
        }
        Ok(())
    }

    fn load(&mut self, input: &ViewReader<'_>) -> Result<()> {
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

    fn clone_view(&self) -> Box<dyn View> {
        Box::new(self.clone())
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
    match &report.snapshot {
        Some((path, lsn)) => println!(
            "recovered from snapshot {} (LSN {lsn}) plus {} events of log",
            path.display(),
            report.replayed_events
        ),
        None => println!(
            "no snapshot yet: replayed {} events",
            report.replayed_events
        ),
    }
    for i in 0..5 {
        db.append(
            &format!("sensor-{}", i % 2),
            ExpectedVersion::Any,
            &[format!("reading {i}").into_bytes()],
        )?;
    }
    let snap = db.snapshot()?;
    println!(
        "snapshot at LSN {} in {}",
        snap.covered_lsn,
        snap.path.display()
    );
    db.append(
        "sensor-0",
        ExpectedVersion::Any,
        &[b"after the snapshot".to_vec()],
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
