//! A hole inside a run of records that was never synced (a write that
//! reached the disk out of order at a power cut) is a torn tail, cut with
//! its bytes kept; a hole below what a later record says was synced is
//! corruption. Old (version 1) segments keep the stricter rule.

mod common;

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;

use replaydb::{Db, Durability, Error, ExpectedVersion};

fn zero(path: &Path, offset: u64, len: usize) {
    let f = OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(&vec![0u8; len], offset).unwrap();
}

/// Appends `n` one-event batches with nothing synced in between: Buffered
/// mode with a flusher that never gets to run. Returns each record's end.
fn append_unsynced(dir: &Path, n: usize) -> Vec<u64> {
    let opts = common::small_segments(64 * 1024).durability(Durability::Buffered {
        interval: Duration::from_secs(3600),
    });
    let db = Db::open(dir, opts).unwrap();
    common::append_numbered(&db, "s", "event", n)
}

#[test]
fn a_hole_in_an_unsynced_run_is_a_torn_tail_cut_with_its_bytes_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    let ends = append_unsynced(&dir, 6);
    let seg = common::segments(&dir)[0].clone();
    // The third record's page never reached the disk; the later ones did.
    zero(&seg, ends[1], (ends[2] - ends[1]) as usize);

    let opts = common::small_segments(64 * 1024);
    let db = Db::open(&dir, opts.clone()).unwrap();
    let report = db.recovery_report().clone();
    let torn = report.torn_tail.expect("a torn tail");
    assert_eq!(torn.offset, ends[1]);
    assert!(torn.reason.contains("out of order"), "{}", torn.reason);
    assert_eq!(db.last_lsn(), 2);
    let events = db.read(1, 10).unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[1].data, b"event-1");
    let kept = report.torn_tail_kept_in.expect("cut bytes kept");
    let original_tail = std::fs::read(&kept).unwrap();
    assert_eq!(original_tail.len() as u64, ends[5] - ends[1]);
    // The log goes on after the cut, and verifies clean.
    let after = db
        .append("s", ExpectedVersion::Exact(2), &[b"after"])
        .unwrap();
    assert_eq!(after.first_lsn, 3);
    drop(db);
    replaydb::verify(&dir, &opts).unwrap();
}

#[test]
fn a_hole_below_what_a_later_record_says_was_synced_is_corruption() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    let opts = common::small_segments(64 * 1024);
    let ends = {
        // Immediate: every record is synced before the next is written.
        let db = Db::open(&dir, opts.clone()).unwrap();
        common::append_numbered(&db, "s", "event", 6)
    };
    let seg = common::segments(&dir)[0].clone();
    zero(&seg, ends[1], (ends[2] - ends[1]) as usize);
    let before = std::fs::read(&seg).unwrap();
    match Db::open(&dir, opts.clone()) {
        Err(Error::Corrupt { offset, reason, .. }) => {
            assert_eq!(offset, ends[1]);
            assert!(reason.contains("had been synced"), "{reason}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert_eq!(std::fs::read(&seg).unwrap(), before, "open changed nothing");
    assert!(matches!(
        replaydb::verify(&dir, &opts),
        Err(Error::Corrupt { offset, .. }) if offset == ends[1]
    ));
}

fn fixture_v1(dir: &Path) -> std::path::PathBuf {
    let wal = dir.join("wal");
    std::fs::create_dir_all(&wal).unwrap();
    let seg = wal.join("00000000000000000001.wal");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/wal-v1/00000000000000000001.wal"),
        &seg,
    )
    .unwrap();
    seg
}

#[test]
fn a_version_1_segment_reads_back_and_takes_appends() {
    // Written by the version 1 code: six batches of two events, alternating
    // streams "orders" and "users".
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    let old = fixture_v1(&dir);
    let fixture = std::fs::read(&old).unwrap();
    let opts = common::small_segments(4096);
    {
        let db = Db::open(&dir, opts.clone()).unwrap();
        // Open sealed the old segment as it was and started a version 2
        // segment for new appends.
        assert_eq!(std::fs::read(&old).unwrap(), fixture);
        let segs = common::segments(&dir);
        assert_eq!(segs.len(), 2);
        let header = std::fs::read(&segs[1]).unwrap();
        assert_eq!(u32::from_le_bytes(header[8..12].try_into().unwrap()), 2);
        let events = db.read(1, usize::MAX).unwrap();
        assert_eq!(events.len(), 12);
        assert_eq!(events[0].stream, "orders");
        assert_eq!(events[0].data, b"v1 event 0");
        assert_eq!(events[11].data, b"second");
        assert_eq!(db.stream_version("users").unwrap(), 6);
        for i in 0..100 {
            db.append(
                "orders",
                ExpectedVersion::Any,
                &[format!("v2 event {i:>40}")],
            )
            .unwrap();
        }
    }
    replaydb::verify(&dir, &opts).unwrap();
    let db = Db::open(&dir, opts).unwrap();
    assert_eq!(db.last_lsn(), 112);
    assert_eq!(db.stream_version("orders").unwrap(), 106);
    assert_eq!(
        db.read(13, 1).unwrap()[0].data,
        format!("v2 event {:>40}", 0).into_bytes()
    );
    assert_eq!(
        std::fs::read(&old).unwrap(),
        fixture,
        "the old segment is never rewritten"
    );
}

#[test]
fn a_hole_in_a_version_1_segment_followed_by_a_record_is_corruption() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    let seg = fixture_v1(&dir);
    // Zero the second record's header: version 1 records say nothing about
    // what was synced, so the valid records after it make it corruption.
    let first_len = {
        let f = std::fs::read(&seg).unwrap();
        32 + u32::from_le_bytes(f[32..36].try_into().unwrap()) as u64
    };
    zero(&seg, 32 + first_len, 32);
    match Db::open(&dir, common::small_segments(4096)) {
        Err(Error::Corrupt { offset, reason, .. }) => {
            assert_eq!(offset, 32 + first_len);
            assert!(reason.contains("a valid record follows"), "{reason}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn an_empty_version_1_tail_is_replaced_by_an_empty_version_2_segment() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    let seg = fixture_v1(&dir);
    let header_only = std::fs::read(&seg).unwrap()[..32].to_vec();
    std::fs::write(&seg, &header_only).unwrap();
    let db = Db::open(&dir, common::small_segments(4096)).unwrap();
    let header = std::fs::read(&seg).unwrap();
    assert_eq!(u32::from_le_bytes(header[8..12].try_into().unwrap()), 2);
    db.append("s", ExpectedVersion::NoStream, &[b"first"])
        .unwrap();
    drop(db);
    let db = Db::open(&dir, common::small_segments(4096)).unwrap();
    assert_eq!(db.read(1, 10).unwrap()[0].data, b"first");
}
