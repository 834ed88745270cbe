//! The Cloud Map attributes a peer registers with, and reading them back. Pure.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::peer::{Consensus, PeerId};
use crate::view::Registration;

pub const IPV4: &str = "AWS_INSTANCE_IPV4";
pub const IPV6: &str = "AWS_INSTANCE_IPV6";
pub const PORT: &str = "AWS_INSTANCE_PORT";
pub const PEER_ID: &str = "ipfs_cluster_peer_id";
pub const REGISTERED_AT: &str = "ipfs_cluster_registered_at";
pub const CONSENSUS: &str = "ipfs_cluster_consensus";
pub const API_PORT: &str = "ipfs_cluster_api_port";
pub const INIT_PEERSET: &str = "ipfs_cluster_init_peerset";

/// Cloud Map's limit on one attribute value.
pub const MAX_VALUE: usize = 1024;

pub fn encode(r: &Registration) -> Vec<(String, String)> {
    let mut v = vec![
        (if r.ip.is_ipv4() { IPV4 } else { IPV6 }.to_owned(), r.ip.to_string()),
        (PORT.to_owned(), r.cluster_port.to_string()),
        (PEER_ID.to_owned(), r.peer_id.to_string()),
        (REGISTERED_AT.to_owned(), format_time(r.registered_at_ms)),
        (API_PORT.to_owned(), r.api_port.to_string()),
    ];
    if let Some(c) = r.consensus {
        v.push((CONSENSUS.to_owned(), c.to_string()));
    }
    if let Some(set) = &r.init_peerset {
        v.push((INIT_PEERSET.to_owned(), peer_set(set)));
    }
    v
}

/// A founding set as one attribute value: its peer IDs, comma-separated.
fn peer_set(set: &[PeerId]) -> String {
    set.iter().map(PeerId::as_str).collect::<Vec<_>>().join(",")
}

/// Whether a founding set can be published in one attribute (Cloud Map holds
/// at most 1,024 characters: about 19 peer IDs); Err(its length) when not.
pub fn fits(set: &[PeerId]) -> Result<(), usize> {
    match peer_set(set).len() {
        n if n > MAX_VALUE => Err(n),
        _ => Ok(()),
    }
}

