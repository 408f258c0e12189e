//! The runtime view: every runtime's state, in the store's tables only.
//!
//! Nothing is held in memory: a decision or a read looks up the rows it
//! needs (a runtime's meta, a worker, a page of events or of a
//! transcript), so a page costs O(page + log n) however long the history,
//! and opening a database with a million events reads nothing of them.
//!
//! Tables (values MessagePack with field names; `lp(x)` is `x`'s length
//! as u32 big-endian, then its bytes, so one runtime's (or one worker's)
//! keys are one contiguous range whatever bytes the ids hold):
//!
//! | table         | key                                   | value           |
//! |---------------|---------------------------------------|-----------------|
//! | `runtimes`    | runtime id                            | [`RuntimeMeta`] |
//! | `workers`     | `lp(runtime) ++ worker id`            | [`WorkerRow`]   |
//! | `events`      | `lp(runtime) ++ event id (u64 BE)`    | [`EventRow`]    |
//! | `transcripts` | `lp(runtime) ++ lp(worker) ++ seq (u64 BE)` | [`TranscriptRow`] |
//! | `diagnostics` | `lp(runtime) ++ diagnostic id (u64 BE)` | [`DiagnosticRow`] |

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::model::{
    CreateWorkerRequest, DiagnosticSeverity, RuntimeDiagnostic, RuntimeEvent, RuntimeEventKind,
    RuntimeId, RuntimeLimits, RuntimeStatus, TranscriptEntry, TranscriptRole, WorkerId, WorkerRef,
    WorkerStatus,
};
use super::record::{RUNTIME_STREAM, RuntimeChange, RuntimeRecord};
use crate::stream::EventRef;
use crate::views::{View, ViewTables, ViewTablesRead, encode_row, push_len_prefixed};

/// The view's name (it names its tables in the store).
pub const RUNTIME_VIEW: &str = "runtime";

pub(crate) const RUNTIMES: &str = "runtimes";
pub(crate) const WORKERS: &str = "workers";
pub(crate) const EVENTS: &str = "events";
pub(crate) const TRANSCRIPTS: &str = "transcripts";
pub(crate) const DIAGNOSTICS: &str = "diagnostics";

/// A runtime's row: everything a summary says and every decision needs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeMeta {
    /// Its name.
    pub display_name: Option<String>,
    /// Running or Stopped.
    pub status: RuntimeStatus,
    /// Its read limits.
    pub limits: RuntimeLimits,
    /// Its last event's id (events are 1..=this).
    pub last_event_id: u64,
    /// Workers ever created (the last generated worker sequence).
    pub worker_count: u64,
    /// Running workers.
    pub active_worker_count: u64,
    /// Stopped workers.
    pub stopped_worker_count: u64,
    /// Cancelled workers.
    pub cancelled_worker_count: u64,
    /// Diagnostics recorded (ids 1..=this).
    pub diagnostic_count: u64,
}

/// A worker's row.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerRow {
    /// What was asked.
    pub request: CreateWorkerRequest,
    /// Its status.
    pub status: WorkerStatus,
    /// Transcript entries (sequences 1..=this).
    pub transcript_len: u64,
    /// The last event about it.
    pub last_event_id: u64,
}

/// An event's row.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRow {
    /// The worker it is about.
    pub worker_id: Option<WorkerId>,
    /// What happened.
    pub kind: RuntimeEventKind,
    /// Said in words.
    pub message: String,
    /// Milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
}

/// A transcript entry's row.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TranscriptRow {
    /// Whose.
    pub role: TranscriptRole,
    /// What.
    pub content: String,
    /// The event that added it.
    pub event_id: u64,
}

/// A diagnostic's row.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiagnosticRow {
    /// How bad.
    pub severity: DiagnosticSeverity,
    /// A stable code.
    pub code: String,
    /// Said in words.
    pub message: String,
    /// The worker it is about.
    pub worker_id: Option<WorkerId>,
}

/// The prefix of every key of a runtime's rows.
pub(crate) fn runtime_prefix(rt: &RuntimeId) -> Vec<u8> {
    let mut k = Vec::with_capacity(4 + rt.as_str().len() + 16);
    push_len_prefixed(&mut k, rt.as_str());
    k
}

pub(crate) fn worker_key(rt: &RuntimeId, w: &WorkerId) -> Vec<u8> {
    let mut k = runtime_prefix(rt);
    k.extend_from_slice(w.as_str().as_bytes());
    k
}

pub(crate) fn numbered_key(rt: &RuntimeId, n: u64) -> Vec<u8> {
    let mut k = runtime_prefix(rt);
    k.extend_from_slice(&n.to_be_bytes());
    k
}

