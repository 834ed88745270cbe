#!/usr/bin/env python3
"""The demo's body; scripts/demo.sh runs it inside one user+network namespace.

Three "tasks" on 127.0.0.2, .3 and .4, run as the shipped task definition
runs them, on one state root (a folder here; EFS on ECS) that they share:
- the kubo container: `ipfs-cluster-bootstrap slot -- start_ipfs daemon
  --migrate=true --agent-version-suffix=docker` takes a free slot, writes it to
  the task's slot file (a folder only this task's two containers share) and
  execs kubo's start script on the slot's repo; the start script is
  tests/real/kubo_start.py, the stand-in with the offline settings;
- the cluster container: ipfs-cluster-bootstrap waits for the slot file,
  takes the slot's peer.lock, registers in Cloud Map (moto's server on
  127.0.0.1:5000), decides and execs the real `ipfs-cluster-service daemon`
  with IPFS_CLUSTER_PATH set to the slot's folder.
Every listener is on the task's own address and the standard ports. Then:
each peer's decision, `ipfs-cluster-ctl peers ls` on each, an `add` on the
first task, the file fetched back from the last task's gateway, genesis.json
(who founded the cluster). Then a replacement, as ECS replaces a task: task2
is stopped (SIGTERM) and task4 starts on 127.0.0.5 with the same commands; it
takes task2's slot and comes back as task2's peer (same peer ID, decision
"start" on its state), the cluster still has the same 3 peer IDs, and task4's
gateway serves the file added before.

  demo.py crdt|raft     (env: ICB_BINARY, ICB_DAEMONS: the binaries to run)

It refuses to run outside a network namespace that has nothing but `lo`:
ipfs-cluster sends UPnP/SSDP multicast and a NAT-PMP query whenever it starts.
"""
import json, os, secrets, shutil, signal, socket, subprocess, sys, tempfile, time, traceback, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "real"))
from bed import CLUSTER_BED_ENV, json_stream  # noqa: E402  (the test bed's settings)

CONSENSUS = sys.argv[1] if len(sys.argv) > 1 else "crdt"
TASKS = [("task%d" % n, "127.0.0.%d" % (n + 1)) for n in (1, 2, 3)]
REPLACEMENT = ("task4", "127.0.0.5")  # replaces task2
KUBO_START = os.path.join(ROOT, "tests", "real", "kubo_start.py")  # the stand-in for start_ipfs
MOTO = ("127.0.0.1", 5000)
T0 = time.time()
URL = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never a proxy
NAMES = {}  # peer ID -> task name, for printing


class Failed(Exception):
    pass


def say(msg=""):
    print("[%5.1fs] %s" % (time.time() - T0, msg) if msg else "", flush=True)


def short(text):
    for pid, name in NAMES.items():
        text = text.replace(pid, "<%s>" % name)
    return text


def wait_for(what, fn, timeout, interval=0.5):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            last = fn()
            if last:
                return last
        except Failed:
            raise
        except Exception as e:  # noqa: BLE001 (not ready yet)
            last = e
        time.sleep(interval)
    raise Failed("timed out after %d s waiting for %s (last: %s)" % (timeout, what, last))


def only_loopback():
    """Why this process's network namespace is not safe for the daemons, or None."""
    with open("/proc/self/net/dev") as f:
        ifaces = {line.split(":")[0].strip() for line in f.readlines()[2:]}
    if ifaces != {"lo"}:
        return "interfaces %s besides lo" % sorted(ifaces - {"lo"})
    with open("/proc/self/net/route") as f:
        if len(f.readlines()) > 1:
            return "it has IPv4 routes"
    if "UP" not in subprocess.run(["ip", "-o", "link", "show", "lo"], capture_output=True, text=True).stdout:
        return "lo is down"
    return None


