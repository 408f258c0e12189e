//! The CLI contract scripts rely on: append from arguments or stdin with
//! LSNs printed once durable, invalid JSON refused by line with earlier
//! lines kept, `read --json` giving back the original JSON, `stats`.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::{Value, json};

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn read_json(dir: &std::path::Path, extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["read", "--json"];
    args.extend_from_slice(extra);
    let out = common::cli(dir, &args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn append_arguments_as_one_batch_and_read_them_back_as_json() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    let out = common::cli(
        &dir,
        &[
            "append",
            "--stream",
            "orders",
            "--expect-version",
            "none",
            r#"{"a":1}"#,
            "[1,2.5,\"x\"]",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout(&out), "1\n2\n");
    let out = common::cli(&dir, &["append", "--stream", "other", "null"]);
    assert_eq!(stdout(&out), "3\n");

    let all = read_json(&dir, &[]);
    assert_eq!(
        all,
        vec![
            json!({"lsn": 1, "stream": "orders", "version": 1, "data": {"a": 1}}),
            json!({"lsn": 2, "stream": "orders", "version": 2, "data": [1, 2.5, "x"]}),
            json!({"lsn": 3, "stream": "other", "version": 1, "data": null}),
        ]
    );
    assert_eq!(read_json(&dir, &["--from", "2", "--limit", "1"]).len(), 1);
    assert_eq!(
        read_json(&dir, &["--stream", "orders", "--from", "2"])[0]["lsn"],
        json!(2)
    );

    // A wrong expected version is refused with the numbers, nothing appended.
    let out = common::cli(
        &dir,
        &["append", "--stream", "orders", "--expect-version", "7", "1"],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("expected version 7") && stderr.contains("at 2"),
        "{stderr}"
    );
    // A bad argument is refused before anything is opened or written.
    let out = common::cli(&dir, &["append", "--stream", "orders", "{oops"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("argument 1: invalid JSON"));
    let out = common::cli(&dir, &["append", "--stream", "../x", "1"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(read_json(&dir, &[]).len(), 3);

    let out = common::cli(&dir, &["stats", "--json"]);
    let stats: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(
        (
            stats["events"].clone(),
            stats["streams"].clone(),
            stats["last_lsn"].clone()
        ),
        (json!(3), json!(2), json!(3))
    );
}

#[test]
fn stdin_lines_are_acknowledged_and_invalid_json_stops_with_its_line_number() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    let mut child = Command::new(common::bin())
        .arg("--db")
        .arg(&dir)
        .args(["append", "--stream", "s", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"{\"n\":1}\n\n{\"n\":2}\n{\"n\": 3,,}\n{\"n\":4}\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stdout(&out),
        "1\n2\n",
        "the two lines before the bad one are acknowledged"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("stdin line 4: invalid JSON"), "{stderr}");
    let data: Vec<Value> = read_json(&dir, &[])
        .into_iter()
        .map(|e| e["data"].clone())
        .collect();
    assert_eq!(
        data,
        vec![json!({"n": 1}), json!({"n": 2})],
        "nothing of or after the bad line"
    );
}

#[test]
fn verify_and_stats_on_a_missing_database_fail_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("nothing-here");
    let out = common::cli(&dir, &["verify"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no replaydb database here"));
    assert!(!dir.exists(), "verify creates nothing");
}

#[test]
fn default_directory_comes_from_the_environment() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("from-env");
    let out = Command::new(common::bin())
        .args(["append", "--stream", "s", "1"])
        .env("REPLAYDB_DIR", &dir)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(dir.join("wal").is_dir());
}

#[test]
fn read_to_a_full_disk_fails_instead_of_stopping_short() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    let out = common::cli(&dir, &["append", "--stream", "s", "{\"a\":1}"]);
    assert!(out.status.success());
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = std::process::Command::new(common::bin())
        .args(["--db", dir.to_str().unwrap(), "read"])
        .stdout(full)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("write to standard output"));
}
