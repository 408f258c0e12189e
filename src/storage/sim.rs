//! A simulated disk that can lose power.
//!
//! [`SimDisk`] sits over a real directory (its root): every operation is
//! carried out on the real files, so reads and `mmap` behave exactly as
//! they do in production, and the disk also keeps a model of what is
//! *durable*: file contents as of their last sync, and directory entries
//! as of their directory's last sync. Writes, size changes, creates,
//! renames and deletes since then are pending.
//!
//! [`SimDisk::power_cut`] kills the disk (every later operation, through
//! any handle, fails), and [`SimDisk::restart`] rebuilds the root from
//! the durable model, with each pending write dropped, kept, or torn at
//! any byte, and each pending directory entry change kept or dropped,
//! chosen by a seeded generator: the same seed gives the same disk.
//! [`SimDisk::power_cut_after`] arms the cut to fall in the middle of
//! whatever the program does next, between any two of its I/O calls.
//!
//! A torn write keeps either a prefix of its bytes (cut at any byte) or
//! any subset of the 512-byte sectors it covers, so a later part of one
//! write can land while an earlier part does not; choices are independent
//! per write and per directory entry change, applied in the order they
//! were made. That is harsher than ext4's ordered mode,
//! which never reorders directory operations, and it is what POSIX allows.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::os::{OsFile, OsStorage};
use super::{Mapping, OpenMode, Storage, StorageFile};

/// SplitMix64: a tiny, well-mixed, seedable generator. Enough for
/// choosing crash outcomes and operations; not for anything secret.
#[derive(Clone, Debug)]
pub struct SimRng(u64);

impl SimRng {
    /// A generator that always yields the same sequence for `seed`.
    pub fn new(seed: u64) -> SimRng {
        SimRng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }
}

/// What a restart did with the writes and entry changes left pending at
/// the power cut.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CrashOutcome {
    /// Pending writes and size changes lost.
    pub writes_dropped: u64,
    /// Pending writes and size changes that reached the disk.
    pub writes_kept: u64,
    /// Pending writes of which only a prefix reached the disk.
    pub writes_torn: u64,
    /// Pending creates, renames and deletes lost.
    pub entries_dropped: u64,
    /// Pending creates, renames and deletes that reached the disk.
    pub entries_kept: u64,
}

impl CrashOutcome {
    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &CrashOutcome) {
        // Destructured, so that a new field cannot be forgotten here.
        let CrashOutcome {
            writes_dropped,
            writes_kept,
            writes_torn,
            entries_dropped,
            entries_kept,
        } = other;
        self.writes_dropped += writes_dropped;
        self.writes_kept += writes_kept;
        self.writes_torn += writes_torn;
        self.entries_dropped += entries_dropped;
        self.entries_kept += entries_kept;
    }
}

/// A disk whose unsynced writes can be lost, kept or torn at a power cut.
/// Cloning gives another handle to the same disk.
///
/// ```
/// use std::path::Path;
/// use replaydb::storage::{OpenMode, SimDisk, Storage};
/// let root = tempfile::tempdir().unwrap();
/// let disk = SimDisk::new(root.path()).unwrap();
/// let boot = disk.handle();
/// let path = root.path().join("f");
/// let f = boot.open(&path, OpenMode::CreateNew).unwrap();
/// f.write_all_at(b"hello", 0).unwrap();
/// disk.power_cut();
/// assert!(f.write_all_at(b"more", 5).is_err());
/// // Neither the file's bytes nor its directory entry were synced.
/// disk.restart(7).unwrap();
/// assert_eq!(disk.file_len(&path).unwrap(), None);
/// // What was opened before the cut stays dead.
/// assert!(f.len().is_err());
/// assert!(boot.open(&path, OpenMode::CreateNew).is_err());
/// ```
#[derive(Clone, Debug)]
pub struct SimDisk {
    inner: Arc<Inner>,
    /// `Some`: a handle from [`SimDisk::handle`], dead after the next
    /// restart; `None`: the disk itself, which lives on.
    epoch: Option<u64>,
}

