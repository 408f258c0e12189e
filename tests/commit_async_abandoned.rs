//! An async append dropped while it waits for its group (a timeout, an
//! aborted task) never takes the group's leadership with it: every other
//! append, async or blocking, still completes.

use std::time::Duration;

use replaydb::{Db, ExpectedVersion, Options};

#[test]
fn dropped_async_appends_never_leave_the_log_without_a_leader() {
    let tmp = tempfile::tempdir().unwrap();
    let db = Db::open(tmp.path(), Options::default()).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (done, finished) = std::sync::mpsc::channel();
    {
        let db = db.clone();
        std::thread::spawn(move || {
            rt.block_on(async {
                for round in 0..200u64 {
                    let mut tasks = Vec::new();
                    for t in 0..8u64 {
                        let db = db.clone();
                        tasks.push(tokio::spawn(async move {
                            db.append_async(
                                format!("s{t}"),
                                ExpectedVersion::Any,
                                vec![b"e".to_vec()],
                            )
                            .await
                        }));
                    }
                    // Some dropped at once, some after a moment, the rest
                    // awaited: every way of going while queued.
                    for (i, task) in tasks.into_iter().enumerate() {
                        match (round + i as u64) % 3 {
                            0 => task.abort(),
                            1 => {
                                let _ = tokio::time::timeout(Duration::from_micros(50), task).await;
                            }
                            _ => {
                                task.await.unwrap().unwrap();
                            }
                        }
                    }
                }
            });
            done.send(()).unwrap();
        });
    }
    // A hang is the failure this guards against: name it.
    finished
        .recv_timeout(Duration::from_secs(120))
        .expect("every awaited async append completed");
    // And the log still has a leader for a blocking append.
    let (tx, rx) = std::sync::mpsc::channel();
    {
        let db = db.clone();
        std::thread::spawn(move || {
            tx.send(
                db.append("after", ExpectedVersion::NoStream, &[b"x"])
                    .map(|a| a.version),
            )
            .unwrap();
        });
    }
    let v = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("a blocking append after them completed");
    assert_eq!(v.unwrap(), 1);
}
