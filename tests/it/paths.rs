//! Other paths through the same decision: static lists, probes that fall back
//! to the cluster port, a crdt restart, signals while waiting, the exec itself.

use std::time::Duration;

use serde_json::Value;

use crate::support::moto::Moto;
use crate::support::peer::{one_cluster, Peer, Setup};
use crate::support::{testbed_ready, Net, TempDir};

const NS: &str = "ipfs-test";
const SVC: &str = "cluster-peers";

/// --discovery static with full multiaddrs: a raft fixed-set launch, no AWS at all.
#[tokio::test]
async fn static_list_raft_fixed_set() {
    if !testbed_ready() {
        return;
    }
    let tmp = TempDir::new("static");
    let mut net = Net::new();
    let mut peers: Vec<Peer> = (0..3).map(|i| Peer::new(&tmp.0, &format!("s{i}"), net.ip())).collect();
    let list: Vec<String> = peers
        .iter()
        .map(|p| format!("/ip4/{}/tcp/9096/p2p/{}", p.ip, p.init("raft")))
        .collect();
    let setup = Setup::cloudmap("http://127.0.0.1:9", NS, SVC, "raft", 3)
        .arg(&["--discovery", "static", "--peers", &list.join(",")])
        .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9");
    for p in &mut peers {
        p.start(&setup);
    }
    let states = one_cluster(&peers.iter().collect::<Vec<_>>(), 3, Duration::from_secs(60)).await;
    assert!(states
        .iter()
        .all(|s| s["founded"] != Value::Bool(false) || s["consensus"] == "raft"));
    for p in &peers {
        let d = p.decisions().pop().unwrap();
        assert_eq!(d["discovery"], "static");
        assert_eq!(d["decision"]["action"], "found", "{d:#}");
        let set: Vec<&str> = d["decision"]["init_peerset"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let want: Vec<&str> = list.iter().map(|a| a.rsplit('/').next().unwrap()).collect();
        assert_eq!(set, want, "the founding set follows the list order");
    }
}

/// REST APIs out of reach (wrong --api-port): probes fall back to the cluster
/// port, still one cluster. Also: DAEMON_ARGS reach the daemon, the daemon runs
/// in the sidecar's process (exec), and the registration carries its attributes.
#[tokio::test]
async fn cluster_port_fallback_exec_and_attributes() {
    if !testbed_ready() {
        return;
    }
    let moto = Moto::start();
    let service_id = moto.cloudmap(NS, SVC).await;
    let tmp = TempDir::new("fallback");
    let mut net = Net::new();
    let mut setup = Setup::cloudmap(&moto.endpoint(), NS, SVC, "crdt", 2).arg(&["--api-port", "9999"]);
    setup.daemon_args = vec!["daemon".into(), "--stats".into()];
    let mut peers: Vec<Peer> = (0..3).map(|i| Peer::new(&tmp.0, &format!("f{i}"), net.ip())).collect();
    for p in &mut peers {
        p.start(&setup);
    }
    one_cluster(&peers.iter().collect::<Vec<_>>(), 3, Duration::from_secs(60)).await;
    let mut saw_daemon = false;
    for p in &peers {
        let run = p.daemon_runs().pop().unwrap();
        assert_eq!(
            run["pid"].as_u64(),
            Some(u64::from(p.pid())),
            "exec: the daemon has the sidecar's PID"
        );
        let argv: Vec<&str> = run["argv"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(argv.last(), Some(&"--stats"), "{argv:?}");
        assert_eq!(argv.iter().filter(|a| **a == "daemon").count(), 1, "{argv:?}");
        let d = p.decisions().pop().unwrap();
        for o in d["facts"]["peers"].as_array().unwrap() {
            assert_ne!(
                o["probe"]["state"], "api",
                "the API port is wrong, so no API probe can succeed"
            );
            saw_daemon |= o["probe"]["state"] == "daemon";
        }
    }
    assert!(saw_daemon, "a joiner saw the founder through its cluster port");

    let c = moto.client().await;
    let listed = c.list_instances().service_id(&service_id).send().await.unwrap();
    for inst in listed.instances() {
        let a = inst.attributes().unwrap();
        for k in [
            "AWS_INSTANCE_IPV4",
            "AWS_INSTANCE_PORT",
            "ipfs_cluster_peer_id",
            "ipfs_cluster_registered_at",
            "ipfs_cluster_consensus",
            "ipfs_cluster_api_port",
        ] {
            assert!(a.contains_key(k), "registration lacks {k}: {a:?}");
        }
        assert_eq!(a["AWS_INSTANCE_PORT"], "9096");
        assert_eq!(a["ipfs_cluster_consensus"], "crdt");
    }
}

/// A crdt peer restarted on its state starts on it, reconnecting to live peers
/// with --bootstrap; its peerstore lists the others' current addresses.
#[tokio::test]
async fn crdt_restart_reconnects() {
    if !testbed_ready() {
        return;
    }
    let moto = Moto::start();
    moto.cloudmap(NS, SVC).await;
    let tmp = TempDir::new("crdt-restart");
    let mut net = Net::new();
    let setup = Setup::cloudmap(&moto.endpoint(), NS, SVC, "crdt", 3);
    let mut peers: Vec<Peer> = (0..3).map(|i| Peer::new(&tmp.0, &format!("c{i}"), net.ip())).collect();
    for p in &mut peers {
        p.start(&setup);
    }
    let before = one_cluster(&peers.iter().collect::<Vec<_>>(), 3, Duration::from_secs(60)).await;
    assert_eq!(peers[0].stop(), 0);
    peers[0].start(&setup);
    let after = one_cluster(&peers.iter().collect::<Vec<_>>(), 3, Duration::from_secs(60)).await;
    assert_eq!(before[0]["cluster_id"], after[0]["cluster_id"]);
    let d = peers[0].decisions().pop().unwrap();
    assert_eq!(d["decision"]["reason"]["rule"], "existing_state");
    assert_eq!(d["decision"]["bootstrap"].as_array().unwrap().len(), 2, "{d:#}");
    let ps = std::fs::read_to_string(peers[0].config().join("peerstore")).unwrap();
    for p in &peers[1..] {
        assert!(ps.contains(&format!("/ip4/{}/tcp/9096/p2p/", p.ip)), "{ps}");
    }
}

/// SIGTERM while waiting: the sidecar deregisters and exits 128+15, and no
/// daemon starts.
#[tokio::test]
async fn sigterm_while_waiting_deregisters() {
    if !testbed_ready() {
        return;
    }
    let moto = Moto::start();
    let service_id = moto.cloudmap(NS, SVC).await;
    let tmp = TempDir::new("sigterm");
    let mut p = Peer::new(&tmp.0, "w", Net::new().ip());
    p.start(&Setup::cloudmap(&moto.endpoint(), NS, SVC, "raft", 3));
    let t = std::time::Instant::now();
    while moto.instance_ids(&service_id).await.is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "never registered: {}",
            p.stderr()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    p.signal(libc::SIGTERM);
    assert_eq!(p.wait(Duration::from_secs(15)), 128 + libc::SIGTERM);
    assert!(moto.instance_ids(&service_id).await.is_empty(), "deregistered");
    assert!(p.daemon_runs().is_empty());
    assert!(p.stderr().contains("stopped by signal 15"), "{}", p.stderr());
}

/// `discover` prints the same JSON shape for every backend.
#[tokio::test]
async fn discover_has_one_shape_for_every_backend() {
    if !testbed_ready() {
        return;
    }
    let moto = Moto::start();
    moto.cloudmap(NS, SVC).await;
    let tmp = TempDir::new("shape");
    let mut net = Net::new();
    let setup = Setup::cloudmap(&moto.endpoint(), NS, SVC, "crdt", 2);
    let mut a = Peer::new(&tmp.0, "a", net.ip());
    let mut b = Peer::new(&tmp.0, "b", net.ip());
    a.start(&setup);
    b.start(&setup);
    one_cluster(&[&a, &b], 2, Duration::from_secs(60)).await;

    let dnsd = crate::support::dnsd::Dnsd::start("peers.test", &[a.ip, b.ip]);
    let list = format!("{},{}", a.ip, b.ip);
    let mut shapes = vec![];
    for extra in [
        vec![],
        vec![
            "--discovery",
            "dns",
            "--dns-name",
            "peers.test",
            "--dns-server",
            &dnsd.server(),
        ],
        vec!["--discovery", "static", "--peers", &list],
    ] {
        let mut c = Peer::new(&tmp.0, &format!("c{}", shapes.len()), net.ip());
        c.start_with(&setup.clone().arg(&extra), &["discover"]);
        assert_eq!(c.wait(Duration::from_secs(20)), 0, "{}", c.stderr());
        let seen: Value = serde_json::from_str(&c.stdout()).unwrap();
        let peers = seen["peers"].as_array().unwrap();
        assert_eq!(peers.len(), 2, "{seen:#}");
        assert!(peers.iter().all(|p| p["probe"]["state"] == "api"), "{seen:#}");
        let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
        shapes.push((keys(&seen), keys(&peers[0]), keys(&peers[0]["registration"])));
    }
    assert!(shapes.windows(2).all(|w| w[0] == w[1]), "{shapes:#?}");
}

/// Started as root (the official image), the sidecar makes the config folder
/// the daemon user's and runs the daemon as that user, never as root.
#[tokio::test]
async fn root_drops_to_the_daemon_user() {
    if !testbed_ready() || unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: needs root and the test bed");
        return;
    }
    let tmp = TempDir::new("run-as");
    let p = Peer::new(&tmp.0, "r", Net::new().ip());
    p.init("crdt");
    let out = std::process::Command::new(crate::support::bin())
        .args([
            "run",
            "--discovery",
            "static",
            "--peers",
            &p.ip.to_string(),
            "--expect",
            "1",
            "--settle",
            "0s",
        ])
        .args([
            "--advertise-ip",
            &p.ip.to_string(),
            "--loopback-only",
            "--run-as",
            "1000:100",
        ])
        .arg("--daemon-bin")
        .arg(crate::support::root().join("tests/double/report-uid"))
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("IPFS_CLUSTER_PATH", p.config())
        .env("CLUSTER_SECRET", crate::support::peer::SECRET)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let got = std::fs::read_to_string(p.config().join("uid.txt")).unwrap();
    assert_eq!(got.trim(), "1000:100 daemon", "the daemon ran as the daemon user");
    use std::os::unix::fs::MetadataExt;
    for f in ["service.json", "identity.json", "peerstore"] {
        let m = std::fs::metadata(p.config().join(f)).unwrap();
        assert_eq!((m.uid(), m.gid()), (1000, 100), "{f} belongs to the daemon user");
    }
}

/// `plan`, `discover` and `health` started as root drop to the daemon user
/// too, but write nothing: no config folder is created or chowned.
#[test]
fn read_only_modes_started_as_root_create_and_chown_nothing() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: needs root");
        return;
    }
    let tmp = TempDir::new("run-as-ro");
    let missing = tmp.0.join("no-config-yet");
    let owned = tmp.0.join("roots-config");
    std::fs::create_dir_all(&owned).unwrap();
    use std::os::unix::fs::MetadataExt;
    for (mode, dir) in [
        ("plan", &missing),
        ("discover", &missing),
        ("health", &missing),
        ("plan", &owned),
    ] {
        let out = std::process::Command::new(crate::support::bin())
            .args([mode, "--discovery", "static", "--peers", "127.0.0.1", "--expect", "1"])
            .args(["--advertise-ip", "127.0.0.1", "--loopback-only", "--run-as", "1000:100"])
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("IPFS_CLUSTER_PATH", dir)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!missing.exists(), "{mode} created the config folder: {err}");
        assert!(
            !err.contains("will run as root"),
            "{mode} has no daemon to warn about: {err}"
        );
        let m = std::fs::metadata(&owned).unwrap();
        assert_eq!((m.uid(), m.gid()), (0, 0), "{mode} chowned the config folder: {err}");
    }
}

