"""``free_port`` never hands out a port the caller said it will bind itself.

``concord dev`` binds its HTTP port only after the embedded services run; a service that
took that port while it was still free made the second start fail ("port already in
use"). The kernel's choice is not ours to steer, so the sockets here report a fixed
sequence of ports.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest

from concord.embedded import free_port


class _Sockets:
    """Stands in for ``socket.socket``: each new socket is bound to the next port."""

    def __init__(self, ports: list[int]) -> None:
        self._ports: Iterator[int] = iter(ports)
        self.made = 0

    def __call__(self, *args: Any) -> _Sockets:
        self.made += 1
        self._port = next(self._ports)
        return self

    def __enter__(self) -> _Sockets:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def bind(self, address: tuple[str, int]) -> None:
        assert address[1] == 0

    def getsockname(self) -> tuple[str, int]:
        return ("127.0.0.1", self._port)


def test_a_port_to_avoid_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    sockets = _Sockets([8000, 8000, 41234])
    monkeypatch.setattr(socket, "socket", sockets)  # the module concord.embedded uses
    assert free_port(avoid=(8000,)) == 41234
    assert sockets.made == 3


def test_a_real_port_is_free_and_not_avoided() -> None:
    taken = free_port()
    port = free_port(avoid=(taken,))
    assert port != taken
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", port))  # free indeed
