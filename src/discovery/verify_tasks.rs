//! `--verify-tasks`: wraps a backend whose instance IDs are ECS task IDs (Cloud
//! Map registrations made by this tool in ECS) and keeps only the candidates
//! whose task ECS reports RUNNING, dropping the stale records of stopped tasks.

use std::net::IpAddr;

use super::{Candidate, Discovered, DiscoveryError, Registry};
use crate::ecs::Ecs;
use crate::peer::PeerId;
use crate::view::Registration;

/// Stale records removed per discovery round at most, and the time each may take.
const MAX_REMOVALS_PER_ROUND: usize = 3;
const REMOVAL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

pub struct VerifiedTasks<R> {
    inner: R,
    ecs: Ecs,
    /// Deregister the records of STOPPED tasks (`run` only: `plan`,
    /// `discover` and `health` change nothing).
    remove_stale: bool,
    /// Records already deregistered by this run.
    removed: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl<R: Registry> VerifiedTasks<R> {
    pub fn new(inner: R, ecs: Ecs, remove_stale: bool) -> VerifiedTasks<R> {
        VerifiedTasks {
            inner,
            ecs,
            remove_stale,
            removed: Default::default(),
        }
    }
}

impl<R: Registry> Registry for VerifiedTasks<R> {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    async fn rank(&self, me: &PeerId, ip: IpAddr, now_ms: u64) -> Result<u64, DiscoveryError> {
        self.inner.rank(me, ip, now_ms).await
    }

    async fn start_register(&self, me: &Registration) -> Result<(), DiscoveryError> {
        self.inner.start_register(me).await
    }

    async fn registered(&self) -> Result<(), DiscoveryError> {
        self.inner.registered().await
    }

    async fn deregister(&self, me: &Registration) -> Result<(), DiscoveryError> {
        self.inner.deregister(me).await
    }

    async fn discover_unchecked(&self) -> Result<Discovered, DiscoveryError> {
        self.inner.discover().await
    }

    async fn discover(&self) -> Result<Discovered, DiscoveryError> {
        let mut found = self.inner.discover().await?;
        let ids: Vec<String> = found.registrations.iter().map(|c| c.instance_id.clone()).collect();
        if ids.is_empty() {
            return Ok(found);
        }
        let states = self.ecs.states(&ids).await?;
        let (keep, drop): (Vec<_>, Vec<_>) = found
            .registrations
            .into_iter()
            .partition(|c| states.running.contains(&c.instance_id));
        // Their tasks run now, so their addresses are theirs.
        found.registrations = keep.into_iter().map(|c| Candidate { vouched: true, ..c }).collect();
        // Records of stopped tasks are removed, not only hidden (Cloud Map
        // lists at most 1,000 instances); a few per round, each bounded, bound
        // the calls. A failure only leaves the record hidden.
        if self.remove_stale {
            let todo: Vec<String> = {
                let removed = self.removed.lock().unwrap_or_else(|e| e.into_inner());
                drop.iter()
                    .map(|c| c.instance_id.clone())
                    .filter(|id| states.stopped.contains(id) && !removed.contains(id))
                    .take(MAX_REMOVALS_PER_ROUND)
                    .collect()
            };
            for id in todo {
                let call = tokio::time::timeout(REMOVAL_TIMEOUT, self.inner.remove_stale(&id)).await;
                match call {
                    Ok(Ok(())) => tracing::info!(instance_id = %id, "deregistered the record of a stopped ECS task"),
                    Ok(Err(e)) => {
                        tracing::warn!(instance_id = %id, error = %e, "could not deregister the record of a stopped ECS task")
                    }
                    Err(_) => {
                        tracing::warn!(instance_id = %id, "deregistering the record of a stopped ECS task timed out")
                    }
                }
                self.removed.lock().unwrap_or_else(|e| e.into_inner()).insert(id);
            }
        }
        found.skipped.extend(
            drop.into_iter()
                .map(|c| format!("instance {:?}: its ECS task is not RUNNING", c.instance_id)),
        );
        Ok(found)
    }
}
