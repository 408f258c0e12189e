//! The KV view keeps the contract of dynamo's key-value stores
//! (`lib/runtime/src/storage/kv/` in ai-dynamo/dynamo): their tests that
//! apply to a store without a server, ported under their names from
//! `kv.rs`, `mem.rs`, `file.rs` (the seed's `test_entries_full_path`
//! among them) and `etcd.rs`. Where the originals assert a revision the
//! caller passed back (`Created(0)`, `Exists(1)`), these assert replaydb's:
//! every revision is the LSN of the change, so `Created(r)` names the put
//! and `Exists(r)` the revision of the value left in place. Watches start
//! with one `Resync`, as the newest contract says. Tests of the file
//! store's own machinery (temp files, symlinked roots, its lock) and the
//! manager's task plumbing have nothing to test here and are left out.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Barrier};

use replaydb::Options;
use replaydb::kv::{Bucket, Key, KeyValue, KvError, KvStore, StoreOutcome, WatchEvent};

fn store() -> (tempfile::TempDir, KvStore) {
    let tmp = tempfile::tempdir().unwrap();
    let store = KvStore::open(tmp.path(), Options::default(), vec![]).unwrap();
    (tmp, store)
}

fn created(o: StoreOutcome) -> u64 {
    match o {
        StoreOutcome::Created(r) => r,
        other => panic!("expected Created, got {other:?}"),
    }
}

fn resync(w: &mut replaydb::kv::Watch) -> HashMap<Key, Vec<u8>> {
    match w.next_blocking().unwrap() {
        WatchEvent::Resync(s) => s,
        other => panic!("expected the initial resync, got {other:?}"),
    }
}

// kv.rs

#[test]
fn manager_watch_emits_initial_snapshot_once_before_updates() {
    let (_t, store) = store();
    let bucket = store.get_or_create_bucket("v1/mdc", None).unwrap();
    let key = Key::new("ns/worker/generate/1");
    bucket.insert(&key, "old", 1).unwrap();
    let mut w = bucket.watch().unwrap();
    let snapshot = resync(&mut w);
    assert_eq!(snapshot.get(&key).map(Vec::as_slice), Some(&b"old"[..]));
    bucket.insert(&key, "new", 2).unwrap();
    match w.next_blocking().unwrap() {
        WatchEvent::Put(kv) => assert_eq!(
            kv.value, b"new",
            "the initial value must not be replayed after the snapshot"
        ),
        other => panic!("expected updated put, got {other:?}"),
    }
}

#[test]
fn manager_watch_reports_a_delete_that_follows_establishment() {
    let (_t, store) = store();
    let bucket = store.get_or_create_bucket("v1/mdc", None).unwrap();
    let key = Key::new("ns/worker/generate/1");
    bucket.insert(&key, "value", 1).unwrap();
    let mut w = bucket.watch().unwrap();
    bucket.delete(&key).unwrap();
    let snapshot = resync(&mut w);
    assert!(
        snapshot.contains_key(&key),
        "snapshot {snapshot:?} lacks {key}"
    );
    assert_eq!(
        w.next_blocking().unwrap(),
        WatchEvent::Delete(key),
        "a delete after establishment must reach the receiver"
    );
}

#[test]
fn manager_watch_stops_when_receiver_is_dropped() {
    let (tmp, store) = store();
    let bucket = store.get_or_create_bucket("v1/mdc", None).unwrap();
    let key = Key::new("ns/worker/generate/1");
    bucket.insert(&key, "value", 1).unwrap();
    let mut w = bucket.watch().unwrap();
    assert!(resync(&mut w).contains_key(&key));
    // A watch is the reader itself: dropping it stops it, and with the
    // last handle the database closes (its lock is free at once).
    drop((w, bucket, store));
    let again = KvStore::open(tmp.path(), Options::default(), vec![]);
    assert!(again.is_ok(), "the watch kept the database open: {again:?}");
}

