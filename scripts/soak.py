#!/usr/bin/env python3
"""Soak harness: many randomized launches of ipfs-cluster-bootstrap peers.

Each launch starts N peers (2 to 15, or --peers) of the bootstrap binary on
loopback addresses of their own, each execing the ipfs-cluster-service TEST
DOUBLE, against moto's Cloud Map behind a fault-injecting proxy
(scripts/awsproxy.py): random start skew, a registry visibility delay (Cloud
Map's eventual consistency), stale registrations of dead peers, a founder
killed before it is live, throttling, 5xx bursts, dropped and slow calls, and
the API down for the first seconds. It waits until the live peers agree (every
live double READY in one cluster that holds every live peer) or a deadline,
then records one JSON line: clusters formed, split brain, lone founding, exit
codes, time to agreement, AWS calls by operation and per peer.

    .venv/bin/python scripts/soak.py --short                # what CI runs (~2 min)
    .venv/bin/python scripts/soak.py --launches 100 --json out.jsonl --summary out.md
    .venv/bin/python scripts/soak.py --seed S --consensus raft [same flags]   # replay one launch
    .venv/bin/python scripts/soak.py --state-root --split-prone --settle 1 --delay-max 10   # the genesis record
    .venv/bin/python scripts/soak.py --summarize a.jsonl [b.jsonl ...] --summary out.md

With --state-root every launch gets a state root of its own and every peer
runs as an ECS task of the shipped task definition: first its kubo
container's part, a slot holder (`BIN slot --state-root S --slot-file F
--expect N -- /bin/sleep 3600`), then the peer with BOOTSTRAP_STATE_ROOT=S and
BOOTSTRAP_SLOT_FILE=F; S/genesis.json is checked against the cluster formed.

Exit status: 0, or 1 when any launch had a split brain, a lone founding, a
genesis record that does not name the founders of the cluster formed, or a
harness error (stray processes included). A launch whose peers did not agree
by the deadline is reported (`agreed: false`) but does not fail the run.

NETWORK RULE: nothing here sends a packet outside 127.0.0.0/8: every address
is checked by `loopback()` (it raises), the proxy refuses other addresses, and
the binary runs with --loopback-only. See docs/soak.md.
"""
import argparse, concurrent.futures, json, os, random, shutil, signal, socket
import subprocess, sys, tempfile, time, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import awsproxy  # noqa: E402
from harness import fake_peer_id, free_port, get_json, loopback, percentile, port_free, sh  # noqa: E402

DOUBLE = os.path.join(ROOT, "tests", "double", "ipfs-cluster-service")
VENV = os.path.join(ROOT, ".venv", "bin")
SECRET = "5e0a0c1f3b8d4e6f7a9b0c1d2e3f405162738495a6b7c8d9eafb0c1d2e3f4051"
NAMESPACE, SERVICE = "soak", "cluster-peers"
CLUSTER_PORT, API_PORT = 9096, 9094


def log(msg):
    print(time.strftime("%H:%M:%S ") + msg, flush=True)


# ------------------------------------------------------------------ helpers
def rfc3339_ms(t):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".%03dZ" % int(t % 1 * 1000)


def pick_binary(explicit):
    if explicit:
        return os.path.abspath(explicit)
    rel = os.path.join(ROOT, "target", "release", "ipfs-cluster-bootstrap")
    dbg = os.path.join(ROOT, "target", "debug", "ipfs-cluster-bootstrap")
    newest_src = 0.0
    for base in ("src",):
        for d, _, files in os.walk(os.path.join(ROOT, base)):
            for f in files:
                newest_src = max(newest_src, os.path.getmtime(os.path.join(d, f)))
    for f in ("Cargo.toml", "Cargo.lock"):
        newest_src = max(newest_src, os.path.getmtime(os.path.join(ROOT, f)))
    if os.path.exists(rel) and os.path.getmtime(rel) > newest_src:
        return rel
    return dbg


