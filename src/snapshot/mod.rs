//! Snapshots written by release 0.1: the views' state and every stream's
//! version at one LSN, in a redb file of its own per generation. This
//! build only reads them, to migrate a database into the store
//! ([`crate::store`]); it never writes one.
//!
//! ```text
//! DIR/snapshots/<20-digit covered LSN>.redb        a generation
//! ```
//!
//! Tables of a snapshot file (see docs/FORMAT.md, "Snapshot, format
//! version 1"): `replaydb_meta` (magic, format version, covered LSN),
//! `replaydb_views` (view name to schema version), `replaydb_streams`
//! (stream name to version), and `view:<view>:<table>` for each view's own
//! tables.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use crate::error::{Error, Result};
use crate::layout;
use crate::storage::{OpenMode, OverlayBackend, Storage};

/// The snapshot format this build reads and writes.
pub const SNAPSHOT_FORMAT_VERSION: u32 = 1;
/// Value of the `magic` key of the meta table.
pub const SNAPSHOT_MAGIC: &[u8] = b"replaydb-snapshot";

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("replaydb_meta");
const VIEWS: TableDefinition<&str, u32> = TableDefinition::new("replaydb_views");
const STREAMS: TableDefinition<&str, u64> = TableDefinition::new("replaydb_streams");

pub(crate) use crate::store::redb_err;

fn err(op: &'static str, path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Snapshot {
        op,
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

/// Snapshot files, newest first, with the LSN each covers.
pub fn list(fs: &dyn Storage, db_dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let dir = layout::snapshot_dir(db_dir);
    let mut out = Vec::new();
    let names = match fs.list_dir(&dir) {
        Ok(names) => names,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(Error::io("list snapshots", &dir, e)),
    };
    for name in names.into_iter().flatten() {
        if let Some(lsn) = layout::parse_snapshot_file_name(&name) {
            out.push((lsn, dir.join(name)));
        }
    }
    out.sort_by_key(|e| std::cmp::Reverse(e.0));
    Ok(out)
}

/// What a snapshot holds besides the views' tables.
#[derive(Debug, Clone)]
pub struct SnapshotContents {
    /// The snapshot file.
    pub path: PathBuf,
    /// LSN of the last event it reflects.
    pub covered_lsn: u64,
    /// View name to schema version.
    pub views: BTreeMap<String, u32>,
    /// Stream name to version at `covered_lsn`.
    pub streams: Vec<(String, u64)>,
}

/// Runs `f`, turning a panic inside redb (seen on damaged files, found by
/// the `snapshot_open` fuzz target) into a typed error: bad bytes from
/// disk never take the process down.
pub(crate) fn guarded<T>(
    op: &'static str,
    path: &Path,
    f: impl FnOnce() -> Result<T>,
) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        Err(err(
            op,
            path,
            format!("redb panicked reading the file: {what}"),
        ))
    })
}

/// Opens a snapshot, checks every page's checksum and its meta, and reads
/// its stream versions and view versions (not the views' tables).
pub fn open(fs: &dyn Storage, path: &Path) -> Result<(redb::Database, SnapshotContents)> {
    guarded("open snapshot", path, || open_unguarded(fs, path))
}

