//! The shell around `--state-root`: the `slot` mode (kubo's container takes a
//! slot and execs kubo on it), this task's slot for `run`, `plan` and
//! `health`, and the genesis record around the founding decision. The
//! files are `slot`'s and `genesis`'s; the rules are `decide`'s.

use std::ffi::OsString;
use std::path::Path;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::config::Config;
use crate::decide::Founded;
use crate::exit::Error;
use crate::genesis::{self, Created, Genesis};
use crate::local::LocalPeer;
use crate::peer::{Consensus, PeerId};
use crate::slot::{self, Holder, Lock, SlotFile};

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// This task's name in holder records: the ECS task ID, else the host name.
pub fn task_name(task_id: Option<&str>) -> String {
    if let Some(id) = task_id {
        return id.to_owned();
    }
    let mut buf = [0u8; 256];
    if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0 {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        if end > 0 {
            return String::from_utf8_lossy(&buf[..end]).into_owned();
        }
    }
    format!("pid-{}", std::process::id())
}

fn jitter(min_ms: u64, max_ms: u64) -> Duration {
    Duration::from_millis(fastrand::u64(min_ms..=max_ms))
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::Write {
        path: path.to_owned(),
        source,
    }
}

/// The state root must exist: a missing one is an unmounted volume, and
/// creating it would give this task a state root of its own.
fn ensure_root(root: &Path) -> Result<(), Error> {
    match std::fs::metadata(root) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(Error::Unreadable {
            path: root.to_owned(),
            source: std::io::Error::other("--state-root (BOOTSTRAP_STATE_ROOT) is not a folder"),
        }),
        Err(e) => Err(Error::Unreadable {
            path: root.to_owned(),
            source: std::io::Error::new(
                e.kind(),
                format!("--state-root (BOOTSTRAP_STATE_ROOT): {e} (is the shared volume mounted there?)"),
            ),
        }),
    }
}

/// Takes a free slot in `slot::claim_order` (members' slots first, then the
/// lowest others while members are fewer than `count`), waiting
/// (non-blocking attempts every 1–2 s) until `deadline`; says which tasks
/// hold them while it waits.
pub async fn claim(root: &Path, count: usize, task: &str, timeout: Duration) -> Result<(slot::Claimed, String), Error> {
    ensure_root(root)?;
    let deadline = Instant::now() + timeout;
    let mut said = String::new();
    let nonce = genesis::random_hex(8).map_err(io_err(root))?;
    loop {
        let holder = Holder {
            task: task.to_owned(),
            since: now_rfc3339(),
            nonce: nonce.clone(),
        };
        match slot::try_claim(root, count, &holder).map_err(io_err(&slot::slots_dir(root)))? {
            Ok(claimed) => {
                info!(slot = claimed.index, state_root = %root.display(), "took a state slot");
                return Ok((claimed, nonce));
            }
            Err(busy) => {
                let holders = slot::describe_holders(&busy);
                if Instant::now() >= deadline {
                    return Err(Error::GaveUp {
                        waited: timeout,
                        reason: format!(
                            "all {count} slots under {} are held: {holders} (a task that vanished keeps its lock \
                             until EFS expires its lease, about 90-180 s)",
                            root.display()
                        ),
                    });
                }
                if holders != said {
                    info!(slots = count, holders = %holders, "no free state slot: waiting");
                    said = holders;
                }
                tokio::time::sleep(jitter(1000, 2000)).await;
            }
        }
    }
}

/// The slot file's content; waits for it until `deadline` when `wait`.
async fn slot_from_file(file: &Path, wait: bool, timeout: Duration) -> Result<SlotFile, Error> {
    let deadline = Instant::now() + timeout;
    let mut said = false;
    loop {
        match slot::read_slot_file(file) {
            Err(why) => return Err(Error::bad_file(file, why)),
            Ok(Some(s)) => return Ok(s),
            Ok(None) if !wait => {
                return Err(Error::Unreadable {
                    path: file.to_owned(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "no slot taken yet (the kubo container's `ipfs-cluster-bootstrap slot` writes it)",
                    ),
                })
            }
            Ok(None) if Instant::now() >= deadline => {
                return Err(Error::GaveUp {
                    waited: timeout,
                    reason: format!(
                        "{} was never written: the kubo container's entrypoint must be `ipfs-cluster-bootstrap \
                         slot` with the same --slot-file",
                        file.display()
                    ),
                })
            }
            Ok(None) => {
                if !said {
                    info!(slot_file = %file.display(), "waiting for the kubo container to take a slot");
                    said = true;
                }
                tokio::time::sleep(jitter(200, 500)).await;
            }
        }
    }
}

