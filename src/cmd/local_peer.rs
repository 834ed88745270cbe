//! The local peer for `run` and `plan`: its config (after `init` when there
//! is none yet), its identity checked as the daemon will load it, and the
//! settings that would make it unsafe to start.

use tracing::{info, warn};

use crate::config::{Config, SecretEnv};
use crate::exit::Error;
use crate::launch;
use crate::local::{self, LocalPeer};
use crate::peer::Consensus;

/// The config and identity, running `init` first when service.json is missing.
pub(super) fn prepare(cfg: &Config, read_only: bool) -> Result<LocalPeer, Error> {
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
