//! The registry's operations as requests through a server: one variant
//! per operation of [`Registry`], with its arguments; the server runs it
//! on its own handle and sends back its `Result`.

use std::path::PathBuf;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{Authority, Registry, RegistryError, ScopeRule, SegmentId, decide};
use crate::client::Client;
use crate::remote::ViewCall;
use crate::server::wire;

/// A registry operation, named, with its arguments.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum RegistryCall {
    RegisterPod {
        name: String,
        pid: u32,
        socket: PathBuf,
        allow: Vec<ScopeRule>,
        deny: Vec<ScopeRule>,
        segment: SegmentId,
    },
    DelegateScope {
        spawner: String,
        child: String,
        pid: u32,
        socket: PathBuf,
        allow: Vec<ScopeRule>,
        authority: Authority,
    },
    AdoptAllocation {
        name: String,
        pid: u32,
        segment: SegmentId,
    },
    UpdateSegment {
        name: String,
        segment: SegmentId,
    },
    ReleasePod {
        name: String,
    },
    /// A dropped guard's release: only the allocation it made.
    ReleaseIfSame {
        name: String,
        pid: u32,
    },
    ReclaimDelegatedScope {
        parent: String,
        child: String,
        delegated: Vec<ScopeRule>,
    },
    ReclaimStale,
    Find {
        name: String,
    },
    FindBySegment {
        segment: SegmentId,
    },
    LookupSegment {
        segment: SegmentId,
    },
    Allocations,
    HasEffective {
        pod: String,
        rule: ScopeRule,
    },
    History {
        pod: String,
        from_lsn: u64,
        limit: u64,
    },
}

/// Sends `call`; its answer or refusal. `retry`: it changes nothing.
pub(crate) fn call<T: DeserializeOwned>(
    client: &Client,
    call: RegistryCall,
    retry: bool,
) -> Result<T, RegistryError> {
    client.call_view(&ViewCall::Registry(call), retry)
}

impl RegistryCall {
    /// Runs it on the server's registry: the reply's body.
    pub(crate) fn serve(self, registry: &Registry) -> Vec<u8> {
        match self {
            // The guard stays with the client, whose drop releases it.
            RegistryCall::RegisterPod {
                name,
                pid,
                socket,
                allow,
                deny,
                segment,
            } => answer(
                registry
                    .register_pod(&name, pid, socket, allow, deny, segment)
                    .map(|g| drop(g.keep())),
            ),
            RegistryCall::DelegateScope {
                spawner,
                child,
                pid,
                socket,
                allow,
                authority,
            } => answer(registry.delegate_scope(&spawner, &child, pid, socket, allow, authority)),
            RegistryCall::AdoptAllocation { name, pid, segment } => answer(
                registry
                    .adopt_allocation(&name, pid, segment)
                    .map(|g| drop(g.keep())),
            ),
            RegistryCall::UpdateSegment { name, segment } => {
                answer(registry.update_segment(&name, segment))
            }
            RegistryCall::ReleasePod { name } => answer(registry.release_pod(&name)),
            RegistryCall::ReleaseIfSame { name, pid } => answer(
                registry
                    .run("release_pod", move |s| {
                        Ok(decide::release_if_same(s, &name, pid))
                    })
                    .map(drop),
            ),
            RegistryCall::ReclaimDelegatedScope {
                parent,
                child,
                delegated,
            } => answer(registry.reclaim_delegated_scope(&parent, &child, delegated)),
            RegistryCall::ReclaimStale => answer(registry.reclaim_stale()),
            RegistryCall::Find { name } => answer(registry.find(&name)),
            RegistryCall::FindBySegment { segment } => answer(registry.find_by_segment(segment)),
            RegistryCall::LookupSegment { segment } => answer(registry.lookup_segment(segment)),
            RegistryCall::Allocations => answer(registry.allocations()),
            RegistryCall::HasEffective { pod, rule } => answer(registry.has_effective(&pod, &rule)),
            RegistryCall::History {
                pod,
                from_lsn,
                limit,
            } => answer(registry.history(
                &pod,
                from_lsn,
                usize::try_from(limit.min(wire::PAGE_EVENTS_MAX)).unwrap_or(usize::MAX),
            )),
        }
    }
}

fn answer<T: Serialize>(result: Result<T, RegistryError>) -> Vec<u8> {
    wire::encode(&result)
}
