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
/// [`Error::Busy`].
pub const LEASES_PER_CONNECTION_MAX: usize = 64;

/// One connection's view handles.
pub(crate) struct ConnectionViews {
    db: Db,
    socket: std::path::PathBuf,
    registry: Registry,
    runtimes: Runtimes,
    kv: Mutex<HashMap<u64, KvStore>>,
}

impl ConnectionViews {
    pub(crate) fn new(db: Db, socket: std::path::PathBuf) -> ConnectionViews {
        ConnectionViews {
            registry: Registry::new(db.clone()),
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
        let store = match lease {
            0 => KvStore::without_lease(self.db.clone())?,
            id => KvStore::with_connection_id(self.db.clone(), id)?,
        };
        held.insert(lease, store.clone());
        Ok(store)
    }

    /// Lets the owner `lease` go (its client dropped its last handle):
    /// its keys expire a TTL later unless it attaches again.
    pub(crate) fn release_kv(&self, lease: u64) {
        self.kv
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&lease);
    }
}
