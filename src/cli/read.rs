//! `replaydb read` and `replaydb tail`.

use std::io::Write;
use std::path::Path;

use clap::Args;
use replaydb::{Database, Event, Options};

use crate::cli::{CmdResult, json};

/// Events fetched per page.
const PAGE_EVENTS: usize = 4096;

#[derive(Debug, Args)]
pub struct ReadArgs {
    /// First LSN to print.
    #[arg(long, default_value_t = 1)]
    from: u64,
    /// Print at most N events (default: all).
    #[arg(long)]
    limit: Option<usize>,
    /// Only events of this stream.
    #[arg(long)]
    stream: Option<String>,
    /// One JSON object per line: lsn, stream, version, data.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct TailArgs {
    /// First LSN to print (default: the next one committed).
    #[arg(long)]
    from: Option<u64>,
}

fn print_event(out: &mut impl Write, e: &Event, as_json: bool) -> std::io::Result<()> {
    if as_json {
        writeln!(out, "{}", json::event_json(e))
    } else {
        let data = match json::decode(&e.data) {
            Some(v) => v.to_string(),
            None => format!("<{} bytes>", e.data.len()),
        };
        writeln!(out, "{:>8}  {}@{}  {}", e.lsn, e.stream, e.version, data)
    }
}

pub fn run_read(dir: &Path, options: &Options, args: &ReadArgs) -> CmdResult {
    let db = crate::cli::open_shared(dir, options)?;
    let mut left = args.limit.unwrap_or(usize::MAX);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut from = args.from;
    while left > 0 {
        let page = match &args.stream {
            Some(s) => db.read_stream_from_lsn(s, from, left.min(PAGE_EVENTS))?,
            None => db.read(from, left.min(PAGE_EVENTS))?,
        };
        let Some(last) = page.last() else { break };
        from = last.lsn + 1;
        left -= page.len();
        for e in &page {
            if let Err(e) = print_event(&mut out, e, args.json) {
                return stdout_failed(e);
            }
        }
    }
    out.flush().or_else(stdout_failed)
}

/// A write to stdout failed: a reader that went away (piped to `head`) is
/// the normal end; anything else (a full disk) is an error, not a
/// silently short output.
fn stdout_failed(e: std::io::Error) -> CmdResult {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        Ok(())
    } else {
        Err(format!("write to standard output: {e}").into())
    }
}

pub fn run_tail(dir: &Path, options: &Options, args: &TailArgs) -> CmdResult {
    let db = crate::cli::open_shared(dir, options)?;
    let from = args.from.unwrap_or(db.last_lsn()? + 1);
    let mut out = std::io::stdout().lock();
    for event in db.subscribe(from)? {
        let event = event?;
        if let Err(e) = print_event(&mut out, &event, true).and_then(|_| out.flush()) {
            return stdout_failed(e);
        }
    }
    Ok(())
}
