//! One scenario (appends that roll segments, a checkpoint that truncates
//! the log, more appends, a close that checkpoints again) behaves the same
//! on real files and on the simulated disk, and a power cut before *each*
//! of its I/O calls in turn, the store's included, with what was pending
//! dropped, kept or torn, loses nothing acknowledged and leaves a database
//! that verifies and opens with its whole history.

use std::path::Path;
use std::sync::Arc;

use replaydb::storage::{OsStorage, SimDisk, Storage};
use replaydb::{Db, ExpectedVersion, Options};

fn options(storage: Arc<dyn Storage>) -> Options {
    // Every I/O call in one order: the n-th is the same call each run.
    Options::default()
        .segment_bytes_max(Some(replaydb::SEGMENT_BYTES_MIN))
        .checkpoint_every_records(0)
        .synchronous_apply(true)
        .storage(storage)
}

type Events = Vec<(String, Vec<u8>)>;

/// Runs the scenario until it is done or an operation fails; returns the
/// events acknowledged, in order, and those of the append in flight when
/// one failed.
fn scenario(dir: &Path, storage: Arc<dyn Storage>) -> (Events, Events) {
    let mut acked = Vec::new();
    let Ok(db) = Db::open(dir, options(storage)) else {
        return (acked, Vec::new());
    };
    for i in 0..30u32 {
        let stream = format!("s{}", i % 3);
        let events = [format!("event {i} {:>150}", ""), format!("and {i}")];
        let batch: Events = events
            .iter()
            .map(|e| (stream.clone(), e.clone().into_bytes()))
            .collect();
        if db.append(&stream, ExpectedVersion::Any, &events).is_err() {
            return (acked, batch);
        }
        acked.extend(batch);
        if i == 20 && db.checkpoint().is_err() {
            return (acked, Vec::new());
        }
    }
    (acked, Vec::new())
}

fn check(dir: &Path, storage: Arc<dyn Storage>, acked: &Events, in_flight: &Events, context: &str) {
    replaydb::verify(dir, &options(storage.clone()))
        .unwrap_or_else(|e| panic!("{context}: verify: {e}"));
    let db = Db::open(dir, options(storage)).unwrap_or_else(|e| panic!("{context}: open: {e}"));
    // The log: every acknowledged event, then all of the batch in flight
    // or none of it.
    let last = db.last_lsn() as usize;
    let expected: Events = if last == acked.len() + in_flight.len() && !in_flight.is_empty() {
        acked.iter().chain(in_flight).cloned().collect()
    } else {
        assert_eq!(
            last,
            acked.len(),
            "{context}: the log ends at LSN {last}, {} events were acknowledged, {} in flight",
            acked.len(),
            in_flight.len()
        );
        acked.clone()
    };
    // The whole history, however much of the log a checkpoint removed.
    let first = 1;
    let events = db.read(first as u64, usize::MAX).unwrap();
    assert_eq!(
        events.len(),
        last + 1 - first,
        "{context}: events {first}..={last}"
    );
    for (e, lsn) in events.iter().zip(first..) {
        let (stream, data) = &expected[lsn - 1];
        assert_eq!(
            (e.lsn as usize, &e.stream, &e.data),
            (lsn, stream, data),
            "{context}"
        );
    }
    for s in ["s0", "s1", "s2"] {
        let want = expected.iter().filter(|(st, _)| st == s).count() as u64;
        assert_eq!(db.stream_version(s).unwrap(), want, "{context}: stream {s}");
    }
}

#[test]
fn the_scenario_gives_the_same_log_on_real_files_and_on_the_simulated_disk() {
    let real = tempfile::tempdir().unwrap();
    let (acked_real, _) = scenario(&real.path().join("db"), Arc::new(OsStorage));
    let sim_root = tempfile::tempdir().unwrap();
    let disk = SimDisk::new(sim_root.path()).unwrap();
    let (acked_sim, _) = scenario(&disk.root().join("db"), Arc::new(disk.handle()));
    assert_eq!(acked_real.len(), 60);
    assert_eq!(acked_real, acked_sim);
    let read = |dir: &Path, storage: Arc<dyn Storage>| {
        let db = Db::open(dir, options(storage)).unwrap();
        (db.last_lsn(), db.read(db.last_lsn() - 5, 10).unwrap())
    };
    assert_eq!(
        read(&real.path().join("db"), Arc::new(OsStorage)),
        read(&disk.root().join("db"), Arc::new(disk.handle()))
    );
}

#[test]
fn a_power_cut_before_each_io_call_loses_nothing_acknowledged() {
    let root = tempfile::tempdir().unwrap();
    let disk = SimDisk::new(root.path()).unwrap();
    scenario(&disk.root().join("db"), Arc::new(disk.handle()));
    let calls = disk.operations();
    assert!(calls > 100, "the scenario makes {calls} I/O calls");
    eprintln!("cutting the power before each of {calls} I/O calls");
    // Each cut point with four outcomes for what was pending.
    for (cut, outcome) in (1..=calls).flat_map(|c| (0..4).map(move |o| (c, o))) {
        let root = tempfile::tempdir().unwrap();
        let disk = SimDisk::new(root.path()).unwrap();
        let dir = disk.root().join("db");
        disk.power_cut_after(cut);
        let (acked, in_flight) = scenario(&dir, Arc::new(disk.handle()));
        assert!(disk.is_off(), "cut {cut} of {calls} did not fall");
        disk.restart(cut * 4 + outcome).unwrap();
        if acked.is_empty() && !dir.join("wal").exists() {
            continue; // the cut fell before the database was made
        }
        let context = format!("power cut before I/O call {cut} of {calls}, outcome {outcome}");
        check(&dir, Arc::new(disk.handle()), &acked, &in_flight, &context);
    }
}
