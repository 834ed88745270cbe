//! Table tests, one row per rule, and property tests of the founding rules.

use super::*;
use crate::peer::tests::IDS;
use crate::view::Registration;
use proptest::prelude::*;

fn id(i: usize) -> PeerId {
    PeerId::parse(IDS[i]).unwrap()
}

fn reg(i: usize, at: u64) -> Registration {
    Registration {
        instance_id: format!("task-{i}"),
        peer_id: id(i),
        ip: format!("127.0.0.{}", i + 2).parse().unwrap(),
        cluster_port: 9096,
        api_port: 9094,
        registered_at_ms: at,
        consensus: None,
        init_peerset: None,
    }
}

/// A probe result; the peer confirmed its ID where its answer carries one
/// (its API or its greeting).
fn obs(i: usize, at: u64, probe: Probe) -> Observed {
    Observed {
        registration: reg(i, at),
        confirmed: matches!(
            probe,
            Probe::Api { .. } | Probe::Waiting { .. } | Probe::Founding { .. }
        ),
        probe,
    }
}

fn waiting(set: &[usize]) -> Probe {
    Probe::Waiting {
        proposal: Some(set.iter().map(|&i| id(i)).collect()),
    }
}

fn facts(consensus: Consensus, expect: usize, peers: Vec<Observed>) -> Facts {
    Facts {
        me: Me {
            peer_id: id(0),
            ip: "127.0.0.2".parse().unwrap(),
            consensus,
            has_state: false,
            registered_at_ms: 1000,
        },
        expect,
        settle_ms: 5000,
        now_ms: 100_000,
        view_since_ms: 0,
        peers,
        unidentified: vec![],
        genesis: None,
    }
}

fn ids(v: &[usize]) -> Vec<PeerId> {
    v.iter().map(|&i| id(i)).collect()
}

