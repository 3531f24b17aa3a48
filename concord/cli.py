"""The ``concord`` command: ``dev``, ``gateway``, ``projector``, ``scheduler``, ``migrate``,
``audit`` and ``lab`` (``python -m concord``).

This package is the composition root of the processes: the only one that may import
every other (docs/architecture.md). Every ``CONCORD_*`` variable has a flag of the same
name (``--port`` for ``CONCORD_PORT``); a bad value stops the process with one line
naming it.

``dev`` and ``gateway`` also take ``--port-file PATH``: once the server listens, the
port it listens on is written there. With ``--port 0`` the kernel picks a free port at
bind time, so a supervisor (the test harnesses, ``concord lab``) never races anyone for
a port it chose in advance; ``GET /healthz`` names the answering process (``pid``) so it
can tell that the server answering is one it started.
"""

from __future__ import annotations

import argparse
import socket
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from concord import audit, dev, lab, projector, scheduler
from concord.command import CommandError, add_setting_flags, settings_from, write_port_file
from concord.embedded import EmbeddedError
from concord.logs import configure_logging
from concord.runtime import RuntimeSettingError, tune_gc
from concord.serve import serve
from core.settings import SettingsError

#: A subcommand module adds its parsers with ``register(subparsers)``.
SUBCOMMANDS = (projector, scheduler, audit, lab)


def _listening(port_file: Path | None) -> Callable[[int], None] | None:
    """Once the server listens: write ``--port-file`` (if given)."""
    if port_file is None:
        return None
    return lambda port: write_port_file(port_file, port)


def cmd_dev(args: argparse.Namespace) -> None:
    dev.cmd_dev(settings_from(args), port_file=args.port_file, workers=args.workers)


def cmd_gateway(args: argparse.Namespace) -> None:
    settings = settings_from(args)
    if not settings.database_url or not settings.nats_url:
        raise CommandError(
            "CONCORD_DATABASE_URL and CONCORD_NATS_URL are required (or use `concord dev`)"
        )
    settings.require_secret_key()
    if not settings.admin_token:
        raise CommandError("CONCORD_ADMIN_TOKEN: required for `concord gateway`")
    sock = None if args.listen_fd is None else socket.socket(fileno=args.listen_fd)
    serve(settings, workers=args.workers, sock=sock, on_listening=_listening(args.port_file))


def cmd_migrate(args: argparse.Namespace) -> None:
    dev.cmd_migrate(settings_from(args))


COMMANDS: dict[str, tuple[str, Callable[[argparse.Namespace], None]]] = {
    "dev": (
        "run Concord on embedded PostgreSQL and NATS: gateway, projector and scheduler",
        cmd_dev,
    ),
    "gateway": ("run the gateway (HTTP and WebSocket) against configured services", cmd_gateway),
    "migrate": ("apply pending database migrations", cmd_migrate),
}


def _workers(raw: str) -> int:
    value = int(raw)
    if not 1 <= value <= 64:
        raise argparse.ArgumentTypeError("between 1 and 64")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="concord", description="Concord sync backend")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, _) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        add_setting_flags(command)
        if name in ("dev", "gateway"):
            command.add_argument(
                "--port-file",
                type=Path,
                metavar="PATH",
                help="once listening, write the port to PATH (use with --port 0)",
            )
            command.add_argument(
                "--workers",
                type=_workers,
                default=1,
                metavar="N",
                help="gateway processes sharing the one port (default 1)",
            )
        if name == "gateway":  # how `concord dev` hands its bound socket to the gateway
            command.add_argument("--listen-fd", type=int, help=argparse.SUPPRESS)
    for module in SUBCOMMANDS:
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        configure_logging(settings_from(args).log_level)
        tune_gc()
        handler = getattr(args, "handler", None) or COMMANDS[args.command][1]
        handler(args)
    except (SettingsError, CommandError, EmbeddedError, RuntimeSettingError) as exc:
        print(f"concord: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0
