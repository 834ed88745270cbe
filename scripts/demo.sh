#!/usr/bin/env bash
# The demo: 3 "ECS tasks" on one machine, run as the shipped task definition
# runs them, on one state root (a folder standing in for EFS). Each task's
# kubo container is `ipfs-cluster-bootstrap slot -- start_ipfs daemon ...`
# (it takes a state slot; tests/real/kubo_start.py stands in for kubo's
# start script) and its cluster container is ipfs-cluster-bootstrap, which
# runs in that slot and execs the real ipfs-cluster-service v1.1.6; the peers
# find each other in Cloud Map (moto's server). Prints each peer's decision,
# the cluster the daemons report, a file added on one task and fetched from
# another task's gateway, and genesis.json; then replaces task2 by a task4 on
# a new address, which takes task2's slot and comes back as the same peer, on
# its state, still serving the file.
#   scripts/demo.sh [crdt|raft]
#
# Everything runs inside ONE new user+network namespace that has only `lo`
# (ipfs-cluster sends UPnP/SSDP and NAT-PMP whenever it starts): no root
# needed, nothing reaches the host's network. Each task is 127.0.0.N (2, 3, 4;
# the replacement 5) on the standard ports. If user namespaces are not
# allowed, it stops.
#
# The first run builds: this tool (cargo, debug) and the daemons from Go
# source (scripts/setup-testbed.sh --demo, cached under ~/.cache): about 15
# min on 2 CPUs. Parallel jobs are sized from available memory; set
# CARGO_BUILD_JOBS or GOMAXPROCS to choose. ICB_BINARY=path runs that
# ipfs-cluster-bootstrap instead of building one.
set -euo pipefail
cd "$(dirname "$0")/.."
consensus=${1:-crdt}
case $consensus in
  crdt | raft) ;;
  *) echo "usage: scripts/demo.sh [crdt|raft]" >&2; exit 64 ;;
esac
say() { echo "demo: $*" >&2; }

# The namespace: a user namespace (we are its root), a network namespace with
# only lo, and a PID namespace so that nothing outlives the demo.
NS=(unshare --user --map-root-user --net --pid --fork --kill-child)
userns_check() {
  local err
  err=$("${NS[@]}" sh -c 'ip link set lo up' 2>&1) && return 0
  say "cannot create the user+network namespace the demo runs in:"
  say "  \$ ${NS[*]} sh -c 'ip link set lo up'"
  say "  $err"
  local f=/proc/sys/kernel/apparmor_restrict_unprivileged_userns
  if [ "$(cat $f 2>/dev/null)" = 1 ]; then
    say "AppArmor restricts unprivileged user namespaces ($f = 1, Ubuntu >= 23.10)."
    say "  allow them:  sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0"
  fi
  if [ "$(cat /proc/sys/user/max_user_namespaces 2>/dev/null)" = 0 ]; then
    say "user namespaces are disabled (user.max_user_namespaces = 0)."
    say "  allow them:  sudo sysctl -w user.max_user_namespaces=10000"
  fi
  if [ "$(cat /proc/sys/kernel/unprivileged_userns_clone 2>/dev/null)" = 0 ]; then
    say "unprivileged user namespaces are disabled (kernel.unprivileged_userns_clone = 0)."
    say "  allow them:  sudo sysctl -w kernel.unprivileged_userns_clone=1"
  fi
  say "inside a container, the runtime's seccomp or AppArmor profile may forbid unshare: run the demo on a VM"
  say "or host, or give the container a profile that allows it."
  say "The demo does not fall back to the host's network: the real daemons must not send UPnP/NAT-PMP there."
  exit 77
}
if command -v unshare >/dev/null && command -v ip >/dev/null; then
  userns_check # before any build: fail in a second, not after ten minutes
fi

# Parallel build jobs from free memory (measured on 2 CPUs: a Go compile or
# link of kubo peaks near 1 GB, most rustc jobs 1-3 GB). One rustc cannot be
# split: the debug build of the aws-sdk-ec2 crate alone peaks near 8 GB.
avail_mb=$(awk '/^MemAvailable:/ { print int($2 / 1024) }' /proc/meminfo)
jobs_for() { # MB per job
  local j=$((avail_mb / $1))
  [ "$j" -le "$(nproc)" ] || j=$(nproc)
  [ "$j" -ge 1 ] || j=1
  echo "$j"
}
export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-$(jobs_for 3072)}
export GOMAXPROCS=${GOMAXPROCS:-$(jobs_for 1536)} # go's -p defaults to it (build-daemons.sh sets GOFLAGS)

started=$(date +%s)
say "set-up: Debian packages if missing, .venv with moto's server (about 1 min), and the real daemons" \
  "(ipfs-cluster-service/-ctl and kubo from Go source: about 6 min on 2 CPUs the first time, downloads" \
  "included, then cached; $GOMAXPROCS parallel Go jobs, ${avail_mb} MB available)"
# go build prints nothing while it compiles: a line a minute shows it is alive.
(
  trap 'kill $! 2>/dev/null; exit 0' TERM
  while :; do
    sleep 60 &
    wait $!
    say "... still setting up ($((($(date +%s) - started) / 60)) min)"
  done
) &
ticker=$!
trap 'kill $ticker 2>/dev/null' EXIT
scripts/setup-testbed.sh --demo
daemons=$(scripts/build-daemons.sh | tail -n 1)
kill $ticker 2>/dev/null
trap - EXIT

if [ -n "${ICB_BINARY:-}" ]; then
  binary=$ICB_BINARY
  say "using ICB_BINARY=$binary"
else
  if [ ! -e target/debug/ipfs-cluster-bootstrap ] && [ "$avail_mb" -lt 8500 ]; then
    say "WARNING: only ${avail_mb} MB available; compiling the aws-sdk-ec2 crate takes about 8 GB in one rustc"
    say "  process (whatever the number of jobs). With less, add swap or pass ICB_BINARY=<a built binary>."
  fi
  say "building ipfs-cluster-bootstrap (cargo build, debug: about 8 min with $CARGO_BUILD_JOBS jobs" \
    "the first time, then seconds)"
  cargo build --locked
  binary=$PWD/target/debug/ipfs-cluster-bootstrap
fi
[ -x "$binary" ] || { say "$binary is not an executable"; exit 66; }
say "ready after $(($(date +%s) - started)) s; entering a new user+network namespace (only lo, no route out)"
echo >&2

userns_check
# Nothing in the namespace may use a proxy: it could not be reached anyway.
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY no_proxy NO_PROXY
export ICB_BINARY=$binary ICB_DAEMONS=$daemons
exec "${NS[@]}" sh -c 'ip link set lo up && exec "$@"' sh .venv/bin/python scripts/demo.py "$consensus"
