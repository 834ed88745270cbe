//! Deterministic simulation of whole launches: the real round loop
//! (`rounds::Rounds`: view tracking, backoff, the confirming round, the
//! timeout), the real probe classification (`probe::classify`), the real
//! `decide` and the raft founders' linger (`rounds::linger`), run against
//! simulated peers, a simulated registry and a simulated clock. No threads,
//! no sockets, no sleeping: one seeded RNG drives everything, so a seed
//! replays exactly.
//!
//! The registry lists a registration to each observer after its own random
//! delay (Cloud Map's eventual consistency), keeps records of dead peers,
//! and throttles calls at random. Peers start with random skew and clock
//! offsets; some crash, among them a founder before it is live. After every
//! founding the safety property is checked: crdt, no other founder alive;
//! raft, every founder alive used the same init_peerset.
//!
//!   cargo test --test sim                         500 launches (CI)
//!   SIM_LAUNCHES=1000000 cargo test --release --test sim -- --nocapture
//!   SIM_SEED=1234 cargo test --test sim -- --nocapture   one launch, traced
//!   SIM_DELAY_MAX_MS=5000 SIM_COUNT_SPLITS=1 ...  delays beyond --settle: count splits
//!   SIM_PEERS=100 SIM_SKEW_MAX_MS=0 SIM_LAUNCHES=50 ...  100 peers started at once
//!   SIM_FAULTS=0 ...  no throttling, crashes, dying founders or stale records

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use ipfs_cluster_bootstrap::contact::Greeting;
use ipfs_cluster_bootstrap::decide::{Action, Me};
use ipfs_cluster_bootstrap::discovery::{Candidate, Discovered};
use ipfs_cluster_bootstrap::peer::{Consensus, PeerId};
use ipfs_cluster_bootstrap::probe::{self, Api, ClusterPeers, IdResponse, Port};
use ipfs_cluster_bootstrap::rounds::{self, Backoff, Next, Rounds};
use ipfs_cluster_bootstrap::view::Registration;

const SETTLE: Duration = Duration::from_secs(2);
const PROBE_TIMEOUT: Duration = Duration::from_millis(300);
const TIMEOUT: Duration = Duration::from_secs(120);
/// The most a daemon takes from exec to listening on its cluster port: 5×
/// --settle, far beyond a real daemon's start (56 to 128 ms on the real bed).
/// Beyond --settle a crdt founder's closed port once let a second founder be
/// chosen.
const START_MAX_MS: u64 = 10_000;
/// Simulated time after the last start by which a launch is judged.
const HORIZON_MS: u64 = 150_000;

#[derive(Debug, Clone)]
struct Params {
    n: usize,
    expect: usize,
    consensus: Consensus,
    skew_ms: u64,
    delay_max_ms: u64,
    clock_offset_ms: u64,
    stale: usize,
    throttle: f64,
    founder_dies: bool,
    crash: f64,
    /// The most a daemon takes from exec to listening on its cluster port.
    start_max_ms: u64,
}

/// What a run of launches fixes (the environment variables); the rest of
/// each launch's `Params` is drawn from its seed.
#[derive(Debug, Clone, Copy)]
struct Knobs {
    delay_max_ms: u64,
    start_max_ms: u64,
    /// SIM_PEERS: every launch has this many peers (default: 2 to 15).
    peers: Option<usize>,
    /// SIM_SKEW_MAX_MS: the most the peers' starts spread (default 5 s; 0:
    /// all at once).
    skew_max_ms: u64,
    /// SIM_FAULTS=0: no throttling, crashes, dying founders or stale records.
    faults: bool,
}

