#!/usr/bin/env bash
# The test command: installs the test bed if needed, then runs every test.
#   scripts/test.sh            all tests (unit, property, simulation, end to end, the
#                              double's self-test, the short soak, the spin model check)
#   scripts/test.sh -- NAME    cargo test filter
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-testbed.sh
echo "== ipfs-cluster-service test double: self-test"
.venv/bin/python -m unittest discover -s tests/double -p 'test_*.py'
echo "== cargo test"
cargo test --locked "${@:2}"
echo "== soak (short)"; .venv/bin/python scripts/soak.py --short
echo "== model check (spin)"; model/check.sh
