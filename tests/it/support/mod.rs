//! Test bed: moto's server on 127.0.0.1, simulated peers (the bootstrap binary
//! exec'ing the ipfs-cluster-service test double), each on its own loopback
//! address and config folder. Nothing here dials a non-loopback address: every
//! address the harness hands out or dials is checked by `loopback`.

pub mod dnsd;
pub mod http;
pub mod moto;
pub mod peer;

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, Ordering};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ipfs-cluster-bootstrap"))
}

pub fn double() -> PathBuf {
    root().join("tests/double/ipfs-cluster-service")
}

/// Panics unless `ip` is loopback: the harness never targets anything else.
pub fn loopback(ip: IpAddr) -> IpAddr {
    assert!(ip.is_loopback(), "test harness refuses non-loopback address {ip}");
    ip
}

/// A block of loopback addresses of its own for one test: 127.0.<k>.2, .3, …
pub struct Net {
    block: u8,
    next: u8,
}

impl Net {
    pub fn new() -> Net {
        static BLOCK: AtomicU8 = AtomicU8::new(10);
        // Mix in the pid so that two test runs at once rarely collide.
        let k = BLOCK
            .fetch_add(1, Ordering::SeqCst)
            .wrapping_add((std::process::id() % 50) as u8 * 4);
        Net {
            block: k.max(10),
            next: 2,
        }
    }
    pub fn ip(&mut self) -> IpAddr {
        let ip = IpAddr::V4(Ipv4Addr::new(127, 0, self.block, self.next));
        self.next += 1;
        loopback(ip)
    }
}

/// Whether the test bed (moto in .venv) is there. Outside CI a test without it
/// is skipped with a message; with CI=true its absence fails the test.
/// What the tests hand the binary as secrets: none may appear in any log.
pub const SECRETS: &[&str] = &[peer::SECRET, peer::AWS_SECRET, peer::API_PASSWORD];

/// Panics when `log` holds a secret (every peer's logs pass through here).
pub fn assert_no_secrets(log: &str) {
    for s in SECRETS {
        assert!(!log.contains(s), "a secret reached a log:\n{log}");
    }
}

pub fn testbed_ready() -> bool {
    let ok = root().join(".venv/bin/moto_server").exists();
    if !ok {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("CI=true but .venv/bin/moto_server is missing: run scripts/setup-testbed.sh");
        }
        eprintln!("SKIPPED: no test bed (.venv/bin/moto_server); run scripts/setup-testbed.sh");
    }
    ok
}

/// A temporary folder, removed on drop unless the test failed (kept for its logs).
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        use std::sync::atomic::AtomicUsize;
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "icb-it-{}-{tag}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        } else {
            eprintln!("kept {} for its logs", self.0.display());
        }
    }
}
