//! The round loop's bookkeeping, without I/O: which registrations to probe,
//! when the view last changed, the backoff between rounds, the confirming
//! round, and when to give up. `app` feeds it what discovery and probing
//! returned and the time; the deterministic simulation (`tests/sim.rs`) feeds
//! it simulated ones. Time is milliseconds since the run started.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use crate::decide::{decide, Action, Decision, Facts, Founded, Me};
use crate::discovery::{Candidate, Discovered};
use crate::peer::PeerId;
use crate::probe::Probed;
use crate::view::{Probe, Registration};

/// Jittered exponential backoff: 250 ms doubling to `cap`, each pause drawn
/// from [d/2, d].
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    pub cap: Duration,
    next: Duration,
    rng: fastrand::Rng,
}

impl Backoff {
    /// Between rounds: the cap is min(settle/2, 5 s), at least 250 ms.
    pub fn new(settle: Duration, rng: fastrand::Rng) -> Backoff {
        let base = Duration::from_millis(250);
        let cap = (settle / 2).clamp(base, Duration::from_secs(5));
        Backoff {
            base,
            cap,
            next: base,
            rng,
        }
    }

    pub fn reset(&mut self) {
        self.next = self.base;
    }

    pub fn step(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.cap);
        let half = d / 2;
        half + Duration::from_millis(self.rng.u64(0..=half.as_millis() as u64))
    }
}

/// How long a raft founder keeps announcing its founding set before its
/// daemon takes the port: one poll interval of the others (their backoff
/// cap), two probe timeouts, and half a second.
pub fn linger(settle: Duration, probe_timeout: Duration) -> Duration {
    Backoff::new(settle, fastrand::Rng::with_seed(0)).cap + 2 * probe_timeout + Duration::from_millis(500)
}

/// How long a peer that announced its founding is taken to be starting its
/// daemon, when its port is closed: from the sidecar's exit to the daemon
/// listening, 56 to 128 ms in 12 starts of ipfs-cluster-service 1.1.6 on
/// the real bed (the simulation allows up to 10 s), with a wide margin for a
/// loaded host. A founder that dies meanwhile is seen as down after it.
pub const FOUNDER_START_GRACE: Duration = Duration::from_secs(15);

/// What to do after a round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Run another round after this pause.
    Pause(Duration),
    /// A decision reached after waiting: confirm it with one more round after
    /// this pause (between our discover and our probe a founder may have
    /// published its founding set and started).
    Confirm(Duration),
    /// Act on the decision.
    Act,
    /// --timeout passed without a safe action.
    GiveUp,
}

/// One round's outcome.
#[derive(Debug, Clone)]
pub struct Round {
    pub facts: Facts,
    pub decision: Decision,
    pub next: Next,
}

/// The loop's state between rounds.
pub struct Rounds {
    me: Me,
    instance_id: String,
    cluster_port: u16,
    expect: usize,
    settle_ms: u64,
    timeout_ms: u64,
    backoff: Backoff,
    last_view: Option<(Vec<PeerId>, Vec<PeerId>)>,
    view_since_ms: u64,
    waited: bool,
    confirming: bool,
    /// Peer IDs heard at an address, for registrations listed without one.
    known_ids: HashMap<(IpAddr, u16), PeerId>,
    /// Peers heard announcing their founding: the set, and when last heard.
    /// Between its sidecar's exit and its daemon listening a founder's port
    /// is closed; read as down, a second founder could be chosen.
    founders: HashMap<PeerId, (Vec<PeerId>, u64)>,
    genesis: Option<Founded>,
    pub rounds: u32,
}

impl Rounds {
    pub fn new(
        me: Me,
        registration: &Registration,
        expect: usize,
        settle: Duration,
        timeout: Duration,
        rng: fastrand::Rng,
    ) -> Rounds {
        Rounds {
            me,
            instance_id: registration.instance_id.clone(),
            cluster_port: registration.cluster_port,
            expect,
            settle_ms: settle.as_millis() as u64,
            timeout_ms: timeout.as_millis() as u64,
            backoff: Backoff::new(settle, rng),
            last_view: None,
            view_since_ms: 0,
            waited: false,
            confirming: false,
            known_ids: HashMap::new(),
            founders: HashMap::new(),
            genesis: None,
            rounds: 0,
        }
    }

    /// Everyone listed but this peer; peers listed without an ID get the one
    /// they told earlier at the same address.
    /// The state root's genesis record, read before the first round and again
    /// after a founding lost the race to create it.
    pub fn set_genesis(&mut self, genesis: Option<Founded>) {
        self.genesis = genesis;
    }

