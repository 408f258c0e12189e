//! Eight separate processes appending concurrently through one owner's
//! socket: afterwards every event is present exactly once, each process's
//! events in the order it appended them, and the LSNs are gapless.

use std::path::Path;
use std::process::Command;

use replaydb::client::Client;
use replaydb::server::default_socket;
use replaydb::{Database, Db, ExpectedVersion, Options};

const PROCESSES: usize = 8;
const EVENTS_PER_PROCESS: u64 = 10_000;
const CHILD_SOCKET: &str = "REPLAYDB_TEST_CHILD_SOCKET";
const CHILD_ID: &str = "REPLAYDB_TEST_CHILD_ID";

/// One child process: appends its events through the socket it is given.
/// The test re-runs its own binary, naming itself, with [`CHILD_SOCKET`]
/// set; that run takes this path instead of the parent's.
fn child_appender(socket: String) {
    let id: usize = std::env::var(CHILD_ID).unwrap().parse().unwrap();
    let client = Client::connect(Path::new(&socket)).unwrap();
    let stream = format!("process-{id}");
    for n in 0..EVENTS_PER_PROCESS {
        let done = client
            .append(&stream, ExpectedVersion::Exact(n), &[format!("{id}:{n}")])
            .unwrap();
        assert_eq!(done.version, n + 1);
    }
}

#[test]
fn eight_processes_append_through_one_owner() {
    if let Ok(socket) = std::env::var(CHILD_SOCKET) {
        return child_appender(socket);
    }
    let tmp = tempfile::tempdir().unwrap();
    let db = Db::open(tmp.path(), Options::default()).unwrap();
    let socket = default_socket(tmp.path());
    let server = db.serve(&socket).unwrap();
    let children: Vec<_> = (0..PROCESSES)
        .map(|id| {
            Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "eight_processes_append_through_one_owner",
                    "--nocapture",
                ])
                .env(CHILD_SOCKET, &socket)
                .env(CHILD_ID, id.to_string())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success(), "a child failed");
    }
    assert!(server.connections_served() >= PROCESSES as u64);
    let total = PROCESSES as u64 * EVENTS_PER_PROCESS;
    assert_eq!(db.last_lsn(), total);
    let all = db.read(1, total as usize + 1).unwrap();
    assert_eq!(all.len() as u64, total);
    let mut next = [0u64; PROCESSES];
    for (i, e) in all.iter().enumerate() {
        assert_eq!(e.lsn, i as u64 + 1, "gapless");
        let text = String::from_utf8(e.data.clone()).unwrap();
        let (id, n) = text.split_once(':').unwrap();
        let (id, n): (usize, u64) = (id.parse().unwrap(), n.parse().unwrap());
        assert_eq!(e.stream, format!("process-{id}"));
        assert_eq!(n, next[id], "each process's events once, in its order");
        assert_eq!(e.version, n + 1);
        next[id] += 1;
    }
    assert!(next.iter().all(|&n| n == EVENTS_PER_PROCESS));
    server.stop();
}
