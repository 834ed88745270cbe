//! The local ipfs-cluster daemon's REST API, as the scale-in retirement and
//! the reaper use it: plain calls with the configured credentials, the
//! NDJSON streams parsed, `GET /peers` read as raft voters. Says what the
//! daemon answers; decides nothing.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use crate::config::Credentials;
use crate::peer::PeerId;

/// A raft voter as the local daemon's `GET /peers` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Voter {
    pub id: PeerId,
    /// It answered (no `error` in its entry).
    pub live: bool,
}

/// The local daemon's REST API: CLUSTER_RESTAPI_HTTPLISTENMULTIADDRESS, else
/// service.json's (`in_file`), else the daemon's default.
pub fn local_api(cfg: &crate::config::Config, in_file: Option<String>) -> Result<SocketAddr, String> {
    let listen = cfg
        .api_listen_env
        .clone()
        .or(in_file)
        .unwrap_or_else(|| "/ip4/127.0.0.1/tcp/9094".into());
    api_addr(&listen)
        .ok_or_else(|| format!("cannot read the REST API address {listen:?} (api.restapi.http_listen_multiaddress)"))
}

/// The REST API's address from its multiaddr; an unspecified address means loopback.
fn api_addr(multiaddr: &str) -> Option<SocketAddr> {
    use crate::peer::{Host, Multiaddr};
    let m = Multiaddr::parse(multiaddr.split(',').next()?.trim()).ok()?;
    let ip = match m.host {
        Host::Ip(std::net::IpAddr::V4(v4)) if v4.is_unspecified() => [127, 0, 0, 1].into(),
        Host::Ip(std::net::IpAddr::V6(v6)) if v6.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        Host::Ip(ip) => ip,
        Host::Name("localhost") => [127, 0, 0, 1].into(),
        Host::Name(_) => return None,
    };
    Some(SocketAddr::new(ip, m.tcp_port?.parse().ok()?))
}

/// Votes a raft configuration of `n` voters needs.
pub fn quorum(n: usize) -> usize {
    n / 2 + 1
}

pub struct Api {
    http: reqwest::Client,
    credentials: Option<Credentials>,
}

impl Api {
    pub fn new(credentials: Option<Credentials>) -> Result<Api, String> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Api { http, credentials })
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        addr: SocketAddr,
        path: &str,
        timeout: Duration,
    ) -> Result<(u16, String), String> {
        let mut req = self
            .http
            .request(method, format!("http://{addr}{path}"))
            .timeout(timeout);
        if let Some(c) = &self.credentials {
            req = req.basic_auth(&c.user, Some(c.password.expose()));
        }
        let resp = req.send().await.map_err(|e| format!("{path} at {addr}: {e}"))?;
        let status = resp.status().as_u16();
        let body = resp.text().await.map_err(|e| format!("{path} at {addr}: {e}"))?;
        Ok((status, body))
    }

    pub async fn get_lines<T: for<'de> Deserialize<'de>>(
        &self,
        addr: SocketAddr,
        path: &str,
        timeout: Duration,
    ) -> Result<Vec<T>, String> {
        let (status, body) = self.call(reqwest::Method::GET, addr, path, timeout).await?;
        match status {
            200 => parse_lines(&body).map_err(|e| format!("{path} at {addr}: {e}")),
            204 => Ok(Vec::new()),
            s => Err(format!("{path} at {addr}: HTTP {s}: {}", first_chars(&body))),
        }
    }
}

pub fn first_chars(s: &str) -> String {
    s.chars().take(200).collect()
}

/// The REST API's streams: one JSON value per line (or a JSON array).
pub fn parse_lines<T: for<'de> Deserialize<'de>>(body: &str) -> Result<Vec<T>, String> {
    let trimmed = body.trim_start();
    if trimmed.starts_with('[') {
        return serde_json::from_str(trimmed).map_err(|e| e.to_string());
    }
    serde_json::Deserializer::from_str(body)
        .into_iter::<T>()
        .collect::<Result<Vec<T>, _>>()
        .map_err(|e| e.to_string())
}

/// One entry of `GET /peers`: a voter of the queried peer's latest raft
/// configuration (an unreachable one has only `id` and `error`).
#[derive(Debug, Deserialize)]
pub struct IdEntry {
    pub id: String,
    #[serde(default)]
    pub addresses: Option<Vec<String>>,
    #[serde(default)]
    pub error: Option<String>,
}

impl IdEntry {
    pub fn live(&self) -> bool {
        self.error.as_deref().unwrap_or("").is_empty()
    }
}

/// The voters in a `GET /peers` answer (entries whose ID does not parse are left out).
pub fn voters(entries: &[IdEntry]) -> Vec<Voter> {
    entries
        .iter()
        .filter_map(|e| {
            Some(Voter {
                id: PeerId::parse(&e.id).ok()?,
                live: e.live(),
            })
        })
        .collect()
}

/// Voters and peer IDs for the policies' tests.
#[cfg(test)]
pub mod testing {
    use super::*;

    /// An Ed25519 peer ID (identity multihash) whose key bytes are all `n`.
    pub fn pid(n: u8) -> PeerId {
        let mut bytes = vec![0x00, 0x24, 0x08, 0x01, 0x12, 0x20];
        bytes.extend([n; 32]);
        PeerId::parse(&bs58::encode(bytes).into_string()).unwrap()
    }

    /// Voters 0, 1, … with these live flags.
    pub fn voters(live: &[bool]) -> Vec<Voter> {
        live.iter()
            .enumerate()
            .map(|(i, &live)| Voter { id: pid(i as u8), live })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn api_addresses() {
        assert_eq!(
            super::api_addr("/ip4/0.0.0.0/tcp/9094"),
            Some(([127, 0, 0, 1], 9094).into())
        );
        assert_eq!(
            super::api_addr("/dns4/localhost/tcp/1"),
            Some(([127, 0, 0, 1], 1).into())
        );
        assert_eq!(super::api_addr("/dns4/example.com/tcp/1"), None);
    }

    use super::*;

    #[test]
    fn quorum_sizes() {
        assert_eq!((1..=7).map(quorum).collect::<Vec<_>>(), vec![1, 2, 2, 3, 3, 4, 4]);
    }

    #[test]
    fn streams_and_voters() {
        let v: Vec<serde_json::Value> = parse_lines("{\"a\":1}\n{\"a\":2}\n").unwrap();
        assert_eq!(v.len(), 2);
        let v: Vec<serde_json::Value> = parse_lines("[{\"a\":1}]").unwrap();
        assert_eq!(v.len(), 1);
        assert!(parse_lines::<serde_json::Value>("{\"a\":").is_err());
        let id = crate::peer::tests::IDS[0];
        let body = format!(
            "{{\"id\":\"{id}\",\"addresses\":[]}}\n{{\"id\":\"{id}\",\"error\":\"dial backoff\"}}\n{{\"id\":\"x\"}}"
        );
        let entries: Vec<IdEntry> = parse_lines(&body).unwrap();
        let v = voters(&entries);
        assert_eq!(v.iter().map(|v| v.live).collect::<Vec<_>>(), vec![true, false]);
    }
}
