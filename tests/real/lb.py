"""nginx as the stand-in for the Application Load Balancer in front of the
kubo gateways (deploy/cloudformation.json's GatewayTargetGroup).

The target port, health-check path and matcher, interval and thresholds are
read from the template, never retyped. nginx runs in the root namespace and
listens only on the bed's root-namespace address (10.77.X.254); its upstreams
are task addresses only, written as IP literals, so it never resolves a name.

Two nginx, each with one listener:
  * `retrying`: `proxy_next_upstream error timeout http_502 http_503 http_504`
    over every task's gateway, never reconfigured: a request that fails on
    one target is retried on the next, and nginx's passive health
    (max_fails=1, fail_timeout=5s) skips a target that just failed. An ALB
    does NOT do either.
  * `strict`: `proxy_next_upstream off` and max_fails=0: the answer of the
    one target chosen is the answer, and only the active health checks take
    a target out, as with an ALB (which retries nothing: a target that
    refuses the connection gives the client a 502, one that does not answer
    within the idle timeout a 504; a kubo gateway that cannot find a block
    answers 504 itself after its Gateway.RetrievalTimeout, 30 s by default).

What an ALB does and nginx-light cannot: active health checks. `HealthChecker`
does them as the target group describes (GET the health-check path on the
target port every interval, healthy after HealthyThresholdCount successes,
unhealthy after UnhealthyThresholdCount failures) and rewrites the strict
nginx's upstream to the healthy targets (all of them when none is healthy: an ALB fails open).
`register`/`deregister` are what ECS does around a task of the service: a
planned stop deregisters the target first; a new task's target starts
unhealthy ("initial") until it passes HealthyThresholdCount checks.
The interval is scaled down for the bed (`interval=`), the thresholds are kept.
"""
import http.client
import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request

from bed import ROOT, BedError, free_port, log, stop, wait_for
from bed import http as bed_http

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
    log_format lb '$msec $server_port "$request" $status $body_bytes_sent up=[$upstream_addr] '
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
        listen %(ip)s:%(port)d;
        location / {
            proxy_pass http://gateways;
%(next_upstream)s
        }
    }
}
"""

RETRYING = """            proxy_next_upstream error timeout http_502 http_503 http_504;
            proxy_next_upstream_tries 0;"""
STRICT = """            proxy_next_upstream off;"""


class Nginx:
    """One nginx (master and one worker) in the root namespace, on ip:port, in front of `addrs`."""

    def __init__(self, net, workdir, name, port, next_upstream, server_opts, addrs, connect_timeout, read_timeout):
        self.net, self.name, self.server_opts = net, name, server_opts
        self.dir = os.path.join(workdir, name)
        os.makedirs(os.path.join(self.dir, "tmp"), exist_ok=True)
        os.chmod(os.path.join(self.dir, "tmp"), 0o777)  # nginx's workers run as nobody
        self.ip, self.port = net.ip_ok(net.gw), port
        conf = os.path.join(self.dir, "nginx.conf")
        with open(conf, "w") as f:
            f.write(CONF % {"dir": self.dir, "ip": self.ip, "port": port, "next_upstream": next_upstream,
                            "connect_timeout": connect_timeout, "read_timeout": read_timeout})
        self.write_upstream(addrs)
        self.logf = open(os.path.join(self.dir, "nginx.log"), "wb")
        self.proc = subprocess.Popen(["nginx", "-c", conf, "-p", self.dir], stdout=self.logf,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        wait_for("nginx %s on %s:%d" % (name, self.ip, port), self._listening, 20, interval=0.1)

    def _listening(self):
        if self.proc.poll() is not None:
            raise BedError("nginx exited %s (%s)" % (self.proc.returncode, os.path.join(self.dir, "error.log")))
        socket.create_connection((self.ip, self.port), 0.2).close()
        return True

    def write_upstream(self, addrs):
        tmp = os.path.join(self.dir, "upstream.conf.tmp")
        with open(tmp, "w") as f:
            f.write("upstream gateways {\n%s    keepalive 16;\n}\n"
                    % "".join("    server %s %s;\n" % (a, self.server_opts) for a in addrs))
        os.rename(tmp, os.path.join(self.dir, "upstream.conf"))

    def reload(self, addrs):
        self.write_upstream(addrs)
        os.kill(self.proc.pid, signal.SIGHUP)

    def aborts(self):
        """Times nginx's old worker aborted connections on a reload ("open socket ... left", "aborting")."""
        out = []
        with open(os.path.join(self.dir, "error.log")) as f:
            for line in f:
                if "[alert]" in line and "aborting" in line:
                    out.append(time.mktime(time.strptime(line[:19], "%Y/%m/%d %H:%M:%S")))
        return out

    def close(self):
        stop(self.proc)
        self.logf.close()


