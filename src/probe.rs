//! Probing: for each registration, ask its REST API (`/id`, `/health`) and its
//! cluster port (a waiting sidecar's greeting, or a daemon) at once, with short
//! timeouts. Says what answered; decides nothing.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::config::Credentials;
use crate::contact::{Greeting, MAGIC};
use crate::discovery::Candidate;
use crate::peer::PeerId;
use crate::view::{Observed, Probe};

#[derive(Clone)]
pub struct Prober {
    http: reqwest::Client,
    timeout: Duration,
    credentials: Option<Arc<Credentials>>,
    loopback_only: bool,
}

/// The REST API's `/id` answer, as far as probing reads it.
#[derive(Debug, Clone, Deserialize)]
pub struct IdResponse {
    pub id: String,
    #[serde(default)]
    pub cluster_peers: Option<ClusterPeers>,
    /// The daemon's view of kubo: `error` is set while kubo does not answer.
    #[serde(default)]
    pub ipfs: Option<IpfsId>,
}

/// The most `cluster_peers` a probe reads from another peer's `/id`: raft
/// sets are compared up to this size. A longer list (a large crdt cluster)
/// is skipped unread, and its peer counts as a running daemon: at 1,000
/// peers, reading every list was a million peer IDs decoded per round.
pub const MAX_COMPARED_PEERS: usize = 64;

/// `/id`'s `cluster_peers` as a probe reads them: at most
/// `MAX_COMPARED_PEERS`, else only that there were more.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterPeers {
    pub ids: Vec<String>,
    /// The list was longer than `MAX_COMPARED_PEERS`; `ids` is then empty.
    pub more: bool,
}

impl<'de> Deserialize<'de> for ClusterPeers {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<ClusterPeers, D::Error> {
        struct Bounded;
        impl<'de> serde::de::Visitor<'de> for Bounded {
            type Value = ClusterPeers;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a list of peer IDs")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<ClusterPeers, A::Error> {
                let mut ids = Vec::new();
                while ids.len() < MAX_COMPARED_PEERS {
                    match seq.next_element::<String>()? {
                        Some(id) => ids.push(id),
                        None => return Ok(ClusterPeers { ids, more: false }),
                    }
                }
                if seq.next_element::<serde::de::IgnoredAny>()?.is_none() {
                    return Ok(ClusterPeers { ids, more: false });
                }
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(ClusterPeers {
                    ids: vec![],
                    more: true,
                })
            }
        }
        d.deserialize_seq(Bounded)
    }
}

/// The local REST API's `/id` answer (`health`): every cluster peer.
#[derive(Debug, Clone, Deserialize)]
struct LocalIdResponse {
    id: String,
    #[serde(default)]
    cluster_peers: Option<Vec<String>>,
    #[serde(default)]
    ipfs: Option<IpfsId>,
}

/// `/id`'s `ipfs` object (api/types.go: IPFSID).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct IpfsId {
    #[serde(default)]
    pub error: Option<String>,
}

/// What the local REST API says about its peer (for `health`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalId {
    pub peer: PeerId,
    pub cluster_peers: Vec<PeerId>,
    /// `ipfs.error`, when not empty.
    pub ipfs_error: Option<String>,
}

/// What probing found: identified peers, and addresses where a daemon runs
/// whose peer ID is unknown.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Probed {
    pub observed: Vec<Observed>,
    pub unidentified: Vec<std::net::IpAddr>,
    /// Listed without a peer ID, and nothing answered.
    pub silent: Vec<std::net::IpAddr>,
    /// Listed without a peer ID, and not probed (not a loopback address
    /// under --loopback-only, or passed to `add_not_probed`).
    pub not_probed: Vec<std::net::IpAddr>,
}

impl Probed {
    /// Candidates whose probes cannot change the decision, not probed: down
    /// with `why`, so that they stay in the peerstore with their addresses.
    /// `decide::probe_matters` never skips one without a peer ID (it may be
    /// a twin); should a caller, its address is listed as not probed.
    pub fn add_not_probed(&mut self, candidates: Vec<Candidate>, why: &str) {
        for c in candidates {
            match c.peer_id.clone() {
                Some(id) => self.observed.push(Observed {
                    registration: c.identified(id),
                    probe: Probe::Down { error: why.to_owned() },
                    confirmed: false,
                }),
                None => self.not_probed.push(c.ip),
            }
        }
    }
}

