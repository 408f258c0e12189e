//! The views' operations as a server runs them: each [`ViewCall`] on the
//! handle it names, over the served database.
//!
//! A connection's KV owners (leases) live as long as the connection: a
//! client's [`KvStore`] is alive, for its keys' TTL, while its connection
//! is; a client that reconnects attaches again under the same id and so
//! keeps its keys within their grace, as a restarted embedded owner does.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use crate::engine::Db;
use crate::error::Error;
use crate::kv::KvStore;
use crate::registry::Registry;
use crate::remote::ViewCall;
use crate::runtime::Runtimes;

/// KV owners one connection may hold at once; one more is
/// [`Error::Busy`] (reads, which need no owner, do not count).
pub const LEASES_PER_CONNECTION_MAX: usize = 64;

/// One connection's view handles.
pub(crate) struct ConnectionViews {
    db: Db,
    socket: std::path::PathBuf,
    registry: Registry,
    runtimes: Runtimes,
    kv: Mutex<HashMap<u64, KvStore>>,
    /// The owner of keys without a lease (reads, watches, the CLI's
    /// writes): one a connection, outside the count.
    kv_reader: std::sync::OnceLock<KvStore>,
}

impl ConnectionViews {
    /// `peer_pid`: the client's process, which the registry's history
    /// names as the changes' author.
    pub(crate) fn new(
        db: Db,
        socket: std::path::PathBuf,
        peer_pid: Option<u32>,
    ) -> ConnectionViews {
        let mut registry = Registry::new(db.clone());
        if let Some(pid) = peer_pid {
            registry = registry.acting_for(pid);
        }
        ConnectionViews {
            registry,
            kv_reader: std::sync::OnceLock::new(),
            runtimes: Runtimes::new(db.clone()),
            kv: Mutex::new(HashMap::new()),
            socket,
            db,
        }
    }

    /// Runs `call`; the reply's body (the answer or the view's refusal,
    /// encoded as a `Result`). An error here is the server's, sent as an
    /// error frame.
    pub(crate) fn run(&self, call: ViewCall) -> crate::Result<Vec<u8>> {
        Ok(match call {
            ViewCall::Registry(c) => c.serve(&self.registry),
            ViewCall::Runtime(c) => c.serve(&self.runtimes),
            ViewCall::Kv(c) => c.serve(self),
        })
    }

    /// The KV owner `lease` of this connection (0: keys without a lease),
    /// attached on first use.
    pub(crate) fn kv(&self, lease: u64) -> Result<KvStore, crate::kv::KvError> {
        if lease == 0 {
            if let Some(store) = self.kv_reader.get() {
                return Ok(store.clone());
            }
            let store = KvStore::without_lease(self.db.clone())?;
            return Ok(self.kv_reader.get_or_init(|| store).clone());
        }
        let mut held = self.kv.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(store) = held.get(&lease) {
            return Ok(store.clone());
        }
        if held.len() >= LEASES_PER_CONNECTION_MAX {
            return Err(crate::kv::KvError::Db(Error::Busy {
                socket: self.socket.clone(),
                limit: "KV owners on one connection",
                max: LEASES_PER_CONNECTION_MAX as u64,
            }));
        }
        let store = KvStore::with_connection_id(self.db.clone(), lease)?;
        held.insert(lease, store.clone());
        Ok(store)
    }

    /// Lets the owner `lease` go (its client dropped its last handle):
    /// its keys expire a TTL later unless it attaches again.
    pub(crate) fn release_kv(&self, lease: u64) {
        let gone = self
            .kv
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&lease);
        // Dropped outside the lock: the last handle of an expirer joins
        // its thread.
        drop(gone);
    }
}
