//! Snapshot files of arbitrary bytes: opening one returns its contents or
//! a typed error, never a panic that escapes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // libfuzzer-sys aborts on any panic, caught or not. replaydb catches
    // redb's panics on damaged files (a typed error); put back the
    // default hook so that caught panics are not counted as crashes. An
    // uncaught panic still aborts at the fuzzer's FFI boundary.
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| drop(std::panic::take_hook()));
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("00000000000000000001.redb");
    std::fs::write(&path, data).expect("write");
    let _ = replaydb::snapshot::open(&replaydb::storage::OsStorage, &path);
});
