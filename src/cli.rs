//! Command line: every option is a flag and a `BOOTSTRAP_*` environment
//! variable. Parsing only; no I/O. `config` turns this into a checked `Config`.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

pub use crate::selfaddr::Ec2Address;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Register, discover, decide, prepare the files and exec the daemon (default).
    /// `daemon` is the same, as in the official image's `CMD ["daemon"]`: the
    /// arguments after it go to `ipfs-cluster-service daemon`.
    #[value(alias = "daemon")]
    Run,
    /// Evaluate the decision once and print it as JSON; change nothing.
    Plan,
    /// Print what discovery and probing see, as JSON; change nothing.
    Discover,
    /// Container health check: exit 0 when the local peer's REST API answers with its
    /// peer ID and it sees at least half of the live peers discovery lists, else 1.
    Health,
    /// Print the IAM policy the chosen discovery options need, as JSON.
    IamPolicy,
    /// The kubo container's entrypoint with --state-root: claim a free slot
    /// (members' slots first; --expect slots in all), write --slot-file for
    /// the task's cluster container, and
    /// exec the program after `--` with IPFS_PATH set to the slot's kubo repo,
    /// holding the slot's lock.
    Slot,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DiscoveryKind {
    /// AWS Cloud Map: this peer registers itself and finds the others with DiscoverInstances.
    Cloudmap,
    /// A fixed list of peers given with --peers.
    Static,
    /// Every A/AAAA record of --dns-name (a docker-compose service, a Cloud Map DNS name).
    Dns,
    /// Running EC2 instances with the --ec2-tag tags (one peer per instance).
    Ec2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The longest duration any option takes: longer ones are typos, and adding
/// them to the clock would overflow it.
pub const MAX_DURATION: Duration = Duration::from_secs(366 * 24 * 3600);

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 500ms, 10s, 5m)"))?;
    if d > MAX_DURATION {
        return Err("longer than a year (366d): surely a typo".into());
    }
    Ok(d)
}

#[derive(Debug, Clone, Parser)]
#[command(
    name = "ipfs-cluster-bootstrap",
    version,
    about = "Starts an IPFS Cluster peer safely: finds its peers, decides whether to found, join or wait, then execs ipfs-cluster-service daemon.",
    override_usage = "ipfs-cluster-bootstrap [MODE] [OPTIONS] [-- DAEMON_ARGS]\n       \
ipfs-cluster-bootstrap [OPTIONS] daemon [DAEMON_ARGS]",
    after_help = "Every option can also be set with the environment variable shown. ipfs-cluster's own variables \
(IPFS_CLUSTER_PATH, IPFS_CLUSTER_CONSENSUS, CLUSTER_*) and the AWS SDK's (AWS_REGION, AWS_ENDPOINT_URL, \
AWS_ENDPOINT_URL_SERVICEDISCOVERY, credentials) are honoured and passed to the daemon untouched.\n\
Exit codes: 0 ok, 64 usage, 65 bad local data, 66 unreadable config, 69 AWS unavailable, 70 bug, 71 daemon \
could not run, 73 cannot write, 75 gave up waiting, 76 cluster lost (genesis.json, --refound), 77 AWS access \
denied, 78 unsafe configuration."
)]
pub struct Cli {
    /// What to do.
    #[arg(value_enum, default_value_t = Mode::Run, env = "BOOTSTRAP_MODE")]
    pub mode: Mode,

    /// Where to find the other peers.
    #[arg(help_heading = "Discovery", long, value_enum, default_value_t = DiscoveryKind::Cloudmap, env = "BOOTSTRAP_DISCOVERY")]
    pub discovery: DiscoveryKind,

    /// How many peers found the cluster together: a number, or `auto` for the ECS
    /// service's desiredCount. Nobody founds until this many live peers are
    /// registered; 1 allows a peer to found a cluster alone. Required by run and plan.
    #[arg(help_heading = "Founding", long, env = "BOOTSTRAP_EXPECT", value_name = "N|auto")]
    pub expect: Option<String>,

