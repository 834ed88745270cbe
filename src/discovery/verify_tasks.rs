//! `--verify-tasks`: wraps a backend whose instance IDs are ECS task IDs (Cloud
//! Map registrations made by this tool in ECS) and keeps only the candidates
//! whose task ECS reports RUNNING, dropping the stale records of stopped tasks.

use std::net::IpAddr;

use super::{Discovered, DiscoveryError, Registry};
use crate::decide::Registration;
use crate::ecs::Ecs;
use crate::peer::PeerId;

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
        let running = self.ecs.running(&ids).await?;
        let (keep, drop): (Vec<_>, Vec<_>) = found
            .registrations
            .into_iter()
            .partition(|c| running.contains(&c.instance_id));
        found.registrations = keep;
        found.skipped.extend(
            drop.into_iter()
                .map(|c| format!("instance {:?}: its ECS task is not RUNNING", c.instance_id)),
        );
        Ok(found)
    }
}
