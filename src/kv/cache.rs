//! Whole small buckets in memory, so [`Bucket::entries`](super::Bucket::entries)
//! copies a map instead of reading a B-tree range.
//!
//! Service discovery reads its buckets whole and often (`v1/instances`
//! listed by prefix, `v1/claims` checked), and those buckets are small.
//! The tables stay the truth: a bucket is held here only while it is
//! under [`CACHED_BUCKET_KEYS_MAX`] keys and [`CACHED_BUCKET_BYTES_MAX`]
//! bytes, and all of them under [`CACHED_BYTES_MAX`]; one that grows past
//! a limit is dropped and read from the tables from then on (until the
//! next open finds it small again). The fold keeps each held map exactly
//! as the tables are, inside the same round, so a read sees both at the
//! same LSN.
//!
//! A held map is persistent ([`imbl`]): a reader takes a snapshot under
//! the views' lock in O(1) and never copies it; a fold that changes a map
//! a reader still holds copies only the path to the entry, O(log n), so
//! no read pattern can make a write cost the bucket.

use std::collections::HashMap;
use std::sync::Arc;

use super::key::Key;

/// Keys a bucket may have and still be held in memory.
pub const CACHED_BUCKET_KEYS_MAX: usize = 65_536;
/// Bytes (keys, values and a per-entry overhead) a bucket may take and
/// still be held in memory.
pub const CACHED_BUCKET_BYTES_MAX: u64 = 16 << 20;
/// Bytes all held buckets take at most.
pub const CACHED_BYTES_MAX: u64 = 64 << 20;
/// What one entry costs beyond its key and value bytes: the map's slot
/// and the two allocations' headers.
const ENTRY_OVERHEAD_BYTES: u64 = 96;

pub(crate) fn entry_bytes(full_key: &str, value: &[u8]) -> u64 {
    full_key.len() as u64 + value.len() as u64 + ENTRY_OVERHEAD_BYTES
}

/// A bucket's entries at one revision, keyed by full key (`bucket/key`),
/// from [`Bucket::entries`](super::Bucket::entries).
///
/// A snapshot: later changes never show in it. It shares its memory with
/// the view (a persistent map), so taking one is O(1) and holding one
/// costs the view only the paths it changes afterwards.
#[derive(Clone, Default)]
pub struct Entries {
    map: imbl::HashMap<Arc<str>, Arc<[u8]>>,
}

impl Entries {
    /// How many keys.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The value of `full_key` (`bucket/key`).
    pub fn get(&self, full_key: &str) -> Option<&[u8]> {
        self.map.get(full_key).map(|v| &v[..])
    }

    /// Whether `full_key` (`bucket/key`) is there.
    pub fn contains_key(&self, full_key: &str) -> bool {
        self.map.contains_key(full_key)
    }

    /// Every full key with its value, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.map.iter().map(|(k, v)| (&k[..], &v[..]))
    }

    /// Every full key, in no particular order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.map.keys().map(|k| &k[..])
    }

    /// An owned copy, as the original store's `entries()` returned.
    pub fn to_map(&self) -> HashMap<Key, Vec<u8>> {
        self.iter()
            .map(|(k, v)| (Key::new(k), v.to_vec()))
            .collect()
    }

    pub(crate) fn insert(&mut self, full_key: &str, value: &[u8]) -> Option<Arc<[u8]>> {
        self.map.insert(Arc::from(full_key), Arc::from(value))
    }

    pub(crate) fn remove(&mut self, full_key: &str) -> Option<Arc<[u8]>> {
        self.map.remove(full_key)
    }
}

impl std::fmt::Debug for Entries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.iter().map(|(k, v)| (k, String::from_utf8_lossy(v))))
            .finish()
    }
}

impl PartialEq for Entries {
    fn eq(&self, other: &Entries) -> bool {
        self.map == other.map
    }
}

impl Eq for Entries {}

