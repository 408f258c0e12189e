//! `wal/SETTINGS`: the log's format settings, fixed when the database is
//! created and used by every later open, whatever that open asks for.
//!
//! ```text
//! 0  8  magic            "RPLYSET\0"
//! 8  4  format version   1
//! 12 4  reserved         0
//! 16 8  segment_bytes_max
//! 24 8  reserved         0
//! 32 4  reserved         0
//! 36 4  crc              CRC-32 of bytes 0..36
//! ```

use std::path::Path;

use crate::error::{Error, Result};
use crate::layout;
use crate::options::{SEGMENT_BYTES_LIMIT, SEGMENT_BYTES_MIN};
use crate::storage::{OpenMode, Storage};

/// First bytes of the settings file.
pub const SETTINGS_MAGIC: [u8; 8] = *b"RPLYSET\0";
/// The settings format this build writes and reads.
pub const SETTINGS_FORMAT_VERSION: u32 = 1;
/// Bytes in the settings file.
pub const SETTINGS_BYTES: usize = 40;

/// The log's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalSettings {
    /// Segments are sealed once the next record would take them past this.
    pub segment_bytes_max: u64,
}

fn encode(s: &WalSettings) -> [u8; SETTINGS_BYTES] {
    let mut b = [0u8; SETTINGS_BYTES];
    let mut put = |at: usize, v: &[u8]| {
        if let Some(d) = b.get_mut(at..at + v.len()) {
            d.copy_from_slice(v);
        }
    };
    put(0, &SETTINGS_MAGIC);
    put(8, &SETTINGS_FORMAT_VERSION.to_le_bytes());
    put(16, &s.segment_bytes_max.to_le_bytes());
    let crc = crc32fast::hash(b.get(..36).unwrap_or_default());
    if let Some(d) = b.get_mut(36..40) {
        d.copy_from_slice(&crc.to_le_bytes());
    }
    b
}

fn decode(bytes: &[u8], path: &Path) -> Result<WalSettings> {
    let bad = |offset: u64, why: &str| Error::corrupt(path, offset, why.to_string());
    if bytes.len() != SETTINGS_BYTES {
        return Err(bad(0, "the settings file is not 40 bytes"));
    }
    let u32_at = |at: usize| {
        bytes
            .get(at..at + 4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
    };
    let u64_at = |at: usize| {
        bytes
            .get(at..at + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    };
    if bytes.get(..8) != Some(&SETTINGS_MAGIC[..]) {
        return Err(bad(0, "bad magic (not a replaydb settings file)"));
    }
    let crc = crc32fast::hash(bytes.get(..36).unwrap_or_default());
    if u32_at(36) != Some(crc) {
        return Err(bad(36, "CRC mismatch"));
    }
    let version = u32_at(8).unwrap_or(0);
    if version != SETTINGS_FORMAT_VERSION {
        return Err(Error::UnsupportedVersion {
            path: path.to_path_buf(),
            found: version,
            supported: SETTINGS_FORMAT_VERSION,
        });
    }
    let segment_bytes_max = u64_at(16).unwrap_or(0);
    if !(SEGMENT_BYTES_MIN..=SEGMENT_BYTES_LIMIT).contains(&segment_bytes_max) {
        return Err(bad(16, "segment_bytes_max out of range"));
    }
    Ok(WalSettings { segment_bytes_max })
}

/// The settings of the log in `wal_dir`: read if recorded; otherwise
/// (a new log, or one written before settings were recorded) `wanted`,
/// written durably first. A `wanted` value that differs from what is
/// recorded is ignored, with a warning: format settings are the
/// database's, not an open's.
pub fn load_or_create(
    fs: &dyn Storage,
    wal_dir: &Path,
    wanted: Option<u64>,
    default_segment_bytes_max: u64,
) -> Result<WalSettings> {
    let path = wal_dir.join(layout::SETTINGS_FILE);
    match fs
        .file_len(&path)
        .map_err(|e| Error::io("stat settings", &path, e))?
    {
        Some(len) => {
            if len != SETTINGS_BYTES as u64 {
                return Err(Error::corrupt(
                    &path,
                    0,
                    format!("{len} bytes; the settings file is {SETTINGS_BYTES}"),
                ));
            }
            let file = layout::open(fs, &path, OpenMode::Read, "open settings")?;
            let mut bytes = [0u8; SETTINGS_BYTES];
            file.read_exact_at(&mut bytes, 0)
                .map_err(|e| Error::io("read settings", &path, e))?;
            let settings = decode(&bytes, &path)?;
            if let Some(w) = wanted
                && w != settings.segment_bytes_max
            {
                tracing::warn!(
                    asked = w,
                    recorded = settings.segment_bytes_max,
                    "segment_bytes_max is a setting of the database, fixed when it was created; using the recorded value"
                );
            }
            Ok(settings)
        }
        None => {
            let settings = WalSettings {
                segment_bytes_max: wanted.unwrap_or(default_segment_bytes_max),
            };
            let tmp = wal_dir.join(format!("{}.tmp", layout::SETTINGS_FILE));
            match fs.remove_file(&tmp) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("remove stale settings", &tmp, e)),
            }
            let f = layout::create_new(fs, &tmp, "create settings")?;
            f.write_all_at(&encode(&settings), 0)
                .and_then(|()| f.sync_all())
                .map_err(|e| Error::io("write settings", &tmp, e))?;
            fs.rename(&tmp, &path)
                .map_err(|e| Error::io("rename settings into place", &path, e))?;
            layout::sync_dir(fs, wal_dir)?;
            Ok(settings)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn settings_round_trip_and_every_flip_is_caught() {
        let s = WalSettings {
            segment_bytes_max: 4 << 20,
        };
        let b = encode(&s);
        let p = Path::new("SETTINGS");
        assert_eq!(decode(&b, p).unwrap(), s);
        for bit in 0..b.len() * 8 {
            let mut bad = b;
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(decode(&bad, p).is_err(), "flip of bit {bit}");
        }
    }
}
