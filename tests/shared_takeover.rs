//! Many processes open one database with `SharedDb`; the owner is
//! SIGKILLed while clients append and watch: a client takes over
//! (locks, recovers, serves), the others reconnect to it, no acknowledged
//! event is lost or doubled, and every watch goes on with no gap and no
//! repeat.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};

use replaydb::{Database, Db, Error, ExpectedVersion, Options, SharedDb};

const ROLE: &str = "REPLAYDB_TEST_ROLE";
const DIR: &str = "REPLAYDB_TEST_DIR";
const ID: &str = "REPLAYDB_TEST_ID";
const CLIENTS: usize = 3;
const ACKS_BEFORE_KILL: u64 = 100;
const ACKS_AFTER_KILL: u64 = 100;

fn open_shared(dir: &Path) -> SharedDb {
    SharedDb::open(dir, Options::default(), Vec::new).unwrap()
}

/// The owner: opens first, says so, and serves until it is killed. The
/// children are this test's own binary, re-run naming the test with
/// [`ROLE`] set; such a run takes its role's path instead of the parent's.
fn child_owner() {
    let dir = std::env::var(DIR).expect("run by the parent test");
    let db = open_shared(Path::new(&dir));
    assert!(db.is_owner());
    println!("owner");
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
}

/// A client: appends to its own stream with an expected version, printing
/// each acknowledged version, and watches the whole log for gaps, until
/// its stdin closes.
fn child_client() {
    let dir = std::env::var(DIR).expect("run by the parent test");
    let id: usize = std::env::var(ID).unwrap().parse().unwrap();
    let db = Arc::new(open_shared(Path::new(&dir)));
    assert!(!db.is_owner());
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let _ = std::io::stdin().read_to_end(&mut Vec::new());
            stop.store(true, Ordering::Release);
        });
    }
    let (seen_tx, seen_rx) = mpsc::channel::<u64>();
    {
        let db = db.clone();
        std::thread::spawn(move || {
            for (expect, e) in (1u64..).zip(db.subscribe(1).unwrap()) {
                let e = e.unwrap();
                assert_eq!(e.lsn, expect, "the watch has no gap and no repeat");
                if seen_tx.send(e.lsn).is_err() {
                    return;
                }
            }
        });
    }
    let stream = format!("client-{id}");
    let mut version = 0u64;
    let mut said_serving = false;
    let mut out = std::io::stdout();
    while !stop.load(Ordering::Acquire) {
        let event = format!("{id}:{}", version + 1);
        match db.append(&stream, ExpectedVersion::Exact(version), &[event]) {
            Ok(done) => {
                version = done.version;
                if !said_serving && db.serves() {
                    said_serving = true;
                    writeln!(out, "serving").unwrap();
                }
                writeln!(out, "acked {version}").unwrap();
                out.flush().unwrap();
            }
            // In flight when the owner died: it may have landed. The
            // stream's version says; the expected version makes the
            // retry exactly-once.
            Err(Error::Disconnected { .. }) => loop {
                match db.stream_version(&stream) {
                    Ok(v) => {
                        if v > version {
                            writeln!(out, "acked {v}").unwrap();
                        }
                        version = v;
                        break;
                    }
                    Err(Error::Disconnected { .. }) => continue,
                    Err(e) => panic!("{e}"),
                }
            },
            Err(e) => panic!("append: {e}"),
        }
    }
    let last = db.last_lsn().unwrap();
    while seen_rx.recv().unwrap() < last {}
    writeln!(out, "watched {last}").unwrap();
    out.flush().unwrap();
}

