"""The real test bed: each ECS task is a Linux network namespace of its own.

A `Net` is a bridge in the root namespace with the private subnet
10.77.X.0/24 (X picked free per run); the root namespace's end of it is
10.77.X.254, where moto, the task-metadata and DNS doubles and nginx listen.
A `Task` is a namespace with one veth on that bridge (10.77.X.K), `lo`, and
nothing else: no default route, IPv6 off, and an nftables output chain that
accepts loopback and the test subnet and counts and drops everything else.
In it run the real kubo (`ipfs daemon`) and ipfs-cluster-bootstrap, which
execs the real `ipfs-cluster-service daemon`, on the standard ports (4001,
5001, 8080, 9094, 9096), listening as the shipped containers do.

NETWORK RULE: nothing here sends a packet outside 127.0.0.0/8 and the bed's
subnet. `ip_ok()` refuses any other address; a namespace that has a default
route is refused; `Net.leaks()` reads the drop rules' counters, which a test
checks at teardown (SSDP multicast, which ipfs-cluster always sends at start,
is counted apart and allowed: it is dropped before it leaves).
"""
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VENV = os.path.join(ROOT, ".venv", "bin")
SECRET = "1f3b5d7f9a0c2e4f6a8b0d1e3f5a7c9e0b2d4f6a8c0e1f3a5b7d9e0f2a4c6e8b"
KUBO_PORTS = {"swarm": 4001, "api": 5001, "gateway": 8080}
CLUSTER_API, CLUSTER_PORT = 9094, 9096
EMPTY_DIR_CID = "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn"  # pinned by `ipfs init`
KUBO_START = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kubo_start.py")


class BedError(RuntimeError):
    pass


def log(msg):
    print(time.strftime("%H:%M:%S ") + msg, flush=True)


def sh(*argv, check=True, ns=None, input=None, timeout=60, env=None):
    """Runs argv (never through a shell), in namespace ns if given."""
    if ns:
        argv = ("ip", "netns", "exec", ns) + tuple(argv)
    p = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout, env=env)
    if check and p.returncode != 0:
        raise BedError("%s: exit %d: %s" % (" ".join(argv), p.returncode, p.stderr.strip()))
    return p


def daemons_dir():
    """The folder with ipfs-cluster-service, ipfs-cluster-ctl and ipfs (scripts/build-daemons.sh)."""
    out = sh(os.path.join(ROOT, "scripts", "build-daemons.sh"), timeout=3600).stdout.strip().splitlines()
    return out[-1]


def binary():
    """The ipfs-cluster-bootstrap under test (BED_BINARY, else the debug build)."""
    b = os.environ.get("BED_BINARY") or os.path.join(ROOT, "target", "debug", "ipfs-cluster-bootstrap")
    if not os.access(b, os.X_OK):
        raise BedError("%s is missing: run `cargo build` first" % b)
    return b


