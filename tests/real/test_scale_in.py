"""Scale-in under raft, on the real daemons: the shipped task definition's
service of 5 tasks on one state root, files added, then the service's
desiredCount goes to 3 and ECS stops two tasks of its choosing at once (here
the ones in slots 1 and 2, not the highest: ECS does not stop tasks by slot).

Each stopped task's cluster container gets SIGTERM as ECS sends it (to tini,
which passes it to ipfs-cluster-bootstrap, the supervisor): its peer leaves
the raft peerset before its daemon stops (one at a time, under the state
root's retire.lock), after its pins have their replicas on the staying peers
(repinning on, as the README asks for scale-in), and its slot is marked
retired. Throughout, a staying peer's `peers ls` shows a quorum of live
voters; after, 3 voters and one leader, every pin at its replication minimum
on the staying peers, every gateway serves every file. A replacement of the
task in the highest slot then takes that slot back (claims prefer members'
slots) and starts on its state; a scale-out to 4 then takes a retired slot,
whose peer joins again as a new voter.
"""
import json
import os
import signal
import threading
import time

from bed import RAFT_ROLE_LOGS, log, raft_roles, stop, wait_decision, wait_for
from shipped import EcsService
from test_durability import Cluster, Files, add_all, check_gateways, cid_of

N, DESIRED = 5, 3


def quorum(n):
    return n // 2 + 1


class QuorumWatch(threading.Thread):
    """Samples a staying peer's `peers ls` every second: (voters, live voters) or the error."""

    def __init__(self, bed, via):
        super().__init__(daemon=True)
        self.bed, self.via = bed, via
        self.samples, self.errors = [], []
        self.done = threading.Event()

    def run(self):
        while not self.done.is_set():
            try:
                peers = self.bed.ctl(self.via, "peers", "ls", timeout=20)
                self.samples.append((time.time(), len(peers), sum(1 for p in peers if not p.get("error"))))
            except Exception as e:  # noqa: BLE001
                self.errors.append((time.time(), repr(e)))
            self.done.wait(1)

    def stop(self):
        self.done.set()
        self.join(30)


