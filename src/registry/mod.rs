//! The registry view: the pod-registry allocation table as events.
//!
//! Pods claim scopes of the file tree (allow and deny rules); writes
//! conflict, reads never do; a pod can delegate part of its scope to a
//! child (a pre-reservation the child adopts); dead owners are reclaimed.
//! Every operation is one command decided in the writer against the
//! current table, so concurrent registrations have exactly one winner
//! per conflict, and every change is an event with its time and pid.
//!
//! ```
//! use replaydb::registry::{Registry, ScopeRule};
//! # let tmp = tempfile::tempdir().unwrap();
//! let registry = Registry::open(tmp.path(), replaydb::Options::default(), vec![])?;
//! let pid = std::process::id();
//! let a = registry.register_pod("a", pid, "/run/a.sock", vec![ScopeRule::write("/src")?], vec![], uuid::Uuid::new_v4())?;
//! let clash = registry.register_pod("b", pid, "/run/b.sock", vec![ScopeRule::write("/src/core")?], vec![], uuid::Uuid::new_v4());
//! assert!(matches!(clash, Err(replaydb::registry::RegistryError::WriteConflict { .. })));
//! drop(a); // releases "a"
//! assert!(registry.find("a")?.is_none());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod decide;
pub(crate) mod remote;
pub mod scope;
pub mod state;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use serde::{Deserialize, Serialize};

pub use decide::{Delegation, Registration, process_alive};
pub use scope::{Authority, Permission, ScopeRule};
pub use state::{Allocation, Change, RegistryState, RemovalReason, SegmentId};

use crate::client::Client;
use crate::engine::Db;
use crate::remote::Backend;
use crate::stream::{EventRef, ExpectedVersion};
use crate::views::{View, ViewTables, ViewTablesRead};
use remote::RegistryCall;

/// The stream holding registry events. `$` marks it internal: callers
/// cannot append to it.
pub const REGISTRY_STREAM: &str = "$registry";
/// The view's name in snapshots.
pub const REGISTRY_VIEW: &str = "registry";

/// Everything a registry operation can refuse (the same through a
/// server: it crosses the socket as itself).
#[derive(Debug, thiserror::Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum RegistryError {
    /// A pod of that name exists.
    #[error("pod {0:?} is already registered")]
    DuplicatePodName(String),
    /// Another pod writes to that segment.
    #[error("segment {segment} is held by pod {holder:?} (socket {})", socket.display())]
    SegmentConflict {
        /// The segment.
        segment: SegmentId,
        /// The pod holding it.
        holder: String,
        /// Its socket.
        socket: PathBuf,
    },
    /// A requested write belongs to another pod.
    #[error("{rule} conflicts with pod {competitor:?}, which holds {competitor_rule}")]
    WriteConflict {
        /// The owner.
        competitor: String,
        /// The owner's rule.
        competitor_rule: ScopeRule,
        /// The requested rule.
        rule: ScopeRule,
    },
    /// No pod of that name.
    #[error("unknown pod {0:?}")]
    UnknownPod(String),
    /// A rule (or the authority) is not valid.
    #[error("invalid scope: {reason}")]
    InvalidScope {
        /// Why.
        reason: String,
    },
    /// The authority does not allow handing out the rule.
    #[error("{rule} is not within the delegating authority")]
    NotSubset {
        /// The rule.
        rule: ScopeRule,
    },
    /// The database failed.
    #[error(transparent)]
    Db(
        #[from]
        #[serde(with = "crate::remote::as_wire")]
        crate::Error,
    ),
}

/// One registry event: what changed, when and by which process.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryRecord {
    /// Milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
    /// The process that made the change.
    pub by_pid: u32,
    /// The operation ("register_pod", ...).
    pub op: String,
    /// The changes, applied in order.
    pub changes: Vec<Change>,
}

/// One line of a pod's history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// LSN of the event.
    pub lsn: u64,
    /// When.
    pub at_unix_ms: u64,
    /// By which pid.
    pub by_pid: u32,
    /// The operation.
    pub op: String,
    /// The change concerning the pod.
    pub change: Change,
}