#[derive(Debug)]
struct Inner {
    root: PathBuf,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Bumped at every restart: handles from before it stay dead.
    epoch: u64,
    dead: bool,
    /// Operations left before the power is cut (`None`: never).
    ops_until_cut: Option<u64>,
    /// Writes, size changes, syncs, creates, renames and deletes carried
    /// out since the disk was made (not reset by restarts).
    ops_done: u64,
    next_id: u64,
    files: HashMap<u64, FileState>,
    dirs: HashMap<PathBuf, DirState>,
}

#[derive(Debug, Default)]
struct FileState {
    durable: Vec<u8>,
    pending: Vec<FileOp>,
}

#[derive(Debug)]
enum FileOp {
    Write { offset: u64, bytes: Vec<u8> },
    SetLen(u64),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Node {
    File(u64),
    Dir,
}

#[derive(Debug, Default)]
struct DirState {
    durable: BTreeMap<String, Node>,
    current: BTreeMap<String, Node>,
    pending: Vec<DirOp>,
}

#[derive(Debug)]
enum DirOp {
    Link(String, Node),
    Unlink(String),
    /// `to` now names `node`; `from` no longer does (if it still named it).
    Rename {
        from: String,
        to: String,
        node: Node,
    },
}

fn power_is_off() -> io::Error {
    io::Error::other("simulated power cut: the disk is off")
}

fn outside(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("{} is outside the simulated disk", path.display()),
    )
}

impl SimDisk {
    /// A simulated disk over the directory `root`, whose present contents
    /// are taken as durable.
    pub fn new(root: &Path) -> io::Result<SimDisk> {
        let root = root.canonicalize()?;
        let mut state = State::default();
        adopt(&root, &mut state)?;
        Ok(SimDisk {
            epoch: None,
            inner: Arc::new(Inner {
                root,
                state: Mutex::new(state),
            }),
        })
    }

    /// The directory the disk sits over.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// A handle for one boot of the disk: give it to a database; after the
    /// next restart everything done through it fails, as through the files
    /// it opened, so a database left over from before the cut cannot touch
    /// the disk that came back.
    pub fn handle(&self) -> SimDisk {
        SimDisk {
            inner: self.inner.clone(),
            epoch: Some(self.lock().epoch),
        }
    }

    /// Cuts the power now: every later operation fails until
    /// [`SimDisk::restart`].
    pub fn power_cut(&self) {
        self.lock().dead = true;
    }

    /// Cuts the power just before the `ops`-th next operation (0: now),
    /// counting every write, size change, sync, create, rename and delete.
    pub fn power_cut_after(&self, ops: u64) {
        let mut s = self.lock();
        if ops == 0 {
            s.dead = true;
        } else {
            s.ops_until_cut = Some(ops);
        }
    }

    /// Disarms a cut armed by [`SimDisk::power_cut_after`] that has not
    /// fallen yet.
    pub fn disarm(&self) {
        self.lock().ops_until_cut = None;
    }

    /// Mutating operations (the ones [`SimDisk::power_cut_after`] counts)
    /// attempted so far, across restarts: run a scenario once to learn how
    /// many I/O calls it makes, then cut the power before each in turn.
    pub fn operations(&self) -> u64 {
        self.lock().ops_done
    }

    /// Whether the power is off.
    pub fn is_off(&self) -> bool {
        self.lock().dead
    }

