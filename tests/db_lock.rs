//! One owner per database: a second opener, in this process or another,
//! gets `Locked` naming the holder's pid, and nothing else happens.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use replaydb::{Db, Error, Options};

#[test]
fn lock_held_by_another_process_names_its_pid() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    let mut child = Command::new(common::bin())
        .arg("--db")
        .arg(&dir)
        .args(["append", "--stream", "s"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    writeln!(stdin, r#"{{"hello": 1}}"#).unwrap();
    stdin.flush().unwrap();
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(
        line.trim(),
        "1",
        "the child acknowledged its append, so it holds the lock"
    );

    match Db::open(&dir, Options::default()) {
        Err(Error::Locked { path, pid }) => {
            assert_eq!(path, dir.join("LOCK"));
            assert_eq!(pid, Some(child.id()));
        }
        other => panic!("expected Locked, got {other:?}"),
    }
    let out = common::cli(&dir, &["stats"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("pid {}", child.id())), "{stderr}");

    drop(stdin); // EOF: the child finishes and releases the lock
    assert!(child.wait().unwrap().success());
    let db = Db::open(&dir, Options::default()).unwrap();
    assert_eq!(db.last_lsn(), 1);
}

#[test]
fn second_open_in_the_same_process_is_refused_until_the_first_closes() {
    let tmp = tempfile::tempdir().unwrap();
    let db = Db::open(tmp.path(), Options::default()).unwrap();
    match Db::open(tmp.path(), Options::default()) {
        Err(Error::Locked { pid, .. }) => assert_eq!(pid, Some(std::process::id())),
        other => panic!("expected Locked, got {other:?}"),
    }
    let clone = db.clone();
    drop(db);
    assert!(
        matches!(
            Db::open(tmp.path(), Options::default()),
            Err(Error::Locked { .. })
        ),
        "a clone keeps it open"
    );
    drop(clone);
    Db::open(tmp.path(), Options::default()).unwrap();
}

#[test]
fn files_and_directories_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    let db = Db::open(&dir, Options::default()).unwrap();
    db.append("s", replaydb::ExpectedVersion::Any, &[b"x"])
        .unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("wal")), 0o700);
    assert_eq!(mode(&dir.join("LOCK")), 0o600);
    for seg in common::segments(&dir) {
        assert_eq!(mode(&seg), 0o600);
    }
}

#[test]
fn reopen_is_not_refused_while_other_threads_fork_children() {
    // A child forked while the lock file is open inherits the descriptor
    // until it execs; the lock must not go with it (it did with flock).
    let tmp = tempfile::tempdir().unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let forker = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                std::process::Command::new("true").status().unwrap();
            }
        })
    };
    for round in 0..5 {
        let db = Db::open(tmp.path(), Options::default())
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        drop(db);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    forker.join().unwrap();
}
