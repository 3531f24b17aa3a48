"""Auth hardening against real gateway processes: which address the login limits count
(CONCORD_TRUSTED_PROXIES), the account slow-down that never locks the owner out, one key
per purpose, and NATS credentials kept out of the logs."""

from __future__ import annotations

import base64
import hashlib
import hmac
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest

from core.keys import Purpose, derive
from core.settings import Settings
from tests.conftest import TEST_SECRET, service_env
from tests.e2e.conftest import Api, Gateway, GatewayProcess, StartGateway

PASSWORD = "correct horse"


@pytest.fixture(scope="module")
def proxied(start_gateway: StartGateway) -> Gateway:
    """A gateway behind a (pretend) proxy on 127.0.0.1, three attempts per address."""
    return start_gateway(
        {"login_address_attempts": 3}, env={"CONCORD_TRUSTED_PROXIES": "127.0.0.1"}
    )


@pytest.fixture
def http(proxied: Gateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=proxied.base_url, timeout=30) as client:
        yield client


def _login(
    http: httpx.Client, email: str, password: str = "wrong password", via: str | None = None
) -> httpx.Response:
    headers = {"X-Forwarded-For": via} if via else {}
    body = {"email": email, "password": password, "device_name": "x"}
    return http.post("/v1/auth/login", json=body, headers=headers)


def _nobody() -> str:
    return f"nobody-{uuid.uuid4().hex[:12]}@example.test"


# --------------------------------------------------------------------------- item 7


def test_forwarded_for_from_an_untrusted_peer_changes_nothing(
    start_gateway: StartGateway,
) -> None:
    """Without CONCORD_TRUSTED_PROXIES, a loopback client cannot pick its address
    (uvicorn's default trusted 127.0.0.1, so each spoofed header was a fresh address)."""
    direct = start_gateway({"login_address_attempts": 3})
    with httpx.Client(base_url=direct.base_url, timeout=30) as client:
        statuses = [_login(client, _nobody(), via=f"198.51.100.{i}").status_code for i in range(4)]
    assert statuses == [401, 401, 401, 429]


def test_forwarded_for_from_a_trusted_proxy_names_the_client(http: httpx.Client) -> None:
    # Each client behind the proxy has its own allowance...
    statuses = [_login(http, _nobody(), via=f"198.51.100.{i}").status_code for i in range(4)]
    assert statuses == [401] * 4
    # ...and one client is counted as the address the proxy appended, whatever it
    # wrote into the header itself.
    spoofed = [_login(http, _nobody(), via=f"6.6.6.{i}, 203.0.113.7").status_code for i in range(4)]
    assert spoofed == [401, 401, 401, 429]


# --------------------------------------------------------------------------- item 8


def test_wrong_passwords_from_ten_addresses_do_not_lock_the_owner_out(
    http: httpx.Client,
) -> None:
    email = f"owner-{uuid.uuid4().hex[:12]}@example.test"
    r = http.post(
        "/v1/auth/register",
        json={"email": email, "password": PASSWORD, "device_name": "laptop"},
        headers={"X-Forwarded-For": "192.0.2.200"},
    )
    assert r.status_code == 201, r.text
    for i in range(10):
        assert _login(http, email, via=f"192.0.2.{i}").status_code == 401
    started = time.monotonic()
    r = _login(http, email, PASSWORD, via="192.0.2.100")
    waited = time.monotonic() - started
    assert r.status_code == 200, r.text  # was 429 for 15 minutes
    assert 2.9 <= waited < 5.0  # slowed down by the cap (3 s), no more
    # Those ten addresses are each still allowed their own few guesses, slowly.
    assert _login(http, email, via="192.0.2.0").status_code == 401


# --------------------------------------------------------------------------- item 10


def _uuid8(key: bytes, message: str) -> str:
    n = int.from_bytes(hmac.new(key, message.encode(), hashlib.sha256).digest()[:16], "big")
    n = (n & ~(0xF000 << 64)) | (0x8000 << 64)
    n = (n & ~(0xC000 << 48)) | (0x8000 << 48)
    return str(uuid.UUID(int=n))


