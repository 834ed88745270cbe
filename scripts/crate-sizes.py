#!/usr/bin/env python3
"""Which crates the release binary's code comes from, as cargo-bloat --crates
would say, from an UNSTRIPPED release binary (the shipped one is stripped).

    cargo rustc --release --bin ipfs-cluster-bootstrap -- -C strip=none
    cp target/release/ipfs-cluster-bootstrap /tmp/icb-unstripped
    python3 scripts/crate-sizes.py /tmp/icb-unstripped [--top 30]

The `cargo rustc` line relinks only the binary (the dependencies stay
built); a later `cargo build --release` relinks it stripped again.

Each function symbol's size (`nm -S -C`) is attributed to the first crate
its demangled path names other than std, core and alloc (so that
`core::ptr::drop_in_place<aws_sdk_ec2::...>` counts for the EC2 client; unlike
cargo-bloat, which counts it for core), else to std, core or alloc; crate names come from Cargo.lock, plus std, core and alloc. The text section's
size not covered by a named symbol is reported as unattributed.
"""
import argparse, collections, re, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STD = {"std", "core", "alloc"}


def crate_names():
    names = set(STD)
    for m in re.finditer(r'^name = "([^"]+)"', (ROOT / "Cargo.lock").read_text(), re.M):
        names.add(m.group(1).replace("-", "_"))
    return names


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("binary")
    ap.add_argument("--top", type=int, default=30)
    a = ap.parse_args()
    names = crate_names()
    ident = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?=::)")
    out = subprocess.run(["nm", "-S", "-C", "--size-sort", "--defined-only", a.binary],
                         capture_output=True, text=True, check=True).stdout
    if not out.strip():
        sys.exit(f"{a.binary}: no symbols (a stripped binary? see --help)")
    sizes = collections.Counter()
    for line in out.splitlines():
        parts = line.split(None, 3)
        if len(parts) < 4 or parts[2] not in "tTwW":
            continue
        size, sym = int(parts[1], 16), parts[3]
        found = [c for c in ident.findall(sym) if c in names]
        # A std generic instantiated for another crate's type (drop_in_place,
        # Vec, Option, futures' state machines) counts for that crate.
        crate = next((c for c in found if c not in STD), found[0] if found else None)
        sizes[crate or "[other symbols]"] += size
    text = 0
    for line in subprocess.run(["size", "-A", a.binary], capture_output=True, text=True, check=True).stdout.splitlines():
        f = line.split()
        if f and f[0] == ".text":
            text = int(f[1])
    file_size = Path(a.binary).stat().st_size
    named = sum(sizes.values())
    print(f"file {file_size:,} bytes (unstripped); .text {text:,} bytes; function symbols {named:,} bytes")
    print(f"| crate | bytes | share of .text |\n| --- | ---: | ---: |")
    for crate, n in sizes.most_common(a.top):
        print(f"| {crate} | {n:,} | {100 * n / text:.1f} % |")
    rest = sum(n for _, n in sizes.most_common()[a.top:])
    print(f"| (the other {max(0, len(sizes) - a.top)} crates) | {rest:,} | {100 * rest / text:.1f} % |")
    print(f"| (unattributed .text) | {text - named:,} | {100 * (text - named) / text:.1f} % |")


if __name__ == "__main__":
    main()
