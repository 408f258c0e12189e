//! `entries()` of a bucket held in memory is always what the tables hold:
//! after puts, overwrites, deletes and shutdown, across a reopen (with and
//! without a checkpoint), and for a bucket grown past the memory limits.

use std::collections::HashMap;

use replaydb::kv::{Bucket, CACHED_BUCKET_BYTES_MAX, Key, KvStore};
use replaydb::{Durability, Options};

/// The bucket's entries read from the tables, key by key.
fn from_tables(b: &Bucket) -> HashMap<Key, Vec<u8>> {
    b.keys("")
        .unwrap()
        .into_iter()
        .map(|k| {
            let v = b.get(&k).unwrap().expect("a listed key has a value");
            (Key::new(format!("{}/{}", b.name(), k.as_str())), v)
        })
        .collect()
}

fn options() -> Options {
    Options::default().durability(Durability::Buffered {
        interval: std::time::Duration::from_millis(10),
    })
}

#[test]
fn entries_match_the_tables_through_changes_and_reopens() {
    let tmp = tempfile::tempdir().unwrap();
    let expected = {
        let store = KvStore::open(tmp.path(), options(), vec![]).unwrap();
        let other = KvStore::with_connection_id(store.db().expect("embedded").clone(), 7).unwrap();
        let b = store.get_or_create_bucket("v1/instances", None).unwrap();
        let theirs = other.get_bucket("v1/instances").unwrap().unwrap();
        assert!(b.entries().unwrap().is_empty());
        for i in 0..300u32 {
            b.insert(&Key::new(format!("ns/c/e/{i:x}")), i.to_le_bytes(), 0)
                .unwrap();
            theirs
                .insert(&Key::new(format!("theirs/{i}")), vec![1; 3], 1)
                .unwrap();
        }
        for i in (0..300u32).step_by(3) {
            b.insert(&Key::new(format!("ns/c/e/{i:x}")), b"again".to_vec(), 1)
                .unwrap();
        }
        for i in (0..300u32).step_by(5) {
            b.delete(&Key::new(format!("ns/c/e/{i:x}"))).unwrap();
        }
        b.compare_and_replace(&Key::new("ns/c/e/1"), 1u32.to_le_bytes(), "cas")
            .unwrap();
        // The other owner goes: its 300 keys are deleted.
        other.shutdown().unwrap();
        let got = b.entries().unwrap();
        assert_eq!(got, from_tables(&b));
        assert_eq!(got.len(), 300 - 60);
        assert_eq!(&got["v1/instances/ns/c/e/1"], b"cas");
        assert_eq!(&got["v1/instances/ns/c/e/3"], b"again");
        got.to_map()
    };
    // Reopened from the log's tail (no checkpoint was asked for) ...
    {
        let store = KvStore::open(tmp.path(), options(), vec![]).unwrap();
        let b = store.get_bucket("v1/instances").unwrap().unwrap();
        assert_eq!(b.entries().unwrap(), expected);
        b.insert(&Key::new("late"), "1", 0).unwrap();
        store.db().expect("embedded").checkpoint().unwrap();
        b.insert(&Key::new("after-checkpoint"), "2", 0).unwrap();
    }
    // ... and from a checkpoint plus the tail after it.
    let store = KvStore::open(tmp.path(), options(), vec![]).unwrap();
    let b = store.get_bucket("v1/instances").unwrap().unwrap();
    let got = b.entries().unwrap();
    assert_eq!(got, from_tables(&b));
    assert_eq!(got.len(), expected.len() + 2);
}

#[test]
fn a_bucket_past_the_memory_limit_is_read_from_the_tables_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let value = vec![7u8; 1 << 20];
    let count = (CACHED_BUCKET_BYTES_MAX >> 20) as usize + 2;
    {
        let store = KvStore::open(tmp.path(), options(), vec![]).unwrap();
        let b = store.get_or_create_bucket("big", None).unwrap();
        let small = store.get_or_create_bucket("small", None).unwrap();
        small.insert(&Key::new("k"), "v", 0).unwrap();
        for i in 0..count {
            b.insert(&Key::new(format!("{i}")), value.clone(), 0)
                .unwrap();
            // Around the limit: held, then read from the tables.
            if i + 4 >= count {
                let got = b.entries().unwrap();
                assert_eq!(got.len(), i + 1, "after put {i}");
                assert_eq!(got, from_tables(&b));
            }
        }
        b.delete(&Key::new("0")).unwrap();
        assert_eq!(b.entries().unwrap(), from_tables(&b));
        assert_eq!(b.entries().unwrap().len(), count - 1);
        // A bucket beside it stays as it was.
        assert_eq!(small.entries().unwrap(), from_tables(&small));
    }
    // Reopened, the big bucket is read from the tables, the small one
    // from memory; both the same as the tables.
    let store = KvStore::open(tmp.path(), options(), vec![]).unwrap();
    let b = store.get_bucket("big").unwrap().unwrap();
    assert_eq!(b.entries().unwrap(), from_tables(&b));
    assert_eq!(b.entries().unwrap().len(), count - 1);
    let small = store.get_bucket("small").unwrap().unwrap();
    assert_eq!(
        small.entries().unwrap(),
        HashMap::from([(Key::new("small/k"), b"v".to_vec())])
    );
}

#[test]
fn a_snapshot_never_changes_and_costs_the_bucket_nothing_to_keep() {
    let tmp = tempfile::tempdir().unwrap();
    let store = KvStore::open(tmp.path(), options(), vec![]).unwrap();
    let b = store.get_or_create_bucket("v1/claims", None).unwrap();
    b.insert(&Key::new("a"), "1", 0).unwrap();
    let before = b.entries().unwrap();
    b.insert(&Key::new("a"), "2", 1).unwrap();
    b.insert(&Key::new("b"), "3", 0).unwrap();
    b.delete(&Key::new("a")).unwrap();
    assert_eq!(
        before,
        HashMap::from([(Key::new("v1/claims/a"), b"1".to_vec())])
    );
    let after = b.entries().unwrap();
    assert_eq!(
        after,
        HashMap::from([(Key::new("v1/claims/b"), b"3".to_vec())])
    );
    assert_ne!(before, after);
}
