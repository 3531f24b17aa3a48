"""What every ``concord`` subcommand shares: one flag per ``CONCORD_*`` variable, the
settings they make, the one-line error, the database a one-shot command uses, and the
``--port-file`` of the serving commands."""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from concord.embedded import EmbeddedPostgres
from core.settings import ENV_NAMES, Settings, load_settings


class CommandError(Exception):
    """A one-line, user-facing reason the command cannot go on (exit status 2)."""


def _flag(env_name: str) -> str:
    return "--" + env_name.removeprefix("CONCORD_").lower().replace("_", "-")


def add_setting_flags(parser: argparse.ArgumentParser) -> None:
    """Give ``parser`` one flag per ``CONCORD_*`` variable (``--port`` for CONCORD_PORT)."""
    for name in ENV_NAMES:
        parser.add_argument(_flag(name), dest=name, metavar="VALUE", help=f"overrides ${name}")


def settings_from(args: argparse.Namespace) -> Settings:
    """Settings from the environment, overridden by the command's flags."""
    overrides = {n: v for n in ENV_NAMES if (v := getattr(args, n, None)) is not None}
    return load_settings(overrides=overrides)


@contextlib.contextmanager
def database_url_for(settings: Settings) -> Iterator[str]:
    """The DSN a one-shot command (migrate, audit, ...) should use.

    With ``CONCORD_DATABASE_URL`` set, that. Otherwise the embedded PostgreSQL under the
    data dir: adopted if ``concord dev`` is running it (and left running), else started
    for the command and stopped afterwards."""
    if settings.database_url:
        yield settings.database_url
        return
    if not settings.data_dir.exists():
        raise CommandError(
            f"CONCORD_DATABASE_URL is unset and {settings.data_dir} holds no embedded "
            "database (run `concord dev` first, or set the URL)"
        )
    pg = EmbeddedPostgres(settings.data_dir)
    was_running = pg.running_pid() is not None
    dsn = pg.start()
    try:
        yield dsn
    finally:
        if not was_running:
            pg.stop()


def write_port_file(path: Path, port: int) -> None:
    """Write ``port`` to ``path`` atomically: a reader sees no file or the whole port."""
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_text(f"{port}\n")
    os.replace(partial, path)


def read_port_file(path: Path) -> int | None:
    """The port ``--port-file`` recorded at ``path``, or None while there is none yet."""
    try:
        return int(path.read_text())
    except (FileNotFoundError, ValueError):
        return None