    /// Powers the disk back on after a cut (cutting it first if it is on):
    /// the root is rebuilt from what was durable plus, for each pending
    /// change, the outcome `seed` picks. Handles opened before stay dead.
    pub fn restart(&self, seed: u64) -> io::Result<CrashOutcome> {
        let mut s = self.lock();
        s.dead = true;
        let mut rng = SimRng::new(seed);
        let mut outcome = CrashOutcome::default();
        // Files first, in id order, then directories in path order, so
        // the choices depend on the seed alone.
        let mut ids: Vec<u64> = s.files.keys().copied().collect();
        ids.sort_unstable();
        let mut contents: HashMap<u64, Vec<u8>> = HashMap::new();
        for id in ids {
            let Some(file) = s.files.get(&id) else {
                continue;
            };
            let mut bytes = file.durable.clone();
            for op in &file.pending {
                match op {
                    FileOp::Write { offset, bytes: w } => match rng.below(3) {
                        0 => outcome.writes_dropped += 1,
                        2 if w.len() >= 2 => {
                            outcome.writes_torn += 1;
                            if rng.below(2) == 0 {
                                // A prefix of 1..len bytes.
                                let keep = 1 + rng.below(w.len() as u64 - 1) as usize;
                                write_into(&mut bytes, *offset, w.get(..keep).unwrap_or_default());
                            } else {
                                // Each sector it covers on its own: later
                                // ones may land while earlier ones do not.
                                for (at, piece) in sectors(*offset, w) {
                                    if rng.below(2) == 0 {
                                        write_into(&mut bytes, at, piece);
                                    }
                                }
                            }
                        }
                        _ => {
                            outcome.writes_kept += 1;
                            write_into(&mut bytes, *offset, w);
                        }
                    },
                    FileOp::SetLen(len) => {
                        if rng.below(2) == 0 {
                            outcome.writes_dropped += 1;
                        } else {
                            outcome.writes_kept += 1;
                            bytes.resize(*len as usize, 0);
                        }
                    }
                }
            }
            contents.insert(id, bytes);
        }
        let mut dir_paths: Vec<PathBuf> = s.dirs.keys().cloned().collect();
        dir_paths.sort();
        let mut entries: HashMap<PathBuf, BTreeMap<String, Node>> = HashMap::new();
        for path in dir_paths {
            let Some(dir) = s.dirs.get(&path) else {
                continue;
            };
            let mut image = dir.durable.clone();
            for op in &dir.pending {
                if rng.below(2) == 0 {
                    outcome.entries_dropped += 1;
                    continue;
                }
                outcome.entries_kept += 1;
                match op {
                    DirOp::Link(name, node) => {
                        image.insert(name.clone(), *node);
                    }
                    DirOp::Unlink(name) => {
                        image.remove(name);
                    }
                    DirOp::Rename { from, to, node } => {
                        if image.get(from) == Some(node) {
                            image.remove(from);
                        }
                        image.insert(to.clone(), *node);
                    }
                }
            }
            entries.insert(path, image);
        }
        // Rebuild the root from the image. Old files are unlinked, never
        // rewritten in place, so a mapping a dead handle still holds keeps
        // its old bytes.
        let root = self.inner.root.clone();
        for name in OsStorage.list_dir(&root)?.into_iter().flatten() {
            let p = root.join(name);
            if p.is_dir() {
                fs::remove_dir_all(&p)?;
            } else {
                fs::remove_file(&p)?;
            }
        }
        materialize(&root, &entries, &contents)?;
        let epoch = s.epoch + 1;
        *s = State {
            epoch,
            ops_done: s.ops_done,
            ..State::default()
        };
        adopt(&root, &mut s)?;
        Ok(outcome)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes the state for one mutating operation: fails if the power is
    /// off, and cuts it if this is the operation it was armed for.
    fn operate(&self, epoch: Option<u64>) -> io::Result<MutexGuard<'_, State>> {
        let mut s = self.lock();
        if s.dead || epoch.is_some_and(|e| e != s.epoch) {
            return Err(power_is_off());
        }
        s.ops_done += 1;
        if let Some(left) = s.ops_until_cut.as_mut() {
            *left -= 1;
            if *left == 0 {
                s.ops_until_cut = None;
                s.dead = true;
                return Err(power_is_off());
            }
        }
        Ok(s)
    }

    /// Checks the power for a read.
    fn read(&self, epoch: Option<u64>) -> io::Result<()> {
        let s = self.lock();
        if s.dead || epoch.is_some_and(|e| e != s.epoch) {
            return Err(power_is_off());
        }
        Ok(())
    }

    /// `path` as (parent directory, file name), both inside the root.
    fn split(&self, path: &Path) -> io::Result<(PathBuf, String)> {
        let absolute = if path.is_absolute() {
            path.to_path_buf()
        } else {
            std::env::current_dir()?.join(path)
        };
        let parent = absolute.parent().ok_or_else(|| outside(path))?;
        // The parent exists whenever a caller names a file in it.
        let parent = parent.canonicalize().map_err(|_| outside(path))?;
        if !parent.starts_with(&self.inner.root) {
            return Err(outside(path));
        }
        let name = absolute
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| outside(path))?;
        Ok((parent, name.to_string()))
    }
}

