//! The runtime view: worker runtimes (workers, their inputs and
//! transcripts, a runtime's events and diagnostics) as events.
//!
//! Every operation is one command decided in the writer against the
//! view's tables and logged as one event on `$runtime`, so two racing
//! operations on one worker never both pass a check only one should pass,
//! and after a crash everything acknowledged is back. The state lives in
//! the store only (see [`view`]): a page of events or of a transcript
//! costs O(page + log n) however long the history, and survives every
//! checkpoint and compaction.
//!
//! ```
//! use replaydb::runtime::{CreateWorkerRequest, RuntimeOptions, Runtimes, TranscriptQuery, WorkerInput};
//! # let tmp = tempfile::tempdir().unwrap();
//! let runtimes = Runtimes::open(tmp.path(), replaydb::Options::default(), vec![])?;
//! let runtime = runtimes.open_runtime(RuntimeOptions::default())?;
//! let worker = runtime.create_worker(CreateWorkerRequest::default())?;
//! runtime.send_input(&worker.worker_ref, WorkerInput::user("hello"))?;
//! let page = runtime.transcript_projection(&worker.worker_ref, TranscriptQuery::new(0, 10))?;
//! assert_eq!(page.items[0].content, "hello");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod model;
pub mod record;
pub(crate) mod remote;
mod subscribe;
pub mod view;

use std::path::{Path, PathBuf};

pub use model::*;
pub use record::{RUNTIME_STREAM, RuntimeChange, RuntimeRecord};
pub use subscribe::{EventSubscription, TranscriptSubscription};
pub use view::{RUNTIME_VIEW, RuntimeMeta, RuntimeView};

use crate::client::Client;
use crate::engine::Db;
use crate::remote::Backend;
use crate::stream::ExpectedVersion;
use crate::views::{View, ViewTablesRead};
use remote::RuntimeCall;
use view::{Tables, WorkerRow};

/// Everything a runtime operation can refuse (the same through a server:
/// it crosses the socket as itself).
#[derive(Debug, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum RuntimeError {
    /// The runtime takes no more changes.
    #[error("runtime {runtime_id} is stopped")]
    RuntimeStopped {
        /// The runtime.
        runtime_id: RuntimeId,
    },
    /// A worker reference names another runtime.
    #[error(
        "worker {worker_id} belongs to runtime {actual_runtime_id}, not runtime {expected_runtime_id}"
    )]
    WrongRuntime {
        /// This runtime.
        expected_runtime_id: RuntimeId,
        /// The reference's.
        actual_runtime_id: RuntimeId,
        /// The worker.
        worker_id: WorkerId,
    },
    /// A cursor names another runtime.
    #[error("cursor belongs to runtime {actual_runtime_id}, not runtime {expected_runtime_id}")]
    WrongRuntimeCursor {
        /// This runtime.
        expected_runtime_id: RuntimeId,
        /// The cursor's.
        actual_runtime_id: RuntimeId,
    },
    /// No such worker in the runtime.
    #[error("worker {worker_id} was not found in runtime {runtime_id}")]
    WorkerNotFound {
        /// The runtime.
        runtime_id: RuntimeId,
        /// The worker.
        worker_id: WorkerId,
    },
    /// A page larger than the runtime's limit.
    #[error("limit {requested} exceeds maximum {max}")]
    LimitTooLarge {
        /// Asked for.
        requested: usize,
        /// The runtime's limit.
        max: usize,
    },
    /// A request that is not valid (a blank field, an id too long, ...).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// No runtime of that id in the database.
    #[error("runtime {0} was not found")]
    UnknownRuntime(RuntimeId),
    /// The view's tables disagree with themselves: a row that its
    /// runtime's counts say exists is missing.
    #[error("runtime store {operation} missing data in {}: {what}", path.display())]
    StoreMissing {
        /// What replaydb was doing.
        operation: String,
        /// The store file.
        path: PathBuf,
        /// What is missing.
        what: String,
    },
    /// The database failed (a damaged value names the store, the view's
    /// table and the key).
    #[error(transparent)]
    Db(
        #[from]
        #[serde(with = "crate::remote::as_wire")]
        crate::Error,
    ),
}

fn not_registered(op: &'static str) -> RuntimeError {
    RuntimeError::Db(crate::Error::ViewNotRegistered {
        op,
        view: "runtime",
    })
}