def can_make_namespaces():
    """None when this machine can run the bed, else why not."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "nft"):
        if not shutil.which(tool):
            return "%s is not installed (Debian packages iproute2, nftables)" % tool
    return None


class Net:
    """The test subnet: a bridge in the root namespace and the tasks on it."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.tasks = []
        self.tag = "icb%d" % os.getpid()
        cleanup_stale()
        for x in range(1, 250):
            self.bridge = "icbbr%d" % x
            if sh("ip", "link", "add", self.bridge, "type", "bridge", check=False).returncode == 0:
                break
        else:
            raise BedError("no free bridge name icbbr1..249")
        self.x = x
        self.subnet = ipaddress.ip_network("10.77.%d.0/24" % x)
        self.gw = "10.77.%d.254" % x  # the root namespace's address on the bridge
        _no_ipv6(self.bridge)
        sh("ip", "addr", "add", self.gw + "/24", "dev", self.bridge)
        sh("ip", "link", "set", self.bridge, "up")
        # Marks the bridge as ours with the owner's pid, for cleanup_stale().
        with open(os.path.join(_state_dir(), self.bridge), "w") as f:
            f.write(str(os.getpid()))
        # Every task resolves names through this server (its /etc/resolv.conf),
        # which answers the names a test sets and NXDOMAIN for any other: no
        # lookup ever leaves the bed. /etc/hosts entries: `hosts`.
        self.hosts = {}
        try:
            self.dns = NameServer(self, port=53)
        except Exception:
            self.close()
            raise

    def ip_ok(self, ip):
        """ip, or an exception unless it is loopback or in the test subnet."""
        a = ipaddress.ip_address(ip)
        if a.is_loopback or a in self.subnet:
            return ip
        raise BedError("the bed refuses %s: outside 127.0.0.0/8 and %s" % (ip, self.subnet))

    def task(self, k, name=None):
        t = Task(self, k, name or "task%d" % k)
        self.tasks.append(t)
        return t

    def leaks(self):
        """{task: {"ssdp": packets, "other": packets}} from every namespace's drop rules."""
        return {t.name: t.dropped() for t in self.tasks if t.exists}

    def close(self):
        for t in self.tasks:
            t.destroy()
        if getattr(self, "dns", None):
            self.dns.close()
        sh("ip", "link", "del", self.bridge, check=False)
        try:
            os.unlink(os.path.join(_state_dir(), self.bridge))
        except OSError:
            pass


def _state_dir():
    d = "/run/icb-bed"
    os.makedirs(d, exist_ok=True)
    return d


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def cleanup_stale():
    """Removes bridges and namespaces left by runs whose process is gone."""
    d = _state_dir()
    for name in os.listdir(d):
        try:
            pid = int(open(os.path.join(d, name)).read().strip() or 0)
        except (OSError, ValueError):
            pid = 0
        if pid and _pid_alive(pid):
            continue
        if name.startswith("icbbr"):
            sh("ip", "link", "del", name, check=False)
        else:
            for pid in sh("ip", "netns", "pids", name, check=False).stdout.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            sh("ip", "netns", "del", name, check=False)
            shutil.rmtree(os.path.join("/etc/netns", name), ignore_errors=True)
        os.unlink(os.path.join(d, name))


def _no_ipv6(ifname, ns=None):
    # No IPv6 at all: no ND, MLD or router solicitations leave the namespace.
    sh("sysctl", "-qw", "net.ipv6.conf.%s.disable_ipv6=1" % ifname, ns=ns, check=False)


NFT_RULES = """table inet icb {
  chain out {
    type filter hook output priority 0; policy accept;
    oifname "lo" accept
    ip daddr %(subnet)s accept
    ip daddr 239.255.255.250 udp dport 1900 counter drop comment "ssdp"
    ip protocol igmp counter drop comment "igmp"
    ip daddr 224.0.0.0/4 counter drop comment "multicast"
    meta nfproto ipv6 counter drop comment "ipv6"
    counter drop comment "other"
  }
}
"""


