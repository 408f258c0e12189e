//! The runtime view keeps the original `worker-runtime` crate's contract:
//! its 10 tests (`runtime.rs` of HareK02/yoi's `crates/worker-runtime`,
//! the in-memory runtime and its `fs-store`), ported one for one under
//! their names. `Runtime::new_memory()` becomes a runtime on a database
//! with the in-memory log and store; the `fs_store_*` tests run on real
//! files, and where the original damages `runtime.json` or deletes a
//! `worker.json`, these damage or delete the same rows in `store.redb`.

use replaydb::runtime::{
    CapabilityRequest, ConfigBundleRef, CreateWorkerRequest, ProfileSelector, Runtime,
    RuntimeError, RuntimeEventKind, RuntimeId, RuntimeLimits, RuntimeOptions, Runtimes,
    TranscriptQuery, TranscriptRole, WorkerInput, WorkerIntent, WorkerStatus,
};
use replaydb::{LogKind, Options};

fn memory_runtimes() -> (tempfile::TempDir, Runtimes) {
    let tmp = tempfile::tempdir().unwrap();
    let options = Options::default().log(LogKind::Memory);
    let runtimes = Runtimes::open(tmp.path(), options, vec![]).unwrap();
    (tmp, runtimes)
}

/// `Runtime::with_options`: a new runtime in a database of its own.
fn with_options(options: RuntimeOptions) -> (tempfile::TempDir, Runtime) {
    let (tmp, runtimes) = memory_runtimes();
    let runtime = runtimes.open_runtime(options).unwrap();
    (tmp, runtime)
}

/// `Runtime::new_memory`.
fn new_memory() -> (tempfile::TempDir, Runtime) {
    with_options(RuntimeOptions::default())
}

fn task_request(objective: &str) -> CreateWorkerRequest {
    CreateWorkerRequest {
        intent: WorkerIntent::Task {
            objective: objective.to_string(),
        },
        profile: ProfileSelector::Builtin("builtin:coder".to_string()),
        config_bundle: Some(ConfigBundleRef {
            id: "bundle-1".to_string(),
        }),
        requested_capabilities: vec![CapabilityRequest::named("read")],
        workspace_refs: Vec::new(),
        mount_refs: Vec::new(),
    }
}

#[test]
fn create_list_and_detail_preserve_runtime_worker_authority() {
    let (_tmp, runtime) = new_memory();
    let detail = runtime.create_worker(task_request("implement v0")).unwrap();

    assert_eq!(&detail.worker_ref.runtime_id, runtime.runtime_id());
    assert_eq!(detail.status, WorkerStatus::Running);
    assert!(detail.config_bundle.is_some());

    let list = runtime.list_workers().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].worker_ref, detail.worker_ref);
    assert_eq!(list[0].requested_capability_count, 1);

    let fetched = runtime.worker_detail(&detail.worker_ref).unwrap();
    assert_eq!(fetched.worker_id, detail.worker_id);
    assert_eq!(fetched.intent, detail.intent);
}

#[test]
fn rejects_worker_refs_from_another_runtime() {
    // Two runtimes, as the original's two in-memory ones; here they share
    // a database, which is the harder case.
    let (_tmp, runtimes) = memory_runtimes();
    let runtime_a = runtimes.open_runtime(RuntimeOptions::default()).unwrap();
    let runtime_b = runtimes.open_runtime(RuntimeOptions::default()).unwrap();
    let detail = runtime_a.create_worker(task_request("runtime a")).unwrap();

    let err = runtime_b.worker_detail(&detail.worker_ref).unwrap_err();
    assert!(matches!(err, RuntimeError::WrongRuntime { .. }), "{err:?}");
}

#[test]
fn tools_less_worker_without_config_bundle_uses_local_defaults_and_diagnostics() {
    let (_tmp, runtime) = new_memory();
    let detail = runtime
        .create_worker(CreateWorkerRequest::tools_less(
            WorkerIntent::default(),
            ProfileSelector::RuntimeDefault,
        ))
        .unwrap();

    assert!(detail.config_bundle.is_none());
    assert!(detail.requested_capabilities.is_empty());
    let diagnostics = runtime.diagnostics().unwrap();
    assert_eq!(diagnostics.len(), 2);
    assert!(
        diagnostics
            .iter()
            .any(|diagnostic| diagnostic.code == "runtime.local_default_resources")
    );
    assert!(
        diagnostics
            .iter()
            .any(|diagnostic| diagnostic.code == "worker.tools_less")
    );
}

