"""The chaos run's figures and the report table printed at its end."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import asyncpg

from lab.chaos.checker import Verdict
from lab.metrics import label_text, scrape

if TYPE_CHECKING:
    from lab.chaos.cluster import Cluster
    from lab.chaos.run import ChaosConfig
    from lab.chaos.workload import World

#: The server's own figures shown in the report (``/metrics``, as the diagnostics page
#: shows them), summed over label values unless a label is named.
SERVER_FIGURES = (
    "concord_ops_total",
    "concord_conflicts_total",
    "concord_idempotency_hits_total",
    "concord_auth_failures_total",
    "concord_auth_renewals_total",
    "concord_reminders_total",
    "concord_background_errors_total",
)


@dataclass
class Figures:
    max_projector_lag: int = 0
    lines: list[tuple[str, str]] = field(default_factory=list)

    async def sample_lag(self, cluster: Cluster) -> None:
        """The largest ``head - checkpoint`` of any space, sampled every second."""
        while True:
            await asyncio.sleep(1.0)
            with contextlib.suppress(Exception):  # PostgreSQL may be down for a fault
                conn = await asyncpg.connect(cluster.dsn, timeout=2)
                try:
                    lag = await conn.fetchval(
                        "SELECT coalesce(max(s.head - coalesce(c.seq, 0)), 0) FROM spaces s "
                        "LEFT JOIN projector_checkpoints c USING (space_id)"
                    )
                    self.max_projector_lag = max(self.max_projector_lag, int(lag))
                finally:
                    await conn.close()

    async def collect(self, world: World, cluster: Cluster, faults: Counter[str]) -> None:
        sims = world.sims
        for sim in sims:
            sim.fold_stats()
        answers: Counter[str] = Counter()
        for sim in sims:
            answers.update(sim.answers)
        rejected = Counter(r.code for s in sims for r in s.rejected.values())
        add = self.lines.append
        add(("ops attempted (made on devices)", str(sum(len(s.made) for s in sims))))
        add(("ops acknowledged", str(sum(len(s.acked) for s in sims))))
        add(("answers seen: applied / duplicate", f"{answers['applied']} / {answers['duplicate']}"))
        add(("rejected for good, by code", _counts(rejected)))
        add(
            (
                "pushes / reconnects",
                f"{sum(s.pushes for s in sims)} / {sum(s.reconnects for s in sims)}",
            )
        )
        add(
            (
                "device restarts / offline stretches",
                f"{sum(s.restarts for s in sims)} / {sum(s.offline_stretches for s in sims)}",
            )
        )
        add(("auth renewals on devices", str(sum(s.renewals for s in sims))))
        add(("membership changes", str(world.membership_changes)))
        add(("max projector lag (events)", str(self.max_projector_lag)))
        add(("faults injected", f"{sum(faults.values())}: {_counts(faults)}"))
        with contextlib.suppress(Exception):
            found = await scrape(cluster.direct_url(), cluster.admin_token)
            for name in SERVER_FIGURES:
                samples = {k: v for k, v in found.values.items() if k[0] == name}
                if samples:
                    parts = ", ".join(
                        f"{label_text(k).removeprefix(name)} {v:g}"
                        for k, v in sorted(samples.items())
                    )
                    add((f"server {name}", parts))


def print_report(
    say: Callable[[str], None], config: ChaosConfig, figures: Figures, verdicts: list[Verdict]
) -> None:
    say("")
    say(f"== chaos report: seed {config.seed}, command: {config.command}")
    width = max(len(k) for k, _ in figures.lines)
    for key, value in figures.lines:
        say(f"  {key.ljust(width)}  {value}")
    say("")
    say(f"  {'property'.ljust(26)}  verdict  detail")
    say(f"  {'-' * 26}  -------  ------")
    for v in verdicts:
        say(f"  {v.name.ljust(26)}  {'HOLDS' if v.holds else 'FAILS':<7}  {v.detail}")
    failed = [v.name for v in verdicts if not v.holds]
    say("")
    say("PASS: every property holds" if not failed else f"FAIL: {', '.join(failed)}")


def _counts(counter: Counter[str]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counter.most_common()) or "none"
