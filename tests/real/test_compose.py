"""docker/docker-compose.yml (and docker-compose.dns.yml) run as compose runs
them, on the bed: every service a namespace of its own (a container), at the
address compose gives it (the file's subnet mapped onto the bed's), with its
name in every other service's /etc/hosts (docker's embedded DNS), in
depends_on order, each health check run until it passes. The cluster
services run the image's ENTRYPOINT + CMD (docker/Dockerfile), the setup
service its own command, moto moto's server, kubo kubo's CMD.

What the bed changes, here and nowhere else: paths inside images
(/data/...), `python3` is the venv's, the cluster's offline settings
(CLUSTER_BED_ENV: mDNS off, faster timers), and CLUSTER_SECRET's value."""
import ipaddress
import os
import re

import pytest
import yaml

from bed import CLUSTER_BED_ENV, ROOT, SECRET, VENV, BedError, log, sh, wait_for
from shipped import Local, image_argv

COMPOSE = os.path.join(ROOT, "docker", "docker-compose.yml")
COMPOSE_DNS = os.path.join(ROOT, "docker", "docker-compose.dns.yml")


def merged(files):
    """The compose model of `files` merged in order (environment and network aliases merge)."""
    out = {}
    for path in files:
        doc = yaml.safe_load(open(path))
        for name, svc in doc.get("services", {}).items():
            base = out.setdefault("services", {}).setdefault(name, {})
            for k, v in svc.items():
                if k == "environment":
                    base.setdefault("environment", {}).update(v)
                elif k == "networks":  # a list of names, or a map of name: settings
                    for net, conf in (v.items() if isinstance(v, dict) else ((n, None) for n in v)):
                        base.setdefault("networks", {}).setdefault(net, {}).update(conf or {})
                else:
                    base[k] = v
        for k in ("networks", "volumes"):
            out.setdefault(k, {}).update(doc.get(k) or {})
    return out


def interpolate(value, env):
    """Compose's ${VAR:?message} and $$ (the only forms the file uses)."""
    def var(m):
        name = m.group(1)
        if name not in env:
            raise BedError("compose would refuse to start: %s is unset (%s)" % (name, m.group(2)))
        return env[name]
    return re.sub(r"\$\{(\w+):\?([^}]*)\}", var, value).replace("$$", "$")


