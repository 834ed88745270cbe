#!/usr/bin/env python3
"""Benchmark of ipfs-cluster-bootstrap (issue 5). Not a test: it measures and reports.

    .venv/bin/python scripts/bench.py [--runs 15] [--warmup 2] [--sizes 3,100,1000]
                                      [--agree 10,30] [--launches 3] [--out docs/bench.md]

Measures, against moto's Cloud Map on 127.0.0.1:
 - start-to-exec of a JOINING peer with R live registered peers (R = --sizes):
   wall time from spawn to process exit (the daemon is /bin/true, so "exec" ends
   the process), peak RSS (ru_maxrss from wait4, which Linux keeps across exec),
   and the decision record's elapsed_ms. The R peers are fake daemons served by a
   helper process on 127.1.x.y: GET /id answers {"id", "cluster_peers", ...}, the
   cluster port sends 24 random bytes (like the pnet nonce) and stays open. Two
   variants: cluster_peers lists all R IDs (what a real cluster answers), or only 3.
 - AWS calls per run by operation, through a counting forwarder in front of moto
   (scripts/awsproxy.py when it is there and works, else the one in this file),
   with the forwarder's timestamps used to split a run into phases.
 - AWS calls and time of a FOUNDING peer (no live peer, --expect 1).
 - the size of the stripped release binary.
 - time for 10 and 30 peers started together to agree on one cluster (crdt and
   raft), with the ipfs-cluster-service test double as the daemon.
Writes a markdown report (--out) with the machine it ran on. Text between the
`<!-- analysis:begin -->` and `<!-- analysis:end -->` markers of an existing
report is kept.

NETWORK RULE: every address this script binds, dials or hands to a child is
checked to be in 127.0.0.0/8 or ::1, and name resolution of anything but a
loopback IP literal is refused in this process. The binary runs with
--loopback-only.
"""
import argparse, base64, datetime, json, os, re, shutil, signal, socket, statistics
import subprocess, sys, tempfile, threading, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
from harness import (  # noqa: E402
    check_url, free_port, get_json, guard_resolution, loopback, peer_id_of, percentile, sh, wait_port)

guard_resolution()
VENV = os.path.join(ROOT, ".venv", "bin")
DOUBLE = os.path.join(ROOT, "tests", "double", "ipfs-cluster-service")
RELEASE_BIN = os.path.join(ROOT, "target", "release", "ipfs-cluster-bootstrap")
TARGET = "Route53AutoNaming_v20170314."
NAMESPACE = "ipfs-bench"

BUDGETS = {  # issues 5 and 11
    "join_3_ms": 30.0,
    "join_1000_ms": 300.0,
    "calls_join": 3,
    "rss_kib": 8 * 1024,  # at R = 3, and founding
    "rss_1000_kib": 16 * 1024,
    "record_1000_bytes": 64 * 1024,
    "size_bytes": 6 * 1024 * 1024,
}


