//! The runtime operations as requests through a server: one variant per
//! operation of [`Runtimes`] and [`Runtime`], with its arguments; the
//! server runs it on its own handle and sends back its `Result`.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::model::{
    CreateWorkerRequest, EventCursor, RuntimeId, RuntimeOptions, TranscriptQuery, WorkerInput,
    WorkerRef,
};
use super::{Runtime, RuntimeError, Runtimes};
use crate::client::Client;
use crate::remote::ViewCall;
use crate::server::wire;

/// A runtime operation, named, with its arguments.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum RuntimeCall {
    OpenRuntime {
        options: RuntimeOptions,
    },
    Runtime {
        id: RuntimeId,
    },
    List,
    Summary {
        id: RuntimeId,
    },
    Status {
        id: RuntimeId,
    },
    StopRuntime {
        id: RuntimeId,
    },
    CreateWorker {
        id: RuntimeId,
        request: CreateWorkerRequest,
    },
    ListWorkers {
        id: RuntimeId,
    },
    WorkerDetail {
        id: RuntimeId,
        worker_ref: WorkerRef,
    },
    SendInput {
        id: RuntimeId,
        worker_ref: WorkerRef,
        input: WorkerInput,
    },
    StopWorker {
        id: RuntimeId,
        worker_ref: WorkerRef,
        reason: Option<String>,
    },
    CancelWorker {
        id: RuntimeId,
        worker_ref: WorkerRef,
        reason: Option<String>,
    },
    /// A transcript page, with the LSN it reflects and whether the
    /// worker is active (a subscription's poll).
    TranscriptAt {
        id: RuntimeId,
        worker_ref: WorkerRef,
        query: TranscriptQuery,
    },
    EventCursorNow {
        id: RuntimeId,
    },
    /// A page of events, with the LSN it reflects and whether the
    /// runtime runs (a subscription's poll).
    EventsAt {
        id: RuntimeId,
        cursor: EventCursor,
        limit: u64,
    },
    Diagnostics {
        id: RuntimeId,
    },
}

/// Sends `call`; its answer or refusal. `retry`: it changes nothing.
pub(crate) fn call<T: DeserializeOwned>(
    client: &Client,
    call: RuntimeCall,
    retry: bool,
) -> Result<T, RuntimeError> {
    client.call_view(&ViewCall::Runtime(call), retry)
}

impl RuntimeCall {
    /// Runs it on the server's runtimes: the reply's body.
    pub(crate) fn serve(self, runtimes: &Runtimes) -> Vec<u8> {
        let on = |id: RuntimeId| Runtime {
            backend: runtimes.backend.clone(),
            id,
        };
        let n = |limit: u64| usize::try_from(limit).unwrap_or(usize::MAX);
        match self {
            RuntimeCall::OpenRuntime { options } => {
                answer(runtimes.open_runtime(options).map(|r| r.id))
            }
            RuntimeCall::Runtime { id } => answer(runtimes.runtime(&id).map(drop)),
            RuntimeCall::List => answer(runtimes.list()),
            RuntimeCall::Summary { id } => answer(on(id).summary()),
            RuntimeCall::Status { id } => answer(on(id).status()),
            RuntimeCall::StopRuntime { id } => answer(on(id).stop_runtime()),
            RuntimeCall::CreateWorker { id, request } => answer(on(id).create_worker(request)),
            RuntimeCall::ListWorkers { id } => answer(on(id).list_workers()),
            RuntimeCall::WorkerDetail { id, worker_ref } => {
                answer(on(id).worker_detail(&worker_ref))
            }
            RuntimeCall::SendInput {
                id,
                worker_ref,
                input,
            } => answer(on(id).send_input(&worker_ref, input)),
            RuntimeCall::StopWorker {
                id,
                worker_ref,
                reason,
            } => answer(on(id).stop_worker(&worker_ref, reason)),
            RuntimeCall::CancelWorker {
                id,
                worker_ref,
                reason,
            } => answer(on(id).cancel_worker(&worker_ref, reason)),
            RuntimeCall::TranscriptAt {
                id,
                worker_ref,
                query,
            } => answer(on(id).transcript_at(&worker_ref, query)),
            RuntimeCall::EventCursorNow { id } => answer(on(id).event_cursor_now()),
            RuntimeCall::EventsAt { id, cursor, limit } => {
                answer(on(id).events_at(&cursor, n(limit)))
            }
            RuntimeCall::Diagnostics { id } => answer(on(id).diagnostics()),
        }
    }
}

impl Runtimes {
    pub(crate) fn remote_client(&self) -> Option<&Client> {
        self.backend.client()
    }
}

impl Runtime {
    pub(crate) fn remote_client(&self) -> Option<&Client> {
        self.backend.client()
    }
}

fn answer<T: Serialize>(result: Result<T, RuntimeError>) -> Vec<u8> {
    wire::encode(&result)
}