/// What the REST API answered.
#[derive(Debug, Clone)]
pub enum Api {
    Id(IdResponse),
    /// The API is up but refuses our credentials.
    Refused(u16),
    Unreachable(String),
}

/// What the cluster port answered.
#[derive(Debug, Clone)]
pub enum Port {
    Greeting(Greeting),
    /// A sidecar's greeting that does not parse (cut short, or a newer
    /// version's): a sidecar all the same, never a daemon.
    Unreadable,
    /// Open, and not a sidecar: a daemon.
    Open,
    Closed(String),
}

impl Prober {
    pub fn new(timeout: Duration, credentials: Option<Credentials>, loopback_only: bool) -> Prober {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .no_proxy()
            .build()
            .unwrap_or_default();
        Prober {
            http,
            timeout,
            credentials: credentials.map(Arc::new),
            loopback_only,
        }
    }

    /// Probes every candidate concurrently; results in the input order. A
    /// candidate without a peer ID takes the one it answers with; one that
    /// answers only as a daemon, without one, is `unidentified`.
    /// At most `MAX_IN_FLIGHT` at a time (two sockets each).
    pub async fn probe_all(&self, candidates: Vec<Candidate>) -> Probed {
        // Under --loopback-only an address elsewhere is never dialled; one
        // without a peer ID is named as such rather than as silent.
        let (not_probed, candidates): (Vec<Candidate>, Vec<Candidate>) = candidates
            .into_iter()
            .partition(|c| self.loopback_only && !c.ip.is_loopback() && c.peer_id.is_none());
        let mut set = tokio::task::JoinSet::new();
        let mut out = Vec::with_capacity(candidates.len());
        for (i, c) in candidates.into_iter().enumerate() {
            if set.len() >= MAX_IN_FLIGHT {
                if let Some(Ok(x)) = set.join_next().await {
                    out.push(x);
                }
            }
            let p = self.clone();
            set.spawn(async move {
                let seen = p.probe(&c).await;
                (i, c, seen)
            });
        }
        while let Some(res) = set.join_next().await {
            if let Ok(x) = res {
                out.push(x);
            }
        }
        out.sort_by_key(|x| x.0);
        let mut probed = collect(out.into_iter().map(|(_, c, seen)| (c, seen)));
        probed.not_probed = not_probed.into_iter().map(|c| c.ip).collect();
        probed
    }

    /// What answers at a candidate, and the peer ID it goes by (the listed one,
    /// else the one it answered with).
    pub async fn probe(&self, c: &Candidate) -> Classified {
        if self.loopback_only && !c.ip.is_loopback() {
            let error = format!("not probed: {} is not a loopback address (--loopback-only)", c.ip);
            return Classified {
                id: c.peer_id.clone(),
                probe: Probe::Down { error },
                confirmed: false,
            };
        }
        let (api, port) = tokio::join!(self.api(c), self.port(c));
        if let (Api::Refused(status), false) = (&api, matches!(port, Port::Greeting(_))) {
            match self.credentials_for(c).is_some() {
                true => tracing::warn!(
                    address = %c.ip, status,
                    "the peer's REST API refuses our credentials (CLUSTER_RESTAPI_BASICAUTHCREDENTIALS); counting it as a running daemon"
                ),
                false => tracing::debug!(
                    address = %c.ip, status,
                    "the peer's REST API wants credentials, which go only to addresses ECS or EC2 vouches for (--verify-tasks); counting it as a running daemon"
                ),
            }
        }
        classify(c, api, port)
    }

