//! A served database answers every request as the embedded one does, and
//! bad input from a raw socket (malformed, truncated, oversized, stalled
//! frames) gets an error reply and closes only that connection while a
//! well-behaved client keeps being served. The seed's two tests, as
//! behaviours: start, connect, ping, stop with clients attached; and a
//! client that reconnects when the server comes back.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use replaydb::client::{Client, ClientOptions};
use replaydb::server::frame::{self, Code, FLAG_ERROR, FLAG_REPLY, HEADER_BYTES, Header};
use replaydb::server::wire;
use replaydb::server::{POLLS_IN_FLIGHT_MAX, REQUESTS_IN_FLIGHT_MAX, default_socket};
use replaydb::{Database, Db, Error, ExpectedVersion, Options};

fn open(dir: &Path) -> Db {
    Db::open(dir, Options::default()).unwrap()
}

fn quick() -> ClientOptions {
    ClientOptions::default().reconnect_for(Duration::from_millis(300))
}

/// A raw connection that has said hello.
fn raw(socket: &Path) -> UnixStream {
    let mut s = UnixStream::connect(socket).unwrap();
    let hello = wire::Hello {
        magic: wire::MAGIC.into(),
        version: frame::PROTOCOL_VERSION,
    };
    s.write_all(&frame::encode(
        0,
        Code::Hello as u32,
        0,
        &wire::encode(&hello),
    ))
    .unwrap();
    let (h, _) = read_frame(&mut s).expect("welcome");
    assert_eq!(h.flags & FLAG_ERROR, 0, "welcomed");
    s
}

fn read_frame(s: &mut UnixStream) -> Option<(Header, Vec<u8>)> {
    let mut head = [0u8; HEADER_BYTES];
    s.read_exact(&mut head).ok()?;
    let h = Header::decode(&head).unwrap();
    let mut body = vec![0u8; h.size as usize];
    s.read_exact(&mut body).ok()?;
    Some((h, body))
}

/// The error reply a raw connection gets, then the connection's end.
fn error_then_closed(s: &mut UnixStream) -> Error {
    let (h, body) = read_frame(s).expect("an error reply before the close");
    assert_eq!(h.flags & (FLAG_REPLY | FLAG_ERROR), FLAG_REPLY | FLAG_ERROR);
    let e: Error = wire::decode::<wire::WireError>("error", &body)
        .unwrap()
        .into();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "closed after the error: {rest:?}");
    e
}

#[test]
fn start_connect_ping_and_stop_with_clients_attached() {
    let tmp = tempfile::tempdir().unwrap();
    let db = open(tmp.path());
    let socket = default_socket(tmp.path());
    let server = db.serve(&socket).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let a = Client::connect_with(&socket, quick()).unwrap();
    let b = Client::connect_with(&socket, quick()).unwrap();
    assert_eq!(a.ping(b"noop").unwrap(), b"noop");
    assert_eq!(b.ping(b"").unwrap(), b"");
    assert_ne!(a.connection_id().unwrap(), b.connection_id().unwrap());
    assert_eq!(a.server_pid().unwrap(), std::process::id());
    server.stop();
    assert!(!socket.exists(), "the socket is removed");
    match a.ping(b"x") {
        Err(Error::Disconnected { socket: s, .. }) => assert_eq!(s, socket),
        other => panic!("{other:?}"),
    }
}

