//! Turns the parsed command line and the environment into a checked `Config`,
//! reporting every problem at once. The only module that reads the environment.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::cli::{Cli, DiscoveryKind, LogFormat, Mode};
use crate::daemon_env;
use crate::discovery::static_list::StaticPeer;
use crate::exit::Error;
use crate::peer::Consensus;

/// A value that must never reach a log line: Debug and Display print `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// REST API basic-auth credentials (the first pair of CLUSTER_RESTAPI_BASICAUTHCREDENTIALS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub password: Secret,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Discovery {
    CloudMap {
        namespace: String,
        service: String,
        service_id: Option<String>,
    },
    Static {
        peers: Vec<StaticPeer>,
    },
    Dns {
        name: String,
    },
    Ec2 {
        tags: std::collections::BTreeMap<String, Vec<String>>,
        vpc_id: Option<String>,
        address: crate::selfaddr::Ec2Address,
        peer_id_tag: String,
        register: bool,
        allow_awsvpc: bool,
    },
}

/// `--expect`: a number, or the ECS service's desired count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    Count(usize),
    Auto,
}

impl Discovery {
    pub fn name(&self) -> &'static str {
        match self {
            Discovery::CloudMap { .. } => "cloudmap",
            Discovery::Static { .. } => "static",
            Discovery::Dns { .. } => "dns",
            Discovery::Ec2 { .. } => "ec2",
        }
    }
}

/// What CLUSTER_SECRET says, without keeping its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretEnv {
    Unset,
    Empty,
    Set,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub mode: Mode,
    pub dry_run: bool,
    pub supervise: bool,
    pub discovery: Discovery,
    /// The name server for DNS names (default: the system's).
    pub dns_server: Option<std::net::SocketAddr>,
    pub expect: Expect,
    pub ecs_cluster: Option<String>,
    pub ecs_service: Option<String>,
    pub verify_tasks: bool,
    pub settle: Duration,
    pub timeout: Duration,
    pub probe_timeout: Duration,
    pub advertise_ip: Option<IpAddr>,
    pub metadata_uri: Option<String>,
    pub instance_id: Option<String>,
    pub cluster_port: u16,
    pub api_port: u16,
    pub daemon_bin: PathBuf,
    pub daemon_args: Vec<String>,
    /// $IPFS_CLUSTER_PATH, else $HOME/.ipfs-cluster, as the daemon resolves it.
    pub config_dir: PathBuf,
    /// The consensus `init` creates ($IPFS_CLUSTER_CONSENSUS, default crdt).
    pub init_consensus: Consensus,
    pub cluster_secret: SecretEnv,
    /// CLUSTER_ID: the daemon takes its identity from it when set.
    pub cluster_id_env: Option<String>,
    /// CLUSTER_PRIVATEKEY: the daemon takes its private key from it when set.
    pub cluster_private_key_env: Option<Secret>,
    pub api_credentials: Option<Credentials>,
    /// CLUSTER_RESTAPI_HTTPLISTENMULTIADDRESS: where the local REST API listens, if overridden.
    pub api_listen_env: Option<String>,
    /// CLUSTER_RAFT_INITPEERSET is set: it would override the init_peerset we write.
    pub raft_initpeerset_env: bool,
    /// CLUSTER_RAFT_DATAFOLDER, CLUSTER_<DATASTORE>_FOLDER, CLUSTER_PEERSTOREFILE
    /// and the working directory: where the daemon keeps its state and peerstore.
    pub paths: crate::local::Paths,
    /// An AWS endpoint override is configured (moto, LocalStack): strip the `data-` host prefix.
    pub custom_aws_endpoint: bool,
    pub loopback_only: bool,
    /// Drop to this UID:GID when started as root.
    pub run_as: Option<(u32, u32)>,
    pub log_format: LogFormat,
    pub log_level: String,
    /// --state-root: slots and the genesis record live there.
    pub state_root: Option<PathBuf>,
    /// --slot-file: the slot this task's `slot` container took.
    pub slot_file: Option<PathBuf>,
    /// --refound: the genesis record a new founding may replace.
    pub refound: Option<String>,
    pub watchdog_interval: Duration,
    /// Scale-in retirement's budget (0: off).
    pub scale_in_timeout: Duration,
    /// The reaper's grace (--reap-after); None: off.
    pub reap_after: Option<Duration>,
    /// The genesis record's hash of CLUSTER_SECRET, when it is set (never the secret).
    pub secret_sha256_env: Option<String>,
    /// --cluster-port as given, and CLUSTER_LISTENMULTIADDRESS: the cluster
    /// port is derived again when the config folder changes (a slot's).
    cluster_port_flag: Option<u16>,
    listen_env: Option<String>,
}