#[test]
fn send_input_and_project_bounded_transcript() {
    let (_tmp, runtime) = with_options(RuntimeOptions {
        limits: RuntimeLimits {
            max_transcript_projection_items: 2,
            max_event_batch_items: 16,
        },
        ..RuntimeOptions::default()
    });
    let detail = runtime.create_worker(task_request("chat")).unwrap();

    let first = runtime
        .send_input(&detail.worker_ref, WorkerInput::user("hello"))
        .unwrap();
    assert_eq!(first.transcript_sequence, 1);
    runtime
        .send_input(&detail.worker_ref, WorkerInput::system("note"))
        .unwrap();
    runtime
        .send_input(&detail.worker_ref, WorkerInput::user("again"))
        .unwrap();

    let projection = runtime
        .transcript_projection(&detail.worker_ref, TranscriptQuery::new(0, 2))
        .unwrap();
    assert_eq!(projection.total_items, 3);
    assert_eq!(projection.items.len(), 2);
    assert_eq!(projection.items[0].content, "hello");
    assert_eq!(projection.items[1].role, TranscriptRole::System);
    assert_eq!(projection.next_start, Some(2));

    let err = runtime
        .transcript_projection(&detail.worker_ref, TranscriptQuery::new(0, 3))
        .unwrap_err();
    assert!(matches!(err, RuntimeError::LimitTooLarge { .. }), "{err:?}");
}

#[test]
fn stop_and_cancel_workers_update_summary() {
    let (_tmp, runtime) = new_memory();
    let stopped = runtime.create_worker(task_request("stop me")).unwrap();
    let cancelled = runtime.create_worker(task_request("cancel me")).unwrap();

    let stop_ack = runtime
        .stop_worker(&stopped.worker_ref, Some("done".to_string()))
        .unwrap();
    assert_eq!(stop_ack.status, WorkerStatus::Stopped);

    let cancel_ack = runtime
        .cancel_worker(&cancelled.worker_ref, Some("abort".to_string()))
        .unwrap();
    assert_eq!(cancel_ack.status, WorkerStatus::Cancelled);

    let summary = runtime.summary().unwrap();
    assert_eq!(summary.worker_count, 2);
    assert_eq!(summary.active_worker_count, 0);
    assert_eq!(summary.stopped_worker_count, 1);
    assert_eq!(summary.cancelled_worker_count, 1);
}

#[test]
fn stop_then_cancel_preserves_stopped_terminal_state() {
    let (_tmp, runtime) = new_memory();
    let cursor = runtime.event_cursor_from_start();
    let worker = runtime
        .create_worker(task_request("stable stopped"))
        .unwrap();

    let stop_ack = runtime
        .stop_worker(&worker.worker_ref, Some("done".to_string()))
        .unwrap();
    let cancel_ack = runtime
        .cancel_worker(&worker.worker_ref, Some("late cancel".to_string()))
        .unwrap();

    assert_eq!(stop_ack.status, WorkerStatus::Stopped);
    assert_eq!(cancel_ack.status, WorkerStatus::Stopped);
    assert_eq!(cancel_ack.event_id, stop_ack.event_id);
    assert_eq!(
        runtime.worker_detail(&worker.worker_ref).unwrap().status,
        WorkerStatus::Stopped
    );

    let summary = runtime.summary().unwrap();
    assert_eq!(summary.active_worker_count, 0);
    assert_eq!(summary.stopped_worker_count, 1);
    assert_eq!(summary.cancelled_worker_count, 0);

    let events = runtime.read_events(&cursor, 10).unwrap().events;
    assert_eq!(
        events
            .iter()
            .filter(|event| event.kind == RuntimeEventKind::WorkerStopped)
            .count(),
        1
    );
    assert_eq!(
        events
            .iter()
            .filter(|event| event.kind == RuntimeEventKind::WorkerCancelled)
            .count(),
        0
    );
}

#[test]
fn cancel_then_stop_preserves_cancelled_terminal_state() {
    let (_tmp, runtime) = new_memory();
    let cursor = runtime.event_cursor_from_start();
    let worker = runtime
        .create_worker(task_request("stable cancelled"))
        .unwrap();

    let cancel_ack = runtime
        .cancel_worker(&worker.worker_ref, Some("abort".to_string()))
        .unwrap();
    let stop_ack = runtime
        .stop_worker(&worker.worker_ref, Some("late stop".to_string()))
        .unwrap();

    assert_eq!(cancel_ack.status, WorkerStatus::Cancelled);
    assert_eq!(stop_ack.status, WorkerStatus::Cancelled);
    assert_eq!(stop_ack.event_id, cancel_ack.event_id);
    assert_eq!(
        runtime.worker_detail(&worker.worker_ref).unwrap().status,
        WorkerStatus::Cancelled
    );

    let summary = runtime.summary().unwrap();
    assert_eq!(summary.active_worker_count, 0);
    assert_eq!(summary.stopped_worker_count, 0);
    assert_eq!(summary.cancelled_worker_count, 1);

    let events = runtime.read_events(&cursor, 10).unwrap().events;
    assert_eq!(
        events
            .iter()
            .filter(|event| event.kind == RuntimeEventKind::WorkerCancelled)
            .count(),
        1
    );
    assert_eq!(
        events
            .iter()
            .filter(|event| event.kind == RuntimeEventKind::WorkerStopped)
            .count(),
        0
    );
}