fn spawn(role: &str, dir: &Path, id: usize) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_client_takes_over_when_the_owner_is_killed",
            "--nocapture",
            "--quiet",
        ])
        .env(ROLE, role)
        .env(DIR, dir)
        .env(ID, id.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Forwards a child's lines to `tx` as `(id, line)`.
fn forward(child: &mut Child, id: usize, tx: mpsc::Sender<(usize, String)>) {
    let out = BufReader::new(child.stdout.take().unwrap());
    std::thread::spawn(move || {
        for line in out.lines() {
            let Ok(line) = line else { return };
            if tx.send((id, line)).is_err() {
                return;
            }
        }
    });
}

/// What the clients said: each one's last acknowledged version, and the
/// LSN its watch reached when it stopped.
struct Seen {
    rx: mpsc::Receiver<(usize, String)>,
    acked: [u64; CLIENTS],
    watched: [Option<u64>; CLIENTS],
    /// Clients that said they took over and serve.
    serving: Vec<usize>,
}

impl Seen {
    /// Takes the clients' lines until `done` holds.
    fn until(&mut self, done: impl Fn(&Seen) -> bool) {
        while !done(self) {
            let (id, line) = self.rx.recv().expect("a client went silent");
            if let Some(v) = line.strip_prefix("acked ") {
                let v: u64 = v.parse().unwrap();
                assert!(v > self.acked[id], "acknowledged versions only grow");
                self.acked[id] = v;
            } else if let Some(l) = line.strip_prefix("watched ") {
                self.watched[id] = Some(l.parse().unwrap());
            } else if line == "serving" {
                self.serving.push(id);
            }
        }
    }
}

#[test]
fn a_client_takes_over_when_the_owner_is_killed() {
    match std::env::var(ROLE).as_deref() {
        Ok("child_owner") => return child_owner(),
        Ok("child_client") => return child_client(),
        _ => {}
    }
    let tmp = tempfile::tempdir().unwrap();
    let (tx, rx) = mpsc::channel();
    let mut owner = spawn("child_owner", tmp.path(), usize::MAX);
    forward(&mut owner, usize::MAX, tx.clone());
    // The test harness's own lines come first.
    while rx.recv().expect("the owner went silent").1 != "owner" {}

    let mut clients: Vec<Child> = (0..CLIENTS)
        .map(|id| {
            let mut c = spawn("child_client", tmp.path(), id);
            forward(&mut c, id, tx.clone());
            c
        })
        .collect();
    drop(tx);
    let mut seen = Seen {
        rx,
        acked: [0; CLIENTS],
        watched: [None; CLIENTS],
        serving: Vec::new(),
    };
    seen.until(|s| s.acked.iter().all(|&n| n >= ACKS_BEFORE_KILL));
    // SAFETY: kill has no memory preconditions; the pid is our child's.
    assert_eq!(unsafe { libc::kill(owner.id() as i32, libc::SIGKILL) }, 0);
    owner.wait().unwrap();
    let at_kill = seen.acked;
    assert!(
        seen.serving.is_empty(),
        "no client serves while the owner lives"
    );
    seen.until(|s| (0..CLIENTS).all(|i| s.acked[i] >= at_kill[i] + ACKS_AFTER_KILL));
    assert_eq!(
        seen.serving.len(),
        1,
        "exactly one client took over: {:?}",
        seen.serving
    );
    // Stopped one at a time; one that serves hands on to the others.
    for c in &mut clients {
        drop(c.stdin.take());
    }
    seen.until(|s| s.watched.iter().all(Option::is_some));
    for mut c in clients {
        assert!(c.wait().unwrap().success(), "a client failed");
    }

    let db = Db::open(tmp.path(), Options::default()).unwrap();
    for (id, &acks) in seen.acked.iter().enumerate() {
        let stream = format!("client-{id}");
        let version = db.stream_version(&stream).unwrap();
        assert!(version >= acks, "every acknowledged event is there");
        let events = db.read_stream(&stream, 1, usize::MAX).unwrap();
        assert_eq!(events.len() as u64, version);
        for (i, e) in events.iter().enumerate() {
            assert_eq!(
                e.data,
                format!("{id}:{}", i + 1).into_bytes(),
                "once, in order"
            );
        }
    }
    let last = db.last_lsn();
    for w in seen.watched {
        assert!(w.unwrap() <= last);
    }
    assert_eq!(
        db.read(1, usize::MAX).unwrap().len() as u64,
        last,
        "gapless"
    );
}
