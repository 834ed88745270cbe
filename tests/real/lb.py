"""nginx as the stand-in for the Application Load Balancer in front of the
kubo gateways (deploy/cloudformation.json's GatewayTargetGroup).

The target port, health-check path and matcher, interval and thresholds are
read from the template, never retyped. nginx runs in the root namespace and
listens only on the bed's root-namespace address (10.77.X.254); its upstreams
are task addresses only, written as IP literals, so it never resolves a name.

Two listeners route to the same targets:
  * `retrying`: `proxy_next_upstream error timeout http_502 http_503 http_504`:
    a request that fails on one target is retried on the next, and nginx's
    passive health (max_fails=1, fail_timeout=5s) skips a target that just
    failed. An ALB does NOT do either.
  * `strict`: `proxy_next_upstream off` and max_fails=0: the answer of the
    one target chosen is the answer, and only the active health checks take
    a target out, as with an ALB (which retries nothing: a target that
    refuses the connection gives the client a 502, one that does not answer
    within the idle timeout a 504; a kubo gateway that cannot find a block
    answers 504 itself after its Gateway.RetrievalTimeout, 30 s by default).

What an ALB does and nginx-light cannot: active health checks. `HealthChecker`
does them as the target group describes (GET the health-check path on the
target port every interval, healthy after HealthyThresholdCount successes,
unhealthy after UnhealthyThresholdCount failures) and rewrites nginx's upstream
to the healthy targets (all of them when none is healthy: an ALB fails open).
`register`/`deregister` are what ECS does around a task of the service: a
planned stop deregisters the target first; a new task's target starts
unhealthy ("initial") until it passes HealthyThresholdCount checks.
The interval is scaled down for the bed (`interval=`), the thresholds are kept.
"""
import json
import os
import signal
import subprocess
import threading
import time

from bed import ROOT, BedError, free_port, http, log, stop, wait_for

TEMPLATE = os.path.join(ROOT, "deploy", "cloudformation.json")


def target_group(path=TEMPLATE):
    """The gateway target group as the template declares it, and the service's container port."""
    res = json.load(open(path))["Resources"]
    [tg] = [r["Properties"] for r in res.values() if r["Type"] == "AWS::ElasticLoadBalancingV2::TargetGroup"]
    [svc] = [r["Properties"] for r in res.values() if r["Type"] == "AWS::ECS::Service"]
    [lb] = svc["LoadBalancers"]
    attrs = {a["Key"]: a["Value"] for a in tg.get("TargetGroupAttributes", [])}
    out = {
        "port": int(tg["Port"]),
        "container_port": int(lb["ContainerPort"]),
        "container": lb["ContainerName"],
        "health_path": tg["HealthCheckPath"],
        "health_port": tg.get("HealthCheckPort", "traffic-port"),
        "matcher": [int(c) for c in str(tg["Matcher"]["HttpCode"]).split(",")],
        "interval": int(tg["HealthCheckIntervalSeconds"]),
        "healthy": int(tg["HealthyThresholdCount"]),
        "unhealthy": int(tg["UnhealthyThresholdCount"]),
        "deregistration_delay": int(attrs.get("deregistration_delay.timeout_seconds", 300)),
    }
    if out["port"] != out["container_port"]:
        raise BedError("target group port %d != service container port %d" % (out["port"], out["container_port"]))
    if out["health_port"] != "traffic-port":
        raise BedError("health check port %r is not the traffic port" % out["health_port"])
    return out


