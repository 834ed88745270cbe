#!/usr/bin/env bash
# Installs what the tests need beside the Rust toolchain: spin (the model
# checker), and a Python venv (.venv)
# with moto's server (the AWS API emulator the tests start on 127.0.0.1) and
# `cryptography` (the ipfs-cluster-service test double makes real Ed25519 IDs).
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."
MOTO_VERSION="${MOTO_VERSION:-5.2.5}"
# spin checks the Promela model of the founding rules (model/check.sh).
if ! command -v spin >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && apt-get install -y -qq spin gcc >/dev/null
  else
    echo "spin is missing: install the Debian package spin (model/check.sh needs it)" >&2
  fi
fi
if [ -x .venv/bin/moto_server ] && .venv/bin/python -c 'import moto, cryptography' 2>/dev/null; then
  exit 0
fi
if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
  # Debian splits venv out of python3.
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
  else
    echo "python3 cannot create venvs: install python3-venv (Debian) and run again" >&2
    exit 1
  fi
fi
python3 -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check "moto[server]==${MOTO_VERSION}" cryptography
.venv/bin/moto_server --help >/dev/null
echo "test bed ready: .venv/bin/moto_server (moto ${MOTO_VERSION})"
