#!/usr/bin/env bash
# The test command: installs the test bed if needed, then runs every test.
#   scripts/test.sh            all tests: unit, property, simulation, end to end
#                              against the test double, the double's self-test,
#                              the real test bed (real kubo and ipfs-cluster in
#                              network namespaces; needs root), the short soak,
#                              the spin model check
#   scripts/test.sh -- NAME    cargo test filter (the other suites still run)
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
step() { echo "== $* ($(( $(date +%s) - start )) s)"; }
step "test bed"
scripts/setup-testbed.sh
step "ipfs-cluster-service test double: self-test"
.venv/bin/python -m unittest discover -s tests/double -p 'test_*.py'
step "cargo test"
cargo test --locked "${@:2}"
step "the library without the aws feature (what fuzz/ builds on)"
cargo check --locked --quiet --no-default-features --lib
# The real test bed runs the binary cargo test just built (target/debug).
step "real daemons in network namespaces (pytest tests/real)"
.venv/bin/python -m pytest -p no:cacheprovider -q -rs tests/real
step "soak (short)"
.venv/bin/python scripts/soak.py --short
step "model check (spin)"
model/check.sh
step "all passed"