/// The table, kept up to date from `$registry` events, in memory and in
/// the view's table `pods` (one row per pod, keyed by its registration
/// sequence, u64 big-endian, so key order is table order). Register it
/// at open (`Registry::open` does).
#[derive(Clone, Debug, Default)]
pub struct RegistryView {
    state: RegistryState,
    /// The table's distinct pids, published for liveness checks made
    /// outside the writer (shared with every [`Registry`] handle).
    pids: PublishedPids,
    /// Events on the registry stream that did not decode (never written by
    /// this code; counted, not applied).
    pub undecodable_events: u64,
}

/// The view's table of pods.
const PODS_TABLE: &str = "pods";
/// The view's table of each pod's history: key `pod ++ 0x00 ++ LSN (u64
/// BE) ++ change index (u16 BE)`, value the MessagePack [`HistoryEntry`].
/// Pod names hold no NUL (they are validated stream names), so a pod's
/// entries are one contiguous key range, in LSN order.
const HISTORY_TABLE: &str = "history";

/// The key of a pod's history entry.
fn history_key(pod: &str, lsn: u64, index: u16) -> Vec<u8> {
    let mut k = Vec::with_capacity(pod.len() + 11);
    k.extend_from_slice(pod.as_bytes());
    k.push(0);
    k.extend_from_slice(&lsn.to_be_bytes());
    k.extend_from_slice(&index.to_be_bytes());
    k
}

/// The distinct pids of the table, replaced whole when the set changes.
type PublishedPids = Arc<Mutex<Arc<Vec<u32>>>>;

impl RegistryView {
    /// The table.
    pub fn state(&self) -> &RegistryState {
        &self.state
    }

    /// Publishes the table's pids, if they changed.
    fn publish_pids(&self) {
        let mut now: Vec<u32> = self.state.pids().collect();
        now.sort_unstable();
        let mut published = self.pids.lock().unwrap_or_else(PoisonError::into_inner);
        if **published != now {
            *published = Arc::new(now);
        }
    }

    /// Writes the row of each pod of `rows` (by its sequence), or deletes
    /// it if the pod is gone or registered under another sequence now.
    fn persist(&self, rows: &[(String, u64)], tables: &mut ViewTables<'_>) -> crate::Result<()> {
        for (name, row) in rows {
            match self.state.find(name) {
                Some(a) if self.state.seq(name) == Some(*row) => {
                    let value = rmp_serde::to_vec(a).map_err(|e| crate::Error::Encode {
                        op: "save registry",
                        reason: e.to_string(),
                    })?;
                    tables.put(PODS_TABLE, &row.to_be_bytes(), &value)?;
                }
                _ => {
                    tables.remove(PODS_TABLE, &row.to_be_bytes())?;
                }
            }
        }
        Ok(())
    }
}

impl View for RegistryView {
    fn name(&self) -> &str {
        REGISTRY_VIEW
    }

    /// 1: `pods`. 2: `pods` and `history` (per-pod history, paged).
    fn schema_version(&self) -> u32 {
        2
    }

    /// From 1: the `pods` table stays; `history` is filled from the
    /// registry events the store's history holds.
    fn migrate(
        &mut self,
        from_version: u32,
        tables: &mut ViewTables<'_>,
        history: &mut crate::views::ViewHistory<'_>,
    ) -> crate::Result<bool> {
        if from_version != 1 {
            return Ok(false);
        }
        let mut failed = None;
        history.stream(REGISTRY_STREAM, |e| {
            if let Ok(record) = rmp_serde::from_slice::<RegistryRecord>(e.data)
                && let Err(err) = record_history(e.lsn, &record, tables)
            {
                failed = Some(err);
                return false;
            }
            true
        })?;
        match failed {
            Some(e) => Err(e),
            None => Ok(true),
        }
    }

