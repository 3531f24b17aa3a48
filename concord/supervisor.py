"""Child processes kept running: started together, restarted when one dies (with a
backoff while it keeps dying), stopped together on SIGTERM or SIGINT within a bound.
In Prometheus multiprocess mode each dead child is marked dead, so its live gauges
(connections, lag) leave the sums while its counters stay in them.

``concord dev`` supervises the gateway, the projector (with the outbox relay) and the
scheduler as three processes, so background work never takes the gateway's core;
``concord gateway --workers N`` supervises N gateways on one socket.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess

log = logging.getLogger("concord")

#: A child that dies is restarted after this long, doubling while it keeps dying (at
#: most ``MAX_DELAY``), back to this once it had run ``STEADY_SECONDS``.
RESTART_DELAY_SECONDS = 0.5
MAX_DELAY_SECONDS = 10.0
STEADY_SECONDS = 30.0
#: After SIGTERM, how long the children get before they are killed.
STOP_SECONDS = 3.0

Handle = subprocess.Popen[bytes] | BaseProcess

_PR_SET_PDEATHSIG = 1


def process_family(pid: int) -> set[int]:
    """``pid`` and its descendants: a server started as ``concord dev`` (or with
    ``--workers``) answers from a child, whose pid ``/healthz`` names."""
    import psutil

    try:
        return {pid, *(c.pid for c in psutil.Process(pid).children(recursive=True))}
    except psutil.NoSuchProcess:
        return set()


def forget_metrics(pid: int) -> None:
    """Mark ``pid`` dead for Prometheus' multiprocess mode (when it is on)."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if path:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, path)  # type: ignore[no-untyped-call]


def die_with_parent() -> None:
    """Ask the kernel to SIGTERM this process when its parent dies (Linux), so a
    supervisor killed with SIGKILL leaves no orphan holding its port or its work. For a
    child: ``preexec_fn`` of ``subprocess``, or the first call of a spawned process."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    parent = os.getppid()
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before the request was in place
        os.kill(os.getpid(), signal.SIGTERM)


def _alive(handle: Handle) -> bool:
    if isinstance(handle, subprocess.Popen):
        return handle.poll() is None
    return handle.is_alive()


def _exit_status(handle: Handle) -> int | None:
    return handle.returncode if isinstance(handle, subprocess.Popen) else handle.exitcode


@dataclass
class Child:
    """One supervised process: ``start`` makes it anew each time."""

    name: str
    start: Callable[[], Handle]
    handle: Handle | None = None
    started_at: float = 0.0
    delay: float = RESTART_DELAY_SECONDS
    restarts: int = 0
    due: float | None = field(default=None)  # when a dead child is to be started again

    def launch(self) -> None:
        self.handle = self.start()
        self.started_at = time.monotonic()
        self.due = None


class Supervisor:
    """Runs ``children`` until told to stop; ``stop`` is safe from a signal handler."""

    def __init__(
        self, children: Sequence[Child], *, on_exit: Callable[[int], None] | None = None
    ) -> None:
        self.children = list(children)
        self.stopping = False
        #: Called with the pid of each child that exited (its metrics are forgotten).
        self.on_exit = on_exit

    def stop(self, *_: object) -> None:
        self.stopping = True

    def start_all(self) -> None:
        for child in self.children:
            child.launch()
            log.info("%s started (pid %s)", child.name, child.handle and child.handle.pid)

    def tend(self) -> None:
        """Restart the children that died (each after its backoff)."""
        now = time.monotonic()
        for child in self.children:
            if self.stopping or child.handle is None or _alive(child.handle):
                continue
            if child.due is None:
                self._exited(child.handle)
                if now - child.started_at > STEADY_SECONDS:
                    child.delay = RESTART_DELAY_SECONDS  # it had been running fine
                child.due = now + child.delay
                log.error(
                    "%s (pid %s) exited with status %s; restarting in %.1f s",
                    child.name,
                    child.handle.pid,
                    _exit_status(child.handle),
                    child.delay,
                )
                child.delay = min(child.delay * 2, MAX_DELAY_SECONDS)
            elif now >= child.due:
                child.restarts += 1
                child.launch()
                log.info("%s restarted (pid %s)", child.name, child.handle.pid)

    def run(self, poll: float = 0.1, until: Callable[[], bool] = lambda: False) -> None:
        """Tend the children until ``stop`` (or ``until()``), then stop them all."""
        # (SIGTERM and SIGINT set ``stopping``; the loop notices within ``poll``.)
        previous = {s: signal.signal(s, self.stop) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            while not self.stopping and not until():
                self.tend()
                time.sleep(poll)
        finally:
            self.stop_all()
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def stop_all(self, timeout: float = STOP_SECONDS) -> None:
        """SIGTERM to every live child, at once; whatever still lives after ``timeout``
        is killed."""
        self.stopping = True
        alive = [c.handle for c in self.children if c.handle is not None and _alive(c.handle)]
        for handle in alive:
            if handle.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(handle.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while any(_alive(h) for h in alive) and time.monotonic() < deadline:
            time.sleep(0.02)
        for handle in alive:
            if _alive(handle):
                log.error("pid %s did not stop within %.0f s; killing it", handle.pid, timeout)
                handle.kill()
        for handle in alive:
            if isinstance(handle, subprocess.Popen):
                handle.wait(5)
            else:
                handle.join(5)
            self._exited(handle)

    def _exited(self, handle: Handle) -> None:
        if self.on_exit is not None and handle.pid is not None:
            try:
                self.on_exit(handle.pid)
            except Exception:  # a cleanup; supervision goes on
                log.exception("cleaning up after pid %s failed", handle.pid)
