"""Driver processes: the simulated devices run outside the coordinating process.

The coordinator (the ``python -m bench.e2e.<workload>`` process) does the set-up, the
sampling and the report; the sockets live in ``spawn``-ed driver processes, each with
its own event loop, so that the clients' CPU is visible on its own (psutil) and more
than one core can drive the load. A driver runs ``target(plan, link)``; the link
carries three things back: ``ready`` (then it waits for the coordinator's ``go``),
``progress`` counts, and its result (or its traceback).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import multiprocessing
import queue
import time
import traceback
from collections.abc import Callable, Sequence
from multiprocessing.process import BaseProcess
from multiprocessing.queues import Queue
from typing import Any

import psutil

from bench.e2e.stack import raise_nofile

#: Open files a driver asks for (its sockets); capped by the hard limit.
DRIVER_NOFILE = 65_536


class DriverError(RuntimeError):
    """A driver process failed; the message carries its traceback."""


class Link:
    """A driver's side of the pipe to the coordinator."""

    def __init__(self, index: int, commands: Queue[Any], out: Queue[Any]) -> None:
        self.index = index
        self._commands = commands
        self._out = out

    async def ready(self, info: Any = None) -> Any:
        """Report readiness and wait for the coordinator's command (``go``)."""
        self._out.put(("ready", self.index, info))
        return await asyncio.to_thread(self._commands.get)

    def progress(self, count: int) -> None:
        self._out.put(("progress", self.index, count))

    def progress_every_second(self, count: Callable[[], int]) -> asyncio.Task[None]:
        """Report ``count()`` each second until the returned task is cancelled."""

        async def tick() -> None:
            while True:
                await asyncio.sleep(1)
                self.progress(count())

        return asyncio.create_task(tick())


def _main(target: str, index: int, plan: Any, commands: Queue[Any], out: Queue[Any]) -> None:
    module, _, name = target.partition(":")
    raise_nofile(DRIVER_NOFILE)
    try:
        fn = getattr(importlib.import_module(module), name)
        result = asyncio.run(fn(plan, Link(index, commands, out)))
        out.put(("result", index, result))
    except BaseException:
        out.put(("error", index, traceback.format_exc()))


class Drivers:
    """``len(plans)`` driver processes running ``target`` (``"module:function"``)."""

    def __init__(self, target: str, plans: Sequence[Any]) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._out: Queue[Any] = ctx.Queue()
        self._commands: list[Queue[Any]] = [ctx.Queue() for _ in plans]
        self.procs: list[BaseProcess] = [
            ctx.Process(
                target=_main,
                args=(target, i, plan, self._commands[i], self._out),
                name=f"bench-driver-{i}",
                daemon=True,
            )
            for i, plan in enumerate(plans)
        ]
        self.progress = [0] * len(plans)

    def start(self) -> Drivers:
        for proc in self.procs:
            proc.start()
        return self

    def ps(self) -> list[psutil.Process]:
        return [psutil.Process(p.pid) for p in self.procs if p.pid is not None]

    async def _collect(
        self, kind: str, within: float, tick: Callable[[], None] | None = None
    ) -> list[Any]:
        got: dict[int, Any] = {}
        deadline = time.monotonic() + within
        while len(got) < len(self.procs):
            left = deadline - time.monotonic()
            if left <= 0:
                raise DriverError(f"drivers not {kind} within {within:.0f} s ({len(got)} were)")
            try:
                what, index, payload = await asyncio.to_thread(self._out.get, True, min(left, 0.5))
            except queue.Empty:
                if tick is not None:
                    tick()
                dead = [p.name for p in self.procs if p.exitcode not in (None, 0)]
                if dead:
                    raise DriverError(f"driver process died: {dead}") from None
                continue
            if what == "error":
                raise DriverError(f"driver {index} failed:\n{payload}")
            if what == "progress":
                self.progress[index] = payload
            elif what == kind:
                got[index] = payload
            if tick is not None:
                tick()
        return [got[i] for i in range(len(self.procs))]

    async def ready(self, within: float = 600) -> list[Any]:
        return await self._collect("ready", within)

    def go(self, command: Any) -> None:
        for commands in self._commands:
            commands.put(command)

    async def results(
        self, within: float = 600, tick: Callable[[], None] | None = None
    ) -> list[Any]:
        results = await self._collect("result", within, tick)
        for proc in self.procs:
            proc.join(30)
        return results

    def stop(self) -> None:
        for proc in self.procs:
            if proc.is_alive():
                proc.terminate()
        for proc in self.procs:
            with contextlib.suppress(Exception):
                proc.join(10)


def split(items: Sequence[Any], parts: int) -> list[list[Any]]:
    """``items`` dealt round-robin into ``parts`` lists (no empty list when possible)."""
    parts = max(1, min(parts, len(items)))
    return [list(items[i::parts]) for i in range(parts)]
