//! The allocation table as a fold over registry events, indexed so that
//! every decision costs the depth of the paths it asks about, not the
//! size of the table.
//!
//! Pods are kept in registration order under a sequence number that never
//! changes while the pod is registered (the view's row key too). Beside
//! them: name, pid and segment indexes; the children of each pod; and a
//! trie over the path components of the Write allow targets of the
//! top-level pods, which is where every search for the owner of a write
//! starts.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::registry::scope::{Permission, ScopeRule, fully_covers, overlaps};

/// The segment a pod writes to: a UUID.
pub type SegmentId = uuid::Uuid;

/// One pod's scope allocation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    /// The pod's name: its identity.
    pub pod_name: String,
    /// The owning process, checked with `kill(pid, 0)` to reclaim stale pods.
    pub pid: u32,
    /// The pod's Unix socket.
    pub socket: PathBuf,
    /// The full grant; what was delegated to children is not subtracted.
    pub allow: Vec<ScopeRule>,
    /// Rules capping the pod's effective scope.
    pub deny: Vec<ScopeRule>,
    /// The pod that delegated to this one; `None` for a top-level pod.
    pub delegated_from: Option<String>,
    /// The segment it writes to; `None` while it is a pre-reservation.
    pub segment_id: Option<SegmentId>,
}

/// Why a pod left the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RemovalReason {
    /// `release_pod`, or its guard was dropped.
    Released,
    /// Its process was dead (`reclaim_stale`).
    Stale,
    /// Its parent took its delegated scope back.
    Reclaimed,
}

/// One change to the table. Reparenting on removal happens in `apply`,
/// so it is the same on replay as when it was decided.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    /// A pod (top-level or pre-reservation) was added.
    Added(Allocation),
    /// A pre-reservation was adopted: pid and segment filled in.
    Adopted {
        /// The pod.
        pod: String,
        /// Its process.
        pid: u32,
        /// Its segment.
        segment: SegmentId,
    },
    /// A pod moved to another segment.
    SegmentUpdated {
        /// The pod.
        pod: String,
        /// The new segment.
        segment: SegmentId,
    },
    /// A pod was removed; its children now hang from its parent.
    Removed {
        /// The pod.
        pod: String,
        /// Why.
        reason: RemovalReason,
    },
    /// Write deny rules were removed from a pod.
    DenyRemoved {
        /// The pod.
        pod: String,
        /// The rules removed (one equal rule each).
        rules: Vec<ScopeRule>,
    },
}

impl Change {
    /// The pods this change is about (for history).
    pub fn pods(&self) -> Vec<&str> {
        match self {
            Change::Added(a) => vec![a.pod_name.as_str()],
            Change::Adopted { pod, .. }
            | Change::SegmentUpdated { pod, .. }
            | Change::Removed { pod, .. }
            | Change::DenyRemoved { pod, .. } => vec![pod.as_str()],
        }
    }
}

/// The table: allocations in registration order, with the indexes the
/// decisions use.
#[derive(Clone, Debug, Default)]
pub struct RegistryState {
    /// Registration sequence to allocation: iteration order is table order.
    by_seq: BTreeMap<u64, Allocation>,
    seq_of: HashMap<String, u64>,
    next_seq: u64,
    /// Parent name to the sequences of the pods delegated from it (whether
    /// or not the parent is registered).
    children: HashMap<String, BTreeSet<u64>>,
    by_pid: HashMap<u32, BTreeSet<u64>>,
    by_segment: HashMap<SegmentId, BTreeSet<u64>>,
    /// The Write allow targets of the top-level pods.
    top_writes: TargetTrie,
}

/// Two tables are equal when they hold the same allocations in the same
/// order (the indexes follow from them).
impl PartialEq for RegistryState {
    fn eq(&self, other: &RegistryState) -> bool {
        self.by_seq.values().eq(other.by_seq.values())
    }
}

impl Eq for RegistryState {}

/// Who owns a requested write, per the ownership walk.
enum Search<'a> {
    NotQualified,
    Nobody,
    Owner(&'a Allocation, &'a ScopeRule),
}

impl RegistryState {
    /// A table holding `allocations` in order (a later duplicate name
    /// replaces an earlier one, in its place).
    pub fn from_allocations(allocations: impl IntoIterator<Item = Allocation>) -> RegistryState {
        let mut state = RegistryState::default();
        for a in allocations {
            state.put(a);
        }
        state
    }