impl Params {
    fn random(rng: &mut fastrand::Rng, k: Knobs) -> Params {
        let (delay_max_ms, start_max_ms) = (k.delay_max_ms, k.start_max_ms);
        let n = k.peers.unwrap_or_else(|| rng.usize(2..=15));
        let mut p = Params {
            n,
            expect: rng.usize(1..=n),
            consensus: if rng.bool() { Consensus::Crdt } else { Consensus::Raft },
            skew_ms: rng.u64(0..=k.skew_max_ms),
            delay_max_ms: rng.u64(0..=delay_max_ms),
            clock_offset_ms: rng.u64(0..=200),
            stale: rng.usize(0..=3),
            throttle: [0.0, 0.1, 0.3][rng.usize(0..3)],
            founder_dies: rng.u8(0..4) == 0,
            crash: [0.0, 0.05][rng.usize(0..2)],
            start_max_ms: rng.u64(20..=start_max_ms.max(20)),
        };
        if !k.faults {
            (p.stale, p.throttle, p.founder_dies, p.crash) = (0, 0.0, false, 0.0);
        }
        p
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Phase {
    NotStarted,
    Registering,
    /// Between rounds, or between a round's discover and its probes.
    Deciding,
    /// A founder announcing its founding before its daemon starts.
    Lingering,
    /// exec'd: the daemon is not listening yet.
    Starting,
    Running,
    Down,
    Exited(i32),
}

struct Record {
    peer: usize,
    rank: u64,
    /// When each observer's discover first lists it.
    visible_at: Vec<u64>,
    init_peerset: Option<(Vec<PeerId>, Vec<u64>)>,
}

struct SimPeer {
    id: PeerId,
    ip: IpAddr,
    start_at: u64,
    clock_offset: u64,
    phase: Phase,
    rounds: Option<Rounds>,
    register_backoff: Backoff,
    greeting: Greeting,
    /// Candidates listed by this round's discover, probed at the next event.
    listed: Option<Vec<Candidate>>,
    pending: Option<Action>,
    founded: Option<Option<Vec<PeerId>>>,
    cluster: Option<usize>,
    /// When its daemon joined a cluster.
    running_at: Option<u64>,
    crash_at: Option<u64>,
    calls: u32,
}

struct World {
    rng: fastrand::Rng,
    p: Params,
    now: u64,
    peers: Vec<SimPeer>,
    /// Dead peers' IDs: stale registrations only.
    ghosts: Vec<PeerId>,
    records: Vec<Record>,
    /// Cluster members, by cluster (index = the founder's peer index).
    clusters: Vec<BTreeSet<usize>>,
    /// (time, sequence, peer, crash?)
    events: BinaryHeap<Reverse<(u64, u64, usize, bool)>>,
    seq: u64,
    trace: Vec<String>,
    tracing: bool,
    /// Set when a founding broke the safety property; the launch stops.
    split: Option<String>,
}

/// Whether every majority of `a` meets every majority of `b` (then no two
/// leaders can be elected by disjoint quorums).
fn majorities_meet(a: &[PeerId], b: &[PeerId]) -> bool {
    let both = a.iter().filter(|p| b.contains(p)).count();
    let (ma, mb) = (a.len() / 2 + 1, b.len() / 2 + 1);
    let need = ma.saturating_sub(a.len() - both) + mb.saturating_sub(b.len() - both);
    need > both
}

fn peer_id(rng: &mut fastrand::Rng) -> PeerId {
    let mut bytes = vec![0x00, 0x24, 0x08, 0x01, 0x12, 0x20];
    bytes.extend((0..32).map(|_| rng.u8(..)));
    PeerId::parse(&bs58::encode(bytes).into_string()).unwrap()
}

impl World {
    fn new(seed: u64, knobs: Knobs, tracing: bool) -> World {
        let mut rng = fastrand::Rng::with_seed(seed);
        let p = Params::random(&mut rng, knobs);
        let stale = p.stale;
        let ghosts: Vec<PeerId> = (0..stale).map(|_| peer_id(&mut rng)).collect();
        let mut peers = vec![];
        for i in 0..p.n {
            let start_at = rng.u64(0..=p.skew_ms);
            peers.push(SimPeer {
                id: peer_id(&mut rng),
                ip: IpAddr::V4(Ipv4Addr::new(127, 0, 1, i as u8 + 2)),
                start_at,
                clock_offset: rng.u64(0..=p.clock_offset_ms),
                phase: Phase::NotStarted,
                rounds: None,
                register_backoff: Backoff::new(Duration::from_secs(4), fastrand::Rng::with_seed(rng.u64(..))),
                greeting: Greeting {
                    peer_id: String::new(),
                    proposal: None,
                    founding: None,
                },
                listed: None,
                pending: None,
                founded: None,
                cluster: None,
                running_at: None,
                crash_at: (rng.f64() < p.crash).then(|| start_at + rng.u64(0..20_000)),
                calls: 0,
            });
        }
        let mut w = World {
            rng,
            p,
            now: 0,
            peers,
            ghosts,
            records: vec![],
            clusters: vec![],
            events: BinaryHeap::new(),
            seq: 0,
            trace: vec![],
            tracing,
            split: None,
        };
        // Stale records of dead peers, registered long ago.
        for g in 0..stale {
            w.records.push(Record {
                peer: usize::MAX - g,
                rank: g as u64,
                visible_at: vec![0; w.p.n],
                init_peerset: None,
            });
        }
        for i in 0..w.p.n {
            w.at(w.peers[i].start_at, i);
            if let Some(t) = w.peers[i].crash_at {
                w.crash_at(t, i);
            }
        }
        w
    }

    fn at(&mut self, t: u64, peer: usize) {
        self.seq += 1;
        self.events.push(Reverse((t, self.seq, peer, false)));
    }

    fn crash_at(&mut self, t: u64, peer: usize) {
        self.seq += 1;
        self.events.push(Reverse((t, self.seq, peer, true)));
    }

    fn log(&mut self, s: String) {
        if self.tracing {
            self.trace.push(format!("{:>7} ms  {s}", self.now));
        }
    }

    /// One registry call; false when it was throttled.
    fn call(&mut self, i: usize) -> bool {
        self.peers[i].calls += 1;
        self.rng.f64() >= self.p.throttle
    }

    fn alive(&self, i: usize) -> bool {
        !matches!(self.peers[i].phase, Phase::Down | Phase::Exited(_))
    }

    fn run(&mut self) {
        let end = self.peers.iter().map(|p| p.start_at).max().unwrap_or(0) + HORIZON_MS;
        while let Some(Reverse((t, _, i, crash))) = self.events.pop() {
            if t > end || self.split.is_some() {
                break;
            }
            self.now = t;
            if crash {
                if self.alive(i) {
                    self.peers[i].phase = Phase::Down;
                    self.log(format!("peer {i} crashes"));
                }
                continue;
            }
            if self.alive(i) {
                self.step(i);
            }
        }
    }

    fn step(&mut self, i: usize) {
        match self.peers[i].phase.clone() {
            Phase::NotStarted => {
                self.peers[i].phase = Phase::Registering;
                self.peers[i].greeting = Greeting::new(&self.peers[i].id.clone(), None);
                self.at(self.now, i);
            }
            Phase::Registering => {
                if !self.call(i) {
                    let d = self.peers[i].register_backoff.step();
                    self.at(self.now + d.as_millis() as u64, i);
                    return;
                }
                let rank = self.now + self.peers[i].clock_offset;
                let visible_at = (0..self.p.n)
                    .map(|o| {
                        if o == i {
                            self.now
                        } else {
                            self.now + self.rng.u64(0..=self.p.delay_max_ms)
                        }
                    })
                    .collect();
                self.records.push(Record {
                    peer: i,
                    rank,
                    visible_at,
                    init_peerset: None,
                });
                let me = self.registration(i, rank);
                let facts = Me {
                    peer_id: me.peer_id.clone(),
                    ip: me.ip,
                    consensus: self.p.consensus,
                    has_state: false,
                    registered_at_ms: rank,
                };
                let rng = fastrand::Rng::with_seed(self.rng.u64(..));
                self.peers[i].rounds = Some(Rounds::new(facts, &me, self.p.expect, SETTLE, TIMEOUT, rng));
                self.peers[i].phase = Phase::Deciding;
                // A founder that dies before it is live: the earliest starter.
                if self.p.founder_dies && self.peers[i].start_at == self.peers.iter().map(|p| p.start_at).min().unwrap()
                {
                    let t = self.now + self.rng.u64(0..5_000);
                    self.crash_at(t, i);
                }
                self.log(format!("peer {i} registered, rank {rank}"));
                self.at(self.now, i);
            }
            Phase::Deciding => match self.peers[i].listed.take() {
                None => self.discover(i),
                Some(listed) => self.probe_and_decide(i, listed),
            },
            Phase::Lingering => {
                self.peers[i].phase = Phase::Starting;
                let t = self.now + self.rng.u64(20..=self.p.start_max_ms);
                self.at(t, i);
            }
            Phase::Starting => self.daemon_up(i),
            Phase::Running | Phase::Down | Phase::Exited(_) => {}
        }
    }

    fn registration(&self, i: usize, rank: u64) -> Registration {
        let p = &self.peers[i];
        Registration {
            instance_id: format!("task-{i}"),
            peer_id: p.id.clone(),
            ip: p.ip,
            cluster_port: 9096,
            api_port: 9094,
            registered_at_ms: rank,
            consensus: Some(self.p.consensus),
            init_peerset: None,
        }
    }

    fn started_ms(&self, i: usize) -> u64 {
        self.now - self.peers[i].start_at
    }

    fn discover(&mut self, i: usize) {
        if !self.call(i) {
            let now = self.started_ms(i);
            match self.peers[i].rounds.as_mut().unwrap().discover_failed(now) {
                None => self.exit(i, 69),
                Some(d) => self.at(self.now + d.as_millis() as u64, i),
            }
            return;
        }
        let mut registrations = vec![];
        for r in &self.records {
            if r.visible_at.get(i).is_some_and(|t| *t <= self.now) {
                let (peer_id, ip, instance) = match self.peers.get(r.peer) {
                    Some(p) => (p.id.clone(), p.ip, format!("task-{}", r.peer)),
                    None => {
                        let g = usize::MAX - r.peer;
                        (
                            self.ghosts[g].clone(),
                            IpAddr::V4(Ipv4Addr::new(127, 0, 2, g as u8 + 2)),
                            format!("ghost-{g}"),
                        )
                    }
                };
                let mut c = Candidate::at(ip, 9096, 9094, r.rank, Some(peer_id));
                c.instance_id = instance;
                c.consensus = Some(self.p.consensus);
                c.init_peerset = r
                    .init_peerset
                    .as_ref()
                    .filter(|(_, seen)| seen.get(i).is_some_and(|t| *t <= self.now))
                    .map(|(set, _)| set.clone());
                registrations.push(c);
            }
        }
        let listed = self.peers[i].rounds.as_ref().unwrap().others(Discovered {
            registrations,
            skipped: vec![],
        });
        self.peers[i].listed = Some(listed);
        // Probing takes a while; others move meanwhile.
        let t = self.now + self.rng.u64(1..=PROBE_TIMEOUT.as_millis() as u64);
        self.at(t, i);
    }

    /// What answers at a candidate's address now, in the real types.
    fn answer(&self, c: &Candidate) -> (Api, Port) {
        let down = || {
            (
                Api::Unreachable("connection refused".into()),
                Port::Closed("connection refused".into()),
            )
        };
        let Some(j) = self.peers.iter().position(|p| p.ip == c.ip) else {
            return down();
        };
        let p = &self.peers[j];
        match p.phase {
            Phase::Registering | Phase::Deciding | Phase::Lingering => (
                Api::Unreachable("connection refused".into()),
                Port::Greeting(p.greeting.clone()),
            ),
            Phase::Running => {
                let members = p.cluster.map(|k| self.clusters[k].clone()).unwrap_or_default();
                let mut cluster_peers: Vec<String> = members
                    .iter()
                    .filter(|m| self.alive(**m))
                    .map(|m| self.peers[*m].id.to_string())
                    .collect();
                if let Some(Some(set)) = &p.founded {
                    // A raft configuration is its init_peerset from the start.
                    cluster_peers.extend(set.iter().map(|s| s.to_string()));
                    cluster_peers.sort();
                    cluster_peers.dedup();
                }
                (
                    Api::Id(IdResponse {
                        id: p.id.to_string(),
                        cluster_peers: Some(ClusterPeers {
                            ids: cluster_peers,
                            more: false,
                        }),
                        ipfs: None,
                    }),
                    Port::Open,
                )
            }
            _ => down(),
        }
    }

    fn probe_and_decide(&mut self, i: usize, listed: Vec<Candidate>) {
        let results: Vec<_> = listed
            .into_iter()
            .map(|c| {
                let (api, port) = self.answer(&c);
                let seen = probe::classify(&c, api, port);
                (c, seen)
            })
            .collect();
        let probed = probe::collect(results);
        let now = self.started_ms(i);
        let round = self.peers[i].rounds.as_mut().unwrap().probed(probed, now);
        let id = self.peers[i].id.clone();
        self.peers[i].greeting = Greeting::new(&id, round.decision.proposal.as_deref());
        self.log(format!("peer {i}: {:?} → {}", round.next, round.decision.reason));
        match round.next {
            Next::Pause(d) | Next::Confirm(d) => self.at(self.now + d.as_millis() as u64, i),
            Next::GiveUp => self.exit(i, 75),
            Next::Act => self.act(i, round.decision.action),
        }
    }

    fn act(&mut self, i: usize, action: Action) {
        match &action {
            Action::Found { init_peerset } => {
                for j in 0..self.p.n {
                    if j == i || !self.alive(j) {
                        continue;
                    }
                    let q = &self.peers[j];
                    let split = match (&q.founded, init_peerset) {
                        (Some(None), None) => Some(format!("peers {j} and {i} both founded a crdt cluster")),
                        (Some(Some(a)), Some(b)) if !majorities_meet(a, b) => Some(format!(
                            "peers {j} and {i} founded raft clusters whose majorities need not meet"
                        )),
                        _ => None,
                    };
                    if split.is_some() {
                        self.log(format!("SPLIT BRAIN: {}", split.as_deref().unwrap_or_default()));
                        self.split = split;
                    }
                }
                self.peers[i].founded = Some(init_peerset.clone());
                // Every founder announces (raft its set, crdt itself) for
                // one poll interval of the others before its daemon starts.
                let id = self.peers[i].id.clone();
                let set = init_peerset.clone().unwrap_or_else(|| vec![id.clone()]);
                self.peers[i].greeting = Greeting::founding(&id, &set);
                if init_peerset.is_some() {
                    let seen = (0..self.p.n)
                        .map(|_| self.now + self.rng.u64(0..=self.p.delay_max_ms))
                        .collect();
                    if let Some(r) = self.records.iter_mut().rev().find(|r| r.peer == i) {
                        r.init_peerset = Some((set, seen));
                    }
                }
                self.peers[i].phase = Phase::Lingering;
                self.peers[i].pending = Some(action);
                self.at(self.now + rounds::linger(SETTLE, PROBE_TIMEOUT).as_millis() as u64, i);
                return;
            }
            Action::Wait => unreachable!("Next::Act never carries Wait"),
            _ => {}
        }
        self.peers[i].pending = Some(action);
        self.peers[i].phase = Phase::Starting;
        let t = self.now + self.rng.u64(20..=self.p.start_max_ms);
        self.at(t, i);
    }

    /// The daemon listens: it founds, or joins the first bootstrap peer that runs.
    fn daemon_up(&mut self, i: usize) {
        let action = self.peers[i].pending.take();
        let cluster = match action {
            Some(Action::Found { init_peerset: None }) => {
                self.clusters.push(BTreeSet::new());
                Some(self.clusters.len() - 1)
            }
            Some(Action::Found {
                init_peerset: Some(set),
            }) => {
                // Raft members that found with one set form one cluster.
                let same = (0..self.p.n).find(|j| {
                    *j != i && self.peers[*j].founded == Some(Some(set.clone())) && self.peers[*j].cluster.is_some()
                });
                match same {
                    Some(j) => self.peers[j].cluster,
                    None => {
                        self.clusters.push(BTreeSet::new());
                        Some(self.clusters.len() - 1)
                    }
                }
            }
            Some(Action::Join { bootstrap }) | Some(Action::Start { bootstrap }) => bootstrap
                .iter()
                .filter_map(|a| self.peers.iter().position(|p| p.ip == a.ip))
                .find(|j| self.peers[*j].phase == Phase::Running)
                .and_then(|j| self.peers[j].cluster),
            _ => None,
        };
        match cluster {
            Some(k) => {
                self.clusters[k].insert(i);
                self.peers[i].cluster = Some(k);
                self.peers[i].phase = Phase::Running;
                self.peers[i].running_at = Some(self.now);
                self.log(format!("peer {i} runs in cluster {k}"));
            }
            None => {
                self.log(format!("peer {i}: the bootstrap peers are gone; the daemon exits"));
                self.exit(i, 1);
            }
        }
    }

    fn exit(&mut self, i: usize, code: i32) {
        self.log(format!("peer {i} exits {code}"));
        self.peers[i].phase = Phase::Exited(code);
    }

    /// Clusters with a live member at the end.
    fn live_clusters(&self) -> BTreeSet<usize> {
        self.peers
            .iter()
            .enumerate()
            .filter(|(j, p)| self.alive(*j) && p.phase == Phase::Running)
            .filter_map(|(_, p)| p.cluster)
            .collect()
    }
}

#[derive(Default)]
struct Tally {
    /// SIM_COUNT_SPLITS=1: count split brains instead of failing (to measure
    /// how far beyond --settle the visibility delay may go).
    count_splits: bool,
    splits: u64,
    launches: u64,
    one_cluster: u64,
    some_not_running: u64,
    calls: u64,
    peers: u64,
    /// Per launch that ended with every live peer in one cluster: from the
    /// last peer's start to the last live peer's daemon joining it, in ms.
    agree_ms: Vec<u64>,
}

fn launch(seed: u64, knobs: Knobs, tracing: bool, tally: &mut Tally) -> World {
    let mut w = World::new(seed, knobs, tracing);
    let Knobs {
        delay_max_ms,
        start_max_ms,
        peers,
        skew_max_ms,
        faults,
    } = knobs;
    let peers =
        peers.map(|n| format!(" SIM_PEERS={n}")).unwrap_or_default() + if faults { "" } else { " SIM_FAULTS=0" };
    let replay = format!(
        "replay: SIM_SEED={seed} SIM_DELAY_MAX_MS={delay_max_ms} SIM_START_MAX_MS={start_max_ms} SIM_SKEW_MAX_MS={skew_max_ms}{peers} cargo test --test sim -- --nocapture"
    );
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        w.run();
        w
    }));
    let w = match result {
        Ok(w) => w,
        Err(e) => {
            let why = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!("seed {seed}: {why}\n{replay}");
        }
    };
    tally.launches += 1;
    let live = w.live_clusters();
    let split = w
        .split
        .clone()
        .or_else(|| (live.len() > 1).then(|| format!("{} clusters among live peers ({:?})", live.len(), w.p)));
    if let Some(why) = split {
        tally.splits += 1;
        if !tracing && !tally.count_splits {
            panic!("seed {seed}: split brain: {why}\n{replay}");
        }
        return w;
    }
    if live.len() == 1 {
        tally.one_cluster += 1;
    }
    if (0..w.p.n).any(|j| w.alive(j) && w.peers[j].phase != Phase::Running) {
        tally.some_not_running += 1;
    } else if live.len() == 1 {
        let last_start = w.peers.iter().map(|p| p.start_at).max().unwrap_or(0);
        let last_running = (0..w.p.n)
            .filter(|&j| w.alive(j))
            .filter_map(|j| w.peers[j].running_at)
            .max()
            .unwrap_or(last_start);
        tally.agree_ms.push(last_running.saturating_sub(last_start));
    }
    tally.calls += w.peers.iter().map(|p| p.calls as u64).sum::<u64>();
    tally.peers += w.p.n as u64;
    w
}

