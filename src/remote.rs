//! Where a view handle ([`Registry`](crate::registry::Registry),
//! [`Runtimes`](crate::runtime::Runtimes),
//! [`KvStore`](crate::kv::KvStore)) does its work: on an embedded [`Db`],
//! or through a [`Client`] of the process that serves the database. The
//! handle's API is the same either way; through a server, every operation
//! is one named request ([`ViewCall`]) whose answer, or typed refusal,
//! comes back as it would embedded.

use serde::{Deserialize, Serialize};

use crate::client::Client;
use crate::engine::{AppliedWatch, Db};
use crate::error::{Error, Result};

/// An embedded database or a client of a served one.
#[derive(Clone, Debug)]
pub(crate) enum Backend {
    Local(Db),
    Remote(Client),
}

impl Backend {
    /// The embedded database; through a server, an internal error (the
    /// handle's remote path never gets here).
    pub(crate) fn local(&self, op: &'static str) -> Result<&Db> {
        match self {
            Backend::Local(db) => Ok(db),
            Backend::Remote(_) => Err(Error::Internal {
                op,
                reason: "a remote handle reached embedded-only code".into(),
            }),
        }
    }

    /// The client, if the handle works through a server.
    pub(crate) fn client(&self) -> Option<&Client> {
        match self {
            Backend::Remote(c) => Some(c),
            Backend::Local(_) => None,
        }
    }

    pub(crate) fn db(&self) -> Option<&Db> {
        match self {
            Backend::Local(db) => Some(db),
            Backend::Remote(_) => None,
        }
    }
}

/// One request of a view's operation through a server.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum ViewCall {
    Registry(crate::registry::remote::RegistryCall),
    Runtime(crate::runtime::remote::RuntimeCall),
    Kv(crate::kv::remote::KvCall),
}

impl ViewCall {
    /// The stream the view's events go to.
    pub(crate) fn stream(&self) -> &'static str {
        match self {
            ViewCall::Registry(_) => crate::registry::REGISTRY_STREAM,
            ViewCall::Runtime(_) => crate::runtime::RUNTIME_STREAM,
            ViewCall::Kv(_) => crate::kv::KV_STREAM,
        }
    }
}

/// Waits for the store to apply past an LSN: what a subscription or a
/// watch does when the page it read was empty.
#[derive(Debug)]
pub(crate) enum Waiter {
    Local(AppliedWatch),
    Remote(Client),
}

impl Waiter {
    pub(crate) fn new(backend: &Backend) -> Waiter {
        match backend {
            Backend::Local(db) => Waiter::Local(AppliedWatch::new(db)),
            Backend::Remote(c) => Waiter::Remote(c.clone()),
        }
    }

    /// Blocks until the store has applied past `lsn` (through a server:
    /// or until the server's wait limit, after which the caller reads
    /// again and, finding nothing, waits again).
    pub(crate) fn wait_past(&self, lsn: u64) -> Result<()> {
        match self {
            Waiter::Local(w) => w.wait_past(lsn),
            Waiter::Remote(c) => c.wait_applied(lsn),
        }
    }

    /// [`Waiter::wait_past`] without blocking a tokio worker (through a
    /// server, the wait is a blocking-pool task).
    pub(crate) async fn wait_past_async(&mut self, lsn: u64) -> Result<()> {
        match self {
            Waiter::Local(w) => w.wait_past_async(lsn).await,
            Waiter::Remote(c) => {
                let c = c.clone();
                tokio::task::spawn_blocking(move || c.wait_applied(lsn))
                    .await
                    .map_err(|e| Error::Internal {
                        op: "wait_applied",
                        reason: format!("the waiting task failed: {e}"),
                    })?
            }
        }
    }
}

/// Serde for an [`Error`] inside a view's error: as its
/// [`WireError`](crate::server::wire::WireError), so it comes back the
/// same variant.
pub(crate) mod as_wire {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::error::Error;
    use crate::server::wire::WireError;

    pub(crate) fn serialize<S: Serializer>(e: &Error, s: S) -> Result<S::Ok, S::Error> {
        WireError::from(e).serialize(s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Error, D::Error> {
        WireError::deserialize(d).map(Error::from)
    }
}
