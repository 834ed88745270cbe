//! `health`, the container health check: ask the local REST API who it is and
//! whom it sees, discover and probe the others, then judge with `verdict`
//! (pure). Exit 0 healthy, 1 unhealthy.

use tracing::{info, warn};

use crate::config::Config;
use crate::discovery::{Candidate, Registry};
use crate::exit::Error;
use crate::local;
use crate::peer::PeerId;
use crate::probe::Prober;
use crate::view::Probe;

/// What `health` saw, as plain data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// This peer (identity.json, or CLUSTER_ID).
    pub me: PeerId,
    /// The peer ID the local REST API answered `/id` with.
    pub answered_as: PeerId,
    /// `/id`'s `cluster_peers`.
    pub cluster_peers: Vec<PeerId>,
    /// `/id`'s `ipfs.error`: the daemon's IPFS connector cannot reach kubo.
    pub ipfs_error: Option<String>,
    /// The other registrations that are live cluster members; None when
    /// discovery failed.
    pub live: Option<Vec<PeerId>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Sees `sees` of the `live` other live peers (at least half, itself counted).
    Healthy {
        sees: usize,
        live: usize,
    },
    /// Discovery failed: membership not checked (slow AWS must not get every task replaced).
    Unchecked,
    Unhealthy(String),
}

/// The health policy. Ordered guards, first match wins.
pub fn verdict(s: &Seen) -> Verdict {
    if s.answered_as != s.me {
        return Verdict::Unhealthy(format!(
            "the REST API answers as {}, not as this peer {}",
            s.answered_as, s.me
        ));
    }
    if let Some(e) = &s.ipfs_error {
        // The real daemon's /id may list every peer while kubo is down (a
        // restarted crdt peer does): membership says nothing about a peer
        // that can neither pin nor serve.
        let e: String = e.chars().take(200).collect();
        return Verdict::Unhealthy(format!(
            "kubo (IPFS) does not answer this peer (/id's ipfs.error: {e}): it can neither pin nor serve"
        ));
    }
    let Some(live) = &s.live else {
        return Verdict::Unchecked;
    };
    let sees = live.iter().filter(|p| s.cluster_peers.contains(p)).count();
    if 2 * (sees + 1) < live.len() + 1 {
        return Verdict::Unhealthy(format!(
            "this peer sees {sees} of the {} other live peers discovery lists: it is in a minority or stray cluster",
            live.len()
        ));
    }
    Verdict::Healthy { sees, live: live.len() }
}

/// At most this many other registrations are probed per health check.
pub const HEALTH_SAMPLE: usize = 24;

/// `n` of `items` picked at random (all of them when there are no more).
pub fn sample<T>(mut items: Vec<T>, n: usize, rng: &mut fastrand::Rng) -> Vec<T> {
    if items.len() > n {
        rng.shuffle(&mut items);
        items.truncate(n);
    }
    items
}