class Task:
    """One ECS task: its two containers share its network (here: its own address) and a task volume
    (DIR/task: the slot file); both mount the state root."""

    def __init__(self, work, bindir, state_root, name, ip):
        self.name, self.ip, self.dir = name, ip, os.path.join(work, name)
        self.state_root = state_root
        self.slot_file = os.path.join(self.dir, "task", "slot.json")
        os.makedirs(os.path.dirname(self.slot_file))
        self.path = "%s:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin" % bindir
        self.kubo = self.cluster = self.slot = self.ipfs_path = self.cluster_path = None

    def spawn(self, argv, env, log):
        with open(os.path.join(self.dir, log), "wb") as out:
            return subprocess.Popen(argv, env=env, cwd=self.dir, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)

    def start_kubo(self, binary):
        """The kubo container, as the shipped kubo image runs it: `ipfs-cluster-bootstrap slot` takes a free
        slot of the state root, writes the slot file and execs the start script on the slot's repo."""
        env = {"PATH": self.path, "HOME": self.dir, "IPFS_TELEMETRY": "off", "KUBO_START_IP": self.ip,
               "BOOTSTRAP_STATE_ROOT": self.state_root, "BOOTSTRAP_SLOT_FILE": self.slot_file,
               "BOOTSTRAP_EXPECT": "3", "BOOTSTRAP_LOG_FORMAT": "json"}
        self.kubo = self.spawn([binary, "slot", "--", sys.executable, KUBO_START, "daemon", "--migrate=true",
                                "--agent-version-suffix=docker"], env, "kubo.log")

    def slot_taken(self):
        if self.kubo.poll() is not None:
            raise Failed("%s's kubo container exited %s (%s/kubo.log)" % (self.name, self.kubo.returncode, self.dir))
        try:
            with open(self.slot_file) as f:
                self.slot = json.load(f)["slot"]
        except (OSError, ValueError):
            return False
        slot = os.path.join(self.state_root, "slots", str(self.slot))
        self.ipfs_path, self.cluster_path = os.path.join(slot, "ipfs"), os.path.join(slot, "cluster")
        return True

    def kubo_up(self):
        if self.kubo.poll() is not None:
            raise Failed("%s's kubo exited %s (%s/kubo.log)" % (self.name, self.kubo.returncode, self.dir))
        req = urllib.request.Request("http://%s:5001/api/v0/id" % self.ip, method="POST")
        return json.load(URL.open(req, timeout=2))["ID"]

    def start_cluster(self, binary, secret):
        # IPFS_CLUSTER_PATH as the official image sets it (/data/ipfs-cluster): with a state root the
        # daemon runs in the slot's folder instead, and this one stays empty.
        env = dict(CLUSTER_BED_ENV, PATH=self.path, HOME=self.dir, IPFS_CLUSTER_PATH=os.path.join(self.dir, "cluster"),
                   IPFS_CLUSTER_CONSENSUS=CONSENSUS, CLUSTER_SECRET=secret, CLUSTER_PEERNAME=self.name,
                   CLUSTER_CRDT_TRUSTEDPEERS="*")
        for var, port in [("CLUSTER_LISTENMULTIADDRESS", 9096), ("CLUSTER_RESTAPI_HTTPLISTENMULTIADDRESS", 9094),
                          ("CLUSTER_IPFSPROXY_LISTENMULTIADDRESS", 9095), ("CLUSTER_IPFSPROXY_NODEMULTIADDRESS", 5001),
                          ("CLUSTER_PINSVCAPI_HTTPLISTENMULTIADDRESS", 9097),
                          ("CLUSTER_IPFSHTTP_NODEMULTIADDRESS", 5001)]:
            env[var] = "/ip4/%s/tcp/%d" % (self.ip, port)
        env.update({
            "AWS_ENDPOINT_URL": "http://%s:%d" % MOTO, "AWS_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "demo",
            "AWS_SECRET_ACCESS_KEY": "demo", "AWS_EC2_METADATA_DISABLED": "true",
            "BOOTSTRAP_DISCOVERY": "cloudmap", "BOOTSTRAP_CLOUDMAP_NAMESPACE": "ipfs-demo",
            "BOOTSTRAP_CLOUDMAP_SERVICE": "cluster-peers", "BOOTSTRAP_EXPECT": "3", "BOOTSTRAP_SETTLE": "2s",
            "BOOTSTRAP_TIMEOUT": "120s", "BOOTSTRAP_ADVERTISE_IP": self.ip, "BOOTSTRAP_LOOPBACK_ONLY": "true",
            "BOOTSTRAP_RUN_AS": "none",  # root here is only the namespace's root: stay this user
            "BOOTSTRAP_LOG_FORMAT": "json", "BOOTSTRAP_LOG_LEVEL": "info,aws=warn",
            "BOOTSTRAP_STATE_ROOT": self.state_root, "BOOTSTRAP_SLOT_FILE": self.slot_file,
        })
        self.cluster = self.spawn([binary], env, "cluster.log")

    def log(self, name="cluster.log"):
        with open(os.path.join(self.dir, name), "rb") as f:
            return f.read()

    def decision(self):
        for line in self.log().splitlines():
            if line.startswith(b"{") and b'"event":"decision"' in line:
                ev = json.loads(line)
                ev["record"] = json.loads(ev["record"])
                return ev
        if self.cluster.poll() is not None:
            raise Failed("%s's ipfs-cluster-bootstrap exited %s before deciding (%s/cluster.log)"
                         % (self.name, self.cluster.returncode, self.dir))
        return None

    def ctl(self, *args, timeout=30):
        p = subprocess.run(["ipfs-cluster-ctl", "--host", "/ip4/%s/tcp/9094" % self.ip, "--enc=json",
                            "--timeout", str(timeout)] + list(args), env={"PATH": self.path, "HOME": self.dir},
                           capture_output=True, text=True, timeout=timeout + 15)
        if p.returncode != 0:
            raise RuntimeError("ipfs-cluster-ctl %s on %s: %s" % (" ".join(args), self.name, p.stderr.strip()))
        return json_stream(p.stdout)

    def stop(self):
        for p in (self.cluster, self.kubo):  # the cluster peer first: it needs its kubo to stop cleanly
            if p is not None and p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)  # the group: the daemon and its slot lock's watchdog
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()


