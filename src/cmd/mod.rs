//! The commands, one module each, and the setup the discovering ones share:
//! the AWS SDK, this task and its address, the ECS client, the slot, and the
//! discovery backend. The flow itself is `run.rs`'s.

mod discover;
mod health;
mod iam_policy;
mod local_peer;
mod plan;
mod record;
mod run;
mod signals;
mod slot;

use std::time::{Duration, Instant};

use serde::Serialize;
use tracing::{info, warn};

use crate::cli::Mode;
use crate::config::{Config, Discovery, Expect};
use crate::discovery::any::Backend;
use crate::discovery::cloudmap::CloudMap;
use crate::discovery::dns::{self, DnsName};
use crate::discovery::ec2::Ec2Tags;
use crate::discovery::static_list::StaticList;
use crate::discovery::verify_tasks::VerifiedTasks;
use crate::ecs::Ecs;
use crate::exit::Error;
use crate::privileges;
use crate::probe::Prober;
use crate::selfaddr::{self, SelfAddr, Task};
use crate::slot::Lock;
use crate::stateroot;

/// Runs the command `cfg.mode` names; Ok(the exit code).
pub async fn main(cfg: Config) -> Result<i32, Error> {
    match cfg.mode {
        Mode::IamPolicy => iam_policy::main(&cfg),
        Mode::Slot => slot::main(&cfg).await,
        Mode::Run | Mode::Plan | Mode::Discover | Mode::Health => {
            let Setup {
                cfg,
                sdk,
                me,
                ecs,
                lock,
            } = Setup::new(cfg).await?;
            let backend = backend(&cfg, sdk.as_ref(), ecs.clone(), me.as_ref())?;
            if cfg.api_credentials.is_some() && matches!(backend, Backend::CloudMap(_)) {
                info!("the REST API credentials go only to peers whose ECS task is RUNNING (--verify-tasks): without it, Cloud Map's peers are probed without them");
            }
            let prober = Prober::new(cfg.probe_timeout, cfg.api_credentials.clone(), cfg.loopback_only);
            match (cfg.mode, me) {
                (Mode::Health, _) => health::check(&cfg, &backend, &prober).await,
                (Mode::Run, Some(me)) if !cfg.read_only() => {
                    run::main(&cfg, &backend, &prober, me, ecs.as_ref(), lock).await
                }
                (Mode::Run | Mode::Plan, Some(me)) => plan::main(&cfg, &backend, &prober, me, ecs.as_ref()).await,
                _ => discover::main(&backend, &prober).await,
            }
        }
    }
}

/// What the discovering commands share.
struct Setup {
    /// The config, pointed at the slot's folder under --state-root, with
    /// the time the slot took off --timeout.
    cfg: Config,
    sdk: Option<aws_config::SdkConfig>,
    /// This peer's address (`run`, `plan`).
    me: Option<SelfAddr>,
    ecs: Option<Ecs>,
    /// The slot lock the daemon keeps (--state-root).
    lock: Option<Lock>,
}

impl Setup {
    async fn new(mut cfg: Config) -> Result<Setup, Error> {
        let started = Instant::now();
        // With a state root the config folder is the slot's, known further down.
        if cfg.state_root.is_none() {
            privileges::drop_root(cfg.run_as, (cfg.mode == Mode::Run).then_some(cfg.config_dir.as_path()))?;
        }
        let uses = Uses::of(&cfg);
        let me = self_address(&cfg).await?;
        let task = task(&cfg, &uses, me.as_ref()).await?;
        let sdk = match uses.aws(&cfg) {
            true => Some(load_sdk(&cfg, task.as_ref()).await?),
            false => None,
        };
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
        let ecs = ecs_client(&cfg, &uses, sdk.as_ref(), task.as_ref())?;
        let lock = claim_slot(&mut cfg, ecs.as_ref(), task.as_ref(), started).await?;
        Ok(Setup {
            cfg,
            sdk,
            me,
            ecs,
            lock,
        })
    }
}

/// The features of this run that call AWS besides discovery.
struct Uses {
    /// --expect auto: the ECS service's desired count (run and plan only:
    /// `health` and `discover` work with the environment the task
    /// definition gives `run`, BOOTSTRAP_EXPECT=auto).
    expect_auto: bool,
    /// Scale-in retirement asks ECS for the service's desired count at
    /// SIGTERM; it is on only where the ECS cluster is known (in ECS, or
    /// --ecs-cluster).
    scale_in: bool,
    /// --reap-after.
    reap: bool,
}

