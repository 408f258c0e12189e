//! Every KV operation's answers and refusals beyond the ported tests:
//! missing keys and buckets named, compare-and-replace never creating,
//! TTL defaults and floors, prefix listing and counts, revisions that
//! match the watch, names of any bytes kept off the file system, and the
//! shell's exit codes.

mod common;

use std::time::Duration;

use replaydb::Options;
use replaydb::kv::{KEY_BYTES_MAX, Key, KvError, KvStore, StoreOutcome, TTL_DEFAULT, WatchEvent};

fn store() -> (tempfile::TempDir, KvStore) {
    let tmp = tempfile::tempdir().unwrap();
    let s = KvStore::open(tmp.path(), Options::default(), vec![]).unwrap();
    (tmp, s)
}

#[test]
fn missing_keys_are_errors_naming_them_and_compare_and_replace_never_creates() {
    let (_t, store) = store();
    assert!(store.get_bucket("v1/claims").unwrap().is_none());
    let b = store.get_or_create_bucket("v1/claims", None).unwrap();
    assert!(store.get_bucket("v1/claims").unwrap().is_some());
    let k = Key::new("scope/session");
    assert_eq!(b.get(&k).unwrap(), None);
    match b.delete(&k) {
        Err(KvError::MissingKey(name)) => assert_eq!(name, "v1/claims/scope/session"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        b.compare_and_replace(&k, "a", "b"),
        Err(KvError::MissingKey(_))
    ));
    assert_eq!(b.get(&k).unwrap(), None, "never created");
    b.insert(&k, "a", 0).unwrap();
    assert!(matches!(
        b.compare_and_replace(&k, "x", "b"),
        Err(KvError::Retry)
    ));
    assert_eq!(
        b.get(&k).unwrap().as_deref(),
        Some(&b"a"[..]),
        "a mismatch changes nothing"
    );
    let long = Key::new("k".repeat(KEY_BYTES_MAX + 1));
    assert!(matches!(
        b.insert(&long, "v", 0),
        Err(KvError::InvalidRequest(_))
    ));
}

#[test]
fn ttls_default_to_ten_seconds_are_raised_to_one_and_an_existing_bucket_keeps_its_own() {
    let (_t, store) = store();
    assert_eq!(
        store.get_or_create_bucket("a", None).unwrap().ttl(),
        TTL_DEFAULT
    );
    assert_eq!(TTL_DEFAULT, Duration::from_secs(10));
    let short = store
        .get_or_create_bucket("b", Some(Duration::from_millis(10)))
        .unwrap();
    assert_eq!(short.ttl(), Duration::from_secs(1));
    let again = store
        .get_or_create_bucket("b", Some(Duration::from_secs(30)))
        .unwrap();
    assert_eq!(again.ttl(), Duration::from_secs(1));
    assert_eq!(
        store.get_bucket("b").unwrap().unwrap().ttl(),
        Duration::from_secs(1)
    );
}

#[test]
fn revisions_are_lsns_and_the_watch_reports_the_same_ones() {
    let (_t, store) = store();
    let b = store.get_or_create_bucket("v1/mdc", None).unwrap();
    let mut w = b.watch_from("", 1).unwrap();
    let StoreOutcome::Created(r1) = b.insert(&"a".into(), "1", 0).unwrap() else {
        panic!()
    };
    let StoreOutcome::Created(r2) = b.compare_and_replace(&"a".into(), "1", "2").unwrap() else {
        panic!()
    };
    let r3 = b.delete(&"a".into()).unwrap();
    assert_eq!(r1, store.db().expect("embedded").last_lsn() - 2);
    assert_eq!((r2, r3), (r1 + 1, r1 + 2));
    let revs: Vec<u64> = (0..3)
        .map(|_| w.next_revisioned_blocking().unwrap().revision)
        .collect();
    assert_eq!(revs, vec![r1, r2, r3]);
    let (_, row) = {
        b.insert(&"a".into(), "3", 0).unwrap();
        b.insert(&"a".into(), "4", 1).unwrap();
        b.get_with_revision(&"a".into()).unwrap().unwrap()
    };
    assert_eq!(row.version, 2, "puts since it was last created");
    assert_eq!(row.create_revision + 1, row.mod_revision);
    assert_eq!(row.lease, store.connection_id());
}

