"""The ``concord`` command: ``dev``, ``gateway``, ``migrate`` and ``audit``.

This module is the composition root of the processes: the adapters it runs are
imported by name inside each command (``importlib``), so that ``core`` itself never
depends on an adapter package at import time (the import-boundary test checks it).

Every ``CONCORD_*`` variable has a flag of the same name (``--port`` for
``CONCORD_PORT``); a bad value stops the process with one line naming it.

``dev`` and ``gateway`` also take ``--port-file PATH``: once the server listens, the
port it listens on is written there. With ``--port 0`` the kernel picks a free port at
bind time, so a supervisor (the test harnesses, ``concord lab``) never races anyone for
a port it chose in advance; ``GET /healthz`` names the process (``pid``) so it can tell
that the server answering is the one it started.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import importlib
import importlib.util
import json
import logging
import os
import secrets
import signal
import socket
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from core.command import CommandError, add_setting_flags, settings_from, write_port_file
from core.embedded import EmbeddedError, EmbeddedNats, EmbeddedPostgres
from core.logs import configure_logging
from core.runtime import RuntimeSettingError, tune_gc
from core.settings import Settings, SettingsError, with_overrides

log = logging.getLogger("concord")


# --------------------------------------------------------------------------- checks


def ensure_data_dir(path: Path) -> Path:
    """Create the data dir and prove it writable, or fail with one clear line."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise CommandError(
            f"CONCORD_DATA_DIR: {path} is not a writable directory ({exc.strerror or exc})"
        ) from None
    return path.resolve()