    fn apply(&mut self, event: &EventRef<'_>, tables: &mut ViewTables<'_>) -> crate::Result<()> {
        if event.stream != REGISTRY_STREAM {
            return Ok(());
        }
        let Ok(record) = rmp_serde::from_slice::<RegistryRecord>(event.data) else {
            self.undecodable_events += 1;
            return Ok(());
        };
        record_history(event.lsn, &record, tables)?;
        for change in &record.changes {
            // The rows the change touches, by the sequence they had before
            // it: the pod's own, and on a removal its children's (they are
            // reparented).
            let mut touched: Vec<(String, u64)> = change
                .pods()
                .iter()
                .filter_map(|p| self.state.seq(p).map(|s| (p.to_string(), s)))
                .collect();
            if let Change::Removed { pod, .. } = change {
                touched.extend(
                    self.state.children(pod).filter_map(|a| {
                        self.state.seq(&a.pod_name).map(|s| (a.pod_name.clone(), s))
                    }),
                );
            }
            self.state.apply(change);
            // A pod added now has its sequence only after the change.
            if let Change::Added(a) = change
                && let Some(s) = self.state.seq(&a.pod_name)
                && !touched.iter().any(|(_, t)| *t == s)
            {
                touched.push((a.pod_name.clone(), s));
            }
            self.persist(&touched, tables)?;
            if matches!(
                change,
                Change::Added(_) | Change::Adopted { .. } | Change::Removed { .. }
            ) {
                self.publish_pids();
            }
        }
        Ok(())
    }

    fn load(&mut self, input: &ViewTablesRead<'_>) -> crate::Result<()> {
        self.reset();
        input.for_each(PODS_TABLE, |key, value| {
            let row = <[u8; 8]>::try_from(key)
                .map(u64::from_be_bytes)
                .map_err(|_| input.bad_value(PODS_TABLE, key))?;
            let a: Allocation =
                rmp_serde::from_slice(value).map_err(|_| input.bad_value(PODS_TABLE, key))?;
            self.state.insert_at(row, a);
            Ok(())
        })?;
        self.publish_pids();
        Ok(())
    }

    fn reset(&mut self) {
        // The published pids stay shared with the handles that hold them.
        let pids = self.pids.clone();
        *self = RegistryView {
            pids,
            ..RegistryView::default()
        };
        self.publish_pids();
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// Writes one history entry per pod per change of `record`.
fn record_history(
    lsn: u64,
    record: &RegistryRecord,
    tables: &mut ViewTables<'_>,
) -> crate::Result<()> {
    for (i, change) in record.changes.iter().enumerate() {
        let index = u16::try_from(i).unwrap_or(u16::MAX);
        for pod in change.pods() {
            let entry = HistoryEntry {
                lsn,
                at_unix_ms: record.at_unix_ms,
                by_pid: record.by_pid,
                op: record.op.clone(),
                change: change.clone(),
            };
            let value = rmp_serde::to_vec(&entry).map_err(|e| crate::Error::Encode {
                op: "save registry history",
                reason: e.to_string(),
            })?;
            tables.put(HISTORY_TABLE, &history_key(pod, lsn, index), &value)?;
        }
    }
    Ok(())
}

/// A page of a pod's history, from [`Registry::history`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryPage {
    /// The entries, in LSN order.
    pub entries: Vec<HistoryEntry>,
    /// Where the next page starts (`from` for the next call), if there is
    /// more.
    pub next: Option<u64>,
}

fn check_name(name: &str) -> Result<(), RegistryError> {
    crate::stream::validate_stream_name(name).map_err(|e| RegistryError::InvalidScope {
        reason: format!("pod name: {e}"),
    })
}

/// A liveness check made before a decision, for use inside it: every pid
/// the table had then is checked with `kill(pid, 0)` outside the writer
/// (one found alive may stay, however it fares meanwhile); only a pid new
/// since is checked inside, when the decision asks.
pub type Liveness = Arc<dyn Fn(u32) -> bool + Send + Sync>;

/// The registry operations over a database: embedded, or through the
/// process that serves it ([`Registry::remote`]), with the same API.
#[derive(Clone, Debug)]
pub struct Registry {
    backend: Backend,
    /// The process its changes name as their author (this one, or a
    /// served client's).
    by_pid: u32,
    /// The view's published pids, found on first use.
    pids: Arc<OnceLock<PublishedPids>>,
}

impl Registry {
    /// The registry of `db`, which must have been opened with a
    /// [`RegistryView`] (operations fail otherwise).
    pub fn new(db: Db) -> Registry {
        Registry {
            backend: Backend::Local(db),
            pids: Arc::default(),
            by_pid: std::process::id(),
        }
    }

    /// The registry of the database `client`'s server serves (opened
    /// there with a [`RegistryView`]): every operation is one request,
    /// answered as it would be embedded.
    pub fn remote(client: Client) -> Registry {
        Registry {
            backend: Backend::Remote(client),
            pids: Arc::default(),
            by_pid: std::process::id(),
        }
    }