class Task:
    """One ECS task: a namespace with its own address, kubo and the cluster container."""

    def __init__(self, net, k, name):
        if not 1 <= k <= 250:
            raise BedError("task index %d out of 1..250" % k)
        self.net, self.k, self.name = net, k, name
        self.ip = net.ip_ok("10.77.%d.%d" % (net.x, k))
        self.ns = "%s-%s" % (net.tag, name)
        self.dir = os.path.join(net.workdir, name)
        self.ipfs_path = os.path.join(self.dir, "ipfs")
        self.cluster_path = os.path.join(self.dir, "cluster")
        self.kubo = self.cluster = None
        self.exists = False
        self.runs = {}
        os.makedirs(self.dir, exist_ok=True)
        os.chmod(self.dir, 0o755)
        self.create()

    # ------------------------------------------------------------ the host
    def create(self):
        ns, veth = self.ns, "icb%dt%d" % (self.net.x, self.k)
        # `ip netns exec` bind-mounts /etc/netns/<ns>/* over /etc/*.
        self.etc = os.path.join("/etc/netns", ns)
        os.makedirs(self.etc, exist_ok=True)
        with open(os.path.join(self.etc, "resolv.conf"), "w") as f:
            f.write("nameserver %s\noptions attempts:1 timeout:1\n" % self.net.gw)
        self.write_hosts()
        sh("ip", "netns", "add", ns)
        with open(os.path.join(_state_dir(), ns), "w") as f:
            f.write(str(os.getpid()))
        self.exists = True
        sh("sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1", ns=ns)
        sh("ip", "link", "add", veth, "type", "veth", "peer", "name", veth + "n")
        _no_ipv6(veth)
        sh("ip", "link", "set", veth + "n", "netns", ns)
        sh("ip", "-n", ns, "link", "set", veth + "n", "name", "eth0")
        sh("ip", "-n", ns, "addr", "add", self.ip + "/24", "dev", "eth0")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "link", "set", veth, "master", self.net.bridge, "up")
        sh("nft", "-f", "-", ns=ns, input=NFT_RULES % {"subnet": self.net.subnet})
        routes = sh("ip", "-n", ns, "-4", "route", "show").stdout.strip().splitlines()
        for r in routes:
            dst = r.split()[0]
            if dst == "default" or ipaddress.ip_network(dst, strict=False) != self.net.subnet:
                self.destroy()
                raise BedError("namespace %s has a route beyond the test subnet: %s" % (ns, r))

    def write_hosts(self):
        lines = ["127.0.0.1 localhost", "%s %s" % (self.ip, self.name)]
        lines += ["%s %s" % (ip, name) for name, ip in sorted(self.net.hosts.items()) if name != self.name]
        with open(os.path.join(self.etc, "hosts"), "w") as f:
            f.write("\n".join(lines) + "\n")

    def dropped(self):
        out = json.loads(sh("nft", "-j", "list", "chain", "inet", "icb", "out", ns=self.ns).stdout)
        counts = {}
        for item in out["nftables"]:
            rule = item.get("rule")
            if not rule or "comment" not in rule:
                continue
            for e in rule["expr"]:
                if "counter" in e:
                    counts[rule["comment"]] = e["counter"]["packets"]
        return counts

    def link(self, up):
        """Cuts the task off the subnet (a partition) or brings it back."""
        sh("ip", "-n", self.ns, "link", "set", "eth0", "up" if up else "down")
        if up:
            sh("ip", "-n", self.ns, "addr", "replace", self.ip + "/24", "dev", "eth0")

    def block_port(self, port):
        """Drops this task's outgoing TCP to `port` on the subnet (a partition of one service)."""
        sh("nft", "-f", "-", ns=self.ns, input="table inet icbcut { chain out { type filter hook output "
           "priority -1; policy accept; ip daddr %s tcp dport %d drop; }; }\n" % (self.net.subnet, port))

    def unblock(self):
        sh("nft", "delete", "table", "inet", "icbcut", ns=self.ns)

    def log_has(self, logname, needle):
        path = os.path.join(self.dir, "%s.%d.log" % (logname, self.runs_of(logname)))
        with open(path, "rb") as f:
            return needle.encode() in f.read()

    def destroy(self):
        self.stop_all(kill=True)
        if self.exists:
            # Everything still in the namespace (a child that left our process
            # group, as tini's child does) dies with it.
            for _ in range(3):
                pids = sh("ip", "netns", "pids", self.ns, check=False).stdout.split()
                if not pids:
                    break
                for pid in pids:
                    try:
                        os.kill(int(pid), signal.SIGKILL)
                    except (ProcessLookupError, ValueError):
                        pass
                time.sleep(0.2)
            sh("ip", "netns", "del", self.ns, check=False)
            veth = "icb%dt%d" % (self.net.x, self.k)
            sh("ip", "link", "del", veth, check=False)
            shutil.rmtree(self.etc, ignore_errors=True)
            try:
                os.unlink(os.path.join(_state_dir(), self.ns))
            except OSError:
                pass
            self.exists = False

    # ------------------------------------------------------------ processes
    def spawn(self, argv, env, logname):
        """Starts argv in this task's namespace (never through a shell)."""
        self.runs[logname] = self.runs.get(logname, 0) + 1
        out = open(os.path.join(self.dir, "%s.%d.log" % (logname, self.runs[logname])), "wb")
        p = subprocess.Popen(("ip", "netns", "exec", self.ns) + tuple(argv), env=env, cwd=self.dir,
                             stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                             start_new_session=True)
        p.logpath = out.name
        out.close()
        return p

    def runs_of(self, logname):
        return self.runs.get(logname, 0)

    def stop_all(self, kill=False):
        for attr in ("cluster", "kubo"):
            p = getattr(self, attr)
            if p is not None:
                stop(p, kill=kill)
                setattr(self, attr, None)


