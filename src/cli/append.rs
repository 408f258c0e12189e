//! `replaydb append`.

use std::io::Write;
use std::path::Path;
use std::sync::mpsc;

use clap::Args;
use replaydb::{Database, ExpectedVersion, Options};
use serde_json::Value;

use crate::cli::{CmdResult, Failure, json};

/// Events taken from stdin into one batch at most.
const STDIN_BATCH_EVENTS_MAX: usize = 4096;
/// A JSON line may take this many times `record_bytes_max` (escapes make
/// JSON longer than the MessagePack stored); longer lines are refused
/// before they are read whole.
const STDIN_LINE_BYTES_PER_RECORD_BYTE: u64 = 8;

#[derive(Debug, Args)]
pub struct AppendArgs {
    /// The stream to append to.
    #[arg(long)]
    stream: String,
    /// The stream's version before the append: a number, `any` or `none`.
    #[arg(long = "expect-version", default_value = "any", value_parser = parse_expected)]
    expect_version: ExpectedVersion,
    /// JSON values, appended as one batch. `-` or nothing: JSON lines from stdin.
    json: Vec<String>,
}

fn parse_expected(s: &str) -> Result<ExpectedVersion, String> {
    match s {
        "any" => Ok(ExpectedVersion::Any),
        "none" => Ok(ExpectedVersion::NoStream),
        n => n
            .parse()
            .map(ExpectedVersion::Exact)
            .map_err(|_| format!("{n:?} is not a version number, `any` or `none`")),
    }
}

pub fn run(dir: &Path, options: &Options, args: &AppendArgs) -> CmdResult {
    replaydb::validate_stream_name(&args.stream)?;
    let from_stdin = args.json.is_empty() || args.json == ["-"];
    if !from_stdin {
        let mut values = Vec::new();
        for (i, text) in args.json.iter().enumerate() {
            let v: Value = serde_json::from_str(text)
                .map_err(|e| format!("argument {}: invalid JSON: {e}", i + 1))?;
            values.push(json::encode(&v));
        }
        let db = crate::cli::open_shared(dir, options)?;
        let done = db.append(&args.stream, args.expect_version, &values)?;
        let mut out = std::io::stdout().lock();
        for lsn in done.first_lsn..=done.last_lsn {
            writeln!(out, "{lsn}")?;
        }
        return Ok(());
    }
    let db = crate::cli::open_shared(dir, options)?;
    append_stdin(&db, &args.stream, args.expect_version)
}

enum Line {
    Event(Vec<u8>),
    Invalid { line: u64, error: String },
    ReadFailed(String),
}

/// Reads JSON lines on a thread of its own, so that lines arriving while
/// a group is being synced make up the next group.
fn append_stdin(db: &impl Database, stream: &str, first_expected: ExpectedVersion) -> CmdResult {
    let record_bytes_max = db.record_bytes_max();
    let line_bytes_max = record_bytes_max.saturating_mul(STDIN_LINE_BYTES_PER_RECORD_BYTE);
    let (tx, rx) = mpsc::sync_channel::<Line>(STDIN_BATCH_EVENTS_MAX * 4);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = Vec::new();
        for n in 1u64.. {
            let read = crate::cli::read_line_bounded(&mut stdin, line_bytes_max, &mut buf);
            let msg = match read {
                Err(e) => Line::ReadFailed(e.to_string()),
                Ok(None) => return,
                Ok(Some(false)) => Line::Invalid {
                    line: n,
                    error: format!("longer than {line_bytes_max} bytes"),
                },
                Ok(_) => match std::str::from_utf8(&buf) {
                    Err(e) => Line::Invalid {
                        line: n,
                        error: e.to_string(),
                    },
                    Ok(text) if text.trim().is_empty() => continue,
                    Ok(text) => match serde_json::from_str::<Value>(text) {
                        Ok(v) => Line::Event(json::encode(&v)),
                        Err(e) => Line::Invalid {
                            line: n,
                            error: e.to_string(),
                        },
                    },
                },
            };
            let stop = !matches!(msg, Line::Event(_));
            if tx.send(msg).is_err() || stop {
                return;
            }
        }
    });
    let mut expected = first_expected;
    let mut out = std::io::stdout().lock();
    let mut pending_failure: Option<Failure> = None;
    // A line read but left for the next batch, which it would not fit.
    let mut carried: Option<Line> = None;
    while let Some(first) = carried.take().or_else(|| rx.recv().ok()) {
        let mut batch = Vec::new();
        // The encoded batch (see docs/FORMAT.md) must stay within the
        // record limit: the array headers, the stream, and per event its
        // bytes plus a bin header of at most 5.
        let mut batch_bytes = 16 + stream.len() as u64;
        let mut next = Some(first);
        while let Some(line) = next.take() {
            match line {
                Line::Event(data) => {
                    let size = data.len() as u64 + 5;
                    if !batch.is_empty() && batch_bytes + size > record_bytes_max {
                        carried = Some(Line::Event(data));
                        break;
                    }
                    batch_bytes += size;
                    batch.push(data);
                }
                Line::Invalid { line, error } => {
                    pending_failure =
                        Some(format!("stdin line {line}: invalid JSON: {error}").into());
                    break;
                }
                Line::ReadFailed(e) => {
                    pending_failure = Some(format!("reading stdin: {e}").into());
                    break;
                }
            }
            if batch.len() < STDIN_BATCH_EVENTS_MAX {
                next = rx.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            let done = db.append(stream, expected, &batch)?;
            expected = ExpectedVersion::Exact(done.version);
            let mut text = String::new();
            for lsn in done.first_lsn..=done.last_lsn {
                text.push_str(&lsn.to_string());
                text.push('\n');
            }
            // Printed only now that the batch is durable.
            if out
                .write_all(text.as_bytes())
                .and_then(|_| out.flush())
                .is_err()
            {
                return Err(Failure {
                    message: String::new(),
                    code: 1,
                });
            }
        }
        if let Some(f) = pending_failure {
            return Err(f);
        }
    }
    Ok(())
}
