//! A redb backend that reads a file and keeps every write in memory.
//!
//! redb's integrity check repairs what it checks (it rebuilds allocator
//! state and commits), and restoring a savepoint rewrites the file. Run
//! against an overlay, both leave the file exactly as it was: a check or a
//! trial fallback costs one read of the file, never a copy, and never
//! touches the evidence.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex, PoisonError};

use super::StorageFile;

const BLOCK_BYTES: u64 = 4096;

#[derive(Debug)]
struct Overlay {
    /// The length redb sees.
    len: u64,
    /// Bytes of the file at or past this offset read as zero (the overlay
    /// was cut below it and grown again).
    base_visible: u64,
    /// Written blocks, by index.
    blocks: HashMap<u64, Box<[u8]>>,
}

/// See the module docs.
#[derive(Debug)]
pub(crate) struct OverlayBackend {
    base: Arc<dyn StorageFile>,
    state: Mutex<Overlay>,
}

impl OverlayBackend {
    /// An overlay over `base` as it is now.
    pub(crate) fn new(base: Arc<dyn StorageFile>) -> io::Result<OverlayBackend> {
        let len = base.len()?;
        Ok(OverlayBackend {
            base,
            state: Mutex::new(Overlay {
                len,
                base_visible: len,
                blocks: HashMap::new(),
            }),
        })
    }

    /// One block as the overlay sees it, read from the file if not written.
    fn load_block(&self, s: &Overlay, index: u64) -> io::Result<Box<[u8]>> {
        let mut block = vec![0u8; BLOCK_BYTES as usize].into_boxed_slice();
        let start = index * BLOCK_BYTES;
        let from_base = s
            .base_visible
            .min(s.len)
            .saturating_sub(start)
            .min(BLOCK_BYTES);
        if from_base > 0 {
            let dst = block.get_mut(..from_base as usize).unwrap_or_default();
            self.base.read_exact_at(dst, start)?;
        }
        Ok(block)
    }
}

impl redb::StorageBackend for OverlayBackend {
    fn len(&self) -> io::Result<u64> {
        Ok(self
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let end = offset
            .checked_add(out.len() as u64)
            .filter(|&e| e <= s.len)
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        let mut at = offset;
        while at < end {
            let index = at / BLOCK_BYTES;
            let within = (at % BLOCK_BYTES) as usize;
            let n = ((BLOCK_BYTES - at % BLOCK_BYTES).min(end - at)) as usize;
            let dst_at = (at - offset) as usize;
            let dst = out.get_mut(dst_at..dst_at + n).unwrap_or_default();
            match s.blocks.get(&index) {
                Some(block) => {
                    dst.copy_from_slice(block.get(within..within + n).unwrap_or_default())
                }
                None => {
                    let block = self.load_block(&s, index)?;
                    dst.copy_from_slice(block.get(within..within + n).unwrap_or_default());
                }
            }
            at += n as u64;
        }
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if len < s.len {
            s.base_visible = s.base_visible.min(len);
            let keep = len.div_ceil(BLOCK_BYTES);
            s.blocks.retain(|&i, _| i < keep);
            if let Some(last) = s.blocks.get_mut(&(len / BLOCK_BYTES)) {
                let from = (len % BLOCK_BYTES) as usize;
                last.get_mut(from..).unwrap_or_default().fill(0);
            }
        }
        s.len = len;
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let end = offset
            .checked_add(data.len() as u64)
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        let mut at = offset;
        while at < end {
            let index = at / BLOCK_BYTES;
            let within = (at % BLOCK_BYTES) as usize;
            let n = ((BLOCK_BYTES - at % BLOCK_BYTES).min(end - at)) as usize;
            if !s.blocks.contains_key(&index) {
                let block = self.load_block(&s, index)?;
                s.blocks.insert(index, block);
            }
            let src_at = (at - offset) as usize;
            if let Some(block) = s.blocks.get_mut(&index) {
                block
                    .get_mut(within..within + n)
                    .unwrap_or_default()
                    .copy_from_slice(data.get(src_at..src_at + n).unwrap_or_default());
            }
            at += n as u64;
        }
        s.len = s.len.max(end);
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::storage::{OpenMode, OsStorage, Storage};
    use redb::StorageBackend;

    #[test]
    fn writes_stay_in_memory_and_the_file_is_untouched() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("f");
        std::fs::write(&path, vec![1u8; 10_000]).unwrap();
        let file = OsStorage.open(&path, OpenMode::Read).unwrap();
        let o = OverlayBackend::new(file).unwrap();
        o.write(4090, &[9; 20]).unwrap();
        let mut out = vec![0u8; 30];
        o.read(4085, &mut out).unwrap();
        assert_eq!(&out[..5], &[1; 5]);
        assert_eq!(&out[5..25], &[9; 20]);
        assert_eq!(&out[25..], &[1; 5]);
        o.set_len(5000).unwrap();
        o.set_len(12_000).unwrap();
        let mut tail = vec![7u8; 100];
        o.read(4990, &mut tail).unwrap();
        assert_eq!(&tail[..10], &[1; 10]);
        assert!(
            tail[10..].iter().all(|&b| b == 0),
            "bytes cut away read as zero"
        );
        assert!(
            o.read(11_990, &mut [0u8; 20]).is_err(),
            "reads stop at the length"
        );
        assert_eq!(std::fs::read(&path).unwrap(), vec![1u8; 10_000]);
    }
}
