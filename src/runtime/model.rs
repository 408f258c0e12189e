//! The worker runtime's data model, as the original `worker-runtime` crate
//! has it (ids, requests, statuses, events, transcripts, diagnostics and
//! the shapes its reads return), with the same JSON form.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Bytes an id may hold: ids are keys in the store, never paths.
pub const ID_BYTES_MAX: usize = 1024;

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(into = "String", try_from = "String")]
        pub struct $name(String);

        impl TryFrom<String> for $name {
            type Error = String;

            /// Refuses a blank id, as [`Self::new`] does.
            fn try_from(value: String) -> Result<$name, String> {
                $name::new(value).ok_or_else(|| "an id must not be blank".to_string())
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl $name {
            /// The id, unless it is blank after trimming (it is stored
            /// unchanged otherwise, whatever bytes it holds).
            pub fn new(value: impl Into<String>) -> Option<$name> {
                let value = value.into();
                if value.trim().is_empty() {
                    None
                } else {
                    Some($name(value))
                }
            }

            /// The id as given.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

string_id!(
    /// A runtime's id: the first half of a worker's authority.
    RuntimeId
);
string_id!(
    /// A worker's id, unique within its runtime.
    WorkerId
);

impl RuntimeId {
    /// A new id: `runtime-` and 16 random hex digits.
    pub fn generate() -> RuntimeId {
        let bits = uuid::Uuid::new_v4().as_u64_pair().0;
        RuntimeId(format!("runtime-{bits:016x}"))
    }
}

impl WorkerId {
    /// The id generated for a runtime's `sequence`-th worker.
    pub fn generated(sequence: u64) -> WorkerId {
        WorkerId(format!("worker-{sequence:08x}"))
    }
}

/// A worker's whole authority: its runtime and its id.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct WorkerRef {
    /// The runtime.
    pub runtime_id: RuntimeId,
    /// The worker.
    pub worker_id: WorkerId,
}

impl WorkerRef {
    /// A reference.
    pub fn new(runtime_id: RuntimeId, worker_id: WorkerId) -> WorkerRef {
        WorkerRef {
            runtime_id,
            worker_id,
        }
    }
}

/// What a worker is for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WorkerIntent {
    /// A general assistant.
    Assistant {
        /// What for.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        purpose: Option<String>,
    },
    /// One task (the objective must not be blank).
    Task {
        /// The task.
        objective: String,
    },
    /// A role.
    Role {
        /// The role.
        role: String,
        /// What for.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        purpose: Option<String>,
    },
}

impl Default for WorkerIntent {
    fn default() -> WorkerIntent {
        WorkerIntent::Assistant { purpose: None }
    }
}

/// Which profile a worker runs with (a selector, not a resolved bundle).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum ProfileSelector {
    /// The runtime's default.
    #[default]
    RuntimeDefault,
    /// A built-in profile.
    Builtin(String),
    /// A named profile.
    Named(String),
}

/// A configuration bundle, by id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigBundleRef {
    /// The bundle.
    pub id: String,
}

/// A capability asked for (the name must not be blank).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapabilityRequest {
    /// The capability.
    pub name: String,
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl CapabilityRequest {
    /// A capability without a reason.
    pub fn named(name: impl Into<String>) -> CapabilityRequest {
        CapabilityRequest {
            name: name.into(),
            reason: None,
        }
    }
}

/// A caller's workspace reference (opaque).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkspaceRef {
    /// Its name.
    pub name: String,
    /// The reference.
    pub reference: String,
}

/// A caller's mount reference (opaque).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountRef {
    /// Its name.
    pub name: String,
    /// The reference.
    pub reference: String,
}

/// What `create_worker` asks for.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateWorkerRequest {
    /// What for.
    #[serde(default)]
    pub intent: WorkerIntent,
    /// With which profile.
    #[serde(default)]
    pub profile: ProfileSelector,
    /// Its configuration bundle, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_bundle: Option<ConfigBundleRef>,
    /// Capabilities asked for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requested_capabilities: Vec<CapabilityRequest>,
    /// Workspaces.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workspace_refs: Vec<WorkspaceRef>,
    /// Mounts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mount_refs: Vec<MountRef>,
}

