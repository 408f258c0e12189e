//! The seeds' storage layouts, re-created faithfully, for `replaydb
//! bench` to measure beside replaydb (`../shared/seeds/`):
//!
//! - the pod registry (`yoi_pod_registry_table.rs`): one `pods.json`
//!   table, read whole, decided, rewritten whole and fsynced under an
//!   exclusive `flock`, per change;
//! - the worker runtime (`yoi_worker_runtime_fs_store.rs`): JSON lines
//!   appended and `sync_all`ed one at a time, and `read_events` parsing
//!   the whole `events.jsonl` on every call;
//! - the KV file store (`dynamo_kv_file_store.rs`): a file per key,
//!   written as a temporary file renamed into place (as the seed does,
//!   with no fsync; and made durable, with an fsync of the file and the
//!   directory, which the seed does not do), and `entries` reading every
//!   file of the bucket's directory into a map.
//!
//! Errors are the bench's: a layout that fails is a failed run, said with
//! the path.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use replaydb::kv::Key;
use replaydb::registry::{Allocation, Change, RegistryState};
use replaydb::runtime::RuntimeEvent;
use serde::{Deserialize, Serialize};

/// What a seed layout's failure says.
pub fn io_error(op: &str, path: &Path, e: impl std::fmt::Display) -> String {
    format!("{op} {}: {e}", path.display())
}

#[derive(Default, Serialize, Deserialize)]
struct PodsJson {
    #[serde(default)]
    allocations: Vec<Allocation>,
}

/// The registry seed's `pods.json` with `allocations`, written once.
pub fn registry_table(dir: &Path, allocations: Vec<Allocation>) -> Result<PathBuf, String> {
    let path = dir.join("pods.json");
    let json = serde_json::to_vec_pretty(&PodsJson { allocations })
        .map_err(|e| io_error("encode", &path, e))?;
    let mut f = File::create(&path).map_err(|e| io_error("create", &path, e))?;
    f.write_all(&json)
        .and_then(|()| f.sync_all())
        .map_err(|e| io_error("write", &path, e))?;
    Ok(path)
}

/// One registry change the seed's way: lock, read and parse the table,
/// decide with `decide`, rewrite it whole, fsync, unlock.
pub fn registry_change(
    path: &Path,
    decide: impl FnOnce(&RegistryState) -> Vec<Change>,
) -> Result<(), String> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| io_error("open", path, e))?;
    file.lock().map_err(|e| io_error("lock", path, e))?;
    let mut text = String::new();
    file.read_to_string(&mut text)
        .map_err(|e| io_error("read", path, e))?;
    let table: PodsJson = if text.trim().is_empty() {
        PodsJson::default()
    } else {
        serde_json::from_str(&text).map_err(|e| io_error("parse", path, e))?
    };
    let mut state = RegistryState::from_allocations(table.allocations);
    for change in decide(&state) {
        state.apply(&change);
    }
    let out = PodsJson {
        allocations: state.allocations().cloned().collect(),
    };
    let json = serde_json::to_vec_pretty(&out).map_err(|e| io_error("encode", path, e))?;
    file.seek(SeekFrom::Start(0))
        .and_then(|_| file.set_len(0))
        .and_then(|()| file.write_all(&json))
        .and_then(|()| file.sync_data())
        .map_err(|e| io_error("rewrite", path, e))?;
    // Dropping the file unlocks it.
    Ok(())
}

/// One JSON line appended and `sync_all`ed, the runtime seed's
/// `append_json_line`.
pub fn jsonl_append(path: &Path, value: &impl Serialize) -> Result<(), String> {
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| io_error("open", path, e))?;
    let mut line = serde_json::to_vec(value).map_err(|e| io_error("encode", path, e))?;
    line.push(b'\n');
    file.write_all(&line)
        .and_then(|()| file.sync_all())
        .map_err(|e| io_error("append", path, e))
}

/// The runtime seed's `read_events`: every line of `events.jsonl`
/// parsed, then `limit` kept from `next_event_id`.
pub fn jsonl_read_events(
    path: &Path,
    next_event_id: u64,
    limit: usize,
) -> Result<Vec<RuntimeEvent>, String> {
    let reader = BufReader::new(File::open(path).map_err(|e| io_error("open", path, e))?);
    let mut events = Vec::new();
    for (n, line) in reader.lines().enumerate() {
        let line = line.map_err(|e| io_error("read", path, e))?;
        if line.trim().is_empty() {
            continue;
        }
        let e: RuntimeEvent = serde_json::from_str(&line)
            .map_err(|e| io_error(&format!("parse line {}", n + 1), path, e))?;
        events.push(e);
    }
    Ok(events
        .into_iter()
        .filter(|e| e.id >= next_event_id)
        .take(limit)
        .collect())
}

/// The KV seed's put: the value written to a temporary file renamed over
/// the key's file; with `sync`, the file synced before the rename and
/// the directory after.
pub fn file_put(dir: &Path, key: &Key, value: &[u8], sync: bool, n: u64) -> Result<(), String> {
    let tmp = dir.join(format!(".tmp_{n:016x}"));
    let mut f = File::create(&tmp).map_err(|e| io_error("create", &tmp, e))?;
    f.write_all(value)
        .and_then(|()| if sync { f.sync_all() } else { Ok(()) })
        .map_err(|e| io_error("write", &tmp, e))?;
    drop(f);
    let path = dir.join(key.url_safe());
    std::fs::rename(&tmp, &path).map_err(|e| io_error("rename to", &path, e))?;
    if sync {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_error("sync", dir, e))?;
    }
    Ok(())
}

/// The KV seed's `entries`: every entry of the bucket's directory that
/// is a file and not a temporary one, its path canonicalised and made
/// relative to `root` (the seed's store root, `dir` canonicalised) for
/// its key, its value read; the map.
pub fn file_entries(dir: &Path, root: &Path) -> Result<HashMap<Key, Vec<u8>>, String> {
    let mut out = HashMap::new();
    for e in std::fs::read_dir(dir).map_err(|e| io_error("read_dir", dir, e))? {
        let e = e.map_err(|e| io_error("read_dir", dir, e))?;
        let path = e.path();
        if !path.is_file() || e.file_name().to_string_lossy().starts_with(".tmp_") {
            continue;
        }
        let canonical = path.canonicalize().unwrap_or_else(|_| path.clone());
        let Ok(relative) = canonical.strip_prefix(root) else {
            continue;
        };
        let key = Key::from_url_safe(&relative.to_string_lossy());
        let value = std::fs::read(&path).map_err(|e| io_error("read", &path, e))?;
        out.insert(key, value);
    }
    Ok(out)
}