# ------------------------------------------------------------------ parameters
def gen_params(seed, consensus, a):
    """Everything random about one launch, from its seed and the flags."""
    r = random.Random(seed)
    prone = a.split_prone  # conditions under which a split can happen at all
    n = a.peers or r.randint(max(4, a.min_peers) if prone else a.min_peers, a.max_peers)
    settle = a.settle if a.settle is not None else r.choice(a.settle_choices)
    delay_ceiling = a.delay_max if a.delay_max is not None else round(settle * 0.9, 3)
    faulty = not a.no_faults
    p = {"seed": seed, "consensus": consensus, "n": n, "settle": settle}
    p["skew_max"] = 0.0 if r.random() < 0.15 else round(r.uniform(0, min(a.skew_max, 1.0) if prone else a.skew_max), 3)
    offs = [0.0] + [round(r.uniform(0, p["skew_max"]), 3) for _ in range(n - 1)]
    r.shuffle(offs)
    p["offsets"] = offs
    # A founder killed before it is live ("early": 0-2 s after its start;
    # "decision": as soon as a peer logs a found decision, before its daemon).
    kill = None
    if faulty and n >= 3 and r.random() < a.kill_prob:
        kill = {"mode": r.choice(["early", "decision"]), "after": round(r.uniform(0, 2.0), 3),
                "grace": round(r.uniform(0, 0.3), 3)}
    p["kill"] = kill
    top = n - 1 if kill else n
    p["expect"] = top if r.random() < 0.5 else r.randint(2, top)
    if prone:  # two disjoint founding sets fit
        p["expect"] = r.randint(2, max(2, top // 2))
    p["service_id_given"] = r.random() < 0.5
    # Stale registrations of dead peers: older than everyone (so first in the
    # founding order), at addresses where nothing listens, or (wrong_ip) at a
    # live peer's address with another peer ID, as after a task was replaced.
    stale = []
    if faulty:
        for j in range(r.choice([0, 0, 1, 1, 2, 3])):
            stale.append({"age": round(r.uniform(5, 7200), 1), "wrong_ip": r.random() < 0.25,
                          "peer": r.randrange(n), "init_peerset": consensus == "raft" and r.random() < 0.3,
                          "id": fake_peer_id(r)})
    p["stale"] = stale
    vis_hi = round(r.uniform(0, delay_ceiling), 3) if faulty else 0.0
    if faulty and r.random() < 0.2:
        vis_hi = delay_ceiling  # some launches at the ceiling itself
    vis_lo = round(r.uniform(0, vis_hi), 3) if r.random() < 0.5 else 0.0
    f = {"visibility": [vis_lo, vis_hi],
         "visibility_scope": "reader" if prone else r.choice(["instance", "reader"]),
         "seed": r.randrange(1 << 30)}
    if faulty:
        mild = a.mild
        if r.random() < 0.4:
            f["throttle"] = round(r.uniform(0.02, 0.08 if mild else 0.2), 3)
        if r.random() < 0.3:
            f["burst_prob"] = round(r.uniform(0.005, 0.03), 4)
            f["burst_len"] = [2, 4 if mild else 8]
        if r.random() < 0.3:
            f["drop"] = round(r.uniform(0.01, 0.03 if mild else 0.06), 3)
        if r.random() < 0.4:
            f["latency_prob"] = round(r.uniform(0.05, 0.3), 3)
            f["latency"] = [0.02, round(r.uniform(0.2, 0.6 if mild else 1.5), 3)]
        if r.random() < 0.25:
            f["down_for"] = round(r.uniform(1, 2 if mild else 5), 3)
            f["down_mode"] = r.choice(["close", "refuse"])
    p["faults"] = f
    p["delay_ceiling"] = delay_ceiling
    p["state_root"] = bool(a.state_root)  # draws nothing: a run seed gives the same launches with or without
    return p


# ------------------------------------------------------------------ the run
class Moto:
    def __init__(self, workdir):
        self.port = free_port()
        self.log = open(os.path.join(workdir, "moto.log"), "w")
        self.proc = subprocess.Popen([os.path.join(VENV, "moto_server"), "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.endpoint = "http://127.0.0.1:%d" % self.port
        t = time.time()
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                break
            except OSError:
                if time.time() - t > 30 or self.proc.poll() is not None:
                    raise RuntimeError("moto_server did not start")
                time.sleep(0.1)
        import boto3, botocore.config
        self.sd = boto3.client("servicediscovery", region_name="us-east-1", endpoint_url=self.endpoint,
                               aws_access_key_id="soak", aws_secret_access_key="soak",
                               config=botocore.config.Config(inject_host_prefix=False))

    def reset(self):
        req = urllib.request.Request(self.endpoint + "/moto-api/reset", data=b"", method="POST")
        urllib.request.urlopen(req, timeout=10).read()

    def cloudmap(self, ns, svc):
        self.sd.create_http_namespace(Name=ns)
        ns_id = [n for n in self.sd.list_namespaces()["Namespaces"] if n["Name"] == ns][0]["Id"]
        return self.sd.create_service(Name=svc, NamespaceId=ns_id)["Service"]["Id"]

    def register(self, service_id, instance_id, attrs):
        loopback(attrs["AWS_INSTANCE_IPV4"])
        self.sd.register_instance(ServiceId=service_id, InstanceId=instance_id, Attributes=attrs)

    def close(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Peer:
    def __init__(self, name, ip, d):
        self.name, self.ip, self.dir = name, loopback(ip), d
        self.proc, self.started, self.killed, self.exit = None, None, None, None
        self.decision, self.state, self.pid_id, self.err_off = None, None, None, 0
        # --state-root: the kubo container's slot holder, its slot file, the slot it took
        self.holder, self.holder_exit, self.slot_file, self.slot = None, None, None, None
        os.makedirs(d)

    def holder_alive(self):
        return self.holder is not None and self.holder.poll() is None

    def read_slot(self):
        """The slot the holder took, once it wrote the slot file (written atomically)."""
        if self.slot is None and self.slot_file:
            try:
                with open(self.slot_file) as f:
                    self.slot = json.load(f)["slot"]
            except (OSError, ValueError, KeyError, TypeError):
                pass
        return self.slot

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def read_decision(self):
        """The decision record, once the peer logged it (read incrementally)."""
        if self.decision is not None or self.proc is None:
            return self.decision
        path = os.path.join(self.dir, "stderr")
        try:
            with open(path, "rb") as f:
                f.seek(self.err_off)
                data = f.read()
        except OSError:
            return None
        cut = data.rfind(b"\n") + 1
        self.err_off += cut
        for line in data[:cut].splitlines():
            if line.startswith(b"{") and b'"event":"decision"' in line:
                try:
                    self.decision = json.loads(json.loads(line)["record"])
                except (ValueError, KeyError):
                    continue
        return self.decision


class Soak:
    def __init__(self, a, binary, workdir):
        self.a, self.bin, self.workdir = a, binary, workdir
        self.moto = Moto(workdir)
        self.proxy = awsproxy.AwsProxy(self.moto.endpoint).start()
        self.pool = concurrent.futures.ThreadPoolExecutor(8)
        self.run_tag = "%d-%d" % (os.getpid(), int(time.time()))
        # A second octet of our own (tests/it use 127.0.k.x; a second soak at
        # once most likely another one); a fresh third octet per launch.
        self.octet2 = a.net if a.net is not None else 100 + os.getpid() % 100
        self.block = 0
        self.state_dir = None  # --state-root: this launch's state root

    def close(self):
        self.proxy.close()
        self.moto.close()
        self.pool.shutdown(wait=False)

    def ips_for(self, n, extra):
        """n + extra free loopback addresses in a /24 not used by an earlier launch."""
        for _ in range(250):
            self.block = self.block % 250 + 1
            base = "127.%d.%d." % (self.octet2, self.block)
            ips = [loopback(base + str(2 + i)) for i in range(n)] + \
                  [loopback(base + str(200 + i)) for i in range(extra)]
            if all(port_free(ip, p) for ip in ips for p in (CLUSTER_PORT, API_PORT)):
                return ips
        raise RuntimeError("no free loopback /24 in 127.%d.0.0/16" % self.octet2)

    def env(self, p, peer, proxy_port, service_id):
        a = self.a
        e = {
            "PATH": "%s:/usr/local/bin:/usr/bin:/bin" % VENV, "HOME": peer.dir,
            "SOAK_TAG": self.tag,  # finds strays in /proc
            "IPFS_CLUSTER_PATH": os.path.join(peer.dir, "config"), "IPFS_CLUSTER_CONSENSUS": p["consensus"],
            "CLUSTER_SECRET": SECRET, "CLUSTER_PEERNAME": peer.name,
            "CLUSTER_LISTENMULTIADDRESS": "/ip4/%s/tcp/%d" % (peer.ip, CLUSTER_PORT),
            "CLUSTER_RESTAPI_HTTPLISTENMULTIADDRESS": "/ip4/%s/tcp/%d" % (peer.ip, API_PORT),
            "CLUSTER_MONITORPINGINTERVAL": "1s", "CLUSTER_RAFT_WAITFORLEADERTIMEOUT": "10s",
            "AWS_ENDPOINT_URL": "http://127.0.0.1:%d" % proxy_port, "AWS_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "soak", "AWS_SECRET_ACCESS_KEY": "soak", "AWS_EC2_METADATA_DISABLED": "true",
            "BOOTSTRAP_DISCOVERY": "cloudmap", "BOOTSTRAP_CLOUDMAP_NAMESPACE": NAMESPACE,
            "BOOTSTRAP_CLOUDMAP_SERVICE": SERVICE, "BOOTSTRAP_EXPECT": str(p["expect"]),
            "BOOTSTRAP_SETTLE": "%dms" % round(p["settle"] * 1000), "BOOTSTRAP_TIMEOUT": "%ds" % a.peer_timeout,
            "BOOTSTRAP_PROBE_TIMEOUT": "300ms", "BOOTSTRAP_ADVERTISE_IP": peer.ip,
            "BOOTSTRAP_DAEMON_BIN": DOUBLE, "BOOTSTRAP_LOOPBACK_ONLY": "true", "BOOTSTRAP_RUN_AS": "none",
            "BOOTSTRAP_LOG_FORMAT": "json", "BOOTSTRAP_LOG_LEVEL": "info,aws=warn",
        }
        if p["service_id_given"]:
            e["BOOTSTRAP_CLOUDMAP_SERVICE_ID"] = service_id
        if self.state_dir:  # as the shipped task definition's cluster container
            e["BOOTSTRAP_STATE_ROOT"] = self.state_dir
            e["BOOTSTRAP_SLOT_FILE"] = peer.slot_file
        return e

    def start_holder(self, p, peer):
        """--state-root: the kubo container's part of the task, `slot` holding a slot for /bin/sleep
        (kubo's stand-in). It writes the slot file the peer waits for."""
        task = os.path.join(peer.dir, "task")  # the task volume only this task's two containers share
        os.makedirs(task, exist_ok=True)
        peer.slot_file = os.path.join(task, "slot.json")
        env = {"PATH": "/usr/bin:/bin", "SOAK_TAG": self.tag,  # the same marker: strays are found and killed
               "BOOTSTRAP_LOOPBACK_ONLY": "true", "BOOTSTRAP_LOG_FORMAT": "json"}
        argv = [self.bin, "slot", "--state-root", self.state_dir, "--slot-file", peer.slot_file,
                "--expect", str(p["n"]), "--timeout", "30s", "--", "/bin/sleep", "3600"]
        out = open(os.path.join(peer.dir, "holder.stdout"), "wb")
        err = open(os.path.join(peer.dir, "holder.stderr"), "wb")
        peer.holder = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=task)
        out.close()
        err.close()
        peer.holder_started = time.time()

    # ---------------------------------------------------------------- launch
    def launch(self, index, p):
        a = self.a
        self.tag = "%s-%d" % (self.run_tag, index)
        ldir = os.path.join(self.workdir, "launch-%04d-%d-%s" % (index, p["seed"], p["consensus"]))
        os.makedirs(ldir)
        n = p["n"]
        ips = self.ips_for(n, len(p["stale"]))
        peers = [Peer("peer%02d" % i, ips[i], os.path.join(ldir, "peer%02d" % i)) for i in range(n)]
        # --state-root: one state root per launch (the service's EFS file system)
        self.state_dir = os.path.join(ldir, "state") if p["state_root"] else None
        if self.state_dir:
            os.makedirs(self.state_dir)
        rec = {"seed": p["seed"], "consensus": p["consensus"], "n": n, "expect": p["expect"],
               "state_root": bool(p["state_root"]),
               "settle": p["settle"], "skew_max": p["skew_max"], "offsets": p["offsets"],
               "service_id_given": p["service_id_given"],
               "faults": p["faults"], "delay_ceiling": p["delay_ceiling"], "kill": p["kill"],
               "stale": [{k: s[k] for k in ("age", "wrong_ip", "init_peerset")} for s in p["stale"]],
               "net": ips[0].rsplit(".", 1)[0] + ".0/24", "error": None}
        t_launch = time.time()
        error = None
        try:
            self.moto.reset()
            service_id = self.moto.cloudmap(NAMESPACE, SERVICE)
            # Per launch: fresh registry state and faults; one listener per peer.
            for label in list(self.proxy.listeners):
                self.proxy.remove_listener(label)
            self.proxy.reset(p["faults"])
            ports = {pr.name: self.proxy.add_listener("127.0.0.1", 0, pr.name) for pr in peers}
            self.seed_stale(p, peers, ips[n:], service_id)
            self.drive(p, peers, ports, service_id, rec)
        except Exception as e:  # a harness error: recorded, the run goes on
            import traceback
            error = "%s: %s" % (type(e).__name__, e)
            rec["traceback"] = traceback.format_exc()
        finally:
            stats = self.proxy.stats()
            strays = self.teardown(peers)
            for label in list(self.proxy.listeners):
                self.proxy.remove_listener(label)
        rec["aws"] = {"by_op": {awsproxy.short_op(k): v for k, v in stats["calls"].items()},
                      "per_peer": {pr.name: sum(stats["by_label"].get(pr.name, {}).values()) for pr in peers},
                      "faults": stats["faults"], "statuses": stats["statuses"],
                      "moto_duplicates_removed": stats["moto_duplicates_removed"]}
        drawn = [v["delay"] for vs in stats["registrations"].values() for v in vs] + \
                [d for vs in stats["registrations"].values() for v in vs for d in v["reader_delay"].values()]
        rec["visibility_max_drawn"] = round(max(drawn), 3) if drawn else 0.0
        rec["exits"] = {pr.name: pr.exit for pr in peers if pr.exit is not None}
        rec["strays"] = strays
        if strays and not error:
            error = "%d stray process(es) after teardown" % strays
        if self.state_dir:
            rec["holders"] = {pr.name: {"slot": pr.slot, "exit_before_teardown": pr.holder_exit}
                              for pr in peers if pr.holder is not None}
            early = ["%s's (exit %s)" % (nm, h["exit_before_teardown"]) for nm, h in sorted(rec["holders"].items())
                     if h["exit_before_teardown"] is not None]
            if early and not error:
                error = "slot holder(s) ended before teardown: %s" % ", ".join(early)
            taken = [pr.slot for pr in peers if pr.slot is not None]
            if len(taken) != len(set(taken)) and not error:
                error = "two peers were given one slot: %s" % {pr.name: pr.slot for pr in peers}
        rec["error"] = error
        rec["duration"] = round(time.time() - t_launch, 2)
        bad = rec.get("split_brain") or rec.get("lone_founding") or rec.get("genesis_mismatch") or error
        odd_exit = any(c != -9 or (p["kill"] or {}).get("peer") != nm for nm, c in rec["exits"].items())
        if bad or (a.keep_stuck and (not rec.get("agreed") or odd_exit)):
            dest = os.path.join(a.failures if bad else a.stuck, "%d-%s" % (p["seed"], p["consensus"]))
            shutil.rmtree(dest, ignore_errors=True)
            shutil.copytree(ldir, dest, ignore=shutil.ignore_patterns("*.lock"))
            with open(os.path.join(dest, "launch.json"), "w") as f:
                json.dump(rec, f, indent=1)
            rec["saved"] = dest
        if not a.keep:
            shutil.rmtree(ldir, ignore_errors=True)
        return rec

    def seed_stale(self, p, peers, spare_ips, service_id):
        now = time.time()
        ids = [s["id"] for s in p["stale"]]
        for j, s in enumerate(p["stale"]):
            ip = peers[s["peer"]].ip if s["wrong_ip"] else spare_ips[j]
            attrs = {"AWS_INSTANCE_IPV4": ip, "AWS_INSTANCE_PORT": str(CLUSTER_PORT),
                     "ipfs_cluster_peer_id": s["id"], "ipfs_cluster_registered_at": rfc3339_ms(now - s["age"]),
                     "ipfs_cluster_consensus": p["consensus"], "ipfs_cluster_api_port": str(API_PORT)}
            if s["init_peerset"]:  # a dead founding set of an earlier cluster
                attrs["ipfs_cluster_init_peerset"] = ",".join(ids)
            self.moto.register(service_id, "stale-%d" % j, attrs)

    def start_peer(self, p, peer, ports, service_id):
        env = self.env(p, peer, ports[peer.name], service_id)
        out = open(os.path.join(peer.dir, "stdout"), "wb")
        err = open(os.path.join(peer.dir, "stderr"), "wb")
        peer.proc = subprocess.Popen([self.bin], env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                     cwd=peer.dir)
        out.close()
        err.close()
        peer.started = time.time()

    def poll_states(self, peers):
        live = [pr for pr in peers if pr.alive()]
        futs = {pr.name: self.pool.submit(get_json, "http://%s:%d/_double/state" % (pr.ip, API_PORT))
                for pr in live}
        now = {}
        for pr in live:
            s = futs[pr.name].result()
            if s is not None:
                pr.state = s
                pr.pid_id = s.get("id")
                if s.get("cluster_id"):
                    now.setdefault(s["cluster_id"], []).append(pr.name)
        # Clusters seen at one poll: a split whose minority later exits (a raft
        # set that never elects a leader exits 0) still counts.
        for cid, names in now.items():
            self.seen.setdefault(cid, set()).update(names)
        if len(now) > 1 and self.simultaneous is None:
            self.simultaneous = {"t": round(time.time() - self.t0, 2), "clusters": now}
        return live

    def drive(self, p, peers, ports, service_id, rec):
        a = self.a
        t0 = self.t0 = time.time()
        self.seen, self.simultaneous = {}, None
        order = sorted(range(len(peers)), key=lambda i: (p["offsets"][i], i))
        kill, victim, kill_at = p["kill"], None, None
        if kill and kill["mode"] == "early":
            victim = peers[order[0]]  # the earliest started: the earliest registered
        last_start = t0 + max(p["offsets"])
        deadline = last_start + a.deadline
        next_poll, agreed_at, one_at, pending = 0.0, None, None, list(order)
        awaiting, extended = [], None  # --state-root: holders started whose slot file is not written yet
        while True:
            now = time.time()
            if now >= deadline:
                # --state-root: a peer still deciding at the deadline (waiting for a cluster the genesis
                # record names) is given its own --timeout, so that its exit (76, 75) is recorded.
                deciding = [pr for pr in peers if pr.alive() and pr.state is None]
                if self.state_dir and extended is None and deciding:
                    extended = deadline = max(pr.started + a.peer_timeout + 10 for pr in deciding)
                    rec["extended"] = {"deciding": sorted(pr.name for pr in deciding),
                                       "until_s": round(extended - t0, 1)}
                    log("  seed %d: %d peer(s) still deciding at the deadline (%s): waiting for their --timeout"
                        % (p["seed"], len(deciding), ", ".join(sorted(pr.name for pr in deciding))))
                else:
                    break
            while pending and t0 + p["offsets"][pending[0]] <= now:
                pr = peers[pending.pop(0)]
                if self.state_dir:  # the kubo container first; the cluster container once it took a slot
                    self.start_holder(p, pr)
                    awaiting.append(pr)
                else:
                    self.start_peer(p, pr, ports, service_id)
            for pr in list(awaiting):
                if pr.read_slot() is not None:
                    awaiting.remove(pr)
                    self.start_peer(p, pr, ports, service_id)
                elif pr.holder.poll() is not None:
                    raise RuntimeError("%s's slot holder exited %s without writing %s"
                                       % (pr.name, pr.holder.returncode, pr.slot_file))
                elif now - pr.holder_started > 40:
                    raise RuntimeError("%s's slot holder wrote no slot file in 40 s" % pr.name)
            for pr in peers:
                if pr.proc is not None and pr.exit is None and pr.proc.poll() is not None:
                    pr.exit = pr.proc.returncode
                if pr.holder is not None and pr.holder_exit is None and pr.holder.poll() is not None:
                    pr.holder_exit = pr.holder.returncode
                pr.read_decision()
            if extended is not None and not any(pr.alive() and pr.state is None for pr in peers):
                for pr in peers:  # the peers deciding at the deadline ended or run a daemon now
                    if pr.proc is not None and pr.exit is None and pr.proc.poll() is not None:
                        pr.exit = pr.proc.returncode
                break
            # the founder kill
            if kill and kill.get("done") is None:
                if kill["mode"] == "decision" and victim is None:
                    for pr in peers:
                        d = pr.decision
                        if d and d["decision"]["action"] == "found" and pr.alive():
                            victim, kill_at = pr, now + kill["grace"]
                            break
                elif kill["mode"] == "early" and victim is not None and kill_at is None and victim.started:
                    kill_at = victim.started + kill["after"]
                if victim is not None and kill_at is not None and now >= kill_at:
                    st = get_json("http://%s:%d/_double/state" % (victim.ip, API_PORT), timeout=0.3)
                    ready = bool(st and st.get("ready"))
                    d = victim.decision
                    kill.update(done=True, peer=victim.name, at=round(now - victim.started, 3), was_ready=ready,
                                decision=d and d["decision"]["action"])
                    if ready:
                        kill["skipped"] = "daemon already ready"
                    elif victim.alive():
                        victim.proc.send_signal(signal.SIGKILL)
                        victim.proc.wait()
                        victim.killed = True
                        victim.exit = victim.proc.returncode
            if now >= next_poll and not pending and not awaiting:
                next_poll = now + a.poll
                live = self.poll_states(peers)
                if live and self.one_cluster(live):
                    one_at = one_at or now
                else:
                    one_at = None
                if live and self.agreed(live):
                    if agreed_at is None:
                        agreed_at = now
                    if now - agreed_at >= a.hold:
                        break  # held for a.hold: done
                else:
                    agreed_at = None
                    if one_at is not None and now - one_at >= a.one_cluster_hold:
                        break  # one cluster, but some membership views stay short (crdt pings under load)
            time.sleep(0.1)
        live = self.poll_states(peers)
        for pr in peers:
            pr.read_decision()
        if not (live and self.one_cluster(live)):
            one_at = None
        self.judge(p, peers, live, rec, t0, last_start, agreed_at, one_at)
        if self.state_dir:
            self.check_genesis(p, peers, rec)

    @staticmethod
    def one_cluster(live):
        """Every live double READY, all with one cluster ID."""
        if not all(pr.state and pr.state.get("ready") and pr.pid_id for pr in live):
            return False
        cids = {pr.state.get("cluster_id") for pr in live}
        return len(cids) == 1 and None not in cids

    @staticmethod
    def agreed(live):
        ids = set()
        for pr in live:
            s = pr.state
            if not s or not s.get("ready") or not pr.pid_id:
                return False
            ids.add(pr.pid_id)
        cids = {pr.state.get("cluster_id") for pr in live}
        return len(cids) == 1 and None not in cids and all(ids <= set(pr.state.get("peers") or []) for pr in live)

    def judge(self, p, peers, live, rec, t0, last_start, agreed_at, one_at):
        doubles = [pr for pr in live if pr.state and pr.state.get("id")]
        clusters = {}
        for pr in doubles:
            cid = pr.state.get("cluster_id")
            if cid:
                clusters.setdefault(cid, []).append(pr.name)
        rec["agreed"] = agreed_at is not None and self.agreed(live)
        rec["t_agree"] = round(agreed_at - t0, 2) if rec["agreed"] else None
        rec["t_agree_after_last_start"] = round(agreed_at - last_start, 2) if rec["agreed"] else None
        # Weaker: every live peer READY in one cluster, some membership view short.
        rec["one_cluster"] = one_at is not None
        rec["t_one_cluster"] = round(one_at - t0, 2) if one_at is not None else None
        rec["live"] = len(live)
        rec["clusters"] = {cid: len(m) for cid, m in clusters.items()}
        rec["cluster_members"] = clusters
        rec["clusters_seen"] = {cid: sorted(m) for cid, m in self.seen.items()}
        rec["split_seen"] = self.simultaneous  # first poll that saw two clusters at once
        rec["split_brain"] = len(clusters) > 1 or self.simultaneous is not None
        decisions = {}
        for pr in peers:
            d = pr.decision
            if d:
                dec = d["decision"]
                decisions[pr.name] = {"action": dec["action"], "rule": dec["reason"].get("rule"),
                                      "rounds": d.get("rounds"), "elapsed_ms": d.get("elapsed_ms"),
                                      "init_peerset": dec.get("init_peerset"), "peer_id": d["facts"]["me"]["peer_id"]}
        rec["decisions"] = decisions
        rec["founders"] = sorted(nm for nm, d in decisions.items() if d["action"] == "found")
        sets = {tuple(sorted(d["init_peerset"])) for d in decisions.values()
                if d["action"] == "found" and d["init_peerset"]}
        rec["founding_sets"] = len(sets)
        lone = []
        for pr in doubles:
            s, d = pr.state, decisions.get(pr.name)
            if s.get("founded") and (d is None or d["action"] != "found"):
                lone.append("%s founded %s without a found decision (%s)"
                            % (pr.name, s.get("cluster_id"), d and d["action"]))
            cid = s.get("cluster_id")
            if s.get("founded") and cid and len(clusters) > 1 and len(clusters.get(cid, [])) == 1:
                lone.append("%s founded %s, a cluster of one beside %d other cluster(s)"
                            % (pr.name, cid, len(clusters) - 1))
            if d and d["action"] == "found" and d["init_peerset"] is not None and len(d["init_peerset"]) < p["expect"]:
                lone.append("%s founded with %d voters, fewer than --expect %d"
                            % (pr.name, len(d["init_peerset"]), p["expect"]))
        live_sets = {tuple(sorted(decisions[pr.name]["init_peerset"])) for pr in doubles
                     if pr.name in decisions and decisions[pr.name]["action"] == "found"
                     and decisions[pr.name]["init_peerset"]}
        if len(live_sets) > 1:
            lone.append("live raft founders used %d different founding sets" % len(live_sets))
        # A founder that was alone in its cluster while another cluster ran,
        # and exited later (a raft set of two whose other member joined elsewhere).
        killed = {pr.name for pr in peers if pr.killed}
        if self.simultaneous:
            for cid, names in self.simultaneous["clusters"].items():
                if len(names) == 1 and names[0] not in killed and (decisions.get(names[0]) or {}).get("action") == "found" \
                        and not any(names[0] in l for l in lone):
                    lone.append("%s founded %s, alone in it while %d other cluster(s) ran (seen at %.1f s)"
                                % (names[0], cid, len(self.simultaneous["clusters"]) - 1, self.simultaneous["t"]))
        rec["lone_founding"] = bool(lone)
        rec["lone_details"] = lone
        rec["conflicts"] = sum(len(pr.state.get("conflicts") or []) for pr in doubles)
        if not rec["agreed"]:
            rec["not_agreed"] = {
                pr.name: ("exited %s" % pr.exit if pr.exit is not None else
                          "sidecar still deciding" if not pr.state else
                          "double not ready (cluster %s, staging=%s, has_leader=%s)"
                          % (pr.state.get("cluster_id"), pr.state.get("staging"), pr.state.get("has_leader"))
                          if not pr.state.get("ready") else
                          "ready in %s with %d peers" % (pr.state.get("cluster_id"), len(pr.state.get("peers") or [])))
                for pr in peers if pr.proc is not None and not pr.killed}

    def check_genesis(self, p, peers, rec):
        """--state-root: the genesis record must name exactly the founder(s) of the cluster formed, and
        nobody it does not name may have founded. The double's cluster ID says who founded it: crdt
        "crdt-<founder>", raft "raft-" + sha256 of the sorted voters (the init_peerset)."""
        import hashlib
        root, problems = self.state_dir, []
        names = {}  # peer ID -> peer name: the slot's identity, else the decision or the double
        for pr in peers:
            if pr.slot is not None:
                try:
                    with open(os.path.join(root, "slots", str(pr.slot), "cluster", "identity.json")) as f:
                        names[json.load(f)["id"]] = pr.name
                except (OSError, ValueError, KeyError, TypeError):
                    pass
            d = rec["decisions"].get(pr.name)
            if d:
                names.setdefault(d["peer_id"], pr.name)
            if pr.pid_id:
                names.setdefault(pr.pid_id, pr.name)
        name = lambda i: names.get(i, i)
        files = sorted(f for f in os.listdir(root) if f.startswith("genesis") or f.startswith(".genesis"))
        g = None
        try:
            with open(os.path.join(root, "genesis.json")) as f:
                g = json.load(f)
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as e:
            problems.append("genesis.json unreadable: %s" % e)
        if files not in ([], ["genesis.json"]):
            problems.append("unexpected genesis files (no --refound was given): %s" % files)
        # Who lost the race to create the record (a founding it prevented), from the peers' logs.
        lost = []
        for pr in peers:
            try:
                with open(os.path.join(pr.dir, "stderr"), "rb") as f:
                    if b"another peer founded the cluster first" in f.read():
                        lost.append(pr.name)
            except OSError:
                pass
        rec["genesis_race_lost"] = lost
        seen = rec.get("clusters_seen") or {}
        founders = [d for d in rec["decisions"].values() if d["action"] == "found"]
        if g is None:
            rec["genesis"] = None
            if seen:
                problems.append("cluster(s) %s formed without a genesis record" % sorted(seen))
            if founders:
                problems.append("%d found decision(s) without a genesis record" % len(founders))
        else:
            gf = list(g.get("founders") or [])
            rec["genesis"] = {"id": g.get("id"), "consensus": g.get("consensus"), "founders": [name(x) for x in gf],
                              "founded_by": name(g.get("founded_by"))}
            if g.get("consensus") != p["consensus"]:
                problems.append("genesis.json says %s, the launch runs %s" % (g.get("consensus"), p["consensus"]))
            if p["consensus"] == "crdt":
                expected = "crdt-" + gf[0] if len(gf) == 1 else None
                if len(gf) != 1:
                    problems.append("a crdt genesis record with %d founders" % len(gf))
            else:
                expected = "raft-" + hashlib.sha256(",".join(sorted(set(gf))).encode()).hexdigest()[:16]
            for cid, members in sorted(seen.items()):
                if cid != expected:
                    problems.append("cluster %s (%s) was not founded by the genesis record's founders %s"
                                    % (cid, ", ".join(members), ", ".join(name(x) for x in gf)))
            for nm, d in sorted(rec["decisions"].items()):
                if d["action"] == "found" and d["peer_id"] not in gf:
                    problems.append("%s founded (rule %s) but genesis.json does not name it" % (nm, d["rule"]))
                if d["action"] == "found" and d["init_peerset"] and sorted(d["init_peerset"]) != sorted(gf):
                    problems.append("%s founded with init_peerset %s, genesis.json names %s"
                                    % (nm, [name(x) for x in d["init_peerset"]], [name(x) for x in gf]))
        rec["genesis_problems"] = problems
        rec["genesis_mismatch"] = bool(problems)

    def teardown(self, peers):
        """SIGTERM, then SIGKILL (the peers, then their slot holders); then kill anything left carrying
        this launch's tag."""
        self.proxy.set_faults(throttle=0.0, burst_prob=0.0, drop=0.0, latency_prob=0.0, down_for=0.0)
        with self.proxy.lock:
            self.proxy.burst_left = 0
        for pr in peers:
            if pr.alive():
                pr.proc.send_signal(signal.SIGTERM)
        end = time.time() + self.a.grace
        for pr in peers:
            if pr.proc is None:
                continue
            try:
                pr.proc.wait(max(0.05, end - time.time()))
            except subprocess.TimeoutExpired:
                pr.proc.kill()
                pr.proc.wait()
        if self.state_dir:
            # The kubo containers' part, after the cluster containers (as ECS stops a task whose
            # cluster container depends on kubo), the founder kill's victim's holder included.
            for pr in peers:
                if pr.holder_alive():
                    pr.holder.send_signal(signal.SIGTERM)
            end = time.time() + self.a.grace
            for pr in peers:
                if pr.holder is None:
                    continue
                try:
                    pr.holder.wait(max(0.05, end - time.time()))
                except subprocess.TimeoutExpired:
                    pr.holder.kill()
                    pr.holder.wait()
            # Each lock's watchdog (the holders' and the peers') sees its parent gone within 250 ms.
            end = time.time() + 3
            while tagged_pids(self.tag) and time.time() < end:
                time.sleep(0.1)
        strays = 0
        for pid in tagged_pids(self.tag):
            strays += 1
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return strays


def tagged_pids(tag):
    needle = ("SOAK_TAG=%s" % tag).encode() + b"\0"
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            with open("/proc/%s/environ" % d, "rb") as f:
                if needle in f.read():
                    out.append(int(d))
        except OSError:
            pass
    return out


# ------------------------------------------------------------------ summary
def summarize(records, cmdline, binary, run_seed):
    lines = ["# Soak summary", "",
             "- command: `%s`" % cmdline,
             "- run seed(s): %s" % (", ".join(sorted({str(r.get("run_seed")) for r in records})) or run_seed),
             "- binary: %s" % "; ".join(sorted({"`%s` (%s)" % (r.get("binary"), r.get("source"))
                                               for r in records})),
             "- machine: `%s`, nproc %s" % (sh(["uname", "-a"]), sh(["nproc"])), ""]
    cmds = sorted({r.get("cmdline") for r in records if r.get("cmdline")})
    if cmds:
        lines[2:3] = ["- command(s): " + "; ".join("`%s`" % c for c in cmds)]
    # Rows by consensus and by whether the launch ran on a state root (--state-root).
    keys = sorted({(r["consensus"], bool(r.get("state_root"))) for r in records})
    sel = lambda k: [r for r in records if (r["consensus"], bool(r.get("state_root"))) == k]
    yn = lambda b: "yes" if b else "no"
    lines += ["| consensus | state root | launches | agreed | one cluster | split brains | lone foundings "
              "| genesis mismatches | harness errors "
              "| exits by code | agreement s p50 / p95 / max | AWS calls per peer p50 / max | max visibility delay drawn s |",
              "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | --- | ---: |"]
    for cons, sr in keys:
        rs = sel((cons, sr))
        codes = {}
        for r in rs:
            for nm, c in r.get("exits", {}).items():
                killed = (r.get("kill") or {}).get("peer") == nm and c == -9
                key = "SIGKILL (founder kill)" if killed else str(c)
                codes[key] = codes.get(key, 0) + 1
        t = [r["t_agree"] for r in rs if r.get("t_agree") is not None]
        calls = [c for r in rs for c in r.get("aws", {}).get("per_peer", {}).values()]
        fmt = lambda v: "-" if v is None else "%.1f" % v
        lines.append("| %s | %s | %d | %d | %d | %d | %d | %s | %d | %s | %s / %s / %s | %s / %s | %s |" % (
            cons, yn(sr), len(rs), sum(1 for r in rs if r.get("agreed")), sum(1 for r in rs if r.get("one_cluster")),
            sum(1 for r in rs if r.get("split_brain")), sum(1 for r in rs if r.get("lone_founding")),
            sum(1 for r in rs if r.get("genesis_mismatch")) if sr else "-",
            sum(1 for r in rs if r.get("error")),
            ", ".join("%s×%d" % (k, v) for k, v in sorted(codes.items())) or "none",
            fmt(percentile(t, 0.5)), fmt(percentile(t, 0.95)), fmt(max(t) if t else None),
            fmt(percentile(calls, 0.5)), max(calls) if calls else "-",
            fmt(max((r.get("visibility_max_drawn") or 0) for r in rs))))
    lines += ["", "| consensus | state root | N min–max | agreement after the last start s p50 / max | launch s p50 "
              "| founder kills | stale records | throttles | 5xx | dropped | delayed | calls while down "
              "| reader-scope delays |",
              "| --- | --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for cons, sr in keys:
        rs = sel((cons, sr))
        fsum = lambda k: sum(r.get("aws", {}).get("faults", {}).get(k, 0) for r in rs)
        tl = [r["t_agree_after_last_start"] for r in rs if r.get("t_agree_after_last_start") is not None]
        fmt = lambda v: "-" if v is None else "%.1f" % v
        lines.append("| %s | %s | %d–%d | %s / %s | %s | %d | %d | %d | %d | %d | %d | %d | %d |" % (
            cons, yn(sr), min(r["n"] for r in rs), max(r["n"] for r in rs), fmt(percentile(tl, 0.5)),
            fmt(max(tl) if tl else None),
            fmt(percentile([r["duration"] for r in rs], 0.5)),
            sum(1 for r in rs if (r.get("kill") or {}).get("done") and not (r.get("kill") or {}).get("skipped")),
            sum(len(r.get("stale", [])) for r in rs), fsum("throttle"), fsum("5xx"), fsum("drop"), fsum("latency"),
            fsum("down"), sum(1 for r in rs if r["faults"].get("visibility_scope") == "reader")))
    srs = [r for r in records if r.get("state_root")]
    if srs:
        lines += ["", "State root launches: genesis.json created in %d; peers that lost the race to create it "
                  "(a founding it prevented): %d in %d launches; launches waited for peers still deciding at "
                  "the deadline: %d" % (
                      sum(1 for r in srs if r.get("genesis")), sum(len(r.get("genesis_race_lost") or []) for r in srs),
                      sum(1 for r in srs if r.get("genesis_race_lost")), sum(1 for r in srs if r.get("extended")))]
    lines += ["", "By the largest visibility delay drawn in the launch, relative to --settle:", "",
              "| delay / settle | state root | launches | of which expect ≤ N/2 (a split is possible) | agreed "
              "| split brains | lone foundings |", "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    buckets = [(0, 0.5), (0.5, 0.9), (0.9, 1.0), (1.0, 1.5), (1.5, 2.0), (2.0, 3.0), (3.0, 4.0), (4.0, 6.0),
               (6.0, 8.0), (8.0, 10.0), (10.0, 1e9)]
    for (lo, hi), sr in [(b, sr) for b in buckets for sr in sorted({k[1] for k in keys})]:
        rs = [r for r in records if lo <= (r.get("visibility_max_drawn") or 0) / r["settle"] < hi
              and bool(r.get("state_root")) == sr]
        if rs:
            lines.append("| %s–%s | %s | %d | %d | %d | %d | %d |" % (
                lo, "∞" if hi > 1e8 else hi, yn(sr), len(rs), sum(1 for r in rs if 2 * r["expect"] <= r["n"]),
                sum(1 for r in rs if r.get("agreed")),
                sum(1 for r in rs if r.get("split_brain")), sum(1 for r in rs if r.get("lone_founding"))))
    nn = [r for r in records if not r.get("agreed")]
    if nn:
        lines += ["", "Launches that did not agree by the deadline:", ""]
        for r in nn[:40]:
            lines.append("- seed %s %s%s N=%d expect=%d kill=%s: %s" % (
                r["seed"], r["consensus"], " state root" if r.get("state_root") else "", r["n"], r["expect"],
                (r.get("kill") or {}).get("mode") if (r.get("kill") or {}).get("done") else "-",
                r.get("error") or "; ".join("%s %s" % kv for kv in sorted((r.get("not_agreed") or {}).items()))[:300]))
    bad = [r for r in records if r.get("split_brain") or r.get("lone_founding") or r.get("genesis_mismatch")
           or r.get("error")]
    if bad:
        lines += ["", "Failures:", ""]
        for r in bad:
            lines.append("- seed %s %s%s: split=%s lone=%s genesis=%s error=%s %s; logs %s" % (
                r["seed"], r["consensus"], " state root" if r.get("state_root") else "", r.get("split_brain"),
                r.get("lone_founding"), "; ".join(r.get("genesis_problems") or []) or "-", r.get("error"),
                "; ".join(r.get("lone_details") or []), r.get("saved")))
    return "\n".join(lines) + "\n"


def source_info(binary):
    try:
        head = subprocess.run(["git", "-C", ROOT, "log", "-1", "--format=%h %cd", "--date=format:%Y-%m-%d %H:%M"],
                              capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--", "src"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except OSError:
        head, dirty = "?", ""
    built = time.strftime("%Y-%m-%d %H:%M", time.localtime(os.path.getmtime(binary))) if os.path.exists(binary) else "?"
    return "HEAD %s%s; binary built %s" % (head, " (src/ has uncommitted changes)" if dirty else "", built)


# ------------------------------------------------------------------ main
def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--short", action="store_true", help="CI mode: 6 small launches per consensus, mild faults (about 2 minutes)")
    ap.add_argument("--launches", type=int, default=None, help="launches per consensus (default 20; --short: 6)")
    ap.add_argument("--consensus", default="crdt,raft", help="comma-separated: crdt, raft")
    ap.add_argument("--peers", type=int, default=None, help="fixed N (default random 2..15; --short 2..5)")
    ap.add_argument("--no-faults", action="store_true",
                    help="clean launches: no proxy faults, no visibility delay, no stale records, no founder kill")
    ap.add_argument("--settle", type=float, default=None, help="--settle in seconds (default random 1, 2 or 3)")
    ap.add_argument("--delay-max", type=float, default=None,
                    help="visibility delay ceiling in seconds (default 0.9 x settle)")
    ap.add_argument("--skew-max", type=float, default=5.0, help="start skew ceiling in seconds (default 5)")
    ap.add_argument("--kill-prob", type=float, default=0.3, help="chance of a founder kill per launch")
    ap.add_argument("--split-prone", action="store_true",
                    help="for measuring the delay bound: N >= 4, expect <= N/2 (two disjoint founding sets fit), "
                         "skew <= 1 s, every peer draws its own visibility delays")
    ap.add_argument("--state-root", action="store_true",
                    help="every launch on a state root of its own, every peer as an ECS task of the shipped task "
                         "definition: its slot holder (`BIN slot --state-root S --slot-file F --expect N -- "
                         "/bin/sleep 3600`) first, then the peer with BOOTSTRAP_STATE_ROOT and BOOTSTRAP_SLOT_FILE; "
                         "genesis.json must name the founders of the cluster formed")
    ap.add_argument("--seed", type=int, default=None, help="replay one launch: its seed (with the same flags)")
    ap.add_argument("--run-seed", type=int, default=None, help="seed of the launch seeds (default random)")
    ap.add_argument("--deadline", type=float, default=None, help="seconds after the last start (default 45; short 30)")
    ap.add_argument("--duration", type=float, default=None, help="stop starting launches after this many minutes")
    ap.add_argument("--json", help="append one JSON line per launch here")
    ap.add_argument("--summary", help="write the markdown summary here")
    ap.add_argument("--summarize", nargs="+", help="only summarize these JSON-lines files")
    ap.add_argument("--bin", help="the bootstrap binary (default: release if newer than src/, else debug)")
    ap.add_argument("--workdir", help="where launches run (default a temp folder)")
    ap.add_argument("--failures", default="/tmp/soak/failures", help="logs of failed launches go here")
    ap.add_argument("--keep", action="store_true", help="keep every launch's folder")
    ap.add_argument("--keep-stuck", action="store_true",
                    help="also save launches that did not agree or where a peer exited (to --stuck)")
    ap.add_argument("--stuck", default="/tmp/soak/stuck", help="where --keep-stuck saves them")
    ap.add_argument("--net", type=int, default=None, help="second octet of the 127.X.0.0/16 block to use")
    ap.add_argument("--peer-timeout", type=int, default=90, help="BOOTSTRAP_TIMEOUT seconds (default 90)")
    ap.add_argument("--poll", type=float, default=0.5, help="seconds between state polls")
    ap.add_argument("--hold", type=float, default=1.0, help="agreement must hold this long (s)")
    ap.add_argument("--one-cluster-hold", type=float, default=10.0,
                    help="end a launch whose live peers stayed READY in one cluster this long without "
                         "full membership views (s)")
    ap.add_argument("--grace", type=float, default=4.0, help="seconds between SIGTERM and SIGKILL")
    a = ap.parse_args()
    cmdline = " ".join([os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:])

    if a.summarize:
        recs = [json.loads(l) for fn in a.summarize for l in open(fn) if l.strip()]
        text = summarize(recs, cmdline, "(from %s)" % ", ".join(a.summarize), "-")
        if a.summary:
            open(a.summary, "w").write(text)
        print(text)
        return 0

    a.mild = a.short
    if a.short:
        a.launches = a.launches or 6
        a.min_peers, a.max_peers = 2, 5
        a.skew_max = min(a.skew_max, 2.0)
        a.settle_choices = [1.0]
        a.deadline = a.deadline or 30
    else:
        a.launches = a.launches or 20
        a.min_peers, a.max_peers = 2, 15
        a.settle_choices = [1.0, 2.0, 3.0]
        a.deadline = a.deadline or 45
    if a.peers is not None and not 1 <= a.peers <= 250:
        ap.error("--peers must be 1..250")
    if a.peers is not None and a.peers < 2:
        ap.error("--peers must be at least 2 (one peer with --expect 1 founds alone)")
    conss = [c.strip() for c in a.consensus.split(",") if c.strip()]
    if any(c not in ("crdt", "raft") for c in conss):
        ap.error("--consensus takes crdt and/or raft")
    binary = pick_binary(a.bin)
    if not os.path.exists(binary):
        ap.error("no binary at %s: run cargo build (or pass --bin)" % binary)
    if not os.path.exists(os.path.join(VENV, "moto_server")):
        ap.error("no .venv/bin/moto_server: run scripts/setup-testbed.sh")

    run_seed = a.run_seed if a.run_seed is not None else random.SystemRandom().randrange(1, 10**9)
    if a.seed is not None:
        plan = [(a.seed, c) for c in conss]
    else:
        rs = random.Random(run_seed)
        plan = [(rs.randrange(1, 10**9), conss[i % len(conss)]) for i in range(a.launches * len(conss))]
    source = source_info(binary)
    os.makedirs(a.failures, exist_ok=True)
    workdir = a.workdir or tempfile.mkdtemp(prefix="icb-soak-")
    os.makedirs(workdir, exist_ok=True)
    log("soak: %d launch(es), run seed %s, binary %s, work in %s" % (len(plan), run_seed, binary, workdir))

    stop = {"sig": None}

    def on_signal(sig, _):
        stop["sig"] = sig
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_signal)

    jf = open(a.json, "a") if a.json else None
    records, soak = [], None
    t_start = time.time()
    try:
        soak = Soak(a, binary, workdir)
        for i, (seed, cons) in enumerate(plan):
            if a.duration and time.time() - t_start > a.duration * 60:
                log("soak: --duration reached after %d launch(es)" % i)
                break
            p = gen_params(seed, cons, a)
            rec = soak.launch(i, p)
            rec["launch"] = i
            rec["run_seed"] = run_seed
            rec["binary"], rec["source"], rec["cmdline"] = binary, source, cmdline
            records.append(rec)
            if jf:
                jf.write(json.dumps(rec, sort_keys=True) + "\n")
                jf.flush()
            flag = ("SPLIT BRAIN " if rec.get("split_brain") else "") + \
                   ("LONE FOUNDING " if rec.get("lone_founding") else "") + \
                   ("GENESIS MISMATCH %s " % "; ".join(rec["genesis_problems"]) if rec.get("genesis_mismatch") else "") + \
                   ("ERROR %s " % rec["error"] if rec.get("error") else "")
            kill = rec.get("kill") or {}
            log("launch %d/%d seed=%d %s%s N=%d expect=%d settle=%.1fs vis<=%.2fs stale=%d kill=%s -> %s "
                "t_agree=%s clusters=%s exits=%s calls/peer max=%s %s%s%s" % (
                    i + 1, len(plan), seed, cons, " state-root" if rec.get("state_root") else "",
                    rec["n"], rec["expect"], rec["settle"],
                    rec["visibility_max_drawn"], len(rec["stale"]),
                    ("%s:%s" % (kill.get("mode"), kill.get("skipped") or kill.get("decision")))
                    if kill.get("done") else "-",
                    "agreed" if rec.get("agreed") else
                    "one cluster (t=%s), views short" % rec.get("t_one_cluster") if rec.get("one_cluster") else
                    "NOT AGREED", rec.get("t_agree"),
                    list(rec.get("clusters", {}).values()), rec["exits"] or "{}",
                    max(rec["aws"]["per_peer"].values() or [0]),
                    "genesis=%s race-lost=%s " % ((rec.get("genesis") or {}).get("founders"),
                                                  rec.get("genesis_race_lost") or "-") if rec.get("state_root") else "",
                    flag, "" if not flag else "(replay: --seed %d --consensus %s)" % (seed, cons)))
    except KeyboardInterrupt:
        log("soak: interrupted")
    finally:
        if soak:
            soak.close()
        if jf:
            jf.close()
        if not a.keep and not a.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    text = summarize(records, cmdline, binary, run_seed)
    if a.summary:
        with open(a.summary, "w") as f:
            f.write(text)
    print(text)
    bad = [r for r in records if r.get("split_brain") or r.get("lone_founding") or r.get("genesis_mismatch")
           or r.get("error")]
    if stop["sig"] or not records:
        return 1
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
