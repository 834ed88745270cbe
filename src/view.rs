//! The view: the peers as discovery lists them and as probing finds them.
//! Plain data that discovery, probing, health and `decide` share, so that no
//! backend depends on the decision.

use std::net::IpAddr;

use serde::Serialize;

use crate::peer::{Consensus, PeerAddr, PeerId};

/// One peer as the registry lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Registration {
    pub instance_id: String,
    pub peer_id: PeerId,
    pub ip: IpAddr,
    pub cluster_port: u16,
    pub api_port: u16,
    /// Registration time (ms since the Unix epoch) as the peer wrote it: the
    /// founding order. Everyone reads the same value, so clock skew between
    /// tasks cannot make two observers order peers differently.
    pub registered_at_ms: u64,
    /// The consensus the peer runs, when it says.
    pub consensus: Option<Consensus>,
    /// Published by a raft peer that started a fixed-set launch: its init_peerset.
    pub init_peerset: Option<Vec<PeerId>>,
}

impl Registration {
    pub fn addr(&self) -> PeerAddr {
        PeerAddr {
            ip: self.ip,
            port: self.cluster_port,
            peer_id: self.peer_id.clone(),
        }
    }

    pub(crate) fn order_key(&self) -> (u64, &PeerId) {
        (self.registered_at_ms, &self.peer_id)
    }
}

/// What probing one registration found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Probe {
    /// The REST API answered `/id` with the registered peer ID.
    Api { cluster_peers: Vec<PeerId> },
    /// The cluster port is open and it is not a bootstrap sidecar: a running
    /// daemon whose REST API this peer cannot reach.
    Daemon,
    /// Another ipfs-cluster-bootstrap, still deciding, and the founding set it
    /// would found with now (none while it sees fewer than `--expect` peers).
    Waiting { proposal: Option<Vec<PeerId>> },
    /// Another ipfs-cluster-bootstrap that decided to start a raft fixed-set
    /// launch with this init_peerset, and is about to start its daemon.
    Founding { set: Vec<PeerId> },
    /// Something else answers at that address (a reused IP): not that peer.
    WrongPeer { answered: String },
    /// Nothing answered.
    Down { error: String },
}

/// A registration and what its probe found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Observed {
    pub registration: Registration,
    pub probe: Probe,
    /// The peer answered with its peer ID itself (its REST API's `/id` or
    /// its greeting): the address is that peer's now, not only listed as it.
    pub confirmed: bool,
}
