//! The fuzz targets' bodies (`fuzz/bodies.rs`) on stable, with proptest: random
//! bytes, and valid samples with random bytes changed, cut or inserted. The
//! cargo-fuzz targets run the same bodies for as long as one likes (README,
//! "Fuzzing"); this runs a few thousand inputs per parser in CI.

#[path = "../fuzz/bodies.rs"]
mod bodies;

use proptest::prelude::*;

const SAMPLES_MULTIADDR: &[&str] = &[
    "/ip4/10.0.1.7/tcp/9096/p2p/12D3KooWJrCnvRqSNKWn6C1mSp3ykaUNg3rUvVRhe3bWGhKL2Mhm",
    "/dns4/peer-1.cluster.local/tcp/9096",
    "/ip6/::1/tcp/9096/p2p/QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N",
    "10.0.1.7",
];
const SAMPLE_ATTRIBUTES: &str = "AWS_INSTANCE_IPV4=10.0.1.7\nAWS_INSTANCE_PORT=9096\nipfs_cluster_peer_id=12D3KooWJrCnvRqSNKWn6C1mSp3ykaUNg3rUvVRhe3bWGhKL2Mhm\nipfs_cluster_registered_at=2026-11-25T10:00:00.123Z\nipfs_cluster_api_port=9094\nipfs_cluster_consensus=raft\nipfs_cluster_init_peerset=12D3KooWJrCnvRqSNKWn6C1mSp3ykaUNg3rUvVRhe3bWGhKL2Mhm";
const SAMPLE_TASK: &str = include_str!("fixtures/task-metadata-fargate.json");
const SAMPLE_GREETING: &str = "ipfs-cluster-bootstrap/1 {\"peer_id\":\"12D3KooWJrCnvRqSNKWn6C1mSp3ykaUNg3rUvVRhe3bWGhKL2Mhm\",\"proposal\":[\"12D3KooWJrCnvRqSNKWn6C1mSp3ykaUNg3rUvVRhe3bWGhKL2Mhm\"]}\n";
const SAMPLE_SERVICE: &str = r#"{"cluster": {"secret": "2588b80d5cb05374fa142aed6cbb047d1f4ef8ef15e37eba68c65b9d30df67ed", "peerstore_file": ""}, "consensus": {"raft": {"init_peerset": [], "data_folder": ""}}, "api": {"restapi": {"http_listen_multiaddress": "/ip4/127.0.0.1/tcp/9094"}}}"#;
const SAMPLE_IDENTITY: &str =
    r#"{"id": "12D3KooWJrCnvRqSNKWn6C1mSp3ykaUNg3rUvVRhe3bWGhKL2Mhm", "private_key": "CAESQFake"}"#;

/// Random bytes, or `sample` with a few random edits.
fn input(samples: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    let edits = prop::collection::vec((any::<prop::sample::Index>(), 0u8..3, any::<u8>()), 0..6);
    prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..256),
        3 => (prop::sample::select(samples), edits).prop_map(|(mut s, edits)| {
            for (at, kind, byte) in edits {
                if s.is_empty() {
                    s.push(byte);
                    continue;
                }
                let i = at.index(s.len());
                match kind {
                    0 => s[i] = byte,
                    1 => s.truncate(i),
                    _ => s.insert(i, byte),
                }
            }
            s
        }),
    ]
}

fn bytes(v: &[&str]) -> Vec<Vec<u8>> {
    v.iter().map(|s| s.as_bytes().to_vec()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn multiaddr(data in input(bytes(SAMPLES_MULTIADDR))) { bodies::multiaddr(&data) }

    #[test]
    fn attributes(data in input(bytes(&[SAMPLE_ATTRIBUTES]))) { bodies::attributes(&data) }

    #[test]
    fn task_metadata(data in input(bytes(&[SAMPLE_TASK]))) { bodies::task_metadata(&data) }

    #[test]
    fn greeting(data in input(bytes(&[SAMPLE_GREETING]))) { bodies::greeting(&data) }
}

proptest! {
    // File-system bound: fewer cases.
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn local_files(data in input(vec![
        [SAMPLE_SERVICE.as_bytes(), &[0xff], SAMPLE_IDENTITY.as_bytes()].concat(),
    ])) { bodies::local_files(&data) }

    #[test]
    fn service_json_edit(data in input(bytes(&[SAMPLE_SERVICE]))) { bodies::service_json_edit(&data) }

    /// raft.db files made by the real daemon (tests/fixtures/raft), edited.
    #[test]
    fn raft_db(data in input(vec![
        include_bytes!("fixtures/raft/failed-join/raft.db").to_vec(),
        include_bytes!("fixtures/raft/many-logs/raft.db").to_vec(),
    ])) { bodies::raft_db(&data) }
}
