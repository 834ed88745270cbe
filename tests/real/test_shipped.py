"""The shipped command lines against the real daemons: the images' argv (the
kubo image's `tini -- ipfs-cluster-bootstrap slot -- start_ipfs daemon ...`,
the cluster image's `tini -- ipfs-cluster-bootstrap daemon`) with the task
definition's environment, secrets and volumes (the state root shared by the
service's tasks, the slot file by a task's two containers), --expect auto from
the ECS service, the task definition's two health checks and the image's
HEALTHCHECK."""
import difflib
import json
import os
import shutil
import subprocess

import pytest

from bed import ROOT, log, sh, stop, wait_for
from shipped import BED_START_IPFS, EcsService, dockerfile_exec_form, image_argv, kubo_image_argv


@pytest.fixture
def service(bed):
    s = EcsService(bed, desired=3)
    yield s
    s.close()


@pytest.mark.parametrize("source", ["task definition", "cloudformation"])
def test_the_image_runs_the_task_definition_and_both_health_checks_pass(bed, source):
    """The standalone task definition's containers, and the template's."""
    service = EcsService(bed, desired=3, source=source)
    assert image_argv()[-1] == "daemon", image_argv()
    assert kubo_image_argv()[2:5] == ["/usr/local/bin/ipfs-cluster-bootstrap", "slot", "--"], kubo_image_argv()
    tasks = [bed.task(k) for k in (1, 2, 3)]
    for t in tasks:
        service.start(t)
    ids = bed.wait_one_cluster(tasks, timeout=150)
    # --expect auto: 3 slots, one per task, each held by its task (ECS task ID) and holding that
    # task's peer: the cluster container works in the slot the kubo container took.
    [root] = service.efs.values()
    assert sorted(t.slot for t in tasks) == [0, 1, 2], [t.slot for t in tasks]
    for t in tasks:
        holder = json.load(open(os.path.join(root, "slots", str(t.slot), "holder.json")))
        assert holder["task"] == t.task_arn.rsplit("/", 1)[1], holder
        assert t.cluster_path == os.path.join(root, "slots", str(t.slot), "cluster")
    assert sorted(os.listdir(os.path.join(root, "slots"))) == ["0", "1", "2"]
    for t in tasks:
        d = bed_decision(t)
        assert d["record"]["facts"]["expect"] == 3, "--expect auto is the desiredCount: %s" % d["record"]["facts"]
    # ECS runs the health checks from the start period on: they pass once the
    # peer is READY in the cluster.
    for t in tasks:
        code, out = wait_for("%s's cluster health check" % t.name, lambda: ok(service.cluster_health(t)), 60)
        assert code == 0, out
        assert service.kubo_health(t)[0] == 0
        assert service.image_health(t)[0] == 0
        assert_no_secrets(out, service)
    log("3 tasks of the %s: one cluster %s, every health check passes" % (source, ids))
    service.close()


def test_health_of_a_real_peer(bed, service):
    """kubo up: healthy. Answering as another peer, kubo down, a stray
    cluster: unhealthy, each with its own reason."""
    tasks = [bed.task(k) for k in (1, 2, 3)]
    for t in tasks:
        service.start(t)
    bed.wait_one_cluster(tasks, timeout=150)
    t1, t2, t3 = tasks
    wait_for("health", lambda: ok(service.cluster_health(t1)), 60)

    # The configured REST API answers as another peer.
    env = service.cluster_env(t1)
    env["CLUSTER_RESTAPI_HTTPLISTENMULTIADDRESS"] = "/ip4/%s/tcp/9094" % t2.ip
    code, out = service.cluster_health(t1, env)
    assert code == 1 and "not as this peer" in out, out

    # kubo down while its container lives (an exited kubo container stops the
    # whole task on ECS, and frees its slot): its RPC API refuses connections.
    # The cluster container restarted with it down (a crdt peer is READY only
    # once kubo answers): unhealthy, and says why.
    stop(t3.cluster)
    t3.cluster = None
    refuse_kubo_api(t3)
    t3.cluster = t3.spawn(service.local.argv(image_argv()), service.cluster_env(t3), "cluster")
    code, out = wait_for("t3's verdict with kubo down",
                         lambda: (lambda r: r if "does not answer /id" not in r[1] else None)(service.cluster_health(t3)),
                         60)
    log("health with kubo down: %s %s" % (code, out.strip()[-300:]))
    assert code == 1 and "kubo" in out.lower(), out
    assert service.kubo_health(t3)[0] != 0
    assert t3.kubo.poll() is None, "kubo's container still runs (and holds its slot)"
    allow_kubo_api(t3)

    # A stray: a task whose peer founded a cluster of its own while the
    # service's peers run another (on a state root of its own: the service's
    # three slots are held). Its health check, as shipped, fails.
    t4 = bed.task(4)
    service.run_task(t4)
    stray_root = service.new_state_root("stray")
    kubo_env = service.kubo_env(t4)
    kubo_env.update({"BOOTSTRAP_STATE_ROOT": stray_root, "BOOTSTRAP_EXPECT": "1"})
    service.start_kubo(t4, kubo_env)
    shipped = dict(service.cluster_env(t4), BOOTSTRAP_STATE_ROOT=stray_root)
    alone = dict(shipped)
    alone.update({"BOOTSTRAP_DISCOVERY": "static", "BOOTSTRAP_PEERS": t4.ip, "BOOTSTRAP_EXPECT": "1",
                  "BOOTSTRAP_VERIFY_TASKS": "false", "BOOTSTRAP_REGISTER": "false"})
    t4.cluster = t4.spawn(service.local.argv(image_argv()), alone, "cluster")
    wait_for("the stray to run", lambda: bed.peers(t4) == [bed.peer_id(t4)], 90)
    # It registers as the service's tasks do (its health check reads Cloud Map).
    bed.moto.sd.register_instance(ServiceId=service.service_id, InstanceId=t4.task_arn.rsplit("/", 1)[1],
                                  Attributes={"AWS_INSTANCE_IPV4": t4.ip})
    code, out = service.cluster_health(t4, shipped)
    log("health of a stray: %s %s" % (code, out.strip()[-300:]))
    assert code == 1 and "minority or stray" in out, out