#[test]
fn test_memory_storage() {
    let (_t, store) = store();
    let bucket = store.get_or_create_bucket("v1/mdc", None).unwrap();
    let first = created(bucket.insert(&"test1".into(), "value1", 0).unwrap());
    let b2 = store.get_or_create_bucket("v1/mdc", None).unwrap();
    let mut stream = b2.watch().unwrap();
    assert_eq!(
        stream.next_blocking().unwrap(),
        WatchEvent::Resync(HashMap::from([(Key::new("test1"), b"value1".to_vec())]))
    );
    let r2 = created(bucket.insert(&"test2".into(), "value2", 0).unwrap());
    // Repeat a key and revision: ignored, the value there is at r2.
    assert_eq!(
        bucket.insert(&"test2".into(), "value2", 0).unwrap(),
        StoreOutcome::Exists(r2)
    );
    let r3 = created(bucket.insert(&"test2".into(), "value2-updated", 1).unwrap());
    let r4 = created(bucket.insert(&"test3".into(), "value3", 0).unwrap());
    assert!(first < r2 && r2 < r3 && r3 < r4, "revisions increase");
    let expected = [
        WatchEvent::Put(KeyValue::new(Key::new("test2"), "value2")),
        WatchEvent::Put(KeyValue::new(Key::new("test2"), "value2-updated")),
        WatchEvent::Put(KeyValue::new(Key::new("test3"), "value3")),
    ];
    for e in expected {
        assert_eq!(stream.next_blocking().unwrap(), e);
    }
}

// mem.rs (and file.rs, etcd.rs, nats.rs: the same test in each)

#[test]
fn delete_wins_race_with_compare_and_replace() {
    let (_t, store) = store();
    for round in 0..20 {
        let bucket = Arc::new(store.get_or_create_bucket("bucket", None).unwrap());
        let key = Key::new(format!("model-{round}"));
        bucket.insert(&key, "old", 0).unwrap();
        let barrier = Arc::new(Barrier::new(3));
        let update = {
            let (b, k, bar) = (bucket.clone(), key.clone(), barrier.clone());
            std::thread::spawn(move || {
                bar.wait();
                b.compare_and_replace(&k, "old", "new")
            })
        };
        let delete = {
            let (b, k, bar) = (bucket.clone(), key.clone(), barrier.clone());
            std::thread::spawn(move || {
                bar.wait();
                b.delete(&k)
            })
        };
        barrier.wait();
        let updated = update.join().unwrap();
        assert!(
            updated.is_ok() || matches!(updated, Err(KvError::MissingKey(_))),
            "{updated:?}"
        );
        assert!(delete.join().unwrap().is_ok());
        assert_eq!(
            bucket.get(&key).unwrap(),
            None,
            "the delete wins either way"
        );
    }
}

#[test]
fn revision_zero_replay_preserves_cas_update() {
    let (_t, store) = store();
    let bucket = store.get_or_create_bucket("bucket", None).unwrap();
    let key = Key::new("model");
    created(bucket.insert(&key, "initial", 0).unwrap());
    let updated = created(
        bucket
            .compare_and_replace(&key, "initial", "updated")
            .unwrap(),
    );
    assert_eq!(
        bucket.insert(&key, "initial", 0).unwrap(),
        StoreOutcome::Exists(updated)
    );
    assert_eq!(bucket.get(&key).unwrap().as_deref(), Some(&b"updated"[..]));
}

#[test]
fn multiple_watchers_receive_updates_without_cross_bucket_stealing() {
    let (_t, store) = store();
    let a = store.get_or_create_bucket("bucket-a", None).unwrap();
    let b = store.get_or_create_bucket("bucket-b", None).unwrap();
    let mut watchers_a = [a.watch().unwrap(), a.watch().unwrap()];
    let mut watcher_b = b.watch().unwrap();
    a.insert(&"shared-key".into(), "a", 1).unwrap();
    b.insert(&"shared-key".into(), "b", 1).unwrap();
    for w in &mut watchers_a {
        assert!(resync(w).is_empty());
        match w.next_blocking().unwrap() {
            WatchEvent::Put(kv) => assert_eq!(kv.value, b"a"),
            other => panic!("expected bucket-a put, got {other:?}"),
        }
    }
    assert!(resync(&mut watcher_b).is_empty());
    match watcher_b.next_blocking().unwrap() {
        WatchEvent::Put(kv) => assert_eq!(kv.value, b"b"),
        other => panic!("expected bucket-b put, got {other:?}"),
    }
}

