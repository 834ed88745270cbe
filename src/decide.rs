//! The decision: how this peer must start. A pure function of plain data
//! (`Facts`, the current time included) to a `Decision` (action + reason).
//!
//! Architecture invariant: nothing here does I/O, reads the clock or the
//! environment, or logs. Every rule is one ordered guard in [`decide`]; the first
//! that matches wins, and the `Reason` it returns names it.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use serde::Serialize;

use crate::peer::{Consensus, PeerAddr, PeerId};
use crate::view::{Observed, Probe};

/// At most this many live peers are passed to `--bootstrap` (the daemon joins
/// them one after another; ipfs-cluster itself dials 3 peers at boot).
pub const MAX_BOOTSTRAP: usize = 3;

/// This peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Me {
    pub peer_id: PeerId,
    /// The address this peer registers and listens on.
    pub ip: IpAddr,
    pub consensus: Consensus,
    /// Local consensus state (raft folder, crdt datastore) already exists.
    pub has_state: bool,
    pub registered_at_ms: u64,
}

/// Everything the decision depends on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Facts {
    pub me: Me,
    pub expect: usize,
    pub settle_ms: u64,
    pub now_ms: u64,
    /// When [`Facts::view`] last changed.
    pub view_since_ms: u64,
    /// Every registration but this peer's own, with its probe.
    pub peers: Vec<Observed>,
    /// Addresses (DNS, plain addresses) where a daemon answers but its peer ID
    /// could not be read: a cluster may run there, but it cannot be joined.
    pub unidentified: Vec<IpAddr>,
    /// The state root's genesis record (`--state-root`): a cluster was founded
    /// there. None without a state root, before the first founding, and
    /// under `--refound` of this very record.
    pub genesis: Option<Founded>,
}

/// A genesis record as the decision needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Founded {
    pub id: String,
    pub consensus: Consensus,
    pub founders: Vec<PeerId>,
    pub founded_at: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Start on existing local state. Never `--bootstrap` under raft.
    Start { bootstrap: Vec<PeerAddr> },
    /// Join live peers with `--bootstrap`.
    Join { bootstrap: Vec<PeerAddr> },
    /// Found the cluster: alone (crdt) or as one of a fixed set (raft, `init_peerset`).
    Found { init_peerset: Option<Vec<PeerId>> },
    /// No safe action yet: poll again.
    Wait,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "rule", rename_all = "snake_case")]
