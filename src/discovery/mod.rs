//! Discovery backends: where registrations come from. A backend registers this
//! peer and lists the others; it never decides anything. A failed call is an
//! `Err`, never an empty list: "AWS call failed" must not read as "nobody is there".

#[cfg(feature = "aws")]
pub mod any;
pub mod attributes;
#[cfg(feature = "aws")]
pub mod cloudmap;
pub mod dns;
#[cfg(feature = "aws")]
pub mod ec2;
#[cfg(feature = "aws")]
mod sdk;
pub mod static_list;
#[cfg(feature = "aws")]
pub mod verify_tasks;

#[cfg(feature = "aws")]
pub use sdk::sdk_error;

use std::fmt;
use std::net::IpAddr;

use serde::Serialize;

use crate::exit::code;
use crate::peer::{Consensus, PeerId};
use crate::view::Registration;

/// A registration as a backend lists it. DNS names and plain addresses carry
/// no peer ID: the peer tells it when probed (its greeting or its `/id`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Candidate {
    pub instance_id: String,
    pub peer_id: Option<PeerId>,
    pub ip: IpAddr,
    pub cluster_port: u16,
    pub api_port: u16,
    /// The founding order: registration time, launch time, list position or address.
    pub rank: u64,
    pub consensus: Option<Consensus>,
    pub init_peerset: Option<Vec<PeerId>>,
    /// The address is the peer's now, as a source this tool trusts says:
    /// the operator listed it (static list, DNS name), EC2 lists the
    /// instance running, or ECS its task RUNNING (`--verify-tasks`). A
    /// registry record alone may be stale, its IP reused by anyone: the
    /// REST API credentials go only to vouched-for addresses.
    pub vouched: bool,
}

impl Candidate {
    /// A bare address, as DNS and static lists give them: no registration
    /// metadata, the peer ID only if the list names it.
    pub fn at(ip: IpAddr, cluster_port: u16, api_port: u16, rank: u64, peer_id: Option<PeerId>) -> Candidate {
        Candidate {
            instance_id: std::net::SocketAddr::new(ip, cluster_port).to_string(),
            peer_id,
            ip,
            cluster_port,
            api_port,
            rank,
            consensus: None,
            init_peerset: None,
            vouched: true,
        }
    }

    /// The registration, once the peer ID is known.
    pub fn identified(self, peer_id: PeerId) -> Registration {
        Registration {
            instance_id: self.instance_id,
            peer_id,
            ip: self.ip,
            cluster_port: self.cluster_port,
            api_port: self.api_port,
            registered_at_ms: self.rank,
            consensus: self.consensus,
            init_peerset: self.init_peerset,
        }
    }
}

impl From<Registration> for Candidate {
    fn from(r: Registration) -> Candidate {
        Candidate {
            instance_id: r.instance_id,
            peer_id: Some(r.peer_id),
            ip: r.ip,
            cluster_port: r.cluster_port,
            api_port: r.api_port,
            rank: r.registered_at_ms,
            consensus: r.consensus,
            init_peerset: r.init_peerset,
            vouched: false,
        }
    }
}

/// The founding rank of an address, for backends that order by address:
/// IPv4 in numeric order, then IPv6 by its first 64 bits.
pub fn address_rank(ip: IpAddr) -> u64 {
    match ip {
        IpAddr::V4(v4) => u64::from(u32::from(v4)),
        IpAddr::V6(v6) => u64::MAX / 2 + (((u128::from(v6) >> 64) as u64) >> 1),
    }
}

/// What a backend found: the candidates it could read, and why it skipped others.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Discovered {
    pub registrations: Vec<Candidate>,
    pub skipped: Vec<String>,
}

/// One discovery backend. Adding a backend is one file implementing this.
#[allow(async_fn_in_trait)]
pub trait Registry {
    fn name(&self) -> &'static str;
    /// This peer's founding rank (see `Candidate::rank`).
    async fn rank(&self, me: &PeerId, ip: IpAddr, now_ms: u64) -> Result<u64, DiscoveryError>;
    /// Makes `me` visible to the others (an upsert: calling it again updates
    /// it). Backends that only read (DNS, static lists) have nothing to do.
    async fn register(&self, me: &Registration) -> Result<(), DiscoveryError> {
        self.start_register(me).await?;
        self.registered().await
    }
    /// Sends the registration without waiting until it is in effect, so that
    /// the wait (Cloud Map's asynchronous operation) overlaps the first
    /// round; [`Registry::registered`] then waits for it. By default the
    /// whole registration happens here.
    async fn start_register(&self, _me: &Registration) -> Result<(), DiscoveryError> {
        Ok(())
    }
    /// Waits until the registration [`Registry::start_register`] sent is in
    /// effect: its error if it failed, Ok when nothing is pending.
    async fn registered(&self) -> Result<(), DiscoveryError> {
        Ok(())
    }
    async fn deregister(&self, _me: &Registration) -> Result<(), DiscoveryError> {
        Ok(())
    }
    /// Removes another instance's record whose task is known to be gone
    /// (`--verify-tasks`); sent once, not awaited to completion. Backends
    /// that only read have nothing to do.
    async fn remove_stale(&self, _instance_id: &str) -> Result<(), DiscoveryError> {
        Ok(())
    }
    async fn discover(&self) -> Result<Discovered, DiscoveryError>;
    /// The registrations as the backend lists them, unchecked against ECS
    /// (the reaper only learns which task each peer ID runs in).
    async fn discover_unchecked(&self) -> Result<Discovered, DiscoveryError> {
        self.discover().await
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The credentials lack a permission.
    AccessDenied,
    /// The API throttled us.
    Throttled,
    /// No answer: network, DNS, timeout, endpoint.
    Unreachable,
    /// The namespace or service does not exist.
    NotFound,
    /// No AWS credentials anywhere in the SDK's chain.
    NoCredentials,
    /// Anything else the API said.
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveryError {
    pub backend: &'static str,
    /// The API action, as IAM names it (servicediscovery:DiscoverInstances).
    pub action: &'static str,
    pub kind: ErrorKind,
    pub detail: String,
}

impl DiscoveryError {
    pub fn exit_code(&self) -> i32 {
        match self.kind {
            ErrorKind::AccessDenied | ErrorKind::NoCredentials => code::NOPERM,
            ErrorKind::NotFound => code::CONFIG,
            ErrorKind::Throttled | ErrorKind::Unreachable | ErrorKind::Other => code::UNAVAILABLE,
        }
    }
}

impl std::error::Error for DiscoveryError {}

impl fmt::Display for DiscoveryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hint = match self.kind {
            ErrorKind::AccessDenied => {
                format!("access denied: grant {} to the task role", self.action)
            }
            ErrorKind::Throttled => "throttled by AWS".into(),
            ErrorKind::Unreachable if self.backend == "dns" => {
                "the name server did not answer (check /etc/resolv.conf or --dns-server)".into()
            }
            ErrorKind::Unreachable => {
                "AWS endpoint unreachable (check the region, AWS_ENDPOINT_URL and the network path)".into()
            }
            ErrorKind::NoCredentials => "no AWS credentials".into(),
            ErrorKind::NotFound => "not found".into(),
            ErrorKind::Other => "failed".into(),
        };
        write!(f, "{} discovery: {} {hint}: {}", self.backend, self.action, self.detail)
    }
}