impl Config {
    /// `env` looks a variable up (std::env::var in production, a map in tests).
    pub fn new(cli: Cli, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, Error> {
        let mut errors: Vec<String> = vec![];
        let nonempty = |k: &str| env(k).filter(|v| !v.is_empty());

        let needs_expect = matches!(cli.mode, Mode::Run | Mode::Plan | Mode::Slot);
        let expect = match cli.expect.as_deref().map(str::trim) {
            Some("auto") => Expect::Auto,
            Some(n) => match n.parse::<usize>() {
                Ok(n) if n >= 1 => Expect::Count(n),
                _ => {
                    errors.push(format!(
                        "--expect (BOOTSTRAP_EXPECT) {n:?} must be a number of at least 1, or auto"
                    ));
                    Expect::Count(0)
                }
            },
            None if needs_expect => {
                errors
                    .push("--expect (BOOTSTRAP_EXPECT) is required: how many peers found the cluster together".into());
                Expect::Count(0)
            }
            None => Expect::Count(0),
        };

        let config_dir = match (nonempty("IPFS_CLUSTER_PATH"), nonempty("HOME")) {
            // The slot's cluster folder, once a slot is taken (`use_config_dir`).
            _ if cli.state_root.is_some() => PathBuf::new(),
            (Some(p), _) => PathBuf::from(p),
            (None, Some(home)) => PathBuf::from(home).join(".ipfs-cluster"),
            (None, None) => {
                errors.push("neither IPFS_CLUSTER_PATH nor HOME is set: no config folder".into());
                PathBuf::new()
            }
        };

        // Where the daemon listens for peers decides the cluster port. With a
        // state root the config folder is the slot's, known once a slot is
        // taken (`use_config_dir`).
        let mut file_error = None;
        let mut conflict = None;
        let listen_env = env("CLUSTER_LISTENMULTIADDRESS");
        let read_service = cli.mode != Mode::IamPolicy && cli.state_root.is_none();
        let cluster_port = match cluster_port_of(cli.cluster_port, listen_env.as_deref(), &config_dir, read_service) {
            Ok(port) => port,
            Err(PortError::Usage(m)) => {
                errors.push(m);
                cli.cluster_port.unwrap_or(DEFAULT_CLUSTER_PORT)
            }
            Err(PortError::File(e)) => {
                file_error = Some(e);
                cli.cluster_port.unwrap_or(DEFAULT_CLUSTER_PORT)
            }
            Err(PortError::Conflict(c)) => {
                conflict = Some(c);
                cli.cluster_port.unwrap_or(DEFAULT_CLUSTER_PORT)
            }
        };

        // The slot mode discovers nothing, and iam-policy only names actions:
        // discovery settings are not their business.
        let errors_before_discovery = errors.len();
        let discovery = match cli.discovery {
            DiscoveryKind::Cloudmap => {
                let namespace = cli.cloudmap_namespace.clone().filter(|s| !s.is_empty());
                let service = cli.cloudmap_service.clone().filter(|s| !s.is_empty());
                if namespace.is_none() {
                    errors
                        .push("--discovery cloudmap needs --cloudmap-namespace (BOOTSTRAP_CLOUDMAP_NAMESPACE)".into());
                }
                if service.is_none() {
                    errors.push("--discovery cloudmap needs --cloudmap-service (BOOTSTRAP_CLOUDMAP_SERVICE)".into());
                }
                if let Some(id) = &cli.cloudmap_service_id {
                    if !id.starts_with("srv-") && !id.starts_with("arn:") {
                        errors.push(format!(
                            "--cloudmap-service-id {id:?} is not a Cloud Map service ID (srv-…) or ARN"
                        ));
                    }
                }
                Discovery::CloudMap {
                    namespace: namespace.unwrap_or_default(),
                    service: service.unwrap_or_default(),
                    service_id: cli.cloudmap_service_id.clone().filter(|s| !s.is_empty()),
                }
            }
            DiscoveryKind::Static => {
                let mut peers = vec![];
                match cli.peers.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
                    None => errors.push("--discovery static needs --peers (BOOTSTRAP_PEERS)".into()),
                    Some(list) => {
                        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                            match StaticPeer::parse(item, cluster_port) {
                                Ok(a) => peers.push(a),
                                Err(e) => errors.push(format!("--peers: {e}")),
                            }
                        }
                    }
                }
                Discovery::Static { peers }
            }
            DiscoveryKind::Ec2 => {
                let tags = parse_tags(&cli.ec2_tag).unwrap_or_else(|e| {
                    errors.push(e);
                    Default::default()
                });
                if tags.is_empty() {
                    errors.push("--discovery ec2 needs at least one --ec2-tag KEY=VALUE (BOOTSTRAP_EC2_TAG)".into());
                }
                if cli.ec2_peer_id_tag.is_empty() {
                    errors.push("--ec2-peer-id-tag must not be empty".into());
                }
                Discovery::Ec2 {
                    tags,
                    vpc_id: cli.ec2_vpc_id.clone().filter(|s| !s.is_empty()),
                    address: cli.ec2_address,
                    peer_id_tag: cli.ec2_peer_id_tag.clone(),
                    register: cli.register,
                    allow_awsvpc: cli.ec2_allow_awsvpc,
                }
            }
            DiscoveryKind::Dns => match cli.dns_name.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
                None => {
                    errors.push("--discovery dns needs --dns-name (BOOTSTRAP_DNS_NAME)".into());
                    Discovery::Dns { name: String::new() }
                }
                Some(name) => Discovery::Dns { name: name.to_owned() },
            },
        };
        let resolves_names = match &discovery {
            Discovery::Dns { .. } => true,
            Discovery::Static { peers } => peers.iter().any(StaticPeer::has_host_name),
            Discovery::CloudMap { .. } | Discovery::Ec2 { .. } => false,
        };
        // iam-policy: the policy depends on the backend and a few switches
        // (--cloudmap-service-id, --register), not on names, tags or peers.
        if matches!(cli.mode, Mode::Slot | Mode::IamPolicy) {
            errors.truncate(errors_before_discovery);
        }
        if let Some(grace) = cli.reap_after {
            if grace.is_zero() {
                errors.push("--reap-after (BOOTSTRAP_REAP_AFTER) must be more than 0".into());
            }
            if !matches!(discovery, Discovery::CloudMap { .. }) {
                errors.push(
                    "--reap-after works with --discovery cloudmap (its instance IDs are ECS task IDs, which tell \
                     which voter's task stopped)"
                        .into(),
                );
            }
            if cli.mode == Mode::Run && !cli.supervise {
                errors.push(
                    "--reap-after needs --supervise (BOOTSTRAP_SUPERVISE): the reaper runs beside the daemon".into(),
                );
            }
            if env("CLUSTER_ID").is_some() {
                errors.push(
                    "--reap-after with CLUSTER_ID: a peer that keeps its identity across tasks comes back, so \
                     its voter must not be removed when one of its tasks stops"
                        .into(),
                );
            }
            if cli.state_root.as_ref().is_some_and(|p| !p.as_os_str().is_empty()) {
                errors.push(
                    "--reap-after with --state-root: a stopped task's peer comes back in its slot with the same ID, \
                     so its voter must not be removed (scale-in retirement handles a smaller service)"
                        .into(),
                );
            }
        }
        if cli.verify_tasks && !matches!(discovery, Discovery::CloudMap { .. }) {
            errors.push("--verify-tasks works with --discovery cloudmap (its instance IDs are ECS task IDs)".into());
        }
        if cli.loopback_only && matches!(discovery, Discovery::Ec2 { .. }) {
            let imds = env("AWS_EC2_METADATA_SERVICE_ENDPOINT").unwrap_or_default();
            let host = imds
                .split("://")
                .nth(1)
                .unwrap_or_default()
                .split(['/', ':'])
                .next()
                .unwrap_or_default();
            let ok = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
            if !ok {
                errors.push(format!(
                    "--loopback-only with --discovery ec2 needs AWS_EC2_METADATA_SERVICE_ENDPOINT on a loopback \
                     address (is {imds:?}; IMDS is at 169.254.169.254)"
                ));
            }
        }
        if cli.loopback_only && resolves_names && !cli.dns_server.is_some_and(|a| a.ip().is_loopback()) {
            errors.push(
                "--loopback-only with host names to resolve needs --dns-server on a loopback address \
                 (the system resolver is not on loopback)"
                    .into(),
            );
        }

        if let Some(id) = &cli.instance_id {
            let ok = !id.is_empty()
                && id.len() <= 64
                && id.chars().all(|c| c.is_ascii_alphanumeric() || "_/:.@-".contains(c));
            if !ok {
                errors.push(format!(
                    "--instance-id {id:?} must be 1 to 64 characters of A-Z a-z 0-9 _ / : . @ - (a Cloud Map instance ID)"
                ));
            }
        }
        if cluster_port == 0 || cli.api_port == 0 || cluster_port == cli.api_port {
            errors.push(format!(
                "--cluster-port ({}) and --api-port ({}) must be two different non-zero ports",
                cluster_port, cli.api_port
            ));
        }
        if cli.probe_timeout.is_zero() {
            errors.push("--probe-timeout must be more than 0".into());
        }
        if cli.loopback_only {
            if let Some(ip) = cli.advertise_ip.filter(|ip| !ip.is_loopback()) {
                errors.push(format!(
                    "--advertise-ip {ip} is not a loopback address and --loopback-only is set"
                ));
            }
        }

        let run_as = match cli.run_as.trim() {
            "none" | "" => None,
            v => match v.split_once(':').map(|(u, g)| (u.parse::<u32>(), g.parse::<u32>())) {
                Some((Ok(u), Ok(g))) => Some((u, g)),
                _ => {
                    errors.push(format!(
                        "--run-as (BOOTSTRAP_RUN_AS) {v:?} must be UID:GID (numbers) or none"
                    ));
                    None
                }
            },
        };
        let mut daemon_args = cli.daemon_args.clone();
        if cli.mode == Mode::Slot {
            // The program to exec (kubo's start_ipfs), not the daemon's flags.
            if daemon_args.is_empty() {
                errors
                    .push("slot needs the program to run after `--` (kubo's: /usr/local/bin/start_ipfs daemon)".into());
            }
        } else {
            if daemon_args.first().map(String::as_str) == Some("daemon") {
                daemon_args.remove(0);
            }
            errors.extend(crate::daemon_args::check(&daemon_args));
        }

        let init_consensus = match nonempty("IPFS_CLUSTER_CONSENSUS") {
            None => Consensus::Crdt,
            Some(v) => Consensus::parse(&v).unwrap_or_else(|| {
                errors.push(format!("IPFS_CLUSTER_CONSENSUS={v:?} must be crdt or raft"));
                Consensus::Crdt
            }),
        };

        // As the daemon reads them: a set-but-empty variable counts as set (envconfig).
        let cluster_secret = match env("CLUSTER_SECRET").map(|v| daemon_env::check_secret(&v)) {
            None => SecretEnv::Unset,
            Some(Ok(false)) => SecretEnv::Empty,
            Some(Ok(true)) => SecretEnv::Set,
            Some(Err(why)) => {
                errors.push(format!("CLUSTER_SECRET {why}"));
                SecretEnv::Set
            }
        };

        let api_credentials = match env("CLUSTER_RESTAPI_BASICAUTHCREDENTIALS") {
            None => None,
            Some(v) => daemon_env::basic_auth(&v).map_err(|e| errors.push(e)).ok(),
        };
        if env("CLUSTER_ID").is_some_and(|v| v.is_empty()) {
            errors.push(
                "CLUSTER_ID is set but empty: the daemon takes it over identity.json's id and stops (\"error \
                 decoding cluster ID\"); unset it"
                    .into(),
            );
        }
        let cluster_private_key_env = env("CLUSTER_PRIVATEKEY").map(Secret::new);
        if cluster_private_key_env.as_ref().is_some_and(|k| k.expose().is_empty()) {
            errors.push(
                "CLUSTER_PRIVATEKEY is set but empty: the daemon takes it over identity.json's private_key and \
                 stops; unset it"
                    .into(),
            );
        }

        // envconfig v1.4.0 Process: the key is PREFIX_FIELDNAME upper-cased
        // (raft "cluster_raft" + DataFolder, cluster "cluster" + PeerstoreFile,
        // each datastore "cluster_<name>" + Folder); a set-but-empty value is
        // then dropped by the daemon's SetIfNotDefault, hence `nonempty`.
        let paths = crate::local::Paths {
            raft_data_folder: nonempty("CLUSTER_RAFT_DATAFOLDER"),
            datastore_folders: ["pebble", "badger", "badger3", "leveldb"]
                .into_iter()
                .filter_map(|kind| {
                    let var = format!("CLUSTER_{}_FOLDER", kind.to_uppercase());
                    nonempty(&var).map(|folder| (kind.to_owned(), folder))
                })
                .collect(),
            peerstore_file: nonempty("CLUSTER_PEERSTOREFILE"),
            // The daemon we exec inherits it; relative raft folders are relative to it.
            cwd: std::env::current_dir().unwrap_or_default(),
        };

        let state_root = cli.state_root.clone().filter(|p| !p.as_os_str().is_empty());
        let slot_file = cli.slot_file.clone().filter(|p| !p.as_os_str().is_empty());
        // Record IDs are written in lower case.
        let refound = cli
            .refound
            .clone()
            .filter(|s| !s.is_empty())
            .map(|s| s.to_ascii_lowercase());
        if state_root.is_none() {
            for (set, flag) in [
                (slot_file.is_some(), "--slot-file (BOOTSTRAP_SLOT_FILE)"),
                (refound.is_some(), "--refound (BOOTSTRAP_REFOUND)"),
                (cli.mode == Mode::Slot, "the slot mode"),
            ] {
                if set {
                    errors.push(format!("{flag} needs --state-root (BOOTSTRAP_STATE_ROOT)"));
                }
            }
        } else {
            let overrides = ["CLUSTER_RAFT_DATAFOLDER", "CLUSTER_PEERSTOREFILE"]
                .into_iter()
                .map(String::from)
                .chain(
                    paths
                        .datastore_folders
                        .iter()
                        .map(|(kind, _)| format!("CLUSTER_{}_FOLDER", kind.to_uppercase())),
                )
                .filter(|var| nonempty(var).is_some());
            for var in ["CLUSTER_ID", "CLUSTER_PRIVATEKEY"]
                .into_iter()
                .filter(|v| env(v).is_some())
            {
                errors.push(format!(
                    "{var} is set with --state-root: every task would go by that one identity instead of its \
                     slot's; unset it"
                ));
            }
            for var in overrides {
                errors.push(format!(
                    "{var} is set with --state-root: the daemon would keep that state outside this task's slot, \
                     where another task's peer can reach it; unset it"
                ));
            }
            let read_only =
                cli.mode == Mode::Health || cli.mode == Mode::Plan || (cli.mode == Mode::Run && cli.dry_run);
            if read_only && slot_file.is_none() {
                errors.push(
                    "health, plan and --dry-run with --state-root need --slot-file (BOOTSTRAP_SLOT_FILE): the \
                     slot this task took"
                        .into(),
                );
            }
        }
        if let Some(id) = &refound {
            if id.len() > 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
                errors.push(format!(
                    "--refound (BOOTSTRAP_REFOUND) {id:?} is not a genesis record ID (the hexadecimal `id` of genesis.json)"
                ));
            }
        }
        if cli.watchdog_interval.is_zero() {
            errors.push("--watchdog-interval (BOOTSTRAP_WATCHDOG_INTERVAL) must be more than 0".into());
        }
        let secret_sha256_env = env("CLUSTER_SECRET")
            .and_then(|hex| daemon_env::secret_bytes(&hex))
            .map(|bytes| crate::genesis::secret_hash(&bytes));

        let ignore_endpoints =
            env("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS").is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let custom_aws_endpoint = !ignore_endpoints
            && (nonempty("AWS_ENDPOINT_URL").is_some() || nonempty("AWS_ENDPOINT_URL_SERVICEDISCOVERY").is_some());

        if !errors.is_empty() {
            return Err(Error::Usage(errors));
        }
        if let Some(e) = file_error {
            return Err(e);
        }
        if let Some(c) = conflict {
            return Err(Error::Unsafe(c));
        }
        if cluster_secret == SecretEnv::Empty {
            return Err(Error::Unsafe(
                "CLUSTER_SECRET is set but empty: ipfs-cluster would run on an unprotected network. \
                 Set it to the same 64-hex-character secret on every peer, or unset it to use service.json's"
                    .into(),
            ));
        }

        Ok(Config {
            mode: cli.mode,
            dry_run: cli.dry_run,
            supervise: cli.supervise,
            discovery,
            dns_server: cli.dns_server,
            expect,
            ecs_cluster: cli.ecs_cluster.filter(|s| !s.is_empty()),
            ecs_service: cli.ecs_service.filter(|s| !s.is_empty()),
            verify_tasks: cli.verify_tasks,
            settle: cli.settle,
            timeout: cli.timeout,
            probe_timeout: cli.probe_timeout,
            advertise_ip: cli.advertise_ip,
            metadata_uri: nonempty("ECS_CONTAINER_METADATA_URI_V4"),
            instance_id: cli.instance_id,
            cluster_port,
            api_port: cli.api_port,
            daemon_bin: cli.daemon_bin,
            daemon_args,
            config_dir,
            init_consensus,
            cluster_secret,
            cluster_id_env: nonempty("CLUSTER_ID"),
            cluster_private_key_env,
            api_credentials,
            api_listen_env: nonempty("CLUSTER_RESTAPI_HTTPLISTENMULTIADDRESS"),
            raft_initpeerset_env: env("CLUSTER_RAFT_INITPEERSET").is_some(),
            paths,
            custom_aws_endpoint,
            loopback_only: cli.loopback_only,
            run_as,
            log_format: cli.log_format,
            log_level: cli.log_level,
            state_root,
            slot_file,
            refound,
            watchdog_interval: cli.watchdog_interval,
            scale_in_timeout: cli.scale_in_timeout,
            reap_after: cli.reap_after,
            secret_sha256_env,
            cluster_port_flag: cli.cluster_port,
            listen_env,
        })
    }

    /// Moves the peer to `dir` (its slot's cluster folder): the daemon gets it
    /// as IPFS_CLUSTER_PATH, and the cluster port is derived again from its
    /// service.json, as `new` does.
    pub fn use_config_dir(&mut self, dir: PathBuf) -> Result<(), Error> {
        let port =
            cluster_port_of(self.cluster_port_flag, self.listen_env.as_deref(), &dir, true).map_err(|e| match e {
                PortError::Usage(m) => Error::usage(m),
                PortError::File(e) => e,
                PortError::Conflict(c) => Error::Unsafe(c),
            })?;
        if port == 0 || port == self.api_port {
            return Err(Error::usage(format!(
                "the cluster port ({port}) and --api-port ({}) must be two different non-zero ports",
                self.api_port
            )));
        }
        self.cluster_port = port;
        self.config_dir = dir;
        Ok(())
    }

    /// `plan`, or `run --dry-run`: decide once, print, change nothing.
    pub fn read_only(&self) -> bool {
        self.mode != Mode::Run || self.dry_run
    }
}