    /// The registry of a [`SharedDb`](crate::SharedDb): embedded if it
    /// owns the database, through its owner otherwise.
    pub fn shared(db: &crate::SharedDb) -> Registry {
        Registry {
            backend: db.backend(),
            pids: Arc::default(),
            by_pid: std::process::id(),
        }
    }

    /// The same registry, its changes authored by `pid` (a server acting
    /// for its client).
    pub(crate) fn acting_for(mut self, pid: u32) -> Registry {
        self.by_pid = pid;
        self
    }

    fn remote_client(&self) -> Option<&Client> {
        self.backend.client()
    }

    /// Opens the database at `dir` with the registry view (and `views`)
    /// registered.
    pub fn open(
        dir: impl AsRef<Path>,
        options: crate::Options,
        mut views: Vec<Box<dyn View>>,
    ) -> Result<Registry, RegistryError> {
        views.insert(0, Box::new(RegistryView::default()));
        Ok(Registry::new(Db::open_with_views(dir, options, views)?))
    }

    /// The embedded database (`None` through a server).
    pub fn db(&self) -> Option<&Db> {
        self.backend.db()
    }

    /// Checks every pid of the table with `alive`, now, outside the
    /// writer (see [`Liveness`]).
    fn liveness(&self, alive: fn(u32) -> bool) -> Result<Liveness, RegistryError> {
        let published = match self.pids.get() {
            Some(p) => p,
            None => {
                let p = self.read_view(|v| v.pids.clone())?;
                self.pids.get_or_init(|| p)
            }
        };
        let pids = published
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let known: std::collections::HashMap<u32, bool> =
            pids.iter().map(|p| (*p, alive(*p))).collect();
        Ok(Arc::new(move |pid| {
            known.get(&pid).copied().unwrap_or_else(|| alive(pid))
        }))
    }

    /// Runs one operation as a command: decided against the table inside
    /// the writer, appended as one event, applied. Returns the changes.
    fn run(
        &self,
        op: &'static str,
        decide: impl Fn(&RegistryState) -> Result<Vec<Change>, RegistryError> + Send + 'static,
    ) -> Result<Vec<Change>, RegistryError> {
        self.run_with(op, None, decide)
    }

    /// [`Registry::run`] for operations that reclaim stale pods first
    /// (`decide` gets the liveness found before it): when the operation
    /// itself is refused, the reclaim is still written (as its own event)
    /// and the refusal returned.
    fn run_reclaiming(
        &self,
        op: &'static str,
        decide: impl Fn(&RegistryState, &dyn Fn(u32) -> bool) -> Result<Vec<Change>, RegistryError>
        + Send
        + 'static,
    ) -> Result<Vec<Change>, RegistryError> {
        let alive = self.liveness(process_alive)?;
        let inner = alive.clone();
        self.run_with(op, Some(alive), move |s| decide(s, &*inner))
    }

    fn run_with(
        &self,
        op: &'static str,
        reclaim_on_refusal: Option<Liveness>,
        decide: impl Fn(&RegistryState) -> Result<Vec<Change>, RegistryError> + Send + 'static,
    ) -> Result<Vec<Change>, RegistryError> {
        // What the decision made of it: the changes written, and a refusal
        // that still wrote a reclaim.
        let by_pid = self.by_pid;
        let result = self.backend.local(op)?.execute_with(
            REGISTRY_STREAM,
            ExpectedVersion::Any,
            move |views| {
                let view =
                    views
                        .get::<RegistryView>()
                        .ok_or_else(|| crate::Error::ViewNotRegistered {
                            op,
                            view: "registry",
                        })?;
                let state = view.state();
                let (changes, op_name, refusal) = match decide(state) {
                    Ok(changes) => (changes, op, None),
                    Err(e) if reclaim_on_refusal.is_some() => {
                        let alive = reclaim_on_refusal.as_deref().unwrap_or(&|_| true);
                        let reclaimed = decide::reclaim_stale(state, alive);
                        if reclaimed.is_empty() {
                            return Err(crate::Error::rejected(e));
                        }
                        (reclaimed, "reclaim_stale", Some(e))
                    }
                    Err(e) => return Err(crate::Error::rejected(e)),
                };
                if changes.is_empty() {
                    return Ok((Vec::new(), (Vec::new(), None)));
                }
                let record = RegistryRecord {
                    at_unix_ms: crate::stream::now_unix_ms(),
                    by_pid,
                    op: op_name.to_string(),
                    changes: changes.clone(),
                };
                let data = rmp_serde::to_vec(&record).map_err(|e| crate::Error::Encode {
                    op,
                    reason: e.to_string(),
                })?;
                Ok((vec![data], (changes, refusal)))
            },
        );
        match result {
            Ok((_, (_, Some(refusal)))) => Err(refusal),
            Ok((_, (changes, None))) => Ok(changes),
            Err(e) => Err(e
                .into_rejected::<RegistryError>()
                .unwrap_or_else(RegistryError::Db)),
        }
    }