CONF = """daemon off;
worker_processes 1;
pid %(dir)s/nginx.pid;
error_log %(dir)s/error.log info;
events { worker_connections 512; }
http {
    log_format lb '$msec $server_port "$request" $status up=[$upstream_addr] '
                  'upst=[$upstream_status] t=$request_time ut=[$upstream_response_time]';
    access_log %(dir)s/access.log lb;
    client_body_temp_path %(dir)s/tmp/body;
    proxy_temp_path %(dir)s/tmp/proxy;
    fastcgi_temp_path %(dir)s/tmp/fastcgi;
    uwsgi_temp_path %(dir)s/tmp/uwsgi;
    scgi_temp_path %(dir)s/tmp/scgi;
    proxy_max_temp_file_size 0;
    include %(dir)s/upstream.conf;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_set_header Host $http_host;
    proxy_connect_timeout %(connect_timeout)s;
    proxy_read_timeout %(read_timeout)s;
    add_header X-Upstream $upstream_addr always;
    server {
        listen %(ip)s:%(retrying)d;
        location / {
            proxy_pass http://gateways;
            proxy_next_upstream error timeout http_502 http_503 http_504;
            proxy_next_upstream_tries 0;
        }
    }
    server {
        listen %(ip)s:%(strict)d;
        location / {
            proxy_pass http://targets;
            proxy_next_upstream off;
        }
    }
}
"""


