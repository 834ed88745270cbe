"""What ships, read from the shipped files: the images' ENTRYPOINT, CMD and
HEALTHCHECK (docker/Dockerfile: the cluster image is its last stage, the kubo
image its `kubo` stage) and the task definition's containers, their
environment, secrets, volumes and health checks (deploy/ecs-task-definition.json,
or the template's).

An `EcsService` runs tasks of the task definition in the bed: moto holds the
ECS cluster, service and tasks and the Cloud Map service, a task-metadata
endpoint in the root namespace answers each task's
ECS_CONTAINER_METADATA_URI_V4, and each task's two containers run their
image's command line with the task definition's environment: the kubo
container `ipfs-cluster-bootstrap slot -- start_ipfs daemon ...`, which claims
a state slot and execs kubo's own start script on it, then the cluster
container. The task definition's EFS volume (the state root) is one folder
shared by every task of the service; its host-less volume (the slot file) is
a folder per task. What the bed must change is listed in `bed_changes` and
`kubo_bed_changes` and nowhere else; kubo's start script is
tests/real/kubo/start_ipfs, kubo's bin/container_daemon with the bed's
differences marked.
"""
import copy
import http.server
import json
import os
import re
import secrets
import shutil
import threading
import time

from bed import CLUSTER_BED_ENV, ROOT, SECRET, BedError, kubo_offline, log, sh

DOCKERFILE = os.path.join(ROOT, "docker", "Dockerfile")
TASK_DEF = os.path.join(ROOT, "deploy", "ecs-task-definition.json")
BIN_IN_IMAGE = "/usr/local/bin/ipfs-cluster-bootstrap"
# Where the official ipfs-cluster image keeps things, and where the bed does.
IMAGE_ENV = {"IPFS_CLUSTER_PATH": "/data/ipfs-cluster"}
# The official kubo image's environment (ipfs/kubo:v0.43.0's Dockerfile: ENV lines).
KUBO_IMAGE_ENV = {"IPFS_PATH": "/data/ipfs", "GOLOG_LOG_LEVEL": "", "SRC_DIR": "/kubo"}
# kubo's start script in its image (bin/container_daemon), and the bed's copy of it.
START_IPFS = "/usr/local/bin/start_ipfs"
BED_START_IPFS = os.path.join(ROOT, "tests", "real", "kubo", "start_ipfs")


def dockerfile_stages():
    """[(stage name or None, [(INSTRUCTION, argument)])] of docker/Dockerfile, in order:
    continuation lines joined, comments dropped."""
    stages = []
    for line in open(DOCKERFILE).read().replace("\\\n", " ").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        ins, _, arg = line.partition(" ")
        ins, arg = ins.upper(), arg.strip()
        if ins == "FROM":
            m = re.match(r"^\S+\s+AS\s+(\S+)$", arg, re.I)
            stages.append((m.group(1) if m else None, []))
        elif not stages:
            raise BedError("docker/Dockerfile: %s before the first FROM" % ins)
        stages[-1][1].append((ins, arg))
    return stages


def dockerfile_exec_form(instruction, stage=None):
    """The exec-form (JSON array) argument of the last `instruction` line of a stage of the
    Dockerfile: `stage` by name, else the last stage (what `docker build` builds by default)."""
    stages = dockerfile_stages()
    if stage is None:
        name, lines = stages[-1]
    else:
        found = [s for s in stages if s[0] == stage]
        if not found:
            raise BedError("docker/Dockerfile has no stage %s" % stage)
        name, lines = found[-1]
    args = [a for i, a in lines if i == instruction]
    if not args:
        raise BedError("docker/Dockerfile's stage %s has no %s" % (name or "(last)", instruction))
    arg = args[-1]
    if instruction == "HEALTHCHECK":
        arg = arg[arg.index("CMD") + 3:]
    return json.loads(arg)


def image_argv(stage=None):
    """ENTRYPOINT + CMD, as the container runs them: the cluster image's (the last stage) by default."""
    return dockerfile_exec_form("ENTRYPOINT", stage) + dockerfile_exec_form("CMD", stage)


def kubo_image_argv():
    """The kubo image's (`--target kubo`) ENTRYPOINT + CMD."""
    return image_argv("kubo")


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
            if ref in t["Resources"]:  # a resource's ID (the EFS file system, its access point)
                return "<%s>" % ref
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
    td = {"family": value(props["Family"]), "containerDefinitions": [], "volumes": []}
    for v in props.get("Volumes", []):
        vol = {"name": v["Name"]}
        if "EFSVolumeConfiguration" in v:
            efs = v["EFSVolumeConfiguration"]
            vol["efsVolumeConfiguration"] = {
                "fileSystemId": value(efs["FilesystemId"]), "rootDirectory": efs.get("RootDirectory", "/"),
                "authorizationConfig": {"accessPointId": value(efs["AuthorizationConfig"]["AccessPointId"])}}
        td["volumes"].append(vol)
    for c in props["ContainerDefinitions"]:
        td["containerDefinitions"].append({
            "name": c["Name"],
            "environment": [{"name": e["Name"], "value": value(e["Value"])} for e in c.get("Environment", [])],
            "secrets": [{"name": e["Name"]} for e in c.get("Secrets", [])],
            "mountPoints": [{"sourceVolume": m["SourceVolume"], "containerPath": m["ContainerPath"]}
                            for m in c.get("MountPoints", [])],
            "healthCheck": {"command": c["HealthCheck"]["Command"], "timeout": c["HealthCheck"]["Timeout"]},
            # Fargate's default when unset: SIGKILL 30 s after SIGTERM.
            "stopTimeout": c.get("StopTimeout", 30),
        })
    return td


