#!/usr/bin/env bash
# Installs what the tests need beside the Rust toolchain:
#   - Debian packages: spin (the model checker) and gcc; iproute2 and nftables
#     (each task of the real test bed is a network namespace with an egress
#     drop rule); nginx-light (stands in for the ALB in front of the gateways);
#     tini (PID 1 of the shipped image, run as the image runs it).
#   - a Python venv (.venv) with moto's server (the AWS API emulator), pytest
#     (the real test bed's runner), dnslib (its name server), cfn-lint (lints
#     deploy/cloudformation.json) and cryptography (the ipfs-cluster-service
#     test double makes real Ed25519 IDs).
#   - the real daemons: ipfs-cluster-service and ipfs-cluster-ctl v1.1.6 and
#     kubo, built from their Go modules (scripts/build-daemons.sh, cached).
# Versions are pinned in scripts/versions.env. Idempotent: a second run only checks.
#   scripts/setup-testbed.sh            everything
#   scripts/setup-testbed.sh --demo     only what scripts/demo.sh needs (no spin, nginx, pytest)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/versions.env
demo=false
[ "${1:-}" = --demo ] && demo=true
say() { echo "setup-testbed: $*" >&2; }

need=()
command -v ip >/dev/null || need+=(iproute2)
command -v unshare >/dev/null || need+=(util-linux)
if ! $demo; then
  command -v spin >/dev/null || need+=(spin)
  command -v gcc >/dev/null || need+=(gcc)
  command -v nft >/dev/null || need+=(nftables)
  command -v nginx >/dev/null || need+=(nginx-light)
  command -v tini >/dev/null || need+=(tini)
fi
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing Debian packages: ${need[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    say "missing Debian packages: ${need[*]} (install them as root and run again)"
    exit 69
  fi
fi

pydeps=("moto[server]==${MOTO_VERSION}" cryptography)
$demo || pydeps+=("pytest==${PYTEST_VERSION}" "dnslib==${DNSLIB_VERSION}" "cfn-lint==${CFN_LINT_VERSION}")
check='import moto, cryptography'
$demo || check="$check, pytest, dnslib, cfnlint.version; assert cfnlint.version.__version__ == '${CFN_LINT_VERSION}'"
if ! { [ -x .venv/bin/moto_server ] && .venv/bin/python -c "$check" 2>/dev/null; }; then
  say "installing the Python venv (.venv): ${pydeps[*]}"
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check "${pydeps[@]}"
  .venv/bin/moto_server --help >/dev/null
fi

daemons=$(scripts/build-daemons.sh | tail -n 1)
say "test bed ready: .venv (moto ${MOTO_VERSION}$($demo || echo ", cfn-lint ${CFN_LINT_VERSION}")), daemons in $daemons"
