//! Helpers the benches share: the raw fsync floor, a concurrent driver,
//! medians and resident memory.
#![allow(dead_code)]

use std::fs::OpenOptions;
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

/// A raw `pwrite` + `fdatasync` of a record-sized write, `n` times, one
/// at a time: what this disk's sync costs right now. Per write.
pub fn raw_sync_loop(path: &Path, n: u64) -> Duration {
    use std::os::unix::fs::FileExt;
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
        .expect("open");
    file.set_len(1 << 20).expect("preallocate");
    let buf = [0x5au8; 148];
    let start = Instant::now();
    for i in 0..n {
        file.write_all_at(&buf, (i * 148) % (1 << 20))
            .expect("write");
        file.sync_data().expect("sync");
    }
    start.elapsed() / u32::try_from(n.max(1)).unwrap_or(u32::MAX)
}

/// About `n` calls of `each(thread, i)` spread over `threads` threads
/// started together; the wall time per call.
pub fn concurrent(
    threads: usize,
    n: u64,
    each: impl Fn(usize, u64) + Send + Sync + 'static,
) -> Duration {
    let each = Arc::new(each);
    let per = n.div_ceil(threads as u64).max(1);
    let barrier = Arc::new(Barrier::new(threads + 1));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (each, barrier) = (each.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                for i in 0..per {
                    each(t, i);
                }
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    for h in handles {
        h.join().expect("thread");
    }
    start.elapsed() / u32::try_from(per * threads as u64).unwrap_or(u32::MAX)
}

/// The `p`-th percentile of sorted durations.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or_default()
}

/// The median.
pub fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    percentile(&v, 0.5)
}

/// Resident memory of this process, in bytes.
pub fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Bytes in MiB.
pub fn mb(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}
