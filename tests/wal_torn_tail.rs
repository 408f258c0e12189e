//! A torn tail, cut at any byte of the last record, is cut cleanly on open
//! and every earlier record survives intact.

mod common;

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;

use replaydb::{Db, ExpectedVersion};

const RECORDS: usize = 5;

/// How the bytes after the cut look: how a crash can leave them.
#[derive(Clone, Copy, Debug)]
enum Torn {
    /// File truncated at the cut.
    Truncated,
    /// Zeros after the cut (the record was only partly written into a
    /// preallocated segment).
    Zeroed,
    /// Random garbage after the cut, then zeros.
    Garbage,
}

#[test]
fn torn_tail_is_cut_at_every_byte_offset_of_the_last_record() {
    let tmp = tempfile::tempdir().unwrap();
    let pristine = tmp.path().join("pristine");
    let opts = common::small_segments(64 * 1024);
    let ends = {
        let db = Db::open(&pristine, opts.clone()).unwrap();
        common::append_numbered(&db, "s", "event", RECORDS)
    };
    let last_start = ends[RECORDS - 2];
    let last_end = ends[RECORDS - 1];
    assert!(
        last_end - last_start > 32,
        "a record has a header and a payload"
    );
    let mut rng = fastrand::Rng::with_seed(7);
    for cut in last_start..last_end {
        for torn in [Torn::Truncated, Torn::Zeroed, Torn::Garbage] {
            let dir = tmp.path().join(format!("cut-{cut}-{torn:?}"));
            common::copy_dir(&pristine, &dir);
            let seg = &common::segments(&dir)[0];
            let f = OpenOptions::new().write(true).open(seg).unwrap();
            match torn {
                Torn::Truncated => f.set_len(cut).unwrap(),
                Torn::Zeroed => f
                    .write_all_at(&vec![0u8; (last_end - cut) as usize], cut)
                    .unwrap(),
                Torn::Garbage => {
                    let junk: Vec<u8> = (0..last_end - cut).map(|_| rng.u8(1..)).collect();
                    f.write_all_at(&junk, cut).unwrap();
                }
            }
            drop(f);

            let db =
                Db::open(&dir, opts.clone()).unwrap_or_else(|e| panic!("cut {cut} {torn:?}: {e}"));
            let report = db.recovery_report();
            let cut_inside_record = cut > last_start;
            match (&report.torn_tail, torn) {
                (None, Torn::Zeroed | Torn::Truncated) if !cut_inside_record => {}
                (Some(t), _) => {
                    assert_eq!(t.offset, last_start, "cut {cut} {torn:?}");
                    assert_eq!(&t.segment, seg);
                    if t.garbage_bytes > 0 {
                        let kept = report
                            .torn_tail_kept_in
                            .as_ref()
                            .expect("torn bytes are kept");
                        assert_eq!(std::fs::metadata(kept).unwrap().len(), t.garbage_bytes);
                    }
                }
                (None, _) => panic!("cut {cut} {torn:?}: torn tail not reported"),
            }
            let events = db.read(1, 100).unwrap();
            assert_eq!(events.len(), RECORDS - 1, "cut {cut} {torn:?}");
            for (i, e) in events.iter().enumerate() {
                assert_eq!(e.lsn, i as u64 + 1);
                assert_eq!(e.version, i as u64 + 1);
                assert_eq!(e.data, format!("event-{i}").into_bytes());
            }
            // The log goes on from the cut: the next append takes the
            // torn record's LSN, and a reopen sees a clean log.
            let done = db
                .append("s", ExpectedVersion::Exact(RECORDS as u64 - 1), &[b"after"])
                .unwrap();
            assert_eq!(done.first_lsn, RECORDS as u64);
            drop(db);
            let db = Db::open(&dir, opts.clone()).unwrap();
            assert!(db.recovery_report().torn_tail.is_none());
            assert_eq!(db.read(RECORDS as u64, 10).unwrap()[0].data, b"after");
            drop(db);
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }
}

#[test]
fn a_torn_batch_is_all_or_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = common::small_segments(64 * 1024);
    let end = {
        let db = Db::open(tmp.path(), opts.clone()).unwrap();
        db.append("s", ExpectedVersion::Any, &[b"one"]).unwrap();
        db.append("s", ExpectedVersion::Any, &[b"a", b"b", b"c"])
            .unwrap();
        db.stats().unwrap().wal_bytes
    };
    // Cut the last byte: the batch's third event is incomplete.
    let seg = &common::segments(tmp.path())[0];
    OpenOptions::new()
        .write(true)
        .open(seg)
        .unwrap()
        .set_len(end - 1)
        .unwrap();
    let db = Db::open(tmp.path(), opts).unwrap();
    let events = db.read(1, 10).unwrap();
    assert_eq!(events.len(), 1, "none of the torn batch survives");
    assert_eq!(db.stream_version("s").unwrap(), 1);
}
