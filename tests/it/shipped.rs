//! What ships, run as it ships: the image's ENTRYPOINT and CMD from
//! docker/Dockerfile, and the task definition's environment and health check
//! from deploy/ecs-task-definition.json, executed against a peer (the
//! ipfs-cluster-service test double) on loopback, with moto standing in for
//! Cloud Map and ECS and a fake task metadata endpoint.

use std::collections::BTreeMap;
use std::fs;
use std::net::IpAddr;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::deploy::{container, ecs_container_env, exec_form, instruction, json_file, BIN_IN_IMAGE, TASK_DEF};
use crate::support::http::{Response, Server};
use crate::support::moto::Moto;
use crate::support::peer::{Peer, SECRET};
use crate::support::{bin, double, root, testbed_ready, Net, TempDir};

/// The image's command line with `cmd` as CMD: ENTRYPOINT without tini, the
/// binary at its place in the image replaced by the one under test.
fn image_argv(cmd: &[String]) -> Vec<String> {
    // The cluster image: the Dockerfile's last stage.
    let entry = exec_form(instruction("ENTRYPOINT").last().unwrap(), "ENTRYPOINT");
    let at = entry
        .iter()
        .position(|a| a == BIN_IN_IMAGE)
        .expect("ENTRYPOINT runs the binary");
    let mut argv = vec![bin().display().to_string()];
    argv.extend(entry[at + 1..].iter().cloned());
    argv.extend(cmd.iter().cloned());
    argv
}

/// The image's CMD.
fn image_cmd() -> Vec<String> {
    exec_form(instruction("CMD").last().unwrap(), "CMD")
}

/// `argv` with `env` only (as in a container: options come from the environment).
fn command(argv: &[String], p: &Peer, env: &BTreeMap<String, String>) -> Command {
    let mut c = Command::new(&argv[0]);
    c.args(&argv[1..])
        .env_clear()
        .env(
            "PATH",
            format!("{}:/usr/local/bin:/usr/bin:/bin", root().join(".venv/bin").display()),
        )
        .env("HOME", &p.dir)
        .envs(env);
    c
}

