//! Launches end to end, on every backend: peers started together form exactly one
//! cluster, late peers join it, restarted peers keep their state, dead
//! registrations are ignored.

use std::time::Duration;

use serde_json::Value;

use std::net::IpAddr;

use crate::support::dnsd::Dnsd;
use crate::support::moto::Moto;
use crate::support::peer::{one_cluster, Peer, Setup};
use crate::support::{testbed_ready, Net, TempDir};

const NS: &str = "ipfs-test";
const SVC: &str = "cluster-peers";

fn founded(states: &[Value]) -> usize {
    states.iter().filter(|s| s["founded"] == Value::Bool(true)).count()
}

/// 5 peers at the same instant, --expect 3: one cluster; then a 6th joins it.
#[derive(Debug, Clone, Copy)]
enum Backend {
    CloudMap,
    Dns,
    Static,
}

async fn five_at_once_then_a_sixth(backend: Backend, consensus: &str) {
    if !testbed_ready() {
        return;
    }
    let moto = Moto::start();
    moto.cloudmap(NS, SVC).await;
    let tmp = TempDir::new(consensus);
    let mut net = Net::new();
    let ips: Vec<IpAddr> = (0..6).map(|_| net.ip()).collect();
    let base = Setup::cloudmap(&moto.endpoint(), NS, SVC, consensus, 3);
    // DNS and the static list name all six addresses from the start: the 6th
    // is a dead entry until it starts.
    let dnsd = Dnsd::start("peers.cluster.test", &ips);
    let listed: Vec<String> = ips.iter().map(ToString::to_string).collect();
    let setup = match backend {
        Backend::CloudMap => base,
        Backend::Dns => base.arg(&[
            "--discovery",
            "dns",
            "--dns-name",
            "peers.cluster.test",
            "--dns-server",
            &dnsd.server(),
        ]),
        Backend::Static => base.arg(&["--discovery", "static", "--peers", &listed.join(",")]),
    };
    let mut peers: Vec<Peer> = (0..5).map(|i| Peer::new(&tmp.0, &format!("peer{i}"), ips[i])).collect();
    for p in &mut peers {
        p.start(&setup);
    }
    let refs: Vec<&Peer> = peers.iter().collect();
    let states = one_cluster(&refs, 5, Duration::from_secs(60)).await;

    let runs: Vec<Value> = peers
        .iter()
        .map(|p| p.daemon_runs().pop().expect("daemon started"))
        .collect();
    let no_bootstrap = runs
        .iter()
        .filter(|r| r["bootstrap"].as_array().is_some_and(|b| b.is_empty()))
        .count();
    match consensus {
        "crdt" => {
            assert_eq!(founded(&states), 1, "exactly one crdt founder: {states:#?}");
            assert_eq!(
                no_bootstrap, 1,
                "only the founder starts without --bootstrap: {runs:#?}"
            );
        }
        _ => {
            assert_eq!(no_bootstrap, 3, "the 3 founders start as a fixed set: {runs:#?}");
            let sets: Vec<Value> = peers
                .iter()
                .filter_map(|p| {
                    let svc: Value =
                        serde_json::from_str(&std::fs::read_to_string(p.config().join("service.json")).ok()?).ok()?;
                    let set = svc["consensus"]["raft"]["init_peerset"].clone();
                    set.as_array().is_some_and(|a| !a.is_empty()).then_some(set)
                })
                .collect();
            assert_eq!(sets.len(), 3, "three peers wrote an init_peerset");
            assert!(
                sets.windows(2).all(|w| w[0] == w[1]),
                "identical init_peerset: {sets:#?}"
            );
        }
    }
    for p in &peers {
        let d = p.decisions();
        assert_eq!(d.len(), 1, "exactly one decision event per run for {}", p.name);
        let ps = std::fs::read_to_string(p.config().join("peerstore")).unwrap();
        assert!(
            ps.lines().count() >= 2,
            "{}'s peerstore lists its peers: {ps:?}",
            p.name
        );
    }

    // A 6th, later: joins the running cluster.
    let mut late = Peer::new(&tmp.0, "late", ips[5]);
    late.start(&setup);
    let mut refs: Vec<&Peer> = peers.iter().collect();
    refs.push(&late);
    let states6 = one_cluster(&refs, 6, Duration::from_secs(60)).await;
    assert_eq!(
        states6[0]["cluster_id"], states[0]["cluster_id"],
        "same cluster as before"
    );
    let run = late.daemon_runs().pop().unwrap();
    assert!(
        !run["bootstrap"].as_array().unwrap().is_empty(),
        "the late peer joins with --bootstrap: {run}"
    );
    let d = &late.decisions()[0];
    assert_eq!(d["decision"]["action"], "join");
}

#[tokio::test]
async fn crdt_five_at_once_form_one_cluster_and_a_sixth_joins() {
    five_at_once_then_a_sixth(Backend::CloudMap, "crdt").await;
}

#[tokio::test]
async fn raft_five_at_once_form_one_cluster_and_a_sixth_joins() {
    five_at_once_then_a_sixth(Backend::CloudMap, "raft").await;
}

#[tokio::test]
async fn dns_crdt_five_at_once_form_one_cluster_and_a_sixth_joins() {
    five_at_once_then_a_sixth(Backend::Dns, "crdt").await;
}