/// The daemon's default cluster port (cluster_config.go DefaultListenAddrs).
pub const DEFAULT_CLUSTER_PORT: u16 = 9096;

/// A non-empty cluster secret as the daemon decodes it (`daemon_env::check_secret`).
/// The message never repeats the value.
pub fn check_secret(hex: &str) -> Result<(), String> {
    daemon_env::check_secret(hex).map(|_| ())
}

enum PortError {
    Usage(String),
    File(Error),
    Conflict(String),
}

/// The cluster port: the TCP port of CLUSTER_LISTENMULTIADDRESS, else of
/// service.json's listen address (when `read_service`), else the flag, else
/// 9096; a flag that disagrees with the listen address is a conflict.
fn cluster_port_of(
    flag: Option<u16>,
    listen_env: Option<&str>,
    config_dir: &std::path::Path,
    read_service: bool,
) -> Result<u16, PortError> {
    let listen = match listen_env {
        Some(v) => Some(("CLUSTER_LISTENMULTIADDRESS".to_string(), daemon_env::env_list(v))),
        None if read_service => service_listen(config_dir).map_err(PortError::File)?,
        None => None,
    };
    match listen.map(|(source, list)| (source, daemon_env::listen_port(&list))) {
        Some((source, Ok(port))) => match flag.filter(|f| *f != port) {
            Some(flag) => Err(PortError::Conflict(format!(
                "--cluster-port (BOOTSTRAP_CLUSTER_PORT) {flag} disagrees with {source}, where the daemon \
                 listens on TCP port {port}: peers would dial a port nobody listens on. Leave \
                 --cluster-port out (it follows the listen address) or make the two agree"
            ))),
            None => Ok(port),
        },
        Some((source, Err(why))) => match source.as_str() {
            "CLUSTER_LISTENMULTIADDRESS" => Err(PortError::Usage(format!("CLUSTER_LISTENMULTIADDRESS {why}"))),
            _ => Err(PortError::File(Error::bad_file(
                crate::local::service_json(config_dir),
                format!("cluster.listen_multiaddress {why}"),
            ))),
        },
        None => Ok(flag.unwrap_or(DEFAULT_CLUSTER_PORT)),
    }
}

