//! Peer identities and addresses: the libp2p peer ID, the consensus kind and the
//! `/ip4/IP/tcp/PORT/p2p/ID` multiaddrs the daemon and its peerstore use.
//! Pure parsing and formatting; no I/O.

use std::fmt;
use std::net::IpAddr;

use serde::{Serialize, Serializer};

/// A libp2p peer ID in its base58btc text form (`12D3KooW…` for Ed25519, `Qm…` for RSA).
///
/// Only well-formed IDs can be built: base58btc of an identity multihash (inline
/// public key of at most 42 bytes) or of a sha2-256 multihash.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PeerId(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a libp2p peer ID: {1}")]
pub struct BadPeerId(pub String, pub &'static str);

impl PeerId {
    pub fn parse(text: &str) -> Result<PeerId, BadPeerId> {
        let bad = |why| BadPeerId(shorten(text), why);
        if text.is_empty() {
            return Err(bad("it is empty"));
        }
        if text.len() > 128 {
            return Err(bad("it is longer than 128 characters"));
        }
        // A peer ID's multihash is at most 2 + 42 bytes: decode on the stack.
        let mut buf = [0u8; 96];
        let n = bs58::decode(text)
            .onto(&mut buf[..])
            .map_err(|_| bad("it is not base58btc"))?;
        match &buf[..n] {
            // identity multihash: code 0x00, varint length (< 128 here), digest
            [0x00, len, rest @ ..] if usize::from(*len) == rest.len() && !rest.is_empty() && rest.len() <= 42 => {}
            // sha2-256 multihash: code 0x12, length 32
            [0x12, 0x20, rest @ ..] if rest.len() == 32 => {}
            _ => return Err(bad("it is not an identity or sha2-256 multihash")),
        }
        Ok(PeerId(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn shorten(text: &str) -> String {
    if text.chars().count() > 80 {
        let head: String = text.chars().take(77).collect();
        format!("{head}...")
    } else {
        text.to_owned()
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerId({})", self.0)
    }
}

impl Serialize for PeerId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// The consensus component a peer runs, as chosen by the section present in
/// service.json's `consensus` object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Consensus {
    Crdt,
    Raft,
}

impl Consensus {
    pub fn parse(text: &str) -> Option<Consensus> {
        match text {
            "crdt" => Some(Consensus::Crdt),
            "raft" => Some(Consensus::Raft),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Consensus::Crdt => "crdt",
            Consensus::Raft => "raft",
        }
    }
}

impl fmt::Display for Consensus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `/ip4/IP/tcp/PORT/p2p/ID` (or `/ip6/…`): what `--bootstrap` and the peerstore take.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PeerAddr {
    pub ip: IpAddr,
    pub port: u16,
    pub peer_id: PeerId,
}

impl PeerAddr {
    /// Parses the multiaddr forms this tool writes: `/ip4|ip6/IP/tcp/PORT/p2p|ipfs/ID`.
    pub fn parse(text: &str) -> Result<PeerAddr, String> {
        let text = text.trim();
        let err = |why: &str| format!("{text:?} is not a /ip4|ip6/IP/tcp/PORT/p2p/PEER_ID multiaddr: {why}");
        let m = Multiaddr::parse(text).map_err(err)?;
        let (Host::Ip(ip), Some(port), Some(id)) = (m.host, m.tcp_port, m.p2p()) else {
            return Err(err("unexpected shape"));
        };
        let port: u16 = port.parse().map_err(|_| err("bad TCP port"))?;
        let peer_id = PeerId::parse(id).map_err(|e| err(&e.to_string()))?;
        Ok(PeerAddr { ip, port, peer_id })
    }
}

/// A multiaddr's host: an IP address (`/ip4`, `/ip6`) or a name (`/dns`,
/// `/dns4`, `/dns6`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Host<'a> {
    Ip(IpAddr),
    Name(&'a str),
}

/// A multiaddr as far as this tool reads them: `/PROTO/HOST[/tcp/PORT][/…]`,
/// where PROTO is ip4, ip6, dns, dns4 or dns6. The one multiaddr reader:
/// listen addresses, `--peers`, `--bootstrap` addresses, the REST API's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Multiaddr<'a> {
    pub host: Host<'a>,
    /// The TCP port as written, when `/tcp/PORT` follows the host.
    pub tcp_port: Option<&'a str>,
    /// The components after the host and TCP port (`["p2p", ID]`, `["udp", …]`).
    pub rest: Vec<&'a str>,
}

impl<'a> Multiaddr<'a> {
    pub fn parse(text: &'a str) -> Result<Multiaddr<'a>, &'static str> {
        let mut parts = text
            .strip_prefix('/')
            .ok_or("not a multiaddr (no leading /)")?
            .split('/');
        let (proto, host) = (parts.next().unwrap_or_default(), parts.next().ok_or("no host")?);
        let host = match proto {
            "ip4" | "ip6" => {
                let ip: IpAddr = host.parse().map_err(|_| "bad IP address")?;
                if (proto == "ip4") != ip.is_ipv4() {
                    return Err("the IP does not match the protocol");
                }
                Host::Ip(ip)
            }
            "dns" | "dns4" | "dns6" if !host.is_empty() => Host::Name(host),
            _ => return Err("unknown protocol or empty host"),
        };
        let mut rest: Vec<&str> = parts.collect();
        let tcp_port = match rest.as_slice() {
            ["tcp", port, ..] => {
                let port = *port;
                rest.drain(..2);
                Some(port)
            }
            _ => None,
        };
        Ok(Multiaddr { host, tcp_port, rest })
    }

    /// The peer ID component's text, when the rest is exactly `/p2p/ID` (or
    /// the older `/ipfs/ID`).
    pub fn p2p(&self) -> Option<&'a str> {
        match self.rest.as_slice() {
            ["p2p" | "ipfs", id] => Some(id),
            _ => None,
        }
    }
}

impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let proto = if self.ip.is_ipv4() { "ip4" } else { "ip6" };
        write!(f, "/{proto}/{}/tcp/{}/p2p/{}", self.ip, self.port, self.peer_id)
    }
}