fn env_u64(k: &str) -> Option<u64> {
    std::env::var(k).ok().and_then(|v| v.parse().ok())
}

#[test]
fn launches_never_split() {
    let knobs = Knobs {
        delay_max_ms: env_u64("SIM_DELAY_MAX_MS").unwrap_or(SETTLE.as_millis() as u64 - 500),
        start_max_ms: env_u64("SIM_START_MAX_MS").unwrap_or(START_MAX_MS),
        peers: env_u64("SIM_PEERS").map(|n| n.clamp(1, 250) as usize),
        skew_max_ms: env_u64("SIM_SKEW_MAX_MS").unwrap_or(5_000),
        faults: env_u64("SIM_FAULTS") != Some(0),
    };
    let Knobs {
        delay_max_ms,
        start_max_ms,
        ..
    } = knobs;
    if let Some(seed) = env_u64("SIM_SEED") {
        let mut tally = Tally::default();
        let w = launch(seed, knobs, true, &mut tally);
        println!("{:?}", w.p);
        for line in &w.trace {
            println!("{line}");
        }
        println!("clusters with live members: {:?}", w.live_clusters());
        println!("split brain: {:?}", w.split);
        return;
    }
    let n = env_u64("SIM_LAUNCHES").unwrap_or(500);
    let base = env_u64("SIM_BASE_SEED").unwrap_or(1);
    let t = std::time::Instant::now();
    let mut tally = Tally {
        count_splits: std::env::var("SIM_COUNT_SPLITS").is_ok(),
        ..Tally::default()
    };
    for seed in base..base + n {
        launch(seed, knobs, false, &mut tally);
    }
    let secs = t.elapsed().as_secs_f64();
    tally.agree_ms.sort_unstable();
    let pct = |q: f64| {
        let v = &tally.agree_ms;
        v.get(((v.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or(0)
    };
    println!(
        "agreement (last start → last live daemon in the cluster) in {} launches: p50 {} ms, p95 {} ms, max {} ms",
        tally.agree_ms.len(),
        pct(0.5),
        pct(0.95),
        pct(1.0)
    );
    println!(
        "{} launches (seeds {base}..{}), visibility delay ≤ {delay_max_ms} ms, daemon start ≤ {start_max_ms} ms, --settle {SETTLE:?}: {} split brains; \
         {} ended in one cluster, {} with a live peer not running at the end; {:.1} registry calls per peer; \
         {:.0} launches/s",
        tally.launches,
        base + n,
        tally.splits,
        tally.one_cluster,
        tally.some_not_running,
        tally.calls as f64 / tally.peers as f64,
        tally.launches as f64 / secs
    );
}
