//! A dead owner's keys are deleted, as events with their reason, a
//! bucket's TTL after it was last alive; a live owner's never are, not
//! across a restart either; keep-alives write nothing; `shutdown` deletes
//! exactly the owner's keys. The dead owner is a real process, SIGKILLed.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use replaydb::Options;
use replaydb::kv::{DeleteReason, Key, KvStore, Watch, WatchEvent};

/// A wait that never ends fails the test instead of hanging it.
const WAIT_MAX: Duration = Duration::from_secs(60);

/// The next events of `w` until `n` deletes were seen (on a thread, so a
/// watch that never gets them fails after [`WAIT_MAX`]); the deletes with
/// their reasons.
fn deletes(w: Watch, n: usize) -> (Watch, Vec<(Key, Option<DeleteReason>)>) {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut w = w;
        let mut seen = Vec::new();
        while seen.len() < n {
            let e = w.next_revisioned_blocking().unwrap();
            if let WatchEvent::Delete(k) = e.event {
                seen.push((k, e.reason));
            }
        }
        let _ = tx.send((w, seen));
    });
    rx.recv_timeout(WAIT_MAX).expect("the deletes came")
}

#[test]
fn a_dropped_owners_keys_expire_a_live_owners_stay_and_keep_alives_write_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let live = KvStore::open(tmp.path(), Options::default(), vec![]).unwrap();
    let db = live.db().expect("embedded").clone();
    let bucket = live
        .get_or_create_bucket("v1/instances", Some(Duration::from_secs(1)))
        .unwrap();
    bucket.insert(&"live/1".into(), "here", 0).unwrap();
    let dead = KvStore::new(db.clone()).unwrap();
    let dead_id = dead.connection_id();
    let dead_bucket = dead.get_bucket("v1/instances").unwrap().unwrap();
    for i in 0..3 {
        dead_bucket
            .insert(&Key::new(format!("dead/{i}")), "gone soon", 0)
            .unwrap();
    }
    let forever = KvStore::without_lease(db.clone()).unwrap();
    forever
        .get_bucket("v1/instances")
        .unwrap()
        .unwrap()
        .insert(&"static".into(), "stays", 0)
        .unwrap();
    let w = bucket.watch().unwrap();
    let lsn_before = db.last_lsn();
    let dropped_at = Instant::now();
    drop((dead, dead_bucket));
    let (_w, seen) = deletes(w, 3);
    let took = dropped_at.elapsed();
    eprintln!("a dropped owner's keys went {took:?} after it (TTL 1 s, check interval 1 s)");
    for (k, reason) in &seen {
        assert!(k.as_str().starts_with("dead/"), "{k}");
        assert_eq!(*reason, Some(DeleteReason::LeaseExpired { lease: dead_id }));
    }
    assert!(
        took >= Duration::from_secs(1),
        "not before the TTL since the owner was last alive"
    );
    assert_eq!(
        bucket.get(&"live/1".into()).unwrap().as_deref(),
        Some(&b"here"[..])
    );
    assert_eq!(
        bucket.get(&"static".into()).unwrap().as_deref(),
        Some(&b"stays"[..])
    );
    assert_eq!(
        db.last_lsn(),
        lsn_before + 3,
        "three deletes and nothing else: keep-alives are not logged"
    );
}

#[test]
fn shutdown_deletes_exactly_the_owners_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let a = KvStore::open(tmp.path(), Options::default(), vec![]).unwrap();
    let b = KvStore::new(a.db().expect("embedded").clone()).unwrap();
    let ba = a.get_or_create_bucket("v1/mdc", None).unwrap();
    let bb = b.get_or_create_bucket("v1/mdc", None).unwrap();
    let other = a.get_or_create_bucket("v1/claims", None).unwrap();
    for i in 0..700 {
        ba.insert(&Key::new(format!("a/{i}")), "a", 0).unwrap();
    }
    other.insert(&"a/claim".into(), "a", 0).unwrap();
    bb.insert(&"b/1".into(), "b", 0).unwrap();
    // b overwrites one of a's keys: it is b's now.
    bb.insert(&"a/0".into(), "b", 1).unwrap();
    let mut w = ba
        .watch_from("", a.db().expect("embedded").last_lsn() + 1)
        .unwrap();
    assert_eq!(a.shutdown().unwrap(), 700, "699 in v1/mdc, 1 in v1/claims");
    assert_eq!(ba.keys("").unwrap(), vec![Key::new("a/0"), Key::new("b/1")]);
    assert!(other.keys("").unwrap().is_empty());
    let e = w.next_revisioned_blocking().unwrap();
    assert_eq!(e.reason, Some(DeleteReason::Shutdown));
    assert_eq!(b.shutdown().unwrap(), 2);
    assert_eq!(ba.count("").unwrap(), 0);
}