class LB:
    """The ALB stand-in in front of the tasks' gateways on the target group's port: two nginx.

    `retrying`: every task's gateway, always (never reloaded), passive health (max_fails=1,
    fail_timeout=5s) and proxy_next_upstream. `strict`: only the targets the active health checks
    find healthy (reloaded when that changes), no retry and no passive health (max_fails=0), as an
    ALB. A reload can cut a response in flight (nginx 1.22's old worker sometimes exits at once,
    "open socket ... left in connection", "aborting"): a harness artifact, which `strict.aborts()`
    tells apart."""

    def __init__(self, bed, tasks, connect_timeout="2s", read_timeout="60s"):
        self.bed = bed
        self.tg = target_group()
        self.ip = bed.net.gw
        self.lock = threading.Lock()
        self.routed = sorted(tasks, key=lambda t: t.k)  # the targets the strict listener routes to
        workdir = os.path.join(bed.workdir, "lb")
        args = dict(connect_timeout=connect_timeout, read_timeout=read_timeout)
        self.retrying_nginx = Nginx(bed.net, workdir, "retrying", free_port(self.ip), RETRYING,
                                    "max_fails=1 fail_timeout=5s", self._addrs(tasks), **args)
        self.strict_nginx = Nginx(bed.net, workdir, "strict", free_port(self.ip), STRICT, "max_fails=0",
                                  self._addrs(tasks), **args)
        self.retrying, self.strict = self.retrying_nginx.port, self.strict_nginx.port
        log("nginx (ALB stand-in) on %s: retrying :%d, strict :%d -> gateways :%d, health %s"
            % (self.ip, self.retrying, self.strict, self.tg["port"], self.tg["health_path"]))

    def _addrs(self, tasks):
        return ["%s:%d" % (self.bed.net.ip_ok(t.ip), self.tg["port"]) for t in sorted(tasks, key=lambda t: t.k)]

    def route_to(self, tasks):
        """Makes the strict listener's upstream exactly `tasks` (reload: SIGHUP)."""
        with self.lock:
            tasks = sorted(tasks, key=lambda t: t.k)
            if [t.k for t in tasks] == [t.k for t in self.routed]:
                return
            self.routed = tasks
            self.strict_nginx.reload(self._addrs(tasks))
        log("lb (strict) routes to %s" % ",".join(t.name for t in tasks))

    def url(self, cid, strict=False):
        return "http://%s:%d/ipfs/%s" % (self.ip, self.strict if strict else self.retrying, cid)

    def get(self, cid, strict=False, timeout=90):
        """(status, body, upstream addresses tried, seconds) of one GET through the balancer;
        status None when no answer came, "truncated" when the body was cut short."""
        t0 = time.time()
        up = ""
        try:
            with urllib.request.urlopen(self.url(cid, strict), timeout=timeout) as r:
                up = r.headers.get("X-Upstream", "")
                return r.status, r.read(), up, time.time() - t0
        except urllib.error.HTTPError as e:
            return e.code, e.read(), e.headers.get("X-Upstream", ""), time.time() - t0
        except http.client.IncompleteRead as e:
            return "truncated", e.partial, up, time.time() - t0
        except (OSError, http.client.HTTPException) as e:
            return None, repr(e).encode(), up, time.time() - t0

    def health(self, t, timeout=5):
        """The target group's health check of one target: GET the path on the target port."""
        try:
            status, _ = bed_http("GET", "http://%s:%d%s" % (self.bed.net.ip_ok(t.ip), self.tg["port"],
                                                              self.tg["health_path"]), timeout=timeout)
        except Exception:  # noqa: BLE001 (refused, reset, timeout, 5xx: all unhealthy)
            return False
        return status in self.tg["matcher"]

    def close(self):
        self.retrying_nginx.close()
        self.strict_nginx.close()


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
