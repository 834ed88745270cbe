//! The sequencer: the only module that owns the clock, the retry loop and the
//! decision record. config → local peer → self address → register/discover →
//! probe → decide → apply → launch.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::Serialize;
use tracing::{debug, info, warn};

use crate::apply;
use crate::cli::Mode;
use crate::config::{Config, Discovery, Expect, SecretEnv};
use crate::contact::{ContactPoint, Greeting};
use crate::decide::{decide, Action, Decision, Facts, Me, Reason};
use crate::discovery::attributes::now_ms;
use crate::discovery::cloudmap::CloudMap;
use crate::discovery::dns::{self, DnsName};
use crate::discovery::ec2::Ec2Tags;
use crate::discovery::static_list::StaticList;
use crate::discovery::verify_tasks::VerifiedTasks;
use crate::discovery::{Discovered, Registry};
use crate::ecs::Ecs;
use crate::exit::Error;
use crate::iam;
use crate::launch;
use crate::local::{self, LocalPeer};
use crate::peer::Consensus;
use crate::privileges;
use crate::probe::{Probed, Prober};
use crate::rounds::{self, Backoff, Next, Round, Rounds};
use crate::selfaddr::{self, SelfAddr, Task};
use crate::slot::Lock;
use crate::stateroot;
use crate::view::{Observed, Registration};

