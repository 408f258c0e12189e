//! The registry, runtime and KV handles work the same through a server as
//! embedded: the same answers, the same typed refusals, leases held by
//! the client's connection, and watches and subscriptions that deliver
//! every change once across a server restart.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use replaydb::client::{Client, ClientOptions};
use replaydb::kv::{DeleteReason, Key, KvError, KvStore, KvView, StoreOutcome, WatchEvent};
use replaydb::registry::{Registry, RegistryError, RegistryView, ScopeRule};
use replaydb::runtime::{
    CreateWorkerRequest, RuntimeError, RuntimeOptions, RuntimeView, Runtimes, TranscriptQuery,
    WorkerId, WorkerInput, WorkerRef,
};
use replaydb::server::default_socket;
use replaydb::{Db, Error, Options, View};

fn views() -> Vec<Box<dyn View>> {
    vec![
        Box::new(RegistryView::default()),
        Box::new(RuntimeView::default()),
        Box::new(KvView::default()),
    ]
}

fn open(dir: &Path) -> Db {
    Db::open_with_views(dir, Options::default(), views()).unwrap()
}

fn client(dir: &Path) -> Client {
    Client::connect_with(
        default_socket(dir),
        ClientOptions::default().reconnect_for(Duration::from_secs(10)),
    )
    .unwrap()
}

#[test]
fn registry_operations_and_refusals_are_the_embedded_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let db = open(tmp.path());
    let _server = db.serve(default_socket(tmp.path())).unwrap();
    let remote = Registry::remote(client(tmp.path()));
    let embedded = Registry::new(db.clone());
    assert!(remote.db().is_none() && embedded.db().is_some());

    let pid = std::process::id();
    let seg = uuid::Uuid::new_v4();
    let a = remote
        .register_pod(
            "a",
            pid,
            "/run/a.sock",
            vec![ScopeRule::write("/src").unwrap()],
            vec![],
            seg,
        )
        .unwrap();
    // The same conflict, typed, through the socket.
    let clash = remote.register_pod(
        "b",
        pid,
        "/run/b.sock",
        vec![ScopeRule::write("/src/core").unwrap()],
        vec![],
        uuid::Uuid::new_v4(),
    );
    match clash {
        Err(RegistryError::WriteConflict { competitor, .. }) => assert_eq!(competitor, "a"),
        other => panic!("expected WriteConflict, got {other:?}"),
    }
    assert!(matches!(
        remote.release_pod("nobody"),
        Err(RegistryError::UnknownPod(n)) if n == "nobody"
    ));
    assert_eq!(
        remote.allocations().unwrap(),
        embedded.allocations().unwrap()
    );
    assert_eq!(remote.find("a").unwrap(), embedded.find("a").unwrap());
    assert_eq!(remote.find_by_segment(seg).unwrap().unwrap().pod_name, "a");
    assert_eq!(
        remote.lookup_segment(seg).unwrap(),
        Some(("a".to_string(), "/run/a.sock".into(), pid))
    );
    assert!(
        remote
            .has_effective("a", &ScopeRule::write("/src/x").unwrap())
            .unwrap()
    );
    let seg2 = uuid::Uuid::new_v4();
    remote.update_segment("a", seg2).unwrap();
    assert_eq!(embedded.find("a").unwrap().unwrap().segment_id, Some(seg2));
    assert_eq!(
        remote.history("a", 0, 100).unwrap(),
        embedded.history("a", 0, 100).unwrap()
    );
    assert_eq!(remote.history("a", 0, 100).unwrap().entries.len(), 2);
    // A function cannot cross: said so, typed.
    assert!(matches!(
        remote.reclaim_stale_with(|_| false),
        Err(RegistryError::Db(Error::Unsupported { .. }))
    ));
    // The guard the client holds releases through the server.
    drop(a);
    assert!(embedded.find("a").unwrap().is_none());
}

