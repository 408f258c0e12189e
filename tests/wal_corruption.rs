//! Damage inside acknowledged history is never cut silently: open fails
//! with `Corrupt` naming segment and offset, `verify` exits 1, and only
//! `repair` cuts, keeping every cut byte.

mod common;

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;

use replaydb::{Db, Error, ExpectedVersion};

fn flip_bit(path: &std::path::Path, offset: u64) {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, offset).unwrap();
    b[0] ^= 0x04;
    f.write_all_at(&b, offset).unwrap();
}

#[test]
fn flipped_bit_in_a_middle_record_fails_open_verify_and_is_repaired_keeping_the_cut_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    let opts = common::small_segments(64 * 1024);
    let ends = {
        let db = Db::open(&dir, opts.clone()).unwrap();
        common::append_numbered(&db, "s", "event", 10)
    };
    let seg = common::segments(&dir)[0].clone();
    let bad_record = ends[4]; // the sixth record starts where the fifth ends
    flip_bit(&seg, bad_record + 40);
    let original = std::fs::read(&seg).unwrap();

    match Db::open(&dir, opts.clone()) {
        Err(Error::Corrupt {
            segment,
            offset,
            reason,
        }) => {
            assert_eq!(segment, seg);
            assert_eq!(offset, bad_record);
            assert!(reason.contains("CRC"), "{reason}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert_eq!(
        std::fs::read(&seg).unwrap(),
        original,
        "a failed open changes nothing"
    );

    let out = common::cli(&dir, &["verify"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&seg.display().to_string()), "{stderr}");
    assert!(stderr.contains(&format!("byte {bad_record}")), "{stderr}");

    let out = common::cli(&dir, &["repair", "--dry-run"]);
    assert!(out.status.success());
    assert_eq!(
        std::fs::read(&seg).unwrap(),
        original,
        "a dry run changes nothing"
    );

    let out = common::cli(&dir, &["repair"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains(&format!("at byte {bad_record}")), "{said}");
    let cut_file = seg.with_extension("wal.cut");
    let cut = std::fs::read(&cut_file).unwrap();
    assert_eq!(
        &cut[..],
        &original[bad_record as usize..ends[9] as usize],
        "the cut bytes are kept, exactly"
    );
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), bad_record);

    let out = common::cli(&dir, &["verify"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let db = Db::open(&dir, opts).unwrap();
    let events = db.read(1, 100).unwrap();
    assert_eq!(events.len(), 5);
    assert_eq!(events[4].data, b"event-4");
    db.append("s", ExpectedVersion::Exact(5), &[b"after repair"])
        .unwrap();
}

#[test]
fn damage_in_a_sealed_segment_sets_later_segments_aside() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    let opts = common::small_segments(4096);
    {
        let db = Db::open(&dir, opts.clone()).unwrap();
        for i in 0..200 {
            db.append("s", ExpectedVersion::Any, &[vec![b'x'; 100 + i % 7]])
                .unwrap();
        }
    }
    let segs = common::segments(&dir);
    assert!(segs.len() > 4, "the test needs several segments");
    flip_bit(&segs[1], 32 + 40);
    match Db::open(&dir, opts.clone()) {
        Err(Error::Corrupt {
            segment, offset, ..
        }) => {
            assert_eq!(segment, segs[1]);
            assert_eq!(offset, 32);
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    let out = common::cli(&dir, &["--segment-bytes-max", "4096", "repair"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for later in &segs[2..] {
        assert!(!later.exists());
        assert!(
            later.with_extension("wal.cut").exists(),
            "{} kept aside",
            later.display()
        );
    }
    let db = Db::open(&dir, opts).unwrap();
    let first_segment_events = db.read(1, 1000).unwrap().len();
    assert!(first_segment_events > 0);
    assert_eq!(db.last_lsn(), first_segment_events as u64);
}

#[test]
fn bad_header_unknown_version_and_lsn_gap_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = common::small_segments(4096);
    let make = |name: &str| {
        let dir = tmp.path().join(name);
        let db = Db::open(&dir, opts.clone()).unwrap();
        for _ in 0..100 {
            db.append("s", ExpectedVersion::Any, &[vec![b'y'; 100]])
                .unwrap();
        }
        drop(db);
        dir
    };

    // A flipped bit in the header.
    let dir = make("header");
    let seg = common::segments(&dir)[0].clone();
    flip_bit(&seg, 3);
    assert!(matches!(
        Db::open(&dir, opts.clone()),
        Err(Error::Corrupt { offset: 0, .. })
    ));

    // A CRC-valid header of a future format version.
    let dir = make("version");
    let seg = common::segments(&dir)[0].clone();
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&seg)
        .unwrap();
    let mut h = [0u8; 32];
    f.read_exact_at(&mut h, 0).unwrap();
    h[8..12].copy_from_slice(&9u32.to_le_bytes());
    let crc = crc32fast::hash(&h[..28]);
    h[28..32].copy_from_slice(&crc.to_le_bytes());
    f.write_all_at(&h, 0).unwrap();
    match Db::open(&dir, opts.clone()) {
        Err(Error::UnsupportedVersion {
            path,
            found: 9,
            supported: 2,
        }) => assert_eq!(path, seg),
        other => panic!("expected UnsupportedVersion, got {other:?}"),
    }

    // A missing middle segment: the LSNs no longer join up.
    let dir = make("gap");
    let segs = common::segments(&dir);
    assert!(segs.len() >= 3);
    std::fs::remove_file(&segs[1]).unwrap();
    match Db::open(&dir, opts.clone()) {
        Err(Error::Corrupt {
            segment, reason, ..
        }) => {
            assert_eq!(segment, segs[2]);
            assert!(reason.contains("previous segment ends"), "{reason}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}
