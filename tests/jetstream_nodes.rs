//! Two replaydb nodes, separate processes with stores of their own, share
//! one JetStream stream: their appends and commands, made concurrently,
//! end in one global order with gapless LSNs; every acknowledged event is
//! in it once, where its acknowledgement said; a stream each node writes
//! with exact expected versions keeps them; and of two conflicting
//! registrations on one scope exactly one wins. A node SIGKILLed mid-load
//! and started again resumes from its store and the stream. The server
//! leading the stream SIGKILLed mid-load and started again loses nothing
//! acknowledged, and appends go on.
//!
//! This test binary is also the node: run with `node ...` arguments (as
//! the tests start it), it opens the database and takes orders on stdin.
//! It has no libtest harness for that reason (`harness = false`).

mod common;

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use replaydb::registry::{Registry, RegistryError, ScopeRule};
use replaydb::{Db, ExpectedVersion, LogKind, Options};

/// What was acknowledged: payload → (LSN, stream, version).
type Acked = BTreeMap<String, (u64, String, u64)>;

/// A scenario run on the cluster the binary starts.
type Scenario = fn(&mut common::nats::Cluster);

/// Writer threads in each node.
const WRITERS: usize = 4;
/// Appends each writer makes.
const APPENDS_PER_WRITER: usize = 150;
/// Contested registrations.
const ROUNDS: usize = 8;

fn options(urls: &str, stream: &str) -> Options {
    // Checkpoints often: a node started again resumes from its store.
    Options::default()
        .checkpoint_every_records(64)
        .log(LogKind::JetStream {
            servers: urls.split(',').map(str::to_string).collect(),
            stream: stream.to_string(),
            replicas: 3,
        })
}

/// Opens the registry on the shared stream, retrying while the cluster
/// elects the stream's leader.
fn open(dir: &Path, urls: &str, stream: &str) -> Registry {
    common::nats::open_retrying(|| Registry::open(dir, options(urls, stream), vec![]))
}

/// The node: `node DIR URLS STREAM ID GEN` (GEN counts its starts).
/// Prints `ready CHECKPOINT_LSN REPLAYED` (what it recovered from its
/// store, and the events it replayed from the stream); on `go`, its
/// writers start (each line `ack LSN STREAM VERSION PAYLOAD`); on
/// `round K`, it registers `contested-K-nID` on a scope the other node's
/// registration overlaps (`round K won|lost`); on `quit`, it waits for
/// its writers and prints `done`.
fn node(args: &[String]) {
    let [dir, urls, stream, id, generation] = args else {
        panic!("node DIR URLS STREAM ID GEN, not {args:?}");
    };
    let reg = open(Path::new(dir), urls, stream);
    let db = reg.db().expect("embedded").clone();
    let out = std::sync::Arc::new(std::sync::Mutex::new(std::io::stdout()));
    let say = |line: String| {
        let mut o = out.lock().unwrap();
        writeln!(o, "{line}").unwrap();
        o.flush().unwrap();
    };
    let report = db.recovery_report().clone();
    say(format!(
        "ready {} {}",
        report.checkpoint_lsn, report.replayed_events
    ));
    let mut writers = Vec::new();
    for line in std::io::stdin().lock().lines() {
        let line = line.unwrap();
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["go"] => {
                for w in 0..WRITERS {
                    let (db, out) = (db.clone(), out.clone());
                    let (id, generation) = (id.clone(), generation.clone());
                    writers.push(std::thread::spawn(move || {
                        writer(&db, &id, &generation, w, &out)
                    }));
                }
            }
            ["round", k] => {
                // Node 0 claims the scope, node 1 a scope under it: the
                // two overlap, so at most one may hold its claim.
                let scope = if id == "0" {
                    format!("/shared/{k}")
                } else {
                    format!("/shared/{k}/sub")
                };
                let outcome = reg.register_pod(
                    &format!("contested-{k}-n{id}"),
                    std::process::id(),
                    "/run/contested.sock",
                    vec![ScopeRule::write(scope).unwrap()],
                    vec![],
                    uuid::Uuid::new_v4(),
                );
                match outcome {
                    Ok(g) => {
                        g.keep();
                        say(format!("round {k} won"));
                    }
                    Err(RegistryError::WriteConflict { .. }) => say(format!("round {k} lost")),
                    Err(e) => say(format!("round {k} error {e}")),
                }
            }
            ["quit"] => break,
            other => panic!("node {id}: unknown order {other:?}"),
        }
    }
    for w in writers {
        w.join().unwrap();
    }
    say("done".into());
}

