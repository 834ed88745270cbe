//! `--verify-tasks`: wraps a backend whose instance IDs are ECS task IDs (Cloud
//! Map registrations made by this tool in ECS) and keeps only the candidates
//! whose task ECS reports RUNNING, dropping the stale records of stopped tasks.

use std::net::IpAddr;

use super::{Discovered, DiscoveryError, Registry};
use crate::decide::Registration;
use crate::ecs::Ecs;
use crate::peer::PeerId;

/// Stale records removed per discovery round at most.
const MAX_REMOVALS_PER_ROUND: usize = 3;

pub struct VerifiedTasks<R> {
    inner: R,
    ecs: Ecs,
}

impl<R: Registry> VerifiedTasks<R> {
    pub fn new(inner: R, ecs: Ecs) -> VerifiedTasks<R> {
        VerifiedTasks { inner, ecs }
    }
}

impl<R: Registry> Registry for VerifiedTasks<R> {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    async fn rank(&self, me: &PeerId, ip: IpAddr, now_ms: u64) -> Result<u64, DiscoveryError> {
        self.inner.rank(me, ip, now_ms).await
    }

    async fn register(&self, me: &Registration) -> Result<(), DiscoveryError> {
        self.inner.register(me).await
    }

    async fn deregister(&self, me: &Registration) -> Result<(), DiscoveryError> {
        self.inner.deregister(me).await
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
        found.registrations = keep;
        // Records of stopped tasks are removed, not only hidden (Cloud Map
        // lists at most 1,000 instances); a few per round bound the calls.
        let mut removed = 0;
        for c in &drop {
            if removed < MAX_REMOVALS_PER_ROUND && states.gone.contains(&c.instance_id) {
                removed += 1;
                match self.inner.remove_stale(&c.instance_id).await {
                    Ok(()) => {
                        tracing::info!(instance_id = %c.instance_id, "deregistered the record of a stopped ECS task")
                    }
                    Err(e) => {
                        tracing::warn!(instance_id = %c.instance_id, error = %e, "could not deregister the record of a stopped ECS task")
                    }
                }
            }
        }
        found.skipped.extend(
            drop.into_iter()
                .map(|c| format!("instance {:?}: its ECS task is not RUNNING", c.instance_id)),
        );
        Ok(found)
    }
}