/// service.json's `cluster.listen_multiaddress` (a string or a list, as the
/// daemon's `config.Strings` reads it), with where it came from; None when
/// there is no service.json yet (`init` writes the default) or no `cluster`
/// section (`local` reports the file's other faults).
fn service_listen(config_dir: &std::path::Path) -> Result<Option<(String, Vec<String>)>, Error> {
    let path = crate::local::service_json(config_dir);
    if !path.is_file() {
        return Ok(None);
    }
    let Ok(service) = crate::local::read_json(&path) else {
        return Ok(None);
    };
    let Some(cluster) = service.get("cluster").and_then(serde_json::Value::as_object) else {
        return Ok(None);
    };
    use serde_json::Value;
    let list = match cluster.get("listen_multiaddress") {
        None | Some(Value::Null) => vec![],
        Some(Value::String(s)) if s.is_empty() => vec![],
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) if a.iter().all(Value::is_string) => {
            a.iter().filter_map(Value::as_str).map(str::to_owned).collect()
        }
        Some(_) => {
            return Err(Error::bad_file(
                &path,
                "cluster.listen_multiaddress is neither a string nor a list of strings",
            ))
        }
    };
    Ok(Some((
        format!("{}'s cluster.listen_multiaddress", path.display()),
        list,
    )))
}