fn check_id_len(what: &str, id: &str) -> Result<(), RuntimeError> {
    if id.len() > ID_BYTES_MAX {
        return Err(RuntimeError::InvalidRequest(format!(
            "{what} is {} bytes, above the limit of {ID_BYTES_MAX}",
            id.len()
        )));
    }
    Ok(())
}

/// The runtimes of one database: embedded, or through the process that
/// serves it ([`Runtimes::remote`]), with the same API.
#[derive(Clone, Debug)]
pub struct Runtimes {
    backend: Backend,
}

impl Runtimes {
    /// The runtimes of `db`, which must have been opened with a
    /// [`RuntimeView`] (operations fail otherwise).
    pub fn new(db: Db) -> Runtimes {
        Runtimes {
            backend: Backend::Local(db),
        }
    }

    /// The runtimes of the database `client`'s server serves (opened
    /// there with a [`RuntimeView`]): every operation is one request,
    /// answered as it would be embedded.
    pub fn remote(client: Client) -> Runtimes {
        Runtimes {
            backend: Backend::Remote(client),
        }
    }

    /// The runtimes of a [`SharedDb`](crate::SharedDb): embedded if it
    /// owns the database, through its owner otherwise.
    pub fn shared(db: &crate::SharedDb) -> Runtimes {
        Runtimes {
            backend: db.backend(),
        }
    }

    /// Opens the database at `dir` with the runtime view (and `views`)
    /// registered.
    pub fn open(
        dir: impl AsRef<Path>,
        options: crate::Options,
        mut views: Vec<Box<dyn View>>,
    ) -> Result<Runtimes, RuntimeError> {
        views.insert(0, Box::new(RuntimeView::default()));
        Ok(Runtimes::new(Db::open_with_views(dir, options, views)?))
    }

    /// The embedded database (`None` through a server).
    pub fn db(&self) -> Option<&Db> {
        self.backend.db()
    }

    /// Opens the runtime `options.runtime_id`, creating it (event 1,
    /// "runtime started") if it does not exist or no id is given; an
    /// existing runtime keeps its own name and limits. The restored
    /// runtime's first and last events and workers are checked to be
    /// there.
    pub fn open_runtime(&self, options: RuntimeOptions) -> Result<Runtime, RuntimeError> {
        if let Some(c) = self.remote_client() {
            let id = remote::call(c, RuntimeCall::OpenRuntime { options }, false)?;
            return Ok(Runtime {
                backend: self.backend.clone(),
                id,
            });
        }
        if let Some(id) = &options.runtime_id {
            check_id_len("runtime id", id.as_str())?;
        }
        // Decided against the table: a generated id that happens to name
        // an existing runtime is generated again, never reused.
        let driver = Runtime {
            backend: self.backend.clone(),
            id: options
                .runtime_id
                .clone()
                .unwrap_or_else(RuntimeId::generate),
        };
        let id = driver.command("open_runtime", move |tables| {
            let id = match options.runtime_id.clone() {
                Some(id) if tables.meta(&id)?.is_some() => return Ok((None, id)),
                Some(id) => id,
                None => loop {
                    let id = RuntimeId::generate();
                    if tables.meta(&id)?.is_none() {
                        break id;
                    }
                },
            };
            // Checked only for a new runtime: an existing one keeps its own.
            if options.limits.max_event_batch_items == 0
                || options.limits.max_transcript_projection_items == 0
            {
                return Err(RuntimeError::InvalidRequest(
                    "limits must be above zero".into(),
                ));
            }
            Ok((
                Some(RuntimeRecord {
                    runtime_id: id.clone(),
                    event_id: 1,
                    at_unix_ms: crate::stream::now_unix_ms(),
                    change: RuntimeChange::Started {
                        display_name: options.display_name.clone(),
                        limits: options.limits.clone(),
                    },
                }),
                id,
            ))
        })?;
        let runtime = Runtime {
            backend: self.backend.clone(),
            id,
        };
        runtime.check_ends()?;
        Ok(runtime)
    }

    /// The existing runtime `id`.
    pub fn runtime(&self, id: &RuntimeId) -> Result<Runtime, RuntimeError> {
        check_id_len("runtime id", id.as_str())?;
        if let Some(c) = self.remote_client() {
            remote::call::<()>(c, RuntimeCall::Runtime { id: id.clone() }, true)?;
        }
        let runtime = Runtime {
            backend: self.backend.clone(),
            id: id.clone(),
        };
        if self.remote_client().is_none() {
            runtime.read(|_, _| Ok(()))?;
        }
        Ok(runtime)
    }

