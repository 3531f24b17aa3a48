"""Helpers for scheduler tests and benchmarks: write tasks through the event store, and
a local webhook receiver. Not used by the server.

:class:`TaskWriter` pushes real client ops (``set remind_at``, ``done``, ``delete``...)
through ``EventStore.append``, as a device would, keeping each field's head as ``pred``.
:class:`WebhookReceiver` is a minimal HTTP/1.1 server on 127.0.0.1 whose answer the test
scripts (fail N times, always fail, hang) and which keeps every request it received.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from core.ports import EventStore
from scheduler.clock import format_time


def new_id() -> str:
    return str(uuid.uuid4())


def at(seconds: float, base: datetime | None = None) -> str:
    """An RFC 3339 ``Z`` timestamp ``seconds`` from ``base`` (default: now)."""
    return format_time((base or datetime.now(UTC)) + timedelta(seconds=seconds))


class TaskWriter:
    """One device writing tasks into one space through the event store."""

    def __init__(self, store: EventStore, space_id: str, user_id: str) -> None:
        self.store = store
        self.space_id = space_id
        self.user_id = user_id
        self.device_id = new_id()
        self.lamport = 0
        self._heads: dict[tuple[str, str], str] = {}

    @classmethod
    async def new_space(cls, store: EventStore, name: str = "reminders") -> TaskWriter:
        user_id = new_id()
        space_id = await store.create_space(name=name, creator_user_id=user_id, personal=False)
        return cls(store, space_id, user_id)

    def op(self, entity_id: str, kind: str, field: str | None, value: Any = None) -> dict[str, Any]:
        """A raw op superseding this writer's previous op of the same field (or lifecycle)."""
        self.lamport += 1
        op_id = new_id()
        scope = (entity_id, field or "_life")
        raw: dict[str, Any] = {
            "op_id": op_id,
            "space_id": self.space_id,
            "entity_type": "task",
            "entity_id": entity_id,
            "kind": kind,
            "lamport": self.lamport,
            "pred": [self._heads[scope]] if scope in self._heads else [],
        }
        if field is not None:
            raw["field"] = field
            raw["value"] = value
        self._heads[scope] = op_id
        return raw

    async def push(self, ops: list[dict[str, Any]]) -> list[str]:
        """Append ``ops`` as one push; their op_ids. Every op must be applied."""
        outcome = await self.store.append(user_id=self.user_id, device_id=self.device_id, ops=ops)
        bad = [r for r in outcome.results if r.status != "applied"]
        if bad:
            raise AssertionError(f"push not applied: {bad}")
        return [op["op_id"] for op in ops]

    async def set(self, entity_id: str, field: str, value: Any) -> str:
        return (await self.push([self.op(entity_id, "set", field, value)]))[0]

    async def task(self, entity_id: str, remind_at: str | None, title: str = "task") -> str:
        """Create a task with a title and a reminder; the reminder_id (remind_at's op_id)."""
        ops = [self.op(entity_id, "set", "title", title)]
        ops.append(self.op(entity_id, "set", "remind_at", remind_at))
        return (await self.push(ops))[1]

    async def delete(self, entity_id: str) -> str:
        return (await self.push([self.op(entity_id, "delete", None)]))[0]

    async def restore(self, entity_id: str) -> str:
        return (await self.push([self.op(entity_id, "restore", None)]))[0]


# ---------------------------------------------------------------------- webhook receiver


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    at: datetime


@dataclass
class WebhookReceiver:
    """``respond(n)`` says what to do with the n-th request (1-based): an HTTP status,
    or None to hang (never answer). ``location``, when set, is sent with every answer
    (a redirect's target). ``drip``, when set, sends each answer's 20-byte body one byte
    every ``drip`` seconds (a server that answers, but too slowly); ``delay`` holds each
    answer back that many seconds."""

    respond: Callable[[int], int | None] = lambda n: 200
    location: str | None = None
    drip: float | None = None
    delay: float = 0.0
    requests: list[Received] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None
    _hung: list[asyncio.StreamWriter] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def __aenter__(self) -> WebhookReceiver:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for writer in self._hung:
            writer.close()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request = await _read_request(reader)
                if request is None:
                    break
                self.requests.append(request)
                status = self.respond(len(self.requests))
                if status is None:
                    self._hung.append(writer)
                    return
                await asyncio.sleep(self.delay)
                where = "" if self.location is None else f"location: {self.location}\r\n"
                body = b"ok" if self.drip is None else b"x" * 20
                head = f"HTTP/1.1 {status} X\r\n{where}content-length: {len(body)}\r\n\r\n"
                writer.write(head.encode())
                if self.drip is None:
                    writer.write(body)
                else:
                    await self._drip(writer, body, self.drip)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        writer.close()

    @staticmethod
    async def _drip(writer: asyncio.StreamWriter, body: bytes, every: float) -> None:
        for i in range(len(body)):
            writer.write(body[i : i + 1])
            await writer.drain()
            await asyncio.sleep(every)


async def _read_request(reader: asyncio.StreamReader) -> Received | None:
    head = await reader.readuntil(b"\r\n\r\n") if not reader.at_eof() else b""
    if not head:
        return None
    headers: dict[str, str] = {}
    for line in head.decode("latin-1").split("\r\n")[1:]:
        if ":" in line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return Received(headers=headers, body=body, at=datetime.now(UTC))