#[test]
fn runtime_operations_subscriptions_and_refusals_are_the_embedded_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let db = open(tmp.path());
    let _server = db.serve(default_socket(tmp.path())).unwrap();
    let remote = Runtimes::remote(client(tmp.path()));
    let embedded = Runtimes::new(db.clone());

    let rt = remote.open_runtime(RuntimeOptions::default()).unwrap();
    let worker = rt.create_worker(CreateWorkerRequest::default()).unwrap();
    rt.send_input(&worker.worker_ref, WorkerInput::user("hello"))
        .unwrap();
    let local_rt = embedded.runtime(rt.runtime_id()).unwrap();
    assert_eq!(remote.list().unwrap(), embedded.list().unwrap());
    assert_eq!(rt.summary().unwrap(), local_rt.summary().unwrap());
    assert_eq!(rt.list_workers().unwrap(), local_rt.list_workers().unwrap());
    let page = rt
        .transcript_projection(&worker.worker_ref, TranscriptQuery::new(0, 10))
        .unwrap();
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0].content, "hello");

    // Typed refusals.
    let missing = WorkerRef::new(
        rt.runtime_id().clone(),
        WorkerId::new("worker-nope").unwrap(),
    );
    assert!(matches!(
        rt.worker_detail(&missing),
        Err(RuntimeError::WorkerNotFound { .. })
    ));
    assert!(matches!(
        rt.read_events(&rt.event_cursor_from_start(), 1 << 30),
        Err(RuntimeError::LimitTooLarge { .. })
    ));
    let unknown = replaydb::runtime::RuntimeId::new("no-such-runtime").unwrap();
    assert!(matches!(
        remote.runtime(&unknown),
        Err(RuntimeError::UnknownRuntime(_))
    ));

    // A subscription through the server sees what was there, then what
    // the embedded side writes after it started, in order, once.
    let mut sub = rt.subscribe_events(rt.event_cursor_from_start()).unwrap();
    let mut seen = Vec::new();
    while let Some(batch) = sub.try_next(100).unwrap() {
        seen.extend(batch.events.into_iter().map(|e| e.id));
    }
    let before = seen.len();
    assert_eq!(before as u64, local_rt.summary().unwrap().last_event_id);
    let writer = std::thread::spawn({
        let local_rt = local_rt.clone();
        let w = worker.worker_ref.clone();
        move || {
            for i in 0..5 {
                local_rt
                    .send_input(&w, WorkerInput::user(format!("more {i}")))
                    .unwrap();
            }
        }
    });
    while seen.len() < before + 5 {
        let batch = sub.next_blocking(100).unwrap().expect("a running runtime");
        seen.extend(batch.events.into_iter().map(|e| e.id));
    }
    writer.join().unwrap();
    let want: Vec<u64> = (1..=seen.len() as u64).collect();
    assert_eq!(seen, want, "every event once, in order");

    assert_eq!(
        rt.stop_runtime().unwrap(),
        local_rt.summary().unwrap().last_event_id
    );
    assert!(matches!(
        rt.create_worker(CreateWorkerRequest::default()),
        Err(RuntimeError::RuntimeStopped { .. })
    ));
}