    fn read<R>(&self, f: impl FnOnce(&RegistryState) -> R) -> Result<R, RegistryError> {
        self.read_view(|v| f(v.state()))
    }

    fn read_view<R>(&self, f: impl FnOnce(&RegistryView) -> R) -> Result<R, RegistryError> {
        self.backend
            .local("registry")?
            .view(|v: &RegistryView| f(v))?
            .map(|at| at.value)
            .ok_or_else(|| {
                RegistryError::Db(crate::Error::ViewNotRegistered {
                    op: "registry",
                    view: "registry",
                })
            })
    }

    /// Registers a top-level pod (see [`decide::register`]). The guard
    /// releases it when dropped.
    pub fn register_pod(
        &self,
        name: &str,
        pid: u32,
        socket: impl AsRef<Path>,
        allow: Vec<ScopeRule>,
        deny: Vec<ScopeRule>,
        segment: SegmentId,
    ) -> Result<RegistrationGuard, RegistryError> {
        check_name(name)?;
        if let Some(c) = self.remote_client() {
            let call = RegistryCall::RegisterPod {
                name: name.to_string(),
                pid,
                socket: socket.as_ref().to_path_buf(),
                allow,
                deny,
                segment,
            };
            remote::call::<()>(c, call, false)?;
            return Ok(self.guard(name, pid));
        }
        let r = Registration {
            name: name.to_string(),
            pid,
            socket: socket.as_ref().to_path_buf(),
            allow,
            deny,
            segment,
        };
        self.run_reclaiming("register_pod", move |s, alive| {
            decide::register(s, r.clone(), alive)
        })?;
        Ok(self.guard(name, pid))
    }

    /// Pre-reserves scope for a child (see [`decide::delegate`]).
    pub fn delegate_scope(
        &self,
        spawner: &str,
        child: &str,
        pid: u32,
        socket: impl AsRef<Path>,
        allow: Vec<ScopeRule>,
        authority: Authority,
    ) -> Result<(), RegistryError> {
        check_name(child)?;
        if let Some(c) = self.remote_client() {
            let call = RegistryCall::DelegateScope {
                spawner: spawner.to_string(),
                child: child.to_string(),
                pid,
                socket: socket.as_ref().to_path_buf(),
                allow,
                authority,
            };
            return remote::call(c, call, false);
        }
        let d = Delegation {
            spawner: spawner.to_string(),
            child: child.to_string(),
            pid,
            socket: socket.as_ref().to_path_buf(),
            allow,
            authority,
        };
        self.run_reclaiming("delegate_scope", move |s, alive| {
            decide::delegate(s, d.clone(), alive)
        })
        .map(drop)
    }

    /// The child fills in its pid and segment. The guard releases it.
    pub fn adopt_allocation(
        &self,
        name: &str,
        pid: u32,
        segment: SegmentId,
    ) -> Result<RegistrationGuard, RegistryError> {
        let n = name.to_string();
        if let Some(c) = self.remote_client() {
            let call = RegistryCall::AdoptAllocation {
                name: n,
                pid,
                segment,
            };
            remote::call::<()>(c, call, false)?;
            return Ok(self.guard(name, pid));
        }
        self.run("adopt_allocation", move |s| {
            decide::adopt(s, &n, pid, segment)
        })?;
        Ok(self.guard(name, pid))
    }