pub async fn run(cfg: Config) -> Result<i32, Error> {
    if cfg.mode == Mode::IamPolicy {
        if iam::actions(&cfg).is_empty() {
            info!("this configuration calls no AWS API: the task role needs no permission");
        }
        print_json(&iam::policy(&cfg));
        return Ok(0);
    }
    if cfg.mode == Mode::Slot {
        return slot_mode(&cfg).await;
    }
    let run_started = Instant::now();
    let mut cfg = cfg;
    // With a state root the config folder is the slot's, known further down.
    if cfg.state_root.is_none() {
        privileges::drop_root(cfg.run_as, (cfg.mode == Mode::Run).then_some(cfg.config_dir.as_path()))?;
    }
    // --expect matters to run and plan only: `health` and `discover` work with
    // the environment the task definition gives `run` (BOOTSTRAP_EXPECT=auto).
    let expect_auto = cfg.expect == Expect::Auto && matches!(cfg.mode, Mode::Run | Mode::Plan);
    // Scale-in retirement asks ECS for the service's desired count at SIGTERM;
    // it is on only where the ECS cluster is known (in ECS, or --ecs-cluster).
    let scale_in = cfg.mode == Mode::Run
        && cfg.supervise
        && cfg.state_root.is_some()
        && !cfg.scale_in_timeout.is_zero()
        && (cfg.ecs_cluster.is_some() || cfg.metadata_uri.is_some());
    let reap = cfg.mode == Mode::Run && cfg.reap_after.is_some();
    let needs_aws = matches!(cfg.discovery, Discovery::CloudMap { .. } | Discovery::Ec2 { .. })
        || expect_auto
        || cfg.verify_tasks
        || scale_in
        || reap;
    let sdk = match needs_aws {
        true => Some(load_sdk().await),
        false => None,
    };
    // Where this peer is: `discover` only lists the others.
    let ec2_address = match &cfg.discovery {
        Discovery::Ec2 { address, .. } => Some(*address),
        _ => None,
    };
    let me = match cfg.mode {
        Mode::Discover | Mode::Health | Mode::IamPolicy | Mode::Slot => None,
        Mode::Run | Mode::Plan => Some(
            selfaddr::resolve(
                cfg.advertise_ip,
                cfg.metadata_uri.as_deref(),
                ec2_address,
                cfg.loopback_only,
            )
            .await?,
        ),
    };
    let mut task = me.as_ref().and_then(|m| m.task.clone());
    if me.is_none() && cfg.verify_tasks && cfg.ecs_cluster.is_none() {
        // `health` and `discover` have no address to resolve, but
        // --verify-tasks needs the ECS cluster, from the task metadata as `run` does.
        match selfaddr::task(cfg.metadata_uri.as_deref(), cfg.loopback_only).await {
            Ok(t) => task = t,
            Err(e) if cfg.mode == Mode::Health => {
                warn!(error = %e, "no ECS cluster from the task metadata: registrations are not checked against ECS")
            }
            Err(e) => return Err(e),
        }
    }
    if let (
        Discovery::Ec2 {
            allow_awsvpc: false, ..
        },
        Some(t),
    ) = (&cfg.discovery, &task)
    {
        if t.awsvpc && cfg.advertise_ip.is_none() {
            return Err(Error::Unsafe(
                "--discovery ec2 under awsvpc networking: this task's address is its own network interface's, not \
                 the instance's that EC2 discovery lists, so peers would dial the wrong address. Use --discovery \
                 cloudmap, host or bridge networking, or set --ec2-allow-awsvpc with --advertise-ip"
                    .into(),
            ));
        }
    }
    let ecs = match (expect_auto || cfg.verify_tasks || scale_in || reap, &sdk) {
        (true, Some(sdk)) => {
            let cluster = cfg
                .ecs_cluster
                .clone()
                .or_else(|| task.as_ref().and_then(|t| t.cluster.clone()));
            if cluster.is_none() && !(expect_auto || cfg.verify_tasks || reap) {
                info!("scale-in retirement is off: the ECS cluster is unknown (set --ecs-cluster)");
                None
            } else if cluster.is_none() && cfg.mode == Mode::Health {
                // Warned above: the metadata could not be read.
                None
            } else {
                let cluster = cluster.ok_or_else(|| {
                Error::usage("--expect auto, --verify-tasks and --reap-after need the ECS cluster: run in ECS or set --ecs-cluster (BOOTSTRAP_ECS_CLUSTER)")
            })?;
                Some(Ecs::new(sdk, cluster))
            }
        }
        _ => None,
    };
    // This task's slot: the peer's folder, and the lock its daemon holds.
    let mut lock = None;
    if let (Some(root), Mode::Run | Mode::Plan | Mode::Health) = (cfg.state_root.clone(), cfg.mode) {
        let name = stateroot::task_name(task.as_ref().map(|t| t.id.as_str()));
        let (k, held) = stateroot::this_task_slot(&cfg, &root, cfg.read_only(), &name, || {
            resolve_expect(&cfg, ecs.as_ref(), task.as_ref())
        })
        .await?;
        // Guarded from here on: init and the file writes happen in the slot.
        if let Some(l) = &held {
            let fence = match cfg.supervise {
                true => crate::watchdog::Fence::Usr1,
                false => crate::watchdog::Fence::Term,
            };
            crate::watchdog::spawn(l, cfg.watchdog_interval, fence)?;
        }
        cfg.use_config_dir(crate::slot::cluster_dir(&root, k))?;
        privileges::drop_root(cfg.run_as, (cfg.mode == Mode::Run).then_some(cfg.config_dir.as_path()))?;
        lock = held;
        // One --timeout for the whole run: waiting for the slot counts.
        cfg.timeout = cfg.timeout.saturating_sub(run_started.elapsed());
    }
    let cfg = cfg;
    let prober = Prober::new(cfg.probe_timeout, cfg.api_credentials.clone(), cfg.loopback_only);
    let ctx = Ctx {
        cfg: &cfg,
        prober: &prober,
        me,
        ecs: ecs.clone(),
        lock,
    };
    match &cfg.discovery {
        Discovery::CloudMap {
            namespace,
            service,
            service_id,
        } => {
            let sdk = sdk.as_ref().expect("loaded for cloudmap");
            let registry = CloudMap::new(
                sdk,
                cfg.custom_aws_endpoint,
                namespace.clone(),
                service.clone(),
                service_id.clone(),
                cfg.api_port,
            );
            match (cfg.verify_tasks, ecs) {
                (true, Some(ecs)) => {
                    let remove_stale = cfg.mode == Mode::Run && !cfg.dry_run;
                    ctx.run(&VerifiedTasks::new(registry, ecs, remove_stale)).await
                }
                _ => ctx.run(&registry).await,
            }
        }
        Discovery::Static { peers } => {
            let resolver = match peers.iter().any(|p| p.has_host_name()) {
                true => Some(dns::resolver(cfg.dns_server).map_err(Error::usage)?),
                false => None,
            };
            ctx.run(&StaticList::new(peers.clone(), cfg.api_port, resolver)).await
        }
        Discovery::Dns { name } => {
            let resolver = dns::resolver(cfg.dns_server).map_err(Error::usage)?;
            ctx.run(&DnsName::new(resolver, name.clone(), cfg.cluster_port, cfg.api_port))
                .await
        }
        Discovery::Ec2 {
            tags,
            vpc_id,
            address,
            peer_id_tag,
            register,
            ..
        } => {
            let sdk = sdk.as_ref().expect("loaded for ec2");
            let instance_id = ctx.me.as_ref().and_then(|m| m.instance_id.clone()).unwrap_or_default();
            let registry = Ec2Tags::new(
                sdk,
                tags.clone(),
                vpc_id.clone(),
                *address,
                peer_id_tag.clone(),
                *register,
                instance_id,
                cfg.cluster_port,
                cfg.api_port,
            );
            ctx.run(&registry).await
        }
    }
}

/// What every backend's run shares.
struct Ctx<'a> {
    cfg: &'a Config,
    prober: &'a Prober,
    me: Option<SelfAddr>,
    ecs: Option<Ecs>,
    /// The slot lock the daemon keeps (--state-root).
    lock: Option<Lock>,
}

impl Ctx<'_> {
    async fn run<R: Registry>(self, registry: &R) -> Result<i32, Error> {
        match (self.cfg.mode, self.me) {
            (Mode::Health, _) => crate::health::check(self.cfg, registry, self.prober).await,
            (_, None) => discover(registry, self.prober).await,
            (_, Some(me)) => bootstrap(self.cfg, registry, self.prober, me, self.ecs.as_ref(), self.lock).await,
        }
    }
}

