//! `replaydb serve`: own the database and share it with other processes
//! on its Unix socket until SIGINT or SIGTERM.

use std::path::{Path, PathBuf};

use clap::Args;
use replaydb::Options;

use super::{CmdResult, Failure, open_db};

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// The socket to serve on (default: DIR/replaydb.sock).
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
}

pub fn run(dir: &Path, options: &Options, args: &ServeArgs) -> CmdResult {
    let db = open_db(dir, options, "would serve it a second time")?;
    let socket = args
        .socket
        .clone()
        .unwrap_or_else(|| replaydb::server::default_socket(dir));
    let server = db.serve(&socket)?;
    let stop = server.stop_handle();
    let signals = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::from(format!("start the signal handler: {e}")))?;
    eprintln!(
        "replaydb: serving {} on {} (pid {}); SIGINT or SIGTERM stops",
        dir.display(),
        socket.display(),
        std::process::id()
    );
    let waited: std::io::Result<&str> = signals.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        Ok(tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        })
    });
    let why = waited.map_err(|e| Failure::from(format!("wait for a signal: {e}")))?;
    stop.stop();
    let served = server.connections_served();
    server.run_until_stopped();
    eprintln!("replaydb: stopped on {why} after {served} connections");
    Ok(())
}
