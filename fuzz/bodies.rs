//! The fuzz targets' bodies, shared by the cargo-fuzz targets
//! (`fuzz/fuzz_targets/*.rs`, nightly) and by `tests/parsers.rs` (stable,
//! proptest, in CI). Each takes arbitrary bytes, must never panic, and checks
//! what a parser promises: a value it accepts round-trips, and a file edit
//! either fully happens or leaves the file byte for byte as it was.

use std::collections::HashMap;
use std::path::PathBuf;

use ipfs_cluster_bootstrap::contact::Greeting;
use ipfs_cluster_bootstrap::discovery::attributes;
use ipfs_cluster_bootstrap::discovery::static_list::StaticPeer;
use ipfs_cluster_bootstrap::peer::{PeerAddr, PeerId};
use ipfs_cluster_bootstrap::selfaddr::TaskMetadata;
use ipfs_cluster_bootstrap::{apply, local, raftstate};

const ID: &str = "12D3KooWJrCnvRqSNKWn6C1mSp3ykaUNg3rUvVRhe3bWGhKL2Mhm";

/// Multiaddrs, --peers entries and peer IDs.
pub fn multiaddr(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(a) = PeerAddr::parse(text) {
        let again = PeerAddr::parse(&a.to_string()).expect("a parsed multiaddr prints as one that parses");
        assert_eq!(again, a);
    }
    let _ = StaticPeer::parse(text, 9096);
    if let Ok(id) = PeerId::parse(text) {
        assert_eq!(id.as_str(), text);
    }
}

/// Cloud Map attributes: `key=value` lines.
pub fn attributes(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let attrs: HashMap<String, String> = text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    if let Ok(r) = attributes::decode("fuzz", &attrs, 9094) {
        let encoded: HashMap<String, String> = attributes::encode(&r).into_iter().collect();
        let again = attributes::decode("fuzz", &encoded, 9094).expect("what decode reads, encode writes readably");
        assert_eq!(again.peer_id, r.peer_id);
        assert_eq!(again.ip, r.ip);
        assert_eq!(again.init_peerset, r.init_peerset);
    }
}

/// The ECS task metadata v4 `/task` document.
pub fn task_metadata(data: &[u8]) {
    if let Ok(m) = TaskMetadata::parse(data) {
        let _ = m.task();
        let _ = m.first_ipv4();
        if let Some(id) = m.task_id() {
            assert!(!id.is_empty() && !id.contains('/'));
        }
    }
}

/// The contact point's greeting line, read from any peer on the network.
pub fn greeting(data: &[u8]) {
    if let Some(g) = Greeting::parse(data) {
        assert_eq!(Greeting::parse(&g.line()), Some(g));
    }
}

/// A scratch folder per process and thread, made empty per input and
/// removed after it.
struct Scratch(PathBuf);

impl std::ops::Deref for Scratch {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn scratch() -> Scratch {
    let thread = format!("{:?}", std::thread::current().id()).replace(|c: char| !c.is_ascii_digit(), "");
    let d = std::env::temp_dir().join(format!("icb-fuzz-{}-{thread}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    Scratch(d)
}

/// service.json and identity.json as read at start (split at the first 0xff).
pub fn local_files(data: &[u8]) {
    let (service, identity) = match data.iter().position(|b| *b == 0xff) {
        Some(i) => (&data[..i], Some(&data[i + 1..])),
        None => (data, None),
    };
    let d = scratch();
    std::fs::write(d.join("service.json"), service).unwrap();
    if let Some(identity) = identity {
        std::fs::write(d.join("identity.json"), identity).unwrap();
    }
    let _ = local::read(&d, None, &local::Paths::default());
    assert_eq!(
        std::fs::read(d.join("service.json")).unwrap(),
        service,
        "reading changes nothing"
    );
}

/// A raft data folder's raft.db: an answer or an error, never a panic or a hang,
/// and the file is only read.
pub fn raft_db(data: &[u8]) {
    let d = scratch();
    std::fs::write(d.join("raft.db"), data).unwrap();
    let answer = raftstate::has_raft_state(&d);
    if data.is_empty() {
        assert!(matches!(answer, Ok(false)), "an empty raft.db is no state");
    }
    assert_eq!(
        std::fs::read(d.join("raft.db")).unwrap(),
        data,
        "reading changes nothing"
    );
}

/// Writing consensus.raft.init_peerset into any service.json.
pub fn service_json_edit(data: &[u8]) {
    let d = scratch();
    let path = d.join("service.json");
    std::fs::write(&path, data).unwrap();
    let set = vec![PeerId::parse(ID).unwrap()];
    match apply::set_init_peerset(&path, &set) {
        Ok(_) => {
            let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
            assert_eq!(doc["consensus"]["raft"]["init_peerset"][0], ID);
        }
        Err(_) => assert_eq!(
            std::fs::read(&path).unwrap(),
            data,
            "a failed edit leaves the file as it was"
        ),
    }
    let leftovers: Vec<_> = std::fs::read_dir(&*d)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(leftovers.len(), 1, "no temporary file left behind: {leftovers:?}");
}
