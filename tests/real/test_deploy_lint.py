"""deploy/cloudformation.json passes cfn-lint (pinned in scripts/versions.env,
installed in .venv by scripts/setup-testbed.sh) with no error and no warning.

cfn-lint checks the template against CloudFormation's resource schemas (every
property, type, allowed value and reference) and its best practices; the
template's command lines, environments and health checks run on the real
daemons in test_shipped.py; what needs AWS to execute (the task role's
actions, security groups) is tests/it/deploy.rs's. What neither checks is below: the slot
model's shape (the deployment percentages for every allowed DesiredCount, a
mount target for every subnet the tasks use, both containers on the state
root). Needs no root and no network: the schemas ship in the package.
"""
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TEMPLATE = os.path.join(ROOT, "deploy", "cloudformation.json")
CFN_LINT = os.path.join(os.path.dirname(sys.executable), "cfn-lint")


def pinned_version():
    with open(os.path.join(ROOT, "scripts", "versions.env")) as f:
        for line in f:
            if line.startswith("CFN_LINT_VERSION="):
                return line.split("=", 1)[1].strip()
    raise AssertionError("scripts/versions.env has no CFN_LINT_VERSION")


def lint(path):
    """cfn-lint's findings on path, as (level, rule, message, where); its exit code."""
    p = subprocess.run([CFN_LINT, "--format", "json", "--", path], capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, AWS_DEFAULT_REGION="us-east-1"))
    assert p.returncode in (0, 2, 4, 6, 8, 10, 12, 14), "cfn-lint failed to run (%d): %s" % (p.returncode, p.stderr)
    found = json.loads(p.stdout or "[]")
    return [(m["Level"], m["Rule"]["Id"], m["Message"], m["Location"]["Path"]) for m in found], p.returncode


