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
        let parts: Vec<&str> = text.trim().split('/').collect();
        let err = |why: &str| format!("{text:?} is not a /ip4|ip6/IP/tcp/PORT/p2p/PEER_ID multiaddr: {why}");
        match parts.as_slice() {
            ["", proto @ ("ip4" | "ip6"), ip, "tcp", port, "p2p" | "ipfs", id] => {
                let ip: IpAddr = ip.parse().map_err(|_| err("bad IP address"))?;
                if (*proto == "ip4") != ip.is_ipv4() {
                    return Err(err("the IP does not match the protocol"));
                }
                let port: u16 = port.parse().map_err(|_| err("bad TCP port"))?;
                let peer_id = PeerId::parse(id).map_err(|e| err(&e.to_string()))?;
                Ok(PeerAddr { ip, port, peer_id })
            }
            _ => Err(err("unexpected shape")),
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
}
