"""The litmus WebDAV conformance suite against a real `coffer serve` process."""
import os
import re
import subprocess

import pytest

from webdav_harness import CofferServer, require_client

pytestmark = [pytest.mark.clients, pytest.mark.slow]

SUITES = ["basic", "copymove", "props", "locks", "http"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with CofferServer(tmp_path_factory.mktemp("litmus"), tls=False) as srv:
        yield srv


@pytest.mark.parametrize("suite", SUITES)
def test_litmus_suite_passes(server, suite, tmp_path):
    litmus = require_client("litmus")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "TESTS": suite}
    r = subprocess.run([litmus, server.url, "alice", server.accounts["alice"]],
                       capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    out = r.stdout + r.stderr
    summary = re.search(rf"summary for `{suite}': of (\d+) tests run: (\d+) passed, (\d+) failed", out)
    assert summary, out[-4000:]
    assert summary.group(3) == "0", out[-4000:]
    assert "FAIL" not in out, out[-4000:]
    # litmus prints WARNING lines for optional behaviour; none are expected here
    assert "WARNING" not in out, out[-4000:]
    assert server.alive()
