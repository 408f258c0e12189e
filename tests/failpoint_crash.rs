//! A crash exactly between two steps of a checkpoint, a log truncation,
//! the store's creation or a segment roll loses nothing acknowledged: for
//! every named failpoint the process aborts there, and the database
//! reopens with every event's effect, verifies clean, and takes the next
//! checkpoint.

mod common;

use std::process::Command;

use replaydb::{Db, Options};

const FAILPOINTS: &[&str] = &[
    "checkpoint.before_commit",
    "checkpoint.before_truncate",
    "compaction.before_delete",
    "compaction.after_first_delete",
];

fn opts() -> Options {
    Options::default()
        .segment_bytes_max(Some(4096))
        .checkpoint_every_records(0)
}

fn cli(dir: &std::path::Path, failpoint: Option<&str>, args: &[&str]) -> std::process::Output {
    let mut c = Command::new(common::bin());
    c.arg("--db")
        .arg(dir)
        .args([
            "--segment-bytes-max",
            "4096",
            "--checkpoint-every-records",
            "0",
        ])
        .args(args);
    if let Some(f) = failpoint {
        c.env("REPLAYDB_FAILPOINT", f);
    }
    c.output().unwrap()
}

/// Appends `n` events to `stream` from one process reading stdin.
fn append_stdin(
    dir: &std::path::Path,
    failpoint: Option<&str>,
    stream: &str,
    n: usize,
) -> std::process::Output {
    use std::io::Write;
    let mut c = Command::new(common::bin());
    c.arg("--db")
        .arg(dir)
        .args([
            "--segment-bytes-max",
            "4096",
            "--checkpoint-every-records",
            "0",
            "append",
            "--stream",
            stream,
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    if let Some(f) = failpoint {
        c.env("REPLAYDB_FAILPOINT", f);
    }
    let mut child = c.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for i in 0..n {
        writeln!(stdin, r#"{{"i":{i},"pad":"{}"}}"#, "p".repeat(60)).unwrap();
    }
    drop(stdin);
    child.wait_with_output().unwrap()
}

fn append(dir: &std::path::Path, stream: &str, n: usize) {
    let values: Vec<String> = (0..n)
        .map(|i| format!(r#"{{"i":{i},"pad":"{}"}}"#, "p".repeat(60)))
        .collect();
    for v in values {
        let out = cli(dir, None, &["append", "--stream", stream, &v]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn a_crash_at_every_checkpoint_and_truncation_step_loses_nothing() {
    for failpoint in FAILPOINTS {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        append(dir, "a", 60);
        assert!(cli(dir, None, &["checkpoint"]).status.success());
        // A process appends 100 more and checkpoints at its close; the next
        // appends 100 more, each acknowledged, and in the checkpoint of its
        // close (which truncates what the first covered) it dies.
        let first = append_stdin(dir, None, "b", 100);
        assert!(
            first.status.success(),
            "{}",
            String::from_utf8_lossy(&first.stderr)
        );
        let out = append_stdin(dir, Some(failpoint), "b", 100);
        assert!(
            !out.status.success(),
            "{failpoint}: the process should have aborted"
        );
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(failpoint),
            "{failpoint} was not reached"
        );
        let acked: Vec<u64> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.trim().parse().unwrap())
            .collect();
        assert_eq!(
            acked.len(),
            100,
            "{failpoint}: every append was acknowledged first"
        );
        let acked_last = 260;

        let db = Db::open(dir, opts()).unwrap_or_else(|e| panic!("{failpoint}: reopen: {e}"));
        let last = db.last_lsn();
        assert!(
            last >= acked_last,
            "{failpoint}: LSN {acked_last} was acknowledged, the log ends at {last}"
        );
        assert_eq!(db.stream_version("a").unwrap(), 60, "{failpoint}");
        assert_eq!(db.stream_version("b").unwrap(), last - 60, "{failpoint}");
        let events = db.read(1, usize::MAX).unwrap();
        assert_eq!(events.len() as u64, last, "{failpoint}: the whole history");
        for (i, e) in events.iter().enumerate().skip(60) {
            let v: serde_json::Value = rmp_serde::from_slice(&e.data).unwrap();
            assert_eq!(v["i"], (i - 60) % 100, "{failpoint}: LSN {}", e.lsn);
        }
        // The next checkpoint goes through.
        db.checkpoint()
            .unwrap_or_else(|e| panic!("{failpoint}: next checkpoint: {e}"));
        drop(db);
        let v =
            replaydb::verify(dir, &opts()).unwrap_or_else(|e| panic!("{failpoint}: verify: {e}"));
        assert_eq!(v.last_lsn, last);
    }
}

#[test]
fn a_crash_before_the_new_store_is_renamed_into_place_leaves_a_database_that_opens() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let out = cli(dir, Some("store.before_rename"), &["stats"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("store.before_rename"));
    assert!(!dir.join("store.redb").exists());
    append(dir, "a", 3);
    let db = Db::open(dir, opts()).unwrap();
    assert_eq!(db.last_lsn(), 3);
    assert!(
        !dir.join("store.redb.tmp").exists(),
        "the unfinished store is gone"
    );
}

#[test]
fn a_crash_while_rolling_a_segment_loses_nothing_acknowledged() {
    for failpoint in ["roll.before_truncate", "segment.before_rename"] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        append(dir, "a", 20);
        let before = Db::open(dir, opts()).unwrap().last_lsn();
        // Append until a roll hits the failpoint.
        let mut aborted = false;
        let mut acked = 0u64;
        for i in 0..100 {
            let out = cli(
                dir,
                Some(failpoint),
                &[
                    "append",
                    "--stream",
                    "a",
                    &format!(r#"{{"j":{i},"pad":"{}"}}"#, "q".repeat(80)),
                ],
            );
            if !out.status.success() {
                assert!(String::from_utf8_lossy(&out.stderr).contains(failpoint));
                aborted = true;
                break;
            }
            acked += 1;
        }
        assert!(aborted, "{failpoint} never reached");
        let db = Db::open(dir, opts()).unwrap_or_else(|e| panic!("{failpoint}: reopen: {e}"));
        // Every acknowledged append is there; the one that died rolling
        // the segment was never written (the roll precedes its write).
        assert_eq!(db.last_lsn(), before + acked, "{failpoint}");
        assert!(db.recovery_report().removed_temp_files.len() <= 1);
        assert_eq!(db.read(1, usize::MAX).unwrap().len() as u64, db.last_lsn());
        drop(db);
        replaydb::verify(dir, &opts()).unwrap_or_else(|e| panic!("{failpoint}: verify: {e}"));
    }
}
