//! The directory lock: one owner per database, across processes.
//!
//! A POSIX record lock (`fcntl(F_SETLK)`) on `DIR/LOCK` excludes other
//! processes; the kernel drops it when the owner dies, however it dies.
//! Unlike `flock`, a record lock belongs to the process, not to the open
//! file: a child forked by another thread does not inherit it, so it
//! cannot linger after the handle closes (with `flock` it did, for as
//! long as such a child took to exec; reopens then waited up to a second).
//! Because a process's record locks do not exclude the process itself, a
//! table of the directories this process holds answers first.

use std::collections::HashSet;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use crate::error::{Error, Result};
use crate::layout;

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
            // Claimed before the record lock, so two threads never race.
            held.insert(key.clone());
        }
        let taken = Self::lock_file(&path, me);
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

    fn lock_file(path: &Path, me: u32) -> Result<File> {
        use std::os::fd::AsRawFd;
        let mut file = layout::open_rw_create(path, "open lock file")?;
        // SAFETY: a zeroed `flock` struct is a valid value; fields set below.
        let mut fl: libc::flock = unsafe { std::mem::zeroed() };
        fl.l_type = libc::F_WRLCK as libc::c_short;
        fl.l_whence = libc::SEEK_SET as libc::c_short;
        // SAFETY: fcntl on a descriptor we own, with a valid flock struct.
        if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETLK, &fl) } != 0 {
            let e = std::io::Error::last_os_error();
            if !matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EACCES)) {
                return Err(Error::io("lock", path, e));
            }
            // Ask the kernel who holds it; the pid in the file is the
            // fallback (a holder that has not written it yet).
            // SAFETY: as above; F_GETLK fills `fl` in.
            let holder = if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETLK, &mut fl) } == 0
                && fl.l_type != libc::F_UNLCK as libc::c_short
            {
                u32::try_from(fl.l_pid).ok()
            } else {
                None
            };
            return Err(Error::Locked {
                path: path.to_path_buf(),
                pid: holder.or_else(|| read_pid(&mut file)),
            });
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
