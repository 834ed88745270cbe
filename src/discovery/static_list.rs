//! A fixed list of peers (`--peers`): full multiaddrs, founding order = list order.
//! Nothing to register.

use super::{Discovered, DiscoveryError, Registry};
use crate::decide::Registration;
use crate::peer::{PeerAddr, PeerId};

pub struct StaticList {
    peers: Vec<PeerAddr>,
    api_port: u16,
}

impl StaticList {
    pub fn new(peers: Vec<PeerAddr>, api_port: u16) -> StaticList {
        StaticList { peers, api_port }
    }
}

impl Registry for StaticList {
    fn name(&self) -> &'static str {
        "static"
    }

    /// The position in --peers; a peer not listed comes after all listed ones.
    fn registered_at(&self, me: &PeerId, _now_ms: u64) -> u64 {
        self.peers
            .iter()
            .position(|p| &p.peer_id == me)
            .unwrap_or(self.peers.len()) as u64
    }

    async fn register(&self, _me: &Registration) -> Result<(), DiscoveryError> {
        Ok(())
    }

    async fn deregister(&self, _me: &Registration) -> Result<(), DiscoveryError> {
        Ok(())
    }

    async fn discover(&self) -> Result<Discovered, DiscoveryError> {
        let registrations = self
            .peers
            .iter()
            .enumerate()
            .map(|(i, p)| Registration {
                instance_id: p.to_string(),
                peer_id: p.peer_id.clone(),
                ip: p.ip,
                cluster_port: p.port,
                api_port: self.api_port,
                registered_at_ms: i as u64,
                consensus: None,
                init_peerset: None,
            })
            .collect();
        Ok(Discovered {
            registrations,
            skipped: vec![],
        })
    }
}
