"""``concord audit export|verify|replay``: the log, its hash chain, and state from the log alone.

Exit status: 0 when all is well, 1 when
``verify`` finds a broken chain, 2 for bad input, an unknown space included (one line
on stderr).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import asyncpg

from concord.command import CommandError, add_setting_flags, database_url_for, settings_from
from core.errors import ConcordError
from eventstore import audit

T = TypeVar("T")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    text = "export, verify or replay the event log (state from the log alone)"
    parser = subparsers.add_parser("audit", help=text, description=text)
    actions = parser.add_subparsers(dest="audit_action", metavar="ACTION", required=True)

    export = actions.add_parser("export", help="the log of a space as JSON lines")
    export.add_argument("space_id")
    export.add_argument("--out", type=Path, help="write to this file (default: stdout)")
    export.set_defaults(handler=cmd_export)

    verify = actions.add_parser("verify", help="recompute hash chains; exit 1 on a broken one")
    target = verify.add_mutually_exclusive_group(required=True)
    target.add_argument("space_id", nargs="?")
    target.add_argument("--all", action="store_true", help="every space")
    verify.set_defaults(handler=cmd_verify)

    replay = actions.add_parser("replay", help="merged state folded from the log alone")
    replay.add_argument("space_id")
    when = replay.add_mutually_exclusive_group()
    when.add_argument("--as-of-seq", type=int, metavar="N")
    when.add_argument("--as-of", metavar="TIMESTAMP", help="RFC 3339, e.g. 2026-11-23T10:00:00Z")
    replay.add_argument("--entity", metavar="TYPE/ID", help="one entity, e.g. task/t-1")
    replay.set_defaults(handler=cmd_replay)
    for action in (export, verify, replay):
        add_setting_flags(action)


def _run(args: argparse.Namespace, work: Callable[[asyncpg.Pool], Awaitable[T]]) -> T:
    settings = settings_from(args)

    async def go(dsn: str) -> T:
        try:
            pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
        except (OSError, asyncpg.PostgresError) as exc:
            raise CommandError(f"CONCORD_DATABASE_URL: cannot connect: {exc}") from None
        try:
            return await work(pool)
        except ConcordError as exc:
            raise CommandError(exc.message) from None
        finally:
            await pool.close()

    with database_url_for(settings) as dsn:
        return asyncio.run(go(dsn))


def cmd_export(args: argparse.Namespace) -> None:
    async def work(pool: asyncpg.Pool) -> int:
        if args.out is None:
            return await audit.export(pool, args.space_id, sys.stdout, progress=True)
        with args.out.open("w") as out:
            return await audit.export(pool, args.space_id, out, progress=True)

    count = _run(args, work)
    print(f"exported {count} events", file=sys.stderr)


def cmd_verify(args: argparse.Namespace) -> None:
    async def work(pool: asyncpg.Pool) -> dict[str, int | None]:
        if args.all:
            report = await audit.verify_all(pool, progress=True)
            print(f"checked {report.checked} spaces", file=sys.stderr)
            return dict(report.broken)
        return {args.space_id: await audit.verify(pool, args.space_id)}

    broken = {space: seq for space, seq in _run(args, work).items() if seq is not None}
    if broken:
        for space, seq in sorted(broken.items()):
            print(f"BROKEN {space}: first broken seq {seq}")
        raise SystemExit(1)
    print("OK: every hash chain verifies")


def _as_of(raw: str | None) -> datetime | None:
    if raw is None:
        return None
    try:
        return datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise CommandError(f"--as-of: {raw!r} is not an RFC 3339 timestamp") from None


def _entity(raw: str | None) -> tuple[str, str] | None:
    if raw is None:
        return None
    kind, sep, ident = raw.partition("/")
    if not sep or not kind or not ident:
        raise CommandError(f"--entity: {raw!r} is not TYPE/ID (e.g. task/t-1)")
    return kind, ident


def cmd_replay(args: argparse.Namespace) -> None:
    as_of, entity = _as_of(args.as_of), _entity(args.entity)
    if args.as_of_seq is not None and args.as_of_seq < 0:
        raise CommandError("--as-of-seq: must be >= 0")

    async def work(pool: asyncpg.Pool) -> dict[str, Any]:
        return await audit.replay(
            pool, args.space_id, as_of_seq=args.as_of_seq, as_of=as_of, entity=entity
        )

    print(json.dumps(_run(args, work), indent=2, sort_keys=True, default=str))
