"""The stand-in for kubo's /usr/local/bin/start_ipfs (the official image's
container_daemon) used by the real test bed and the demo, run by
`ipfs-cluster-bootstrap slot`, which set IPFS_PATH to the slot's repo:

  ipfs-cluster-bootstrap slot -- python kubo_start.py daemon --migrate=true --agent-version-suffix=docker

When the repo does not exist yet: `ipfs init --profile=test` with the bed's
offline settings (bed.kubo_offline) instead of the image's. Then exec
`ipfs ARGS`, which inherits the slot's lock. No shell, no gosu: kubo runs as
the caller.

KUBO_START_IP (the demo, whose tasks share one network namespace with an
address each): the API, gateway and swarm addresses are set to it at EVERY
start, not only at init, because a slot's repo goes to whichever task takes
the slot and a replacement comes on a new address. (In the bed and on ECS
each task has a network of its own, and 0.0.0.0 fits every task.)"""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bed import kubo_offline  # noqa: E402


def main():
    repo = os.environ["IPFS_PATH"]
    config = os.path.join(repo, "config")
    ip = os.environ.get("KUBO_START_IP")
    if os.path.exists(config):
        print("kubo_start: found a kubo repo in %s" % repo, flush=True)
        with open(config) as f:
            cfg = json.load(f)
    else:
        print("kubo_start: no repo in %s: ipfs init" % repo, flush=True)
        subprocess.run(["ipfs", "init", "--profile=test"], check=True, stdout=subprocess.DEVNULL)
        with open(config) as f:
            cfg = kubo_offline(json.load(f))
    if ip:
        cfg["Addresses"]["API"] = "/ip4/%s/tcp/5001" % ip
        cfg["Addresses"]["Gateway"] = "/ip4/%s/tcp/8080" % ip
        cfg["Addresses"]["Swarm"] = ["/ip4/%s/tcp/4001" % ip]
    with open(config + ".tmp", "w") as f:
        json.dump(cfg, f, indent=2)
    os.rename(config + ".tmp", config)
    os.execvp("ipfs", ["ipfs"] + sys.argv[1:])


if __name__ == "__main__":
    main()