def access_point_creation_info():
    """(uid, gid, mode) the template's EFS access point gives its root directory: the state
    root as the containers find it."""
    res = json.load(open(TEMPLATE))["Resources"]
    [ap] = [r["Properties"] for r in res.values() if r["Type"] == "AWS::EFS::AccessPoint"]
    ci = ap["RootDirectory"]["CreationInfo"]
    return int(ci["OwnerUid"]), int(ci["OwnerGid"]), int(ci["Permissions"], 8)


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
    """Maps the images' paths to the bed's: the binary under test, tini from Debian, and
    (given `start_ipfs`) kubo's start script."""

    def __init__(self, bed, start_ipfs=None):
        self.map = {BIN_IN_IMAGE: bed.bin, "/sbin/tini": shutil.which("tini") or "/usr/bin/tini"}
        if start_ipfs:
            self.map[START_IPFS] = start_ipfs

    def argv(self, argv):
        return [self.map.get(a, a) for a in argv]


def offline_config_lines(base):
    """bed.kubo_offline as `KEY JSON` lines, one per top-level section it changes in `base`
    (a config `ipfs init --profile=test` wrote): what the bed's start_ipfs applies with
    `ipfs config --json KEY JSON` right after `ipfs init`."""
    off = kubo_offline(copy.deepcopy(base))
    missing = set(base) - set(off)
    if missing:
        raise BedError("kubo_offline removed %s: start_ipfs only sets keys" % sorted(missing))
    return ["%s %s" % (k, json.dumps(off[k], separators=(",", ":"))) for k in off if off[k] != base.get(k)]


