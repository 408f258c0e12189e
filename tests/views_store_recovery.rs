//! Views equal the fold of the log through checkpoints, log truncation and
//! reopen, and the history outlives the truncated log; a damaged newest
//! checkpoint falls back to the previous one with nothing acknowledged
//! lost; a store that cannot be used, with the log truncated, is a clear
//! error that changes no file; a changed schema is rebuilt from the
//! history.

mod common;
#[allow(dead_code)]
#[path = "../examples/custom_view.rs"]
mod custom_view;

use std::collections::BTreeMap;

use custom_view::StreamStats;
use replaydb::{Db, Error, ExpectedVersion, Options, View};

fn opts() -> Options {
    common::small_segments(4096)
        .checkpoint_every_records(0)
        .checkpoint_every_bytes(0)
}

fn open(dir: &std::path::Path) -> Result<Db, Error> {
    Db::open_with_views(dir, opts(), vec![Box::new(StreamStats::default())])
}

/// The model: per stream, the event count and the last event's data.
type Model = BTreeMap<String, (u64, Vec<u8>)>;

/// The model: the same fold over what the test appended.
fn append_some(db: &Db, model: &mut BTreeMap<String, (u64, Vec<u8>)>, from: u64, n: u64) {
    for i in from..from + n {
        let stream = format!("s{}", i % 7);
        let data = format!("event {i} {}", "x".repeat((i % 40) as usize)).into_bytes();
        db.append(&stream, ExpectedVersion::Any, &[&data]).unwrap();
        let e = model.entry(stream).or_default();
        e.0 += 1;
        e.1 = data;
    }
}

fn view_of(db: &Db) -> (BTreeMap<String, (u64, Vec<u8>)>, u64) {
    let at = db
        .view(|v: &StreamStats| v.streams.clone())
        .unwrap()
        .unwrap();
    (at.value, at.lsn)
}

#[test]
fn views_recover_from_the_store_and_the_history_outlives_the_truncated_log() {
    let tmp = tempfile::tempdir().unwrap();
    let mut model = BTreeMap::new();
    let db = open(tmp.path()).unwrap();
    append_some(&db, &mut model, 0, 300);
    let first = db.checkpoint().unwrap();
    assert!(first.written && first.covered_lsn == 300 && first.log_removed.is_empty());
    append_some(&db, &mut model, 300, 300);
    let second = db.checkpoint().unwrap();
    assert_eq!((second.covered_lsn, second.previous_lsn), (600, 300));
    assert!(
        !second.log_removed.is_empty(),
        "segments before the previous checkpoint go"
    );
    append_some(&db, &mut model, 600, 50);
    assert_eq!(view_of(&db), (model.clone(), 650));

    // The log no longer holds what the previous checkpoint covers, but the
    // history does: from LSN 1, by stream, and to a subscriber.
    let stats = db.stats().unwrap();
    assert!(
        stats.log_first_lsn > 1 && stats.log_first_lsn <= 301,
        "{stats:?}"
    );
    assert_eq!(stats.first_lsn, 1);
    let all = db.read(1, usize::MAX).unwrap();
    assert_eq!(all.len(), 650);
    assert!(all.iter().enumerate().all(|(i, e)| e.lsn == i as u64 + 1));
    assert_eq!(db.read_stream("s0", 1, 10).unwrap()[0].version, 1);
    let mut sub = db.subscribe(1).unwrap();
    assert_eq!(sub.next_blocking().unwrap().unwrap().lsn, 1);
    drop(sub);
    drop(db);

    // A clean close takes a last checkpoint: the next open replays nothing.
    let db = open(tmp.path()).unwrap();
    let report = db.recovery_report();
    assert_eq!(report.checkpoint_lsn, 650);
    assert_eq!(report.replayed_events, 0);
    assert!(report.store.damage.is_none());
    assert_eq!(view_of(&db), (model.clone(), 650));
    // Stream versions survive truncation: expected-version checks hold.
    let v = db.stream_version("s0").unwrap();
    assert_eq!(v, model["s0"].0);
    assert!(matches!(
        db.append("s0", ExpectedVersion::Exact(v - 1), &[b"stale"]),
        Err(Error::WrongExpectedVersion { .. })
    ));
    db.append("s0", ExpectedVersion::Exact(v), &[b"fresh"])
        .unwrap();
}

