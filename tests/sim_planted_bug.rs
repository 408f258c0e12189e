//! The power-loss simulation catches real durability bugs: with each one
//! planted (a test-only switch), some seed in the CI budget must fail,
//! naming acknowledged events as lost, and the same seed must pass
//! without it.
//!
//! Its own test binary, and one test: a planted bug is process-wide.

use replaydb::failpoint::{PlantedBug, plant};
use replaydb::simulation::{SimConfig, run_seed};

fn caught_within_budget(bug: PlantedBug) {
    let config = SimConfig { steps: 150 };
    plant(Some(bug));
    let mut caught = None;
    for seed in 0..24 {
        let root = tempfile::tempdir().unwrap();
        if let Err(failure) = run_seed(root.path(), seed, &config) {
            caught = Some((seed, failure));
            break;
        }
    }
    plant(None);
    let (seed, failure) = caught.unwrap_or_else(|| panic!("no seed in the budget caught {bug:?}"));
    eprintln!("seed {seed} caught {bug:?}: {failure}");
    assert!(
        failure.message.contains("acknowledged and durable"),
        "seed {seed} failed on {bug:?}, but not on lost acknowledged events: {failure}"
    );
    // The same seed passes without the bug: the failure is the bug's.
    let root = tempfile::tempdir().unwrap();
    if let Err(failure) = run_seed(root.path(), seed, &config) {
        panic!("seed {seed} fails even without {bug:?}: {failure}");
    }
}

#[test]
fn planted_durability_bugs_are_caught_by_the_simulation() {
    caught_within_budget(PlantedBug::AckBeforeFsync);
    caught_within_budget(PlantedBug::SkipSegmentDirSync);
}
