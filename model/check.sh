#!/usr/bin/env bash
# Checks model/founding.pml with spin (Debian package `spin`, and gcc).
#   model/check.sh          what CI runs: N=3 peers, exhaustive, crdt and raft,
#                           plus mutations that must fail
#   model/check.sh --long   adds N=4 peers (bitstate search) and clock skew
# Prints one line per configuration; exits non-zero when a property fails
# where it must hold, or holds where a mutation must break it.
set -euo pipefail
cd "$(dirname "$0")"
command -v spin >/dev/null || { echo "spin is not installed (apt-get install spin)" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
status=0

# name | expected (holds|fails) | search (exhaustive|bitstate) | -D defines
configs=(
  "crdt N=3 E=2 D=1 SETTLE=2, 1 crash|holds|exhaustive|-DRAFT=0"
  "raft N=3 E=2 D=1 SETTLE=2, no crash|holds|exhaustive|-DRAFT=1 -DCRASHES=0"
  "crdt, delays beyond --settle and no agreement rule (must fail)|fails|exhaustive|-DRAFT=0 -DD=3 -DNO_AGREEMENT=1"
  "crdt, a founder's start not remembered (must fail)|fails|exhaustive|-DRAFT=0 -DNO_MEMORY=1"
)
if [[ "${1:-}" == "--long" ]]; then
  configs+=(
    "raft N=3 E=2 D=1 SETTLE=2, 1 crash|holds|exhaustive|-DRAFT=1"
    "crdt N=3 ranks unrelated to registration order (clock skew)|holds|exhaustive|-DRAFT=0 -DSKEW=1"
    "raft N=3 ranks unrelated to registration order (clock skew)|holds|exhaustive|-DRAFT=1 -DSKEW=1"
    "raft without the confirming round|measured|exhaustive|-DRAFT=1 -DNO_CONFIRM=1"
    "raft without the agreement rule|measured|exhaustive|-DRAFT=1 -DNO_AGREEMENT=1"
    "crdt, delays beyond --settle (D=3), rules intact|measured|exhaustive|-DRAFT=0 -DD=3"
    "crdt N=4 E=2 D=1 SETTLE=2, 1 crash|holds|bitstate|-DN=4 -DRAFT=0"
    "raft N=4 E=2 D=1 SETTLE=2, 1 crash|holds|bitstate|-DN=4 -DRAFT=1"
    "crdt N=4 E=2 delays beyond --settle (D=3), clock skew|measured|bitstate|-DN=4 -DD=3 -DSKEW=1 -DCRASHES=0"
  )
fi

printf '%-62s %-9s %-8s %12s %8s\n' configuration expected result states seconds
for c in "${configs[@]}"; do
  IFS='|' read -r name expected search defines <<<"$c"
  d="$work/$(echo "$name" | tr -c 'a-zA-Z0-9' '_')"
  mkdir -p "$d"
  cp founding.pml "$d/"
  # shellcheck disable=SC2086
  (cd "$d" && spin -a $defines founding.pml >/dev/null)
  if [[ $search == bitstate ]]; then
    (cd "$d" && gcc -O2 -DSAFETY -DBITSTATE -o pan pan.c 2>/dev/null)
    opts="-w30"
  else
    (cd "$d" && gcc -O2 -DSAFETY -DCOLLAPSE -DMEMLIM=8000 -o pan pan.c 2>/dev/null)
    opts=""
  fi
  start=$(date +%s)
  # shellcheck disable=SC2086
  (cd "$d" && ./pan -m2000000 $opts >out.txt 2>&1) || true
  secs=$(($(date +%s) - start))
  errors=$(sed -n 's/.*errors: \([0-9]*\).*/\1/p' "$d/out.txt" | tail -1)
  states=$(sed -n 's/^ *\([0-9.e+]*\) states, stored.*/\1/p' "$d/out.txt" | tail -1)
  if grep -q "max search depth too small\|out of memory" "$d/out.txt"; then
    result="incomplete"
  elif [[ "$errors" == "0" ]]; then
    result="holds"
  elif [[ -n "$errors" ]]; then
    result="fails"
  else
    result="error"
  fi
  printf '%-62s %-9s %-8s %12s %8s\n' "$name" "$expected" "$result" "${states:-?}" "$secs"
  if [[ $result == fails && $expected == holds ]]; then
    (cd "$d" && spin -t -p $defines founding.pml | tail -40) || true
  fi
  if [[ $expected != measured && $result != "$expected" ]]; then
    status=1
  fi
done
exit $status