/// Starts `replaydb kv put BUCKET KEY VALUE --ttl S --keep-alive` and
/// returns it once the put is acknowledged (it then holds its lease, and
/// the database, until killed).
fn child_owner(dir: &std::path::Path, key: &str, ttl_s: &str) -> std::process::Child {
    let mut child = Command::new(common::bin())
        .arg("--db")
        .arg(dir)
        .args([
            "kv",
            "put",
            "v1/instances",
            key,
            "child",
            "--ttl",
            ttl_s,
            "--keep-alive",
        ])
        .env_remove("REPLAYDB_DIR")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read");
    assert!(
        line.starts_with("created "),
        "the child acknowledged its put: {line:?}"
    );
    child
}

#[test]
fn a_sigkilled_owners_keys_expire_and_a_restart_never_expires_a_live_owners() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");

    // A TTL of 3 s: the second child below, which runs the expirer too
    // while it lives, must not outlive the live owner's grace.
    let mut first = child_owner(&dir, "dead/first", "3");
    first.kill().unwrap();
    first.wait().unwrap();

    // A live owner in this process; the dead one's lease gets its grace
    // from this open, then expires.
    let live = KvStore::open(&dir, Options::default(), vec![]).unwrap();
    let id = live.connection_id();
    let bucket = live.get_or_create_bucket("v1/instances", None).unwrap();
    assert_eq!(
        bucket.ttl(),
        Duration::from_secs(3),
        "the bucket the child created keeps its TTL"
    );
    bucket.insert(&"live/1".into(), "here", 0).unwrap();
    let w = bucket.watch().unwrap();
    let (w, seen) = deletes(w, 1);
    assert_eq!(seen[0].0, Key::new("dead/first"));
    assert!(matches!(seen[0].1, Some(DeleteReason::LeaseExpired { .. })));
    assert!(
        bucket.get(&"live/1".into()).unwrap().is_some(),
        "the live owner's key stays"
    );
    drop((w, bucket, live));

    // A restart: another owner dies meanwhile; the live one attaches again.
    let mut second = child_owner(&dir, "dead/second", "3");
    second.kill().unwrap();
    second.wait().unwrap();
    let db = KvStore::open(&dir, Options::default(), vec![])
        .unwrap()
        .db()
        .expect("embedded")
        .clone();
    let live = KvStore::with_connection_id(db, id).unwrap();
    let bucket = live.get_bucket("v1/instances").unwrap().unwrap();
    let w = bucket.watch().unwrap();
    let (_w, seen) = deletes(w, 1);
    assert_eq!(seen[0].0, Key::new("dead/second"));
    assert_eq!(
        bucket.get(&"live/1".into()).unwrap().as_deref(),
        Some(&b"here"[..]),
        "a restart does not expire a live owner's keys: the dead one's went, a TTL after the open"
    );
}

#[test]
fn an_owner_attached_twice_stays_alive_while_either_handle_does() {
    let tmp = tempfile::tempdir().unwrap();
    let first = KvStore::open(tmp.path(), Options::default(), vec![]).unwrap();
    let db = first.db().expect("embedded").clone();
    let id = first.connection_id();
    let second = KvStore::with_connection_id(db.clone(), id).unwrap();
    let bucket = second
        .get_or_create_bucket("v1/mdc", Some(Duration::from_secs(1)))
        .unwrap();
    bucket.insert(&"mine".into(), "v", 0).unwrap();
    let dead = KvStore::new(db.clone()).unwrap();
    dead.get_bucket("v1/mdc")
        .unwrap()
        .unwrap()
        .insert(&"dead".into(), "v", 0)
        .unwrap();
    let w = bucket.watch_from("", db.last_lsn() + 1).unwrap();
    drop(first); // one of the two handles of the owner
    drop(dead);
    let (_w, seen) = deletes(w, 1);
    assert_eq!(
        seen[0].0,
        Key::new("dead"),
        "only the dead owner's key expired"
    );
    assert!(bucket.get(&"mine".into()).unwrap().is_some());
}
