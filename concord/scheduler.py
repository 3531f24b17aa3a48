"""``concord scheduler``: reminders and background jobs until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

import asyncpg

from concord.command import CommandError, add_setting_flags, settings_from
from core.settings import Settings
from scheduler.service import SchedulerService

log = logging.getLogger("concord.scheduler")

HELP = "run the scheduler (reminders and background jobs) against configured services"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``concord scheduler``."""
    parser = subparsers.add_parser("scheduler", help=HELP, description=HELP)
    add_setting_flags(parser)
    parser.set_defaults(handler=cmd_scheduler)


def cmd_scheduler(args: argparse.Namespace) -> None:
    settings = settings_from(args)
    if not settings.database_url or not settings.nats_url:
        raise CommandError(
            "CONCORD_DATABASE_URL and CONCORD_NATS_URL are required (or use `concord dev`)"
        )
    settings.require_secret_key()
    asyncio.run(_run(settings))


async def _check_migrated(database_url: str) -> None:
    try:
        conn = await asyncpg.connect(database_url, timeout=10)
    except (OSError, asyncpg.PostgresError) as exc:
        raise CommandError(f"CONCORD_DATABASE_URL: cannot connect: {exc}") from None
    try:
        if not await conn.fetchval("SELECT to_regclass('reminders') IS NOT NULL"):
            raise CommandError("the database has no reminders table: run `concord migrate`")
    finally:
        await conn.close()


async def _run(settings: Settings) -> None:
    """Run until SIGTERM or SIGINT, then stop cleanly."""
    assert settings.database_url is not None
    await _check_migrated(settings.database_url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with SchedulerService(settings) as service:
        print(f"Concord scheduler {service.instance} running", flush=True)
        await stop.wait()
