//! `replaydb registry ...`: the pod-registry table.

use std::path::Path;

use clap::{Args, Subcommand};
use replaydb::Options;
use replaydb::registry::{Allocation, Registry};

use crate::cli::{CmdResult, Failure};

#[derive(Debug, Args)]
pub struct RegistryArgs {
    #[command(subcommand)]
    command: RegistryCommand,
}

#[derive(Debug, Subcommand)]
enum RegistryCommand {
    /// List allocations in registration order.
    Ls {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Show one pod's allocation as JSON.
    Show {
        /// The pod.
        name: String,
    },
    /// What changed for a pod, when and by which pid, a page at a time;
    /// where the next page starts goes to stderr as `next: --from N`.
    History {
        /// The pod.
        name: String,
        /// The first LSN to show.
        #[arg(long, value_name = "LSN", default_value_t = 1)]
        from: u64,
        /// Entries per page (the entries of one LSN are kept together).
        #[arg(long, value_name = "N", default_value_t = 100)]
        limit: usize,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Remove pods whose process is dead; print their names.
    Reclaim,
}

fn rules(a: &[replaydb::registry::ScopeRule]) -> String {
    a.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn line(a: &Allocation) -> String {
    format!(
        "{}\tpid {}\t{}\tparent {}\tsegment {}\tallow [{}]\tdeny [{}]",
        a.pod_name,
        a.pid,
        a.socket.display(),
        a.delegated_from.as_deref().unwrap_or("-"),
        a.segment_id
            .map_or("(reserved)".to_string(), |s| s.to_string()),
        rules(&a.allow),
        rules(&a.deny)
    )
}

pub fn run(dir: &Path, options: &Options, args: &RegistryArgs) -> CmdResult {
    let db = crate::cli::open_shared(dir, options)?;
    let registry = Registry::shared(&db);
    match &args.command {
        RegistryCommand::Ls { json } => {
            for a in registry.allocations()? {
                if *json {
                    println!("{}", serde_json::to_string(&a)?);
                } else {
                    println!("{}", line(&a));
                }
            }
        }
        RegistryCommand::Show { name } => match registry.find(name)? {
            Some(a) => println!("{}", serde_json::to_string_pretty(&a)?),
            None => {
                return Err(Failure {
                    message: format!("unknown pod {name:?}"),
                    code: 1,
                });
            }
        },
        RegistryCommand::History {
            name,
            from,
            limit,
            json,
        } => {
            let page = registry.history(name, *from, *limit)?;
            for h in &page.entries {
                if *json {
                    println!("{}", serde_json::to_string(h)?);
                } else {
                    println!(
                        "{}\t{}\tpid {}\t{}\t{}",
                        h.lsn,
                        h.at_unix_ms,
                        h.by_pid,
                        h.op,
                        serde_json::to_string(&h.change)?
                    );
                }
            }
            if let Some(next) = page.next {
                eprintln!("next: --from {next}");
            }
        }
        RegistryCommand::Reclaim => {
            for name in registry.reclaim_stale()? {
                println!("{name}");
            }
        }
    }
    Ok(())
}