#[test]
fn every_operation_answers_as_the_embedded_one_errors_included() {
    let tmp = tempfile::tempdir().unwrap();
    let db = open(tmp.path());
    let socket = default_socket(tmp.path());
    let _server = db.serve(&socket).unwrap();
    let c = Client::connect(&socket).unwrap();
    let first = Database::append(&c, "orders", ExpectedVersion::NoStream, &[b"a", b"b"]).unwrap();
    assert_eq!((first.first_lsn, first.last_lsn, first.version), (1, 2, 2));
    db.append("other", ExpectedVersion::Any, &[b"x"]).unwrap();
    Database::append(&c, "orders", ExpectedVersion::Exact(2), &[b"c"]).unwrap();
    assert_eq!(
        Database::read(&c, 1, 100).unwrap(),
        db.read(1, 100).unwrap()
    );
    assert_eq!(Database::read(&c, 2, 2).unwrap(), db.read(2, 2).unwrap());
    assert_eq!(
        Database::read_stream(&c, "orders", 2, 10).unwrap(),
        db.read_stream("orders", 2, 10).unwrap()
    );
    assert_eq!(Database::stream_version(&c, "orders").unwrap(), 3);
    assert_eq!(Database::last_lsn(&c).unwrap(), 4);
    assert!(Database::sync(&c).unwrap() >= 4);
    assert_eq!(Database::checkpoint(&c).unwrap().covered_lsn, 4);
    let (remote, local) = (Database::stats(&c).unwrap(), db.stats().unwrap());
    assert_eq!(
        (remote.last_lsn, remote.events),
        (local.last_lsn, local.events)
    );
    let keep = replaydb::Retention {
        max_count: Some(2),
        ..replaydb::Retention::default()
    };
    Database::set_retention(&c, "orders", keep).unwrap();
    assert_eq!(db.retention("orders").unwrap(), keep);
    assert_eq!(Database::retention(&c, "orders").unwrap(), keep);
    assert!(matches!(
        Database::retention(&c, "../escape"),
        Err(Error::InvalidStreamName { .. })
    ));
    // The server writes the copy where the client says.
    let elsewhere = tempfile::tempdir().unwrap();
    let copy = elsewhere.path().join("copy");
    assert!(Database::backup(&c, &copy).unwrap() >= 5);
    assert!(
        Database::backup(&c, &copy).is_err(),
        "a copy is never overwritten"
    );
    // The same error, typed, as embedded.
    match Database::append(&c, "orders", ExpectedVersion::Exact(1), &[b"late"]) {
        Err(Error::WrongExpectedVersion {
            stream,
            expected: ExpectedVersion::Exact(1),
            actual: 3,
        }) => assert_eq!(stream, "orders"),
        other => panic!("{other:?}"),
    }
    let embedded = db
        .append("../escape", ExpectedVersion::Any, &[b"x"])
        .unwrap_err()
        .to_string();
    match Database::append(&c, "../escape", ExpectedVersion::Any, &[b"x"]) {
        Err(e @ Error::InvalidStreamName { .. }) => assert_eq!(e.to_string(), embedded),
        other => panic!("{other:?}"),
    }
    // More than a page (4096 events) in one read, as embedded.
    let many: Vec<Vec<u8>> = (0..5000).map(|i| format!("{i}").into_bytes()).collect();
    db.append("many", ExpectedVersion::Any, &many).unwrap();
    let remote = Database::read(&c, 1, 6000).unwrap();
    assert_eq!(remote.len(), 5004);
    assert_eq!(remote, db.read(1, 6000).unwrap());
}

#[test]
fn a_subscription_sees_every_event_once_in_order_then_ends_on_drop() {
    let tmp = tempfile::tempdir().unwrap();
    let db = open(tmp.path());
    let socket = default_socket(tmp.path());
    let _server = db.serve(&socket).unwrap();
    let c = Client::connect(&socket).unwrap();
    db.append("s", ExpectedVersion::Any, &[b"0"]).unwrap();
    let mut sub = Database::subscribe(&c, 1).unwrap();
    let writer = {
        let c = c.clone();
        std::thread::spawn(move || {
            for i in 1..300u32 {
                Database::append(&c, "s", ExpectedVersion::Any, &[i.to_string()]).unwrap();
            }
        })
    };
    for lsn in 1..=300u64 {
        let e = sub.next().unwrap().unwrap();
        assert_eq!(e.lsn, lsn);
        assert_eq!(e.data, (lsn - 1).to_string().into_bytes());
    }
    writer.join().unwrap();
    drop(sub);
    // The connection goes on serving after the cancel.
    assert_eq!(c.ping(b"after").unwrap(), b"after");
}

