//! `replaydb bench`: the same work through the disk's own limit,
//! replaydb, the seeds' layouts and redb used directly, in one run on the
//! disk of `--dir`, side by side (as `etcdctl check perf` lets a user
//! judge a disk before trusting it).
//!
//! Every case runs its operation for a time budget (0.8 s with `--quick`,
//! 3 s otherwise) after its setup, and reports operations a second; a
//! durable case also says what fraction of the disk's own fdatasync rate
//! it reaches, and every case its ratio to the replaydb operation doing
//! the same work. The durable-write cases, whose figures a cloud disk's
//! moods move most, run interleaved: in rounds, each its share of the
//! budget in every round, and the median round is reported, so a slow
//! spell of the disk hits them all alike (the sequential write, which
//! can spend a disk's burst credit, runs last). The criterion benches (`benches/`) hold the detail and
//! SQLite; this is the figure a user gets on their own machine.

mod cases;
mod seeds;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;

use crate::cli::{CmdResult, Failure};

/// `replaydb bench` arguments.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Each case for 0.8 s and smaller histories: the whole run in under
    /// 30 s.
    #[arg(long)]
    pub quick: bool,
    /// One JSON object per case on stdout (`name`, `ops_per_sec`,
    /// `ratio_vs_replaydb`, ...), instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Measure on the disk of PATH: a temporary directory is made in it
    /// and removed afterwards.
    #[arg(long, value_name = "PATH", default_value = ".")]
    pub dir: PathBuf,
}

/// How big and how long.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Plan {
    /// Each case's operation runs this long (an interleaved case in all
    /// its rounds together).
    pub budget: Duration,
    /// Rounds of the interleaved cases.
    pub rounds: u32,
    /// Events of the runtime whose `read_events` page is read.
    pub history_events: u64,
    /// Keys of the bucket whose `entries()` is taken.
    pub kv_keys: usize,
    /// Allocations in the registry table changed.
    pub registry_pods: usize,
}

impl Plan {
    fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                budget: Duration::from_millis(800),
                rounds: 3,
                history_events: 5_000,
                kv_keys: 2_000,
                registry_pods: 100,
            }
        } else {
            Plan {
                budget: Duration::from_secs(3),
                rounds: 5,
                history_events: 100_000,
                kv_keys: 10_000,
                registry_pods: 100,
            }
        }
    }

    /// A rough length, stated before the run: the budgets, and the
    /// setups (building the runtime's history, filling the buckets).
    fn estimate(&self, cases: usize) -> Duration {
        let setup_s = self.history_events as f64 / 40_000.0 + self.kv_keys as f64 / 5_000.0 + 2.0;
        self.budget * u32::try_from(cases).unwrap_or(u32::MAX) + Duration::from_secs_f64(setup_s)
    }
}

/// What one case measured.
#[derive(Clone, Debug)]
pub(crate) struct Measured {
    pub ops_per_sec: f64,
    /// Appends each fsync carried (replaydb's concurrent case).
    pub events_per_fsync: Option<f64>,
}

impl Measured {
    pub(crate) fn rate(ops_per_sec: f64) -> Measured {
        Measured {
            ops_per_sec,
            events_per_fsync: None,
        }
    }
}

/// One case of the run.
pub(crate) struct Case {
    /// Stable, for `--json`.
    pub name: &'static str,
    /// For the table.
    pub what: String,
    /// The replaydb case doing the same work, for the ratio (itself for
    /// a replaydb case; `None`: nothing alike).
    pub vs: Option<&'static str>,
    /// Whether each operation is durable when it returns (the fraction
    /// of the disk's fdatasync rate is shown for these).
    pub durable: bool,
    /// Run in rounds with the other interleaved cases (see above).
    pub interleaved: bool,
    pub run: CaseFn,
}

/// A case's setup and timed operation, in a fresh directory, for a plan.
pub(crate) type CaseFn = Box<dyn Fn(&std::path::Path, Plan) -> Result<Measured, String>>;

/// A case and what it measured.
struct Row {
    name: &'static str,
    what: String,
    vs: Option<&'static str>,
    durable: bool,
    measured: Measured,
}