/// The AWS SDK's shared config: our HTTP client, bounded attempts.
async fn load_sdk() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(crate::aws_http::client())
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .operation_attempt_timeout(Duration::from_secs(3))
                .operation_timeout(Duration::from_secs(10))
                .build(),
        )
        .load()
        .await
}

/// The `slot` mode (kubo's container): how many slots, then `stateroot`.
async fn slot_mode(cfg: &Config) -> Result<i32, Error> {
    let root = cfg
        .state_root
        .clone()
        .ok_or_else(|| Error::usage("the slot mode needs --state-root (BOOTSTRAP_STATE_ROOT)"))?;
    let task = selfaddr::task(cfg.metadata_uri.as_deref(), cfg.loopback_only).await?;
    let count = match cfg.expect {
        Expect::Count(n) => n,
        Expect::Auto => {
            let sdk = load_sdk().await;
            let cluster = cfg
                .ecs_cluster
                .clone()
                .or_else(|| task.as_ref().and_then(|t| t.cluster.clone()))
                .ok_or_else(|| {
                    Error::usage(
                        "--expect auto needs the ECS cluster: run in ECS or set --ecs-cluster (BOOTSTRAP_ECS_CLUSTER)",
                    )
                })?;
            let ecs = Ecs::new(&sdk, cluster);
            resolve_expect(cfg, Some(&ecs), task.as_ref()).await?
        }
    };
    let name = stateroot::task_name(task.as_ref().map(|t| t.id.as_str()));
    stateroot::slot_main(cfg, &root, count, &name).await
}

/// `--expect`, with `auto` read from the ECS service's desiredCount.
async fn resolve_expect(cfg: &Config, ecs: Option<&Ecs>, task: Option<&Task>) -> Result<usize, Error> {
    let Expect::Count(n) = cfg.expect else {
        let ecs =
            ecs.ok_or_else(|| Error::usage("--expect auto needs the ECS API (run in ECS or set --ecs-cluster)"))?;
        let service = match (cfg.ecs_service.clone(), task) {
            (Some(s), _) => s,
            (None, Some(Task { service: Some(s), .. })) => s.clone(),
            (None, Some(t)) => ecs.service_of(&t.arn).await?.ok_or_else(|| {
                Error::usage("--expect auto: this task belongs to no ECS service; set --ecs-service or a number")
            })?,
            (None, None) => return Err(Error::usage("--expect auto needs --ecs-service outside ECS")),
        };
        let n = ecs.desired_count(&service).await?;
        if n == 0 {
            return Err(Error::Unsafe(format!(
                "--expect auto: ECS service {service:?} has desiredCount 0, so no founding set can be expected"
            )));
        }
        info!(service = %service, expect = n, "--expect auto: the ECS service's desiredCount");
        return Ok(n);
    };
    Ok(n)
}

/// `discover`: what the backend lists and what probing finds, as JSON.
async fn discover<R: Registry>(registry: &R, prober: &Prober) -> Result<i32, Error> {
    let Discovered { registrations, skipped } = registry.discover().await?;
    let Probed {
        observed: peers,
        unidentified,
        silent,
    } = prober.probe_all(registrations).await;
    #[derive(Serialize)]
    struct Out<'a> {
        discovery: &'a str,
        peers: Vec<Observed>,
        unidentified: Vec<std::net::IpAddr>,
        silent: Vec<std::net::IpAddr>,
        skipped: Vec<String>,
    }
    print_json(&Out {
        discovery: registry.name(),
        peers,
        unidentified,
        silent,
        skipped,
    });
    Ok(0)
}

fn print_json<T: Serialize>(v: &T) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// The config and identity, running `init` first when service.json is missing.
fn prepare_local(cfg: &Config, read_only: bool) -> Result<LocalPeer, Error> {
    if cfg.config_dir.exists() && !cfg.config_dir.is_dir() {
        return Err(Error::Unreadable {
            path: cfg.config_dir.clone(),
            source: std::io::Error::other("IPFS_CLUSTER_PATH names a file, not the peer's config folder"),
        });
    }
    let service = local::service_json(&cfg.config_dir);
    if !service.exists() {
        if read_only {
            return Err(Error::Unreadable {
                path: service,
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no peer config yet (plan changes nothing; `run` creates it with ipfs-cluster-service init)",
                ),
            });
        }
        info!(config = %cfg.config_dir.display(), consensus = %cfg.init_consensus, "no service.json: running ipfs-cluster-service init");
        launch::init(&cfg.daemon_bin, cfg.init_consensus, &cfg.config_dir)?;
        if !service.exists() {
            return Err(Error::Daemon {
                bin: cfg.daemon_bin.display().to_string(),
                what: "init wrote no service.json",
                detail: format!("expected {}", service.display()),
            });
        }
        if cfg.cluster_secret == SecretEnv::Unset {
            warn!("CLUSTER_SECRET is not set: init generated a random secret for this peer alone, so it cannot talk to peers initialised elsewhere");
        }
    }
    let local = local::read(&cfg.config_dir, cfg.cluster_id_env.as_deref(), &cfg.paths)?;
    check_identity(cfg, &local)?;
    if cfg.cluster_secret == SecretEnv::Unset && local.secret_empty_in_file {
        return Err(Error::Unsafe(format!(
            "{}: cluster.secret is empty and CLUSTER_SECRET is unset: ipfs-cluster would run on an unprotected network",
            service.display()
        )));
    }
    if local.consensus == Consensus::Raft && cfg.raft_initpeerset_env {
        return Err(Error::Unsafe(
            "CLUSTER_RAFT_INITPEERSET is set: it would override the init_peerset this tool writes for a fixed-set \
             launch and could found a second cluster. Unset it."
                .into(),
        ));
    }
    Ok(local)
}