/// One writer: odd appends to `orders`, which every writer of both nodes
/// shares; even ones to its own stream, each expecting the version the
/// one before it left (from where the node's store has it at the start:
/// a node started again goes on from there).
fn writer(db: &Db, id: &str, generation: &str, w: usize, out: &std::sync::Mutex<std::io::Stdout>) {
    let own = format!("n{id}-w{w}");
    let mut own_version = db.stream_version(&own).unwrap();
    for k in 0..APPENDS_PER_WRITER {
        let payload = format!("n{id}g{generation}-w{w}-{k}");
        let (stream, expected) = if k % 2 == 0 {
            (own.as_str(), ExpectedVersion::Exact(own_version))
        } else {
            ("orders", ExpectedVersion::Any)
        };
        let line = match db.append(stream, expected, &[payload.as_bytes()]) {
            Ok(a) => {
                if stream == own {
                    own_version += 1;
                    assert_eq!(a.version, own_version, "{own}: {a:?}");
                }
                format!("ack {} {stream} {} {payload}", a.first_lsn, a.version)
            }
            Err(e) => format!("err {stream} {payload} {e}"),
        };
        let mut o = out.lock().unwrap();
        writeln!(o, "{line}").unwrap();
        o.flush().unwrap();
    }
}

/// A node process, its lines on a channel.
struct Node {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
}

impl Node {
    fn start(dir: &Path, urls: &str, stream: &str, id: usize, generation: usize) -> Node {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .arg("node")
            .arg(dir)
            .arg(urls)
            .arg(stream)
            .arg(id.to_string())
            .arg(generation.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Node {
            child,
            stdin,
            lines,
        }
    }

    fn send(&mut self, order: &str) {
        writeln!(self.stdin, "{order}").unwrap();
        self.stdin.flush().unwrap();
    }

    /// Lines until one starting with `prefix` (returned); the others go
    /// to `seen`.
    fn until(&self, prefix: &str, seen: &mut Vec<String>) -> String {
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(120))
                .unwrap_or_else(|e| panic!("waiting for {prefix:?}: {e}; seen {seen:?}"));
            if line.starts_with(prefix) {
                return line;
            }
            seen.push(line);
        }
    }
}

/// What the nodes acknowledged: payload → (LSN, stream, version).
fn acks(lines: &[String]) -> Acked {
    let mut acked = BTreeMap::new();
    for line in lines {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["ack", lsn, stream, version, payload] => {
                let previous = acked.insert(
                    payload.to_string(),
                    (
                        lsn.parse().unwrap(),
                        stream.to_string(),
                        version.parse().unwrap(),
                    ),
                );
                assert!(previous.is_none(), "{payload} acknowledged twice");
            }
            _ => panic!("a node said {line:?}"),
        }
    }
    acked
}

/// Every event of the stream, read by a node that opens it afresh, checked
/// against what was acknowledged: gapless LSNs, each acknowledged event
/// once where it was acknowledged, versions gapless per stream. Events
/// never acknowledged may be there only as `unacked` allows (an append a
/// SIGKILL cut off after the cluster stored it), `unacked_max` at most.
fn check_log(
    urls: &str,
    stream: &str,
    acked: &Acked,
    unacked: &dyn Fn(&str) -> bool,
    unacked_max: usize,
) -> (Registry, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let reg = open(dir.path(), urls, stream);
    let db = reg.db().unwrap();
    let events = db.read(1, usize::MAX).unwrap();
    let mut versions: BTreeMap<&str, u64> = BTreeMap::new();
    let mut payloads = HashSet::new();
    let mut stray = 0usize;
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.lsn, i as u64 + 1, "LSNs are gapless");
        let v = versions.entry(&e.stream).or_default();
        *v += 1;
        assert_eq!(e.version, *v, "{} versions are gapless", e.stream);
        if e.stream.starts_with('$') {
            continue;
        }
        let payload = String::from_utf8(e.data.clone()).unwrap();
        assert!(
            payloads.insert(payload.clone()),
            "{payload} is in the log twice"
        );
        match acked.get(&payload) {
            Some((lsn, s, version)) => assert_eq!(
                (*lsn, s.as_str(), *version),
                (e.lsn, e.stream.as_str(), e.version)
            ),
            None => {
                assert!(
                    unacked(&payload),
                    "{payload} in the log was never acknowledged"
                );
                stray += 1;
            }
        }
    }
    assert!(stray <= unacked_max, "{stray} events never acknowledged");
    assert_eq!(
        payloads.len() - stray,
        acked.len(),
        "every acknowledged event is in the log"
    );
    (reg, dir)
}