/// A database with checkpoints at LSN 300 and 600 (events marked `AAAA`
/// between them) and 20 events marked `ZZZZ` after, which the checkpoint
/// taken at close covers: the newest checkpoint is at 620, the previous at
/// 600, and the log is kept from LSN 601.
fn three_checkpoints(dir: &std::path::Path) -> Model {
    let mut model = BTreeMap::new();
    let db = open(dir).unwrap();
    append_some(&db, &mut model, 0, 300);
    db.checkpoint().unwrap();
    append_marked(&db, &mut model, 300, 300, "AAAA");
    db.checkpoint().unwrap();
    append_marked(&db, &mut model, 600, 20, "ZZZZ");
    drop(db);
    model
}

fn append_marked(db: &Db, model: &mut Model, from: u64, n: u64, mark: &str) {
    for i in from..from + n {
        let stream = format!("s{}", i % 7);
        let data = format!("{mark} {i} {}", mark.repeat(8)).into_bytes();
        db.append(&stream, ExpectedVersion::Any, &[&data]).unwrap();
        let e = model.entry(stream).or_default();
        e.0 += 1;
        e.1 = data;
    }
}

/// Overwrites every occurrence of `mark` in the store: damage to the pages
/// that hold those events, and to no page written before them.
fn overwrite(dir: &std::path::Path, mark: &str) {
    let path = dir.join("store.redb");
    let mut bytes = std::fs::read(&path).unwrap();
    let mut hits = 0;
    let mut at = 0;
    while let Some(p) = bytes[at..]
        .windows(mark.len())
        .position(|w| w == mark.as_bytes())
    {
        for b in &mut bytes[at + p..at + p + mark.len()] {
            *b = b'#';
        }
        at += p + mark.len();
        hits += 1;
    }
    assert!(hits > 0, "{mark} in the store");
    std::fs::write(&path, bytes).unwrap();
}

#[test]
fn a_damaged_newest_checkpoint_falls_back_to_the_previous_and_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let model = three_checkpoints(tmp.path());
    overwrite(tmp.path(), "ZZZZ");
    let db = open(tmp.path()).unwrap();
    let report = db.recovery_report().clone();
    assert!(report.store.damage.is_some(), "{report:?}");
    assert_eq!(report.store.fell_back_to_lsn, Some(600), "{report:?}");
    assert_eq!(report.checkpoint_lsn, 600);
    assert_eq!(
        report.replayed_events, 20,
        "the log after the previous checkpoint"
    );
    let kept = report
        .store
        .damaged_kept_in
        .clone()
        .expect("the damaged store is kept");
    assert!(kept.exists());
    assert_eq!(view_of(&db), (model.clone(), 620));
    let all = db.read(1, usize::MAX).unwrap();
    assert_eq!(all.len(), 620);
    assert!(
        all[619].data.starts_with(b"ZZZZ 619"),
        "acknowledged events are back"
    );
    drop(db);
    let db = open(tmp.path()).unwrap();
    assert!(db.recovery_report().store.damage.is_none());
    assert_eq!(view_of(&db), (model, 620));
}

#[test]
fn a_damaged_store_with_the_log_truncated_is_a_clear_error_and_nothing_is_touched() {
    let tmp = tempfile::tempdir().unwrap();
    three_checkpoints(tmp.path());
    overwrite(tmp.path(), "ZZZZ");
    overwrite(tmp.path(), "AAAA");
    let before = common::listing(tmp.path());
    match open(tmp.path()) {
        Err(Error::StoreUnusable {
            path,
            log_first_lsn,
            ..
        }) => {
            assert_eq!(path, tmp.path().join("store.redb"));
            assert!(log_first_lsn > 1);
        }
        other => panic!("expected StoreUnusable, got {other:?}"),
    }
    assert_eq!(
        common::listing(tmp.path()),
        before,
        "nothing deleted, renamed or resized"
    );
    let out = common::cli(tmp.path(), &["verify"]);
    assert_eq!(out.status.code(), Some(1), "verify reports the damage");
}