pub fn run(args: &BenchArgs) -> CmdResult {
    let plan = Plan::new(args.quick);
    std::fs::create_dir_all(&args.dir).map_err(|e| seeds::io_error("create", &args.dir, e))?;
    let signals = Signals::install()?;
    let tmp = tempfile::Builder::new()
        .prefix(".replaydb-bench-")
        .tempdir_in(&args.dir)
        .map_err(|e| seeds::io_error("make a temporary directory in", &args.dir, e))?;
    signals.remove_on_signal(tmp.path().to_path_buf());
    let cases = cases::all(plan);
    let interleaved = cases.iter().filter(|c| c.interleaved).count();
    let steps = interleaved * plan.rounds.max(1) as usize + (cases.len() - interleaved);
    let quiet = !std::io::stdout().is_terminal() || !std::io::stderr().is_terminal();
    if !quiet {
        eprintln!(
            "replaydb bench: {} cases, about {:.0} s, on the disk of {}",
            cases.len(),
            plan.estimate(cases.len()).as_secs_f64(),
            args.dir.display()
        );
    }
    let bar = ProgressBar::with_draw_target(
        Some(steps as u64),
        if quiet {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        },
    );
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} {elapsed} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    let (mixed, single): (Vec<Case>, Vec<Case>) = cases.into_iter().partition(|c| c.interleaved);
    let mut measured: Vec<Vec<Measured>> = vec![Vec::new(); mixed.len()];
    let per_round = Plan {
        budget: plan.budget / plan.rounds.max(1),
        ..plan
    };
    let run_one = |case: &Case, plan: Plan, n: usize| -> Result<Measured, Failure> {
        bar.set_message(case.what.clone());
        let dir = tmp.path().join(format!("{n:03}-{}", case.name));
        std::fs::create_dir_all(&dir).map_err(|e| seeds::io_error("create", &dir, e))?;
        let m = (case.run)(&dir, plan).map_err(|e| Failure {
            message: format!("bench case {}: {e}", case.name),
            code: 1,
        })?;
        // Each case's files go before the next: the disk is measured with
        // what the case wrote gone.
        let _ = std::fs::remove_dir_all(&dir);
        bar.inc(1);
        Ok(m)
    };
    let mut n = 0;
    for round in 0..plan.rounds.max(1) as usize {
        // Each round starts one case later: no case always follows the
        // same one (whose files were just removed).
        for k in 0..mixed.len() {
            let at = (round + k) % mixed.len();
            let (Some(case), Some(out)) = (mixed.get(at), measured.get_mut(at)) else {
                continue;
            };
            out.push(run_one(case, per_round, n).inspect_err(|_| bar.finish_and_clear())?);
            n += 1;
        }
    }
    let mut rows: Vec<Row> = mixed
        .into_iter()
        .zip(measured)
        .map(|(case, rounds)| Row {
            name: case.name,
            what: case.what,
            vs: case.vs,
            durable: case.durable,
            measured: median(rounds),
        })
        .collect();
    for case in single {
        let m = run_one(&case, plan, n).inspect_err(|_| bar.finish_and_clear())?;
        n += 1;
        rows.push(Row {
            name: case.name,
            what: case.what,
            vs: case.vs,
            durable: case.durable,
            measured: m,
        });
    }
    bar.finish_and_clear();
    let took = started.elapsed();
    if args.json {
        print_json(&rows);
    } else {
        print_table(&rows, took, args.quick);
    }
    Ok(())
}

/// The median round by its rate (an odd number of rounds), with that
/// round's events per fsync.
fn median(mut rounds: Vec<Measured>) -> Measured {
    rounds.sort_by(|a, b| a.ops_per_sec.total_cmp(&b.ops_per_sec));
    let mid = rounds.len() / 2;
    if mid >= rounds.len() {
        return Measured::rate(0.0);
    }
    rounds.swap_remove(mid)
}

