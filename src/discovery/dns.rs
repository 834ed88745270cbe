//! DNS: every A and AAAA record of a name is a candidate (a docker-compose
//! service name, a Cloud Map private DNS name: Cloud Map answers at most 8
//! records). No peer IDs and no registration times: the order is the address
//! order, and peers tell their IDs when probed. Nothing to register.

use std::net::{IpAddr, SocketAddr};

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::TokioResolver;

use super::{address_rank, Candidate, Discovered, DiscoveryError, ErrorKind, Registry};
use crate::peer::PeerId;

/// A resolver: the system's (/etc/resolv.conf), or one name server given.
pub fn resolver(server: Option<SocketAddr>) -> Result<TokioResolver, String> {
    match server {
        None => TokioResolver::builder_tokio()
            .map(|b| b.build())
            .map_err(|e| format!("cannot read the system resolver configuration: {e}"))?
            .map_err(|e| format!("cannot build the resolver: {e}")),
        Some(addr) => {
            let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
            for c in &mut ns.connections {
                c.port = addr.port();
            }
            let _: &Vec<ConnectionConfig> = &ns.connections;
            TokioResolver::builder_with_config(
                ResolverConfig::from_name_servers(vec![ns]),
                TokioRuntimeProvider::default(),
            )
            .build()
            .map_err(|e| format!("cannot build the resolver: {e}"))
        }
    }
}

/// Resolves a name to its addresses, sorted. A name with no address records
/// is an empty answer. A name that does not exist (NXDOMAIN: a typo, or the
/// wrong network) is an error of kind NotFound, as a failed lookup is one of
/// its own: for `--dns-name` neither says "no peers" (a static list's host
/// that does not exist only lists nothing).
pub async fn lookup(resolver: &TokioResolver, name: &str) -> Result<Vec<IpAddr>, DiscoveryError> {
    match resolver.lookup_ip(name).await {
        Ok(found) => {
            let mut ips: Vec<IpAddr> = found.iter().collect();
            ips.sort();
            ips.dedup();
            Ok(ips)
        }
        Err(e) if e.is_nx_domain() => Err(DiscoveryError {
            backend: "dns",
            action: "DNS lookup",
            kind: ErrorKind::NotFound,
            detail: format!("{name} does not exist (NXDOMAIN): check --dns-name and the network's name server"),
        }),
        Err(e) if e.is_no_records_found() => Ok(vec![]),
        Err(e) => Err(DiscoveryError {
            backend: "dns",
            action: "DNS lookup",
            kind: ErrorKind::Unreachable,
            detail: format!("{name}: {e}"),
        }),
    }
}

pub struct DnsName {
    resolver: TokioResolver,
    name: String,
    cluster_port: u16,
    api_port: u16,
}

impl DnsName {
    pub fn new(resolver: TokioResolver, name: String, cluster_port: u16, api_port: u16) -> DnsName {
        DnsName {
            resolver,
            name,
            cluster_port,
            api_port,
        }
    }
}

impl Registry for DnsName {
    fn name(&self) -> &'static str {
        "dns"
    }

    async fn rank(&self, _me: &PeerId, ip: IpAddr, _now_ms: u64) -> Result<u64, DiscoveryError> {
        Ok(address_rank(ip))
    }

    async fn discover(&self) -> Result<Discovered, DiscoveryError> {
        let ips = lookup(&self.resolver, &self.name).await?;
        let registrations = ips
            .into_iter()
            .map(|ip| Candidate::at(ip, self.cluster_port, self.api_port, address_rank(ip), None))
            .collect();
        Ok(Discovered {
            registrations,
            skipped: vec![],
        })
    }
}
