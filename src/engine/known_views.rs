//! `DIR/VIEWS`: the views the database's programs register, so that a
//! handle without them (the CLI, say) never snapshots and compacts away
//! the history those views still need.
//!
//! Format: UTF-8 text, one `name version` line per view, written whole
//! (temporary file, fsync, rename, directory fsync) by any handle that
//! registers at least one view.

use std::path::Path;

use crate::error::{Error, Result};
use crate::layout;
use crate::storage::{OpenMode, Storage};
use crate::views::View;

/// Longest `VIEWS` file read.
const VIEWS_FILE_BYTES_MAX: u64 = 64 * 1024;

/// The views recorded in `DIR/VIEWS` (none if the file does not exist).
pub(crate) fn read(fs: &dyn Storage, dir: &Path) -> Result<Vec<(String, u32)>> {
    let path = dir.join(layout::VIEWS_FILE);
    let len = match fs.file_len(&path) {
        Ok(Some(len)) => len,
        Ok(None) => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("stat views file", &path, e)),
    };
    if len > VIEWS_FILE_BYTES_MAX {
        return Err(Error::corrupt(
            &path,
            0,
            format!("{len} bytes, above the limit of {VIEWS_FILE_BYTES_MAX}"),
        ));
    }
    let file = layout::open(fs, &path, OpenMode::Read, "open views file")?;
    let mut bytes = vec![0u8; len as usize];
    file.read_exact_at(&mut bytes, 0)
        .map_err(|e| Error::io("read views file", &path, e))?;
    let text = String::from_utf8(bytes)
        .map_err(|e| Error::corrupt(&path, e.utf8_error().valid_up_to() as u64, "not UTF-8"))?;
    let mut out = Vec::new();
    let mut offset = 0u64;
    for line in text.lines() {
        let parsed = line
            .split_once(' ')
            .and_then(|(name, version)| Some((name.to_string(), version.parse().ok()?)));
        match parsed {
            Some(entry) => out.push(entry),
            None => {
                return Err(Error::corrupt(
                    &path,
                    offset,
                    format!("not `name version`: {line:?}"),
                ));
            }
        }
        offset += line.len() as u64 + 1;
    }
    Ok(out)
}

/// Views every handle registers.
pub(crate) fn is_built_in(name: &str) -> bool {
    name == crate::registry::REGISTRY_VIEW
}

/// Records the registered views, if there are any and they differ from
/// what is recorded.
pub(crate) fn record(
    fs: &dyn Storage,
    dir: &Path,
    views: &[Box<dyn View>],
    recorded: &[(String, u32)],
) -> Result<()> {
    // Built-in views are registered by every handle: nothing to guard.
    let mut now: Vec<(String, u32)> = views
        .iter()
        .filter(|v| !is_built_in(v.name()))
        .map(|v| (v.name().to_string(), v.schema_version()))
        .collect();
    now.sort();
    let mut before = recorded.to_vec();
    before.sort();
    if now.is_empty() || now == before {
        return Ok(());
    }
    let path = dir.join(layout::VIEWS_FILE);
    let tmp = dir.join(format!("{}.tmp", layout::VIEWS_FILE));
    let _ = fs.remove_file(&tmp);
    let f = layout::create_new(fs, &tmp, "create views file")?;
    let text: String = now.iter().map(|(n, v)| format!("{n} {v}\n")).collect();
    f.write_all_at(text.as_bytes(), 0)
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::io("write views file", &tmp, e))?;
    fs.rename(&tmp, &path)
        .map_err(|e| Error::io("rename views file", &path, e))?;
    layout::sync_dir(fs, dir)
}
