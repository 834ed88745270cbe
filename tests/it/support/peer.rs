//! One simulated peer: a config folder, a loopback address, and the bootstrap
//! binary run with a clean environment (no real AWS credentials can leak in),
//! which execs the ipfs-cluster-service test double.

use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{bin, double, loopback, root};

/// The same 32-byte secret on every peer; tests grep logs for it.
pub const SECRET: &str = "2588b80d5cb05374fa142aed6cbb047d1f4ef8ef15e37eba68c65b9d30df67ed";
/// The AWS secret key every peer gets (moto takes any).
pub const AWS_SECRET: &str = "aws-secret-key-never-logged";
/// The REST API password of the tests that use basic auth.
pub const API_PASSWORD: &str = "hunter2-api-password";

pub struct Peer {
    pub name: String,
    pub ip: IpAddr,
    pub dir: PathBuf,
    child: Option<Child>,
    runs: usize,
}

/// Settings shared by the peers of one test.
#[derive(Clone)]
pub struct Setup {
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// After `--`: appended to `ipfs-cluster-service daemon`.
    pub daemon_args: Vec<String>,
}

impl Setup {
    /// Cloud Map discovery against moto.
    pub fn cloudmap(endpoint: &str, namespace: &str, service: &str, consensus: &str, expect: usize) -> Setup {
        let args = [
            "--discovery",
            "cloudmap",
            "--cloudmap-namespace",
            namespace,
            "--cloudmap-service",
            service,
            "--expect",
            &expect.to_string(),
            "--settle",
            "1s",
            "--timeout",
            "40s",
            "--probe-timeout",
            "300ms",
            "--loopback-only",
            "--log-level",
            "info,aws=warn",
        ];
        let env = [
            ("AWS_ENDPOINT_URL", endpoint),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", AWS_SECRET),
            ("AWS_REGION", "us-east-1"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
            ("IPFS_CLUSTER_CONSENSUS", consensus),
            ("CLUSTER_SECRET", SECRET),
            ("CLUSTER_MONITORPINGINTERVAL", "1s"),
            ("CLUSTER_RAFT_WAITFORLEADERTIMEOUT", "10s"),
            // The double runs on the venv's Python, which only root can reach
            // here; the drop to the daemon's user has a test of its own.
            ("BOOTSTRAP_RUN_AS", "none"),
        ];
        Setup {
            args: args.iter().map(|s| s.to_string()).collect(),
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            daemon_args: vec![],
        }
    }

    /// Adds flags; a flag the setup already had is replaced (flags repeated
    /// within `a` all stay).
    pub fn arg(mut self, a: &[&str]) -> Setup {
        let before = self.args.clone();
        let mut i = 0;
        while i < a.len() {
            let takes_value = a.get(i + 1).is_some_and(|v| !v.starts_with("--"));
            let n = if takes_value { 2 } else { 1 };
            if before.iter().any(|x| x == a[i]) {
                if let Some(at) = self.args.iter().position(|x| x == a[i]) {
                    let old = if self.args.get(at + 1).is_some_and(|v| !v.starts_with("--")) {
                        2
                    } else {
                        1
                    };
                    self.args.drain(at..at + old);
                }
            }
            self.args.extend(a[i..i + n].iter().map(|s| s.to_string()));
            i += n;
        }
        self
    }

    pub fn env(mut self, k: &str, v: &str) -> Setup {
        self.env.retain(|(key, _)| key != k);
        self.env.push((k.into(), v.into()));
        self
    }
}

impl Peer {
    pub fn new(tmp: &Path, name: &str, ip: IpAddr) -> Peer {
        let dir = tmp.join(name);
        fs::create_dir_all(&dir).unwrap();
        Peer {
            name: name.into(),
            ip: loopback(ip),
            dir,
            child: None,
            runs: 0,
        }
    }

    pub fn config(&self) -> PathBuf {
        self.dir.join("config")
    }

    /// The command that starts this peer (mode "run" unless `extra` says otherwise).
    pub fn command(&self, setup: &Setup, extra: &[&str]) -> Command {
        let mut c = Command::new(bin());
        c.env_clear()
            .env(
                "PATH",
                format!("{}:/usr/local/bin:/usr/bin:/bin", root().join(".venv/bin").display()),
            )
            .env("HOME", &self.dir)
            .env("IPFS_CLUSTER_PATH", self.config())
            .env("CLUSTER_LISTENMULTIADDRESS", format!("/ip4/{}/tcp/9096", self.ip))
            .env(
                "CLUSTER_RESTAPI_HTTPLISTENMULTIADDRESS",
                format!("/ip4/{}/tcp/9094", self.ip),
            )
            .env("CLUSTER_PEERNAME", &self.name);
        for (k, v) in &setup.env {
            c.env(k, v);
        }
        c.args(extra).args(&setup.args);
        // In "ECS" the address comes from the task metadata endpoint instead.
        if !setup.env.iter().any(|(k, _)| k == "ECS_CONTAINER_METADATA_URI_V4") {
            c.args(["--advertise-ip", &self.ip.to_string()]);
        }
        c.arg("--daemon-bin").arg(double());
        if !setup.daemon_args.is_empty() {
            c.arg("--").args(&setup.daemon_args);
        }
        c
    }

    /// Runs the double's `init` in the peer's config folder; returns its peer ID.
    pub fn init(&self, consensus: &str) -> String {
        fs::create_dir_all(self.config()).unwrap();
        let out = Command::new(double())
            .args(["init", "--consensus", consensus])
            .env_clear()
            .env("PATH", format!("{}:/usr/bin:/bin", root().join(".venv/bin").display()))
            .env("IPFS_CLUSTER_PATH", self.config())
            .env("CLUSTER_SECRET", SECRET)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let identity: Value =
            serde_json::from_str(&fs::read_to_string(self.config().join("identity.json")).unwrap()).unwrap();
        identity["id"].as_str().unwrap().to_owned()
    }

