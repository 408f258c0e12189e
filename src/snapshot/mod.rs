//! Snapshots: the views' state and every stream's version at one LSN, in
//! a redb file of its own per generation.
//!
//! ```text
//! DIR/snapshots/<20-digit covered LSN>.redb        a generation
//! DIR/snapshots/<20-digit covered LSN>.redb.tmp    being written; removed on open
//! ```
//!
//! Tables of a snapshot file (see docs/FORMAT.md):
//! `replaydb_meta` (magic, format version, covered LSN), `replaydb_views`
//! (view name to schema version), `replaydb_streams` (stream name to
//! version), and `view:<view>:<table>` for each view's own tables.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use crate::error::{Error, Result};
use crate::layout;
use crate::storage::{OpenMode, RedbBackend, Storage, StorageFile};
use crate::views::{View, ViewReader, ViewWriter};

/// The snapshot format this build reads and writes.
pub const SNAPSHOT_FORMAT_VERSION: u32 = 1;
/// Value of the `magic` key of the meta table.
pub const SNAPSHOT_MAGIC: &[u8] = b"replaydb-snapshot";
/// Snapshot generations kept: the newest and the one before it.
pub const GENERATIONS_KEPT: usize = 2;

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("replaydb_meta");
const VIEWS: TableDefinition<&str, u32> = TableDefinition::new("replaydb_views");
const STREAMS: TableDefinition<&str, u64> = TableDefinition::new("replaydb_streams");

/// A redb error: an I/O error from the device stays an I/O error (the
/// file may be fine, so recovery must not set it aside as damaged); a
/// read past the end (a truncated file) and anything else mean the file
/// is not a usable snapshot.
pub(crate) fn redb_err(op: &'static str, path: &Path, e: impl Into<redb::Error>) -> Error {
    match e.into() {
        redb::Error::Io(io)
            if !matches!(
                io.kind(),
                std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::InvalidData
            ) =>
        {
            Error::io(op, path, io)
        }
        other => err(op, path, other),
    }
}

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