def start_moto(work):
    out = open(os.path.join(work, "moto.log"), "wb")
    moto = subprocess.Popen([os.path.join(ROOT, ".venv", "bin", "moto_server"), "-H", MOTO[0], "-p", str(MOTO[1])],
                            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    wait_for("moto_server", lambda: socket.create_connection(MOTO, 0.2).close() or True, 30, 0.1)
    import boto3, botocore.config
    # inject_host_prefix off: DiscoverInstances would otherwise ask for a "data-…" host name.
    sd = boto3.client("servicediscovery", region_name="us-east-1", endpoint_url="http://%s:%d" % MOTO,
                      aws_access_key_id="demo", aws_secret_access_key="demo",
                      config=botocore.config.Config(inject_host_prefix=False))
    op = sd.create_http_namespace(Name="ipfs-demo")["OperationId"]
    ns = sd.get_operation(OperationId=op)["Operation"]["Targets"]["NAMESPACE"]
    sd.create_service(Name="cluster-peers", NamespaceId=ns)
    return moto


def peers_agree(tasks, ids, answered=None):
    """Every task's `peers ls` (kept in t.peers) lists exactly `ids`, with no
    error; `answered` = (peer ID, peer name): that ID answers with that name."""
    for t in tasks:
        if t.cluster.poll() is not None:
            raise Failed("%s's daemon exited %s (%s/cluster.log)" % (t.name, t.cluster.returncode, t.dir))
        t.peers = t.ctl("peers", "ls", timeout=20)
        if sorted(p["id"] for p in t.peers if not p.get("error")) != ids:
            return False
        if answered and [p["peername"] for p in t.peers if p["id"] == answered[0]] != [answered[1]]:
            return False
    return True


def demo(work, state_root, tasks, binary, bindir):
    say("moto's server on %s:%d: Cloud Map namespace ipfs-demo, service cluster-peers" % MOTO)
    say("state root (EFS on ECS): %s, shared by the tasks" % state_root)
    for t in tasks:
        t.start_kubo(binary)
    for t in tasks:
        wait_for("%s's slot file" % t.name, t.slot_taken, 60, 0.2)
    for t in tasks:
        t.kubo_id = wait_for("%s's kubo" % t.name, t.kubo_up, 60, 0.2)
        NAMES[t.kubo_id] = t.name + "'s kubo"
    say("3 kubo containers at once, each `ipfs-cluster-bootstrap slot -- start_ipfs daemon ...`; slots taken: %s"
        % ", ".join("%s slot %d" % (t.name, t.slot) for t in tasks))
    say("kubo v0.43.0 up on %s, each on its slot's repo (API :5001, gateway :8080, swarm :4001; offline settings)"
        % ", ".join(t.ip for t in tasks))

    secret = secrets.token_hex(32)
    for t in tasks:
        t.start_cluster(binary, secret)
    say("started 3 ipfs-cluster-bootstrap at once: Cloud Map, --expect 3, %s; each reads its task's slot file, "
        "takes the slot's peer.lock and execs ipfs-cluster-service v1.1.6 in the slot's folder" % CONSENSUS)
    for t in tasks:
        ev = wait_for("%s's decision" % t.name, t.decision, 150, 0.2)
        NAMES[ev["record"]["facts"]["me"]["peer_id"]] = t.name
        t.ev = ev
    for t in tasks:
        ev = t.ev
        say("%s %s  decision %-5s %s" % (t.name, t.ip, ev["action"].upper(), short(ev["reason"])))
        argv = ev["record"]["daemon_argv"]
        say("%s exec: %s" % (" " * 19, short(" ".join([os.path.basename(argv[0])] + argv[1:]))))

    if CONSENSUS == "raft":
        sets = {}
        for t in tasks:
            conf = json.load(open(os.path.join(t.cluster_path, "service.json")))
            sets[t.name] = conf["consensus"]["raft"]["init_peerset"]
        for name, s in sets.items():
            say("%s service.json raft.init_peerset: [%s]" % (name, ", ".join(short(p) for p in s)))
        if any(sorted(s) != sorted(sets["task1"]) for s in sets.values()):
            raise Failed("the tasks' init_peerset differ")

    ids = sorted(t.ev["record"]["facts"]["me"]["peer_id"] for t in tasks)

    wait_for("one cluster of the 3 peers (ipfs-cluster-ctl peers ls on each)",
             lambda: peers_agree(tasks, ids), 150, 1)
    for t in tasks:
        say("%s$ ipfs-cluster-ctl peers ls:  %s" % (t.name, ";  ".join(
            "%s sees %d other peers" % (p["peername"], len(p["cluster_peers"]) - 1)
            for p in sorted(t.peers, key=lambda p: p["peername"]))))
    if CONSENSUS == "raft":
        def leaders():
            out = {}
            for t in tasks:
                for line in t.log().splitlines():
                    if b"Current Raft Leader: " in line:
                        out[t.name] = line.rsplit(b"Current Raft Leader: ", 1)[1].strip().decode()
            return out if len(out) == len(tasks) else None
        named = wait_for("every raft peer to log its leader", leaders, 30)
        say("raft leader, as each daemon logged it: %s"
            % short(", ".join("%s: %s" % kv for kv in sorted(named.items()))))
        if len(set(named.values())) != 1:
            raise Failed("the peers name different leaders")

    data = b"ipfs-cluster-bootstrap demo, %s, %s\n" % (CONSENSUS.encode(), time.ctime().encode()) + \
        secrets.token_bytes(256 * 1024)
    src = os.path.join(work, "demo-file")
    with open(src, "wb") as f:
        f.write(data)
    first, last = tasks[0], tasks[-1]
    added = wait_for("ipfs-cluster-ctl add", lambda: first.ctl("add", "--wait", "--wait-timeout", "60s", src,
                                                               timeout=90), 120, 2)
    cid = added[-1]["cid"]
    say("%s$ ipfs-cluster-ctl add --wait demo-file (%d bytes) -> %s" % (first.name, len(data), cid))
    status = first.ctl("status", cid)[0]["peer_map"]
    say("%s$ ipfs-cluster-ctl status: %s" % (first.name, short(", ".join(
        "%s %s" % (v["peername"], v["status"]) for v in sorted(status.values(), key=lambda v: v["peername"])))))
    url = "http://%s:8080/ipfs/%s" % (last.ip, cid)
    got = wait_for(url, lambda: URL.open(url, timeout=30).read(), 60, 1)
    same = got == data
    say("GET %s: %d bytes, %s" % (url, len(got), "identical to the file added" if same else "DIFFERENT"))
    if not same:
        raise Failed("the gateway returned other bytes")

    genesis(state_root)
    replace(tasks, tasks[1], Task(work, bindir, state_root, *REPLACEMENT), binary, secret, ids, cid, data)
    return cid


def genesis(state_root):
    """genesis.json: written once, by the founder, before it founded; every later start reads it."""
    with open(os.path.join(state_root, "genesis.json")) as f:
        g = json.load(f)
    say("genesis.json (written once, before the founding): id %s, %s cluster founded by %s at %s, founders [%s]"
        % (g["id"], g["consensus"], short(g["founded_by"]), g["founded_at"], short(", ".join(g["founders"]))))


def replace(tasks, old, new, binary, secret, ids, cid, data):
    """As ECS replaces a task: the old one stops, a new one starts elsewhere with the same task definition."""
    old.stop()
    say("replace %s: SIGTERM to its two containers; slot %d's locks go with them" % (old.name, old.slot))
    tasks.append(new)
    new.start_kubo(binary)
    wait_for("%s's slot file" % new.name, new.slot_taken, 60, 0.2)
    new.kubo_id = wait_for("%s's kubo" % new.name, new.kubo_up, 60, 0.2)
    with open(new.slot_file) as f:
        slot_json = f.read().strip().replace(os.path.dirname(new.state_root), "...")
    say("%s %s  kubo container took slot %d, %s's (%s/task/slot.json: %s); kubo's peer ID is %s's"
        % (new.name, new.ip, new.slot, old.name, new.name, slot_json,
           old.name if new.kubo_id == old.kubo_id else "NEW"))
    if new.slot != old.slot or new.kubo_id != old.kubo_id:
        raise Failed("%s did not take %s's slot and kubo repo" % (new.name, old.name))
    new.start_cluster(binary, secret)
    ev = wait_for("%s's decision" % new.name, new.decision, 150, 0.2)
    me = ev["record"]["facts"]["me"]
    say("%s %s  decision %-5s %s" % (new.name, new.ip, ev["action"].upper(), short(ev["reason"])))
    argv = ev["record"]["daemon_argv"]
    say("%s exec: %s" % (" " * 19, short(" ".join([os.path.basename(argv[0])] + argv[1:]))))
    old_id = old.ev["record"]["facts"]["me"]["peer_id"]
    say("%s's peer ID: %s, %s's" % (new.name, me["peer_id"], old.name if me["peer_id"] == old_id else "NOT"))
    if ev["action"] != "start" or not me["has_state"] or me["peer_id"] != old_id:
        raise Failed("%s did not start on %s's state as its peer" % (new.name, old.name))
    live = [t for t in tasks if t is not old]

    # The answer for that ID comes from the new daemon (its peer name), not from a cache.
    wait_for("the same 3 peer IDs on %s (peers ls)" % ", ".join(t.name for t in live),
             lambda: peers_agree(live, ids, answered=(old_id, new.name)), 150, 1)
    say("%s$ ipfs-cluster-ctl peers ls:  %s" % (new.name, ";  ".join(
        "%s%s sees %d other peers" % (p["peername"], "" if NAMES.get(p["id"]) == p["peername"] else
                                      " (%s's peer ID)" % short(p["id"]), len(p["cluster_peers"]) - 1)
        for p in sorted(new.peers, key=lambda p: p["peername"]))))
    say("peers ls on %s: the same 3 peer IDs as before; %s's is answered by %s"
        % (", ".join(t.name for t in live), old.name, new.name))
    url = "http://%s:8080/ipfs/%s" % (new.ip, cid)
    got = wait_for(url, lambda: URL.open(url, timeout=30).read(), 60, 1)
    same = got == data
    say("GET %s: %d bytes, %s" % (url, len(got), "identical to the file added (its blocks came with the slot)"
                                  if same else "DIFFERENT"))
    if not same:
        raise Failed("the gateway returned other bytes")


def interrupted(*_):
    raise KeyboardInterrupt


def main():
    signal.signal(signal.SIGTERM, interrupted)  # PID 1 of the namespace ignores it otherwise
    why = only_loopback()
    if why:
        sys.exit("demo.py: refusing to start the daemons: this network namespace is not an empty one (%s); "
                 "run scripts/demo.sh" % why)
    binary, daemons = os.environ["ICB_BINARY"], os.environ["ICB_DAEMONS"]
    work = tempfile.mkdtemp(prefix="icb-demo-%s-" % CONSENSUS)
    os.chmod(work, 0o755)
    bindir = os.path.join(work, "bin")
    os.makedirs(bindir)
    # Copies, so that a rebuild of target/debug meanwhile changes nothing here.
    for src in [binary] + [os.path.join(daemons, n) for n in ("ipfs", "ipfs-cluster-service", "ipfs-cluster-ctl")]:
        dst = os.path.join(bindir, os.path.basename(src))
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)
    binary = os.path.join(bindir, os.path.basename(binary))
    state_root = os.path.join(work, "state")  # EFS on ECS: one file system for every task of the service
    os.makedirs(state_root)
    tasks = [Task(work, bindir, state_root, name, ip) for name, ip in TASKS]
    moto, ok, why = None, False, "FAILED (see above)"
    try:
        moto = start_moto(work)
        cid = demo(work, state_root, tasks, binary, bindir)
        ok = True
    except (Failed, subprocess.CalledProcessError, OSError) as e:
        say("FAILED: %s" % e)
    except Exception:  # noqa: BLE001 (a bug here: show it, still stop everything and keep the logs)
        say("FAILED:\n" + traceback.format_exc())
    except KeyboardInterrupt:
        why = "INTERRUPTED"
        say("interrupted")
    finally:
        say("stopping the daemons, kubo and moto")
        for t in tasks:
            t.stop()
        if moto:
            moto.terminate()
            moto.wait()
        say("stopped")
    print()
    if ok:
        print("RESULT: one %s cluster of 3 peers on one state root, formed through Cloud Map by "
              "ipfs-cluster-bootstrap; %s added on task1 came back byte for byte from task3's gateway; task4 "
              "replaced task2 in its slot, as the same peer, and served it too." % (CONSENSUS, cid))
        shutil.rmtree(bindir, ignore_errors=True)
        # Keep the logs, genesis.json and the daemons' config; drop their data (70 MB a slot).
        for slot in os.listdir(os.path.join(state_root, "slots")):
            slot = os.path.join(state_root, "slots", slot)
            shutil.rmtree(os.path.join(slot, "ipfs"), ignore_errors=True)
            shutil.rmtree(os.path.join(slot, "cluster", "pebble"), ignore_errors=True)
    else:
        print("RESULT: %s." % why)
    print("Logs: %s/task{1,2,3,4}/{cluster,kubo}.log, %s/moto.log; state root: %s" % (work, work, state_root))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