#[test]
fn kv_operations_refusals_and_watches_are_the_embedded_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let db = open(tmp.path());
    let _server = db.serve(default_socket(tmp.path())).unwrap();
    let remote = KvStore::remote(client(tmp.path())).unwrap();
    let embedded = KvStore::without_lease(db.clone()).unwrap();

    let bucket = remote
        .get_or_create_bucket("v1/instances", Some(Duration::from_secs(5)))
        .unwrap();
    assert_eq!(bucket.ttl(), Duration::from_secs(5));
    let local = embedded.get_bucket("v1/instances").unwrap().unwrap();
    assert_eq!(local.ttl(), Duration::from_secs(5));
    assert_eq!(remote.buckets().unwrap(), vec!["v1/instances".to_string()]);

    let k = Key::new("ns/a");
    let StoreOutcome::Created(r1) = bucket.insert(&k, b"one".to_vec(), 0).unwrap() else {
        panic!("created");
    };
    assert_eq!(
        bucket.insert(&k, b"two".to_vec(), 0).unwrap(),
        StoreOutcome::Exists(r1)
    );
    assert_eq!(bucket.get(&k).unwrap().as_deref(), Some(&b"one"[..]));
    let (value, row) = bucket.get_with_revision(&k).unwrap().unwrap();
    assert_eq!((value.as_slice(), row.mod_revision), (&b"one"[..], r1));
    assert_eq!(row.lease, remote.connection_id());
    assert!(matches!(
        bucket.compare_and_replace(&k, b"wrong".to_vec(), b"x".to_vec()),
        Err(KvError::Retry)
    ));
    assert!(matches!(
        bucket.compare_and_replace(&Key::new("ns/none"), b"a".to_vec(), b"b".to_vec()),
        Err(KvError::MissingKey(_))
    ));
    assert!(matches!(
        bucket.compare_and_replace(&k, b"one".to_vec(), b"three".to_vec()),
        Ok(StoreOutcome::Created(_))
    ));
    bucket
        .insert(&Key::new("ns/b"), b"bee".to_vec(), 0)
        .unwrap();
    bucket.insert(&Key::new("other"), b"o".to_vec(), 0).unwrap();
    assert_eq!(bucket.entries().unwrap(), local.entries().unwrap());
    assert_eq!(bucket.keys("ns/").unwrap(), local.keys("ns/").unwrap());
    assert_eq!(bucket.count("ns/").unwrap(), 2);
    assert!(matches!(
        bucket.delete(&Key::new("ns/none")),
        Err(KvError::MissingKey(_))
    ));

    // A watch through the server: the snapshot, then every change the
    // embedded side makes, once, in order.
    let mut watch = bucket.watch_prefix("ns/").unwrap();
    let resync = watch.next_blocking().unwrap();
    let want: HashMap<Key, Vec<u8>> = [
        (Key::new("ns/a"), b"three".to_vec()),
        (Key::new("ns/b"), b"bee".to_vec()),
    ]
    .into();
    assert_eq!(resync, WatchEvent::Resync(want));
    let writer = std::thread::spawn(move || {
        local.insert(&Key::new("ns/c"), b"c".to_vec(), 0).unwrap();
        local
            .insert(&Key::new("elsewhere"), b"e".to_vec(), 0)
            .unwrap();
        local.delete(&Key::new("ns/b")).unwrap();
    });
    assert_eq!(
        watch.next_blocking().unwrap(),
        WatchEvent::Put(replaydb::kv::KeyValue::new(Key::new("ns/c"), b"c".to_vec()))
    );
    let deleted = watch.next_revisioned_blocking().unwrap();
    assert_eq!(deleted.event, WatchEvent::Delete(Key::new("ns/b")));
    assert_eq!(deleted.reason, Some(DeleteReason::Deleted));
    writer.join().unwrap();
    assert!(watch.try_next_revisioned().unwrap().is_none());

    // Shutdown deletes this owner's keys (ns/a and other; ns/b is gone
    // already), as embedded, and leaves the embedded owner's.
    assert_eq!(remote.shutdown().unwrap(), 2);
    assert_eq!(
        bucket.keys("").unwrap(),
        vec![Key::new("elsewhere"), Key::new("ns/c")]
    );
}

/// The next key deleted on `$kv`, with why, as the log has it (read from
/// the embedded database, so no KV store of this process keeps an
/// expirer running: the server's own does).
fn next_kv_delete(sub: &mut replaydb::Subscription) -> (String, String, DeleteReason) {
    loop {
        let e = sub.next().expect("the log goes on").unwrap();
        if e.stream != replaydb::kv::KV_STREAM {
            continue;
        }
        let record = replaydb::kv::KvRecord::decode(&e.data).unwrap();
        if let replaydb::kv::KvChange::Delete {
            bucket,
            key,
            reason,
        } = record.change
        {
            return (bucket, key, reason);
        }
    }
}

#[test]
fn a_remote_owners_keys_live_while_its_connection_does() {
    let tmp = tempfile::tempdir().unwrap();
    let db = open(tmp.path());
    let _server = db.serve(default_socket(tmp.path())).unwrap();
    let mut deletes = db.subscribe(db.last_lsn() + 1).unwrap();

    let client = client(tmp.path());
    let owner = KvStore::remote(client.clone()).unwrap();
    let lease = owner.connection_id();
    let bucket = owner
        .get_or_create_bucket("leases", Some(Duration::from_secs(1)))
        .unwrap();
    bucket.insert(&Key::new("k"), b"v".to_vec(), 0).unwrap();

    // The owner's last handle and the client go: the connection closes,
    // the server lets the owner go, and its key expires a TTL later, by
    // the server's own expirer (no other KV store is open anywhere).
    drop((bucket, owner, client));
    assert_eq!(
        next_kv_delete(&mut deletes),
        (
            "leases".to_string(),
            "k".to_string(),
            DeleteReason::LeaseExpired { lease }
        )
    );
}

