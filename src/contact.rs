//! The contact point: while it decides, the sidecar listens on the cluster port
//! and greets every connection with one line naming its peer ID and the founding
//! set it proposes. Peers tell a waiting sidecar from a dead registration, and
//! from a running daemon (which speaks libp2p there), by that line.

use std::io;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::peer::PeerId;

/// Every greeting starts with this.
pub const MAGIC: &[u8] = b"ipfs-cluster-bootstrap/1 ";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Greeting {
    pub peer_id: String,
    pub proposal: Option<Vec<String>>,
    /// Set once this sidecar decided to start a raft fixed-set launch with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub founding: Option<Vec<String>>,
}

impl Greeting {
    pub fn new(peer_id: &PeerId, proposal: Option<&[PeerId]>) -> Greeting {
        Greeting {
            peer_id: peer_id.to_string(),
            proposal: proposal.map(|p| p.iter().map(PeerId::to_string).collect()),
            founding: None,
        }
    }

    /// The greeting of a sidecar about to start a raft fixed-set launch.
    pub fn founding(peer_id: &PeerId, set: &[PeerId]) -> Greeting {
        let set: Vec<String> = set.iter().map(PeerId::to_string).collect();
        Greeting {
            peer_id: peer_id.to_string(),
            proposal: Some(set.clone()),
            founding: Some(set),
        }
    }

    pub fn line(&self) -> Vec<u8> {
        let mut v = MAGIC.to_vec();
        v.extend(serde_json::to_vec(self).unwrap_or_default());
        v.push(b'\n');
        v
    }

    /// Parses a greeting line; None when the bytes are not one.
    pub fn parse(bytes: &[u8]) -> Option<Greeting> {
        let rest = bytes.strip_prefix(MAGIC)?;
        let end = rest.iter().position(|b| *b == b'\n').unwrap_or(rest.len());
        serde_json::from_slice(&rest[..end]).ok()
    }
}

/// A running contact point; dropping it closes the port.
pub struct ContactPoint {
    greeting: watch::Sender<Greeting>,
    task: JoinHandle<()>,
}

impl ContactPoint {
    pub async fn start(addr: SocketAddr, greeting: Greeting) -> io::Result<ContactPoint> {
        let listener = TcpListener::bind(addr).await?;
        let (tx, rx) = watch::channel(greeting);
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    continue;
                };
                let line = rx.borrow().line();
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), async {
                        let _ = sock.write_all(&line).await;
                        let _ = sock.shutdown().await;
                    })
                    .await;
                });
            }
        });
        Ok(ContactPoint { greeting: tx, task })
    }

    pub fn propose(&self, greeting: Greeting) {
        self.greeting.send_replace(greeting);
    }
}

impl Drop for ContactPoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greeting_round_trip_and_rejects_other_bytes() {
        let id = PeerId::parse(crate::peer::tests::IDS[0]).unwrap();
        let g = Greeting::new(&id, Some(std::slice::from_ref(&id)));
        assert_eq!(Greeting::parse(&g.line()), Some(g.clone()));
        assert_eq!(Greeting::parse(b"\x8f\x01 random pnet nonce bytes...."), None);
        assert_eq!(Greeting::parse(b"ipfs-cluster-bootstrap/1 {not json"), None);
    }
}