/// The slot `run`, `plan` or `health` works in, and the lock `run` holds
/// while its daemon runs. `expect` is only asked for when this process must
/// claim a slot itself (no --slot-file).
pub async fn this_task_slot<F: std::future::Future<Output = Result<usize, Error>>>(
    cfg: &Config,
    root: &Path,
    read_only: bool,
    task: &str,
    expect: impl FnOnce() -> F,
) -> Result<(usize, Option<Lock>), Error> {
    let Some(file) = &cfg.slot_file else {
        // Config refuses read-only modes without a slot file.
        let count = expect().await?;
        let (claimed, _) = claim(root, count, task, cfg.timeout).await?;
        return Ok((claimed.index, Some(claimed.lock)));
    };
    ensure_root(root)?;
    let s = slot_from_file(file, !read_only, cfg.timeout).await?;
    if read_only {
        return Ok((s.slot, None));
    }
    let k = s.slot;
    let taken = slot::slot_lock(root, k);
    let holder = slot::read_holder(root, k);
    let ours = holder
        .as_ref()
        .is_some_and(|h| !s.nonce.is_empty() && h.nonce == s.nonce);
    if !ours || !Lock::is_held(&taken).map_err(io_err(&taken))? {
        let now = match holder {
            Some(h) if !ours => format!("it is now task {}'s (since {})", h.task, h.since),
            _ => "nobody holds it".to_string(),
        };
        return Err(Error::Unsafe(format!(
            "{} names slot {k} of {}, but {now}: the container that took it for this task is gone, and this \
             task has no claim to the slot",
            file.display(),
            root.display()
        )));
    }
    let path = slot::peer_lock(root, k);
    let deadline = Instant::now() + cfg.timeout;
    let mut said = false;
    loop {
        if let Some(lock) = Lock::try_take(&path).map_err(io_err(&path))? {
            info!(slot = k, state_root = %root.display(), "using this task's state slot");
            return Ok((k, Some(lock)));
        }
        if Instant::now() >= deadline {
            return Err(Error::GaveUp {
                waited: cfg.timeout,
                reason: format!(
                    "{} is held by another cluster daemon (of a task that vanished? EFS releases its lock when its \
                     lease expires, about 90-180 s)",
                    path.display()
                ),
            });
        }
        if !said {
            warn!(lock = %path.display(), "the slot's peer.lock is still held: waiting");
            said = true;
        }
        tokio::time::sleep(jitter(1000, 2000)).await;
    }
}

/// The `slot` mode: take a slot, tell the task's other container, exec the
/// program on the slot's kubo repo. Returns only on failure.
pub async fn slot_main(cfg: &Config, root: &Path, count: usize, task: &str) -> Result<i32, Error> {
    let (claimed, nonce) = claim(root, count, task, cfg.timeout).await?;
    let ipfs = slot::ipfs_dir(root, claimed.index);
    std::fs::create_dir_all(&ipfs).map_err(io_err(&ipfs))?;
    // The watchdog first: the slot file tells the other container the slot
    // is taken, so it is written only when nothing else can fail before exec.
    crate::watchdog::spawn(&claimed.lock, cfg.watchdog_interval, crate::watchdog::Fence::Term)?;
    if let Some(file) = &cfg.slot_file {
        let s = SlotFile {
            slot: claimed.index,
            state_root: root.to_owned(),
            task: task.to_owned(),
            nonce,
        };
        slot::write_atomic(file, &serde_json::to_vec(&s).unwrap_or_default()).map_err(io_err(file))?;
    }
    let argv: Vec<OsString> = cfg.daemon_args.iter().map(OsString::from).collect();
    info!(slot = claimed.index, ipfs_path = %ipfs.display(), argv = ?argv, "exec'ing on the slot's kubo repo");
    claimed.lock.keep_across_exec().map_err(io_err(claimed.lock.path()))?;
    let err = crate::launch::exec(&argv, &[("IPFS_PATH", ipfs.into_os_string())]);
    drop(claimed);
    Err(err)
}

