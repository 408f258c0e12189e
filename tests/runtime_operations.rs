//! Every runtime operation and every refusal, in the order the original
//! checks them, on real files: what is acknowledged survives a reopen and
//! any number of checkpoints, and racing operations on one worker have
//! exactly one winner.

use std::sync::{Arc, Barrier};

use replaydb::Options;
use replaydb::runtime::{
    CapabilityRequest, CreateWorkerRequest, EventCursor, ID_BYTES_MAX, ProfileSelector, Runtime,
    RuntimeError, RuntimeEventKind, RuntimeId, RuntimeLimits, RuntimeOptions, RuntimeStatus,
    Runtimes, TranscriptQuery, WorkerId, WorkerInput, WorkerIntent, WorkerRef, WorkerStatus,
};

fn open(dir: &std::path::Path) -> Runtimes {
    Runtimes::open(dir, Options::default(), vec![]).unwrap()
}

fn named(runtimes: &Runtimes, id: &str) -> Runtime {
    runtimes
        .open_runtime(RuntimeOptions {
            runtime_id: Some(RuntimeId::new(id).unwrap()),
            ..RuntimeOptions::default()
        })
        .unwrap()
}

fn bundled() -> CreateWorkerRequest {
    CreateWorkerRequest {
        config_bundle: Some(replaydb::runtime::ConfigBundleRef { id: "b".into() }),
        requested_capabilities: vec![CapabilityRequest::named("read")],
        ..CreateWorkerRequest::default()
    }
}

