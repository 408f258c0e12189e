//! `replaydb runtime ...`: worker runtimes, driven from a shell.

use std::io::Write;
use std::path::Path;

use clap::{Args, Subcommand};
use replaydb::Options;
use replaydb::runtime::{
    CapabilityRequest, ConfigBundleRef, CreateWorkerRequest, EventCursor, ProfileSelector, Runtime,
    RuntimeEvent, RuntimeId, RuntimeLimits, RuntimeOptions, RuntimeSummary, Runtimes,
    TranscriptEntry, TranscriptQuery, WorkerId, WorkerInput, WorkerIntent, WorkerRef,
};

use crate::cli::{CmdResult, Failure};

#[derive(Debug, Args)]
pub struct RuntimeArgs {
    #[command(subcommand)]
    command: RuntimeCommand,
}

#[derive(Debug, Subcommand)]
enum RuntimeCommand {
    /// List runtimes, in id order.
    Ls {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Create a runtime (or open an existing one, which keeps its own name
    /// and limits); print its id.
    Create {
        /// Its id (generated when not given).
        #[arg(long)]
        id: Option<String>,
        /// A name for people.
        #[arg(long)]
        name: Option<String>,
        /// Transcript entries per page at most.
        #[arg(long, value_name = "N", default_value_t = RuntimeLimits::default().max_transcript_projection_items)]
        max_transcript_page: usize,
        /// Events per page at most.
        #[arg(long, value_name = "N", default_value_t = RuntimeLimits::default().max_event_batch_items)]
        max_event_batch: usize,
    },
    /// Show a runtime's summary as JSON.
    Show {
        /// The runtime.
        id: String,
    },
    /// Stop a runtime (its running workers become stopped); print the
    /// event id.
    Stop {
        /// The runtime.
        id: String,
    },
    /// A page of a runtime's events; where the next page starts goes to
    /// stderr as `next: --from N`.
    Events {
        /// The runtime.
        id: String,
        /// The first event id.
        #[arg(long, value_name = "N", default_value_t = 1)]
        from: u64,
        /// Events at most (default and most: the runtime's limit).
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
        /// Keep printing events as they come, until the runtime is stopped
        /// (or interrupted).
        #[arg(long)]
        follow: bool,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// A page of a worker's transcript; where the next page starts goes to
    /// stderr as `next: --start N`.
    Transcript {
        /// The runtime.
        id: String,
        /// The worker.
        worker: String,
        /// The first entry's index (0-based).
        #[arg(long, value_name = "N", default_value_t = 0)]
        start: usize,
        /// Entries at most (default and most: the runtime's limit).
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// List a runtime's workers, in id order.
    Workers {
        /// The runtime.
        id: String,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// A runtime's diagnostics.
    Diagnostics {
        /// The runtime.
        id: String,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Create, drive and end workers.
    Worker(WorkerArgs),
}

#[derive(Debug, Args)]
struct WorkerArgs {
    #[command(subcommand)]
    command: WorkerCommand,
}

#[derive(Debug, Subcommand)]
enum WorkerCommand {
    /// Create a worker; print its id.
    Create {
        /// The runtime.
        id: String,
        /// A task worker with this objective (default: an assistant).
        #[arg(long, conflicts_with = "role")]
        task: Option<String>,
        /// A worker in this role.
        #[arg(long)]
        role: Option<String>,
        /// What an assistant or a role is for.
        #[arg(long, conflicts_with = "task")]
        purpose: Option<String>,
        /// `builtin:NAME` or `named:NAME` (default: the runtime's).
        #[arg(long, value_parser = parse_profile)]
        profile: Option<ProfileSelector>,
        /// A configuration bundle id.
        #[arg(long)]
        bundle: Option<String>,
        /// A capability to request (repeat for more).
        #[arg(long = "capability", value_name = "NAME")]
        capabilities: Vec<String>,
        /// The whole request as JSON instead of the flags above.
        #[arg(long, conflicts_with_all = ["task", "role", "purpose", "profile", "bundle", "capabilities"])]
        request: Option<String>,
    },
    /// Give a worker an input; print the transcript sequence and the event
    /// id once it is acknowledged (durable, unless --buffered-ms). With
    /// `--stdin`, read `WORKER<TAB>CONTENT` lines and print each input's
    /// event id once it is acknowledged.
    Send {
        /// The runtime.
        id: String,
        /// The worker (not with --stdin).
        #[arg(required_unless_present = "stdin")]
        worker: Option<String>,
        /// The content (not with --stdin).
        #[arg(required_unless_present = "stdin")]
        content: Option<String>,
        /// A system input rather than a user's.
        #[arg(long)]
        system: bool,
        /// Read inputs from stdin, one per line.
        #[arg(long, conflicts_with_all = ["worker", "content"])]
        stdin: bool,
    },
    /// Stop a worker; print its status and event id.
    Stop {
        /// The runtime.
        id: String,
        /// The worker.
        worker: String,
        /// Why (the event's message).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Cancel a worker; print its status and event id.
    Cancel {
        /// The runtime.
        id: String,
        /// The worker.
        worker: String,
        /// Why (the event's message).
        #[arg(long)]
        reason: Option<String>,
    },
}

fn parse_profile(s: &str) -> Result<ProfileSelector, String> {
    match s.split_once(':') {
        Some(("builtin", name)) if !name.is_empty() => {
            Ok(ProfileSelector::Builtin(name.to_string()))
        }
        Some(("named", name)) if !name.is_empty() => Ok(ProfileSelector::Named(name.to_string())),
        _ => Err(format!("{s:?}: expected builtin:NAME or named:NAME")),
    }
}

fn runtime_id(id: &str) -> Result<RuntimeId, Failure> {
    RuntimeId::new(id).ok_or_else(|| usage("a runtime id must not be blank"))
}

fn worker_ref(runtime: &Runtime, worker: &str) -> Result<WorkerRef, Failure> {
    let w = WorkerId::new(worker).ok_or_else(|| usage("a worker id must not be blank"))?;
    Ok(WorkerRef::new(runtime.runtime_id().clone(), w))
}

fn usage(message: &str) -> Failure {
    Failure {
        message: message.to_string(),
        code: 2,
    }
}

fn summary_line(s: &RuntimeSummary) -> String {
    format!(
        "{}\t{:?}\tworkers {} (active {}, stopped {}, cancelled {})\tevents {}\t{}",
        s.runtime_id,
        s.status,
        s.worker_count,
        s.active_worker_count,
        s.stopped_worker_count,
        s.cancelled_worker_count,
        s.last_event_id,
        s.display_name.as_deref().unwrap_or("-")
    )
}

fn print_event(out: &mut impl Write, e: &RuntimeEvent, json: bool) -> Result<(), Failure> {
    if json {
        writeln!(out, "{}", serde_json::to_string(e)?)?;
    } else {
        let kind = serde_json::to_value(&e.kind)?;
        writeln!(
            out,
            "{}\t{}\t{}\t{}",
            e.id,
            kind["kind"].as_str().unwrap_or("?"),
            e.worker_ref.as_ref().map_or("-", |w| w.worker_id.as_str()),
            e.message
        )?;
    }
    Ok(())
}

fn print_entry(out: &mut impl Write, e: &TranscriptEntry, json: bool) -> Result<(), Failure> {
    if json {
        writeln!(out, "{}", serde_json::to_string(e)?)?;
    } else {
        let role = serde_json::to_value(e.role)?;
        writeln!(
            out,
            "{}\t{}\tevent {}\t{}",
            e.sequence,
            role.as_str().unwrap_or("?"),
            e.event_id,
            e.content
        )?;
    }
    Ok(())
}

pub fn run(dir: &Path, options: &Options, args: &RuntimeArgs) -> CmdResult {
    let db = crate::cli::open_shared(dir, options)?;
    let runtimes = Runtimes::shared(&db);
    let open = |id: &str| -> Result<Runtime, Failure> { Ok(runtimes.runtime(&runtime_id(id)?)?) };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match &args.command {
        RuntimeCommand::Ls { json } => {
            for s in runtimes.list()? {
                if *json {
                    writeln!(out, "{}", serde_json::to_string(&s)?)?;
                } else {
                    writeln!(out, "{}", summary_line(&s))?;
                }
            }
        }
        RuntimeCommand::Create {
            id,
            name,
            max_transcript_page,
            max_event_batch,
        } => {
            let runtime = runtimes.open_runtime(RuntimeOptions {
                runtime_id: id.as_deref().map(runtime_id).transpose()?,
                display_name: name.clone(),
                limits: RuntimeLimits {
                    max_transcript_projection_items: *max_transcript_page,
                    max_event_batch_items: *max_event_batch,
                },
            })?;
            writeln!(out, "{}", runtime.runtime_id())?;
        }
        RuntimeCommand::Show { id } => {
            writeln!(
                out,
                "{}",
                serde_json::to_string_pretty(&open(id)?.summary()?)?
            )?;
        }
        RuntimeCommand::Stop { id } => {
            writeln!(out, "{}", open(id)?.stop_runtime()?)?;
        }
        RuntimeCommand::Events {
            id,
            from,
            limit,
            follow,
            json,
        } => {
            let runtime = open(id)?;
            let limit = &limit.unwrap_or(runtime.summary()?.limits.max_event_batch_items);
            let cursor = EventCursor {
                runtime_id: runtime.runtime_id().clone(),
                next_event_id: *from,
            };
            if *follow {
                let mut sub = runtime.subscribe_events(cursor)?;
                while let Some(batch) = sub.next_blocking((*limit).max(1))? {
                    for e in &batch.events {
                        print_event(&mut out, e, *json)?;
                    }
                    out.flush()?;
                }
                return Ok(());
            }
            let batch = runtime.read_events(&cursor, *limit)?;
            for e in &batch.events {
                print_event(&mut out, e, *json)?;
            }
            if batch.has_more {
                eprintln!("next: --from {}", batch.cursor.next_event_id);
            }
        }
        RuntimeCommand::Transcript {
            id,
            worker,
            start,
            limit,
            json,
        } => {
            let runtime = open(id)?;
            let limit = &limit.unwrap_or(runtime.summary()?.limits.max_transcript_projection_items);
            let page = runtime.transcript_projection(
                &worker_ref(&runtime, worker)?,
                TranscriptQuery::new(*start, *limit),
            )?;
            for e in &page.items {
                print_entry(&mut out, e, *json)?;
            }
            if let Some(next) = page.next_start {
                eprintln!("next: --start {next}");
            }
        }
        RuntimeCommand::Workers { id, json } => {
            for w in open(id)?.list_workers()? {
                if *json {
                    writeln!(out, "{}", serde_json::to_string(&w)?)?;
                } else {
                    writeln!(
                        out,
                        "{}\t{:?}\ttranscript {}\tlast event {}",
                        w.worker_id, w.status, w.transcript_len, w.last_event_id
                    )?;
                }
            }
        }
        RuntimeCommand::Diagnostics { id, json } => {
            for d in open(id)?.diagnostics()? {
                if *json {
                    writeln!(out, "{}", serde_json::to_string(&d)?)?;
                } else {
                    writeln!(
                        out,
                        "{}\t{:?}\t{}\t{}\t{}",
                        d.id,
                        d.severity,
                        d.code,
                        d.worker_ref.as_ref().map_or("-", |w| w.worker_id.as_str()),
                        d.message
                    )?;
                }
            }
        }
        RuntimeCommand::Worker(w) => run_worker(
            &open(runtime_arg(&w.command))?,
            &w.command,
            replaydb::Database::record_bytes_max(&db),
            &mut out,
        )?,
    }
    Ok(())
}

fn runtime_arg(c: &WorkerCommand) -> &str {
    match c {
        WorkerCommand::Create { id, .. }
        | WorkerCommand::Send { id, .. }
        | WorkerCommand::Stop { id, .. }
        | WorkerCommand::Cancel { id, .. } => id,
    }
}

/// `record_bytes_max`: the database's record limit (a stdin line is one
/// record, and a longer one is never read whole).
fn run_worker(
    runtime: &Runtime,
    command: &WorkerCommand,
    record_bytes_max: u64,
    out: &mut impl Write,
) -> CmdResult {
    match command {
        WorkerCommand::Create {
            task,
            role,
            purpose,
            profile,
            bundle,
            capabilities,
            request,
            ..
        } => {
            let request = match request {
                Some(json) => {
                    serde_json::from_str(json).map_err(|e| usage(&format!("--request: {e}")))?
                }
                None => CreateWorkerRequest {
                    intent: match (task, role) {
                        (Some(objective), _) => WorkerIntent::Task {
                            objective: objective.clone(),
                        },
                        (None, Some(role)) => WorkerIntent::Role {
                            role: role.clone(),
                            purpose: purpose.clone(),
                        },
                        (None, None) => WorkerIntent::Assistant {
                            purpose: purpose.clone(),
                        },
                    },
                    profile: profile.clone().unwrap_or_default(),
                    config_bundle: bundle.clone().map(|id| ConfigBundleRef { id }),
                    requested_capabilities: capabilities
                        .iter()
                        .map(CapabilityRequest::named)
                        .collect(),
                    ..CreateWorkerRequest::default()
                },
            };
            writeln!(out, "{}", runtime.create_worker(request)?.worker_id)?;
        }
        WorkerCommand::Send {
            worker,
            content,
            system,
            stdin,
            ..
        } => {
            let input = |content: String| {
                if *system {
                    WorkerInput::system(content)
                } else {
                    WorkerInput::user(content)
                }
            };
            if *stdin {
                // An input is one record: a line longer than a record can
                // never be accepted, and is not read whole.
                let line_bytes_max = record_bytes_max;
                let mut stdin = std::io::stdin().lock();
                let mut buf = Vec::new();
                for n in 1u64.. {
                    let bad = |why: &str| Failure {
                        message: format!("stdin line {n}: {why}"),
                        code: 1,
                    };
                    match crate::cli::read_line_bounded(&mut stdin, line_bytes_max, &mut buf)? {
                        None => break,
                        Some(false) => {
                            return Err(bad(&format!("longer than {line_bytes_max} bytes")));
                        }
                        Some(true) => {}
                    }
                    let line = std::str::from_utf8(&buf).map_err(|e| bad(&e.to_string()))?;
                    let line = line.strip_suffix('\n').unwrap_or(line);
                    let Some((w, content)) = line.split_once('\t') else {
                        return Err(bad("expected WORKER<TAB>CONTENT"));
                    };
                    let ack =
                        runtime.send_input(&worker_ref(runtime, w)?, input(content.to_string()))?;
                    writeln!(out, "{}", ack.event_id)?;
                    out.flush()?;
                }
            } else {
                let (Some(w), Some(content)) = (worker, content) else {
                    return Err(usage("a worker and a content, or --stdin"));
                };
                let ack = runtime.send_input(&worker_ref(runtime, w)?, input(content.clone()))?;
                writeln!(out, "{}\t{}", ack.transcript_sequence, ack.event_id)?;
            }
        }
        WorkerCommand::Stop { worker, reason, .. }
        | WorkerCommand::Cancel { worker, reason, .. } => {
            let w = worker_ref(runtime, worker)?;
            let ack = if matches!(command, WorkerCommand::Stop { .. }) {
                runtime.stop_worker(&w, reason.clone())?
            } else {
                runtime.cancel_worker(&w, reason.clone())?
            };
            writeln!(out, "{:?}\t{}", ack.status, ack.event_id)?;
        }
    }
    Ok(())
}
