//! A command is decided against every commit before it, even while the
//! previous command's effects are still being applied behind its log
//! write and the store transaction is held open for the next one; what a
//! command acknowledged is in the next read and survives a reopen.

#[allow(dead_code)]
#[path = "../examples/custom_view.rs"]
mod custom_view;

use custom_view::StreamStats;
use replaydb::{Db, Error, ExpectedVersion, Options};

fn open(dir: &std::path::Path) -> Db {
    Db::open_with_views(
        dir,
        Options::default()
            .checkpoint_every_records(0)
            .checkpoint_every_bytes(0),
        vec![Box::new(StreamStats::default())],
    )
    .unwrap()
}

/// Appends to `counter` the number of events the view counts on it plus
/// one, decided in the writer; returns the stream's version after it.
fn bump(db: &Db, counter: &str) -> Result<u64, Error> {
    let name = counter.to_string();
    let done = db.execute(counter, ExpectedVersion::Any, move |views| {
        let stats = views.get::<StreamStats>().expect("registered");
        let next = stats.streams.get(&name).map_or(0, |(n, _)| *n) + 1;
        Ok(vec![next.to_le_bytes().to_vec()])
    })?;
    Ok(done.expect("a bump appends").version)
}

#[test]
fn back_to_back_commands_each_see_the_one_before() {
    let tmp = tempfile::tempdir().unwrap();
    let db = open(tmp.path());
    for i in 1..=300u64 {
        // Each decision reads the count the previous command made: were
        // it decided before that one's effects were applied, two events
        // would carry the same number.
        assert_eq!(bump(&db, "c").unwrap(), i);
    }
    let events = db.read_stream("c", 1, usize::MAX).unwrap();
    let numbers: Vec<u64> = events
        .iter()
        .map(|e| u64::from_le_bytes(e.data[..8].try_into().unwrap()))
        .collect();
    assert_eq!(numbers, (1..=300).collect::<Vec<_>>());
}

#[test]
fn commands_plain_appends_and_readers_together_lose_nothing_and_read_their_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let db = open(tmp.path());
    let per_thread = 150u64;
    let commanders: Vec<_> = (0..4)
        .map(|_| {
            let db = db.clone();
            std::thread::spawn(move || {
                let mut last = 0;
                for _ in 0..per_thread {
                    let v = bump(&db, "shared").unwrap();
                    assert!(v > last, "versions only grow");
                    last = v;
                    // What was acknowledged is in the next read.
                    let seen = db
                        .view(|s: &StreamStats| s.streams.get("shared").map_or(0, |(n, _)| *n))
                        .unwrap()
                        .unwrap()
                        .value;
                    assert!(seen >= v, "read {seen} after acknowledging {v}");
                }
            })
        })
        .collect();
    let appenders: Vec<_> = (0..2)
        .map(|t| {
            let db = db.clone();
            std::thread::spawn(move || {
                for i in 0..per_thread {
                    db.append(&format!("plain-{t}"), ExpectedVersion::Exact(i), &[b"x"])
                        .unwrap();
                }
            })
        })
        .collect();
    for h in commanders.into_iter().chain(appenders) {
        h.join().unwrap();
    }
    let check = |db: &Db| {
        let stats = db
            .view(|s: &StreamStats| s.streams.clone())
            .unwrap()
            .unwrap()
            .value;
        assert_eq!(stats["shared"].0, 4 * per_thread);
        let last = u64::from_le_bytes(stats["shared"].1[..8].try_into().unwrap());
        assert_eq!(
            last,
            4 * per_thread,
            "no two commands decided the same number"
        );
        assert_eq!(stats["plain-0"].0, per_thread);
        assert_eq!(stats["plain-1"].0, per_thread);
    };
    check(&db);
    drop(db);
    check(&open(tmp.path()));
}

/// A view whose apply fails on the event `poison`.
#[derive(Default)]
struct Fragile;

impl replaydb::View for Fragile {
    fn name(&self) -> &str {
        "fragile"
    }
    fn schema_version(&self) -> u32 {
        1
    }
    fn apply(
        &mut self,
        event: &replaydb::EventRef<'_>,
        _tables: &mut replaydb::ViewTables<'_>,
    ) -> Result<(), Error> {
        if event.data == b"poison" {
            return Err(Error::InvalidArgument {
                op: "fragile view",
                reason: "poisoned on purpose".into(),
            });
        }
        Ok(())
    }
    fn reset(&mut self) {}
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

#[test]
fn a_failed_apply_fails_the_commands_and_checkpoints_queued_behind_it_instead_of_hanging() {
    // Whatever the interleaving, each waiter gets an answer: before, a
    // command or checkpoint queued behind the round that failed waited
    // forever (the run hangs instead of failing).
    for round in 0..60 {
        let tmp = tempfile::tempdir().unwrap();
        let db =
            Db::open_with_views(tmp.path(), Options::default(), vec![Box::new(Fragile)]).unwrap();
        db.append("s", ExpectedVersion::Any, &[b"fine"]).unwrap();
        let waiters: Vec<_> = (0..3)
            .map(|t| {
                let db = db.clone();
                std::thread::spawn(move || match t {
                    0 => db
                        .execute("cmd", ExpectedVersion::Any, |_| Ok(vec![b"x".to_vec()]))
                        .map(drop),
                    1 => db.checkpoint().map(drop),
                    _ => db.view(|_: &Fragile| ()).map(drop),
                })
            })
            .collect();
        // Acknowledged (then the apply fails behind it), or, decided in
        // one group with the command, refused: either way the handle ends
        // poisoned.
        let _ = db.append("s", ExpectedVersion::Any, &[b"poison"]);
        for w in waiters {
            // An answer, Ok (it came first) or an error: never a hang.
            let _ = w.join().unwrap();
        }
        let after = db.execute("cmd", ExpectedVersion::Any, |_| Ok(vec![b"y".to_vec()]));
        assert!(
            matches!(after, Err(Error::Poisoned { .. })),
            "round {round}: {after:?}"
        );
    }
}
