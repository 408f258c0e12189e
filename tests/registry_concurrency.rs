//! Concurrent registrations lose no update: every operation is one
//! command decided in the writer, so each overlap has exactly one winner,
//! every disjoint claim is registered, and the table after reopen is the
//! same.

use std::sync::{Arc, Barrier};

use replaydb::Options;
use replaydb::registry::{Registry, RegistryError, ScopeRule};

const THREADS: usize = 8;
const ROUNDS: usize = 10;

#[test]
fn eight_threads_registering_overlapping_and_disjoint_scopes() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = Registry::open(tmp.path(), Options::default(), vec![]).unwrap();
    let barrier = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let (reg, barrier) = (reg.clone(), barrier.clone());
            std::thread::spawn(move || {
                let mut won = Vec::new();
                for round in 0..ROUNDS {
                    barrier.wait();
                    // Disjoint: everyone gets its own.
                    reg.register_pod(
                        &format!("own-{t}-{round}"),
                        std::process::id(),
                        "/run/own.sock",
                        vec![ScopeRule::write(format!("/own/{t}/{round}")).unwrap()],
                        vec![],
                        uuid::Uuid::new_v4(),
                    )
                    .unwrap()
                    .keep();
                    // Overlapping: every pair of these claims overlaps (equal,
                    // or one under the other); exactly one may win.
                    let target = if t % 2 == 0 {
                        format!("/shared/{round}")
                    } else {
                        format!("/shared/{round}/sub")
                    };
                    match reg.register_pod(
                        &format!("shared-{t}-{round}"),
                        std::process::id(),
                        "/run/shared.sock",
                        vec![ScopeRule::write(target).unwrap()],
                        vec![],
                        uuid::Uuid::new_v4(),
                    ) {
                        Ok(g) => won.push((round, g.keep())),
                        Err(RegistryError::WriteConflict { .. }) => {}
                        Err(e) => panic!("{e}"),
                    }
                }
                won
            })
        })
        .collect();
    let mut winners: Vec<(usize, String)> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    winners.sort();
    assert_eq!(
        winners.iter().map(|w| w.0).collect::<Vec<_>>(),
        (0..ROUNDS).collect::<Vec<_>>(),
        "one winner per round: {winners:?}"
    );
    let table = reg.allocations().unwrap();
    assert_eq!(table.len(), THREADS * ROUNDS + ROUNDS);
    for t in 0..THREADS {
        for round in 0..ROUNDS {
            assert!(
                table
                    .iter()
                    .any(|a| a.pod_name == format!("own-{t}-{round}"))
            );
        }
    }
    drop(reg);
    let reopened = Registry::open(tmp.path(), Options::default(), vec![]).unwrap();
    assert_eq!(reopened.allocations().unwrap(), table);
}
