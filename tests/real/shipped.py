"""What ships, read from the shipped files: the image's ENTRYPOINT, CMD and
HEALTHCHECK (docker/Dockerfile) and the task definition's containers, their
environment, secrets and health checks (deploy/ecs-task-definition.json).

An `EcsService` runs tasks of the task definition in the bed: moto holds the
ECS cluster, service and tasks and the Cloud Map service, a task-metadata
endpoint in the root namespace answers each task's
ECS_CONTAINER_METADATA_URI_V4, and each task's containers run with the
task definition's environment. What the bed must change is listed in
`BED_CHANGES` and nowhere else.
"""
import http.server
import json
import os
import re
import secrets
import shutil
import threading

from bed import CLUSTER_BED_ENV, ROOT, SECRET, BedError, sh

DOCKERFILE = os.path.join(ROOT, "docker", "Dockerfile")
TASK_DEF = os.path.join(ROOT, "deploy", "ecs-task-definition.json")
BIN_IN_IMAGE = "/usr/local/bin/ipfs-cluster-bootstrap"
# Where the official ipfs-cluster image keeps things, and where the bed does.
IMAGE_ENV = {"IPFS_CLUSTER_PATH": "/data/ipfs-cluster"}


def dockerfile_exec_form(instruction):
    """The exec-form (JSON array) argument of the last `instruction` line of the Dockerfile."""
    text = open(DOCKERFILE).read().replace("\\\n", " ")
    found = re.findall(r"^%s\s+(.*)$" % instruction, text, re.M)
    if not found:
        raise BedError("docker/Dockerfile has no %s" % instruction)
    arg = found[-1]
    if instruction == "HEALTHCHECK":
        arg = arg[arg.index("CMD") + 3:]
    return json.loads(arg)


def image_argv():
    """ENTRYPOINT + CMD, as the container runs them."""
    return dockerfile_exec_form("ENTRYPOINT") + dockerfile_exec_form("CMD")


TEMPLATE = os.path.join(ROOT, "deploy", "cloudformation.json")
STACK = "ipfs-bed"


def task_definition():
    return json.load(open(TASK_DEF))


def template_task_definition():
    """deploy/cloudformation.json's task definition in the shape of a registered one: its
    intrinsic functions resolved for a stack named STACK in us-east-1 (PeerService's Id is
    filled in by EcsService, which creates that Cloud Map service in moto)."""
    t = json.load(open(TEMPLATE))
    params = {k: v.get("Default") for k, v in t.get("Parameters", {}).items()}
    pseudo = {"AWS::StackName": STACK, "AWS::Region": "us-east-1"}

    def value(v):
        if isinstance(v, str):
            return v
        if "Ref" in v:
            ref = v["Ref"]
            if ref in pseudo:
                return pseudo[ref]
            if ref in params and params[ref] is not None:
                return params[ref]
            raise BedError("the template's Ref %s has no value in the bed" % ref)
        if "Fn::Sub" in v:
            return re.sub(r"\$\{([^}]+)\}", lambda m: value({"Ref": m.group(1)}), v["Fn::Sub"])
        if "Fn::GetAtt" in v:
            res, att = v["Fn::GetAtt"]
            if att == "Id":
                return "<%s.Id>" % res
            if att == "Name":
                return value(t["Resources"][res]["Properties"]["Name"])
        raise BedError("the bed cannot resolve %r" % v)

    [props] = [r["Properties"] for r in t["Resources"].values() if r["Type"] == "AWS::ECS::TaskDefinition"]
    td = {"family": value(props["Family"]), "containerDefinitions": []}
    for c in props["ContainerDefinitions"]:
        td["containerDefinitions"].append({
            "name": c["Name"],
            "environment": [{"name": e["Name"], "value": value(e["Value"])} for e in c.get("Environment", [])],
            "secrets": [{"name": e["Name"]} for e in c.get("Secrets", [])],
            "healthCheck": {"command": c["HealthCheck"]["Command"], "timeout": c["HealthCheck"]["Timeout"]},
        })
    return td


def container(td, name):
    [c] = [c for c in td["containerDefinitions"] if c["name"] == name]
    return c


def health_argv(c):
    """A container's health check as ECS runs it: CMD as is, CMD-SHELL through /bin/sh -c."""
    cmd = c["healthCheck"]["command"]
    if cmd[0] == "CMD":
        return cmd[1:]
    if cmd[0] == "CMD-SHELL":
        return ["/bin/sh", "-c", cmd[1]]
    raise BedError("unknown health check form %r" % cmd[0])


class Local:
    """Maps the image's paths to the bed's: the binary under test, tini from Debian."""

    def __init__(self, bed):
        self.map = {BIN_IN_IMAGE: bed.bin, "/sbin/tini": shutil.which("tini") or "/usr/bin/tini"}

    def argv(self, argv):
        return [self.map.get(a, a) for a in argv]


