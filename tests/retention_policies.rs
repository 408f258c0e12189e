//! A stream's history keeps every event unless its retention says
//! otherwise, and each policy (max count, max age, truncate before, state
//! only) removes exactly what it names: reads of what it removed are
//! `Compacted` naming the first version still held, everything else reads
//! back whole, through checkpoints and reopens; the stream's version, and
//! expected-version checks, never change.

use std::time::Duration;

use replaydb::{Db, Error, ExpectedVersion, Options, Retention};

fn append(db: &Db, stream: &str, n: u64) {
    for i in 0..n {
        db.append(stream, ExpectedVersion::Any, &[format!("{stream} {i}")])
            .unwrap();
    }
}

/// The versions `read_stream` returns from 1, or the first held version
/// when the start was removed.
fn held(db: &Db, stream: &str) -> (Option<u64>, Vec<u64>) {
    match db.read_stream(stream, 1, usize::MAX) {
        Ok(events) => (None, events.iter().map(|e| e.version).collect()),
        Err(Error::Compacted {
            oldest_available, ..
        }) => {
            let events = db
                .read_stream(stream, oldest_available, usize::MAX)
                .unwrap();
            (
                Some(oldest_available),
                events.iter().map(|e| e.version).collect(),
            )
        }
        Err(e) => panic!("{e}"),
    }
}

fn open(dir: &std::path::Path) -> Db {
    Db::open(dir, Options::default()).unwrap()
}

#[test]
fn keep_all_is_the_default_and_keeps_everything_through_checkpoints() {
    let tmp = tempfile::tempdir().unwrap();
    let db = open(tmp.path());
    append(&db, "s", 50);
    db.checkpoint().unwrap();
    append(&db, "s", 50);
    assert_eq!(db.retention("s").unwrap(), Retention::keep_all());
    drop(db);
    let db = open(tmp.path());
    assert_eq!(held(&db, "s"), (None, (1..=100).collect()));
    assert_eq!(db.read(1, usize::MAX).unwrap().len(), 100);
}

#[test]
fn max_count_keeps_the_newest_n_and_compacted_names_the_first_held() {
    let tmp = tempfile::tempdir().unwrap();
    let db = open(tmp.path());
    append(&db, "s", 10);
    append(&db, "other", 3);
    db.set_retention("s", Retention::max_count(4)).unwrap();
    // At once: versions 1..=6 go.
    assert_eq!(held(&db, "s"), (Some(7), (7..=10).collect()));
    // And as the stream grows.
    append(&db, "s", 3);
    assert_eq!(held(&db, "s"), (Some(10), (10..=13).collect()));
    match db.read_stream("s", 9, 10) {
        Err(Error::Compacted {
            oldest_available, ..
        }) => assert_eq!(oldest_available, 10),
        other => panic!("expected Compacted, got {other:?}"),
    }
    assert_eq!(db.read_stream("s", 12, 10).unwrap().len(), 2);
    assert_eq!(db.stream_version("s").unwrap(), 13);
    assert!(matches!(
        db.append("s", ExpectedVersion::Exact(12), &[b"stale"]),
        Err(Error::WrongExpectedVersion { .. })
    ));
    // Other streams are untouched; the global log skips what was removed.
    assert_eq!(held(&db, "other"), (None, vec![1, 2, 3]));
    let global: Vec<String> = db
        .read(1, usize::MAX)
        .unwrap()
        .into_iter()
        .filter(|e| e.stream == "s")
        .map(|e| String::from_utf8(e.data).unwrap())
        .collect();
    assert_eq!(global, vec!["s 9", "s 0", "s 1", "s 2"]);
    db.checkpoint().unwrap();
    drop(db);
    let db = open(tmp.path());
    assert_eq!(held(&db, "s"), (Some(10), (10..=13).collect()));
    assert_eq!(db.retention("s").unwrap(), Retention::max_count(4));
}

#[test]
fn a_batch_that_straddles_the_limit_keeps_exactly_its_newest_events() {
    let tmp = tempfile::tempdir().unwrap();
    let db = open(tmp.path());
    let batch: Vec<String> = (0..5).map(|i| format!("b{i}")).collect();
    db.append("s", ExpectedVersion::Any, &batch).unwrap();
    db.set_retention("s", Retention::max_count(2)).unwrap();
    let events = db.read_stream("s", 4, 10).unwrap();
    assert_eq!(
        events
            .iter()
            .map(|e| (e.version, e.lsn))
            .collect::<Vec<_>>(),
        vec![(4, 4), (5, 5)]
    );
    assert_eq!(events[0].data, b"b3");
    assert!(matches!(
        db.read_stream("s", 3, 10),
        Err(Error::Compacted {
            oldest_available: 4,
            ..
        })
    ));
}