/// The peer ID the daemon will go by (CLUSTER_ID, else identity.json's, else
/// the legacy service.json's) against the private key it will load
/// (CLUSTER_PRIVATEKEY, else from the same file), as config/identity.go does.
fn check_identity(cfg: &Config, local: &LocalPeer) -> Result<(), Error> {
    use crate::config::Secret;
    use crate::identity::{verify, From};
    let identity = local::identity_json(&cfg.config_dir);
    let (file, fields) = match local::read_json(&identity) {
        Ok(m) => (identity, m),
        Err(_) => {
            let service = local::service_json(&cfg.config_dir);
            let cluster = local::read_json(&service)?
                .get("cluster")
                .and_then(serde_json::Value::as_object)
                .cloned()
                .unwrap_or_default();
            (service, cluster)
        }
    };
    let legacy = !file.ends_with("identity.json");
    let field = |name: &'static str, legacy_name: &'static str| {
        let name = if legacy { legacy_name } else { name };
        let value = fields
            .get(name.rsplit('.').next().unwrap_or(name))
            .and_then(serde_json::Value::as_str);
        value.map(|v| (v.to_owned(), From::File(file.clone(), name)))
    };
    let key = match &cfg.cluster_private_key_env {
        Some(k) => Some((k.clone(), From::Env("CLUSTER_PRIVATEKEY"))),
        None => field("private_key", "cluster.private_key").map(|(k, from)| (Secret::new(k), from)),
    };
    let id = match &cfg.cluster_id_env {
        Some(id) => Some((id.clone(), From::Env("CLUSTER_ID"))),
        None => field("id", "cluster.id"),
    };
    match (id, key) {
        (Some((id, id_from)), Some((key, key_from))) => {
            debug_assert_eq!(id, local.peer_id.as_str());
            verify(&id, &id_from, &key, &key_from)
        }
        _ => Ok(()),
    }
}

/// SIGTERM/SIGINT while the sidecar itself still runs.
struct Stop {
    term: Option<tokio::signal::unix::Signal>,
    int: Option<tokio::signal::unix::Signal>,
}

impl Stop {
    fn new() -> Stop {
        use tokio::signal::unix::{signal, SignalKind};
        Stop {
            term: signal(SignalKind::terminate()).ok(),
            int: signal(SignalKind::interrupt()).ok(),
        }
    }
    /// Some(signal) when one has arrived and not been seen yet; never waits.
    fn pending(&mut self) -> Option<i32> {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        for (s, sig) in [(&mut self.term, libc::SIGTERM), (&mut self.int, libc::SIGINT)] {
            if s.as_mut().is_some_and(|s| s.poll_recv(&mut cx).is_ready()) {
                return Some(sig);
            }
        }
        None
    }

    /// Sleeps; Some(signal) when one arrived first.
    async fn sleep(&mut self, d: Duration) -> Option<i32> {
        async fn recv(s: &mut Option<tokio::signal::unix::Signal>) {
            match s {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(d) => None,
            _ = recv(&mut self.term) => Some(libc::SIGTERM),
            _ = recv(&mut self.int) => Some(libc::SIGINT),
        }
    }
}

/// The one decision record a run logs (and `plan` prints).
#[derive(Serialize)]
struct Record<'a> {
    event: &'static str,
    discovery: &'a str,
    instance_id: &'a str,
    advertise_ip: std::net::IpAddr,
    advertise_source: &'a str,
    rounds: u32,
    elapsed_ms: u64,
    facts: &'a Facts,
    decision: &'a Decision,
    reason_text: String,
    daemon_argv: Vec<String>,
}

/// The most of a decision record logged in one line (CloudWatch drops
/// events over 256 KB; a record of 1,000 peers is megabytes).
const MAX_RECORD: usize = 64 << 10;