/// The prefix of a worker's transcript keys.
pub(crate) fn transcript_prefix(rt: &RuntimeId, w: &WorkerId) -> Vec<u8> {
    let mut k = runtime_prefix(rt);
    push_len_prefixed(&mut k, w.as_str());
    k
}

pub(crate) fn transcript_key(rt: &RuntimeId, w: &WorkerId, sequence: u64) -> Vec<u8> {
    let mut k = transcript_prefix(rt, w);
    k.extend_from_slice(&sequence.to_be_bytes());
    k
}

/// Typed reads of the view's tables, at one commit (a reader's) or in the
/// open write transaction (a decision's, or the fold's own).
pub(crate) struct Tables<'t, 'a> {
    pub read: &'t ViewTablesRead<'a>,
}

impl Tables<'_, '_> {
    fn get<T: DeserializeOwned>(&self, table: &str, key: &[u8]) -> crate::Result<Option<T>> {
        match self.read.get(table, key)? {
            Some(v) => rmp_serde::from_slice(&v)
                .map(Some)
                .map_err(|_| self.read.bad_value(table, key)),
            None => Ok(None),
        }
    }

    /// Up to `limit` rows of `table` under `prefix`, from `from` on (a key
    /// that starts with `prefix`), in key order: `id` reads what follows
    /// the prefix of each key (a key it cannot read is damage), `build`
    /// makes the answer.
    fn scan<K, T: DeserializeOwned, R>(
        &self,
        table: &str,
        prefix: &[u8],
        from: &[u8],
        limit: usize,
        id: impl Fn(&[u8]) -> Option<K>,
        mut build: impl FnMut(K, T) -> R,
    ) -> crate::Result<Vec<R>> {
        let mut out = Vec::with_capacity(limit.min(1024));
        if limit == 0 {
            return Ok(out);
        }
        let mut failed = None;
        self.read.for_each_from(table, Some(from), |k, v| {
            let Some(rest) = k.strip_prefix(prefix) else {
                return Ok(false);
            };
            match (id(rest), rmp_serde::from_slice::<T>(v)) {
                (Some(id), Ok(row)) => out.push(build(id, row)),
                _ => {
                    failed = Some(self.read.bad_value(table, k));
                    return Ok(false);
                }
            }
            Ok(out.len() < limit)
        })?;
        failed.map_or(Ok(out), Err)
    }

    pub fn meta(&self, rt: &RuntimeId) -> crate::Result<Option<RuntimeMeta>> {
        self.get(RUNTIMES, rt.as_str().as_bytes())
    }

    pub fn worker(&self, rt: &RuntimeId, w: &WorkerId) -> crate::Result<Option<WorkerRow>> {
        self.get(WORKERS, &worker_key(rt, w))
    }

    /// Every runtime, in id order.
    pub fn runtimes(&self) -> crate::Result<Vec<(RuntimeId, RuntimeMeta)>> {
        self.scan(
            RUNTIMES,
            &[],
            &[],
            usize::MAX,
            text_id(RuntimeId::new),
            |id, meta| (id, meta),
        )
    }

    /// A runtime's workers, in id order.
    pub fn workers(&self, rt: &RuntimeId) -> crate::Result<Vec<(WorkerId, WorkerRow)>> {
        let prefix = runtime_prefix(rt);
        self.scan(
            WORKERS,
            &prefix,
            &prefix,
            usize::MAX,
            text_id(WorkerId::new),
            |id, row| (id, row),
        )
    }

    /// Up to `limit` of a runtime's events from id `from` on.
    pub fn events(
        &self,
        rt: &RuntimeId,
        from: u64,
        limit: usize,
    ) -> crate::Result<Vec<RuntimeEvent>> {
        let prefix = runtime_prefix(rt);
        self.scan(
            EVENTS,
            &prefix,
            &numbered_key(rt, from),
            limit,
            number,
            |id, row: EventRow| RuntimeEvent {
                id,
                worker_ref: row.worker_id.map(|w| WorkerRef::new(rt.clone(), w)),
                kind: row.kind,
                message: row.message,
            },
        )
    }

    /// Up to `limit` of a worker's transcript entries from sequence `from`.
    pub fn transcript(
        &self,
        worker: &WorkerRef,
        from: u64,
        limit: usize,
    ) -> crate::Result<Vec<TranscriptEntry>> {
        let (rt, w) = (&worker.runtime_id, &worker.worker_id);
        let prefix = transcript_prefix(rt, w);
        self.scan(
            TRANSCRIPTS,
            &prefix,
            &transcript_key(rt, w, from),
            limit,
            number,
            |sequence, row: TranscriptRow| TranscriptEntry {
                sequence,
                worker_ref: worker.clone(),
                role: row.role,
                content: row.content,
                event_id: row.event_id,
            },
        )
    }