/// Parses `--ec2-tag KEY=VALUE` flags: keys ANDed, values of one key ORed.
fn parse_tags(flags: &[String]) -> Result<std::collections::BTreeMap<String, Vec<String>>, String> {
    let mut tags: std::collections::BTreeMap<String, Vec<String>> = std::collections::BTreeMap::new();
    for f in flags {
        let (k, v) = f
            .split_once('=')
            .ok_or_else(|| format!("--ec2-tag {f:?} is not KEY=VALUE"))?;
        if k.is_empty() || k.len() > 128 || v.len() > 256 {
            return Err(format!(
                "--ec2-tag {f:?}: keys are 1 to 128 characters, values at most 256"
            ));
        }
        let vs = tags.entry(k.to_owned()).or_default();
        if !vs.iter().any(|x| x == v) {
            vs.push(v.to_owned());
        }
    }
    Ok(tags)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::collections::HashMap;

    fn config(args: &[&str], env: &[(&str, &str)]) -> Result<Config, Error> {
        let env: HashMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let mut argv = vec!["ipfs-cluster-bootstrap"];
        argv.extend_from_slice(args);
        let cli = Cli::try_parse_from(argv).map_err(|e| Error::usage(e.to_string()))?;
        Config::new(cli, &|k| env.get(k).cloned())
    }

    const BASE: [&str; 6] = [
        "--expect",
        "3",
        "--cloudmap-namespace",
        "ns",
        "--cloudmap-service",
        "svc",
    ];

    #[test]
    fn tags_and_or() {
        let t = parse_tags(&[
            "app=ipfs".into(),
            "env=prod".into(),
            "env=staging".into(),
            "app=ipfs".into(),
        ])
        .unwrap();
        assert_eq!(t["app"], vec!["ipfs"]);
        assert_eq!(t["env"], vec!["prod", "staging"]);
        assert!(parse_tags(&["novalue".into()]).is_err());
        assert!(parse_tags(&["=x".into()]).is_err());
    }

    #[test]
    fn defaults() {
        let c = config(&BASE, &[("HOME", "/home/u")]).unwrap();
        assert_eq!(c.config_dir, PathBuf::from("/home/u/.ipfs-cluster"));
        assert_eq!(c.init_consensus, Consensus::Crdt);
        assert_eq!(c.settle, Duration::from_secs(10));
        assert_eq!((c.cluster_port, c.api_port), (9096, 9094));
        assert!(!c.custom_aws_endpoint);
        assert!(!c.read_only());
    }

    #[test]
    fn all_problems_at_once() {
        let Err(Error::Usage(errs)) = config(&["--discovery", "cloudmap"], &[]) else {
            panic!()
        };
        assert_eq!(errs.len(), 4, "{errs:?}"); // expect, namespace, service, config folder
        assert!(errs.iter().any(|e| e.contains("BOOTSTRAP_EXPECT")));
    }

    #[test]
    fn empty_secret_is_refused() {
        let e = config(&BASE, &[("HOME", "/h"), ("CLUSTER_SECRET", "")]).unwrap_err();
        assert_eq!(e.exit_code(), crate::exit::code::CONFIG);
        assert!(e.to_string().contains("CLUSTER_SECRET"));
    }

    #[test]
    fn bootstrap_in_daemon_args_is_refused_and_daemon_dropped() {
        let mut a = BASE.to_vec();
        a.extend(["--", "daemon", "--bootstrap", "/ip4/1.2.3.4/tcp/9096"]);
        let e = config(&a, &[("HOME", "/h")]).unwrap_err();
        assert!(e.to_string().contains("--bootstrap is refused"), "{e}");
        let mut a = BASE.to_vec();
        a.extend(["--", "daemon", "--stats"]);
        assert_eq!(config(&a, &[("HOME", "/h")]).unwrap().daemon_args, vec!["--stats"]);
    }

    #[test]
    fn static_peers_and_dns_names() {
        let c = config(
            &["--discovery", "static", "--expect", "2", "--peers", "127.0.0.2, host-b"],
            &[("HOME", "/h")],
        )
        .unwrap();
        let Discovery::Static { peers } = c.discovery else {
            panic!()
        };
        assert_eq!(peers.len(), 2);
        let e = config(
            &["--discovery", "static", "--expect", "2", "--peers", "a b"],
            &[("HOME", "/h")],
        )
        .unwrap_err();
        assert!(e.to_string().contains("--peers"), "{e}");
        let e = config(&["--discovery", "dns", "--expect", "2"], &[("HOME", "/h")]).unwrap_err();
        assert!(e.to_string().contains("--dns-name"), "{e}");
        // Loopback-only test beds must not ask the system resolver.
        let e = config(
            &[
                "--discovery",
                "dns",
                "--dns-name",
                "x",
                "--expect",
                "2",
                "--loopback-only",
            ],
            &[("HOME", "/h")],
        )
        .unwrap_err();
        assert!(e.to_string().contains("--dns-server"), "{e}");
        config(
            &[
                "--discovery",
                "dns",
                "--dns-name",
                "x",
                "--expect",
                "2",
                "--loopback-only",
                "--dns-server",
                "127.0.0.1:5353",
            ],
            &[("HOME", "/h")],
        )
        .unwrap();
    }

    #[test]
    fn env_vars_and_endpoints() {
        let c = config(
            &BASE,
            &[
                ("IPFS_CLUSTER_PATH", "/data"),
                ("IPFS_CLUSTER_CONSENSUS", "raft"),
                ("AWS_ENDPOINT_URL", "http://127.0.0.1:5000"),
                ("CLUSTER_RESTAPI_BASICAUTHCREDENTIALS", "admin:s3cret,other:x"),
            ],
        )
        .unwrap();
        assert_eq!(c.config_dir, PathBuf::from("/data"));
        assert_eq!(c.init_consensus, Consensus::Raft);
        assert!(c.custom_aws_endpoint);
        let creds = c.api_credentials.unwrap();
        assert_eq!(creds.user, "admin");
        assert_eq!(format!("{:?}", creds.password), "***");
    }

    /// Each variable the daemon reads to move its state or peerstore; a
    /// set-but-empty one changes nothing (the daemon's SetIfNotDefault).
    #[test]
    fn path_overrides() {
        let c = config(&BASE, &[("HOME", "/h")]).unwrap();
        assert_eq!(c.paths.cwd, std::env::current_dir().unwrap());
        let unset = crate::local::Paths {
            cwd: c.paths.cwd.clone(),
            ..Default::default()
        };
        assert_eq!(c.paths, unset);
        let all = [
            ("CLUSTER_RAFT_DATAFOLDER", "r"),
            ("CLUSTER_PEBBLE_FOLDER", "p"),
            ("CLUSTER_BADGER_FOLDER", "b"),
            ("CLUSTER_BADGER3_FOLDER", "b3"),
            ("CLUSTER_LEVELDB_FOLDER", "l"),
            ("CLUSTER_PEERSTOREFILE", "ps"),
        ];
        let c = config(&BASE, &[&[("HOME", "/h")][..], &all].concat()).unwrap();
        assert_eq!(c.paths.raft_data_folder.as_deref(), Some("r"));
        let ds: Vec<(&str, &str)> = c
            .paths
            .datastore_folders
            .iter()
            .map(|(k, f)| (k.as_str(), f.as_str()))
            .collect();
        assert_eq!(
            ds,
            [("pebble", "p"), ("badger", "b"), ("badger3", "b3"), ("leveldb", "l")]
        );
        assert_eq!(c.paths.peerstore_file.as_deref(), Some("ps"));
        let empty: Vec<(&str, &str)> = all.iter().map(|(k, _)| (*k, "")).chain([("HOME", "/h")]).collect();
        assert_eq!(config(&BASE, &empty).unwrap().paths, unset);
    }

    /// The cluster port is where the daemon listens, from the variable or the file.
    #[test]
    fn cluster_port_follows_the_listen_address() {
        let quic = "/ip4/0.0.0.0/udp/9196/quic,/ip4/0.0.0.0/tcp/9196";
        let c = config(&BASE, &[("HOME", "/h"), ("CLUSTER_LISTENMULTIADDRESS", quic)]).unwrap();
        assert_eq!(c.cluster_port, 9196);
        let mut a = BASE.to_vec();
        a.extend(["--cluster-port", "9196"]);
        assert_eq!(
            config(&a, &[("HOME", "/h"), ("CLUSTER_LISTENMULTIADDRESS", quic)])
                .unwrap()
                .cluster_port,
            9196
        );
        let mut a = BASE.to_vec();
        a.extend(["--cluster-port", "9096"]);
        let e = config(&a, &[("HOME", "/h"), ("CLUSTER_LISTENMULTIADDRESS", quic)]).unwrap_err();
        assert_eq!(e.exit_code(), crate::exit::code::CONFIG);
        assert!(
            e.to_string().contains("CLUSTER_LISTENMULTIADDRESS") && e.to_string().contains("9096"),
            "{e}"
        );

        let d = crate::local::tempdir::Dir::new();
        let dir = d.path().to_str().unwrap();
        std::fs::write(
            d.path().join("service.json"),
            r#"{"cluster": {"listen_multiaddress": ["/ip4/0.0.0.0/tcp/9296"]}}"#,
        )
        .unwrap();
        let c = config(&BASE, &[("IPFS_CLUSTER_PATH", dir)]).unwrap();
        assert_eq!(c.cluster_port, 9296);
        let e = config(&a, &[("IPFS_CLUSTER_PATH", dir)]).unwrap_err();
        assert!(e.to_string().contains("cluster.listen_multiaddress"), "{e}");
        std::fs::write(
            d.path().join("service.json"),
            r#"{"cluster": {"listen_multiaddress": ""}}"#,
        )
        .unwrap();
        let e = config(&BASE, &[("IPFS_CLUSTER_PATH", dir)]).unwrap_err();
        assert_eq!(e.exit_code(), crate::exit::code::DATAERR, "{e}");
        // No service.json yet: `init` writes the default, 9096.
        assert_eq!(config(&BASE, &[("HOME", "/h")]).unwrap().cluster_port, 9096);
    }

    #[test]
    fn set_but_empty_identity_variables_are_refused() {
        for var in ["CLUSTER_ID", "CLUSTER_PRIVATEKEY"] {
            let e = config(&BASE, &[("HOME", "/h"), (var, "")]).unwrap_err();
            assert!(e.to_string().contains(&format!("{var} is set but empty")), "{e}");
            assert_eq!(e.exit_code(), crate::exit::code::USAGE);
        }
    }

    #[test]
    fn bad_values_name_their_flag() {
        let e = config(&["--settle", "soon"], &[]).unwrap_err();
        assert!(e.to_string().contains("--settle"), "{e}");
        let e = config(&["--instance-id", "a b"], &[]).unwrap_err();
        assert!(e.to_string().contains("--instance-id"), "{e}");
    }
}