/// The original's subscription is a poll-only placeholder; this one is
/// live (see `runtime_subscribe.rs`), and reads the same pages.
#[test]
fn event_cursor_and_poll_only_subscription_are_bounded_placeholders() {
    let (_tmp, runtime) = new_memory();
    let cursor = runtime.event_cursor_from_start();
    let mut subscription = runtime.subscribe_events(cursor.clone()).unwrap();

    let worker = runtime.create_worker(task_request("events")).unwrap();
    runtime
        .send_input(&worker.worker_ref, WorkerInput::user("eventful"))
        .unwrap();

    let batch = runtime.read_events(&cursor, 2).unwrap();
    assert_eq!(batch.events.len(), 2);
    assert!(batch.has_more);
    assert_eq!(batch.events[0].kind, RuntimeEventKind::RuntimeStarted);
    assert_eq!(batch.events[1].kind, RuntimeEventKind::WorkerCreated);

    let next = runtime.read_events(&batch.cursor, 2).unwrap();
    assert_eq!(next.events.len(), 1);
    assert_eq!(next.events[0].kind, RuntimeEventKind::WorkerInputAccepted);
    assert!(!next.has_more);

    assert_eq!(subscription.try_next(2).unwrap(), Some(batch));
    assert_eq!(subscription.try_next(2).unwrap(), Some(next));
    assert_eq!(subscription.try_next(2).unwrap(), None);
}

fn fs_runtimes(root: &std::path::Path) -> Result<Runtimes, RuntimeError> {
    Runtimes::open(root, Options::default(), vec![])
}

#[test]
fn fs_store_restores_workers_events_and_transcripts() {
    let root = tempfile::tempdir().unwrap();
    let runtime_id = RuntimeId::new("runtime-fs-authority").unwrap();
    let runtime = fs_runtimes(root.path())
        .unwrap()
        .open_runtime(RuntimeOptions {
            runtime_id: Some(runtime_id.clone()),
            display_name: Some("filesystem runtime".to_string()),
            limits: RuntimeLimits {
                max_transcript_projection_items: 2,
                max_event_batch_items: 2,
            },
        })
        .unwrap();

    let worker = runtime.create_worker(task_request("persist me")).unwrap();
    runtime
        .send_input(&worker.worker_ref, WorkerInput::user("first"))
        .unwrap();
    runtime
        .send_input(&worker.worker_ref, WorkerInput::system("second"))
        .unwrap();
    runtime
        .stop_worker(&worker.worker_ref, Some("finished".to_string()))
        .unwrap();
    drop(runtime);

    let restored = fs_runtimes(root.path())
        .unwrap()
        .open_runtime(RuntimeOptions {
            runtime_id: Some(runtime_id.clone()),
            display_name: None,
            limits: RuntimeLimits::default(),
        })
        .unwrap();
    let summary = restored.summary().unwrap();
    assert_eq!(
        summary.display_name.as_deref(),
        Some("filesystem runtime"),
        "a reopened runtime keeps its name"
    );
    assert_eq!(summary.limits.max_event_batch_items, 2, "and its limits");
    let restored_worker = restored.worker_detail(&worker.worker_ref).unwrap();
    assert_eq!(restored_worker.status, WorkerStatus::Stopped);
    assert_eq!(restored_worker.transcript_len, 2);

    let projection = restored
        .transcript_projection(&worker.worker_ref, TranscriptQuery::new(0, 1))
        .unwrap();
    assert_eq!(projection.total_items, 2);
    assert_eq!(projection.items[0].content, "first");
    assert_eq!(projection.next_start, Some(1));

    let cursor = restored.event_cursor_from_start();
    let batch = restored.read_events(&cursor, 2).unwrap();
    assert_eq!(batch.events.len(), 2);
    assert!(batch.has_more);
    assert_eq!(batch.events[0].kind, RuntimeEventKind::RuntimeStarted);
    assert_eq!(batch.events[1].kind, RuntimeEventKind::WorkerCreated);

    // The original reads its store directly here; the store is the view's
    // tables, read by a second handle on the same database.
    let direct = Runtimes::new(restored.db().expect("embedded").clone())
        .runtime(&runtime_id)
        .unwrap();
    assert_eq!(direct.read_events(&cursor, 2).unwrap().events, batch.events);
    let direct_transcript = direct
        .transcript_projection(&worker.worker_ref, TranscriptQuery::new(1, 1))
        .unwrap();
    assert_eq!(direct_transcript.items[0].content, "second");
}

