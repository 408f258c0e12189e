//! `replaydb verify`, `repair` and `stats`.

use std::path::Path;

use clap::{Args, Subcommand};
use replaydb::{Options, Repair, Retention};

use replaydb::Database;

use crate::cli::{CmdResult, Failure, locked_failure};

#[derive(Debug, Args)]
pub struct RepairArgs {
    /// Say what would be cut, and change nothing.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Where to write the copy (must not exist, or be empty).
    dest: std::path::PathBuf,
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct RetentionArgs {
    #[command(subcommand)]
    command: RetentionCommand,
}

#[derive(Debug, Subcommand)]
enum RetentionCommand {
    /// Print what STREAM's history keeps.
    Show {
        /// The stream.
        stream: String,
    },
    /// Set what STREAM's history keeps; with no limit, everything.
    Set {
        /// The stream.
        stream: String,
        /// Keep the newest N events (0: none, state only).
        #[arg(long, value_name = "N")]
        max_count: Option<u64>,
        /// Keep events for MS milliseconds after they were stored (applied
        /// at checkpoints).
        #[arg(long, value_name = "MS")]
        max_age_ms: Option<u64>,
        /// Remove every event below stream version V.
        #[arg(long, value_name = "V")]
        truncate_before: Option<u64>,
    },
}

pub fn run_retention(dir: &Path, options: &Options, args: &RetentionArgs) -> CmdResult {
    let db = crate::cli::open_shared(dir, options)?;
    match &args.command {
        RetentionCommand::Show { stream } => println!("{}", db.retention(stream)?),
        RetentionCommand::Set {
            stream,
            max_count,
            max_age_ms,
            truncate_before,
        } => {
            let r = Retention {
                max_count: *max_count,
                max_age_ms: *max_age_ms,
                truncate_before: *truncate_before,
            };
            let done = db.set_retention(stream, r)?;
            println!("{stream}: {r} (LSN {})", done.first_lsn);
        }
    }
    Ok(())
}

/// Verify and repair read and cut the files themselves, under the
/// database's lock: a served database is the server's to stop first.
fn offline(dir: &Path, e: replaydb::Error) -> Failure {
    locked_failure(
        dir,
        e,
        "reads (and repair cuts) the files under the database's lock, with no process serving it",
    )
}

pub fn run_verify(dir: &Path, options: &Options) -> CmdResult {
    let report = replaydb::verify(dir, options).map_err(|e| offline(dir, e))?;
    println!(
        "ok: {} segments, {} records, {} events, last LSN {}",
        report.segments, report.records, report.events, report.last_lsn
    );
    match &report.store {
        Some((path, lsn)) => println!(
            "ok: store {} reflects LSN {lsn}, every page checked, {} history rows match the log; the log holds LSN {} on",
            path.display(),
            report.history_rows_checked,
            report.first_lsn
        ),
        None => println!(
            "note: no store yet (a database of release 0.1); the next open migrates its snapshots"
        ),
    }
    if let Some(t) = report.torn_tail {
        println!(
            "note: torn tail in {} at byte {} ({} bytes of an interrupted, unacknowledged write: {}); the next open cuts it",
            t.segment.display(),
            t.offset,
            t.garbage_bytes,
            t.reason
        );
    }
    Ok(())
}

pub fn run_repair(dir: &Path, options: &Options, args: &RepairArgs) -> CmdResult {
    let repair = Repair::plan(dir, options).map_err(|e| offline(dir, e))?;
    let steps = repair.steps();
    let Some(problem) = &steps.problem else {
        println!("nothing to repair: the log is clean");
        return Ok(());
    };
    println!("found: {problem}");
    for action in &steps.actions {
        println!("{} {action}", if args.dry_run { "would" } else { "will" });
    }
    if args.dry_run {
        return Ok(());
    }
    let done = repair.apply()?;
    if let Some(store) = &done.store {
        println!("{store}");
    }
    println!("repaired; `replaydb verify` should now be clean");
    Ok(())
}

pub fn run_stats(dir: &Path, options: &Options, args: &StatsArgs) -> CmdResult {
    let db = crate::cli::open_shared(dir, options)?;
    let s = db.stats()?;
    if args.json {
        println!("{}", serde_json::to_string(&s)?);
    } else {
        println!("records       {}", s.records);
        println!("events        {}", s.events);
        println!("streams       {}", s.streams);
        println!("segments      {}", s.segments);
        println!("wal bytes     {}", s.wal_bytes);
        println!("log first LSN {}", s.log_first_lsn);
        println!("first LSN     {}", s.first_lsn);
        println!("last LSN      {}", s.last_lsn);
        println!("history       {} batches", s.history_batches);
        println!(
            "store         {} bytes, checkpoint at LSN {}",
            s.store_bytes, s.checkpoint_lsn
        );
    }
    Ok(())
}

pub fn run_checkpoint(dir: &Path, options: &Options) -> CmdResult {
    let db = crate::cli::open_shared(dir, options)?;
    let done = db.checkpoint()?;
    if done.written {
        println!("checkpoint at LSN {}", done.covered_lsn);
    } else {
        println!(
            "nothing new since the checkpoint at LSN {}",
            done.covered_lsn
        );
    }
    for p in &done.log_removed {
        println!("deleted {p}");
    }
    println!(
        "deleted {} WAL segment(s); the log now starts at LSN {} (kept from the previous checkpoint, at LSN {})",
        done.log_removed.len(),
        done.log_first_lsn,
        done.previous_lsn
    );
    if done.aged_out_events > 0 {
        println!("{} event(s) aged out of the history", done.aged_out_events);
    }
    Ok(())
}

pub fn run_backup(dir: &Path, options: &Options, args: &BackupArgs) -> CmdResult {
    let db = crate::cli::open_shared(dir, options)?;
    let lsn = db.backup(&args.dest)?;
    println!(
        "backup in {} holds every event up to LSN {lsn}",
        args.dest.display()
    );
    Ok(())
}