    /// Every runtime's summary, in id order.
    pub fn list(&self) -> Result<Vec<RuntimeSummary>, RuntimeError> {
        if let Some(c) = self.remote_client() {
            return remote::call(c, RuntimeCall::List, true);
        }
        let all = self
            .backend
            .local("list runtimes")?
            .view_tables(|_: &RuntimeView, read| Tables { read }.runtimes())?
            .ok_or_else(|| not_registered("list runtimes"))?
            .value;
        Ok(all
            .into_iter()
            .map(|(id, meta)| summary(id, &meta))
            .collect())
    }
}

fn summary(runtime_id: RuntimeId, meta: &RuntimeMeta) -> RuntimeSummary {
    let n = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
    RuntimeSummary {
        runtime_id,
        display_name: meta.display_name.clone(),
        status: meta.status,
        worker_count: n(meta.worker_count),
        active_worker_count: n(meta.active_worker_count),
        stopped_worker_count: n(meta.stopped_worker_count),
        cancelled_worker_count: n(meta.cancelled_worker_count),
        diagnostic_count: n(meta.diagnostic_count),
        limits: meta.limits.clone(),
        last_event_id: meta.last_event_id,
    }
}

fn detail(worker_ref: &WorkerRef, row: WorkerRow) -> WorkerDetail {
    WorkerDetail {
        worker_ref: worker_ref.clone(),
        runtime_id: worker_ref.runtime_id.clone(),
        worker_id: worker_ref.worker_id.clone(),
        status: row.status,
        intent: row.request.intent,
        profile: row.request.profile,
        config_bundle: row.request.config_bundle,
        requested_capabilities: row.request.requested_capabilities,
        workspace_refs: row.request.workspace_refs,
        mount_refs: row.request.mount_refs,
        transcript_len: usize::try_from(row.transcript_len).unwrap_or(usize::MAX),
        last_event_id: row.last_event_id,
    }
}

/// What a decision returns: the record to log (none: nothing changes) and
/// the answer for the caller.
type Decision<T> = Result<(Option<RuntimeRecord>, T), RuntimeError>;

/// One runtime of a database: a cheap handle (clone it freely); every
/// call reads or changes the store.
#[derive(Clone, Debug)]
pub struct Runtime {
    backend: Backend,
    id: RuntimeId,
}

impl Runtime {
    /// The runtime id half of every worker's authority.
    pub fn runtime_id(&self) -> &RuntimeId {
        &self.id
    }

    /// The embedded database (`None` through a server).
    pub fn db(&self) -> Option<&Db> {
        self.backend.db()
    }

