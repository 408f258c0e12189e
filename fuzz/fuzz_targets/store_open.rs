//! A database whose store file is arbitrary bytes: opening it succeeds,
//! falls back, rebuilds from the log or fails with a typed error; never a
//! panic that escapes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // As in snapshot_open: redb's panics on damaged files are caught and
    // typed; only an uncaught one may abort.
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| drop(std::panic::take_hook()));
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("db");
    {
        let db = replaydb::Db::open(&dir, replaydb::Options::default()).expect("open");
        db.append("s", replaydb::ExpectedVersion::Any, &[b"one"])
            .expect("append");
    }
    std::fs::write(dir.join("store.redb"), data).expect("write");
    if let Ok(db) = replaydb::Db::open(&dir, replaydb::Options::default()) {
        // Whatever it opened to, the acknowledged event is there.
        let events = db.read(1, 10).expect("read");
        assert_eq!(events.len(), 1);
    }
});