#[test]
fn the_client_reconnects_when_the_server_comes_back_and_a_subscription_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let socket = default_socket(tmp.path());
    let db = open(tmp.path());
    let server = db.serve(&socket).unwrap();
    let c = Client::connect(&socket).unwrap();
    let before = c.connection_id().unwrap();
    Database::append(&c, "s", ExpectedVersion::Any, &[b"1", b"2"]).unwrap();
    let mut sub = Database::subscribe(&c, 1).unwrap();
    assert_eq!(sub.next().unwrap().unwrap().lsn, 1);
    server.stop();
    drop(db);
    // A new owner of the same directory, on the same socket.
    let db = open(tmp.path());
    let _server = db.serve(&socket).unwrap();
    db.append("s", ExpectedVersion::Any, &[b"3"]).unwrap();
    assert_eq!(c.ping(b"back").unwrap(), b"back");
    assert_ne!(c.connection_id().unwrap(), before, "a new connection");
    assert_eq!(Database::stream_version(&c, "s").unwrap(), 3);
    let rest: Vec<u64> = (0..2).map(|_| sub.next().unwrap().unwrap().lsn).collect();
    assert_eq!(rest, vec![2, 3], "resumed with no gap and no repeat");
}

#[test]
fn bad_frames_get_an_error_reply_and_the_server_keeps_serving_others() {
    let tmp = tempfile::tempdir().unwrap();
    let db = open(tmp.path());
    let socket = default_socket(tmp.path());
    let _server = db.serve(&socket).unwrap();
    let good = Client::connect(&socket).unwrap();
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let appender = {
        let good = good.clone();
        std::thread::spawn(move || {
            let mut n = 0u64;
            while stopped.try_recv().is_err() {
                Database::append(&good, "good", ExpectedVersion::Exact(n), &[b"e"]).unwrap();
                n += 1;
            }
            n
        })
    };

    // A header of another protocol version.
    let mut s = raw(&socket);
    let mut bad = frame::encode(1, Code::Ping as u32, 0, b"");
    bad[12] = 7;
    s.write_all(&bad).unwrap();
    match error_then_closed(&mut s) {
        Error::Protocol { reason, .. } => assert!(reason.contains("version 7"), "{reason}"),
        other => panic!("{other:?}"),
    }

    // An oversized body: refused from the header, nothing allocated.
    let mut s = raw(&socket);
    let h = Header {
        tag: 2,
        code: Code::Append as u32,
        flags: 0,
        size: frame::FRAME_BODY_BYTES_MAX + 1,
    };
    s.write_all(&h.encode()).unwrap();
    match error_then_closed(&mut s) {
        Error::Protocol { reason, .. } => assert!(reason.contains("above the limit"), "{reason}"),
        other => panic!("{other:?}"),
    }

    // A body that does not decode as its request.
    let mut s = raw(&socket);
    s.write_all(&frame::encode(3, Code::Append as u32, 0, b"\xc1garbage"))
        .unwrap();
    match error_then_closed(&mut s) {
        Error::Protocol { reason, .. } => assert!(reason.contains("append"), "{reason}"),
        other => panic!("{other:?}"),
    }

    // An unknown request code, named.
    let mut s = raw(&socket);
    s.write_all(&frame::encode(4, 999, 0, b"")).unwrap();
    match error_then_closed(&mut s) {
        Error::Protocol { reason, .. } => assert!(reason.contains("999"), "{reason}"),
        other => panic!("{other:?}"),
    }

    // No hello first.
    let mut s = UnixStream::connect(&socket).unwrap();
    s.write_all(&frame::encode(
        5,
        Code::Ping as u32,
        0,
        &wire::encode(&wire::Ping { payload: vec![] }),
    ))
    .unwrap();
    match error_then_closed(&mut s) {
        Error::Protocol { reason, .. } => assert!(reason.contains("hello"), "{reason}"),
        other => panic!("{other:?}"),
    }

    // A frame cut short: the peer goes mid-body; nothing to answer.
    let mut s = raw(&socket);
    let f = frame::encode(
        6,
        Code::Ping as u32,
        0,
        &wire::encode(&wire::Ping {
            payload: vec![1; 64],
        }),
    );
    s.write_all(&f[..f.len() - 10]).unwrap();
    drop(s);

    // A frame that stalls after its first bytes is answered once the
    // read deadline passes, not held forever.
    let mut s = raw(&socket);
    s.write_all(&f[..5]).unwrap();
    match error_then_closed(&mut s) {
        Error::Protocol { reason, .. } => assert!(reason.contains("stalled"), "{reason}"),
        other => panic!("{other:?}"),
    }

    stop.send(()).unwrap();
    let appended = appender.join().unwrap();
    assert!(appended > 0);
    assert_eq!(db.stream_version("good").unwrap(), appended);
    assert_eq!(good.ping(b"still").unwrap(), b"still");
}

