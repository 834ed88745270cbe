"""pytest set-up for the real test bed (tests/real/bed.py).

Where network namespaces cannot be made (not root, no nft), every test here
that uses the bed is SKIPPED outside CI and FAILS in CI (CI=true), so that a
machine that cannot run them never reports them as passed. Tests without the
`bed` fixture (the template's lint, the files' own checks) run anywhere.
"""
import os
import shutil
import sys
import tempfile

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bed as bedmod  # noqa: E402


def pytest_collection_modifyitems(config, items):
    why = bedmod.can_make_namespaces()
    if why is None:
        return
    if os.environ.get("CI") == "true":
        raise pytest.UsageError("CI=true and the real test bed cannot run here: %s" % why)
    for item in items:
        if "bed" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.skip(reason="real test bed unavailable: %s" % why))


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    rep = yield
    setattr(item, "rep_" + rep.when, rep)
    return rep


@pytest.fixture
def bed(request):
    """A fresh subnet, moto on it, and the tasks a test makes; checks for leaks at the end."""
    workdir = tempfile.mkdtemp(prefix="icb-real-%s-" % request.node.name[:40])
    os.chmod(workdir, 0o755)
    b = bedmod.Bed(workdir)
    failed = True
    try:
        yield b
        leaks = b.net.leaks()
        bedmod.log("packets dropped leaving the subnet: %s" % leaks)
        # Known local multicast, dropped before it left: ipfs-cluster's SSDP
        # search (UPnP, always on) and the kernel's IGMP membership reports.
        other = {t: c for t, c in leaks.items() if any(n for k, n in c.items() if k not in ("ssdp", "igmp"))}
        assert not other, "packets to destinations outside the test subnet: %s" % other
        failed = getattr(request.node, "rep_call", None) is None or request.node.rep_call.failed
    finally:
        b.close()
        if failed or os.environ.get("BED_KEEP"):
            bedmod.log("bed files kept in %s" % workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
