"""What the harnesses (scripts/bench.py, scripts/soak.py) share: the network
rule (loopback addresses only, no name resolution), ports, peer IDs, JSON over
HTTP, percentiles and shell output.

NETWORK RULE: `loopback()` raises for any address outside 127.0.0.0/8 and ::1,
and `guard_resolution()` makes every name lookup of this process go through it.
"""
import ipaddress
import json
import re
import socket
import subprocess
import time
import urllib.request


def loopback(host):
    """Returns host if it is a loopback IP literal; raises otherwise."""
    h = host.decode() if isinstance(host, bytes) else str(host)
    h = h.strip("[]")
    try:
        ip = ipaddress.ip_address(h)
    except ValueError:
        raise RuntimeError(f"network rule: {host!r} is not an IP literal (no name resolution here)")
    if not ip.is_loopback:
        raise RuntimeError(f"network rule: {host!r} is not a loopback address")
    return h


_real_getaddrinfo = socket.getaddrinfo


def _guarded_getaddrinfo(host, *a, **k):
    if host is not None:
        loopback(host)
    return _real_getaddrinfo(host, *a, **k)


def guard_resolution():
    """Every getaddrinfo of this process takes loopback literals only."""
    socket.getaddrinfo = _guarded_getaddrinfo


def check_url(url):
    """The URL, if its host is a loopback literal; raises otherwise."""
    m = re.match(r"^https?://(\[[^\]]+\]|[^:/]+)(:\d+)?(/.*)?$", url)
    if not m:
        raise RuntimeError(f"network rule: cannot read the host of {url!r}")
    loopback(m.group(1))
    return url


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_free(ip, port):
    with socket.socket() as s:
        try:
            s.bind((loopback(ip), port))
            return True
        except OSError:
            return False


def wait_port(host, port, timeout=30):
    loopback(host)
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection((host, port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {host}:{port}")


def get_json(url, timeout=1.0):
    """The JSON at url, or None when nothing (or not JSON) answers."""
    try:
        with urllib.request.urlopen(check_url(url), timeout=timeout) as r:
            return json.load(r)
    except Exception:  # noqa: BLE001 - not up yet
        return None


B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def b58enc(b):
    n, s = int.from_bytes(b, "big"), ""
    while n:
        n, r = divmod(n, 58)
        s = B58[r] + s
    return "1" * (len(b) - len(b.lstrip(b"\0"))) + s


def peer_id_of(pub):
    """An Ed25519 libp2p peer ID: identity multihash of the protobuf public key."""
    return b58enc(b"\x00\x24\x08\x01\x12\x20" + pub)


def fake_peer_id(rng):
    """A well-formed Ed25519 peer ID from a random.Random."""
    return peer_id_of(bytes(rng.getrandbits(8) for _ in range(32)))


def percentile(values, q):
    """The q-quantile (0..1) of values, interpolated; None when empty."""
    if not values:
        return None
    v = sorted(values)
    k = (len(v) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def sh(argv):
    """A command's output, stripped; a note when it cannot run (informational only)."""
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout.strip()
    except Exception as e:  # noqa: BLE001 - informational only
        return f"({e})"