/// Removes `.tmp` snapshot files left by a crash while writing one.
pub fn remove_temporary(fs: &dyn Storage, db_dir: &Path) -> Result<Vec<PathBuf>> {
    let dir = layout::snapshot_dir(db_dir);
    let mut removed = Vec::new();
    let Ok(mut names) = fs.list_dir(&dir) else {
        return Ok(removed);
    };
    names.sort();
    for name in names.into_iter().flatten() {
        if name.ends_with(layout::SNAPSHOT_TMP_SUFFIX) {
            let path = dir.join(name);
            fs.remove_file(&path)
                .map_err(|e| Error::io("remove temporary snapshot", &path, e))?;
            removed.push(path);
        }
    }
    if !removed.is_empty() {
        layout::sync_dir(fs, &dir)?;
    }
    Ok(removed)
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

/// Writes a snapshot of `views` and `streams` at `covered_lsn`: a `.tmp`
/// redb file committed durably, renamed into place, directory fsynced.
pub fn write(
    fs: &dyn Storage,
    db_dir: &Path,
    covered_lsn: u64,
    views: &[Box<dyn View>],
    streams: &[(String, u64)],
) -> Result<PathBuf> {
    let dir = layout::snapshot_dir(db_dir);
    layout::create_dir(fs, &dir)?;
    let path = dir.join(layout::snapshot_file_name(covered_lsn));
    let tmp = dir.join(format!(
        "{}{}",
        layout::snapshot_file_name(covered_lsn),
        ".tmp"
    ));
    let _ = fs.remove_file(&tmp);
    let file = layout::create_new(fs, &tmp, "create snapshot")?;
    let db = redb_database(file.clone(), "create snapshot", &tmp)?;
    let tx = db
        .begin_write()
        .map_err(|e| redb_err("begin snapshot", &tmp, e))?;
    {
        let mut meta = tx
            .open_table(META)
            .map_err(|e| redb_err("write snapshot meta", &tmp, e))?;
        let mut put = |k: &str, v: &[u8]| {
            meta.insert(k, v)
                .map(|_| ())
                .map_err(|e| redb_err("write snapshot meta", &tmp, e))
        };
        put("magic", SNAPSHOT_MAGIC)?;
        put("format_version", &SNAPSHOT_FORMAT_VERSION.to_le_bytes())?;
        put("covered_lsn", &covered_lsn.to_le_bytes())?;
        let mut vt = tx
            .open_table(VIEWS)
            .map_err(|e| redb_err("write snapshot views", &tmp, e))?;
        for v in views {
            vt.insert(v.name(), v.schema_version())
                .map_err(|e| redb_err("write snapshot views", &tmp, e))?;
        }
        let mut st = tx
            .open_table(STREAMS)
            .map_err(|e| redb_err("write snapshot streams", &tmp, e))?;
        for (name, version) in streams {
            st.insert(name.as_str(), *version)
                .map_err(|e| redb_err("write snapshot streams", &tmp, e))?;
        }
    }
    for v in views {
        let mut w = ViewWriter {
            tx: &tx,
            view: v.name(),
            path: &tmp,
        };
        v.save(&mut w)?;
    }
    crate::failpoint::hit("snapshot.before_commit");
    tx.commit()
        .map_err(|e| redb_err("commit snapshot", &tmp, e))?;
    drop(db);
    crate::failpoint::hit("snapshot.before_fsync");
    file.sync_all()
        .map_err(|e| Error::io("fsync snapshot", &tmp, e))?;
    crate::failpoint::hit("snapshot.before_rename");
    fs.rename(&tmp, &path)
        .map_err(|e| Error::io("rename snapshot into place", &path, e))?;
    crate::failpoint::hit("snapshot.before_dir_fsync");
    layout::sync_dir(fs, &dir)?;
    Ok(path)
}

/// Runs `f`, turning a panic inside redb (seen on damaged files, found by
/// the `snapshot_open` fuzz target) into a typed error: bad bytes from
/// disk never take the process down.
fn guarded<T>(op: &'static str, path: &Path, f: impl FnOnce() -> Result<T>) -> Result<T> {
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

/// A redb database over `file`, through the storage seam.
fn redb_database(
    file: std::sync::Arc<dyn StorageFile>,
    op: &'static str,
    path: &Path,
) -> Result<redb::Database> {
    redb::Database::builder()
        .create_with_backend(RedbBackend(file))
        .map_err(|e| redb_err(op, path, e))
}

fn open_unguarded(fs: &dyn Storage, path: &Path) -> Result<(redb::Database, SnapshotContents)> {
    let file = layout::open(fs, path, OpenMode::ReadWrite, "open snapshot")?;
    if file
        .is_empty()
        .map_err(|e| Error::io("open snapshot", path, e))?
    {
        return Err(err("open snapshot", path, "empty file"));
    }
    let mut db = redb_database(file, "open snapshot", path)?;
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

/// Checks a snapshot without changing it: redb's integrity check may
/// rewrite a damaged file, so it runs on a copy (`<file>.verify.redb.tmp`,
/// removed after, and on the next open if a crash leaves it).
pub fn check_copy(fs: &dyn Storage, path: &Path) -> Result<SnapshotContents> {
    let copy = PathBuf::from(format!(
        "{}.verify{}",
        path.display(),
        layout::SNAPSHOT_TMP_SUFFIX
    ));
    let _ = fs.remove_file(&copy);
    let src = layout::open(fs, path, OpenMode::Read, "open snapshot to check it")?;
    let len = src
        .len()
        .map_err(|e| Error::io("open snapshot to check it", path, e))?;
    layout::copy_range(
        fs,
        src.as_ref(),
        path,
        0,
        len,
        &copy,
        "copy snapshot to check it",
    )?;
    let checked = open(fs, &copy).map(|(_, mut contents)| {
        contents.path = path.to_path_buf();
        contents
    });
    fs.remove_file(&copy)
        .map_err(|e| Error::io("remove snapshot copy", &copy, e))?;
    checked.map_err(|e| match e {
        Error::Snapshot { op, reason, .. } => Error::Snapshot {
            op,
            path: path.to_path_buf(),
            reason,
        },
        other => other,
    })
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
    if covered > log_last {
        return bad(format!(
            "covers LSN {covered} but the log ends at LSN {log_last}"
        ));
    }
    if covered + 1 < log_first {
        return bad(format!(
            "covers LSN {covered} but the log starts at LSN {log_first}"
        ));
    }
    if let Some((stream, version)) = contents.streams.iter().find(|(_, v)| *v > covered) {
        return bad(format!(
            "stream {stream:?} at version {version}, more events than the {covered} it covers"
        ));
    }
    Ok(())
}

/// Loads `view` from an opened snapshot.
pub fn load_view(db: &redb::Database, path: &Path, view: &mut dyn View) -> Result<()> {
    guarded("load view", path, || load_view_unguarded(db, path, view))
}

fn load_view_unguarded(db: &redb::Database, path: &Path, view: &mut dyn View) -> Result<()> {
    let tx = db
        .begin_read()
        .map_err(|e| redb_err("read snapshot", path, e))?;
    let name = view.name().to_string();
    let reader = ViewReader {
        tx: &tx,
        view: &name,
        path,
    };
    view.load(&reader)
}
