"""``--profile``: py-spy samples of Concord's processes while the load runs.

``py-spy record --format raw`` (collapsed stacks, one line per distinct stack with its
sample count) runs against each named process for the measured window; from that this
module writes a flame graph SVG of its own (no Perl, no browser needed), and the top
functions by self time (the leaf frame of each sample) and by total time. The raw file
also opens in https://www.speedscope.app. Output goes to the gitignored ``bench/out/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from bench.e2e.report import Report

OUT = Path(__file__).resolve().parents[1] / "out"
_LINE = re.compile(r":\d+\)$")


def py_spy() -> str:
    """The py-spy executable (the venv's first, as the bench extra installs it there)."""
    local = Path(sys.executable).parent / "py-spy"
    found = str(local) if local.exists() else shutil.which("py-spy")
    if not found:
        raise SystemExit(
            "--profile needs py-spy: make .venv/.installed-bench (or pip install py-spy)"
        )
    return found


@dataclass
class Profile:
    """Samples of one process: stacks (root first) with their counts."""

    name: str
    stacks: Counter[tuple[str, ...]] = field(default_factory=Counter)
    #: The process's CPU over the sampled window, as shares of one core.
    user: float = 0.0
    system: float = 0.0

    #: Samples of the process's other threads (argon2's pool, asyncpg's, ...), left out.
    other_threads: int = 0
    #: Where the collapsed stacks are (the flame graph is beside, ``.svg``).
    raw: Path | None = None

    @classmethod
    def parse(cls, name: str, raw: str, thread: str = "MainThread") -> Profile:
        """Stacks of ``thread`` (the event loop's) from ``py-spy record --threads --format
        raw`` lines: ``thread (tid): Name;frame;frame count``."""
        made = cls(name)
        for line in raw.splitlines():
            stack, _, count = line.rpartition(" ")
            if not (stack and count.isdigit()):
                continue
            head, _, rest = stack.partition(";")
            if head.partition(": ")[2] != thread:
                made.other_threads += int(count)
                continue
            frames = tuple(_LINE.sub(")", f) for f in rest.split(";") if f)
            if frames:
                made.stacks[frames] += int(count)
        return made

    @property
    def samples(self) -> int:
        return sum(self.stacks.values())

    def self_time(self) -> list[tuple[str, int]]:
        leaves: Counter[str] = Counter()
        for frames, count in self.stacks.items():
            leaves[frames[-1]] += count
        return leaves.most_common()

    def total_time(self) -> list[tuple[str, int]]:
        totals: Counter[str] = Counter()
        for frames, count in self.stacks.items():
            for frame in set(frames):
                totals[frame] += count
        return totals.most_common()


class Profiler:
    """Runs py-spy against ``targets`` (name -> pid) for ``seconds``."""

    def __init__(self, workload: str, targets: dict[str, int], seconds: float) -> None:
        self.workload = workload
        self.targets = targets
        self.seconds = max(1, int(seconds))
        self.procs: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}
        self._cpu: dict[str, tuple[float, float]] = {}
        self._began = 0.0

    def _times(self) -> dict[str, tuple[float, float]]:
        out = {}
        for name, pid in self.targets.items():
            with contextlib.suppress(psutil.Error):
                t = psutil.Process(pid).cpu_times()
                out[name] = (t.user, t.system)
        return out

    def start(self) -> None:
        OUT.mkdir(parents=True, exist_ok=True)
        exe = py_spy()
        self._cpu, self._began = self._times(), time.monotonic()
        for name, pid in self.targets.items():
            raw = OUT / f"{self.workload}-{name}.txt"
            proc = subprocess.Popen(
                [exe, "record", "--pid", str(pid), "--duration", str(self.seconds),
                 "--rate", "100", "--threads", "--format", "raw", "--output", str(raw)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )  # fmt: skip
            self.procs[name] = (proc, raw)

    async def finish(self) -> list[Profile]:
        await asyncio.sleep(max(0.0, self._began + self.seconds - time.monotonic()))
        ended, wall = self._times(), max(1e-9, time.monotonic() - self._began)
        profiles = []
        for name, (proc, raw) in self.procs.items():
            _, err = await asyncio.to_thread(proc.communicate, None, self.seconds + 60)
            if proc.returncode != 0 or not raw.exists():
                print(f"py-spy on {name} failed: {err.decode(errors='replace')[-500:]}")
                continue
            profile = Profile.parse(name, raw.read_text())
            profile.raw = raw
            if name in ended and name in self._cpu:
                profile.user = (ended[name][0] - self._cpu[name][0]) / wall
                profile.system = (ended[name][1] - self._cpu[name][1]) / wall
            flamegraph(profile, OUT / f"{self.workload}-{name}.svg")
            profiles.append(profile)
        return profiles


#: Innermost frames that are waiting rather than working: the event loop's select, and
#: send() on loopback, where a thread that has just woken its peer is usually preempted
#: (on a saturated machine that is where a runnable thread waits for a core).
WAITING = ("EpollSelector.select", "_SelectorSocketTransport.write")


def add_to_report(report: Report, profiles: list[Profile], top: int = 15) -> None:
    """Per profile: the top functions by self time, as shares of all the event loop's
    samples and of the samples left once the two waiting frames are taken out."""
    for profile in profiles:
        total = profile.samples or 1
        waiting = {f for f, _ in profile.self_time() if f.split(" (")[0] in WAITING}
        working = total - sum(c for f, c in profile.self_time() if f in waiting) or 1
        table = report.table(
            f"py-spy, {profile.name}: top {top} functions by self time (event loop thread, "
            f"{profile.samples:,} samples at 100 Hz; the process used {100 * profile.user:.0f}% "
            f"user + {100 * profile.system:.0f}% system CPU of one core)",
            ["function (file)", "self", "total", "self, waiting frames left out"],
        )
        totals = dict(profile.total_time())
        for frame, count in profile.self_time()[:top]:
            table.add(
                _short(frame),
                f"{100 * count / total:.1f}%",
                f"{100 * totals[frame] / total:.1f}%",
                "-" if frame in waiting else f"{100 * count / working:.1f}%",
            )
        where = profile.raw.relative_to(OUT.parents[1]).with_suffix("") if profile.raw else "?"
        report.notes.append(
            f"Profile of {profile.name}: {where}.svg (flame graph) and .txt (collapsed "
            "stacks, opens in speedscope). py-spy samples "
            "wall time of a thread that is not blocked: a runnable thread waiting for a core "
            "counts where it waits (" + ", ".join(WAITING) + "); the last column leaves those "
            "frames out."
        )


def _short(frame: str) -> str:
    """``func (path/to/site-packages/pkg/mod.py)`` -> ``func (pkg/mod.py)``."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    for marker in ("site-packages/", "/lib/python3.11/", "/work/"):
        if marker in where:
            where = where.split(marker, 1)[1]
            break
    parts = where.split("/")
    return f"{name} ({'/'.join(parts[-2:])})" if where else name


def flamegraph(profile: Profile, path: Path, width: int = 1600, row: int = 16) -> None:
    """A static flame graph (root at the bottom); each box's title gives its share."""
    counts: Counter[tuple[str, ...]] = Counter()
    for frames, count in profile.stacks.items():
        for depth in range(1, len(frames) + 1):
            counts[frames[:depth]] += count
    total = profile.samples or 1
    depth_max = max((len(k) for k in counts), default=1)
    height = (depth_max + 2) * row
    boxes: list[str] = []
    children: dict[tuple[str, ...], list[tuple[str, ...]]] = {}
    for key in counts:
        children.setdefault(key[:-1], []).append(key)

    def place(prefix: tuple[str, ...], x: float) -> None:
        for key in sorted(children.get(prefix, ()), key=lambda k: k[-1]):
            w = counts[key] / total * width
            if w >= 0.5:
                y = height - (len(key) + 1) * row
                label = html.escape(_short(key[-1]))
                share = 100 * counts[key] / total
                hue = 20 + (hash(key[-1]) % 40)
                boxes.append(
                    f'<g><title>{label} {share:.2f}%</title><rect x="{x:.1f}" y="{y}" '
                    f'width="{w:.1f}" height="{row - 1}" fill="hsl({hue},80%,60%)"/>'
                    + (
                        f'<text x="{x + 2:.1f}" y="{y + row - 4}" font-size="11">'
                        f"{label[: int(w / 7)]}</text>"
                        if w > 30
                        else ""
                    )
                    + "</g>"
                )
                place(key, x)
            x += w

    place((), 0.0)
    path.write_text(
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="monospace"><text x="4" y="14">{html.escape(profile.name)}: '
        f"{profile.samples:,} samples</text>" + "".join(boxes) + "</svg>\n"
    )
