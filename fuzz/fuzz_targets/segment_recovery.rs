//! Recovery from arbitrary segment bytes: open returns a valid prefix of
//! the log or a typed error, never a panic; what it returns reads back
//! gapless, and appending after it works.
#![no_main]

use libfuzzer_sys::fuzz_target;
use replaydb::wal::format::encode_segment_header_version;
use replaydb::{Db, ExpectedVersion, Options};

fuzz_target!(|data: &[u8]| {
    let tmp = tempfile::tempdir().expect("tempdir");
    let wal = tmp.path().join("wal");
    std::fs::create_dir_all(&wal).expect("mkdir");
    // Half the inputs get a valid header, so the fuzzer reaches records;
    // of those, half are version 1 segments (the older torn-tail rule).
    let mut bytes = Vec::new();
    if let Some(&b) = data.first().filter(|b| *b & 1 == 1) {
        let version = if b & 2 == 2 { 1 } else { 2 };
        bytes.extend_from_slice(&encode_segment_header_version(1, version));
        bytes.extend_from_slice(&data[1..]);
    } else {
        bytes.extend_from_slice(data);
    }
    std::fs::write(wal.join(replaydb::layout::segment_file_name(1)), &bytes).expect("write");
    let opts = Options::default().segment_bytes_max(Some(64 * 1024));
    let Ok(db) = Db::open(tmp.path(), opts) else { return };
    let events = db.read(1, usize::MAX).expect("a recovered log reads back");
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.lsn, i as u64 + 1);
    }
    let done = db.append("fuzz", ExpectedVersion::Any, &[b"after"]).expect("append after recovery");
    assert_eq!(done.first_lsn, events.len() as u64 + 1);
});