fn two_nodes_append_and_register_concurrently(cluster: &common::nats::Cluster) {
    let urls = cluster.urls.join(",");
    let stream = "nodes";
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let mut nodes: Vec<Node> = (0..2)
        .map(|i| Node::start(dirs[i].path(), &urls, stream, i, 0))
        .collect();
    let mut seen = vec![Vec::new(), Vec::new()];
    for (n, s) in nodes.iter().zip(&mut seen) {
        n.until("ready", s);
    }
    for n in &mut nodes {
        n.send("go");
    }
    let mut winners = Vec::new();
    for k in 0..ROUNDS {
        for n in &mut nodes {
            n.send(&format!("round {k}"));
        }
        let said: Vec<String> = nodes
            .iter()
            .zip(&mut seen)
            .map(|(n, s)| n.until(&format!("round {k} "), s))
            .collect();
        let won: Vec<usize> = (0..2).filter(|i| said[*i].ends_with(" won")).collect();
        if won.len() != 1 {
            dump(&cluster.urls, stream);
        }
        assert_eq!(won.len(), 1, "round {k}: exactly one wins: {said:?}");
        assert!(
            said.iter()
                .all(|s| s.ends_with(" won") || s.ends_with(" lost")),
            "{said:?}"
        );
        winners.push(won[0]);
    }
    for n in &mut nodes {
        n.send("quit");
    }
    for (n, s) in nodes.iter_mut().zip(&mut seen) {
        n.until("done", s);
        assert!(n.child.wait().unwrap().success());
    }
    let acked = acks(&seen.concat());
    assert_eq!(acked.len(), 2 * WRITERS * APPENDS_PER_WRITER);
    let (reg, _dir) = check_log(&urls, stream, &acked, &|_| false, 0);
    let table = reg.allocations().unwrap();
    for (k, winner) in winners.iter().enumerate() {
        let held: Vec<&str> = table
            .iter()
            .map(|a| a.pod_name.as_str())
            .filter(|p| p.starts_with(&format!("contested-{k}-")))
            .collect();
        assert_eq!(held, [format!("contested-{k}-n{winner}")], "round {k}");
    }
    println!(
        "two nodes: {} events acknowledged, {} registrations contested",
        acked.len(),
        ROUNDS
    );
}

/// A node SIGKILLed mid-load and started again on its directory: it
/// resumes from its store's checkpoint and the stream after it, its
/// streams' versions go on where the stream has them, and nothing it had
/// acknowledged is lost.
fn a_node_killed_mid_load_resumes(cluster: &common::nats::Cluster) {
    let urls = cluster.urls.join(",");
    let stream = "killed-node";
    let dir = tempfile::tempdir().unwrap();
    let mut lines = Vec::new();
    let mut node = Node::start(dir.path(), &urls, stream, 0, 0);
    node.until("ready", &mut Vec::new());
    node.send("go");
    // Killed once it has acknowledged a third of its appends.
    while lines.len() < WRITERS * APPENDS_PER_WRITER / 3 {
        let line = node.until("ack", &mut lines);
        lines.push(line);
    }
    node.child.kill().unwrap();
    node.child.wait().unwrap();
    // What it printed before it died.
    while let Ok(line) = node.lines.recv_timeout(Duration::from_secs(5)) {
        lines.push(line);
    }
    let mut node = Node::start(dir.path(), &urls, stream, 0, 1);
    let ready = node.until("ready", &mut lines);
    let recovered: Vec<u64> = ready
        .split_whitespace()
        .skip(1)
        .map(|w| w.parse().unwrap())
        .collect();
    assert!(
        recovered[0] > 0,
        "it resumed from a checkpoint of its store: {ready}"
    );
    node.send("go");
    node.send("quit");
    node.until("done", &mut lines);
    assert!(node.child.wait().unwrap().success());
    let acked = acks(&lines);
    // Its first life's appends in flight when it died may be stored.
    let (_reg, _dir) = check_log(&urls, stream, &acked, &|p| p.starts_with("n0g0-"), WRITERS);
    let second = acked.keys().filter(|p| p.starts_with("n0g1-")).count();
    assert_eq!(second, WRITERS * APPENDS_PER_WRITER);
    println!(
        "node killed: {} acknowledged, restarted from checkpoint LSN {} replaying {} events",
        acked.len(),
        recovered[0],
        recovered[1]
    );
}