fn open_unguarded(fs: &dyn Storage, path: &Path) -> Result<(redb::Database, SnapshotContents)> {
    let file = layout::open(fs, path, OpenMode::Read, "open snapshot")?;
    if file
        .is_empty()
        .map_err(|e| Error::io("open snapshot", path, e))?
    {
        return Err(err("open snapshot", path, "empty file"));
    }
    // Over an overlay: redb's integrity check (which repairs what it
    // checks) never changes the file.
    let overlay = OverlayBackend::new(file).map_err(|e| Error::io("open snapshot", path, e))?;
    let mut db = redb::Database::builder()
        .create_with_backend(overlay)
        .map_err(|e| redb_err("open snapshot", path, e))?;
    match db.check_integrity() {
        Ok(true) => {}
        Ok(false) => {
            return Err(err(
                "check snapshot",
                path,
                "redb integrity check repaired damage",
            ));
        }
        Err(e) => return Err(redb_err("check snapshot", path, e)),
    }
    let tx = db
        .begin_read()
        .map_err(|e| redb_err("read snapshot", path, e))?;
    let meta = tx
        .open_table(META)
        .map_err(|e| redb_err("read snapshot meta", path, e))?;
    let get = |k: &str| -> Result<Vec<u8>> {
        meta.get(k)
            .map_err(|e| redb_err("read snapshot meta", path, e))?
            .map(|v| v.value().to_vec())
            .ok_or_else(|| err("read snapshot meta", path, format!("missing {k:?}")))
    };
    if get("magic")? != SNAPSHOT_MAGIC {
        return Err(err(
            "read snapshot meta",
            path,
            "not a replaydb snapshot (bad magic)",
        ));
    }
    let version = u32::from_le_bytes(
        get("format_version")?
            .try_into()
            .map_err(|_| err("read snapshot meta", path, "format_version is not 4 bytes"))?,
    );
    if version != SNAPSHOT_FORMAT_VERSION {
        return Err(Error::UnsupportedVersion {
            path: path.to_path_buf(),
            found: version,
            supported: SNAPSHOT_FORMAT_VERSION,
        });
    }
    let covered_lsn = u64::from_le_bytes(
        get("covered_lsn")?
            .try_into()
            .map_err(|_| err("read snapshot meta", path, "covered_lsn is not 8 bytes"))?,
    );
    let mut views = BTreeMap::new();
    let vt = tx
        .open_table(VIEWS)
        .map_err(|e| redb_err("read snapshot views", path, e))?;
    for entry in vt
        .iter()
        .map_err(|e| redb_err("read snapshot views", path, e))?
    {
        let (k, v) = entry.map_err(|e| redb_err("read snapshot views", path, e))?;
        views.insert(k.value().to_string(), v.value());
    }
    let mut streams = Vec::new();
    let st = tx
        .open_table(STREAMS)
        .map_err(|e| redb_err("read snapshot streams", path, e))?;
    for entry in st
        .iter()
        .map_err(|e| redb_err("read snapshot streams", path, e))?
    {
        let (k, v) = entry.map_err(|e| redb_err("read snapshot streams", path, e))?;
        streams.push((k.value().to_string(), v.value()));
    }
    drop((meta, vt, st, tx));
    let contents = SnapshotContents {
        path: path.to_path_buf(),
        covered_lsn,
        views,
        streams,
    };
    Ok((db, contents))
}

/// Checks that a snapshot read from the file named for `named_lsn` can
/// join a log holding LSNs `log_first..=log_last`: its meta agrees with
/// its name (compaction trusts the name, recovery the meta), it is not
/// past the log's end (the log was cut, say by repair) nor before its
/// start, and no stream claims more events than the log had by then.
pub fn check_joins_log(
    contents: &SnapshotContents,
    named_lsn: u64,
    log_first: u64,
    log_last: u64,
) -> Result<()> {
    let covered = contents.covered_lsn;
    let bad = |reason: String| Err(Error::corrupt(&contents.path, 0, reason));
    if covered != named_lsn {
        return bad(format!(
            "covers LSN {covered} but is named for LSN {named_lsn}"
        ));
    }
    if let Err(why) = crate::store::open::lsn_joins_log("covers", covered, log_first, log_last) {
        return bad(why);
    }
    if let Some((stream, version)) = contents.streams.iter().find(|(_, v)| *v > covered) {
        return bad(format!(
            "stream {stream:?} at version {version}, more events than the {covered} it covers"
        ));
    }
    Ok(())
}

/// Calls `f(table, key, value)` for every entry of every table of `view`
/// in an opened snapshot (`table` without the `view:<view>:` prefix).
pub fn for_each_view_entry(
    db: &redb::Database,
    path: &Path,
    view: &str,
    mut f: impl FnMut(&str, &[u8], &[u8]) -> Result<()>,
) -> Result<()> {
    guarded("read snapshot view", path, || {
        let tx = db
            .begin_read()
            .map_err(|e| redb_err("read snapshot", path, e))?;
        let prefix = format!("view:{view}:");
        let names: Vec<String> = tx
            .list_tables()
            .map_err(|e| redb_err("read snapshot", path, e))?
            .map(|h| redb::TableHandle::name(&h).to_string())
            .filter(|n| n.starts_with(&prefix))
            .collect();
        for name in names {
            let def: TableDefinition<&[u8], &[u8]> = TableDefinition::new(&name);
            let t = tx
                .open_table(def)
                .map_err(|e| redb_err("read snapshot view", path, e))?;
            let table = name.get(prefix.len()..).unwrap_or_default();
            for entry in t
                .iter()
                .map_err(|e| redb_err("read snapshot view", path, e))?
            {
                let (k, v) = entry.map_err(|e| redb_err("read snapshot view", path, e))?;
                f(table, k.value(), v.value())?;
            }
        }
        Ok(())
    })
}