#[test]
fn a_new_runtime_records_runtime_started_and_generated_ids_have_their_shape() {
    let tmp = tempfile::tempdir().unwrap();
    let runtimes = open(tmp.path());
    let runtime = runtimes.open_runtime(RuntimeOptions::default()).unwrap();
    let id = runtime.runtime_id().as_str();
    let hex = id.strip_prefix("runtime-").expect("runtime- prefix");
    assert_eq!(hex.len(), 16);
    assert!(hex.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
    let events = runtime
        .read_events(&runtime.event_cursor_from_start(), 10)
        .unwrap();
    assert_eq!(events.events.len(), 1);
    assert_eq!(events.events[0].id, 1);
    assert_eq!(events.events[0].kind, RuntimeEventKind::RuntimeStarted);
    assert_eq!(events.events[0].message, "runtime started");
    assert!(events.events[0].worker_ref.is_none());

    let a = runtime.create_worker(bundled()).unwrap();
    let b = runtime.create_worker(bundled()).unwrap();
    assert_eq!(a.worker_id.as_str(), "worker-00000001");
    assert_eq!(b.worker_id.as_str(), "worker-00000002");
    let events = runtime
        .read_events(&runtime.event_cursor_from_start(), 10)
        .unwrap()
        .events;
    assert_eq!(events[1].message, "worker worker-00000001 created");
    assert_eq!(events[1].worker_ref.as_ref(), Some(&a.worker_ref));

    let summary = runtime.summary().unwrap();
    assert_eq!(summary.status, RuntimeStatus::Running);
    assert_eq!(summary.worker_count, 2);
    assert_eq!(summary.active_worker_count, 2);
    assert_eq!(summary.diagnostic_count, 0, "bundled workers with tools");
    assert_eq!(summary.last_event_id, 3);
    assert_eq!(summary.limits, RuntimeLimits::default());
}

#[test]
fn opening_an_existing_runtime_records_nothing_and_keeps_its_name_and_limits() {
    let tmp = tempfile::tempdir().unwrap();
    let runtimes = open(tmp.path());
    let id = RuntimeId::new("rt").unwrap();
    runtimes
        .open_runtime(RuntimeOptions {
            runtime_id: Some(id.clone()),
            display_name: Some("first".into()),
            limits: RuntimeLimits {
                max_transcript_projection_items: 3,
                max_event_batch_items: 4,
            },
        })
        .unwrap();
    let again = runtimes
        .open_runtime(RuntimeOptions {
            runtime_id: Some(id.clone()),
            display_name: Some("second".into()),
            limits: RuntimeLimits::default(),
        })
        .unwrap();
    let s = again.summary().unwrap();
    assert_eq!(s.display_name.as_deref(), Some("first"));
    assert_eq!(s.limits.max_event_batch_items, 4);
    assert_eq!(s.last_event_id, 1, "no second runtime started");
    assert!(matches!(
        runtimes.runtime(&RuntimeId::new("nope").unwrap()),
        Err(RuntimeError::UnknownRuntime(_))
    ));
    let zero = RuntimeLimits {
        max_transcript_projection_items: 0,
        max_event_batch_items: 1,
    };
    let err = runtimes
        .open_runtime(RuntimeOptions {
            limits: zero.clone(),
            ..RuntimeOptions::default()
        })
        .unwrap_err();
    assert!(matches!(err, RuntimeError::InvalidRequest(_)), "{err:?}");
    let existing = runtimes
        .open_runtime(RuntimeOptions {
            runtime_id: Some(id),
            display_name: None,
            limits: zero,
        })
        .expect("an existing runtime keeps its limits; the ones given do not matter");
    assert_eq!(existing.summary().unwrap().limits.max_event_batch_items, 4);
}

#[test]
fn ids_are_stored_unchanged_whatever_bytes_they_hold_and_never_become_paths() {
    let tmp = tempfile::tempdir().unwrap();
    let runtimes = open(tmp.path());
    assert!(RuntimeId::new("  \t").is_none(), "blank after trimming");
    assert!(WorkerId::new("").is_none());
    let odd = ["../../etc/passwd", "a/b", "nul\0byte", " padded ", "ünï"];
    for id in odd {
        let runtime = named(&runtimes, id);
        assert_eq!(runtime.runtime_id().as_str(), id, "stored unchanged");
        let w = runtime.create_worker(bundled()).unwrap();
        runtime
            .send_input(&w.worker_ref, WorkerInput::user(id))
            .unwrap();
    }
    let listed: Vec<String> = runtimes
        .list()
        .unwrap()
        .into_iter()
        .map(|s| s.runtime_id.as_str().to_string())
        .collect();
    let mut want: Vec<String> = odd.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(listed, want, "every runtime, in id order, none mixed up");
    // Nothing but the database's own files: no id reached the file system.
    let mut names: Vec<String> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for n in &names {
        assert!(
            ["LOCK", "SETTINGS", "VIEWS", "store.redb", "wal"].contains(&n.as_str()),
            "unexpected {n:?} in {names:?}"
        );
    }
    let long = RuntimeId::new("x".repeat(ID_BYTES_MAX + 1)).unwrap();
    let err = runtimes
        .open_runtime(RuntimeOptions {
            runtime_id: Some(long.clone()),
            ..RuntimeOptions::default()
        })
        .unwrap_err();
    assert!(matches!(err, RuntimeError::InvalidRequest(_)), "{err:?}");
    assert!(matches!(
        runtimes.runtime(&long),
        Err(RuntimeError::InvalidRequest(_))
    ));
    // A blank id cannot come in through serde either.
    let blank: Result<RuntimeOptions, _> = serde_json::from_str(
        r#"{"runtime_id": "  ", "limits": {"max_transcript_projection_items": 1, "max_event_batch_items": 1}}"#,
    );
    assert!(blank.is_err(), "a blank id is refused when deserialised");
    assert!(serde_json::from_str::<WorkerId>("\"\"").is_err());
    assert_eq!(
        serde_json::to_string(&RuntimeId::new("a b").unwrap()).unwrap(),
        "\"a b\"",
        "ids are plain strings in JSON"
    );
}

#[test]
fn a_runtime_id_that_prefixes_another_never_sees_its_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let runtimes = open(tmp.path());
    let short = named(&runtimes, "rt");
    let long = named(&runtimes, "rt-1");
    let w = long.create_worker(bundled()).unwrap();
    long.send_input(&w.worker_ref, WorkerInput::user("x"))
        .unwrap();
    assert!(short.list_workers().unwrap().is_empty());
    assert_eq!(
        short
            .read_events(&short.event_cursor_from_start(), 10)
            .unwrap()
            .events
            .len(),
        1
    );
    let borrowed = WorkerRef::new(short.runtime_id().clone(), w.worker_id.clone());
    assert!(matches!(
        short.worker_detail(&borrowed),
        Err(RuntimeError::WorkerNotFound { .. })
    ));
}

