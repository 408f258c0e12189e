//! A power cut between any two I/O calls loses nothing acknowledged: a
//! deterministic simulation on a disk that drops, keeps or tears unsynced
//! writes, checked against a model, over a budget of seeds.
//!
//! `REPLAYDB_SIM_SEEDS=N` runs N seeds (default 24), `REPLAYDB_SIM_STEPS`
//! sets operations per seed (default 150), `REPLAYDB_SIM_SEED=S` replays
//! one seed. A failure prints the seed and the command that replays it.

use replaydb::simulation::{SimConfig, SimReport, run_seed};

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

#[test]
fn power_loss_at_any_io_call_loses_nothing_acknowledged() {
    let config = SimConfig {
        steps: env_u64("REPLAYDB_SIM_STEPS", 150),
    };
    let seeds: Vec<u64> = match std::env::var("REPLAYDB_SIM_SEED") {
        Ok(_) => vec![env_u64("REPLAYDB_SIM_SEED", 0)],
        Err(_) => (0..env_u64("REPLAYDB_SIM_SEEDS", 24)).collect(),
    };
    let mut total = SimReport::default();
    for &seed in &seeds {
        let root = tempfile::tempdir().unwrap();
        match run_seed(root.path(), seed, &config) {
            Ok(r) => {
                total.add(&r);
            }
            Err(failure) => panic!(
                "simulation seed {seed} failed at {failure}\nreplay it with:\n  REPLAYDB_SIM_SEED={seed} REPLAYDB_SIM_STEPS={} cargo test --test sim_power_loss -- --nocapture",
                config.steps
            ),
        }
    }
    eprintln!("{} seeds: {total:#?}", seeds.len());
    // The budget must have exercised what it claims to: cuts that lost,
    // kept and tore writes, and batches in flight both kept and lost.
    if seeds.len() >= 8 {
        assert!(total.power_cuts >= seeds.len() as u64, "{total:?}");
        assert!(total.crash.writes_dropped > 0, "{total:?}");
        assert!(total.crash.writes_kept > 0, "{total:?}");
        assert!(total.crash.writes_torn > 0, "{total:?}");
        assert!(total.crash.entries_dropped > 0, "{total:?}");
        assert!(total.in_doubt_kept > 0, "{total:?}");
        assert!(total.in_doubt_lost > 0, "{total:?}");
        assert!(total.checkpoints > 0 && total.events_seen > 0, "{total:?}");
        assert!(total.cuts_during_recovery > 0, "{total:?}");
        assert!(total.buffered_lost > 0, "{total:?}");
        assert!(total.out_of_order_runs_cut > 0, "{total:?}");
        // Every acknowledged event was compared with the model at least
        // once (the log is read back after every open, and at the end).
        assert!(total.events_checked >= total.events_acked, "{total:?}");
    }
}

#[test]
fn the_same_seed_runs_the_same_way() {
    let config = SimConfig { steps: 100 };
    let run = |seed| {
        let root = tempfile::tempdir().unwrap();
        format!("{:?}", run_seed(root.path(), seed, &config).unwrap())
    };
    for seed in [3, 17] {
        assert_eq!(run(seed), run(seed), "seed {seed}");
    }
}
