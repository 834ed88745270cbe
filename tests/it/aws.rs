//! EC2 tags, IMDSv2 and the ECS API against moto's server, with fake IMDS and
//! task metadata endpoints on loopback.

use std::net::IpAddr;
use std::time::Duration;

use serde_json::Value;

use crate::support::http::{Response, Server};
use crate::support::moto::Moto;
use crate::support::peer::{one_cluster, Peer, Setup};
use crate::support::{testbed_ready, Net, TempDir};

const NS: &str = "ipfs-test";
const SVC: &str = "cluster-peers";

/// IMDSv2 for one instance: the token PUT (echoing the TTL header, as the SDK
/// requires), then instance-id and local-ipv4 with that token.
fn imds(instance_id: String, ip: IpAddr) -> Server {
    Server::start(move |line, _| {
        let ok = |body: String| Response {
            status: 200,
            headers: vec![],
            body,
        };
        if line.starts_with("PUT /latest/api/token ") {
            return Response {
                status: 200,
                headers: vec![("X-aws-ec2-metadata-token-ttl-seconds".into(), "21600".into())],
                body: "fake-token".into(),
            };
        }
        match line.split(' ').nth(1).unwrap_or_default() {
            "/latest/meta-data/instance-id" => ok(instance_id.clone()),
            "/latest/meta-data/local-ipv4" => ok(ip.to_string()),
            _ => Response {
                status: 404,
                headers: vec![],
                body: String::new(),
            },
        }
    })
}

