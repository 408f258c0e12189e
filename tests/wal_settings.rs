//! The log's format settings are the database's: fixed when it is created,
//! used by every later open whatever that open asks for; and a small
//! database is small on disk.

use std::os::unix::fs::MetadataExt;

use replaydb::{Db, ExpectedVersion, Options};

fn with_segments(n: Option<u64>) -> Options {
    Options::default()
        .segment_bytes_max(n)
        .checkpoint_every_records(0)
}

fn fill(db: &Db, n: usize) {
    for i in 0..n {
        db.append("s", ExpectedVersion::Any, &[vec![b'x'; 100 + i % 7]])
            .unwrap();
    }
}

#[test]
fn a_second_open_with_another_segment_size_keeps_the_databases_own() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let db = Db::open(tmp.path(), with_segments(Some(4096))).unwrap();
        fill(&db, 100);
    }
    let before = db_segments(tmp.path());
    assert!(before > 2, "4 KiB segments rolled: {before}");
    // A plain open (the CLI's) and one asking for 64 MiB: both keep 4 KiB.
    for asked in [None, Some(64 << 20)] {
        let db = Db::open(tmp.path(), with_segments(asked)).unwrap();
        fill(&db, 100);
        let tail = db_tail_len(tmp.path());
        assert!(
            tail <= 4096,
            "the tail was reserved to {tail} bytes, past 4 KiB"
        );
    }
    // Still rolling at 4 KiB: the newest segment starts in the last fill.
    assert!(
        newest_first_lsn(tmp.path()) > 250,
        "{}",
        newest_first_lsn(tmp.path())
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_replaydb"))
        .arg("--db")
        .arg(tmp.path())
        .args(["--segment-bytes-max", "1048576", "stats"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("fixed when it was created"),
        "a different value is ignored with a warning: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_fresh_database_after_one_append_takes_under_a_megabyte() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    {
        let db = Db::open(&dir, Options::default()).unwrap();
        db.append("s", ExpectedVersion::Any, &[b"one event"])
            .unwrap();
    }
    let used = disk_usage(&dir);
    assert!(used < 1 << 20, "{used} bytes on disk");
}

fn db_segments(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir.join("wal"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "wal")
        })
        .count()
}

fn newest_first_lsn(dir: &std::path::Path) -> u64 {
    let mut names: Vec<String> = std::fs::read_dir(dir.join("wal"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".wal"))
        .collect();
    names.sort();
    names
        .last()
        .unwrap()
        .trim_end_matches(".wal")
        .parse()
        .unwrap()
}

fn db_tail_len(dir: &std::path::Path) -> u64 {
    let mut segs: Vec<_> = std::fs::read_dir(dir.join("wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    segs.sort();
    std::fs::metadata(segs.last().unwrap()).unwrap().len()
}

/// Bytes allocated on disk under `dir` (what `du` counts).
fn disk_usage(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let m = e.metadata().unwrap();
        total += m.blocks() * 512;
        if m.is_dir() {
            total += disk_usage(&e.path());
        }
    }
    total
}