#[test]
fn polls_past_their_limit_are_refused_by_name_and_never_starve_requests() {
    let tmp = tempfile::tempdir().unwrap();
    let db = open(tmp.path());
    let socket = default_socket(tmp.path());
    let _server = db.serve(&socket).unwrap();
    let c = Client::connect(&socket).unwrap();
    // Each live subscription is a poll in flight, waiting: more of them
    // than requests may be in flight, and requests are still answered.
    let mut subs: Vec<_> = (0..POLLS_IN_FLIGHT_MAX)
        .map(|_| Database::subscribe(&c, 1).unwrap())
        .collect();
    const { assert!(POLLS_IN_FLIGHT_MAX > REQUESTS_IN_FLIGHT_MAX) };
    assert_eq!(c.ping(b"still served").unwrap(), b"still served");
    // One poll more is refused, by name.
    let mut over = Database::subscribe(&c, 1).unwrap();
    match over.next() {
        Some(Err(Error::Busy { limit, max, .. })) => {
            assert!(limit.contains("polls in flight"), "{limit}");
            assert_eq!(max, POLLS_IN_FLIGHT_MAX as u64);
        }
        other => panic!("{other:?}"),
    }
    drop(over);
    // The ones held still see what is committed.
    Database::append(&c, "s", ExpectedVersion::Any, &[b"x"]).unwrap();
    let first = subs.first_mut().unwrap().next().unwrap().unwrap();
    assert_eq!(first.lsn, 1);
    drop(subs);
    // Freed as the cancels are taken.
    let freed = (0..1000).any(|_| {
        let mut s = Database::subscribe(&c, 1).unwrap();
        matches!(s.next(), Some(Ok(_)))
    });
    assert!(freed);
}

#[test]
fn a_live_servers_socket_is_never_taken_and_a_gone_ones_is() {
    let tmp = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    let socket = tmp.path().join("shared.sock");
    let db = open(&tmp.path().join("a"));
    let server = db.serve(&socket).unwrap();
    let second = open(other.path());
    match second.serve(&socket) {
        Err(Error::Locked { path, .. }) => assert_eq!(path, socket),
        other => panic!("{other:?}"),
    }
    let c = Client::connect(&socket).unwrap();
    assert_eq!(
        c.ping(b"first").unwrap(),
        b"first",
        "the first still serves"
    );
    // A socket file left by a server that is gone is replaced.
    drop(server);
    let stale = tmp.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let _s = second.serve(&stale).unwrap();
    assert_eq!(Client::connect(&stale).unwrap().ping(b"").unwrap(), b"");
    // Something that is not a socket is never removed.
    let file = tmp.path().join("file");
    std::fs::write(&file, b"data").unwrap();
    assert!(second.serve(&file).is_err());
    assert_eq!(std::fs::read(&file).unwrap(), b"data");
}

