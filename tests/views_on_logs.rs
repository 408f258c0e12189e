//! The registry, runtime and KV operations give the same answers, the
//! same typed refusals and the same watches on every log: the local WAL
//! over real files, the log in memory, and a three-node NATS JetStream
//! cluster. One scenario runs on each and its transcripts must match.

mod common;

use std::time::Duration;

use replaydb::kv::{Key, KvError, KvStore, KvView, StoreOutcome, WatchEvent};
use replaydb::registry::{Registry, RegistryError, RegistryView, ScopeRule};
use replaydb::runtime::{
    CreateWorkerRequest, RuntimeError, RuntimeId, RuntimeOptions, RuntimeView, Runtimes,
    TranscriptQuery, WorkerId, WorkerInput, WorkerRef,
};
use replaydb::{Db, LogKind, Options, View};

fn views() -> Vec<Box<dyn View>> {
    vec![
        Box::new(RegistryView::default()),
        Box::new(RuntimeView::default()),
        Box::new(KvView::default()),
    ]
}

/// Runs every operation of the three views once (and each refusal) and
/// writes down what each answered.
fn scenario(db: &Db) -> Vec<String> {
    let mut said = Vec::new();
    let mut note = |what: &str, v: &dyn std::fmt::Debug| said.push(format!("{what}: {v:?}"));

    // The registry.
    let reg = Registry::new(db.clone());
    let pid = std::process::id();
    let seg = uuid::Uuid::from_u128(1);
    let a = reg
        .register_pod(
            "a",
            pid,
            "/run/a.sock",
            vec![ScopeRule::write("/src").unwrap()],
            vec![],
            seg,
        )
        .unwrap();
    let clash = reg.register_pod(
        "b",
        pid,
        "/run/b.sock",
        vec![ScopeRule::write("/src/core").unwrap()],
        vec![],
        uuid::Uuid::from_u128(2),
    );
    assert!(matches!(clash, Err(RegistryError::WriteConflict { .. })));
    note("clash", &clash.map(|_| ()));
    note("release nobody", &reg.release_pod("nobody"));
    note("allocations", &reg.allocations().unwrap());
    note(
        "effective",
        &reg.has_effective("a", &ScopeRule::write("/src/x").unwrap()),
    );
    reg.update_segment("a", uuid::Uuid::from_u128(3)).unwrap();
    note("lookup", &reg.lookup_segment(uuid::Uuid::from_u128(3)));
    note("history", &reg.history("a", 0, 100).unwrap().entries.len());
    drop(a);
    note("released", &reg.find("a"));

    // The runtimes.
    let runtimes = Runtimes::new(db.clone());
    let rt = runtimes
        .open_runtime(RuntimeOptions {
            runtime_id: Some(RuntimeId::new("rt-1").unwrap()),
            ..RuntimeOptions::default()
        })
        .unwrap();
    let worker = rt.create_worker(CreateWorkerRequest::default()).unwrap();
    rt.send_input(&worker.worker_ref, WorkerInput::user("hello"))
        .unwrap();
    note("workers", &rt.list_workers().unwrap().len());
    let page = rt
        .transcript_projection(&worker.worker_ref, TranscriptQuery::new(0, 10))
        .unwrap();
    note(
        "transcript",
        &page.items.iter().map(|i| &i.content).collect::<Vec<_>>(),
    );
    let missing = WorkerRef::new(
        rt.runtime_id().clone(),
        WorkerId::new("worker-nope").unwrap(),
    );
    let refused = rt.worker_detail(&missing);
    assert!(matches!(refused, Err(RuntimeError::WorkerNotFound { .. })));
    note("missing worker", &refused.map(|_| ()));
    let events = rt.read_events(&rt.event_cursor_from_start(), 100).unwrap();
    note(
        "events",
        &events
            .events
            .iter()
            .map(|e| (e.id, &e.kind, &e.message))
            .collect::<Vec<_>>(),
    );
    note("stopped at", &rt.stop_runtime().unwrap());
    let after = rt.create_worker(CreateWorkerRequest::default());
    assert!(matches!(after, Err(RuntimeError::RuntimeStopped { .. })));
    note("after stop", &after.map(|_| ()));

    // The KV store.
    let kv = KvStore::with_connection_id(db.clone(), 7).unwrap();
    let bucket = kv
        .get_or_create_bucket("v1/instances", Some(Duration::from_secs(60)))
        .unwrap();
    let k = Key::new("ns/a");
    let created = bucket.insert(&k, b"one".to_vec(), 0).unwrap();
    assert!(matches!(created, StoreOutcome::Created(_)));
    note("insert", &created);
    note("insert again", &bucket.insert(&k, b"two".to_vec(), 0));
    note(
        "cas wrong",
        &bucket.compare_and_replace(&k, b"wrong".to_vec(), b"x".to_vec()),
    );
    note(
        "cas missing",
        &bucket.compare_and_replace(&Key::new("ns/none"), b"a".to_vec(), b"b".to_vec()),
    );
    note(
        "cas",
        &bucket.compare_and_replace(&k, b"one".to_vec(), b"three".to_vec()),
    );
    bucket
        .insert(&Key::new("ns/b"), b"bee".to_vec(), 0)
        .unwrap();
    note("get", &bucket.get_with_revision(&k).unwrap());
    note("keys", &bucket.keys("ns/").unwrap());
    note("count", &bucket.count("ns/").unwrap());
    let gone = bucket.delete(&Key::new("ns/none"));
    assert!(matches!(gone, Err(KvError::MissingKey(_))));
    note("delete missing", &gone);
    let mut watch = bucket.watch_prefix("ns/").unwrap();
    let resync = watch.next_blocking().unwrap();
    let WatchEvent::Resync(snapshot) = resync else {
        panic!("a watch starts with the snapshot, not {resync:?}");
    };
    let mut snapshot: Vec<_> = snapshot.into_iter().collect();
    snapshot.sort();
    note("resync", &snapshot);
    bucket.insert(&Key::new("ns/c"), b"c".to_vec(), 0).unwrap();
    bucket
        .insert(&Key::new("elsewhere"), b"e".to_vec(), 0)
        .unwrap();
    bucket.delete(&Key::new("ns/b")).unwrap();
    note("watch 1", &watch.next_revisioned_blocking().unwrap());
    note("watch 2", &watch.next_revisioned_blocking().unwrap());
    note("shutdown", &kv.shutdown().unwrap());
    note("left", &bucket.keys("").unwrap());
    note("last LSN", &db.last_lsn());
    said
}

#[test]
fn the_views_answer_the_same_on_files_and_in_memory() {
    let files = tempfile::tempdir().unwrap();
    let on_files =
        scenario(&Db::open_with_views(files.path(), Options::default(), views()).unwrap());
    let in_memory = scenario(&Db::open_in_memory(Options::default(), views()).unwrap());
    assert_eq!(on_files, in_memory);
}

#[cfg(feature = "jetstream")]
#[test]
fn the_views_answer_the_same_on_a_jetstream_cluster() {
    let cluster = common::nats::Cluster::start();
    let store = tempfile::tempdir().unwrap();
    let log = LogKind::JetStream {
        servers: cluster.urls.clone(),
        stream: "views".into(),
        replicas: 3,
    };
    let db = common::nats::open_retrying(|| {
        Db::open_with_views(store.path(), Options::default().log(log.clone()), views())
    });
    let on_jetstream = scenario(&db);
    let in_memory = scenario(&Db::open_in_memory(Options::default(), views()).unwrap());
    assert_eq!(on_jetstream, in_memory);
}
