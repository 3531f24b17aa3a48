"""``Device``: the SDK's one entry point (see docs/sdk.md).

    async with Device.open("http://127.0.0.1:8000", "phone.db",
                           email="a@example.com", password="...") as phone:
        op_id = await phone.set(space, "task", "t-1", "title", "Buy milk")
        await phone.sync()
        print(phone.state(space, "task", "t-1").fields["title"].value)

Every write is queued durably (SQLite) before the call returns and shows in ``state``
at once; the sync engine sends it when a link is up, as often as needed, until the
server answers for it for good.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Generator
from pathlib import Path
from typing import Any

from client.engine import SyncEngine
from client.errors import ClientError, Offline, SyncTimeout
from client.faults import FlakyLink
from client.http import HttpApi
from client.replica import Replica
from client.session import Login, Session
from client.state import Acknowledged, DeviceConfig, RejectedOp, SyncStats
from client.store import LocalStore, Snapshot
from core.wire import Event, Notification, Operation
from crdt import EntityView


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


STATS_KEY = "sync_stats"


class Opening:
    """What ``Device.open`` returns: await it for a ``Device`` (close it yourself), or
    use it as ``async with`` (closed on the way out)."""

    def __init__(self, start: Coroutine[Any, Any, Device]) -> None:
        self._start = start
        self._device: Device | None = None

    def __await__(self) -> Generator[Any, None, Device]:
        return self._start.__await__()

    async def __aenter__(self) -> Device:
        self._device = await self._start
        return self._device

    async def __aexit__(self, *exc: object) -> None:
        if self._device is not None:
            await self._device.close()


class Device:
    """One installation of an app: its store, session, replica and sync engine."""

    def __init__(
        self,
        api: HttpApi,
        store: LocalStore,
        session: Session,
        replica: Replica,
        engine: SyncEngine,
    ) -> None:
        self.api = api
        self.store = store
        self.session = session
        self.replica = replica
        self.engine = engine
        self._write_lock = asyncio.Lock()
        self._closed = False

    @classmethod
    def open(
        cls,
        base_url: str,
        path: str | Path,
        *,
        email: str | None = None,
        password: str | None = None,
        device_name: str = "concord-sdk",
        register: bool = False,
        online: bool = True,
        config: DeviceConfig | None = None,
        faults: FlakyLink | None = None,
    ) -> Opening:
        """Open (or create) the device stored at ``path``.

        ``async with Device.open(...) as device:`` closes it on the way out;
        ``device = await Device.open(...)`` leaves that to ``await device.close()``
        (an app that closes and reopens its device at will).

        A stored session is resumed (no password needed); otherwise the device signs
        in with ``email``/``password`` (``register=True``: creates the account).
        ``online=False`` opens it with the link switched off (``go_online`` later).
        """
        login = Login(email, password, device_name, register)
        return Opening(
            cls._start(base_url, Path(path), login, online, config or DeviceConfig(), faults)
        )

    @classmethod
    async def _start(
        cls,
        base_url: str,
        path: Path,
        login: Login,
        online: bool,
        config: DeviceConfig,
        faults: FlakyLink | None,
    ) -> Device:
        api = HttpApi(base_url)
        store = LocalStore(path, synchronous=config.synchronous)
        try:
            snapshot = await store.open()
            stored_email = snapshot.meta.get("email")
            if login.email and stored_email and stored_email != login.email:
                raise ClientError(f"{path} belongs to {stored_email}, not {login.email}")
            session = Session(api, store, login)
            await session.start(snapshot.meta)
            device = cls._assemble(api, store, session, snapshot, config, faults or FlakyLink())
        except BaseException:
            await store.close()
            await api.aclose()
            raise
        device.engine.start(online)
        return device

    @classmethod
    def _assemble(
        cls,
        api: HttpApi,
        store: LocalStore,
        session: Session,
        snapshot: Snapshot,
        config: DeviceConfig,
        faults: FlakyLink,
    ) -> Device:
        """The replica and the engine, from what the store held."""
        replica = Replica(session.device_id, lamport=int(snapshot.meta.get("lamport", "0")))
        replica.load(snapshot.states, snapshot.queue)
        engine = SyncEngine(
            base_url=api.base_url,
            replica=replica,
            store=store,
            session=session,
            config=config,
            faults=faults,
            cursors=dict(snapshot.cursors),
            rejected=[
                RejectedOp(r.op, r.code, r.message, r.rejected_at) for r in snapshot.rejected
            ],
        )
        engine.stats = SyncStats.load(snapshot.meta.get(STATS_KEY))
        for op in snapshot.queue:
            engine.watch(op.space_id)
        if session.personal_space_id:
            engine.watch(session.personal_space_id)
        return cls(api, store, session, replica, engine)

    async def close(self) -> None:
        """Stop syncing, store the counters (``stats``) and close the file. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            await self.engine.stop()
            await self.store.put_meta({STATS_KEY: self.engine.stats.dump()})
        finally:
            await self.store.close()
            await self.api.aclose()

    # ------------------------------------------------------------------ identity

    @property
    def user_id(self) -> str:
        return self.session.user_id

    @property
    def device_id(self) -> str:
        return self.session.device_id

    @property
    def personal_space_id(self) -> str:
        return self.session.personal_space_id

    async def token(self) -> str:
        """A valid access token, for HTTP calls through ``device.api``."""
        return await self.session.fresh_token(margin=2.0)

    # ------------------------------------------------------------------ writes

    async def set(
        self, space_id: str, entity_type: str, entity_id: str, field: str, value: Any
    ) -> str:
        """Set an lww or mv field; ``pred`` is the field's current heads."""
        return await self._write(space_id, entity_type, entity_id, "set", field, value)

    async def inc(
        self, space_id: str, entity_type: str, entity_id: str, field: str, delta: int
    ) -> str:
        """Add ``delta`` to a counter field."""
        return await self._write(space_id, entity_type, entity_id, "inc", field, delta)

    async def add(
        self, space_id: str, entity_type: str, entity_id: str, field: str, element: str | int
    ) -> str:
        """Add an element to a set field."""
        return await self._write(space_id, entity_type, entity_id, "add", field, element)

    async def remove(
        self, space_id: str, entity_type: str, entity_id: str, field: str, element: str | int
    ) -> str:
        """Remove an element: ``pred`` is the live adds of it this device has seen."""
        return await self._write(space_id, entity_type, entity_id, "remove", field, element)

    async def delete(self, space_id: str, entity_type: str, entity_id: str) -> str:
        return await self._write(space_id, entity_type, entity_id, "delete", None, None)

    async def restore(self, space_id: str, entity_type: str, entity_id: str) -> str:
        return await self._write(space_id, entity_type, entity_id, "restore", None, None)

    async def _write(
        self,
        space_id: str,
        entity_type: str,
        entity_id: str,
        kind: str,
        field: str | None,
        value: Any,
    ) -> str:
        if self._closed:
            raise ClientError("the device is closed")
        async with self._write_lock:  # pred and lamport see every earlier write
            op = self.replica.make_op(
                space_id, entity_type, entity_id, kind, field, value, client_time=_now()
            )
            await self.store.enqueue(op, self.replica.clock.value)
            self.replica.add_pending(op)
        self.engine.watch(space_id)
        self.engine.wake.set()
        return op.op_id

    # ------------------------------------------------------------------ reads

    def state(self, space_id: str, entity_type: str, entity_id: str) -> EntityView | None:
        """The merged state this device shows: server events plus its queued ops."""
        return self.replica.view(space_id, entity_type, entity_id)

    def entity_ids(self, space_id: str, entity_type: str) -> list[str]:
        return self.replica.entity_ids(space_id, entity_type)

    def pending(self) -> list[Operation]:
        """Ops queued and not yet answered for good, in send order."""
        return list(self.replica.pending.values())

    def rejected(self) -> list[RejectedOp]:
        """Ops the server refused for good (persisted; never resent)."""
        return list(self.engine.rejected)

    def cursor(self, space_id: str) -> int:
        """The last seq of the space this device holds."""
        return self.engine.cursors.get(space_id, 0)

    @property
    def stats(self) -> SyncStats:
        return self.engine.stats

    @property
    def notifications(self) -> list[Notification]:
        return self.engine.notifications

    @property
    def faults(self) -> FlakyLink:
        return self.engine.faults

    def on_event(self, listener: Callable[[Event], None]) -> None:
        """Call ``listener`` for every event received (server kinds included)."""
        self.engine.listeners.append(listener)

    def on_acknowledged(self, listener: Callable[[Acknowledged], None]) -> None:
        """Call ``listener`` once per op the server stored (``applied`` or ``duplicate``),
        after the acknowledgement is durable on this device."""
        self.engine.ack_listeners.append(listener)

    def on_rejected(self, listener: Callable[[RejectedOp], None]) -> None:
        """Call ``listener`` once per op the server refused for good (after it is in
        ``rejected()``)."""
        self.engine.reject_listeners.append(listener)

    # ------------------------------------------------------------------ link

    @property
    def online(self) -> bool:
        return self.engine.online.is_set()

    @property
    def connected(self) -> bool:
        return self.engine.authed.is_set()

    async def go_offline(self) -> None:
        """Switch the link off (airplane mode): writes keep queueing."""
        await self.engine.go_offline()

    def go_online(self) -> None:
        """Switch the link on: connect, resend the queue, catch up."""
        self.engine.online.set()

    def subscribe(self, space_id: str) -> None:
        """Receive a space's events (spaces written to are subscribed automatically).

        Always sends a fresh ``subscribe`` (from the cursor), also for a space this
        device holds or lost: an app calls it when it learns it is a member again, and
        a subscription the server ended with ``not_found`` (a removal) must be asked
        for anew."""
        self.engine.watch(space_id)
        self.engine.lost_spaces.discard(space_id)
        self.engine.resubscribe([space_id])

    async def sync(self, within: float = 60.0) -> None:
        """Wait until the queue is drained and every space is caught up with the server.

        Catching up is proved by a fresh ``caught_up`` per space, asked for after the
        queue drained, so it covers what other devices stored before this call.
        Raises ``Offline`` when the link is switched off, ``SyncTimeout`` when it takes
        longer than ``within`` seconds, ``SignedOut`` when the session ended.
        """
        if not self.online:
            raise Offline("the device is offline: go_online() first")
        engine = self.engine
        deadline = time.monotonic() + within
        if not await engine.wait_until(lambda: not self.replica.pending, deadline):
            raise SyncTimeout(f"{len(self.replica.pending)} ops still queued after {within}s")
        spaces = sorted(engine.spaces)
        marks = {s: engine.caught.get(s, (0, 0))[0] for s in spaces}
        engine.resubscribe(spaces)  # the server answers each with a fresh caught_up

        def caught_up() -> bool:
            for s in spaces:
                if s in engine.lost_spaces:
                    continue
                generation, seq = engine.caught.get(s, (0, 0))
                held = engine.cursors.get(s, 0)
                if generation <= marks[s] or held < seq or held < engine.acked_seq.get(s, 0):
                    return False
            return True

        if not await engine.wait_until(caught_up, deadline):
            raise SyncTimeout(f"spaces not caught up after {within}s")