    pub fn others(&self, d: Discovered) -> Vec<Candidate> {
        d.registrations
            .into_iter()
            .filter(|c| {
                c.instance_id != self.instance_id && !(c.ip == self.me.ip && c.cluster_port == self.cluster_port)
            })
            .map(|mut c| {
                if c.peer_id.is_none() {
                    c.peer_id = self.known_ids.get(&(c.ip, c.cluster_port)).cloned();
                }
                c
            })
            .collect()
    }

    /// Discovery failed: the pause before the next round, or None when
    /// --timeout has passed. A failure is never read as "no peers".
    pub fn discover_failed(&mut self, now_ms: u64) -> Option<Duration> {
        self.rounds += 1;
        if now_ms >= self.timeout_ms {
            return None;
        }
        let pause = self.backoff.step();
        Some(self.clamp(pause, now_ms))
    }

    /// Decides on what probing found.
    pub fn probed(&mut self, mut probed: Probed, now_ms: u64) -> Round {
        self.rounds += 1;
        for o in &mut probed.observed {
            let r = &o.registration;
            if let Probe::Founding { set } = &o.probe {
                self.founders.insert(r.peer_id.clone(), (set.clone(), now_ms));
            }
            match &o.probe {
                // A founder whose port closed lately is starting its daemon.
                Probe::Down { .. } => {
                    let grace = FOUNDER_START_GRACE.as_millis() as u64;
                    if let Some((set, _)) = self
                        .founders
                        .get(&r.peer_id)
                        .filter(|(_, heard)| now_ms.saturating_sub(*heard) <= grace)
                    {
                        o.probe = Probe::Founding { set: set.clone() };
                    }
                }
                // Another peer now answers there (restarted with a new
                // identity, or the address reused): remember that one. A
                // listing that names its ID still goes by the listing.
                Probe::WrongPeer { answered } => {
                    if let Ok(id) = PeerId::parse(answered) {
                        self.known_ids.insert((r.ip, r.cluster_port), id);
                    }
                }
                _ => {
                    self.known_ids.insert((r.ip, r.cluster_port), r.peer_id.clone());
                }
            }
        }
        let mut facts = Facts {
            me: self.me.clone(),
            expect: self.expect,
            settle_ms: self.settle_ms,
            now_ms,
            view_since_ms: self.view_since_ms,
            peers: probed.observed,
            unidentified: probed.unidentified,
            genesis: self.genesis.clone(),
        };
        let view = facts.settle_key();
        if self.last_view.as_ref() != Some(&view) {
            self.view_since_ms = now_ms;
            self.last_view = Some(view);
            self.backoff.reset();
        }
        facts.view_since_ms = self.view_since_ms;
        let decision = decide(&facts);
        let next = if decision.action != Action::Wait {
            if !self.waited || self.confirming {
                Next::Act
            } else {
                self.confirming = true;
                Next::Confirm(self.clamp(Duration::from_millis(100), now_ms))
            }
        } else {
            self.confirming = false;
            self.waited = true;
            if now_ms >= self.timeout_ms {
                Next::GiveUp
            } else {
                let pause = self.backoff.step();
                Next::Pause(self.clamp(pause, now_ms))
            }
        };
        Round { facts, decision, next }
    }