impl CreateWorkerRequest {
    /// A worker with no capabilities and the runtime's local defaults.
    pub fn tools_less(intent: WorkerIntent, profile: ProfileSelector) -> CreateWorkerRequest {
        CreateWorkerRequest {
            intent,
            profile,
            ..CreateWorkerRequest::default()
        }
    }
}

/// A worker's lifecycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerStatus {
    /// Takes input.
    Running,
    /// Stopped (for good).
    Stopped,
    /// Cancelled (for good).
    Cancelled,
}

impl WorkerStatus {
    /// Only a running worker is active.
    pub fn is_active(self) -> bool {
        matches!(self, WorkerStatus::Running)
    }
}

/// A catalog row, from `list_workers`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerSummary {
    /// Its authority.
    pub worker_ref: WorkerRef,
    /// Its runtime.
    pub runtime_id: RuntimeId,
    /// Its id.
    pub worker_id: WorkerId,
    /// Its status.
    pub status: WorkerStatus,
    /// What for.
    pub intent: WorkerIntent,
    /// Its profile.
    pub profile: ProfileSelector,
    /// How many capabilities it asked for.
    pub requested_capability_count: usize,
    /// Whether it has a configuration bundle.
    pub has_config_bundle: bool,
    /// Transcript entries.
    pub transcript_len: usize,
    /// The last event about it.
    pub last_event_id: u64,
}

/// Everything about a worker, from `worker_detail` and `create_worker`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerDetail {
    /// Its authority.
    pub worker_ref: WorkerRef,
    /// Its runtime.
    pub runtime_id: RuntimeId,
    /// Its id.
    pub worker_id: WorkerId,
    /// Its status.
    pub status: WorkerStatus,
    /// What for.
    pub intent: WorkerIntent,
    /// Its profile.
    pub profile: ProfileSelector,
    /// Its configuration bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_bundle: Option<ConfigBundleRef>,
    /// Capabilities asked for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requested_capabilities: Vec<CapabilityRequest>,
    /// Workspaces.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workspace_refs: Vec<WorkspaceRef>,
    /// Mounts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mount_refs: Vec<MountRef>,
    /// Transcript entries.
    pub transcript_len: usize,
    /// The last event about it.
    pub last_event_id: u64,
}

/// The answer to `stop_worker` and `cancel_worker`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerLifecycleAck {
    /// The worker.
    pub worker_ref: WorkerRef,
    /// Its status now.
    pub status: WorkerStatus,
    /// The event that made it so (its last event, if it was already final).
    pub event_id: u64,
}

/// The kind of an input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerInputKind {
    /// From the user.
    User,
    /// From the system.
    System,
}

/// An input for a worker (the content must not be blank).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerInput {
    /// Whose.
    pub kind: WorkerInputKind,
    /// What.
    pub content: String,
}

impl WorkerInput {
    /// A user's input.
    pub fn user(content: impl Into<String>) -> WorkerInput {
        WorkerInput {
            kind: WorkerInputKind::User,
            content: content.into(),
        }
    }

    /// A system input.
    pub fn system(content: impl Into<String>) -> WorkerInput {
        WorkerInput {
            kind: WorkerInputKind::System,
            content: content.into(),
        }
    }
}

/// The answer to `send_input`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerInteractionAck {
    /// The worker.
    pub worker_ref: WorkerRef,
    /// Its status.
    pub status: WorkerStatus,
    /// The transcript entry's sequence.
    pub transcript_sequence: u64,
    /// The event that accepted it.
    pub event_id: u64,
}

/// A transcript entry's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TranscriptRole {
    /// The user.
    User,
    /// The system.
    System,
}

impl From<WorkerInputKind> for TranscriptRole {
    fn from(k: WorkerInputKind) -> TranscriptRole {
        match k {
            WorkerInputKind::User => TranscriptRole::User,
            WorkerInputKind::System => TranscriptRole::System,
        }
    }
}

/// One transcript entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TranscriptEntry {
    /// From 1, per worker.
    pub sequence: u64,
    /// The worker.
    pub worker_ref: WorkerRef,
    /// Whose.
    pub role: TranscriptRole,
    /// What.
    pub content: String,
    /// The event that added it.
    pub event_id: u64,
}

