"""The stand-in (tests/double) against the real daemon: the same launch, on
the same bed, once with each, and the outcomes compared. The double is kept
only for what the real daemon cannot do on cue (the soak's volume and fault
timing); this test is where the two must agree."""
import os

import pytest

from bed import ROOT, VENV, log
from test_launch import assert_one_leader

DOUBLE = os.path.join(ROOT, "tests", "double", "ipfs-cluster-service")


def run_launch(bed, consensus, first, daemon):
    svc = bed.moto.cloudmap(ns="ipfs-%s" % daemon, svc="peers")
    tasks = [bed.task(k) for k in range(first, first + 3)]
    extra = {"BOOTSTRAP_DISCOVERY": "cloudmap", "BOOTSTRAP_CLOUDMAP_NAMESPACE": "ipfs-%s" % daemon,
             "BOOTSTRAP_CLOUDMAP_SERVICE": "peers", "BOOTSTRAP_CLOUDMAP_SERVICE_ID": svc,
             "BOOTSTRAP_EXPECT": "3", "BOOTSTRAP_SETTLE": "2s", "BOOTSTRAP_TIMEOUT": "120s",
             "BOOTSTRAP_RUN_AS": "none"}
    if daemon == "double":
        # The double is Python: the venv's (cryptography for real Ed25519 IDs).
        extra.update({"BOOTSTRAP_DAEMON_BIN": DOUBLE, "PATH": "%s:%s" % (VENV, bed.path_env()["PATH"]),
                      "DOUBLE_BED_SUBNET": str(bed.net.subnet)})
    else:
        for t in tasks:
            bed.start_kubo(t)
    for t in tasks:
        bed.start_cluster(t, bed.cluster_env(t, consensus, extra))
    ids = bed.wait_one_cluster(tasks, timeout=150)
    decisions = [bed.wait_for_decision(t) for t in tasks]
    if consensus == "raft" and daemon == "real":
        assert_one_leader(tasks, ids)
    outcome = {
        "actions": sorted(d["action"] for d in decisions),
        "members": len(ids),
        "argv_shapes": sorted(tuple(a for a in d["record"]["daemon_argv"][1:] if a.startswith("-") or a == "daemon")
                              for d in decisions),
        "init_peersets": sorted(len(d["record"]["decision"].get("init_peerset") or []) for d in decisions),
    }
    for t in tasks:
        t.stop_all()
    return outcome


@pytest.mark.parametrize("consensus", ["crdt", "raft"])
def test_the_double_and_the_real_daemon_agree_on_a_launch(bed, consensus):
    real = run_launch(bed, consensus, 1, "real")
    double = run_launch(bed, consensus, 11, "double")
    log("%s launch of 3: real %s, double %s" % (consensus, real, double))
    assert real == double