    /// Runs one operation as a command: `decide` reads the view's tables
    /// inside the writer and returns the record to log and the answer.
    fn command<T: Send + 'static>(
        &self,
        op: &'static str,
        decide: impl Fn(&Tables<'_, '_>) -> Decision<T> + Send + 'static,
    ) -> Result<T, RuntimeError> {
        let result = self.backend.local(op)?.execute_with(
            RUNTIME_STREAM,
            ExpectedVersion::Any,
            move |views| {
                let read = views.tables::<RuntimeView>().ok_or_else(|| {
                    crate::Error::ViewNotRegistered {
                        op,
                        view: "runtime",
                    }
                })?;
                let (record, value) =
                    decide(&Tables { read: &read }).map_err(crate::Error::rejected)?;
                let events = match record {
                    None => Vec::new(),
                    Some(r) => vec![r.encode().map_err(|e| crate::Error::Encode {
                        op,
                        reason: e.to_string(),
                    })?],
                };
                Ok((events, value))
            },
        );
        match result {
            Ok((_, value)) => Ok(value),
            Err(e) => Err(e
                .into_rejected::<RuntimeError>()
                .unwrap_or_else(RuntimeError::Db)),
        }
    }

    /// A change to a running runtime: `decide` gets the tables, the meta
    /// and the record's event id.
    fn change<T: Send + 'static>(
        &self,
        op: &'static str,
        decide: impl Fn(
            &Tables<'_, '_>,
            &RuntimeMeta,
        ) -> Result<(Option<RuntimeChange>, T), RuntimeError>
        + Send
        + 'static,
    ) -> Result<T, RuntimeError> {
        let id = self.id.clone();
        self.command(op, move |tables| {
            let meta = tables
                .meta(&id)?
                .ok_or_else(|| RuntimeError::UnknownRuntime(id.clone()))?;
            if meta.status == RuntimeStatus::Stopped {
                return Err(RuntimeError::RuntimeStopped {
                    runtime_id: id.clone(),
                });
            }
            let (change, answer) = decide(tables, &meta)?;
            Ok((
                change.map(|change| RuntimeRecord {
                    runtime_id: id.clone(),
                    event_id: meta.last_event_id + 1,
                    at_unix_ms: crate::stream::now_unix_ms(),
                    change,
                }),
                answer,
            ))
        })
    }

    /// Reads the view at one commit: `f` gets the tables and this
    /// runtime's meta.
    fn read<T>(
        &self,
        f: impl FnOnce(&Tables<'_, '_>, &RuntimeMeta) -> Result<T, RuntimeError>,
    ) -> Result<T, RuntimeError> {
        self.read_at(f).map(|(v, _)| v)
    }

    /// [`Runtime::read`], with the LSN the read reflects.
    fn read_at<T>(
        &self,
        f: impl FnOnce(&Tables<'_, '_>, &RuntimeMeta) -> Result<T, RuntimeError>,
    ) -> Result<(T, u64), RuntimeError> {
        let id = &self.id;
        let at = self
            .backend
            .local("read runtime")?
            .view_tables(|_: &RuntimeView, read: &ViewTablesRead<'_>| {
                let tables = Tables { read };
                Ok(match tables.meta(id) {
                    Ok(Some(meta)) => f(&tables, &meta),
                    Ok(None) => Err(RuntimeError::UnknownRuntime(id.clone())),
                    Err(e) => Err(RuntimeError::Db(e)),
                })
            })?
            .ok_or_else(|| not_registered("read runtime"))?;
        at.value.map(|v| (v, at.lsn))
    }

    fn check_ref(&self, worker_ref: &WorkerRef) -> Result<(), RuntimeError> {
        check_ref(&self.id, worker_ref)
    }

    /// The worker's row; a missing row of a worker the counts say exists
    /// is damage, not `WorkerNotFound`.
    fn worker_row(
        &self,
        tables: &Tables<'_, '_>,
        meta: &RuntimeMeta,
        worker_ref: &WorkerRef,
    ) -> Result<WorkerRow, RuntimeError> {
        worker_row(tables, meta, worker_ref)
    }

    /// Checks, at a cost of O(log n) whatever the runtime's size, that
    /// the ends of its sequences are in the store: its first and last
    /// event, and its first and last worker (ids are generated from the
    /// count). A row lost in between is found when it is read.
    fn check_ends(&self) -> Result<(), RuntimeError> {
        self.read(|tables, meta| {
            let missing = |what: String| RuntimeError::StoreMissing {
                operation: "open runtime".into(),
                path: tables.read.path.to_path_buf(),
                what,
            };
            for id in [1, meta.last_event_id] {
                if tables.events(&self.id, id, 1)?.first().map(|e| e.id) != Some(id) {
                    return Err(missing(format!(
                        "runtime {}: event {id} of 1..={} has no row",
                        self.id, meta.last_event_id
                    )));
                }
            }
            for n in [1, meta.worker_count] {
                let w = WorkerId::generated(n);
                if meta.worker_count > 0 && tables.worker(&self.id, &w)?.is_none() {
                    return Err(missing(format!(
                        "runtime {}: worker {w} of {} has no row",
                        self.id, meta.worker_count
                    )));
                }
            }
            Ok(())
        })
    }

    /// The runtime at a glance.
    pub fn summary(&self) -> Result<RuntimeSummary, RuntimeError> {
        if let Some(c) = self.remote_client() {
            return remote::call(
                c,
                RuntimeCall::Summary {
                    id: self.id.clone(),
                },
                true,
            );
        }
        self.read(|_, meta| Ok(summary(self.id.clone(), meta)))
    }

    /// Running or Stopped.
    pub fn status(&self) -> Result<RuntimeStatus, RuntimeError> {
        if let Some(c) = self.remote_client() {
            return remote::call(
                c,
                RuntimeCall::Status {
                    id: self.id.clone(),
                },
                true,
            );
        }
        self.read(|_, meta| Ok(meta.status))
    }

    /// Stops the runtime: every running worker becomes Stopped (with no
    /// worker events) and "runtime stopped" is recorded; returns its event
    /// id. Stopping a stopped runtime adds nothing and returns the last
    /// event id. Reads keep working.
    pub fn stop_runtime(&self) -> Result<u64, RuntimeError> {
        if let Some(c) = self.remote_client() {
            return remote::call(
                c,
                RuntimeCall::StopRuntime {
                    id: self.id.clone(),
                },
                false,
            );
        }
        let id = self.id.clone();
        self.command("stop_runtime", move |tables| {
            let meta = tables
                .meta(&id)?
                .ok_or_else(|| RuntimeError::UnknownRuntime(id.clone()))?;
            if meta.status == RuntimeStatus::Stopped {
                return Ok((None, meta.last_event_id));
            }
            let event_id = meta.last_event_id + 1;
            Ok((
                Some(RuntimeRecord {
                    runtime_id: id.clone(),
                    event_id,
                    at_unix_ms: crate::stream::now_unix_ms(),
                    change: RuntimeChange::Stopped,
                }),
                event_id,
            ))
        })
    }

    /// Creates a worker with the runtime's next id. `RuntimeStopped`;
    /// `InvalidRequest` for a blank task objective or capability name.
    /// A worker without a config bundle gets the info diagnostic
    /// `runtime.local_default_resources`, one without capabilities
    /// `worker.tools_less`.
    pub fn create_worker(
        &self,
        request: CreateWorkerRequest,
    ) -> Result<WorkerDetail, RuntimeError> {
        if let Some(c) = self.remote_client() {
            let call = RuntimeCall::CreateWorker {
                id: self.id.clone(),
                request,
            };
            return remote::call(c, call, false);
        }
        let rt = self.id.clone();
        self.change("create_worker", move |_, meta| {
            validate_request(&request)?;
            let worker_id = WorkerId::generated(meta.worker_count + 1);
            let worker_ref = WorkerRef::new(rt.clone(), worker_id.clone());
            let row = WorkerRow {
                request: request.clone(),
                status: WorkerStatus::Running,
                transcript_len: 0,
                last_event_id: meta.last_event_id + 1,
            };
            Ok((
                Some(RuntimeChange::WorkerCreated {
                    worker_id: worker_id.clone(),
                    request: request.clone(),
                }),
                detail(&worker_ref, row),
            ))
        })
    }

    /// Every worker, ordered by id.
    pub fn list_workers(&self) -> Result<Vec<WorkerSummary>, RuntimeError> {
        if let Some(c) = self.remote_client() {
            return remote::call(
                c,
                RuntimeCall::ListWorkers {
                    id: self.id.clone(),
                },
                true,
            );
        }
        self.read(|tables, meta| {
            let rows = tables.workers(&self.id)?;
            if rows.len() as u64 != meta.worker_count {
                return Err(RuntimeError::StoreMissing {
                    operation: "list workers".into(),
                    path: tables.read.path.to_path_buf(),
                    what: format!(
                        "runtime {} has {} worker rows, its count is {}",
                        self.id,
                        rows.len(),
                        meta.worker_count
                    ),
                });
            }
            Ok(rows
                .into_iter()
                .map(|(id, row)| {
                    let d = detail(&WorkerRef::new(self.id.clone(), id), row);
                    WorkerSummary {
                        worker_ref: d.worker_ref,
                        runtime_id: d.runtime_id,
                        worker_id: d.worker_id,
                        status: d.status,
                        requested_capability_count: d.requested_capabilities.len(),
                        has_config_bundle: d.config_bundle.is_some(),
                        intent: d.intent,
                        profile: d.profile,
                        transcript_len: d.transcript_len,
                        last_event_id: d.last_event_id,
                    }
                })
                .collect())
        })
    }

    /// One worker: `WrongRuntime` for another runtime's reference (checked
    /// first), then `WorkerNotFound`.
    pub fn worker_detail(&self, worker_ref: &WorkerRef) -> Result<WorkerDetail, RuntimeError> {
        if let Some(c) = self.remote_client() {
            let call = RuntimeCall::WorkerDetail {
                id: self.id.clone(),
                worker_ref: worker_ref.clone(),
            };
            return remote::call(c, call, true);
        }
        self.check_ref(worker_ref)?;
        self.read(|tables, meta| {
            Ok(detail(
                worker_ref,
                self.worker_row(tables, meta, worker_ref)?,
            ))
        })
    }

    /// Gives a running worker an input: `RuntimeStopped`, blank content
    /// `InvalidRequest`, the reference checks, a worker not running
    /// `InvalidRequest`. Records "worker input accepted" and appends the
    /// transcript entry with the worker's next sequence.
    pub fn send_input(
        &self,
        worker_ref: &WorkerRef,
        input: WorkerInput,
    ) -> Result<WorkerInteractionAck, RuntimeError> {
        if let Some(c) = self.remote_client() {
            let call = RuntimeCall::SendInput {
                id: self.id.clone(),
                worker_ref: worker_ref.clone(),
                input,
            };
            return remote::call(c, call, false);
        }
        let rt = self.id.clone();
        let worker_ref = worker_ref.clone();
        self.change("send_input", move |tables, meta| {
            if input.content.trim().is_empty() {
                return Err(RuntimeError::InvalidRequest(
                    "input content must not be blank".into(),
                ));
            }
            check_ref(&rt, &worker_ref)?;
            let row = worker_row(tables, meta, &worker_ref)?;
            if !row.status.is_active() {
                return Err(RuntimeError::InvalidRequest(format!(
                    "worker {} is {:?}, not running",
                    worker_ref.worker_id, row.status
                )));
            }
            let sequence = row.transcript_len + 1;
            let ack = WorkerInteractionAck {
                worker_ref: worker_ref.clone(),
                status: row.status,
                transcript_sequence: sequence,
                event_id: meta.last_event_id + 1,
            };
            Ok((
                Some(RuntimeChange::InputAccepted {
                    worker_id: worker_ref.worker_id.clone(),
                    sequence,
                    role: input.kind.into(),
                    content: input.content.clone(),
                }),
                ack,
            ))
        })
    }

    /// Stops a running worker ("worker stopped", or `reason`). A worker
    /// already stopped or cancelled keeps its state: the answer has its
    /// status and last event id, and nothing is recorded.
    pub fn stop_worker(
        &self,
        worker_ref: &WorkerRef,
        reason: Option<String>,
    ) -> Result<WorkerLifecycleAck, RuntimeError> {
        if let Some(c) = self.remote_client() {
            let call = RuntimeCall::StopWorker {
                id: self.id.clone(),
                worker_ref: worker_ref.clone(),
                reason,
            };
            return remote::call(c, call, false);
        }
        self.transition(worker_ref, WorkerStatus::Stopped, reason)
    }

    /// Cancels a running worker ("worker cancelled", or `reason`); as
    /// [`Runtime::stop_worker`] for one already final.
    pub fn cancel_worker(
        &self,
        worker_ref: &WorkerRef,
        reason: Option<String>,
    ) -> Result<WorkerLifecycleAck, RuntimeError> {
        if let Some(c) = self.remote_client() {
            let call = RuntimeCall::CancelWorker {
                id: self.id.clone(),
                worker_ref: worker_ref.clone(),
                reason,
            };
            return remote::call(c, call, false);
        }
        self.transition(worker_ref, WorkerStatus::Cancelled, reason)
    }

    fn transition(
        &self,
        worker_ref: &WorkerRef,
        to: WorkerStatus,
        reason: Option<String>,
    ) -> Result<WorkerLifecycleAck, RuntimeError> {
        let rt = self.id.clone();
        let worker_ref = worker_ref.clone();
        self.change("stop_or_cancel_worker", move |tables, meta| {
            check_ref(&rt, &worker_ref)?;
            let row = worker_row(tables, meta, &worker_ref)?;
            if !row.status.is_active() {
                return Ok((
                    None,
                    WorkerLifecycleAck {
                        worker_ref: worker_ref.clone(),
                        status: row.status,
                        event_id: row.last_event_id,
                    },
                ));
            }
            let worker_id = worker_ref.worker_id.clone();
            let change = match to {
                WorkerStatus::Cancelled => RuntimeChange::WorkerCancelled {
                    worker_id,
                    message: reason.clone().unwrap_or_else(|| "worker cancelled".into()),
                },
                _ => RuntimeChange::WorkerStopped {
                    worker_id,
                    message: reason.clone().unwrap_or_else(|| "worker stopped".into()),
                },
            };
            Ok((
                Some(change),
                WorkerLifecycleAck {
                    worker_ref: worker_ref.clone(),
                    status: to,
                    event_id: meta.last_event_id + 1,
                },
            ))
        })
    }

    /// A page of a worker's transcript: `LimitTooLarge` (checked before
    /// the reference) above the runtime's limit; `next_start` is `None` at
    /// the end.
    pub fn transcript_projection(
        &self,
        worker_ref: &WorkerRef,
        query: TranscriptQuery,
    ) -> Result<TranscriptProjection, RuntimeError> {
        self.transcript_at(worker_ref, query).map(|(p, _, _)| p)
    }

    /// The page, the LSN it reflects, and whether the worker is running.
    pub(crate) fn transcript_at(
        &self,
        worker_ref: &WorkerRef,
        query: TranscriptQuery,
    ) -> Result<(TranscriptProjection, u64, bool), RuntimeError> {
        if let Some(c) = self.remote_client() {
            let call = RuntimeCall::TranscriptAt {
                id: self.id.clone(),
                worker_ref: worker_ref.clone(),
                query,
            };
            return remote::call(c, call, true);
        }
        self.read_at(|tables, meta| {
            let max = meta.limits.max_transcript_projection_items;
            if query.limit > max {
                return Err(RuntimeError::LimitTooLarge {
                    requested: query.limit,
                    max,
                });
            }
            self.check_ref(worker_ref)?;
            let row = self.worker_row(tables, meta, worker_ref)?;
            let total_items = usize::try_from(row.transcript_len).unwrap_or(usize::MAX);
            let end = query.start.saturating_add(query.limit).min(total_items);
            let items = if query.start >= total_items {
                Vec::new()
            } else {
                let from = u64::try_from(query.start).unwrap_or(u64::MAX) + 1;
                tables.transcript(worker_ref, from, end - query.start)?
            };
            if items.len() != end.saturating_sub(query.start) {
                return Err(RuntimeError::StoreMissing {
                    operation: "read transcript".into(),
                    path: tables.read.path.to_path_buf(),
                    what: format!(
                        "worker {} has {} of entries {}..{} (transcript length {total_items})",
                        worker_ref.worker_id,
                        items.len(),
                        query.start + 1,
                        end + 1
                    ),
                });
            }
            let page = TranscriptProjection {
                worker_ref: worker_ref.clone(),
                start: query.start,
                limit: query.limit,
                total_items,
                items,
                next_start: (end < total_items).then_some(end),
            };
            Ok((page, row.status.is_active()))
        })
        .map(|((page, active), lsn)| (page, lsn, active))
    }

    /// A cursor at the first event.
    pub fn event_cursor_from_start(&self) -> EventCursor {
        EventCursor {
            runtime_id: self.id.clone(),
            next_event_id: 1,
        }
    }

    /// A cursor after the last event.
    pub fn event_cursor_now(&self) -> Result<EventCursor, RuntimeError> {
        if let Some(c) = self.remote_client() {
            return remote::call(
                c,
                RuntimeCall::EventCursorNow {
                    id: self.id.clone(),
                },
                true,
            );
        }
        self.read(|_, meta| {
            Ok(EventCursor {
                runtime_id: self.id.clone(),
                next_event_id: meta.last_event_id + 1,
            })
        })
    }

    /// Up to `limit` events from `cursor`: `WrongRuntimeCursor`, then
    /// `LimitTooLarge`. The next cursor follows the last event returned
    /// (unchanged when none was); `has_more` says whether more follow.
    pub fn read_events(
        &self,
        cursor: &EventCursor,
        limit: usize,
    ) -> Result<RuntimeEventBatch, RuntimeError> {
        self.events_at(cursor, limit).map(|(b, _, _)| b)
    }

    /// The page, the LSN it reflects, and whether the runtime is running.
    pub(crate) fn events_at(
        &self,
        cursor: &EventCursor,
        limit: usize,
    ) -> Result<(RuntimeEventBatch, u64, bool), RuntimeError> {
        if let Some(c) = self.remote_client() {
            let call = RuntimeCall::EventsAt {
                id: self.id.clone(),
                cursor: cursor.clone(),
                limit: limit as u64,
            };
            return remote::call(c, call, true);
        }
        if cursor.runtime_id != self.id {
            return Err(RuntimeError::WrongRuntimeCursor {
                expected_runtime_id: self.id.clone(),
                actual_runtime_id: cursor.runtime_id.clone(),
            });
        }
        self.read_at(|tables, meta| {
            let max = meta.limits.max_event_batch_items;
            if limit > max {
                return Err(RuntimeError::LimitTooLarge {
                    requested: limit,
                    max,
                });
            }
            let from = cursor.next_event_id.max(1);
            let events = tables.events(&self.id, from, limit)?;
            let expected = meta
                .last_event_id
                .saturating_add(1)
                .saturating_sub(from)
                .min(limit as u64);
            if events.len() as u64 != expected
                || events.iter().zip(from..).any(|(e, id)| e.id != id)
            {
                return Err(RuntimeError::StoreMissing {
                    operation: "read events".into(),
                    path: tables.read.path.to_path_buf(),
                    what: format!(
                        "runtime {} events from {from}: {} found, {expected} expected in sequence",
                        self.id,
                        events.len()
                    ),
                });
            }
            let next_event_id = events.last().map_or(cursor.next_event_id, |e| e.id + 1);
            let batch = RuntimeEventBatch {
                runtime_id: self.id.clone(),
                cursor: EventCursor {
                    runtime_id: self.id.clone(),
                    next_event_id,
                },
                events,
                has_more: meta.last_event_id >= next_event_id,
            };
            Ok((batch, meta.status == RuntimeStatus::Running))
        })
        .map(|((batch, running), lsn)| (batch, lsn, running))
    }

    /// A live subscription to this runtime's events from `cursor`:
    /// `WrongRuntimeCursor` for another runtime's.
    pub fn subscribe_events(&self, cursor: EventCursor) -> Result<EventSubscription, RuntimeError> {
        if cursor.runtime_id != self.id {
            return Err(RuntimeError::WrongRuntimeCursor {
                expected_runtime_id: self.id.clone(),
                actual_runtime_id: cursor.runtime_id,
            });
        }
        Ok(EventSubscription::new(self.clone(), cursor))
    }

    /// A live subscription to one worker's transcript from index `start`
    /// (0-based, as in [`TranscriptQuery`]).
    pub fn subscribe_transcript(
        &self,
        worker_ref: &WorkerRef,
        start: usize,
    ) -> Result<TranscriptSubscription, RuntimeError> {
        self.worker_detail(worker_ref)?;
        Ok(TranscriptSubscription::new(
            self.clone(),
            worker_ref.clone(),
            start,
        ))
    }

    /// The diagnostics recorded, in id order.
    pub fn diagnostics(&self) -> Result<Vec<RuntimeDiagnostic>, RuntimeError> {
        if let Some(c) = self.remote_client() {
            return remote::call(
                c,
                RuntimeCall::Diagnostics {
                    id: self.id.clone(),
                },
                true,
            );
        }
        self.read(|tables, _| Ok(tables.diagnostics(&self.id)?))
    }
}

