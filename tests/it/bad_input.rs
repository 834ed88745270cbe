//! Bad input, one row per case: each gives a non-zero exit code (or, for other
//! peers' registrations, a skip), a message naming the file, field, flag or
//! variable, and leaves every file in the config folder byte for byte as it was.
//!
//! The README's "Bad input" table is this table: `BAD_INPUT_TABLE=1 cargo test
//! --test it bad_input -- --nocapture` prints it, and `readme_lists_every_case`
//! fails when they differ.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::http::{Response, Server};
use crate::support::peer::{Peer, Setup};
use crate::support::{root, testbed_ready, Net, TempDir};

/// What a case changes before the run.
enum Change {
    /// Replace a file in the config folder (None: remove it).
    File(&'static str, Option<fn(&str) -> String>),
    /// IPFS_CLUSTER_PATH points at a regular file.
    ConfigIsFile,
    /// IPFS_CLUSTER_PATH points at a folder that does not exist.
    ConfigMissing,
    Env(&'static str, &'static str),
    /// Replace a file and unset a variable the setup sets.
    FileUnset(&'static str, fn(&str) -> String, &'static str),
    /// A variable and flags together.
    EnvArgs(&'static str, &'static str, &'static [&'static str]),
    /// A variable, with the flag that would override it left out.
    EnvNoFlag(&'static str, &'static str, &'static str),
    Args(&'static [&'static str]),
    /// The ECS task metadata endpoint answers `/task` with this body.
    Metadata(&'static str),
    /// Cloud Map lists one other registration with these attributes (JSON).
    Attributes(&'static str),
    /// Cloud Map discovery with no AWS credentials anywhere.
    NoCredentials,
    /// Cloud Map discovery outside ECS with no AWS region anywhere.
    NoRegion,
}

struct Case {
    what: &'static str,
    change: Change,
    mode: &'static str,
    exit: i32,
    /// The message names this.
    names: &'static str,
}

fn half(s: &str) -> String {
    s[..s.len() / 2].to_owned()
}

const PEER_ID: &str = "12D3KooWJrCnvRqSNKWn6C1mSp3ykaUNg3rUvVRhe3bWGhKL2Mhm";

fn cases() -> Vec<Case> {
    use Change::*;
    vec![
        Case {
            what: "service.json truncated",
            change: File("service.json", Some(half)),
            mode: "run",
            exit: 65,
            names: "service.json: is not valid JSON",
        },
        Case {
            what: "service.json is not an object",
            change: File("service.json", Some(|_| "[1, 2, 3]".into())),
            mode: "run",
            exit: 65,
            names: "service.json",
        },
        Case {
            what: "service.json has both consensus.crdt and consensus.raft",
            change: File(
                "service.json",
                Some(|_| r#"{"consensus": {"crdt": {}, "raft": {}}}"#.into()),
            ),
            mode: "run",
            exit: 65,
            names: "consensus",
        },
        Case {
            what: "service.json cluster.secret is not a string",
            change: File(
                "service.json",
                Some(|s| s.replacen("\"secret\": \"", "\"secret\": 42, \"was\": \"", 1)),
            ),
            mode: "run",
            exit: 65,
            names: "cluster.secret",
        },
        Case {
            what: "identity.json truncated",
            change: File("identity.json", Some(half)),
            mode: "run",
            exit: 65,
            names: "identity.json",
        },
        Case {
            what: "identity.json without id",
            change: File("identity.json", Some(|_| r#"{"private_key": "CAESQ"}"#.into())),
            mode: "run",
            exit: 65,
            names: "identity.json: has no string field \"id\"",
        },
        Case {
            what: "identity.json id is not a peer ID",
            change: File(
                "identity.json",
                Some(|_| r#"{"id": "QmNotAPeerId", "private_key": "CAESQ"}"#.into()),
            ),
            mode: "run",
            exit: 65,
            names: "identity.json: field \"id\"",
        },
        Case {
            what: "identity.json missing (service.json present)",
            change: File("identity.json", None),
            mode: "run",
            exit: 65,
            names: "identity.json",
        },
        Case {
            what: "config folder is a regular file",
            change: ConfigIsFile,
            mode: "run",
            exit: 66,
            names: "IPFS_CLUSTER_PATH",
        },
        Case {
            what: "config folder missing (plan)",
            change: ConfigMissing,
            mode: "plan",
            exit: 66,
            names: "service.json",
        },
        Case {
            what: "CLUSTER_SECRET set but empty",
            change: Env("CLUSTER_SECRET", ""),
            mode: "run",
            exit: 78,
            names: "CLUSTER_SECRET",
        },
        Case {
            what: "CLUSTER_SECRET not hexadecimal",
            change: Env("CLUSTER_SECRET", "not-hex"),
            mode: "run",
            exit: 64,
            names: "CLUSTER_SECRET",
        },
        Case {
            what: "CLUSTER_SECRET with a trailing line break",
            change: Env(
                "CLUSTER_SECRET",
                "2588b80d5cb05374fa142aed6cbb047d1f4ef8ef15e37eba68c65b9d30df67ed\n",
            ),
            mode: "run",
            exit: 64,
            names: "CLUSTER_SECRET holds a line break",
        },
        Case {
            what: "CLUSTER_SECRET of 31 bytes",
            change: Env(
                "CLUSTER_SECRET",
                "2588b80d5cb05374fa142aed6cbb047d1f4ef8ef15e37eba68c65b9d30df67",
            ),
            mode: "run",
            exit: 64,
            names: "CLUSTER_SECRET has 62 hex characters",
        },
        Case {
            what: "service.json cluster.secret with a trailing line break",
            change: File(
                "service.json",
                Some(|s| {
                    let v: serde_json::Value = serde_json::from_str(s).unwrap();
                    let secret = v["cluster"]["secret"].as_str().unwrap();
                    s.replacen(secret, &format!("{secret}\\n"), 1)
                }),
            ),
            mode: "run",
            exit: 65,
            names: "cluster.secret holds a line break",
        },
        Case {
            what: "service.json cluster.secret null, CLUSTER_SECRET unset",
            change: FileUnset(
                "service.json",
                |s| {
                    let v: serde_json::Value = serde_json::from_str(s).unwrap();
                    let secret = v["cluster"]["secret"].as_str().unwrap();
                    s.replacen(&format!("\"{secret}\""), "null", 1)
                },
                "CLUSTER_SECRET",
            ),
            mode: "run",
            exit: 78,
            names: "cluster.secret is empty and CLUSTER_SECRET is unset",
        },
        Case {
            what: "service.json cluster.secret too short",
            change: File(
                "service.json",
                Some(|s| s.replacen("\"secret\": \"", "\"secret\": \"abcd\", \"was\": \"", 1)),
            ),
            mode: "run",
            exit: 65,
            names: "cluster.secret has 4 hex characters",
        },
        Case {
            what: "--slot-file without --state-root",
            change: Args(&["--slot-file", "/task/slot.json"]),
            mode: "run",
            exit: 64,
            names: "--slot-file (BOOTSTRAP_SLOT_FILE) needs --state-root",
        },
        Case {
            what: "--refound that is no genesis record ID",
            change: Args(&["--state-root", "/nonexistent/state", "--refound", "yesterday"]),
            mode: "run",
            exit: 64,
            names: "--refound (BOOTSTRAP_REFOUND) \"yesterday\" is not a genesis record ID",
        },
        Case {
            what: "CLUSTER_RAFT_DATAFOLDER with --state-root",
            change: EnvArgs(
                "CLUSTER_RAFT_DATAFOLDER",
                "/data/raft",
                &["--state-root", "/nonexistent/state"],
            ),
            mode: "run",
            exit: 64,
            names: "CLUSTER_RAFT_DATAFOLDER is set with --state-root",
        },
        Case {
            what: "plan with --state-root but no --slot-file",
            change: Args(&["--state-root", "/nonexistent/state"]),
            mode: "plan",
            exit: 64,
            names: "need --slot-file (BOOTSTRAP_SLOT_FILE)",
        },
        Case {
            what: "--state-root that does not exist",
            change: Args(&["--state-root", "/nonexistent/state"]),
            mode: "run",
            exit: 66,
            names: "is the shared volume mounted there?",
        },
        Case {
            what: "CLUSTER_ID with --state-root",
            change: EnvArgs("CLUSTER_ID", PEER_ID, &["--state-root", "/nonexistent/state"]),
            mode: "run",
            exit: 64,
            names: "CLUSTER_ID is set with --state-root",
        },
        Case {
            what: "--watchdog-interval 0s",
            change: Args(&["--state-root", "/nonexistent/state", "--watchdog-interval", "0s"]),
            mode: "run",
            exit: 64,
            names: "--watchdog-interval (BOOTSTRAP_WATCHDOG_INTERVAL) must be more than 0",
        },
        Case {
            what: "--reap-after without --supervise",
            change: Args(&["--reap-after", "1m"]),
            mode: "run",
            exit: 64,
            names: "--reap-after needs --supervise (BOOTSTRAP_SUPERVISE)",
        },
        Case {
            what: "--reap-after with static discovery",
            change: Args(&["--reap-after", "1m", "--supervise"]),
            mode: "run",
            exit: 64,
            names: "--reap-after works with --discovery cloudmap",
        },
        Case {
            what: "--reap-after with CLUSTER_ID",
            change: EnvArgs("CLUSTER_ID", PEER_ID, &["--reap-after", "1m", "--supervise"]),
            mode: "run",
            exit: 64,
            names: "--reap-after with CLUSTER_ID",
        },
        Case {
            what: "--reap-after with --state-root",
            change: Args(&[
                "--reap-after",
                "1m",
                "--supervise",
                "--state-root",
                "/nonexistent/state",
            ]),
            mode: "run",
            exit: 64,
            names: "--reap-after with --state-root",
        },
        Case {
            what: "absurd --timeout",
            change: Args(&["--timeout", "500000000000y"]),
            mode: "run",
            exit: 64,
            names: "--timeout",
        },
        Case {
            what: "no AWS credentials",
            change: NoCredentials,
            mode: "run",
            exit: 77,
            names: "no AWS credentials: none in the SDK's chain",
        },
        Case {
            what: "no AWS region outside ECS and EC2",
            change: NoRegion,
            mode: "run",
            exit: 64,
            names: "no AWS region: set AWS_REGION",
        },
        Case {
            what: "unknown flag",
            change: Args(&["--no-such-flag"]),
            mode: "run",
            exit: 64,
            names: "--no-such-flag",
        },
        Case {
            what: "bad duration flag",
            change: Args(&["--settle", "5parsecs"]),
            mode: "run",
            exit: 64,
            names: "--settle",
        },
        Case {
            what: "bad duration variable",
            change: EnvNoFlag("BOOTSTRAP_TIMEOUT", "soon", "--timeout"),
            mode: "run",
            exit: 64,
            names: "BOOTSTRAP_TIMEOUT",
        },
        Case {
            what: "--expect 0",
            change: Args(&["--expect", "0"]),
            mode: "run",
            exit: 64,
            names: "--expect",
        },
        Case {
            what: "malformed multiaddr in --peers",
            change: Args(&["--peers", "/ip4/1.2.3/tcp"]),
            mode: "run",
            exit: 64,
            names: "--peers",
        },
        Case {
            what: "CLUSTER_RESTAPI_BASICAUTHCREDENTIALS without user:password",
            change: Env("CLUSTER_RESTAPI_BASICAUTHCREDENTIALS", "admin"),
            mode: "run",
            exit: 64,
            names: "CLUSTER_RESTAPI_BASICAUTHCREDENTIALS",
        },
        Case {
            what: "CLUSTER_RESTAPI_BASICAUTHCREDENTIALS set but empty",
            change: Env("CLUSTER_RESTAPI_BASICAUTHCREDENTIALS", ""),
            mode: "run",
            exit: 64,
            names: "CLUSTER_RESTAPI_BASICAUTHCREDENTIALS is set but empty",
        },
        Case {
            what: "CLUSTER_RESTAPI_BASICAUTHCREDENTIALS item with two colons",
            change: Env("CLUSTER_RESTAPI_BASICAUTHCREDENTIALS", "admin:pa:ss"),
            mode: "run",
            exit: 64,
            names: "CLUSTER_RESTAPI_BASICAUTHCREDENTIALS: item 1 has 3",
        },
        Case {
            what: "CLUSTER_RESTAPI_BASICAUTHCREDENTIALS with an empty password",
            change: Env("CLUSTER_RESTAPI_BASICAUTHCREDENTIALS", "admin:"),
            mode: "run",
            exit: 64,
            names: "item 1 has an empty password",
        },
        Case {
            what: "CLUSTER_ID set but empty",
            change: Env("CLUSTER_ID", ""),
            mode: "run",
            exit: 64,
            names: "CLUSTER_ID is set but empty",
        },
        Case {
            what: "CLUSTER_ID not the private key's peer",
            change: Env("CLUSTER_ID", PEER_ID),
            mode: "run",
            exit: 78,
            names: "CLUSTER_ID says the peer ID is 12D3KooWJrCnvRqSNKWn6C1mSp3ykaUNg3rUvVRhe3bWGhKL2Mhm",
        },
        Case {
            what: "identity.json id not its private key's peer",
            change: File(
                "identity.json",
                Some(|s| {
                    let v: serde_json::Value = serde_json::from_str(s).unwrap();
                    s.replacen(v["id"].as_str().unwrap(), PEER_ID, 1)
                }),
            ),
            mode: "run",
            exit: 65,
            names: "identity.json's id says the peer ID is",
        },
        Case {
            what: "CLUSTER_LISTENMULTIADDRESS set but empty",
            change: Env("CLUSTER_LISTENMULTIADDRESS", ""),
            mode: "run",
            exit: 64,
            names: "CLUSTER_LISTENMULTIADDRESS is empty",
        },
        Case {
            what: "--cluster-port disagrees with CLUSTER_LISTENMULTIADDRESS",
            change: EnvArgs(
                "CLUSTER_LISTENMULTIADDRESS",
                "/ip4/127.0.0.1/tcp/9196",
                &["--cluster-port", "9096"],
            ),
            mode: "run",
            exit: 78,
            names: "--cluster-port (BOOTSTRAP_CLUSTER_PORT) 9096 disagrees with CLUSTER_LISTENMULTIADDRESS",
        },
        Case {
            what: "task metadata endpoint answers HTML",
            change: Metadata("<html>gateway</html>"),
            mode: "run",
            exit: 65,
            names: "ECS task metadata",
        },
        Case {
            what: "task metadata JSON truncated",
            change: Metadata(r#"{"TaskARN": "arn:aws:ecs:us-east-1:1:task/c/0123", "Containers": ["#),
            mode: "run",
            exit: 65,
            names: "ECS task metadata",
        },
        Case {
            what: "task metadata without an IPv4 address",
            change: Metadata(r#"{"TaskARN": "arn:aws:ecs:us-east-1:1:task/c/0123", "Containers": []}"#),
            mode: "run",
            exit: 65,
            names: "ECS task metadata",
        },
        Case {
            what: "another peer's Cloud Map record lacks ipfs_cluster_peer_id",
            change: Attributes(
                r#"{"AWS_INSTANCE_IPV4": "127.0.0.1", "AWS_INSTANCE_PORT": "9096", "ipfs_cluster_registered_at": "2026-01-01T00:00:00Z"}"#,
            ),
            mode: "discover",
            exit: 0,
            names: "no ipfs_cluster_peer_id",
        },
        Case {
            what: "another peer's ipfs_cluster_peer_id is not a peer ID",
            change: Attributes(
                r#"{"AWS_INSTANCE_IPV4": "127.0.0.1", "AWS_INSTANCE_PORT": "9096", "ipfs_cluster_peer_id": "QmNope", "ipfs_cluster_registered_at": "2026-01-01T00:00:00Z"}"#,
            ),
            mode: "discover",
            exit: 0,
            names: "ipfs_cluster_peer_id",
        },
        Case {
            what: "another peer's attribute longer than 1024 characters",
            change: Attributes("LONG"),
            mode: "discover",
            exit: 0,
            names: "ipfs_cluster_init_peerset",
        },
    ]
}

/// Every file under `dir` (recursively) with its bytes; empty when `dir` is absent.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

fn cloudmap_answer(attributes: &str) -> String {
    let attributes = if attributes == "LONG" {
        let set = vec![PEER_ID; 40].join(",");
        format!(
            r#"{{"AWS_INSTANCE_IPV4": "127.0.0.1", "AWS_INSTANCE_PORT": "9096", "ipfs_cluster_peer_id": "{PEER_ID}", "ipfs_cluster_registered_at": "2026-01-01T00:00:00Z", "ipfs_cluster_init_peerset": "{set}"}}"#
        )
    } else {
        attributes.to_owned()
    };
    format!(
        r#"{{"Instances": [{{"InstanceId": "bad-1", "NamespaceName": "ns", "ServiceName": "svc", "HealthStatus": "HEALTHY", "Attributes": {attributes}}}]}}"#
    )
}

/// Runs one case; returns the exit code and stderr, and checks the files.
fn run(case: &Case, tmp: &Path, net: &mut Net, i: usize) -> (i32, String) {
    let p = Peer::new(tmp, &format!("case{i}"), net.ip());
    p.init("crdt");
    std::fs::write(p.config().join("peerstore"), "/ip4/127.0.0.9/tcp/9096/p2p/x\n").unwrap();
    let mut setup = Setup::cloudmap("http://127.0.0.1:9", "ns", "svc", "crdt", 2).arg(&[
        "--discovery",
        "static",
        "--peers",
        "127.0.0.9",
        "--timeout",
        "3s",
    ]);
    let mut _server = None;
    let mut config = p.config();
    match &case.change {
        Change::File(name, f) => {
            let path = p.config().join(name);
            match f {
                Some(f) => {
                    let old = std::fs::read_to_string(&path).unwrap();
                    std::fs::write(&path, f(&old)).unwrap();
                }
                None => std::fs::remove_file(&path).unwrap(),
            }
        }
        Change::ConfigIsFile => {
            config = p.dir.join("not-a-folder");
            std::fs::write(&config, "x").unwrap();
        }
        Change::ConfigMissing => config = p.dir.join("absent"),
        Change::Env(k, v) => setup = setup.env(k, v),
        Change::FileUnset(name, f, var) => {
            let path = p.config().join(name);
            let old = std::fs::read_to_string(&path).unwrap();
            std::fs::write(&path, f(&old)).unwrap();
            setup.env.retain(|(k, _)| k != var);
        }
        Change::EnvArgs(k, v, a) => setup = setup.env(k, v).arg(a),
        Change::EnvNoFlag(k, v, flag) => {
            setup = setup.env(k, v);
            if let Some(at) = setup.args.iter().position(|a| a == flag) {
                setup.args.drain(at..at + 2);
            }
        }
        Change::Args(a) => setup = setup.arg(a),
        Change::Metadata(body) => {
            let body = body.to_string();
            let server = Server::start(move |line, _| Response {
                status: if line.starts_with("GET /v4/task ") { 200 } else { 404 },
                headers: vec![],
                body: body.clone(),
            });
            setup = setup.env("ECS_CONTAINER_METADATA_URI_V4", &format!("{}/v4", server.url()));
            _server = Some(server);
        }
        Change::NoCredentials => {
            setup = Setup::cloudmap("http://127.0.0.1:9", "ns", "svc", "crdt", 2).arg(&["--timeout", "3s"]);
            setup
                .env
                .retain(|(k, _)| !matches!(k.as_str(), "AWS_ACCESS_KEY_ID" | "AWS_SECRET_ACCESS_KEY"));
        }
        Change::NoRegion => {
            setup = Setup::cloudmap("http://127.0.0.1:9", "ns", "svc", "crdt", 2).arg(&["--timeout", "3s"]);
            setup
                .env
                .retain(|(k, _)| !matches!(k.as_str(), "AWS_REGION" | "AWS_DEFAULT_REGION"));
        }
        Change::Attributes(attrs) => {
            let body = cloudmap_answer(attrs);
            let server = Server::start(move |_, _| Response {
                status: 200,
                headers: vec![("Content-Type".into(), "application/x-amz-json-1.1".into())],
                body: body.clone(),
            });
            setup = Setup::cloudmap(&server.url(), "ns", "svc", "crdt", 2);
            _server = Some(server);
        }
    }
    let before = snapshot(&p.dir);
    let mut cmd = p.command(&setup, &[case.mode]);
    cmd.env("IPFS_CLUSTER_PATH", &config);
    if matches!(case.change, Change::Metadata(_)) {
        // The address must come from the metadata: drop --advertise-ip.
        let args: Vec<_> = cmd.get_args().map(|a| a.to_owned()).collect();
        let mut keep = vec![];
        let mut it = args.into_iter();
        while let Some(a) = it.next() {
            if a == "--advertise-ip" {
                it.next();
            } else {
                keep.push(a);
            }
        }
        let envs: Vec<_> = cmd
            .get_envs()
            .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v.to_owned())))
            .collect();
        let prog = cmd.get_program().to_owned();
        cmd = std::process::Command::new(prog);
        cmd.env_clear().envs(envs).args(keep);
    }
    let out = run_with_timeout(cmd, Duration::from_secs(30));
    let after = snapshot(&p.dir);
    assert!(before == after, "{}: the files changed", case.what);
    (out.0, out.1)
}

fn run_with_timeout(mut cmd: std::process::Command, timeout: Duration) -> (i32, String) {
    let err = tempfile(&cmd);
    let out = std::fs::File::create(&err).unwrap();
    let mut child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    let t = std::time::Instant::now();
    let code = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s.code().unwrap_or(-1);
        }
        if t.elapsed() > timeout {
            let _ = child.kill();
            panic!("did not exit in {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = std::fs::read_to_string(&err).unwrap_or_default();
    let _ = std::fs::remove_file(&err);
    crate::support::assert_no_secrets(&text);
    (code, text)
}

fn tempfile(cmd: &std::process::Command) -> PathBuf {
    let home = cmd
        .get_envs()
        .find(|(k, _)| *k == "HOME")
        .and_then(|(_, v)| v.map(PathBuf::from))
        .unwrap_or_else(std::env::temp_dir);
    home.join("bad-input.stderr")
}

fn row(c: &Case) -> String {
    format!(
        "| {} | `{}` | {} | {} |",
        c.what,
        c.mode,
        c.exit,
        c.names.replace('|', "\\|")
    )
}

#[test]
fn bad_input() {
    if !testbed_ready() {
        return;
    }
    let tmp = TempDir::new("badinput");
    let mut net = Net::new();
    let mut failures = vec![];
    for (i, case) in cases().iter().enumerate() {
        let (code, err) = run(case, &tmp.0, &mut net, i);
        let names = err.contains(case.names);
        if code != case.exit || !names {
            failures.push(format!(
                "{}: exit {code} (want {}), names {:?}: {names}\n{err}",
                case.what, case.exit, case.names
            ));
        }
    }
    if std::env::var("BAD_INPUT_TABLE").is_ok() {
        println!("| input | mode | exit | the message names |\n| --- | --- | --- | --- |");
        for c in cases() {
            println!("{}", row(&c));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn readme_lists_every_case() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let missing: Vec<String> = cases()
        .iter()
        .map(row)
        .filter(|r| !readme.contains(r.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "README's bad-input table lacks (run BAD_INPUT_TABLE=1 cargo test --test it bad_input -- --nocapture):\n{}",
        missing.join("\n")
    );
}
