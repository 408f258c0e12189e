//! Damaged snapshot files from disk give typed errors, never a panic:
//! committed fixtures, each found by a fuzzer or built to be wrong.

use std::path::Path;

use replaydb::Error;

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

#[test]
fn a_file_on_which_redb_panicked_is_a_typed_error() {
    // Found by `cargo fuzz run snapshot_open`: redb 4.6 panics in
    // tree_store/btree.rs reading this file.
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("00000000000000000011.redb");
    std::fs::copy(fixture("snapshot-that-panicked-redb.redb"), &path).unwrap();
    match replaydb::snapshot::open(&replaydb::storage::OsStorage, &path) {
        Err(Error::Snapshot {
            path: p, reason, ..
        }) => {
            assert_eq!(p, path);
            assert!(reason.contains("redb panicked"), "{reason}");
        }
        Err(other) => panic!("expected Error::Snapshot, got {other:?}"),
        Ok(_) => panic!("a damaged snapshot opened"),
    }
}

#[test]
fn a_database_whose_only_snapshot_is_that_file_still_opens_from_the_log() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let db = replaydb::Db::open(tmp.path(), replaydb::Options::default()).unwrap();
        for i in 0..20u64 {
            db.append("s", replaydb::ExpectedVersion::Any, &[i.to_le_bytes()])
                .unwrap();
        }
    }
    let snaps = tmp.path().join("snapshots");
    std::fs::create_dir_all(&snaps).unwrap();
    std::fs::copy(
        fixture("snapshot-that-panicked-redb.redb"),
        snaps.join("00000000000000000011.redb"),
    )
    .unwrap();
    // The log still starts at LSN 1: the damaged snapshot is reported and
    // set aside, and everything is rebuilt from the log.
    let db = replaydb::Db::open(tmp.path(), replaydb::Options::default()).unwrap();
    assert_eq!(db.recovery_report().damaged_snapshots.len(), 1);
    assert_eq!(db.stream_version("s").unwrap(), 20);
    assert!(snaps.join("00000000000000000011.redb.damaged").exists());
}

#[test]
fn a_truncated_newest_snapshot_is_damage_and_the_older_one_is_used() {
    // A short file is a damaged snapshot to fall back from, not a failing
    // disk to stop on: since an I/O error from a snapshot fails the open
    // (it may be the device, not the file), this guards that truncation
    // still counts as damage (redb reports it so; a read past the end would
    // be UnexpectedEof, which replaydb also counts as damage).
    let tmp = tempfile::tempdir().unwrap();
    let append = |db: &replaydb::Db, n: u64| {
        for i in 0..n {
            db.append("s", replaydb::ExpectedVersion::Any, &[i.to_le_bytes()])
                .unwrap();
        }
    };
    let newest = {
        let db = replaydb::Db::open(tmp.path(), replaydb::Options::default()).unwrap();
        append(&db, 10);
        db.snapshot().unwrap();
        append(&db, 10);
        let newest = db.snapshot().unwrap().path;
        append(&db, 5);
        newest
    };
    let len = std::fs::metadata(&newest).unwrap().len();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&newest)
        .unwrap();
    f.set_len(len / 2).unwrap();
    drop(f);

    let db = replaydb::Db::open(tmp.path(), replaydb::Options::default()).unwrap();
    let report = db.recovery_report();
    assert_eq!(report.damaged_snapshots.len(), 1, "{report:?}");
    assert_eq!(report.damaged_snapshots[0].0, newest);
    assert_eq!(report.snapshot.as_ref().map(|s| s.1), Some(10));
    assert_eq!(report.replayed_events, 15);
    assert_eq!(db.stream_version("s").unwrap(), 25);
    let events = db.read(1, usize::MAX).unwrap();
    assert_eq!(events.len(), 25);
    assert_eq!(events[24].data, 4u64.to_le_bytes());
}
