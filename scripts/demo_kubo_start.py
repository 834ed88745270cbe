#!/usr/bin/env python3
"""The demo's stand-in for /usr/local/bin/start_ipfs, the official kubo image's
start script. As in the shipped kubo container, `ipfs-cluster-bootstrap slot`
takes a state slot and execs it with IPFS_PATH set to the slot's repo:

  ipfs-cluster-bootstrap slot -- python demo_kubo_start.py daemon --migrate=true --agent-version-suffix=docker

When the slot holds no repo yet: `ipfs init --profile=test` with the demo's
offline settings (kubo_offline of tests/real/bed.py, the test bed's, as
before). Then exec `ipfs ARGS`, which inherits the slot's lock.

One thing start_ipfs does not do: the demo's tasks share one network
namespace, each on an address of its own (DEMO_TASK_IP), so the API, gateway
and swarm addresses are set to this task's address at EVERY start, not only at
init: a slot's repo goes to whichever task takes the slot, and a replacement
comes on a new address. (On ECS each task has its own network, and
start_ipfs's 0.0.0.0 fits every task.)
"""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "real"))
from bed import kubo_offline  # noqa: E402  (the test bed's offline settings, as demo.py uses them)


def main():
    ip = os.environ["DEMO_TASK_IP"]
    config = os.path.join(os.environ["IPFS_PATH"], "config")
    if os.path.exists(config):
        print("demo_kubo_start: found a kubo repo in %s" % os.environ["IPFS_PATH"], flush=True)
        with open(config) as f:
            cfg = json.load(f)
    else:
        print("demo_kubo_start: no repo in %s: ipfs init" % os.environ["IPFS_PATH"], flush=True)
        subprocess.run(["ipfs", "init", "--profile=test"], check=True, stdout=subprocess.DEVNULL)
        with open(config) as f:
            cfg = kubo_offline(json.load(f))
    cfg["Addresses"]["API"] = "/ip4/%s/tcp/5001" % ip
    cfg["Addresses"]["Gateway"] = "/ip4/%s/tcp/8080" % ip
    cfg["Addresses"]["Swarm"] = ["/ip4/%s/tcp/4001" % ip]
    with open(config + ".tmp", "w") as f:
        json.dump(cfg, f, indent=2)
    os.rename(config + ".tmp", config)
    os.execvp("ipfs", ["ipfs"] + sys.argv[1:])


if __name__ == "__main__":
    main()
