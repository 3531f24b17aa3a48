"""Entity reads come from the projector's read model, topped up from the log's tail."""

from __future__ import annotations

import asyncpg

from core.settings import Settings
from tests.e2e.harness import Device, ServerProcess, http, op, register
from tests.integration.test_projector_support import caught_up


async def test_reads_use_the_read_model_and_stay_fresh(settings: Settings) -> None:
    gateway = ServerProcess(settings).start()
    projector = ServerProcess(settings, command="projector")
    try:
        acct = await register(gateway.url)
        device = await Device.connect(gateway.ws_url, acct.access_token)
        ops = [op(acct.space_id, f"t-{i}", "title", f"task {i}", lamport=i + 1) for i in range(3)]
        await device.push(ops)
        projector.start_worker()
        assert settings.database_url is not None
        pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=2)
        try:
            await caught_up(pool, [acct.space_id])
            listed = await http(
                gateway.url, "GET", f"/v1/spaces/{acct.space_id}/entities", acct.access_token
            )
            assert [e["entity_id"] for e in listed.json()["entities"]] == ["t-0", "t-1", "t-2"]
            # Remove one projected row behind the projector's back: a listing that still
            # shows it would not be reading the read model.
            await pool.execute(
                "DELETE FROM entity_states WHERE space_id = $1 AND entity_id = 't-1'",
                acct.space_id,
            )
            listed = await http(
                gateway.url, "GET", f"/v1/spaces/{acct.space_id}/entities", acct.access_token
            )
            body = listed.json()
            assert [e["entity_id"] for e in body["entities"]] == ["t-0", "t-2"]
            assert body["seq"] == await pool.fetchval(
                "SELECT head FROM spaces WHERE space_id = $1", acct.space_id
            )
        finally:
            await pool.close()
        # With the projector stopped, a write is still read back at once (log tail).
        projector.stop()
        reply = await device.push([op(acct.space_id, "t-0", "title", "renamed", lamport=9)])
        one = await http(
            gateway.url,
            "GET",
            f"/v1/spaces/{acct.space_id}/entities/task/t-0",
            acct.access_token,
        )
        assert one.json()["fields"]["title"]["value"] == "renamed"
        assert one.json()["seq"] == reply["results"][0]["seq"]
        await device.close()
    finally:
        projector.stop()
        gateway.stop()