    /// ECS cluster for --expect auto and --verify-tasks. Default: from the task metadata.
    #[arg(help_heading = "ECS", long, env = "BOOTSTRAP_ECS_CLUSTER")]
    pub ecs_cluster: Option<String>,

    /// ECS service for --expect auto. Default: from the task metadata, else the task's group.
    #[arg(help_heading = "ECS", long, env = "BOOTSTRAP_ECS_SERVICE")]
    pub ecs_service: Option<String>,

    /// Cloud Map: count a registration only while ECS reports its task RUNNING
    /// (instance IDs must be task IDs, the default in ECS). One DescribeTasks per poll.
    #[arg(help_heading = "ECS", long, env = "BOOTSTRAP_VERIFY_TASKS")]
    pub verify_tasks: bool,

    /// How long the set of live peers must stay unchanged before a founding.
    #[arg(help_heading = "Founding", long, default_value = "10s", value_parser = parse_duration, env = "BOOTSTRAP_SETTLE")]
    pub settle: Duration,

    /// Give up (exit 75, or 69/77 when AWS kept failing) when no safe action is found in this time.
    #[arg(help_heading = "Founding", long, default_value = "5m", value_parser = parse_duration, env = "BOOTSTRAP_TIMEOUT")]
    pub timeout: Duration,

    /// Cloud Map namespace name (its HttpName) holding the service.
    #[arg(help_heading = "Discovery", long, env = "BOOTSTRAP_CLOUDMAP_NAMESPACE")]
    pub cloudmap_namespace: Option<String>,

    /// Cloud Map service name. Use a service of its own, not the one ECS registers tasks in.
    #[arg(help_heading = "Discovery", long, env = "BOOTSTRAP_CLOUDMAP_SERVICE")]
    pub cloudmap_service: Option<String>,

    /// Cloud Map service ID (srv-…). Saves two lookups (ListNamespaces, ListServices) per start.
    #[arg(help_heading = "Discovery", long, env = "BOOTSTRAP_CLOUDMAP_SERVICE_ID")]
    pub cloudmap_service_id: Option<String>,

    /// Static peers, in founding order, comma-separated: /ip4/IP/tcp/PORT[/p2p/ID],
    /// /dns4/HOST/tcp/PORT[/p2p/ID], IPs or host names (port: --cluster-port).
    #[arg(help_heading = "Discovery", long, env = "BOOTSTRAP_PEERS")]
    pub peers: Option<String>,

    /// DNS discovery: the name whose A/AAAA records are the peers (Cloud Map answers at most 8).
    #[arg(help_heading = "Discovery", long, env = "BOOTSTRAP_DNS_NAME")]
    pub dns_name: Option<String>,

    /// Name server for DNS names, IP:PORT (default: the system's, from /etc/resolv.conf).
    #[arg(help_heading = "Discovery", long, env = "BOOTSTRAP_DNS_SERVER")]
    pub dns_server: Option<std::net::SocketAddr>,