pub fn founded(g: &Genesis) -> Founded {
    Founded {
        id: g.id.clone(),
        consensus: g.consensus,
        founders: g.founders.clone(),
        founded_at: g.founded_at.clone(),
    }
}

/// Before anything is written (`init`): CLUSTER_SECRET, when set, against
/// the record's secret, and for a slot without service.json yet the
/// consensus `init` would write (IPFS_CLUSTER_CONSENSUS) against the record's.
pub fn check_before_init(cfg: &Config, current: Option<&Genesis>) -> Result<(), Error> {
    let Some(g) = current else {
        return Ok(());
    };
    if cfg.secret_sha256_env.as_ref().is_some_and(|s| *s != g.secret_sha256) {
        return Err(wrong_secret("CLUSTER_SECRET", g));
    }
    if !crate::local::service_json(&cfg.config_dir).exists() && cfg.init_consensus != g.consensus {
        return Err(Error::Unsafe(format!(
            "IPFS_CLUSTER_CONSENSUS is {}, but the cluster founded in {} (genesis record {}) uses {}: set \
             IPFS_CLUSTER_CONSENSUS={}",
            cfg.init_consensus,
            g.path.display(),
            g.id,
            g.consensus,
            g.consensus
        )));
    }
    Ok(())
}

fn wrong_secret(from: &str, g: &Genesis) -> Error {
    Error::Unsafe(format!(
        "{from} is not the secret of the cluster founded in {} (genesis record {}, {}): this peer could not \
         talk to it. Use the cluster's secret",
        g.path.display(),
        g.id,
        g.founded_at
    ))
}

/// This peer against a record: the same secret, the same consensus.
fn check_record(cfg: &Config, g: &Genesis, local: &LocalPeer) -> Result<(), Error> {
    let secret = cfg
        .secret_sha256_env
        .clone()
        .unwrap_or_else(|| local.secret_sha256_in_file.clone());
    if secret != g.secret_sha256 {
        let from = match cfg.secret_sha256_env {
            Some(_) => "CLUSTER_SECRET".to_string(),
            None => format!(
                "{}'s cluster.secret",
                crate::local::service_json(&cfg.config_dir).display()
            ),
        };
        return Err(wrong_secret(&from, g));
    }
    if g.consensus != local.consensus {
        return Err(Error::Unsafe(format!(
            "{} says consensus {}, but the cluster founded in {} (genesis record {}) uses {}: this slot's \
             peer belongs to another cluster",
            crate::local::service_json(&cfg.config_dir).display(),
            local.consensus,
            g.path.display(),
            g.id,
            g.consensus
        )));
    }
    Ok(())
}

/// The genesis record as `decide` sees it, after checking this peer against
/// it: same consensus, same secret. With `--refound` of the current record,
/// `decide` sees none, and the record a founding creates replaces it
/// (`Some(id)` in the second place).
pub fn read_genesis(
    cfg: &Config,
    current: Option<Genesis>,
    local: &LocalPeer,
) -> Result<(Option<Genesis>, Option<String>), Error> {
    let Some(g) = current else {
        if let Some(id) = &cfg.refound {
            warn!(refound = %id, "--refound is set but there is no genesis record: ignored");
        }
        return Ok((None, None));
    };
    check_record(cfg, &g, local)?;
    match &cfg.refound {
        Some(id) if *id == g.id => {
            warn!(genesis = %g.id, founded_at = %g.founded_at, "--refound: a founding may replace this genesis record; the cluster it names and its pinset are given up");
            Ok((None, Some(g.id)))
        }
        Some(id) => {
            warn!(refound = %id, genesis = %g.id, "--refound does not name the current genesis record (already replaced?): ignored; unset it");
            Ok((Some(g), None))
        }
        None => Ok((Some(g), None)),
    }
}

/// A record that appeared since `read_genesis` (checked against this peer),
/// other than the one `--refound` replaces.
pub fn new_genesis(
    cfg: &Config,
    root: &Path,
    local: &LocalPeer,
    supersedes: Option<&str>,
) -> Result<Option<Genesis>, Error> {
    match genesis::current(root)? {
        Some(g) if supersedes != Some(g.id.as_str()) => {
            check_record(cfg, &g, local)?;
            info!(genesis = %g.id, founded_at = %g.founded_at, "a genesis record appeared while deciding");
            Ok(Some(g))
        }
        _ => Ok(None),
    }
}