#[test]
fn a_peer_of_another_user_is_refused() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this test runs a peer as another user, which needs root; run the suite as root"
    );
    let tmp = tempfile::tempdir().unwrap();
    let open_dir = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(open_dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let socket = open_dir.path().join("db.sock");
    let db = open(tmp.path());
    let _server = db.serve(&socket).unwrap();
    // Past the file mode (0600), the uid check is what refuses.
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let script = format!(
        "import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect({:?}); d=s.recv(4096); sys.stdout.write(d.hex())",
        socket.to_str().unwrap()
    );
    use std::os::unix::process::CommandExt;
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .uid(65534)
        .gid(65534)
        .output()
        .expect("python3 runs the other user's peer");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes: Vec<u8> = (0..out.stdout.len() / 2)
        .map(|i| {
            u8::from_str_radix(
                std::str::from_utf8(&out.stdout[2 * i..2 * i + 2]).unwrap(),
                16,
            )
            .unwrap()
        })
        .collect();
    let (head, body) = bytes.split_at(HEADER_BYTES);
    let h = Header::decode(head.try_into().unwrap()).unwrap();
    assert_ne!(h.flags & FLAG_ERROR, 0);
    let e: Error = wire::decode::<wire::WireError>("error", body)
        .unwrap()
        .into();
    match e {
        Error::PeerRefused { reason, .. } => assert!(reason.contains("uid 65534"), "{reason}"),
        other => panic!("{other:?}"),
    }
    // This user is served.
    assert_eq!(
        Client::connect(&socket).unwrap().ping(b"me").unwrap(),
        b"me"
    );
}

#[test]
fn many_threads_share_one_connection_beside_a_subscription_nobody_reads() {
    let tmp = tempfile::tempdir().unwrap();
    let db = open(tmp.path());
    let socket = default_socket(tmp.path());
    let _server = db.serve(&socket).unwrap();
    let c = Client::connect(&socket).unwrap();
    // Polls in flight whose threads never wait on them: the reading must
    // never be passed to one of them.
    let idle: Vec<_> = (0..4)
        .map(|_| Database::subscribe(&c, 1_000_000).unwrap())
        .collect();
    const THREADS: u64 = 4;
    const ROUNDS: u64 = 300;
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(THREADS as usize));
    let (done, finished) = std::sync::mpsc::channel();
    for t in 0..THREADS {
        let (c, done, barrier) = (c.clone(), done.clone(), barrier.clone());
        std::thread::spawn(move || {
            for i in 0..ROUNDS {
                // All at once, so some wait while one reads, every round.
                barrier.wait();
                Database::append(&c, &format!("t{t}"), ExpectedVersion::Exact(i), &[b"e"]).unwrap();
                assert_eq!(c.ping(&i.to_le_bytes()).unwrap(), i.to_le_bytes());
            }
            done.send(t).unwrap();
        });
    }
    drop(done);
    let mut threads = Vec::new();
    // A thread left waiting forever for a reader is the failure this
    // guards against: name it rather than hang the suite.
    while let Ok(t) = finished.recv_timeout(Duration::from_secs(60)) {
        threads.push(t);
    }
    threads.sort();
    assert_eq!(
        threads,
        (0..THREADS).collect::<Vec<_>>(),
        "every thread got every reply"
    );
    assert_eq!(db.last_lsn(), THREADS * ROUNDS);
    drop(idle);
}