/// A record over `max` bytes with its long lists cut to their first entries,
/// each with its full count beside it (`<name>_total`).
fn compact_record(mut v: serde_json::Value, max: usize) -> serde_json::Value {
    if v.to_string().len() <= max {
        return v;
    }
    for keep in [20usize, 5, 0] {
        for (obj, key) in [
            ("facts", "peers"),
            ("facts", "unidentified"),
            ("decision", "peerstore"),
            ("decision", "proposal"),
        ] {
            let Some(o) = v.get_mut(obj).and_then(|o| o.as_object_mut()) else {
                continue;
            };
            let Some(list) = o.get_mut(key).and_then(|l| l.as_array_mut()) else {
                continue;
            };
            let total = list.len();
            if total > keep {
                list.truncate(keep);
                o.insert(format!("{key}_total"), total.into());
            }
        }
        v["truncated"] = true.into();
        if v.to_string().len() <= max {
            break;
        }
    }
    v
}

fn log_decision(r: &Record<'_>) {
    let value = serde_json::to_value(r).unwrap_or_default();
    let json = compact_record(value, MAX_RECORD).to_string();
    let action = serde_json::to_value(&r.decision.action)
        .ok()
        .and_then(|v| v["action"].as_str().map(str::to_owned))
        .unwrap_or_default();
    info!(event = "decision", action = %action, reason = %r.reason_text, record = %json, "decision: {action}: {}", r.reason_text);
}

async fn retry<T, E: std::fmt::Display, F: std::future::Future<Output = Result<T, E>>>(
    what: &str,
    deadline: Instant,
    stop: &mut Stop,
    mut f: impl FnMut() -> F,
) -> Result<Result<T, E>, i32> {
    let mut backoff = Backoff::new(Duration::from_secs(4), fastrand::Rng::new());
    loop {
        match f().await {
            Ok(v) => return Ok(Ok(v)),
            Err(e) => {
                let wait = backoff.step();
                if Instant::now() + wait >= deadline {
                    return Ok(Err(e));
                }
                warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "{what} failed; retrying");
                if let Some(sig) = stop.sleep(wait).await {
                    return Err(sig);
                }
            }
        }
    }
}

