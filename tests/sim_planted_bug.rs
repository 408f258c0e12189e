//! The power-loss simulation catches a real durability bug: with
//! acknowledgement before fdatasync planted (a test-only switch), some
//! seed in the CI budget must fail, naming acknowledged events as lost,
//! and the same seed must pass without it.
//!
//! Its own test binary: the planted bug is process-wide.

use replaydb::failpoint::{PlantedBug, plant};
use replaydb::simulation::{SimConfig, run_seed};

#[test]
fn acknowledging_before_fsync_is_caught_by_the_simulation() {
    plant(Some(PlantedBug::AckBeforeFsync));
    let config = SimConfig { steps: 150 };
    let mut caught = None;
    for seed in 0..24 {
        let root = tempfile::tempdir().unwrap();
        if let Err(failure) = run_seed(root.path(), seed, &config) {
            caught = Some((seed, failure));
            break;
        }
    }
    plant(None);
    let (seed, failure) =
        caught.expect("no seed in the budget caught acknowledgement before fsync");
    eprintln!("seed {seed} caught the planted bug: {failure}");
    assert!(
        failure.message.contains("acknowledged and durable"),
        "seed {seed} failed, but not on lost acknowledged events: {failure}"
    );
    // And the same seed passes without the bug: the failure is the bug's.
    let root = tempfile::tempdir().unwrap();
    if let Err(failure) = run_seed(root.path(), seed, &config) {
        panic!("seed {seed} fails even without the planted bug: {failure}");
    }
}
