"""``concord projector`` (run the projector and relay), ``... rebuild`` and ``... verify``.

``register`` adds the commands to the ``concord`` parser.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable

import asyncpg
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from concord.command import CommandError, add_setting_flags, settings_from
from core.settings import Settings
from projector.rebuild import RebuildError, rebuild
from projector.runner import running
from projector.verify import verify

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    text = "run the projector and the outbox relay until SIGTERM (or: rebuild, verify)"
    parser = subparsers.add_parser("projector", help=text, description=text)
    add_setting_flags(parser)
    parser.set_defaults(handler=cmd_run)
    actions = parser.add_subparsers(dest="projector_action", metavar="ACTION")
    for name, handler, help_text in (
        ("rebuild", cmd_rebuild, "rebuild the read model from seq 1, then swap it in (live)"),
        ("verify", cmd_verify, "compare the read model with a replay of the log (exit 1 if not)"),
    ):
        action = actions.add_parser(name, help=help_text, description=help_text)
        add_setting_flags(action)
        action.set_defaults(handler=handler)
        if name == "rebuild":
            action.add_argument(
                "--workers",
                type=int,
                default=min(4, os.cpu_count() or 1),
                help="processes folding the log in parallel (default: cores, at most 4)",
            )


def _database_url(settings: Settings) -> str:
    if not settings.database_url:
        raise CommandError("CONCORD_DATABASE_URL is required (or use `concord dev`)")
    return settings.database_url


def cmd_run(args: argparse.Namespace) -> None:
    settings = settings_from(args)
    _database_url(settings)
    if not settings.nats_url:
        raise CommandError("CONCORD_NATS_URL is required (or use `concord dev`)")
    # A lower CPU priority (CONCORD_PROJECTOR_NICE; 0 leaves it): the projector can lag
    # during a burst and catch up after it; pushes and reads cannot wait
    # (docs/projector.md, "CPU priority").
    os.nice(settings.projector_nice)
    asyncio.run(_serve(settings))


async def _serve(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with running(settings):
        niceness = os.nice(0)
        print(f"concord projector: running (relay + projector, nice {niceness})", flush=True)
        await stop.wait()


@contextlib.asynccontextmanager
async def _pool(url: str) -> AsyncIterator[asyncpg.Pool]:
    try:
        pool = await asyncpg.create_pool(url, min_size=2, max_size=4, command_timeout=None)
    except (OSError, asyncpg.PostgresError) as exc:
        raise CommandError(f"CONCORD_DATABASE_URL: cannot connect: {exc}") from None
    try:
        yield pool
    finally:
        await pool.close()


def _progress_bar(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
    )


def _reporter(bar: Progress) -> Callable[[str, int, int], None]:
    tasks: dict[str, TaskID] = {}

    def show(phase: str, done: int, total: int) -> None:
        if phase not in tasks:
            tasks[phase] = bar.add_task(phase, total=total, rate="")
        task = tasks[phase]
        bar.update(task, completed=done, total=max(total, done))
        speed = bar.tasks[task].speed
        bar.update(task, rate=f"{speed:,.0f} events/s" if speed else "")

    return show


def cmd_rebuild(args: argparse.Namespace) -> None:
    url = _database_url(settings_from(args))
    console = Console(stderr=True)

    async def go() -> None:
        async with _pool(url) as pool:
            with _progress_bar(console) as bar:
                report = await rebuild(
                    pool, progress=_reporter(bar), dsn=url, workers=max(1, args.workers)
                )
        print(
            f"rebuilt {report.events:,} events of {report.spaces:,} spaces "
            f"({report.entities:,} entities) in {report.bulk_seconds:.2f} s "
            f"({report.rate:,.0f} events/s); caught up {report.catch_up_events:,} more; "
            f"swap held the read model for {report.swap_seconds * 1000:.0f} ms "
            f"(after {report.swap_wait_seconds * 1000:.0f} ms waiting for its lock)"
        )

    try:
        asyncio.run(go())
    except RebuildError as exc:
        raise CommandError(f"rebuild: {exc}") from None


def cmd_verify(args: argparse.Namespace) -> None:
    url = _database_url(settings_from(args))

    async def go() -> int:
        async with _pool(url) as pool:
            differences = await verify(pool)
        for d in differences:
            print(f"{d.space_id} {d.entity_type} {d.entity_id}: {d.problem}")
        print(f"verify: {len(differences)} entities differ from the log")
        return len(differences)

    if asyncio.run(go()):
        sys.exit(1)
