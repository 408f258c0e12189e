//! Views equal the fold of the log through snapshots, compaction and
//! reopen; a damaged newest snapshot falls back to the older generation;
//! nothing is deleted when no snapshot is usable; a changed schema is
//! rebuilt from the log or refused by name.

mod common;
#[allow(dead_code)]
#[path = "../examples/custom_view.rs"]
mod custom_view;

use std::collections::BTreeMap;

use custom_view::StreamStats;
use replaydb::{Db, Error, ExpectedVersion, Options, View};

fn opts() -> Options {
    Options {
        snapshot_every_records: 0,
        snapshot_every_bytes: 0,
        ..common::small_segments(4096)
    }
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
fn views_recover_from_snapshot_plus_log_and_the_log_is_compacted_behind_two_generations() {
    let tmp = tempfile::tempdir().unwrap();
    let mut model = BTreeMap::new();
    let db = open(tmp.path()).unwrap();
    append_some(&db, &mut model, 0, 300);
    let first = db.snapshot().unwrap();
    assert!(first.written && first.covered_lsn == 300 && first.deleted_segments.is_empty());
    append_some(&db, &mut model, 300, 300);
    let second = db.snapshot().unwrap();
    assert!(
        !second.deleted_segments.is_empty(),
        "segments below the older generation go"
    );
    assert_eq!(db.snapshots().unwrap().len(), 2);
    append_some(&db, &mut model, 600, 50);
    assert_eq!(view_of(&db), (model.clone(), 650));

    // The log no longer holds what the older generation covers.
    let first_held = db.stats().unwrap().first_lsn;
    assert!(first_held > 1 && first_held <= 301);
    match db.read(1, 10) {
        Err(Error::Compacted {
            oldest_available, ..
        }) => assert_eq!(oldest_available, first_held),
        other => panic!("expected Compacted, got {other:?}"),
    }
    assert!(matches!(
        db.read_stream("s0", 1, 10),
        Err(Error::Compacted { .. })
    ));
    let mut sub = db.subscribe(1).unwrap();
    assert!(matches!(
        sub.next_blocking(),
        Some(Err(Error::Compacted { .. }))
    ));
    assert_eq!(db.read(first_held, 1).unwrap()[0].lsn, first_held);
    drop(sub);
    drop(db);

    let db = open(tmp.path()).unwrap();
    let report = db.recovery_report();
    assert_eq!(report.snapshot.as_ref().map(|s| s.1), Some(600));
    assert_eq!(report.replayed_events, 50);
    assert!(report.damaged_snapshots.is_empty());
    assert_eq!(view_of(&db), (model.clone(), 650));
    // Stream versions survive compaction: expected-version checks hold.
    let v = db.stream_version("s0").unwrap();
    assert_eq!(v, model["s0"].0);
    assert!(matches!(
        db.append("s0", ExpectedVersion::Exact(v - 1), &[b"stale"]),
        Err(Error::WrongExpectedVersion { .. })
    ));
    db.append("s0", ExpectedVersion::Exact(v), &[b"fresh"])
        .unwrap();
}

/// A database with two snapshot generations (at LSN 300 and 600) and 20
/// events after the newer.
fn two_generations(dir: &std::path::Path) -> (Model, Vec<(u64, std::path::PathBuf)>) {
    let mut model = BTreeMap::new();
    let db = open(dir).unwrap();
    append_some(&db, &mut model, 0, 300);
    db.snapshot().unwrap();
    append_some(&db, &mut model, 300, 300);
    db.snapshot().unwrap();
    append_some(&db, &mut model, 600, 20);
    drop(db);
    let snaps = replaydb::snapshot::list(&replaydb::storage::OsStorage, dir).unwrap();
    assert_eq!(
        snaps.iter().map(|s| s.0).collect::<Vec<_>>(),
        vec![600, 300]
    );
    (model, snaps)
}

/// Overwrites bytes of the view's data itself (a stored event), not unused
/// pages: damage where it matters.
fn overwrite(path: &std::path::Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let at = bytes
        .windows(6)
        .position(|w| w == b"event ")
        .expect("view data in the snapshot");
    for b in &mut bytes[at..at + 16] {
        *b = b'#';
    }
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn a_damaged_newest_snapshot_falls_back_to_the_older_and_is_set_aside() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, snaps) = two_generations(tmp.path());
    overwrite(&snaps[0].1);
    let db = open(tmp.path()).unwrap();
    let report = db.recovery_report().clone();
    assert_eq!(report.damaged_snapshots.len(), 1);
    assert_eq!(report.damaged_snapshots[0].0, snaps[0].1);
    assert_eq!(
        report.snapshot.as_ref().map(|s| s.1),
        Some(300),
        "the older generation"
    );
    assert_eq!(report.replayed_events, 320, "a longer replay");
    assert_eq!(view_of(&db), (model.clone(), 620));
    let aside = std::path::PathBuf::from(format!("{}.damaged", snaps[0].1.display()));
    assert!(aside.exists(), "the damaged snapshot is kept, renamed");
    // The next snapshot keeps the good older generation: two usable ones.
    db.snapshot().unwrap();
    let now: Vec<u64> = replaydb::snapshot::list(&replaydb::storage::OsStorage, tmp.path())
        .unwrap()
        .iter()
        .map(|s| s.0)
        .collect();
    assert_eq!(now, vec![620, 300]);
    drop(db);
    let db = open(tmp.path()).unwrap();
    assert!(db.recovery_report().damaged_snapshots.is_empty());
    assert_eq!(view_of(&db), (model, 620));
}

