"""--state-root against the real daemons: five tasks of one ECS service share
one state root (a local folder stands in for EFS), each in a slot of its own
(`ipfs-cluster-bootstrap slot` as the kubo container's entrypoint, then `run`
in the cluster container on the same slot).

Files are added, then tasks are replaced one by one (BED_REPLACEMENTS, 20 by
default): most planned (SIGTERM), every third a crash (SIGKILL), and every
fourth an overlap (the new task starts while the old one still runs, as
when ECS starts a replacement first: it waits for a free slot). Each
replacement is a new namespace with a new address, and must come back with
the identity of the slot it took, start on its state (rule 1, raft without
--bootstrap), and leave the cluster what it was: the same five peer IDs (raft:
five voters, one leader), no peer ID live twice, every pin on its
allocations with its replication, every gateway serving every file. Then
BED_TOTAL_LOSSES (3) total losses: every task killed at once and five new
ones started: the cluster is the one genesis.json names, with its pinset.

What a local folder does not show: EFS keeps a vanished task's lock until its
NFS lease expires (about 90-180 s), so on EFS a replacement of a crashed task
waits that long for its slot; here the kernel releases it at once.
"""
import json
import os
import time

import pytest

from bed import RAFT_ROLE_LOGS, log, wait_decision
from test_durability import ENV, Cluster, Files, add_all, check_gateways

REPLACEMENTS = int(os.environ.get("BED_REPLACEMENTS", "20"))
TOTAL_LOSSES = int(os.environ.get("BED_TOTAL_LOSSES", "3"))
N = 5


class Service:
    """The ECS service: tasks numbered as they start, each a new namespace."""

    def __init__(self, bed, consensus, state_root):
        self.bed, self.consensus, self.root = bed, consensus, state_root
        self.next = 1
        self.env_extra = dict(ENV, **RAFT_ROLE_LOGS)
        self.env_extra.update({"BOOTSTRAP_EXPECT": str(N), "BOOTSTRAP_TIMEOUT": "300s"})

    def new_task(self, wait=True):
        t = self.bed.task(self.next, "t%d" % self.next)
        self.next += 1
        self.bed.start_kubo_slot(t, self.root, N, wait=wait)
        return t

    def start_cluster(self, t):
        self.bed.start_cluster(t, self.bed.slot_cluster_env(t, self.consensus, self.env_extra))

    def slot_ids(self):
        """{slot: peer ID} of the identities in the state root."""
        out = {}
        for k in sorted(os.listdir(os.path.join(self.root, "slots"))):
            path = os.path.join(self.root, "slots", k, "cluster", "identity.json")
            if os.path.exists(path):
                out[int(k)] = json.load(open(path))["id"]
        return out


def retire(t, kill):
    t.stop_all(kill=kill)
    t.destroy()


