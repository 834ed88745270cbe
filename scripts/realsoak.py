#!/usr/bin/env python3
"""Randomized launches against the REAL daemons, on the real test bed
(tests/real/bed.py: each task a network namespace with real kubo and the
real ipfs-cluster-service that ipfs-cluster-bootstrap execs). Needs root.

Each launch: N tasks (3 to 7), crdt or raft, Cloud Map on moto, --expect N
or fewer, the cluster containers started with a random skew; a peer may be
killed right after it decided to found. It waits until every live peer's
`peers ls` agrees, then records clusters formed, split brain (two live
peers in different clusters at the end), time to agreement and decisions.

    .venv/bin/python scripts/realsoak.py --launches 20 --json out.jsonl
    .venv/bin/python scripts/realsoak.py --minutes 30 --json out.jsonl   # bounded by time

Exit 1 when any launch ended in a split brain.
"""
import argparse
import json
import os
import random
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "real"))
import bed as bedmod  # noqa: E402


def launch(seed, a):
    r = random.Random(seed)
    n = r.randint(3, a.max_peers)
    consensus = r.choice(["crdt", "raft"])
    expect = n if r.random() < 0.5 else r.randint(2, n)
    skew = round(r.uniform(0, a.skew), 2)
    kill_founder = r.random() < a.kill_prob
    if kill_founder:  # the others can still found without it
        expect = min(expect, n - 1)
    rec = {"seed": seed, "n": n, "consensus": consensus, "expect": expect, "skew": skew,
           "kill_founder": kill_founder}
    workdir = tempfile.mkdtemp(prefix="icb-realsoak-%d-" % seed)
    os.chmod(workdir, 0o755)
    b = bedmod.Bed(workdir)
    t0 = time.time()
    try:
        b.moto.cloudmap()
        tasks = [b.task(k) for k in range(1, n + 1)]
        for t in tasks:
            b.start_kubo(t, wait=False)
        for t in tasks:
            b.wait_kubo(t)
        env = {"BOOTSTRAP_DISCOVERY": "cloudmap", "BOOTSTRAP_CLOUDMAP_NAMESPACE": "ipfs",
               "BOOTSTRAP_CLOUDMAP_SERVICE": "cluster-peers", "BOOTSTRAP_EXPECT": str(expect),
               "BOOTSTRAP_SETTLE": "%ss" % a.settle, "BOOTSTRAP_TIMEOUT": "150s",
               "CLUSTER_RAFT_WAITFORLEADERTIMEOUT": "30s"}
        offsets = sorted((r.uniform(0, skew), t) for t in tasks)
        start = time.time()
        for off, t in offsets:
            time.sleep(max(0, start + off - time.time()))
            b.start_cluster(t, b.cluster_env(t, consensus, env))
        killed = None
        if kill_founder:
            deadline = time.time() + 60
            while killed is None and time.time() < deadline:
                for t in tasks:
                    d = bedmod.decision(t)
                    if d and d["action"] == "found":
                        bedmod.stop(t.cluster, kill=True)
                        killed = t
                        break
                time.sleep(0.05)
            rec["killed"] = killed.name if killed else None
        live = [t for t in tasks if t is not killed]
        agreed = None
        deadline = time.time() + a.deadline
        views = {}
        while time.time() < deadline:
            views = {}
            for t in live:
                if t.cluster is None or t.cluster.poll() is not None:
                    continue
                try:
                    views[t.name] = tuple(b.peers(t))
                except Exception:
                    views[t.name] = None
            running = [v for v in views.values() if v]
            want = tuple(sorted(b.peer_id(t) for t in live if os.path.exists(os.path.join(t.cluster_path,
                                                                                           "identity.json"))))
            if len(running) == len(live) and all(v == want for v in running):
                agreed = round(time.time() - start, 2)
                break
            time.sleep(1)
        rec["agreed_s"] = agreed
        # Clusters: peers whose views are disjoint are in different clusters.
        clusters = []
        for name, v in views.items():
            if not v:
                continue
            for c in clusters:
                if set(v) & c:
                    c.update(v)
                    break
            else:
                clusters.append(set(v))
        rec["clusters"] = len(clusters)
        rec["split"] = len(clusters) > 1
        # A Go daemon that panics exits 2.
        rec["exits"] = {t.name: t.cluster.returncode for t in live if t.cluster and t.cluster.poll() is not None}
        rec["actions"] = sorted((bedmod.decision(t) or {}).get("action", "none") for t in tasks)
        leaks = b.net.leaks()
        rec["leaks"] = sum(n for c in leaks.values() for k, n in c.items() if k not in ("ssdp", "igmp"))
    except Exception as e:  # noqa: BLE001 (recorded, the run goes on)
        import traceback
        rec["error"] = repr(e)[:300]
        rec["where"] = traceback.format_exc(limit=-3)[-600:]
    finally:
        b.close()
    rec["wall_s"] = round(time.time() - t0, 1)
    if rec.get("agreed_s") is not None and not rec.get("split") and not rec.get("error") and not rec.get("leaks"):
        import shutil
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        rec["kept"] = workdir
    return rec


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--launches", type=int, default=10)
    p.add_argument("--minutes", type=float, default=None, help="stop starting launches after this long")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--max-peers", type=int, default=7)
    p.add_argument("--skew", type=float, default=3.0, help="largest start skew between peers, s")
    p.add_argument("--settle", type=float, default=2.0)
    p.add_argument("--kill-prob", type=float, default=0.2)
    p.add_argument("--deadline", type=float, default=120.0, help="seconds to wait for agreement")
    p.add_argument("--json", default=None)
    a = p.parse_args()
    why = bedmod.can_make_namespaces()
    if why:
        sys.exit("realsoak: %s" % why)
    base = a.seed if a.seed is not None else random.randrange(1 << 30)
    out = open(a.json, "a") if a.json else None
    t_end = time.time() + a.minutes * 60 if a.minutes else None
    recs = []
    for i in range(a.launches):
        if t_end and time.time() > t_end:
            break
        rec = launch(base + i, a)
        recs.append(rec)
        line = json.dumps(rec)
        print(line, flush=True)
        if out:
            out.write(line + "\n")
            out.flush()
    agreed = [r["agreed_s"] for r in recs if r.get("agreed_s") is not None]
    splits = sum(1 for r in recs if r.get("split"))
    errors = sum(1 for r in recs if r.get("error"))
    agreed.sort()
    p50 = agreed[len(agreed) // 2] if agreed else None
    print("realsoak: %d launches, %d agreed (p50 %s s, max %s s), %d split brains, %d harness errors"
          % (len(recs), len(agreed), p50, agreed[-1] if agreed else None, splits, errors))
    sys.exit(1 if splits else 0)


if __name__ == "__main__":
    main()
