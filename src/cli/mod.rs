//! Command-line interface: argument parsing and dispatch. Each command
//! lives in its own module; all of them print errors the same way.

mod append;
mod bench;
mod demo;
mod json;
mod kv;
mod maintenance;
mod read;
mod registry;
mod runtime;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use replaydb::SharedDb;

use clap::{Parser, Subcommand};
use replaydb::{Durability, Options};

/// replaydb: an embedded, event-sourced database.
#[derive(Debug, Parser)]
#[command(name = "replaydb", version, about, long_about = None)]
pub struct Cli {
    /// Database directory.
    #[arg(
        long = "db",
        global = true,
        env = "REPLAYDB_DIR",
        default_value = "./replaydb-data"
    )]
    pub db: PathBuf,

    /// Segment size limit in bytes, for a new database (default 64 MiB); a
    /// database keeps the size it was created with.
    #[arg(long, global = true, value_name = "BYTES")]
    pub segment_bytes_max: Option<u64>,

    /// Acknowledge after write and fdatasync every MS milliseconds instead
    /// of after each group's fdatasync (power loss can lose up to MS).
    #[arg(long, global = true, value_name = "MS")]
    pub buffered_ms: Option<u64>,

    /// Take a checkpoint (and truncate the log behind the previous one)
    /// every N records; 0: never by count.
    #[arg(long, global = true, value_name = "N", default_value_t = Options::default().checkpoint_every_records)]
    pub checkpoint_every_records: u64,

    /// Keep the log on a NATS JetStream cluster instead of DIR/wal:
    /// its servers, comma-separated (nats://h1:4222,nats://h2:4222,...).
    /// The store stays in DIR.
    #[arg(long, global = true, value_name = "URLS", env = "REPLAYDB_LOG")]
    pub log: Option<String>,

    /// The JetStream stream that holds the log (with --log).
    #[arg(long, global = true, value_name = "NAME", default_value = "replaydb")]
    pub log_stream: String,

    /// Replicas of the stream, when --log creates it.
    #[arg(long, global = true, value_name = "N", default_value_t = 3)]
    pub log_replicas: usize,

    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Append JSON events to a stream: the arguments as one batch, or JSON
    /// lines from stdin (with `-` or no argument), printing each event's
    /// LSN once it is durable.
    Append(append::AppendArgs),
    /// Print events of the log or of one stream.
    Read(read::ReadArgs),
    /// Follow the log live, one JSON line per event.
    Tail(read::TailArgs),
    /// Check every record's CRC and the LSN sequence; exit 1 on a problem.
    Verify,
    /// Cut the log at its first bad record, keeping the cut bytes in `.cut`
    /// files beside the segment.
    Repair(maintenance::RepairArgs),
    /// Counts: records, streams, segments, bytes, first and last LSN, the
    /// store and its checkpoint.
    Stats(maintenance::StatsArgs),
    /// Take a checkpoint now (one durable commit of the store) and delete
    /// the log behind the previous one, naming what was deleted.
    #[command(visible_aliases = ["snapshot", "compact"])]
    Checkpoint,
    /// Show or set what a stream's history keeps.
    Retention(maintenance::RetentionArgs),
    /// Copy the database consistently to DEST while it stays in use.
    Backup(maintenance::BackupArgs),
    /// The pod-registry table: ls, show, history, reclaim.
    Registry(registry::RegistryArgs),
    /// Worker runtimes: ls, create, stop, events, transcript, and workers
    /// (create, send, stop, cancel).
    Runtime(runtime::RuntimeArgs),
    /// Buckets of keys: put, cas, get, del, ls, watch.
    Kv(kv::KvArgs),
    /// Run a realistic workload and show what the engine did.
    Demo(demo::DemoArgs),
    /// Own the database and share it with other processes on its Unix
    /// socket (DIR/replaydb.sock), until SIGINT or SIGTERM.
    Serve(serve::ServeArgs),
    /// Measure this disk: its fdatasync rate, replaydb, the seeds' file
    /// layouts and redb used directly, side by side (not on --db: in a
    /// temporary directory in --dir).
    Bench(bench::BenchArgs),
}

impl Cli {
    fn options(&self) -> Options {
        let mut o = Options::default()
            .segment_bytes_max(self.segment_bytes_max)
            .checkpoint_every_records(self.checkpoint_every_records);
        if let Some(ms) = self.buffered_ms {
            o.durability = Durability::Buffered {
                interval: std::time::Duration::from_millis(ms),
            };
        }
        if let Some(urls) = &self.log {
            o.log = replaydb::LogKind::JetStream {
                servers: urls
                    .split(',')
                    .map(str::trim)
                    .filter(|u| !u.is_empty())
                    .map(String::from)
                    .collect(),
                stream: self.log_stream.clone(),
                replicas: self.log_replicas,
            };
        }
        o
    }
}