#[test]
fn a_large_frame_arriving_in_pieces_beside_other_requests_is_read_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let db = open(tmp.path());
    let socket = default_socket(tmp.path());
    let _server = db.serve(&socket).unwrap();
    let c = Client::connect(&socket).unwrap();
    let other = Client::connect(&socket).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let running = |stop: &std::sync::Arc<std::sync::atomic::AtomicBool>| {
        !stop.load(std::sync::atomic::Ordering::Relaxed)
    };
    // Subscription polls on the large frames' connection, answered while
    // those frames stream in (another client appends all the while): the
    // server's reader is woken for their tasks in the middle of a frame.
    let watchers: Vec<_> = (0..16)
        .map(|_| {
            let (c, stop) = (c.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut sub = Database::subscribe(&c, 1).unwrap();
                while running(&stop) {
                    sub.next().unwrap().unwrap();
                }
            })
        })
        .collect();
    let appender = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while running(&stop) {
                Database::append(&other, "small", ExpectedVersion::Any, &[b"s"]).unwrap();
            }
        })
    };
    let big = vec![7u8; 6 << 20];
    for i in 0..8u64 {
        let done = Database::append(&c, "big", ExpectedVersion::Exact(i), &[&big]).unwrap();
        assert_eq!(done.version, i + 1);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    appender.join().unwrap();
    // One more event wakes every watcher for its last look at the flag.
    db.append("small", ExpectedVersion::Any, &[b"last"])
        .unwrap();
    for w in watchers {
        w.join().unwrap();
    }
    let events = db.read_stream("big", 1, 10).unwrap();
    assert_eq!(events.len(), 8);
    assert!(events.iter().all(|e| e.data == big));
}

#[test]
fn a_batch_no_frame_holds_is_refused_by_the_client_as_embedded_and_the_connection_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let db = open(tmp.path());
    let socket = default_socket(tmp.path());
    let _server = db.serve(&socket).unwrap();
    let c = Client::connect(&socket).unwrap();
    let before = c.connection_id().unwrap();
    let huge = vec![0u8; frame::FRAME_BODY_BYTES_MAX as usize + 1];
    match Database::append(&c, "s", ExpectedVersion::Any, &[&huge]) {
        Err(Error::RecordTooLarge {
            stream,
            limit_bytes,
            ..
        }) => {
            assert_eq!(stream, "s");
            assert_eq!(limit_bytes, db.options().record_bytes_max);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(c.ping(b"on").unwrap(), b"on");
    assert_eq!(c.connection_id().unwrap(), before, "the same connection");
    assert_eq!(
        Database::record_bytes_max(&c),
        db.options().record_bytes_max
    );
}

#[test]
fn a_server_started_and_stopped_from_async_code_does_not_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let db = open(tmp.path());
    let socket = default_socket(tmp.path());
    let host = tokio::runtime::Runtime::new().unwrap();
    host.block_on(async {
        // As a host's async code would: serve, and stop.
        let server = db.serve(&socket).unwrap();
        let c = Client::connect_with(&socket, quick()).unwrap();
        Database::append(&c, "a", ExpectedVersion::Any, &[b"x"]).unwrap();
        server.stop();
        // And dropping one there.
        let again = db.serve(&socket).unwrap();
        drop(again);
    });
    assert!(!socket.exists());
    assert_eq!(db.stream_version("a").unwrap(), 1);
}