    /// Moves a pod to another segment.
    pub fn update_segment(&self, name: &str, segment: SegmentId) -> Result<(), RegistryError> {
        let n = name.to_string();
        if let Some(c) = self.remote_client() {
            let call = RegistryCall::UpdateSegment { name: n, segment };
            return remote::call(c, call, false);
        }
        self.run("update_segment", move |s| {
            decide::update_segment(s, &n, segment)
        })
        .map(drop)
    }

    /// Removes a pod; its children go to its parent.
    pub fn release_pod(&self, name: &str) -> Result<(), RegistryError> {
        let n = name.to_string();
        if let Some(c) = self.remote_client() {
            return remote::call(c, RegistryCall::ReleasePod { name: n }, false);
        }
        self.run("release_pod", move |s| decide::release(s, &n))
            .map(drop)
    }

    /// Takes delegated scope back from `child`: removes the child if it is
    /// there, and one equal Write deny rule per delegated Write rule from
    /// `parent`, even when the child is gone (see
    /// [`decide::reclaim_delegated`]). Repeating it removes the next deny
    /// layer, if any; with nothing left to remove it writes nothing.
    pub fn reclaim_delegated_scope(
        &self,
        parent: &str,
        child: &str,
        delegated: Vec<ScopeRule>,
    ) -> Result<(), RegistryError> {
        let (p, c) = (parent.to_string(), child.to_string());
        if let Some(client) = self.remote_client() {
            let call = RegistryCall::ReclaimDelegatedScope {
                parent: p,
                child: c,
                delegated,
            };
            return remote::call(client, call, false);
        }
        self.run("reclaim_delegated_scope", move |s| {
            Ok(decide::reclaim_delegated(s, &p, &c, &delegated))
        })
        .map(drop)
    }

    /// Removes every pod whose process is dead; returns their names.
    /// Nothing is written when nothing is dead.
    pub fn reclaim_stale(&self) -> Result<Vec<String>, RegistryError> {
        if let Some(c) = self.remote_client() {
            return remote::call(c, RegistryCall::ReclaimStale, false);
        }
        self.reclaim_stale_with(process_alive)
    }

    /// [`Registry::reclaim_stale`] with a liveness check of the caller's
    /// (tests, or a supervisor that knows better than `kill(pid, 0)`).
    /// Embedded only: a function cannot cross a socket
    /// ([`Error::Unsupported`](crate::Error::Unsupported) through a server).
    pub fn reclaim_stale_with(&self, alive: fn(u32) -> bool) -> Result<Vec<String>, RegistryError> {
        if self.remote_client().is_some() {
            return Err(RegistryError::Db(crate::Error::Unsupported {
                op: "reclaim_stale_with",
                reason: "a liveness function cannot cross the socket; \
                         reclaim_stale checks liveness on the server"
                    .into(),
            }));
        }
        let alive = self.liveness(alive)?;
        let changes = self.run("reclaim_stale", move |s| {
            Ok(decide::reclaim_stale(s, &*alive))
        })?;
        Ok(changes
            .into_iter()
            .filter_map(|c| match c {
                Change::Removed { pod, .. } => Some(pod),
                _ => None,
            })
            .collect())
    }

    /// The allocation of `name`.
    pub fn find(&self, name: &str) -> Result<Option<Allocation>, RegistryError> {
        if let Some(c) = self.remote_client() {
            let call = RegistryCall::Find {
                name: name.to_string(),
            };
            return remote::call(c, call, true);
        }
        self.read(|s| s.find(name).cloned())
    }

    /// The allocation writing to `segment` (never a pre-reservation).
    pub fn find_by_segment(&self, segment: SegmentId) -> Result<Option<Allocation>, RegistryError> {
        if let Some(c) = self.remote_client() {
            return remote::call(c, RegistryCall::FindBySegment { segment }, true);
        }
        self.read(|s| s.find_by_segment(segment).cloned())
    }

    /// Reclaims stale pods, then returns the name, socket and pid of the
    /// pod writing to `segment`.
    pub fn lookup_segment(
        &self,
        segment: SegmentId,
    ) -> Result<Option<(String, PathBuf, u32)>, RegistryError> {
        if let Some(c) = self.remote_client() {
            return remote::call(c, RegistryCall::LookupSegment { segment }, true);
        }
        self.reclaim_stale()?;
        self.read(|s| {
            s.find_by_segment(segment)
                .map(|a| (a.pod_name.clone(), a.socket.clone(), a.pid))
        })
    }

