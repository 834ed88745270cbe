//! Scale-in under raft: when ECS stops a task because the service's desired
//! count went down, the task's peer leaves the raft peerset before it stops,
//! so that the voters stay the peers that run, and its slot is marked
//! retired (a later claim prefers the slots of voters).
//!
//! `plan` is the policy, pure: whether this stop is a scale-in, whether
//! leaving keeps a quorum, and which pins must first get replicas elsewhere.
//! `on_stop` is the shell, run by `--supervise` on the first SIGTERM, before
//! the signal reaches the daemon: ECS, the local REST API, the state root's
//! `retire.lock` (one retirement at a time), `DELETE /peers/{self}` and the
//! wait for the pins' replicas. Whatever fails, the daemon still gets its
//! SIGTERM; a peer that does not leave stays a voter (a restart would).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::config::Credentials;
use crate::ecs::Ecs;
use crate::peer::PeerId;
use crate::rest::{first_chars, quorum, Api, IdEntry, Voter};

/// A pin allocated to this peer, with the peers that report it `pinned`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinFacts {
    pub cid: String,
    /// `replication_factor_min` (-1: everywhere).
    pub rmin: i32,
    pub allocations: Vec<PeerId>,
    pub pinned_on: Vec<PeerId>,
}

/// What `plan` decides from.
#[derive(Debug, Clone)]
pub struct Facts<'a> {
    pub me: &'a PeerId,
    pub raft: bool,
    /// The ECS service's desiredCount, and how many deployments it has
    /// (more than one: a rolling update is replacing tasks).
    pub desired: usize,
    pub deployments: usize,
    pub voters: &'a [Voter],
    pub pins: &'a [PinFacts],
    /// The daemon re-allocates a leaving peer's pins (repinning enabled).
    pub repinning: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Stop without leaving: the peer stays a voter.
    Stay(String),
    /// Leave the peerset, then wait until these pins (CID, replicas needed)
    /// have that many `pinned` replicas on the staying voters.
    Leave { wait_for: Vec<(String, usize)> },
}

/// The scale-in policy. Ordered guards, first match wins.
pub fn plan(f: &Facts<'_>) -> Plan {
    if !f.raft {
        return Plan::Stay("crdt: a peer leaves by stopping (its ping metric expires)".into());
    }
    if f.desired == 0 {
        return Plan::Stay("the service is scaled to 0: a stop of the whole cluster, not a scale-in".into());
    }
    if f.deployments > 1 {
        return Plan::Stay(format!(
            "the service has {} deployments: a rolling update replaces this task, and its replacement takes this slot",
            f.deployments
        ));
    }
    let n = f.voters.len();
    if !f.voters.iter().any(|v| &v.id == f.me) {
        return Plan::Stay("this peer is not a voter".into());
    }
    if n <= f.desired {
        return Plan::Stay(format!(
            "not a scale-in: {n} voters for a desired count of {}",
            f.desired
        ));
    }
    let live = f.voters.iter().filter(|v| v.live).count();
    if live.saturating_sub(1) < quorum(n - 1) {
        return Plan::Stay(format!(
            "leaving would lose quorum: {live} of {n} voters answer, and {} voters need {} (remove dead voters first)",
            n - 1,
            quorum(n - 1)
        ));
    }
    let staying: HashSet<&PeerId> = f
        .voters
        .iter()
        .filter(|v| v.live && &v.id != f.me)
        .map(|v| &v.id)
        .collect();
    let mut wait_for = Vec::new();
    for p in f.pins.iter().filter(|p| p.allocations.contains(f.me)) {
        // More replicas than staying voters can never be: as many as there are.
        let need = usize::try_from(p.rmin).unwrap_or(0).clamp(1, staying.len().max(1));
        let have = p.pinned_on.iter().filter(|id| staying.contains(id)).count();
        if have < need {
            wait_for.push((p.cid.clone(), need));
        }
    }
    if !wait_for.is_empty() && !f.repinning {
        return Plan::Stay(format!(
            "{} pin(s) allocated to this peer (first: {}) would have fewer than replication_factor_min pinned \
             replicas on the staying peers, and repinning is disabled, so nothing would re-allocate them: set \
             CLUSTER_DISABLEREPINNING=false",
            wait_for.len(),
            wait_for[0].0
        ));
    }
    Plan::Leave { wait_for }
}

/// `slots/<k>/retired.json`: this slot's peer left the peerset at a scale-in.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Retired {
    pub peer: String,
    pub at: String,
    pub task: String,
    pub desired: usize,
    pub voters_before: usize,
}

