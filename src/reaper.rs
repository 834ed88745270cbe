//! The opt-in raft reaper (`--reap-after GRACE`), for peers without a state
//! root: a task that ECS replaces comes back as a new peer, so the voter of
//! the old one stays in the raft configuration until someone removes it, and
//! enough of them lose the quorum. While its daemon runs, a supervised peer
//! removes voters whose tasks ECS has reported STOPPED for `GRACE`: one per
//! round, the one stopped longest, and only while a quorum of the voters
//! answers (Consul autopilot's rules). Removing a dead voter never lowers the
//! live count, so a quorum that holds before holds after.
//!
//! `pick` is the policy, pure. `run` is the shell: the registry (which task
//! each peer ID runs in, learnt while the task is registered), `GET /peers`,
//! ECS's task states, and `DELETE /peers/<id>`.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use crate::config::Credentials;
use crate::discovery::Registry;
use crate::ecs::Ecs;
use crate::peer::PeerId;
use crate::rest::{first_chars, quorum, Api, IdEntry, Voter};

/// The voter to remove now, or why none.
pub fn pick(
    me: &PeerId,
    voters: &[Voter],
    stopped_for: &HashMap<PeerId, Duration>,
    grace: Duration,
) -> Result<PeerId, String> {
    if !voters.iter().any(|v| &v.id == me) {
        return Err("this peer is not a voter".into());
    }
    let n = voters.len();
    let live = voters.iter().filter(|v| v.live).count();
    let dead: Vec<&Voter> = voters.iter().filter(|v| !v.live).collect();
    if dead.is_empty() {
        return Err("every voter answers".into());
    }
    if live < quorum(n) {
        return Err(format!(
            "{live} of {n} voters answer, fewer than the {} a removal needs to commit: nothing is removed",
            quorum(n)
        ));
    }
    let mut ripe: Vec<(&PeerId, Duration)> = dead
        .iter()
        .filter_map(|v| Some((&v.id, *stopped_for.get(&v.id)?)))
        .filter(|(_, d)| *d >= grace)
        .collect();
    // The one stopped longest; the lowest ID among equals.
    ripe.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    match ripe.first() {
        Some((id, _)) if live >= quorum(n - 1) => Ok((*id).clone()),
        Some(_) => Err("removing a voter would leave no quorum".into()),
        None => Err(format!(
            "{} voter(s) do not answer, none of them in a task ECS has reported STOPPED for {}",
            dead.len(),
            humantime::format_duration(grace)
        )),
    }
}

pub struct Ctx {
    pub me: PeerId,
    pub api: SocketAddr,
    pub credentials: Option<Credentials>,
    pub ecs: Ecs,
    pub grace: Duration,
}

/// The reaper's context for a supervised raft peer, or None (logged) when
/// the local REST API's address cannot be read.
pub fn context(
    cfg: &crate::config::Config,
    ecs: &Ecs,
    local: &crate::local::LocalPeer,
    grace: Duration,
) -> Option<Ctx> {
    let api = match crate::rest::local_api(cfg, local.api_listen.clone()) {
        Ok(a) => a,
        Err(e) => {
            warn!("the reaper is off: {e}");
            return None;
        }
    };
    Some(Ctx {
        me: local.peer_id.clone(),
        api,
        credentials: cfg.api_credentials.clone(),
        ecs: ecs.clone(),
        grace,
    })
}

/// How often the reaper looks: a third of the grace, between 2 and 30 s.
pub fn interval(grace: Duration) -> Duration {
    (grace / 3).clamp(Duration::from_secs(2), Duration::from_secs(30))
}