/// `health`: 0 when the local REST API answers with this peer's ID and the
/// peer sees at least half of the live peers discovery lists (counting
/// itself), else 1. A discovery failure does not fail it.
pub async fn check<R: Registry>(cfg: &Config, registry: &R, prober: &Prober) -> Result<i32, Error> {
    let unhealthy = |why: String| {
        tracing::error!(healthy = false, "unhealthy: {why}");
        Ok(1)
    };
    // Only the identity and the API address: the running daemon writes
    // raft.db meanwhile, and a torn read must not make the task unhealthy.
    let (peer_id, api_listen) = local::read_identity(&cfg.config_dir, cfg.cluster_id_env.as_deref())?;
    let api = match crate::rest::local_api(cfg, api_listen) {
        Ok(a) => a,
        Err(why) => return unhealthy(why),
    };
    let id = match prober.id_at(api).await {
        Ok(x) => x,
        Err(e) => return unhealthy(format!("the REST API at {api} does not answer /id: {e}")),
    };
    let mut seen = Seen {
        me: peer_id.clone(),
        answered_as: id.peer,
        cluster_peers: id.cluster_peers,
        ipfs_error: id.ipfs_error,
        live: None,
    };
    // Discovery and probes only when the verdict can depend on them.
    if seen.answered_as == seen.me && seen.ipfs_error.is_none() {
        match registry.discover().await {
            Ok(found) => {
                let others: Vec<Candidate> = found
                    .registrations
                    .into_iter()
                    .filter(|c| c.peer_id.as_ref() != Some(&seen.me))
                    .collect();
                // ECS gives a health check 10 s at most: with hundreds of
                // peers, judge by a random sample of them.
                let others = sample(others, HEALTH_SAMPLE, &mut fastrand::Rng::new());
                let live = prober
                    .probe_all(others)
                    .await
                    .observed
                    .into_iter()
                    .filter(|o| o.registration.peer_id != seen.me)
                    .filter(|o| {
                        matches!(&o.probe, Probe::Daemon)
                            || matches!(&o.probe, Probe::Api { cluster_peers } if !cluster_peers.is_empty())
                    })
                    .map(|o| o.registration.peer_id)
                    .collect();
                seen.live = Some(live);
            }
            Err(e) => warn!(error = %e, "discovery failed"),
        }
    }
    match verdict(&seen) {
        Verdict::Unhealthy(why) => unhealthy(format!("{why} (REST API at {api})")),
        Verdict::Unchecked => {
            warn!("healthy as far as can be told: discovery failed, membership not checked");
            Ok(0)
        }
        Verdict::Healthy { sees, live } => {
            info!(healthy = true, sees, live, "healthy");
            Ok(0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer::tests::IDS;

    fn id(i: usize) -> PeerId {
        PeerId::parse(IDS[i]).unwrap()
    }

    fn seen(cluster_peers: &[usize], live: Option<&[usize]>, ipfs_error: Option<&str>) -> Seen {
        Seen {
            me: id(0),
            answered_as: id(0),
            cluster_peers: cluster_peers.iter().map(|i| id(*i)).collect(),
            ipfs_error: ipfs_error.map(str::to_owned),
            live: live.map(|l| l.iter().map(|i| id(*i)).collect()),
        }
    }

    fn check(s: Seen, says: &str) {
        let v = verdict(&s);
        let text = format!("{v:?}");
        assert!(text.contains(says), "{s:?}: {text} lacks {says:?}");
    }

    #[test]
    fn one_row_per_rule() {
        let mut other = seen(&[0, 1], Some(&[1]), None);
        other.answered_as = id(2);
        check(other, "not as this peer");
        check(seen(&[0], None, None), "Unchecked");
        check(seen(&[0, 1, 2], Some(&[1, 2]), None), "Healthy { sees: 2, live: 2 }");
        check(seen(&[0, 1], Some(&[1, 2]), None), "Healthy { sees: 1, live: 2 }");
        check(seen(&[0, 3], Some(&[1, 2]), None), "minority or stray cluster");
        // kubo down: unhealthy whatever the membership looks like (a fresh
        // crdt peer lists only itself, a restarted one may list everyone),
        // and also when discovery failed.
        let refused = Some("dial tcp 127.0.0.1:5001: connect: connection refused");
        check(seen(&[0], Some(&[1, 2]), refused), "kubo (IPFS) does not answer");
        check(seen(&[0, 1, 2], Some(&[1, 2]), refused), "kubo (IPFS) does not answer");
        check(seen(&[0, 1, 2], None, refused), "kubo (IPFS) does not answer");
    }

    #[test]
    fn a_large_cluster_is_judged_by_a_bounded_sample() {
        let mut rng = fastrand::Rng::with_seed(3);
        let few: Vec<u32> = (0..10).collect();
        assert_eq!(sample(few.clone(), HEALTH_SAMPLE, &mut rng), few);
        let many: Vec<u32> = (0..1000).collect();
        let picked = sample(many, HEALTH_SAMPLE, &mut rng);
        assert_eq!(picked.len(), HEALTH_SAMPLE);
        let mut distinct = picked.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), HEALTH_SAMPLE, "no registration twice");
    }
}