/// Before a founding (not one that a record already allows): creates the
/// record, once across the state root. `Ok(None)`: go ahead. `Ok(Some(g))`:
/// record `g` is in place and does not allow this founding.
pub fn create_genesis(
    cfg: &Config,
    root: &Path,
    local: &LocalPeer,
    founders: &[PeerId],
    founded_by: &str,
    supersedes: Option<&str>,
) -> Result<Option<Genesis>, Error> {
    let secret = cfg
        .secret_sha256_env
        .clone()
        .unwrap_or_else(|| local.secret_sha256_in_file.clone());
    let draft = genesis::Draft {
        consensus: local.consensus,
        founders,
        secret_sha256: &secret,
        founded_by,
        supersedes,
    };
    match genesis::create(root, &draft)? {
        Created::Won(g) => {
            info!(genesis = %g.id, path = %g.path.display(), founders = g.founders.len(), "genesis record created");
            Ok(None)
        }
        Created::Lost(g) => {
            check_record(cfg, &g, local)?;
            let sorted = |v: &[PeerId]| {
                let mut v = v.to_vec();
                v.sort();
                v
            };
            // Another member of the same raft founding set wrote it first.
            if g.consensus == Consensus::Raft && sorted(&g.founders) == sorted(founders) {
                info!(genesis = %g.id, "genesis record of this founding set already created by another founder");
                return Ok(None);
            }
            warn!(genesis = %g.id, founded_at = %g.founded_at, "another peer founded the cluster first (genesis record): not founding");
            Ok(Some(g))
        }
    }
}

/// A slot whose peer left the peerset at a scale-in (`retired.json`) is taken
/// again: its peer joins as a new member, and founds nothing (`app` takes it
/// out of the genesis record's founders). The daemon moves its raft folder
/// away when it is removed while running; if it was stopped first, the old
/// raft state is moved away here, as the daemon would (a removed peer that
/// starts on it never becomes ready and exits 0 after about 20 s, forever),
/// and the marker says `rejoining`. Raft state found with `rejoining` came
/// from the join: the peer is a member again and the marker goes.
/// Returns None for a member, else whether the local state changed. `plan`
/// only says what `run` would do.
pub fn settle_retired(cfg: &Config, local: &LocalPeer) -> Result<Option<bool>, Error> {
    if cfg.state_root.is_none() {
        return Ok(None);
    }
    let marker = slot::retired_in(&cfg.config_dir);
    let Ok(bytes) = std::fs::read(&marker) else {
        return Ok(None);
    };
    let mut record: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_else(|_| serde_json::json!({}));
    let rejoining = record["rejoining"].as_bool().unwrap_or(false);
    let has_state = local.consensus == Consensus::Raft && local.has_state;
    match (has_state, rejoining) {
        (true, true) => {
            if !cfg.read_only() {
                std::fs::remove_file(&marker).map_err(io_err(&marker))?;
            }
            info!(peer_id = %local.peer_id, "this slot's peer rejoined after a scale-in: a member again");
            Ok(None)
        }
        _ if cfg.read_only() => {
            info!(marker = %marker.display(), stale_raft_state = has_state, "this slot's peer left the peerset at a scale-in: `run` would start it as a new member");
            Ok(Some(false))
        }
        (moved, _) => {
            if moved {
                let secs = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                let mut aside = local.state_dir.clone().into_os_string();
                aside.push(format!(".retired-{secs}"));
                std::fs::rename(&local.state_dir, &aside).map_err(io_err(&local.state_dir))?;
                warn!(from = %local.state_dir.display(), to = %Path::new(&aside).display(), "this slot's peer left the raft peerset at a scale-in: its stale raft state moved away");
            }
            if !rejoining {
                record["rejoining"] = serde_json::Value::Bool(true);
                slot::write_atomic(&marker, &serde_json::to_vec_pretty(&record).unwrap_or_default())
                    .map_err(io_err(&marker))?;
            }
            info!(peer_id = %local.peer_id, "this slot's peer left the peerset at a scale-in: it joins as a new member");
            Ok(Some(moved))
        }
    }
}