    /// EC2 discovery: KEY=VALUE a peer's instance must carry; repeat it: different keys
    /// must all match, several values of one key are alternatives.
    #[arg(
        help_heading = "Discovery",
        long = "ec2-tag",
        env = "BOOTSTRAP_EC2_TAG",
        value_delimiter = ',',
        value_name = "KEY=VALUE"
    )]
    pub ec2_tag: Vec<String>,

    /// EC2 discovery: only instances in this VPC.
    #[arg(help_heading = "Discovery", long, env = "BOOTSTRAP_EC2_VPC_ID")]
    pub ec2_vpc_id: Option<String>,

    /// EC2 discovery: which instance address peers dial.
    #[arg(help_heading = "Discovery", long, value_enum, default_value_t = Ec2Address::Private, env = "BOOTSTRAP_EC2_ADDRESS")]
    pub ec2_address: Ec2Address,

    /// EC2 discovery: the tag holding an instance's peer ID.
    #[arg(
        help_heading = "Discovery",
        long,
        default_value = "ipfs-cluster:peer-id",
        env = "BOOTSTRAP_EC2_PEER_ID_TAG"
    )]
    pub ec2_peer_id_tag: String,

    /// EC2 discovery: tag this instance with its peer ID (ec2:CreateTags), so peers
    /// know it before its daemon answers.
    #[arg(help_heading = "Discovery", long, env = "BOOTSTRAP_REGISTER")]
    pub register: bool,

    /// EC2 discovery under awsvpc networking: a task's address is not its instance's, so
    /// it is refused unless this is set (then use --advertise-ip or host networking).
    #[arg(help_heading = "Discovery", long, env = "BOOTSTRAP_EC2_ALLOW_AWSVPC")]
    pub ec2_allow_awsvpc: bool,

    /// This peer's address as the others reach it. Default: this task's first IPv4 from
    /// the ECS task metadata endpoint v4 ($ECS_CONTAINER_METADATA_URI_V4/task).
    #[arg(help_heading = "This peer and probing", long, env = "BOOTSTRAP_ADVERTISE_IP")]
    pub advertise_ip: Option<IpAddr>,

    /// ID of this peer's registration. Default: the ECS task ID, else the peer ID.
    #[arg(help_heading = "This peer and probing", long, env = "BOOTSTRAP_INSTANCE_ID")]
    pub instance_id: Option<String>,

    /// The cluster (libp2p) port peers dial. Default: the TCP port of the daemon's listen
    /// address (CLUSTER_LISTENMULTIADDRESS, else service.json's cluster.listen_multiaddress),
    /// else 9096; a value that disagrees with it is refused (exit 78).
    #[arg(help_heading = "This peer and probing", long, env = "BOOTSTRAP_CLUSTER_PORT")]
    pub cluster_port: Option<u16>,

    /// The REST API port probed for /health and /id.
    #[arg(
        help_heading = "This peer and probing",
        long,
        default_value_t = 9094,
        env = "BOOTSTRAP_API_PORT"
    )]
    pub api_port: u16,

    /// The ipfs-cluster-service binary (looked up on PATH unless it contains a /).
    #[arg(
        help_heading = "Launch",
        long,
        default_value = "ipfs-cluster-service",
        env = "BOOTSTRAP_DAEMON_BIN"
    )]
    pub daemon_bin: PathBuf,

    /// How long one probe of one peer may take.
    #[arg(help_heading = "This peer and probing", long, default_value = "1s", value_parser = parse_duration, env = "BOOTSTRAP_PROBE_TIMEOUT")]
    pub probe_timeout: Duration,

    /// With run: evaluate once, print the decision as JSON and change nothing (as plan).
    #[arg(help_heading = "Launch", long, env = "BOOTSTRAP_DRY_RUN")]
    pub dry_run: bool,

    /// Run the daemon as a child instead of exec: forward SIGTERM, SIGINT and
    /// SIGHUP, deregister when it exits, and exit with its code.
    #[arg(help_heading = "Launch", long, env = "BOOTSTRAP_SUPERVISE")]
    pub supervise: bool,

    /// Refuse to contact any address outside 127.0.0.0/8 and ::1 (for test beds).
    #[arg(help_heading = "This peer and probing", long, env = "BOOTSTRAP_LOOPBACK_ONLY")]
    pub loopback_only: bool,

    /// When started as root: make the config folder the daemon's and run as this
    /// UID:GID (the official image's `ipfs` user), or `none` to keep the current user.
    #[arg(
        help_heading = "Launch",
        long,
        default_value = "1000:100",
        env = "BOOTSTRAP_RUN_AS",
        value_name = "UID:GID|none"
    )]
    pub run_as: String,

    /// Shared storage for every task of the service (an EFS mount): each task
    /// takes a slot folder under it (an identity, its cluster state and its
    /// kubo repo) under an exclusive lock, and the cluster's genesis.json lives
    /// there. Without it a peer keeps its state where IPFS_CLUSTER_PATH says.
    #[arg(
        help_heading = "State on shared storage",
        long,
        env = "BOOTSTRAP_STATE_ROOT",
        value_name = "DIR"
    )]
    pub state_root: Option<PathBuf>,

    /// With --state-root: a file on a volume only this task's containers share.
    /// `slot` writes the slot it took there; `run` and `health` read it (run
    /// waits for it) and use that slot. Without it `run` claims a slot itself.
    #[arg(
        help_heading = "State on shared storage",
        long,
        env = "BOOTSTRAP_SLOT_FILE",
        value_name = "FILE"
    )]
    pub slot_file: Option<PathBuf>,

    /// With --state-root: found a new, EMPTY cluster although genesis.json
    /// (record GENESIS_ID) says one was founded and no peer of it is left.
    /// Its pinset is lost. Ignored once that record has been replaced.
    #[arg(
        help_heading = "State on shared storage",
        long,
        env = "BOOTSTRAP_REFOUND",
        value_name = "GENESIS_ID"
    )]
    pub refound: Option<String>,

    /// How often the slot lock's watchdog writes through the lock; it stops the
    /// daemon when a write fails or takes longer. Keep it well below the NFS
    /// lease (EFS: about 90 s).
    #[arg(help_heading = "State on shared storage", long, default_value = "10s", value_parser = parse_duration, env = "BOOTSTRAP_WATCHDOG_INTERVAL")]
    pub watchdog_interval: Duration,

    /// With --state-root, --supervise and raft in an ECS service: how long a
    /// peer stopped by a scale-in (desiredCount below the voters) may take to
    /// leave the raft peerset and see its pins replicated elsewhere, before
    /// its daemon gets the SIGTERM. Keep it below the container's
    /// stopTimeout; 0 turns scale-in retirement off.
    #[arg(help_heading = "ECS", long, default_value = "90s", value_parser = parse_duration, env = "BOOTSTRAP_SCALE_IN_TIMEOUT")]
    pub scale_in_timeout: Duration,

    /// Without --state-root, under raft and --supervise: remove raft voters
    /// whose ECS tasks have been STOPPED for this long (one at a time, only
    /// while a quorum of the voters answers). Needs --discovery cloudmap and
    /// the ECS API. Off unless set.
    #[arg(help_heading = "ECS", long, value_parser = parse_duration, env = "BOOTSTRAP_REAP_AFTER", value_name = "GRACE")]
    pub reap_after: Option<Duration>,

    /// Log format on stderr.
    #[arg(help_heading = "Logging", long, value_enum, default_value_t = LogFormat::Text, env = "BOOTSTRAP_LOG_FORMAT")]
    pub log_format: LogFormat,

    /// Log filter (error, warn, info, debug, trace, or tracing directives).
    #[arg(help_heading = "Logging", long, default_value = "info", env = "BOOTSTRAP_LOG_LEVEL")]
    pub log_level: String,

    /// Arguments appended to `ipfs-cluster-service daemon`: its own flags (--stats,
    /// --tracing, --no-trust, --leave, --upgrade). --bootstrap is refused: this tool
    /// decides it. `daemon ARGS` (the official image's CMD) is the same as `run -- ARGS`.
    #[arg(last = true, value_name = "DAEMON_ARGS")]
    pub daemon_args: Vec<String>,
}

