"""The chaos run's users, spaces and devices, and what they do while faults happen.

Ten users, each with a personal space and owning one shared space (20 spaces); five
devices per user (50), each an SDK ``Device`` with its own SQLite file, writing random
ops over every field kind, going offline while its queue grows, restarting from its
file and coming back through either gateway. One in five devices does not refresh its
token early, so access tokens (30 s) expire under their queues. Owners invite, change
roles and remove members meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from client import ApiError, Device, DeviceConfig, FlakyLink, HttpApi
from client.errors import ClientError
from client.session import parse_time
from crdt import EntityView
from lab.chaos.cluster import Cluster
from lab.chaos.model import PASSWORD, Sim, User

TASKS = 12  # task ids per space: few enough that devices collide on them
TAGS = ("red", "green", "blue", "home", "work")
DEVICE_CONFIG = DeviceConfig(
    synchronous="NORMAL", backoff_base=0.2, backoff_cap=3.0, push_timeout=10.0
)


@dataclass
class World:
    """Users, spaces and devices of one run, and the lab's idea of who is a member."""

    cluster: Cluster
    workdir: Path
    rng: random.Random
    users: list[User] = field(default_factory=list)
    sims: list[Sim] = field(default_factory=list)
    shared: dict[str, User] = field(default_factory=dict)  # space -> owner
    roles: dict[str, dict[str, str]] = field(default_factory=dict)  # space -> email -> role
    membership_changes: int = 0
    api: HttpApi | None = None

    def admin_api(self) -> HttpApi:
        """An HttpApi on gateway-a's own port (not its proxy): setup and membership
        changes must not be answered into a swallowing proxy."""
        url = self.cluster.direct_url("gateway-a")
        if self.api is None or self.api.base_url != url:
            self.api = HttpApi(url)
        return self.api

    def writable(self, user: User) -> list[str]:
        spaces = [user.personal_space]
        for space, roles in self.roles.items():
            if roles.get(user.email) in ("owner", "editor"):
                spaces.append(space)
        return spaces

    def devices_of(self, user: User) -> list[Sim]:
        return [s for s in self.sims if s.user is user]

    async def close(self) -> None:
        for sim in self.sims:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(close_device(sim), 30)
        if self.api is not None:
            await self.api.aclose()


async def with_retries(work: Callable[[], Awaitable[None]], attempts: int = 30) -> None:
    """Await ``work()`` again after retryable errors (a server down for a fault)."""
    for attempt in range(attempts):
        try:
            await work()
            return
        except ApiError as exc:
            if not exc.retryable or attempt == attempts - 1:
                raise
            await asyncio.sleep(0.5)


async def set_up(world: World, users: int, devices_per_user: int) -> None:
    """Register the users, share one space per owner with two others, open devices."""
    api = world.admin_api()
    tag = uuid.uuid4().hex[:6]
    for i in range(users):
        user = User(f"u{i}", f"chaos-{tag}-u{i}@example.com")
        answer = await api.register(user.email, PASSWORD, "chaos-setup")
        user.user_id, user.personal_space = answer.user_id, answer.personal_space_id
        user.access, user.refresh = answer.access_token, answer.refresh_token
        user.expires_at = parse_time(answer.access_expires_at)
        world.users.append(user)
    for i, owner in enumerate(world.users):
        space = await api.create_space(await owner.token(api), f"shared by {owner.label}")
        world.shared[space] = owner
        world.roles[space] = {owner.email: "owner"}
        for other in (world.users[(i + 1) % users], world.users[(i + 3) % users]):
            await join(world, space, other, "editor")
    for user in world.users:
        for _ in range(devices_per_user):
            index = len(world.sims)
            sim = Sim(
                index=index,
                user=user,
                path=world.workdir / f"{user.label}-d{index}.db",
                gateway=world.cluster.gateways[index % 2],
                refresh_early=index % 5 != 0,
            )
            world.sims.append(sim)
    await asyncio.gather(*(open_device(world, s) for s in world.sims))


async def join(world: World, space: str, user: User, role: str) -> None:
    """Invite ``user`` (or change its role when it is a member) and accept."""
    api = world.admin_api()
    owner = world.shared[space]
    made = await api.invite(await owner.token(api), space, user.email, role)
    code = getattr(made, "code", None)
    if code is not None:
        await api.accept_invitation(await user.token(api), code)
    world.roles[space][user.email] = role
    world.membership_changes += 1
    for sim in world.devices_of(user):
        if sim.device is not None:
            sim.device.subscribe(space)


async def remove(world: World, space: str, user: User) -> None:
    api = world.admin_api()
    owner = world.shared[space]
    await api.remove_member(await owner.token(api), space, user.user_id)
    world.roles[space].pop(user.email, None)
    world.membership_changes += 1


