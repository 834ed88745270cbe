#!/usr/bin/env python3
"""A small fault-injecting HTTP proxy between AWS SDK clients and moto's server.

    python scripts/awsproxy.py --listen 127.0.0.1:PORT --upstream http://127.0.0.1:MOTOPORT \
        [--listen LABEL=127.0.0.1:PORT2 ...] [--stats FILE] [--faults JSON]

Standard library only. LOOPBACK ONLY: every listen and upstream address must
be in 127.0.0.0/8 or ::1, or it raises (exit 2 from the command line).

What it does with every request (one AWS call attempt; SDK retries are calls):
  - counts it by operation: the `X-Amz-Target` header (JSON protocols, e.g.
    `Route53AutoNaming_v20170314.DiscoverInstances`) or the `Action=` form or
    query parameter (EC2's query protocol), per listener label and in total;
  - applies the faults (all off by default, see FAULT_DEFAULTS) in this order:
    down (the first `down_for` seconds after start or reset), added latency,
    dropped connection (read, then closed without an answer), a 5xx burst
    (503 for a run of consecutive calls, across all listeners), throttling
    (400 ThrottlingException; EC2: 503 RequestLimitExceeded);
  - forwards the rest to the upstream and relays the answer;
  - registry visibility delay (Cloud Map's eventual consistency): remembers when
    each RegisterInstance passed, draws a delay for it from `visibility`
    [min, max] seconds, and removes instances not yet visible from
    DiscoverInstances answers (the JSON is re-serialised, Content-Length fixed).
    A re-registration of the same InstanceId (changed attributes) is a new
    version with its own delay: readers keep seeing the previous attributes
    until it is visible. A DeregisterInstance is delayed the same way
    (`deregister_delay`, default true): the instance stays listed with its last
    visible attributes until then. With `visibility_scope` "reader" every
    listener (peer) draws its own delay for each version, so peers disagree
    about what is registered, as readers of different Cloud Map replicas can;
    with "instance" (default) all readers share one delay per version.
    moto 5 lists a re-registered InstanceId twice (old and new attributes) and
    its DeregisterInstance removes only the first copy; the proxy always keeps
    only the newest copy, and drops an instance once its deregistration is
    visible, as Cloud Map would. Instances are keyed by InstanceId alone (one Cloud Map service per proxy
    state; reset() between launches). Registrations that never passed through
    the proxy (seeded directly in moto) are visible at once.

Importable: AwsProxy(upstream, faults).add_listener(label=...) -> port;
.start(); .set_faults(**kw) at runtime; .reset(faults) between launches;
.stats() -> dict; .close(). From the command line the stats are also written to
--stats FILE (every second and at exit) and served at GET /_proxy/stats on any
listener; POST /_proxy/faults with a JSON object changes the faults.
"""
import argparse, http.client, http.server, ipaddress, json, random, signal, socket, socketserver
import sys, threading, time, urllib.parse, uuid

FAULT_DEFAULTS = {
    "throttle": 0.0,           # probability per call of a ThrottlingException
    "throttle_ops": None,      # only these operations (short names, e.g. ["DiscoverInstances"]); None: all
    "burst_prob": 0.0,         # probability per call of starting a 5xx burst
    "burst_len": [3, 6],       # calls per burst (the first included), inclusive range
    "burst_status": 503,
    "drop": 0.0,               # probability per call of closing the connection without an answer
    "latency_prob": 0.0,       # probability per call of added latency
    "latency": [0.05, 0.5],    # seconds, uniform
    "down_for": 0.0,           # seconds after start/reset during which every connection fails
    "down_mode": "close",      # "close": accept and close at once; "refuse": listeners created
                               #   during the window start listening only when it ends (RST)
    "visibility": [0.0, 0.0],  # seconds before a (re)registration shows in DiscoverInstances
    "visibility_scope": "instance",  # "instance": one delay per version; "reader": per listener too
    "deregister_delay": True,  # a deregistration is delayed the same way
    "seed": None,              # random seed for the fault and delay draws
}

HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
              "trailers", "transfer-encoding", "upgrade", "content-length"}


