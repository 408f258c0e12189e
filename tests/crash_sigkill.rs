//! A process killed with SIGKILL at any moment loses nothing it
//! acknowledged: after every kill the database reopens, and every
//! acknowledged LSN is present, in order, exactly once, with its data.
//!
//! Cycles: 20 by default; `REPLAYDB_CRASH_CYCLES=500` for a long run.

mod common;

use replaydb::Db;
use serde_json::{Value, json};

/// What one cycle sent and had acknowledged.
struct CycleLog {
    cycle: u64,
    /// The event data of the lines sent, regenerated from the seed.
    expected: Vec<Vec<u8>>,
    rng: fastrand::Rng,
    acked: Vec<u64>,
}

/// The `i`-th line a cycle's feeder sends.
fn line(cycle: u64, i: u64, rng: &mut fastrand::Rng) -> Value {
    json!({"c": cycle, "i": i, "pad": "x".repeat(rng.usize(0..300))})
}

impl CycleLog {
    fn new(cycle: u64, pad_seed: u64) -> Self {
        CycleLog {
            cycle,
            expected: Vec::new(),
            rng: fastrand::Rng::with_seed(pad_seed),
            acked: Vec::new(),
        }
    }

    /// What the CLI stores for line `i`: the JSON value as MessagePack.
    fn expected(&mut self, i: usize) -> &[u8] {
        while self.expected.len() <= i {
            let v = line(self.cycle, self.expected.len() as u64, &mut self.rng);
            self.expected.push(rmp_serde::to_vec(&v).unwrap());
        }
        &self.expected[i]
    }
}

#[test]
fn sigkill_at_random_moments_loses_no_acknowledged_append() {
    let mut rng = common::crash_rng();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    let opts = common::small_segments(16 * 1024);
    let mut logs: Vec<CycleLog> = Vec::new();

    for cycle in 0..common::crash_cycles() {
        let pad_seed = rng.u64(..);
        // Kill once a random number of appends is acknowledged: the kill
        // lands while the child is mid-stream, at a moment that varies
        // with the disk, the scheduler and the seed.
        let kill_after = rng.usize(1..600);
        let mut pad_rng = fastrand::Rng::with_seed(pad_seed);
        let acked = common::append_until_killed(
            &dir,
            &[
                "--segment-bytes-max",
                "16384",
                "append",
                "--stream",
                "crash",
            ],
            kill_after,
            move |i| line(cycle, i, &mut pad_rng).to_string(),
        );
        let mut log = CycleLog::new(cycle, pad_seed);
        log.acked = acked;
        logs.push(log);

        // Reopen and check everything acknowledged so far, every cycle.
        let db = Db::open(&dir, opts.clone())
            .unwrap_or_else(|e| panic!("cycle {cycle}: reopen failed: {e}"));
        let events = db.read(1, usize::MAX).unwrap();
        // The log must be: a prefix of cycle 0's lines, then a prefix of
        // cycle 1's, and so on; each line at most once, in order.
        let mut first_lsn = vec![None; logs.len()];
        let mut count = vec![0usize; logs.len()];
        let mut c = 0;
        for (n, e) in events.iter().enumerate() {
            assert_eq!(e.lsn, n as u64 + 1, "cycle {cycle}: LSNs are gapless");
            loop {
                assert!(
                    c < logs.len(),
                    "cycle {cycle}: LSN {} holds data never sent, or out of order",
                    e.lsn
                );
                if e.data == logs[c].expected(count[c]) {
                    first_lsn[c].get_or_insert(e.lsn);
                    count[c] += 1;
                    break;
                }
                c += 1;
            }
        }
        for (c, log) in logs.iter().enumerate() {
            assert!(
                count[c] >= log.acked.len(),
                "cycle {c}: acknowledged events are missing"
            );
            for (k, lsn) in log.acked.iter().enumerate() {
                assert_eq!(
                    Some(*lsn),
                    first_lsn[c].map(|f| f + k as u64),
                    "cycle {c}: acknowledged append {k}"
                );
            }
        }
        drop(db);
    }
    let out = common::cli(&dir, &["verify"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let total: usize = logs.iter().map(|l| l.acked.len()).sum();
    eprintln!(
        "{} cycles, {total} acknowledged appends checked",
        logs.len()
    );
}
