#!/usr/bin/env python3
"""Local demo: 3 peers bootstrap on loopback against moto's Cloud Map.

Starts moto's server on 127.0.0.1, creates a Cloud Map HTTP namespace and
service, then starts three ipfs-cluster-bootstrap processes at the same instant
on 127.0.0.2-4, each execing the ipfs-cluster-service TEST DOUBLE (no real
daemon can be installed here). Prints each peer's decision and the cluster they
formed, then stops everything. Nothing leaves the loopback interface.
"""
import json, os, shutil, signal, socket, subprocess, sys, tempfile, time, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "debug", "ipfs-cluster-bootstrap")
DOUBLE = os.path.join(ROOT, "tests", "double", "ipfs-cluster-service")
VENV = os.path.join(ROOT, ".venv", "bin")
CONSENSUS = sys.argv[1] if len(sys.argv) > 1 else "crdt"
IPS = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
SECRET = os.urandom(32).hex()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url):
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return json.load(r)
    except Exception:
        return None


def main():
    work = tempfile.mkdtemp(prefix="icb-demo-")
    port = free_port()
    procs = []
    moto = subprocess.Popen([os.path.join(VENV, "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        endpoint = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                break
            except OSError:
                time.sleep(0.1)
        import boto3
        sd = boto3.client("servicediscovery", region_name="us-east-1", endpoint_url=endpoint,
                          aws_access_key_id="demo", aws_secret_access_key="demo")
        sd.create_http_namespace(Name="ipfs-demo")
        ns = [n for n in sd.list_namespaces()["Namespaces"] if n["Name"] == "ipfs-demo"][0]["Id"]
        sd.create_service(Name="cluster-peers", NamespaceId=ns)
        print(f"moto's server on {endpoint}: Cloud Map namespace ipfs-demo, service cluster-peers\n")

        for i, ip in enumerate(IPS):
            d = os.path.join(work, f"peer{i}")
            os.makedirs(d)
            env = {
                "PATH": f"{VENV}:/usr/local/bin:/usr/bin:/bin", "HOME": d,
                "IPFS_CLUSTER_PATH": os.path.join(d, "config"), "IPFS_CLUSTER_CONSENSUS": CONSENSUS,
                "CLUSTER_SECRET": SECRET, "CLUSTER_PEERNAME": f"peer{i}",
                "CLUSTER_LISTENMULTIADDRESS": f"/ip4/{ip}/tcp/9096",
                "CLUSTER_RESTAPI_HTTPLISTENMULTIADDRESS": f"/ip4/{ip}/tcp/9094",
                "CLUSTER_MONITORPINGINTERVAL": "1s",
                "AWS_ENDPOINT_URL": endpoint, "AWS_REGION": "us-east-1",
                "AWS_ACCESS_KEY_ID": "demo", "AWS_SECRET_ACCESS_KEY": "demo", "AWS_EC2_METADATA_DISABLED": "true",
                "BOOTSTRAP_DISCOVERY": "cloudmap", "BOOTSTRAP_CLOUDMAP_NAMESPACE": "ipfs-demo",
                "BOOTSTRAP_CLOUDMAP_SERVICE": "cluster-peers", "BOOTSTRAP_EXPECT": "3", "BOOTSTRAP_SETTLE": "2s",
                "BOOTSTRAP_TIMEOUT": "60s", "BOOTSTRAP_ADVERTISE_IP": ip, "BOOTSTRAP_DAEMON_BIN": DOUBLE,
                "BOOTSTRAP_LOOPBACK_ONLY": "true", "BOOTSTRAP_LOG_FORMAT": "json",
                # The test double runs on this venv's Python: keep the current user.
                "BOOTSTRAP_RUN_AS": "none",
            }
            log = open(os.path.join(d, "log"), "w")
            procs.append((ip, d, subprocess.Popen([BIN], env=env, stdin=subprocess.DEVNULL,
                                                  stdout=log, stderr=subprocess.STDOUT)))
        print(f"started 3 peers at once ({CONSENSUS}, --expect 3) on {', '.join(IPS)}\n")

        decisions = {}
        deadline = time.time() + 60
        while time.time() < deadline and len(decisions) < 3:
            for ip, d, _ in procs:
                for line in open(os.path.join(d, "log")):
                    if line.startswith("{") and '"event":"decision"' in line:
                        decisions[ip] = json.loads(json.loads(line)["record"])
            time.sleep(0.3)
        for ip, d, _ in procs:
            r = decisions.get(ip)
            if not r:
                print(f"{ip}: no decision; log in {d}/log")
                continue
            dec = r["decision"]
            print(f"{ip}  {r['facts']['me']['peer_id'][:20]}…  {dec['action'].upper():5}  {r['reason_text']}")
            print(f"{'':11}argv: {' '.join(os.path.basename(a) if a == DOUBLE else a for a in r['daemon_argv'])}")

        states = {}
        while time.time() < deadline:
            states = {ip: get_json(f"http://{ip}:9094/_double/state") for ip in IPS}
            if all(s and s.get("ready") and len(s.get("peers", [])) == 3 for s in states.values()):
                break
            time.sleep(0.3)
        clusters = {s["cluster_id"] for s in states.values() if s}
        print()
        for ip, s in states.items():
            print(f"{ip}: cluster {s and s['cluster_id']}, sees {s and len(s['peers'])} peers, ready={s and s['ready']}")
        ok = len(clusters) == 1 and all(s and len(s["peers"]) == 3 for s in states.values())
        print("\nRESULT:", "one cluster of 3 peers" if ok else f"NOT one cluster: {clusters}")
        return 0 if ok else 1
    finally:
        for _, _, p in procs:
            p.send_signal(signal.SIGTERM)
        for _, _, p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        moto.terminate()
        moto.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