impl Cli {
    /// Parses the command line (`std::env::args_os()` in production), with
    /// `daemon ARGS` read as `run -- ARGS`.
    pub fn try_parse_args<I, T>(argv: I) -> Result<Cli, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString>,
    {
        Cli::try_parse_from(daemon_as_run(argv.into_iter().map(Into::into).collect()))
    }

    /// `MODE --help` (or `-h`) with a mode on the command line: that mode's
    /// description and only the options it reads. None otherwise (the whole
    /// help), or when the rest does not parse (clap then says what is wrong).
    pub fn mode_help<I, T>(argv: I) -> Option<String>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString>,
    {
        mode_help(&daemon_as_run(argv.into_iter().map(Into::into).collect()))
    }
}

/// The option headings each mode reads; the others' options are left out of
/// `MODE --help`. `run` (and `plan`, which prints the daemon's argv) read all.
fn headings(mode: Mode) -> Option<&'static [&'static str]> {
    const PEERS: &str = "This peer and probing";
    const STATE: &str = "State on shared storage";
    Some(match mode {
        Mode::Run | Mode::Plan => return None,
        Mode::Discover => &["Discovery", "ECS", PEERS, "Logging"],
        Mode::Health => &["Discovery", "ECS", PEERS, STATE, "Logging"],
        Mode::IamPolicy => &["Discovery", "ECS", "Founding", STATE, "Launch", "Logging"],
        Mode::Slot => &["Founding", "ECS", STATE, "Logging"],
    })
}

