//! A watch resumed from the revision after the last one it saw gets every
//! later change exactly once, in order: after a disconnect, after the
//! database was closed and reopened, and from the shell.

mod common;

use std::collections::BTreeMap;

use replaydb::Options;
use replaydb::kv::{Key, KvStore, WatchEvent};

/// The model of a bucket after `ops` (key → value), and the ops: put
/// (key, Some(value)) or delete (key, None).
fn ops(n: usize) -> Vec<(String, Option<String>)> {
    let mut live = std::collections::BTreeSet::new();
    (0..n)
        .map(|i| {
            let key = format!("k/{:03}", i * 7 % 97);
            if live.contains(&key) && i % 3 == 0 {
                live.remove(&key);
                (key, None)
            } else {
                live.insert(key.clone());
                (key, Some(format!("v{i}")))
            }
        })
        .collect()
}

#[test]
fn a_watch_resumed_from_its_last_revision_sees_every_change_once_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let store = KvStore::open(tmp.path(), Options::default(), vec![]).unwrap();
    let bucket = store.get_or_create_bucket("v1/mdc", None).unwrap();
    bucket.insert(&"before".into(), "x", 0).unwrap();
    let mut w = bucket.watch().unwrap();
    let WatchEvent::Resync(snapshot) = w.next_blocking().unwrap() else {
        panic!("a snapshot first")
    };
    assert_eq!(snapshot.len(), 1);
    let resume_at = w.next_revision();
    drop(w); // disconnected

    let ops = ops(1_000);
    let mut revisions = Vec::new();
    for (key, value) in &ops {
        let k = Key::new(key.as_str());
        let rev = match value {
            Some(v) => match bucket.insert(&k, v.as_str(), 1).unwrap() {
                replaydb::kv::StoreOutcome::Created(r) => r,
                other => panic!("{other:?}"),
            },
            None => bucket.delete(&k).unwrap(),
        };
        revisions.push(rev);
    }

    let check = |w: &mut replaydb::kv::Watch| {
        let mut model = BTreeMap::new();
        for ((key, value), rev) in ops.iter().zip(&revisions) {
            let e = w.next_revisioned_blocking().unwrap();
            assert_eq!(e.revision, *rev, "each change once, in order");
            match (&e.event, value) {
                (WatchEvent::Put(kv), Some(v)) => {
                    assert_eq!(
                        (kv.key.as_str(), kv.value.as_slice()),
                        (key.as_str(), v.as_bytes())
                    );
                    model.insert(key.clone(), v.clone());
                }
                (WatchEvent::Delete(k), None) => {
                    assert_eq!(k.as_str(), key);
                    model.remove(key);
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(
            w.try_next_revisioned().unwrap().is_none(),
            "and nothing more"
        );
        model
    };
    let mut resumed = bucket.watch_from("", resume_at).unwrap();
    let model = check(&mut resumed);
    let mut now: BTreeMap<String, String> = bucket
        .entries()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.to_string(), String::from_utf8(v.to_vec()).unwrap()))
        .collect();
    now.remove("v1/mdc/before");
    let model: BTreeMap<String, String> = model
        .into_iter()
        .map(|(k, v)| (format!("v1/mdc/{k}"), v))
        .collect();
    assert_eq!(now, model, "the changes replayed give the bucket's state");
    drop((resumed, bucket, store));

    // The same resume after a restart, and with a prefix.
    let store = KvStore::open(tmp.path(), Options::default(), vec![]).unwrap();
    let bucket = store.get_bucket("v1/mdc").unwrap().unwrap();
    let mut again = bucket.watch_from("", resume_at).unwrap();
    check(&mut again);
    let mut prefixed = bucket.watch_from("k/00", resume_at).unwrap();
    let want = ops.iter().filter(|(k, _)| k.starts_with("k/00")).count();
    for _ in 0..want {
        let e = prefixed.next_revisioned_blocking().unwrap();
        let key = match &e.event {
            WatchEvent::Put(kv) => kv.key.clone(),
            WatchEvent::Delete(k) => k.clone(),
            WatchEvent::Resync(_) => panic!("no snapshot from a revision"),
        };
        assert!(key.as_str().starts_with("k/00"), "{key}");
    }
    assert!(prefixed.try_next_revisioned().unwrap().is_none());
}

#[test]
fn a_shell_watch_resumes_from_the_revision_after_the_last_line_it_printed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    for i in 0..5 {
        let out = common::cli(dir, &["kv", "put", "b", &format!("k{i}"), "v"]);
        assert!(out.status.success(), "{out:?}");
    }
    let out = common::cli(dir, &["kv", "watch", "b", "--from", "1", "--limit", "3"]);
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    let last = lines[2]["revision"].as_u64().unwrap();
    let from = (last + 1).to_string();
    let out = common::cli(dir, &["kv", "watch", "b", "--from", &from, "--limit", "2"]);
    let rest: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let keys: Vec<&str> = lines
        .iter()
        .chain(&rest)
        .map(|l| l["key"].as_str().unwrap())
        .collect();
    assert_eq!(
        keys,
        vec!["k0", "k1", "k2", "k3", "k4"],
        "each once, in order"
    );
}

#[test]
fn a_prefix_watch_passes_over_long_runs_of_other_keys_without_waiting() {
    let tmp = tempfile::tempdir().unwrap();
    let store = KvStore::open(tmp.path(), Options::default(), vec![]).unwrap();
    let bucket = store.get_or_create_bucket("b", None).unwrap();
    std::thread::scope(|s| {
        for t in 0..8 {
            let bucket = &bucket;
            s.spawn(move || {
                for i in 0..1_000 {
                    bucket
                        .insert(&Key::new(format!("a/{t}/{i}")), "x", 1)
                        .unwrap();
                }
            });
        }
    });
    bucket.insert(&"b/x".into(), "found", 0).unwrap();
    let mut w = bucket.watch_from("b/", 1).unwrap();
    match w.try_next_revisioned().unwrap().map(|e| e.event) {
        Some(WatchEvent::Put(kv)) => assert_eq!(kv.key.as_str(), "b/x"),
        other => panic!("8 000 other changes hid it: {other:?}"),
    }
    assert!(w.try_next_revisioned().unwrap().is_none());
}
