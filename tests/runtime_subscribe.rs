//! A runtime subscription yields every event (or transcript entry) from
//! its cursor on, in order, with no gap and no duplicate: live while it
//! waits, and again from a saved cursor after the database was closed.

use std::sync::mpsc;
use std::time::Duration;

use replaydb::Options;
use replaydb::runtime::{
    CreateWorkerRequest, RuntimeEventKind, RuntimeId, RuntimeOptions, Runtimes, WorkerInput,
};

fn open(dir: &std::path::Path) -> Runtimes {
    Runtimes::open(dir, Options::default(), vec![]).unwrap()
}

/// A waiter that never returns fails the test instead of hanging it.
const WAIT_MAX: Duration = Duration::from_secs(60);

/// Runs `f` on a thread; its result, or a failure if it does not finish
/// within [`WAIT_MAX`] (an event lost would leave it waiting).
fn on_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> impl FnOnce() -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    move || {
        rx.recv_timeout(WAIT_MAX)
            .expect("the subscriber finished in time")
    }
}

fn runtime_options() -> RuntimeOptions {
    RuntimeOptions {
        runtime_id: Some(RuntimeId::new("rt").unwrap()),
        ..RuntimeOptions::default()
    }
}

#[test]
fn a_blocked_subscriber_gets_every_event_written_while_it_waits() {
    let tmp = tempfile::tempdir().unwrap();
    let runtimes = open(tmp.path());
    let runtime = runtimes.open_runtime(runtime_options()).unwrap();
    let mut sub = runtime
        .subscribe_events(runtime.event_cursor_now().unwrap())
        .unwrap();
    assert!(sub.try_next(10).unwrap().is_none(), "nothing new yet");
    let reader = on_thread(move || {
        let mut ids = Vec::new();
        while ids.len() < 51 {
            let batch = sub.next_blocking(7).unwrap().expect("running");
            assert!(!batch.events.is_empty() && batch.events.len() <= 7);
            ids.extend(batch.events.iter().map(|e| e.id));
        }
        (ids, sub.cursor().clone())
    });
    let w = runtime
        .create_worker(CreateWorkerRequest::default())
        .unwrap();
    for i in 0..50 {
        runtime
            .send_input(&w.worker_ref, WorkerInput::user(format!("{i}")))
            .unwrap();
    }
    let (ids, cursor) = reader();
    assert_eq!(ids, (2..=52).collect::<Vec<_>>());
    assert_eq!(cursor.next_event_id, 53);
}

#[test]
fn a_subscription_resumes_from_a_saved_cursor_after_a_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let cursor = {
        let runtimes = open(tmp.path());
        let runtime = runtimes.open_runtime(runtime_options()).unwrap();
        let mut sub = runtime
            .subscribe_events(runtime.event_cursor_from_start())
            .unwrap();
        runtime
            .create_worker(CreateWorkerRequest::default())
            .unwrap();
        let first = sub.next_blocking(1).unwrap().unwrap();
        assert_eq!(first.events[0].kind, RuntimeEventKind::RuntimeStarted);
        sub.cursor().clone()
    };
    let runtimes = open(tmp.path());
    let runtime = runtimes.open_runtime(runtime_options()).unwrap();
    runtime.stop_runtime().unwrap();
    let mut sub = runtime.subscribe_events(cursor).unwrap();
    let kinds: Vec<_> = sub
        .next_blocking(10)
        .unwrap()
        .unwrap()
        .events
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        kinds,
        vec![
            RuntimeEventKind::WorkerCreated,
            RuntimeEventKind::RuntimeStopped
        ]
    );
}

#[test]
fn a_transcript_subscription_follows_one_worker_and_ends_when_it_stops() {
    let tmp = tempfile::tempdir().unwrap();
    let runtimes = open(tmp.path());
    let runtime = runtimes.open_runtime(runtime_options()).unwrap();
    let a = runtime
        .create_worker(CreateWorkerRequest::default())
        .unwrap();
    let b = runtime
        .create_worker(CreateWorkerRequest::default())
        .unwrap();
    runtime
        .send_input(&a.worker_ref, WorkerInput::user("a0"))
        .unwrap();
    let mut sub = runtime.subscribe_transcript(&a.worker_ref, 0).unwrap();
    let reader = on_thread(move || {
        let mut seen = Vec::new();
        while let Some(page) = sub.next_blocking(3).unwrap() {
            seen.extend(page.items.into_iter().map(|e| (e.sequence, e.content)));
        }
        seen
    });
    for i in 1..10 {
        runtime
            .send_input(&b.worker_ref, WorkerInput::user(format!("b{i}")))
            .unwrap();
        runtime
            .send_input(&a.worker_ref, WorkerInput::user(format!("a{i}")))
            .unwrap();
    }
    runtime.stop_worker(&a.worker_ref, None).unwrap();
    let seen = reader();
    let want: Vec<(u64, String)> = (0..10).map(|i| (i + 1, format!("a{i}"))).collect();
    assert_eq!(seen, want, "only a's entries, each once, then the end");
}

#[test]
fn an_async_subscriber_waits_without_blocking_its_runtime() {
    let tmp = tempfile::tempdir().unwrap();
    let runtimes = open(tmp.path());
    let runtime = runtimes.open_runtime(runtime_options()).unwrap();
    let writer = runtime.clone();
    let got = on_thread(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut sub = runtime
                .subscribe_events(runtime.event_cursor_now().unwrap())
                .unwrap();
            // The writer is a task on the same single thread, after the
            // subscriber: a subscriber that blocked the thread while it
            // waits would never let it run, and the test would time out.
            let write = tokio::spawn(async move {
                writer
                    .create_worker(CreateWorkerRequest::default())
                    .unwrap();
                writer.stop_runtime().unwrap();
            });
            let mut kinds = Vec::new();
            while let Some(batch) = sub.next_async(10).await.unwrap() {
                kinds.extend(batch.events.into_iter().map(|e| e.kind));
            }
            write.await.unwrap();
            kinds
        })
    })();
    assert_eq!(
        got,
        vec![
            RuntimeEventKind::WorkerCreated,
            RuntimeEventKind::RuntimeStopped
        ]
    );
}
