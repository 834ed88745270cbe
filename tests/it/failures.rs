//! Failing closed: waiting out --timeout, AWS unreachable or denying, bad local
//! files; plus plan/discover/dry-run, supervise, the metadata endpoint and
//! secrets kept out of logs.

use std::time::Duration;

use serde_json::Value;

use crate::support::http::{Response, Server};
use crate::support::moto::{free_port, Moto};
use crate::support::peer::{Peer, Setup, SECRET};
use crate::support::{testbed_ready, Net, TempDir};

const NS: &str = "ipfs-test";
const SVC: &str = "cluster-peers";

/// Alone with --expect 3: never founds; exits 75 at --timeout, naming what was
/// missing, and deregisters.
#[tokio::test]
async fn too_few_peers_gives_up_without_founding() {
    if !testbed_ready() {
        return;
    }
    let moto = Moto::start();
    let service_id = moto.cloudmap(NS, SVC).await;
    let tmp = TempDir::new("alone");
    let mut p = Peer::new(&tmp.0, "alone", Net::new().ip());
    p.start(&Setup::cloudmap(&moto.endpoint(), NS, SVC, "crdt", 3).arg(&["--timeout", "3s"]));
    assert_eq!(p.wait(Duration::from_secs(20)), 75);
    let err = p.stderr();
    assert!(err.contains("--expect needs 3"), "{err}");
    assert!(p.daemon_runs().is_empty(), "the daemon never started");
    assert!(
        moto.instance_ids(&service_id).await.is_empty(),
        "deregistered on the way out"
    );
    assert_eq!(p.decisions().len(), 1, "the final decision is logged once");
}

/// AWS unreachable: retried until --timeout, then exit 69 naming the action; never
/// read as "no peers" (which with --expect 1 would found).
#[tokio::test]
async fn unreachable_aws_is_not_an_empty_cluster() {
    if !testbed_ready() {
        return;
    }
    let tmp = TempDir::new("unreachable");
    let mut p = Peer::new(&tmp.0, "p", Net::new().ip());
    let closed = format!("http://127.0.0.1:{}", free_port());
    let setup =
        Setup::cloudmap(&closed, NS, SVC, "crdt", 1).arg(&["--timeout", "3s", "--cloudmap-service-id", "srv-abcdef"]);
    p.start(&setup);
    assert_eq!(p.wait(Duration::from_secs(30)), 69);
    let err = p.stderr();
    assert!(err.contains("servicediscovery:RegisterInstance"), "{err}");
    assert!(err.contains("unreachable"), "{err}");
    assert!(p.daemon_runs().is_empty());
}

/// AWS denies: exit 77, and the message names the IAM action to grant.
#[tokio::test]
async fn access_denied_names_the_iam_action() {
    if !testbed_ready() {
        return;
    }
    let aws = Server::start(|_, _| {
        Response {
        status: 400,
        headers: vec![
            ("Content-Type".into(), "application/x-amz-json-1.1".into()),
            ("x-amzn-ErrorType".into(), "AccessDeniedException".into()),
        ],
        body: r#"{"__type":"AccessDeniedException","message":"not authorized to perform servicediscovery:DiscoverInstances"}"#.into(),
    }
    });
    let tmp = TempDir::new("denied");
    let mut p = Peer::new(&tmp.0, "p", Net::new().ip());
    p.start(&Setup::cloudmap(&aws.url(), NS, SVC, "crdt", 1).arg(&[
        "--timeout",
        "2s",
        "--cloudmap-service-id",
        "srv-abcdef",
    ]));
    assert_eq!(p.wait(Duration::from_secs(30)), 77);
    let err = p.stderr();
    assert!(
        err.contains("grant servicediscovery:RegisterInstance to the task role"),
        "{err}"
    );
}