    /// A runtime's diagnostics, in id order.
    pub fn diagnostics(&self, rt: &RuntimeId) -> crate::Result<Vec<RuntimeDiagnostic>> {
        let prefix = runtime_prefix(rt);
        self.scan(
            DIAGNOSTICS,
            &prefix,
            &prefix,
            usize::MAX,
            number,
            |id, row: DiagnosticRow| RuntimeDiagnostic {
                id,
                severity: row.severity,
                code: row.code,
                message: row.message,
                worker_ref: row.worker_id.map(|w| WorkerRef::new(rt.clone(), w)),
            },
        )
    }
}

/// Reads a key's tail as a u64 big-endian.
fn number(rest: &[u8]) -> Option<u64> {
    <[u8; 8]>::try_from(rest).ok().map(u64::from_be_bytes)
}

/// Reads a key's tail as an id.
fn text_id<K>(new: fn(String) -> Option<K>) -> impl Fn(&[u8]) -> Option<K> {
    move |rest| {
        std::str::from_utf8(rest)
            .ok()
            .and_then(|s| new(s.to_string()))
    }
}

/// The fold of `$runtime` events into the view's tables. Register it at
/// open ([`Runtimes::open`](super::Runtimes::open) does).
#[derive(Clone, Debug, Default)]
pub struct RuntimeView {
    /// Events on the runtime stream that did not decode, or did not follow
    /// on from the runtime's state (never written by this code: the
    /// stream is internal and every record is decided against the view;
    /// counted and logged, not applied).
    pub rejected_events: u64,
}

/// The diagnostics a new worker gets.
fn creation_diagnostics(request: &CreateWorkerRequest) -> Vec<(&'static str, &'static str)> {
    let mut out = Vec::new();
    if request.config_bundle.is_none() {
        out.push((
            "runtime.local_default_resources",
            "worker created without ConfigBundleRef; runtime-local defaults are assumed",
        ));
    }
    if request.requested_capabilities.is_empty() {
        out.push((
            "worker.tools_less",
            "worker created without requested tool capabilities",
        ));
    }
    out
}

