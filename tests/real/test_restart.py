"""Restarts on kept storage, and launches over DNS and a static list, against the real daemons."""
import pytest

from bed import decision, log
from test_launch import assert_one_leader, launch


def restart(bed, t, env):
    """Stops both containers of t and starts them again on the same storage."""
    t.stop_all()
    bed.start_kubo(t)
    bed.start_cluster(t, env)


@pytest.mark.parametrize("consensus", ["crdt", "raft"])
def test_restart_on_kept_storage(bed, consensus):
    tasks = launch(bed, 3, consensus)
    ids = bed.wait_one_cluster(tasks, timeout=150)
    # Something in the log: a pin, through the first peer.
    cid = bed.ctl(tasks[0], "pin", "add", "--wait", "--wait-timeout", "60s", "bafkqaaa")[0]["cid"]
    for t in tasks:  # one by one
        restart(bed, t, bed.cluster_env(t, consensus, ENV))
        d = bed.wait_for_decision(t)
        assert d["action"] == "start", d
        if consensus == "raft":  # raft never gets --bootstrap over its state (it would wipe it)
            assert "--bootstrap" not in d["record"]["daemon_argv"], d["record"]["daemon_argv"]
        assert bed.wait_one_cluster(tasks, timeout=120) == ids
    # All at once.
    for t in tasks:
        t.stop_all()
    for t in tasks:
        bed.start_kubo(t)
    for t in tasks:
        bed.start_cluster(t, bed.cluster_env(t, consensus, ENV))
    assert bed.wait_one_cluster(tasks, timeout=150) == ids
    for t in tasks:
        assert decision(t)["action"] == "start"
        if consensus == "raft":  # the daemon found its raft state: the log was kept
            assert t.log_has("cluster", "existing Raft state found"), "%s's raft log is gone" % t.name
    if consensus == "raft":
        assert_one_leader(tasks, ids)
    pins = [p["cid"] for p in bed.ctl(tasks[1], "pin", "ls")]
    assert pins == [cid], pins


ENV = {"BOOTSTRAP_DISCOVERY": "cloudmap", "BOOTSTRAP_CLOUDMAP_NAMESPACE": "ipfs",
       "BOOTSTRAP_CLOUDMAP_SERVICE": "cluster-peers", "BOOTSTRAP_EXPECT": "3",
       "BOOTSTRAP_SETTLE": "2s", "BOOTSTRAP_TIMEOUT": "120s"}


@pytest.mark.parametrize("consensus", ["crdt", "raft"])
@pytest.mark.parametrize("discovery", ["dns", "static"])
def test_five_at_once_over_dns_and_a_static_list(bed, discovery, consensus):
    tasks = [bed.task(k) for k in range(1, 6)]
    ips = [t.ip for t in tasks]
    if discovery == "dns":
        # The system's resolver (each task's /etc/resolv.conf names the bed's server).
        bed.net.dns.set("cluster.bed.internal", ips)
        extra = {"BOOTSTRAP_DISCOVERY": "dns", "BOOTSTRAP_DNS_NAME": "cluster.bed.internal"}
    else:
        extra = {"BOOTSTRAP_DISCOVERY": "static", "BOOTSTRAP_PEERS": ",".join(ips)}
    extra.update({"BOOTSTRAP_EXPECT": "5", "BOOTSTRAP_SETTLE": "2s", "BOOTSTRAP_TIMEOUT": "120s"})
    for t in tasks:
        bed.start_kubo(t, wait=False)
    for t in tasks:
        bed.wait_kubo(t)
    for t in tasks:
        bed.start_cluster(t, bed.cluster_env(t, consensus, extra))
    ids = bed.wait_one_cluster(tasks, timeout=150)
    if consensus == "raft":
        assert_one_leader(tasks, ids)
    log("%s over %s: one cluster of 5" % (consensus, discovery))