#[test]
fn both_generations_damaged_is_a_clear_error_and_nothing_is_touched() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, snaps) = two_generations(tmp.path());
    overwrite(&snaps[0].1);
    overwrite(&snaps[1].1);
    let listing = |dir: &std::path::Path| {
        let mut v: Vec<_> = walk(dir);
        v.sort();
        v
    };
    let before = listing(tmp.path());
    match open(tmp.path()) {
        Err(Error::NoUsableSnapshot { details, .. }) => {
            for (_, path) in &snaps {
                assert!(details.contains(&path.display().to_string()), "{details}");
            }
        }
        other => panic!("expected NoUsableSnapshot, got {other:?}"),
    }
    assert_eq!(
        listing(tmp.path()),
        before,
        "nothing deleted, renamed or resized"
    );
    let out = common::cli(tmp.path(), &["verify"]);
    assert_eq!(out.status.code(), Some(1), "verify reports the damage");
}

fn walk(dir: &std::path::Path) -> Vec<(std::path::PathBuf, u64)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            out.extend(walk(&e.path()));
        } else if e.file_name() != "LOCK" {
            out.push((e.path(), e.metadata().unwrap().len()));
        }
    }
    out
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
    fn apply(&mut self, e: &replaydb::EventRef<'_>) {
        self.0.apply(e)
    }
    fn reset(&mut self) {
        self.0.reset()
    }
    fn save(&self, out: &mut replaydb::ViewWriter<'_>) -> replaydb::Result<()> {
        self.0.save(out)
    }
    fn load(&mut self, input: &replaydb::ViewReader<'_>) -> replaydb::Result<()> {
        self.0.load(input)
    }
    fn clone_view(&self) -> Box<dyn View> {
        Box::new(self.clone())
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

#[test]
fn a_changed_schema_is_rebuilt_from_the_log_or_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let mut model = BTreeMap::new();
    {
        let db = open(tmp.path()).unwrap();
        append_some(&db, &mut model, 0, 100);
        db.snapshot().unwrap();
        append_some(&db, &mut model, 100, 10);
    }
    // The log still starts at LSN 1: rebuilt.
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
    // Compact the log past LSN 1 (two more generations), then go back to v1.
    append_some(&db, &mut model, 110, 300);
    db.snapshot().unwrap();
    append_some(&db, &mut model, 410, 300);
    db.snapshot().unwrap();
    assert!(db.stats().unwrap().first_lsn > 1);
    drop(db);
    match open(tmp.path()) {
        Err(Error::ViewVersion {
            view,
            snapshot_version,
            code_version,
            ..
        }) => assert_eq!(
            (view.as_str(), snapshot_version, code_version),
            ("stream_stats", 2, 1)
        ),
        other => panic!("expected ViewVersion, got {other:?}"),
    }
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
    assert!(matches!(panicked, Err(Error::InvalidArgument { .. })));
    db.append("other", ExpectedVersion::Any, &[b"still works"])
        .unwrap();
}