/// Malformed local files: exit 65 naming the file and field, every byte left as it was.
#[tokio::test]
async fn bad_service_json_changes_nothing() {
    if !testbed_ready() {
        return;
    }
    let tmp = TempDir::new("badfile");
    let mut p = Peer::new(&tmp.0, "p", Net::new().ip());
    std::fs::create_dir_all(p.config()).unwrap();
    for (file, content, needle) in [
        (
            "service.json",
            r#"{"cluster": {"secret": "#,
            "service.json: is not valid JSON",
        ),
        ("service.json", r#"{"consensus": {"crdt": {}, "raft": {}}}"#, "both"),
    ] {
        std::fs::write(p.config().join(file), content).unwrap();
        std::fs::write(p.config().join("peerstore"), "/ip4/127.0.0.9/tcp/9096/p2p/x\n").unwrap();
        p.start(&Setup::cloudmap("http://127.0.0.1:9", NS, SVC, "crdt", 1));
        assert_eq!(p.wait(Duration::from_secs(20)), 65);
        assert!(p.stderr().contains(needle), "{}", p.stderr());
        assert_eq!(std::fs::read_to_string(p.config().join(file)).unwrap(), content);
        assert_eq!(
            std::fs::read_to_string(p.config().join("peerstore")).unwrap(),
            "/ip4/127.0.0.9/tcp/9096/p2p/x\n"
        );
        assert!(
            !p.config().join("identity.json").exists(),
            "identity.json is never written"
        );
    }
}

/// plan and --dry-run print the decision and change nothing; discover prints
/// what it sees.
#[tokio::test]
async fn plan_dry_run_and_discover() {
    if !testbed_ready() {
        return;
    }
    let moto = Moto::start();
    let service_id = moto.cloudmap(NS, SVC).await;
    let tmp = TempDir::new("plan");
    let mut net = Net::new();
    // The REST APIs want credentials: the probes must send them to read /id.
    let setup = Setup::cloudmap(&moto.endpoint(), NS, SVC, "crdt", 2)
        .env("CLUSTER_RESTAPI_BASICAUTHCREDENTIALS", "admin:hunter2-api-password");
    let mut a = Peer::new(&tmp.0, "a", net.ip());
    let mut b = Peer::new(&tmp.0, "b", net.ip());
    a.start(&setup);
    b.start(&setup);
    let t = std::time::Instant::now();
    loop {
        let auth = Some(("admin", "hunter2-api-password"));
        let (sa, sb) = (a.state_as(auth).await, b.state_as(auth).await);
        let ready = |s: &Option<Value>| {
            s.as_ref()
                .is_some_and(|s| s["peers"].as_array().is_some_and(|p| p.len() == 2))
        };
        if ready(&sa) && ready(&sb) && sa.unwrap()["cluster_id"] == sb.unwrap()["cluster_id"] {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(60), "{}\n{}", a.stderr(), b.stderr());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    let mut c = Peer::new(&tmp.0, "c", net.ip());
    // Without a config, plan refuses (it would have to init).
    c.start_with(&setup, &["plan"]);
    assert_eq!(c.wait(Duration::from_secs(20)), 66);
    assert!(!c.config().join("service.json").exists());

    // With a config: plan says join, and nothing changes.
    c.init("crdt");
    let before = snapshot(&c.config());
    for extra in [&["plan"][..], &["run", "--dry-run"][..]] {
        c.start_with(&setup, extra);
        assert_eq!(c.wait(Duration::from_secs(20)), 0, "{}", c.stderr());
        let plan: Value = serde_json::from_str(&c.stdout()).expect("plan prints JSON");
        assert_eq!(plan["decision"]["action"], "join", "{plan:#}");
        assert_eq!(plan["decision"]["bootstrap"].as_array().unwrap().len(), 2);
        assert!(plan["daemon_argv"][2] == "--bootstrap");
        assert_eq!(snapshot(&c.config()), before, "plan changed files");
        assert_eq!(moto.instance_ids(&service_id).await.len(), 2, "plan registered nothing");
    }

    c.start_with(&setup, &["discover"]);
    assert_eq!(c.wait(Duration::from_secs(20)), 0, "{}", c.stderr());
    let seen: Value = serde_json::from_str(&c.stdout()).unwrap();
    assert_eq!(seen["discovery"], "cloudmap");
    let peers = seen["peers"].as_array().unwrap();
    assert_eq!(peers.len(), 2);
    // Cloud Map records alone are not vouched for (no --verify-tasks): the
    // REST API credentials are not sent, so the peers show as daemons whose
    // ID their API did not confirm.
    assert!(
        peers
            .iter()
            .all(|p| p["probe"]["state"] == "daemon" && p["confirmed"] == false),
        "{seen:#}"
    );
}

fn snapshot(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_file())
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

/// --supervise: the daemon runs as a child, SIGTERM reaches it, the peer is
/// deregistered and the daemon's exit code passed on. Also: the instance ID
/// and address come from the ECS task metadata endpoint, and no secret reaches
/// a log line.
#[tokio::test]
async fn supervise_metadata_and_secrets() {
    if !testbed_ready() {
        return;
    }
    let moto = Moto::start();
    let service_id = moto.cloudmap(NS, SVC).await;
    let tmp = TempDir::new("supervise");
    let mut p = Peer::new(&tmp.0, "p", Net::new().ip());
    let task = format!(
        r#"{{"TaskARN":"arn:aws:ecs:us-east-1:111122223333:task/c/0123456789abcdef","Containers":[{{"Name":"ipfs-cluster","Type":"NORMAL","Networks":[{{"NetworkMode":"awsvpc","IPv4Addresses":["{}"]}}]}}]}}"#,
        p.ip
    );
    let metadata = Server::start(move |line, _| {
        if line.starts_with("GET /v4/task ") {
            Response {
                status: 200,
                headers: vec![],
                body: task.clone(),
            }
        } else {
            Response {
                status: 404,
                headers: vec![],
                body: String::new(),
            }
        }
    });
    let setup = Setup::cloudmap(&moto.endpoint(), NS, SVC, "crdt", 1)
        .arg(&["--supervise", "--log-format", "json"])
        .env("ECS_CONTAINER_METADATA_URI_V4", &format!("{}/v4", metadata.url()))
        .env("CLUSTER_RESTAPI_BASICAUTHCREDENTIALS", "admin:hunter2-api-password")
        .env("AWS_SECRET_ACCESS_KEY", "aws-secret-key-never-logged");
    // The metadata gives the address: no --advertise-ip.
    p.start(&setup);
    let t = std::time::Instant::now();
    while p
        .state_as(Some(("admin", "hunter2-api-password")))
        .await
        .is_none_or(|s| s["ready"] != Value::Bool(true))
    {
        assert!(t.elapsed() < Duration::from_secs(30), "{}", p.stderr());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        moto.instance_ids(&service_id).await,
        vec!["0123456789abcdef".to_string()],
        "instance ID = ECS task ID"
    );
    assert_eq!(p.stop(), 0, "the double's clean exit code is passed on");
    assert!(
        moto.instance_ids(&service_id).await.is_empty(),
        "deregistered after the daemon exited"
    );

    // The daemon shares stderr in --supervise mode; our own lines are JSON objects.
    let log = p.stderr();
    let ours: Vec<&str> = log.lines().filter(|l| l.starts_with('{')).collect();
    assert!(
        ours.len() >= 5 && ours.iter().all(|l| serde_json::from_str::<Value>(l).is_ok()),
        "one JSON object per line:\n{log}"
    );
    assert_eq!(p.decisions().len(), 1);
    assert!(log.contains("forwarding signal"), "{log}");
    for secret in [SECRET, "hunter2-api-password", "aws-secret-key-never-logged"] {
        assert!(!log.contains(secret), "a secret reached the log");
    }
}