#[test]
fn a_client_that_does_not_read_holds_back_only_its_own_answers_and_a_stop_answers_them() {
    let tmp = tempfile::tempdir().unwrap();
    let db = open(tmp.path());
    let socket = default_socket(tmp.path());
    let server = db.serve(&socket).unwrap();
    // A raw client that sends and does not read: two echoes of 1 MiB
    // fill its socket, then appends whose answers must wait behind them.
    let mut slow = raw(&socket);
    let payload: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
    for tag in [1, 2] {
        let ping = wire::encode(&wire::Ping {
            payload: payload.clone(),
        });
        slow.write_all(&frame::encode(tag, Code::Ping as u32, 0, &ping))
            .unwrap();
    }
    const APPENDS: u64 = 50;
    for i in 0..APPENDS {
        let append = wire::encode(&wire::Append {
            stream: "slow".into(),
            expected: ExpectedVersion::Exact(i),
            events: vec![serde_bytes::ByteBuf::from(i.to_le_bytes().to_vec())],
        });
        slow.write_all(&frame::encode(100 + i, Code::Append as u32, 0, &append))
            .unwrap();
    }
    // Every one of them is committed while nothing is read...
    while db.stream_version("slow").unwrap() < APPENDS {
        std::thread::yield_now();
    }
    // ...and another client is served all the while: a commit never
    // waits on a client that does not read.
    let good = Client::connect(&socket).unwrap();
    let (done, finished) = std::sync::mpsc::channel();
    {
        let good = good.clone();
        std::thread::spawn(move || {
            for i in 0..100u64 {
                Database::append(&good, "good", ExpectedVersion::Exact(i), &[b"e"]).unwrap();
            }
            done.send(good.ping(b"served").unwrap()).unwrap();
        });
    }
    let served = finished.recv_timeout(Duration::from_secs(60));
    assert_eq!(
        served.as_deref(),
        Ok(&b"served"[..]),
        "the other client is served"
    );

    // A stop waits for the answers in flight: the slow client reads them
    // all, whole and once each, then the goodbye, then the end.
    let stopping = std::thread::spawn(move || server.stop());
    let mut echoes = Vec::new();
    let mut appended = std::collections::BTreeMap::new();
    loop {
        let (h, body) = read_frame(&mut slow).expect("a frame before the goodbye");
        if h.code == Code::Goodbye as u32 {
            break;
        }
        assert_eq!(h.flags, FLAG_REPLY, "tag {}: {body:?}", h.tag);
        if h.code == Code::Ping as u32 {
            let echo: wire::Ping = wire::decode("ping", &body).unwrap();
            assert!(echo.payload == payload, "echo {} whole", h.tag);
            echoes.push(h.tag);
        } else {
            assert_eq!(h.code, Code::Append as u32);
            let done: replaydb::Appended = wire::decode("append", &body).unwrap();
            assert!(
                appended.insert(h.tag, done.version).is_none(),
                "tag {} twice",
                h.tag
            );
        }
    }
    echoes.sort();
    assert_eq!(echoes, [1, 2]);
    let expected: std::collections::BTreeMap<u64, u64> =
        (0..APPENDS).map(|i| (100 + i, i + 1)).collect();
    assert_eq!(
        appended, expected,
        "each append answered once, with its version"
    );
    let mut rest = Vec::new();
    slow.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "closed after the goodbye");
    stopping.join().unwrap();
}

#[test]
fn embedded_appends_in_the_owner_and_clients_appends_share_the_groups_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let db = open(tmp.path());
    let socket = default_socket(tmp.path());
    let _server = db.serve(&socket).unwrap();
    // Clients that never let the queue run dry.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|t| {
            let (c, stop) = (Client::connect(&socket).unwrap(), stop.clone());
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    Database::append(&c, &format!("c{t}"), ExpectedVersion::Exact(n), &[b"e"])
                        .unwrap();
                    n += 1;
                }
                n
            })
        })
        .collect();
    // An embedded writer in the owner leads groups that hold clients'
    // appends, and hands the next one (a client's, which no one waits on
    // to be handed it) to a leader started for it.
    let (done, finished) = std::sync::mpsc::channel();
    {
        let db = db.clone();
        std::thread::spawn(move || {
            for i in 0..200u64 {
                db.append("embedded", ExpectedVersion::Exact(i), &[b"e"])
                    .unwrap();
            }
            done.send(()).unwrap();
        });
    }
    let returned = finished.recv_timeout(Duration::from_secs(60));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(returned.is_ok(), "the embedded appends returned");
    let mut total = 200;
    for (t, c) in clients.into_iter().enumerate() {
        let n = c.join().unwrap();
        assert_eq!(db.stream_version(&format!("c{t}")).unwrap(), n);
        total += n;
    }
    assert_eq!(db.stream_version("embedded").unwrap(), 200);
    assert_eq!(db.last_lsn(), total);
}