#[test]
fn watcher_observes_updates_to_an_existing_key() {
    let (_t, store) = store();
    let bucket = store.get_or_create_bucket("bucket", None).unwrap();
    bucket.insert(&"key".into(), "old", 1).unwrap();
    let mut w = bucket.watch().unwrap();
    assert_eq!(
        resync(&mut w).get(&Key::new("key")).map(Vec::as_slice),
        Some(&b"old"[..])
    );
    bucket.insert(&"key".into(), "new", 2).unwrap();
    match w.next_blocking().unwrap() {
        WatchEvent::Put(kv) => assert_eq!(kv.value, b"new"),
        other => panic!("expected updated put, got {other:?}"),
    }
}

/// The original floods a watcher past its 16 384-event buffer and expects
/// a fresh `Resync`. Here there is no buffer to overflow: a watcher that
/// read nothing while 16 385 puts happened gets every one of them, in
/// order, then the next.
#[test]
fn lag_resync_discards_retained_pre_snapshot_events() {
    let (_t, store) = store();
    let bucket = store.get_or_create_bucket("bucket", None).unwrap();
    let mut w = bucket.watch().unwrap();
    assert!(resync(&mut w).is_empty());
    let key = Key::new("key");
    std::thread::scope(|s| {
        for t in 0..8u64 {
            let (bucket, key) = (&bucket, &key);
            s.spawn(move || {
                for rev in (1..=16_385u64).filter(|r| r % 8 == t) {
                    bucket.insert(key, format!("value-{rev}"), rev).unwrap();
                }
            });
        }
    });
    let mut last_revision = 0;
    for _ in 0..16_385 {
        let e = w.next_revisioned_blocking().unwrap();
        assert!(e.revision > last_revision, "in order, none repeated");
        last_revision = e.revision;
        assert!(matches!(e.event, WatchEvent::Put(_)));
    }
    bucket.insert(&key, "post-resync", 16_386).unwrap();
    match w.next_blocking().unwrap() {
        WatchEvent::Put(kv) => assert_eq!(kv.value, b"post-resync"),
        other => panic!("expected the post-flood put, got {other:?}"),
    }
}

#[test]
fn test_entries_full_path() {
    let (_t, store) = store();
    let bucket = store.get_or_create_bucket("v1/tests", None).unwrap();
    bucket
        .insert(&Key::new("key1/multi/part"), "value1", 0)
        .unwrap();
    bucket.insert(&Key::new("key2"), "value2", 0).unwrap();
    let keys: HashSet<Key> = bucket.entries().unwrap().keys().map(Key::new).collect();
    assert!(keys.contains(&Key::new("v1/tests/key1/multi/part")));
    assert!(keys.contains(&Key::new("v1/tests/key2")));
}

// file.rs

