//! A fixed list of peers (`--peers`): full multiaddrs, addresses without a
//! peer ID, or host names. The founding order is the list order. Nothing to
//! register; peers without an ID in the list tell it when probed.

use std::net::IpAddr;

use hickory_resolver::TokioResolver;

use super::{dns, Candidate, Discovered, DiscoveryError, Registry};
use crate::peer::{Host, Multiaddr, PeerId};

/// One entry of `--peers`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StaticPeer {
    /// `/ip4|ip6/IP/tcp/PORT[/p2p/ID]` or a bare IP.
    Addr {
        ip: IpAddr,
        port: u16,
        peer_id: Option<PeerId>,
    },
    /// `/dns|dns4|dns6/HOST/tcp/PORT[/p2p/ID]` or a bare host name.
    Host {
        name: String,
        port: u16,
        peer_id: Option<PeerId>,
    },
}

impl StaticPeer {
    /// Parses one entry; bare addresses and names take `default_port`.
    pub fn parse(text: &str, default_port: u16) -> Result<StaticPeer, String> {
        let text = text.trim();
        if text.starts_with('/') {
            let err = |why: &str| {
                format!("{text:?}: {why} (forms: /ip4/IP/tcp/PORT[/p2p/ID], /dns4/HOST/tcp/PORT[/p2p/ID], IP, HOST)")
            };
            let m = Multiaddr::parse(text).map_err(err)?;
            let (Some(port), true) = (m.tcp_port, m.rest.is_empty() || m.p2p().is_some()) else {
                return Err(err("unexpected shape"));
            };
            let port: u16 = port
                .parse()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| err("bad TCP port"))?;
            let peer_id = m
                .p2p()
                .map(PeerId::parse)
                .transpose()
                .map_err(|e| err(&e.to_string()))?;
            return match m.host {
                Host::Ip(ip) => Ok(StaticPeer::Addr { ip, port, peer_id }),
                Host::Name(name) if valid_host(name) => Ok(StaticPeer::Host {
                    name: name.to_owned(),
                    port,
                    peer_id,
                }),
                Host::Name(_) => Err(err("bad host name")),
            };
        }
        if let Ok(ip) = text.parse::<IpAddr>() {
            return Ok(StaticPeer::Addr {
                ip,
                port: default_port,
                peer_id: None,
            });
        }
        if valid_host(text) {
            return Ok(StaticPeer::Host {
                name: text.to_owned(),
                port: default_port,
                peer_id: None,
            });
        }
        Err(format!(
            "{text:?} is not an IP address, a host name or a /ip4|ip6|dns4/…/tcp/PORT[/p2p/ID] multiaddr"
        ))
    }

    pub fn has_host_name(&self) -> bool {
        matches!(self, StaticPeer::Host { .. })
    }
}

fn valid_host(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !l.starts_with('-')
        })
}

pub struct StaticList {
    peers: Vec<StaticPeer>,
    api_port: u16,
    resolver: Option<TokioResolver>,
}

impl StaticList {
    /// `resolver` is needed only when the list has host names.
    pub fn new(peers: Vec<StaticPeer>, api_port: u16, resolver: Option<TokioResolver>) -> StaticList {
        StaticList {
            peers,
            api_port,
            resolver,
        }
    }

    /// Every (position, ip, port, peer ID) the list stands for, host names resolved.
    async fn entries(&self) -> Result<Vec<(usize, IpAddr, u16, Option<PeerId>)>, DiscoveryError> {
        let mut out = vec![];
        for (i, p) in self.peers.iter().enumerate() {
            match p {
                StaticPeer::Addr { ip, port, peer_id } => out.push((i, *ip, *port, peer_id.clone())),
                StaticPeer::Host { name, port, peer_id } => {
                    let Some(resolver) = &self.resolver else { continue };
                    // A listed host that does not exist (a container removed
                    // for good, a peer scaled away) lists nothing; a lookup
                    // that fails is still an error.
                    let ips = match dns::lookup(resolver, name).await {
                        Err(e) if e.kind == super::ErrorKind::NotFound => {
                            tracing::debug!(host = %name, "a listed peer's host name does not exist (NXDOMAIN)");
                            vec![]
                        }
                        other => other?,
                    };
                    for ip in ips {
                        out.push((i, ip, *port, peer_id.clone()));
                    }
                }
            }
        }
        Ok(out)
    }
}

impl Registry for StaticList {
    fn name(&self) -> &'static str {
        "static"
    }

    /// The position in --peers (by peer ID, else by address); a peer not
    /// listed comes after all listed ones.
    async fn rank(&self, me: &PeerId, ip: IpAddr, _now_ms: u64) -> Result<u64, DiscoveryError> {
        let entries = self.entries().await?;
        let by_id = entries.iter().find(|e| e.3.as_ref() == Some(me));
        let by_ip = entries.iter().find(|e| e.1 == ip && e.3.is_none());
        Ok(by_id.or(by_ip).map_or(self.peers.len(), |e| e.0) as u64)
    }

    async fn discover(&self) -> Result<Discovered, DiscoveryError> {
        let registrations = self
            .entries()
            .await?
            .into_iter()
            .map(|(i, ip, port, peer_id)| Candidate::at(ip, port, self.api_port, i as u64, peer_id))
            .collect();
        Ok(Discovered {
            registrations,
            skipped: vec![],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer::tests::IDS;

    #[test]
    fn parses_every_form() {
        let id = PeerId::parse(IDS[0]).unwrap();
        let ip: IpAddr = "10.0.0.5".parse().unwrap();
        for (text, want) in [
            (
                format!("/ip4/10.0.0.5/tcp/9000/p2p/{}", IDS[0]),
                StaticPeer::Addr {
                    ip,
                    port: 9000,
                    peer_id: Some(id.clone()),
                },
            ),
            (
                "/ip4/10.0.0.5/tcp/9000".into(),
                StaticPeer::Addr {
                    ip,
                    port: 9000,
                    peer_id: None,
                },
            ),
            (
                "10.0.0.5".into(),
                StaticPeer::Addr {
                    ip,
                    port: 9096,
                    peer_id: None,
                },
            ),
            (
                "cluster-1.local".into(),
                StaticPeer::Host {
                    name: "cluster-1.local".into(),
                    port: 9096,
                    peer_id: None,
                },
            ),
            (
                format!("/dns4/c1/tcp/9096/p2p/{}", IDS[0]),
                StaticPeer::Host {
                    name: "c1".into(),
                    port: 9096,
                    peer_id: Some(id.clone()),
                },
            ),
        ] {
            assert_eq!(StaticPeer::parse(&text, 9096).unwrap(), want, "{text}");
        }
        for bad in [
            "/ip4/10.0.0.5/tcp/0",
            // Port 0 is refused with a peer ID too (it once went through PeerAddr).
            "/ip4/10.0.0.5/tcp/0/p2p/12D3KooWHEZ3YnZWcqrE91bnCGJZsUS3njYBJEh7QGK3NwzrGEKn",
            "/ip4/::1/tcp/1",
            "/dns4/-x/tcp/1",
            "/quic/x",
            "no spaces allowed",
            "/ip4/1.2.3.4/tcp/1/p2p/x",
        ] {
            assert!(StaticPeer::parse(bad, 9096).is_err(), "{bad} accepted");
        }
    }
}
