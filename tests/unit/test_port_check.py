"""The port pre-check of ``concord dev`` / ``concord gateway`` (``ensure_port_free``).

A restart right after a stop or a crash must succeed although the devices' connections
to the old server linger in FIN_WAIT_2 or TIME_WAIT (it was refused for up to two
minutes); a live listener must still be reported as one clear line. Real sockets on
the loopback interface, the server side closing first as a stopping server does.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator

import psutil
import pytest

from concord.command import CommandError
from concord.serve import ensure_port_free

HOST = "127.0.0.1"


def _listener(port: int = 0) -> socket.socket:
    """A listening socket as uvicorn (asyncio's ``create_server``) makes one."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, port))
    sock.listen()
    return sock


def _states(port: int) -> set[str]:
    """TCP states of the sockets whose local port is ``port`` (orphans included)."""
    return {c.status for c in psutil.net_connections("tcp4") if c.laddr and c.laddr.port == port}


def _wait_for_state(port: int, state: str) -> None:
    deadline = time.monotonic() + 5
    while state not in _states(port):
        assert time.monotonic() < deadline, f"no {state} on port {port}: {_states(port)}"
        time.sleep(0.01)


@contextlib.contextmanager
def _stopped_server_with_a_device(*, device_closes: bool) -> Iterator[int]:
    """A server that had one device connected, then stopped (its side closed first);
    the port is left with the old connection in FIN_WAIT_2 (the device has not closed
    yet) or TIME_WAIT (it has)."""
    server = _listener()
    port = server.getsockname()[1]
    device = socket.create_connection((HOST, port))
    accepted, _ = server.accept()
    accepted.close()
    server.close()
    try:
        if device_closes:
            device.recv(1)  # the server's FIN
            device.close()
            _wait_for_state(port, psutil.CONN_TIME_WAIT)
        else:
            _wait_for_state(port, psutil.CONN_FIN_WAIT2)
        yield port
    finally:
        device.close()


@pytest.mark.parametrize("device_closes", [False, True], ids=["fin_wait_2", "time_wait"])
def test_a_restart_passes_with_lingering_connections(device_closes: bool) -> None:
    with _stopped_server_with_a_device(device_closes=device_closes) as port:
        ensure_port_free(HOST, port)
        _listener(port).close()  # and the new server binds where the old one was


def test_a_live_listener_is_still_taken() -> None:
    with _listener() as server:
        port = server.getsockname()[1]
        with pytest.raises(CommandError, match=f"port {port} on {HOST} is already in use"):
            ensure_port_free(HOST, port)