@pytest.mark.parametrize("consensus", ["crdt", "raft"])
def test_replacements_and_total_losses_keep_every_slots_peer(bed, consensus):
    svc = Service(bed, consensus, os.path.join(bed.workdir, "efs"))
    # As the template's EFS access point creates it (CreationInfo 1000:100, 0750).
    os.makedirs(svc.root)
    os.chown(svc.root, 1000, 100)
    os.chmod(svc.root, 0o750)
    bed.moto.cloudmap()
    tasks = [svc.new_task(wait=False) for _ in range(N)]
    for t in tasks:
        bed.wait_slot(t)
        bed.wait_kubo(t)
    assert sorted(t.slot for t in tasks) == list(range(N))
    for t in tasks:
        svc.start_cluster(t)
    c = Cluster(bed, tasks, consensus)
    slot_ids = svc.slot_ids()

    def replace_exited(t):
        """A real daemon that exits (ipfs-cluster v1.1.6 sometimes panics in go-libp2p-gorpc's
        client at start) ends its task, and ECS starts another, which takes the freed slot."""
        log("%s's cluster container exited %s (%s): replaced, as ECS does" % (t.name, t.cluster.returncode,
                                                                            t.cluster.logpath))
        retire(t, kill=True)
        new = svc.new_task()
        svc.start_cluster(new)
        assert new.slot == t.slot, (new.slot, t.slot)
        c.ids[bed.peer_id(new)] = new
        if t.name in c.allow_extra:
            c.allow_extra.discard(t.name)
            c.allow_extra.add(new.name)
        return new
    c.on_exit = replace_exited
    assert sorted(slot_ids.values()) == sorted(c.ids), (slot_ids, c.ids)
    genesis = json.load(open(os.path.join(svc.root, "genesis.json")))
    assert genesis["consensus"] == consensus and set(genesis["founders"]) <= set(c.ids), genesis
    log("founded: genesis %s by %s" % (genesis["id"], genesis["founders"]))
    c.same_cluster()

    files = Files(bed)
    c.wait_metrics(tasks[0])
    add_all(bed, tasks[0], files)
    pins = c.pinset(tasks[0])
    c.check_pins(pins, tasks[0])
    times = {}
    check_gateways(c, files, pins, "after the adds", times)

    def replaced(old, new, label):
        """new took old's slot: same identity, started on its state; the cluster is unchanged."""
        assert new.slot == old.slot, (label, new.slot, old.slot)
        d = wait_decision(new, timeout=300)
        assert d["action"] == "start", (label, d["reason"])
        if consensus == "raft":
            assert "--bootstrap" not in d["record"]["daemon_argv"], d["record"]["daemon_argv"]
        pid = bed.peer_id(new)
        assert pid == slot_ids[new.slot], (label, pid, slot_ids)
        i = c.tasks.index(old)
        c.tasks[i] = new
        c.ids[pid] = new
        if old.name in c.allow_extra:
            # An extra kubo pin lives in the slot's repo: it moves with the slot.
            c.allow_extra.discard(old.name)
            c.allow_extra.add(new.name)
        assert len({bed.peer_id(t) for t in c.tasks}) == N, "a peer ID is live twice"
        ids, leader = c.same_cluster(timeout=180)
        assert svc.slot_ids() == slot_ids, "an identity changed"
        log("%s: %s -> %s in slot %d%s" % (label, old.name, new.name, new.slot,
                                          ", raft leader %s" % leader if leader else ""))

    for i in range(REPLACEMENTS):
        old = c.tasks[i % N]
        crash = i % 3 == 2
        overlap = i % 4 == 1 and not crash
        label = "replacement %d (%s)" % (i + 1, "crash" if crash else "overlap" if overlap else "planned")
        if overlap:
            # The new task first: every slot is held, so it waits, and says by whom.
            new = svc.new_task(wait=False)
            time.sleep(3)
            assert new.kubo.poll() is None and not os.path.exists(new.slot_file), label
            assert new.log_has("kubo", "no free state slot"), label
            retire(old, kill=False)
            bed.wait_slot(new)
            bed.wait_kubo(new)
        else:
            retire(old, kill=crash)
            if crash and consensus == "raft":
                # A raft peer back from SIGKILL may re-pin what is not allocated to it (see test_durability).
                c.allow_extra.add("t%d" % svc.next)
            new = svc.new_task()
        svc.start_cluster(new)
        replaced(old, new, label)
        c.check_pins(pins, new, timeout=180)
    c.check_pins(pins, c.tasks[0], timeout=180)
    assert c.pinset(c.tasks[0]) == pins
    check_gateways(c, files, pins, "after %d replacements" % REPLACEMENTS, times)

    for n in range(TOTAL_LOSSES):
        for t in c.tasks:
            t.stop_all(kill=True)
        for t in c.tasks:
            t.destroy()
        new = [svc.new_task(wait=False) for _ in range(N)]
        for t in new:
            bed.wait_slot(t)
            bed.wait_kubo(t)
        for t in new:
            svc.start_cluster(t)
        c.tasks = new
        c.ids = {}
        for t in new:
            d = wait_decision(t, timeout=300)
            assert d["action"] == "start", ("total loss %d" % (n + 1), t.name, d["reason"])
            c.ids[bed.peer_id(t)] = t
        c.allow_extra = {t.name for t in new} if consensus == "raft" else set()
        assert sorted(c.ids) == sorted(slot_ids.values())
        c.same_cluster(timeout=180)
        assert json.load(open(os.path.join(svc.root, "genesis.json"))) == genesis
        assert not [f for f in os.listdir(svc.root) if f.startswith("genesis-after-")]
        c.check_pins(pins, c.tasks[0], timeout=180)
        assert c.pinset(c.tasks[0]) == pins
        check_gateways(c, files, pins, "after total loss %d" % (n + 1), times)
        log("total loss %d: the cluster of genesis %s is back with its %d pins" % (n + 1, genesis["id"], len(pins)))
