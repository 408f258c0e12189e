//! Leases: one per owner, kept alive in memory (a keep-alive writes
//! nothing), and the expirer that deletes a dead owner's keys.
//!
//! An owner is alive while a [`KvStore`](super::KvStore) handle holding
//! its lease exists in this process. When the last one goes without
//! `shutdown`, the owner was last alive then; a lease found in the store
//! at open (its owner's process is gone, or will attach again) was last
//! alive at the open: every lease gets a fresh TTL of grace after a
//! restart, as etcd's do. A dead owner's keys in a bucket are deleted, as
//! events with reason `LeaseExpired`, once the bucket's TTL has passed
//! since; the expirer looks every check interval, so they go between TTL
//! and TTL plus one interval after the owner was last alive.

use std::collections::HashMap;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

/// The expirer looks at least this often, and never more often than the
/// seed's keep-alive floor: a third of the shortest bucket TTL, at least
/// [`CHECK_INTERVAL_MIN`].
pub const CHECK_INTERVAL_MIN: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct LeaseState {
    /// The live owner in this process, if any.
    owner: Option<Weak<OwnerToken>>,
    /// When it was last known alive.
    last_alive: Instant,
}

/// Every lease this database's handles know of.
#[derive(Debug, Default)]
pub(crate) struct Leases {
    states: Mutex<HashMap<u64, LeaseState>>,
    /// The running expirer, if any (it stops when the last owner goes).
    expirer: Mutex<Weak<ExpirerLink>>,
}

/// Held by every handle of one owner; its drop marks the owner dead.
#[derive(Debug)]
pub(crate) struct OwnerToken {
    pub lease: u64,
    leases: Arc<Leases>,
    /// Keeps the expirer running while the owner lives.
    expirer: Arc<ExpirerLink>,
}

impl OwnerToken {
    /// The expirer this owner keeps running.
    pub fn expirer(&self) -> Arc<ExpirerLink> {
        self.expirer.clone()
    }
}

impl Drop for OwnerToken {
    fn drop(&mut self) {
        let mut states = self.leases.lock();
        if let Some(s) = states.get_mut(&self.lease)
            && s.owner
                .as_ref()
                .is_some_and(|o| std::ptr::eq(o.as_ptr(), self))
        {
            s.owner = None;
            s.last_alive = Instant::now();
        }
    }
}

/// The expirer's end: dropping the last link stops the thread and waits
/// for it, so that nothing of the database outlives its last owner.
#[derive(Debug)]
pub(crate) struct ExpirerLink {
    stop: Mutex<Option<Sender<()>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Drop for ExpirerLink {
    fn drop(&mut self) {
        drop(
            self.stop
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(t) = thread
            && t.thread().id() != std::thread::current().id()
            && t.join().is_err()
        {
            tracing::error!("the KV expirer panicked");
        }
    }
}

impl Leases {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, LeaseState>> {
        self.states.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A lease found owning a key (at open, or in a put): alive from now
    /// unless known already.
    pub fn seen(&self, lease: u64) {
        self.lock().entry(lease).or_insert_with(|| LeaseState {
            owner: None,
            last_alive: Instant::now(),
        });
    }

    /// Makes `lease` this process's live owner's; starts the expirer
    /// with `start` if none runs.
    pub fn attach(
        self: &Arc<Leases>,
        lease: u64,
        start: impl FnOnce(Receiver<()>) -> Option<std::thread::JoinHandle<()>>,
    ) -> Arc<OwnerToken> {
        let link = self.expirer(start);
        let mut states = self.lock();
        // The same owner attached twice shares one token: either handle
        // keeps it alive.
        if let Some(live) = states
            .get(&lease)
            .and_then(|s| s.owner.as_ref())
            .and_then(Weak::upgrade)
        {
            return live;
        }
        let token = Arc::new(OwnerToken {
            lease,
            leases: self.clone(),
            expirer: link,
        });
        let s = states.entry(lease).or_insert_with(|| LeaseState {
            owner: None,
            last_alive: Instant::now(),
        });
        s.owner = Some(Arc::downgrade(&token));
        s.last_alive = Instant::now();
        token
    }

    /// Forgets `lease` once its keys are gone, unless an owner attached
    /// to it meanwhile.
    pub fn forget(&self, lease: u64) {
        let mut states = self.lock();
        if states.get(&lease).is_some_and(|s| !Self::alive(s)) {
            states.remove(&lease);
        }
    }

    fn alive(s: &LeaseState) -> bool {
        s.owner.as_ref().is_some_and(|o| o.strong_count() > 0)
    }

    /// Whether `lease` has a live owner in this process now.
    pub fn is_alive(&self, lease: u64) -> bool {
        self.lock().get(&lease).is_some_and(Self::alive)
    }

    /// A handle on the expirer without an owner: a store that writes no
    /// leased key still runs expiry while it lives.
    pub fn expirer(
        self: &Arc<Leases>,
        start: impl FnOnce(Receiver<()>) -> Option<std::thread::JoinHandle<()>>,
    ) -> Arc<ExpirerLink> {
        let mut e = self.expirer.lock().unwrap_or_else(PoisonError::into_inner);
        match e.upgrade() {
            Some(link) => link,
            None => {
                let (tx, rx) = std::sync::mpsc::channel();
                let link = Arc::new(ExpirerLink {
                    stop: Mutex::new(Some(tx)),
                    thread: Mutex::new(start(rx)),
                });
                *e = Arc::downgrade(&link);
                link
            }
        }
    }

    /// Refreshes every live owner and returns the dead leases with when
    /// each was last alive.
    pub fn sweep(&self) -> Vec<(u64, Instant)> {
        let now = Instant::now();
        let mut dead = Vec::new();
        for (lease, s) in self.lock().iter_mut() {
            if Self::alive(s) {
                s.last_alive = now;
            } else {
                s.owner = None;
                dead.push((*lease, s.last_alive));
            }
        }
        dead
    }
}

/// Waits one check interval; `false` once the last owner is gone.
pub(crate) fn wait(stop: &Receiver<()>, interval: Duration) -> bool {
    match stop.recv_timeout(interval) {
        Err(RecvTimeoutError::Timeout) | Ok(()) => true,
        Err(RecvTimeoutError::Disconnected) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_owner_is_alive_while_a_token_lives_and_dead_from_its_drop() {
        let leases = Arc::new(Leases::default());
        let mut started = None;
        let token = leases.attach(7, |rx| {
            started = Some(rx);
            None
        });
        let rx = started.expect("the first owner starts the expirer");
        leases.seen(9);
        let dead: Vec<u64> = leases.sweep().into_iter().map(|(l, _)| l).collect();
        assert_eq!(dead, vec![9], "a lease seen but not attached is dead");
        let second = leases.attach(8, |_| panic!("one expirer at a time"));
        drop(token);
        let mut dead: Vec<u64> = leases.sweep().into_iter().map(|(l, _)| l).collect();
        dead.sort_unstable();
        assert_eq!(dead, vec![7, 9]);
        assert!(wait(&rx, Duration::from_millis(1)), "an owner is left");
        drop(second);
        assert!(
            !wait(&rx, Duration::from_secs(60)),
            "the last owner gone stops it at once"
        );
    }
}