/// What the shell needs.
pub struct Ctx {
    pub me: PeerId,
    pub raft: bool,
    /// The local REST API, and the port every peer's API listens on.
    pub api: SocketAddr,
    pub credentials: Option<Credentials>,
    pub ecs: Ecs,
    /// The ECS service (--ecs-service or the task metadata's), else looked
    /// up from the task at stop time.
    pub service: Option<String>,
    pub task_arn: Option<String>,
    pub state_root: PathBuf,
    pub slot: usize,
    pub task: String,
    pub repinning: bool,
    pub timeout: Duration,
}

/// The retirement's context for a supervised raft peer in a slot, or None
/// (with the reason logged) when it cannot work.
pub fn context(
    cfg: &crate::config::Config,
    root: &std::path::Path,
    ecs: &Ecs,
    local: &crate::local::LocalPeer,
    task: Option<&crate::selfaddr::Task>,
) -> Option<Ctx> {
    let api = match crate::rest::local_api(cfg, local.api_listen.clone()) {
        Ok(a) => a,
        Err(e) => {
            warn!("scale-in retirement is off: {e}");
            return None;
        }
    };
    let Some(slot) = cfg
        .config_dir
        .parent()
        .and_then(|d| d.file_name())
        .and_then(|n| n.to_str())
        .and_then(|n| n.parse().ok())
    else {
        warn!(config = %cfg.config_dir.display(), "scale-in retirement is off: the config folder is no slot's");
        return None;
    };
    let service_json = crate::local::read_json(&crate::local::service_json(&cfg.config_dir))
        .ok()
        .map(serde_json::Value::Object);
    let env = std::env::var("CLUSTER_DISABLEREPINNING").ok();
    Some(Ctx {
        me: local.peer_id.clone(),
        raft: local.consensus == crate::peer::Consensus::Raft,
        api,
        credentials: cfg.api_credentials.clone(),
        ecs: ecs.clone(),
        service: cfg.ecs_service.clone().or_else(|| task.and_then(|t| t.service.clone())),
        task_arn: task.map(|t| t.arn.clone()),
        state_root: root.to_owned(),
        slot,
        task: crate::stateroot::task_name(task.map(|t| t.id.as_str())),
        repinning: repinning(env.as_deref(), service_json.as_ref()),
        timeout: cfg.scale_in_timeout,
    })
}

#[derive(Deserialize)]
struct PinEntry {
    cid: serde_json::Value,
    #[serde(default)]
    allocations: Option<Vec<String>>,
    #[serde(default)]
    replication_factor_min: i32,
}

#[derive(Deserialize)]
struct StatusEntry {
    cid: serde_json::Value,
    #[serde(default)]
    peer_map: Option<HashMap<String, PeerStatus>>,
}

#[derive(Deserialize)]
struct PeerStatus {
    #[serde(default)]
    status: String,
}

/// A CID as the API writes it: a string, or `{"/": "…"}`.
fn cid_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Object(m) => m.get("/").and_then(|x| x.as_str()).unwrap_or_default().to_owned(),
        other => other.to_string(),
    }
}

fn ids(list: Option<Vec<String>>) -> Vec<PeerId> {
    list.unwrap_or_default()
        .iter()
        .filter_map(|s| PeerId::parse(s).ok())
        .collect()
}

/// `/ip4/10.0.0.5/tcp/9096/p2p/…` → 10.0.0.5, the first non-loopback IPv4.
fn host_of(addresses: &[String]) -> Option<std::net::IpAddr> {
    use crate::peer::{Host, Multiaddr};
    addresses.iter().find_map(|a| match Multiaddr::parse(a).ok()?.host {
        Host::Ip(ip @ std::net::IpAddr::V4(v4)) if !v4.is_loopback() && !v4.is_unspecified() => Some(ip),
        _ => None,
    })
}

/// Whether the daemon re-allocates a removed peer's pins: CLUSTER_DISABLEREPINNING
/// (envconfig: Go's strconv.ParseBool) over service.json's
/// `cluster.disable_repinning` (absent means false, as the daemon reads it).
pub fn repinning(env: Option<&str>, service_json: Option<&serde_json::Value>) -> bool {
    let disabled = match env.map(str::trim) {
        Some("1" | "t" | "T" | "TRUE" | "true" | "True") => true,
        Some("0" | "f" | "F" | "FALSE" | "false" | "False") => false,
        _ => service_json
            .and_then(|v| v.pointer("/cluster/disable_repinning"))
            .and_then(|v| v.as_bool())
            .unwrap_or(false),
    };
    !disabled
}