def stop(p, kill=False, timeout=30):
    """SIGTERM (or SIGKILL) to the process group, then wait; returns the exit code."""
    if p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGKILL if kill else signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(10)
    return p.returncode


def wait_for(what, fn, timeout, interval=0.5):
    """fn() until it returns a true value; raises naming `what` after timeout."""
    deadline = time.time() + timeout
    last = None
    while True:
        try:
            last = fn()
            if last:
                return last
        except Exception as e:  # noqa: BLE001 (a probe that fails is just not ready yet)
            last = e
        if time.time() > deadline:
            raise BedError("timed out after %.0f s waiting for %s (last: %r)" % (timeout, what, last))
        time.sleep(interval)


def http(method, url, data=None, timeout=5, headers=None):
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.status, r.read()


def free_port(ip):
    with socket.socket() as s:
        s.bind((ip, 0))
        return s.getsockname()[1]


def json_stream(text):
    """The objects of ipfs-cluster-ctl --enc=json output (a stream, not an array)."""
    dec, i, out = json.JSONDecoder(), 0, []
    text = text.strip()
    while i < len(text):
        obj, j = dec.raw_decode(text, i)
        out.append(obj)
        i = j
        while i < len(text) and text[i].isspace():
            i += 1
    return out


class Moto:
    """moto's server in the root namespace, on the bridge's address."""

    def __init__(self, net):
        self.net = net
        self.host = net.gw
        self.port = free_port(self.host)
        self.endpoint = "http://%s:%d" % (self.host, self.port)
        self.logf = open(os.path.join(net.workdir, "moto.log"), "wb")
        self.proc = subprocess.Popen([os.path.join(VENV, "moto_server"), "-H", self.host, "-p", str(self.port)],
                                     stdout=self.logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        wait_for("moto_server", lambda: socket.create_connection((self.host, self.port), 0.2).close() or True, 30,
                 interval=0.1)
        import boto3
        import botocore.config

        # inject_host_prefix off: DiscoverInstances would otherwise look up a
        # "data-" host name, a DNS query leaving the bed.
        cfg = botocore.config.Config(inject_host_prefix=False, retries={"max_attempts": 2})
        kw = dict(region_name="us-east-1", endpoint_url=self.endpoint, aws_access_key_id="bed",
                  aws_secret_access_key="bed", config=cfg)
        self.sd = boto3.client("servicediscovery", **kw)
        self.ecs = boto3.client("ecs", **kw)

    def hold_ecs_tasks(self):
        """ECS tasks stay as they are (moto advances them on every DescribeTasks otherwise)."""
        body = json.dumps({"model_name": "ecs::task", "transition": {"progression": "manual", "times": 1000000}})
        http("POST", self.endpoint + "/moto-api/state-manager/set-transition", data=body.encode(),
             headers={"Content-Type": "application/json"})

    def cloudmap(self, ns="ipfs", svc="cluster-peers"):
        self.sd.create_http_namespace(Name=ns)
        ns_id = [n for n in self.sd.list_namespaces()["Namespaces"] if n["Name"] == ns][0]["Id"]
        return self.sd.create_service(Name=svc, NamespaceId=ns_id)["Service"]["Id"]

    def instances(self, service_id):
        out = self.sd.list_instances(ServiceId=service_id)["Instances"]
        for i in out:
            self.net.ip_ok(i["Attributes"].get("AWS_INSTANCE_IPV4", "127.0.0.1"))
        return out

    def env(self):
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "bed",
                "AWS_SECRET_ACCESS_KEY": "bed", "AWS_EC2_METADATA_DISABLED": "true"}

    def close(self):
        stop(self.proc)
        self.logf.close()