#[test]
fn truncate_before_removes_below_a_version_once() {
    let tmp = tempfile::tempdir().unwrap();
    let db = open(tmp.path());
    append(&db, "s", 10);
    db.set_retention("s", Retention::truncate_before(8))
        .unwrap();
    assert_eq!(held(&db, "s"), (Some(8), vec![8, 9, 10]));
    append(&db, "s", 5);
    assert_eq!(held(&db, "s"), (Some(8), (8..=15).collect()));
}

#[test]
fn state_only_keeps_no_history_but_the_version() {
    let tmp = tempfile::tempdir().unwrap();
    let db = open(tmp.path());
    append(&db, "s", 5);
    db.set_retention("s", Retention::state_only()).unwrap();
    append(&db, "s", 5);
    assert_eq!(db.stream_version("s").unwrap(), 10);
    match db.read_stream("s", 1, 10) {
        Err(Error::Compacted {
            oldest_available, ..
        }) => assert_eq!(oldest_available, 11),
        other => panic!("expected Compacted, got {other:?}"),
    }
    assert!(
        db.read(1, usize::MAX)
            .unwrap()
            .iter()
            .all(|e| e.stream != "s")
    );
    db.append("s", ExpectedVersion::Exact(10), &[b"next"])
        .unwrap();
}

#[test]
fn max_age_removes_what_is_older_at_the_next_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let db = open(tmp.path());
    append(&db, "s", 5);
    db.set_retention("s", Retention::max_age(Duration::from_millis(50)))
        .unwrap();
    // Wait, by condition, until the first five are older than the limit.
    let stored = std::time::Instant::now();
    while stored.elapsed() < Duration::from_millis(60) {
        std::thread::yield_now();
    }
    append(&db, "s", 3);
    assert_eq!(
        held(&db, "s"),
        (None, (1..=8).collect()),
        "kept until a checkpoint"
    );
    let done = db.checkpoint().unwrap();
    assert_eq!(done.aged_out_events, 5);
    assert_eq!(held(&db, "s"), (Some(6), vec![6, 7, 8]));
}

#[test]
fn retention_is_replayed_from_the_log_when_the_store_is_rebuilt() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let db = open(tmp.path());
        append(&db, "s", 10);
        db.set_retention("s", Retention::max_count(3)).unwrap();
        append(&db, "s", 2);
    }
    // Without the store, it is rebuilt from the log (which starts at 1).
    std::fs::remove_file(tmp.path().join("store.redb")).unwrap();
    let db = open(tmp.path());
    assert!(db.recovery_report().store.created);
    assert_eq!(held(&db, "s"), (Some(10), vec![10, 11, 12]));
}

#[test]
fn a_meaningless_policy_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let db = open(tmp.path());
    for bad in [
        Retention::truncate_before(0),
        Retention::max_age(Duration::ZERO),
    ] {
        assert!(matches!(
            db.set_retention("s", bad),
            Err(Error::InvalidArgument { .. })
        ));
    }
    assert_eq!(db.last_lsn(), 0, "nothing appended");
}

#[test]
fn truncate_before_far_past_the_stream_keeps_nothing_yet_and_the_database_reopens() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let db = open(tmp.path());
        append(&db, "s", 10);
        db.set_retention("s", Retention::truncate_before(1000))
            .unwrap();
        append(&db, "s", 2);
        assert_eq!(db.stream_version("s").unwrap(), 12);
        assert_eq!(held(&db, "s"), (Some(13), vec![]));
        db.checkpoint().unwrap();
        append(&db, "s", 1);
    }
    let db = open(tmp.path());
    assert_eq!(db.stream_version("s").unwrap(), 13);
    assert_eq!(held(&db, "s"), (Some(14), vec![]));
}

#[test]
fn reading_a_stream_from_an_lsn_at_or_below_what_retention_removed_is_compacted() {
    let tmp = tempfile::tempdir().unwrap();
    let db = open(tmp.path());
    append(&db, "s", 5); // LSNs 1..=5
    append(&db, "other", 1); // LSN 6
    append(&db, "s", 2); // LSNs 7, 8
    db.set_retention("s", Retention::max_count(2)).unwrap();
    match db.read_stream_from_lsn("s", 3, 10) {
        Err(Error::Compacted {
            oldest_available, ..
        }) => assert_eq!(oldest_available, 6, "after LSN 5, the last removed"),
        other => panic!("expected Compacted, got {other:?}"),
    }
    let kept: Vec<u64> = db
        .read_stream_from_lsn("s", 6, 10)
        .unwrap()
        .iter()
        .map(|e| e.lsn)
        .collect();
    assert_eq!(kept, vec![7, 8]);
}
