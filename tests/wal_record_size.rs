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

/// A log of two records, the second 4 000 bytes, written under a 1 MiB
/// record limit: the options used and the segment.
fn small_then_large_record(dir: &std::path::Path) -> (Options, std::path::PathBuf) {
    let big = common::small_segments(64 * 1024).record_bytes_max(1 << 20);
    let db = Db::open(dir, big.clone()).unwrap();
    db.append("s", ExpectedVersion::Any, &[b"first"]).unwrap();
    db.append("s", ExpectedVersion::Any, &[vec![1u8; 4000]])
        .unwrap();
    drop(db);
    (big, common::segments(dir)[0].clone())
}

#[test]
fn a_valid_record_above_a_smaller_limit_refuses_open_and_is_never_cut() {
    let tmp = tempfile::tempdir().unwrap();
    let (big, seg) = small_then_large_record(tmp.path());
    let before = std::fs::read(&seg).unwrap();
    let small = big.clone().record_bytes_max(1024);
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

#[test]
fn damage_before_a_synced_record_above_a_smaller_limit_is_corruption_not_a_tear() {
    let tmp = tempfile::tempdir().unwrap();
    let (big, seg) = small_then_large_record(tmp.path());
    // Flip a bit in the first record's payload: the second, written after
    // the first was synced, says so even though it is above the limit.
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[32 + 40] ^= 0x04;
    std::fs::write(&seg, &bytes).unwrap();
    let small = big.record_bytes_max(1024);
    match Db::open(tmp.path(), small) {
        Err(Error::Corrupt { offset: 32, .. }) => {}
        other => panic!("expected Corrupt at byte 32, got {other:?}"),
    }
    assert_eq!(std::fs::read(&seg).unwrap(), bytes, "nothing was cut");
}