/// With no daemon to start, `plan`, `discover` and `health` kept as root
/// (`--run-as none`) do not warn that the daemon will run as root; `run` does.
#[test]
fn only_run_warns_that_the_daemon_runs_as_root() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: needs root");
        return;
    }
    let tmp = TempDir::new("run-as-none");
    for mode in ["plan", "discover", "health", "run"] {
        let out = std::process::Command::new(crate::support::bin())
            .args([mode, "--discovery", "static", "--peers", "127.0.0.1", "--expect", "1"])
            .args([
                "--advertise-ip",
                "127.0.0.1",
                "--loopback-only",
                "--run-as",
                "none",
                "--timeout",
                "1s",
            ])
            .args(["--daemon-bin", "/nonexistent/ipfs-cluster-service"])
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("IPFS_CLUSTER_PATH", tmp.0.join("config"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            err.contains("the daemon will run as root"),
            mode == "run",
            "{mode}: {err}"
        );
    }
}

/// A rejected value from a `BOOTSTRAP_*` variable says so, the mode's too;
/// one from the command line does not.
#[test]
fn a_bad_value_from_the_environment_names_its_variable() {
    for (args, env, note) in [
        (&[][..], ("BOOTSTRAP_TIMEOUT", "soon"), Some("BOOTSTRAP_TIMEOUT")),
        (&[], ("BOOTSTRAP_MODE", "bogus"), Some("BOOTSTRAP_MODE")),
        (&["bogus"], ("BOOTSTRAP_TIMEOUT", "5m"), None),
        (&["--timeout", "soon"], ("BOOTSTRAP_TIMEOUT", "5m"), None),
    ] {
        let out = std::process::Command::new(crate::support::bin())
            .args(args)
            .env_clear()
            .env(env.0, env.1)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{args:?} {env:?}: {err}");
        match note {
            Some(var) => assert!(
                err.contains(&format!("(the value came from the environment variable {var})")),
                "{args:?} {env:?}: {err}"
            ),
            None => assert!(!err.contains("the value came from"), "{args:?} {env:?}: {err}"),
        }
    }
}