/// Rewrites `key` of the runtime view's `table` in the store of the
/// (closed) database at `dir`: `Some(value)` stores it as it is (without
/// the CRC replaydb puts in front), `None` deletes the row.
fn tamper(dir: &std::path::Path, table: &str, key: &[u8], value: Option<&[u8]>) {
    let db = redb::Database::open(dir.join("store.redb")).unwrap();
    let tx = db.begin_write().unwrap();
    {
        let name = format!("view:runtime:{table}");
        let def: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new(&name);
        let mut t = tx.open_table(def).unwrap();
        let had = match value {
            Some(v) => t.insert(key, v).unwrap().is_some(),
            None => t.remove(key).unwrap().is_some(),
        };
        assert!(had, "the row was there");
    }
    tx.commit().unwrap();
}

#[test]
fn fs_store_reports_corrupt_and_missing_data() {
    let corrupt_root = tempfile::tempdir().unwrap();
    let corrupt_runtime_id = RuntimeId::new("runtime-corrupt").unwrap();
    let options = || RuntimeOptions {
        runtime_id: Some(corrupt_runtime_id.clone()),
        ..RuntimeOptions::default()
    };
    drop(
        fs_runtimes(corrupt_root.path())
            .unwrap()
            .open_runtime(options())
            .unwrap(),
    );
    tamper(
        corrupt_root.path(),
        "runtimes",
        b"runtime-corrupt",
        Some(b"not json"),
    );
    let err = fs_runtimes(corrupt_root.path())
        .unwrap()
        .open_runtime(options())
        .unwrap_err();
    match err {
        RuntimeError::Db(replaydb::Error::Store { path, reason, .. }) => {
            assert_eq!(path, corrupt_root.path().join("store.redb"));
            assert!(
                reason.contains("runtimes") && reason.contains("runtime-corrupt"),
                "names the table and the key: {reason}"
            );
        }
        other => panic!("expected a damaged store value, got {other:?}"),
    }
    // A value whose CRC checks out but which is not a runtime's row: the
    // same error, from the row's decoding.
    let mut value = Vec::new();
    let mut crc = crc32fast::Hasher::new();
    crc.update(b"runtimes");
    crc.update(b"runtime-corrupt");
    crc.update(b"not json");
    value.extend_from_slice(&crc.finalize().to_le_bytes());
    value.extend_from_slice(b"not json");
    tamper(
        corrupt_root.path(),
        "runtimes",
        b"runtime-corrupt",
        Some(&value),
    );
    match fs_runtimes(corrupt_root.path())
        .unwrap()
        .open_runtime(options())
        .unwrap_err()
    {
        RuntimeError::Db(replaydb::Error::Store { reason, .. }) => {
            assert!(reason.contains("undecodable"), "{reason}");
        }
        other => panic!("expected an undecodable store value, got {other:?}"),
    }

    let missing_root = tempfile::tempdir().unwrap();
    let missing_runtime_id = RuntimeId::new("runtime-missing").unwrap();
    let options = || RuntimeOptions {
        runtime_id: Some(missing_runtime_id.clone()),
        ..RuntimeOptions::default()
    };
    let missing_runtime = fs_runtimes(missing_root.path())
        .unwrap()
        .open_runtime(options())
        .unwrap();
    let worker = missing_runtime
        .create_worker(task_request("missing worker snapshot"))
        .unwrap();
    drop(missing_runtime);
    let mut key = (b"runtime-missing".len() as u32).to_be_bytes().to_vec();
    key.extend_from_slice(b"runtime-missing");
    key.extend_from_slice(worker.worker_id.as_str().as_bytes());
    tamper(missing_root.path(), "workers", &key, None);
    let runtimes = fs_runtimes(missing_root.path()).unwrap();
    let err = runtimes.open_runtime(options()).unwrap_err();
    assert!(
        matches!(err, RuntimeError::StoreMissing { .. }),
        "expected StoreMissing, got {err:?}"
    );
    let runtime = runtimes.runtime(&missing_runtime_id).unwrap();
    let err = runtime.worker_detail(&worker.worker_ref).unwrap_err();
    assert!(
        matches!(err, RuntimeError::StoreMissing { .. }),
        "a worker the counts say exists is damage, not WorkerNotFound: {err:?}"
    );
    let err = runtime.list_workers().unwrap_err();
    assert!(
        matches!(err, RuntimeError::StoreMissing { .. }),
        "a list short of the count is damage: {err:?}"
    );
}
