//! `DIR/VIEWS`: the views the database's programs register, so that a
//! handle without them (the CLI, say) never snapshots and compacts away
//! the history those views still need.
//!
//! Format: UTF-8 text, one `name version` line per view, written whole
//! (temporary file, fsync, rename, directory fsync) by any handle that
//! registers at least one view.

use std::fs;
use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};
use crate::layout;
use crate::views::View;

/// Longest `VIEWS` file read.
const VIEWS_FILE_BYTES_MAX: u64 = 64 * 1024;

/// The views recorded in `DIR/VIEWS` (none if the file does not exist).
pub(crate) fn read(dir: &Path) -> Result<Vec<(String, u32)>> {
    let path = dir.join(layout::VIEWS_FILE);
    let len = match fs::metadata(&path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("stat views file", &path, e)),
    };
    if len > VIEWS_FILE_BYTES_MAX {
        return Err(Error::corrupt(
            &path,
            0,
            format!("{len} bytes, above the limit of {VIEWS_FILE_BYTES_MAX}"),
        ));
    }
    let text = fs::read_to_string(&path).map_err(|e| Error::io("read views file", &path, e))?;
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
    let _ = fs::remove_file(&tmp);
    let mut f = layout::create_new(&tmp, "create views file")?;
    let text: String = now.iter().map(|(n, v)| format!("{n} {v}\n")).collect();
    f.write_all(text.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::io("write views file", &tmp, e))?;
    fs::rename(&tmp, &path).map_err(|e| Error::io("rename views file", &path, e))?;
    layout::sync_dir(dir)
}
