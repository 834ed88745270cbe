//! Errors that end a run, and the exit code each maps to. The codes follow
//! sysexits(3) and are listed once here and once in the README.

use std::path::PathBuf;
use std::time::Duration;

use crate::discovery::DiscoveryError;

/// Every exit code this program uses on its own (in `--supervise` mode it also
/// exits with the daemon's code).
pub mod code {
    /// The daemon was exec'd, or `plan`/`discover` printed their answer.
    pub const OK: i32 = 0;
    /// Bad flag, environment variable or daemon argument.
    pub const USAGE: i32 = 64;
    /// A local file (service.json, identity.json) or the task metadata is malformed.
    pub const DATAERR: i32 = 65;
    /// The config folder or a file in it cannot be read.
    pub const NOINPUT: i32 = 66;
    /// AWS or the task metadata endpoint stayed unreachable or throttled until --timeout.
    pub const UNAVAILABLE: i32 = 69;
    /// A bug: please report it.
    pub const SOFTWARE: i32 = 70;
    /// The daemon could not be run (`init` failed, exec or spawn failed).
    pub const OSERR: i32 = 71;
    /// The peerstore or service.json could not be written.
    pub const CANTCREAT: i32 = 73;
    /// --timeout passed without a safe action (too few peers, no agreement).
    pub const TEMPFAIL: i32 = 75;
    /// --state-root: genesis.json says a cluster was founded there, but none of
    /// its peers is live and this peer has no state (a total loss with the
    /// state gone): founding again would make a new, empty cluster. The
    /// message names the record, its founders and date, and --refound.
    pub const CLUSTER_LOST: i32 = 76;
    /// AWS denied an action: the message names the IAM action to grant.
    pub const NOPERM: i32 = 77;
    /// Unsafe or inconsistent configuration (empty cluster secret, missing
    /// Cloud Map namespace or service, conflicting ipfs-cluster variables:
    /// a CLUSTER_ID not the private key's, a --cluster-port not the listen port).
    pub const CONFIG: i32 = 78;
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}", .0.join("; "))]
    Usage(Vec<String>),
    #[error("{}: {detail}", .path.display())]
    BadFile { path: PathBuf, detail: String },
    #[error("cannot read {}: {source}", .path.display())]
    Unreadable { path: PathBuf, source: std::io::Error },
    #[error("ECS task metadata {url}: {detail}")]
    Metadata {
        url: String,
        detail: String,
        unavailable: bool,
    },
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
    #[error("gave up after {} without a safe way to start (last reason: {reason})", humantime::format_duration(*.waited))]
    GaveUp { waited: Duration, reason: String },
    #[error(
        "gave up after {}: {} (genesis record {id}) says a cluster was founded at {founded_at} by {founders}, but \
         none of its peers is live and this peer has no state. Bring its peers or their state (the slots under \
         the state root) back; or, to found a new, EMPTY cluster and lose its pinset, set --refound {id} \
         (BOOTSTRAP_REFOUND={id})",
        humantime::format_duration(*.waited), .path.display()
    )]
    ClusterLost {
        waited: Duration,
        path: PathBuf,
        id: String,
        founders: String,
        founded_at: String,
    },
    #[error("cannot write {}: {source}", .path.display())]
    Write { path: PathBuf, source: std::io::Error },
    #[error("{what} ({bin}): {detail}")]
    Daemon {
        bin: String,
        what: &'static str,
        detail: String,
    },
    #[error("{0}")]
    Unsafe(String),
    #[error("internal error: {0} (please report it)")]
    Internal(String),
    #[error("stopped by signal {signal} before the daemon started")]
    Interrupted { signal: i32 },
}

impl Error {
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) => code::USAGE,
            Error::BadFile { .. } => code::DATAERR,
            Error::Unreadable { .. } => code::NOINPUT,
            Error::Metadata { unavailable: true, .. } => code::UNAVAILABLE,
            Error::Metadata { unavailable: false, .. } => code::DATAERR,
            Error::Discovery(e) => e.exit_code(),
            Error::GaveUp { .. } => code::TEMPFAIL,
            Error::ClusterLost { .. } => code::CLUSTER_LOST,
            Error::Write { .. } => code::CANTCREAT,
            Error::Daemon { .. } => code::OSERR,
            Error::Unsafe(_) => code::CONFIG,
            Error::Internal(_) => code::SOFTWARE,
            Error::Interrupted { signal } => 128 + signal,
        }
    }

    pub fn usage(msg: impl Into<String>) -> Error {
        Error::Usage(vec![msg.into()])
    }

    pub fn bad_file(path: impl Into<PathBuf>, detail: impl Into<String>) -> Error {
        Error::BadFile {
            path: path.into(),
            detail: detail.into(),
        }
    }
}