/// Run on the first SIGTERM of a supervised raft peer with a state root:
/// leaves the peerset when the stop is a scale-in. Never fails: whatever
/// happens, the caller then forwards the signal to the daemon.
pub async fn on_stop(ctx: &Ctx) {
    let deadline = Instant::now() + ctx.timeout;
    match tokio::time::timeout(ctx.timeout, retire(ctx, deadline)).await {
        Ok(Ok(Some(why))) => info!(scale_in = false, "stopping without leaving the peerset: {why}"),
        Ok(Ok(None)) => {}
        Ok(Err(e)) => warn!(
            scale_in = false,
            "stopping without leaving the peerset: {e} (the peer stays a voter, as after a restart)"
        ),
        Err(_) => warn!(
            timeout = %humantime::format_duration(ctx.timeout),
            "--scale-in-timeout ran out: stopping now (if the peer had already left, its slot was not marked retired)"
        ),
    }
}

fn left(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

/// Kept back from the budget (at most a third of it) for reading the
/// peerset again after a `DELETE` whose outcome is unknown, and the marker.
const RESERVE: Duration = Duration::from_secs(10);

/// `STATE_ROOT/retire.last`: the peer that left last, which the next one
/// waits to see gone from its own daemon's peerset before it counts.
fn last_file(ctx: &Ctx) -> std::path::PathBuf {
    ctx.state_root.join("retire.last")
}

/// The voters in the local daemon's `GET /peers`; an entry whose ID does not
/// parse fails the read (it would make the count, and so the quorum, smaller).
async fn read_voters(api: &Api, ctx: &Ctx, timeout: Duration) -> Result<(Vec<IdEntry>, Vec<Voter>), String> {
    let entries: Vec<IdEntry> = api.get_lines(ctx.api, "/peers", timeout).await?;
    let voters = crate::rest::voters(&entries);
    if voters.len() != entries.len() {
        return Err("GET /peers lists an entry that is not a peer ID".into());
    }
    Ok((entries, voters))
}

fn facts<'a>(ctx: &'a Ctx, state: crate::ecs::ServiceState, voters: &'a [Voter], pins: &'a [PinFacts]) -> Facts<'a> {
    Facts {
        me: &ctx.me,
        raft: ctx.raft,
        desired: state.desired,
        deployments: state.deployments,
        voters,
        pins,
        repinning: ctx.repinning,
    }
}