# Settings that keep kubo inside the bed (../shared/research/realbed.md §2.3)
# and leave everything else as the official image's defaults. Not the
# `server` profile: it filters the private ranges the tasks talk on.
def kubo_offline(cfg):
    cfg["Addresses"]["API"] = "/ip4/0.0.0.0/tcp/5001"  # as the official image's start_ipfs sets
    cfg["Addresses"]["Gateway"] = "/ip4/0.0.0.0/tcp/8080"
    cfg["Addresses"]["Swarm"] = ["/ip4/0.0.0.0/tcp/4001"]
    cfg["Bootstrap"] = []
    cfg.setdefault("AutoConf", {})["Enabled"] = False
    cfg.setdefault("Routing", {})["Type"] = "none"
    cfg["Routing"]["DelegatedRouters"] = []
    cfg.setdefault("Ipns", {})["DelegatedPublishers"] = []
    cfg.setdefault("DNS", {})["Resolvers"] = {}
    cfg.setdefault("Discovery", {}).setdefault("MDNS", {})["Enabled"] = False
    cfg.setdefault("Swarm", {})["DisableNatPortMap"] = True
    cfg["Swarm"].setdefault("RelayClient", {})["Enabled"] = False
    cfg["Swarm"].setdefault("RelayService", {})["Enabled"] = False
    cfg["Swarm"]["EnableHolePunching"] = False
    cfg.setdefault("AutoTLS", {})["Enabled"] = False
    cfg.setdefault("Provide", {})["Enabled"] = False
    cfg.setdefault("HTTPRetrieval", {})["Enabled"] = False
    cfg.setdefault("Gateway", {})["NoDNSLink"] = True
    plugins = cfg.get("Plugins") or {}
    plugins["Plugins"] = dict(plugins.get("Plugins") or {}, telemetry={"Disabled": True})
    cfg["Plugins"] = plugins
    return cfg


# The cluster peer's settings in the bed: offline (mDNS off) and faster
# timers, so that membership and pins settle in seconds. Everything else is
# what the shipped task definition and the daemon's defaults say.
CLUSTER_BED_ENV = {
    "CLUSTER_MDNSINTERVAL": "0s",
    "CLUSTER_MONITORPINGINTERVAL": "2s",
    "CLUSTER_PEERWATCHINTERVAL": "2s",
    "CLUSTER_PUBSUB_HEARTBEATINTERVAL": "1s",
    "CLUSTER_CRDT_REBROADCASTINTERVAL": "2s",
    "CLUSTER_PUBSUBMON_CHECKINTERVAL": "2s",
    "CLUSTER_DISK_METRICTTL": "10s",
    "CLUSTER_TAGS_METRICTTL": "10s",
    "CLUSTER_PINQUEUE_METRICTTL": "10s",
    "CLUSTER_IPFSHTTP_CONNECTSWARMSDELAY": "3s",
    "CLUSTER_STATESYNCINTERVAL": "30s",
    "CLUSTER_PINRECOVERINTERVAL": "30s",
}


