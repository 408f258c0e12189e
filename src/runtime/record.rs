//! The events of the `$runtime` stream: one per operation, decided in the
//! writer and folded by [`RuntimeView`](super::RuntimeView).

use serde::{Deserialize, Serialize};

use super::model::{CreateWorkerRequest, RuntimeId, RuntimeLimits, TranscriptRole, WorkerId};

/// The stream holding runtime events. `$` marks it internal: callers
/// cannot append to it.
pub const RUNTIME_STREAM: &str = "$runtime";

/// One runtime operation, as it is logged.
///
/// The runtime event it records has id `event_id`, which the decision
/// took as the runtime's last event id + 1: the view checks it follows on,
/// so that a record can never be folded twice or out of order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeRecord {
    /// The runtime.
    pub runtime_id: RuntimeId,
    /// The runtime event's id.
    pub event_id: u64,
    /// Milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
    /// What changed.
    pub change: RuntimeChange,
}

/// What one runtime operation changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuntimeChange {
    /// A runtime was created (always its event 1).
    Started {
        /// Its name.
        display_name: Option<String>,
        /// Its read limits.
        limits: RuntimeLimits,
    },
    /// The runtime was stopped: every running worker becomes Stopped.
    Stopped,
    /// A worker was created, with the runtime's next generated id.
    WorkerCreated {
        /// Its id.
        worker_id: WorkerId,
        /// What was asked.
        request: CreateWorkerRequest,
    },
    /// A worker took an input: its transcript entry `sequence`.
    InputAccepted {
        /// The worker.
        worker_id: WorkerId,
        /// The entry's sequence (its transcript length + 1).
        sequence: u64,
        /// Whose.
        role: TranscriptRole,
        /// What.
        content: String,
    },
    /// A running worker was stopped.
    WorkerStopped {
        /// The worker.
        worker_id: WorkerId,
        /// Why.
        message: String,
    },
    /// A running worker was cancelled.
    WorkerCancelled {
        /// The worker.
        worker_id: WorkerId,
        /// Why.
        message: String,
    },
}

impl RuntimeRecord {
    /// The record as event data (MessagePack with field names, so that
    /// optional fields may be left out).
    pub fn encode(&self) -> Result<Vec<u8>, rmp_serde::encode::Error> {
        rmp_serde::to_vec_named(self)
    }

    /// A record from event data.
    pub fn decode(data: &[u8]) -> Result<RuntimeRecord, rmp_serde::decode::Error> {
        rmp_serde::from_slice(data)
    }
}