impl Serialize for PeerAddr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Real Ed25519 peer IDs (identity multihash), as ipfs-cluster generates them.
    pub const IDS: [&str; 6] = [
        "12D3KooWHEZ3YnZWcqrE91bnCGJZsUS3njYBJEh7QGK3NwzrGEKn",
        "12D3KooWEvsVGaYUFhsVU2uM3LNs7Nh9jtrx6v42bRYyChesXFKX",
        "12D3KooWQcCmaNhFVZ1wn7sBBu6xgXXePmiG5u4wYDAv41VfLnNR",
        "12D3KooWANp7kmfi1QAXrRY3aPmGcGwH8N77bxpubK9oyuJ3giAY",
        "12D3KooWREysQRGd9Vn2g9qiCGZn2b8HGiYEzU4B3r9SPSrDjcZN",
        "12D3KooWRPyfQMgk4bypFLVEDYAsHLmGGrurDfS1kbcYihTsthsG",
    ];

    #[test]
    fn accepts_real_ed25519_and_rsa_ids() {
        for id in IDS {
            assert_eq!(PeerId::parse(id).unwrap().as_str(), id);
        }
        PeerId::parse("QmRQ353oFNqt8zfZ9X1HgRUszwv9RkEEwmMZZkbkYEsybn").unwrap();
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "12D3KooW",
            "not-a-peer-id",
            "0OIl",
            &"1".repeat(200),
            "QmRQ353oFNqt8zfZ9X1HgRUszwv9RkEEwmMZZkbkYEsyb",
        ] {
            assert!(PeerId::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn multiaddr_round_trip() {
        let text = format!("/ip4/127.0.0.2/tcp/9096/p2p/{}", IDS[0]);
        let a = PeerAddr::parse(&text).unwrap();
        assert_eq!(a.to_string(), text);
        let legacy = format!("/ip4/127.0.0.2/tcp/9096/ipfs/{}", IDS[0]);
        assert_eq!(PeerAddr::parse(&legacy).unwrap(), a);
        let v6 = format!("/ip6/::1/tcp/9096/p2p/{}", IDS[1]);
        assert_eq!(PeerAddr::parse(&v6).unwrap().to_string(), v6);
        assert!(PeerAddr::parse(&format!("/ip4/::1/tcp/9096/p2p/{}", IDS[1])).is_err());
        assert!(PeerAddr::parse("/dns4/x/tcp/9096").is_err());
        assert!(PeerAddr::parse(&format!("/ip4/127.0.0.1/tcp/99999/p2p/{}", IDS[1])).is_err());
    }

    /// The one multiaddr reader: hosts by protocol, the TCP port, the rest.
    #[test]
    fn multiaddrs_are_read_one_way() {
        let m = Multiaddr::parse("/ip4/10.0.0.5/tcp/9096/p2p/X").unwrap();
        assert_eq!(m.host, Host::Ip("10.0.0.5".parse().unwrap()));
        assert_eq!((m.tcp_port, m.p2p()), (Some("9096"), Some("X")));
        let m = Multiaddr::parse("/dns4/peer-1.local/tcp/9096").unwrap();
        assert_eq!(
            (m.host, m.tcp_port, m.rest.len()),
            (Host::Name("peer-1.local"), Some("9096"), 0)
        );
        let m = Multiaddr::parse("/ip6/::/udp/9096/quic").unwrap();
        assert_eq!((m.tcp_port, m.rest), (None, vec!["udp", "9096", "quic"]));
        assert_eq!(
            Multiaddr::parse("/ip4/::1/tcp/1").unwrap_err(),
            "the IP does not match the protocol"
        );
        assert_eq!(Multiaddr::parse("/ip4/x/tcp/1").unwrap_err(), "bad IP address");
        assert_eq!(
            Multiaddr::parse("10.0.0.5").unwrap_err(),
            "not a multiaddr (no leading /)"
        );
        assert!(Multiaddr::parse("/unix/tmp/sock").is_err());
        assert!(Multiaddr::parse("/dns4//tcp/1").is_err());
        assert!(Multiaddr::parse("/ip4").is_err());
    }
}