impl RuntimeView {
    /// Folds one record; `Ok(false)` if it does not follow on from the
    /// state (then nothing was written).
    fn fold(&self, record: &RuntimeRecord, tables: &mut ViewTables<'_>) -> crate::Result<bool> {
        let rt = &record.runtime_id;
        let existing = Tables {
            read: &tables.read(),
        }
        .meta(rt)?;
        let mut meta = match (existing, &record.change) {
            // Only a Started at event 1 creates a runtime.
            (
                None,
                RuntimeChange::Started {
                    display_name,
                    limits,
                },
            ) => RuntimeMeta {
                display_name: display_name.clone(),
                status: RuntimeStatus::Running,
                limits: limits.clone(),
                last_event_id: 0,
                worker_count: 0,
                active_worker_count: 0,
                stopped_worker_count: 0,
                cancelled_worker_count: 0,
                diagnostic_count: 0,
            },
            (Some(meta), change) if !matches!(change, RuntimeChange::Started { .. }) => meta,
            _ => return Ok(false),
        };
        // Only Started (a new runtime) follows on at event 1; a stopped
        // runtime takes no change (a second Stopped neither).
        if record.event_id != meta.last_event_id + 1 || meta.status == RuntimeStatus::Stopped {
            return Ok(false);
        }
        let event = |worker_id: Option<&WorkerId>, kind, message: String| EventRow {
            worker_id: worker_id.cloned(),
            kind,
            message,
            at_unix_ms: record.at_unix_ms,
        };
        let row = match &record.change {
            RuntimeChange::Started { .. } => event(
                None,
                RuntimeEventKind::RuntimeStarted,
                "runtime started".into(),
            ),
            RuntimeChange::Stopped => {
                meta.status = RuntimeStatus::Stopped;
                let running: Vec<(WorkerId, WorkerRow)> = Tables {
                    read: &tables.read(),
                }
                .workers(rt)?
                .into_iter()
                .filter(|(_, w)| w.status.is_active())
                .collect();
                for (id, mut w) in running {
                    w.status = WorkerStatus::Stopped;
                    meta.active_worker_count = meta.active_worker_count.saturating_sub(1);
                    meta.stopped_worker_count += 1;
                    tables.put(
                        WORKERS,
                        &worker_key(rt, &id),
                        &encode_row("save runtime worker", &w)?,
                    )?;
                }
                event(
                    None,
                    RuntimeEventKind::RuntimeStopped,
                    format!("runtime {rt} stopped"),
                )
            }
            RuntimeChange::WorkerCreated { worker_id, request } => {
                if *worker_id != WorkerId::generated(meta.worker_count + 1) {
                    return Ok(false);
                }
                let row = WorkerRow {
                    request: request.clone(),
                    status: WorkerStatus::Running,
                    transcript_len: 0,
                    last_event_id: record.event_id,
                };
                tables.put(
                    WORKERS,
                    &worker_key(rt, worker_id),
                    &encode_row("save runtime worker", &row)?,
                )?;
                meta.worker_count += 1;
                meta.active_worker_count += 1;
                for (code, message) in creation_diagnostics(request) {
                    meta.diagnostic_count += 1;
                    let d = DiagnosticRow {
                        severity: DiagnosticSeverity::Info,
                        code: code.into(),
                        message: message.into(),
                        worker_id: Some(worker_id.clone()),
                    };
                    tables.put(
                        DIAGNOSTICS,
                        &numbered_key(rt, meta.diagnostic_count),
                        &encode_row("save runtime diagnostic", &d)?,
                    )?;
                }
                event(
                    Some(worker_id),
                    RuntimeEventKind::WorkerCreated,
                    format!("worker {worker_id} created"),
                )
            }
            RuntimeChange::InputAccepted {
                worker_id,
                sequence,
                role,
                content,
            } => {
                let Some(mut w) = (Tables {
                    read: &tables.read(),
                })
                .worker(rt, worker_id)?
                else {
                    return Ok(false);
                };
                if !w.status.is_active() || *sequence != w.transcript_len + 1 {
                    return Ok(false);
                }
                w.transcript_len = *sequence;
                w.last_event_id = record.event_id;
                tables.put(
                    WORKERS,
                    &worker_key(rt, worker_id),
                    &encode_row("save runtime worker", &w)?,
                )?;
                let entry = TranscriptRow {
                    role: *role,
                    content: content.clone(),
                    event_id: record.event_id,
                };
                tables.put(
                    TRANSCRIPTS,
                    &transcript_key(rt, worker_id, *sequence),
                    &encode_row("save runtime transcript", &entry)?,
                )?;
                event(
                    Some(worker_id),
                    RuntimeEventKind::WorkerInputAccepted,
                    "worker input accepted".into(),
                )
            }
            RuntimeChange::WorkerStopped { worker_id, message }
            | RuntimeChange::WorkerCancelled { worker_id, message } => {
                let Some(mut w) = (Tables {
                    read: &tables.read(),
                })
                .worker(rt, worker_id)?
                else {
                    return Ok(false);
                };
                if !w.status.is_active() {
                    return Ok(false);
                }
                meta.active_worker_count = meta.active_worker_count.saturating_sub(1);
                let kind = if matches!(record.change, RuntimeChange::WorkerStopped { .. }) {
                    meta.stopped_worker_count += 1;
                    w.status = WorkerStatus::Stopped;
                    RuntimeEventKind::WorkerStopped
                } else {
                    meta.cancelled_worker_count += 1;
                    w.status = WorkerStatus::Cancelled;
                    RuntimeEventKind::WorkerCancelled
                };
                w.last_event_id = record.event_id;
                tables.put(
                    WORKERS,
                    &worker_key(rt, worker_id),
                    &encode_row("save runtime worker", &w)?,
                )?;
                event(Some(worker_id), kind, message.clone())
            }
        };
        tables.put(
            EVENTS,
            &numbered_key(rt, record.event_id),
            &encode_row("save runtime event", &row)?,
        )?;
        meta.last_event_id = record.event_id;
        tables.put(
            RUNTIMES,
            rt.as_str().as_bytes(),
            &encode_row("save runtime", &meta)?,
        )?;
        Ok(true)
    }
}

impl View for RuntimeView {
    fn name(&self) -> &str {
        RUNTIME_VIEW
    }

    fn schema_version(&self) -> u32 {
        1
    }

    fn apply(&mut self, event: &EventRef<'_>, tables: &mut ViewTables<'_>) -> crate::Result<()> {
        if event.stream != RUNTIME_STREAM {
            return Ok(());
        }
        let folded = match RuntimeRecord::decode(event.data) {
            Ok(record) => self.fold(&record, tables)?,
            Err(_) => false,
        };
        if !folded {
            self.rejected_events += 1;
            tracing::warn!(
                lsn = event.lsn,
                "a runtime event that does not follow on from the view was not applied"
            );
        }
        Ok(())
    }

    fn reset(&mut self) {
        *self = RuntimeView::default();
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}