    /// Every allocation, in registration order.
    pub fn allocations(&self) -> Result<Vec<Allocation>, RegistryError> {
        if let Some(c) = self.remote_client() {
            return remote::call(c, RegistryCall::Allocations, true);
        }
        self.read(|s| s.allocations().cloned().collect())
    }

    /// Whether `pod` effectively holds `rule` (see
    /// [`RegistryState::has_effective`]).
    pub fn has_effective(&self, pod: &str, rule: &ScopeRule) -> Result<bool, RegistryError> {
        if let Some(c) = self.remote_client() {
            let call = RegistryCall::HasEffective {
                pod: pod.to_string(),
                rule: rule.clone(),
            };
            return remote::call(c, call, true);
        }
        self.read(|s| s.has_effective(pod, rule))
    }

    /// What changed for `pod`, when and by which pid: up to `limit`
    /// entries from LSN `from_lsn` on, and where the next page starts. A
    /// page costs its own length, however long the history: each pod's
    /// entries are one key range of the view's `history` table. The
    /// entries of one LSN are never split across pages.
    pub fn history(
        &self,
        pod: &str,
        from_lsn: u64,
        limit: usize,
    ) -> Result<HistoryPage, RegistryError> {
        if let Some(c) = self.remote_client() {
            let call = RegistryCall::History {
                pod: pod.to_string(),
                from_lsn,
                limit: limit as u64,
            };
            return remote::call(c, call, true);
        }
        let start = history_key(pod, from_lsn, 0);
        let prefix_len = pod.len() + 1;
        let page = self
            .backend
            .local("registry history")?
            .view_tables(|_: &RegistryView, tables| {
                let mut page = HistoryPage {
                    entries: Vec::new(),
                    next: None,
                };
                let mut failed = None;
                tables.for_each_from(HISTORY_TABLE, Some(&start), |k, v| {
                    if k.get(..prefix_len) != start.get(..prefix_len) {
                        return Ok(false);
                    }
                    let entry: HistoryEntry = match rmp_serde::from_slice(v) {
                        Ok(e) => e,
                        Err(_) => {
                            failed = Some(tables.bad_value(HISTORY_TABLE, k));
                            return Ok(false);
                        }
                    };
                    let same_lsn = page.entries.last().is_some_and(|l| l.lsn == entry.lsn);
                    if page.entries.len() >= limit && !same_lsn {
                        page.next = Some(entry.lsn);
                        return Ok(false);
                    }
                    page.entries.push(entry);
                    Ok(true)
                })?;
                match failed {
                    Some(e) => Err(e),
                    None => Ok(page),
                }
            })?
            .ok_or_else(|| {
                RegistryError::Db(crate::Error::ViewNotRegistered {
                    op: "registry",
                    view: "registry",
                })
            })?;
        Ok(page.value)
    }

    fn guard(&self, name: &str, pid: u32) -> RegistrationGuard {
        RegistrationGuard {
            registry: self.clone(),
            name: Some(name.to_string()),
            pid,
        }
    }
}

/// Releases its pod when dropped (if it still belongs to the same
/// process), unless [`RegistrationGuard::keep`] is
/// called.
#[derive(Debug)]
pub struct RegistrationGuard {
    registry: Registry,
    name: Option<String>,
    pid: u32,
}

impl RegistrationGuard {
    /// The pod's name.
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or_default()
    }

    /// Keeps the pod registered after the guard is gone.
    pub fn keep(mut self) -> String {
        self.name.take().unwrap_or_default()
    }
}

impl Drop for RegistrationGuard {
    fn drop(&mut self) {
        if let Some(name) = self.name.take() {
            // Only the allocation this guard made: if the pod was released
            // and its name taken again meanwhile, the newcomer stays.
            let pid = self.pid;
            let n = name.clone();
            let released = match self.registry.remote_client() {
                Some(c) => remote::call(c, RegistryCall::ReleaseIfSame { name: n, pid }, false),
                None => self
                    .registry
                    .run("release_pod", move |s| {
                        Ok(decide::release_if_same(s, &n, pid))
                    })
                    .map(drop),
            };
            if let Err(e) = released {
                tracing::error!(pod = %name, error = %e, "releasing a dropped registration failed");
            }
        }
    }
}
