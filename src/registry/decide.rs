//! The registry's operations as decisions: given the table, the request
//! and a liveness check, the changes to append or the error. Pure, so the
//! same decision runs inside the writer and in tests.

use std::borrow::Cow;
use std::path::PathBuf;

use crate::registry::RegistryError;
use crate::registry::scope::{Authority, ScopeRule, fully_covers};
use crate::registry::state::{Allocation, Change, RegistryState, RemovalReason, SegmentId};

/// Whether a process is alive: `kill(pid, 0)` failing with ESRCH means
/// dead; pid 0 counts as dead; any other failure (EPERM) counts as alive.
pub fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false; // no such pid can exist
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks for existence and permission.
    if unsafe { libc::kill(pid, 0) } == 0 {
        return true;
    }
    std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// Removals for every dead pod, in registration order. Sequential
/// removal with reparenting to the removed pod's parent collapses chains
/// of dead pods to the nearest live ancestor. Each distinct pid is
/// checked once, and only the dead pids' pods are visited.
pub fn reclaim_stale(state: &RegistryState, alive: &dyn Fn(u32) -> bool) -> Vec<Change> {
    let mut dead: Vec<(u64, &Allocation)> = state
        .pids()
        .filter(|pid| !alive(*pid))
        .flat_map(|pid| state.pods_of_pid(pid))
        .collect();
    dead.sort_unstable_by_key(|(seq, _)| *seq);
    dead.into_iter()
        .map(|(_, a)| Change::Removed {
            pod: a.pod_name.clone(),
            reason: RemovalReason::Stale,
        })
        .collect()
}

/// The table after reclaiming stale pods, and the removals.
fn after_reclaim<'a>(
    state: &'a RegistryState,
    alive: &dyn Fn(u32) -> bool,
) -> (Cow<'a, RegistryState>, Vec<Change>) {
    let removed = reclaim_stale(state, alive);
    if removed.is_empty() {
        return (Cow::Borrowed(state), removed);
    }
    let mut next = state.clone();
    for c in &removed {
        next.apply(c);
    }
    (Cow::Owned(next), removed)
}

/// `SegmentConflict` if a pod other than `except` writes to `segment`.
fn segment_free(
    state: &RegistryState,
    segment: SegmentId,
    except: Option<&str>,
) -> Result<(), RegistryError> {
    match state.find_by_segment(segment) {
        Some(holder) if Some(holder.pod_name.as_str()) != except => {
            Err(RegistryError::SegmentConflict {
                segment,
                holder: holder.pod_name.clone(),
                socket: holder.socket.clone(),
            })
        }
        _ => Ok(()),
    }
}

fn check_rules(rules: &[ScopeRule]) -> Result<(), RegistryError> {
    rules.iter().try_for_each(ScopeRule::validate)
}

/// What `register_pod` asks for.
#[derive(Clone, Debug)]
pub struct Registration {
    /// Pod name.
    pub name: String,
    /// Its process.
    pub pid: u32,
    /// Its socket.
    pub socket: PathBuf,
    /// Allow rules.
    pub allow: Vec<ScopeRule>,
    /// Deny rules.
    pub deny: Vec<ScopeRule>,
    /// Its segment.
    pub segment: SegmentId,
}

/// `register_pod`: reclaim stale pods; then `DuplicatePodName`;
/// `SegmentConflict`; and for each Write allow rule, `WriteConflict`
/// naming the first of its owners (one per top-level tree, in
/// registration order) whose rule the request's own Write deny rules do
/// not fully cover: a deny covering one owner lets the rule past that
/// owner only, never past another. Adds a top-level pod.
pub fn register(
    state: &RegistryState,
    r: Registration,
    alive: &dyn Fn(u32) -> bool,
) -> Result<Vec<Change>, RegistryError> {
    check_rules(&r.allow)?;
    check_rules(&r.deny)?;
    let (table, mut changes) = after_reclaim(state, alive);
    if table.find(&r.name).is_some() {
        return Err(RegistryError::DuplicatePodName(r.name));
    }
    segment_free(&table, r.segment, None)?;
    for rule in r.allow.iter().filter(|r| r.is_write()) {
        let uncovered = table
            .owners_of_write(rule, None)
            .into_iter()
            .find(|(_, owner_rule)| {
                !r.deny
                    .iter()
                    .any(|d| d.is_write() && fully_covers(d, owner_rule))
            });
        if let Some((owner, owner_rule)) = uncovered {
            return Err(RegistryError::WriteConflict {
                competitor: owner.pod_name.clone(),
                competitor_rule: owner_rule.clone(),
                rule: rule.clone(),
            });
        }
    }
    changes.push(Change::Added(Allocation {
        pod_name: r.name,
        pid: r.pid,
        socket: r.socket,
        allow: r.allow,
        deny: r.deny,
        delegated_from: None,
        segment_id: Some(r.segment),
    }));
    Ok(changes)
}

/// What `delegate_scope` asks for.
#[derive(Clone, Debug)]
pub struct Delegation {
    /// The pod delegating.
    pub spawner: String,
    /// The child's name.
    pub child: String,
    /// The child's process until it adopts (usually the spawner's own:
    /// pid 0 counts as dead, and would be reclaimed at once).
    pub pid: u32,
    /// The child's socket.
    pub socket: PathBuf,
    /// What the child gets.
    pub allow: Vec<ScopeRule>,
    /// What the spawner may hand out.
    pub authority: Authority,
}