class Bed:
    """A test network, moto on it, and the tasks."""

    def __init__(self, workdir):
        self.workdir = workdir
        # The cluster container drops to uid 1000 (as shipped), which cannot
        # read root's cache: link the daemons into the bed's folder.
        self.daemons = os.path.join(workdir, "bin")
        os.makedirs(self.daemons)
        os.chmod(self.daemons, 0o755)
        built = daemons_dir()
        for name in ("ipfs", "ipfs-cluster-service", "ipfs-cluster-ctl"):
            try:
                os.link(os.path.join(built, name), os.path.join(self.daemons, name))
            except OSError:
                shutil.copy2(os.path.join(built, name), os.path.join(self.daemons, name))
        self.bin = binary()
        self.ctl_auth = None  # (user, password) of the REST API, when the test sets one
        self.net = Net(workdir)
        self.moto = None
        try:
            self.moto = Moto(self.net)
        except Exception:
            self.net.close()
            raise

    def close(self):
        if self.moto:
            self.moto.close()
        self.net.close()

    def task(self, k, name=None):
        return self.net.task(k, name)

    def path_env(self):
        return {"PATH": "%s:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin" % self.daemons}

    # ------------------------------------------------------------ kubo
    def kubo_env(self, t):
        return dict(self.path_env(), HOME=t.dir, IPFS_PATH=t.ipfs_path, IPFS_TELEMETRY="off")

    def start_kubo(self, t, wait=True):
        env = self.kubo_env(t)
        if not os.path.exists(os.path.join(t.ipfs_path, "config")):
            sh("ip", "netns", "exec", t.ns, "env", *("%s=%s" % kv for kv in env.items()),
               "ipfs", "init", "--profile=test")
            path = os.path.join(t.ipfs_path, "config")
            cfg = kubo_offline(json.load(open(path)))
            with open(path, "w") as f:
                json.dump(cfg, f, indent=2)
        # The official image's CMD.
        t.kubo = t.spawn(["ipfs", "daemon", "--migrate=true", "--agent-version-suffix=docker"], env, "kubo")
        if wait:
            self.wait_kubo(t)
        return t.kubo

    def start_kubo_slot(self, t, state_root, expect, wait=True):
        """The kubo container with a state root (EFS: here a local folder shared by the tasks):
        `ipfs-cluster-bootstrap slot` takes a free slot, writes the task's slot file (a folder only this
        task's containers share) and execs kubo on the slot's repo (kubo_start.py, the bed's start_ipfs)."""
        task_vol = os.path.join(t.dir, "task")
        os.makedirs(task_vol, exist_ok=True)
        t.slot_file = os.path.join(task_vol, "slot.json")
        env = dict(self.path_env(), HOME=t.dir, IPFS_TELEMETRY="off", BOOTSTRAP_STATE_ROOT=state_root,
                   BOOTSTRAP_SLOT_FILE=t.slot_file, BOOTSTRAP_EXPECT=str(expect), BOOTSTRAP_LOG_FORMAT="json",
                   BOOTSTRAP_TIMEOUT="300s")
        t.kubo = t.spawn([self.bin, "slot", "--", os.path.join(VENV, "python"), KUBO_START, "daemon",
                          "--migrate=true", "--agent-version-suffix=docker"], env, "kubo")
        t.state_root = state_root
        if wait:
            self.wait_slot(t)
            self.wait_kubo(t)
        return t.kubo

    def wait_slot(self, t, timeout=300):
        """The slot t's kubo container took; points t's kubo and cluster paths at it."""
        def taken():
            if t.kubo.poll() is not None:
                raise BedError("the kubo container of %s exited %s (%s)" % (t.name, t.kubo.returncode,
                                                                          t.kubo.logpath))
            try:
                with open(t.slot_file) as f:
                    return [json.load(f)["slot"]]  # a list: slot 0 is a slot
            except (OSError, ValueError):
                return None
        [k] = wait_for("%s's slot" % t.name, taken, timeout, interval=0.2)
        t.slot = k
        t.ipfs_path = os.path.join(t.state_root, "slots", str(k), "ipfs")
        t.cluster_path = os.path.join(t.state_root, "slots", str(k), "cluster")
        return k

    def slot_cluster_env(self, t, consensus, extra=None):
        """The cluster container's environment with the state root and the task's slot file."""
        return self.cluster_env(t, consensus, dict(extra or {}, BOOTSTRAP_STATE_ROOT=t.state_root,
                                                   BOOTSTRAP_SLOT_FILE=t.slot_file))

    def wait_kubo(self, t, timeout=60):
        def up():
            if t.kubo.poll() is not None:
                raise BedError("kubo in %s exited %s (%s)" % (t.name, t.kubo.returncode, t.kubo.logpath))
            return http("POST", "http://%s:5001/api/v0/id" % t.ip, timeout=2)[0] == 200
        wait_for("kubo in %s" % t.name, up, timeout, interval=0.2)

    def kubo(self, t, cmd, **args):
        """POST /api/v0/<cmd> on the task's kubo, JSON answer."""
        q = urllib.parse.urlencode(args, doseq=True)
        status, body = http("POST", "http://%s:5001/api/v0/%s?%s" % (t.ip, cmd, q), timeout=30)
        return json.loads(body) if body.strip() else None

    # ------------------------------------------------------------ cluster
    def cluster_env(self, t, consensus, extra=None):
        env = dict(self.path_env(), HOME=t.dir, **self.moto.env(), **CLUSTER_BED_ENV)
        env.update({
            "IPFS_CLUSTER_PATH": t.cluster_path,
            "IPFS_CLUSTER_CONSENSUS": consensus,
            "CLUSTER_SECRET": SECRET,
            "CLUSTER_PEERNAME": t.name,
            "CLUSTER_IPFSHTTP_NODEMULTIADDRESS": "/ip4/127.0.0.1/tcp/5001",
            "CLUSTER_RESTAPI_HTTPLISTENMULTIADDRESS": "/ip4/0.0.0.0/tcp/9094",
            "CLUSTER_CRDT_TRUSTEDPEERS": "*",
            "BOOTSTRAP_ADVERTISE_IP": t.ip,
            "BOOTSTRAP_LOG_FORMAT": "json",
            "BOOTSTRAP_LOG_LEVEL": "info,aws=warn",
        })
        env.update(extra or {})
        return env

    def start_cluster(self, t, env, argv=()):
        """Runs ipfs-cluster-bootstrap (which execs the real daemon) in the task."""
        t.cluster = t.spawn([self.bin] + list(argv), env, "cluster")
        return t.cluster

    def ctl(self, t, *args, timeout=30):
        """ipfs-cluster-ctl against the task's REST API, from inside the task; JSON objects."""
        auth = ("--basic-auth", "%s:%s" % self.ctl_auth, "--force-http") if self.ctl_auth else ()
        p = sh(os.path.join(self.daemons, "ipfs-cluster-ctl"), "--host", "/ip4/127.0.0.1/tcp/9094", "--enc=json",
               "--timeout", str(timeout), *auth, *args, ns=t.ns, timeout=timeout + 15, check=False)
        if p.returncode != 0:
            raise BedError("ipfs-cluster-ctl %s in %s: %s" % (" ".join(args), t.name, p.stderr.strip()))
        return json_stream(p.stdout)

    def wait_for_decision(self, t, timeout=120):
        return wait_decision(t, timeout)

    def peer_id(self, t):
        return json.load(open(os.path.join(t.cluster_path, "identity.json")))["id"]

    def peers(self, t):
        """The peer IDs `peers ls` on t reports, with no error."""
        return sorted(p["id"] for p in self.ctl(t, "peers", "ls", timeout=20) if not p.get("error"))

    def wait_one_cluster(self, tasks, timeout=120, on_exit=None):
        """Until every task's `peers ls` lists exactly the tasks' peer IDs. A task whose cluster
        container exits fails the wait, unless `on_exit(task)` returns its replacement (as ECS
        replaces a task whose essential container exited), which takes its place in `tasks`."""
        def agreed():
            for i, t in enumerate(tasks):
                if t.cluster is not None and t.cluster.poll() is not None:
                    if on_exit is None:
                        raise BedError("%s's cluster container exited %s (%s)" % (t.name, t.cluster.returncode,
                                                                                 t.cluster.logpath))
                    tasks[i] = on_exit(t)
            want = sorted(self.peer_id(t) for t in tasks)
            for t in tasks:
                if self.peers(t) != want:
                    return False
            return want
        return wait_for("one cluster of %s" % ", ".join(t.name for t in tasks), agreed, timeout, interval=1)


