//! What ships, run as it ships: the image's ENTRYPOINT and CMD from
//! docker/Dockerfile, and the task definition's environment and health check
//! from deploy/ecs-task-definition.json, executed against a peer (the
//! ipfs-cluster-service test double) on loopback, with moto standing in for
//! Cloud Map and ECS and a fake task metadata endpoint.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::deploy::{exec_form, instruction, BIN_IN_IMAGE};
use crate::support::peer::{Peer, SECRET};
use crate::support::{bin, double, root, testbed_ready, Net, TempDir};

/// The image's command line with `cmd` as CMD: ENTRYPOINT without tini, the
/// binary at its place in the image replaced by the one under test.
fn image_argv(cmd: &[String]) -> Vec<String> {
    let entry = exec_form(&instruction("ENTRYPOINT")[0], "ENTRYPOINT");
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
    exec_form(&instruction("CMD")[0], "CMD")
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
