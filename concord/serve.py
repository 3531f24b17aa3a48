"""``concord gateway``: the gateway app under uvicorn, in one process or ``--workers N``.

With several workers the parent binds the listening socket once (``SO_REUSEADDR``) and
hands it to N spawned worker processes, each a whole gateway (its own pools, NATS
connection and WebSocket registry; gateways share nothing but PostgreSQL and NATS, so
a device may land on any of them). The parent restarts a worker that dies and stops
them all on SIGTERM or SIGINT. Prometheus counters are summed over the workers
(``PROMETHEUS_MULTIPROC_DIR``, made for the run when unset).
"""

from __future__ import annotations

import errno
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import TYPE_CHECKING, Any

from concord.command import CommandError
from concord.logs import configure_logging
from concord.runtime import tune_gc
from concord.supervisor import Child, Supervisor, die_with_parent, forget_metrics
from core.metrics import mark_counters_start
from core.settings import Settings

if TYPE_CHECKING:
    import uvicorn
    from litestar import Litestar

log = logging.getLogger("concord")

#: uvicorn's ``timeout_graceful_shutdown`` (it was 10 s: one stop took 10.4 s).
GRACEFUL_SHUTDOWN_SECONDS = 0.5


def ensure_port_free(host: str, port: int) -> None:
    """Fail early and clearly when the listening address is taken or unusable.

    It listens the way uvicorn will, with ``SO_REUSEADDR``: connections of a stopped or
    crashed run lingering in TIME_WAIT or FIN_WAIT_2 must not block a restart (they did
    for up to two minutes); only a live listener makes the port taken."""
    bind_socket(host, port).close()


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (``SO_REUSEADDR``), or one clear error line."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise CommandError(f"CONCORD_PORT: port {port} on {host} is already in use") from None
        raise CommandError(f"CONCORD_HOST: cannot listen on {host}:{port} ({exc})") from None
    return sock


def serve(
    settings: Settings,
    *,
    workers: int = 1,
    sock: socket.socket | None = None,
    on_listening: Callable[[int], None] | None = None,
) -> None:
    """Serve the gateway until SIGTERM or SIGINT, on ``sock`` when one is given (bound by
    ``concord dev``), else on the settings' address; ``on_listening`` gets the bound port
    (the kernel's choice when ``settings.port`` is 0) once connections are taken."""
    if workers <= 1:
        _serve_here(settings, sock, on_listening)
        return
    if sock is None:
        sock = bind_socket(settings.host, settings.port)
    metrics_dir = None
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        metrics_dir = tempfile.mkdtemp(prefix="concord-metrics-")
        mark_counters_start(Path(metrics_dir))
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    try:
        _serve_workers(settings, sock, workers, on_listening)
    finally:
        sock.close()
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def _serve_here(
    settings: Settings, sock: socket.socket | None, on_listening: Callable[[int], None] | None
) -> None:
    """One gateway in this process (on ``sock`` when a parent bound it)."""
    from gateway.app import create_app

    if sock is None:
        ensure_port_free(settings.host, settings.port)
    server = gateway_server(create_app(settings), settings, on_listening)
    # uvicorn handles SIGTERM gracefully and re-raises it once it has stopped; by then
    # the shutdown is orderly, so the re-raised signal must not turn a clean stop into a
    # "killed" exit status.
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    server.run(sockets=None if sock is None else [sock])
    if not server.started:
        raise CommandError(f"gateway failed to start on {settings.host}:{settings.port}")


def gateway_server(
    app: Litestar, settings: Settings, on_listening: Callable[[int], None] | None = None
) -> uvicorn.Server:
    """The uvicorn server of one gateway ``app``: ``run`` serves until SIGTERM, SIGINT
    or ``should_exit``; ``on_listening`` gets the bound port."""
    import uvicorn

    from gateway.app import before_shutdown

    class Server(uvicorn.Server):
        """uvicorn, but the app's ``before_shutdown`` runs first (the WebSocket layer
        answers pushes in flight and closes its sockets with 1001)."""

        async def shutdown(self, sockets: Any = None) -> None:
            try:
                await before_shutdown(app)
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
        # permessage-deflate only when configured (docs/websocket.md): off, a device that
        # offers it is answered without it.
        ws_per_message_deflate=settings.ws_compression,
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
    return Server(config)


def _worker(settings: Settings, sock: socket.socket) -> None:
    """A spawned worker: a whole gateway on the parent's socket."""
    die_with_parent()
    configure_logging(settings.log_level)
    tune_gc()
    _serve_here(settings, sock, None)


def _serve_workers(
    settings: Settings,
    sock: socket.socket,
    count: int,
    on_listening: Callable[[int], None] | None,
) -> None:
    """N gateway processes on one socket, kept running until SIGTERM or SIGINT."""
    context = multiprocessing.get_context("spawn")

    def starter(index: int) -> Callable[[], BaseProcess]:
        def start() -> BaseProcess:
            proc = context.Process(
                target=_worker, args=(settings, sock), name=f"concord-gateway-{index}"
            )
            proc.start()
            return proc

        return start

    children = [Child(f"gateway worker {i}", starter(i)) for i in range(count)]
    supervisor = Supervisor(children, on_exit=forget_metrics)
    supervisor.start_all()
    if on_listening is not None:  # the socket listens: connections queue until taken
        on_listening(int(sock.getsockname()[1]))
    supervisor.run()