/// Runs while the daemon does (the caller drops it when the daemon exits).
/// Each round: one registry listing (Cloud Map DiscoverInstances), the local
/// `GET /peers`, and DescribeTasks only when a voter is down.
pub async fn run<R: Registry>(ctx: &Ctx, registry: &R) {
    let api = match Api::new(ctx.credentials.clone()) {
        Ok(a) => a,
        Err(e) => {
            warn!(error = %e, "the reaper cannot make an HTTP client: it is off");
            return std::future::pending().await;
        }
    };
    info!(grace = %humantime::format_duration(ctx.grace), "reaper on: removes raft voters whose tasks ECS reports stopped");
    // Which task each peer runs in, as long as it was registered; when ECS
    // first said that task was STOPPED (this clock).
    // Every task a peer ID was registered from (one, unless the identity is
    // reused): it counts as stopped only when all of them are.
    let mut task_of: HashMap<PeerId, HashSet<String>> = HashMap::new();
    let mut stopped_since: HashMap<PeerId, Instant> = HashMap::new();
    let mut said = String::new();
    let every = interval(ctx.grace);
    loop {
        let jitter = Duration::from_millis(fastrand::u64(0..=every.as_millis() as u64 / 5));
        tokio::time::sleep(every + jitter).await;
        // Unchecked: ECS is asked only about the tasks of voters that are down.
        match registry.discover_unchecked().await {
            Ok(found) => {
                for c in found.registrations {
                    if let Some(p) = c.peer_id {
                        task_of.entry(p).or_default().insert(c.instance_id);
                    }
                }
            }
            Err(e) => debug!(error = %e, "reaper: discovery failed this round"),
        }
        let entries: Vec<IdEntry> = match api.get_lines(ctx.api, "/peers", Duration::from_secs(20)).await {
            Ok(e) => e,
            Err(e) => {
                debug!(error = %e, "reaper: the local REST API did not list the peers");
                continue;
            }
        };
        let voters = crate::rest::voters(&entries);
        if voters.len() != entries.len() {
            // An entry we cannot read would make the count, and the quorum, smaller.
            debug!("reaper: GET /peers lists an entry that is not a peer ID; nothing this round");
            continue;
        }
        let dead: Vec<&PeerId> = voters.iter().filter(|v| !v.live).map(|v| &v.id).collect();
        stopped_since.retain(|p, _| dead.contains(&p));
        let tasks: Vec<String> = dead.iter().filter_map(|p| task_of.get(*p)).flatten().cloned().collect();
        if !tasks.is_empty() {
            match ctx.ecs.states(&tasks).await {
                Ok(states) => {
                    let now = Instant::now();
                    for p in &dead {
                        match task_of.get(*p) {
                            Some(t) if t.iter().all(|t| states.stopped.contains(t)) => {
                                stopped_since.entry((*p).clone()).or_insert(now);
                            }
                            _ => {
                                stopped_since.remove(*p);
                            }
                        }
                    }
                }
                Err(e) => {
                    warn!(error = %e, "reaper: ECS did not say which tasks stopped (nothing is removed on a failed call)");
                    continue;
                }
            }
        }
        let stopped_for: HashMap<PeerId, Duration> =
            stopped_since.iter().map(|(p, t)| (p.clone(), t.elapsed())).collect();
        let victim = match pick(&ctx.me, &voters, &stopped_for, ctx.grace) {
            Ok(v) => v,
            Err(why) => {
                if !dead.is_empty() && why != said {
                    info!(voters = voters.len(), dead = dead.len(), "reaper: {why}");
                }
                said = why;
                continue;
            }
        };
        let task = task_of
            .get(&victim)
            .map(|t| t.iter().cloned().collect::<Vec<_>>().join(","))
            .unwrap_or_default();
        let path = format!("/peers/{victim}");
        match api
            .call(reqwest::Method::DELETE, ctx.api, &path, Duration::from_secs(60))
            .await
        {
            Ok((200 | 204, _)) => {
                info!(peer_id = %victim, task = %task, voters = voters.len() - 1, "reaper: removed the voter of a stopped task");
                stopped_since.remove(&victim);
                task_of.remove(&victim);
            }
            Ok((status, body)) => {
                warn!(peer_id = %victim, status, body = %first_chars(&body), "reaper: DELETE {path} failed")
            }
            Err(e) => warn!(peer_id = %victim, error = %e, "reaper: DELETE {path} failed"),
        }
        said.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::rest::testing::{pid, voters};

    const G: Duration = Duration::from_secs(60);

    fn stopped(list: &[(u8, u64)]) -> HashMap<PeerId, Duration> {
        list.iter().map(|&(n, s)| (pid(n), Duration::from_secs(s))).collect()
    }

    #[test]
    fn removes_the_longest_stopped_dead_voter_after_the_grace() {
        let v = voters(&[true, true, true, false, false]);
        assert_eq!(pick(&pid(0), &v, &stopped(&[(3, 61), (4, 300)]), G), Ok(pid(4)));
        assert_eq!(pick(&pid(0), &v, &stopped(&[(3, 61), (4, 10)]), G), Ok(pid(3)));
        // Within the grace, or never reported stopped: kept.
        assert!(pick(&pid(0), &v, &stopped(&[(3, 59)]), G)
            .unwrap_err()
            .contains("STOPPED for 1m"));
        assert!(pick(&pid(0), &v, &stopped(&[]), G).is_err());
        // A live voter is never removed, whatever ECS said of its task.
        assert!(pick(&pid(0), &voters(&[true; 3]), &stopped(&[(1, 999)]), G).is_err());
        // Equals: the lowest ID.
        let both = pick(&pid(0), &v, &stopped(&[(3, 100), (4, 100)]), G).unwrap();
        assert_eq!(both, pid(3).min(pid(4)));
    }

    #[test]
    fn never_without_a_quorum_of_live_voters() {
        // 5 voters, 3 dead: no leader; nothing is removed.
        let v = voters(&[true, true, false, false, false]);
        let err = pick(&pid(0), &v, &stopped(&[(2, 999), (3, 999), (4, 999)]), G).unwrap_err();
        assert!(err.contains("2 of 5 voters answer"), "{err}");
        // Exhaustively: a removal happens exactly when the live voters are a
        // quorum, and leaves one.
        for n in 1..=9usize {
            for live in 1..=n {
                let mut l = vec![false; n];
                l.iter_mut().take(live).for_each(|x| *x = true);
                let v = voters(&l);
                let all: HashMap<PeerId, Duration> = v.iter().map(|x| (x.id.clone(), G)).collect();
                let got = pick(&pid(0), &v, &all, G);
                let want = live < n && live >= quorum(n);
                assert_eq!(got.is_ok(), want, "n={n} live={live}: {got:?}");
                if let Ok(id) = got {
                    assert!(!v.iter().find(|x| x.id == id).unwrap().live);
                    assert!(live >= quorum(n - 1));
                }
            }
        }
        assert!(pick(&pid(9), &v, &stopped(&[]), G).unwrap_err().contains("not a voter"));
    }

    #[test]
    fn the_interval_follows_the_grace() {
        assert_eq!(interval(Duration::from_secs(3)), Duration::from_secs(2));
        assert_eq!(interval(Duration::from_secs(30)), Duration::from_secs(10));
        assert_eq!(interval(Duration::from_secs(3600)), Duration::from_secs(30));
    }
}