#[test]
fn backup_while_four_threads_append_opens_verifies_and_holds_every_acknowledged_event() {
    let tmp = tempfile::tempdir().unwrap();
    let db = open(tmp.path().join("db").as_path()).unwrap();
    let mut model = BTreeMap::new();
    append_some(&db, &mut model, 0, 200);
    db.snapshot().unwrap();
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
    // The copy still knows the program's views: the CLI will not snapshot it.
    assert_eq!(
        std::fs::read(dest.join("VIEWS")).unwrap(),
        std::fs::read(tmp.path().join("db").join("VIEWS")).unwrap()
    );
    assert_eq!(common::cli(&dest, &["snapshot"]).status.code(), Some(1));
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
fn a_handle_without_the_programs_views_never_snapshots_their_history_away() {
    let tmp = tempfile::tempdir().unwrap();
    let mut model = BTreeMap::new();
    {
        let db = open(tmp.path()).unwrap();
        append_some(&db, &mut model, 0, 50);
    }
    // The CLI registers no views: asked to snapshot, it refuses and says why.
    let out = common::cli(tmp.path(), &["snapshot"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("stream_stats"));
    // Nor does it snapshot on its own, however low the threshold.
    let out = common::cli(
        tmp.path(),
        &[
            "--snapshot-every-records",
            "1",
            "append",
            "--stream",
            "cli",
            "1",
            "2",
        ],
    );
    assert!(out.status.success());
    let out = common::cli(
        tmp.path(),
        &[
            "--snapshot-every-records",
            "1",
            "append",
            "--stream",
            "cli",
            "3",
        ],
    );
    assert!(out.status.success());
    assert!(
        replaydb::snapshot::list(&replaydb::storage::OsStorage, tmp.path())
            .unwrap()
            .is_empty()
    );
    // The program's view still sees everything.
    let db = open(tmp.path()).unwrap();
    let (stats, lsn) = view_of(&db);
    assert_eq!(lsn, 53);
    assert_eq!(stats["cli"].0, 3);
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
    assert!(matches!(nested, Err(Error::InvalidArgument { .. })));
    let inner = db.clone();
    let decided = db.execute("s", ExpectedVersion::Any, move |_| {
        inner.stream_version("s")?;
        Ok(vec![b"z".to_vec()])
    });
    assert!(
        matches!(decided, Err(Error::InvalidArgument { .. })),
        "{decided:?}"
    );
    assert_eq!(db.last_lsn(), 1);
    db.append("s", ExpectedVersion::Exact(1), &[b"fine"])
        .unwrap();
}

#[test]
fn reading_a_stream_from_a_held_lsn_after_compaction_works() {
    let tmp = tempfile::tempdir().unwrap();
    let mut model = BTreeMap::new();
    let db = open(tmp.path()).unwrap();
    append_some(&db, &mut model, 0, 300);
    db.snapshot().unwrap();
    append_some(&db, &mut model, 300, 300);
    db.snapshot().unwrap();
    let first = db.stats().unwrap().first_lsn;
    assert!(first > 1);
    let from = first + 10;
    let events = db.read_stream_from_lsn("s3", from, 1000).unwrap();
    assert!(!events.is_empty());
    assert!(events.iter().all(|e| e.lsn >= from && e.stream == "s3"));
    assert!(matches!(
        db.read_stream_from_lsn("s3", 1, 10),
        Err(Error::Compacted { .. })
    ));
}
