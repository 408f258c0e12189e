//! Stream versions for the commit leader, who needs one for every batch it
//! numbers: a bounded cache in front of the store.
//!
//! The leader is the only one who changes versions, so every entry it
//! holds is exact. A stream written in a group the store has not applied
//! yet must stay cached (the store does not know it yet); any other entry
//! may be evicted, and is then read from the store, which is exact for it.

use std::collections::HashMap;

/// Entries kept once the cache is over its limit and trimmed.
pub(crate) const VERSION_CACHE_ENTRIES_MAX: usize = 65_536;

#[derive(Debug, Default)]
pub(crate) struct VersionCache {
    /// Stream to (version, LSN of its last event).
    entries: HashMap<Box<str>, (u64, u64)>,
}

impl VersionCache {
    /// The cached version of `stream`.
    pub(crate) fn get(&self, stream: &str) -> Option<u64> {
        self.entries.get(stream).map(|e| e.0)
    }

    /// Records that `stream` is at `version` after the event at `last_lsn`.
    pub(crate) fn set(&mut self, stream: &str, version: u64, last_lsn: u64) {
        match self.entries.get_mut(stream) {
            Some(e) => *e = (version, last_lsn),
            None => {
                self.entries.insert(stream.into(), (version, last_lsn));
            }
        }
    }

    /// Keeps memory bounded: once over the limit, drops every entry the
    /// store already reflects (its last event at or below `applied_lsn`).
    pub(crate) fn trim(&mut self, applied_lsn: u64) {
        if self.entries.len() > VERSION_CACHE_ENTRIES_MAX {
            self.entries.retain(|_, e| e.1 > applied_lsn);
        }
    }

    /// Forgets every entry: for when the store reflects every commit.
    pub(crate) fn clear(&mut self) {
        self.entries.clear();
    }

    /// Entries held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_the_store_reflects_is_evicted() {
        let mut c = VersionCache::default();
        for i in 0..=VERSION_CACHE_ENTRIES_MAX as u64 {
            c.set(&format!("s{i}"), 1, i + 1);
        }
        c.trim(10);
        assert_eq!(c.len(), VERSION_CACHE_ENTRIES_MAX + 1 - 10);
        assert_eq!(c.get("s0"), None);
        assert_eq!(c.get("s10"), Some(1), "LSN 11 is not applied yet");
    }
}
