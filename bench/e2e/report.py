"""Figures, tables, the machine, and ``--record`` into docs/benchmarks.md.

A workload fills a :class:`Report` (tables, ratios, notes, and the raw ``figures`` the
smoke test checks); this module prints it with rich, writes it as JSON (``--json``),
and appends it as Markdown under "The whole system (end to end)" (``--record``).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import psutil
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table as RichTable

DOC = Path(__file__).resolve().parents[2] / "docs" / "benchmarks.md"
SECTION = "## The whole system (end to end)"
RUNS = "### Recorded runs"
#: Tables are wide: outside a terminal (a log, a test) do not wrap them at 80 columns.
console = Console(width=None if Console().is_terminal else 200)
#: CPU over a window: (wall seconds, CPU seconds by process group, machine busy share).
Cpu = tuple[float, dict[str, float], float]


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (linear interpolation between ranks); 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f}"


def rate(value: float) -> str:
    return f"{value:,.0f}"


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)

    def add(self, *cells: object) -> None:
        self.rows.append([str(c) for c in cells])


@dataclass
class Report:
    """What one run of a workload found."""

    workload: str
    command: str = ""
    date: str = ""
    machine: dict[str, Any] = field(default_factory=dict)
    postgres: dict[str, str] = field(default_factory=dict)
    services: str = ""
    tables: list[Table] = field(default_factory=list)
    ratios: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    figures: dict[str, float] = field(default_factory=dict)

    def table(self, title: str, columns: Iterable[str]) -> Table:
        made = Table(title, list(columns))
        self.tables.append(made)
        return made

    def ratio(self, label: str, value: float, detail: str = "") -> None:
        self.ratios.append((label, f"{value:.2f}x" + (f" ({detail})" if detail else "")))


def command_line() -> str:
    """How this run was started, as a user would type it."""
    argv = [a for a in sys.argv[1:] if a not in ("--record",)]
    module = (sys.modules["__main__"].__spec__ or None) if "__main__" in sys.modules else None
    name = module.name if module is not None else sys.argv[0]
    return shlex.join([".venv/bin/python", "-m", name, *argv])


def machine() -> dict[str, Any]:
    model = platform.processor() or "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    load = os.getloadavg()
    return {
        "cores": os.cpu_count() or 0,
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "cpu": model,
        "python": platform.python_version(),
        "load_start": f"{load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f}",
    }


async def postgres_settings(pool: asyncpg.Pool) -> dict[str, str]:
    out: dict[str, str] = {}
    for name in ("server_version", "synchronous_commit", "fsync", "shared_buffers"):
        out[name] = str(await pool.fetchval(f"SHOW {name}"))
    return out


def finish(report: Report) -> None:
    load = os.getloadavg()
    report.machine["load_end"] = f"{load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f}"


def show(report: Report) -> None:
    for table in report.tables:
        rich = RichTable(title=table.title, title_justify="left")
        for i, column in enumerate(table.columns):
            rich.add_column(column, justify="left" if i == 0 else "right")
        for row in table.rows:
            rich.add_row(*row)
        console.print(rich)
    if report.ratios:
        console.print("[bold]Ratios[/bold]")
        for label, value in report.ratios:
            console.print(f"  {label}: [bold]{value}[/bold]")
    for note in report.notes:
        console.print(f"[dim]{note}[/dim]")
    m = report.machine
    console.print(
        f"[dim]{m.get('cores')} cores, {m.get('ram_gib')} GiB, {m.get('cpu')}; load "
        f"{m.get('load_start')} -> {m.get('load_end')}; PostgreSQL "
        + ", ".join(f"{k}={v}" for k, v in report.postgres.items())
        + f"; {report.services}[/dim]"
    )


def markdown(report: Report) -> str:
    m = report.machine
    lines = [
        f"#### `{report.workload}`, {report.date}",
        "",
        "```sh",
        report.command,
        "```",
        "",
        f"Machine: {m.get('cores')} cores, {m.get('ram_gib')} GiB RAM, {m.get('cpu')}, "
        f"Python {m.get('python')}; load average {m.get('load_start')} at the start, "
        f"{m.get('load_end')} at the end. PostgreSQL "
        + ", ".join(f"`{k}={v}`" for k, v in report.postgres.items())
        + f" ({report.services}).",
        "",
    ]
    for table in report.tables:
        lines += [f"*{table.title}*", ""]
        lines.append("| " + " | ".join(table.columns) + " |")
        lines.append("| --- " + "| ---: " * (len(table.columns) - 1) + "|")
        lines += ["| " + " | ".join(row) + " |" for row in table.rows]
        lines.append("")
    if report.ratios:
        lines += [f"- {label}: **{value}**" for label, value in report.ratios]
        lines.append("")
    for note in report.notes:  # each its own paragraph
        lines += [note, ""]
    return "\n".join(lines)


def record(report: Report, doc: Path = DOC) -> None:
    """Insert the run at the end of the "Recorded runs" part of the end-to-end section
    (both made if missing), before whatever section follows it."""
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    if SECTION not in text:
        text = text.rstrip("\n") + f"\n\n{SECTION}\n"
    start = text.index(SECTION)
    after = text.find("\n## ", start + len(SECTION))
    end = len(text) if after < 0 else after + 1
    body = text[start:end]
    if RUNS not in body:
        body = body.rstrip("\n") + f"\n\n{RUNS}\n"
    body = body.rstrip("\n") + "\n\n" + markdown(report).rstrip("\n") + "\n"
    rest = text[end:]
    doc.write_text(text[:start] + body + ("\n" + rest if rest else ""))
    console.print(f"recorded in {doc}")


def write_json(report: Report, path: Path) -> None:
    path.write_text(json.dumps(asdict(report), indent=2))


class CpuMeter:
    """CPU seconds of named processes over a window, and of the whole machine.

    A named process counts with its children (a gateway's ``--workers`` processes).
    PostgreSQL and nats-server are found by name at both ends of the window (backends
    come and go with connections): a process that starts within the window counts in
    full, one that ends within it is lost."""

    SCANNED = ("postgres", "nats-server")

    def __init__(self, processes: dict[str, Sequence[psutil.Process]]) -> None:
        self.processes = {k: list(v) for k, v in processes.items()}
        self._start: dict[str, dict[int, float]] = {}
        self._machine: Any = None
        self._wall = 0.0

    def _cpu(self) -> dict[str, dict[int, float]]:
        groups = dict(self.processes)
        for name in self.SCANNED:
            groups[name] = [p for p in psutil.process_iter() if _named(p, name)]
        out: dict[str, dict[int, float]] = {}
        for name, procs in groups.items():
            out[name] = {}
            for proc in procs:
                for one in _with_children(proc):
                    with contextlib.suppress(psutil.Error):
                        t = one.cpu_times()
                        out[name][one.pid] = t.user + t.system
        return out

    def start(self) -> None:
        self._start = self._cpu()
        self._machine = psutil.cpu_times()
        self._wall = time.monotonic()

    def stop(self) -> Cpu:
        """(wall seconds, CPU seconds by name, machine busy share of all cores)."""
        wall = time.monotonic() - self._wall
        used = {}
        for name, now in self._cpu().items():
            before = self._start.get(name, {})
            used[name] = sum(max(0.0, cpu - before.get(pid, 0.0)) for pid, cpu in now.items())
        end = psutil.cpu_times()
        busy = _busy(end) - _busy(self._machine)
        total = _all(end) - _all(self._machine)
        return wall, used, (busy / total if total > 0 else 0.0)


def _all(times: Any) -> float:
    return float(sum(getattr(times, f) for f in times._fields if f not in ("guest", "guest_nice")))


def _busy(times: Any) -> float:
    """Busy CPU time (guest time is already counted in user time; steal is not ours)."""
    idle = ("idle", "iowait", "steal", "guest", "guest_nice")
    return float(sum(getattr(times, f) for f in times._fields if f not in idle))


def _with_children(proc: psutil.Process) -> list[psutil.Process]:
    """The process and, while it runs, its descendants."""
    try:
        return [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return [proc]


def _named(proc: psutil.Process, name: str) -> bool:
    with contextlib.suppress(psutil.Error):
        return proc.name() == name
    return False


def cpu_table(report: Report, title: str, runs: Sequence[tuple[str, Cpu]]) -> None:
    """One row per measured window: each process group's CPU as a share of one core."""
    if not runs:
        return
    table = report.table(title, ["run", *runs[0][1][1].keys(), "machine busy"])
    for label, (wall, used, busy) in runs:
        shares = (f"{100 * s / wall:.0f}%" if wall else "-" for s in used.values())
        table.add(label, *shares, f"{100 * busy:.0f}% of all cores")


@contextlib.contextmanager
def phase_progress(description: str, total: float | None) -> Iterator[Callable[[float, str], None]]:
    """A progress bar for one long phase; yields ``tick(completed, note)``.

    ``total`` None: an indeterminate bar (a phase whose length is unknown)."""
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[note]}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    )
    with bar:
        task = bar.add_task(description, total=total, note="")

        def tick(completed: float, note: str = "") -> None:
            bar.update(task, completed=completed, note=note)

        yield tick


def bucket_quantile(before: dict[float, float], after: dict[float, float], q: float) -> str:
    """The bucket bound under which ``q`` of the observations between two scrapes of a
    Prometheus histogram fell ("<= 50 ms"); "-" without observations."""
    deltas = sorted((le, after[le] - before.get(le, 0.0)) for le in after)
    total = deltas[-1][1] if deltas else 0.0
    if total <= 0:
        return "-"
    previous = 0.0
    for le, count in deltas:
        if count >= q * total:
            return f"> {previous * 1000:,.0f}" if le == float("inf") else f"<= {le * 1000:,.0f}"
        previous = le
    return "-"
