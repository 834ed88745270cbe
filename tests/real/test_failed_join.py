"""The failed join (issue 9): a raft joiner whose join fails leaves raft.db
and snapshots/ behind with no raft state. Started again on the same storage
it must end in the existing cluster, never in a one-peer cluster of its own."""
import os

import pytest

from bed import BedError, log, stop, wait_decision, wait_for
from test_launch import launch


def joiner_fails(bed, t, how):
    """Starts t's cluster container and makes the real daemon's join fail."""
    bed.start_cluster(t, bed.cluster_env(t, "raft", ENV))
    d = wait_decision(t)
    assert d["action"] == "join", d
    if how == "cut off":
        # A partition during the join: the daemon's joins fail, its consensus
        # start times out (wait_for_leader + 5 s) and it stops the cluster,
        # but the process stays up with its API closed; ECS's health check
        # then stops the task (SIGTERM).
        t.link(False)
        wait_for("%s's consensus start to time out" % t.name,
                 lambda: t.log_has("cluster", "consensus start timed out"), 90)
        code = stop(t.cluster)
        t.link(True)
    else:
        # SIGTERM while the daemon is joining (ECS stopping the task); its
        # joins are held up so that none can complete first.
        t.block_port(9096)
        wait_for("%s's daemon to start joining" % t.name, lambda: t.log_has("cluster", "Bootstrapping to"), 60,
                 interval=0.05)
        code = stop(t.cluster)
        t.unblock()
    log("the failed joiner exited %s" % code)
    raft = os.path.join(t.cluster_path, "raft")
    assert os.path.exists(os.path.join(raft, "raft.db")), os.listdir(raft)
    t.cluster = None


ENV = {"BOOTSTRAP_DISCOVERY": "cloudmap", "BOOTSTRAP_CLOUDMAP_NAMESPACE": "ipfs",
       "BOOTSTRAP_CLOUDMAP_SERVICE": "cluster-peers", "BOOTSTRAP_EXPECT": "3",
       "BOOTSTRAP_SETTLE": "2s", "BOOTSTRAP_TIMEOUT": "120s"}


@pytest.mark.parametrize("how", ["cut off", "sigterm"])
def test_restarted_failed_joiner_ends_in_the_existing_cluster(bed, how):
    tasks = launch(bed, 3, "raft")
    bed.wait_one_cluster(tasks, timeout=150)
    [joiner] = [bed.task(4)]
    bed.start_kubo(joiner)
    joiner_fails(bed, joiner, how)
    # The same task, restarted on its storage.
    bed.start_cluster(joiner, bed.cluster_env(joiner, "raft", ENV))
    d = wait_decision(joiner)
    log("restart decided %s: %s" % (d["action"], d["reason"]))
    try:
        bed.wait_one_cluster(tasks + [joiner], timeout=90)
    except BedError:
        alone = bed.peers(joiner)
        raise AssertionError("the restarted joiner is not in the cluster: it decided %s (%s) and its "
                             "peers ls lists %s" % (d["action"], d["reason"], alone))
