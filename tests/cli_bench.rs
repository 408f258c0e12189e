//! `replaydb bench --quick --json` measures every case on the disk of
//! `--dir` and reports each as one JSON object with its rate and its
//! ratio to the replaydb case doing the same work, leaving nothing behind
//! in the directory; piped, it prints no progress.

mod common;

use std::collections::HashMap;
use std::process::Command;

use serde_json::Value;

/// Every case the issue asks for, by its stable name.
const CASES: &[&str] = &[
    "disk-fdatasync",
    "disk-sequential-write",
    "replaydb-append-1-writer",
    "replaydb-append-16-writers",
    "redb-direct",
    "seed-jsonl-append",
    "seed-jsonl-read-events",
    "replaydb-registry-change",
    "seed-registry-flock",
    "replaydb-runtime-read-events",
    "replaydb-kv-put",
    "seed-kv-file-put-fsync",
    "seed-kv-file-put-nosync",
    "replaydb-kv-entries",
    "seed-kv-file-entries",
];

#[test]
fn quick_json_reports_every_case_and_cleans_up() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(common::bin())
        .args(["bench", "--quick", "--json", "--dir"])
        .arg(tmp.path())
        .env_remove("REPLAYDB_DIR")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.trim().is_empty(), "quiet when piped: {stderr}");
    let rows: HashMap<String, Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}"));
            (v["name"].as_str().unwrap().to_string(), v)
        })
        .collect();
    for name in CASES {
        let row = rows
            .get(*name)
            .unwrap_or_else(|| panic!("no {name} in {rows:?}"));
        let rate = row["ops_per_sec"].as_f64().unwrap();
        assert!(rate.is_finite() && rate > 0.0, "{name}: {rate}");
        if *name != "disk-sequential-write" {
            let ratio = row["ratio_vs_replaydb"]
                .as_f64()
                .unwrap_or_else(|| panic!("{name}"));
            assert!(ratio.is_finite() && ratio > 0.0, "{name}: {ratio}");
        }
        if name.starts_with("replaydb") {
            assert_eq!(row["ratio_vs_replaydb"].as_f64(), Some(1.0), "{name}");
        }
    }
    assert_eq!(rows.len(), CASES.len(), "{:?}", rows.keys());
    // The ratio is the rate over its replaydb case's.
    let seed = &rows["seed-registry-flock"];
    let ours = rows["replaydb-registry-change"]["ops_per_sec"]
        .as_f64()
        .unwrap();
    let want = seed["ops_per_sec"].as_f64().unwrap() / ours;
    assert!((seed["ratio_vs_replaydb"].as_f64().unwrap() - want).abs() < 1e-9);
    let per_fsync = rows["replaydb-append-16-writers"]["events_per_fsync"]
        .as_f64()
        .unwrap();
    assert!(per_fsync >= 1.0, "{per_fsync}");
    // Everything it wrote is gone.
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
}

#[test]
fn a_dir_that_cannot_be_made_is_an_error_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let out = Command::new(common::bin())
        .args(["bench", "--quick", "--dir"])
        .arg(file.join("below"))
        .env_remove("REPLAYDB_DIR")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("a-file/below"), "{stderr}");
}

#[test]
fn an_interrupted_run_removes_what_it_wrote() {
    let tmp = tempfile::tempdir().unwrap();
    let mut child = Command::new(common::bin())
        .args(["bench", "--dir"])
        .arg(tmp.path())
        .env_remove("REPLAYDB_DIR")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The run has begun once its directory is there.
    let begun = (0..2000).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(5));
        std::fs::read_dir(tmp.path()).unwrap().count() > 0
    });
    assert!(begun, "the bench made its directory");
    // SAFETY: kill has no memory preconditions; the pid is our child's.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(stderr.contains("stopped on SIGINT"), "{stderr}");
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
}
