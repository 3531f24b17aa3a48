"""The SDK tells the app what the server answered: an acknowledgement callback per stored
op (``applied``, or ``duplicate`` for a resend whose first answer was lost) and a
rejection callback per op refused for good."""

from __future__ import annotations

from pathlib import Path

from client import Acknowledged, Device, FlakyLink, RejectedOp
from tests.e2e.conftest import GatewayProcess
from tests.e2e.harness import register


async def test_acknowledgements_and_rejections_are_told_once_each(
    gateway: GatewayProcess, tmp_path: Path
) -> None:
    account = await register(gateway.base_url)
    acked: list[Acknowledged] = []
    refused: list[RejectedOp] = []
    async with Device.open(
        gateway.base_url,
        tmp_path / "phone.db",
        email=account.email,
        password=account.password,
        online=False,
        faults=FlakyLink(drop_results=1),  # the first answer is lost: a resend follows
    ) as phone:
        phone.on_acknowledged(acked.append)
        phone.on_rejected(refused.append)
        space = phone.personal_space_id
        good = [await phone.set(space, "task", f"t-{i}", "title", f"task {i}") for i in range(5)]
        bad = await phone.set(space, "task", "t-0", "done", "not a boolean")
        phone.go_online()
        await phone.sync()
    assert sorted(a.op.op_id for a in acked) == sorted(good)
    assert {a.status for a in acked} == {"duplicate"}  # the lost push was stored whole
    assert all(a.seq > 0 for a in acked)
    assert [(r.op.op_id, r.code) for r in refused] == [(bad, "type_mismatch")]


async def test_a_device_closes_and_reopens_without_a_context_and_keeps_its_stats(
    gateway: GatewayProcess, tmp_path: Path
) -> None:
    account = await register(gateway.base_url)
    path = tmp_path / "tablet.db"
    tablet = await Device.open(
        gateway.base_url, path, email=account.email, password=account.password
    )
    await tablet.set(tablet.personal_space_id, "task", "t-1", "title", "first open")
    await tablet.sync()
    first = tablet.stats
    assert first.pushes >= 1
    assert first.connects >= 1
    await tablet.close()
    await tablet.close()  # idempotent

    again = await Device.open(gateway.base_url, path)  # the stored session
    try:
        assert again.stats.pushes == first.pushes  # counters kept across opens
        assert again.stats.results == first.results
        await again.set(again.personal_space_id, "task", "t-1", "title", "second open")
        await again.sync()
        assert again.stats.pushes == first.pushes + 1
        assert again.stats.connects == first.connects + 1
    finally:
        await again.close()


async def test_http_api_lists_spaces_entities_and_devices(
    gateway: GatewayProcess, tmp_path: Path
) -> None:
    account = await register(gateway.base_url)
    async with Device.open(
        gateway.base_url, tmp_path / "phone.db", email=account.email, password=account.password
    ) as phone:
        space = phone.personal_space_id
        await phone.set(space, "task", "t-1", "title", "listed")
        await phone.set(space, "task", "t-2", "title", "gone")
        await phone.delete(space, "task", "t-2")
        await phone.sync()
        api, token = phone.api, await phone.token()
        shared = await api.create_space(token, "shared")
        spaces = {s.space_id: (s.role, s.personal) for s in await api.spaces(token)}
        assert spaces == {space: ("owner", True), shared: ("owner", False)}
        listed = await api.entities(token, space, "task")
        assert [(e.entity_id, e.fields["title"].value) for e in listed] == [("t-1", "listed")]
        everything = await api.entities(token, space, include_deleted=True)
        assert [e.entity_id for e in everything] == ["t-1", "t-2"]
        devices = await api.devices(token)
        others = [d for d in devices if not d.current]
        assert [d.device_id for d in devices if d.current] == [phone.device_id]
        assert others  # the device that registered the account
        await api.revoke_device(token, others[0].device_id)
        revoked = {d.device_id: d.revoked for d in await api.devices(token)}
        assert revoked[others[0].device_id] is True
