"""The bed's stand-in for kubo's /usr/local/bin/start_ipfs (the official
image's container_daemon): `ipfs init` when $IPFS_PATH holds no repo, with
the bed's offline settings (bed.kubo_offline) instead of the image's, then
exec `ipfs ARGS`. No shell, no gosu: the bed runs kubo as root. Run by
`ipfs-cluster-bootstrap slot`, which set IPFS_PATH to the slot's repo."""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bed import kubo_offline  # noqa: E402


def main():
    repo = os.environ["IPFS_PATH"]
    config = os.path.join(repo, "config")
    if not os.path.exists(config):
        subprocess.run(["ipfs", "init", "--profile=test"], check=True, stdout=subprocess.DEVNULL)
        with open(config) as f:
            cfg = kubo_offline(json.load(f))
        with open(config + ".tmp", "w") as f:
            json.dump(cfg, f, indent=2)
        os.rename(config + ".tmp", config)
    os.execvp("ipfs", ["ipfs"] + sys.argv[1:])


if __name__ == "__main__":
    main()