#[test]
fn create_worker_refuses_blank_fields_and_a_stopped_runtime_before_looking_at_the_request() {
    let tmp = tempfile::tempdir().unwrap();
    let runtime = named(&open(tmp.path()), "rt");
    let blank_task = CreateWorkerRequest {
        intent: WorkerIntent::Task {
            objective: "  ".into(),
        },
        ..bundled()
    };
    assert!(matches!(
        runtime.create_worker(blank_task.clone()),
        Err(RuntimeError::InvalidRequest(_))
    ));
    let blank_capability = CreateWorkerRequest {
        requested_capabilities: vec![CapabilityRequest::named(" ")],
        ..bundled()
    };
    assert!(matches!(
        runtime.create_worker(blank_capability),
        Err(RuntimeError::InvalidRequest(_))
    ));
    assert_eq!(
        runtime.summary().unwrap().last_event_id,
        1,
        "refusals record nothing"
    );
    runtime.stop_runtime().unwrap();
    assert!(matches!(
        runtime.create_worker(blank_task),
        Err(RuntimeError::RuntimeStopped { .. })
    ));
}

#[test]
fn diagnostics_follow_what_a_worker_lacks() {
    let tmp = tempfile::tempdir().unwrap();
    let runtime = named(&open(tmp.path()), "rt");
    runtime.create_worker(bundled()).unwrap();
    assert!(runtime.diagnostics().unwrap().is_empty());
    let no_bundle = runtime
        .create_worker(CreateWorkerRequest {
            config_bundle: None,
            ..bundled()
        })
        .unwrap();
    let no_tools = runtime
        .create_worker(CreateWorkerRequest {
            requested_capabilities: vec![],
            ..bundled()
        })
        .unwrap();
    let d = runtime.diagnostics().unwrap();
    assert_eq!(d.len(), 2);
    assert_eq!(
        (d[0].id, d[0].code.as_str()),
        (1, "runtime.local_default_resources")
    );
    assert_eq!(d[0].worker_ref.as_ref(), Some(&no_bundle.worker_ref));
    assert_eq!((d[1].id, d[1].code.as_str()), (2, "worker.tools_less"));
    assert_eq!(d[1].worker_ref.as_ref(), Some(&no_tools.worker_ref));
    assert_eq!(d[1].severity, replaydb::runtime::DiagnosticSeverity::Info);
    assert_eq!(runtime.summary().unwrap().diagnostic_count, 2);
}

#[test]
fn send_input_checks_in_order_and_appends_the_next_sequence() {
    let tmp = tempfile::tempdir().unwrap();
    let runtimes = open(tmp.path());
    let runtime = named(&runtimes, "rt");
    let other = named(&runtimes, "other");
    let w = runtime.create_worker(bundled()).unwrap();
    let foreign = WorkerRef::new(other.runtime_id().clone(), w.worker_id.clone());
    let missing = WorkerRef::new(
        runtime.runtime_id().clone(),
        WorkerId::new("worker-ffffffff").unwrap(),
    );

    // Blank content is refused before the reference is looked at.
    assert!(matches!(
        runtime.send_input(&foreign, WorkerInput::user(" ")),
        Err(RuntimeError::InvalidRequest(_))
    ));
    assert!(matches!(
        runtime.send_input(&foreign, WorkerInput::user("x")),
        Err(RuntimeError::WrongRuntime { .. })
    ));
    assert!(matches!(
        runtime.send_input(&missing, WorkerInput::user("x")),
        Err(RuntimeError::WorkerNotFound { .. })
    ));
    let first = runtime
        .send_input(&w.worker_ref, WorkerInput::user("one"))
        .unwrap();
    let second = runtime
        .send_input(&w.worker_ref, WorkerInput::system("two"))
        .unwrap();
    assert_eq!(
        (first.transcript_sequence, second.transcript_sequence),
        (1, 2)
    );
    assert_eq!(second.event_id, first.event_id + 1);
    assert_eq!(first.status, WorkerStatus::Running);
    let page = runtime
        .transcript_projection(&w.worker_ref, TranscriptQuery::new(0, 10))
        .unwrap();
    assert_eq!(page.items[1].event_id, second.event_id);
    assert_eq!(page.items[1].sequence, 2);
    let e = runtime
        .read_events(
            &EventCursor {
                runtime_id: runtime.runtime_id().clone(),
                next_event_id: first.event_id,
            },
            1,
        )
        .unwrap();
    assert_eq!(e.events[0].kind, RuntimeEventKind::WorkerInputAccepted);
    assert_eq!(e.events[0].message, "worker input accepted");
    assert_eq!(
        runtime.worker_detail(&w.worker_ref).unwrap().last_event_id,
        second.event_id
    );

    runtime.stop_worker(&w.worker_ref, None).unwrap();
    assert!(matches!(
        runtime.send_input(&w.worker_ref, WorkerInput::user("late")),
        Err(RuntimeError::InvalidRequest(_))
    ));
    runtime.stop_runtime().unwrap();
    assert!(matches!(
        runtime.send_input(&foreign, WorkerInput::user(" ")),
        Err(RuntimeError::RuntimeStopped { .. })
    ));
}