    /// The peer ID and cluster peers a REST API answers with (the local one,
    /// for `health`).
    pub async fn id_at(&self, addr: std::net::SocketAddr) -> Result<LocalId, String> {
        if self.loopback_only && !addr.ip().is_loopback() {
            return Err(format!("not asked: {addr} is not a loopback address (--loopback-only)"));
        }
        let mut req = self.http.get(format!("http://{addr}/id"));
        if let Some(c) = &self.credentials {
            req = req.basic_auth(&c.user, Some(c.password.expose()));
        }
        let resp = req.send().await.map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("/id answered {}", resp.status()));
        }
        let id: LocalIdResponse = read_json(resp)
            .await
            .map_err(|e| format!("/id answered something else: {e}"))?;
        let peer = PeerId::parse(&id.id).map_err(|e| e.to_string())?;
        let cluster_peers = id
            .cluster_peers
            .unwrap_or_default()
            .iter()
            .filter_map(|p| PeerId::parse(p).ok())
            .collect();
        let ipfs_error = id.ipfs.and_then(|i| i.error).filter(|e| !e.is_empty());
        Ok(LocalId {
            peer,
            cluster_peers,
            ipfs_error,
        })
    }

    /// The REST API credentials go to this candidate: its address is
    /// vouched for (`Candidate::vouched`), not a registry record alone.
    fn credentials_for(&self, c: &Candidate) -> Option<&Credentials> {
        self.credentials.as_deref().filter(|_| c.vouched)
    }

    async fn api(&self, r: &Candidate) -> Api {
        let host = match r.ip {
            std::net::IpAddr::V4(ip) => ip.to_string(),
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        };
        let get = |path: &str| {
            let mut req = self.http.get(format!("http://{host}:{}{path}", r.api_port));
            if let Some(c) = self.credentials_for(r) {
                req = req.basic_auth(&c.user, Some(c.password.expose()));
            }
            req.send()
        };
        match get("/id").await {
            Ok(resp) if resp.status().is_success() => match read_json::<IdResponse>(resp).await {
                Ok(id) if PeerId::parse(&id.id).is_ok() => Api::Id(id),
                Ok(id) => Api::Unreachable(format!("/id answered a malformed peer ID {:?}", truncate(&id.id))),
                Err(e) => Api::Unreachable(format!("/id answered something else: {e}")),
            },
            Ok(resp) if matches!(resp.status().as_u16(), 401 | 403) => {
                // /health needs no credentials: is a daemon there at all?
                match get("/health").await {
                    Ok(h) if h.status().is_success() => Api::Refused(resp.status().as_u16()),
                    _ => Api::Unreachable(format!("/id answered {}", resp.status())),
                }
            }
            Ok(resp) => Api::Unreachable(format!("/id answered {}", resp.status())),
            Err(e) => Api::Unreachable(if e.is_timeout() {
                "timed out".into()
            } else if e.is_connect() {
                "connection refused".into()
            } else {
                e.to_string()
            }),
        }
    }

    async fn port(&self, r: &Candidate) -> Port {
        let addr = std::net::SocketAddr::new(r.ip, r.cluster_port);
        let mut sock = match tokio::time::timeout(self.timeout, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Port::Closed(e.to_string()),
            Err(_) => return Port::Closed("timed out".into()),
        };
        // A sidecar greets at once; a daemon sends its own bytes or waits for us.
        let mut buf = Vec::with_capacity(512);
        let read = async {
            let mut chunk = [0u8; 512];
            loop {
                match sock.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        buf.extend_from_slice(&chunk[..n]);
                        if buf.contains(&b'\n')
                            || buf.len() >= MAX_GREETING
                            || !MAGIC.starts_with(&buf[..buf.len().min(MAGIC.len())])
                        {
                            break;
                        }
                    }
                }
            }
        };
        let _ = tokio::time::timeout(self.timeout.min(Duration::from_millis(500)), read).await;
        match Greeting::parse(&buf) {
            Some(g) => Port::Greeting(g),
            None if buf.starts_with(MAGIC) => Port::Unreadable,
            None => Port::Open,
        }
    }
}

/// The most of a greeting read: two sets of 1,000 peer IDs fit.
pub const MAX_GREETING: usize = 256 << 10;

/// Probes in flight at once: 1,000 registrations must not open 2,000 sockets.
pub const MAX_IN_FLIGHT: usize = 128;