/// ECS task metadata v4 for one task.
fn task_metadata(task_arn: &str, ip: IpAddr, mode: &str, service: Option<&str>) -> Server {
    let service = service.map(|s| format!(r#","ServiceName":"{s}""#)).unwrap_or_default();
    let body = format!(
        r#"{{"Cluster":"c","TaskARN":"{task_arn}"{service},"Containers":[{{"Name":"ipfs-cluster","Type":"NORMAL","Networks":[{{"NetworkMode":"{mode}","IPv4Addresses":["{ip}"]}}]}}]}}"#
    );
    Server::start(move |line, _| match line.starts_with("GET /v4/task ") {
        true => Response {
            status: 200,
            headers: vec![],
            body: body.clone(),
        },
        false => Response {
            status: 404,
            headers: vec![],
            body: String::new(),
        },
    })
}

/// --discovery ec2: tags ANDed across keys and ORed within one, running
/// instances only, pages of DescribeInstances, --register tagging each
/// instance with its peer ID, IMDSv2 for the instance and its address.
#[tokio::test]
async fn ec2_tags_one_cluster() {
    if !testbed_ready() {
        return;
    }
    let moto = Moto::start();
    let tmp = TempDir::new("ec2");
    let mut net = Net::new();
    let ips: Vec<IpAddr> = (0..5).map(|_| net.ip()).collect();
    let mut ids = vec![];
    for ip in &ips {
        ids.push(moto.instance(*ip, &[("app", "ipfs-test"), ("env", "prod")]).await);
    }
    // Tagged instances where nothing runs, one with the other accepted env, one
    // with an env not asked for. (More follow below, for discover's pages: many
    // instances make moto slow for five peers polling at once.)
    for i in 0..4 {
        let env = if i == 0 { "staging" } else { "prod" };
        moto.instance(net.ip(), &[("app", "ipfs-test"), ("env", env)]).await;
    }
    let foreign = net.ip();
    moto.instance(foreign, &[("app", "ipfs-test"), ("env", "dev")]).await;

    let setup = Setup::cloudmap(&moto.endpoint(), NS, SVC, "crdt", 3).arg(&[
        "--discovery",
        "ec2",
        "--ec2-tag",
        "app=ipfs-test",
        "--ec2-tag",
        "env=prod",
        "--ec2-tag",
        "env=staging",
        "--register",
        "--timeout",
        "120s",
    ]);
    let imds_servers: Vec<Server> = ips.iter().zip(&ids).map(|(ip, id)| imds(id.clone(), *ip)).collect();
    let mut peers: Vec<Peer> = ips
        .iter()
        .enumerate()
        .map(|(i, ip)| Peer::new(&tmp.0, &format!("e{i}"), *ip))
        .collect();
    for (p, s) in peers.iter_mut().zip(&imds_servers) {
        p.start(&setup.clone().env("AWS_EC2_METADATA_SERVICE_ENDPOINT", &s.url()));
    }
    let states = one_cluster(&peers.iter().collect::<Vec<_>>(), 5, Duration::from_secs(150)).await;
    assert_eq!(
        states.iter().filter(|s| s["founded"] == Value::Bool(true)).count(),
        1,
        "one crdt founder"
    );

    let d = peers[0].decisions().pop().unwrap();
    assert_eq!(d["discovery"], "ec2");
    assert_eq!(d["instance_id"], ids[0].as_str(), "the registration is the instance");
    let seen = d["facts"]["peers"].as_array().unwrap();
    assert!(seen.len() >= 2, "the other peers, identified by their greetings: {d:#}");

    let tags = moto.ec2().await.describe_tags().send().await.unwrap();
    for (p, id) in peers.iter().zip(&ids) {
        let want =
            serde_json::from_str::<Value>(&std::fs::read_to_string(p.config().join("identity.json")).unwrap()).unwrap();
        let tagged = tags
            .tags()
            .iter()
            .find(|t| t.resource_id() == Some(id.as_str()) && t.key() == Some("ipfs-cluster:peer-id"))
            .and_then(|t| t.value());
        assert_eq!(tagged, want["id"].as_str(), "--register tagged {id} with its peer ID");
    }

    // discover sees every tagged instance over the pages, and not the env=dev one.
    for _ in 0..100 {
        moto.instance(net.ip(), &[("app", "ipfs-test"), ("env", "prod")]).await;
    }
    let mut c = Peer::new(&tmp.0, "disc", net.ip());
    c.start_with(
        &setup
            .clone()
            .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", &imds_servers[0].url()),
        &["discover"],
    );
    assert_eq!(c.wait(Duration::from_secs(60)), 0, "{}", c.stderr());
    let out: Value = serde_json::from_str(&c.stdout()).unwrap();
    assert_eq!(out["peers"].as_array().unwrap().len(), 5, "{out:#}");
    // 5 + 104 tagged instances: more than one page of 100.
    assert_eq!(out["silent"].as_array().unwrap().len(), 104, "{out:#}");
    assert!(!c.stdout().contains(&format!("\"{foreign}\"")), "env=dev is not a peer");
}

/// EC2 discovery where the task has its own network interface is refused
/// unless asked for; IMDS that never gives a token fails with a hint.
#[tokio::test]
async fn ec2_refuses_awsvpc_and_explains_imds_failures() {
    if !testbed_ready() {
        return;
    }
    let moto = Moto::start();
    let tmp = TempDir::new("ec2-refuse");
    let mut net = Net::new();
    let ip = net.ip();
    let id = moto.instance(ip, &[("app", "x")]).await;
    let imds_server = imds(id, ip);
    let meta = task_metadata("arn:aws:ecs:us-east-1:123456789012:task/c/abc", ip, "awsvpc", None);
    let setup = Setup::cloudmap(&moto.endpoint(), NS, SVC, "crdt", 1)
        .arg(&["--discovery", "ec2", "--ec2-tag", "app=x"])
        .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", &imds_server.url())
        .env("ECS_CONTAINER_METADATA_URI_V4", &format!("{}/v4", meta.url()));
    let mut p = Peer::new(&tmp.0, "p", ip);
    p.start(&setup);
    assert_eq!(p.wait(Duration::from_secs(30)), 78);
    assert!(p.stderr().contains("awsvpc"), "{}", p.stderr());

    // An IMDS that refuses the token request.
    let broken = Server::start(|_, _| Response {
        status: 403,
        headers: vec![],
        body: "forbidden".into(),
    });
    let setup = Setup::cloudmap(&moto.endpoint(), NS, SVC, "crdt", 1)
        .arg(&["--discovery", "ec2", "--ec2-tag", "app=x", "--timeout", "5s"])
        .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", &broken.url());
    p.start(&setup);
    assert_eq!(p.wait(Duration::from_secs(60)), 69);
    assert!(p.stderr().contains("IMDSv2"), "{}", p.stderr());
    assert!(p.daemon_runs().is_empty());

    // An IMDS that never answers (a container behind a hop limit of 1): the
    // error names the hop limit.
    let silent = Server::start(|_, _| {
        std::thread::sleep(Duration::from_secs(3));
        Response {
            status: 200,
            headers: vec![],
            body: String::new(),
        }
    });
    let setup = Setup::cloudmap(&moto.endpoint(), NS, SVC, "crdt", 1)
        .arg(&["--discovery", "ec2", "--ec2-tag", "app=x"])
        .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", &silent.url());
    p.start(&setup);
    assert_eq!(p.wait(Duration::from_secs(90)), 69);
    assert!(p.stderr().contains("hop limit"), "{}", p.stderr());
}

/// --expect auto reads the ECS service's desiredCount; --verify-tasks drops
/// Cloud Map records whose task is not RUNNING, and deregisters those whose
/// task is STOPPED.
#[tokio::test]
async fn ecs_expect_auto_and_verify_tasks() {
    if !testbed_ready() {
        return;
    }
    let moto = Moto::start();
    moto.hold_ecs_tasks();
    let service_id = moto.cloudmap(NS, SVC).await;
    let arns = moto.ecs_service("c", "f", "svc", 3, 4).await;
    let ecs = moto.ecs().await;
    // The 4th task stopped long ago; its record stayed, at an address where a
    // stranger now answers (here: nothing), registered first.
    ecs.stop_task().cluster("c").task(&arns[3]).send().await.unwrap();
    let tmp = TempDir::new("ecs");
    let mut net = Net::new();
    let stale_ip = net.ip().to_string();
    moto.register(
        &service_id,
        arns[3].rsplit('/').next().unwrap(),
        &[
            ("AWS_INSTANCE_IPV4", stale_ip.as_str()),
            ("AWS_INSTANCE_PORT", "9096"),
            (
                "ipfs_cluster_peer_id",
                "12D3KooWHEZ3YnZWcqrE91bnCGJZsUS3njYBJEh7QGK3NwzrGEKn",
            ),
            ("ipfs_cluster_registered_at", "2020-01-01T00:00:00.000Z"),
        ],
    )
    .await;

    let setup = Setup::cloudmap(&moto.endpoint(), NS, SVC, "raft", 3).arg(&["--expect", "auto", "--verify-tasks"]);
    let mut peers = vec![];
    let mut metas = vec![];
    for arn in &arns[..3] {
        let ip = net.ip();
        metas.push(task_metadata(arn, ip, "awsvpc", Some("svc")));
        peers.push(Peer::new(&tmp.0, &format!("t{}", peers.len()), ip));
    }
    for (p, m) in peers.iter_mut().zip(&metas) {
        p.start(
            &setup
                .clone()
                .env("ECS_CONTAINER_METADATA_URI_V4", &format!("{}/v4", m.url())),
        );
    }
    one_cluster(&peers.iter().collect::<Vec<_>>(), 3, Duration::from_secs(60)).await;
    for (p, arn) in peers.iter().zip(&arns) {
        let d = p.decisions().pop().unwrap();
        assert_eq!(d["facts"]["expect"], 3, "desiredCount");
        assert_eq!(
            d["instance_id"],
            arn.rsplit('/').next().unwrap(),
            "the instance ID is the task ID"
        );
        let listed: Vec<&str> = d["facts"]["peers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["registration"]["instance_id"].as_str().unwrap())
            .collect();
        assert!(
            !listed.contains(&arns[3].rsplit('/').next().unwrap()),
            "the stopped task's record is dropped"
        );
    }
    // The first peer to see it skips it and removes it: the others may never see it.
    assert!(peers.iter().any(|p| p.stderr().contains("its ECS task is not RUNNING")));
    // ... and removed from Cloud Map, not only hidden.
    let stale = arns[3].rsplit('/').next().unwrap().to_owned();
    let ids = moto.instance_ids(&service_id).await;
    assert!(
        !ids.contains(&stale),
        "the stopped task's record is still registered: {ids:?}"
    );
    // (moto lists a re-registered instance once per registration)
    let unique: std::collections::BTreeSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), 3, "{ids:?}");
    assert!(peers
        .iter()
        .any(|p| p.stderr().contains("deregistered the record of a stopped ECS task")));
}

/// Cloud Map's RegisterInstance is asynchronous. Its GetOperation polls run
/// alongside the first round (the first DiscoverInstances goes out before
/// the operation ends), and no decision is acted on before the registration
/// is in effect: an operation that fails is registered again, in full.
#[tokio::test]
async fn the_registration_wait_overlaps_the_first_round() {
    if !testbed_ready() {
        return;
    }
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let (registers, polls) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (r, g) = (registers.clone(), polls.clone());
    let aws = Server::start(move |_, body| {
        let ok = |body: String| Response {
            status: 200,
            headers: vec![("Content-Type".into(), "application/x-amz-json-1.1".into())],
            body,
        };
        let req: Value = serde_json::from_str(body).unwrap_or_default();
        if req.get("Attributes").is_some() {
            let n = r.fetch_add(1, Ordering::SeqCst) + 1;
            return ok(format!(r#"{{"OperationId":"register-{n}"}}"#));
        }
        if let Some(op) = req["OperationId"].as_str() {
            // The first registration: pending for three polls, then failed.
            let status = match op {
                "register-1" if g.fetch_add(1, Ordering::SeqCst) < 3 => "SUBMITTED",
                "register-1" => "FAIL",
                _ => "SUCCESS",
            };
            return ok(format!(
                r#"{{"Operation":{{"Id":"{op}","Status":"{status}","ErrorCode":"INTERNAL_FAILURE","ErrorMessage":"test"}}}}"#
            ));
        }
        if req.get("NamespaceName").is_some() {
            return ok(r#"{"Instances":[]}"#.into());
        }
        // DeregisterInstance
        ok(r#"{"OperationId":"deregister"}"#.into())
    });
    let tmp = TempDir::new("regwait");
    let mut p = Peer::new(&tmp.0, "p", Net::new().ip());
    p.start(&Setup::cloudmap(&aws.url(), NS, SVC, "crdt", 1).arg(&[
        "--settle",
        "0s",
        "--cloudmap-service-id",
        "srv-abcdef",
    ]));
    let t = std::time::Instant::now();
    while p.daemon_runs().is_empty() {
        assert!(t.elapsed() < Duration::from_secs(30), "no daemon: {}", p.stderr());
        assert!(p.try_exit().is_none(), "exited: {}", p.stderr());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    p.stop();
    let requests = aws.requests.lock().unwrap().clone();
    let at = |needle: &str| requests.iter().position(|r| r.contains(needle));
    let last_poll = requests
        .iter()
        .rposition(|r| r.contains(r#""OperationId":"register-1""#));
    let first_discover = at("NamespaceName").expect("a DiscoverInstances");
    assert!(
        first_discover < last_poll.expect("polls of the first registration"),
        "the first round waited for the registration: {requests:#?}"
    );
    assert_eq!(
        registers.load(Ordering::SeqCst),
        2,
        "registered again after the failure: {requests:#?}"
    );
    assert!(at(r#""OperationId":"register-2""#).is_some(), "{requests:#?}");
    let err = p.stderr();
    assert!(err.contains("registering this peer failed; registering again"), "{err}");
    let registered = err.find("registered instance_id").expect("a 'registered' log line");
    let decision = err.find("event=\"decision\"").expect("a decision");
    assert!(
        registered < decision,
        "decided before the registration was in effect: {err}"
    );
}
