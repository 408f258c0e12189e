//! `replaydb kv ...`: buckets of keys, driven from a shell.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use clap::{Args, Subcommand};
use replaydb::Options;
use replaydb::kv::{Key, KvError, KvStore, StoreOutcome, WatchEvent};
use serde_json::json;

use crate::cli::{CmdResult, Failure};

#[derive(Debug, Args)]
pub struct KvArgs {
    #[command(subcommand)]
    command: KvCommand,
}

#[derive(Debug, Subcommand)]
enum KvCommand {
    /// Write a value; print `created REV` (or `exists REV` with --create
    /// when the key was there).
    Put {
        /// The bucket (created if missing).
        bucket: String,
        /// The key.
        key: String,
        /// The value.
        value: String,
        /// Create only: leave an existing key as it is.
        #[arg(long)]
        create: bool,
        /// Lease the key to this process, for a bucket with this TTL in
        /// seconds (when it creates the bucket): once the process is gone,
        /// whichever process next has the database open with a KV store
        /// for longer than the TTL (a service, `kv watch`) deletes it.
        /// Without it, the key stays until deleted.
        #[arg(long, value_name = "S")]
        ttl: Option<u64>,
        /// Keep the lease alive until stdin closes (or the process is
        /// killed), as a service would.
        #[arg(long, requires = "ttl")]
        keep_alive: bool,
    },
    /// Replace a value only if it is EXPECTED now; print `created REV`.
    Cas {
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
        /// The value it must have now.
        expected: String,
        /// The new value.
        value: String,
    },
    /// Print a value (exit 1 if the key is missing).
    Get {
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
    },
    /// Delete a key; print the revision.
    Del {
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
    },
    /// List a bucket's keys (with --values, their values too).
    Ls {
        /// The bucket.
        bucket: String,
        /// Only keys starting with this.
        #[arg(long, default_value = "")]
        prefix: String,
        /// Values too (one JSON object per line with --json).
        #[arg(long)]
        values: bool,
        /// Only how many.
        #[arg(long, conflicts_with = "values")]
        count: bool,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Follow a bucket: one JSON line per event with its revision; with
    /// --from REV, the changes from that revision on (resume with the
    /// revision after the last one printed), else a snapshot first.
    Watch {
        /// The bucket.
        bucket: String,
        /// Only keys starting with this.
        #[arg(long, default_value = "")]
        prefix: String,
        /// The first revision to print.
        #[arg(long, value_name = "REV")]
        from: Option<u64>,
        /// Stop after this many events.
        #[arg(long, value_name = "N")]
        limit: Option<u64>,
    },
}

fn bucket_of(store: &KvStore, name: &str) -> Result<replaydb::kv::Bucket, Failure> {
    store
        .get_bucket(name)?
        .ok_or_else(|| Failure::from(KvError::MissingBucket(name.to_string())))
}

fn outcome(o: StoreOutcome) -> String {
    match o {
        StoreOutcome::Created(r) => format!("created {r}"),
        StoreOutcome::Exists(r) => format!("exists {r}"),
    }
}

fn text(v: &[u8]) -> serde_json::Value {
    match std::str::from_utf8(v) {
        Ok(s) => json!(s),
        Err(_) => json!({"hex": v.iter().map(|b| format!("{b:02x}")).collect::<String>()}),
    }
}

pub fn run(dir: &Path, options: &Options, args: &KvArgs) -> CmdResult {
    let db = crate::cli::open_shared(dir, options)?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match &args.command {
        KvCommand::Put {
            bucket,
            key,
            value,
            create,
            ttl,
            keep_alive,
        } => {
            let store = match ttl {
                Some(_) => KvStore::shared(&db)?,
                None => KvStore::shared_without_lease(&db)?,
            };
            let b = store.get_or_create_bucket(bucket, ttl.map(Duration::from_secs))?;
            let o = b.insert(
                &Key::new(key.as_str()),
                value.as_bytes().to_vec(),
                if *create { 0 } else { 1 },
            )?;
            writeln!(out, "{}", outcome(o))?;
            out.flush()?;
            if *keep_alive {
                // The lease lives while this process does.
                let mut sink = Vec::new();
                let _ = std::io::copy(&mut std::io::stdin().lock(), &mut sink);
            }
        }
        KvCommand::Cas {
            bucket,
            key,
            expected,
            value,
        } => {
            let store = KvStore::shared_without_lease(&db)?;
            let o = bucket_of(&store, bucket)?.compare_and_replace(
                &Key::new(key.as_str()),
                expected.as_bytes().to_vec(),
                value.as_bytes().to_vec(),
            )?;
            writeln!(out, "{}", outcome(o))?;
        }
        KvCommand::Get { bucket, key } => {
            let store = KvStore::shared_without_lease(&db)?;
            match bucket_of(&store, bucket)?.get(&Key::new(key.as_str()))? {
                Some(v) => {
                    out.write_all(&v)?;
                    writeln!(out)?;
                }
                None => {
                    return Err(Failure::from(KvError::MissingKey(format!(
                        "{bucket}/{key}"
                    ))));
                }
            }
        }
        KvCommand::Del { bucket, key } => {
            let store = KvStore::shared_without_lease(&db)?;
            writeln!(
                out,
                "{}",
                bucket_of(&store, bucket)?.delete(&Key::new(key.as_str()))?
            )?;
        }
        KvCommand::Ls {
            bucket,
            prefix,
            values,
            count,
            json,
        } => {
            let store = KvStore::shared_without_lease(&db)?;
            let b = bucket_of(&store, bucket)?;
            if *count {
                writeln!(out, "{}", b.count(prefix)?)?;
                return Ok(());
            }
            for k in b.keys(prefix)? {
                let v = if *values { b.get(&k)? } else { None };
                match (json, v) {
                    (true, Some(v)) => {
                        writeln!(out, "{}", json!({"key": k.as_str(), "value": text(&v)}))?
                    }
                    (true, None) => writeln!(out, "{}", json!({"key": k.as_str()}))?,
                    (false, Some(v)) => writeln!(out, "{}\t{}", k, String::from_utf8_lossy(&v))?,
                    (false, None) => writeln!(out, "{k}")?,
                }
            }
        }
        KvCommand::Watch {
            bucket,
            prefix,
            from,
            limit,
        } => {
            let store = KvStore::shared_without_lease(&db)?;
            let b = bucket_of(&store, bucket)?;
            let mut w = match from {
                Some(rev) => b.watch_from(prefix, *rev)?,
                None => b.watch_prefix(prefix)?,
            };
            let mut n = 0u64;
            while limit.is_none_or(|l| n < l) {
                let e = w.next_revisioned_blocking()?;
                let line = match &e.event {
                    WatchEvent::Put(kv) => {
                        json!({"revision": e.revision, "event": "put", "key": kv.key.as_str(), "value": text(&kv.value)})
                    }
                    WatchEvent::Delete(k) => {
                        json!({"revision": e.revision, "event": "delete", "key": k.as_str(), "reason": e.reason})
                    }
                    WatchEvent::Resync(state) => {
                        let mut keys: Vec<_> = state.iter().collect();
                        keys.sort();
                        let entries: serde_json::Map<String, serde_json::Value> = keys
                            .into_iter()
                            .map(|(k, v)| (k.as_str().to_string(), text(v)))
                            .collect();
                        json!({"revision": e.revision, "event": "resync", "entries": entries})
                    }
                };
                writeln!(out, "{line}")?;
                out.flush()?;
                n += 1;
            }
        }
    }
    Ok(())
}