impl PartialEq<HashMap<Key, Vec<u8>>> for Entries {
    fn eq(&self, other: &HashMap<Key, Vec<u8>>) -> bool {
        self.len() == other.len()
            && other
                .iter()
                .all(|(k, v)| self.get(k.as_str()) == Some(v.as_slice()))
    }
}

impl From<Entries> for HashMap<Key, Vec<u8>> {
    fn from(e: Entries) -> Self {
        e.to_map()
    }
}

impl<'a> IntoIterator for &'a Entries {
    type Item = (&'a str, &'a [u8]);
    type IntoIter = Box<dyn Iterator<Item = (&'a str, &'a [u8])> + 'a>;

    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}

impl std::ops::Index<&str> for Entries {
    type Output = [u8];

    /// The value of `full_key`; panics if it is absent, as a map's index.
    fn index(&self, full_key: &str) -> &[u8] {
        match self.get(full_key) {
            Some(v) => v,
            None => panic!("no entry {full_key:?}"),
        }
    }
}

#[derive(Clone, Debug, Default)]
struct Held {
    entries: Entries,
    bytes: u64,
}

/// The held buckets. A bucket absent from `held` is read from the tables.
#[derive(Clone, Debug, Default)]
pub(crate) struct BucketCache {
    held: HashMap<String, Held>,
    bytes: u64,
}

impl BucketCache {
    /// Forgets every bucket.
    pub fn clear(&mut self) {
        self.held.clear();
        self.bytes = 0;
    }

    /// Holds a new, empty bucket.
    pub fn created(&mut self, bucket: &str) {
        self.held.entry(bucket.to_string()).or_default();
    }

    /// Holds `bucket` with `entries`, read whole from the tables, if it is
    /// within the limits; returns whether it is held.
    pub fn load(&mut self, bucket: &str, entries: Entries) -> bool {
        let bytes: u64 = entries.iter().map(|(k, v)| entry_bytes(k, v)).sum();
        let replaced = self.held.get(bucket).map_or(0, |h| h.bytes);
        if entries.len() > CACHED_BUCKET_KEYS_MAX
            || bytes > CACHED_BUCKET_BYTES_MAX
            || self.bytes - replaced + bytes > CACHED_BYTES_MAX
        {
            return false;
        }
        self.bytes = self.bytes - replaced + bytes;
        self.held
            .insert(bucket.to_string(), Held { entries, bytes });
        true
    }

    /// `full_key` (in `bucket`) now holds `value`.
    pub fn put(&mut self, bucket: &str, full_key: &str, value: &[u8]) {
        let Some(held) = self.held.get_mut(bucket) else {
            return;
        };
        let added = entry_bytes(full_key, value);
        let removed = held
            .entries
            .get(full_key)
            .map_or(0, |old| entry_bytes(full_key, old));
        let over = (removed == 0 && held.entries.len() >= CACHED_BUCKET_KEYS_MAX)
            || held.bytes + added - removed > CACHED_BUCKET_BYTES_MAX;
        if over {
            self.drop_bucket(bucket);
            return;
        }
        held.entries.insert(full_key, value);
        held.bytes = held.bytes + added - removed;
        self.bytes = self.bytes + added - removed;
        // Past the limit of them all, the largest go first (maybe this
        // one): small, hot buckets stay.
        while self.bytes > CACHED_BYTES_MAX {
            let Some(largest) = self
                .held
                .iter()
                .max_by_key(|(_, h)| h.bytes)
                .map(|(name, _)| name.clone())
            else {
                break;
            };
            self.drop_bucket(&largest);
        }
    }

    /// `full_key` (in `bucket`) is gone.
    pub fn delete(&mut self, bucket: &str, full_key: &str) {
        let Some(held) = self.held.get_mut(bucket) else {
            return;
        };
        if let Some(old) = held.entries.remove(full_key) {
            let removed = entry_bytes(full_key, &old);
            held.bytes -= removed;
            self.bytes -= removed;
        }
    }