impl Uses {
    fn of(cfg: &Config) -> Uses {
        Uses {
            expect_auto: cfg.expect == Expect::Auto && matches!(cfg.mode, Mode::Run | Mode::Plan),
            scale_in: cfg.mode == Mode::Run
                && cfg.supervise
                && cfg.state_root.is_some()
                && !cfg.scale_in_timeout.is_zero()
                && (cfg.ecs_cluster.is_some() || cfg.metadata_uri.is_some()),
            reap: cfg.mode == Mode::Run && cfg.reap_after.is_some(),
        }
    }

    fn ecs(&self, cfg: &Config) -> bool {
        self.expect_auto || cfg.verify_tasks || self.scale_in || self.reap
    }

    fn aws(&self, cfg: &Config) -> bool {
        matches!(cfg.discovery, Discovery::CloudMap { .. } | Discovery::Ec2 { .. }) || self.ecs(cfg)
    }
}

/// Where this peer is (`run`, `plan`): `discover` and `health` only list the others.
async fn self_address(cfg: &Config) -> Result<Option<SelfAddr>, Error> {
    let ec2_address = match &cfg.discovery {
        Discovery::Ec2 { address, .. } => Some(*address),
        _ => None,
    };
    match cfg.mode {
        Mode::Discover | Mode::Health | Mode::IamPolicy | Mode::Slot => Ok(None),
        Mode::Run | Mode::Plan => Ok(Some(
            selfaddr::resolve(
                cfg.advertise_ip,
                cfg.metadata_uri.as_deref(),
                ec2_address,
                cfg.loopback_only,
            )
            .await?,
        )),
    }
}

/// This ECS task: the self address's (`run`, `plan`), else, for `health`
/// and `discover`, the task metadata's when AWS is called and the region
/// is not set (the region in its ARN), or when --verify-tasks needs the ECS
/// cluster.
async fn task(cfg: &Config, uses: &Uses, me: Option<&SelfAddr>) -> Result<Option<Task>, Error> {
    if let Some(me) = me {
        return Ok(me.task.clone());
    }
    let needed = cfg.verify_tasks && cfg.ecs_cluster.is_none();
    // `health` runs every 30 s: no metadata call for a region already set.
    let region_set = ["AWS_REGION", "AWS_DEFAULT_REGION"]
        .iter()
        .any(|k| std::env::var_os(k).is_some_and(|v| !v.is_empty()));
    let for_region = uses.aws(cfg) && cfg.metadata_uri.is_some() && !region_set;
    if !needed && !for_region {
        return Ok(None);
    }
    match selfaddr::task(cfg.metadata_uri.as_deref(), cfg.loopback_only).await {
        Ok(t) => Ok(t),
        Err(e) if needed && cfg.mode != Mode::Health => Err(e),
        Err(e) if needed => {
            warn!(error = %e, "no ECS cluster from the task metadata: registrations are not checked against ECS");
            Ok(None)
        }
        Err(e) => {
            warn!(error = %e, "cannot read the ECS task metadata (for the AWS region)");
            Ok(None)
        }
    }
}

/// The ECS cluster: --ecs-cluster, else this task's.
fn ecs_cluster(cfg: &Config, task: Option<&Task>) -> Option<String> {
    cfg.ecs_cluster.clone().or_else(|| task.and_then(|t| t.cluster.clone()))
}

/// The ECS client, in this task's cluster (or --ecs-cluster), when a
/// feature of this run needs it.
fn ecs_client(
    cfg: &Config,
    uses: &Uses,
    sdk: Option<&aws_config::SdkConfig>,
    task: Option<&Task>,
) -> Result<Option<Ecs>, Error> {
    let Some(sdk) = sdk.filter(|_| uses.ecs(cfg)) else {
        return Ok(None);
    };
    let cluster = ecs_cluster(cfg, task);
    let needed = uses.expect_auto || cfg.verify_tasks || uses.reap;
    match cluster {
        Some(cluster) => Ok(Some(Ecs::new(sdk, cluster))),
        None if !needed => {
            info!("scale-in retirement is off: the ECS cluster is unknown (set --ecs-cluster)");
            Ok(None)
        }
        // Warned in `task`: the metadata could not be read.
        None if cfg.mode == Mode::Health => Ok(None),
        None => Err(Error::usage(
            "--expect auto, --verify-tasks and --reap-after need the ECS cluster: run in ECS or set --ecs-cluster \
             (BOOTSTRAP_ECS_CLUSTER)",
        )),
    }
}

