#!/usr/bin/env bash
# Builds the real daemons the tests and the demo run: ipfs-cluster-service and
# ipfs-cluster-ctl (CLUSTER_VERSION) and kubo's `ipfs` (KUBO_VERSION), from
# their Go modules, pinned in scripts/versions.env. Prints the folder that
# holds the three binaries on its last line of stdout.
#
# Cached per version under ${ICB_TESTBED_CACHE:-~/.cache/ipfs-cluster-bootstrap}:
# a second run only checks. Needs Go >= 1.26 (the modules' `go` lines).
#
# Both are built as the main module from a writable copy of their downloaded
# module (`go mod download module@version`), so that their own go.mod and
# go.sum apply exactly as in upstream's release builds. `go install
# module@version` would be simpler but fails here for both: kubo's go.mod has
# `exclude` directives since v0.40, which `go install` refuses, and for
# ipfs-cluster `go install` asks the proxy for the module's version list (to
# check for a deprecation), which the proxy refuses (403).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=versions.env
. "$here/versions.env"
cache="${ICB_TESTBED_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ipfs-cluster-bootstrap}"
bin="$cache/daemons-cluster-$CLUSTER_VERSION-kubo-$KUBO_VERSION"
say() { echo "build-daemons: $*" >&2; }

if ! command -v go >/dev/null; then
  say "go is not on PATH: install Go >= 1.26 (the daemons are built from their Go modules)"
  exit 69
fi
ok() {
  [ -x "$bin/ipfs-cluster-service" ] && [ -x "$bin/ipfs-cluster-ctl" ] && [ -x "$bin/ipfs" ] &&
    "$bin/ipfs-cluster-ctl" --version 2>/dev/null | grep -q "${CLUSTER_VERSION#v}" &&
    "$bin/ipfs" version 2>/dev/null | grep -q "${KUBO_VERSION#v}"
}
if ok; then
  echo "$bin"
  exit 0
fi
mkdir -p "$bin.tmp"
export CGO_ENABLED=0 GOFLAGS=-mod=readonly
start=$(date +%s)
# Builds module@version's packages as the main module, from a writable copy of
# the downloaded module: its own go.mod (excludes included) and go.sum apply.
build_module() { # module version out-dir package...
  local module=$1 version=$2 out=$3 dir src
  shift 3
  dir=$(go mod download -json "$module@$version" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
  src="$cache/src-${module##*/}-$version"
  rm -rf "$src"
  cp -r "$dir" "$src"
  chmod -R u+w "$src"
  (cd "$src" && go build -trimpath -o "$out/" "$@")
  rm -rf "$src"
}
if ! { [ -x "$bin.tmp/ipfs-cluster-service" ] && [ -x "$bin.tmp/ipfs-cluster-ctl" ]; }; then
  say "building ipfs-cluster-service and ipfs-cluster-ctl $CLUSTER_VERSION (minutes on a cold Go cache)"
  build_module github.com/ipfs-cluster/ipfs-cluster "$CLUSTER_VERSION" "$bin.tmp" \
    ./cmd/ipfs-cluster-service ./cmd/ipfs-cluster-ctl
  say "ipfs-cluster built after $(( $(date +%s) - start )) s"
fi
if [ ! -x "$bin.tmp/ipfs" ]; then
  say "building kubo $KUBO_VERSION (minutes on a cold Go cache)"
  build_module github.com/ipfs/kubo "$KUBO_VERSION" "$bin.tmp" ./cmd/ipfs
  say "kubo built after $(( $(date +%s) - start )) s"
fi
rm -rf "$bin"
mv "$bin.tmp" "$bin"
ok || { say "the built binaries do not report the pinned versions"; exit 70; }
echo "$bin"
