//! `Durability::Buffered` acknowledges after the write, keeps everything
//! across a clean close, and a close releases the database at once.

mod common;

use std::time::Duration;

use replaydb::{Db, Durability, ExpectedVersion};

#[test]
fn buffered_appends_survive_close_and_reopen_is_never_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = common::small_segments(8192).durability(Durability::Buffered {
        interval: Duration::from_millis(1),
    });
    for round in 0..50u64 {
        let db =
            Db::open(tmp.path(), opts.clone()).unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_eq!(db.last_lsn(), round * 10);
        for i in 0..10 {
            db.append(
                "s",
                ExpectedVersion::Exact(round * 10 + i),
                &[vec![b'b'; 200]],
            )
            .unwrap();
        }
        // Closing while the flusher may be mid-sync must release the lock.
    }
    let db = Db::open(tmp.path(), opts).unwrap();
    assert_eq!(db.read(1, 1000).unwrap().len(), 500);
}

#[test]
fn sync_makes_buffered_appends_durable_with_one_fdatasync_and_says_up_to_where() {
    let tmp = tempfile::tempdir().unwrap();
    // The flusher never fires during the test.
    let opts = common::small_segments(64 * 1024).durability(Durability::Buffered {
        interval: Duration::from_secs(3600),
    });
    let db = Db::open(tmp.path(), opts).unwrap();
    for i in 0..3u8 {
        db.append("s", ExpectedVersion::Any, &[[i]]).unwrap();
    }
    let before = db.stats().unwrap().fsyncs_since_open;
    assert_eq!(db.sync().unwrap(), 3);
    assert_eq!(db.stats().unwrap().fsyncs_since_open, before + 1);

    // Immediate: already durable, nothing to do.
    let tmp = tempfile::tempdir().unwrap();
    let db = Db::open(tmp.path(), common::small_segments(64 * 1024)).unwrap();
    db.append("s", ExpectedVersion::Any, &[b"x"]).unwrap();
    let before = db.stats().unwrap().fsyncs_since_open;
    assert_eq!(db.sync().unwrap(), 1);
    assert_eq!(db.stats().unwrap().fsyncs_since_open, before);
}