    /// Every allocation, in registration order.
    pub fn allocations(&self) -> impl Iterator<Item = &Allocation> {
        self.by_seq.values()
    }

    /// Every allocation with its registration sequence, in that order.
    pub fn allocations_with_seq(&self) -> impl Iterator<Item = (u64, &Allocation)> {
        self.by_seq.iter().map(|(s, a)| (*s, a))
    }

    /// The allocation of `pod`.
    pub fn find(&self, pod: &str) -> Option<&Allocation> {
        self.seq_of.get(pod).and_then(|s| self.by_seq.get(s))
    }

    /// The registration sequence of `pod`: fixed while it is registered.
    pub fn seq(&self, pod: &str) -> Option<u64> {
        self.seq_of.get(pod).copied()
    }

    /// The allocation writing to `segment` (never a pre-reservation); the
    /// first registered, should several claim it.
    pub fn find_by_segment(&self, segment: SegmentId) -> Option<&Allocation> {
        self.by_segment
            .get(&segment)
            .and_then(|seqs| seqs.first())
            .and_then(|s| self.by_seq.get(s))
    }

    /// The distinct pids of the table's pods.
    pub fn pids(&self) -> impl Iterator<Item = u32> + '_ {
        self.by_pid.keys().copied()
    }

    /// The pods of process `pid` with their sequences, in registration
    /// order.
    pub fn pods_of_pid(&self, pid: u32) -> impl Iterator<Item = (u64, &Allocation)> {
        self.by_pid
            .get(&pid)
            .into_iter()
            .flatten()
            .filter_map(|s| self.by_seq.get(s).map(|a| (*s, a)))
    }

    /// Number of allocations.
    pub fn len(&self) -> usize {
        self.by_seq.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.by_seq.is_empty()
    }

    /// The pods delegated from `pod`, in registration order.
    pub fn children<'a>(&'a self, pod: &str) -> impl Iterator<Item = &'a Allocation> + 'a {
        self.children
            .get(pod)
            .into_iter()
            .flatten()
            .filter_map(|s| self.by_seq.get(s))
    }

    /// Puts `a` at sequence `seq` (a table read back from its rows). A pod
    /// of the same name elsewhere is replaced.
    pub(crate) fn insert_at(&mut self, seq: u64, a: Allocation) {
        if let Some(old) = self.seq_of.get(&a.pod_name).copied() {
            self.take(old);
        }
        if let Some(old) = self.by_seq.get(&seq).map(|o| o.pod_name.clone()) {
            self.seq_of.remove(&old);
            self.take(seq);
        }
        self.next_seq = self.next_seq.max(seq.saturating_add(1));
        self.index(seq, a);
    }

    /// Adds `a` at the end, or replaces the pod of its name in place.
    fn put(&mut self, a: Allocation) {
        let seq = match self.seq_of.get(&a.pod_name).copied() {
            Some(seq) => {
                self.take(seq);
                seq
            }
            None => {
                self.next_seq += 1;
                self.next_seq - 1
            }
        };
        self.index(seq, a);
    }

    /// Stores `a` at `seq` and indexes it.
    fn index(&mut self, seq: u64, a: Allocation) {
        self.seq_of.insert(a.pod_name.clone(), seq);
        match &a.delegated_from {
            Some(parent) => {
                self.children.entry(parent.clone()).or_default().insert(seq);
            }
            None => self.index_top(seq, &a),
        }
        self.by_pid.entry(a.pid).or_default().insert(seq);
        if let Some(segment) = a.segment_id {
            self.by_segment.entry(segment).or_default().insert(seq);
        }
        self.by_seq.insert(seq, a);
    }

    fn index_top(&mut self, seq: u64, a: &Allocation) {
        for r in a.allow.iter().filter(|r| r.is_write()) {
            self.top_writes.insert(&r.target, seq);
        }
    }

    fn unindex_top(&mut self, seq: u64, a: &Allocation) {
        for r in a.allow.iter().filter(|r| r.is_write()) {
            self.top_writes.remove(&r.target, seq);
        }
    }

    /// Takes the allocation at `seq` out of the table and every index but
    /// `seq_of` (the caller either re-indexes it or forgets the name).
    fn take(&mut self, seq: u64) -> Option<Allocation> {
        let a = self.by_seq.remove(&seq)?;
        match &a.delegated_from {
            Some(parent) => remove_from(&mut self.children, parent, seq),
            None => self.unindex_top(seq, &a),
        }
        remove_from(&mut self.by_pid, &a.pid, seq);
        if let Some(segment) = a.segment_id {
            remove_from(&mut self.by_segment, &segment, seq);
        }
        Some(a)
    }

    /// Changes the allocation of `pod` through `edit`, keeping the indexes
    /// right (its name and parent must not change).
    fn edit(&mut self, pod: &str, edit: impl FnOnce(&mut Allocation)) {
        let Some(seq) = self.seq_of.get(pod).copied() else {
            return;
        };
        if let Some(mut a) = self.take(seq) {
            edit(&mut a);
            self.index(seq, a);
        }
    }

    /// Applies one change. Changes were checked when decided; applying one
    /// that no longer fits (replayed against other state) does nothing.
    pub fn apply(&mut self, change: &Change) {
        match change {
            Change::Added(a) => self.put(a.clone()),
            Change::Adopted { pod, pid, segment } => self.edit(pod, |a| {
                a.pid = *pid;
                a.segment_id = Some(*segment);
            }),
            Change::SegmentUpdated { pod, segment } => self.edit(pod, |a| {
                a.segment_id = Some(*segment);
            }),
            Change::Removed { pod, .. } => {
                let Some(seq) = self.seq_of.remove(pod) else {
                    return;
                };
                let Some(gone) = self.take(seq) else {
                    return;
                };
                // Its children now hang from its parent (top level if none).
                let orphans = self.children.remove(pod).unwrap_or_default();
                for child in orphans {
                    let Some(mut a) = self.by_seq.remove(&child) else {
                        continue;
                    };
                    a.delegated_from = gone.delegated_from.clone();
                    match &a.delegated_from {
                        Some(parent) => {
                            self.children
                                .entry(parent.clone())
                                .or_default()
                                .insert(child);
                        }
                        None => self.index_top(child, &a),
                    }
                    self.by_seq.insert(child, a);
                }
            }
            Change::DenyRemoved { pod, rules } => {
                let Some(a) = self.seq_of.get(pod).and_then(|s| self.by_seq.get_mut(s)) else {
                    return;
                };
                for r in rules {
                    if let Some(i) = a.deny.iter().position(|d| d == r) {
                        a.deny.remove(i);
                    }
                }
            }
        }
    }

    /// The owner of a requested Write rule: walk the top-level pods in
    /// order; a pod qualifies if one of its Write allow rules overlaps the
    /// request (else it is skipped with its subtree); a Write deny that
    /// fully covers the request makes its subtree yield nobody; otherwise
    /// the deepest qualifying descendant owns it, else the pod itself.
    /// When the owner is `exempt` (a spawner delegating its own scope),
    /// there is no competitor.
    pub fn owner_of_write<'a>(
        &'a self,
        request: &ScopeRule,
        exempt: Option<&str>,
    ) -> Option<(&'a Allocation, &'a ScopeRule)> {
        self.owners_of_write(request, exempt).into_iter().next()
    }

    /// Every owner of a requested Write rule, one per top-level tree (the
    /// deepest qualifying pod of it, as [`RegistryState::owner_of_write`]
    /// finds it), in registration order of the top-level pods; `exempt`
    /// is left out. A request overlapping several owners must get past
    /// each of them.
    ///
    /// Only the top-level pods with a Write target on the request's path
    /// (an ancestor or the target itself) or below it (anywhere, for a
    /// recursive request; direct children, for a flat one) can overlap
    /// it: those are looked up in the trie, so the walk costs the path's
    /// depth and the size of what the request covers, not the table's.
    pub fn owners_of_write<'a>(
        &'a self,
        request: &ScopeRule,
        exempt: Option<&str>,
    ) -> Vec<(&'a Allocation, &'a ScopeRule)> {
        self.top_writes
            .candidates(&request.target, request.recursive)
            .into_iter()
            .filter_map(|seq| self.by_seq.get(&seq))
            .filter_map(|top| match self.search(top, request) {
                Search::Owner(a, r) if exempt != Some(a.pod_name.as_str()) => Some((a, r)),
                _ => None,
            })
            .collect()
    }

    fn search<'a>(&'a self, pod: &'a Allocation, request: &ScopeRule) -> Search<'a> {
        let Some(rule) = pod
            .allow
            .iter()
            .find(|r| r.is_write() && overlaps(r, request))
        else {
            return Search::NotQualified;
        };
        if pod
            .deny
            .iter()
            .any(|d| d.is_write() && fully_covers(d, request))
        {
            return Search::Nobody;
        }
        for child in self.children(&pod.pod_name) {
            if let found @ Search::Owner(..) = self.search(child, request) {
                return found;
            }
        }
        Search::Owner(pod, rule)
    }

    /// Whether `pod` may effectively use `rule`. Write: a Write allow fully
    /// covers it, no Write deny overlaps it, and no direct child's Write
    /// allow overlaps it. Read: some allow rule fully covers it.
    pub fn has_effective(&self, pod: &str, rule: &ScopeRule) -> bool {
        let Some(a) = self.find(pod) else {
            return false;
        };
        match rule.permission {
            Permission::Read => a.allow.iter().any(|r| fully_covers(r, rule)),
            Permission::Write => {
                a.allow
                    .iter()
                    .any(|r| r.is_write() && fully_covers(r, rule))
                    && !a.deny.iter().any(|d| d.is_write() && overlaps(d, rule))
                    && !self
                        .children(pod)
                        .any(|c| c.allow.iter().any(|r| r.is_write() && overlaps(r, rule)))
            }
        }
    }
}

