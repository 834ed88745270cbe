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
use crate::decide::{Observed, Probe, Registration};
use crate::peer::PeerId;

#[derive(Clone)]
pub struct Prober {
    http: reqwest::Client,
    timeout: Duration,
    credentials: Option<Arc<Credentials>>,
    loopback_only: bool,
}

#[derive(Deserialize)]
struct IdResponse {
    id: String,
    #[serde(default)]
    cluster_peers: Option<Vec<String>>,
}

enum Api {
    Id(IdResponse),
    /// The API is up but refuses our credentials.
    Refused(u16),
    Unreachable(String),
}

enum Port {
    Greeting(Greeting),
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

    /// Probes every registration concurrently; results in the input order.
    pub async fn probe_all(&self, registrations: Vec<Registration>) -> Vec<Observed> {
        let mut set = tokio::task::JoinSet::new();
        for (i, r) in registrations.into_iter().enumerate() {
            let p = self.clone();
            set.spawn(async move {
                let probe = p.probe(&r).await;
                (i, Observed { registration: r, probe })
            });
        }
        let mut out: Vec<(usize, Observed)> = Vec::with_capacity(set.len());
        while let Some(res) = set.join_next().await {
            if let Ok(x) = res {
                out.push(x);
            }
        }
        out.sort_by_key(|(i, _)| *i);
        out.into_iter().map(|(_, o)| o).collect()
    }

    pub async fn probe(&self, r: &Registration) -> Probe {
        if self.loopback_only && !r.ip.is_loopback() {
            return Probe::Down {
                error: format!("not probed: {} is not a loopback address (--loopback-only)", r.ip),
            };
        }
        let (api, port) = tokio::join!(self.api(r), self.port(r));
        match (api, port) {
            (Api::Id(id), _) if id.id == r.peer_id.as_str() => Probe::Api {
                cluster_peers: id
                    .cluster_peers
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|p| PeerId::parse(p).ok())
                    .collect(),
            },
            (Api::Id(id), _) => Probe::WrongPeer {
                answered: truncate(&id.id),
            },
            (
                _,
                Port::Greeting(Greeting {
                    peer_id,
                    founding: Some(set),
                    ..
                }),
            ) if peer_id == r.peer_id.as_str() => {
                match set.iter().map(|s| PeerId::parse(s)).collect::<Result<Vec<_>, _>>() {
                    Ok(set) if !set.is_empty() => Probe::Founding { set },
                    _ => Probe::Waiting { proposal: None },
                }
            }
            (_, Port::Greeting(g)) if g.peer_id == r.peer_id.as_str() => Probe::Waiting {
                proposal: g
                    .proposal
                    .and_then(|p| p.iter().map(|s| PeerId::parse(s).ok()).collect()),
            },
            (_, Port::Greeting(g)) => Probe::WrongPeer {
                answered: truncate(&g.peer_id),
            },
            (Api::Refused(status), _) => {
                tracing::warn!(
                    peer = %r.peer_id, status,
                    "the peer's REST API refuses our credentials (CLUSTER_RESTAPI_BASICAUTHCREDENTIALS); counting it as a running daemon"
                );
                Probe::Daemon
            }
            (_, Port::Open) => Probe::Daemon,
            (Api::Unreachable(a), Port::Closed(p)) => Probe::Down {
                error: format!("cluster port: {p}; REST API: {a}"),
            },
        }
    }

    async fn api(&self, r: &Registration) -> Api {
        let host = match r.ip {
            std::net::IpAddr::V4(ip) => ip.to_string(),
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        };
        let get = |path: &str| {
            let mut req = self.http.get(format!("http://{host}:{}{path}", r.api_port));
            if let Some(c) = &self.credentials {
                req = req.basic_auth(&c.user, Some(c.password.expose()));
            }
            req.send()
        };
        match get("/id").await {
            Ok(resp) if resp.status().is_success() => match resp.json::<IdResponse>().await {
                Ok(id) => Api::Id(id),
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

    async fn port(&self, r: &Registration) -> Port {
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
                            || buf.len() >= 8192
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
            None => Port::Open,
        }
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}