pub enum Reason {
    DuplicateIdentity {
        ip: IpAddr,
    },
    ExistingState {
        consensus: Consensus,
    },
    LiveCluster {
        live: usize,
    },
    FixedSetContinues {
        founding_set: Vec<PeerId>,
    },
    PeersStarting {
        peers: Vec<PeerId>,
    },
    UnidentifiedDaemons {
        ips: Vec<IpAddr>,
    },
    TooFew {
        alive: usize,
        expect: usize,
    },
    Unsettled {
        stable_ms: u64,
        settle_ms: u64,
    },
    NotInFoundingSet {
        founding_set: Vec<PeerId>,
    },
    NoAgreement {
        peer: PeerId,
        proposal: Option<Vec<PeerId>>,
    },
    AwaitingFounder {
        founder: PeerId,
    },
    Founder,
    FixedSet {
        founding_set: Vec<PeerId>,
    },
    GenesisFounder {
        genesis: String,
    },
    ClusterExists {
        genesis: String,
        founders: Vec<PeerId>,
        founded_at: String,
    },
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::DuplicateIdentity { ip } => write!(
                f,
                "another running peer at {ip} has this peer's ID (a shared identity.json or CLUSTER_ID?): \
                 refusing to start until it is gone"
            ),
            Reason::ExistingState { consensus: Consensus::Raft } => {
                f.write_str("local raft state exists: starting on it, without --bootstrap (it would wipe that state)")
            }
            Reason::ExistingState { consensus: Consensus::Crdt } => {
                f.write_str("local crdt state exists: starting on it, reconnecting to live peers")
            }
            Reason::LiveCluster { live } => write!(f, "{live} live peer(s) already run the cluster: joining them"),
            Reason::FixedSetContinues { founding_set } => write!(
                f,
                "this peer is in the founding set of {} that live peers started with: starting with the same init_peerset",
                founding_set.len()
            ),
            Reason::PeersStarting { peers } => {
                write!(f, "daemons of {} are up but in no cluster yet: waiting for them", join_ids(peers))
            }
            Reason::UnidentifiedDaemons { ips } => write!(
                f,
                "daemons run at {} but their peer IDs are unknown (their REST API is out of reach and they were \
                 not seen while deciding): waiting; expose the REST API (CLUSTER_RESTAPI_HTTPLISTENMULTIADDRESS) \
                 or list full /p2p/ multiaddrs",
                ips.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
            ),
            Reason::TooFew { alive, expect } => {
                write!(f, "{alive} live or waiting peer(s) registered, --expect needs {expect}: waiting for more")
            }
            Reason::Unsettled { stable_ms, settle_ms } => write!(
                f,
                "the set of peers changed {stable_ms} ms ago, --settle needs {settle_ms} ms without change: waiting"
            ),
            Reason::NotInFoundingSet { founding_set } => write!(
                f,
                "not one of the first --expect peers ({}): waiting for them to start, then joining",
                join_ids(founding_set)
            ),
            Reason::NoAgreement { peer, proposal: None } => {
                write!(f, "peer {peer} does not propose a founding set yet: waiting until every founder agrees")
            }
            Reason::NoAgreement { peer, proposal: Some(_) } => {
                write!(f, "peer {peer} proposes a different founding set: waiting until every founder agrees")
            }
            Reason::AwaitingFounder { founder } => {
                write!(f, "peer {founder} founds the cluster: waiting for it to start, then joining")
            }
            Reason::Founder => f.write_str(
                "no live peer, the set of peers is settled and this peer registered first: founding the cluster",
            ),
            Reason::FixedSet { founding_set } => write!(
                f,
                "no live peer, the set of peers is settled and all {} founders agree: starting the fixed-set launch",
                founding_set.len()
            ),
            Reason::GenesisFounder { genesis } => write!(
                f,
                "genesis record {genesis} names this peer as a founder and it has no state yet (it stopped before \
                 its daemon wrote any): founding again with the record's founders"
            ),
            Reason::ClusterExists {
                genesis,
                founders,
                founded_at,
            } => write!(
                f,
                "genesis record {genesis} says this cluster was founded at {founded_at} by {}, but no peer of it is \
                 live and this peer has no state: waiting for its peers, never founding a second, empty cluster",
                join_ids(founders)
            ),
        }
    }
}

fn join_ids(ids: &[PeerId]) -> String {
    ids.iter().map(PeerId::as_str).collect::<Vec<_>>().join(", ")
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    #[serde(flatten)]
    pub action: Action,
    pub reason: Reason,
    /// The peerstore to write: every other registered peer, live ones first.
    pub peerstore: Vec<PeerAddr>,
    /// The founding set this peer proposes to others while it waits.
    pub proposal: Option<Vec<PeerId>>,
}

/// How alive a registered peer is, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Liveness {
    /// Its daemon runs and is in a cluster (or its API is out of reach).
    Member,
    /// Its sidecar is about to start a raft fixed-set launch.
    Founding,
    /// Its daemon answers but is in no cluster yet (joining or electing).
    Starting,
    /// Its sidecar is still deciding.
    Waiting,
    Down,
}

fn liveness(p: &Probe) -> Option<Liveness> {
    Some(match p {
        Probe::Api { cluster_peers } if cluster_peers.is_empty() => Liveness::Starting,
        Probe::Api { .. } | Probe::Daemon => Liveness::Member,
        Probe::Waiting { .. } => Liveness::Waiting,
        Probe::Founding { .. } => Liveness::Founding,
        Probe::Down { .. } => Liveness::Down,
        Probe::WrongPeer { .. } => return None,
    })
}