#[test]
fn prefix_listing_and_counts_read_no_value_and_never_cross_buckets() {
    let (_t, store) = store();
    let b = store.get_or_create_bucket("v1/instances", None).unwrap();
    let longer = store.get_or_create_bucket("v1/instances2", None).unwrap();
    for k in ["ns/a/1", "ns/a/2", "ns/b/1", "other"] {
        b.insert(&Key::new(k), "v", 0).unwrap();
    }
    longer.insert(&"ns/a/3".into(), "v", 0).unwrap();
    assert_eq!(
        b.keys("ns/a/").unwrap(),
        vec![Key::new("ns/a/1"), Key::new("ns/a/2")]
    );
    assert_eq!(b.count("ns/").unwrap(), 3);
    assert_eq!(b.count("").unwrap(), 4);
    assert_eq!(
        b.entries().unwrap().len(),
        4,
        "a bucket whose name prefixes another's keeps to itself"
    );
    let mut w = b.watch_prefix("ns/b").unwrap();
    let WatchEvent::Resync(s) = w.next_blocking().unwrap() else {
        panic!()
    };
    assert_eq!(
        s.keys().cloned().collect::<Vec<_>>(),
        vec![Key::new("ns/b/1")]
    );
}

#[test]
fn names_and_keys_of_any_bytes_are_kept_off_the_file_system() {
    let (tmp, store) = store();
    let names = ["../../etc", "a/../../b", "nul\0x", "ü/é", "a", "a/"];
    for name in names {
        let b = store.get_or_create_bucket(name, None).unwrap();
        b.insert(&Key::new("../../../passwd"), name, 0).unwrap();
    }
    for name in names {
        let b = store.get_bucket(name).unwrap().unwrap();
        assert_eq!(
            b.get(&Key::new("../../../passwd")).unwrap().as_deref(),
            Some(name.as_bytes()),
            "each bucket its own, its name stored as given"
        );
        assert_eq!(b.count("").unwrap(), 1);
    }
    let files: Vec<String> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        files
            .iter()
            .all(|n| ["LOCK", "SETTINGS", "store.redb", "wal"].contains(&n.as_str())),
        "{files:?}"
    );
    let mut buckets = store.buckets().unwrap();
    buckets.sort();
    let mut want: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(buckets, want);
}

#[test]
fn the_shell_exits_1_for_refusals_and_2_for_usage_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let out = common::cli(dir, &["kv", "get", "nope", "k"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Could not find bucket 'nope'"));
    let ok = |args: &[&str]| {
        let out = common::cli(dir, args);
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    assert!(ok(&["kv", "put", "b", "k", "v1", "--create"]).starts_with("created "));
    assert!(ok(&["kv", "put", "b", "k", "v2", "--create"]).starts_with("exists "));
    assert_eq!(ok(&["kv", "get", "b", "k"]), "v1\n");
    let out = common::cli(dir, &["kv", "cas", "b", "k", "wrong", "v3"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(ok(&["kv", "cas", "b", "k", "v1", "v3"]).starts_with("created "));
    assert_eq!(ok(&["kv", "ls", "b", "--values"]), "k\tv3\n");
    assert_eq!(ok(&["kv", "ls", "b", "--count"]), "1\n");
    ok(&["kv", "del", "b", "k"]);
    let out = common::cli(dir, &["kv", "del", "b", "k"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Could not find key 'b/k'"));
    let out = common::cli(dir, &["kv", "put", "b", "k", "v", "--keep-alive"]);
    assert_eq!(out.status.code(), Some(2), "--keep-alive needs --ttl");
}