def raft_leaders(tasks):
    """{task name: the raft leader its daemon last logged}, from each task's last cluster log."""
    out = {}
    for t in tasks:
        path = os.path.join(t.dir, "cluster.%d.log" % t.runs_of("cluster"))
        with open(path, "rb") as f:
            for line in f:
                if b"Current Raft Leader: " in line:
                    out[t.name] = line.rsplit(b"Current Raft Leader: ", 1)[1].strip().decode()
    return out


def decision(t, run=None):
    """The decision event ipfs-cluster-bootstrap logged in t's cluster run (the last by default):
    {"action", "reason", "record"} with the record decoded, or None before it is logged."""
    path = os.path.join(t.dir, "cluster.%d.log" % (run or t.runs_of("cluster")))
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return None
    with f:
        for line in f:
            if not line.startswith(b"{") or b'"event":"decision"' not in line:
                continue
            try:
                ev = json.loads(line)
                ev["record"] = json.loads(ev["record"])
            except (ValueError, KeyError):
                continue
            return ev
    return None


def wait_decision(t, timeout=120):
    """The decision t's cluster container logs; raises if it exits first."""
    def logged():
        d = decision(t)
        if d is None and t.cluster is not None and t.cluster.poll() is not None:
            raise BedError("%s's cluster container exited %s before deciding (%s)"
                           % (t.name, t.cluster.returncode, t.cluster.logpath))
        return d
    return wait_for("%s's decision" % t.name, logged, timeout, interval=0.1)