def assert_offline(config_path):
    """The repo's config has every setting of bed.kubo_offline (nothing leaves the bed)."""
    cfg = json.load(open(config_path))
    want = kubo_offline(copy.deepcopy(cfg))
    if want != cfg:
        diff = sorted(k for k in want if want[k] != cfg.get(k))
        raise BedError("%s lacks the bed's offline settings in %s" % (config_path, diff))


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
        # The kubo image's files as the bed has them: its start script (run by uid 1000 after the
        # privilege drop, so not under root's folders) and an empty /container-init.d beside it.
        image = os.path.join(bed.workdir, "kubo-image")
        os.makedirs(os.path.join(image, "container-init.d"), exist_ok=True)
        os.chmod(image, 0o755)
        self.start_ipfs = os.path.join(image, "start_ipfs")
        shutil.copyfile(BED_START_IPFS, self.start_ipfs)
        os.chmod(self.start_ipfs, 0o755)
        self.offline_file = os.path.join(image, "offline-config")
        self.local = Local(bed, self.start_ipfs)
        self.cluster_c = container(self.td, "ipfs-cluster")
        self.kubo_c = container(self.td, "ipfs")
        self.volumes = {v["name"]: v for v in self.td.get("volumes", [])}
        # Each EFS file system (the state root): one folder for every task of the service, as
        # the access point makes it (owner and mode of its root directory).
        self.efs = {}
        for name, v in self.volumes.items():
            if "efsVolumeConfiguration" in v:
                self.efs[name] = self.new_state_root(name)
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

    def new_state_root(self, name):
        """A folder standing in for an EFS access point's root directory."""
        uid, gid, mode = access_point_creation_info()
        path = os.path.join(self.bed.workdir, "efs-%s" % name)
        os.makedirs(path)
        os.chown(path, uid, gid)
        os.chmod(path, mode)
        return path

    def mounts(self, c, t):
        """{container path: the bed's folder} for container c of task t: an EFS volume is the
        service's shared folder, a host-less volume a folder of the task's own."""
        out = {}
        for m in c.get("mountPoints", []):
            name = m["sourceVolume"]
            if name in self.efs:
                out[m["containerPath"]] = self.efs[name]
            else:
                path = os.path.join(t.dir, "volumes", name)
                os.makedirs(path, exist_ok=True)
                out[m["containerPath"]] = path
        return out

    def localize(self, env, c, t):
        """env of container c in task t, its values under c's mount points moved to the bed's folders."""
        mounts = self.mounts(c, t)

        def local(v):
            for cpath, path in mounts.items():
                if v == cpath or v.startswith(cpath.rstrip("/") + "/"):
                    return path + v[len(cpath.rstrip("/")):]
            return v
        return {k: local(v) for k, v in env.items()}

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
        env.update(self.localize(self.env, self.cluster_c, t))
        env.update(self.secret_values)
        env.update(self.bed_changes(t))
        return env

    def kubo_bed_changes(self, t):
        """What the bed changes in the kubo container's environment, and why."""
        return dict({
            # The image's IPFS_PATH (a volume, empty: `slot` points kubo at the slot's repo).
            "IPFS_PATH": os.path.join(t.dir, "image-data-ipfs"),
            # ECS's metadata endpoint and AWS (--expect auto) are moto and the bed's server.
            "ECS_CONTAINER_METADATA_URI_V4": t.metadata_uri,
            **self.bed.moto.env(),
            "BOOTSTRAP_TIMEOUT": "120s",
            # Offline: `ipfs init --profile=test` (the image's own IPFS_PROFILE), then the bed's
            # settings (start_ipfs applies this file), and no telemetry.
            "IPFS_PROFILE": "test",
            "BED_KUBO_OFFLINE": self.offline_file,
            "IPFS_TELEMETRY": "off",
            "HOME": t.dir,
        }, **self.bed.path_env())

    def kubo_env(self, t):
        env = dict(KUBO_IMAGE_ENV)
        env.update(self.localize({e["name"]: e["value"] for e in self.kubo_c.get("environment", [])}, self.kubo_c, t))
        env.update(self.kubo_bed_changes(t))
        os.makedirs(env["IPFS_PATH"], exist_ok=True)
        return env

    def write_offline_config(self, t):
        """The bed's kubo settings as start_ipfs applies them, from a config `ipfs init
        --profile=test` writes (once, in task t's namespace)."""
        if os.path.exists(self.offline_file):
            return
        scratch = os.path.join(self.bed.workdir, "kubo-init-scratch")
        env = dict(self.bed.path_env(), HOME=t.dir, IPFS_PATH=scratch, IPFS_TELEMETRY="off")
        sh("env", *("%s=%s" % kv for kv in env.items()), "ipfs", "init", "--profile=test", ns=t.ns)
        lines = offline_config_lines(json.load(open(os.path.join(scratch, "config"))))
        shutil.rmtree(scratch)
        with open(self.offline_file, "w") as f:
            f.write("".join(line + "\n" for line in lines))
        os.chmod(self.offline_file, 0o644)

    def start_kubo(self, t, env=None, wait=True):
        """The kubo container of task t: the kubo image's ENTRYPOINT + CMD (`ipfs-cluster-bootstrap
        slot -- start_ipfs daemon ...`). Once it has taken a slot, t's ipfs_path and cluster_path
        are that slot's folders."""
        self.write_offline_config(t)
        env = env or self.kubo_env(t)
        slot_file = env["BOOTSTRAP_SLOT_FILE"]
        try:
            os.unlink(slot_file)  # a new container writes its own
        except FileNotFoundError:
            pass
        t.kubo = t.spawn(self.local.argv(kubo_image_argv()), env, "kubo")

        deadline = time.time() + 150
        while not os.path.exists(slot_file):
            if t.kubo.poll() is not None:
                raise BedError("the kubo container of %s exited %s (%s)" % (t.name, t.kubo.returncode, t.kubo.logpath))
            if time.time() > deadline:
                raise BedError("the kubo container of %s took no slot in 150 s (%s)" % (t.name, t.kubo.logpath))
            time.sleep(0.2)
        s = json.load(open(slot_file))
        root = env["BOOTSTRAP_STATE_ROOT"]
        if os.path.realpath(s["state_root"]) != os.path.realpath(root):
            raise BedError("%s's slot file names state root %s, not %s" % (t.name, s["state_root"], root))
        t.slot = s["slot"]
        t.ipfs_path = os.path.join(root, "slots", str(t.slot), "ipfs")
        t.cluster_path = os.path.join(root, "slots", str(t.slot), "cluster")
        log("%s's kubo container took slot %d" % (t.name, t.slot))
        if wait:
            self.bed.wait_kubo(t)
            assert_offline(os.path.join(t.ipfs_path, "config"))
        return t.kubo

    def start(self, t):
        """Both containers of task t, as ECS starts them: kubo, healthy, then the cluster container."""
        if not getattr(t, "task_arn", None):
            self.run_task(t)
        self.start_kubo(t)
        code, out = self.kubo_health(t)
        if code != 0:
            raise BedError("kubo's health check fails in %s: %s" % (t.name, out))
        t.cluster = t.spawn(self.local.argv(image_argv()), self.cluster_env(t), "cluster")
        return t.cluster

    def kubo_health(self, t):
        """The task definition's health check of the kubo container, in the task, with its timeout."""
        p = sh(*self.local.argv(health_argv(self.kubo_c)), ns=t.ns, check=False, env=self.kubo_env(t),
               timeout=self.kubo_c["healthCheck"].get("timeout", 5) + 5)
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
