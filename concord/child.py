"""A ``concord`` command run as a child process: the one harness of the test suite, the
lab and the benchmarks.

``ConcordProcess`` starts ``python -m concord <args>`` with its output in a log file.
A command that serves HTTP (``gateway``, ``dev``) binds the port itself (``--port 0``
unless told otherwise, so no other process can take it first) and writes it to a port
file; the process is ready once ``/healthz`` names it (its pid, or a child's: the server
answering is the one started, not another holding the address) and ``/readyz`` answers
200. A worker (``projector``, ``scheduler``) is ready once its log shows a given line.
``stop`` sends SIGTERM, then SIGKILL after a timeout; nothing outlives its owner.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Self

import httpx
import psutil

from concord.command import read_port_file
from concord.supervisor import process_family


class NotReady(AssertionError):
    """The child exited before it was ready, or was not ready in time (with its log's
    tail). An AssertionError, so that a test shows it as a failure."""


def wait_listening(port_file: Path, proc: subprocess.Popen[bytes], timeout: float) -> int | None:
    """The port ``proc`` wrote to ``port_file`` once it listened, or None if it exited
    first; NotReady after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while (port := read_port_file(port_file)) is None:
        if proc.poll() is not None:
            return None
        if time.monotonic() > deadline:
            raise NotReady(f"{port_file} not written in {timeout}s")
        time.sleep(0.05)
    return port


def wait_ready(base_url: str, proc: subprocess.Popen[bytes], timeout: float) -> bool:
    """Poll until ``/healthz`` names ``proc`` (or a child of it) and ``/readyz`` answers
    200 (True), or until the process exits (False); NotReady after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        with contextlib.suppress(httpx.HTTPError, ValueError):
            health = httpx.get(f"{base_url}/healthz", timeout=1)
            ours = health.status_code == 200 and health.json().get("pid") in process_family(
                proc.pid
            )
            if ours and httpx.get(f"{base_url}/readyz", timeout=1).status_code == 200:
                return True
        time.sleep(0.1)
    raise NotReady(f"{base_url} not ready in {timeout}s")


def _tail(log: Path, chars: int = 4000) -> str:
    try:
        return log.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


def _spawn(
    command: list[str],
    env: Mapping[str, str],
    log: Path,
    cwd: Path | None,
    preexec_fn: Callable[[], None] | None,
) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            command,
            env=dict(env),
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            preexec_fn=preexec_fn,
        )


def serve(
    args: Sequence[str],
    env: Mapping[str, str],
    log: Path,
    *,
    port: int = 0,
    timeout: float = 60,
    cwd: Path | None = None,
    preexec_fn: Callable[[], None] | None = None,
) -> tuple[subprocess.Popen[bytes], int]:
    """Run ``concord <args>`` listening on ``port`` (0: one the kernel picks as the
    server binds) and return the process and its port once it is ready. NotReady, with
    the log's tail, if it exits first (the process is killed if it is still running)."""
    port_file = log.with_name(f"{log.name}.{uuid.uuid4().hex[:8]}.port")
    command = [sys.executable, "-m", "concord", *args, "--port", str(port)]
    proc = _spawn([*command, "--port-file", str(port_file)], env, log, cwd, preexec_fn)
    started = time.monotonic()
    try:
        bound = wait_listening(port_file, proc, timeout)
        if bound is None or not wait_ready(
            f"http://127.0.0.1:{bound}", proc, timeout - (time.monotonic() - started)
        ):
            raise NotReady(f"concord {args[0]} exited early:\n{_tail(log)}")
    except BaseException:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        raise
    finally:
        port_file.unlink(missing_ok=True)
    return proc, bound


class ConcordProcess:
    """One ``concord <args>`` child process; ``start`` (HTTP) or ``start_worker``, then
    ``stop`` or ``kill``; it may be started again (``start(port=p.port)`` keeps the port)."""

    def __init__(
        self,
        args: Sequence[str],
        env: Mapping[str, str],
        log: Path,
        *,
        name: str | None = None,
        cwd: Path | None = None,
        preexec_fn: Callable[[], None] | None = None,
    ) -> None:
        self.args = list(args)
        self.env = dict(env)
        self.log = log
        self.name = name or self.args[0]
        self.cwd = cwd
        self.preexec_fn = preexec_fn
        #: The port of the last ``start`` (0 before the first, and for workers).
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/sync"

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.name} not started"
        return self.proc.pid

    def ps(self) -> psutil.Process:
        return psutil.Process(self.pid)

    def start(self, timeout: float = 60, *, port: int = 0) -> Self:
        """Start a command that serves HTTP; return once it is ready (``serve``)."""
        self.proc, self.port = serve(
            self.args,
            self.env,
            self.log,
            port=port,
            timeout=timeout,
            cwd=self.cwd,
            preexec_fn=self.preexec_fn,
        )
        return self

    def start_worker(self, ready: str | None = None, timeout: float = 60) -> Self:
        """Start a command that serves no HTTP; with ``ready``, return once that text is
        in the log after the start (NotReady if the process exits first)."""
        offset = self.log.stat().st_size if self.log.exists() else 0
        command = [sys.executable, "-m", "concord", *self.args]
        self.proc = _spawn(command, self.env, self.log, self.cwd, self.preexec_fn)
        deadline = time.monotonic() + timeout
        while ready is not None and ready not in self._log_since(offset):
            if self.proc.poll() is not None:
                raise NotReady(f"concord {self.name} exited at start:\n{_tail(self.log)}")
            if time.monotonic() > deadline:
                self.stop()
                raise NotReady(f"concord {self.name} not ready in {timeout}s:\n{_tail(self.log)}")
            time.sleep(0.1)
        return self

    def _log_since(self, offset: int) -> str:
        try:
            with self.log.open("rb") as handle:
                handle.seek(offset)
                return handle.read().decode(errors="replace")
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def tail(self, lines: int = 30) -> str:
        """The last ``lines`` lines of the log."""
        return "\n".join(_tail(self.log, 1 << 20).splitlines()[-lines:])

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int | None:
        """Signal the process and wait for it (SIGKILL after ``timeout``); its exit code,
        or None if it never started."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)