class NameServer:
    """A name server in the root namespace (dnslib), on the bridge's address:
    A records for names the test sets, NXDOMAIN for every other name, and no
    recursion (nothing is ever forwarded)."""

    def __init__(self, net, port=None):
        from dnslib import QTYPE, RR, A
        from dnslib.server import BaseResolver, DNSLogger, DNSServer

        self.records = {}
        records = self.records

        class Resolver(BaseResolver):
            def resolve(self, request, handler):
                reply = request.reply()
                name = str(request.q.qname).rstrip(".").lower()
                if name in records:
                    if request.q.qtype in (QTYPE.A, QTYPE.ANY):
                        for ip in records[name]:
                            reply.add_answer(RR(request.q.qname, QTYPE.A, rdata=A(ip), ttl=5))
                else:
                    reply.header.rcode = 3  # NXDOMAIN
                return reply

        self.port = port or free_port(net.gw)
        self.server = DNSServer(Resolver(), address=net.ip_ok(net.gw), port=self.port,
                                logger=DNSLogger(log="-request,-reply,-truncated,-error,-recv,-send,-data"))
        self.server.start_thread()
        self.net = net
        self.addr = "%s:%d" % (net.gw, self.port)

    def set(self, name, ips):
        self.records[name.lower()] = [self.net.ip_ok(ip) for ip in ips]

    def close(self):
        self.server.stop()


# hashicorp/raft's own log ("raftlib", ERROR by default in ipfs-cluster) at
# info: every state change ("entering leader state", "entering follower
# state", "entering candidate state"). Logging only; add it to a cluster
# environment to use raft_roles().
RAFT_ROLE_LOGS = {"IPFS_CLUSTER_LOG_LEVEL": "info,raftlib:info"}


def raft_roles(tasks):
    """{task name: "leader", "follower" or "candidate"}: the last raft state each task's last
    cluster run entered (needs RAFT_ROLE_LOGS). Unlike raft_leaders(), which reads the leader a
    daemon named once at its start, this follows elections that happen while it runs."""
    out = {}
    for t in tasks:
        path = os.path.join(t.dir, "cluster.%d.log" % t.runs_of("cluster"))
        with open(path, "rb") as f:
            for line in f:
                i = line.find(b"entering ")
                if i >= 0 and b" state" in line[i:] and b"raftlib" in line:
                    role = line[i + len(b"entering "):].split(b" ", 1)[0].decode()
                    if role in ("leader", "follower", "candidate"):
                        out[t.name] = role
    return out
