//! The backend a configuration chose, as one `Registry`: the commands are
//! written once for all of them.

use std::net::IpAddr;

use super::cloudmap::CloudMap;
use super::dns::DnsName;
use super::ec2::Ec2Tags;
use super::static_list::StaticList;
use super::verify_tasks::VerifiedTasks;
use super::{Discovered, DiscoveryError, Registry};
use crate::peer::PeerId;
use crate::view::Registration;

pub enum Backend {
    CloudMap(CloudMap),
    /// Cloud Map with every registration checked against ECS (`--verify-tasks`).
    Verified(VerifiedTasks<CloudMap>),
    Static(StaticList),
    Dns(DnsName),
    Ec2(Ec2Tags),
}

/// `$call` on whichever backend this is.
macro_rules! each {
    ($self:ident, $b:ident => $call:expr) => {
        match $self {
            Backend::CloudMap($b) => $call,
            Backend::Verified($b) => $call,
            Backend::Static($b) => $call,
            Backend::Dns($b) => $call,
            Backend::Ec2($b) => $call,
        }
    };
}

impl Registry for Backend {
    fn name(&self) -> &'static str {
        each!(self, b => b.name())
    }
    async fn rank(&self, me: &PeerId, ip: IpAddr, now_ms: u64) -> Result<u64, DiscoveryError> {
        each!(self, b => b.rank(me, ip, now_ms).await)
    }
    async fn start_register(&self, me: &Registration) -> Result<(), DiscoveryError> {
        each!(self, b => b.start_register(me).await)
    }
    async fn registered(&self) -> Result<(), DiscoveryError> {
        each!(self, b => b.registered().await)
    }
    async fn deregister(&self, me: &Registration) -> Result<(), DiscoveryError> {
        each!(self, b => b.deregister(me).await)
    }
    async fn remove_stale(&self, instance_id: &str) -> Result<(), DiscoveryError> {
        each!(self, b => b.remove_stale(instance_id).await)
    }
    async fn discover(&self) -> Result<Discovered, DiscoveryError> {
        each!(self, b => b.discover().await)
    }
    async fn discover_unchecked(&self) -> Result<Discovered, DiscoveryError> {
        each!(self, b => b.discover_unchecked().await)
    }
}
