//! Discovery backends: where registrations come from. A backend registers this
//! peer and lists the others; it never decides anything. A failed call is an
//! `Err`, never an empty list: "AWS call failed" must not read as "nobody is there".

pub mod attributes;
pub mod cloudmap;
pub mod static_list;

use std::fmt;

use crate::decide::Registration;
use crate::exit::code;
use crate::peer::PeerId;

/// What a backend found: the registrations it could read, and why it skipped others.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Discovered {
    pub registrations: Vec<Registration>,
    pub skipped: Vec<String>,
}

/// One discovery backend. Adding a backend is one file implementing this.
#[allow(async_fn_in_trait)]
pub trait Registry {
    fn name(&self) -> &'static str;
    /// The founding-order timestamp this peer registers with.
    fn registered_at(&self, me: &PeerId, now_ms: u64) -> u64;
    /// Makes `me` visible to the others (an upsert: calling it again updates it).
    async fn register(&self, me: &Registration) -> Result<(), DiscoveryError>;
    async fn deregister(&self, me: &Registration) -> Result<(), DiscoveryError>;
    async fn discover(&self) -> Result<Discovered, DiscoveryError>;
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
            ErrorKind::AccessDenied => code::NOPERM,
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
            ErrorKind::Unreachable => {
                "AWS endpoint unreachable (check the region, AWS_ENDPOINT_URL and the network path)".into()
            }
            ErrorKind::NotFound => "not found".into(),
            ErrorKind::Other => "failed".into(),
        };
        write!(f, "{} discovery: {} {hint}: {}", self.backend, self.action, self.detail)
    }
}