def require_loopback(host):
    """The address as an ip_address, or ValueError unless it is loopback."""
    h = host.strip("[]")
    try:
        ip = ipaddress.ip_address(h)
    except ValueError:
        raise ValueError("awsproxy: %r is not an IP address (loopback only)" % host)
    if not ip.is_loopback:
        raise ValueError("awsproxy: refusing non-loopback address %s" % host)
    return ip


def parse_hostport(s):
    host, _, port = s.rpartition(":")
    require_loopback(host)
    return host.strip("[]"), int(port)


def short_op(op):
    return op.rsplit(".", 1)[-1] if op else "?"


class _Version:
    __slots__ = ("seq", "attrs", "registered", "delay", "reader_delay", "deregister")

    def __init__(self, seq, attrs, registered, delay, deregister=False):
        self.seq, self.attrs, self.registered, self.delay = seq, attrs, registered, delay
        self.reader_delay = {}  # label -> delay (scope "reader")
        self.deregister = deregister

    def visible_at(self, label, scope, draw):
        if scope == "reader":
            if label not in self.reader_delay:
                self.reader_delay[label] = draw()
            return self.registered + self.reader_delay[label]
        return self.registered + self.delay


class AwsProxy:
    def __init__(self, upstream, faults=None):
        u = urllib.parse.urlsplit(upstream)
        if u.scheme != "http" or not u.hostname:
            raise ValueError("awsproxy: upstream must be http://IP:PORT, got %r" % upstream)
        require_loopback(u.hostname)
        self.upstream = (u.hostname, u.port or 80)
        self.lock = threading.RLock()
        self.listeners = {}  # label -> server
        self._faults = dict(FAULT_DEFAULTS)
        self.reset(faults)

    # ---------------------------------------------------------------- control
    def reset(self, faults=None):
        """Forget registrations and counts, restart the down_for clock, set faults."""
        with self.lock:
            self._faults = dict(FAULT_DEFAULTS)
            if faults:
                self._set(faults)
            self.rng = random.Random(self._faults["seed"])
            self.epoch = time.monotonic()
            self.burst_left = 0
            self.instances = {}  # instance id -> [versions], oldest first
            self.where = {}      # instance id -> (namespace, service) as DiscoverInstances named them
            self.seq = 0
            self.calls = {}      # label -> op -> n
            self.fault_counts = {}  # label -> kind -> n
            self.statuses = {}   # status -> n (answers relayed or made up)
            self.duplicates = 0  # duplicate instances moto listed (see filter_discover)

    def _set(self, kw):
        for k, v in kw.items():
            if k not in FAULT_DEFAULTS:
                raise ValueError("awsproxy: unknown fault %r (known: %s)" % (k, ", ".join(FAULT_DEFAULTS)))
            self._faults[k] = v
        if self._faults["visibility_scope"] not in ("instance", "reader"):
            raise ValueError("awsproxy: visibility_scope must be 'instance' or 'reader'")
        if self._faults["down_mode"] not in ("close", "refuse"):
            raise ValueError("awsproxy: down_mode must be 'close' or 'refuse'")

    def set_faults(self, **kw):
        with self.lock:
            self._set(kw)

    @property
    def faults(self):
        with self.lock:
            return dict(self._faults)

    def stats(self):
        with self.lock:
            total = {}
            for ops in self.calls.values():
                for op, n in ops.items():
                    total[op] = total.get(op, 0) + n
            faults = {}
            for kinds in self.fault_counts.values():
                for k, n in kinds.items():
                    faults[k] = faults.get(k, 0) + n
            return {
                "calls": total,
                "calls_total": sum(total.values()),
                "by_label": {l: dict(o) for l, o in self.calls.items()},
                "faults": faults,
                "faults_by_label": {l: dict(k) for l, k in self.fault_counts.items()},
                "statuses": {str(s): n for s, n in self.statuses.items()},
                "moto_duplicates_removed": self.duplicates,
                "registrations": {
                    iid: [{"seq": v.seq, "delay": round(v.delay, 3), "deregister": v.deregister,
                           "reader_delay": {l: round(d, 3) for l, d in v.reader_delay.items()}}
                          for v in vs]
                    for iid, vs in self.instances.items()},
                "faults_config": dict(self._faults),
            }

    # -------------------------------------------------------------- listeners
    def add_listener(self, host="127.0.0.1", port=0, label=None):
        """Binds a listener (loopback only); returns its port. Serving starts at
        start(), or at once when the proxy already runs."""
        require_loopback(host)
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        srv = _Server((host, port), _Handler, bind_and_activate=False, family=fam)
        srv.proxy = self
        srv.server_bind()
        port = srv.server_address[1]
        srv.label = label or "%s:%d" % (host, port)
        srv.running = False
        with self.lock:
            if srv.label in self.listeners:
                raise ValueError("awsproxy: listener label %r already used" % srv.label)
            self.listeners[srv.label] = srv
            started = getattr(self, "_started", False)
        if started:
            self._serve(srv)
        return port

    def remove_listener(self, label):
        with self.lock:
            srv = self.listeners.pop(label, None)
        if srv is not None:
            if srv.running:
                srv.shutdown()
            srv.server_close()

    def _serve(self, srv):
        def run():
            with self.lock:
                f = self._faults
                wait = f["down_for"] - (time.monotonic() - self.epoch) if f["down_mode"] == "refuse" else 0
            if wait > 0:  # bound but not listening: connections are refused
                time.sleep(wait)
            try:
                srv.server_activate()
            except OSError:
                return
            srv.running = True
            srv.serve_forever(poll_interval=0.2)
        threading.Thread(target=run, name="awsproxy-" + srv.label, daemon=True).start()

    def start(self):
        with self.lock:
            self._started = True
            servers = list(self.listeners.values())
        for srv in servers:
            self._serve(srv)
        return self

    def close(self):
        for label in list(self.listeners):
            self.remove_listener(label)

    # -------------------------------------------------------------- the calls
    def _count(self, table, label, key):
        d = table.setdefault(label, {})
        d[key] = d.get(key, 0) + 1

    def decide_fault(self, label, op):
        """What to do with this call: None (forward), or (kind, detail)."""
        with self.lock:
            self._count(self.calls, label, op)
            f, r = self._faults, self.rng
            if f["down_for"] and time.monotonic() - self.epoch < f["down_for"]:
                self._count(self.fault_counts, label, "down")
                return ("down", None)
            latency = 0.0
            if f["latency_prob"] and r.random() < f["latency_prob"]:
                latency = r.uniform(*f["latency"])
                self._count(self.fault_counts, label, "latency")
            if f["drop"] and r.random() < f["drop"]:
                self._count(self.fault_counts, label, "drop")
                return ("drop", latency)
            if self.burst_left > 0:
                self.burst_left -= 1
                self._count(self.fault_counts, label, "5xx")
                return ("5xx", latency)
            if f["burst_prob"] and r.random() < f["burst_prob"]:
                self.burst_left = r.randint(*f["burst_len"]) - 1
                self._count(self.fault_counts, label, "5xx")
                return ("5xx", latency)
            ops = f["throttle_ops"]
            if f["throttle"] and (not ops or short_op(op) in ops) and r.random() < f["throttle"]:
                self._count(self.fault_counts, label, "throttle")
                return ("throttle", latency)
            return ("forward", latency)

    def _draw_delay(self):
        lo, hi = self._faults["visibility"]
        return self.rng.uniform(lo, hi) if hi > 0 else 0.0

    def note_register(self, req, deregister=False):
        try:
            body = json.loads(req or b"{}")
        except ValueError:
            return
        iid = body.get("InstanceId")
        if not iid:
            return
        with self.lock:
            self.seq += 1
            vs = self.instances.setdefault(iid, [])
            if deregister:
                if not vs:
                    return
                delay = self._draw_delay() if self._faults["deregister_delay"] else 0.0
                vs.append(_Version(self.seq, None, time.monotonic(), delay, deregister=True))
            else:
                attrs = body.get("Attributes") or {}
                vs.append(_Version(self.seq, attrs, time.monotonic(), self._draw_delay()))

    def filter_discover(self, label, req, body):
        """DiscoverInstances' answer as this reader may see it now."""
        try:
            doc = json.loads(body)
            reqd = json.loads(req or b"{}")
        except ValueError:
            return body
        if not isinstance(doc, dict) or not isinstance(doc.get("Instances"), list):
            return body
        now = time.monotonic()
        out, listed = [], set()
        # moto 5 appends a second copy of an instance re-registered under the
        # same InstanceId (Cloud Map replaces it) and DeregisterInstance removes
        # only the first: keep one entry per InstanceId, the newest (last).
        newest = {}
        for inst in doc["Instances"]:
            newest[inst.get("InstanceId")] = inst
        with self.lock:
            self.duplicates += len(doc["Instances"]) - len(newest)
            scope = self._faults["visibility_scope"]
            for inst in newest.values():
                iid = inst.get("InstanceId")
                listed.add(iid)
                self.where.setdefault(iid, (inst.get("NamespaceName"), inst.get("ServiceName")))
                v = self._visible(iid, label, scope, now)
                if iid not in self.instances:
                    out.append(inst)  # never seen registering: old, visible
                elif v is not None and not v.deregister:
                    if v.attrs != inst.get("Attributes"):
                        inst = dict(inst, Attributes=dict(v.attrs))
                    out.append(inst)
            # Deregistered upstream but not yet for this reader: still listed.
            for iid, vs in self.instances.items():
                if iid in listed or not vs[-1].deregister:
                    continue
                v = self._visible(iid, label, scope, now)
                if v is None or v.deregister:
                    continue
                ns, svc = self.where.get(iid, (reqd.get("NamespaceName"), reqd.get("ServiceName")))
                if (ns, svc) != (reqd.get("NamespaceName"), reqd.get("ServiceName")):
                    continue
                out.append({"InstanceId": iid, "NamespaceName": ns, "ServiceName": svc,
                            "Attributes": dict(v.attrs), "HealthStatus": "UNKNOWN"})
        doc["Instances"] = out
        return json.dumps(doc).encode()

    def _visible(self, iid, label, scope, now):
        """The newest version of the instance visible to this reader, or None."""
        best = None
        for v in self.instances.get(iid, []):
            if v.visible_at(label, scope, self._draw_delay) <= now and (best is None or v.seq > best.seq):
                best = v
        return best

    def forward(self, method, path, headers, body):
        conn = http.client.HTTPConnection(*self.upstream, timeout=60)
        try:
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, resp.reason, resp.getheaders(), data
        finally:
            conn.close()


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], OSError):  # a client hanging up is no news
            super().handle_error(request, client_address)

    def __init__(self, addr, handler, bind_and_activate=True, family=socket.AF_INET):
        self.address_family = family
        super().__init__(addr, handler, bind_and_activate=bind_and_activate)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "awsproxy"

    def log_message(self, *a):
        pass

    def _reply(self, status, body, headers):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        try:
            self.end_headers()
            self.wfile.write(body)
        except OSError:  # the client gave up (SDK timeout, peer killed)
            self.close_connection = True
            return
        with self.server.proxy.lock:
            st = self.server.proxy.statuses
            st[status] = st.get(status, 0) + 1

    def _error(self, status, code, message, query_protocol):
        rid = str(uuid.uuid4())
        if query_protocol:  # EC2
            body = ('<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>%s</Code>'
                    '<Message>%s</Message></Error></Errors><RequestID>%s</RequestID></Response>'
                    % (code, message, rid)).encode()
            self._reply(status, body, [("Content-Type", "text/xml;charset=UTF-8"), ("x-amzn-RequestId", rid)])
        else:
            body = json.dumps({"__type": code, "message": message}).encode()
            self._reply(status, body, [("Content-Type", "application/x-amz-json-1.1"),
                                       ("x-amzn-ErrorType", code), ("x-amzn-RequestId", rid)])

    def _control(self, body):
        p = self.server.proxy
        if self.command == "GET" and self.path == "/_proxy/stats":
            self._reply(200, json.dumps(p.stats()).encode(), [("Content-Type", "application/json")])
        elif self.command == "POST" and self.path == "/_proxy/faults":
            try:
                p.set_faults(**json.loads(body or b"{}"))
                self._reply(200, json.dumps(p.faults).encode(), [("Content-Type", "application/json")])
            except (ValueError, TypeError) as e:
                self._reply(400, json.dumps({"error": str(e)}).encode(), [("Content-Type", "application/json")])
        else:
            self._reply(404, b"{}", [("Content-Type", "application/json")])

    def handle_one_request(self):
        p = self.server.proxy
        with p.lock:
            f = p._faults
            down = f["down_for"] and time.monotonic() - p.epoch < f["down_for"]
        if down and f["down_mode"] == "close":
            # Before reading anything: the client sees its connection closed.
            with p.lock:
                p._count(p.calls, self.server.label, "(unread: proxy down)")
                p._count(p.fault_counts, self.server.label, "down")
            self.close_connection = True
            return
        super().handle_one_request()

    def do_any(self):
        p = self.server.proxy
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        if self.path.startswith("/_proxy/"):
            return self._control(body)
        op = self.headers.get("X-Amz-Target")
        query = False
        if not op:
            q = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
            ctype = self.headers.get("Content-Type", "")
            if "x-www-form-urlencoded" in ctype:
                q.update(urllib.parse.parse_qs(body.decode("utf-8", "replace")))
            op = (q.get("Action") or [None])[0]
            query = op is not None
            op = op or "%s %s" % (self.command, urllib.parse.urlsplit(self.path).path)
        kind, latency = p.decide_fault(self.server.label, op)
        if latency:
            time.sleep(latency)
        if kind in ("down", "drop"):
            self.close_connection = True
            return
        if kind == "5xx":
            st = p.faults["burst_status"]
            return self._error(st, "Unavailable" if query else "ServiceUnavailable",
                               "Service Unavailable (awsproxy)", query)
        if kind == "throttle":
            if query:
                return self._error(503, "RequestLimitExceeded", "Request limit exceeded.", True)
            return self._error(400, "ThrottlingException", "Rate exceeded", False)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        try:
            status, reason, rh, data = p.forward(self.command, self.path, headers, body)
        except OSError as e:
            return self._error(502, "BadGateway", "awsproxy: upstream failed: %s" % e, query)
        name = short_op(op)
        if status == 200 and name == "RegisterInstance":
            p.note_register(body)
        elif status == 200 and name == "DeregisterInstance":
            p.note_register(body, deregister=True)
        elif status == 200 and name == "DiscoverInstances":
            data = p.filter_discover(self.server.label, body, data)
        self._reply(status, data, [(k, v) for k, v in rh if k.lower() not in HOP_BY_HOP])

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_any


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--listen", action="append", required=True,
                    help="[LABEL=]IP:PORT, loopback only; repeatable (one per client to count calls per client)")
    ap.add_argument("--upstream", required=True, help="moto's server, http://127.0.0.1:PORT")
    ap.add_argument("--stats", help="write the stats as JSON here (every second and at exit)")
    ap.add_argument("--faults", default="{}", help="JSON object of faults: %s" % ", ".join(FAULT_DEFAULTS))
    a = ap.parse_args(argv)
    try:
        proxy = AwsProxy(a.upstream, json.loads(a.faults))
        for spec in a.listen:
            label, _, hp = spec.rpartition("=")
            host, port = parse_hostport(hp)
            got = proxy.add_listener(host, port, label or None)
            print("awsproxy: %s listening on %s:%d -> %s:%d" % (label or hp, host, got, *proxy.upstream),
                  flush=True)
    except ValueError as e:
        print(e, file=sys.stderr)
        return 2
    proxy.start()
    stop = threading.Event()
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, lambda *_: stop.set())

    def dump():
        if a.stats:
            with open(a.stats + ".tmp", "w") as f:
                json.dump(proxy.stats(), f, indent=1)
            import os
            os.replace(a.stats + ".tmp", a.stats)

    while not stop.wait(1.0):
        dump()
    dump()
    proxy.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
