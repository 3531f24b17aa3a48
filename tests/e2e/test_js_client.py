"""The JavaScript client (`js/`) against real gateways: `node --test js/e2e/`.

Two gateways on this run's PostgreSQL and NATS: the session's own, and one whose access
tokens live three seconds (expiry under a queue, proactive renewal, the refresh grace).
The Node tests (js/e2e/*.test.js) read their URLs from `CONCORD_JS_E2E_URL` and
`CONCORD_JS_E2E_SHORT_TTL_URL`. Node.js 20+ is a dependency of the test suite: without
it this test fails, it does not skip.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tests.e2e.conftest import GatewayProcess, StartGateway

ROOT = Path(__file__).resolve().parents[2]
NODE_TIMEOUT = 100  # seconds; the run takes about 15 s


def _node() -> str:
    """The `node` binary, which must be Node.js 20 or newer (built-in test runner, fetch)."""
    node = shutil.which("node")
    assert node is not None, "node (Node.js 20+) is not on PATH: js/ tests need it"
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True)
    major = int(version.stdout.strip().lstrip("v").split(".")[0])
    assert major >= 20, f"Node.js 20+ is needed, found {version.stdout.strip()}"
    return node


def test_js_client_against_real_gateways(
    gateway: GatewayProcess, start_gateway: StartGateway
) -> None:
    short_ttl = start_gateway({}, env={"CONCORD_ACCESS_TOKEN_TTL": "3"})
    env = dict(os.environ)
    env["CONCORD_JS_E2E_URL"] = gateway.base_url
    env["CONCORD_JS_E2E_SHORT_TTL_URL"] = short_ttl.base_url
    done = subprocess.run(
        [_node(), "--experimental-websocket", "--test", "--test-reporter=tap", "js/e2e/"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=NODE_TIMEOUT,
        check=False,
    )
    report = done.stdout[-6000:] + done.stderr[-3000:]
    assert done.returncode == 0, report
    assert "# fail 0" in done.stdout, report
    tests = int(done.stdout.split("# tests ")[1].split()[0])
    assert tests >= 10, report