    fn clamp(&self, pause: Duration, now_ms: u64) -> Duration {
        pause.min(Duration::from_millis(self.timeout_ms.saturating_sub(now_ms)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_with_jitter_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(4), fastrand::Rng::with_seed(7));
        assert_eq!(b.cap, Duration::from_secs(2));
        let steps: Vec<Duration> = (0..6).map(|_| b.step()).collect();
        let ceilings = [250, 500, 1000, 2000, 2000, 2000];
        for (s, c) in steps.iter().zip(ceilings) {
            let c = Duration::from_millis(c);
            assert!(*s >= c / 2 && *s <= c, "{s:?} not in [{:?}, {c:?}]", c / 2);
        }
        b.reset();
        assert!(b.step() <= Duration::from_millis(250));
        assert_eq!(
            Backoff::new(Duration::from_secs(60), fastrand::Rng::new()).cap,
            Duration::from_secs(5)
        );
        assert_eq!(
            Backoff::new(Duration::ZERO, fastrand::Rng::new()).cap,
            Duration::from_millis(250)
        );
    }

    /// DNS and static lists give addresses without IDs: the ID heard at an
    /// address is remembered, and replaced when another peer answers there
    /// (it was remembered forever, and the address stayed "wrong peer").
    #[test]
    fn an_address_that_answers_with_another_id_replaces_the_remembered_one() {
        use crate::peer::tests::IDS;
        use crate::peer::Consensus;
        use crate::view::Observed;
        let id = |i: usize| PeerId::parse(IDS[i]).unwrap();
        let me = Me {
            peer_id: id(0),
            ip: "127.0.0.1".parse().unwrap(),
            consensus: Consensus::Crdt,
            has_state: false,
            registered_at_ms: 0,
        };
        let mine = Candidate::at(me.ip, 9096, 9094, 0, Some(id(0))).identified(id(0));
        let mut r = Rounds::new(
            me,
            &mine,
            3,
            Duration::from_secs(1),
            Duration::from_secs(60),
            fastrand::Rng::with_seed(1),
        );
        let listed = || Discovered {
            registrations: vec![Candidate::at("127.0.0.2".parse().unwrap(), 9096, 9094, 2, None)],
            skipped: vec![],
        };
        let round = |r: &mut Rounds, probe: Probe, as_id: PeerId| {
            let [c] = r.others(listed()).try_into().unwrap();
            let observed = vec![Observed {
                registration: c.identified(as_id),
                confirmed: probe != Probe::Daemon,
                probe,
            }];
            r.probed(
                Probed {
                    observed,
                    ..Probed::default()
                },
                0,
            );
        };
        assert_eq!(r.others(listed())[0].peer_id, None);
        round(&mut r, Probe::Daemon, id(1));
        assert_eq!(r.others(listed())[0].peer_id, Some(id(1)));
        // The peer at that address restarted as id(2): the probe says "wrong peer".
        let wrong = Probe::WrongPeer {
            answered: id(2).to_string(),
        };
        round(&mut r, wrong, id(1));
        assert_eq!(r.others(listed())[0].peer_id, Some(id(2)));
        // Nothing answering keeps what was heard.
        round(
            &mut r,
            Probe::Down {
                error: "refused".into(),
            },
            id(2),
        );
        assert_eq!(r.others(listed())[0].peer_id, Some(id(2)));
    }

    /// A crdt founder's port is closed from its sidecar's exit until its
    /// daemon listens. A peer that heard it announce takes it as founding
    /// meanwhile, and so waits rather than choose a second founder; a
    /// founder silent past FOUNDER_START_GRACE is down.
    #[test]
    fn a_founder_heard_announcing_is_starting_while_its_port_is_closed() {
        use crate::decide::Reason;
        use crate::peer::tests::IDS;
        use crate::peer::Consensus;
        use crate::view::Observed;
        let id = |i: usize| PeerId::parse(IDS[i]).unwrap();
        let me = Me {
            peer_id: id(1),
            ip: "127.0.0.2".parse().unwrap(),
            consensus: Consensus::Crdt,
            has_state: false,
            registered_at_ms: 20,
        };
        let mine = Candidate::at(me.ip, 9096, 9094, 20, Some(id(1))).identified(id(1));
        let mut r = Rounds::new(
            me,
            &mine,
            2,
            Duration::from_secs(1),
            Duration::from_secs(600),
            fastrand::Rng::with_seed(1),
        );
        // The founder (first registered), and a third peer still waiting.
        let peer = |i: usize, at: u64, probe: Probe| Observed {
            registration: Candidate::at(
                format!("127.0.0.{}", i + 1).parse().unwrap(),
                9096,
                9094,
                at,
                Some(id(i)),
            )
            .identified(id(i)),
            confirmed: !matches!(probe, Probe::Down { .. }),
            probe,
        };
        let waiting = || Probe::Waiting {
            proposal: Some(vec![id(1), id(2)]),
        };
        let round = |r: &mut Rounds, founder: Probe, now_ms: u64| {
            r.probed(
                Probed {
                    observed: vec![peer(0, 10, founder), peer(2, 30, waiting())],
                    ..Probed::default()
                },
                now_ms,
            )
        };
        let down = || Probe::Down {
            error: "connection refused".into(),
        };
        let founding = Probe::Founding { set: vec![id(0)] };
        let heard = round(&mut r, founding.clone(), 0);
        assert!(
            matches!(heard.decision.reason, Reason::PeersStarting { .. }),
            "{}",
            heard.decision.reason
        );
        let grace = FOUNDER_START_GRACE.as_millis() as u64;
        for now in [1_000, 5_000, grace] {
            let gap = round(&mut r, down(), now);
            assert_eq!(gap.facts.peers[0].probe, founding, "at {now} ms");
            assert_eq!(gap.decision.action, Action::Wait, "at {now} ms");
        }
        // Past the grace the founder is down: the others settle and found.
        let mut t = grace + 1;
        let gone = round(&mut r, down(), t);
        assert!(matches!(gone.facts.peers[0].probe, Probe::Down { .. }));
        while t < grace + 10_000 {
            t += 500;
            if round(&mut r, down(), t).decision.action != Action::Wait {
                break;
            }
        }
        assert!(t < grace + 10_000, "never founded after the founder was gone");
    }
}
