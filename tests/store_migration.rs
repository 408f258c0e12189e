//! A database written by release 0.1 (snapshot generations, no store)
//! opens with this one, its snapshots migrated into the store, every
//! event and view intact; a damaged generation is a typed error, never a
//! panic, and is set aside, never deleted. Committed fixtures: databases
//! written by release 0.1 (tests/fixtures/README.md) and a file found by
//! the fuzzer.

mod common;

use std::path::Path;

use std::any::Any;
use std::collections::BTreeMap;

use replaydb::registry::{Registry, RegistryView};
use replaydb::{
    Db, Error, EventRef, ExpectedVersion, Options, Result, View, ViewTables, ViewTablesRead,
};

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

/// The view the fixtures were written with: per stream, its event count,
/// in table `counts` (stream name to u64 LE), schema 1.
#[derive(Default)]
struct Counts(BTreeMap<String, u64>);

impl View for Counts {
    fn name(&self) -> &str {
        "counts"
    }
    fn schema_version(&self) -> u32 {
        1
    }
    fn apply(&mut self, e: &EventRef<'_>, tables: &mut ViewTables<'_>) -> Result<()> {
        let n = self.0.entry(e.stream.to_string()).or_default();
        *n += 1;
        tables.put("counts", e.stream.as_bytes(), &n.to_le_bytes())
    }
    fn load(&mut self, input: &ViewTablesRead<'_>) -> Result<()> {
        self.0.clear();
        input.for_each("counts", |k, v| {
            let n = u64::from_le_bytes(v.try_into().map_err(|_| input.bad_value("counts", k))?);
            self.0.insert(String::from_utf8_lossy(k).into_owned(), n);
            Ok(())
        })
    }
    fn reset(&mut self) {
        self.0.clear();
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// A copy of fixture `name` to open.
fn copy_of(name: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    common::copy_dir(&fixture(name), tmp.path());
    tmp
}

fn open(dir: &Path) -> Result<Db> {
    Db::open_with_views(
        dir,
        Options::default(),
        vec![
            Box::new(RegistryView::default()),
            Box::new(Counts::default()),
        ],
    )
}

fn counts(db: &Db) -> BTreeMap<String, u64> {
    db.view(|c: &Counts| c.0.clone()).unwrap().unwrap().value
}

fn expected_counts(orders: u64, users: u64, audit: u64) -> BTreeMap<String, u64> {
    [
        ("orders", orders),
        ("users", users),
        ("audit", audit),
        ("$registry", 2),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// Event `i` of the fixtures' program (from 1) and its LSN.
fn event(i: u64) -> (String, Vec<u8>) {
    let stream = ["orders", "users", "audit"][(i % 3) as usize];
    (stream.to_string(), format!("event-{i}").into_bytes())
}

#[test]
fn a_compacted_release_0_1_database_is_migrated_from_its_newest_snapshot() {
    let tmp = copy_of("db-0.1-compacted");
    let db = open(tmp.path()).unwrap();
    let report = db.recovery_report().clone();
    assert!(report.store.migrated, "{report:?}");
    let (from, lsn) = report
        .store
        .migrated_from
        .clone()
        .expect("seeded from a snapshot");
    assert_eq!(lsn, 302);
    assert!(from.ends_with("snapshots/00000000000000000302.redb"));
    assert_eq!(report.replayed_events, 10, "the log after the snapshot");
    assert_eq!(db.last_lsn(), 312);
    // Views: the user's, and the registry, as release 0.1 left them.
    assert_eq!(counts(&db), expected_counts(103, 104, 103));
    let reg = Registry::new(db.clone());
    // Registering beta reclaimed alpha, whose pid was not alive.
    let pods: Vec<String> = reg
        .allocations()
        .unwrap()
        .into_iter()
        .map(|a| a.pod_name)
        .collect();
    assert_eq!(pods, vec!["beta"]);
    assert_eq!(reg.find("beta").unwrap().unwrap().pid, 4343);
    let alpha = reg.history("alpha", 1, usize::MAX).unwrap().entries;
    assert_eq!(alpha.len(), 1, "the history the log still held: {alpha:?}");
    assert_eq!(alpha[0].lsn, 302);
    // Versions: expected-version checks hold across the migration.
    assert_eq!(db.stream_version("users").unwrap(), 104);
    assert!(matches!(
        db.append("users", ExpectedVersion::Exact(103), &[b"stale"]),
        Err(Error::WrongExpectedVersion { .. })
    ));
    // History: what the log still held (from LSN 238) is kept; before it,
    // release 0.1 had compacted it away, and reads say so.
    let held = db.read(238, usize::MAX).unwrap();
    assert_eq!(held.first().map(|e| e.lsn), Some(238));
    assert_eq!(held.last().map(|e| e.lsn), Some(312));
    match db.read(1, 1) {
        Err(Error::Compacted {
            oldest_available, ..
        }) => assert_eq!(oldest_available, 238),
        other => panic!("expected Compacted, got {other:?}"),
    }
    // The last ten events are events 301..=310 at LSNs 303..=312.
    for (k, e) in db.read(303, 10).unwrap().iter().enumerate() {
        let (stream, data) = event(301 + k as u64);
        assert_eq!((&e.stream, &e.data), (&stream, &data));
    }
    // The snapshots and the views file are gone; the store replaces them.
    assert!(!tmp.path().join("VIEWS").exists());
    assert!(
        replaydb::snapshot::list(&replaydb::storage::OsStorage, tmp.path())
            .unwrap()
            .is_empty()
    );
    drop(reg);
    drop(db);
    let out = common::cli(tmp.path(), &["verify"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let db = open(tmp.path()).unwrap();
    assert!(!db.recovery_report().store.migrated);
    assert_eq!(counts(&db), expected_counts(103, 104, 103));
}

#[test]
fn a_release_0_1_database_whose_log_starts_at_lsn_1_is_rebuilt_from_the_log() {
    let tmp = copy_of("db-0.1-full");
    let db = open(tmp.path()).unwrap();
    let report = db.recovery_report().clone();
    assert!(
        report.store.migrated && report.store.migrated_from.is_none(),
        "{report:?}"
    );
    assert_eq!(report.replayed_events, 72);
    assert_eq!(counts(&db), expected_counts(23, 24, 23));
    let all = db.read(1, usize::MAX).unwrap();
    assert_eq!(all.len(), 72, "the whole history");
    let reg = Registry::new(db.clone());
    assert_eq!(
        reg.allocations().unwrap().len(),
        1,
        "beta; alpha was reclaimed"
    );
    let alpha: Vec<u64> = reg
        .history("alpha", 1, usize::MAX)
        .unwrap()
        .entries
        .iter()
        .map(|h| h.lsn)
        .collect();
    assert_eq!(alpha, vec![21, 62], "registered, then reclaimed as stale");
}

#[test]
fn a_damaged_newest_snapshot_of_release_0_1_migrates_from_the_older_and_is_kept() {
    let tmp = copy_of("db-0.1-compacted");
    let newest = tmp.path().join("snapshots/00000000000000000302.redb");
    let len = std::fs::metadata(&newest).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&newest)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let db = open(tmp.path()).unwrap();
    let report = db.recovery_report().clone();
    assert_eq!(
        report.store.migrated_from.as_ref().map(|f| f.1),
        Some(241),
        "{report:?}"
    );
    assert_eq!(report.store.legacy_snapshots_damaged.len(), 1);
    assert_eq!(report.replayed_events, 71, "LSNs 242..=312");
    assert_eq!(counts(&db), expected_counts(103, 104, 103));
    assert!(
        tmp.path()
            .join("snapshots/00000000000000000302.redb.damaged")
            .exists()
    );
}

#[test]
fn a_release_0_1_database_with_no_usable_snapshot_and_a_compacted_log_fails_and_changes_nothing() {
    let tmp = copy_of("db-0.1-compacted");
    for name in ["00000000000000000241.redb", "00000000000000000302.redb"] {
        std::fs::write(tmp.path().join("snapshots").join(name), b"not redb").unwrap();
    }
    let before = common::listing(tmp.path());
    match open(tmp.path()) {
        Err(Error::NoUsableSnapshot {
            log_first_lsn,
            details,
        }) => {
            assert_eq!(log_first_lsn, 238);
            assert!(details.contains("00000000000000000241.redb"), "{details}");
        }
        other => panic!("expected NoUsableSnapshot, got {other:?}"),
    }
    assert_eq!(
        common::listing(tmp.path()),
        before,
        "nothing created, renamed or deleted"
    );
}

#[test]
fn a_new_view_on_a_store_migrated_from_a_compacted_log_is_refused_by_name() {
    let tmp = copy_of("db-0.1-compacted");
    drop(open(tmp.path()).unwrap());
    #[derive(Default)]
    struct Fresh;
    impl View for Fresh {
        fn name(&self) -> &str {
            "fresh"
        }
        fn schema_version(&self) -> u32 {
            1
        }
        fn apply(&mut self, _: &EventRef<'_>, _: &mut ViewTables<'_>) -> Result<()> {
            Ok(())
        }
        fn reset(&mut self) {}
        fn as_any(&self) -> &dyn Any {
            self
        }
    }
    match Db::open_with_views(tmp.path(), Options::default(), vec![Box::new(Fresh)]) {
        Err(Error::ViewVersion {
            view,
            log_first_lsn,
            ..
        }) => {
            assert_eq!((view.as_str(), log_first_lsn), ("fresh", 238));
        }
        other => panic!("expected ViewVersion, got {other:?}"),
    }
}

#[test]
fn a_release_0_1_database_with_a_damaged_snapshot_and_a_whole_log_opens_and_keeps_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let db = Db::open(tmp.path(), Options::default()).unwrap();
        for i in 0..20u64 {
            db.append("s", ExpectedVersion::Any, &[i.to_le_bytes()])
                .unwrap();
        }
    }
    // Make it look like release 0.1's: no store, one (damaged) snapshot.
    std::fs::remove_file(tmp.path().join("store.redb")).unwrap();
    let snaps = tmp.path().join("snapshots");
    std::fs::create_dir_all(&snaps).unwrap();
    std::fs::copy(
        fixture("snapshot-that-panicked-redb.redb"),
        snaps.join("00000000000000000011.redb"),
    )
    .unwrap();
    let db = Db::open(tmp.path(), Options::default()).unwrap();
    assert_eq!(db.recovery_report().store.legacy_snapshots_damaged.len(), 1);
    assert_eq!(db.stream_version("s").unwrap(), 20);
    assert!(snaps.join("00000000000000000011.redb.damaged").exists());
}