/// A failed command: the message, and the exit code.
pub struct Failure {
    pub message: String,
    pub code: u8,
}

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure {
            message: e.to_string(),
            code: 1,
        }
    }
}

pub type CmdResult = Result<(), Failure>;

fn builtin_views() -> Vec<Box<dyn replaydb::View>> {
    vec![
        Box::new(replaydb::registry::RegistryView::default()),
        Box::new(replaydb::runtime::RuntimeView::default()),
        Box::new(replaydb::kv::KvView::default()),
    ]
}

/// Opens the database with the built-in views, so every command keeps
/// them up to date. For the commands that do not go through a server
/// (`serve`, `demo`): a directory a server owns is an error that says so.
/// `why`: what the command says when a server holds the directory.
pub fn open_db(
    dir: &std::path::Path,
    options: &Options,
    why: &str,
) -> Result<replaydb::Db, Failure> {
    replaydb::Db::open_with_views(dir, options.clone(), builtin_views())
        .map_err(|e| locked_failure(dir, e, why))
}

/// `e`, or, when `e` is the lock held by a process that serves `dir`,
/// that the command (which `why` says) needs the server stopped.
pub fn locked_failure(dir: &std::path::Path, e: replaydb::Error, why: &str) -> Failure {
    if !matches!(e, replaydb::Error::Locked { .. }) {
        return e.into();
    }
    let socket = replaydb::server::default_socket(dir);
    let quick = replaydb::client::ClientOptions::default()
        .reconnect_for(std::time::Duration::from_millis(200));
    match replaydb::client::Client::connect_with(&socket, quick).and_then(|c| c.server_pid()) {
        Ok(pid) => Failure::from(format!(
            "{} is served by pid {pid} on {}; this command {why}: stop the server to run it",
            dir.display(),
            socket.display()
        )),
        Err(_) => e.into(),
    }
}

/// Opens the database with the built-in views, or, if a server owns the
/// directory, connects to it: the command works the same either way.
pub fn open_shared(dir: &std::path::Path, options: &Options) -> replaydb::Result<SharedDb> {
    SharedDb::open_or_connect(dir, options.clone(), builtin_views())
}

/// Reads one line (with its `\n`, if any) into `buf`, reading at most
/// `bytes_max + 1` bytes of it: `Ok(None)` at the end of input,
/// `Ok(Some(false))` for a line longer than `bytes_max` (the rest of it is
/// not read), `Ok(Some(true))` otherwise. A line from stdin never grows
/// memory past its bound.
pub fn read_line_bounded(
    input: &mut impl std::io::BufRead,
    bytes_max: u64,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<bool>> {
    buf.clear();
    let n = std::io::BufRead::read_until(
        &mut std::io::Read::take(input, bytes_max.saturating_add(1)),
        b'\n',
        buf,
    )?;
    if n == 0 {
        return Ok(None);
    }
    Ok(Some(buf.len() as u64 <= bytes_max))
}

pub fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("REPLAYDB_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let options = cli.options();
    let result = match &cli.command {
        Command::Append(args) => append::run(&cli.db, &options, args),
        Command::Read(args) => read::run_read(&cli.db, &options, args),
        Command::Tail(args) => read::run_tail(&cli.db, &options, args),
        Command::Verify => maintenance::run_verify(&cli.db, &options),
        Command::Repair(args) => maintenance::run_repair(&cli.db, &options, args),
        Command::Stats(args) => maintenance::run_stats(&cli.db, &options, args),
        Command::Checkpoint => maintenance::run_checkpoint(&cli.db, &options),
        Command::Retention(args) => maintenance::run_retention(&cli.db, &options, args),
        Command::Backup(args) => maintenance::run_backup(&cli.db, &options, args),
        Command::Demo(args) => demo::run(&cli.db, &options, args),
        Command::Registry(args) => registry::run(&cli.db, &options, args),
        Command::Runtime(args) => runtime::run(&cli.db, &options, args),
        Command::Kv(args) => kv::run(&cli.db, &options, args),
        Command::Serve(args) => serve::run(&cli.db, &options, args),
        Command::Bench(args) => bench::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            if !f.message.is_empty() {
                eprintln!("replaydb: {}", f.message);
            }
            ExitCode::from(f.code)
        }
    }
}
