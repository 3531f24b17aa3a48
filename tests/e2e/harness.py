"""Real server processes and real clients for end-to-end tests.

``ServerProcess`` runs ``concord gateway`` (or ``dev``) as a subprocess, on a port it
binds itself (``--port 0``), against this run's PostgreSQL and NATS: the one harness
``concord.child`` (shared with the lab and the benchmarks) with the tests' settings.
``Device`` is a thin WebSocket client speaking docs/protocol.md section 5 with the
``websockets`` library. ``serve_gateway`` gives a ``ServerProcess``, or with
``CONCORD_TEST_GATEWAY=in-process`` an ``InProcessGateway``: the same app served by
uvicorn on a thread of the test process, where mutmut can see it run.
"""

from __future__ import annotations

import asyncio
import base64
import fcntl
import json
import os
import socket
import struct
import termios
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import msgspec
import uvicorn
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.typing import Subprotocol

from concord.child import ConcordProcess, NotReady
from concord.serve import gateway_server
from core.settings import Settings, environment_of, load_settings
from gateway.app import create_app
from gateway.options import GatewayOptions
from tests.conftest import IN_PROCESS, IN_PROCESS_ENV, TEST_ADMIN_TOKEN, service_env

#: Cheap hashing and loose throttles: tests exercise protocol behaviour, not argon2.
FAST_OPTIONS = {
    "argon2_time_cost": 1,
    "argon2_memory_cost": 1024,
    "argon2_parallelism": 1,
    "push_rate": 10_000.0,
    "push_burst": 10_000,
    "login_address_attempts": 100_000,
    "login_account_failures": 100_000,
}


class ServerProcess(ConcordProcess):
    """One ``concord gateway`` (or ``dev``, ``projector``...) on this run's services,
    with ``FAST_OPTIONS``: ``concord.child.ConcordProcess`` configured for the tests."""

    def __init__(
        self,
        settings: Settings,
        *,
        env: Mapping[str, str] | None = None,
        options: Mapping[str, Any] | None = None,
        command: str = "gateway",
    ) -> None:
        environment = service_env(settings)
        environment["CONCORD_TEST_GATEWAY_OPTIONS"] = json.dumps(
            {**FAST_OPTIONS, **(options or {})}
        )
        environment.update(env or {})
        log = Path(settings.data_dir) / f"{command}-{uuid.uuid4().hex[:8]}.log"
        super().__init__([command], environment, log)
        self.command = command


def in_process() -> bool:
    """Whether this run serves its gateways in the test process."""
    return os.environ.get(IN_PROCESS_ENV) == IN_PROCESS


