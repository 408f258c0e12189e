//! The KV owners (leases) a client's handles hold: attached on every new
//! connection, let go when the last handle of one goes, and kept alive
//! across an idle spell by a keeper that pings, so the client notices a
//! restarted or taken-over server before its owners' keys expire.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError, Weak};
use std::time::Duration;

use super::{Client, Inner};

/// How often the keeper pings while an owner is held: a quarter of the
/// shortest TTL ([`crate::kv::TTL_MIN`]), so a server that came back is
/// found, and the owners attached, well within any bucket's TTL.
pub(crate) const KEEPALIVE_INTERVAL: Duration = Duration::from_millis(250);

#[derive(Debug, Default)]
pub(crate) struct Leases {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Each owner held, with how many handles hold it.
    held: HashMap<u64, usize>,
    /// Owners whose last handle went, not yet let go on the server.
    released: Vec<u64>,
    /// Whether a keeper thread runs.
    keeper: bool,
}

impl Leases {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts one more handle of `lease`; whether a keeper must start.
    pub(crate) fn hold(&self, lease: u64) -> bool {
        let mut s = self.state();
        // Held again before its release went: the release is void.
        s.released.retain(|l| *l != lease);
        *s.held.entry(lease).or_default() += 1;
        !std::mem::replace(&mut s.keeper, true)
    }

    /// Counts one handle of `lease` fewer; the last one queues its
    /// release.
    pub(crate) fn release(&self, lease: u64) {
        let mut s = self.state();
        match s.held.get_mut(&lease) {
            Some(n) if *n > 1 => *n -= 1,
            Some(_) => {
                s.held.remove(&lease);
                s.released.push(lease);
            }
            None => {}
        }
    }

    /// Every owner held.
    pub(crate) fn held(&self) -> Vec<u64> {
        self.state().held.keys().copied().collect()
    }

    /// The releases to send now.
    pub(crate) fn take_released(&self) -> Vec<u64> {
        std::mem::take(&mut self.state().released)
    }

    /// Whether the keeper has work; if not, it is marked stopped.
    fn keep_going(&self) -> bool {
        let mut s = self.state();
        if s.held.is_empty() && s.released.is_empty() {
            s.keeper = false;
            return false;
        }
        true
    }
}

/// Starts the keeper of `inner`'s owners: it pings every
/// [`KEEPALIVE_INTERVAL`] while one is held or a release is queued, and
/// ends when none is, or when the client is gone.
pub(crate) fn spawn_keeper(inner: Weak<Inner>) {
    let on_failure = inner.clone();
    let spawned = std::thread::Builder::new()
        .name("replaydb-kv-keeper".into())
        .spawn(move || {
            loop {
                // A timer, not a synchronisation: the ping is the work.
                std::thread::sleep(KEEPALIVE_INTERVAL);
                let Some(inner) = inner.upgrade() else { return };
                if !inner.leases.keep_going() {
                    return;
                }
                let client = Client { inner };
                if let Err(e) = client.ping(&[]) {
                    tracing::warn!(error = %e, "the KV keeper's ping failed; it tries again");
                }
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "the KV keeper thread did not start");
        // The next owner held tries again.
        if let Some(inner) = on_failure.upgrade() {
            inner.leases.state().keeper = false;
        }
    }
}