pub fn format_time(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

pub fn parse_time(s: &str) -> Option<u64> {
    let t = humantime::parse_rfc3339_weak(s).ok()?;
    u64::try_from(t.duration_since(UNIX_EPOCH).ok()?.as_millis()).ok()
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Reads one registration; the error says which attribute is wrong.
pub fn decode(
    instance_id: &str,
    attrs: &HashMap<String, String>,
    default_api_port: u16,
) -> Result<Registration, String> {
    // Cloud Map never returns more; anything longer is not a registration of ours.
    let mut long: Vec<&String> = attrs
        .iter()
        .filter(|(_, v)| v.len() > MAX_VALUE)
        .map(|(k, _)| k)
        .collect();
    long.sort();
    if let Some(k) = long.first() {
        return Err(format!(
            "attribute {k} is longer than Cloud Map's {MAX_VALUE} characters"
        ));
    }
    let get = |k: &str| attrs.get(k).map(String::as_str);
    let ip: IpAddr = match (get(IPV4), get(IPV6)) {
        (Some(v), _) => v
            .parse()
            .ok()
            .filter(IpAddr::is_ipv4)
            .ok_or_else(|| format!("{IPV4}={v:?} is not an IPv4 address"))?,
        (None, Some(v)) => v
            .parse()
            .ok()
            .filter(IpAddr::is_ipv6)
            .ok_or_else(|| format!("{IPV6}={v:?} is not an IPv6 address"))?,
        (None, None) => return Err(format!("no {IPV4} or {IPV6}")),
    };
    let port = |k: &str, default: Option<u16>| -> Result<u16, String> {
        match get(k) {
            None => default.ok_or_else(|| format!("no {k}")),
            Some(v) => v
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("{k}={v:?} is not a TCP port")),
        }
    };
    let cluster_port = port(PORT, None)?;
    let api_port = port(API_PORT, Some(default_api_port))?;
    let peer_id = match get(PEER_ID) {
        None => return Err(format!("no {PEER_ID} (not registered by ipfs-cluster-bootstrap?)")),
        Some(v) => PeerId::parse(v).map_err(|e| format!("{PEER_ID}: {e}"))?,
    };
    let registered_at_ms = match get(REGISTERED_AT) {
        None => return Err(format!("no {REGISTERED_AT}")),
        Some(v) => parse_time(v).ok_or_else(|| format!("{REGISTERED_AT}={v:?} is not an RFC 3339 time"))?,
    };
    let consensus = match get(CONSENSUS) {
        None => None,
        Some(v) => Some(Consensus::parse(v).ok_or_else(|| format!("{CONSENSUS}={v:?} is not crdt or raft"))?),
    };
    let init_peerset = match get(INIT_PEERSET) {
        None => None,
        Some(v) => Some(
            v.split(',')
                .map(|s| PeerId::parse(s.trim()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("{INIT_PEERSET}: {e}"))?,
        ),
    };
    Ok(Registration {
        instance_id: instance_id.to_owned(),
        peer_id,
        ip,
        cluster_port,
        api_port,
        registered_at_ms,
        consensus,
        init_peerset,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer::tests::IDS;

    /// 19 peer IDs fit one Cloud Map attribute, 20 do not; what fits
    /// decodes back to the same set.
    #[test]
    fn a_founding_set_fits_one_attribute_up_to_19_peers() {
        let ids = |n: usize| -> Vec<PeerId> { (0..n).map(|i| PeerId::parse(IDS[i % IDS.len()]).unwrap()).collect() };
        assert_eq!(fits(&ids(19)), Ok(()));
        assert_eq!(fits(&ids(20)), Err(20 * 53 - 1));
        let mut r = sample();
        r.init_peerset = Some(ids(19));
        let attrs: HashMap<String, String> = encode(&r).into_iter().collect();
        assert_eq!(decode("task-1", &attrs, 9094).unwrap().init_peerset, Some(ids(19)));
    }

    fn sample() -> Registration {
        Registration {
            instance_id: "task-1".into(),
            peer_id: PeerId::parse(IDS[0]).unwrap(),
            ip: "127.0.0.2".parse().unwrap(),
            cluster_port: 9096,
            api_port: 9094,
            registered_at_ms: 1_764_000_000_123,
            consensus: Some(Consensus::Raft),
            init_peerset: Some(vec![PeerId::parse(IDS[0]).unwrap(), PeerId::parse(IDS[1]).unwrap()]),
        }
    }

    #[test]
    fn round_trip() {
        let r = sample();
        let attrs: HashMap<_, _> = encode(&r).into_iter().collect();
        assert_eq!(attrs[REGISTERED_AT], "2025-11-24T16:00:00.123Z");
        assert_eq!(decode("task-1", &attrs, 1).unwrap(), r);
    }

    #[test]
    fn errors_name_the_attribute() {
        let base: HashMap<_, _> = encode(&sample()).into_iter().collect();
        for (k, v, needle) in [
            (IPV4, "10.0.0.999", IPV4),
            (PORT, "0", PORT),
            (PORT, "http", PORT),
            (PEER_ID, "not-a-peer", PEER_ID),
            (PEER_ID, &"x".repeat(2000), PEER_ID),
            (REGISTERED_AT, "yesterday", REGISTERED_AT),
            (CONSENSUS, "paxos", CONSENSUS),
            (INIT_PEERSET, "a,b", INIT_PEERSET),
        ] {
            let mut a = base.clone();
            a.insert(k.into(), v.into());
            let e = decode("t", &a, 9094).unwrap_err();
            assert!(e.contains(needle), "{e}");
        }
        let mut a = base.clone();
        a.remove(PEER_ID);
        assert!(decode("t", &a, 9094).unwrap_err().contains("no ipfs_cluster_peer_id"));
        let mut a = base;
        a.remove(API_PORT);
        assert_eq!(decode("t", &a, 9999).unwrap().api_port, 9999);
    }
}