def ensure_port_free(host: str, port: int) -> None:
    """Fail early and clearly when the listening address is taken or unusable.

    It listens the way uvicorn will, with ``SO_REUSEADDR``: connections of a stopped or
    crashed run lingering in TIME_WAIT or FIN_WAIT_2 must not block a restart (they did
    for up to two minutes); only a live listener makes the port taken."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
            sock.listen(1)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise CommandError(
                    f"CONCORD_PORT: port {port} on {host} is already in use"
                ) from None
            raise CommandError(f"CONCORD_HOST: cannot listen on {host}:{port} ({exc})") from None


def dev_secrets(data_dir: Path) -> dict[str, str]:
    """Dev-only secrets, generated once into the data dir so sessions survive restarts."""
    path = data_dir / "secrets.json"
    if path.exists():
        try:
            stored = json.loads(path.read_text())
            if isinstance(stored, dict) and {"secret_key", "admin_token"} <= stored.keys():
                return {k: str(stored[k]) for k in ("secret_key", "admin_token")}
        except (OSError, ValueError):
            pass
        raise CommandError(f"{path}: unreadable dev secrets; delete it to generate new ones")
    fresh = {"secret_key": secrets.token_urlsafe(48), "admin_token": secrets.token_urlsafe(24)}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(fresh, handle)
    return fresh


# --------------------------------------------------------------------------- embedded services


@contextlib.contextmanager
def embedded_services(settings: Settings) -> Iterator[Settings]:
    """Start what the settings leave unset (PostgreSQL, NATS); stop it all on the way out."""
    started: list[EmbeddedPostgres | EmbeddedNats] = []
    # The HTTP port is bound only once the services run: keep them off it.
    avoid = (settings.port,)
    try:
        database_url, nats_url = settings.database_url, settings.nats_url
        if database_url is None:
            pg = EmbeddedPostgres(settings.data_dir, avoid=avoid)
            started.append(pg)
            database_url = pg.start()
            log.info("embedded PostgreSQL at %s (data: %s)", database_url, pg.pgdata)
        if nats_url is None:
            nats = EmbeddedNats(settings.data_dir, avoid=avoid)
            started.append(nats)
            nats_url = nats.start()
            log.info("embedded nats-server at %s (data: %s)", nats_url, nats.store)
        yield with_overrides(settings, database_url=database_url, nats_url=nats_url)
    finally:
        for service in reversed(started):
            try:
                service.stop()
            except Exception as exc:  # keep stopping the others
                log.error("could not stop %s: %s", type(service).__name__, exc)


def _terminate_as_exit(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def run_migrations(database_url: str) -> list[int]:
    migrations = importlib.import_module("eventstore.migrations")
    import asyncpg

    async def go() -> list[int]:
        conn = await asyncpg.connect(database_url)
        try:
            applied: list[int] = await migrations.migrate(conn)
            return applied
        finally:
            await conn.close()

    try:
        return asyncio.run(go())
    except (OSError, asyncpg.PostgresError) as exc:
        raise CommandError(f"CONCORD_DATABASE_URL: cannot migrate: {exc}") from None


def plugins() -> list[Any]:
    """The adapter command modules that exist (``PLUGINS``), imported by name."""
    found = []
    for name in PLUGINS:
        if importlib.util.find_spec(name) is not None:
            found.append(importlib.import_module(name))
    return found


#: uvicorn's ``timeout_graceful_shutdown`` (it was 10 s: one stop took 10.4 s).
GRACEFUL_SHUTDOWN_SECONDS = 0.5

#: Modules that may add subcommands (``register(subparsers)``) and in-process workers
#: for ``concord dev`` (``in_process(settings) -> AbstractAsyncContextManager[None]``).
PLUGINS = ("eventstore.cli", "projector.cli", "scheduler.cli", "lab.cli")


def serve(
    settings: Settings,
    *,
    workers: Sequence[Any] = (),
    on_listening: Callable[[int], None] | None = None,
) -> None:
    """Run the gateway app under uvicorn; ``workers`` (async context managers) run
    inside the app's lifespan, so they start after and stop before its resources.
    ``on_listening`` gets the bound port once the server accepts connections (the
    kernel's choice when ``settings.port`` is 0)."""
    import uvicorn

    app_module = importlib.import_module("gateway.app")
    ensure_port_free(settings.host, settings.port)
    app = app_module.create_app(settings, workers=list(workers))

    class Server(uvicorn.Server):
        """uvicorn, but the app's ``before_shutdown`` hooks run first (the WebSocket
        layer answers pushes in flight and closes its sockets with 1001)."""

        async def shutdown(self, sockets: Any = None) -> None:
            for hook in getattr(app.state, "before_shutdown", ()):
                try:
                    await hook()
                except Exception:  # shutdown goes on regardless
                    log.exception("shutdown hook failed")
            await super().shutdown(sockets)

        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            if self.started and on_listening is not None:
                on_listening(int(self.servers[0].sockets[0].getsockname()[1]))

    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        lifespan="on",
        ws_max_size=16 * 1024 * 1024,
        # After the WebSocket drain (gateway.ws.registry.DRAIN_SECONDS), whatever is still
        # open (an HTTP request in flight, a device that reads nothing) gets this long:
        # a stop stays well under two seconds (docs/operations.md). uvicorn annotates it
        # int but hands it to asyncio.timeout, which takes any number of seconds.
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,  # type: ignore[arg-type]
        access_log=False,  # the gateway logs one structured line per request itself
        # X-Forwarded-For/-Proto are believed only from CONCORD_TRUSTED_PROXIES (none by
        # default): uvicorn's own default trusts any loopback peer, which would let a
        # local client pick the address the login limits count (docs/operations.md).
        proxy_headers=bool(settings.trusted_proxies),
        forwarded_allow_ips=list(settings.trusted_proxies),
    )
    server = Server(config)
    # uvicorn handles SIGTERM gracefully and re-raises it once it has stopped; by then
    # the shutdown is orderly, so the re-raised signal must not abort what follows
    # (stopping embedded services) or turn a clean stop into a "killed" exit status.
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    server.run()
    if not server.started:
        raise CommandError(f"gateway failed to start on {settings.host}:{settings.port}")


# --------------------------------------------------------------------------- commands