async fn bootstrap<R: Registry>(
    cfg: &Config,
    registry: &R,
    prober: &Prober,
    here: SelfAddr,
    ecs: Option<&Ecs>,
    lock: Option<Lock>,
) -> Result<i32, Error> {
    let started = Instant::now();
    let deadline = started + cfg.timeout;
    let read_only = cfg.read_only();
    // The state root's genesis record, read once: checked before `init`
    // writes anything, then against the local peer.
    let current = match &cfg.state_root {
        Some(root) => crate::genesis::current(root)?,
        None => None,
    };
    stateroot::check_before_init(cfg, current.as_ref())?;
    let mut local = prepare_local(cfg, read_only)?;
    let retired = stateroot::settle_retired(cfg, &local)?;
    if retired == Some(true) {
        local = prepare_local(cfg, read_only)?;
    }
    let (mut genesis, supersedes) = stateroot::read_genesis(cfg, current, &local)?;
    // A peer that left at a scale-in only joins: it founds nothing, even if
    // the record names it.
    let founded = |g: &crate::genesis::Genesis| {
        let mut f = stateroot::founded(g);
        if retired.is_some() {
            f.founders.retain(|p| *p != local.peer_id);
        }
        f
    };
    let SelfAddr {
        ip,
        task,
        instance_id: ec2_instance,
        source,
    } = here;
    let expect = resolve_expect(cfg, ecs, task.as_ref()).await?;
    let task_for_retire = task.clone();
    let instance_id = cfg
        .instance_id
        .clone()
        .or(ec2_instance)
        .or(task.map(|t| t.id))
        .unwrap_or_else(|| local.peer_id.to_string());
    let mut stop = Stop::new();
    let interrupted = |sig| Error::Interrupted { signal: sig };
    let rank = match retry("ranking this peer", deadline, &mut stop, || {
        registry.rank(&local.peer_id, ip, now_ms())
    })
    .await
    {
        Ok(Ok(rank)) => rank,
        Ok(Err(e)) => return Err(e.into()),
        Err(sig) => return Err(interrupted(sig)),
    };
    let mut me = Registration {
        instance_id,
        peer_id: local.peer_id.clone(),
        ip,
        cluster_port: cfg.cluster_port,
        api_port: cfg.api_port,
        registered_at_ms: rank,
        consensus: Some(local.consensus),
        init_peerset: None,
    };
    info!(peer_id = %me.peer_id, consensus = %local.consensus, has_state = local.has_state, ip = %ip, source, instance_id = %me.instance_id, discovery = registry.name(), "local peer");
    let me_facts = Me {
        peer_id: me.peer_id.clone(),
        ip,
        consensus: local.consensus,
        has_state: local.has_state,
        registered_at_ms: me.registered_at_ms,
    };

    if read_only {
        // One round, nothing registered or written; the view counts as settled.
        let rounds = Rounds::new(
            me_facts.clone(),
            &me,
            expect,
            cfg.settle,
            cfg.timeout,
            fastrand::Rng::new(),
        );
        let probed = prober.probe_all(rounds.others(registry.discover().await?)).await;
        let settle_ms = cfg.settle.as_millis() as u64;
        let facts = Facts {
            me: me_facts,
            expect,
            settle_ms,
            now_ms: settle_ms,
            view_since_ms: 0,
            peers: probed.observed,
            unidentified: probed.unidentified,
            genesis: genesis.as_ref().map(founded),
        };
        let decision = decide(&facts);
        let argv = apply::daemon_argv(&cfg.daemon_bin, &decision.action, &cfg.daemon_args);
        print_json(&record(registry, &me, source, 1, started, &facts, &decision, &argv));
        return Ok(0);
    }

    let contact = listen(ip, cfg.cluster_port, &me, cfg.loopback_only).await;
    match retry("registering this peer", deadline, &mut stop, || registry.register(&me)).await {
        Ok(Ok(())) => info!(instance_id = %me.instance_id, "registered"),
        Ok(Err(e)) => return Err(e.into()),
        Err(sig) => return Err(interrupted(sig)),
    }

    let mut rounds = Rounds::new(me_facts, &me, expect, cfg.settle, cfg.timeout, fastrand::Rng::new());
    rounds.set_genesis(genesis.as_ref().map(founded));
    let mut warned: HashSet<String> = HashSet::new();
    let mut last_reason = String::new();
    let since_start = || started.elapsed().as_millis() as u64;
    let (facts, decision) = 'decided: loop {
        let (facts, decision) = loop {
            // A record another peer created while this one waits (its founder
            // may die before its daemon is seen): decide with it.
            if let (Some(root), None) = (&cfg.state_root, &genesis) {
                match stateroot::new_genesis(cfg, root, &local, supersedes.as_deref()) {
                    Ok(Some(g)) => {
                        rounds.set_genesis(Some(founded(&g)));
                        genesis = Some(g);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        deregister(registry, &me).await;
                        return Err(e);
                    }
                }
            }
            let pause = match registry.discover().await {
                Err(e) => match rounds.discover_failed(since_start()) {
                    None => {
                        deregister(registry, &me).await;
                        return Err(e.into());
                    }
                    Some(pause) => {
                        warn!(error = %e, "discovery failed; retrying (a failed call never counts as 'no peers')");
                        pause
                    }
                },
                Ok(found) => {
                    for s in &found.skipped {
                        if warned.insert(s.clone()) {
                            warn!(registration = %s, "ignoring a registration");
                        }
                    }
                    let probed = prober.probe_all(rounds.others(found)).await;
                    let Round { facts, decision, next } = rounds.probed(probed, since_start());
                    if let Some(c) = &contact {
                        c.propose(Greeting::new(&me.peer_id, decision.proposal.as_deref()));
                    }
                    match next {
                        Next::Act => break (facts, decision),
                        Next::Confirm(pause) => {
                            debug!(reason = %decision.reason, "confirming the decision with one more round");
                            pause
                        }
                        Next::GiveUp => {
                            log_final(cfg, registry, &me, source, rounds.rounds, started, &facts, &decision);
                            deregister(registry, &me).await;
                            if let (Reason::ClusterExists { .. }, Some(g)) = (&decision.reason, &genesis) {
                                return Err(Error::ClusterLost {
                                    waited: cfg.timeout,
                                    path: g.path.clone(),
                                    id: g.id.clone(),
                                    founders: g.founders.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(", "),
                                    founded_at: g.founded_at.clone(),
                                });
                            }
                            return Err(Error::GaveUp {
                                waited: cfg.timeout,
                                reason: decision.reason.to_string(),
                            });
                        }
                        Next::Pause(pause) => {
                            let reason = decision.reason.to_string();
                            if reason != last_reason {
                                info!(reason = %reason, "waiting");
                                last_reason = reason;
                            } else {
                                debug!(reason = %reason, round = rounds.rounds, "waiting");
                            }
                            pause
                        }
                    }
                }
            };
            if let Some(sig) = stop.sleep(pause).await {
                deregister(registry, &me).await;
                return Err(interrupted(sig));
            }
        };
        // A new founding (rule 4, no record known) creates the record first;
        // when another record wins, decide again with it. A founding the
        // record allows (rule 3b) or a fixed set in progress (rule 2) creates
        // nothing.
        let founding = matches!(decision.reason, Reason::Founder | Reason::FixedSet { .. });
        match (&cfg.state_root, &decision.action) {
            (Some(root), Action::Found { init_peerset }) if founding && facts.genesis.is_none() => {
                let founders = init_peerset.clone().unwrap_or_else(|| vec![local.peer_id.clone()]);
                let created =
                    stateroot::create_genesis(cfg, root, &local, &founders, &me.instance_id, supersedes.as_deref());
                match created {
                    Ok(None) => break 'decided (facts, decision),
                    Ok(Some(g)) => {
                        rounds.set_genesis(Some(founded(&g)));
                        genesis = Some(g);
                    }
                    Err(e) => {
                        log_final(cfg, registry, &me, source, rounds.rounds, started, &facts, &decision);
                        deregister(registry, &me).await;
                        return Err(e);
                    }
                }
                // Lost the race: the next round decides with the winner's record.
                if let Some(sig) = stop.sleep(Duration::from_millis(250)).await {
                    deregister(registry, &me).await;
                    return Err(interrupted(sig));
                }
            }
            _ => break 'decided (facts, decision),
        }
    };

    let argv = log_final(cfg, registry, &me, source, rounds.rounds, started, &facts, &decision);

    if apply::write_atomic(&local.peerstore, apply::peerstore_text(&decision.peerstore).as_bytes())? {
        info!(path = %local.peerstore.display(), peers = decision.peerstore.len(), "peerstore written");
    }
    if let Action::Found {
        init_peerset: Some(set),
    } = &decision.action
    {
        // Announce the founding set to members still deciding (they found with
        // it rather than join a set that has no leader yet).
        if let Some(c) = &contact {
            c.propose(Greeting::founding(&me.peer_id, set));
        }
        if apply::set_init_peerset(&local::service_json(&local.config_dir), set)? {
            info!(peers = set.len(), "service.json consensus.raft.init_peerset written");
        }
        // Publish the founding set, so that a member starting late keeps to it.
        // Cloud Map holds at most 1024 characters per attribute (about 19
        // peer IDs); a larger set is not published, and late members go by
        // the announcement and the live peers' configuration instead.
        let encoded = set
            .iter()
            .map(|p| p.as_str().len() + 1)
            .sum::<usize>()
            .saturating_sub(1);
        if encoded > crate::discovery::attributes::MAX_VALUE {
            warn!(
                peers = set.len(),
                characters = encoded,
                "the founding set does not fit one registry attribute (1024 characters): not published"
            );
        } else {
            let mut published = me.clone();
            published.init_peerset = Some(set.clone());
            // Bounded on its own: the founding decision stands whatever the registry does.
            match retry(
                "publishing the founding set",
                Instant::now() + Duration::from_secs(10),
                &mut stop,
                || registry.register(&published),
            )
            .await
            {
                Ok(Ok(())) => me = published,
                Ok(Err(e)) => {
                    warn!(error = %e, "could not publish the founding set; a late member will go by the announcement and the live peers' configuration")
                }
                Err(sig) => {
                    deregister(registry, &me).await;
                    return Err(interrupted(sig));
                }
            }
        }
        // Keep announcing for one poll interval of the others, so that every
        // member still waiting sees it before our daemon takes the port.
        if contact.is_some() {
            let linger = rounds::linger(cfg.settle, cfg.probe_timeout);
            debug!(
                linger_ms = linger.as_millis() as u64,
                "announcing the founding set before starting"
            );
            if let Some(sig) = stop.sleep(linger).await {
                deregister(registry, &me).await;
                return Err(interrupted(sig));
            }
        }
    }
    drop(contact);

    // A slot's daemon runs in the slot's folder, holding its lock, guarded by
    // the watchdog.
    let env: Vec<(&'static str, std::ffi::OsString)> = match &cfg.state_root {
        Some(_) => vec![("IPFS_CLUSTER_PATH", cfg.config_dir.clone().into_os_string())],
        None => vec![],
    };
    if let Some(lock) = &lock {
        lock.keep_across_exec().map_err(|source| Error::Write {
            path: lock.path().to_owned(),
            source,
        })?;
    }
    // A stop that came while the files were written: the task is going, so
    // no daemon starts (its signal would otherwise be lost with our handler).
    if let Some(sig) = stop.pending() {
        deregister(registry, &me).await;
        return Err(interrupted(sig));
    }
    if cfg.supervise {
        info!(argv = ?argv, "starting the daemon (supervised)");
        let retire = match (&cfg.state_root, ecs, local.consensus) {
            (Some(root), Some(ecs), Consensus::Raft) if !cfg.scale_in_timeout.is_zero() => {
                crate::retire::context(cfg, root, ecs, &local, task_for_retire.as_ref())
            }
            _ => None,
        };
        let before_stop = retire.as_ref().map(|r| move || crate::retire::on_stop(r));
        let reaper = match (cfg.reap_after, ecs, local.consensus) {
            (Some(grace), Some(ecs), Consensus::Raft) => crate::reaper::context(cfg, ecs, &local, grace),
            (Some(_), _, Consensus::Crdt) => {
                info!("--reap-after: crdt has no voters to remove (a stopped peer drops out when its ping metric expires)");
                None
            }
            _ => None,
        };
        // Our signal streams go with it: none is lost between here and there.
        let supervised = launch::supervise(&argv, &env, before_stop, (stop.term.take(), stop.int.take()));
        let code = match &reaper {
            // The reaper never ends on its own; it goes when the daemon does.
            Some(r) => {
                tokio::select! {
                    code = supervised => code,
                    () = crate::reaper::run(r, registry) => Ok(0),
                }
            }
            None => supervised.await,
        };
        deregister(registry, &me).await;
        drop(lock);
        return code;
    }
    info!(argv = ?argv, "exec'ing the daemon");
    let err = launch::exec(&argv, &env);
    drop(lock);
    Err(err)
}

