"""The JavaScript client (`js/`) against real gateways (`node --test js/e2e/`), and in a
real browser (`node js/browser/run.js`: headless Chromium, IndexedDB).

Two gateways on this run's PostgreSQL and NATS: the session's own, and one whose access
tokens live three seconds (expiry under a queue, proactive renewal, the refresh grace).
The Node tests (js/e2e/*.test.js) read their URLs from `CONCORD_JS_E2E_URL` and
`CONCORD_JS_E2E_SHORT_TTL_URL`. Node.js 20+ is a dependency of the test suite: without
it these tests fail, they do not skip; so does the browser test without Debian's
`chromium` (.ci/run installs it for the panel test too).
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


def test_js_client_in_chromium() -> None:
    chromium = os.environ.get("CHROMIUM") or shutil.which("chromium")
    assert chromium, "chromium is not on PATH (Debian: apt-get install -y chromium)"
    done = subprocess.run(
        [_node(), "js/browser/run.js"],
        cwd=ROOT,
        env={**os.environ, "CHROMIUM": chromium},
        capture_output=True,
        text=True,
        timeout=NODE_TIMEOUT,
        check=False,
    )
    report = done.stdout[-4000:] + done.stderr[-2000:]
    assert done.returncode == 0, report
    assert "2 passed, 0 failed" in done.stdout, report