impl Facts {
    /// Other peers that count: not this peer, same consensus, not answered by
    /// someone else; one entry per peer ID (the most alive, then the newest),
    /// in founding order.
    fn others(&self) -> Vec<(&Observed, Liveness)> {
        let mut by_id: BTreeMap<&PeerId, (&Observed, Liveness)> = BTreeMap::new();
        for o in &self.peers {
            let r = &o.registration;
            if r.peer_id == self.me.peer_id || r.consensus.is_some_and(|c| c != self.me.consensus) {
                continue;
            }
            let Some(l) = liveness(&o.probe) else {
                continue;
            };
            // Most alive first, then the newest registration, then the one that
            // says more (a re-registration publishing its founding set).
            let rank = |o: &Observed, l: Liveness| {
                (
                    l,
                    std::cmp::Reverse(o.registration.registered_at_ms),
                    o.registration.init_peerset.is_none(),
                )
            };
            let better = match by_id.get(&r.peer_id) {
                None => true,
                Some((old, old_l)) => rank(o, l) < rank(old, *old_l),
            };
            if better {
                by_id.insert(&r.peer_id, (o, l));
            }
        }
        let mut v: Vec<_> = by_id.into_values().collect();
        v.sort_by(|a, b| a.0.registration.order_key().cmp(&b.0.registration.order_key()));
        v
    }

    /// The peers that are alive (waiting, starting or members) and this one, in
    /// founding order: earliest registration, then smallest peer ID.
    pub fn view(&self) -> Vec<PeerId> {
        let mut v: Vec<(u64, &PeerId)> = self
            .others()
            .into_iter()
            .filter(|(_, l)| *l != Liveness::Down)
            .map(|(o, _)| (o.registration.registered_at_ms, &o.registration.peer_id))
            .collect();
        v.push((self.me.registered_at_ms, &self.me.peer_id));
        v.sort();
        v.into_iter().map(|(_, id)| id.clone()).collect()
    }

    /// The first `--expect` peers of the view, once there are that many.
    /// What must stay unchanged for --settle: the live view, and every
    /// registration listed, dead ones included. A registration that shows up
    /// late (eventual consistency), even of a peer already gone, restarts the
    /// wait: between its listing and its probe a founder may have come and
    /// gone, and the members it agreed with may have moved on.
    pub fn settle_key(&self) -> (Vec<PeerId>, Vec<PeerId>) {
        let mut listed: Vec<PeerId> = self.peers.iter().map(|o| o.registration.peer_id.clone()).collect();
        listed.sort();
        listed.dedup();
        (self.view(), listed)
    }

    pub fn founding_set(&self) -> Option<Vec<PeerId>> {
        let view = self.view();
        (self.expect > 0 && view.len() >= self.expect).then(|| view[..self.expect].to_vec())
    }
}

/// Whether the probe of a registration listed with `peer_id` can change the
/// decision. A raft peer with state starts on it whatever the others are
/// (rule 1, never with `--bootstrap`): only a registration that may be its
/// twin (rule 0: its own ID, or an ID not known before probing) matters. For
/// everyone else every probe may: a founder announcing anywhere means wait,
/// and a raft fixed set must be consistent across every live peer.
pub fn probe_matters(me: &Me, peer_id: Option<&PeerId>) -> bool {
    !(me.has_state && me.consensus == Consensus::Raft) || peer_id.is_none_or(|p| *p == me.peer_id)
}

