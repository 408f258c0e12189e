//! SIGKILL during checkpoints and log truncations loses nothing
//! acknowledged: the child checkpoints (and truncates the log) every few
//! records while appending; after every kill the database reopens,
//! `verify` is clean, the stream's version counts every acknowledged
//! event, and the history holds every acknowledged event with its data,
//! from LSN 1, however much of the log is gone.
//!
//! Cycles: 20 by default; `REPLAYDB_CRASH_CYCLES` for more.

mod common;

use replaydb::{Db, Options};
use serde_json::{Value, json};

#[test]
fn sigkill_during_checkpoints_and_truncation_loses_no_acknowledged_event() {
    let mut rng = common::crash_rng();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    let opts = Options::default()
        .segment_bytes_max(Some(8192))
        .checkpoint_every_records(0);
    let mut acked_total = 0u64;
    // (cycle, i) -> LSN, for every acknowledged event.
    let mut acked: Vec<(u64, u64, u64)> = Vec::new();
    let mut checkpoints_seen = 0;
    let mut truncated_seen = 0;
    let mut killed_mid_write = 0;

    for cycle in 0..common::crash_cycles() {
        let kill_after = rng.usize(1..400);
        let lsns = common::append_until_killed(
            &dir,
            &[
                "--segment-bytes-max",
                "8192",
                "--checkpoint-every-records",
                "2",
                "append",
                "--stream",
                "crash",
            ],
            kill_after,
            move |i| json!({"c": cycle, "i": i, "pad": "p".repeat((i % 97) as usize)}).to_string(),
        );
        acked_total += lsns.len() as u64;
        acked.extend(
            lsns.iter()
                .enumerate()
                .map(|(i, lsn)| (cycle, i as u64, *lsn)),
        );

        let db =
            Db::open(&dir, opts.clone()).unwrap_or_else(|e| panic!("cycle {cycle}: reopen: {e}"));
        let interrupted = db.recovery_report().removed_temp_files.len();
        if interrupted > 0 {
            killed_mid_write += 1;
        }
        let version = db.stream_version("crash").unwrap();
        assert!(
            version >= acked_total,
            "cycle {cycle}: version {version} < {acked_total} acknowledged"
        );
        assert_eq!(
            version,
            db.last_lsn(),
            "one stream: its version is the last LSN"
        );
        let stats = db.stats().unwrap();
        let held = db.read(1, usize::MAX).unwrap();
        assert_eq!(
            held.len() as u64,
            version,
            "cycle {cycle}: the whole history"
        );
        let by_lsn: std::collections::HashMap<u64, Value> = held
            .iter()
            .map(|e| (e.lsn, rmp_serde::from_slice(&e.data).unwrap()))
            .collect();
        for (c, i, lsn) in &acked {
            let v = by_lsn
                .get(lsn)
                .unwrap_or_else(|| panic!("cycle {cycle}: acknowledged LSN {lsn} missing"));
            assert_eq!((&v["c"], &v["i"]), (&json!(c), &json!(i)), "LSN {lsn}");
        }
        checkpoints_seen += u64::from(db.recovery_report().checkpoint_lsn > 0);
        truncated_seen += u64::from(stats.log_first_lsn > 1);
        drop(db);
        let verify =
            replaydb::verify(&dir, &opts).unwrap_or_else(|e| panic!("cycle {cycle}: verify: {e}"));
        assert_eq!(verify.last_lsn, version);
    }
    assert!(checkpoints_seen > 0, "the child took checkpoints");
    assert!(truncated_seen > 0, "the child truncated the log");
    eprintln!(
        "{} cycles, {acked_total} acknowledged events checked; {killed_mid_write} kills landed while a segment was being made",
        common::crash_cycles()
    );
}
