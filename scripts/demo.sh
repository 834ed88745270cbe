#!/usr/bin/env bash
# The local demo: 3 peers bootstrapping on loopback against moto's Cloud Map.
#   scripts/demo.sh [crdt|raft]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-testbed.sh
cargo build --locked --quiet
exec .venv/bin/python scripts/demo.py "${1:-crdt}"