/// A page of a transcript: entries from index `start` (0-based).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TranscriptQuery {
    /// The first entry's index.
    pub start: usize,
    /// Entries at most.
    pub limit: usize,
}

impl TranscriptQuery {
    /// A query.
    pub fn new(start: usize, limit: usize) -> TranscriptQuery {
        TranscriptQuery { start, limit }
    }
}

/// A transcript page.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TranscriptProjection {
    /// The worker.
    pub worker_ref: WorkerRef,
    /// As asked.
    pub start: usize,
    /// As asked.
    pub limit: usize,
    /// Entries the transcript holds.
    pub total_items: usize,
    /// The page.
    pub items: Vec<TranscriptEntry>,
    /// Where the next page starts; `None` at the end (a limit of 0 gives
    /// `start`).
    pub next_start: Option<usize>,
}

/// Where a read of a runtime's events goes on from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventCursor {
    /// The runtime.
    pub runtime_id: RuntimeId,
    /// The first event id the next read returns.
    pub next_event_id: u64,
}

/// A runtime event's kind.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RuntimeEventKind {
    /// The runtime was created.
    RuntimeStarted,
    /// The runtime was stopped.
    RuntimeStopped,
    /// A worker was created.
    WorkerCreated,
    /// A worker took an input.
    WorkerInputAccepted,
    /// A worker was stopped.
    WorkerStopped,
    /// A worker was cancelled.
    WorkerCancelled,
}

/// One runtime event: ids from 1, one sequence per runtime.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeEvent {
    /// Its id.
    pub id: u64,
    /// The worker it is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_ref: Option<WorkerRef>,
    /// What happened.
    pub kind: RuntimeEventKind,
    /// Said in words.
    pub message: String,
}

/// A page of events, from `read_events`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeEventBatch {
    /// The runtime.
    pub runtime_id: RuntimeId,
    /// Where the next read goes on (unchanged when the page is empty).
    pub cursor: EventCursor,
    /// The page.
    pub events: Vec<RuntimeEvent>,
    /// Whether more events follow the page.
    pub has_more: bool,
}

/// How bad a diagnostic is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DiagnosticSeverity {
    /// For information.
    Info,
    /// Worth a look.
    Warning,
    /// Wrong.
    Error,
}

/// A diagnostic the runtime recorded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeDiagnostic {
    /// From 1, per runtime.
    pub id: u64,
    /// How bad.
    pub severity: DiagnosticSeverity,
    /// A stable code (`worker.tools_less`, ...).
    pub code: String,
    /// Said in words.
    pub message: String,
    /// The worker it is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_ref: Option<WorkerRef>,
}

/// A runtime's lifecycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuntimeStatus {
    /// Takes changes.
    Running,
    /// Reads only.
    Stopped,
}

/// Bounds on what one read returns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeLimits {
    /// Transcript entries per page at most (default 256).
    pub max_transcript_projection_items: usize,
    /// Events per page at most (default 256).
    pub max_event_batch_items: usize,
}

impl Default for RuntimeLimits {
    fn default() -> RuntimeLimits {
        RuntimeLimits {
            max_transcript_projection_items: 256,
            max_event_batch_items: 256,
        }
    }
}

/// What `open_runtime` creates a runtime with (an existing one keeps its
/// own name and limits).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeOptions {
    /// Its id; generated when not given.
    pub runtime_id: Option<RuntimeId>,
    /// A name for people.
    pub display_name: Option<String>,
    /// Its read limits.
    pub limits: RuntimeLimits,
}

/// A runtime at a glance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeSummary {
    /// Its id.
    pub runtime_id: RuntimeId,
    /// Its name.
    pub display_name: Option<String>,
    /// Its status.
    pub status: RuntimeStatus,
    /// Workers ever created.
    pub worker_count: usize,
    /// Running workers.
    pub active_worker_count: usize,
    /// Stopped workers.
    pub stopped_worker_count: usize,
    /// Cancelled workers.
    pub cancelled_worker_count: usize,
    /// Diagnostics recorded.
    pub diagnostic_count: usize,
    /// Its read limits.
    pub limits: RuntimeLimits,
    /// Its last event's id.
    pub last_event_id: u64,
}