    fn drop_bucket(&mut self, bucket: &str) {
        if let Some(old) = self.held.remove(bucket) {
            self.bytes -= old.bytes;
        }
    }

    /// `bucket`'s entries, if it is held.
    pub fn entries(&self, bucket: &str) -> Option<Entries> {
        self.held.get(bucket).map(|h| h.entries.clone())
    }

    /// Bytes all held buckets take.
    #[cfg(test)]
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_past_its_key_limit_is_dropped_and_its_bytes_returned() {
        let mut c = BucketCache::default();
        c.created("b");
        for i in 0..CACHED_BUCKET_KEYS_MAX {
            c.put("b", &format!("b/{i}"), b"v");
        }
        assert_eq!(
            c.entries("b").map(|e| e.len()),
            Some(CACHED_BUCKET_KEYS_MAX)
        );
        // Overwriting an existing key at the limit keeps it held.
        c.put("b", "b/0", b"w");
        assert!(c.entries("b").is_some());
        c.put("b", "b/new", b"v");
        assert!(c.entries("b").is_none());
        assert_eq!(c.bytes(), 0);
        // A dropped bucket stays dropped: its puts are not counted.
        c.put("b", "b/again", b"v");
        assert!(c.entries("b").is_none());
        assert_eq!(c.bytes(), 0);
    }

    #[test]
    fn bytes_follow_overwrites_and_deletes() {
        let mut c = BucketCache::default();
        c.created("b");
        c.put("b", "b/k", b"1234");
        let one = c.bytes();
        assert_eq!(one, entry_bytes("b/k", b"1234"));
        c.put("b", "b/k", b"12");
        assert_eq!(c.bytes(), entry_bytes("b/k", b"12"));
        c.delete("b", "b/k");
        assert_eq!(c.bytes(), 0);
        assert_eq!(c.entries("b").map(|e| e.len()), Some(0));
    }

    #[test]
    fn a_reader_keeps_its_copy_while_the_fold_goes_on() {
        let mut c = BucketCache::default();
        c.created("b");
        c.put("b", "b/k", b"old");
        let read = c.entries("b");
        c.put("b", "b/k", b"new");
        assert_eq!(read.as_ref().and_then(|e| e.get("b/k")), Some(&b"old"[..]));
        assert_eq!(
            c.entries("b")
                .and_then(|e| e.get("b/k").map(<[u8]>::to_vec)),
            Some(b"new".to_vec())
        );
    }

    #[test]
    fn past_the_limit_of_all_buckets_the_largest_goes_and_small_ones_stay() {
        let mut c = BucketCache::default();
        c.created("small");
        c.put("small", "small/k", b"v");
        let value = vec![0u8; 1 << 20];
        let per_bucket = (CACHED_BUCKET_BYTES_MAX >> 20) - 1;
        let buckets = CACHED_BYTES_MAX / (per_bucket << 20) + 1;
        for b in 0..buckets {
            let name = format!("big{b}");
            c.created(&name);
            for i in 0..per_bucket {
                c.put(&name, &format!("{name}/{i}"), &value);
            }
        }
        assert!(c.bytes() <= CACHED_BYTES_MAX);
        assert!(c.entries("small").is_some(), "the small bucket stays");
        let held_big = (0..buckets)
            .filter(|b| c.entries(&format!("big{b}")).is_some())
            .count() as u64;
        assert!(held_big < buckets, "some large bucket went");
        assert!(held_big > 0);
    }

    #[test]
    fn a_bucket_over_the_limits_is_not_loaded() {
        let mut c = BucketCache::default();
        let mut big = Entries::default();
        for i in 0..=CACHED_BUCKET_KEYS_MAX {
            big.insert(&format!("b/{i}"), b"");
        }
        assert!(!c.load("b", big));
        assert!(c.entries("b").is_none());
        let mut small = Entries::default();
        small.insert("s/k", b"v");
        assert!(c.load("s", small));
        assert_eq!(c.bytes(), entry_bytes("s/k", b"v"));
    }
}