/// SIGINT and SIGTERM, caught from before the run's directory exists.
struct Signals {
    rt: tokio::runtime::Runtime,
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Result<Signals, Failure> {
        use tokio::signal::unix::{SignalKind, signal};
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Failure::from(format!("start the signal handler: {e}")))?;
        let (term, int) = {
            let _entered = rt.enter();
            let term = signal(SignalKind::terminate());
            let int = signal(SignalKind::interrupt());
            (term, int)
        };
        let caught = |e: std::io::Error| Failure::from(format!("catch signals: {e}"));
        Ok(Signals {
            term: term.map_err(caught)?,
            int: int.map_err(caught)?,
            rt,
        })
    }

    /// On SIGINT or SIGTERM, removes `dir` (up to a 256 MiB file and a
    /// runtime's history) and exits 130: an interrupted bench leaves
    /// nothing in `--dir`. Best effort: a case still writing may race the
    /// removal, and the exit ends it.
    fn remove_on_signal(self, dir: PathBuf) {
        let Signals {
            rt,
            mut term,
            mut int,
        } = self;
        let spawned = std::thread::Builder::new()
            .name("replaydb-bench-signals".into())
            .spawn(move || {
                let why = rt.block_on(async {
                    tokio::select! {
                        _ = term.recv() => "SIGTERM",
                        _ = int.recv() => "SIGINT",
                    }
                });
                let _ = std::fs::remove_dir_all(&dir);
                eprintln!(
                    "replaydb bench: stopped on {why}; removed {}",
                    dir.display()
                );
                std::process::exit(130);
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "no signal handler: an interrupted bench leaves its directory");
        }
    }
}

fn rate_of(rows: &[Row], name: &str) -> Option<f64> {
    rows.iter()
        .find(|r| r.name == name)
        .map(|r| r.measured.ops_per_sec)
}

fn ratio(rows: &[Row], row: &Row) -> Option<f64> {
    let base = rate_of(rows, row.vs?)?;
    (base > 0.0).then(|| row.measured.ops_per_sec / base)
}

fn fraction_of_disk(rows: &[Row], row: &Row) -> Option<f64> {
    let disk = rate_of(rows, cases::DISK_FDATASYNC)?;
    (row.durable && disk > 0.0).then(|| row.measured.ops_per_sec / disk)
}

fn print_json(rows: &[Row]) {
    for row in rows {
        let line = json!({
            "name": row.name,
            "description": row.what,
            "ops_per_sec": row.measured.ops_per_sec,
            "ratio_vs_replaydb": ratio(rows, row),
            "replaydb_case": row.vs,
            "durable": row.durable,
            "fraction_of_fdatasync": fraction_of_disk(rows, row),
            "events_per_fsync": row.measured.events_per_fsync,
            "unit": if row.name == cases::DISK_SEQUENTIAL { "MiB/s" } else { "ops/s" },
        });
        println!("{line}");
    }
}

fn print_table(rows: &[Row], took: Duration, quick: bool) {
    println!("| case | ops/s | vs replaydb | of the disk's fdatasync rate |");
    println!("|---|---:|---:|---:|");
    for row in rows {
        let mut what = row.what.clone();
        if let Some(per) = row.measured.events_per_fsync {
            what.push_str(&format!(" ({per:.1} events per fsync)"));
        }
        println!(
            "| {what} | {:.0} | {} | {} |",
            row.measured.ops_per_sec,
            ratio(rows, row).map_or("-".to_string(), |r| if r < 0.01 {
                format!("{r:.4}x")
            } else {
                format!("{r:.2}x")
            }),
            fraction_of_disk(rows, row).map_or("-".to_string(), |f| format!("{:.0} %", f * 100.0)),
        );
    }
    // What a user chooses by: is replaydb ahead of every other durable
    // write here, and does group commit share the fsync?
    let behind: Vec<&str> = rows
        .iter()
        .filter(|r| r.durable && !r.name.starts_with("replaydb") && !r.name.starts_with("disk"))
        // No ratio (a replaydb rate of 0) is not "ahead" either.
        .filter(|r| ratio(rows, r).is_none_or(|x| x >= 1.0))
        .map(|r| r.name)
        .collect();
    if behind.is_empty() {
        println!("replaydb is ahead of every seed layout and of redb on durable writes");
    } else {
        println!(
            "replaydb is NOT ahead on durable writes of: {}",
            behind.join(", ")
        );
    }
    if let Some(per) = rows
        .iter()
        .find(|r| r.name == cases::REPLAYDB_APPEND_16)
        .and_then(|r| r.measured.events_per_fsync)
    {
        println!("16 writers share each fsync among {per:.1} appends (goal: at least 13)");
    }
    println!(
        "{} run in {:.1} s",
        if quick { "quick" } else { "full" },
        took.as_secs_f64()
    );
}