class InProcessGateway:
    """The gateway app with ``options``, served by uvicorn on a thread of this process,
    on a port of its own: what ``concord gateway`` serves, where mutmut can see it."""

    def __init__(
        self, settings: Settings, options: dict[str, Any], env: dict[str, str] | None = None
    ) -> None:
        # CONCORD_* variables of ``env`` change the settings, as for a process
        self.settings = load_settings({**environment_of(settings), **(env or {})})
        self.options = options
        self.port = 0
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    base_url = url

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/sync"

    def start(self, timeout: float = 60) -> InProcessGateway:
        app = create_app(self.settings, options=msgspec.convert(self.options, GatewayOptions))
        server = self._server = gateway_server(app, self.settings)
        sock = self._socket = socket.create_server(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self._thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="gateway", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise NotReady(f"the in-process gateway did not start on port {self.port}")
            time.sleep(0.02)
        return self

    def stop(self, timeout: float = 30) -> None:
        if self._thread is None or self._server is None:
            return
        self._server.should_exit = True
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the in-process gateway did not stop"
        self._thread = None
        if self._socket is not None:  # uvicorn closes its servers, not the socket given
            self._socket.close()


#: A gateway of ``serve_gateway``.
Served = ServerProcess | InProcessGateway


def serve_gateway(
    settings: Settings,
    *,
    env: Mapping[str, str] | None = None,
    options: Mapping[str, Any] | None = None,
) -> Served:
    """A gateway with ``FAST_OPTIONS`` (and ``options``) on this run's services, not yet
    started: a ``concord gateway`` process, or with ``CONCORD_TEST_GATEWAY=in-process``
    the same app served in this process (``InProcessGateway``)."""
    if in_process():
        return InProcessGateway(settings, {**FAST_OPTIONS, **(options or {})}, dict(env or {}))
    return ServerProcess(settings, env=env, options=options)


@dataclass
class Account:
    email: str
    password: str
    user_id: str
    device_id: str
    access_token: str
    refresh_token: str
    space_id: str


async def register(base: str, email: str | None = None, device: str = "phone") -> Account:
    email = email or f"u{uuid.uuid4().hex[:12]}@example.com"
    password = "correct horse battery"
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        r = await http.post(
            "/v1/auth/register",
            json={"email": email, "password": password, "device_name": device},
        )
        assert r.status_code == 201, r.text
        body = r.json()
    return Account(
        email,
        password,
        body["user_id"],
        body["device_id"],
        body["access_token"],
        body["refresh_token"],
        body["personal_space_id"],
    )


async def login(base: str, account: Account, device: str = "laptop") -> Account:
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        r = await http.post(
            "/v1/auth/login",
            json={"email": account.email, "password": account.password, "device_name": device},
        )
        assert r.status_code == 200, r.text
        body = r.json()
    return Account(
        account.email,
        account.password,
        body["user_id"],
        body["device_id"],
        body["access_token"],
        body["refresh_token"],
        account.space_id,
    )


async def refresh(base: str, account: Account) -> Account:
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        r = await http.post("/v1/auth/refresh", json={"refresh_token": account.refresh_token})
        assert r.status_code == 200, r.text
        body = r.json()
    account.access_token, account.refresh_token = body["access_token"], body["refresh_token"]
    return account


async def http(base: str, method: str, path: str, token: str, **kw: Any) -> httpx.Response:
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        return await client.request(method, path, headers=headers, **kw)


def op(
    space_id: str,
    entity_id: str = "t-1",
    field_name: str | None = "title",
    value: Any = "x",
    *,
    lamport: int = 1,
    kind: str = "set",
    pred: list[str] | None = None,
    entity_type: str = "task",
) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "op_id": str(uuid.uuid4()),
        "space_id": space_id,
        "entity_type": entity_type,
        "entity_id": entity_id,
        "kind": kind,
        "lamport": lamport,
    }
    if field_name is not None:
        raw["field"] = field_name
        raw["value"] = value
    if pred:
        raw["pred"] = pred
    return raw


@dataclass
class Device:
    """A WebSocket client: ``send`` messages, ``recv`` them, track events per space."""

    ws: ClientConnection
    msgpack: bool = False
    events: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    inbox: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    async def connect(
        cls,
        url: str,
        token: str | None = None,
        subscriptions: list[dict[str, Any]] | None = None,
        *,
        msgpack: bool = False,
        hello: bool = True,
    ) -> Device:
        protocol = "concord.v1.msgpack" if msgpack else "concord.v1.json"
        ws = await websockets.connect(
            url,
            subprotocols=[Subprotocol(protocol)],
            max_size=32 * 1024 * 1024,
            open_timeout=10,
        )
        assert ws.subprotocol == protocol  # the gateway names the subprotocol it chose
        device = cls(ws, msgpack)
        if hello:
            assert token is not None
            await device.send(
                {"type": "hello", "token": token, "subscriptions": subscriptions or []}
            )
            welcome = await device.expect("welcome")
            assert welcome["limits"]["max_ops_per_push"] > 0
        return device

    async def send(self, message: dict[str, Any]) -> None:
        if self.msgpack:
            await self.ws.send(msgspec.msgpack.encode(message))
        else:
            await self.ws.send(json.dumps(message))

    async def recv(self, within: float = 10) -> dict[str, Any]:
        raw = await asyncio.wait_for(self.ws.recv(), within)
        message: dict[str, Any] = (
            msgspec.msgpack.decode(raw) if isinstance(raw, bytes) else json.loads(raw)
        )
        if message["type"] == "events":
            self.events.setdefault(message["space_id"], []).extend(message["events"])
        return message

    async def expect(self, kind: str, within: float = 10) -> dict[str, Any]:
        """The next message of ``kind``; others are kept in ``inbox``."""
        deadline = time.monotonic() + within
        while True:
            message = await self.recv(max(0.01, deadline - time.monotonic()))
            if message["type"] == kind:
                return message
            self.inbox.append(message)

    async def push(self, ops: list[dict[str, Any]], batch_id: str | None = None) -> dict[str, Any]:
        batch = batch_id or uuid.uuid4().hex
        await self.send({"type": "push", "batch_id": batch, "ops": ops})
        while True:
            result = await self.expect("push_result", within=60)
            if result["batch_id"] == batch:
                return result

    async def wait_for_seq(self, space_id: str, seq: int, within: float = 30) -> None:
        deadline = time.monotonic() + within
        while not self.events.get(space_id) or self.events[space_id][-1]["seq"] < seq:
            message = await self.recv(max(0.01, deadline - time.monotonic()))
            if message["type"] not in ("events", "caught_up"):
                self.inbox.append(message)

    async def close_code(self, within: float = 15) -> int:
        """Read until the server closes the connection; its close code."""
        deadline = time.monotonic() + within
        try:
            while True:
                await self.recv(max(0.01, deadline - time.monotonic()))
        except websockets.ConnectionClosed as closed:
            frame = closed.rcvd
        if frame is None:
            raise AssertionError("closed without a close frame")
        return frame.code

    def seqs(self, space_id: str) -> list[int]:
        return [e["seq"] for e in self.events.get(space_id, [])]

    async def close(self) -> None:
        await self.ws.close()