def test_cfn_lint_is_the_pinned_version():
    p = subprocess.run([CFN_LINT, "--version"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["cfn-lint", pinned_version()], p.stdout


def test_template_has_no_error_or_warning():
    findings, code = lint(TEMPLATE)
    bad = [f for f in findings if f[0] in ("Error", "Warning")]
    assert not bad, "cfn-lint on deploy/cloudformation.json:\n" + "\n".join("%s %s %s at %s" % f for f in bad)
    # 0: clean; 8: informational findings only (allowed).
    assert code in (0, 8), (code, findings)


def test_the_linter_would_catch_a_broken_template():
    """The check above is not vacuous: the same template with a misspelt property,
    a Mapping key it lacks and a reference to nothing fails."""
    t = json.load(open(TEMPLATE))
    svc = [r for r in t["Resources"].values() if r["Type"] == "AWS::ECS::Service"][0]
    svc["Properties"]["DeploymentConfiguraton"] = svc["Properties"].pop("DeploymentConfiguration")
    [fs] = [r for r in t["Resources"].values() if r["Type"] == "AWS::EFS::FileSystem"]
    fs["Properties"]["ThroughputMode"] = {"Ref": "NoSuchParameter"}
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(t, f)
    try:
        findings, code = lint(f.name)
    finally:
        os.unlink(f.name)
    rules = {r for _, r, _, _ in findings}
    assert code & 2, findings
    assert "E3002" in rules, findings  # additional property not allowed
    assert "E1020" in rules, findings  # Ref to nothing


def test_template_slot_model_shape():
    t = json.load(open(TEMPLATE))
    res = t["Resources"]

    def one(ty):
        [(name, r)] = [(n, r) for n, r in res.items() if r["Type"] == ty]
        return name, r

    # One task at a time: MaximumPercent 100 and MinimumHealthyPercent floor(100(N-1)/N) for
    # every DesiredCount the parameter allows (cfn-lint does not compare Mappings with AllowedValues).
    _, svc = one("AWS::ECS::Service")
    sp = svc["Properties"]
    dc = sp["DeploymentConfiguration"]
    assert dc["MaximumPercent"] == 100
    assert dc["DeploymentCircuitBreaker"] == {"Enable": True, "Rollback": True}
    mapping, key, attr = dc["MinimumHealthyPercent"]["Fn::FindInMap"]
    assert key == {"Ref": "DesiredCount"}
    table = t["Mappings"][mapping]
    allowed = t["Parameters"]["DesiredCount"]["AllowedValues"]
    assert t["Parameters"]["DesiredCount"]["Default"] in allowed
    assert sorted(table, key=int) == [str(n) for n in sorted(allowed)], (sorted(table), allowed)
    for n in allowed:
        pct = table[str(n)][attr]
        assert pct == 100 * (n - 1) // n, (n, pct)
        # ECS keeps ceil(N * pct / 100) tasks running: exactly N - 1.
        assert -(-n * pct // 100) == n - 1, (n, pct)
    assert sp["AvailabilityZoneRebalancing"] == "DISABLED"
    assert sp["PlatformVersion"] not in ("1.3.0", "1.2.0", "1.1.0", "1.0.0"), "EFS volumes need 1.4.0 or later"

    # The file system: encrypted, backed up, TLS only, mounted by the task role through the access point.
    fs_name, fs = one("AWS::EFS::FileSystem")
    fp = fs["Properties"]
    assert (fp["Encrypted"], fp["PerformanceMode"], fp["ThroughputMode"], fp["BackupPolicy"]["Status"]) == \
        (True, "generalPurpose", "elastic", "ENABLED")
    stmts = fp["FileSystemPolicy"]["Statement"]
    assert any(s["Effect"] == "Deny" and s["Condition"]["Bool"]["aws:SecureTransport"] == "false" for s in stmts)
    grants = [s for s in stmts if s["Effect"] == "Allow"]
    assert [sorted(s["Action"]) for s in grants] == [["elasticfilesystem:ClientMount", "elasticfilesystem:ClientWrite"]]
    _, td = one("AWS::ECS::TaskDefinition")
    task_role = td["Properties"]["TaskRoleArn"]["Fn::GetAtt"][0]
    assert grants[0]["Principal"]["AWS"] == {"Fn::GetAtt": [task_role, "Arn"]}
    assert "elasticfilesystem:AccessPointArn" in json.dumps(grants[0]["Condition"])
    ap_name, ap = one("AWS::EFS::AccessPoint")
    app = ap["Properties"]
    assert app["FileSystemId"] == {"Ref": fs_name}
    assert app["PosixUser"] == {"Uid": "1000", "Gid": "100"}
    assert app["RootDirectory"]["CreationInfo"] == {"OwnerUid": "1000", "OwnerGid": "100", "Permissions": "0750"}

    # A mount target in every subnet the tasks run in, NFS open to the tasks' security group only.
    targets = [r["Properties"] for r in res.values() if r["Type"] == "AWS::EFS::MountTarget"]
    subnets = sp["NetworkConfiguration"]["AwsvpcConfiguration"]["Subnets"]
    assert sorted(json.dumps(m["SubnetId"]) for m in targets) == sorted(json.dumps(s) for s in subnets)
    peer_sg = sp["NetworkConfiguration"]["AwsvpcConfiguration"]["SecurityGroups"][0]
    for m in targets:
        assert m["FileSystemId"] == {"Ref": fs_name}
        [sg] = m["SecurityGroups"]
        ingress = res[sg["Ref"]]["Properties"]["SecurityGroupIngress"]
        assert [(i["IpProtocol"], i["FromPort"], i["ToPort"], i["SourceSecurityGroupId"]) for i in ingress] == \
            [("tcp", 2049, 2049, peer_sg)]
    for m in [n for n, r in res.items() if r["Type"] == "AWS::EFS::MountTarget"]:
        assert m in svc.get("DependsOn", []), "the service starts tasks once %s is there" % m

    # Volumes: the state root on EFS (TLS, IAM, the access point) and a task-scoped one; no other.
    vols = {v["Name"]: v for v in td["Properties"]["Volumes"]}
    assert set(vols) == {"state", "task"}, vols
    efs = vols["state"]["EFSVolumeConfiguration"]
    assert efs == {"FilesystemId": {"Ref": fs_name}, "RootDirectory": "/", "TransitEncryption": "ENABLED",
                   "AuthorizationConfig": {"AccessPointId": {"Ref": ap_name}, "IAM": "ENABLED"}}
    assert vols["task"] == {"Name": "task"}, "host-less: the task's own, shared by its containers"
    assert "EphemeralStorage" not in td["Properties"]
    for c in td["Properties"]["ContainerDefinitions"]:
        mounts = {m["ContainerPath"]: m["SourceVolume"] for m in c["MountPoints"]}
        assert mounts == {"/state": "state", "/task": "task"}, (c["Name"], mounts)
        env = {e["Name"]: e["Value"] for e in c["Environment"]}
        assert (env["BOOTSTRAP_STATE_ROOT"], env["BOOTSTRAP_SLOT_FILE"]) == ("/state", "/task/slot.json"), c["Name"]
        assert env["BOOTSTRAP_EXPECT"] == "auto", c["Name"]
    kubo = [c for c in td["Properties"]["ContainerDefinitions"] if c["Name"] == "ipfs"][0]
    assert kubo["Image"] == {"Ref": "KuboImage"}
    # The kubo container may wait for a vanished task's lock (up to two NFS leases) before kubo starts.
    assert kubo["HealthCheck"]["StartPeriod"] >= 240
    assert sp["HealthCheckGracePeriodSeconds"] >= 240
