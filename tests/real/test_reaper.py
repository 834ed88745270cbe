"""The raft reaper (--reap-after) on the real daemons, without a state root:
5 raft peers of ECS tasks (moto holds the tasks, a metadata endpoint gives
each its task ID, Cloud Map with --verify-tasks, --supervise as shipped).

Two tasks crash (SIGKILL). While ECS still reports them RUNNING their voters
stay, however long. Once ECS reports them STOPPED, the reapers remove both
voters, one at a time, with a quorum of live voters at every sample of a
staying peer's `peers ls`, and the cluster goes on with 3 voters and a
leader. Then two of the three crash and are reported STOPPED: one live voter
of three is no quorum, so nothing is removed, and the survivor says why.
"""
import time

from bed import RAFT_ROLE_LOGS, log, raft_roles, stop, wait_for
from shipped import MetadataServer
from test_durability import ENV
from test_scale_in import QuorumWatch, quorum

GRACE = 4
CLUSTER = "ipfs"


def voters(bed, t):
    """`peers ls` on t: (voters, live voters)."""
    peers = bed.ctl(t, "peers", "ls", timeout=20)
    return len(peers), sum(1 for p in peers if not p.get("error"))


def crash(bed, t):
    stop(t.cluster, kill=True)
    stop(t.kubo, kill=True)
    t.cluster = t.kubo = None


def logs(t):
    return open(t.cluster.logpath if t.cluster else "%s/cluster.1.log" % t.dir, errors="replace").read()


def test_reaper_removes_stopped_tasks_voters_one_at_a_time_and_never_without_quorum(bed):
    ecs = bed.moto.ecs
    bed.moto.hold_ecs_tasks()
    ecs.create_cluster(clusterName=CLUSTER)
    ecs.register_task_definition(family="ipfs-cluster", networkMode="bridge",
                                 containerDefinitions=[{"name": "ipfs-cluster", "image": "i", "memory": 128}])
    meta = MetadataServer(bed.net)
    bed.moto.cloudmap()
    tasks = [bed.task(k) for k in range(1, 6)]
    for t in tasks:
        t.task_arn = ecs.run_task(cluster=CLUSTER, taskDefinition="ipfs-cluster", count=1,
                                  launchType="FARGATE")["tasks"][0]["taskArn"]
        uri = meta.add(t.name, {"Cluster": CLUSTER, "TaskARN": t.task_arn, "Family": "ipfs-cluster",
                                "Containers": [{"Name": "ipfs-cluster", "Type": "NORMAL", "Networks": [
                                    {"NetworkMode": "awsvpc", "IPv4Addresses": [t.ip]}]}]})
        t.env = dict(ENV, **RAFT_ROLE_LOGS, BOOTSTRAP_VERIFY_TASKS="true", BOOTSTRAP_SUPERVISE="true",
                     BOOTSTRAP_REAP_AFTER="%ds" % GRACE, ECS_CONTAINER_METADATA_URI_V4=uri)
        t.env.pop("BOOTSTRAP_ADVERTISE_IP", None)
        bed.start_kubo(t, wait=False)
    for t in tasks:
        bed.wait_kubo(t)
        bed.start_cluster(t, bed.cluster_env(t, "raft", t.env))
    ids = bed.wait_one_cluster(tasks, timeout=150)
    id_of = {t.name: bed.peer_id(t) for t in tasks}
    log("5 raft voters: %s" % ids)

    dead, live = tasks[3:], tasks[:3]
    watch = QuorumWatch(bed, live[0])
    watch.start()
    for t in dead:
        crash(bed, t)
    # ECS has not noticed yet: the voters stay, past the grace.
    time.sleep(3 * GRACE)
    assert voters(bed, live[0]) == (5, 3), voters(bed, live[0])
    log("crashed %s; after %d s with their tasks RUNNING in ECS: still 5 voters" % ([t.name for t in dead],
                                                                                    3 * GRACE))
    t0 = time.time()
    for t in dead:
        ecs.stop_task(cluster=CLUSTER, task=t.task_arn, reason="Essential container in task exited")
    wait_for("the stopped tasks' voters removed", lambda: voters(bed, live[0]) == (3, 3), 90, interval=1)
    took = time.time() - t0
    time.sleep(2)
    watch.stop()
    bad = [(n, up) for _, n, up in watch.samples if up < quorum(n)]
    assert not bad and not watch.errors, (bad, watch.errors)
    counts = [n for _, n, _ in watch.samples]
    assert counts == sorted(counts, reverse=True), "the voters only shrink: %s" % counts
    removed = set()
    for t in live:
        for line in logs(t).splitlines():
            if "removed the voter of a stopped task" in line:
                removed.update(i for i in id_of.values() if i in line)
    assert removed == {id_of[t.name] for t in dead}, removed
    for t in live:
        assert voters(bed, t) == (3, 3), (t.name, voters(bed, t))
    roles = wait_for("one raft leader among the 3", lambda: (lambda r: r if sorted(r.values()).count("leader") == 1
                                                             and len(r) == 3 else None)(raft_roles(live)), 60)
    log("reaped in %.1f s after ECS reported the tasks STOPPED (grace %d s); voters seen %s; roles %s"
        % (took, GRACE, sorted(set(counts), reverse=True), roles))

    # Two of the three crash and stop: 1 live voter of 3 is no quorum; nothing is removed.
    survivor = live[0]
    for t in live[1:]:
        crash(bed, t)
        ecs.stop_task(cluster=CLUSTER, task=t.task_arn, reason="Essential container in task exited")
    wait_for("the survivor saying it has no quorum",
             lambda: "1 of 3 voters answer" in logs(survivor), 60, interval=1)
    time.sleep(3 * GRACE)
    assert voters(bed, survivor) == (3, 1), voters(bed, survivor)
    assert "removed the voter" not in "".join(
        line for line in logs(survivor).splitlines()[-200:] if any(id_of[t.name] in line for t in live[1:]))
    log("1 of 3 voters live: nothing removed, and %s says why" % survivor.name)
    meta.close()