#[test]
fn stop_and_cancel_use_the_default_message_or_the_reason_and_check_references() {
    let tmp = tempfile::tempdir().unwrap();
    let runtimes = open(tmp.path());
    let runtime = named(&runtimes, "rt");
    let other = named(&runtimes, "other");
    let a = runtime.create_worker(bundled()).unwrap();
    let b = runtime.create_worker(bundled()).unwrap();
    let sa = runtime.stop_worker(&a.worker_ref, None).unwrap();
    let cb = runtime.cancel_worker(&b.worker_ref, None).unwrap();
    let events = runtime
        .read_events(&runtime.event_cursor_from_start(), 10)
        .unwrap()
        .events;
    let last_two: Vec<(&RuntimeEventKind, &str)> = events[3..]
        .iter()
        .map(|e| (&e.kind, e.message.as_str()))
        .collect();
    assert_eq!(
        last_two,
        vec![
            (&RuntimeEventKind::WorkerStopped, "worker stopped"),
            (&RuntimeEventKind::WorkerCancelled, "worker cancelled")
        ]
    );
    assert_eq!((sa.event_id, cb.event_id), (4, 5));
    let foreign = WorkerRef::new(other.runtime_id().clone(), a.worker_id.clone());
    assert!(matches!(
        runtime.stop_worker(&foreign, None),
        Err(RuntimeError::WrongRuntime { .. })
    ));
    let c = runtime.create_worker(bundled()).unwrap();
    runtime
        .cancel_worker(&c.worker_ref, Some("user hit ^C".into()))
        .unwrap();
    let last = runtime
        .read_events(
            &EventCursor {
                runtime_id: runtime.runtime_id().clone(),
                next_event_id: 7,
            },
            1,
        )
        .unwrap();
    assert_eq!(last.events[0].message, "user hit ^C");
    runtime.stop_runtime().unwrap();
    assert!(matches!(
        runtime.stop_worker(&foreign, None),
        Err(RuntimeError::RuntimeStopped { .. })
    ));
}

#[test]
fn stop_runtime_stops_running_workers_once_and_reads_keep_working() {
    let tmp = tempfile::tempdir().unwrap();
    let runtime = named(&open(tmp.path()), "rt");
    let running = runtime.create_worker(bundled()).unwrap();
    let cancelled = runtime.create_worker(bundled()).unwrap();
    runtime
        .send_input(&running.worker_ref, WorkerInput::user("hi"))
        .unwrap();
    runtime.cancel_worker(&cancelled.worker_ref, None).unwrap();
    let before = runtime.worker_detail(&running.worker_ref).unwrap();

    let stopped_at = runtime.stop_runtime().unwrap();
    assert_eq!(stopped_at, 6);
    assert_eq!(runtime.stop_runtime().unwrap(), 6, "twice adds nothing");
    assert_eq!(runtime.status().unwrap(), RuntimeStatus::Stopped);
    let s = runtime.summary().unwrap();
    assert_eq!(
        (
            s.active_worker_count,
            s.stopped_worker_count,
            s.cancelled_worker_count
        ),
        (0, 1, 1)
    );
    assert_eq!(s.last_event_id, 6);
    let after = runtime.worker_detail(&running.worker_ref).unwrap();
    assert_eq!(after.status, WorkerStatus::Stopped);
    assert_eq!(
        after.last_event_id, before.last_event_id,
        "no worker event for a runtime stop"
    );
    let events = runtime
        .read_events(&runtime.event_cursor_from_start(), 10)
        .unwrap()
        .events;
    assert_eq!(events.len(), 6);
    assert_eq!(events[5].kind, RuntimeEventKind::RuntimeStopped);
    assert_eq!(events[5].message, "runtime rt stopped");
    assert_eq!(
        runtime
            .transcript_projection(&running.worker_ref, TranscriptQuery::new(0, 5))
            .unwrap()
            .items
            .len(),
        1
    );
    assert_eq!(runtime.list_workers().unwrap().len(), 2);
}