#[test]
fn dropping_a_remote_owner_lets_it_go_while_its_client_stays_connected() {
    let tmp = tempfile::tempdir().unwrap();
    let db = open(tmp.path());
    let _server = db.serve(default_socket(tmp.path())).unwrap();
    let mut deletes = db.subscribe(db.last_lsn() + 1).unwrap();
    let client = client(tmp.path());
    let reader = KvStore::remote_without_lease(client.clone()).unwrap();
    let owner = KvStore::remote(client.clone()).unwrap();
    let (lease, clone) = (owner.connection_id(), owner.clone());
    let bucket = owner
        .get_or_create_bucket("leases", Some(Duration::from_secs(1)))
        .unwrap();
    bucket.insert(&Key::new("gone"), b"v".to_vec(), 0).unwrap();
    drop((bucket, owner));
    // A clone still holds the owner; its release goes with the last.
    assert!(reader.get_bucket("leases").unwrap().is_some());
    drop(clone);
    let (_, key, reason) = next_kv_delete(&mut deletes);
    assert_eq!(
        (key.as_str(), reason),
        ("gone", DeleteReason::LeaseExpired { lease })
    );
    // The client and its connection are still there.
    assert_eq!(
        reader
            .get_bucket("leases")
            .unwrap()
            .unwrap()
            .count("")
            .unwrap(),
        0
    );
}

#[test]
fn an_idle_remote_owner_keeps_its_keys_across_a_server_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let db = open(tmp.path());
    let socket = default_socket(tmp.path());
    let server = db.serve(&socket).unwrap();
    let mut deletes = db.subscribe(db.last_lsn() + 1).unwrap();
    let kept = KvStore::remote(client(tmp.path())).unwrap();
    let short = kept
        .get_or_create_bucket("short", Some(Duration::from_secs(1)))
        .unwrap();
    short.insert(&Key::new("kept"), b"v".to_vec(), 0).unwrap();

    // The server goes and comes back; the owner's client makes no request
    // of its own meanwhile (its keeper's pings find the new server).
    server.stop();
    let _server = db.serve(&socket).unwrap();
    // A witness owner that dies after the restart, on a bucket with a
    // longer TTL: had the idle owner not been attached again, its key
    // (TTL 1 s, dead since the stop) would expire seconds before this.
    let witness_client = client(tmp.path());
    let witness = KvStore::remote(witness_client.clone()).unwrap();
    let witness_lease = witness.connection_id();
    witness
        .get_or_create_bucket("long", Some(Duration::from_secs(4)))
        .unwrap()
        .insert(&Key::new("witness"), b"w".to_vec(), 0)
        .unwrap();
    drop((witness, witness_client));
    let (bucket, key, reason) = next_kv_delete(&mut deletes);
    assert_eq!(
        (bucket.as_str(), key.as_str(), reason),
        (
            "long",
            "witness",
            DeleteReason::LeaseExpired {
                lease: witness_lease
            }
        ),
        "the idle owner's key was not expired first"
    );
    assert_eq!(
        short.get(&Key::new("kept")).unwrap().as_deref(),
        Some(&b"v"[..])
    );
}

#[test]
fn a_remote_watch_resumes_across_a_server_restart_without_loss_or_repeat() {
    let tmp = tempfile::tempdir().unwrap();
    let db = open(tmp.path());
    let socket = default_socket(tmp.path());
    let server = db.serve(&socket).unwrap();
    let embedded = KvStore::without_lease(db.clone()).unwrap();
    let local = embedded.get_or_create_bucket("b", None).unwrap();
    local.insert(&Key::new("k0"), b"0".to_vec(), 0).unwrap();

    let remote = KvStore::remote_without_lease(client(tmp.path())).unwrap();
    let mut watch = remote.get_bucket("b").unwrap().unwrap().watch().unwrap();
    assert!(matches!(watch.next_blocking().unwrap(), WatchEvent::Resync(m) if m.len() == 1));

    server.stop();
    // Written while no one serves: the watch owes them all the same.
    for i in 1..=3 {
        local
            .insert(&Key::new(format!("k{i}")), b"x".to_vec(), 0)
            .unwrap();
    }
    let _server = db.serve(&socket).unwrap();
    for i in 1..=3 {
        local
            .insert(&Key::new(format!("k{}", i + 3)), b"x".to_vec(), 0)
            .unwrap();
    }
    let mut seen = Vec::new();
    while seen.len() < 6 {
        match watch.next_blocking().unwrap() {
            WatchEvent::Put(kv) => seen.push(kv.key.as_str().to_string()),
            other => panic!("expected a put, got {other:?}"),
        }
    }
    let want: Vec<String> = (1..=6).map(|i| format!("k{i}")).collect();
    assert_eq!(seen, want);
    assert!(watch.try_next_revisioned().unwrap().is_none());
}