#[tokio::test]
async fn dns_raft_five_at_once_form_one_cluster_and_a_sixth_joins() {
    five_at_once_then_a_sixth(Backend::Dns, "raft").await;
}

#[tokio::test]
async fn static_crdt_five_at_once_form_one_cluster_and_a_sixth_joins() {
    five_at_once_then_a_sixth(Backend::Static, "crdt").await;
}

#[tokio::test]
async fn static_raft_five_at_once_form_one_cluster_and_a_sixth_joins() {
    five_at_once_then_a_sixth(Backend::Static, "raft").await;
}

/// A raft peer restarted on its own data starts on it: no --bootstrap, raft
/// folder kept, same cluster.
#[tokio::test]
async fn raft_restart_keeps_state() {
    if !testbed_ready() {
        return;
    }
    let moto = Moto::start();
    moto.cloudmap(NS, SVC).await;
    let tmp = TempDir::new("restart");
    let mut net = Net::new();
    let setup = Setup::cloudmap(&moto.endpoint(), NS, SVC, "raft", 3);
    let mut peers: Vec<Peer> = (0..3)
        .map(|i| Peer::new(&tmp.0, &format!("peer{i}"), net.ip()))
        .collect();
    for p in &mut peers {
        p.start(&setup);
    }
    let before = one_cluster(&peers.iter().collect::<Vec<_>>(), 3, Duration::from_secs(60)).await;

    assert_eq!(peers[1].stop(), 0, "the double shuts down cleanly on SIGTERM");
    peers[1].start(&setup);
    let after = one_cluster(&peers.iter().collect::<Vec<_>>(), 3, Duration::from_secs(60)).await;
    assert_eq!(before[0]["cluster_id"], after[0]["cluster_id"]);
    let run = peers[1].daemon_runs().pop().unwrap();
    assert_eq!(
        run["bootstrap"],
        serde_json::json!([]),
        "no --bootstrap over raft state: {run}"
    );
    assert_eq!(run["wiped_raft"], Value::Bool(false));
    assert_eq!(run["loaded_state"], Value::Bool(true));
    assert!(
        !peers[1].config().join("raft.old.0").exists(),
        "raft state was not moved away"
    );
    let d = peers[1].decisions().pop().unwrap();
    assert_eq!(d["decision"]["reason"]["rule"], "existing_state");
    // Nothing another peer answers can change that decision: the others
    // were not probed, and stay in the peerstore.
    let observed = d["facts"]["peers"].as_array().unwrap();
    assert!(!observed.is_empty(), "{d:#}");
    for o in observed {
        assert_eq!(o["probe"]["state"], "down", "{o:#}");
        assert!(o["probe"]["error"].as_str().unwrap().starts_with("not probed"), "{o:#}");
    }
    assert_eq!(d["decision"]["peerstore"].as_array().unwrap().len(), 2, "{d:#}");
}

/// Registrations of dead peers, registered earliest, do not stop the founding
/// and are not used as founders; a reused address answering with another peer
/// ID is not that peer.
#[tokio::test]
async fn dead_registrations_are_ignored() {
    if !testbed_ready() {
        return;
    }
    let moto = Moto::start();
    let service_id = moto.cloudmap(NS, SVC).await;
    let tmp = TempDir::new("dead");
    let mut net = Net::new();
    // Two stale records from long ago, at addresses where nothing listens.
    for (i, id) in [
        "12D3KooWHEZ3YnZWcqrE91bnCGJZsUS3njYBJEh7QGK3NwzrGEKn",
        "12D3KooWEvsVGaYUFhsVU2uM3LNs7Nh9jtrx6v42bRYyChesXFKX",
    ]
    .iter()
    .enumerate()
    {
        let ip = net.ip().to_string();
        moto.register(
            &service_id,
            &format!("dead-{i}"),
            &[
                ("AWS_INSTANCE_IPV4", ip.as_str()),
                ("AWS_INSTANCE_PORT", "9096"),
                ("ipfs_cluster_peer_id", id),
                ("ipfs_cluster_registered_at", "2020-01-01T00:00:00.000Z"),
                ("ipfs_cluster_consensus", "crdt"),
            ],
        )
        .await;
    }
    let setup = Setup::cloudmap(&moto.endpoint(), NS, SVC, "crdt", 3);
    let mut peers: Vec<Peer> = (0..3)
        .map(|i| Peer::new(&tmp.0, &format!("peer{i}"), net.ip()))
        .collect();
    for p in &mut peers {
        p.start(&setup);
    }
    let states = one_cluster(&peers.iter().collect::<Vec<_>>(), 3, Duration::from_secs(60)).await;
    assert_eq!(founded(&states), 1);
    for p in &peers {
        let d = p.decisions().pop().unwrap();
        let peers = d["facts"]["peers"].as_array().unwrap();
        let dead: Vec<&Value> = peers
            .iter()
            .filter(|o| o["registration"]["instance_id"].as_str().unwrap().starts_with("dead-"))
            .collect();
        assert_eq!(dead.len(), 2, "{} saw both stale records", p.name);
        assert!(dead.iter().all(|o| o["probe"]["state"] == "down"), "{dead:#?}");
    }
}
