//! `replaydb verify`, `repair` and `stats`.

use std::path::Path;

use clap::Args;
use replaydb::{Db, Options, Repair};

use crate::cli::CmdResult;

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

pub fn run_verify(dir: &Path, options: &Options) -> CmdResult {
    let report = replaydb::verify(dir, options)?;
    println!(
        "ok: {} segments, {} records, {} events, last LSN {}",
        report.segments, report.records, report.events, report.last_lsn
    );
    for (path, lsn) in &report.snapshots {
        println!(
            "ok: snapshot {} covers LSN {lsn}; the log holds LSN {} on",
            path.display(),
            report.first_lsn
        );
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
    let repair = Repair::plan(dir, options)?;
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
    repair.apply()?;
    println!("repaired; `replaydb verify` should now be clean");
    Ok(())
}

pub fn run_stats(dir: &Path, options: &Options, args: &StatsArgs) -> CmdResult {
    let db = Db::open(dir, options.clone())?;
    let s = db.stats()?;
    if args.json {
        println!("{}", serde_json::to_string(&s)?);
    } else {
        println!("records     {}", s.records);
        println!("events      {}", s.events);
        println!("streams     {}", s.streams);
        println!("segments    {}", s.segments);
        println!("wal bytes   {}", s.wal_bytes);
        println!("first LSN   {}", s.first_lsn);
        println!("last LSN    {}", s.last_lsn);
        println!(
            "snapshot    LSN {}, {} bytes, {} generations",
            s.snapshot_lsn, s.snapshot_bytes, s.snapshot_generations
        );
    }
    Ok(())
}

pub fn run_snapshot(dir: &Path, options: &Options, name_deletions: bool) -> CmdResult {
    let db = Db::open(dir, options.clone())?;
    let done = db.snapshot()?;
    if done.written {
        println!(
            "snapshot at LSN {}: {}",
            done.covered_lsn,
            done.path.display()
        );
    } else {
        println!("nothing new since the snapshot at LSN {}", done.covered_lsn);
    }
    if name_deletions {
        for p in done.deleted_snapshots.iter().chain(&done.deleted_segments) {
            println!("deleted {}", p.display());
        }
    }
    println!(
        "deleted {} old snapshot(s) and {} WAL segment(s); the log now starts at LSN {}",
        done.deleted_snapshots.len(),
        done.deleted_segments.len(),
        db.stats()?.first_lsn
    );
    Ok(())
}

pub fn run_backup(dir: &Path, options: &Options, args: &BackupArgs) -> CmdResult {
    let db = Db::open(dir, options.clone())?;
    let lsn = db.backup(&args.dest)?;
    println!(
        "backup in {} holds every event up to LSN {lsn}",
        args.dest.display()
    );
    Ok(())
}
