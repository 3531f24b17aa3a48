"""``--profile``: py-spy samples of Concord's processes while the load runs.

``py-spy record --format raw`` (collapsed stacks, one line per distinct stack with its
sample count) runs against each named process for the measured window; from that this
module writes a flame graph SVG of its own (no Perl, no browser needed), and the top
functions by self time (the leaf frame of each sample) and by total time. The raw file
also opens in https://www.speedscope.app. Output goes to the gitignored ``bench/out/``.
"""

from __future__ import annotations

import asyncio
import html
import re
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

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

    @classmethod
    def parse(cls, name: str, raw: str) -> Profile:
        made = cls(name)
        for line in raw.splitlines():
            stack, _, count = line.rpartition(" ")
            if stack and count.isdigit():
                frames = tuple(_LINE.sub(")", f) for f in stack.split(";") if f)
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

    def start(self) -> None:
        OUT.mkdir(parents=True, exist_ok=True)
        exe = py_spy()
        for name, pid in self.targets.items():
            raw = OUT / f"{self.workload}-{name}.txt"
            proc = subprocess.Popen(
                [exe, "record", "--pid", str(pid), "--duration", str(self.seconds),
                 "--rate", "100", "--format", "raw", "--output", str(raw), "--nonblocking"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )  # fmt: skip
            self.procs[name] = (proc, raw)

    async def finish(self) -> list[Profile]:
        profiles = []
        for name, (proc, raw) in self.procs.items():
            _, err = await asyncio.to_thread(proc.communicate, None, self.seconds + 60)
            if proc.returncode != 0 or not raw.exists():
                print(f"py-spy on {name} failed: {err.decode(errors='replace')[-500:]}")
                continue
            profile = Profile.parse(name, raw.read_text())
            flamegraph(profile, OUT / f"{self.workload}-{name}.svg")
            profiles.append(profile)
        return profiles


def add_to_report(report: Report, profiles: list[Profile], top: int = 15) -> None:
    for profile in profiles:
        total = profile.samples or 1
        table = report.table(
            f"py-spy, {profile.name}: top {top} functions by self time "
            f"({profile.samples:,} samples at 100 Hz, idle excluded)",
            ["function (file)", "self", "total"],
        )
        totals = dict(profile.total_time())
        for frame, count in profile.self_time()[:top]:
            table.add(
                _short(frame), f"{100 * count / total:.1f}%", f"{100 * totals[frame] / total:.1f}%"
            )
        report.notes.append(
            f"Profile of {profile.name}: bench/out/{report.workload}-{profile.name}.svg "
            f"(flame graph) and .txt (collapsed stacks, opens in speedscope)."
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