fn mode_help(argv: &[std::ffi::OsString]) -> Option<String> {
    use clap::CommandFactory;
    let end = argv.iter().position(|a| a == "--").unwrap_or(argv.len());
    if !argv[..end].iter().any(|a| a == "-h" || a == "--help") {
        return None;
    }
    let rest: Vec<&std::ffi::OsString> = argv.iter().filter(|a| *a != "-h" && *a != "--help").collect();
    let matches = Cli::command().try_get_matches_from(rest).ok()?;
    if matches.value_source("mode") != Some(clap::parser::ValueSource::CommandLine) {
        return None;
    }
    let mode = *matches.get_one::<Mode>("mode")?;
    let name = mode.to_possible_value()?.get_name().to_owned();
    let about = mode
        .to_possible_value()?
        .get_help()
        .map(|h| h.to_string())
        .unwrap_or_default();
    let usage = match mode {
        Mode::Slot => "ipfs-cluster-bootstrap slot --state-root DIR [OPTIONS] -- PROGRAM [ARGS]".to_owned(),
        Mode::Run | Mode::Plan => format!("ipfs-cluster-bootstrap {name} [OPTIONS] [-- DAEMON_ARGS]"),
        _ => format!("ipfs-cluster-bootstrap {name} [OPTIONS]"),
    };
    let mut cmd = Cli::command().about(about).override_usage(usage);
    if mode == Mode::Slot {
        cmd = cmd.mut_arg("daemon_args", |a| {
            a.value_name("PROGRAM [ARGS]")
                .help("The program to exec holding the slot (kubo's start script), and its arguments")
        });
    }
    if let Some(keep) = headings(mode) {
        let hide: Vec<clap::Id> = cmd
            .get_arguments()
            .filter(|a| {
                let id = a.get_id().as_str();
                // Only `run` retires or reaps (`iam-policy` grants what they call).
                id != "mode"
                    && (!a.get_help_heading().is_some_and(|h| keep.contains(&h))
                        || (mode != Mode::IamPolicy && matches!(id, "scale_in_timeout" | "reap_after")))
            })
            .filter(|a| !(mode == Mode::Slot && a.get_id() == "daemon_args"))
            .map(|a| a.get_id().clone())
            .collect();
        for id in hide {
            cmd = cmd.mut_arg(id, |a| a.hide(true));
        }
    }
    Some(cmd.render_help().to_string())
}