/// Bytes a disk writes atomically, if at all.
pub const SECTOR_BYTES: u64 = 512;

/// `data` written at `offset`, split at sector boundaries.
fn sectors(offset: u64, data: &[u8]) -> Vec<(u64, &[u8])> {
    let mut out = Vec::new();
    let mut at = offset;
    let mut rest = data;
    while !rest.is_empty() {
        let room = (SECTOR_BYTES - at % SECTOR_BYTES) as usize;
        let (piece, next) = rest.split_at(room.min(rest.len()));
        out.push((at, piece));
        at += piece.len() as u64;
        rest = next;
    }
    out
}

fn write_into(bytes: &mut Vec<u8>, offset: u64, data: &[u8]) {
    let offset = offset as usize;
    let end = offset + data.len();
    if bytes.len() < end {
        bytes.resize(end, 0);
    }
    if let Some(dst) = bytes.get_mut(offset..end) {
        dst.copy_from_slice(data);
    }
}

/// Takes everything under `dir` as durable.
fn adopt(dir: &Path, s: &mut State) -> io::Result<()> {
    let mut entries = BTreeMap::new();
    // In name order, so that file ids (and so every later choice) do not
    // depend on the order the file system lists them in.
    let mut listed = fs::read_dir(dir)?.collect::<io::Result<Vec<_>>>()?;
    listed.sort_by_key(|e| e.file_name());
    for entry in listed {
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if entry.file_type()?.is_dir() {
            adopt(&entry.path(), s)?;
            entries.insert(name, Node::Dir);
        } else {
            let id = s.next_id;
            s.next_id += 1;
            let durable = fs::read(entry.path())?;
            s.files.insert(
                id,
                FileState {
                    durable,
                    pending: Vec::new(),
                },
            );
            entries.insert(name, Node::File(id));
        }
    }
    s.dirs.insert(
        dir.to_path_buf(),
        DirState {
            durable: entries.clone(),
            current: entries,
            pending: Vec::new(),
        },
    );
    Ok(())
}

/// Writes the image of directory `dir` (which exists) to the real disk.
fn materialize(
    dir: &Path,
    entries: &HashMap<PathBuf, BTreeMap<String, Node>>,
    contents: &HashMap<u64, Vec<u8>>,
) -> io::Result<()> {
    let Some(image) = entries.get(dir) else {
        return Ok(());
    };
    for (name, node) in image {
        let path = dir.join(name);
        match node {
            Node::Dir => {
                OsStorage.create_dir_all(&path)?;
                materialize(&path, entries, contents)?;
            }
            Node::File(id) => {
                let f = OsFile::open(&path, OpenMode::CreateNew)?;
                f.write_all_at(contents.get(id).map(Vec::as_slice).unwrap_or_default(), 0)?;
            }
        }
    }
    Ok(())
}

impl Storage for SimDisk {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn StorageFile>> {
        let (parent, name) = self.split(path)?;
        let mut s = match mode {
            OpenMode::CreateNew => self.operate(self.epoch)?,
            _ => {
                self.read(self.epoch)?;
                self.lock()
            }
        };
        let file = OsFile::open(path, mode)?;
        let id = match mode {
            OpenMode::CreateNew => {
                let id = s.next_id;
                s.next_id += 1;
                s.files.insert(id, FileState::default());
                let dir = s.dirs.entry(parent).or_default();
                dir.current.insert(name.clone(), Node::File(id));
                dir.pending.push(DirOp::Link(name, Node::File(id)));
                id
            }
            _ => match s.dirs.get(&parent).and_then(|d| d.current.get(&name)) {
                Some(Node::File(id)) => *id,
                _ => return Err(outside(path)),
            },
        };
        Ok(Arc::new(SimFile {
            file,
            id,
            epoch: s.epoch,
            disk: self.clone(),
        }))
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.read(self.epoch)?;
        if self.is_dir(path) {
            return Ok(());
        }
        if let Some(parent) = path.parent() {
            self.create_dir_all(parent)?;
        }
        let (parent, name) = self.split(path)?;
        let mut s = self.operate(self.epoch)?;
        OsStorage.create_dir_all(path)?;
        let dir = s.dirs.entry(parent).or_default();
        dir.current.insert(name.clone(), Node::Dir);
        dir.pending.push(DirOp::Link(name, Node::Dir));
        s.dirs.insert(path.canonicalize()?, DirState::default());
        Ok(())
    }

