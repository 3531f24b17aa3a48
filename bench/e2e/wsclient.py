"""A lean WebSocket device for load generation (docs/protocol.md section 5, JSON frames).

The SDK (``client/``) keeps a durable SQLite queue per device, which would make the
driver the bottleneck; a benchmark device only needs to send pushes, read results and
events, and build valid ops. Messages are decoded with msgspec into small Structs
that keep only the fields a workload reads.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from typing import Any

import msgspec
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.typing import Subprotocol


class Result(msgspec.Struct):
    status: str
    seq: int | None = None
    error: dict[str, Any] | None = None


class Event(msgspec.Struct):
    seq: int
    kind: str
    entity_id: str = ""
    field: str | None = None
    value: Any = None


class Message(msgspec.Struct):
    """Any server message, with the fields the workloads use."""

    type: str
    batch_id: str | None = None
    results: list[Result] | None = None
    space_id: str | None = None
    events: list[Event] | None = None
    seq: int | None = None
    head: int | None = None
    error: dict[str, Any] | None = None
    ref: str | None = None


DECODE = msgspec.json.Decoder(Message).decode
ENCODE = msgspec.json.Encoder().encode


class Socket:
    """One connected, authenticated device."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    @classmethod
    async def open(
        cls,
        url: str,
        token: str,
        subscriptions: list[tuple[str, int]] | None = None,
        *,
        deflate: bool = False,
    ) -> Socket:
        """Connect, send ``hello`` and wait for ``welcome``; as a device would, retry (a
        few times, backing off) when the server closes the socket before ``welcome`` with
        1011 or 1013 (its storage was unavailable: a shared PostgreSQL out of
        connections, say)."""
        for attempt in range(5):
            try:
                return await cls._open(url, token, subscriptions, deflate)
            except websockets.ConnectionClosedError as exc:
                if exc.rcvd is None or exc.rcvd.code not in (1011, 1013) or attempt == 4:
                    raise
                print(f"hello refused ({exc.rcvd.code} {exc.rcvd.reason}); retrying", flush=True)
                await asyncio.sleep(0.5 * 2**attempt)
        raise AssertionError("unreachable")

    @classmethod
    async def _open(
        cls, url: str, token: str, subscriptions: list[tuple[str, int]] | None, deflate: bool
    ) -> Socket:
        ws = await websockets.connect(
            url,
            subprotocols=[Subprotocol("concord.v1.json")],
            max_size=64 * 1024 * 1024,
            open_timeout=60,
            ping_interval=None,  # the server pings; answering is enough
            # Offer permessage-deflate only when asked (browsers always offer it).
            compression="deflate" if deflate else None,
        )
        sock = cls(ws)
        subs = [{"space_id": s, "after": after} for s, after in subscriptions or []]
        await sock.send({"type": "hello", "token": token, "subscriptions": subs})
        first = await sock.recv()
        if first.type != "welcome":
            raise RuntimeError(f"expected welcome, got {first}")
        return sock

    async def send(self, message: Any) -> None:
        await self.ws.send(ENCODE(message), text=True)

    async def send_raw(self, data: bytes) -> None:
        """Send encoded JSON as a text frame (no decode and re-encode)."""
        await self.ws.send(data, text=True)

    async def recv(self) -> Message:
        return DECODE(await self.ws.recv(decode=False))

    async def close(self) -> None:
        await self.ws.close()


_urandom = os.urandom
#: The variant bits (10xx) set in the 17th hex digit, the other two kept.
_VARIANT = {d: "89ab"[int(d, 16) & 3] for d in "0123456789abcdef"}


def random_op_id() -> str:
    """A random version-4 UUID in canonical form, as ``str(uuid.uuid4())`` gives, in a
    third of its CPU: the simulated devices share the two cores with the server, and
    ``uuid4`` was a third of their CPU per op in ingest (1.9 of 5.3 µs)."""
    h = _urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"


class Writer:
    """Valid ``set`` ops of one device on its own tasks (``pred`` = the field's last set).

    A device in sync names the field's heads in ``pred``; here each device writes only
    its own tasks, so its last set of a field is the field's one head, and the space's
    stored sets never pile up as concurrent heads."""

    FIELDS = ("title", "notes", "position", "done")

    def __init__(self, space_id: str, prefix: str, tasks: int) -> None:
        self.space_id = space_id
        self.prefix = prefix
        self.tasks = tasks
        self.lamport = 0
        self.n = 0
        self.heads: dict[tuple[int, str], str] = {}

    def op(self, value: Any = None, *, field: str | None = None, task: int | None = None) -> Any:
        n = self.n
        self.n += 1
        self.lamport += 1
        task = n % self.tasks if task is None else task
        name = field or self.FIELDS[(n // self.tasks) % len(self.FIELDS)]
        if value is None:
            value = (n % 2 == 0) if name == "done" else f"{name} {n}"
        op_id = random_op_id()
        key = (task, name)
        pred = self.heads.get(key)
        self.heads[key] = op_id
        return {
            "op_id": op_id,
            "space_id": self.space_id,
            "entity_type": "task",
            "entity_id": f"{self.prefix}-{task}",
            "kind": "set",
            "field": name,
            "value": value,
            "pred": [pred] if pred else [],
            "lamport": self.lamport,
        }

    def push(self, count: int) -> tuple[str, bytes]:
        """A push message of ``count`` ops, encoded; and its batch id."""
        batch = uuid.uuid4().hex
        ops = [self.op() for _ in range(count)]
        return batch, ENCODE({"type": "push", "batch_id": batch, "ops": ops})


def close_reason(exc: websockets.ConnectionClosed) -> str:
    """How the server closed a socket: ``"1011 keepalive ping timeout"``."""
    frame = exc.rcvd
    return f"{frame.code} {frame.reason}" if frame else "no close frame"