class LB:
    """nginx in front of the tasks' gateways on the target group's port."""

    def __init__(self, bed, tasks, connect_timeout="2s", read_timeout="60s"):
        self.bed = bed
        self.tg = target_group()
        self.ip = bed.net.gw
        self.dir = os.path.join(bed.workdir, "lb")
        os.makedirs(os.path.join(self.dir, "tmp"), exist_ok=True)
        os.chmod(os.path.join(self.dir, "tmp"), 0o777)  # nginx's workers run as nobody
        self.retrying = free_port(self.ip)
        self.strict = free_port(self.ip)
        self.routed = list(tasks)  # the targets nginx's upstream lists
        self.lock = threading.Lock()
        self.conf = os.path.join(self.dir, "nginx.conf")
        with open(self.conf, "w") as f:
            f.write(CONF % {"dir": self.dir, "ip": bed.net.ip_ok(self.ip), "retrying": self.retrying,
                            "strict": self.strict, "connect_timeout": connect_timeout,
                            "read_timeout": read_timeout})
        self._write_upstream()
        self.logf = open(os.path.join(self.dir, "nginx.log"), "wb")
        self.proc = subprocess.Popen(["nginx", "-c", self.conf, "-p", self.dir], stdout=self.logf,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        for port in (self.retrying, self.strict):
            wait_for("nginx on %s:%d" % (self.ip, port), lambda: self._listening(port), 20, interval=0.1)
        log("nginx (ALB stand-in) on %s: retrying :%d, strict :%d -> gateways :%d, health %s"
            % (self.ip, self.retrying, self.strict, self.tg["port"], self.tg["health_path"]))

    def _listening(self, port):
        if self.proc.poll() is not None:
            raise BedError("nginx exited %s (%s)" % (self.proc.returncode, os.path.join(self.dir, "error.log")))
        import socket
        socket.create_connection((self.ip, port), 0.2).close()
        return True

    def _write_upstream(self):
        # `gateways` (retrying): nginx's passive health as well, a target that failed is skipped for
        # 5 s. `targets` (strict): max_fails=0, only the active health checks decide, as an ALB.
        addrs = ["%s:%d" % (self.bed.net.ip_ok(t.ip), self.tg["port"]) for t in self.routed]
        tmp = os.path.join(self.dir, "upstream.conf.tmp")
        with open(tmp, "w") as f:
            for name, opts in (("gateways", "max_fails=1 fail_timeout=5s"), ("targets", "max_fails=0")):
                f.write("upstream %s {\n%s    keepalive 16;\n}\n"
                        % (name, "".join("    server %s %s;\n" % (a, opts) for a in addrs)))
        os.rename(tmp, os.path.join(self.dir, "upstream.conf"))

    def route_to(self, tasks):
        """Makes nginx's upstream exactly `tasks` (reload: SIGHUP; old workers finish their requests)."""
        with self.lock:
            tasks = sorted(tasks, key=lambda t: t.k)
            if [t.k for t in tasks] == [t.k for t in self.routed]:
                return
            self.routed = tasks
            self._write_upstream()
            os.kill(self.proc.pid, signal.SIGHUP)
        log("lb routes to %s" % ",".join(t.name for t in tasks))

    def url(self, cid, strict=False):
        return "http://%s:%d/ipfs/%s" % (self.ip, self.strict if strict else self.retrying, cid)

    def get(self, cid, strict=False, timeout=90):
        """(status, body, upstream addresses tried, seconds) of one GET through the balancer."""
        import urllib.error
        import urllib.request
        t0 = time.time()
        try:
            with urllib.request.urlopen(self.url(cid, strict), timeout=timeout) as r:
                return r.status, r.read(), r.headers.get("X-Upstream", ""), time.time() - t0
        except urllib.error.HTTPError as e:
            return e.code, e.read(), e.headers.get("X-Upstream", ""), time.time() - t0
        except OSError as e:
            return None, repr(e).encode(), "", time.time() - t0

    def health(self, t, timeout=5):
        """The target group's health check of one target: GET the path on the target port."""
        try:
            status, _ = http("GET", "http://%s:%d%s" % (self.bed.net.ip_ok(t.ip), self.tg["port"],
                                                          self.tg["health_path"]), timeout=timeout)
        except Exception:  # noqa: BLE001 (refused, reset, timeout, 5xx: all unhealthy)
            return False
        return status in self.tg["matcher"]

    def close(self):
        stop(self.proc)
        self.logf.close()


class HealthChecker(threading.Thread):
    """The ALB's target health, on the target group's thresholds with a scaled interval."""

    def __init__(self, lb, tasks, interval=1.0):
        super().__init__(daemon=True)
        self.lb, self.interval = lb, interval
        self.registered = {t.k: t for t in tasks}
        self.state = {t.k: "healthy" for t in tasks}  # the launch's targets start as checked healthy
        self.ok_run = {t.k: 0 for t in tasks}
        self.bad_run = {t.k: 0 for t in tasks}
        self.events = []
        self.stopping = threading.Event()
        self.mu = threading.Lock()

    def register(self, t):
        with self.mu:
            self.registered[t.k] = t
            self.state[t.k] = "initial"
            self.ok_run[t.k] = self.bad_run[t.k] = 0
        self._apply()

    def deregister(self, t):
        with self.mu:
            self.registered.pop(t.k, None)
            self.state.pop(t.k, None)
        self._apply()

    def healthy(self):
        with self.mu:
            return sorted(k for k, s in self.state.items() if s == "healthy")

    def _apply(self):
        with self.mu:
            up = [self.registered[k] for k, s in self.state.items() if s == "healthy"]
            if not up:  # an ALB with no healthy target routes to all of them
                up = list(self.registered.values())
        if up:
            self.lb.route_to(up)

    def run(self):
        tg = self.lb.tg
        while not self.stopping.wait(self.interval):
            with self.mu:
                targets = list(self.registered.values())
            changed = False
            for t in targets:
                ok = self.lb.health(t, timeout=min(5, self.interval * 2))
                with self.mu:
                    if t.k not in self.state:
                        continue
                    was = self.state[t.k]
                    if ok:
                        self.ok_run[t.k] += 1
                        self.bad_run[t.k] = 0
                        if was != "healthy" and self.ok_run[t.k] >= tg["healthy"]:
                            self.state[t.k] = "healthy"
                    else:
                        self.bad_run[t.k] += 1
                        self.ok_run[t.k] = 0
                        if was == "healthy" and self.bad_run[t.k] >= tg["unhealthy"]:
                            self.state[t.k] = "unhealthy"
                    if self.state[t.k] != was:
                        changed = True
                        self.events.append((time.time(), t.name, self.state[t.k]))
            if changed:
                self._apply()

    def close(self):
        self.stopping.set()
        self.join(10)
