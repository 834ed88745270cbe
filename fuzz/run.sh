#!/usr/bin/env bash
# Runs every cargo-fuzz target for a bounded time, seeded with the samples
# tests/parsers.rs mutates, and prints libFuzzer's final counts per target.
# Not part of CI: see README "Fuzzing". Needs a nightly toolchain and
# cargo-fuzz (cargo install cargo-fuzz).
#   fuzz/run.sh [SECONDS per target, default 300] [TARGET ...]
# Debug build (--dev): overflow checks and debug assertions on, and it builds
# in about 5 minutes on 2 cores; the crate is built without its `aws` feature.
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-300}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(multiaddr attributes task_metadata greeting local_files service_json_edit raft_db)
fi
fixtures=../tests/fixtures
id=12D3KooWJrCnvRqSNKWn6C1mSp3ykaUNg3rUvVRhe3bWGhKL2Mhm
service='{"cluster": {"secret": "2588b80d5cb05374fa142aed6cbb047d1f4ef8ef15e37eba68c65b9d30df67ed", "peerstore_file": ""}, "consensus": {"raft": {"init_peerset": [], "data_folder": ""}}, "api": {"restapi": {"http_listen_multiaddress": "/ip4/127.0.0.1/tcp/9094"}}}'
seed() { # seed TARGET NAME: the seed's bytes on stdin
  mkdir -p "corpus/$1"
  cat > "corpus/$1/seed-$2"
}
printf '%s' "/ip4/10.0.1.7/tcp/9096/p2p/$id" | seed multiaddr p2p
printf '%s' "/dns4/peer-1.cluster.local/tcp/9096" | seed multiaddr dns
printf '%s' "/ip6/::1/tcp/9096/p2p/QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N" | seed multiaddr ip6
printf '%s' "10.0.1.7" | seed multiaddr plain
printf 'AWS_INSTANCE_IPV4=10.0.1.7\nAWS_INSTANCE_PORT=9096\nipfs_cluster_peer_id=%s\nipfs_cluster_registered_at=2026-11-25T10:00:00.123Z\nipfs_cluster_api_port=9094\nipfs_cluster_consensus=raft\nipfs_cluster_init_peerset=%s' "$id" "$id" |
  seed attributes raft
seed task_metadata fargate < "$fixtures/task-metadata-fargate.json"
printf 'ipfs-cluster-bootstrap/1 {"peer_id":"%s","proposal":["%s"]}\n' "$id" "$id" | seed greeting proposal
{ printf '%s\377' "$service"; printf '{"id": "%s", "private_key": "CAESQFake"}' "$id"; } | seed local_files both
printf '%s' "$service" | seed service_json_edit raft
for db in "$fixtures"/raft/*/raft.db; do
  seed raft_db "$(basename "$(dirname "$db")")" < "$db"
done

cargo +nightly fuzz build --dev
mkdir -p logs
for t in "${targets[@]}"; do
  echo "== $t (${secs} s)"
  cargo +nightly fuzz run --dev "$t" "corpus/$t" -- -max_total_time="$secs" -print_final_stats=1 \
    > "logs/$t.log" 2>&1 || { echo "$t FAILED: fuzz/logs/$t.log, fuzz/artifacts/$t/"; tail -40 "logs/$t.log"; exit 1; }
  grep -E '^#[0-9]+ +DONE|stat::number_of_executed_units|stat::average_exec_per_sec|stat::peak_rss_mb' "logs/$t.log" || true
done