class MetadataServer:
    """ECS task metadata v4 for every task, at http://<gw>:<port>/v4/<task>/task."""

    def __init__(self, net):
        self.docs = {}
        docs = self.docs

        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                m = re.match(r"^/v4/([^/]+)/task$", self.path)
                body = docs.get(m.group(1)) if m else None
                self.send_response(200 if body else 404)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write((body or "{}").encode())

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer((net.ip_ok(net.gw), 0), H)
        self.url = "http://%s:%d" % (net.gw, self.httpd.server_address[1])
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def add(self, name, doc):
        self.docs[name] = json.dumps(doc)
        return "%s/v4/%s" % (self.url, name)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class EcsService:
    """An ECS service of the shipped task definition, on the bed."""

    CLUSTER, SERVICE = "ipfs", "ipfs-cluster"

    def __init__(self, bed, desired, consensus=None, source="task definition"):
        self.bed, self.desired = bed, desired
        self.td = task_definition() if source == "task definition" else template_task_definition()
        self.local = Local(bed)
        self.cluster_c = container(self.td, "ipfs-cluster")
        self.kubo_c = container(self.td, "ipfs")
        env = {e["name"]: e["value"] for e in self.cluster_c["environment"]}
        self.env = env
        if consensus:
            env["IPFS_CLUSTER_CONSENSUS"] = consensus
        self.service_id = bed.moto.cloudmap(env["BOOTSTRAP_CLOUDMAP_NAMESPACE"], env["BOOTSTRAP_CLOUDMAP_SERVICE"])
        if env.get("BOOTSTRAP_CLOUDMAP_SERVICE_ID") == "<PeerService.Id>":  # the template's GetAtt
            env["BOOTSTRAP_CLOUDMAP_SERVICE_ID"] = self.service_id
        self.password = secrets.token_hex(12)
        # The task definition's secrets, with values of the test's own.
        self.secret_values = {"CLUSTER_SECRET": SECRET, "CLUSTER_RESTAPI_BASICAUTHCREDENTIALS": "admin:" + self.password}
        names = {s["name"] for s in self.cluster_c.get("secrets", [])}
        if names != set(self.secret_values):
            raise BedError("the task definition's secrets changed: %s" % sorted(names))
        ecs = bed.moto.ecs
        bed.moto.hold_ecs_tasks()
        ecs.create_cluster(clusterName=self.CLUSTER)
        ecs.register_task_definition(family=self.td["family"], networkMode="bridge", containerDefinitions=[
            {"name": "ipfs-cluster", "image": "i", "memory": 128}])
        ecs.create_service(cluster=self.CLUSTER, serviceName=self.SERVICE, taskDefinition=self.td["family"],
                           desiredCount=desired)
        self.meta = MetadataServer(bed.net)
        bed.ctl_auth = ("admin", self.password)

    def close(self):
        self.meta.close()

    def run_task(self, t):
        """Registers t as a RUNNING task of the service and gives it its metadata endpoint."""
        arn = self.bed.moto.ecs.run_task(cluster=self.CLUSTER, taskDefinition=self.td["family"], count=1,
                                         launchType="FARGATE")["tasks"][0]["taskArn"]
        t.task_arn = arn
        t.metadata_uri = self.meta.add(t.name, {
            "Cluster": self.CLUSTER, "TaskARN": arn, "ServiceName": self.SERVICE, "Family": self.td["family"],
            "Containers": [{"Name": "ipfs-cluster", "Type": "NORMAL", "Networks": [
                {"NetworkMode": "awsvpc", "IPv4Addresses": [t.ip]}]}]})
        return arn

    def bed_changes(self, t):
        """What the bed changes in the task definition's environment, and why."""
        return dict({
            # Each task's own storage; the image's /data/ipfs-cluster is one folder here.
            "IPFS_CLUSTER_PATH": t.cluster_path,
            # ECS's metadata endpoint and AWS are moto and the bed's server.
            "ECS_CONTAINER_METADATA_URI_V4": t.metadata_uri,
            "BOOTSTRAP_CLOUDMAP_SERVICE_ID": self.service_id,
            **self.bed.moto.env(),
            # Faster: the 5-minute default would only slow a failing test.
            "BOOTSTRAP_TIMEOUT": "120s",
            "BOOTSTRAP_SETTLE": "2s",
            "HOME": t.dir,
        }, **CLUSTER_BED_ENV, **self.bed.path_env())  # offline (no mDNS) and faster timers

    def cluster_env(self, t):
        env = dict(IMAGE_ENV)
        env.update(self.env)
        env.update(self.secret_values)
        env.update(self.bed_changes(t))
        return env

    def start(self, t):
        """Both containers of task t, as ECS starts them: kubo, healthy, then the cluster container."""
        if not getattr(t, "task_arn", None):
            self.run_task(t)
        self.bed.start_kubo(t)
        code, out = self.kubo_health(t)
        if code != 0:
            raise BedError("kubo's health check fails in %s: %s" % (t.name, out))
        t.cluster = t.spawn(self.local.argv(image_argv()), self.cluster_env(t), "cluster")
        return t.cluster

    def kubo_health(self, t):
        p = sh(*self.local.argv(health_argv(self.kubo_c)), ns=t.ns, check=False, env=self.bed.kubo_env(t))
        return p.returncode, p.stdout + p.stderr

    def cluster_health(self, t, env=None):
        """The task definition's health check of the cluster container, in the task."""
        p = sh(*self.local.argv(health_argv(self.cluster_c)), ns=t.ns, check=False, env=env or self.cluster_env(t),
               timeout=self.cluster_c["healthCheck"]["timeout"] + 5)
        return p.returncode, p.stdout + p.stderr

    def image_health(self, t):
        """The Dockerfile's HEALTHCHECK, in the task."""
        p = sh(*self.local.argv(dockerfile_exec_form("HEALTHCHECK")), ns=t.ns, check=False, env=self.cluster_env(t))
        return p.returncode, p.stdout + p.stderr
