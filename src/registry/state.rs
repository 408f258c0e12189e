//! The allocation table as a fold over registry events.

use std::path::PathBuf;

use indexmap::IndexMap;
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

/// The table: allocations in registration order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RegistryState {
    pub(crate) pods: IndexMap<String, Allocation>,
}

/// Who owns a requested write, per the ownership walk.
enum Search<'a> {
    NotQualified,
    Nobody,
    Owner(&'a Allocation, &'a ScopeRule),
}

impl RegistryState {
    /// A table holding `allocations` in order (a later duplicate name
    /// replaces an earlier one).
    pub fn from_allocations(allocations: impl IntoIterator<Item = Allocation>) -> RegistryState {
        RegistryState {
            pods: allocations
                .into_iter()
                .map(|a| (a.pod_name.clone(), a))
                .collect(),
        }
    }

    /// Every allocation, in registration order.
    pub fn allocations(&self) -> impl Iterator<Item = &Allocation> {
        self.pods.values()
    }

    /// The allocation of `pod`.
    pub fn find(&self, pod: &str) -> Option<&Allocation> {
        self.pods.get(pod)
    }

    /// The allocation writing to `segment` (never a pre-reservation).
    pub fn find_by_segment(&self, segment: SegmentId) -> Option<&Allocation> {
        self.pods.values().find(|a| a.segment_id == Some(segment))
    }

    /// Number of allocations.
    pub fn len(&self) -> usize {
        self.pods.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }

    fn children<'a>(&'a self, pod: &'a str) -> impl Iterator<Item = &'a Allocation> + 'a {
        self.pods
            .values()
            .filter(move |a| a.delegated_from.as_deref() == Some(pod))
    }

    /// Applies one change. Changes were checked when decided; applying one
    /// that no longer fits (replayed against other state) does nothing.
    pub fn apply(&mut self, change: &Change) {
        match change {
            Change::Added(a) => {
                self.pods.insert(a.pod_name.clone(), a.clone());
            }
            Change::Adopted { pod, pid, segment } => {
                if let Some(a) = self.pods.get_mut(pod) {
                    a.pid = *pid;
                    a.segment_id = Some(*segment);
                }
            }
            Change::SegmentUpdated { pod, segment } => {
                if let Some(a) = self.pods.get_mut(pod) {
                    a.segment_id = Some(*segment);
                }
            }
            Change::Removed { pod, .. } => {
                if let Some(gone) = self.pods.shift_remove(pod) {
                    for a in self.pods.values_mut() {
                        if a.delegated_from.as_deref() == Some(pod.as_str()) {
                            a.delegated_from = gone.delegated_from.clone();
                        }
                    }
                }
            }
            Change::DenyRemoved { pod, rules } => {
                if let Some(a) = self.pods.get_mut(pod) {
                    for r in rules {
                        if let Some(i) = a.deny.iter().position(|d| d == r) {
                            a.deny.remove(i);
                        }
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
    pub fn owners_of_write<'a>(
        &'a self,
        request: &ScopeRule,
        exempt: Option<&str>,
    ) -> Vec<(&'a Allocation, &'a ScopeRule)> {
        self.pods
            .values()
            .filter(|a| a.delegated_from.is_none())
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
        let Some(a) = self.pods.get(pod) else {
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