    fn is_dir(&self, path: &Path) -> bool {
        self.read(self.epoch).is_ok() && path.is_dir()
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<Option<String>>> {
        self.read(self.epoch)?;
        OsStorage.list_dir(path)
    }

    fn file_len(&self, path: &Path) -> io::Result<Option<u64>> {
        self.read(self.epoch)?;
        OsStorage.file_len(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let (from_dir, from_name) = self.split(from)?;
        let (to_dir, to_name) = self.split(to)?;
        let mut s = self.operate(self.epoch)?;
        fs::rename(from, to)?;
        if from_dir == to_dir {
            let dir = s.dirs.entry(from_dir).or_default();
            if let Some(node) = dir.current.remove(&from_name) {
                dir.current.insert(to_name.clone(), node);
                dir.pending.push(DirOp::Rename {
                    from: from_name,
                    to: to_name,
                    node,
                });
            }
        } else {
            let source = s.dirs.entry(from_dir).or_default();
            let node = source.current.remove(&from_name);
            source.pending.push(DirOp::Unlink(from_name));
            if let Some(node) = node {
                let target = s.dirs.entry(to_dir).or_default();
                target.current.insert(to_name.clone(), node);
                target.pending.push(DirOp::Link(to_name, node));
            }
        }
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let (parent, name) = self.split(path)?;
        let mut s = self.operate(self.epoch)?;
        fs::remove_file(path)?;
        let dir = s.dirs.entry(parent).or_default();
        dir.current.remove(&name);
        dir.pending.push(DirOp::Unlink(name));
        Ok(())
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let path = path.canonicalize()?;
        let mut s = self.operate(self.epoch)?;
        if let Some(dir) = s.dirs.get_mut(&path) {
            dir.durable = dir.current.clone();
            dir.pending.clear();
        }
        Ok(())
    }
}

/// A file on a [`SimDisk`].
#[derive(Debug)]
struct SimFile {
    file: OsFile,
    id: u64,
    epoch: u64,
    disk: SimDisk,
}

impl SimFile {
    /// Carries out `real` on the real file and, if it succeeds, records
    /// `op` as pending: a write that failed never reaches the disk.
    fn record(&self, op: FileOp, real: impl FnOnce() -> io::Result<()>) -> io::Result<()> {
        let mut s = self.disk.operate(Some(self.epoch))?;
        real()?;
        if let Some(f) = s.files.get_mut(&self.id) {
            f.pending.push(op);
        }
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        let mut s = self.disk.operate(Some(self.epoch))?;
        if let Some(f) = s.files.get_mut(&self.id) {
            for op in std::mem::take(&mut f.pending) {
                match op {
                    FileOp::Write { offset, bytes } => write_into(&mut f.durable, offset, &bytes),
                    FileOp::SetLen(len) => f.durable.resize(len as usize, 0),
                }
            }
        }
        Ok(())
    }
}

impl StorageFile for SimFile {
    fn len(&self) -> io::Result<u64> {
        self.disk.read(Some(self.epoch))?;
        self.file.len()
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.disk.read(Some(self.epoch))?;
        self.file.read_at(buf, offset)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let op = FileOp::Write {
            offset,
            bytes: buf.to_vec(),
        };
        self.record(op, || self.file.write_all_at(buf, offset))
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.record(FileOp::SetLen(len), || self.file.set_len(len))
    }

    fn allocate(&self, len: u64) -> io::Result<()> {
        let current = self.len()?;
        if current >= len {
            return Ok(());
        }
        self.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.sync()
    }

    fn sync_all(&self) -> io::Result<()> {
        self.sync()
    }

    fn map(&self) -> io::Result<Mapping> {
        self.disk.read(Some(self.epoch))?;
        self.file.map()
    }
}
