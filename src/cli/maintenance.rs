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
    }
    Ok(())
}
