#![cfg(feature = "jetstream")]
//! `replaydb --log URLS --log-stream NAME` keeps the log on a JetStream
//! cluster: appends and reads work as with the local log, and a second
//! database directory on the same stream reads what the first wrote;
//! `verify` checks the store against the stream, and `repair` and
//! `backup`, which the cluster does for its own files, say so.

mod common;

use std::process::Command;

fn cli(dir: &std::path::Path, urls: &str, args: &[&str]) -> std::process::Output {
    Command::new(common::bin())
        .arg("--db")
        .arg(dir)
        .args(["--log", urls, "--log-stream", "cli"])
        .args(args)
        .env_remove("REPLAYDB_DIR")
        .env_remove("REPLAYDB_LOG")
        .output()
        .unwrap()
}

#[test]
fn append_and_read_with_the_log_on_a_cluster() {
    let cluster = common::nats::Cluster::start();
    let urls = cluster.urls.join(",");
    let dir = tempfile::tempdir().unwrap();
    // The stream's first open can race the cluster's leader election.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let out = loop {
        let out = cli(
            dir.path(),
            &urls,
            &["append", "--stream", "orders", "{\"a\":1}", "{\"b\":2}"],
        );
        if out.status.success() || std::time::Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "1\n2\n");
    let out = cli(dir.path(), &urls, &["read", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(text.contains("\"b\":2"), "{text}");
    // Another directory (another node's store) on the same stream: it
    // folds the stream into its own store from the start.
    let other = tempfile::tempdir().unwrap();
    let out = cli(
        other.path(),
        &urls,
        &["read", "--stream", "orders", "--json"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 2);
    let out = cli(other.path(), &urls, &["stats", "--json"]);
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stats["last_lsn"], 2, "{stats}");
    // Each directory's store checked against the stream, record by record.
    for d in [dir.path(), other.path()] {
        let out = cli(d, &urls, &["verify"]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains("1 history rows match the log"), "{text}");
    }
    let out = cli(dir.path(), &urls, &["repair"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("JetStream cluster"));
    let copy = tempfile::tempdir().unwrap();
    let out = cli(
        dir.path(),
        &urls,
        &["backup", copy.path().join("b").to_str().unwrap()],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("back the cluster up"));
    // A check of a stream that is not there fails, and creates nothing.
    let out = Command::new(common::bin())
        .arg("--db")
        .arg(dir.path())
        .args(["--log", &urls, "--log-stream", "nosuch", "verify"])
        .env_remove("REPLAYDB_DIR")
        .env_remove("REPLAYDB_LOG")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no stream \"nosuch\""),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(replaydb::log::JetStreamLog::open_existing(&cluster.urls, "nosuch", 1 << 20).is_err());
}
