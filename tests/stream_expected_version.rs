//! Optimistic concurrency: a batch is appended only if the stream is at
//! the expected version; otherwise nothing is appended, and concurrent
//! writers racing on one version have exactly one winner.

mod common;

use std::sync::{Arc, Barrier};

use replaydb::{Db, Error, ExpectedVersion, Options};

#[test]
fn wrong_expected_version_appends_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let db = Db::open(tmp.path(), Options::default()).unwrap();
    let a = db
        .append(
            "acct",
            ExpectedVersion::NoStream,
            &[&b"open"[..], b"deposit"],
        )
        .unwrap();
    assert_eq!((a.first_lsn, a.last_lsn, a.version), (1, 2, 2));

    for (expected, actual) in [
        (ExpectedVersion::NoStream, 2),
        (ExpectedVersion::Exact(1), 2),
        (ExpectedVersion::Exact(3), 2),
    ] {
        match db.append("acct", expected, &[b"nope"]) {
            Err(Error::WrongExpectedVersion {
                stream,
                expected: e,
                actual: a,
            }) => {
                assert_eq!((stream.as_str(), e, a), ("acct", expected, actual));
            }
            other => panic!("expected WrongExpectedVersion, got {other:?}"),
        }
    }
    assert_eq!(db.last_lsn(), 2, "nothing appended");
    assert_eq!(db.stream_version("acct").unwrap(), 2);
    assert!(matches!(
        db.append("other", ExpectedVersion::Exact(1), &[b"x"]),
        Err(Error::WrongExpectedVersion { actual: 0, .. })
    ));

    let b = db
        .append("acct", ExpectedVersion::Exact(2), &[b"withdraw"])
        .unwrap();
    assert_eq!((b.first_lsn, b.version), (3, 3));
    let c = db
        .append("other", ExpectedVersion::Exact(0), &[b"x"])
        .unwrap();
    assert_eq!((c.first_lsn, c.version), (4, 1));

    // Versions survive a reopen.
    drop(db);
    let db = Db::open(tmp.path(), Options::default()).unwrap();
    assert_eq!(db.stream_version("acct").unwrap(), 3);
    assert!(matches!(
        db.append("acct", ExpectedVersion::Exact(2), &[b"stale"]),
        Err(Error::WrongExpectedVersion { actual: 3, .. })
    ));
}

#[test]
fn racing_writers_have_exactly_one_winner_per_version() {
    let tmp = tempfile::tempdir().unwrap();
    let db = Db::open(tmp.path(), Options::default()).unwrap();
    const THREADS: usize = 8;
    const ROUNDS: u64 = 30;
    let barrier = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let db = db.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let mut wins = Vec::new();
                for round in 0..ROUNDS {
                    barrier.wait();
                    let data = format!("t{t}-r{round}").into_bytes();
                    match db.append("race", ExpectedVersion::Exact(round), &[data]) {
                        Ok(a) => wins.push(a.version),
                        Err(Error::WrongExpectedVersion { .. }) => {}
                        Err(e) => panic!("{e}"),
                    }
                    barrier.wait();
                }
                wins
            })
        })
        .collect();
    let mut wins: Vec<u64> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    wins.sort();
    assert_eq!(
        wins,
        (1..=ROUNDS).collect::<Vec<_>>(),
        "one winner per round"
    );
    let events = db.read_stream("race", 1, 1000).unwrap();
    assert_eq!(events.len() as u64, ROUNDS);
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.version, i as u64 + 1);
        assert!(String::from_utf8_lossy(&e.data).ends_with(&format!("-r{i}")));
    }
}

#[test]
fn reads_page_by_lsn_and_by_stream_version() {
    let tmp = tempfile::tempdir().unwrap();
    let db = Db::open(tmp.path(), common::small_segments(4096)).unwrap();
    for i in 0..300u64 {
        let stream = if i % 3 == 0 { "a" } else { "b" };
        db.append(stream, ExpectedVersion::Any, &[i.to_le_bytes()])
            .unwrap();
    }
    assert!(db.stats().unwrap().segments > 3);
    // Global log pages.
    let mut from = 1;
    let mut seen = 0u64;
    loop {
        let page = db.read(from, 37).unwrap();
        if page.is_empty() {
            break;
        }
        for e in &page {
            assert_eq!(e.lsn, seen + 1);
            assert_eq!(e.data, seen.to_le_bytes());
            seen += 1;
        }
        from = page.last().unwrap().lsn + 1;
    }
    assert_eq!(seen, 300);
    assert_eq!(
        db.read(150, 2)
            .unwrap()
            .iter()
            .map(|e| e.lsn)
            .collect::<Vec<_>>(),
        vec![150, 151]
    );
    assert!(db.read(301, 10).unwrap().is_empty());
    // Stream pages.
    let a = db.read_stream("a", 1, 1000).unwrap();
    assert_eq!(a.len(), 100);
    assert!(
        a.iter()
            .enumerate()
            .all(|(i, e)| e.version == i as u64 + 1 && e.lsn == 3 * i as u64 + 1)
    );
    let page = db.read_stream("b", 50, 3).unwrap();
    assert_eq!(
        page.iter().map(|e| e.version).collect::<Vec<_>>(),
        vec![50, 51, 52]
    );
    assert!(db.read_stream("missing", 1, 10).unwrap().is_empty());
    let by_lsn = db.read_stream_from_lsn("a", 100, 2).unwrap();
    assert_eq!(
        by_lsn.iter().map(|e| e.lsn).collect::<Vec<_>>(),
        vec![100, 103]
    );
}

#[test]
fn bad_arguments_are_typed_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = Options::default().record_bytes_max(1024);
    let db = Db::open(tmp.path(), opts).unwrap();
    assert!(matches!(
        db.append("../etc", ExpectedVersion::Any, &[b"x"]),
        Err(Error::InvalidStreamName { .. })
    ));
    let empty: [&[u8]; 0] = [];
    assert!(matches!(
        db.append("s", ExpectedVersion::Any, &empty),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        db.append("s", ExpectedVersion::Any, &[vec![0u8; 2000]]),
        Err(Error::RecordTooLarge {
            limit_bytes: 1024,
            ..
        })
    ));
    assert_eq!(db.last_lsn(), 0);
    let bad = Options::default().segment_bytes_max(Some(10));
    assert!(matches!(
        Db::open(tmp.path().join("x"), bad),
        Err(Error::InvalidArgument { .. })
    ));
}