/// `[OPTIONS] daemon ARGS…` → `[OPTIONS] daemon -- ARGS…`: when the first
/// positional argument is `daemon` (the official image's CMD), everything
/// after it belongs to `ipfs-cluster-service daemon`, flags included. Any
/// other command line is returned unchanged.
fn daemon_as_run(argv: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    use clap::CommandFactory;
    let cmd = Cli::command();
    let takes_value = |long: &str| {
        cmd.get_arguments()
            .any(|a| a.get_long() == Some(long) && a.get_action().takes_values())
    };
    let mut i = 1;
    while i < argv.len() {
        let Some(arg) = argv[i].to_str() else { return argv };
        if arg == "--" {
            return argv;
        }
        if let Some(long) = arg.strip_prefix("--") {
            if !long.contains('=') && takes_value(long) {
                i += 1;
            }
        } else if !arg.starts_with('-') || arg == "-" {
            if arg != "daemon" || i + 1 == argv.len() {
                return argv;
            }
            let mut out = argv[..=i].to_vec();
            out.push("--".into());
            out.extend_from_slice(&argv[i + 1..]);
            return out;
        }
        i += 1;
    }
    argv
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_args(std::iter::once("ipfs-cluster-bootstrap").chain(args.iter().copied()))
    }

    /// `MODE --help` shows that mode's options only; `--help` alone, all.
    #[test]
    fn each_mode_has_its_own_help() {
        let help =
            |args: &[&str]| Cli::mode_help(std::iter::once("ipfs-cluster-bootstrap").chain(args.iter().copied()));
        let health = help(&["health", "--help"]).unwrap();
        assert!(
            health.contains("Usage: ipfs-cluster-bootstrap health [OPTIONS]"),
            "{health}"
        );
        assert!(
            health.contains("--discovery") && health.contains("--state-root"),
            "{health}"
        );
        assert!(
            !health.contains("--supervise") && !health.contains("--settle"),
            "{health}"
        );
        let slot = help(&["--state-root", "/x", "slot", "-h"]).unwrap();
        assert!(
            slot.contains("-- PROGRAM [ARGS]") && slot.contains("--slot-file"),
            "{slot}"
        );
        assert!(
            !slot.contains("--probe-timeout") && !slot.contains("ipfs-cluster-service daemon`: its own"),
            "{slot}"
        );
        let run = help(&["run", "--help"]).unwrap();
        assert!(run.contains("--supervise") && run.contains("--discovery"), "{run}");
        assert_eq!(help(&["--help"]), None, "no mode given: the whole help");
        assert_eq!(help(&["health"]), None, "no help asked");
        assert_eq!(help(&["health", "--", "--help"]), None, "a daemon argument");
    }

    /// The official image's CMD: `daemon`, and what users put after it.
    #[test]
    fn daemon_means_run_with_the_rest_for_the_daemon() {
        for (args, daemon_args) in [
            (&["daemon"][..], &[][..]),
            (&["daemon", "--upgrade", "--stats"], &["--upgrade", "--stats"]),
            (&["--expect", "3", "daemon", "-x"], &["-x"]),
            (
                &["--expect=3", "--verify-tasks", "daemon", "--expect", "4"],
                &["--expect", "4"],
            ),
            (&["run", "--", "--stats"], &["--stats"]),
            (&["--", "daemon", "--stats"], &["daemon", "--stats"]),
        ] {
            let cli = parse(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
            assert_eq!(cli.mode, Mode::Run, "{args:?}");
            assert_eq!(cli.daemon_args, daemon_args, "{args:?}");
        }
        // `daemon` as the value of an option is no mode.
        let cli = parse(&["--instance-id", "daemon", "plan"]).unwrap();
        assert_eq!((cli.mode, cli.instance_id.as_deref()), (Mode::Plan, Some("daemon")));
        // Another mode keeps clap's rules: `plan --stats` is our unknown flag.
        assert!(parse(&["plan", "--stats"]).is_err());
        assert_eq!(parse(&["health"]).unwrap().mode, Mode::Health);
    }

    /// Every option is a flag and a BOOTSTRAP_<FLAG_IN_UPPER_SNAKE> variable, with help.
    #[test]
    fn every_option_has_its_env_var_and_help() {
        let cmd = Cli::command();
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            if matches!(id, "help" | "version" | "daemon_args") {
                continue;
            }
            let want = format!("BOOTSTRAP_{}", id.to_uppercase());
            assert_eq!(arg.get_env().and_then(|e| e.to_str()), Some(want.as_str()), "{id}");
            assert!(arg.get_help().is_some(), "{id} has no help");
            if let Some(long) = arg.get_long() {
                assert_eq!(long.replace('-', "_"), id, "flag and variable names agree");
            }
        }
    }
}