fn check_ref(rt: &RuntimeId, worker_ref: &WorkerRef) -> Result<(), RuntimeError> {
    if worker_ref.runtime_id != *rt {
        return Err(RuntimeError::WrongRuntime {
            expected_runtime_id: rt.clone(),
            actual_runtime_id: worker_ref.runtime_id.clone(),
            worker_id: worker_ref.worker_id.clone(),
        });
    }
    Ok(())
}

fn worker_row(
    tables: &Tables<'_, '_>,
    meta: &RuntimeMeta,
    worker_ref: &WorkerRef,
) -> Result<WorkerRow, RuntimeError> {
    if let Some(row) = tables.worker(&worker_ref.runtime_id, &worker_ref.worker_id)? {
        return Ok(row);
    }
    // Worker ids are generated from the runtime's count: one within it
    // was created, and its row is damage.
    let within = worker_ref
        .worker_id
        .as_str()
        .strip_prefix("worker-")
        .filter(|hex| hex.len() >= 8 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .and_then(|hex| u64::from_str_radix(hex, 16).ok())
        .is_some_and(|seq| {
            seq >= 1 && seq <= meta.worker_count && WorkerId::generated(seq) == worker_ref.worker_id
        });
    if within {
        return Err(RuntimeError::StoreMissing {
            operation: "read worker".into(),
            path: tables.read.path.to_path_buf(),
            what: format!(
                "worker {} of runtime {} has no row",
                worker_ref.worker_id, worker_ref.runtime_id
            ),
        });
    }
    Err(RuntimeError::WorkerNotFound {
        runtime_id: worker_ref.runtime_id.clone(),
        worker_id: worker_ref.worker_id.clone(),
    })
}

fn validate_request(request: &CreateWorkerRequest) -> Result<(), RuntimeError> {
    if let WorkerIntent::Task { objective } = &request.intent
        && objective.trim().is_empty()
    {
        return Err(RuntimeError::InvalidRequest(
            "task objective must not be blank".into(),
        ));
    }
    if request
        .requested_capabilities
        .iter()
        .any(|c| c.name.trim().is_empty())
    {
        return Err(RuntimeError::InvalidRequest(
            "capability name must not be blank".into(),
        ));
    }
    Ok(())
}