class Compose:
    def __init__(self, bed, files):
        self.bed, self.model = bed, merged(files)
        self.local = Local(bed)
        [net] = self.model["networks"].values()
        ipam = net["ipam"]["config"][0]
        self.subnet = ipaddress.ip_network(ipam["subnet"])
        dynamic = ipaddress.ip_network(ipam["ip_range"])
        self.free = (h for h in dynamic.hosts())
        self.tasks, self.aliases = {}, {}
        for name, svc in self.model["services"].items():
            conf = (svc.get("networks") or {}).get("ipfs") or {}
            ip = conf.get("ipv4_address") or str(next(self.free))
            k = int(ipaddress.ip_address(ip)) - int(self.subnet.network_address)
            self.tasks[name] = t = bed.task(k, name)
            bed.net.hosts[name] = t.ip
            for alias in conf.get("aliases") or []:
                self.aliases.setdefault(alias, []).append(t.ip)
        for t in self.tasks.values():
            t.write_hosts()
        for alias, ips in self.aliases.items():  # docker's DNS answers an alias with every address
            bed.net.dns.set(alias, ips)

    def map_ip(self, text):
        """The file's addresses, moved onto the bed's subnet (same host part)."""
        def one(m):
            a = ipaddress.ip_address(m.group(0))
            if a in self.subnet:
                return self.bed.net.ip_ok(str(ipaddress.ip_address(
                    int(self.bed.net.subnet.network_address) + int(a) - int(self.subnet.network_address))))
            return m.group(0)
        return re.sub(r"\d+\.\d+\.\d+\.\d+", one, text)

    def env(self, name, extra=None):
        svc = self.model["services"][name]
        t = self.tasks[name]
        env = dict(self.bed.path_env(), HOME=t.dir)
        for k, v in (svc.get("environment") or {}).items():
            env[k] = self.map_ip(interpolate(str(v), {"CLUSTER_SECRET": SECRET}))
        env.update(extra or {})
        return env

    def health(self, name):
        test = self.model["services"][name].get("healthcheck", {}).get("test")
        if not test:
            return True
        argv = test[1:] if test[0] == "CMD" else ["/bin/sh", "-c", test[1]]
        argv = [os.path.join(VENV, "python") if a == "python3" else a for a in argv]
        env = self.bed.kubo_env(self.tasks[name]) if name.startswith("ipfs") else self.env(name)
        return sh(*argv, ns=self.tasks[name].ns, check=False, env=env).returncode == 0

    def start(self, name):
        svc, t = self.model["services"][name], self.tasks[name]
        for dep, cond in (svc.get("depends_on") or {}).items():
            self.wait(dep, cond["condition"])
        image = svc.get("image", "")
        if image.startswith("motoserver/moto") and svc.get("entrypoint"):
            # A one-shot on moto's image (it has boto3): its own command.
            argv = [os.path.join(VENV, "python") if a == "python3" else a for a in svc["entrypoint"]]
            t.kubo = t.spawn(argv + list(svc.get("command") or []), self.env(name), "oneshot")
        elif image.startswith("motoserver/moto"):  # the image's entrypoint
            t.kubo = t.spawn([os.path.join(VENV, "moto_server"), "-H", "0.0.0.0", "-p", "5000"], self.env(name),
                             "moto")
        elif image.startswith("ipfs/kubo"):
            self.bed.start_kubo(t, wait=False)
        elif svc.get("build"):
            env = self.env(name, dict(CLUSTER_BED_ENV, IPFS_CLUSTER_PATH=t.cluster_path))
            t.cluster = t.spawn(self.local.argv(image_argv()), env, "cluster")
        else:
            raise BedError("service %s: unknown image %s" % (name, image))

    def wait(self, name, condition):
        t = self.tasks[name]
        if condition == "service_healthy":
            wait_for("%s healthy" % name, lambda: self.health(name), 120, interval=1)
        elif condition == "service_completed_successfully":
            wait_for("%s to complete" % name, lambda: t.kubo.poll() is not None, 120)
            if t.kubo.returncode != 0:
                raise BedError("%s exited %s (%s)" % (name, t.kubo.returncode, t.kubo.logpath))
        else:
            raise BedError("unknown depends_on condition %s" % condition)

    def up(self):
        """Starts every service, dependencies first (compose's order)."""
        started = set()

        def visit(name):
            if name in started:
                return
            for dep in self.model["services"][name].get("depends_on") or {}:
                visit(dep)
            self.start(name)
            started.add(name)
        for name in self.model["services"]:
            visit(name)


@pytest.mark.parametrize("files", [[COMPOSE], [COMPOSE, COMPOSE_DNS]], ids=["cloudmap", "dns"])
def test_compose_up_forms_one_cluster(bed, files):
    c = Compose(bed, files)
    c.up()
    clusters = [c.tasks[n] for n in sorted(c.model["services"]) if c.model["services"][n].get("build")]
    ids = bed.wait_one_cluster(clusters, timeout=150)
    log("compose (%s): one cluster %s" % (" + ".join(os.path.basename(f) for f in files), ids))
    # Which discovery ran: the peers registered in compose's moto, or made no AWS call at all.
    import boto3
    import botocore.config
    sd = boto3.client("servicediscovery", region_name="us-east-1", aws_access_key_id="testing",
                      aws_secret_access_key="testing", endpoint_url="http://%s:5000" % c.tasks["moto"].ip,
                      config=botocore.config.Config(inject_host_prefix=False))
    [svc] = sd.list_services()["Services"]
    registered = sorted(i["Attributes"]["AWS_INSTANCE_IPV4"] for i in sd.list_instances(ServiceId=svc["Id"])["Instances"])
    assert registered == ([] if len(files) > 1 else sorted(t.ip for t in clusters)), registered


def test_compose_refuses_to_start_without_a_secret():
    """`${CLUSTER_SECRET:?…}`: compose stops before starting anything."""
    model = merged([COMPOSE])
    with pytest.raises(BedError, match="CLUSTER_SECRET is unset"):
        interpolate(model["services"]["cluster0"]["environment"]["CLUSTER_SECRET"], {})
