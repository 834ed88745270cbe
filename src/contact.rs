//! The contact point: while it decides, the sidecar listens on the cluster port
//! and greets every connection with one line naming its peer ID and the founding
//! set it proposes. Peers tell a waiting sidecar from a dead registration, and
//! from a running daemon (which speaks libp2p there), by that line.

use std::io;
use std::net::SocketAddr;

use std::io::Write;
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use tracing::{debug, warn};

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
///
/// It answers from a thread of its own, so that a busy or blocked async
/// runtime (an fsync, a slow AWS call) never delays a greeting: a peer that
/// connects and hears nothing would take this sidecar for a daemon.
pub struct ContactPoint {
    greeting: Arc<Mutex<Vec<u8>>>,
    stop: Arc<AtomicBool>,
    /// Where it listens (port 0 resolved).
    pub addr: SocketAddr,
    /// The listening socket's descriptor, to wake the thread's `accept`.
    fd: std::os::fd::RawFd,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ContactPoint {
    /// This peer's contact point on the advertised address, else (an address not on this
    /// host, behind NAT) on every address, unless --loopback-only.
    pub async fn open(
        ip: std::net::IpAddr,
        port: u16,
        greeting: Greeting,
        loopback_only: bool,
    ) -> Option<ContactPoint> {
        let first = SocketAddr::new(ip, port);
        let err = match ContactPoint::start(first, greeting.clone()).await {
            Ok(c) => return Some(c),
            Err(e) => e,
        };
        if !loopback_only {
            let any: std::net::IpAddr = if ip.is_ipv4() {
                [0, 0, 0, 0].into()
            } else {
                [0u16; 8].into()
            };
            if let Ok(c) = ContactPoint::start(SocketAddr::new(any, port), greeting).await {
                debug!(address = %first, error = %err, "listening on every address instead");
                return Some(c);
            }
        }
        warn!(address = %first, error = %err, "cannot listen on the cluster port while deciding: other peers will see this one as down, so it can join a cluster but not found one");
        None
    }

    pub async fn start(addr: SocketAddr, greeting: Greeting) -> io::Result<ContactPoint> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let fd = std::os::fd::AsRawFd::as_raw_fd(&listener);
        let line = Arc::new(Mutex::new(greeting.line()));
        let stop = Arc::new(AtomicBool::new(false));
        let (l, st) = (line.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("contact-point".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if st.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(mut sock) = conn else { continue };
                    let bytes = l.lock().map(|g| g.clone()).unwrap_or_default();
                    let _ = sock.set_write_timeout(Some(Duration::from_secs(1)));
                    let _ = sock.write_all(&bytes);
                    let _ = sock.shutdown(std::net::Shutdown::Both);
                }
            })?;
        Ok(ContactPoint {
            greeting: line,
            stop,
            addr,
            fd,
            thread: Some(thread),
        })
    }

    pub fn propose(&self, greeting: Greeting) {
        if let Ok(mut g) = self.greeting.lock() {
            *g = greeting.line();
        }
    }
}

impl Drop for ContactPoint {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept so the thread sees the flag and the port
        // closes: shutdown() on a listening socket makes Linux's accept return
        // at once (EINVAL), where a connection to wake it could fail or hang.
        // The thread still owns the socket, so the descriptor is open here.
        unsafe {
            libc::shutdown(self.fd, libc::SHUT_RDWR);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpStream;

    #[tokio::test]
    async fn answers_while_the_runtime_is_blocked_and_closes_on_drop() {
        let id = PeerId::parse(crate::peer::tests::IDS[0]).unwrap();
        let cp = ContactPoint::start("127.0.0.1:0".parse().unwrap(), Greeting::new(&id, None))
            .await
            .unwrap();
        let addr = cp.addr;
        cp.propose(Greeting::founding(&id, std::slice::from_ref(&id)));
        // Block this (current-thread) runtime while a peer connects.
        let reader = std::thread::spawn(move || {
            let mut s = TcpStream::connect(addr).unwrap();
            let mut buf = vec![];
            std::io::Read::read_to_end(&mut s, &mut buf).unwrap();
            buf
        });
        std::thread::sleep(Duration::from_millis(300));
        let got = Greeting::parse(&reader.join().unwrap()).unwrap();
        assert_eq!(got.founding, Some(vec![id.to_string()]));
        drop(cp);
        assert!(
            TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err(),
            "port closed"
        );
    }

    #[test]
    fn greeting_round_trip_and_rejects_other_bytes() {
        let id = PeerId::parse(crate::peer::tests::IDS[0]).unwrap();
        let g = Greeting::new(&id, Some(std::slice::from_ref(&id)));
        assert_eq!(Greeting::parse(&g.line()), Some(g.clone()));
        assert_eq!(Greeting::parse(b"\x8f\x01 random pnet nonce bytes...."), None);
        assert_eq!(Greeting::parse(b"ipfs-cluster-bootstrap/1 {not json"), None);
    }
}
