//! `replaydb serve` shares the database on DIR/replaydb.sock until
//! SIGTERM, then stops cleanly: exit 0, the socket removed, and every
//! append a client had acknowledged in the database.

mod common;

use std::process::{Command, Stdio};

use replaydb::client::Client;
use replaydb::{Database, Db, ExpectedVersion, Options};

#[test]
fn serve_shares_the_database_until_sigterm() {
    let tmp = tempfile::tempdir().unwrap();
    let socket = replaydb::server::default_socket(tmp.path());
    let child = Command::new(common::bin())
        .arg("--db")
        .arg(tmp.path())
        .arg("serve")
        .env_remove("REPLAYDB_DIR")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Connecting waits (with backoff) for the server to answer.
    let client = Client::connect(&socket).unwrap();
    assert_eq!(client.server_pid().unwrap(), child.id());
    for i in 0..50u64 {
        client
            .append("served", ExpectedVersion::Exact(i), &[format!("{i}")])
            .unwrap();
    }
    // The owner holds the directory: nothing else opens it meanwhile.
    assert!(matches!(
        Db::open(tmp.path(), Options::default()),
        Err(replaydb::Error::Locked { .. })
    ));
    // The CLI's commands go through the server, and answer the same.
    let out = common::cli(
        tmp.path(),
        &["append", "--stream", "cli", "{\"a\":1}", "{\"b\":2}"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "51\n52\n");
    let mut piped = Command::new(common::bin())
        .arg("--db")
        .arg(tmp.path())
        .args(["append", "--stream", "cli"])
        .env_remove("REPLAYDB_DIR")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = piped.stdin.take().unwrap();
        writeln!(stdin, "{{\"c\":3}}").unwrap();
        writeln!(stdin, "{{\"d\":4}}").unwrap();
    }
    let out = piped.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "53\n54\n");
    let out = common::cli(tmp.path(), &["read", "--stream", "cli", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert!(
        lines[0].contains("\"lsn\":51") && lines[3].contains("\"d\":4"),
        "{lines:?}"
    );
    let out = common::cli(tmp.path(), &["read", "--from", "50", "--limit", "2"]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 2);
    let out = common::cli(tmp.path(), &["checkpoint"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The views' commands go through the server too.
    let out = common::cli(tmp.path(), &["kv", "put", "b", "k", "v"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("created "));
    let out = common::cli(tmp.path(), &["kv", "get", "b", "k"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim_end(), "v");
    let out = common::cli(tmp.path(), &["kv", "get", "b", "missing"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a missing key is exit 1, as embedded"
    );
    for args in [&["registry", "ls"][..], &["runtime", "ls"][..]] {
        let out = common::cli(tmp.path(), args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Stats, retention and backup through the server; the server writes
    // the backup, at the path the client names.
    let out = common::cli(tmp.path(), &["stats", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(stats["last_lsn"].as_u64().unwrap() >= 54, "{stats}");
    let out = common::cli(tmp.path(), &["retention", "set", "cli", "--max-count", "2"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = common::cli(tmp.path(), &["retention", "show", "cli"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains('2'));
    let elsewhere = tempfile::tempdir().unwrap();
    let backup = elsewhere.path().join("copy");
    let out = common::cli(tmp.path(), &["backup", backup.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        Db::open(&backup, Options::default())
            .unwrap()
            .stream_version("served")
            .unwrap(),
        50
    );
    // A command that cannot work through a server says so.
    let out = common::cli(tmp.path(), &["verify"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("served by pid {}", child.id())),
        "{err}"
    );
    // SAFETY: kill has no memory preconditions; the pid is our child's.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("stopped on SIGTERM"), "{stderr}");
    assert!(!socket.exists(), "the socket is removed");
    let db = Db::open(tmp.path(), Options::default()).unwrap();
    assert_eq!(db.stream_version("served").unwrap(), 50);
    assert_eq!(db.stream_version("cli").unwrap(), 4);
}