#[test]
fn a_damaged_store_is_rebuilt_from_a_log_that_starts_at_lsn_1() {
    let tmp = tempfile::tempdir().unwrap();
    let mut model = BTreeMap::new();
    {
        let db = open(tmp.path()).unwrap();
        append_marked(&db, &mut model, 0, 50, "QQQQ");
    }
    // redb's own header overwritten: no checkpoint in the file is
    // reachable, and the log, which starts at LSN 1, rebuilds it all.
    let path = tmp.path().join("store.redb");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[..64].fill(b'#');
    std::fs::write(&path, bytes).unwrap();
    let db = open(tmp.path()).unwrap();
    let report = db.recovery_report().clone();
    assert!(report.store.rebuilt, "{report:?}");
    assert!(
        report
            .store
            .damaged_kept_in
            .as_ref()
            .is_some_and(|p| p.exists())
    );
    assert_eq!(report.replayed_events, 50);
    assert_eq!(view_of(&db), (model, 50));
}

/// StreamStats under a new schema version.
#[derive(Clone, Default)]
struct StatsV2(StreamStats);

impl View for StatsV2 {
    fn name(&self) -> &str {
        "stream_stats"
    }
    fn schema_version(&self) -> u32 {
        2
    }
    fn apply(
        &mut self,
        e: &replaydb::EventRef<'_>,
        tables: &mut replaydb::ViewTables<'_>,
    ) -> replaydb::Result<()> {
        self.0.apply(e, tables)
    }
    fn reset(&mut self) {
        self.0.reset()
    }
    fn load(&mut self, input: &replaydb::ViewTablesRead<'_>) -> replaydb::Result<()> {
        self.0.load(input)
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

#[test]
fn a_changed_schema_is_rebuilt_from_the_history_even_after_the_log_is_truncated() {
    let tmp = tempfile::tempdir().unwrap();
    let mut model = BTreeMap::new();
    {
        let db = open(tmp.path()).unwrap();
        append_some(&db, &mut model, 0, 100);
        db.checkpoint().unwrap();
        append_some(&db, &mut model, 100, 10);
    }
    let db = Db::open_with_views(tmp.path(), opts(), vec![Box::new(StatsV2::default())]).unwrap();
    assert_eq!(
        db.recovery_report().views_rebuilt,
        vec!["stream_stats".to_string()]
    );
    assert_eq!(
        db.view(|v: &StatsV2| v.0.streams.clone())
            .unwrap()
            .unwrap()
            .value,
        model
    );
    // Truncate the log well past LSN 1, then go back to version 1: the
    // history still holds everything, so it is rebuilt, not refused.
    append_some(&db, &mut model, 110, 300);
    db.checkpoint().unwrap();
    append_some(&db, &mut model, 410, 300);
    db.checkpoint().unwrap();
    assert!(db.stats().unwrap().log_first_lsn > 1);
    drop(db);
    let db = open(tmp.path()).unwrap();
    assert_eq!(
        db.recovery_report().views_rebuilt,
        vec!["stream_stats".to_string()]
    );
    assert_eq!(view_of(&db), (model, 710));
}

#[test]
fn commands_decide_against_views_with_one_winner_and_rejections_append_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let db = open(tmp.path()).unwrap();
    // Eight threads race to claim "key" (create-if-absent): the check is
    // "the stream has no events yet" on the view, not on ExpectedVersion.
    let handles: Vec<_> = (0..8)
        .map(|t| {
            let db = db.clone();
            std::thread::spawn(move || {
                db.execute("claims", ExpectedVersion::Any, move |views| {
                    let stats = views.get::<StreamStats>().expect("registered");
                    if stats.streams.contains_key("claims") {
                        return Err(Error::InvalidArgument {
                            op: "claim",
                            reason: "already claimed".into(),
                        });
                    }
                    Ok(vec![format!("owner {t}").into_bytes()])
                })
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(
        results.iter().filter(|r| matches!(r, Ok(Some(_)))).count(),
        1,
        "{results:?}"
    );
    assert_eq!(results.iter().filter(|r| r.is_err()).count(), 7);
    assert_eq!(db.last_lsn(), 1, "rejected commands appended nothing");
    assert_eq!(
        db.execute("claims", ExpectedVersion::Any, |_| Ok(vec![]))
            .unwrap(),
        None
    );
    assert_eq!(db.last_lsn(), 1);
    let panicked = db.execute("claims", ExpectedVersion::Any, |_| panic!("boom"));
    assert!(matches!(
        panicked,
        Err(Error::Internal { op: "execute", .. })
    ));
    db.append("other", ExpectedVersion::Any, &[b"still works"])
        .unwrap();
}

#[test]
fn backup_while_four_threads_append_opens_verifies_and_holds_every_acknowledged_event() {
    let tmp = tempfile::tempdir().unwrap();
    let db = open(tmp.path().join("db").as_path()).unwrap();
    let mut model = BTreeMap::new();
    append_some(&db, &mut model, 0, 200);
    db.checkpoint().unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|t| {
            let (db, stop) = (db.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    db.append(&format!("w{t}"), ExpectedVersion::Any, &[n.to_le_bytes()])
                        .unwrap();
                    n += 1;
                }
                n
            })
        })
        .collect();
    // Wait until the writers are well under way, by condition.
    while db.last_lsn() < 400 {
        std::thread::yield_now();
    }
    let acknowledged_before = db.last_lsn();
    let dest = tmp.path().join("backup");
    let covered = db.backup(&dest).unwrap();
    assert!(covered >= acknowledged_before);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    let out = common::cli(&dest, &["verify"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let copy = open(&dest).unwrap();
    assert!(copy.last_lsn() >= acknowledged_before);
    let original = db.read(201, usize::MAX).unwrap();
    let copied = copy.read(201, usize::MAX).unwrap();
    assert_eq!(
        &original[..copied.len()],
        &copied[..],
        "the copy is a prefix of the original"
    );
    let (stats, _) = view_of(&copy);
    assert_eq!(stats.values().map(|(n, _)| n).sum::<u64>(), copy.last_lsn());
}

#[test]
fn a_view_a_handle_lacks_catches_up_from_the_history_however_far_the_log_was_truncated() {
    let tmp = tempfile::tempdir().unwrap();
    let mut model = BTreeMap::new();
    {
        let db = open(tmp.path()).unwrap();
        append_some(&db, &mut model, 0, 50);
    }
    // The CLI registers none of the program's views; it checkpoints and
    // truncates the log as it likes.
    let out = common::cli(tmp.path(), &["checkpoint"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for events in [&["1", "2"][..], &["3"][..]] {
        let mut args = vec![
            "--checkpoint-every-records",
            "1",
            "append",
            "--stream",
            "cli",
        ];
        args.extend_from_slice(events);
        let out = common::cli(tmp.path(), &args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The program's view, left at LSN 50, folds the rest from the history.
    let db = open(tmp.path()).unwrap();
    let (stats, lsn) = view_of(&db);
    assert_eq!(lsn, 53);
    assert_eq!(stats["cli"].0, 3);
    assert_eq!(stats["s0"], model["s0"]);
}

#[test]
fn calling_back_into_the_database_from_a_view_read_or_a_decision_is_an_error_not_a_hang() {
    let tmp = tempfile::tempdir().unwrap();
    let db = open(tmp.path()).unwrap();
    db.append("s", ExpectedVersion::Any, &[b"x"]).unwrap();
    let inner = db.clone();
    let nested = db
        .view(move |_: &StreamStats| inner.append("s", ExpectedVersion::Any, &[b"y"]))
        .unwrap()
        .unwrap()
        .value;
    assert!(matches!(nested, Err(Error::Reentrant { op: "append" })));
    let inner = db.clone();
    let decided = db.execute("s", ExpectedVersion::Any, move |_| {
        inner.stream_version("s")?;
        Ok(vec![b"z".to_vec()])
    });
    assert!(
        matches!(decided, Err(Error::Reentrant { .. })),
        "{decided:?}"
    );
    assert_eq!(db.last_lsn(), 1);
    db.append("s", ExpectedVersion::Exact(1), &[b"fine"])
        .unwrap();
}

#[test]
fn reading_a_stream_from_any_lsn_after_truncation_works() {
    let tmp = tempfile::tempdir().unwrap();
    let mut model = BTreeMap::new();
    let db = open(tmp.path()).unwrap();
    append_some(&db, &mut model, 0, 300);
    db.checkpoint().unwrap();
    append_some(&db, &mut model, 300, 300);
    db.checkpoint().unwrap();
    let log_first = db.stats().unwrap().log_first_lsn;
    assert!(log_first > 1);
    for from in [1, log_first + 10] {
        let events = db.read_stream_from_lsn("s3", from, 1000).unwrap();
        // Event i (from 0) went to stream s{i % 7} at LSN i + 1.
        let want = (0..600u64).filter(|i| i % 7 == 3 && i + 1 >= from).count();
        assert_eq!(events.len(), want);
        assert!(events.iter().all(|e| e.lsn >= from && e.stream == "s3"));
        assert!(events.windows(2).all(|w| w[1].version == w[0].version + 1));
    }
}
