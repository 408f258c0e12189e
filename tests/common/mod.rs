//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use replaydb::{Db, Options};

/// Options with small segments so that tests cross segment rolls cheaply.
pub fn small_segments(segment_bytes_max: u64) -> Options {
    Options::default().segment_bytes_max(Some(segment_bytes_max))
}

/// The built `replaydb` binary.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_replaydb"))
}

/// Runs `replaydb --db DIR args...` and returns its output.
pub fn cli(dir: &Path, args: &[&str]) -> Output {
    Command::new(bin())
        .arg("--db")
        .arg(dir)
        .args(args)
        .env_remove("REPLAYDB_DIR")
        .output()
        .expect("run replaydb")
}

/// The segment files of a database, sorted.
pub fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join("wal"))
        .expect("list wal")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    v.sort();
    v
}

/// Appends `n` single-event batches `"<prefix>-<i>"` to `stream` and returns
/// the segment end offset after each (single-segment databases only).
pub fn append_numbered(db: &Db, stream: &str, prefix: &str, n: usize) -> Vec<u64> {
    (0..n)
        .map(|i| {
            db.append(
                stream,
                replaydb::ExpectedVersion::Any,
                &[format!("{prefix}-{i}").into_bytes()],
            )
            .expect("append");
            db.stats().expect("stats").wal_bytes
        })
        .collect()
}

/// Copies a directory tree (files only, one level of subdirectories).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// Runs `replaydb --db DIR <args>` with `line(i)` fed on stdin, line after
/// line, and SIGKILLs it once it has printed `kill_after` LSNs (each one
/// printed only once durable). Returns the LSNs it acknowledged, in order.
/// Panics if the child stops on its own first.
pub fn append_until_killed(
    dir: &Path,
    args: &[&str],
    kill_after: usize,
    mut line: impl FnMut(u64) -> String + Send + 'static,
) -> Vec<u64> {
    use std::io::{BufRead, BufReader, Write};
    use std::process::Stdio;
    use std::sync::{Arc, Condvar, Mutex};

    let mut child = Command::new(bin())
        .arg("--db")
        .arg(dir)
        .args(args)
        .env_remove("REPLAYDB_DIR")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn replaydb");
    let mut stdin = child.stdin.take().expect("stdin");
    let stdout = child.stdout.take().expect("stdout");
    let feeder = std::thread::spawn(move || {
        for i in 0u64.. {
            if writeln!(stdin, "{}", line(i)).is_err() {
                return; // the child is gone
            }
        }
    });
    // (acknowledged LSNs, stdout closed)
    let acked = Arc::new((Mutex::new((Vec::<u64>::new(), false)), Condvar::new()));
    let reader = {
        let acked = acked.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(stdout).lines() {
                let Ok(l) = l else { break };
                acked
                    .0
                    .lock()
                    .expect("lock")
                    .0
                    .push(l.trim().parse().expect("an LSN per line"));
                acked.1.notify_all();
            }
            acked.0.lock().expect("lock").1 = true;
            acked.1.notify_all();
        })
    };
    {
        let (m, cv) = &*acked;
        let g = cv
            .wait_while(m.lock().expect("lock"), |(l, closed)| {
                l.len() < kill_after && !*closed
            })
            .expect("wait");
        assert!(!g.1, "the child stopped on its own");
    }
    child.kill().expect("kill");
    assert!(!child.wait().expect("wait").success());
    reader.join().expect("reader");
    feeder.join().expect("feeder");
    std::mem::take(&mut acked.0.lock().expect("lock").0)
}

/// Crash-loop cycles: `REPLAYDB_CRASH_CYCLES`, default 20 (the CI setting).
pub fn crash_cycles() -> u64 {
    std::env::var("REPLAYDB_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
}

/// A seeded generator for a crash loop: `REPLAYDB_CRASH_SEED` replays a
/// run; otherwise a fresh seed, printed so that a failure can be replayed.
pub fn crash_rng() -> fastrand::Rng {
    let seed = std::env::var("REPLAYDB_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("crash seed {seed} (replay with REPLAYDB_CRASH_SEED={seed})");
    fastrand::Rng::with_seed(seed)
}

/// Every file under `dir` (LOCK aside) with its length, sorted: what a
/// test compares to show an operation changed nothing.
pub fn listing(dir: &Path) -> Vec<(PathBuf, u64)> {
    fn walk(dir: &Path, out: &mut Vec<(PathBuf, u64)>) {
        for e in std::fs::read_dir(dir).expect("read_dir") {
            let e = e.expect("entry");
            if e.file_type().expect("type").is_dir() {
                walk(&e.path(), out);
            } else if e.file_name() != "LOCK" {
                out.push((e.path(), e.metadata().expect("metadata").len()));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, &mut out);
    out.sort();
    out
}

pub mod nats;