/// The most of an `/id` body read (a 1,000-peer cluster's is about 400 KB):
/// anything at an address must not make this process read without end.
pub const MAX_ID_BODY: usize = 2 << 20;

/// A JSON body of at most MAX_ID_BODY bytes.
async fn read_json<T: serde::de::DeserializeOwned>(mut resp: reqwest::Response) -> Result<T, String> {
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
        if body.len() + chunk.len() > MAX_ID_BODY {
            return Err(format!("a body over {} bytes", MAX_ID_BODY));
        }
        body.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&body).map_err(|e| e.to_string())
}

/// What answered at a candidate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classified {
    /// The peer ID it goes by: the listed one, else the one it answered with.
    pub id: Option<PeerId>,
    pub probe: Probe,
    /// It answered with that peer ID itself (its REST API's `/id` or its
    /// greeting), rather than only being listed with it.
    pub confirmed: bool,
}

/// What answered at a candidate. Pure: the deterministic simulation runs it.
pub fn classify(c: &Candidate, api: Api, port: Port) -> Classified {
    let answered: Option<PeerId> = match (&api, &port) {
        (Api::Id(id), _) => PeerId::parse(&id.id).ok(),
        (_, Port::Greeting(g)) => PeerId::parse(&g.peer_id).ok(),
        _ => None,
    };
    if let (Some(listed), Some(answered)) = (&c.peer_id, &answered) {
        if listed != answered {
            return Classified {
                id: Some(listed.clone()),
                probe: Probe::WrongPeer {
                    answered: answered.to_string(),
                },
                confirmed: false,
            };
        }
    }
    let confirmed = answered.is_some();
    let id = c.peer_id.clone().or(answered);
    let probe = match (api, port) {
        // Too many cluster peers to compare: a running daemon, identified.
        (
            Api::Id(IdResponse {
                cluster_peers: Some(ClusterPeers { more: true, .. }),
                ..
            }),
            _,
        ) => Probe::Daemon,
        (Api::Id(id), _) => Probe::Api {
            cluster_peers: id
                .cluster_peers
                .unwrap_or_default()
                .ids
                .iter()
                .filter_map(|p| PeerId::parse(p).ok())
                .collect(),
        },
        (
            _,
            Port::Greeting(Greeting {
                founding: Some(set), ..
            }),
        ) => match set.iter().map(|s| PeerId::parse(s)).collect::<Result<Vec<_>, _>>() {
            Ok(set) if !set.is_empty() => Probe::Founding { set },
            _ => Probe::Waiting { proposal: None },
        },
        (_, Port::Greeting(g)) => Probe::Waiting {
            proposal: g
                .proposal
                .and_then(|p| p.iter().map(|s| PeerId::parse(s).ok()).collect()),
        },
        (_, Port::Unreadable) => Probe::Waiting { proposal: None },
        (Api::Refused(_), _) => Probe::Daemon,
        (_, Port::Open) => Probe::Daemon,
        (Api::Unreachable(a), Port::Closed(p)) => Probe::Down {
            error: format!("cluster port: {p}; REST API: {a}"),
        },
    };
    Classified { id, probe, confirmed }
}

/// Sorts probe results into identified peers, unidentified daemons and
/// silent addresses, in the given order.
pub fn collect(results: impl IntoIterator<Item = (Candidate, Classified)>) -> Probed {
    let mut probed = Probed::default();
    for (c, Classified { id, probe, confirmed }) in results {
        match id {
            Some(id) => probed.observed.push(Observed {
                registration: c.identified(id),
                probe,
                confirmed,
            }),
            None if probe == Probe::Daemon => probed.unidentified.push(c.ip),
            None => probed.silent.push(c.ip),
        }
    }
    probed
}

fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// An HTTP server on 127.0.0.1 whose every answer is `head` then `body_len` bytes of `x`.
    async fn server(head: &'static str, body_len: usize) -> std::net::SocketAddr {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    // An HTTP server answers a request; a sidecar greets at once.
                    if head.starts_with("HTTP/") {
                        let mut req = [0u8; 1024];
                        let _ = s.read(&mut req).await;
                    }
                    let _ = s.write_all(head.as_bytes()).await;
                    let chunk = vec![b'x'; 64 * 1024];
                    let mut left = body_len;
                    while left > 0 {
                        let n = left.min(chunk.len());
                        if s.write_all(&chunk[..n]).await.is_err() {
                            return;
                        }
                        left -= n;
                    }
                });
            }
        });
        addr
    }

    /// Whatever answers at an address, the /id body read is bounded.
    #[tokio::test]
    async fn an_endless_id_body_is_cut_off() {
        let addr = server("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n", 64 << 20).await;
        let p = Prober::new(Duration::from_secs(5), None, true);
        let err = p.id_at(addr).await.unwrap_err();
        assert!(err.contains("a body over 2097152 bytes"), "{err}");
        let c = Candidate::at(addr.ip(), 1, addr.port(), 0, None);
        match p.api(&c).await {
            Api::Unreachable(e) => assert!(e.contains("a body over"), "{e}"),
            other => panic!("{other:?}"),
        }
    }

    /// The REST API credentials go to vouched-for addresses only: a Cloud
    /// Map record alone (its IP may be anyone's now) gets a request without them.
    #[tokio::test]
    async fn credentials_go_only_to_vouched_for_addresses() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let seen = Arc::new(std::sync::Mutex::new(Vec::<bool>::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let mut req = [0u8; 4096];
                let n = s.read(&mut req).await.unwrap_or(0);
                let text = String::from_utf8_lossy(&req[..n]).to_ascii_lowercase();
                if text.starts_with("get /id") {
                    log.lock().unwrap().push(text.contains("\r\nauthorization: basic "));
                }
                let _ = s
                    .write_all(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .await;
            }
        });
        let creds = Credentials {
            user: "admin".into(),
            password: crate::config::Secret::new("hunter2"),
        };
        let p = Prober::new(Duration::from_secs(2), Some(creds), true);
        let record = Candidate::from(crate::view::Registration {
            instance_id: "task-1".into(),
            peer_id: many_ids(1).remove(0),
            ip: addr.ip(),
            cluster_port: 1,
            api_port: addr.port(),
            registered_at_ms: 0,
            consensus: None,
            init_peerset: None,
        });
        assert!(!record.vouched);
        p.api(&record).await;
        let verified = Candidate {
            vouched: true,
            ..record.clone()
        };
        p.api(&verified).await;
        p.api(&Candidate::at(addr.ip(), 1, addr.port(), 0, None)).await;
        assert_eq!(*seen.lock().unwrap(), vec![false, true, true]);
    }

    /// Another peer's `cluster_peers` is read up to MAX_COMPARED_PEERS; a
    /// longer list is skipped unread and its peer is a running daemon,
    /// identified (its /id answered with its ID).
    #[test]
    fn long_cluster_peer_lists_are_skipped_not_decoded() {
        let body = |n: usize| {
            let ids: Vec<String> = many_ids(n).iter().map(|p| p.to_string()).collect();
            serde_json::json!({"id": many_ids(1)[0].to_string(), "cluster_peers": ids, "version": "1.1.6"}).to_string()
        };
        let read = |n: usize| serde_json::from_str::<IdResponse>(&body(n)).unwrap();
        assert_eq!(read(3).cluster_peers.unwrap().ids.len(), 3);
        let full = read(MAX_COMPARED_PEERS).cluster_peers.unwrap();
        assert_eq!((full.ids.len(), full.more), (MAX_COMPARED_PEERS, false));
        let long = read(MAX_COMPARED_PEERS + 1).cluster_peers.unwrap();
        assert_eq!(
            long,
            ClusterPeers {
                ids: vec![],
                more: true
            }
        );
        let none: IdResponse = serde_json::from_str(r#"{"id": "x", "cluster_peers": null}"#).unwrap();
        assert_eq!(none.cluster_peers, None);
        let c = Candidate::at("127.0.0.2".parse().unwrap(), 9096, 9094, 0, None);
        let seen = classify(&c, Api::Id(read(1000)), Port::Open);
        assert_eq!(
            (seen.probe, seen.confirmed, seen.id),
            (Probe::Daemon, true, Some(many_ids(1).remove(0)))
        );
        let seen = classify(&c, Api::Id(read(5)), Port::Open);
        assert_eq!(
            seen.probe,
            Probe::Api {
                cluster_peers: many_ids(5)
            }
        );
    }

    fn many_ids(n: usize) -> Vec<PeerId> {
        (0..n)
            .map(|i| {
                let mut bytes = vec![0x00, 0x24, 0x08, 0x01, 0x12, 0x20];
                bytes.extend((i as u32).to_be_bytes());
                bytes.extend([7u8; 28]);
                PeerId::parse(&bs58::encode(bytes).into_string()).unwrap()
            })
            .collect()
    }

    /// A founding greeting of 200 peer IDs (about 23 KB, over the 8 KiB once
    /// read) is a sidecar's, with its set; a greeting cut short is still a
    /// sidecar's, never a running daemon's.
    #[tokio::test]
    async fn long_and_unreadable_greetings_are_sidecars() {
        let ids = many_ids(200);
        let cp = crate::contact::ContactPoint::start("127.0.0.1:0".parse().unwrap(), Greeting::founding(&ids[0], &ids))
            .await
            .unwrap();
        let p = Prober::new(Duration::from_secs(2), None, true);
        let c = Candidate::at(cp.addr.ip(), cp.addr.port(), 1, 0, None);
        let Classified { id, probe, .. } = p.probe(&c).await;
        assert_eq!(id.as_ref(), Some(&ids[0]));
        assert_eq!(probe, Probe::Founding { set: ids.clone() });
        // Cut short: the magic, then JSON that stops.
        let cut = server("ipfs-cluster-bootstrap/1 {\"peer_id\":\"12D3", 0).await;
        let c = Candidate::at(cut.ip(), cut.port(), 1, 0, None);
        assert!(matches!(p.port(&c).await, Port::Unreadable));
        let Classified { probe, confirmed, .. } = classify(&c, Api::Unreachable("no".into()), Port::Unreadable);
        assert!(!confirmed, "an unreadable greeting names no peer ID");
        assert_eq!(probe, Probe::Waiting { proposal: None });
    }

    /// More candidates than MAX_IN_FLIGHT are all probed, in their order.
    #[tokio::test]
    async fn many_candidates_are_probed_in_bounded_waves() {
        let p = Prober::new(Duration::from_millis(200), None, true);
        let n = MAX_IN_FLIGHT * 2 + 7;
        let list: Vec<Candidate> = (0..n)
            .map(|i| Candidate::at("127.0.0.1".parse().unwrap(), 1, 1, i as u64, None))
            .collect();
        let probed = p.probe_all(list).await;
        assert_eq!(
            probed.silent.len() + probed.observed.len() + probed.unidentified.len(),
            n
        );
    }

    /// Under --loopback-only an address elsewhere is not probed, and says so:
    /// listed without a peer ID it is `not_probed`, never `silent`; with one
    /// its probe says why.
    #[tokio::test]
    async fn loopback_only_names_what_it_did_not_probe() {
        let p = Prober::new(Duration::from_millis(200), None, true);
        let elsewhere: std::net::IpAddr = "192.0.2.7".parse().unwrap();
        let id = many_ids(1).remove(0);
        let probed = p
            .probe_all(vec![
                Candidate::at(elsewhere, 9096, 9094, 0, None),
                Candidate::at(elsewhere, 9096, 9094, 1, Some(id)),
                Candidate::at("127.0.0.1".parse().unwrap(), 1, 1, 2, None),
            ])
            .await;
        assert_eq!(probed.not_probed, vec![elsewhere]);
        assert_eq!(probed.silent, vec!["127.0.0.1".parse::<std::net::IpAddr>().unwrap()]);
        match &probed.observed[0].probe {
            Probe::Down { error } => assert!(error.contains("--loopback-only"), "{error}"),
            other => panic!("{other:?}"),
        }
    }
}