/// Decides how this peer starts. First matching rule wins.
pub fn decide(f: &Facts) -> Decision {
    let others = f.others();
    let peerstore = {
        let mut v = others.clone();
        v.sort_by(|a, b| (a.1, a.0.registration.order_key()).cmp(&(b.1, b.0.registration.order_key())));
        v.into_iter().map(|(o, _)| o.registration.addr()).collect()
    };
    let proposal = f.founding_set();
    let done = |action, reason| Decision {
        action,
        reason,
        peerstore,
        proposal: proposal.clone(),
    };

    let members: Vec<&Observed> = {
        let mut m: Vec<&Observed> = others
            .iter()
            .filter(|(_, l)| *l == Liveness::Member)
            .map(|(o, _)| *o)
            .collect();
        // Peers whose API confirmed their membership first.
        m.sort_by_key(|o| !matches!(o.probe, Probe::Api { .. }));
        m
    };
    let bootstrap: Vec<PeerAddr> = members
        .iter()
        .take(MAX_BOOTSTRAP)
        .map(|o| o.registration.addr())
        .collect();

    // 0. Another live peer with this peer's identity: never start beside it.
    //    Only one that answered with that ID: anything else at an old
    //    record's address (a reused IP) would block every restart.
    if let Some(twin) = f.peers.iter().find(|o| {
        o.registration.peer_id == f.me.peer_id
            && o.registration.ip != f.me.ip
            && o.confirmed
            && !matches!(o.probe, Probe::Down { .. } | Probe::WrongPeer { .. })
    }) {
        return done(
            Action::Wait,
            Reason::DuplicateIdentity {
                ip: twin.registration.ip,
            },
        );
    }

    // 1. Existing state: start on it. Raft never gets --bootstrap over its state.
    if f.me.has_state {
        let bootstrap = match f.me.consensus {
            Consensus::Raft => vec![],
            Consensus::Crdt => bootstrap,
        };
        return done(
            Action::Start { bootstrap },
            Reason::ExistingState {
                consensus: f.me.consensus,
            },
        );
    }

    // 2. Live or founding peers: a raft member of the set they found with
    //    keeps to it; everyone else joins the live ones, or waits for them.
    let founding: Vec<&Observed> = others
        .iter()
        .filter(|(_, l)| *l == Liveness::Founding)
        .map(|(o, _)| *o)
        .collect();
    if !members.is_empty() || !founding.is_empty() {
        if f.me.consensus == Consensus::Raft {
            let live: Vec<&Observed> = members.iter().chain(&founding).copied().collect();
            if let Some(set) = fixed_set_in_progress(&f.me.peer_id, &live) {
                return done(
                    Action::Found {
                        init_peerset: Some(set.clone()),
                    },
                    Reason::FixedSetContinues { founding_set: set },
                );
            }
        }
        if founding.is_empty() {
            return done(Action::Join { bootstrap }, Reason::LiveCluster { live: members.len() });
        }
        let peers = founding.iter().map(|o| o.registration.peer_id.clone()).collect();
        return done(Action::Wait, Reason::PeersStarting { peers });
    }

    // 3. Daemons up but in no cluster: a join or an election is under way.
    let starting: Vec<PeerId> = others
        .iter()
        .filter(|(_, l)| *l == Liveness::Starting)
        .map(|(o, _)| o.registration.peer_id.clone())
        .collect();
    if !starting.is_empty() {
        return done(Action::Wait, Reason::PeersStarting { peers: starting });
    }
    // A daemon runs where no peer ID is known: never found beside it.
    if !f.unidentified.is_empty() {
        return done(
            Action::Wait,
            Reason::UnidentifiedDaemons {
                ips: f.unidentified.clone(),
            },
        );
    }

    // 3b. A genesis record: the cluster was founded on this state root. Only
    //     the peers it names found, again and with its set (they stopped
    //     before their daemons wrote state); everyone else waits for its peers.
    if let Some(g) = &f.genesis {
        if g.founders.contains(&f.me.peer_id) {
            let init_peerset = match f.me.consensus {
                Consensus::Crdt => None,
                Consensus::Raft => Some(g.founders.clone()),
            };
            return done(
                Action::Found { init_peerset },
                Reason::GenesisFounder { genesis: g.id.clone() },
            );
        }
        return done(
            Action::Wait,
            Reason::ClusterExists {
                genesis: g.id.clone(),
                founders: g.founders.clone(),
                founded_at: g.founded_at.clone(),
            },
        );
    }

    // 4. Founding: enough peers, a settled view, and every founder agreeing.
    let alive = f.view().len();
    let Some(set) = proposal.clone() else {
        return done(
            Action::Wait,
            Reason::TooFew {
                alive,
                expect: f.expect,
            },
        );
    };
    let stable_ms = f.now_ms.saturating_sub(f.view_since_ms);
    if stable_ms < f.settle_ms {
        return done(
            Action::Wait,
            Reason::Unsettled {
                stable_ms,
                settle_ms: f.settle_ms,
            },
        );
    }
    if !set.contains(&f.me.peer_id) {
        return done(Action::Wait, Reason::NotInFoundingSet { founding_set: set });
    }
    for (o, _) in &others {
        if !set.contains(&o.registration.peer_id) {
            continue;
        }
        match &o.probe {
            Probe::Waiting { proposal } if proposal.as_ref() == Some(&set) => {}
            Probe::Waiting { proposal } => {
                return done(
                    Action::Wait,
                    Reason::NoAgreement {
                        peer: o.registration.peer_id.clone(),
                        proposal: proposal.clone(),
                    },
                )
            }
            // Unreachable: members and starting peers were handled above and
            // the set only holds alive peers. Waiting is the safe answer.
            _ => {
                return done(
                    Action::Wait,
                    Reason::NoAgreement {
                        peer: o.registration.peer_id.clone(),
                        proposal: None,
                    },
                )
            }
        }
    }
    match f.me.consensus {
        Consensus::Crdt if set[0] == f.me.peer_id => done(Action::Found { init_peerset: None }, Reason::Founder),
        Consensus::Crdt => done(
            Action::Wait,
            Reason::AwaitingFounder {
                founder: set[0].clone(),
            },
        ),
        Consensus::Raft => done(
            Action::Found {
                init_peerset: Some(set.clone()),
            },
            Reason::FixedSet { founding_set: set },
        ),
    }
}

