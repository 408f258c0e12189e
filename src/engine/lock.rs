//! The directory lock: one owner per database, across processes.
//!
//! `flock` on `DIR/LOCK` excludes other processes. Within this process a
//! table of held directories answers first, because a `flock` can outlive
//! its closing: a child forked by another thread at that moment inherits
//! the descriptor until it execs, so the lock lingers for a few
//! microseconds after the last handle closed. When the lock file names
//! this process but the table says no handle here holds it, that is such
//! a leftover: the open waits for it (at most [`LINGER_WAIT_MAX`]).

use std::collections::HashSet;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::layout;

/// Longest wait for a lock left over by a forked child of this process.
pub const LINGER_WAIT_MAX: Duration = Duration::from_secs(2);

/// Database directories held by handles in this process.
static HELD: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);

/// Holds `DIR/LOCK` exclusively until dropped. The file records the
/// holder's pid so that a refused opener can say who holds it.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
    path: PathBuf,
    key: PathBuf,
}

fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.take(32).read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

impl DirLock {
    /// Takes the lock of the database at `dir`, or fails with
    /// [`Error::Locked`] (never waits for another holder).
    pub fn acquire(dir: &Path) -> Result<DirLock> {
        let path = dir.join(layout::LOCK_FILE);
        let key = dir
            .canonicalize()
            .map_err(|e| Error::io("resolve database directory", dir, e))?;
        let me = std::process::id();
        {
            let mut held = HELD.lock().unwrap_or_else(PoisonError::into_inner);
            let held = held.get_or_insert_with(HashSet::new);
            if held.contains(&key) {
                return Err(Error::Locked {
                    path,
                    pid: Some(me),
                });
            }
            // Claimed before the flock, so two threads here never race.
            held.insert(key.clone());
        }
        let taken = Self::flock(&path, me);
        if taken.is_err()
            && let Some(held) = HELD.lock().unwrap_or_else(PoisonError::into_inner).as_mut()
        {
            held.remove(&key);
        }
        let file = taken?;
        Ok(DirLock {
            _file: file,
            path,
            key,
        })
    }

    fn flock(path: &Path, me: u32) -> Result<File> {
        let mut file = layout::open_rw_create(path, "open lock file")?;
        let started = Instant::now();
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) => {
                    let pid = read_pid(&mut file);
                    if pid == Some(me) && started.elapsed() < LINGER_WAIT_MAX {
                        std::thread::sleep(Duration::from_millis(1));
                        continue;
                    }
                    return Err(Error::Locked {
                        path: path.to_path_buf(),
                        pid,
                    });
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(Error::io("lock", path, e)),
            }
        }
        let pid = format!("{me}\n");
        file.set_len(0)
            .and_then(|_| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(pid.as_bytes()))
            .map_err(|e| Error::io("write pid to lock file", path, e))?;
        Ok(file)
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        if let Some(held) = HELD.lock().unwrap_or_else(PoisonError::into_inner).as_mut() {
            held.remove(&self.key);
        }
    }
}
