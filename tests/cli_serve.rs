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
    // SAFETY: kill has no memory preconditions; the pid is our child's.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("stopped on SIGTERM"), "{stderr}");
    assert!(!socket.exists(), "the socket is removed");
    let db = Db::open(tmp.path(), Options::default()).unwrap();
    assert_eq!(db.stream_version("served").unwrap(), 50);
}