fn check(f: &Facts, action: Action, rule: &str) {
    let d = decide(f);
    assert_eq!(d.action, action, "reason: {}", d.reason);
    let got = serde_json::to_value(&d.reason).unwrap()["rule"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(got, rule, "reason: {}", d.reason);
}

#[test]
fn existing_raft_state_starts_without_bootstrap_even_with_live_peers() {
    let mut f = facts(
        Consensus::Raft,
        3,
        vec![
            obs(1, 900, Probe::Daemon),
            obs(
                2,
                950,
                Probe::Api {
                    cluster_peers: ids(&[1, 2]),
                },
            ),
        ],
    );
    f.me.has_state = true;
    check(&f, Action::Start { bootstrap: vec![] }, "existing_state");
}

#[test]
fn a_live_twin_with_this_peer_id_blocks_everything() {
    let twin = |probe: Probe| {
        let mut t = obs(0, 900, probe);
        t.registration.ip = "127.0.0.99".parse().unwrap();
        t
    };
    let api = Probe::Api {
        cluster_peers: vec![id(0)],
    };
    let mut f = facts(Consensus::Raft, 1, vec![twin(api.clone())]);
    f.me.has_state = true;
    check(&f, Action::Wait, "duplicate_identity");
    f.peers = vec![twin(waiting(&[0]))];
    check(&f, Action::Wait, "duplicate_identity");
    // Only a peer that answered with this ID is a twin: a reused IP where
    // something else listens, or a greeting that names no ID, is not, or a
    // restart could never start.
    let start = Action::Start { bootstrap: vec![] };
    f.peers = vec![twin(Probe::Daemon)];
    check(&f, start.clone(), "existing_state");
    let mut unreadable = twin(Probe::Waiting { proposal: None });
    unreadable.confirmed = false;
    f.peers = vec![unreadable];
    check(&f, start.clone(), "existing_state");
    let mut listed_only = twin(api);
    listed_only.confirmed = false;
    f.peers = vec![listed_only];
    check(&f, start, "existing_state");
    // A dead copy, or an old record of this very address, is no twin.
    check(
        &facts(
            Consensus::Crdt,
            1,
            vec![twin(Probe::Down {
                error: "refused".into(),
            })],
        ),
        Action::Found { init_peerset: None },
        "founder",
    );
    check(
        &facts(Consensus::Crdt, 1, vec![obs(0, 1, Probe::Daemon)]),
        Action::Found { init_peerset: None },
        "founder",
    );
}

#[test]
fn existing_crdt_state_starts_and_reconnects_to_live_peers() {
    let mut f = facts(
        Consensus::Crdt,
        3,
        vec![
            obs(1, 900, Probe::Daemon),
            obs(2, 950, Probe::Down { error: "x".into() }),
        ],
    );
    f.me.has_state = true;
    check(
        &f,
        Action::Start {
            bootstrap: vec![reg(1, 900).addr()],
        },
        "existing_state",
    );
}

#[test]
fn live_peers_are_joined_api_confirmed_first_at_most_three() {
    let f = facts(
        Consensus::Crdt,
        3,
        vec![
            obs(1, 10, Probe::Daemon),
            obs(2, 20, Probe::Daemon),
            obs(3, 30, Probe::Daemon),
            obs(
                4,
                40,
                Probe::Api {
                    cluster_peers: ids(&[1, 4]),
                },
            ),
            obs(
                5,
                50,
                Probe::Down {
                    error: "refused".into(),
                },
            ),
        ],
    );
    check(
        &f,
        Action::Join {
            bootstrap: vec![reg(4, 40).addr(), reg(1, 10).addr(), reg(2, 20).addr()],
        },
        "live_cluster",
    );
    let d = decide(&f);
    assert_eq!(d.peerstore.len(), 5, "every other peer is in the peerstore");
    assert_eq!(d.peerstore[4], reg(5, 50).addr(), "dead peers last");
}

#[test]
fn raft_founding_member_keeps_to_the_published_set() {
    let set = ids(&[0, 1, 2]);
    let mut live = obs(1, 500, Probe::Daemon);
    live.registration.init_peerset = Some(set.clone());
    let f = facts(Consensus::Raft, 3, vec![live.clone(), obs(2, 600, waiting(&[1, 0, 2]))]);
    check(
        &f,
        Action::Found {
            init_peerset: Some(set.clone()),
        },
        "fixed_set_continues",
    );

    // A live peer outside the set (it joined): the cluster is established, join it.
    let f = facts(Consensus::Raft, 3, vec![live.clone(), obs(3, 2000, Probe::Daemon)]);
    check(
        &f,
        Action::Join {
            bootstrap: vec![reg(1, 500).addr(), reg(3, 2000).addr()],
        },
        "live_cluster",
    );

    // A live peer reporting members outside the set: join.
    let mut grown = live.clone();
    grown.probe = Probe::Api {
        cluster_peers: ids(&[0, 1, 2, 3]),
    };
    let f = facts(Consensus::Raft, 3, vec![grown]);
    check(
        &f,
        Action::Join {
            bootstrap: vec![reg(1, 500).addr()],
        },
        "live_cluster",
    );

    // Not in the published set: join.
    let mut other = live;
    other.registration.init_peerset = Some(ids(&[1, 2, 3]));
    let f = facts(Consensus::Raft, 3, vec![other]);
    check(
        &f,
        Action::Join {
            bootstrap: vec![reg(1, 500).addr()],
        },
        "live_cluster",
    );
}

#[test]
fn a_registration_publishing_the_founding_set_wins_over_its_older_copy() {
    // moto lists a re-registered instance twice; real Cloud Map updates it.
    let set = ids(&[0, 1, 2]);
    let mut published = obs(1, 500, Probe::Daemon);
    published.registration.init_peerset = Some(set.clone());
    for peers in [
        vec![obs(1, 500, Probe::Daemon), published.clone()],
        vec![published.clone(), obs(1, 500, Probe::Daemon)],
    ] {
        let f = facts(Consensus::Raft, 3, peers);
        check(
            &f,
            Action::Found {
                init_peerset: Some(set.clone()),
            },
            "fixed_set_continues",
        );
    }
}

#[test]
fn raft_founding_announcement_is_followed_by_members_and_awaited_by_others() {
    let set = ids(&[1, 0, 2]);
    let f = facts(
        Consensus::Raft,
        3,
        vec![
            obs(1, 500, Probe::Founding { set: set.clone() }),
            obs(2, 600, waiting(&[1, 0, 2])),
        ],
    );
    check(
        &f,
        Action::Found {
            init_peerset: Some(set.clone()),
        },
        "fixed_set_continues",
    );
    // Not in the announced set: wait for those daemons, do not join a sidecar.
    let f = facts(
        Consensus::Raft,
        3,
        vec![obs(1, 500, Probe::Founding { set: ids(&[1, 2, 3]) })],
    );
    check(&f, Action::Wait, "peers_starting");
    let f = facts(
        Consensus::Crdt,
        3,
        vec![obs(1, 500, Probe::Founding { set: set.clone() })],
    );
    check(&f, Action::Wait, "peers_starting");
}

#[test]
fn raft_api_peerset_counts_as_the_founding_set_when_none_is_published() {
    let f = facts(
        Consensus::Raft,
        3,
        vec![obs(
            1,
            500,
            Probe::Api {
                cluster_peers: ids(&[2, 1, 0]),
            },
        )],
    );
    let mut sorted = ids(&[0, 1, 2]);
    sorted.sort();
    check(
        &f,
        Action::Found {
            init_peerset: Some(sorted),
        },
        "fixed_set_continues",
    );
    let f = facts(
        Consensus::Raft,
        3,
        vec![obs(
            1,
            500,
            Probe::Api {
                cluster_peers: ids(&[1, 2, 3]),
            },
        )],
    );
    check(
        &f,
        Action::Join {
            bootstrap: vec![reg(1, 500).addr()],
        },
        "live_cluster",
    );
}

#[test]
fn raft_live_peer_without_published_set_is_joined() {
    let f = facts(Consensus::Raft, 3, vec![obs(1, 500, Probe::Daemon)]);
    check(
        &f,
        Action::Join {
            bootstrap: vec![reg(1, 500).addr()],
        },
        "live_cluster",
    );
}

#[test]
fn daemons_in_no_cluster_yet_make_it_wait() {
    let f = facts(
        Consensus::Crdt,
        2,
        vec![obs(1, 500, Probe::Api { cluster_peers: vec![] })],
    );
    check(&f, Action::Wait, "peers_starting");
}

#[test]
fn a_daemon_without_a_known_peer_id_blocks_founding() {
    let mut f = facts(Consensus::Crdt, 1, vec![]);
    f.unidentified = vec!["127.0.0.9".parse().unwrap()];
    check(&f, Action::Wait, "unidentified_daemons");
    // ... but not joining identified live peers.
    f.peers = vec![obs(1, 10, Probe::Daemon)];
    check(
        &f,
        Action::Join {
            bootstrap: vec![reg(1, 10).addr()],
        },
        "live_cluster",
    );
}

#[test]
fn too_few_alive_peers_wait() {
    let f = facts(
        Consensus::Crdt,
        3,
        vec![
            obs(1, 500, waiting(&[])),
            obs(
                2,
                600,
                Probe::Down {
                    error: "refused".into(),
                },
            ),
        ],
    );
    check(&f, Action::Wait, "too_few");
    assert_eq!(decide(&f).proposal, None);
}

#[test]
fn unsettled_view_waits() {
    let mut f = facts(Consensus::Crdt, 2, vec![obs(1, 1500, waiting(&[0, 1]))]);
    f.view_since_ms = f.now_ms - 4999;
    check(&f, Action::Wait, "unsettled");
    f.view_since_ms = f.now_ms - 5000;
    check(&f, Action::Found { init_peerset: None }, "founder");
}

#[test]
fn crdt_founder_is_earliest_registration_then_smallest_id() {
    // Peer 0 registered at 1000; peer 1 earlier: peer 1 founds.
    let f = facts(Consensus::Crdt, 2, vec![obs(1, 999, waiting(&[1, 0]))]);
    check(&f, Action::Wait, "awaiting_founder");
    // Same time: smallest peer ID wins.
    let f = facts(Consensus::Crdt, 2, vec![obs(1, 1000, waiting(&[0, 1]))]);
    let smaller = id(0) < id(1);
    let d = decide(&f);
    assert_eq!(matches!(d.action, Action::Found { .. }), smaller, "{}", d.reason);
}

#[test]
fn founders_must_agree() {
    let f = facts(
        Consensus::Crdt,
        2,
        vec![obs(1, 2000, Probe::Waiting { proposal: None })],
    );
    check(&f, Action::Wait, "no_agreement");
    let f = facts(Consensus::Crdt, 2, vec![obs(1, 2000, waiting(&[1, 2]))]);
    check(&f, Action::Wait, "no_agreement");
}

#[test]
fn peers_outside_the_founding_set_wait() {
    let f = facts(
        Consensus::Raft,
        2,
        vec![obs(1, 10, waiting(&[1, 2])), obs(2, 20, waiting(&[1, 2]))],
    );
    check(&f, Action::Wait, "not_in_founding_set");
}

#[test]
fn raft_founders_launch_with_the_same_set() {
    let f = facts(
        Consensus::Raft,
        3,
        vec![obs(1, 1100, waiting(&[0, 1, 2])), obs(2, 1200, waiting(&[0, 1, 2]))],
    );
    check(
        &f,
        Action::Found {
            init_peerset: Some(ids(&[0, 1, 2])),
        },
        "fixed_set",
    );
}

#[test]
fn dead_wrong_and_foreign_registrations_are_ignored() {
    let mut foreign = obs(3, 1, waiting(&[3, 0]));
    foreign.registration.consensus = Some(Consensus::Raft);
    let f = facts(
        Consensus::Crdt,
        2,
        vec![
            obs(
                1,
                1,
                Probe::Down {
                    error: "refused".into(),
                },
            ),
            obs(
                2,
                2,
                Probe::WrongPeer {
                    answered: IDS[5].into(),
                },
            ),
            foreign,
            obs(4, 2000, waiting(&[0, 4])),
        ],
    );
    check(&f, Action::Found { init_peerset: None }, "founder");
    let d = decide(&f);
    assert!(
        !d.peerstore.contains(&reg(2, 2).addr()),
        "a reused address is not that peer"
    );
}

#[test]
fn own_registrations_and_duplicates_are_merged() {
    // A stale record of this peer, and two records of peer 1 (old one dead).
    let mut me_stale = obs(
        0,
        1,
        Probe::Down {
            error: "refused".into(),
        },
    );
    me_stale.registration.instance_id = "old-task".into();
    let f = facts(
        Consensus::Crdt,
        2,
        vec![
            me_stale,
            obs(
                1,
                5,
                Probe::Down {
                    error: "refused".into(),
                },
            ),
            obs(1, 2000, waiting(&[0, 1])),
        ],
    );
    check(&f, Action::Found { init_peerset: None }, "founder");
    assert_eq!(decide(&f).peerstore, vec![reg(1, 2000).addr()]);
}

#[test]
fn expect_one_founds_alone_only_when_asked() {
    let f = facts(Consensus::Crdt, 1, vec![]);
    check(&f, Action::Found { init_peerset: None }, "founder");
    let f = facts(Consensus::Raft, 1, vec![]);
    check(
        &f,
        Action::Found {
            init_peerset: Some(ids(&[0])),
        },
        "fixed_set",
    );
}

#[test]
fn reasons_read_as_sentences() {
    let f = facts(Consensus::Crdt, 3, vec![]);
    assert_eq!(
        decide(&f).reason.to_string(),
        "1 live or waiting peer(s) registered, --expect needs 3: waiting for more"
    );
}

// ---- properties ----

/// One simulated launch: peers with registration times, some dead; everybody
/// sees the same registrations and the proposals of the others.
fn same_view(consensus: Consensus, n: usize, expect: usize, times: &[u64], dead: &[bool]) -> Vec<Decision> {
    let alive: Vec<usize> = (0..n).filter(|&i| !dead[i]).collect();
    let mut order: Vec<usize> = alive.clone();
    order.sort_by_key(|&i| (times[i], id(i)));
    let proposal = (order.len() >= expect).then(|| order[..expect].to_vec());
    alive
        .iter()
        .map(|&me| {
            let peers = (0..n)
                .filter(|&j| j != me)
                .map(|j| {
                    let probe = if dead[j] {
                        Probe::Down {
                            error: "refused".into(),
                        }
                    } else {
                        Probe::Waiting {
                            proposal: proposal.as_ref().map(|p| ids(p)),
                        }
                    };
                    obs(j, times[j], probe)
                })
                .collect();
            let f = Facts {
                me: Me {
                    peer_id: id(me),
                    ip: reg(me, 0).ip,
                    consensus,
                    has_state: false,
                    registered_at_ms: times[me],
                },
                expect,
                settle_ms: 100,
                now_ms: 10_000,
                view_since_ms: 0,
                peers,
                unidentified: vec![],
                genesis: None,
            };
            decide(&f)
        })
        .collect()
}

proptest! {
    #[test]
    fn same_registrations_crdt_at_most_one_founder(
        n in 1usize..=6, expect in 1usize..=6,
        times in prop::collection::vec(0u64..5, 6), dead in prop::collection::vec(any::<bool>(), 6),
    ) {
        let ds = same_view(Consensus::Crdt, n, expect, &times, &dead);
        let founders = ds.iter().filter(|d| matches!(d.action, Action::Found { .. })).count();
        let alive = (0..n).filter(|&i| !dead[i]).count();
        prop_assert!(founders <= 1);
        prop_assert_eq!(founders, usize::from(alive >= expect));
    }

    #[test]
    fn same_registrations_raft_one_founding_set(
        n in 1usize..=6, expect in 1usize..=6,
        times in prop::collection::vec(0u64..5, 6), dead in prop::collection::vec(any::<bool>(), 6),
    ) {
        let ds = same_view(Consensus::Raft, n, expect, &times, &dead);
        let sets: Vec<_> = ds.iter().filter_map(|d| match &d.action {
            Action::Found { init_peerset } => Some(init_peerset.clone().unwrap()),
            _ => None,
        }).collect();
        let alive = (0..n).filter(|&i| !dead[i]).count();
        prop_assert!(sets.windows(2).all(|w| w[0] == w[1]));
        prop_assert_eq!(sets.len(), if alive >= expect { expect } else { 0 });
        for s in &sets { prop_assert_eq!(s.len(), expect); }
    }
}

/// A launch in rounds: peers start at random times, registrations become
/// visible to each observer after its own random delay, some registrations are
/// of dead peers, and every round each undecided peer decides on what it sees
/// now. Founded peers become live daemons; joiners too. The property: one
/// cluster. crdt: at most one founder; raft: every founder uses the same set.
#[allow(clippy::too_many_arguments)]
fn simulate(
    consensus: Consensus,
    n: usize,
    expect: usize,
    start: &[u64],
    delay: &[u64],
    dead: &[bool],
    publish: bool,
    genesis: bool,
) -> (Vec<Option<Action>>, usize) {
    #[derive(Clone)]
    enum St {
        Waiting(Option<Vec<PeerId>>),
        /// A raft founder announcing its set until the given time.
        Founding(Vec<PeerId>, u64),
        Live(Option<Vec<PeerId>>),
        Dead,
    }
    // Founders announce for 3 polls (the app: one poll interval of the others).
    let linger = 150;
    let mut st: Vec<St> = (0..n)
        .map(|i| if dead[i] { St::Dead } else { St::Waiting(None) })
        .collect();
    let mut out: Vec<Option<Action>> = vec![None; n];
    let mut view_since = vec![0u64; n];
    let mut last_view: Vec<(Vec<PeerId>, Vec<PeerId>)> = vec![(vec![], vec![]); n];
    let settle = 300;
    let mut rounds = 0;
    // With a state root: the genesis record, created by the first founding
    // (`stateroot::create_genesis`: exactly one winner).
    let mut record: Option<Vec<PeerId>> = None;
    for now in (0..20_000u64).step_by(50) {
        rounds += 1;
        for s in st.iter_mut() {
            if let St::Founding(set, until) = s {
                if now >= *until {
                    // The registry shows the published set only if the backend has one.
                    *s = St::Live(publish.then(|| set.clone()));
                }
            }
        }
        let snapshot = st.clone();
        for me in 0..n {
            if !matches!(st[me], St::Waiting(_)) || now < start[me] {
                continue;
            }
            let peers: Vec<Observed> = (0..n)
                .filter(|&j| j != me && now >= start[j] + delay[(me * 7 + j) % delay.len()])
                .map(|j| {
                    let probe = match &snapshot[j] {
                        St::Dead => Probe::Down {
                            error: "refused".into(),
                        },
                        St::Waiting(p) => Probe::Waiting { proposal: p.clone() },
                        St::Founding(set, _) => Probe::Founding { set: set.clone() },
                        St::Live(_) => Probe::Daemon,
                    };
                    let mut o = obs(j, start[j], probe);
                    if let St::Live(set) = &snapshot[j] {
                        o.registration.init_peerset = set.clone();
                    }
                    o
                })
                .collect();
            let mut f = Facts {
                me: Me {
                    peer_id: id(me),
                    ip: reg(me, 0).ip,
                    consensus,
                    has_state: false,
                    registered_at_ms: start[me],
                },
                expect,
                settle_ms: settle,
                now_ms: now,
                view_since_ms: view_since[me],
                peers,
                unidentified: vec![],
                genesis: record.as_ref().map(|founders| Founded {
                    id: "0123456789abcdef".into(),
                    consensus,
                    founders: founders.clone(),
                    founded_at: String::new(),
                }),
            };
            let view = f.settle_key();
            if view != last_view[me] {
                view_since[me] = now;
                last_view[me] = view;
            }
            f.view_since_ms = view_since[me];
            let d = decide(&f);
            if let (true, Action::Found { init_peerset }) = (genesis, &d.action) {
                if !matches!(d.reason, Reason::GenesisFounder { .. }) {
                    let founders = init_peerset.clone().unwrap_or_else(|| vec![id(me)]);
                    match &record {
                        None => record = Some(founders),
                        Some(r) if consensus == Consensus::Raft && *r == founders => {}
                        // Lost the race: decide again next round, with the record.
                        Some(_) => {
                            st[me] = St::Waiting(d.proposal.clone());
                            continue;
                        }
                    }
                }
            }
            match &d.action {
                Action::Wait => st[me] = St::Waiting(d.proposal.clone()),
                Action::Found {
                    init_peerset: Some(set),
                } => {
                    st[me] = St::Founding(set.clone(), now + linger);
                    out[me] = Some(d.action.clone());
                }
                Action::Found { init_peerset: None } => {
                    st[me] = St::Live(None);
                    out[me] = Some(d.action.clone());
                }
                a => {
                    st[me] = St::Live(None);
                    out[me] = Some(a.clone());
                }
            }
        }
        if (0..n).all(|i| dead[i] || out[i].is_some()) {
            break;
        }
    }
    (out, rounds)
}

/// The foundings of a simulated launch (their init_peersets), checked to
/// make one cluster: crdt, at most one founder; raft, one founding set.
fn one_founding(consensus: Consensus, out: &[Option<Action>]) -> Result<Vec<&Option<Vec<PeerId>>>, TestCaseError> {
    let founds: Vec<&Option<Vec<PeerId>>> = out
        .iter()
        .flatten()
        .filter_map(|a| match a {
            Action::Found { init_peerset } => Some(init_peerset),
            _ => None,
        })
        .collect();
    match consensus {
        Consensus::Crdt => prop_assert!(founds.len() <= 1, "two crdt founders: {:?}", out),
        Consensus::Raft => prop_assert!(founds.windows(2).all(|w| w[0] == w[1]), "two founding sets: {:?}", out),
    }
    Ok(founds)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]
    #[test]
    fn staggered_launches_form_one_cluster(
        raft in any::<bool>(), n in 2usize..=6, expect in 2usize..=4,
        start in prop::collection::vec(0u64..3000, 6),
        delay in prop::collection::vec(0u64..1500, 7),
        dead in prop::collection::vec(prop::bool::weighted(0.15), 6),
        publish in any::<bool>(),
    ) {
        let consensus = if raft { Consensus::Raft } else { Consensus::Crdt };
        let (out, _) = simulate(consensus, n, expect, &start, &delay, &dead, publish, false);
        let founds = one_founding(consensus, &out)?;
        // Joins only ever target live peers, so a joiner is in the founders' cluster.
        let alive = (0..n).filter(|&i| !dead[i]).count();
        if alive >= expect {
            prop_assert!(!founds.is_empty(), "nobody founded with {} alive of {}: {:?}", alive, expect, out);
            prop_assert!(out.iter().enumerate().all(|(i, a)| dead[i] || a.is_some()), "someone never started: {:?}", out);
        }
        // Raft: no member of the founding set joins instead (the set would
        // have no leader until a majority of it starts).
        if let Some(Some(set)) = founds.first() {
            for (i, a) in out.iter().enumerate() {
                if set.contains(&id(i)) {
                    prop_assert!(matches!(a, Some(Action::Found { .. })), "founding member {} did {:?}: {:?}", i, a, out);
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]
    /// With a genesis record, registry delays up to 10x --settle (where the
    /// founding rules alone can split: two disjoint founding sets) still make
    /// one cluster: crdt, one founder; raft, one founding set, the record's.
    #[test]
    fn with_a_genesis_record_delays_beyond_settle_make_one_cluster(
        raft in any::<bool>(), n in 2usize..=6, expect in 1usize..=3,
        start in prop::collection::vec(0u64..1000, 6),
        delay in prop::collection::vec(0u64..3000, 7),
        dead in prop::collection::vec(prop::bool::weighted(0.15), 6),
    ) {
        let consensus = if raft { Consensus::Raft } else { Consensus::Crdt };
        let (out, _) = simulate(consensus, n, expect, &start, &delay, &dead, false, true);
        one_founding(consensus, &out)?;
    }
}

fn founded(founders: &[usize]) -> Option<Founded> {
    Some(Founded {
        id: "0123456789abcdef".into(),
        consensus: Consensus::Raft,
        founders: ids(founders),
        founded_at: "2026-11-30T00:00:00Z".into(),
    })
}

/// With a genesis record, a peer with no state and no live peers never
/// founds a cluster of its own: only the record's founders found, again, with
/// the record's set, whatever the view, the settle time and the proposals.
#[test]
fn a_genesis_record_allows_only_its_founders_to_found() {
    for consensus in [Consensus::Crdt, Consensus::Raft] {
        // Everything rule 4 wants: enough peers, settled, all agreeing.
        let mut f = facts(consensus, 2, vec![obs(1, 2000, waiting(&[0, 1]))]);
        f.genesis = founded(&[3, 4]);
        check(&f, Action::Wait, "cluster_exists");
        // Alone, unsettled, --expect unmet: still no founding.
        let mut f = facts(consensus, 5, vec![]);
        f.view_since_ms = f.now_ms;
        f.genesis = founded(&[3]);
        check(&f, Action::Wait, "cluster_exists");
        // A founder named in it founds again, with the record's set.
        let mut f = facts(consensus, 5, vec![]);
        f.genesis = founded(&[3, 0, 4]);
        let init_peerset = match consensus {
            Consensus::Crdt => None,
            Consensus::Raft => Some(ids(&[3, 0, 4])),
        };
        check(&f, Action::Found { init_peerset }, "genesis_founder");
    }
}

/// The record changes nothing before rule 3b: state starts, live peers are joined.
#[test]
fn a_genesis_record_does_not_stop_starts_and_joins() {
    let mut f = facts(Consensus::Crdt, 3, vec![obs(1, 900, Probe::Daemon)]);
    f.genesis = founded(&[5]);
    check(
        &f,
        Action::Join {
            bootstrap: vec![reg(1, 900).addr()],
        },
        "live_cluster",
    );
    f.me.has_state = true;
    check(
        &f,
        Action::Start {
            bootstrap: vec![reg(1, 900).addr()],
        },
        "existing_state",
    );
    let mut f = facts(Consensus::Raft, 3, vec![obs(1, 900, Probe::Daemon)]);
    f.genesis = founded(&[5]);
    check(
        &f,
        Action::Join {
            bootstrap: vec![reg(1, 900).addr()],
        },
        "live_cluster",
    );
    f.me.has_state = true;
    check(&f, Action::Start { bootstrap: vec![] }, "existing_state");
}

proptest! {
    /// A raft peer with state decides the same when it probes only the
    /// registrations `probe_matters` names (possible twins): the others,
    /// taken as not probed, change neither the action nor the reason, and
    /// stay in the peerstore.
    #[test]
    fn a_raft_peer_with_state_needs_only_the_probes_of_possible_twins(
        listed in prop::collection::vec((0usize..6, 0u8..6, any::<bool>(), 0u64..5), 0..8),
        has_state in any::<bool>(),
    ) {
        let probe = |kind: u8, i: usize| match kind {
            0 => Probe::Api { cluster_peers: ids(&[0, i]) },
            1 => Probe::Daemon,
            2 => waiting(&[0, i]),
            3 => Probe::Founding { set: ids(&[0, i]) },
            4 => Probe::WrongPeer { answered: "someone else".into() },
            _ => Probe::Down { error: "refused".into() },
        };
        let peers: Vec<Observed> = listed
            .iter()
            .map(|&(i, kind, confirmed, at)| {
                let mut o = obs(i, at, probe(kind, i));
                o.confirmed = confirmed;
                if i == 0 {
                    // This peer's ID registered elsewhere: a possible twin.
                    o.registration.ip = "127.0.0.99".parse().unwrap();
                }
                o
            })
            .collect();
        let mut f = facts(Consensus::Raft, 3, peers);
        f.me.has_state = has_state;
        let mut unprobed = f.clone();
        for o in &mut unprobed.peers {
            if !probe_matters(&f.me, Some(&o.registration.peer_id)) {
                o.probe = Probe::Down { error: "not probed".into() };
                o.confirmed = false;
            }
        }
        let (all, some) = (decide(&f), decide(&unprobed));
        prop_assert_eq!(&all.action, &some.action);
        prop_assert_eq!(&all.reason, &some.reason);
        for a in &all.peerstore {
            prop_assert!(some.peerstore.contains(a), "{} left the peerstore", a);
        }
    }
}
