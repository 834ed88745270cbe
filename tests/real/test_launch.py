"""Launches against the real daemons: each task a namespace with real kubo,
ipfs-cluster-bootstrap and the real ipfs-cluster-service it execs."""
import pytest

from bed import log, raft_leaders, wait_for


def launch(bed, n, consensus, expect=None, first=1, extra=None):
    svc = bed.moto.cloudmap() if not hasattr(bed, "svc") else bed.svc
    bed.svc = svc
    tasks = [bed.task(k) for k in range(first, first + n)]
    for t in tasks:
        bed.start_kubo(t, wait=False)
    for t in tasks:
        bed.wait_kubo(t)
    env_extra = {"BOOTSTRAP_DISCOVERY": "cloudmap", "BOOTSTRAP_CLOUDMAP_NAMESPACE": "ipfs",
                 "BOOTSTRAP_CLOUDMAP_SERVICE": "cluster-peers", "BOOTSTRAP_EXPECT": str(expect or n),
                 "BOOTSTRAP_SETTLE": "2s", "BOOTSTRAP_TIMEOUT": "120s"}
    env_extra.update(extra or {})
    for t in tasks:
        bed.start_cluster(t, bed.cluster_env(t, consensus, env_extra))
    return tasks


@pytest.mark.parametrize("consensus", ["crdt", "raft"])
def test_five_at_once_over_cloudmap_then_a_sixth_joins(bed, consensus):
    tasks = launch(bed, 5, consensus)
    ids = bed.wait_one_cluster(tasks, timeout=150)
    log("one cluster of 5: %s" % ids)
    if consensus == "raft":
        assert_one_leader(tasks, ids)
    sixth = launch(bed, 1, consensus, expect=5, first=6)
    ids = bed.wait_one_cluster(tasks + sixth, timeout=120)
    if consensus == "raft":
        assert_one_leader(tasks + sixth, ids)


def assert_one_leader(tasks, ids):
    """Every raft peer names the same leader, one of the voters `peers ls` lists."""
    leaders = wait_for("every raft peer to name a leader",
                       lambda: (lambda l: l if len(l) == len(tasks) else None)(raft_leaders(tasks)), 30)
    assert len(set(leaders.values())) == 1, "more than one raft leader: %s" % leaders
    assert set(leaders.values()) <= set(ids), (leaders, ids)