/// A peer on its own loopback address, configured with variables only.
fn static_env(p: &Peer) -> BTreeMap<String, String> {
    [
        ("IPFS_CLUSTER_PATH", p.config().display().to_string()),
        ("CLUSTER_SECRET", SECRET.into()),
        ("CLUSTER_LISTENMULTIADDRESS", format!("/ip4/{}/tcp/9096", p.ip)),
        (
            "CLUSTER_RESTAPI_HTTPLISTENMULTIADDRESS",
            format!("/ip4/{}/tcp/9094", p.ip),
        ),
        ("CLUSTER_MONITORPINGINTERVAL", "1s".into()),
        ("BOOTSTRAP_DISCOVERY", "static".into()),
        ("BOOTSTRAP_PEERS", p.ip.to_string()),
        ("BOOTSTRAP_EXPECT", "1".into()),
        ("BOOTSTRAP_SETTLE", "1s".into()),
        ("BOOTSTRAP_ADVERTISE_IP", p.ip.to_string()),
        ("BOOTSTRAP_LOOPBACK_ONLY", "true".into()),
        ("BOOTSTRAP_DAEMON_BIN", double().display().to_string()),
        ("BOOTSTRAP_RUN_AS", "none".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

async fn until_ready(p: &Peer, auth: Option<(&str, &str)>) {
    let t = std::time::Instant::now();
    while p.state_as(auth).await.is_none_or(|s| s["ready"] != Value::Bool(true)) {
        assert!(t.elapsed() < Duration::from_secs(40), "{}", p.stderr());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `docker run IMAGE` and `docker run IMAGE daemon --stats` (a CMD overridden
/// as with the official image) both start the daemon, with the flags after
/// `daemon` handed to it.
#[tokio::test]
async fn the_images_command_line_starts_the_daemon() {
    if !testbed_ready() {
        return;
    }
    let tmp = TempDir::new("image-argv");
    let mut net = Net::new();
    let mut with_stats = image_cmd();
    with_stats.push("--stats".into());
    for (i, cmd) in [image_cmd(), with_stats].iter().enumerate() {
        let mut p = Peer::new(&tmp.0, &format!("img{i}"), net.ip());
        let argv = image_argv(cmd);
        p.spawn(command(&argv, &p, &static_env(&p)));
        until_ready(&p, None).await;
        let runs = p.daemon_runs();
        let daemon_args: Vec<&str> = runs[0]["argv"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .skip_while(|a| *a != "daemon")
            .skip(1)
            .collect();
        assert_eq!(
            daemon_args,
            cmd[1..],
            "{argv:?} started the daemon with {:?}",
            runs[0]["argv"]
        );
        assert_eq!(p.stop(), 0);
    }
}

/// The task definition's environment and health check, as ECS runs them: the
/// peer started with the image's CMD, then the health check command, both
/// with exactly the container's environment (secrets filled in) plus what a
/// loopback test bed must change: the AWS endpoint and credentials, the task
/// metadata endpoint, the Cloud Map service ID, and the addresses (every
/// test's peers share the host).
#[tokio::test]
async fn the_task_definitions_health_check_passes() {
    if !testbed_ready() {
        return;
    }
    let moto = Moto::start();
    moto.hold_ecs_tasks();
    let td = json_file(TASK_DEF);
    let c = container(&td, "ipfs-cluster");
    let env = ecs_container_env(c);
    let service_id = moto
        .cloudmap(&env["BOOTSTRAP_CLOUDMAP_NAMESPACE"], &env["BOOTSTRAP_CLOUDMAP_SERVICE"])
        .await;
    let arn = moto.ecs_service("c", "ipfs-cluster", "svc", 1, 1).await.remove(0);

    let tmp = TempDir::new("task-def-health");
    let mut p = Peer::new(&tmp.0, "task", Net::new().ip());
    let meta = task_metadata(&arn, p.ip);
    let mut env = env;
    let password = env["CLUSTER_RESTAPI_BASICAUTHCREDENTIALS"]
        .split_once(':')
        .map(|(u, p)| (u.to_owned(), p.to_owned()))
        .unwrap();
    for (k, v) in [
        ("IPFS_CLUSTER_PATH", p.config().display().to_string()),
        ("ECS_CONTAINER_METADATA_URI_V4", format!("{}/v4", meta.url())),
        ("BOOTSTRAP_CLOUDMAP_SERVICE_ID", service_id),
        ("AWS_ENDPOINT_URL", moto.endpoint()),
        ("AWS_ACCESS_KEY_ID", "testing".into()),
        ("AWS_SECRET_ACCESS_KEY", "testing".into()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ("CLUSTER_LISTENMULTIADDRESS", format!("/ip4/{}/tcp/9096", p.ip)),
        (
            "CLUSTER_RESTAPI_HTTPLISTENMULTIADDRESS",
            format!("/ip4/{}/tcp/9094", p.ip),
        ),
        ("BOOTSTRAP_LOOPBACK_ONLY", "true".into()),
        ("BOOTSTRAP_DAEMON_BIN", double().display().to_string()),
        ("BOOTSTRAP_RUN_AS", "none".into()),
    ] {
        env.insert(k.into(), v);
    }
    // The task's volumes: /state (EFS) and /task, folders here.
    let state = tmp.0.join("state");
    fs::create_dir_all(&state).unwrap();
    let slot_file = tmp.0.join("task/slot.json");
    fs::create_dir_all(slot_file.parent().unwrap()).unwrap();
    assert_eq!(env["BOOTSTRAP_STATE_ROOT"], "/state");
    assert_eq!(env["BOOTSTRAP_SLOT_FILE"], "/task/slot.json");
    env.insert("BOOTSTRAP_STATE_ROOT".into(), state.display().to_string());
    env.insert("BOOTSTRAP_SLOT_FILE".into(), slot_file.display().to_string());
    // The kubo container takes the slot first, with its own environment
    // (--expect auto from the ECS service), holding it while "kubo" runs.
    let mut kubo_env = crate::deploy::ecs_env(container(&td, "ipfs"));
    assert_eq!(kubo_env["BOOTSTRAP_EXPECT"], "auto");
    for k in [
        "ECS_CONTAINER_METADATA_URI_V4",
        "AWS_ENDPOINT_URL",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_REGION",
        "AWS_EC2_METADATA_DISABLED",
        "BOOTSTRAP_STATE_ROOT",
        "BOOTSTRAP_SLOT_FILE",
        "BOOTSTRAP_LOOPBACK_ONLY",
    ] {
        kubo_env.insert(k.into(), env[k].clone());
    }
    let mut kubo = Peer::new(&tmp.0, "kubo", Net::new().ip());
    let sleep = ["/bin/sleep".to_string(), "600".into()];
    let mut slot_argv = vec![bin().display().to_string(), "slot".into(), "--".into()];
    slot_argv.extend(sleep);
    kubo.spawn(command(&slot_argv, &kubo, &kubo_env));
    let t = std::time::Instant::now();
    while !slot_file.exists() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "no slot taken: {}",
            kubo.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    p.spawn(command(&image_argv(&image_cmd()), &p, &env));
    until_ready(&p, Some((&password.0, &password.1))).await;
    assert!(state.join("slots/0/cluster/identity.json").exists());

    let hc = c["healthCheck"]["command"].as_array().unwrap();
    let hc: Vec<String> = hc.iter().skip(1).map(|a| a.as_str().unwrap().to_owned()).collect();
    assert_eq!(hc[0], BIN_IN_IMAGE);
    let mut argv = vec![bin().display().to_string()];
    argv.extend(hc[1..].iter().cloned());
    let out = command(&argv, &p, &env).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    crate::support::assert_no_secrets(&err);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{argv:?} with the task definition's environment: {err}"
    );
    p.stop();
}

/// ECS task metadata v4 for one task of service `svc` in cluster `c`.
fn task_metadata(task_arn: &str, ip: IpAddr) -> Server {
    let body = format!(
        r#"{{"Cluster":"c","TaskARN":"{task_arn}","ServiceName":"svc","Containers":[{{"Name":"ipfs-cluster","Type":"NORMAL","Networks":[{{"NetworkMode":"awsvpc","IPv4Addresses":["{ip}"]}}]}}]}}"#
    );
    Server::start(move |line, _| Response {
        status: if line.starts_with("GET /v4/task ") { 200 } else { 404 },
        headers: vec![],
        body: body.clone(),
    })
}