    /// Starts `run`; stdout and stderr go to files in the peer's folder.
    pub fn start(&mut self, setup: &Setup) {
        self.start_with(setup, &[]);
    }

    pub fn start_with(&mut self, setup: &Setup, extra: &[&str]) {
        let cmd = self.command(setup, extra);
        self.spawn(cmd);
    }

    /// Starts `cmd` as this peer's process (a command line of the test's own).
    pub fn spawn(&mut self, mut cmd: Command) {
        assert!(self.child.is_none(), "{} already runs", self.name);
        self.runs += 1;
        let out = fs::File::create(self.dir.join(format!("stdout.{}", self.runs))).unwrap();
        let err = fs::File::create(self.dir.join(format!("stderr.{}", self.runs))).unwrap();
        let child = cmd.stdin(Stdio::null()).stdout(out).stderr(err).spawn().unwrap();
        self.child = Some(child);
    }

    /// Everything the peer wrote to stderr, over all its runs.
    pub fn stderr(&self) -> String {
        (1..=self.runs)
            .map(|i| fs::read_to_string(self.dir.join(format!("stderr.{i}"))).unwrap_or_default())
            .collect()
    }

    pub fn stdout(&self) -> String {
        fs::read_to_string(self.dir.join(format!("stdout.{}", self.runs))).unwrap_or_default()
    }

    /// Waits for the process to end; its exit code (128+signal when killed).
    pub fn wait(&mut self, timeout: Duration) -> i32 {
        let child = self.child.as_mut().expect("not running");
        let t = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                use std::os::unix::process::ExitStatusExt;
                return status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
            }
            assert!(
                t.elapsed() < timeout,
                "{} did not exit in {timeout:?}; stderr:\n{}",
                self.name,
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The exit code if the process has ended (128+signal when killed).
    pub fn try_exit(&mut self) -> Option<i32> {
        let status = self.child.as_mut()?.try_wait().unwrap()?;
        self.child = None;
        use std::os::unix::process::ExitStatusExt;
        Some(status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
    }

    /// The PID of the process started last (the sidecar, then the daemon it execs).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("not running").id()
    }

    pub fn signal(&self, sig: i32) {
        let pid = self.child.as_ref().expect("not running").id() as i32;
        unsafe {
            libc::kill(pid, sig);
        }
    }

    /// SIGTERM, then wait.
    pub fn stop(&mut self) -> i32 {
        self.signal(libc::SIGTERM);
        self.wait(Duration::from_secs(15))
    }

    /// The double's membership view (GET /_double/state on its REST API).
    pub async fn state(&self) -> Option<Value> {
        self.state_as(None).await
    }

    /// The same, with REST API basic-auth credentials.
    pub async fn state_as(&self, auth: Option<(&str, &str)>) -> Option<Value> {
        let url = format!("http://{}:9094/_double/state", loopback(self.ip));
        let c = reqwest::Client::builder()
            .timeout(Duration::from_millis(500))
            .no_proxy()
            .build()
            .unwrap();
        let mut req = c.get(url);
        if let Some((u, p)) = auth {
            req = req.basic_auth(u, Some(p));
        }
        req.send().await.ok()?.json().await.ok()
    }

    /// How the double was started, one entry per daemon start.
    pub fn daemon_runs(&self) -> Vec<Value> {
        fs::read_to_string(self.config().join("double-runs.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The one decision record of the last run (a JSON string field of the log line).
    pub fn decisions(&self) -> Vec<Value> {
        self.stderr()
            .lines()
            .filter_map(|l| {
                if l.starts_with('{') {
                    // --log-format json: the record is a JSON string field.
                    let v: Value = serde_json::from_str(l).ok()?;
                    (v["event"] == "decision").then(|| serde_json::from_str(v["record"].as_str()?).ok())?
                } else if l.contains("event=\"decision\"") {
                    // text: `record={...}` ends the line.
                    let start = l.find("record=")? + "record=".len();
                    serde_json::from_str(&l[start..]).ok()
                } else {
                    None
                }
            })
            .collect()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Every log the suite produces is checked for secrets here.
        if !std::thread::panicking() {
            super::assert_no_secrets(&self.stderr());
            super::assert_no_secrets(&self.stdout());
        }
    }
}

/// Waits until every peer's double is ready, in one cluster of `n` members,
/// and returns their states; panics with every state and log otherwise.
pub async fn one_cluster(peers: &[&Peer], n: usize, timeout: Duration) -> Vec<Value> {
    let t = Instant::now();
    loop {
        let mut states = vec![];
        for p in peers {
            states.push(p.state().await);
        }
        let all: Option<Vec<Value>> = states.iter().cloned().collect();
        if let Some(all) = &all {
            let id0 = &all[0]["cluster_id"];
            let ok = all.iter().all(|s| {
                s["ready"] == Value::Bool(true)
                    && &s["cluster_id"] == id0
                    && s["peers"].as_array().is_some_and(|p| p.len() == n)
                    && s["conflicts"].as_array().is_none_or(|c| c.is_empty())
            });
            if ok {
                return all.clone();
            }
        }
        if t.elapsed() > timeout {
            let logs: String = peers
                .iter()
                .map(|p| format!("\n--- {} ({})\n{}", p.name, p.ip, p.stderr()))
                .collect();
            panic!("no single cluster of {n} after {timeout:?}:\n{states:#?}\n{logs}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