async def open_device(world: World, sim: Sim, *, online: bool = True) -> None:
    """Open the device from its SQLite file (logging in when the file has no session
    for this gateway), retrying while the server is down."""
    url = world.cluster.url(sim.gateway)
    for attempt in range(60):
        try:
            device = await Device.open(
                url,
                sim.path,
                email=sim.user.email,
                password=PASSWORD,
                device_name=sim.name,
                online=online,
                config=DEVICE_CONFIG,
                faults=FlakyLink(proactive_refresh=sim.refresh_early),
            )
        except ApiError as exc:
            if (not exc.retryable and exc.status not in (429,)) or attempt == 59:
                raise
            await asyncio.sleep(1.0)
            continue
        sim.attach(device)
        for space, roles in world.roles.items():
            if sim.user.email in roles:
                device.subscribe(space)
        return


async def close_device(sim: Sim) -> None:
    device, sim.device = sim.device, None
    if device is not None:
        await device.close()  # its SyncStats are stored in its file for the next open


def _soon(rng: random.Random) -> str:
    at = datetime.now(UTC) + timedelta(seconds=rng.uniform(2, 8))
    return at.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _tags(view: EntityView) -> list[str]:
    tags = view.fields.get("tags")
    return list(tags.value) if tags is not None and tags.value else []


async def write_one(world: World, sim: Sim, rng: random.Random) -> None:
    """One random op over one of the field kinds, in a space the user may write."""
    device = sim.device
    assert device is not None
    space = rng.choice(world.writable(sim.user))
    task = f"t-{rng.randrange(TASKS)}"
    view = device.state(space, "task", task)
    roll = rng.random()
    if roll < 0.25:
        op = await device.set(space, "task", task, "title", f"title {rng.randrange(10**6)}")
    elif roll < 0.35:
        who = rng.choice(world.users).label
        op = await device.set(space, "task", task, "assignee", who)
    elif roll < 0.55:
        op = await device.inc(space, "task", task, "pomodoros", rng.randint(-1, 3))
    elif roll < 0.70:
        op = await device.add(space, "task", task, "tags", rng.choice(TAGS))
    elif roll < 0.78 and view is not None and _tags(view):
        op = await device.remove(space, "task", task, "tags", rng.choice(_tags(view)))
    elif roll < 0.82:
        op = await device.set(space, "task", task, "done", rng.random() < 0.5)
    elif roll < 0.87:
        op = await device.set(space, "task", task, "remind_at", _soon(rng))
    elif roll < 0.91 and view is not None and not view.deleted:
        op = await device.delete(space, "task", task)
    elif roll < 0.95 and view is not None and view.deleted:
        op = await device.restore(space, "task", task)
    else:
        lst = f"l-{rng.randrange(3)}"
        op = await device.set(space, "list", lst, "name", f"list {rng.randrange(1000)}")
    made = device.replica.pending.get(op)  # queued by the call; nothing ran since
    assert made is not None
    sim.made[op] = made


async def drive(world: World, sim: Sim, ops: int, until: float, pace: float) -> None:
    """The device's life during the chaos phase: mostly writes; sometimes offline for a
    stretch (writes keep queueing), sometimes a restart from its SQLite file, half of
    them through the other gateway."""
    rng = random.Random(f"{world.rng.random()}-{sim.index}")
    target = len(sim.made) + ops
    offline_until = 0.0
    while len(sim.made) < target and time.monotonic() < until:
        await asyncio.sleep(rng.expovariate(1 / pace))
        now = time.monotonic()
        if sim.device is None:
            continue
        if offline_until and now >= offline_until:
            sim.device.go_online()
            offline_until = 0.0
        roll = rng.random()
        if roll < 0.004 and not offline_until:
            await sim.device.go_offline()
            sim.offline_stretches += 1
            offline_until = now + rng.uniform(2, 15)
        elif roll < 0.006:
            await restart(world, sim, rng, online=not offline_until)
        else:
            with contextlib.suppress(ClientError):
                await write_one(world, sim, rng)


async def restart(world: World, sim: Sim, rng: random.Random, *, online: bool) -> None:
    """Close the device and open it again from its file, maybe through the other gateway."""
    await close_device(sim)
    sim.restarts += 1
    if rng.random() < 0.5:
        a, b = world.cluster.gateways
        sim.gateway = b if sim.gateway == a else a
    await open_device(world, sim, online=online)


async def churn_members(world: World, until: float, rng: random.Random) -> None:
    """Owners invite, change roles and remove members, every few seconds."""
    while time.monotonic() < until:
        await asyncio.sleep(rng.uniform(2, 5))
        space = rng.choice(list(world.shared))
        owner = world.shared[space]
        roles = world.roles[space]
        others = [u for u in world.users if u is not owner]
        user = rng.choice(others)
        if user.email not in roles:
            role = rng.choice(("editor", "viewer"))
            change = functools.partial(join, world, space, user, role)
        elif rng.random() < 0.5:
            role = "viewer" if roles[user.email] == "editor" else "editor"
            change = functools.partial(join, world, space, user, role)
        else:
            change = functools.partial(remove, world, space, user)
        try:
            await with_retries(change)
        except ApiError as exc:  # e.g. a retry of a change that had gone through
            if exc.status >= 500:
                raise
