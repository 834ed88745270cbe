//! A minimal authoritative DNS server on 127.0.0.1 (UDP) for the DNS backend's
//! tests: one name answers A records for the addresses given, anything else is
//! NXDOMAIN. TTL 0, so changes show at the next lookup. Test-only: the product
//! uses hickory-resolver.

use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

pub struct Dnsd {
    pub port: u16,
    stop: Arc<AtomicBool>,
}

impl Dnsd {
    pub fn start(name: &str, ips: &[IpAddr]) -> Dnsd {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(std::time::Duration::from_millis(100)))
            .unwrap();
        let port = sock.local_addr().unwrap().port();
        let records: Vec<Ipv4Addr> = ips
            .iter()
            .map(|ip| match crate::support::loopback(*ip) {
                IpAddr::V4(v4) => v4,
                IpAddr::V6(_) => panic!("the test name server serves A records only"),
            })
            .collect();
        let records = Arc::new(Mutex::new(records));
        let stop = Arc::new(AtomicBool::new(false));
        let (recs, st, name) = (records.clone(), stop.clone(), name.to_ascii_lowercase());
        std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !st.load(Ordering::SeqCst) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                if let Some(reply) = answer(&buf[..n], &name, &recs.lock().unwrap()) {
                    let _ = sock.send_to(&reply, from);
                }
            }
        });
        Dnsd { port, stop }
    }

    pub fn server(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Dnsd {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// The reply to one query: A records for `name`, an empty answer for other
/// types of it, NXDOMAIN for other names.
fn answer(q: &[u8], name: &str, ips: &[Ipv4Addr]) -> Option<Vec<u8>> {
    if q.len() < 12 {
        return None;
    }
    // The question: labels up to a zero byte, then type and class.
    let mut i = 12;
    let mut labels = vec![];
    loop {
        let len = *q.get(i)? as usize;
        i += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(q.get(i..i + len)?).to_ascii_lowercase());
        i += len;
    }
    let qtype = u16::from_be_bytes([*q.get(i)?, *q.get(i + 1)?]);
    let question = &q[12..i + 4];
    let asked = labels.join(".");
    let (rcode, answers): (u16, &[Ipv4Addr]) = match (asked == name, qtype) {
        (true, 1) => (0, ips),
        (true, _) => (0, &[]),
        (false, _) => (3, &[]),
    };
    let mut r = vec![q[0], q[1]];
    let flags: u16 = 0x8400 | (u16::from(q[2] & 0x01) << 8) | 0x0080 | rcode; // QR, AA, RD copied, RA
    r.extend(flags.to_be_bytes());
    r.extend(1u16.to_be_bytes());
    r.extend((answers.len() as u16).to_be_bytes());
    r.extend([0, 0, 0, 0]);
    r.extend_from_slice(question);
    for ip in answers {
        r.extend([0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4]);
        r.extend(ip.octets());
    }
    Some(r)
}
