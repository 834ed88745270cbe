"""Self-test of the ipfs-cluster-service TEST DOUBLE (tests/double/ipfs-cluster-service).

Run from the repo root:
    python3 -m unittest discover -s tests/double -p 'test_*.py'

Every daemon binds only 127.0.0.2-127.0.0.4 on free ports.  Every process is
killed in tearDown.
"""
import base64
import importlib.machinery
import importlib.util
import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
DOUBLE = os.path.join(HERE, "ipfs-cluster-service")
SECRET = "ab" * 32
PEER_ID_RE = re.compile(r"^12D3KooW[1-9A-HJ-NP-Za-km-z]{44}$")


def load_double_module():
    loader = importlib.machinery.SourceFileLoader("ics_double", DOUBLE)
    spec = importlib.util.spec_from_loader("ics_double", loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


def read(*parts, mode="r"):
    with open(os.path.join(*parts), mode) as f:
        return f.read()


def free_port(ip):
    with socket.socket() as s:
        s.bind((ip, 0))
        return s.getsockname()[1]


class Peer:
    """One double with its own config dir, loopback IP and ports."""

    def __init__(self, test, ip, secret=SECRET, extra_env=None):
        self.test, self.ip = test, ip
        self.dir = tempfile.mkdtemp(prefix="icsd-")
        test.addCleanup(lambda: subprocess.run(["rm", "-rf", self.dir]))
        self.cport, self.aport = free_port(ip), free_port(ip)
        self.env = dict(os.environ, HOME=self.dir, IPFS_CLUSTER_PATH=os.path.join(self.dir, "cfg"),
                        CLUSTER_SECRET=secret,
                        CLUSTER_LISTENMULTIADDRESS="/ip4/%s/tcp/%d" % (ip, self.cport),
                        CLUSTER_RESTAPI_HTTPLISTENMULTIADDRESS="/ip4/%s/tcp/%d" % (ip, self.aport),
                        CLUSTER_MONITORPINGINTERVAL="1s", CLUSTER_RAFT_WAITFORLEADERTIMEOUT="3s")
        self.env.update(extra_env or {})
        self.proc = None
        self.cfg = self.env["IPFS_CLUSTER_PATH"]

    def run(self, *args, stdin=subprocess.DEVNULL, timeout=20):
        return subprocess.run([DOUBLE, *args], env=self.env, stdin=stdin, capture_output=True,
                              text=True, timeout=timeout)

    def init(self, *args):
        r = self.run("init", *args)
        self.test.assertEqual(r.returncode, 0, r.stderr + r.stdout)
        return r

    @property
    def id(self):
        return json.loads(read(self.cfg, "identity.json"))["id"]

    @property
    def addr(self):
        return "/ip4/%s/tcp/%d/p2p/%s" % (self.ip, self.cport, self.id)

    def start(self, *args):
        if getattr(self, "log", None):
            self.log.close()
        self.log = open(os.path.join(self.dir, "daemon.log"), "a")
        self.proc = subprocess.Popen([DOUBLE, "daemon", *args], env=self.env, stdin=subprocess.DEVNULL,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        self.test.addCleanup(self.kill)
        self.test.wait(lambda: self.get("/health")[0] == 204 or self.proc.poll() is not None)
        return self

    def get(self, path, auth=None):
        req = urllib.request.Request("http://%s:%d%s" % (self.ip, self.aport, path))
        if auth:
            req.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status, r.read().decode(), r.headers
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(), e.headers
        except OSError:
            return None, "", {}

    def state(self):
        code, body, _ = self.get("/_double/state")
        return json.loads(body) if code == 200 else {}

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if getattr(self, "log", None):
            self.log.close()

    def output(self):
        self.log.flush()
        return read(self.log.name)

    def runs(self):
        return [json.loads(l) for l in read(self.cfg, "double-runs.jsonl").splitlines() if l.strip()]


class DoubleTest(unittest.TestCase):
    def wait(self, cond, timeout=15, msg="condition"):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if cond():
                return
            time.sleep(0.1)
        self.fail("timed out waiting for " + msg)

    # ------------------------------------------------------------------ init
    def test_identity_derivation_matches_website_sample(self):
        mod = load_double_module()
        raw = base64.b64decode("CAESQOiMLK8uiahB76IOToUUo/wMGzUvgysRxTOJuQ13cUUsAKpefDuWaKJ8l+Y2ZMk5eE/iHVjBnL+8nKaWnfkaFIo=")
        self.assertEqual(mod.peer_id_of(mod.ed25519_pub(raw[4:36])),
                         "12D3KooW9rxqumy8vqCxnNfpeyT7zHGae6srENFW2gip8LMw3TsX")

    def test_init_writes_files(self):
        p = Peer(self, "127.0.0.2")
        p.init()
        cfg = p.cfg
        for name, mode in (("service.json", 0o600), ("identity.json", 0o600)):
            self.assertEqual(stat.S_IMODE(os.stat(os.path.join(cfg, name)).st_mode), mode, name)
        self.assertEqual(read(cfg, "peerstore"), "")
        ident_txt = read(cfg, "identity.json")
        self.assertTrue(ident_txt.startswith('{\n    "id": "'), ident_txt)
        ident = json.loads(ident_txt)
        self.assertEqual(list(ident), ["id", "private_key"])
        self.assertRegex(ident["id"], PEER_ID_RE)
        self.assertTrue(ident["private_key"].startswith("CAESQ"))
        self.assertEqual(len(ident["private_key"]), 92)
        mod = load_double_module()
        raw = base64.b64decode(ident["private_key"])
        self.assertEqual(mod.peer_id_of(raw[36:]), ident["id"])
        svc_txt = read(cfg, "service.json")
        self.assertTrue(svc_txt.startswith('{\n  "cluster": {\n    "peername"'), svc_txt[:80])
        svc = json.loads(svc_txt)
        self.assertEqual(list(svc), ["cluster", "consensus", "api", "ipfs_connector", "pin_tracker",
                                     "monitor", "allocator", "informer", "observations", "datastore"])
        self.assertEqual(list(svc["consensus"]), ["crdt"])
        self.assertEqual(list(svc["datastore"]), ["pebble"])
        self.assertEqual(svc["cluster"]["secret"], SECRET)
        self.assertEqual(svc["cluster"]["listen_multiaddress"], "/ip4/127.0.0.2/tcp/%d" % p.cport)
        self.assertEqual(svc["cluster"]["monitor_ping_interval"], "1s")
        # raft + --peers: only the raft section; init_peerset filled; peerstore written
        q = Peer(self, "127.0.0.3")
        q.init("--consensus", "raft", "--peers", p.addr)
        svc = json.loads(read(q.cfg, "service.json"))
        self.assertEqual(list(svc["consensus"]), ["raft"])
        self.assertNotIn("datastore", svc)
        self.assertEqual(svc["consensus"]["raft"]["init_peerset"], [p.id])
        self.assertEqual(svc["consensus"]["raft"]["wait_for_leader_timeout"], "3s")
        self.assertEqual(read(q.cfg, "peerstore"), p.addr + "\n")
        # a --peers entry without /p2p/ => exit 1
        r = Peer(self, "127.0.0.4").run("init", "--peers", "/ip4/127.0.0.2/tcp/9096")
        self.assertEqual(r.returncode, 1)

    def test_init_without_force_changes_nothing(self):
        p = Peer(self, "127.0.0.2")
        p.init()
        files = {n: read(p.cfg, n, mode="rb") for n in ("service.json", "identity.json")}
        with open(os.path.join(p.cfg, "peerstore"), "w") as f:
            f.write("/ip4/127.0.0.3/tcp/1/p2p/%s\n" % p.id)
        r = p.run("init", "--consensus", "raft")  # stdin = /dev/null
        self.assertEqual(r.returncode, 0)
        self.assertIn("The configuration file will be overwritten. Continue? [y/n]:", r.stdout)
        for n, data in files.items():
            self.assertEqual(read(p.cfg, n, mode="rb"), data, n)
        self.assertNotEqual(read(p.cfg, "peerstore"), "")
        # -f overwrites service.json but keeps identity.json; peerstore truncated
        p.init("-f", "--consensus", "raft")
        self.assertEqual(read(p.cfg, "identity.json", mode="rb"), files["identity.json"])
        self.assertEqual(read(p.cfg, "peerstore"), "")

    # ------------------------------------------------------------------ crdt
    def test_crdt_founder_and_two_joiners(self):
        a, b, c = (Peer(self, "127.0.0.%d" % i) for i in (2, 3, 4))
        for p in (a, b, c):
            p.init()
        a.start()
        # the cluster port starts with 24 random bytes, like a libp2p pnet nonce
        with socket.create_connection((a.ip, a.cport), timeout=5) as s:
            s.settimeout(5)
            nonce = b""
            while len(nonce) < 24:
                nonce += s.recv(24 - len(nonce))
        self.assertEqual(len(nonce), 24)
        self.assertFalse(nonce.startswith(b"ipfs-cluster-bootstrap"))
        b.start("--bootstrap", a.addr)
        c.start("--bootstrap", " %s " % a.addr)
        for p in (a, b, c):
            self.wait(lambda: len(json.loads(p.get("/id")[1] or "{}").get("cluster_peers", [])) == 3,
                      msg="3 cluster_peers on " + p.ip)
        states = [p.state() for p in (a, b, c)]
        self.assertEqual(len({s["cluster_id"] for s in states}), 1, states)
        self.assertEqual([s["founded"] for s in states], [True, False, False])
        self.assertEqual([s["conflicts"] for s in states], [[], [], []])
        self.assertIn(a.id, states[1]["trusted_peers"])
        ident = json.loads(a.get("/id")[1])
        self.assertEqual(ident["addresses"], [a.addr])
        self.assertEqual(ident["version"], "1.1.6-double")
        code, body, _ = a.get("/peers")
        self.assertEqual(code, 200)
        self.assertEqual(sorted(json.loads(l)["id"] for l in body.splitlines()), sorted([a.id, b.id, c.id]))
        for p in (a, b, c):
            self.assertEqual(p.stop(), 0)
        lines = read(b.cfg, "peerstore").split()
        self.assertEqual(sorted(lines), sorted([a.addr, c.addr]))
        run = b.runs()[-1]
        self.assertEqual((run["consensus"], run["bootstrap"], run["founded"]), ("crdt", [a.addr], False))

    def test_secret_mismatch_prevents_join(self):
        a = Peer(self, "127.0.0.2")
        b = Peer(self, "127.0.0.3", secret="cd" * 32)
        a.init()
        b.init()
        a.start()
        b.start("--bootstrap", a.addr)
        self.wait(lambda: b.state().get("cluster_id"), msg="b cluster id")
        time.sleep(1.5)
        sa, sb = a.state(), b.state()
        self.assertTrue(sb["founded"])
        self.assertNotEqual(sa["cluster_id"], sb["cluster_id"])
        self.assertEqual(sa["peers"], [a.id])
        self.assertEqual(sb["peers"], [b.id])

    # ------------------------------------------------------------------ raft
    def test_raft_fixed_peerset(self):
        peers = [Peer(self, "127.0.0.%d" % i) for i in (2, 3, 4)]
        for p in peers:
            p.init("--consensus", "raft")
        ids = ",".join(p.id for p in peers)
        for p in peers:
            p.env["CLUSTER_RAFT_INITPEERSET"] = ids
            with open(os.path.join(p.cfg, "peerstore"), "w") as f:
                f.write("".join(q.addr + "\n" for q in peers if q is not p))
        for p in peers:
            p.start()
        for p in peers:
            self.wait(lambda: p.state().get("ready"), msg="raft ready on " + p.ip)
        states = [p.state() for p in peers]
        self.assertEqual(len({s["cluster_id"] for s in states}), 1)
        self.assertTrue(all(len(s["peers"]) == 3 and s["founded"] for s in states))
        for p in peers:
            self.assertEqual(p.stop(), 0)

    def test_raft_own_cluster_then_bootstrap_renames_state(self):
        a, b = Peer(self, "127.0.0.2"), Peer(self, "127.0.0.3")
        a.init("--consensus", "raft")
        b.init("--consensus", "raft")
        a.start()
        b.start()  # empty init_peerset: founds its own single-voter cluster
        for p in (a, b):
            self.wait(lambda: p.state().get("ready"), msg="ready " + p.ip)
        ca, cb = a.state()["cluster_id"], b.state()["cluster_id"]
        self.assertNotEqual(ca, cb)
        self.assertEqual(b.state()["peers"], [b.id])
        self.assertEqual(b.stop(), 0)
        self.assertTrue(os.path.isdir(os.path.join(b.cfg, "raft")))
        # restart with --bootstrap: raft -> raft.old.0, staging, joins a's cluster
        b.start("--bootstrap", a.addr)
        self.wait(lambda: b.state().get("ready"), msg="b joined")
        self.assertTrue(os.path.isdir(os.path.join(b.cfg, "raft.old.0")))
        self.assertEqual(b.state()["cluster_id"], ca)
        self.wait(lambda: sorted(a.state()["peers"]) == sorted([a.id, b.id]), msg="a sees b")
        run = b.runs()[-1]
        self.assertTrue(run["wiped_raft"])
        self.assertIsNone(run["cluster_id_at_start"])
        # restart without --bootstrap: loads state
        self.assertEqual(b.stop(), 0)
        b.start()
        self.wait(lambda: b.state().get("ready"), msg="b ready again")
        self.assertTrue(b.runs()[-1]["loaded_state"])
        self.assertIn("existing Raft state found! raft.InitPeerset will be ignored", b.output())

    def test_raft_staging_timeout(self):
        a = Peer(self, "127.0.0.2", extra_env={"CLUSTER_RAFT_WAITFORLEADERTIMEOUT": "1s"})
        a.init("--consensus", "raft")
        other = load_double_module().new_identity()["id"]  # nobody listens there
        dead = "/ip4/127.0.0.3/tcp/%d/p2p/%s" % (free_port("127.0.0.3"), other)
        start = time.time()
        a.start("--bootstrap", dead)
        a.proc.wait(20)
        self.assertIn("consensus start timed out", a.output())
        self.assertEqual(a.proc.returncode, 0)  # real: Shutdown(), then main exits 0
        self.assertLess(time.time() - start, 15)

    # ------------------------------------------------------------ misc rules
    def test_cli_like_urfave_v1(self):
        p = Peer(self, "127.0.0.2")
        r = p.run("--version")
        self.assertEqual((r.returncode, r.stdout), (0, "ipfs-cluster-service version 1.1.6-double\n"))
        r = p.run("daemon", "--no-such-flag")  # real: "Incorrect Usage", app.Run error ignored => 0
        self.assertEqual(r.returncode, 0)
        self.assertIn("flag provided but not defined: -no-such-flag", r.stdout)
        self.assertEqual(p.run("no-such-command").returncode, 1)
        self.assertEqual(p.run().returncode, 1)

    def test_basic_auth(self):
        p = Peer(self, "127.0.0.2", extra_env={"CLUSTER_RESTAPI_BASICAUTHCREDENTIALS": "user:pass"})
        p.init()
        p.start()
        self.assertEqual(p.get("/health")[0], 204)
        code, body, headers = p.get("/id")
        self.assertEqual(code, 401)
        self.assertIn('Basic realm="Restricted IPFS Cluster API"', str(headers))
        self.assertEqual(p.get("/id", auth="user:wrong")[0], 401)
        self.assertEqual(p.get("/_double/state")[0], 401)
        self.assertEqual(p.get("/id", auth="user:pass")[0], 200)

    def test_refusals(self):
        p = Peer(self, "127.0.0.2")
        p.init()
        # non-loopback listen address
        r = subprocess.run([DOUBLE, "daemon"], env=dict(p.env, CLUSTER_LISTENMULTIADDRESS="/ip4/0.0.0.0/tcp/%d"
                                                        % p.cport), capture_output=True, text=True, timeout=20)
        self.assertEqual(r.returncode, 1)
        self.assertIn("non-loopback", r.stderr)
        # execution lock held by a running daemon
        p.start()
        r = p.run("daemon")
        self.assertEqual(r.returncode, 1)
        self.assertIn("error obtaining execution lock", r.stderr)
        p.stop()
        # both consensus sections present
        svc = json.loads(read(p.cfg, "service.json"))
        svc["consensus"]["raft"] = {"init_peerset": []}
        with open(os.path.join(p.cfg, "service.json"), "w") as f:
            json.dump(svc, f)
        r = p.run("daemon")
        self.assertEqual(r.returncode, 1)
        self.assertIn("could not determine the consensus component", r.stderr)
        # missing config
        r = Peer(self, "127.0.0.3").run("daemon")
        self.assertEqual(r.returncode, 1)


if __name__ == "__main__":
    unittest.main()
