"""The shipped command lines against the real daemons: the image's argv
(`tini -- ipfs-cluster-bootstrap daemon`) with the task definition's
environment and secrets, --expect auto from the ECS service, the task
definition's two health checks and the image's HEALTHCHECK."""
import os
import shutil

import pytest

from bed import log, stop, wait_for
from shipped import EcsService, dockerfile_exec_form, image_argv


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
    tasks = [bed.task(k) for k in (1, 2, 3)]
    for t in tasks:
        service.start(t)
    ids = bed.wait_one_cluster(tasks, timeout=150)
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

    # kubo down, and the cluster container restarted with it down (a crdt
    # peer is READY only once kubo answers): unhealthy, and says why.
    stop(t3.cluster)
    stop(t3.kubo)
    t3.cluster = t3.kubo = None
    t3.cluster = t3.spawn(service.local.argv(image_argv()), service.cluster_env(t3), "cluster")
    code, out = wait_for("t3's verdict with kubo down",
                         lambda: (lambda r: r if "does not answer /id" not in r[1] else None)(service.cluster_health(t3)),
                         60)
    log("health with kubo down: %s %s" % (code, out.strip()[-300:]))
    assert code == 1 and "kubo" in out.lower(), out
    assert service.kubo_health(t3)[0] != 0

    # A stray: a task whose peer founded a cluster of its own while the
    # service's peers run another. Its health check, as shipped, fails.
    t4 = bed.task(4)
    service.run_task(t4)
    bed.start_kubo(t4)
    alone = service.cluster_env(t4)
    alone.update({"BOOTSTRAP_DISCOVERY": "static", "BOOTSTRAP_PEERS": t4.ip, "BOOTSTRAP_EXPECT": "1",
                  "BOOTSTRAP_VERIFY_TASKS": "false", "BOOTSTRAP_REGISTER": "false"})
    t4.cluster = t4.spawn(service.local.argv(image_argv()), alone, "cluster")
    wait_for("the stray to run", lambda: bed.peers(t4) == [bed.peer_id(t4)], 90)
    # It registers as the service's tasks do (its health check reads Cloud Map).
    bed.moto.sd.register_instance(ServiceId=service.service_id, InstanceId=t4.task_arn.rsplit("/", 1)[1],
                                  Attributes={"AWS_INSTANCE_IPV4": t4.ip})
    code, out = service.cluster_health(t4)
    log("health of a stray: %s %s" % (code, out.strip()[-300:]))
    assert code == 1 and "minority or stray" in out, out


def ok(result):
    return result if result[0] == 0 else None


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