#[test]
fn transcript_pages_follow_the_original_arithmetic() {
    let tmp = tempfile::tempdir().unwrap();
    let runtimes = open(tmp.path());
    let runtime = runtimes
        .open_runtime(RuntimeOptions {
            limits: RuntimeLimits {
                max_transcript_projection_items: 2,
                max_event_batch_items: 16,
            },
            ..RuntimeOptions::default()
        })
        .unwrap();
    let w = runtime.create_worker(bundled()).unwrap();
    for c in ["a", "b", "c"] {
        runtime
            .send_input(&w.worker_ref, WorkerInput::user(c))
            .unwrap();
    }
    let page = |start, limit| {
        runtime
            .transcript_projection(&w.worker_ref, TranscriptQuery::new(start, limit))
            .unwrap()
    };
    let p = page(2, 2);
    assert_eq!(
        (p.items.len(), p.items[0].content.as_str(), p.next_start),
        (1, "c", None)
    );
    let p = page(1, 0);
    assert_eq!((p.items.len(), p.next_start), (0, Some(1)), "a limit of 0");
    let p = page(3, 2);
    assert_eq!((p.items.len(), p.next_start, p.total_items), (0, None, 3));
    let p = page(usize::MAX, 2);
    assert_eq!((p.items.len(), p.next_start), (0, None));
    // LimitTooLarge comes before the reference checks.
    let foreign = WorkerRef::new(RuntimeId::new("elsewhere").unwrap(), w.worker_id.clone());
    assert!(matches!(
        runtime.transcript_projection(&foreign, TranscriptQuery::new(0, 3)),
        Err(RuntimeError::LimitTooLarge {
            requested: 3,
            max: 2
        })
    ));
    assert!(matches!(
        runtime.transcript_projection(&foreign, TranscriptQuery::new(0, 2)),
        Err(RuntimeError::WrongRuntime { .. })
    ));
}

#[test]
fn read_events_checks_the_cursor_then_the_limit_and_cursors_move_only_forward() {
    let tmp = tempfile::tempdir().unwrap();
    let runtime = runtimes_with_batch(tmp.path(), 3);
    let w = runtime.create_worker(bundled()).unwrap();
    for i in 0..4 {
        runtime
            .send_input(&w.worker_ref, WorkerInput::user(format!("{i}")))
            .unwrap();
    }
    let foreign = EventCursor {
        runtime_id: RuntimeId::new("elsewhere").unwrap(),
        next_event_id: 1,
    };
    assert!(matches!(
        runtime.read_events(&foreign, 100),
        Err(RuntimeError::WrongRuntimeCursor { .. })
    ));
    assert!(matches!(
        runtime.read_events(&runtime.event_cursor_from_start(), 4),
        Err(RuntimeError::LimitTooLarge {
            requested: 4,
            max: 3
        })
    ));
    let mut cursor = runtime.event_cursor_from_start();
    let mut ids = Vec::new();
    loop {
        let b = runtime.read_events(&cursor, 3).unwrap();
        ids.extend(b.events.iter().map(|e| e.id));
        assert_eq!(b.has_more, b.cursor.next_event_id <= 6);
        cursor = b.cursor;
        if !b.has_more {
            break;
        }
    }
    assert_eq!(ids, (1..=6).collect::<Vec<_>>());
    let now = runtime.event_cursor_now().unwrap();
    assert_eq!(now.next_event_id, 7);
    let empty = runtime.read_events(&now, 3).unwrap();
    assert!(empty.events.is_empty() && !empty.has_more);
    assert_eq!(empty.cursor, now, "unchanged when nothing was returned");
    let zero = runtime
        .read_events(&runtime.event_cursor_from_start(), 0)
        .unwrap();
    assert!(zero.events.is_empty() && zero.has_more);
    assert_eq!(zero.cursor.next_event_id, 1);
}

