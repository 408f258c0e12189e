//! The engine's logic does not depend on where the log lives: one scenario
//! (batches with expected versions, commands racing for one claim, a
//! retention policy, checkpoints that truncate the log, a subscriber)
//! gives the same results on the local WAL over real files, on the WAL
//! over the simulated disk, on the in-memory log with no files at all,
//! and on a three-node NATS JetStream cluster.

mod common;

use std::sync::Arc;

use replaydb::storage::{OsStorage, SimDisk};
use replaydb::{Db, Error, ExpectedVersion, LogKind, Options, Retention};

/// What the scenario observed, to compare across logs.
#[derive(Debug, PartialEq, Eq)]
struct Observed {
    appended: Vec<(u64, u64)>,
    refused: usize,
    claims: usize,
    history: Vec<(u64, String, u64, Vec<u8>)>,
    held_from: u64,
    seen: Vec<u64>,
    versions: Vec<u64>,
}

fn scenario(db: &Db) -> Observed {
    let mut appended = Vec::new();
    let mut refused = 0;
    for i in 0..40u64 {
        let stream = format!("s{}", i % 4);
        let expected = if i % 9 == 5 {
            ExpectedVersion::Exact(999)
        } else {
            ExpectedVersion::Any
        };
        match db.append(&stream, expected, &[format!("e{i}"), format!("f{i}")]) {
            Ok(a) => appended.push((a.first_lsn, a.version)),
            Err(Error::WrongExpectedVersion { .. }) => refused += 1,
            Err(e) => panic!("{e}"),
        }
        if i == 20 {
            db.checkpoint().unwrap();
        }
    }
    // Four commands race for one claim: exactly one wins.
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let db = db.clone();
            std::thread::spawn(move || {
                db.execute("claim", ExpectedVersion::NoStream, move |_| {
                    Ok(vec![format!("owner {t}").into_bytes()])
                })
            })
        })
        .collect();
    let claims = handles
        .into_iter()
        .map(|h| h.join().unwrap())
        .filter(|r| matches!(r, Ok(Some(_))))
        .count();
    db.set_retention("s1", Retention::max_count(3)).unwrap();
    db.checkpoint().unwrap();
    let history = db
        .read(1, usize::MAX)
        .unwrap()
        .into_iter()
        .filter(|e| e.stream != "claim")
        .map(|e| (e.lsn, e.stream, e.version, e.data))
        .collect();
    let held_from = match db.read_stream("s1", 1, 10) {
        Err(Error::Compacted {
            oldest_available, ..
        }) => oldest_available,
        other => panic!("expected Compacted, got {other:?}"),
    };
    let mut sub = db.subscribe(1).unwrap();
    let mut seen = Vec::new();
    while let Some(e) = sub.try_next() {
        seen.push(e.unwrap().lsn);
    }
    let versions = ["s0", "s1", "s2", "s3", "claim"]
        .iter()
        .map(|s| db.stream_version(s).unwrap())
        .collect();
    Observed {
        appended,
        refused,
        claims,
        history,
        held_from,
        seen,
        versions,
    }
}

fn small() -> Options {
    Options::default()
        .segment_bytes_max(Some(4096))
        .checkpoint_every_records(0)
}

#[test]
fn one_scenario_gives_the_same_results_on_files_on_the_simulated_disk_and_in_memory() {
    let files = tempfile::tempdir().unwrap();
    let on_files = scenario(&Db::open(files.path(), small().storage(Arc::new(OsStorage))).unwrap());
    let root = tempfile::tempdir().unwrap();
    let disk = SimDisk::new(root.path()).unwrap();
    let on_sim = scenario(
        &Db::open(
            disk.root().join("db"),
            small().storage(Arc::new(disk.handle())),
        )
        .unwrap(),
    );
    let in_memory = scenario(&Db::open_in_memory(small(), vec![]).unwrap());
    assert_eq!(on_files.refused, 4);
    assert_eq!(on_files.claims, 1, "exactly one command wins the claim");
    assert_eq!(
        on_files.held_from, 16,
        "s1 keeps the newest 3 of its 18 events"
    );
    assert_eq!(
        on_files.seen.len(),
        on_files.history.len() + 1,
        "the subscriber sees what the history holds, and the claim"
    );
    assert_eq!(on_files, on_sim);
    assert_eq!(on_files, in_memory);
}

#[test]
fn a_database_in_memory_touches_no_file() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd_before = std::fs::read_dir(".").unwrap().count();
    let db = Db::open_in_memory(Options::default().log(LogKind::Memory), vec![]).unwrap();
    db.append("s", ExpectedVersion::Any, &[b"x"]).unwrap();
    db.checkpoint().unwrap();
    assert_eq!(db.read(1, 10).unwrap().len(), 1);
    assert_eq!(db.log_stats().kind, "memory");
    assert!(
        db.backup(tmp.path().join("copy")).is_err(),
        "nothing to copy"
    );
    drop(db);
    assert_eq!(std::fs::read_dir(".").unwrap().count(), cwd_before);
}

#[cfg(feature = "jetstream")]
#[test]
fn the_same_scenario_gives_the_same_results_on_a_jetstream_cluster() {
    let cluster = common::nats::Cluster::start();
    let store = tempfile::tempdir().unwrap();
    let log = LogKind::JetStream {
        servers: cluster.urls.clone(),
        stream: "scenario".into(),
        replicas: 3,
    };
    let db = common::nats::open_retrying(|| Db::open(store.path(), small().log(log.clone())));
    let on_jetstream = scenario(&db);
    let in_memory = scenario(&Db::open_in_memory(small(), vec![]).unwrap());
    assert_eq!(on_jetstream, in_memory);
    // Reopened from its store and the stream: the same database.
    let (last, events) = (db.last_lsn(), db.read(1, 10_000).unwrap());
    drop(db);
    let again = Db::open(store.path(), small().log(log)).unwrap();
    assert_eq!(again.last_lsn(), last);
    assert_eq!(again.read(1, 10_000).unwrap(), events);
    assert_eq!(again.stats().unwrap().applied_lsn, last);
}