/// The daemon's argv for `decision`, after logging the run's one decision record.
#[allow(clippy::too_many_arguments)]
fn log_final<R: Registry>(
    cfg: &Config,
    registry: &R,
    me: &Registration,
    source: &str,
    rounds: u32,
    started: Instant,
    facts: &Facts,
    decision: &Decision,
) -> Vec<std::ffi::OsString> {
    let argv = apply::daemon_argv(&cfg.daemon_bin, &decision.action, &cfg.daemon_args);
    log_decision(&record(registry, me, source, rounds, started, facts, decision, &argv));
    argv
}

#[allow(clippy::too_many_arguments)]
fn record<'a, R: Registry>(
    registry: &'a R,
    me: &'a Registration,
    source: &'a str,
    rounds: u32,
    started: Instant,
    facts: &'a Facts,
    decision: &'a Decision,
    argv: &[std::ffi::OsString],
) -> Record<'a> {
    Record {
        event: "decision",
        discovery: registry.name(),
        instance_id: &me.instance_id,
        advertise_ip: me.ip,
        advertise_source: source,
        rounds,
        elapsed_ms: started.elapsed().as_millis() as u64,
        facts,
        decision,
        reason_text: decision.reason.to_string(),
        daemon_argv: argv.iter().map(|a| a.to_string_lossy().into_owned()).collect(),
    }
}