/// The index of the server that leads `stream`'s replicas.
fn stream_leader(urls: &[String], stream: &str) -> usize {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let url = urls[0].clone();
    let stream = stream.to_string();
    let leader = rt.block_on(async move {
        let js = async_nats::jetstream::new(async_nats::connect(url.as_str()).await.unwrap());
        let mut s = js.get_stream(stream).await.unwrap();
        let info = s.info().await.unwrap();
        info.cluster
            .as_ref()
            .and_then(|c| c.leader.clone())
            .unwrap()
    });
    leader.trim_start_matches('n').parse().unwrap()
}

/// Appenders in this process, counting what was acknowledged and what
/// failed.
struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    acked: std::sync::Arc<std::sync::Mutex<Acked>>,
    failed: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(db: &Db) -> Load {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let acked = std::sync::Arc::new(std::sync::Mutex::new(BTreeMap::new()));
        let failed = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let threads = (0..WRITERS)
            .map(|w| {
                let (db, stop) = (db.clone(), stop.clone());
                let (acked, failed) = (acked.clone(), failed.clone());
                std::thread::spawn(move || {
                    for k in 0.. {
                        if stop.load(std::sync::atomic::Ordering::Acquire) {
                            return;
                        }
                        let payload = format!("load-w{w}-{k}");
                        match db.append("orders", ExpectedVersion::Any, &[payload.as_bytes()]) {
                            Ok(a) => {
                                let at = (a.first_lsn, "orders".to_string(), a.version);
                                acked.lock().unwrap().insert(payload, at);
                            }
                            Err(_) => failed.lock().unwrap().push(payload),
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            acked,
            failed,
            threads,
        }
    }

    fn acked(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    /// Waits until `n` more appends than now are acknowledged (60 s at
    /// most, polling).
    fn wait_for_more(&self, n: usize, what: &str) {
        let want = self.acked() + n;
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.acked() < want {
            assert!(Instant::now() < deadline, "{what}: appends did not resume");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn stop(self) -> (Acked, Vec<String>) {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        for t in self.threads {
            t.join().unwrap();
        }
        let acked = std::mem::take(&mut *self.acked.lock().unwrap());
        let failed = std::mem::take(&mut *self.failed.lock().unwrap());
        (acked, failed)
    }
}

/// The server leading the stream SIGKILLed while four writers append,
/// then started again: appends go on through the two left (a quorum),
/// and after its return; nothing acknowledged is lost, nothing is stored
/// twice; an append that failed meanwhile may be in the stream or not.
fn a_server_killed_mid_load(cluster: &mut common::nats::Cluster) {
    let urls = cluster.urls.join(",");
    let stream = "killed-server";
    let dir = tempfile::tempdir().unwrap();
    let reg = open(dir.path(), &urls, stream);
    let db = reg.db().unwrap().clone();
    let load = Load::start(&db);
    load.wait_for_more(200, "before the kill");
    let leader = stream_leader(&cluster.urls, stream);
    cluster.kill(leader);
    load.wait_for_more(200, "with the stream's leader killed");
    cluster.restart(leader);
    load.wait_for_more(200, "after the server came back");
    let (acked, failed) = load.stop();
    let failures = failed.len();
    let failed: HashSet<String> = failed.into_iter().collect();
    drop(db);
    drop(reg);
    let (_reg, _dir) = check_log(&urls, stream, &acked, &|p| failed.contains(p), failures);
    println!(
        "server n{leader} killed: {} acknowledged, {failures} failed meanwhile",
        acked.len()
    );
}

/// A node opened on a stream another node is appending to opens at once
/// (its replay meets a stream that grows meanwhile), then, writing
/// nothing itself, folds in everything the other appends: afterwards
/// both read the same events.
fn a_node_opened_while_another_appends_follows_it(cluster: &mut common::nats::Cluster) {
    let urls = cluster.urls.join(",");
    let stream = "followed";
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let reg_a = open(dir_a.path(), &urls, stream);
    let a = reg_a.db().unwrap().clone();
    let load = Load::start(&a);
    load.wait_for_more(200, "before the second node opens");
    let reg_b = Registry::open(dir_b.path(), options(&urls, stream), vec![]).unwrap();
    let b = reg_b.db().unwrap().clone();
    load.wait_for_more(200, "with the second node open");
    let (acked, failed) = load.stop();
    assert!(failed.is_empty(), "{failed:?}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while b.last_lsn() < a.last_lsn() {
        assert!(Instant::now() < deadline, "the follower did not catch up");
        std::thread::sleep(Duration::from_millis(10));
    }
    let (from_a, from_b) = (
        a.read(1, usize::MAX).unwrap(),
        b.read(1, usize::MAX).unwrap(),
    );
    assert_eq!(from_a.len() as u64, a.last_lsn());
    assert_eq!(from_a, from_b, "both nodes read the same events");
    println!(
        "followed: {} acknowledged, the other node at LSN {}",
        acked.len(),
        b.last_lsn()
    );
}

/// Two of the three servers SIGKILLed: no quorum answers, and an append
/// fails with an error that names the cluster and says the record may or
/// may not be in the stream (after the log's retries), leaving the
/// handle usable; with the servers back, appends go on, and nothing
/// acknowledged is lost.
fn appends_fail_clearly_without_a_quorum(cluster: &mut common::nats::Cluster) {
    let urls = cluster.urls.join(",");
    let stream = "no-quorum";
    let dir = tempfile::tempdir().unwrap();
    let reg = open(dir.path(), &urls, stream);
    let db = reg.db().unwrap().clone();
    let first = db.append("s", ExpectedVersion::Any, &[b"before"]).unwrap();
    let leader = stream_leader(&cluster.urls, stream);
    let others: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    // The leader and one more: the one left cannot elect a leader alone.
    cluster.kill(leader);
    cluster.kill(others[0]);
    let failed = db.append("s", ExpectedVersion::Any, &[b"no quorum"]);
    let e = failed.expect_err("no quorum answers");
    let text = e.to_string();
    assert!(text.contains("not acknowledged"), "{text}");
    assert!(text.contains("may or may not be in the stream"), "{text}");
    assert!(text.contains(&cluster.urls[0]), "names the cluster: {text}");
    cluster.restart(leader);
    cluster.restart(others[0]);
    // Appends go on once the stream has its leader again.
    let deadline = Instant::now() + Duration::from_secs(60);
    let after = loop {
        match db.append("s", ExpectedVersion::Any, &[b"after"]) {
            Ok(a) => break a,
            Err(e) if Instant::now() < deadline => {
                eprintln!("appending again: {e}");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("appends did not resume: {e}"),
        }
    };
    assert!(after.first_lsn > first.first_lsn);
    let events = db.read(1, usize::MAX).unwrap();
    let data: Vec<&[u8]> = events.iter().map(|e| e.data.as_slice()).collect();
    assert_eq!(data.first(), Some(&&b"before"[..]));
    assert_eq!(data.last(), Some(&&b"after"[..]));
    // The failed one is there or not, and at most once.
    assert!(data.iter().filter(|d| **d == b"no quorum").count() <= 1);
    println!(
        "no quorum: the append failed with {text:?}; appends resumed at LSN {}",
        after.first_lsn
    );
}

/// Prints the stream's records (for a failure's report).
fn dump(urls: &[String], stream: &str) {
    use replaydb::log::{JetStreamLog, Log};
    let log = JetStreamLog::open(urls, stream, 3, 16 << 20).unwrap();
    let _ = log.read(1, &mut |r| {
        eprintln!(
            "LSN {}..{} {} v{}",
            r.first_lsn,
            r.last_lsn(),
            r.stream,
            r.first_version
        );
        Ok(true)
    });
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("node") {
        node(&args[1..]);
        return;
    }
    // libtest's own flags (--list, filters) mean nothing here; `--list`
    // must print nothing a runner would take for a test.
    let tests: [(&str, Scenario); 5] = [
        ("two_nodes_append_and_register_concurrently", |c| {
            two_nodes_append_and_register_concurrently(c)
        }),
        ("a_node_killed_mid_load_resumes", |c| {
            a_node_killed_mid_load_resumes(c)
        }),
        ("a_server_killed_mid_load", a_server_killed_mid_load),
        (
            "a_node_opened_while_another_appends_follows_it",
            a_node_opened_while_another_appends_follows_it,
        ),
        (
            "appends_fail_clearly_without_a_quorum",
            appends_fail_clearly_without_a_quorum,
        ),
    ];
    if args.iter().any(|a| a == "--list") {
        for (name, _) in tests {
            println!("{name}: test");
        }
        return;
    }
    let mut cluster = common::nats::Cluster::start();
    for (name, test) in tests {
        print!("test {name} ... ");
        test(&mut cluster);
        println!("ok");
    }
}
