//! The KV operations as requests through a server: one variant per
//! operation of [`KvStore`] and [`Bucket`], with its arguments and the
//! lease (owner) it writes for; the server runs it on the connection's
//! owner of that lease and sends back its `Result`.

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use super::watch::{read_page, read_snapshot};
use super::{Bucket, Key, KvError};
use crate::client::Client;
use crate::remote::ViewCall;
use crate::server::wire;

/// A KV operation, named, with its arguments.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum KvCall {
    /// These owners are alive while this connection is.
    Attach {
        leases: Vec<u64>,
    },
    /// The client's last handle of this owner is gone.
    Release {
        lease: u64,
    },
    GetOrCreateBucket {
        lease: u64,
        name: String,
        ttl_ms: Option<u64>,
    },
    GetBucket {
        name: String,
    },
    Buckets,
    Shutdown {
        lease: u64,
    },
    Insert {
        lease: u64,
        bucket: String,
        key: Key,
        value: ByteBuf,
        revision: u64,
    },
    CompareAndReplace {
        lease: u64,
        bucket: String,
        key: Key,
        expected: ByteBuf,
        value: ByteBuf,
    },
    Get {
        bucket: String,
        key: Key,
    },
    GetWithRevision {
        bucket: String,
        key: Key,
    },
    Delete {
        lease: u64,
        bucket: String,
        key: Key,
    },
    Entries {
        bucket: String,
    },
    Keys {
        bucket: String,
        prefix: String,
    },
    Count {
        bucket: String,
        prefix: String,
    },
    WatchSnapshot {
        bucket: String,
        prefix: String,
    },
    WatchPage {
        bucket: String,
        prefix: String,
        next_revision: u64,
    },
}

/// Sends `call`; its answer or refusal. `retry`: it changes nothing.
pub(crate) fn call<T: DeserializeOwned>(
    client: &Client,
    call: KvCall,
    retry: bool,
) -> Result<T, KvError> {
    client.call_view(&ViewCall::Kv(call), retry)
}

/// A remote owner, held by its handles: the client re-attaches it on
/// every new connection while one lives, and lets the server know when
/// the last is gone.
#[derive(Debug)]
pub(crate) struct RemoteOwner {
    pub(crate) client: Client,
    pub(crate) lease: u64,
}

impl RemoteOwner {
    /// Attaches `lease` on `client`'s server (which checks it serves a KV
    /// view) and keeps it attached across reconnects.
    pub(crate) fn attach(client: Client, lease: u64) -> Result<Arc<RemoteOwner>, KvError> {
        call::<()>(
            &client,
            KvCall::Attach {
                leases: vec![lease],
            },
            true,
        )?;
        client.hold_lease(lease);
        Ok(Arc::new(RemoteOwner { client, lease }))
    }
}

impl Drop for RemoteOwner {
    fn drop(&mut self) {
        // Never waits: the release goes with the client's next request.
        self.client.release_lease(self.lease);
    }
}

impl KvCall {
    /// Runs it for the connection `views`: the reply's body.
    pub(crate) fn serve(self, views: &crate::server::ConnectionViews) -> Vec<u8> {
        let bucket = |lease: u64, name: String| -> Result<Bucket, KvError> {
            Ok(Bucket {
                store: views.kv(lease)?,
                name,
                ttl: std::time::Duration::ZERO,
            })
        };
        let reader = || views.kv(0);
        match self {
            // Past the limit, the first owner that does not fit is Busy.
            KvCall::Attach { leases } => {
                answer(leases.into_iter().try_for_each(|l| views.kv(l).map(drop)))
            }
            KvCall::Release { lease } => {
                views.release_kv(lease);
                answer::<()>(Ok(()))
            }
            KvCall::GetOrCreateBucket {
                lease,
                name,
                ttl_ms,
            } => answer(views.kv(lease).and_then(|s| {
                s.get_or_create_bucket(&name, ttl_ms.map(std::time::Duration::from_millis))
                    .map(|b| ttl_ms_of(&b))
            })),
            KvCall::GetBucket { name } => answer(
                reader()
                    .and_then(|s| s.get_bucket(&name))
                    .map(|b| b.as_ref().map(ttl_ms_of)),
            ),
            KvCall::Buckets => answer(reader().and_then(|s| s.buckets())),
            KvCall::Shutdown { lease } => answer(views.kv(lease).and_then(|s| s.shutdown())),
            KvCall::Insert {
                lease,
                bucket: name,
                key,
                value,
                revision,
            } => {
                answer(bucket(lease, name).and_then(|b| b.insert(&key, value.into_vec(), revision)))
            }
            KvCall::CompareAndReplace {
                lease,
                bucket: name,
                key,
                expected,
                value,
            } => {
                answer(bucket(lease, name).and_then(|b| {
                    b.compare_and_replace(&key, expected.into_vec(), value.into_vec())
                }))
            }
            KvCall::Get { bucket: name, key } => answer(
                bucket(0, name)
                    .and_then(|b| b.get(&key))
                    .map(|v| v.map(ByteBuf::from)),
            ),
            KvCall::GetWithRevision { bucket: name, key } => answer(
                bucket(0, name)
                    .and_then(|b| b.get_with_revision(&key))
                    .map(|v| v.map(|(value, row)| (ByteBuf::from(value), row))),
            ),
            KvCall::Delete {
                lease,
                bucket: name,
                key,
            } => answer(bucket(lease, name).and_then(|b| b.delete(&key))),
            KvCall::Entries { bucket: name } => {
                answer(bucket(0, name).and_then(|b| b.entries()).map(|e| {
                    e.iter()
                        .map(|(k, v)| (k.to_string(), ByteBuf::from(v.to_vec())))
                        .collect::<Vec<_>>()
                }))
            }
            KvCall::Keys {
                bucket: name,
                prefix,
            } => answer(bucket(0, name).and_then(|b| b.keys(&prefix))),
            KvCall::Count {
                bucket: name,
                prefix,
            } => answer(bucket(0, name).and_then(|b| b.count(&prefix))),
            KvCall::WatchSnapshot { bucket, prefix } => answer(local_db(views).and_then(|db| {
                let (state, lsn) = read_snapshot(&db, &bucket, &prefix)?;
                let pairs: Vec<(Key, ByteBuf)> = state
                    .into_iter()
                    .map(|(k, v)| (k, ByteBuf::from(v)))
                    .collect();
                Ok((pairs, lsn))
            })),
            KvCall::WatchPage {
                bucket,
                prefix,
                next_revision,
            } => answer(
                local_db(views).and_then(|db| read_page(&db, &bucket, &prefix, next_revision)),
            ),
        }
    }
}

fn local_db(views: &crate::server::ConnectionViews) -> Result<crate::Db, KvError> {
    let store = views.kv(0)?;
    Ok(store.backend.local("kv watch")?.clone())
}

fn ttl_ms_of(b: &Bucket) -> u64 {
    u64::try_from(b.ttl().as_millis()).unwrap_or(u64::MAX)
}

fn answer<T: Serialize>(result: Result<T, KvError>) -> Vec<u8> {
    wire::encode(&result)
}