/// This task's slot under --state-root: the peer's folder (`cfg` points at
/// it from here on), and the lock its daemon holds (`run`), guarded by the
/// watchdog.
async fn claim_slot(
    cfg: &mut Config,
    ecs: Option<&Ecs>,
    task: Option<&Task>,
    started: Instant,
) -> Result<Option<Lock>, Error> {
    let (Some(root), Mode::Run | Mode::Plan | Mode::Health) = (cfg.state_root.clone(), cfg.mode) else {
        return Ok(None);
    };
    let name = stateroot::task_name(task.map(|t| t.id.as_str()));
    let (k, held) =
        stateroot::this_task_slot(cfg, &root, cfg.read_only(), &name, || resolve_expect(cfg, ecs, task)).await?;
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
    // One --timeout for the whole run: waiting for the slot counts.
    cfg.timeout = cfg.timeout.saturating_sub(started.elapsed());
    Ok(held)
}

/// The discovery backend the configuration chose.
fn backend(
    cfg: &Config,
    sdk: Option<&aws_config::SdkConfig>,
    ecs: Option<Ecs>,
    me: Option<&SelfAddr>,
) -> Result<Backend, Error> {
    match &cfg.discovery {
        Discovery::CloudMap {
            namespace,
            service,
            service_id,
        } => {
            let sdk = sdk.ok_or_else(|| Error::Internal("the AWS SDK was not loaded for Cloud Map".into()))?;
            let registry = CloudMap::new(
                sdk,
                cfg.custom_aws_endpoint,
                namespace.clone(),
                service.clone(),
                service_id.clone(),
                cfg.api_port,
            );
            Ok(match (cfg.verify_tasks, ecs) {
                (true, Some(ecs)) => {
                    let remove_stale = cfg.mode == Mode::Run && !cfg.dry_run;
                    Backend::Verified(VerifiedTasks::new(registry, ecs, remove_stale))
                }
                _ => Backend::CloudMap(registry),
            })
        }
        Discovery::Static { peers } => {
            let resolver = match peers.iter().any(|p| p.has_host_name()) {
                true => Some(dns::resolver(cfg.dns_server).map_err(Error::usage)?),
                false => None,
            };
            Ok(Backend::Static(StaticList::new(peers.clone(), cfg.api_port, resolver)))
        }
        Discovery::Dns { name } => {
            let resolver = dns::resolver(cfg.dns_server).map_err(Error::usage)?;
            Ok(Backend::Dns(DnsName::new(
                resolver,
                name.clone(),
                cfg.cluster_port,
                cfg.api_port,
            )))
        }
        Discovery::Ec2 {
            tags,
            vpc_id,
            address,
            peer_id_tag,
            register,
            ..
        } => {
            let sdk = sdk.ok_or_else(|| Error::Internal("the AWS SDK was not loaded for EC2".into()))?;
            let instance_id = me.and_then(|m| m.instance_id.clone()).unwrap_or_default();
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
            Ok(Backend::Ec2(registry))
        }
    }
}

/// The AWS SDK's shared config: our HTTP client, bounded attempts, and the
/// region from AWS_REGION (or AWS_DEFAULT_REGION), the AWS profile, this
/// ECS task's ARN, and only for EC2 discovery the instance metadata
/// service: nothing dials 169.254.169.254 for a region outside EC2.
async fn load_sdk(cfg: &Config, task: Option<&Task>) -> Result<aws_config::SdkConfig, Error> {
    use aws_config::meta::region::RegionProviderChain;
    let http = crate::aws_http::client();
    let mut region = RegionProviderChain::first_try(aws_config::environment::EnvironmentVariableRegionProvider::new())
        .or_else(aws_config::profile::ProfileFileRegionProvider::new());
    if let Some(r) = task.and_then(Task::region) {
        region = region.or_else(aws_config::Region::new(r.to_owned()));
    }
    let ec2 = matches!(cfg.discovery, Discovery::Ec2 { .. });
    if ec2 {
        let provider = aws_config::provider_config::ProviderConfig::without_region().with_http_client(http.clone());
        let imds = aws_config::imds::Client::builder().configure(&provider).build();
        region = region.or_else(
            aws_config::imds::region::ImdsRegionProvider::builder()
                .imds_client(imds)
                .build(),
        );
    }
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(region)
        .http_client(http)
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .operation_attempt_timeout(Duration::from_secs(3))
                .operation_timeout(Duration::from_secs(10))
                .build(),
        )
        .load()
        .await;
    if sdk.region().is_none() {
        return Err(Error::usage(match ec2 {
            true => {
                "no AWS region: set AWS_REGION (none in the environment, the AWS profile or the EC2 instance metadata)"
            }
            false => {
                "no AWS region: set AWS_REGION (none in the environment, the AWS profile or the ECS task metadata)"
            }
        }));
    }
    Ok(sdk)
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

fn print_json<T: Serialize>(v: &T) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}