/// `health`: healthy in the cluster; unhealthy when the API is down, answers
/// as another peer, or the peer is in a stray cluster of its own.
#[tokio::test]
async fn health_checks_identity_and_membership() {
    if !testbed_ready() {
        return;
    }
    let moto = Moto::start();
    moto.cloudmap(NS, SVC).await;
    moto.cloudmap("stray-ns", "stray-svc").await;
    let tmp = TempDir::new("health");
    let mut net = Net::new();
    let setup = Setup::cloudmap(&moto.endpoint(), NS, SVC, "crdt", 3);
    let mut peers: Vec<Peer> = (0..3).map(|i| Peer::new(&tmp.0, &format!("h{i}"), net.ip())).collect();
    for p in &mut peers {
        p.start(&setup);
    }
    one_cluster(&peers.iter().collect::<Vec<_>>(), 3, Duration::from_secs(60)).await;
    let health = |p: &Peer, setup: &Setup, env: &[(&str, String)]| {
        let mut c = p.command(setup, &["health"]);
        for (k, v) in env {
            c.env(k, v);
        }
        let out = c.output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = health(&peers[0], &setup, &[]);
    assert_eq!(code, 0, "{err}");

    // In ECS with AWS_REGION set (as the shipped files set it): the check
    // every 30 s makes no task metadata call.
    let metadata = crate::support::http::Server::start(|_, _| crate::support::http::Response {
        status: 404,
        headers: vec![],
        body: String::new(),
    });
    let uri = format!("{}/v4", metadata.url());
    let (code, err) = health(&peers[0], &setup, &[("ECS_CONTAINER_METADATA_URI_V4", uri)]);
    assert_eq!(code, 0, "{err}");
    assert!(
        metadata.requests.lock().unwrap().is_empty(),
        "{:?}",
        metadata.requests.lock().unwrap()
    );

    // Asking another peer's API: not this peer.
    let other = format!("/ip4/{}/tcp/9094", peers[1].ip);
    let (code, err) = health(&peers[0], &setup, &[("CLUSTER_RESTAPI_HTTPLISTENMULTIADDRESS", other)]);
    assert_eq!(code, 1);
    assert!(err.contains("not as this peer"), "{err}");

    // A peer that founded a cluster of its own elsewhere: the three peers
    // discovery lists here are not in its view.
    let mut stray = Peer::new(&tmp.0, "stray", net.ip());
    stray.start(&Setup::cloudmap(&moto.endpoint(), "stray-ns", "stray-svc", "crdt", 1));
    let t = std::time::Instant::now();
    while stray.state().await.is_none_or(|s| s["ready"] != Value::Bool(true)) {
        assert!(t.elapsed() < Duration::from_secs(30), "{}", stray.stderr());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (code, err) = health(&stray, &setup, &[]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("minority or stray"), "{err}");

    // The API down.
    assert_eq!(peers[2].stop(), 0);
    let (code, err) = health(&peers[2], &setup, &[]);
    assert_eq!(code, 1);
    assert!(err.contains("does not answer"), "{err}");
}

/// A DNS name that does not exist (NXDOMAIN) is an error that names it, with
/// the configuration exit code: never an empty list of peers.
#[test]
fn a_dns_name_that_does_not_exist_is_an_error_not_no_peers() {
    let dnsd = crate::support::dnsd::Dnsd::start("peers.test", &["127.0.0.1".parse().unwrap()]);
    let tmp = TempDir::new("nxdomain");
    let discover = |name: &str| {
        std::process::Command::new(crate::support::bin())
            .args([
                "discover",
                "--discovery",
                "dns",
                "--dns-name",
                name,
                "--dns-server",
                &dnsd.server(),
            ])
            .args(["--loopback-only", "--probe-timeout", "200ms"])
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("IPFS_CLUSTER_PATH", tmp.0.join("cfg"))
            .output()
            .unwrap()
    };
    let out = discover("nope.test");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(err.contains("nope.test does not exist (NXDOMAIN)"), "{err}");
    let out = discover("peers.test");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    // In a static list, a host that does not exist (a peer removed for good)
    // only lists nothing: the others still count.
    let out = std::process::Command::new(crate::support::bin())
        .args(["discover", "--discovery", "static", "--peers", "nope.test,peers.test"])
        .args([
            "--dns-server",
            &dnsd.server(),
            "--loopback-only",
            "--probe-timeout",
            "200ms",
        ])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("IPFS_CLUSTER_PATH", tmp.0.join("cfg"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let seen: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        seen["peers"].as_array().map(Vec::len).unwrap_or(0) + seen["silent"].as_array().map(Vec::len).unwrap_or(0),
        1,
        "{seen:#}"
    );
}