/// Removes `seq` from the set under `key`, dropping the set once empty.
fn remove_from<K, Q>(map: &mut HashMap<Q, BTreeSet<u64>>, key: &K, seq: u64)
where
    K: std::hash::Hash + Eq + ?Sized,
    Q: std::hash::Hash + Eq + std::borrow::Borrow<K>,
{
    if let Some(set) = map.get_mut(key) {
        set.remove(&seq);
        if set.is_empty() {
            map.remove(key);
        }
    }
}

/// Path targets by component, each node holding the sequences of the pods
/// with a rule at exactly that target (with how many of their rules).
#[derive(Clone, Debug, Default)]
struct TargetTrie {
    root: TrieNode,
}

#[derive(Clone, Debug, Default)]
struct TrieNode {
    here: BTreeMap<u64, u32>,
    below: HashMap<OsString, TrieNode>,
}

impl TrieNode {
    fn is_empty(&self) -> bool {
        self.here.is_empty() && self.below.is_empty()
    }

    /// Every sequence in this node and below.
    fn collect(&self, out: &mut BTreeSet<u64>) {
        out.extend(self.here.keys());
        for n in self.below.values() {
            n.collect(out);
        }
    }
}

/// The named components of an absolute, normalised target.
fn parts(target: &Path) -> impl Iterator<Item = &std::ffi::OsStr> {
    target.components().filter_map(|c| match c {
        Component::Normal(p) => Some(p),
        _ => None,
    })
}