def test_scale_in_5_to_3_under_raft_keeps_quorum_and_pins(bed):
    svc = EcsService(bed, desired=N, consensus="raft")
    # Re-allocation of a leaving peer's pins is the daemon's repinning (README: scale-in).
    svc.env["CLUSTER_DISABLEREPINNING"] = "false"
    svc.env.update(RAFT_ROLE_LOGS)
    tasks = [bed.task(k) for k in range(1, N + 1)]
    for t in tasks:
        svc.start(t)
    c = Cluster(bed, tasks, "raft")
    c.wait_metrics(tasks[0])
    files = Files(bed)
    add_all(bed, tasks[0], files)
    pins = c.pinset(tasks[0])
    c.check_pins(pins, tasks[0])
    [root] = svc.efs.values()

    stopped = sorted((t for t in tasks if t.slot in (1, 2)), key=lambda t: t.slot)
    staying = [t for t in tasks if t not in stopped]
    stopped_ids = {bed.peer_id(t): t for t in stopped}
    staying_ids = sorted(bed.peer_id(t) for t in staying)
    held_by_stopped = {p[0]: p[3] for p in pins.values() if set(p[3]) & set(stopped_ids)}
    log("scale-in %d -> %d: ECS stops %s (slots 1, 2); pins allocated to them: %s"
        % (N, DESIRED, [t.name for t in stopped], sorted(held_by_stopped)))

    bed.moto.ecs.update_service(cluster=svc.CLUSTER, service=svc.SERVICE, desiredCount=DESIRED)
    watch = QuorumWatch(bed, staying[0])
    watch.start()
    time.sleep(2)
    t0 = time.time()
    # ECS stops both at once: SIGTERM to each cluster container's PID 1 (tini), then waits up to
    # the container's stopTimeout before SIGKILL; the kubo container stops after it (dependsOn).
    stop_timeout = svc.cluster_c["stopTimeout"]
    for t in stopped:
        os.kill(t.cluster.pid, signal.SIGTERM)
    for t in stopped:
        try:
            code = t.cluster.wait(stop_timeout)
        except Exception:  # noqa: BLE001
            code = stop(t.cluster, kill=True)
            raise AssertionError("%s's cluster container outlived its stopTimeout (%d s)" % (t.name, stop_timeout))
        log("%s's cluster container exited %s after %.1f s" % (t.name, code, time.time() - t0))
        stop(t.kubo)
        t.cluster = t.kubo = None
    time.sleep(3)
    watch.stop()

    # Each left the peerset, and says so; its slot is marked retired.
    for pid, t in stopped_ids.items():
        text = open(os.path.join(t.dir, "cluster.1.log"), errors="replace").read()
        assert "left the raft peerset" in text, "%s did not leave (%s)" % (t.name, t.dir)
        marker = json.load(open(os.path.join(root, "slots", str(t.slot), "cluster", "retired.json")))
        assert marker["peer"] == pid and marker["desired"] == DESIRED, marker
    # A quorum of live voters at every sample, and the voters shrank to 3.
    assert watch.samples, watch.errors
    bad = [(n, live) for _, n, live in watch.samples if live < quorum(n)]
    assert not bad, "samples without a live quorum: %s" % bad
    log("quorum watch: %d samples, voters %s, errors %d" % (len(watch.samples),
                                                          sorted({n for _, n, _ in watch.samples}), len(watch.errors)))
    assert not watch.errors, watch.errors
    c.tasks = staying
    c.ids = {bed.peer_id(t): t for t in staying}
    assert bed.wait_one_cluster(staying, timeout=60) == staying_ids
    roles = wait_for("one raft leader among the 3", lambda: (lambda r: r if sorted(r.values()).count("leader") == 1
                                                             and len(r) == 3 else None)(raft_roles(staying)), 60)
    log("after the scale-in (%.1f s): voters %s, roles %s" % (time.time() - t0, staying_ids, roles))

    # Every pin at its minimum on the staying peers (everywhere pins: on all three).
    def replicated():
        st = c.status(staying[0])
        short = {}
        for cid, p in pins.items():
            pinned = sorted(n for n, s in st.get(cid, {}).items() if s == "pinned" and n in {t.name for t in staying})
            need = p[1] if p[1] > 0 else len(staying)
            if len(pinned) < need:
                short[p[0]] = pinned
        return not short or None
    wait_for("every pin at its minimum on the staying peers", replicated, 60, interval=1)
    check_gateways(c, files, pins, "after the scale-in", {})

    # ECS replaces the task in the highest slot (a plain stop: 3 voters for 3 desired, so it stays
    # a voter); the new task takes that slot back though it is beyond the desired count.
    top = max(staying, key=lambda t: t.slot)
    os.kill(top.cluster.pid, signal.SIGTERM)
    top.cluster.wait(stop_timeout)
    stop(top.kubo)
    text = open(os.path.join(top.dir, "cluster.1.log"), errors="replace").read()
    assert "not a scale-in" in text, "the replacement's stop was taken for a scale-in (%s)" % top.dir
    new = bed.task(N + 1)
    svc.start(new)
    assert new.slot == top.slot, (new.slot, top.slot)
    d = wait_decision(new)
    assert d["action"].startswith("start"), d
    staying = [t for t in staying if t is not top] + [new]
    c.tasks = staying
    assert bed.wait_one_cluster(staying, timeout=120) == staying_ids
    for cid in (cid_of(f["cid"]) for f in files):
        assert cid in pins
    log("the task in slot %d was replaced into the same slot: %s" % (top.slot, d["action"]))

    # Scale-out 3 -> 4: the new task takes the lowest retired slot; its peer (that slot's old ID,
    # raft state moved away when it was removed) joins as a new voter (the marker says `rejoining`
    # until a start finds the raft state the join gave it).
    bed.moto.ecs.update_service(cluster=svc.CLUSTER, service=svc.SERVICE, desiredCount=DESIRED + 1)
    out = bed.task(N + 2)
    svc.start(out)
    assert out.slot == 1, out.slot
    d = wait_decision(out)
    assert d["action"].startswith("join"), d
    marker = json.load(open(os.path.join(root, "slots", "1", "cluster", "retired.json")))
    assert marker["rejoining"] is True, marker
    assert bed.peer_id(out) in stopped_ids, "slot 1 keeps its identity"
    staying.append(out)
    assert bed.wait_one_cluster(staying, timeout=120) == sorted(staying_ids + [bed.peer_id(out)])
    log("scale-out 3 -> 4: %s took retired slot 1 and joined (%s)" % (out.name, d["reason"]))

    # Its task replaced: slot 1 is a member's again (raft state from the join), so the replacement
    # takes it and starts on that state, and the marker goes.
    os.kill(out.cluster.pid, signal.SIGTERM)
    out.cluster.wait(stop_timeout)
    stop(out.kubo)
    again = bed.task(N + 3)
    svc.start(again)
    assert again.slot == 1, again.slot
    d = wait_decision(again)
    assert d["action"].startswith("start"), d
    staying = [t for t in staying if t is not out] + [again]
    assert bed.wait_one_cluster(staying, timeout=120) == sorted(staying_ids + [bed.peer_id(again)])
    assert not os.path.exists(os.path.join(root, "slots", "1", "cluster", "retired.json"))
    log("%s replaced %s in slot 1 and started on its state: %s" % (again.name, out.name, d["reason"]))
    svc.close()