def _listening(
    args: argparse.Namespace, then: Callable[[int], None] | None = None
) -> Callable[[int], None]:
    """What to do once the server listens: write ``--port-file`` (if given), then ``then``."""
    port_file: Path | None = getattr(args, "port_file", None)

    def listening(port: int) -> None:
        if port_file is not None:
            write_port_file(port_file, port)
        if then is not None:
            then(port)

    return listening


def cmd_dev(args: argparse.Namespace) -> None:
    settings = settings_from(args)
    data_dir = ensure_data_dir(settings.data_dir)
    settings = with_overrides(settings, data_dir=data_dir)
    ensure_port_free(settings.host, settings.port)
    generated = dev_secrets(data_dir)
    settings = with_overrides(
        settings,
        secret_key=settings.secret_key or generated["secret_key"],
        admin_token=settings.admin_token or generated["admin_token"],
        # The sandbox is on in development unless CONCORD_SANDBOX says otherwise.
        sandbox=settings.sandbox is not False,
    )
    signal.signal(signal.SIGTERM, _terminate_as_exit)
    with embedded_services(settings) as resolved:
        assert resolved.database_url is not None
        applied = run_migrations(resolved.database_url)
        if applied:
            log.info("applied migrations %s", applied)

        def banner(port: int) -> None:
            print(dev_banner(resolved, data_dir, port), flush=True)

        if resolved.port:
            banner(resolved.port)
        workers = [m.in_process(resolved) for m in plugins() if hasattr(m, "in_process")]
        # On port 0 the address is known only once the server listens.
        on_bound = None if resolved.port else banner
        serve(resolved, workers=workers, on_listening=_listening(args, on_bound))


def dev_banner(settings: Settings, data_dir: Path, port: int) -> str:
    """What ``concord dev`` prints once it serves on ``port``: where to point a browser."""
    base = f"http://{settings.host}:{port}"
    lines = [
        f"Concord dev: {base}  (admin token: {settings.admin_token}; data: {data_dir})",
        f"  diagnostics: {base}/diagnostics?token={settings.admin_token}",
    ]
    if settings.sandbox:
        lines.append(f"  sandbox:     {base}/sandbox  (two devices, faults, live figures)")
    return "\n".join(lines)


def cmd_gateway(args: argparse.Namespace) -> None:
    settings = settings_from(args)
    if not settings.database_url or not settings.nats_url:
        raise CommandError(
            "CONCORD_DATABASE_URL and CONCORD_NATS_URL are required (or use `concord dev`)"
        )
    settings.require_secret_key()
    if not settings.admin_token:
        raise CommandError("CONCORD_ADMIN_TOKEN: required for `concord gateway`")
    serve(settings, on_listening=_listening(args))


def cmd_migrate(args: argparse.Namespace) -> None:
    settings = settings_from(args)
    if settings.database_url:
        applied = run_migrations(settings.database_url)
    else:
        settings = with_overrides(settings, data_dir=ensure_data_dir(settings.data_dir))
        with embedded_services(with_overrides(settings, nats_url="nats://unused")) as resolved:
            assert resolved.database_url is not None
            applied = run_migrations(resolved.database_url)
    print(f"applied migrations: {applied or 'none (up to date)'}")


COMMANDS: dict[str, tuple[str, Callable[[argparse.Namespace], None]]] = {
    "dev": ("run everything in one process on embedded PostgreSQL and NATS", cmd_dev),
    "gateway": ("run the gateway (HTTP and WebSocket) against configured services", cmd_gateway),
    "migrate": ("apply pending database migrations", cmd_migrate),
}


#: The commands that serve HTTP (and so take ``--port-file``).
SERVING = ("dev", "gateway")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="concord", description="Concord sync backend")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, _) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        add_setting_flags(command)
        if name in SERVING:
            command.add_argument(
                "--port-file",
                type=Path,
                metavar="PATH",
                help="once listening, write the port to PATH (use with --port 0)",
            )
    for module in plugins():
        if hasattr(module, "register"):
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


if __name__ == "__main__":
    sys.exit(main())