impl TargetTrie {
    fn insert(&mut self, target: &Path, seq: u64) {
        let mut node = &mut self.root;
        for p in parts(target) {
            node = node.below.entry(p.to_os_string()).or_default();
        }
        *node.here.entry(seq).or_default() += 1;
    }

    fn remove(&mut self, target: &Path, seq: u64) {
        fn go<'p>(
            node: &mut TrieNode,
            mut rest: impl Iterator<Item = &'p std::ffi::OsStr>,
            seq: u64,
        ) {
            match rest.next() {
                None => {
                    if let Some(n) = node.here.get_mut(&seq) {
                        *n -= 1;
                        if *n == 0 {
                            node.here.remove(&seq);
                        }
                    }
                }
                Some(p) => {
                    if let Some(child) = node.below.get_mut(p) {
                        go(child, rest, seq);
                        if child.is_empty() {
                            node.below.remove(p);
                        }
                    }
                }
            }
        }
        go(&mut self.root, parts(target), seq);
    }

    /// The sequences with a target that can overlap a rule at `target`:
    /// on its path (ancestors and itself), and below it (all of the
    /// subtree when `recursive`, else the direct children), in order.
    fn candidates(&self, target: &Path, recursive: bool) -> BTreeSet<u64> {
        let mut out = BTreeSet::new();
        let mut node = &self.root;
        out.extend(node.here.keys());
        for p in parts(target) {
            match node.below.get(p) {
                Some(next) => {
                    node = next;
                    out.extend(node.here.keys());
                }
                None => return out,
            }
        }
        for n in node.below.values() {
            if recursive {
                n.collect(&mut out);
            } else {
                out.extend(n.here.keys());
            }
        }
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn pod(name: &str, parent: Option<&str>, writes: &[&str]) -> Allocation {
        Allocation {
            pod_name: name.into(),
            pid: 1,
            socket: PathBuf::from("/run/x.sock"),
            allow: writes
                .iter()
                .map(|w| ScopeRule::write(w).unwrap())
                .collect(),
            deny: vec![],
            delegated_from: parent.map(str::to_string),
            segment_id: None,
        }
    }

    /// The walk over every top-level pod, as it was before the trie: the
    /// reference the indexed search must agree with.
    fn owners_by_scan<'a>(s: &'a RegistryState, request: &ScopeRule) -> Vec<&'a str> {
        s.allocations()
            .filter(|a| a.delegated_from.is_none())
            .filter_map(|top| match s.search(top, request) {
                Search::Owner(a, _) => Some(a.pod_name.as_str()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn the_trie_finds_what_a_scan_of_every_pod_finds() {
        let targets = ["/", "/a", "/a/b", "/a/b/c", "/a/bc", "/d", "/d/e/f"];
        let mut s = RegistryState::default();
        for (i, t) in targets.iter().enumerate() {
            s.apply(&Change::Added(pod(&format!("p{i}"), None, &[t])));
            let flat = ScopeRule::new(t, Permission::Write, false).unwrap();
            let mut a = pod(&format!("f{i}"), None, &[]);
            a.allow = vec![flat];
            s.apply(&Change::Added(a));
        }
        s.apply(&Change::Added(pod("child", Some("p1"), &["/a/b"])));
        for t in targets.iter().chain(&["/a/b/c/d", "/x", "/a/b/x"]) {
            for recursive in [true, false] {
                let r = ScopeRule::new(t, Permission::Write, recursive).unwrap();
                let indexed: Vec<&str> = s
                    .owners_of_write(&r, None)
                    .into_iter()
                    .map(|(a, _)| a.pod_name.as_str())
                    .collect();
                assert_eq!(indexed, owners_by_scan(&s, &r), "{r}");
            }
        }
    }

    #[test]
    fn removal_reparents_and_a_new_top_level_pod_is_found_by_its_targets() {
        let mut s = RegistryState::default();
        s.apply(&Change::Added(pod("top", None, &["/src"])));
        s.apply(&Change::Added(pod("mid", Some("top"), &["/src/a"])));
        s.apply(&Change::Added(pod("leaf", Some("mid"), &["/src/a/b"])));
        s.apply(&Change::Removed {
            pod: "mid".into(),
            reason: RemovalReason::Released,
        });
        assert_eq!(
            s.find("leaf").unwrap().delegated_from.as_deref(),
            Some("top")
        );
        assert_eq!(s.children("top").count(), 1);
        s.apply(&Change::Removed {
            pod: "top".into(),
            reason: RemovalReason::Released,
        });
        let r = ScopeRule::write("/src/a/b/c").unwrap();
        let owners: Vec<&str> = s
            .owners_of_write(&r, None)
            .into_iter()
            .map(|(a, _)| a.pod_name.as_str())
            .collect();
        assert_eq!(
            owners,
            ["leaf"],
            "an orphan is a top-level pod, found by its own target"
        );
        assert_eq!(s.pids().collect::<Vec<_>>(), [1]);
        s.apply(&Change::Removed {
            pod: "leaf".into(),
            reason: RemovalReason::Released,
        });
        assert!(s.is_empty() && s.pids().next().is_none());
        assert!(s.top_writes.root.is_empty(), "the trie prunes empty nodes");
    }

    #[test]
    fn a_replaced_pod_keeps_its_place_and_sequence() {
        let mut s = RegistryState::default();
        s.apply(&Change::Added(pod("a", None, &["/a"])));
        s.apply(&Change::Added(pod("b", None, &["/b"])));
        s.apply(&Change::Added(pod("a", None, &["/c"])));
        let names: Vec<&str> = s.allocations().map(|a| a.pod_name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(s.seq("a"), Some(0));
        let old = ScopeRule::write("/a").unwrap();
        assert!(
            s.owners_of_write(&old, None).is_empty(),
            "the old target is unindexed"
        );
    }
}