fn runtimes_with_batch(dir: &std::path::Path, max: usize) -> Runtime {
    open(dir)
        .open_runtime(RuntimeOptions {
            limits: RuntimeLimits {
                max_transcript_projection_items: 256,
                max_event_batch_items: max,
            },
            ..RuntimeOptions::default()
        })
        .unwrap()
}

#[test]
fn racing_stop_and_cancel_of_one_worker_have_exactly_one_winner() {
    let tmp = tempfile::tempdir().unwrap();
    let runtime = named(&open(tmp.path()), "rt");
    for _ in 0..20 {
        let w = runtime.create_worker(bundled()).unwrap();
        let barrier = Arc::new(Barrier::new(4));
        let acks: Vec<_> = (0..4)
            .map(|i| {
                let (runtime, w, barrier) =
                    (runtime.clone(), w.worker_ref.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    if i % 2 == 0 {
                        runtime.stop_worker(&w, None).unwrap()
                    } else {
                        runtime.cancel_worker(&w, None).unwrap()
                    }
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect();
        let final_status = runtime.worker_detail(&w.worker_ref).unwrap();
        assert!(
            acks.iter().all(
                |a| a.status == final_status.status && a.event_id == final_status.last_event_id
            ),
            "every caller sees the one winner: {acks:?}"
        );
    }
    let s = runtime.summary().unwrap();
    assert_eq!(s.stopped_worker_count + s.cancelled_worker_count, 20);
    assert_eq!(s.last_event_id, 1 + 20 + 20, "one event per worker ended");
}

#[test]
fn concurrent_inputs_get_distinct_gapless_sequences() {
    let tmp = tempfile::tempdir().unwrap();
    let runtime = named(&open(tmp.path()), "rt");
    let w = runtime.create_worker(bundled()).unwrap();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (runtime, w) = (runtime.clone(), w.worker_ref.clone());
            std::thread::spawn(move || {
                (0..25)
                    .map(|i| {
                        runtime
                            .send_input(&w, WorkerInput::user(format!("{t}-{i}")))
                            .unwrap()
                            .transcript_sequence
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut seqs: Vec<u64> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=100).collect::<Vec<_>>());
    let mut start = 0;
    let mut seen = 0;
    while let Some(p) = Some(
        runtime
            .transcript_projection(&w.worker_ref, TranscriptQuery::new(start, 7))
            .unwrap(),
    ) {
        for (i, e) in p.items.iter().enumerate() {
            assert_eq!(e.sequence as usize, start + i + 1);
        }
        seen += p.items.len();
        match p.next_start {
            Some(n) => start = n,
            None => break,
        }
    }
    assert_eq!(seen, 100);
}

#[test]
fn everything_survives_reopens_and_checkpoints_with_the_log_truncated() {
    let tmp = tempfile::tempdir().unwrap();
    let options = Options::default()
        .checkpoint_every_records(50)
        .segment_bytes_max(Some(4096));
    let runtimes = Runtimes::open(tmp.path(), options.clone(), vec![]).unwrap();
    let runtime = named(&runtimes, "rt");
    let workers: Vec<_> = (0..3)
        .map(|_| runtime.create_worker(bundled()).unwrap())
        .collect();
    for i in 0..300 {
        let w = &workers[i % 3];
        runtime
            .send_input(&w.worker_ref, WorkerInput::user(format!("m{i}")))
            .unwrap();
        if i % 97 == 0 {
            runtimes.db().expect("embedded").checkpoint().unwrap();
        }
    }
    runtime.cancel_worker(&workers[2].worker_ref, None).unwrap();
    let summary = runtime.summary().unwrap();
    drop((runtime, runtimes));

    let runtimes = Runtimes::open(tmp.path(), options, vec![]).unwrap();
    assert!(
        runtimes
            .db()
            .expect("embedded")
            .stats()
            .unwrap()
            .log_first_lsn
            > 1,
        "the log was truncated behind a checkpoint"
    );
    let runtime = runtimes.runtime(&RuntimeId::new("rt").unwrap()).unwrap();
    assert_eq!(runtime.summary().unwrap(), summary);
    let mut cursor = runtime.event_cursor_from_start();
    let mut events = Vec::new();
    loop {
        let b = runtime.read_events(&cursor, 256).unwrap();
        events.extend(b.events);
        cursor = b.cursor;
        if !b.has_more {
            break;
        }
    }
    assert_eq!(events.len() as u64, summary.last_event_id);
    for (k, w) in workers.iter().enumerate() {
        let p = runtime
            .transcript_projection(&w.worker_ref, TranscriptQuery::new(0, 256))
            .unwrap();
        assert_eq!(p.total_items, 100);
        for (j, e) in p.items.iter().enumerate() {
            assert_eq!(e.content, format!("m{}", j * 3 + k));
        }
    }
}

#[test]
fn the_runtime_view_is_opt_in_and_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let db = replaydb::Db::open(tmp.path(), Options::default()).unwrap();
    let err = Runtimes::new(db)
        .open_runtime(RuntimeOptions::default())
        .unwrap_err();
    assert!(err.to_string().contains("not registered"), "{err}");
}

#[test]
fn profile_and_references_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let runtime = named(&open(tmp.path()), "rt");
    let request = CreateWorkerRequest {
        intent: WorkerIntent::Role {
            role: "reviewer".into(),
            purpose: Some("second pair of eyes".into()),
        },
        profile: ProfileSelector::Named("careful".into()),
        config_bundle: None,
        requested_capabilities: vec![CapabilityRequest {
            name: "write".into(),
            reason: Some("fixes".into()),
        }],
        workspace_refs: vec![replaydb::runtime::WorkspaceRef {
            name: "repo".into(),
            reference: "git:main".into(),
        }],
        mount_refs: vec![replaydb::runtime::MountRef {
            name: "data".into(),
            reference: "/mnt/data".into(),
        }],
    };
    let d = runtime.create_worker(request.clone()).unwrap();
    let back = runtime.worker_detail(&d.worker_ref).unwrap();
    assert_eq!(back, d);
    assert_eq!(back.intent, request.intent);
    assert_eq!(back.mount_refs, request.mount_refs);
    assert_eq!(back.workspace_refs, request.workspace_refs);
    assert_eq!(back.requested_capabilities, request.requested_capabilities);
    let json = serde_json::to_value(&back).unwrap();
    assert_eq!(json["intent"]["kind"], "role");
    assert_eq!(
        json["profile"],
        serde_json::json!({"kind": "named", "value": "careful"})
    );
}

#[test]
fn a_forged_record_that_does_not_follow_on_is_counted_and_changes_nothing() {
    use replaydb::runtime::{RUNTIME_STREAM, RuntimeChange, RuntimeRecord, RuntimeView};
    let tmp = tempfile::tempdir().unwrap();
    let runtimes = open(tmp.path());
    let runtime = named(&runtimes, "rt");
    runtime.stop_runtime().unwrap();
    let before = runtime.summary().unwrap();
    // `$runtime` takes only commands, but a command may carry anything:
    // a worker for a stopped runtime, a wrong event id, bytes.
    let forged = [
        RuntimeRecord {
            runtime_id: RuntimeId::new("rt").unwrap(),
            event_id: before.last_event_id + 1,
            at_unix_ms: 0,
            change: RuntimeChange::WorkerCreated {
                worker_id: WorkerId::generated(1),
                request: CreateWorkerRequest::default(),
            },
        }
        .encode()
        .unwrap(),
        RuntimeRecord {
            runtime_id: RuntimeId::new("other").unwrap(),
            event_id: 7,
            at_unix_ms: 0,
            change: RuntimeChange::Stopped,
        }
        .encode()
        .unwrap(),
        b"not a record".to_vec(),
    ];
    for data in forged {
        runtimes
            .db()
            .expect("embedded")
            .execute(RUNTIME_STREAM, replaydb::ExpectedVersion::Any, move |_| {
                Ok(vec![data.clone()])
            })
            .unwrap();
    }
    assert_eq!(runtime.summary().unwrap(), before);
    assert!(runtime.list_workers().unwrap().is_empty());
    assert_eq!(runtimes.list().unwrap().len(), 1);
    let rejected = runtimes
        .db()
        .expect("embedded")
        .view(|v: &RuntimeView| v.rejected_events)
        .unwrap()
        .unwrap()
        .value;
    assert_eq!(rejected, 3);
}