#[test]
fn concurrent_bucket_open_shares_ownership_registry() {
    let (_t, store) = store();
    let barrier = Arc::new(Barrier::new(32));
    let buckets: Vec<Bucket> = (0..32)
        .map(|_| {
            let (store, barrier) = (store.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                store.get_or_create_bucket("v1/concurrent", None).unwrap()
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    assert!(buckets.iter().all(|b| b.name() == "v1/concurrent"));
    assert_eq!(
        store.buckets().unwrap(),
        vec!["v1/concurrent".to_string()],
        "one bucket, created once"
    );
    buckets[0].insert(&"k".into(), "v", 0).unwrap();
    assert!(
        buckets[31].get(&"k".into()).unwrap().is_some(),
        "every handle is the same bucket"
    );
}

#[test]
fn test_insert_revision_zero_is_create_if_absent() {
    let (_t, store) = store();
    let bucket = store.get_or_create_bucket("v1/tests", None).unwrap();
    let key = Key::new("singleton");
    let first = created(bucket.insert(&key, "winner", 0).unwrap());
    assert_eq!(
        bucket.insert(&key, "loser", 0).unwrap(),
        StoreOutcome::Exists(first)
    );
    assert_eq!(bucket.get(&key).unwrap().as_deref(), Some(&b"winner"[..]));
}

#[test]
fn test_insert_nonzero_revision_overwrites() {
    let (_t, store) = store();
    let bucket = store.get_or_create_bucket("v1/tests", None).unwrap();
    let key = Key::new("existing");
    let old = created(bucket.insert(&key, "old", 0).unwrap());
    let new = created(bucket.insert(&key, "new", 1).unwrap());
    assert!(new > old);
    assert_eq!(bucket.get(&key).unwrap().as_deref(), Some(&b"new"[..]));
}

/// 16 racing creators, each its own owner on the database, as the
/// original's 16 stores on one root.
#[test]
fn test_concurrent_insert_revision_zero_has_one_winner() {
    let (_t, store) = store();
    let barrier = Arc::new(Barrier::new(16));
    let results: Vec<(StoreOutcome, String, String)> = (0..16)
        .map(|i| {
            let (db, barrier) = (store.db().expect("embedded").clone(), barrier.clone());
            std::thread::spawn(move || {
                let own = KvStore::new(db).unwrap();
                let bucket = own.get_or_create_bucket("v1/claims", None).unwrap();
                let attempted = format!("value-{i}");
                barrier.wait();
                let outcome = bucket
                    .insert(&"singleton".into(), attempted.clone(), 0)
                    .unwrap();
                let stored =
                    String::from_utf8(bucket.get(&"singleton".into()).unwrap().unwrap()).unwrap();
                (outcome, stored, attempted)
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    let creators: Vec<&(StoreOutcome, String, String)> = results
        .iter()
        .filter(|r| matches!(r.0, StoreOutcome::Created(_)))
        .collect();
    assert_eq!(creators.len(), 1, "exactly one Created: {results:?}");
    let StoreOutcome::Created(won_at) = creators[0].0 else {
        unreachable!()
    };
    for r in &results {
        if !matches!(r.0, StoreOutcome::Created(_)) {
            assert_eq!(
                r.0,
                StoreOutcome::Exists(won_at),
                "fifteen Exists at the winner's revision"
            );
        }
    }
    let observed: HashSet<&String> = results.iter().map(|r| &r.1).collect();
    assert_eq!(observed.len(), 1, "every reader sees one value");
    assert_eq!(
        observed.into_iter().next(),
        Some(&creators[0].2),
        "the winner's"
    );
}

// etcd.rs

#[test]
fn test_concurrent_etcd_create_race_condition() {
    let (_t, store) = store();
    let bucket = Arc::new(
        store
            .get_or_create_bucket("test_concurrent_bucket", None)
            .unwrap(),
    );
    let key = Key::new(format!("concurrent_test_key_{}", uuid::Uuid::new_v4()));
    let barrier = Arc::new(Barrier::new(10));
    let outcomes: Vec<StoreOutcome> = (0..10)
        .map(|id| {
            let (b, k, bar) = (bucket.clone(), key.clone(), barrier.clone());
            std::thread::spawn(move || {
                bar.wait();
                b.insert(&k, format!("test_value_from_worker_{id}"), 0)
                    .unwrap()
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    let created = outcomes
        .iter()
        .filter(|o| matches!(o, StoreOutcome::Created(_)))
        .count();
    assert_eq!(created, 1, "Exactly one worker should create the key");
    assert_eq!(outcomes.len() - created, 9);
    let value = bucket.get(&key).unwrap().unwrap();
    assert!(value.starts_with(b"test_value"));
    bucket.delete(&key).unwrap();
}

#[test]
fn watch_starts_with_one_resync_of_the_prefix() {
    let (_t, store) = store();
    let name = format!("test_watch_resync_{}", uuid::Uuid::new_v4());
    let bucket = store.get_or_create_bucket(&name, None).unwrap();
    bucket.insert(&"existing".into(), "1", 0).unwrap();
    let mut events = bucket.watch().unwrap();
    assert_eq!(
        resync(&mut events)
            .get(&Key::new("existing"))
            .map(Vec::as_slice),
        Some(&b"1"[..])
    );
    bucket.insert(&"later".into(), "2", 0).unwrap();
    match events.next_blocking().unwrap() {
        WatchEvent::Put(kv) => assert_eq!(kv.key.as_str(), "later"),
        other => panic!("expected a put, got {other:?}"),
    }
}