/// The founding set of a raft fixed-set launch under way, when this peer is one
/// of it: every live peer shows the same set (announced while founding,
/// published in its registration, or, failing both, the peers its API
/// reports), is in it, and (where its API answers) reports no member outside it.
fn fixed_set_in_progress(me: &PeerId, live: &[&Observed]) -> Option<Vec<PeerId>> {
    use std::collections::BTreeSet;
    fn evidence(o: &Observed) -> Option<BTreeSet<&PeerId>> {
        let set = match &o.probe {
            Probe::Founding { set } => set,
            Probe::Api { cluster_peers } => o.registration.init_peerset.as_ref().unwrap_or(cluster_peers),
            _ => o.registration.init_peerset.as_ref()?,
        };
        Some(set.iter().collect())
    }
    // Prefer a set as announced or published: it is in founding order.
    let set: Vec<PeerId> = match live.iter().find_map(|o| match &o.probe {
        Probe::Founding { set } => Some(set),
        _ => o.registration.init_peerset.as_ref(),
    }) {
        Some(set) => set.clone(),
        None => evidence(live.first()?)?.into_iter().cloned().collect(),
    };
    // Sets, not lists: at 1,000 peers each check is a lookup, not a scan.
    let key: BTreeSet<&PeerId> = set.iter().collect();
    if !key.contains(me) {
        return None;
    }
    let consistent = live.iter().all(|o| {
        evidence(o).as_ref() == Some(&key)
            && key.contains(&o.registration.peer_id)
            && match &o.probe {
                Probe::Api { cluster_peers } => cluster_peers.iter().all(|p| key.contains(p)),
                _ => true,
            }
    });
    consistent.then_some(set)
}

#[cfg(test)]
mod tests;