/// The contact point on the advertised address, else (an address not on this
/// host, behind NAT) on every address, unless --loopback-only.
async fn listen(ip: std::net::IpAddr, port: u16, me: &Registration, loopback_only: bool) -> Option<ContactPoint> {
    let greeting = Greeting::new(&me.peer_id, None);
    let first = SocketAddr::new(ip, port);
    let err = match ContactPoint::start(first, greeting.clone()).await {
        Ok(c) => return Some(c),
        Err(e) => e,
    };
    if !loopback_only {
        let any: std::net::IpAddr = if ip.is_ipv4() {
            [0, 0, 0, 0].into()
        } else {
            [0u16; 8].into()
        };
        if let Ok(c) = ContactPoint::start(SocketAddr::new(any, port), greeting).await {
            debug!(address = %first, error = %err, "listening on every address instead");
            return Some(c);
        }
    }
    warn!(address = %first, error = %err, "cannot listen on the cluster port while deciding: other peers will see this one as down, so it can join a cluster but not found one");
    None
}

/// Best effort: leaving the registry on the way out.
async fn deregister<R: Registry>(registry: &R, me: &Registration) {
    match tokio::time::timeout(Duration::from_secs(5), registry.deregister(me)).await {
        Ok(Ok(())) => info!(instance_id = %me.instance_id, "deregistered"),
        Ok(Err(e)) => warn!(error = %e, "could not deregister"),
        Err(_) => warn!("deregistering timed out"),
    }
}

#[cfg(test)]
mod tests {
    /// A record of 1,000 peers fits one log event, with the counts kept.
    #[test]
    fn a_large_decision_record_is_logged_in_bounded_size() {
        let peer = |i: usize| serde_json::json!({"registration": {"peer_id": format!("12D3KooW{i:0>44}"), "ip": "10.0.0.1"}, "probe": {"state": "api", "cluster_peers": vec!["12D3KooWxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"; 50]}});
        let peers: Vec<serde_json::Value> = (0..1000).map(peer).collect();
        let record = serde_json::json!({
            "event": "decision",
            "facts": {"expect": 3, "peers": peers, "unidentified": []},
            "decision": {"action": {"action": "join"}, "peerstore": vec!["/ip4/10.0.0.1/tcp/9096/p2p/x"; 1000]},
        });
        assert!(record.to_string().len() > 1 << 20);
        let small = super::compact_record(record, super::MAX_RECORD);
        assert!(
            small.to_string().len() <= super::MAX_RECORD,
            "{}",
            small.to_string().len()
        );
        assert_eq!(small["facts"]["peers_total"], 1000);
        assert_eq!(small["decision"]["peerstore_total"], 1000);
        assert_eq!(small["truncated"], true);
        assert_eq!(small["facts"]["expect"], 3);
        let tiny = serde_json::json!({"facts": {"peers": [1, 2]}});
        assert_eq!(super::compact_record(tiny.clone(), super::MAX_RECORD), tiny);
    }

    /// A signal that arrives while the sidecar is busy (writing files after
    /// its decision) is still seen before the daemon is launched.
    #[tokio::test]
    async fn a_signal_that_came_while_busy_is_seen_before_launching() {
        let mut stop = super::Stop::new();
        assert_eq!(stop.pending(), None);
        unsafe {
            libc::raise(libc::SIGINT);
        }
        let mut seen = None;
        for _ in 0..100 {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            seen = stop.pending();
            if seen.is_some() {
                break;
            }
        }
        assert_eq!(seen, Some(libc::SIGINT));
        assert_eq!(stop.pending(), None, "seen once");
    }
}
