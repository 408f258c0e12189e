//! Records of any allowed size are readable the moment they are
//! acknowledged, and a valid record above the configured limit is never
//! mistaken for damage.

mod common;

use replaydb::{Db, Error, ExpectedVersion, Options};

#[test]
fn a_record_larger_than_a_segment_is_readable_at_once_and_after_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = common::small_segments(4096);
    let db = Db::open(tmp.path(), opts.clone()).unwrap();
    db.append("s", ExpectedVersion::Any, &[b"small"]).unwrap();
    let big = vec![9u8; 20_000];
    // Several writers so that a big record and small ones share a group.
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let (db, big) = (db.clone(), big.clone());
            std::thread::spawn(move || {
                for i in 0..20 {
                    let data = if (t + i) % 3 == 0 {
                        big.clone()
                    } else {
                        format!("{t}-{i}").into_bytes()
                    };
                    db.append(&format!("w{t}"), ExpectedVersion::Any, &[data])
                        .unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let check = |db: &Db| {
        let events = db.read(1, 1000).unwrap();
        assert_eq!(events.len(), 81);
        for (i, e) in events.iter().enumerate() {
            assert_eq!(e.lsn, i as u64 + 1);
        }
        assert_eq!(events.iter().filter(|e| e.data == big).count(), 27);
        for t in 0..4 {
            assert_eq!(db.read_stream(&format!("w{t}"), 1, 100).unwrap().len(), 20);
        }
    };
    check(&db);
    let mut sub = db.subscribe(1).unwrap();
    for lsn in 1..=81 {
        assert_eq!(sub.next_blocking().unwrap().unwrap().lsn, lsn);
    }
    drop((db, sub));
    check(&Db::open(tmp.path(), opts).unwrap());
}

#[test]
fn a_valid_record_above_a_smaller_limit_refuses_open_and_is_never_cut() {
    let tmp = tempfile::tempdir().unwrap();
    let big = Options {
        record_bytes_max: 1 << 20,
        ..common::small_segments(64 * 1024)
    };
    {
        let db = Db::open(tmp.path(), big.clone()).unwrap();
        db.append("s", ExpectedVersion::Any, &[b"first"]).unwrap();
        db.append("s", ExpectedVersion::Any, &[vec![1u8; 4000]])
            .unwrap();
    }
    let seg = common::segments(tmp.path())[0].clone();
    let before = std::fs::read(&seg).unwrap();
    let small = Options {
        record_bytes_max: 1024,
        ..big.clone()
    };
    match Db::open(tmp.path(), small.clone()) {
        Err(Error::RecordAboveLimit { segment, .. }) => assert_eq!(segment, seg),
        other => panic!("expected RecordAboveLimit, got {other:?}"),
    }
    assert!(matches!(
        replaydb::verify(tmp.path(), &small),
        Err(Error::RecordAboveLimit { .. })
    ));
    assert_eq!(std::fs::read(&seg).unwrap(), before, "nothing was cut");
    let db = Db::open(tmp.path(), big).unwrap();
    assert_eq!(db.read(1, 10).unwrap().len(), 2);
}