/// Ok(Some(reason)) when the peer stays, Ok(None) when it left.
async fn retire(ctx: &Ctx, deadline: Instant) -> Result<Option<String>, String> {
    if !ctx.raft {
        return Ok(Some("crdt: a peer leaves by stopping".into()));
    }
    let service = match (&ctx.service, &ctx.task_arn) {
        (Some(s), _) => s.clone(),
        (None, Some(arn)) => ctx
            .ecs
            .service_of(arn)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("this task belongs to no ECS service")?,
        (None, None) => return Ok(Some("no ECS service is known (set --ecs-service)".into())),
    };
    let api = Api::new(ctx.credentials.clone())?;
    let work_until = deadline.checked_sub(RESERVE.min(ctx.timeout / 3)).unwrap_or(deadline);
    let call_timeout = |cap: u64| left(work_until).min(Duration::from_secs(cap));
    // Cheap checks before the lock and the pins: most stops are not scale-ins.
    let state = ctx.ecs.service_state(&service).await.map_err(|e| e.to_string())?;
    let (_, voters) = read_voters(&api, ctx, call_timeout(20)).await?;
    if let Plan::Stay(why) = plan(&facts(ctx, state, &voters, &[])) {
        return Ok(Some(why));
    }
    // One retirement at a time: each sees the peerset the last one left.
    let lock_path = ctx.state_root.join("retire.lock");
    let lock = loop {
        match crate::slot::Lock::try_take(&lock_path) {
            Ok(Some(l)) => break l,
            Ok(None) if Instant::now() < work_until => tokio::time::sleep(Duration::from_millis(500)).await,
            Ok(None) => return Err(format!("{} stayed held (another peer leaving)", lock_path.display())),
            Err(e) => return Err(format!("{}: {e}", lock_path.display())),
        }
    };
    // The last peer to leave must be gone from this daemon's view first, or
    // the count would be one voter too many.
    let last = std::fs::read_to_string(last_file(ctx))
        .ok()
        .and_then(|t| PeerId::parse(t.trim()).ok())
        .filter(|p| *p != ctx.me);
    let (entries, voters) = loop {
        let (entries, voters) = read_voters(&api, ctx, call_timeout(20)).await?;
        match &last {
            Some(p) if voters.iter().any(|v| &v.id == p) => {
                if Instant::now() >= work_until {
                    return Err(format!(
                        "the peer that left before ({p}) is still in this daemon's peerset"
                    ));
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            _ => break (entries, voters),
        }
    };
    // Read again under the lock: the desired count may have changed.
    let state = ctx.ecs.service_state(&service).await.map_err(|e| e.to_string())?;
    if let Plan::Stay(why) = plan(&facts(ctx, state, &voters, &[])) {
        return Ok(Some(why));
    }
    let allocated: Vec<PinEntry> = api.get_lines(ctx.api, "/allocations", call_timeout(30)).await?;
    let mine: HashMap<String, PinEntry> = allocated
        .into_iter()
        .filter(|p| {
            p.allocations
                .as_deref()
                .unwrap_or_default()
                .iter()
                .any(|a| a == ctx.me.as_str())
        })
        .map(|p| (cid_text(&p.cid), p))
        .collect();
    let pins = match mine.is_empty() {
        true => Vec::new(),
        false => pin_facts(&api, ctx.api, &mine, call_timeout(60)).await?,
    };
    let wait_for = match plan(&facts(ctx, state, &voters, &pins)) {
        Plan::Stay(why) => return Ok(Some(why)),
        Plan::Leave { wait_for } => wait_for,
    };
    info!(
        scale_in = true,
        desired = state.desired,
        voters = voters.len(),
        pins_to_replicate = wait_for.len(),
        "scale-in: leaving the raft peerset before stopping"
    );
    let path = format!("/peers/{}", ctx.me);
    let answer = api
        .call(reqwest::Method::DELETE, ctx.api, &path, call_timeout(60))
        .await;
    if !matches!(answer, Ok((200 | 204, _))) {
        // The outcome of a failed or cut-off removal is unknown: the leader
        // may commit it after we stopped listening. Read the peerset again.
        let why = match &answer {
            Ok((status, body)) => format!("DELETE {path}: HTTP {status}: {}", first_chars(body)),
            Err(e) => format!("DELETE {path}: {e}"),
        };
        let again = read_voters(&api, ctx, left(deadline).min(Duration::from_secs(5))).await;
        match again {
            Ok((_, now)) if !now.iter().any(|v| v.id == ctx.me) => {
                warn!(error = %why, "the removal's answer was lost, but this peer is no longer a voter");
            }
            _ => return Err(why),
        }
    }
    info!(
        scale_in = true,
        voters = voters.len() - 1,
        slot = ctx.slot,
        "left the raft peerset"
    );
    mark_retired(ctx, state.desired, voters.len());
    if let Err(e) = crate::slot::write_atomic(&last_file(ctx), ctx.me.as_str().as_bytes()) {
        warn!(path = %last_file(ctx).display(), error = %e, "could not record the peer that left");
    }
    // The next retirement may go on: it waits for this removal to show.
    drop(lock);
    if !wait_for.is_empty() {
        // Ask a staying peer: this one's daemon shuts down once removed, while
        // this task's kubo still serves the blocks.
        let others: Vec<SocketAddr> = entries
            .iter()
            .filter(|e| e.id != ctx.me.as_str() && e.live())
            .filter_map(|e| host_of(e.addresses.as_deref().unwrap_or_default()))
            .map(|ip| SocketAddr::new(ip, ctx.api.port()))
            .collect();
        let staying: HashSet<PeerId> = voters
            .iter()
            .filter(|v| v.live && v.id != ctx.me)
            .map(|v| v.id.clone())
            .collect();
        wait_replicas(&api, &others, &staying, &wait_for, work_until).await;
    }
    Ok(None)
}

/// `retired.json` in the slot's cluster folder (its peer is no voter now).
fn mark_retired(ctx: &Ctx, desired: usize, voters_before: usize) {
    let record = Retired {
        peer: ctx.me.to_string(),
        at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        task: ctx.task.clone(),
        desired,
        voters_before,
    };
    let marker = crate::slot::retired_file(&ctx.state_root, ctx.slot);
    match crate::slot::write_atomic(&marker, &serde_json::to_vec_pretty(&record).unwrap_or_default()) {
        Ok(()) => info!(path = %marker.display(), "slot marked retired"),
        Err(e) => warn!(path = %marker.display(), error = %e, "could not mark the slot retired"),
    }
}

/// The pins allocated to this peer, with where they are pinned (GET /pins,
/// the cluster-wide status).
async fn pin_facts(
    api: &Api,
    addr: SocketAddr,
    mine: &HashMap<String, PinEntry>,
    timeout: Duration,
) -> Result<Vec<PinFacts>, String> {
    let status: Vec<StatusEntry> = api.get_lines(addr, "/pins", timeout).await?;
    let pinned: HashMap<String, Vec<PeerId>> = status
        .into_iter()
        .map(|s| {
            let on = s
                .peer_map
                .unwrap_or_default()
                .into_iter()
                .filter(|(_, st)| st.status == "pinned")
                .filter_map(|(id, _)| PeerId::parse(&id).ok())
                .collect();
            (cid_text(&s.cid), on)
        })
        .collect();
    Ok(mine
        .iter()
        .map(|(cid, p)| PinFacts {
            cid: cid.clone(),
            rmin: p.replication_factor_min,
            allocations: ids(p.allocations.clone()),
            pinned_on: pinned.get(cid).cloned().unwrap_or_default(),
        })
        .collect())
}

/// Polls a staying peer's GET /pins until every pin in `wait_for` is pinned
/// on enough staying voters, or the deadline.
async fn wait_replicas(
    api: &Api,
    others: &[SocketAddr],
    staying: &HashSet<PeerId>,
    wait_for: &[(String, usize)],
    deadline: Instant,
) {
    let mut short = wait_for.len();
    let mut turn = 0usize;
    while Instant::now() < deadline && !others.is_empty() {
        let addr = others[turn % others.len()];
        turn += 1;
        match api
            .get_lines::<StatusEntry>(addr, "/pins", left(deadline).min(Duration::from_secs(20)))
            .await
        {
            Ok(status) => {
                let by_cid: HashMap<String, usize> = status
                    .into_iter()
                    .map(|s| {
                        let n = s
                            .peer_map
                            .unwrap_or_default()
                            .into_iter()
                            .filter(|(id, st)| {
                                st.status == "pinned" && PeerId::parse(id).is_ok_and(|p| staying.contains(&p))
                            })
                            .count();
                        (cid_text(&s.cid), n)
                    })
                    .collect();
                short = wait_for
                    .iter()
                    .filter(|(cid, need)| by_cid.get(cid).copied().unwrap_or(0) < *need)
                    .count();
                if short == 0 {
                    info!(
                        scale_in = true,
                        pins = wait_for.len(),
                        "the pins this peer held are replicated on the staying peers"
                    );
                    return;
                }
            }
            Err(e) => warn!(error = %e, "asking a staying peer for the pins' status"),
        }
        tokio::time::sleep(left(deadline).min(Duration::from_secs(2))).await;
    }
    warn!(
        scale_in = true,
        pins = short,
        "stopping before every pin this peer held has its replicas on the staying peers; its copy stays in the \
         retired slot's kubo repo"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::rest::testing::{pid, voters};

    fn facts<'a>(me: &'a PeerId, v: &'a [Voter], pins: &'a [PinFacts], desired: usize) -> Facts<'a> {
        Facts {
            me,
            raft: true,
            desired,
            deployments: 1,
            voters: v,
            pins,
            repinning: false,
        }
    }

    fn stays(p: Plan, needle: &str) {
        match p {
            Plan::Stay(why) => assert!(why.contains(needle), "{why:?} lacks {needle:?}"),
            other => panic!("expected Stay({needle}), got {other:?}"),
        }
    }

    #[test]
    fn only_a_raft_scale_in_leaves() {
        let me = pid(0);
        let v = voters(&[true; 5]);
        assert_eq!(plan(&facts(&me, &v, &[], 3)), Plan::Leave { wait_for: vec![] });
        stays(
            plan(&Facts {
                raft: false,
                ..facts(&me, &v, &[], 3)
            }),
            "crdt",
        );
        stays(plan(&facts(&me, &v, &[], 0)), "scaled to 0");
        stays(
            plan(&Facts {
                deployments: 2,
                ..facts(&me, &v, &[], 3)
            }),
            "rolling update",
        );
        stays(plan(&facts(&me, &v, &[], 5)), "not a scale-in");
        stays(plan(&facts(&me, &v, &[], 7)), "not a scale-in");
        let other = pid(9);
        stays(plan(&facts(&other, &v, &[], 3)), "not a voter");
    }

    #[test]
    fn never_below_quorum() {
        let me = pid(0);
        // 5 voters, 2 dead: 3 live; leaving leaves 2 of 4, which need 3.
        let v = voters(&[true, true, true, false, false]);
        stays(plan(&facts(&me, &v, &[], 3)), "lose quorum");
        // 5 voters, 1 dead: leaving leaves 3 of 4 live, quorum 3.
        let v = voters(&[true, true, true, true, false]);
        assert!(matches!(plan(&facts(&me, &v, &[], 3)), Plan::Leave { .. }));
        // Exhaustively: leaving keeps live-1 >= quorum(n-1).
        for n in 2..=9usize {
            for live in 1..=n {
                let mut l = vec![false; n];
                l.iter_mut().take(live).for_each(|x| *x = true);
                let v = voters(&l);
                let leaves = matches!(plan(&facts(&me, &v, &[], 1)), Plan::Leave { .. });
                assert_eq!(
                    leaves,
                    live > quorum(n - 1),
                    "n={n} live={live}: leaving needs live - 1 >= quorum(n - 1)"
                );
            }
        }
    }

    #[test]
    fn pins_need_replicas_on_staying_live_voters() {
        let me = pid(0);
        let v = voters(&[true, true, true, true, false]);
        let pin = |rmin, alloc: &[u8], on: &[u8]| PinFacts {
            cid: format!("cid-{rmin}-{alloc:?}-{on:?}"),
            rmin,
            allocations: alloc.iter().map(|&n| pid(n)).collect(),
            pinned_on: on.iter().map(|&n| pid(n)).collect(),
        };
        // Enough elsewhere; not mine; everywhere (no allocations): nothing to wait for.
        let fine = [pin(2, &[0, 1, 2], &[0, 1, 2]), pin(1, &[3], &[3]), pin(-1, &[], &[0])];
        assert_eq!(plan(&facts(&me, &v, &fine, 3)), Plan::Leave { wait_for: vec![] });
        // Pinned on a dead voter (4) or only on me does not count.
        let short = [pin(2, &[0, 1, 4], &[0, 1, 4]), pin(1, &[0], &[0])];
        stays(plan(&facts(&me, &v, &short, 3)), "CLUSTER_DISABLEREPINNING=false");
        // A minimum above the staying voters (3) waits for as many as there are.
        let many = [pin(5, &[0, 1, 2], &[0, 1, 2])];
        let many_repin = Facts {
            repinning: true,
            ..facts(&me, &v, &many, 3)
        };
        assert_eq!(
            plan(&many_repin),
            Plan::Leave {
                wait_for: vec![(many[0].cid.clone(), 3)]
            }
        );
        let with_repin = Facts {
            repinning: true,
            ..facts(&me, &v, &short, 3)
        };
        match plan(&with_repin) {
            Plan::Leave { mut wait_for } => {
                wait_for.sort();
                let mut want = vec![(short[0].cid.clone(), 2), (short[1].cid.clone(), 1)];
                want.sort();
                assert_eq!(wait_for, want);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn repinning_is_read_as_the_daemon_reads_it() {
        let off = serde_json::json!({"cluster": {"disable_repinning": true}});
        let on = serde_json::json!({"cluster": {"disable_repinning": false}});
        let absent = serde_json::json!({"cluster": {}});
        assert!(!repinning(None, Some(&off)));
        assert!(repinning(None, Some(&on)));
        assert!(repinning(None, Some(&absent)));
        assert!(repinning(Some("false"), Some(&off)));
        assert!(repinning(Some("F"), Some(&off)));
        assert!(!repinning(Some("1"), Some(&on)));
        assert!(!repinning(Some("True"), None));
        // Not a Go bool: the daemon would refuse it; the file's setting is used here.
        assert!(!repinning(Some("yes"), Some(&off)));
    }

    #[test]
    fn api_streams_and_addresses() {
        assert_eq!(cid_text(&serde_json::json!({"/": "bafy"})), "bafy");
        assert_eq!(cid_text(&serde_json::json!("Qm1")), "Qm1");
        let a = vec![
            "/ip4/127.0.0.1/tcp/9096/p2p/x".to_string(),
            "/ip4/10.77.0.5/tcp/9096/p2p/x".to_string(),
        ];
        assert_eq!(host_of(&a), Some("10.77.0.5".parse().unwrap()));
        assert_eq!(host_of(&["/dns4/x/tcp/1".to_string()]), None);
    }
}