/// `delegate_scope`: reclaim stale pods; `DuplicatePodName`;
/// `UnknownPod(spawner)`; for every rule `InvalidScope` if the authority
/// itself is invalid, `NotSubset` if it does not allow the rule, and for
/// Write rules `WriteConflict` against any owner but the spawner. Adds a
/// pre-reservation under the spawner.
pub fn delegate(
    state: &RegistryState,
    d: Delegation,
    alive: &dyn Fn(u32) -> bool,
) -> Result<Vec<Change>, RegistryError> {
    let (table, mut changes) = after_reclaim(state, alive);
    if table.find(&d.child).is_some() {
        return Err(RegistryError::DuplicatePodName(d.child));
    }
    if table.find(&d.spawner).is_none() {
        return Err(RegistryError::UnknownPod(d.spawner));
    }
    check_rules(&d.allow)?;
    d.authority.validate()?;
    for rule in &d.allow {
        if !d.authority.allows(rule) {
            return Err(RegistryError::NotSubset { rule: rule.clone() });
        }
        if rule.is_write()
            && let Some((owner, owner_rule)) = table.owner_of_write(rule, Some(&d.spawner))
        {
            return Err(RegistryError::WriteConflict {
                competitor: owner.pod_name.clone(),
                competitor_rule: owner_rule.clone(),
                rule: rule.clone(),
            });
        }
    }
    changes.push(Change::Added(Allocation {
        pod_name: d.child,
        pid: d.pid,
        socket: d.socket,
        allow: d.allow,
        deny: Vec::new(),
        delegated_from: Some(d.spawner),
        segment_id: None,
    }));
    Ok(changes)
}

/// `adopt_allocation`: the child fills in its pid and segment.
pub fn adopt(
    state: &RegistryState,
    name: &str,
    pid: u32,
    segment: SegmentId,
) -> Result<Vec<Change>, RegistryError> {
    if state.find(name).is_none() {
        return Err(RegistryError::UnknownPod(name.to_string()));
    }
    segment_free(state, segment, Some(name))?;
    Ok(vec![Change::Adopted {
        pod: name.to_string(),
        pid,
        segment,
    }])
}

/// `update_segment`: `SegmentConflict` if another pod holds it,
/// `UnknownPod` if absent.
pub fn update_segment(
    state: &RegistryState,
    name: &str,
    segment: SegmentId,
) -> Result<Vec<Change>, RegistryError> {
    segment_free(state, segment, Some(name))?;
    if state.find(name).is_none() {
        return Err(RegistryError::UnknownPod(name.to_string()));
    }
    Ok(vec![Change::SegmentUpdated {
        pod: name.to_string(),
        segment,
    }])
}

/// Releases `name` only if it still belongs to the guard's process: a
/// pod released meanwhile and registered again under the same name by
/// another process is left alone. (The segment may change under a guard:
/// `update_segment`.)
pub fn release_if_same(state: &RegistryState, name: &str, pid: u32) -> Vec<Change> {
    match state.find(name) {
        Some(a) if a.pid == pid => vec![Change::Removed {
            pod: name.to_string(),
            reason: RemovalReason::Released,
        }],
        _ => Vec::new(),
    }
}

/// `release_pod`: `UnknownPod` if absent; children go to its parent.
pub fn release(state: &RegistryState, name: &str) -> Result<Vec<Change>, RegistryError> {
    if state.find(name).is_none() {
        return Err(RegistryError::UnknownPod(name.to_string()));
    }
    Ok(vec![Change::Removed {
        pod: name.to_string(),
        reason: RemovalReason::Released,
    }])
}

/// `reclaim_delegated_scope`, as the original crate has it: removes the
/// child if it is there (whoever it is recorded under: a restored child
/// registers top level; its own children go to its parent), and, for each
/// delegated Write rule, exactly one equal Write deny rule from the
/// parent, **even when the child is already gone**: restore
/// reconciliation relies on that, when the durable worker state still
/// records a delegation the table no longer has. Two equal deny layers
/// take two calls. With neither a child nor a matching deny left, a call
/// changes nothing (and writes nothing): that is its idempotence. An
/// unknown parent only loses nothing.
pub fn reclaim_delegated(
    state: &RegistryState,
    parent: &str,
    child: &str,
    delegated: &[ScopeRule],
) -> Vec<Change> {
    let mut changes = Vec::new();
    if let Some(p) = state.find(parent) {
        let mut left = p.deny.clone();
        let mut removed = Vec::new();
        for rule in delegated.iter().filter(|r| r.is_write()) {
            if let Some(i) = left.iter().position(|d| d == rule) {
                removed.push(left.remove(i));
            }
        }
        if !removed.is_empty() {
            changes.push(Change::DenyRemoved {
                pod: parent.to_string(),
                rules: removed,
            });
        }
    }
    if state.find(child).is_some() {
        changes.push(Change::Removed {
            pod: child.to_string(),
            reason: RemovalReason::Reclaimed,
        });
    }
    changes
}
