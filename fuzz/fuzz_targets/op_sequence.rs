//! Operation sequences with power cuts, against the model: the fuzzer's
//! bytes choose every operation, payload, cut point and crash outcome of
//! a `replaydb::simulation` run; any failed check is a crash.
#![no_main]

use libfuzzer_sys::fuzz_target;
use replaydb::simulation::{FromBytes, SimConfig, run};

fuzz_target!(|data: &[u8]| {
    let root = tempfile::tempdir().expect("tempdir");
    let config = SimConfig { steps: 64 };
    if let Err(failure) = run(root.path(), &mut FromBytes::new(data), &config) {
        panic!("simulation check failed at {failure}");
    }
});
