//! `Durability::Buffered` acknowledges after the write, keeps everything
//! across a clean close, and a close releases the database at once.

mod common;

use std::time::Duration;

use replaydb::{Db, Durability, ExpectedVersion, Options};

#[test]
fn buffered_appends_survive_close_and_reopen_is_never_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = Options {
        durability: Durability::Buffered {
            interval: Duration::from_millis(1),
        },
        ..common::small_segments(8192)
    };
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