def test_each_purpose_has_its_own_key(api: Api) -> None:
    user = api.register()
    access_key = derive(TEST_SECRET, Purpose.ACCESS_TOKEN)
    op_id_key = derive(TEST_SECRET, Purpose.SERVER_OP_ID)
    claims: dict[str, Any] = jwt.decode(user.access_token, access_key, algorithms=["HS256"])
    for other in (TEST_SECRET.encode(), op_id_key, derive(TEST_SECRET, Purpose.WEBHOOK)):
        with pytest.raises(jwt.InvalidSignatureError):
            jwt.decode(user.access_token, other, algorithms=["HS256"])
    # The personal space's first event (member_added) has an op_id of the op-id key.
    events = api.http.get(
        "/v1/sync/pull",
        params={"space_id": user.personal_space_id},
        headers={"Authorization": f"Bearer {user.access_token}"},
    ).json()["events"]
    key = f"member:{user.personal_space_id}:1"
    assert events[0]["op_id"] == _uuid8(op_id_key, key)
    assert events[0]["op_id"] not in (_uuid8(TEST_SECRET.encode(), key), _uuid8(access_key, key))
    # The refresh token is the HMAC of its generation under the refresh-token key.
    assert user.refresh_token == _refresh(derive(TEST_SECRET, Purpose.REFRESH_TOKEN), claims)
    assert user.refresh_token != _refresh(access_key, claims)


def _refresh(key: bytes, claims: dict[str, Any]) -> str:
    mac = hmac.new(key, claims["gen"].encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


@pytest.mark.parametrize("credentials", ["alice:n4ts-pa55word", "n4ts-t0ken-value"])
@pytest.mark.gateway_process
def test_nats_credentials_never_reach_a_log_line(
    start_gateway: StartGateway, credentials: str
) -> None:
    """A real start whose NATS URL carries credentials and does not answer: the gateway
    runs degraded and logs its connection failures (at debug level too) without them."""
    with socket.socket() as deaf:  # bound, never listening: connections are refused
        deaf.bind(("127.0.0.1", 0))
        port = deaf.getsockname()[1]
        gateway = start_gateway(
            {},
            env={
                "CONCORD_NATS_URL": f"nats://{credentials}@127.0.0.1:{port}",
                "CONCORD_LOG_LEVEL": "debug",
            },
        )
        assert isinstance(gateway, GatewayProcess), "the test reads the gateway's log"
        _assert_degraded_without(gateway, credentials)


def _assert_degraded_without(gateway: GatewayProcess, credentials: str) -> None:
    ready = httpx.get(f"{gateway.base_url}/readyz", timeout=10)
    assert ready.status_code == 200
    assert ready.json()["dependencies"]["nats"]["status"] == "degraded"
    deadline = time.monotonic() + 20
    while gateway.log.read_text().count("nats error") < 3:
        assert time.monotonic() < deadline, gateway.log.read_text()[-2000:]
        time.sleep(0.2)
    log = gateway.log.read_text()
    for secret in credentials.split(":"):
        assert secret not in log
        assert secret not in ready.text


def test_a_nats_url_that_cannot_work_stops_the_start_without_its_credentials(
    settings: Settings,
) -> None:
    """Such a URL used to start anyway and log "nats connect to <the URL> failed",
    credentials included, every few seconds; now it is one start-up line, redacted."""
    env = service_env(settings)
    env["CONCORD_NATS_URL"] = "nats://alice:n4ts-pa55word@127.0.0.1:99999"
    proc = subprocess.Popen(
        [sys.executable, "-m", "concord", "gateway", "--port", "0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        output, _ = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.terminate()
        output, _ = proc.communicate(timeout=20)
    text = output.decode()
    assert "n4ts-pa55word" not in text
    assert "alice" not in text
    assert proc.returncode == 2, text
    assert "CONCORD_NATS_URL: 'nats://***@127.0.0.1:99999' has no valid host and port" in text