def ok(result):
    return result if result[0] == 0 else None


def refuse_kubo_api(t):
    """Connections to kubo's RPC API (5001) in task t are refused, as when kubo is down."""
    sh("nft", "-f", "-", ns=t.ns, input="table inet icbkubo { chain out { type filter hook output priority -1; "
       "policy accept; tcp dport 5001 reject with tcp reset; }; }\n")


def allow_kubo_api(t):
    sh("nft", "delete", "table", "inet", "icbkubo", ns=t.ns)


def bed_decision(t):
    from bed import decision
    return decision(t)


def assert_no_secrets(text, service):
    for s in service.secret_values.values():
        assert s not in text
    assert service.password not in text


def test_dockerfile_healthcheck_is_the_task_definitions():
    """The image's HEALTHCHECK runs what the task definition's does (both are executed above)."""
    from shipped import container, health_argv, task_definition
    assert dockerfile_exec_form("HEALTHCHECK") == health_argv(container(task_definition(), "ipfs-cluster"))
    assert shutil.which("tini"), "tini (Debian package) runs the image's ENTRYPOINT in the bed"
    assert os.path.basename(image_argv()[0]) == "tini"


def test_kubo_image_runs_kubos_start_script_behind_slot():
    """The kubo image: `ipfs-cluster-bootstrap slot --` in front of kubo's own ENTRYPOINT
    program and CMD, under tini."""
    assert kubo_image_argv() == ["/sbin/tini", "--", "/usr/local/bin/ipfs-cluster-bootstrap", "slot", "--",
                                 "/usr/local/bin/start_ipfs", "daemon", "--migrate=true",
                                 "--agent-version-suffix=docker"], kubo_image_argv()


def test_the_beds_start_ipfs_is_kubos_with_marked_changes():
    """tests/real/kubo/start_ipfs is kubo's bin/container_daemon (KUBO_VERSION, from the Go
    module cache scripts/build-daemons.sh fills) where every line it adds or changes is marked
    BED (or is the header comment), and none of kubo's lines is dropped without a marked one."""
    version = [line.split("=", 1)[1].strip() for line in open(os.path.join(ROOT, "scripts", "versions.env"))
               if line.startswith("KUBO_VERSION=")][0]
    try:
        cache = subprocess.run(["go", "env", "GOMODCACHE"], capture_output=True, text=True, timeout=30).stdout.strip()
    except FileNotFoundError:
        cache = ""
    original = os.path.join(cache, "github.com", "ipfs", "kubo@%s" % version, "bin", "container_daemon")
    if not cache or not os.path.exists(original):
        pytest.skip("kubo %s's module is not in the Go module cache (scripts/build-daemons.sh)" % version)
    ours = open(BED_START_IPFS).read().splitlines()
    theirs = open(original).read().splitlines()
    assert ours[0] == theirs[0] == "#!/bin/sh"
    sm = difflib.SequenceMatcher(a=theirs, b=ours, autojunk=False)
    for op, a0, a1, b0, b1 in sm.get_opcodes():
        if op == "equal":
            continue
        assert op != "delete", "kubo's lines dropped: %s" % theirs[a0:a1]
        for line in ours[b0:b1]:
            header = b0 == 1 and line.startswith("#")
            assert "BED" in line or header, "an unmarked change to kubo's script: %r" % line
    assert os.access(BED_START_IPFS, os.X_OK)