# ---------------------------------------------------------------- peer IDs
def new_identity():
    """A real Ed25519 identity.json, as ipfs-cluster-service init writes it."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    seed = os.urandom(32)
    pub = Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()
    return {"id": peer_id_of(pub), "private_key": base64.b64encode(b"\x08\x01\x12\x40" + seed + pub).decode()}


def fake_ip(i):
    """127.1.x.y for fake peer i (host bytes 1..250)."""
    return f"127.1.{i // 250}.{i % 250 + 1}"


# ---------------------------------------------------------------- native helpers (C, built at start)
# scripts/native/spawn.c, the spawner: Python's fork (or vfork) of this process
# would make the child's ru_maxrss start at Python's own size (Linux keeps the
# max across exec), so runs are started from this small program instead.
# scripts/native/fakepeers.c, the fake peers: R daemons' REST APIs and cluster
# ports in one epoll loop, so that serving 1000 probes costs milliseconds, not
# the Python fallback's ~0.5 ms each.
NATIVE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "native")


def build_native(work):
    """Compiles the helpers with cc; {} when there is no C compiler."""
    cc = shutil.which("cc") or shutil.which("gcc")
    out = {}
    if not cc:
        return out
    for name in ("spawn", "fakepeers"):
        c = os.path.join(NATIVE, name + ".c")
        exe = os.path.join(work, name)
        r = subprocess.run([cc, "-O2", "-o", exe, c], capture_output=True, text=True)
        if r.returncode == 0:
            out[name] = exe
        else:
            print(f"warning: cannot build the {name} helper: {r.stderr[:500]}", file=sys.stderr)
    return out


# ---------------------------------------------------------------- fake peers (a helper process)
def fake_peers_main(spec_path):
    """Serves R fake daemons: GET /id and /health on IP:9094, 24 bytes on IP:9096.

    Control on stdin: `stats` prints one JSON line (counts, first and last
    activity, CPU seconds) and resets the counters."""
    import asyncio

    spec = json.load(open(spec_path))
    peers = spec["peers"]
    ids = [p["id"] for p in peers]
    few = spec["cluster_peers"] == "few"
    shared = json.dumps(ids).encode()
    st = {"http": 0, "tcp": 0, "first": None, "last": None, "bytes": 0}

    def body_of(i, p):
        # "few": the peer itself and the next two, as a small cluster would answer.
        listed = json.dumps([ids[(i + k) % len(ids)] for k in range(min(3, len(ids)))]).encode() if few else shared
        return (b'{"id":"%s","addresses":["/ip4/%s/tcp/9096/p2p/%s"],"cluster_peers":%s,'
                b'"cluster_peers_addresses":[],"version":"1.1.6","commit":"bench","peername":"fake%d",'
                b'"rpc_protocol_version":"/ipfscluster/v1.0/rpc","error":"",'
                b'"ipfs":{"id":"","addresses":null,"error":"no kubo (bench fake peer)"}}'
                % (p["id"].encode(), p["ip"].encode(), p["id"].encode(), listed, i))

    def touch():
        now = time.time()
        if st["first"] is None:
            st["first"] = now
        st["last"] = now

    async def http(reader, writer, i):
        body = body_of(i, peers[i])
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                touch()
                line = head.split(b"\r\n", 1)[0].split()
                path = line[1] if len(line) > 1 else b"/"
                if path == b"/id":
                    resp = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body
                elif path == b"/health":
                    resp = b"HTTP/1.1 204 No Content\r\n\r\n"
                else:
                    resp = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
                writer.write(resp)
                await writer.drain()
                st["http"] += 1
                st["bytes"] += len(resp)
                touch()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    async def cluster(reader, writer):
        touch()
        st["tcp"] += 1
        try:
            writer.write(os.urandom(24))  # like the pnet nonce a real daemon sends first
            await writer.drain()
            while await reader.read(4096):
                pass
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def main():
        servers = []
        for i, p in enumerate(peers):
            ip = loopback(p["ip"])
            servers.append(await asyncio.start_server(lambda r, w, i=i: http(r, w, i), ip, 9094,
                                                      reuse_address=True, backlog=64))
            servers.append(await asyncio.start_server(cluster, ip, 9096, reuse_address=True, backlog=64))
        loop = asyncio.get_running_loop()
        done = asyncio.Event()

        def control():
            for line in sys.stdin:
                if line.strip() == "stats":
                    out = dict(st, cpu=time.process_time())
                    st.update(http=0, tcp=0, first=None, last=None, bytes=0)
                    sys.stdout.write(json.dumps(out) + "\n")
                    sys.stdout.flush()
            loop.call_soon_threadsafe(done.set)

        threading.Thread(target=control, daemon=True).start()
        print("ready", flush=True)
        await done.wait()

    asyncio.run(main())


class FakePeers:
    def __init__(self, work, peers, cluster_peers, native=None):
        for p in peers:
            loopback(p["ip"])
        self.kind = "C epoll helper" if native else "Python asyncio fallback"
        if native:
            self.spec = os.path.join(work, f"fake-{len(peers)}-{cluster_peers}.txt")
            with open(self.spec, "w") as f:
                f.write(cluster_peers + "\n" + "".join(f"{p['ip']} {p['id']}\n" for p in peers))
            cmd = [native, self.spec]
        else:
            self.spec = os.path.join(work, f"fake-{len(peers)}-{cluster_peers}.json")
            json.dump({"peers": peers, "cluster_peers": cluster_peers}, open(self.spec, "w"))
            cmd = [sys.executable, os.path.abspath(__file__), "_fake-peers", self.spec]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"fake peers did not start: {line!r}")

    def stats(self):
        self.proc.stdin.write("stats\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def stop(self):
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# ---------------------------------------------------------------- counting forwarder
class Forwarder:
    """A minimal counting HTTP forwarder in front of moto: counts calls by
    operation (X-Amz-Target) and keeps when each arrived and left."""

    def __init__(self, upstream_port):
        import http.client, http.server

        self.calls, self.lock = [], threading.Lock()
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def setup(self):
                super().setup()
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def do_any(self):
                t_in = time.time()
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                target = self.headers.get("X-Amz-Target", "")
                op = target.split(".", 1)[1] if "." in target else (target or self.command + " " + self.path)
                hdrs = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection", "keep-alive")}
                t_up = time.time()
                c = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=30)
                c.request(self.command, self.path, body=body, headers=hdrs)
                r = c.getresponse()
                data = r.read()
                t_down = time.time()
                c.close()
                # One write, on a TCP_NODELAY socket: headers and body in separate small
                # segments would meet the client's delayed ACK (40 ms) under Nagle.
                head = [f"HTTP/1.1 {r.status} {r.reason}"]
                for k, v in r.getheaders():
                    if k.lower() not in ("connection", "keep-alive", "transfer-encoding", "content-length"):
                        head.append(f"{k}: {v}")
                head.append(f"Content-Length: {len(data)}")
                self.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + data)
                self.wfile.flush()
                with outer.lock:
                    outer.calls.append({"op": op, "in": t_in, "out": time.time(), "upstream_ms": (t_down - t_up) * 1e3,
                                        "status": r.status, "resp_bytes": len(data)})

            do_POST = do_GET = do_PUT = do_DELETE = do_any

        class S(http.server.ThreadingHTTPServer):
            daemon_threads = True

        self.server = S(("127.0.0.1", 0), H)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.kind = "built-in (scripts/bench.py Forwarder)"

    def mark(self):
        with self.lock:
            return len(self.calls)

    def since(self, mark):
        with self.lock:
            return list(self.calls[mark:])

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


# ---------------------------------------------------------------- helpers
def summary(values):
    return {"n": len(values), "min": min(values), "median": statistics.median(values), "p90": percentile(values, 0.9),
            "max": max(values)}


def ts(s):
    """A tracing JSON timestamp (RFC 3339, 'Z') as Unix seconds."""
    return datetime.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def machine():
    cpu = ""
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = ""
    for line in open("/proc/meminfo"):
        if line.startswith("MemTotal"):
            mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    return {"uname": sh(["uname", "-a"]), "nproc": sh(["nproc"]), "cpu": cpu, "mem": mem,
            "load": open("/proc/loadavg").read().split()[:3],
            "busy": sh(["ps", "-eo", "pcpu,comm", "--sort=-pcpu", "--no-headers"]).splitlines()[:6]}


# ---------------------------------------------------------------- the bench
class Bench:
    def __init__(self, args):
        self.args = args
        self.work = tempfile.mkdtemp(prefix="icb-bench-")
        # A copy: a rebuild of target/ during the bench must not change what is measured.
        import hashlib

        self.bin_src = os.path.abspath(args.bin)
        self.bin_mtime = os.path.getmtime(self.bin_src)
        self.bin = os.path.join(self.work, "ipfs-cluster-bootstrap")
        shutil.copy2(self.bin_src, self.bin)
        self.bin_sha256 = hashlib.sha256(open(self.bin, "rb").read()).hexdigest()
        self.bin_size = os.path.getsize(self.bin)
        self.bin_file = sh(["file", "-b", self.bin])
        self.procs = []  # children to stop at the end
        self.secret = os.urandom(32).hex()
        self.services = {}
        self.run_no = 0
        self.agree_cmds, self.agree_note = [], None

    # --- infrastructure
    def start(self):
        self.native = build_native(self.work)
        self.moto_port = free_port()
        self.moto = subprocess.Popen([os.path.join(VENV, "moto_server"), "-H", "127.0.0.1", "-p", str(self.moto_port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(self.moto)
        wait_port("127.0.0.1", self.moto_port)
        self.moto_url = check_url(f"http://127.0.0.1:{self.moto_port}")
        self.proxy = self.start_proxy()
        self.proxy_url = check_url(f"http://127.0.0.1:{self.proxy.port}")
        import boto3
        from botocore.config import Config

        # inject_host_prefix=False: boto3 would otherwise resolve data-127.0.0.1 for DiscoverInstances.
        self.sd = boto3.client("servicediscovery", region_name="us-east-1", endpoint_url=self.moto_url,
                               aws_access_key_id="bench", aws_secret_access_key="bench",
                               config=Config(inject_host_prefix=False, retries={"max_attempts": 2}))
        self.sd.create_http_namespace(Name=NAMESPACE)
        self.ns_id = [n for n in self.sd.list_namespaces()["Namespaces"] if n["Name"] == NAMESPACE][0]["Id"]
        # A config folder made by the test double's init, copied (with a fresh identity) per run.
        self.template = os.path.join(self.work, "template")
        env = {"PATH": f"{VENV}:/usr/bin:/bin", "HOME": self.work, "CLUSTER_SECRET": self.secret}
        subprocess.run([DOUBLE, "-c", self.template, "init", "--consensus", "crdt"], env=env, check=True,
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def start_proxy(self):
        """scripts/awsproxy.py when it exists and answers; else the built-in forwarder."""
        path = os.path.join(ROOT, "scripts", "awsproxy.py")
        if os.path.exists(path) and not self.args.builtin_proxy:
            try:
                import importlib.util

                spec = importlib.util.spec_from_file_location("awsproxy", path)
                mod = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(mod)
                p = AwsProxyAdapter(mod, self.moto_port)
                self.proxy_note = None
                return p
            except Exception as e:  # noqa: BLE001 - fall back, and say so in the report
                self.proxy_note = f"scripts/awsproxy.py did not work here ({type(e).__name__}: {e}); used the built-in forwarder"
        else:
            self.proxy_note = None if self.args.builtin_proxy else "scripts/awsproxy.py does not exist yet; used the built-in forwarder"
        return Forwarder(self.moto_port)

    def stop(self):
        for p in getattr(self, "fakes", []):
            p.stop()
        if getattr(self, "proxy", None):
            self.proxy.stop()
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in reversed(self.procs):
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        shutil.rmtree(self.work, ignore_errors=True)

    def service(self, name, peers):
        sid = self.sd.create_service(Name=name, NamespaceId=self.ns_id)["Service"]["Id"]
        base = time.time() - 3600
        for i, p in enumerate(peers):
            at = datetime.datetime.fromtimestamp(base + i / 1000, datetime.timezone.utc)
            self.sd.register_instance(ServiceId=sid, InstanceId=f"fake-{i}", Attributes={
                "AWS_INSTANCE_IPV4": p["ip"], "AWS_INSTANCE_PORT": "9096", "ipfs_cluster_peer_id": p["id"],
                "ipfs_cluster_registered_at": at.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
                "ipfs_cluster_consensus": "crdt", "ipfs_cluster_api_port": "9094"})
        return sid

    # --- one run of the binary
    def prepare(self, name, sid, expect, settle="1s", via_proxy=True, service_id=True, extra_env=None):
        """A fresh config folder (the template's service.json, a new identity) and the environment."""
        self.run_no += 1
        d = os.path.join(self.work, f"run{self.run_no}")
        os.makedirs(d)
        shutil.copy(os.path.join(self.template, "service.json"), d)
        ident = new_identity()
        with open(os.path.join(d, "identity.json"), "w") as f:
            json.dump(ident, f, indent=4)
        ip = f"127.2.{self.run_no // 250}.{self.run_no % 250 + 1}"
        endpoint = self.proxy_url if via_proxy else self.moto_url
        env = {
            "PATH": "/usr/bin:/bin", "HOME": d, "IPFS_CLUSTER_PATH": d, "CLUSTER_SECRET": self.secret,
            "AWS_ENDPOINT_URL": check_url(endpoint), "AWS_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench", "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": os.path.join(d, "no-aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": os.path.join(d, "no-aws-credentials"),
            "BOOTSTRAP_DISCOVERY": "cloudmap", "BOOTSTRAP_CLOUDMAP_NAMESPACE": NAMESPACE,
            "BOOTSTRAP_CLOUDMAP_SERVICE": name, "BOOTSTRAP_EXPECT": str(expect), "BOOTSTRAP_SETTLE": settle,
            "BOOTSTRAP_PROBE_TIMEOUT": self.args.probe_timeout, "BOOTSTRAP_TIMEOUT": "60s", "BOOTSTRAP_ADVERTISE_IP": loopback(ip),
            "BOOTSTRAP_DAEMON_BIN": "/bin/true", "BOOTSTRAP_LOOPBACK_ONLY": "true", "BOOTSTRAP_RUN_AS": "none",
            "BOOTSTRAP_LOG_FORMAT": "json",
        }
        if service_id:
            env["BOOTSTRAP_CLOUDMAP_SERVICE_ID"] = sid
        env.update(extra_env or {})
        return d, ident, env

    def run_once(self, name, sid, expect, settle="1s", via_proxy=True, service_id=True, extra_env=None,
                 keep_log=None):
        d, ident, env = self.prepare(name, sid, expect, settle, via_proxy, service_id, extra_env)
        log_path = os.path.join(d, "stderr")
        mark = self.proxy.mark()
        if "spawn" in self.native:
            r = subprocess.run([self.native["spawn"], log_path, self.bin, "run"], env=env, capture_output=True,
                               text=True, timeout=120)
            out = json.loads(r.stdout)
        else:  # ru_maxrss then starts at this Python process's size: an upper bound only
            with open(log_path, "wb") as log:
                wall0 = time.time()
                t0 = time.perf_counter()
                p = subprocess.Popen([self.bin, "run"], env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=log)
                _, status, ru = os.wait4(p.pid, 0)
                t1 = time.perf_counter()
            out = {"wall_ms": (t1 - t0) * 1e3, "maxrss_kib": ru.ru_maxrss, "exit": os.waitstatus_to_exitcode(status),
                   "spawn": wall0, "end": wall0 + (t1 - t0), "user_ms": ru.ru_utime * 1e3, "sys_ms": ru.ru_stime * 1e3}
        out.update(calls=self.proxy.since(mark) if via_proxy else [], log_bytes=os.path.getsize(log_path),
                   peer_id=ident["id"])
        out.update(self.parse_log(log_path))
        # Leave R as it was: remove this run's own registration (directly at moto, not counted).
        try:
            self.sd.deregister_instance(ServiceId=sid, InstanceId=ident["id"])
        except self.sd.exceptions.InstanceNotFound:
            pass
        if keep_log:
            shutil.copy(log_path, keep_log)
        if out["exit"] != 0 or not out.get("action"):
            keep = os.path.join(self.work, "..", f"icb-bench-failed-{os.getpid()}-{self.run_no}.log")
            shutil.copy(log_path, keep)
            out["log_kept"] = os.path.abspath(keep)
        shutil.rmtree(d, ignore_errors=True)
        return out

    @staticmethod
    def parse_log(path):
        """The log lines' timestamps by message, and the decision record's fields."""
        out = {"marks": {}}
        with open(path, "rb") as f:
            for raw in f:
                if not raw.startswith(b"{"):
                    continue
                try:
                    line = json.loads(raw)
                except ValueError:
                    continue
                msg = line.get("message", "")
                key = msg.split(":", 1)[0] if line.get("event") == "decision" else msg
                out["marks"].setdefault(key, ts(line["timestamp"]))
                if line.get("event") == "decision":
                    out["action"] = line.get("action")
                    rec = line.get("record", "")
                    out["record_bytes"] = len(rec)
                    states = {}
                    for st in re.findall(r'"probe":\{"state":"(\w+)"', rec):
                        states[st] = states.get(st, 0) + 1
                    out["probe_states"] = states
                    downs = re.findall(r'"state":"down","error":"((?:[^"\\]|\\.){0,200})', rec)
                    if downs:
                        out["down_examples"] = sorted(set(d[:160] for d in downs))[:5]
                    for k in ("elapsed_ms", "rounds"):
                        m = re.search(r'"%s":(\d+)' % k, rec)
                        out[k] = int(m.group(1)) if m else None
                    out["reason"] = line.get("reason")
                if line.get("level") in ("ERROR", "WARN"):
                    out.setdefault("problems", []).append(msg[:300])
        return out

    # --- scenarios
    def registered(self, size):
        """A service with `size` registered fake peers (made once per size)."""
        if size not in self.services:
            # Any 32 bytes make a well-formed Ed25519 peer ID; nothing here checks signatures.
            peers = [{"ip": fake_ip(i), "id": peer_id_of(os.urandom(32))} for i in range(size)]
            name = f"join-{size}"
            t = time.time()
            sid = self.service(name, peers)
            print(f"  registered {size} fake peers in {time.time() - t:.1f} s", flush=True)
            self.services[size] = (name, sid, peers)
        return self.services[size]

    def joining(self, size, variant):
        """Runs of a joining peer. variant: "full" (/id lists all R IDs), "few" (3 IDs),
        "full-5s" (all R, --probe-timeout 5s, fewer runs)."""
        cluster_peers, _, timeout = variant.partition("-")
        runs = self.args.runs if not timeout else min(self.args.runs, self.args.slow_runs)
        pt = {"BOOTSTRAP_PROBE_TIMEOUT": timeout} if timeout else {}
        name, sid, peers = self.registered(size)
        fake = FakePeers(self.work, peers, cluster_peers, self.native.get("fakepeers"))
        self.fake_kind = fake.kind
        self.fakes = [fake]
        try:
            res = {"proxied": [], "direct": [], "fake": []}
            for i in range(self.args.warmup if not timeout else 0):
                self.check_join(self.run_once(name, sid, 3, extra_env=pt), name)
                fake.stats()
            for i in range(runs):  # interleaved, so that a change of load hits both alike
                for mode in ("direct", "proxied"):
                    r = self.run_once(name, sid, 3, via_proxy=(mode == "proxied"), extra_env=pt)
                    r["fake"] = fake.stats()
                    self.check_join(r, name)
                    res[mode].append(r)
            # Without --cloudmap-service-id: the calls only.
            r = self.run_once(name, sid, 3, service_id=False, extra_env=pt)
            fake.stats()
            self.check_join(r, name)
            res["no_service_id"] = r
        finally:
            fake.stop()
            self.fakes = []
        return res

    def check_join(self, r, name):
        if r["exit"] != 0 or r.get("action") != "join":
            raise RuntimeError(f"harness error: a {name} run did not join (exit {r['exit']}, action "
                               f"{r.get('action')!r}, reason {r.get('reason')!r}, problems {r.get('problems')}, "
                               f"log {r.get('log_kept')})")

    def trace_run(self):
        """One joining run at R=3 with BOOTSTRAP_LOG_LEVEL=trace (the SDK's own lines
        too): the largest gaps between consecutive log lines, from the spawn to the exit."""
        name, sid, peers = self.registered(3)
        fake = FakePeers(self.work, peers, "full", self.native.get("fakepeers"))
        self.fakes = [fake]
        try:
            log = os.path.join(self.work, "trace.log")
            r = self.run_once(name, sid, 3, via_proxy=False, extra_env={"BOOTSTRAP_LOG_LEVEL": "trace"},
                              keep_log=log)
            events = [(r["spawn"], "(spawn)")]
            for raw in open(log, "rb"):
                if raw.startswith(b"{"):
                    line = json.loads(raw)
                    fields = {k: v for k, v in line.items() if k not in ("timestamp", "level", "message", "record")}
                    msg = line.get("message", "")
                    if not msg.strip():
                        msg = json.dumps(fields)[:80]
                    events.append((ts(line["timestamp"]), msg[:90].replace("|", "/")))
            events.append((r["end"], "(process exit)"))
            gaps = sorted(((b_[0] - a_[0]) * 1e3, (a_[0] - r["spawn"]) * 1e3, a_[1], b_[1])
                          for a_, b_ in zip(events, events[1:]))[::-1]
            return {"wall_ms": r["wall_ms"], "lines": len(events) - 2, "gaps": gaps[:10],
                    "first_line_ms": (events[1][0] - r["spawn"]) * 1e3 if len(events) > 2 else None}
        finally:
            fake.stop()
            self.fakes = []

    def rss_waiting(self):
        """RSS of a peer that waits (no one else registered, --expect 2), read from
        /proc while it polls: what the resident pages are (the binary's own file
        pages, shared libraries, heap, stacks)."""
        name = "rss-wait"
        sid = self.service(name, [])
        d, ident, env = self.prepare(name, sid, 2, settle="1s", via_proxy=False)
        log = open(os.path.join(d, "stderr"), "wb")
        p = subprocess.Popen([self.bin, "run"], env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=log)
        self.procs.append(p)
        try:
            time.sleep(2.5)  # registered, a few polls done
            status = {}
            for line in open(f"/proc/{p.pid}/status"):
                k, _, v = line.partition(":")
                if k in ("VmHWM", "VmRSS", "RssAnon", "RssFile", "RssShmem", "Threads", "VmSize"):
                    status[k] = v.strip()
            groups, cur = {}, None
            for line in open(f"/proc/{p.pid}/smaps"):
                parts = line.split()
                if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
                    path = parts[5] if len(parts) > 5 else ""
                    if path == os.path.realpath(self.bin) or path == self.bin:
                        cur = "the binary (file pages: code, read-only data)"
                    elif path.startswith("/"):
                        cur = "shared libraries (" + os.path.basename(path).split(".so")[0] + ")"
                    elif path == "[heap]":
                        cur = "[heap] (brk)"
                    elif path.startswith("[stack"):
                        cur = "[stack] (main thread)"
                    elif path.startswith("["):
                        cur = path
                    else:
                        cur = "anonymous mappings (large allocations, thread stacks, .bss)"
                elif parts and parts[0] == "Rss:":
                    groups[cur] = groups.get(cur, 0) + int(parts[1])
            merged = {}
            for k, v in groups.items():
                key = "shared libraries (libc, libm, libgcc_s, ld)" if k and k.startswith("shared libraries") else k
                merged[key] = merged.get(key, 0) + v
            return {"status": status, "groups": sorted(merged.items(), key=lambda x: -x[1])}
        finally:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            self.procs.remove(p)
            log.close()
            shutil.rmtree(d, ignore_errors=True)

    def founding(self, settle):
        res = []
        for i in range(max(3, self.args.runs // 3)):
            name = f"found-{settle}-{i}"
            sid = self.service(name, [])
            r = self.run_once(name, sid, 1, settle=settle)
            if r["exit"] != 0 or r.get("action") != "found":
                raise RuntimeError(f"harness error: a founding run did not found: {r.get('action')} {r.get('reason')} "
                                   f"{r.get('problems')} {r.get('log_kept')}")
            res.append(r)
        return res

    # --- agreement: N peers started together
    def agreement(self, n, consensus, launch):
        name = f"agree-{consensus}-{n}-{launch}"
        sid = self.sd.create_service(Name=name, NamespaceId=self.ns_id)["Service"]["Id"]
        base = os.path.join(self.work, name)
        ips = [f"127.3.{launch}.{i + 2}" for i in range(n)]
        procs, logs = [], []
        try:
            t0 = time.time()
            for i, ip in enumerate(ips):
                d = os.path.join(base, f"peer{i}")
                os.makedirs(d)
                env = {
                    "PATH": f"{VENV}:/usr/bin:/bin", "HOME": d, "IPFS_CLUSTER_PATH": os.path.join(d, "config"),
                    "IPFS_CLUSTER_CONSENSUS": consensus, "CLUSTER_SECRET": self.secret,
                    "CLUSTER_PEERNAME": f"peer{i}", "CLUSTER_LISTENMULTIADDRESS": f"/ip4/{loopback(ip)}/tcp/9096",
                    "CLUSTER_RESTAPI_HTTPLISTENMULTIADDRESS": f"/ip4/{ip}/tcp/9094",
                    "CLUSTER_MONITORPINGINTERVAL": "1s",
                    "AWS_ENDPOINT_URL": self.proxy_url, "AWS_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "bench",
                    "AWS_SECRET_ACCESS_KEY": "bench", "AWS_EC2_METADATA_DISABLED": "true",
                    "AWS_CONFIG_FILE": os.path.join(d, "no-aws-config"),
                    "AWS_SHARED_CREDENTIALS_FILE": os.path.join(d, "no-aws-credentials"),
                    "BOOTSTRAP_DISCOVERY": "cloudmap", "BOOTSTRAP_CLOUDMAP_NAMESPACE": NAMESPACE,
                    "BOOTSTRAP_CLOUDMAP_SERVICE": name, "BOOTSTRAP_CLOUDMAP_SERVICE_ID": sid,
                    "BOOTSTRAP_EXPECT": str(n), "BOOTSTRAP_SETTLE": "1s", "BOOTSTRAP_TIMEOUT": "120s",
                    "BOOTSTRAP_ADVERTISE_IP": ip, "BOOTSTRAP_DAEMON_BIN": DOUBLE, "BOOTSTRAP_LOOPBACK_ONLY": "true",
                    "BOOTSTRAP_LOG_FORMAT": "json", "BOOTSTRAP_RUN_AS": "none",
                }
                log = open(os.path.join(d, "log"), "wb")
                logs.append(log)
                procs.append(subprocess.Popen([self.bin, "run"], env=env, stdin=subprocess.DEVNULL, stdout=log,
                                              stderr=subprocess.STDOUT, start_new_session=True))
            t_started = time.time()
            self.procs.extend(procs)
            deadline = t0 + 150
            agreed, states = None, {}
            while time.time() < deadline:
                states = {ip: get_json(f"http://{ip}:9094/_double/state") for ip in ips}
                ok = [s for s in states.values() if s and s.get("ready")]
                if (len(ok) == n and len({s["cluster_id"] for s in ok}) == 1
                        and all(len(s.get("peers", [])) == n for s in ok)):
                    agreed = time.time()
                    break
                time.sleep(0.1)
            actions = {}
            for i in range(n):
                m = Bench.parse_log(os.path.join(base, f"peer{i}", "log"))
                actions[m.get("action")] = actions.get(m.get("action"), 0) + 1
            clusters = {s["cluster_id"] for s in states.values() if s}
            return {"n": n, "consensus": consensus, "agree_s": (agreed - t0) if agreed else None,
                    "spawn_s": t_started - t0, "actions": actions, "clusters": len(clusters),
                    "conflicts": sum(len(s.get("conflicts") or []) for s in states.values() if s)}
        finally:
            for p in procs:
                if p.poll() is None:
                    try:
                        os.killpg(p.pid, signal.SIGTERM)
                    except ProcessLookupError:
                        pass
            for p in procs:
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()
                self.procs.remove(p)
            for log in logs:
                log.close()
            shutil.rmtree(base, ignore_errors=True)


def soak_agreement(b, n, consensus, launches):
    """N peers started together, through scripts/soak.py (clean launches, no
    start skew, --settle 1s), with launch seeds chosen so that --expect is N
    and the service ID is given. None when soak.py is missing or does not work."""
    path = os.path.join(ROOT, "scripts", "soak.py")
    if not os.path.exists(path) or b.args.builtin_agree:
        return None
    try:
        import importlib.util

        spec = importlib.util.spec_from_file_location("soak_for_bench", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        a = argparse.Namespace(peers=n, settle=1.0, settle_choices=[1.0], delay_max=None, no_faults=True,
                               skew_max=0.0, kill_prob=0.0, mild=False, min_peers=n, max_peers=n,
                               split_prone=False)
        seeds = []
        for seed in range(1, 100000):
            p = mod.gen_params(seed, consensus, a)
            if p["n"] == n and p["expect"] == n and p.get("service_id_given") and max(p["offsets"]) == 0:
                seeds.append(seed)
                if len(seeds) == launches:
                    break
        out = []
        for seed in seeds:
            js = os.path.join(b.work, f"soak-{consensus}-{n}-{seed}.jsonl")
            stuck = os.path.join(b.work, "soak-stuck")
            cmd = [sys.executable, path, "--peers", str(n), "--no-faults", "--skew-max", "0", "--settle", "1",
                   "--seed", str(seed), "--consensus", consensus, "--json", js, "--bin", b.bin, "--poll", "0.1",
                   "--keep-stuck", "--stuck", stuck, "--failures", os.path.join(b.work, "soak-failures")]
            shown = {path: "scripts/soak.py", b.bin: os.path.relpath(b.bin_src, ROOT), js: "OUT.jsonl",
                     cmd[-1]: "DIR", stuck: "DIR2"}
            after = {"--peers": "N", "--seed": "SEED", "--consensus": "CONSENSUS"}
            template = " ".join(after.get(prev) or shown.get(x, x) for prev, x in zip(cmd, cmd[1:]))
            if template not in b.agree_cmds:
                b.agree_cmds.append(template)
            print(f"agreement: {n} peers, {consensus}, soak.py --seed {seed}", flush=True)
            load = open("/proc/loadavg").read().split()[0]
            subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600)
            rec = [json.loads(l) for l in open(js) if l.strip()][-1]
            # Launches that did not agree are kept: what did their sidecars warn about?
            warnings = {}
            for d, _, files in os.walk(stuck):
                if "stderr" in files and os.path.basename(d).startswith("peer"):
                    for raw in open(os.path.join(d, "stderr"), "rb"):
                        if raw.startswith(b"{") and (b'"level":"WARN"' in raw or b'"level":"ERROR"' in raw):
                            try:
                                line = json.loads(raw)
                            except ValueError:
                                continue
                            w = (line.get("message", "") + (": " + line["error"] if line.get("error") else ""))[:200]
                            if not w.startswith("running as root"):  # this harness runs as root on purpose
                                warnings.setdefault(w, set()).add(d)
            shutil.rmtree(stuck, ignore_errors=True)
            why = {}
            for v in (rec.get("not_agreed") or {}).values():
                why[v[:110]] = why.get(v[:110], 0) + 1
            actions = {}
            for d in (rec.get("decisions") or {}).values():
                actions[d["action"]] = actions.get(d["action"], 0) + 1
            x = {"agree_s": rec.get("t_agree"), "spawn_s": None, "actions": actions,
                 "clusters": len(rec.get("clusters") or {}), "conflicts": rec.get("conflicts", 0),
                 "expect": rec.get("expect"), "seed": seed, "split_brain": rec.get("split_brain"),
                 "lone_founding": rec.get("lone_founding"), "calls": (rec.get("aws") or {}).get("per_peer"),
                 "load": load, "not_agreed": why,
                 "warnings": sorted(((len(v), k) for k, v in warnings.items()), reverse=True)[:4]}
            print(f"  {x}", flush=True)
            out.append(x)
        return out
    except Exception as e:  # noqa: BLE001 - fall back to the launcher here, and say so
        b.agree_note = f"scripts/soak.py did not work here ({type(e).__name__}: {e}); used bench.py's own launcher"
        print(b.agree_note, flush=True)
        return None


class AwsProxyAdapter:
    """scripts/awsproxy.py (faults off) behind the same face as Forwarder. Its
    stats() counts the calls; its forward() is wrapped to keep when each call
    went to moto and came back (the phases), and the two counts are checked
    against each other."""

    def __init__(self, mod, upstream_port, nodelay=True):
        outer = self
        self.nodelay = nodelay
        self.calls, self.lock = [], threading.Lock()

        class Timed(mod.AwsProxy):
            def forward(self, method, path, headers, body):
                t_in = time.time()
                status, reason, rh, data = super().forward(method, path, headers, body)
                t_out = time.time()
                target = next((v for k, v in headers.items() if k.lower() == "x-amz-target"), "")
                op = target.split(".", 1)[1] if "." in target else (target or f"{method} {path}")
                with outer.lock:
                    outer.calls.append({"op": op, "in": t_in, "out": t_out, "upstream_ms": (t_out - t_in) * 1e3,
                                        "status": status, "resp_bytes": len(data)})
                return status, reason, rh, data

        # awsproxy answers in two writes (headers, then body) on a socket with Nagle on: on a
        # kept-alive connection the body then waits for the client's delayed ACK, ~40 ms a
        # call (seen here after the first two calls). TCP_NODELAY, in this copy only.
        base_setup = mod._Handler.setup

        def setup(handler):
            base_setup(handler)
            handler.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        if self.nodelay:
            mod._Handler.setup = setup
        self.proxy = Timed(check_url(f"http://127.0.0.1:{upstream_port}"))
        self.port = self.proxy.add_listener("127.0.0.1", 0, label="bench")
        self.proxy.start()
        wait_port("127.0.0.1", self.port)
        self.kind = ("scripts/awsproxy.py (faults off; its forward() wrapped for timestamps"
                     + ("; TCP_NODELAY set on its sockets, see below)" if nodelay else ")"))

    def mark(self):
        with self.lock:
            return len(self.calls), dict(self.proxy.stats()["calls"])

    def since(self, mark):
        n, before = mark
        after = self.proxy.stats()["calls"]
        with self.lock:
            calls = list(self.calls[n:])
        short = lambda k: k.split(".", 1)[1] if "." in k else k  # noqa: E731
        counted = {short(k): v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}
        mine = {}
        for c in calls:
            mine[c["op"]] = mine.get(c["op"], 0) + 1
        if counted != mine:
            raise RuntimeError(f"awsproxy counted {counted}, its forward() saw {mine}")
        # Forget the registrations it tracks (for its visibility delays), as between soak launches.
        self.proxy.reset()
        return calls

    def stop(self):
        self.proxy.close()


# ---------------------------------------------------------------- phases and report
def phases(r):
    """Splits one proxied run into phases, in ms, from the spawn time, the log
    lines' timestamps, the forwarder's timestamps and the fake peers' activity."""
    calls, m, f = r["calls"], r["marks"], r.get("fake") or {}
    by = {}
    for c in calls:
        by.setdefault(c["op"], []).append(c)
    if not all(k in by for k in ("RegisterInstance", "GetOperation", "DiscoverInstances")) or "local peer" not in m:
        return None
    reg, gets, disc = by["RegisterInstance"][0], by["GetOperation"], by["DiscoverInstances"][0]
    decision = m.get("decision")
    p = {}
    p["exec of the binary, config, SDK load, local files (spawn → 'local peer' log)"] = m["local peer"] - r["spawn"]
    p["listen on the cluster port, build the first request ('local peer' → RegisterInstance arrives)"] = reg["in"] - m["local peer"]
    p["RegisterInstance (at the forwarder)"] = reg["out"] - reg["in"]
    # The registration's GetOperation polls run alongside the first round.
    p["RegisterInstance → DiscoverInstances arrives"] = disc["in"] - reg["out"]
    p["DiscoverInstances (at the forwarder)"] = disc["out"] - disc["in"]
    p[f"(alongside) RegisterInstance → GetOperation ×{len(gets)} answered"] = gets[-1]["out"] - reg["out"]
    if f.get("first") and f.get("last") and decision:
        p["read the answer, decode, start probes (→ first probe reaches a fake peer)"] = f["first"] - disc["out"]
        p["probing (first → last fake peer activity)"] = f["last"] - f["first"]
        p["finish probes, decide, build the decision record (→ decision log line)"] = decision - f["last"]
    elif decision:
        p["read the answer, probe, decide (→ decision log line)"] = decision - disc["out"]
    if decision and "exec'ing the daemon" in m:
        p["write the log line, peerstore (decision → 'exec'ing the daemon')"] = m["exec'ing the daemon"] - decision
        p["exec /bin/true, exit ('exec'ing' → wait4 returns)"] = r["end"] - m["exec'ing the daemon"]
    return {k: v * 1e3 for k, v in p.items()}


def phase_table(runs):
    rows = [phases(r) for r in runs]
    rows = [x for x in rows if x]
    if not rows:
        return "(no phase data)\n"
    keys = list(rows[0].keys())
    out = "| phase | median ms | min ms | max ms |\n| --- | ---: | ---: | ---: |\n"
    for k in keys:
        v = [x[k] for x in rows if k in x]
        out += f"| {k} | {statistics.median(v):.1f} | {min(v):.1f} | {max(v):.1f} |\n"
    tot = [r["wall_ms"] for r in runs]
    out += f"| **total (wall, spawn → exit)** | **{statistics.median(tot):.1f}** | {min(tot):.1f} | {max(tot):.1f} |\n"
    return out


def calls_of(r):
    c = {}
    for x in r["calls"]:
        c[x["op"]] = c.get(x["op"], 0) + 1
    return c


def fmt_calls(c):
    return ", ".join(f"{k} {v}" for k, v in sorted(c.items())) + f" (= {sum(c.values())})"


def label(variant):
    return {"full": "all R IDs", "few": "3 IDs", "full-5s": "all R IDs, --probe-timeout 5s"}.get(variant, variant)


def verdict(measured, budget, unit, fmt="{:.1f}"):
    if measured <= budget:
        return f"met ({fmt.format(budget - measured)} {unit} under)"
    return f"**MISSED** by {fmt.format(measured - budget)} {unit} ({measured / budget:.1f}×)"


def report(b, res, m0, m1, size, file_out, cmd, commit):
    L = []
    a = L.append
    a("# Benchmark: ipfs-cluster-bootstrap start-up\n")
    a(f"Generated by `scripts/bench.py` at {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
      f"commit `{commit}`.\n")
    a(f"Command: `{cmd}`\n")
    a("## Machine\n")
    a(f"- `{m0['uname']}`")
    a(f"- {m0['nproc']} CPUs: {m0['cpu']}; RAM {m0['mem']}")
    a(f"- load average at start {' '.join(m0['load'])}, at end {' '.join(m1['load'])}")
    a(f"- busiest processes at start (%CPU, command): {'; '.join(' '.join(x.split()) for x in m0['busy'])}")
    a("- moto " + sh([os.path.join(VENV, "python"), "-c", "import moto; print(moto.__version__)"])
      + f" on 127.0.0.1; AWS calls counted by {b.proxy.kind}" + (f" ({b.proxy_note})" if b.proxy_note else ""))
    a("- runs started by " + ("a small C spawner (fork, exec, wait4), so that ru_maxrss is the binary's own"
                              if "spawn" in b.native else
                              "Python's subprocess: ru_maxrss then includes the Python parent's image (upper bound only)"))
    a("")
    a("## Method\n")
    a("- moto's server on 127.0.0.1 is Cloud Map. The peer under test runs the release binary with "
      "`--loopback-only`, `BOOTSTRAP_DAEMON_BIN=/bin/true` (so the exec ends the process), a config folder "
      "copied from one the test double's `init` made (service.json present, so no `init` runs) with a new "
      "Ed25519 identity per run, `--expect 3`, `--settle 1s`, `--probe-timeout 1s`, JSON logs, and "
      "`BOOTSTRAP_CLOUDMAP_SERVICE_ID` unless said otherwise. Its own registration is removed (directly at "
      "moto, not counted) after each run, so R stays R.")
    a("- The R registered peers are served by "
      + ("the " + b.fake_kind if hasattr(b, "fake_kind") else "a helper")
      + " on 127.1.x.y: `GET /id` answers like ipfs-cluster 1.1.6's REST API (id, addresses, cluster_peers, "
        "version, ipfs error, ...), the cluster port sends 24 random bytes (like the pnet nonce) and stays open.")
    a("- *direct* runs point AWS_ENDPOINT_URL at moto; *via forwarder* runs at the counting forwarder, "
      "whose counts are the AWS calls below and whose timestamps split a run into phases. "
      "scripts/awsproxy.py answers in two writes (headers, then body) with Nagle on, so on a kept-alive "
      "connection every answer after the second waited ~40 ms for the SDK's delayed ACK; measured here: "
      "135–150 ms per R=3 run instead of 60–70 ms. bench.py sets TCP_NODELAY on its copy's sockets. "
      "scripts/soak.py (used for the agreement runs) runs awsproxy unpatched, so its times include that delay.")
    a("- No packet leaves 127.0.0.0/8: every address bench.py binds, dials or passes on is checked, name "
      "resolution of anything but a loopback IP literal is refused inside bench.py, the fake peers refuse "
      "to bind outside 127/8, and boto3 runs with `inject_host_prefix=False` (it would otherwise look up "
      "`data-127.0.0.1`).")
    a("")
    # --- headline table
    a("## Results against the budgets\n")
    a("| metric | budget | measured | verdict |\n| --- | --- | --- | --- |")
    sizes = sorted(res["join"].keys())
    for size_r in sizes:
        for variant, runs in res["join"][size_r].items():
            s = summary([r["wall_ms"] for r in runs["direct"]])
            budget = BUDGETS["join_3_ms"] if size_r == 3 else BUDGETS["join_1000_ms"] if size_r == 1000 else None
            v = verdict(s["median"], budget, "ms") if budget else "(no budget)"
            a(f"| start-to-exec, joining, R={size_r}, /id lists {label(variant)} (median of {s['n']}) | "
              f"{'≤ %d ms' % budget if budget else '—'} | {s['median']:.1f} ms (p90 {s['p90']:.1f}) | {v} |")
    calls = sorted({sum(calls_of(r).values()) for sz in sizes for v in res["join"][sz].values() for r in v["proxied"]})
    if calls:
        a(f"| AWS calls per joining peer (with --cloudmap-service-id) | ≤ {BUDGETS['calls_join']} | "
          f"{'/'.join(map(str, calls))} | {verdict(max(calls), BUDGETS['calls_join'], 'calls', '{:.0f}')} |")
        nosid = [v["no_service_id"] for sz in sizes for v in res["join"][sz].values()]
        a(f"| AWS calls per joining peer, without --cloudmap-service-id | — | "
          f"{'/'.join(map(str, sorted({sum(calls_of(r).values()) for r in nosid})))} | (no budget) |")
    if res.get("found"):
        fc = sorted({sum(calls_of(r).values()) for r in res["found"]["1s"]})
        a(f"| AWS calls per founding peer (--expect 1, --settle 1s) | — | {'/'.join(map(str, fc))} | (no budget) |")
    for size_r in sizes:
        for variant, runs in res["join"][size_r].items():
            rss = max(r["maxrss_kib"] for r in runs["direct"] + runs["proxied"])
            budget = {3: BUDGETS["rss_kib"], 1000: BUDGETS["rss_1000_kib"]}.get(size_r)
            v = verdict(rss / 1024, budget / 1024, "MiB") if budget else "(no budget)"
            a(f"| peak RSS, joining, R={size_r}, /id lists {label(variant)} | "
              f"{'≤ %d MiB' % (budget // 1024) if budget else '—'} | {rss / 1024:.1f} MiB | {v} |")
            if size_r == 1000:
                rec = max(r.get("record_bytes") or 0 for r in runs["direct"] + runs["proxied"])
                a(f"| logged decision record, R={size_r}, /id lists {label(variant)} | ≤ 64 KiB | {rec / 1024:.1f} KiB | "
                  f"{verdict(rec / 1024, BUDGETS['record_1000_bytes'] / 1024, 'KiB')} |")
    if res.get("found"):
        rss = max(r["maxrss_kib"] for r in res["found"]["1s"])
        a(f"| peak RSS, founding | ≤ 8 MiB | {rss / 1024:.1f} MiB | {verdict(rss / 1024, 8, 'MiB')} |")
    a(f"| stripped release binary | ≤ 6 MiB | {size / 2**20:.2f} MiB ({size} bytes) | "
      f"{verdict(size / 2**20, 6, 'MiB', '{:.2f}')} |")
    for g in res.get("agree", []):
        t = [x["agree_s"] for x in g["launches"] if x["agree_s"] is not None]
        ok = sum(1 for x in g["launches"] if x["agree_s"] is not None and x["clusters"] == 1)
        a(f"| {g['n']} peers started together agree on one cluster ({g['consensus']}, --settle 1s) | — | "
          f"{'median %.1f s (%s)' % (statistics.median(t), ', '.join('%.1f' % x for x in t)) if t else 'never'}; "
          f"{ok}/{len(g['launches'])} launches agreed in time | (no budget) |")
    a("")
    a(f"`file`: {file_out}; sha256 `{b.bin_sha256[:16]}…`, built "
      f"{datetime.datetime.fromtimestamp(b.bin_mtime, datetime.timezone.utc):%Y-%m-%d %H:%M} UTC\n")
    # --- details
    a("## Start-to-exec of a joining peer, in detail\n")
    a("R live peers are registered in one Cloud Map service; the peer under test registers itself, "
      "discovers them, probes all R (REST API /id and cluster port at once), decides JOIN and execs "
      "`/bin/true` in its place, so the process ends at the exec. Wall = spawn to wait4; elapsed = the "
      "decision record's `elapsed_ms` (from the start of the bootstrap sequence, after the SDK is loaded, "
      "to the decision). *direct*: AWS_ENDPOINT_URL is moto; *via forwarder*: the counting forwarder, "
      "which adds its own latency to each call.\n")
    a("| R | /id lists | endpoint | runs | wall min / median / p90 / max ms | elapsed_ms median | "
      "user+sys CPU ms median | peak RSS max | decision record | probes: api / daemon / other | AWS calls per run |")
    a("| ---: | --- | --- | ---: | --- | ---: | ---: | ---: | ---: | --- | --- |")
    for size_r in sizes:
        for variant, runs in res["join"][size_r].items():
            for mode in ("direct", "proxied"):
                rr = runs[mode]
                s = summary([r["wall_ms"] for r in rr])
                el = statistics.median([r["elapsed_ms"] for r in rr if r.get("elapsed_ms") is not None])
                cpu = statistics.median([r["user_ms"] + r["sys_ms"] for r in rr])
                rss = max(r["maxrss_kib"] for r in rr)
                rec = max(r.get("record_bytes", 0) for r in rr)
                cs = {fmt_calls(calls_of(r)) for r in rr} if mode == "proxied" else {"—"}
                api = [r.get("probe_states", {}).get("api", 0) for r in rr]
                dmn = [r.get("probe_states", {}).get("daemon", 0) for r in rr]
                oth = [sum(v for k, v in r.get("probe_states", {}).items() if k not in ("api", "daemon")) for r in rr]
                rng = lambda v: f"{min(v)}" if min(v) == max(v) else f"{min(v)}–{max(v)}"  # noqa: E731
                a(f"| {size_r} | {label(variant)} | "
                  f"{'direct' if mode == 'direct' else 'via forwarder'} | {s['n']} | "
                  f"{s['min']:.1f} / {s['median']:.1f} / {s['p90']:.1f} / {s['max']:.1f} | {el:.0f} | {cpu:.0f} | "
                  f"{rss / 1024:.1f} MiB | {rec / 1e3:.0f} kB | {rng(api)} / {rng(dmn)} / {rng(oth)} | "
                  f"{'; '.join(sorted(cs))} |")
    a("")
    a("### Where the time goes (runs via the forwarder, median per phase)\n")
    a("From the spawn time, the binary's JSON log timestamps, the forwarder's per-call timestamps and the "
      "fake peers' first and last activity. The forwarder's time per call includes moto's own time "
      "(column *moto ms* below) and the forwarder's.\n")
    for size_r in sizes:
        for variant, runs in res["join"][size_r].items():
            a(f"#### R = {size_r}, /id lists {label(variant)}\n")
            a(phase_table(runs["proxied"]))
            ups = {}
            for r in runs["proxied"]:
                for c in r["calls"]:
                    ups.setdefault(c["op"], []).append((c["upstream_ms"], c["resp_bytes"]))
            a("| call | moto ms median | answer bytes |\n| --- | ---: | ---: |")
            for op, v in sorted(ups.items()):
                a(f"| {op} | {statistics.median(x[0] for x in v):.1f} | {int(statistics.median(x[1] for x in v))} |")
            fk = [r["fake"] for r in runs["proxied"] if r.get("fake")]
            if fk:
                cpu = [max(0.0, b2["cpu"] - b1["cpu"]) * 1e3 for b1, b2 in zip(fk, fk[1:])]
                a(f"\nFake peers ({b.fake_kind}, one process for all R, on the same CPUs): "
                  f"{statistics.median(x['http'] for x in fk):.0f} HTTP answers and "
                  f"{statistics.median(x['tcp'] for x in fk):.0f} cluster-port connections per run, "
                  f"{statistics.median(x['bytes'] for x in fk) / 1e3:.0f} kB sent"
                  + (f", about {statistics.median(cpu):.0f} ms of its CPU per run" if cpu else "") + ".\n")
    if res.get("trace"):
        t = res["trace"]
        a("### Start-up, line by line (R = 3, direct, one run at BOOTSTRAP_LOG_LEVEL=trace)\n")
        a(f"With the SDK's and hyper's trace lines ({t['lines']} lines; the run took {t['wall_ms']:.1f} ms, "
          f"the first line came {t['first_line_ms']:.1f} ms after the spawn). The ten largest gaps between "
          f"consecutive lines, i.e. where the time goes between two things the code reports:\n")
        a("| gap ms | at ms | after the line | before the line |\n| ---: | ---: | --- | --- |")
        for g, at, x, y in t["gaps"]:
            a(f"| {g:.1f} | {at:.1f} | {x} | {y} |")
        a("")
    if res.get("rss_wait"):
        w = res["rss_wait"]
        a("### What the resident memory is (a waiting peer, from /proc)\n")
        a("A peer alone in its service with `--expect 2` waits and polls; after 2.5 s: "
          + ", ".join(f"{k} {v}" for k, v in w["status"].items()) + ".\n")
        a("| mapping | RSS KiB |\n| --- | ---: |")
        for k, v in w["groups"]:
            if v:
                a(f"| {k} | {v} |")
        a("")
    if res.get("found"):
        a("## A founding peer\n")
        a("No live peer, `--expect 1`, crdt: it registers, discovers nobody, and founds once the view "
          "(itself) has been unchanged for `--settle`; a decision reached after waiting is confirmed by one "
          "more round. So its time is dominated by `--settle` and the poll backoff, not by work.\n")
        a("| --settle | runs | wall min / median / max ms | rounds | AWS calls per run | peak RSS max |")
        a("| --- | ---: | --- | --- | --- | ---: |")
        for settle, rr in res["found"].items():
            s = summary([r["wall_ms"] for r in rr])
            a(f"| {settle} | {s['n']} | {s['min']:.0f} / {s['median']:.0f} / {s['max']:.0f} | "
              f"{'/'.join(str(x) for x in sorted({r.get('rounds') for r in rr}))} | "
              f"{'; '.join(sorted({fmt_calls(calls_of(r)) for r in rr}))} | "
              f"{max(r['maxrss_kib'] for r in rr) / 1024:.1f} MiB |")
        a("")
    if res.get("agree"):
        a("## Peers started together\n")
        a(f"N sidecars (the binary under test) started at once on loopback against moto, `--expect N`, "
          f"`--settle 1s`, each execing the ipfs-cluster-service test double (Python) after its `init`. "
          f"{res['agree_how']}\n")
        a("| N | consensus | launch | load before | agreed after s | decisions | clusters | crdt conflicts | "
          "AWS calls per peer (max) |")
        a("| ---: | --- | ---: | ---: | ---: | --- | ---: | ---: | ---: |")
        notes = []
        for g in res["agree"]:
            for i, x in enumerate(g["launches"]):
                calls = x.get("calls") or {}
                if x["agree_s"] is None:
                    notes.append(f"- N={g['n']} {g['consensus']} launch {i + 1}: not agreed by soak.py's deadline; "
                                 + "; ".join(f"{v} peer(s) '{k}'" for k, v in (x.get("not_agreed") or {}).items())
                                 + "".join(f"; {c} peer(s) logged `{w}`" for c, w in x.get("warnings") or []))
                a(f"| {g['n']} | {g['consensus']} | {i + 1}{' (seed %s)' % x['seed'] if x.get('seed') else ''} | "
                  f"{x.get('load', '—')} | "
                  f"{'%.2f' % x['agree_s'] if x['agree_s'] is not None else 'not agreed'} | "
                  f"{', '.join('%s %d' % (k, v) for k, v in sorted(x['actions'].items(), key=str))} | "
                  f"{x['clusters']} | {x['conflicts']} | {max(calls.values()) if calls else '—'} |")
        if notes:
            a("")
            a("\n".join(notes))
        a("")
    return "\n".join(L) + "\n"


def keep_analysis(path, text):
    begin, end = "<!-- analysis:begin -->", "<!-- analysis:end -->"
    old = open(path).read() if os.path.exists(path) else ""
    if begin in old and end in old:
        kept = old[old.index(begin):old.index(end) + len(end)]
    else:
        kept = f"{begin}\n## Analysis\n\n(written by hand after a run; scripts/bench.py keeps this section)\n{end}"
    return text + "\n" + kept + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", default=RELEASE_BIN)
    ap.add_argument("--runs", type=int, default=15, help="timed runs per scenario and endpoint")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--sizes", default="3,100,1000")
    ap.add_argument("--variants", default="full,few,full-5s",
                    help="what /id's cluster_peers lists: full (all R), few (3); full-5s: full with "
                         "--probe-timeout 5s (only at R >= 1000, --slow-runs runs)")
    ap.add_argument("--slow-runs", type=int, default=3, help="runs per endpoint of the full-5s variant")
    ap.add_argument("--agree", default="10,30", help="peer counts started together; empty to skip")
    ap.add_argument("--consensus", default="crdt,raft")
    ap.add_argument("--launches", type=int, default=3)
    ap.add_argument("--no-found", action="store_true")
    ap.add_argument("--probe-timeout", default="1s", help="BOOTSTRAP_PROBE_TIMEOUT of the runs")
    ap.add_argument("--builtin-proxy", action="store_true", help="do not use scripts/awsproxy.py")
    ap.add_argument("--builtin-agree", action="store_true", help="do not use scripts/soak.py for the agreement runs")
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "bench.md"))
    ap.add_argument("--json", help="also write the raw results here")
    args = ap.parse_args()
    if not os.path.exists(args.bin):
        sys.exit(f"no binary at {args.bin}: build it with cargo build --release")
    cmd = " ".join([".venv/bin/python scripts/bench.py"] + sys.argv[1:])
    m0 = machine()
    print(f"load average at start: {' '.join(m0['load'])}", flush=True)
    b = Bench(args)
    res = {"join": {}}
    old_term = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        b.start()
        print(f"moto on {b.moto_url}, {b.proxy.kind} on {b.proxy_url}" + (f" ({b.proxy_note})" if b.proxy_note else ""))
        for size in [int(x) for x in args.sizes.split(",") if x]:
            res["join"][size] = {}
            for variant in args.variants.split(","):
                if variant == "few" and size <= 3:
                    continue  # the same as full
                if variant == "full-5s" and size < 1000:
                    continue  # every /id answer is read within 1 s below 1000 peers
                print(f"joining, R={size}, /id lists {variant}", flush=True)
                res["join"][size][variant] = r = b.joining(size, variant)
                s = summary([x["wall_ms"] for x in r["direct"]])
                print(f"  wall ms median {s['median']:.1f} p90 {s['p90']:.1f}; peak RSS "
                      f"{max(x['maxrss_kib'] for x in r['direct']) / 1024:.1f} MiB; calls "
                      f"{fmt_calls(calls_of(r['proxied'][0]))}", flush=True)
        print("diagnostics: a trace-level log of one run, the RSS of a waiting peer", flush=True)
        res["trace"] = b.trace_run()
        res["rss_wait"] = b.rss_waiting()
        if not args.no_found:
            res["found"] = {}
            for settle in ("1s", "0s"):
                print(f"founding, --settle {settle}", flush=True)
                res["found"][settle] = b.founding(settle)
        res["agree"] = []
        hows = set()
        for n in [int(x) for x in args.agree.split(",") if x]:
            for consensus in args.consensus.split(","):
                g = {"n": n, "consensus": consensus, "launches": soak_agreement(b, n, consensus, args.launches)}
                if g["launches"] is not None:
                    hows.add("soak")
                else:
                    hows.add("own")
                    g["launches"] = []
                    for k in range(args.launches):
                        print(f"agreement: {n} peers, {consensus}, launch {k + 1}", flush=True)
                        x = b.agreement(n, consensus, k)
                        print(f"  {x}", flush=True)
                        g["launches"].append(x)
                res["agree"].append(g)
        res["agree_how"] = " ".join(filter(None, [
            "Launched by scripts/soak.py: clean launches (`--no-faults`, no start skew, `--settle 1`), one "
            "launch seed per run, chosen so that `--expect` is N and the service ID is given; its time to "
            "agreement is from just before the first start to the first poll (every 0.1 s) that sees every "
            "live double ready in one cluster holding every live peer, if that holds for 1 s; a launch that "
            "has not agreed 45 s after its last start is 'not agreed'. The load before a launch is the 1-minute "
            "load average, which includes the previous launch's 2N processes. Command: "
            + "; ".join(f"`{c}`" for c in b.agree_cmds) if "soak" in hows else "",
            "Launched by scripts/bench.py's own launcher (modelled on the old stand-in demo): time from the first "
            "spawn until every double's `GET /_double/state` shows ready, one cluster_id and N peers (polled "
            "every ~0.1 s plus the time to ask N doubles)." if "own" in hows else "",
            b.agree_note or ""]))
    finally:
        b.stop()
        signal.signal(signal.SIGTERM, old_term)
    m1 = machine()
    size, file_out = b.bin_size, b.bin_file
    commit = sh(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"])
    dirty = sh(["git", "-C", ROOT, "status", "--porcelain", "--", "src", "Cargo.toml", "Cargo.lock"])
    if dirty:
        commit += " (src/ has uncommitted changes: the binary may differ from the commit)"
    text = report(b, res, m0, m1, size, file_out, cmd, commit)
    print(text)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        text = keep_analysis(args.out, text)
        with open(args.out, "w") as f:
            f.write(text)
        print(f"wrote {args.out}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, default=str)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "_fake-peers":
        fake_peers_main(sys.argv[2])
    else:
        main()