async def open_connections(base: str) -> int:
    """The gateway's own count of open WebSocket connections (``/v1/diagnostics``)."""
    r = await http(base, "GET", "/v1/diagnostics", TEST_ADMIN_TOKEN)
    assert r.status_code == 200, r.text
    count: int = r.json()["ws_connections"]
    return count


async def wait_connections(base: str, count: int, within: float = 30) -> None:
    """Return once the gateway at ``base`` counts ``count`` open WebSocket connections."""
    deadline = time.monotonic() + within
    while (now := await open_connections(base)) != count:
        assert time.monotonic() < deadline, f"{now} connections open, not {count}"
        await asyncio.sleep(0.1)


def assert_contiguous(seqs: list[int], first: int = 1) -> None:
    """Every seq once, in order, no gap (invariant 6)."""
    assert seqs == list(range(first, first + len(seqs))), seqs[:50]


def env_flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0", "false")


class StalledDevice:
    """A raw WebSocket client that can stop reading entirely (client libraries keep
    reading into their own buffers, which would hide a slow device from the server)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, host: str, port: int, receive_buffer: int = 65536) -> StalledDevice:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (host, port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=receive_buffer)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            f"GET /v1/sync HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        status = await reader.readuntil(b"\r\n\r\n")
        assert status.startswith(b"HTTP/1.1 101"), status
        return cls(reader, writer)

    async def wait_full(self, within: float = 30, least: int = 32 * 1024) -> int:
        """Return once the server has filled this device's buffers and must wait: at
        least ``least`` bytes sit unread in the kernel and that amount stays the same
        over several polls (the reader's own buffer is full, so it takes nothing, and
        the server can send nothing more). The bytes queued in the kernel."""
        sock = self.writer.get_extra_info("socket")
        deadline = time.monotonic() + within
        last, steady = -1, 0
        while steady < 3:
            assert time.monotonic() < deadline, f"buffers not full in {within}s: {last} bytes"
            await asyncio.sleep(0.05)
            queued = struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0" * 4))
            steady = steady + 1 if queued[0] == last and last >= least else 0
            last = queued[0]
        return last

    def send(self, message: dict[str, Any]) -> None:
        data = json.dumps(message).encode()
        mask = os.urandom(4)
        size = len(data)
        if size < 126:
            head = bytes([0x81, 0x80 | size])
        elif size < 65536:
            head = bytes([0x81, 0x80 | 126]) + struct.pack("!H", size)
        else:
            head = bytes([0x81, 0x80 | 127]) + struct.pack("!Q", size)
        self.writer.write(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    async def read_all(self, within: float = 60) -> tuple[list[dict[str, Any]], int | None]:
        """Every text message until the server's close frame, and the close code."""
        messages: list[dict[str, Any]] = []
        async with asyncio.timeout(within):
            while True:
                head = await self.reader.readexactly(2)
                opcode, size = head[0] & 0x0F, head[1] & 0x7F
                if size == 126:
                    size = struct.unpack("!H", await self.reader.readexactly(2))[0]
                elif size == 127:
                    size = struct.unpack("!Q", await self.reader.readexactly(8))[0]
                payload = await self.reader.readexactly(size)
                if opcode == 0x8:
                    code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                    self.writer.close()
                    return messages, code
                if opcode == 0x1:
                    messages.append(json.loads(payload))
