"""Fold the whole log, space after space, from one ordered scan (rebuild and verify).

``eventstore.reads.everything`` walks the log in primary-key order (space_id, seq)
inside the caller's snapshot, one chunk read ahead, so the server's reading overlaps
the client's merging.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import asyncpg

from core.ops import op_from_row
from crdt import EntityState

Key = tuple[str, str]


@dataclass
class SpaceFold:
    """The entities of one space folded from its events ``1..seq``. ``failed`` names the
    first event that could not be folded (then the states are not to be trusted)."""

    space_id: str
    states: dict[Key, EntityState] = field(default_factory=dict)
    last: dict[Key, int] = field(default_factory=dict)
    seq: int = 0
    count: int = 0
    failed: int | None = None


async def fold_spaces(
    source: AsyncIterator[list[asyncpg.Record]],
    on_events: Callable[[int], None] | None = None,
) -> AsyncIterator[SpaceFold]:
    """Fold rows ordered by (space_id, seq), as ``eventstore.reads.everything`` gives
    them; yield each space once all its rows are folded. ``on_events(n)`` reports progress. An event
    that cannot be folded marks its space ``failed`` and the scan goes on."""
    current: SpaceFold | None = None
    async for rows in source:
        for row in rows:
            # The hot loop of a rebuild: one unpack, one Op, one apply per event.
            seq, _, etype, eid, _, _, _, _, _, _, sid = row
            if current is None or sid != current.space_id:
                if current is not None:
                    yield current
                current = SpaceFold(sid)
            key = (etype, eid)
            state = current.states.get(key)
            if state is None:
                state = current.states[key] = EntityState(etype, eid)
            try:  # free unless it raises
                state.apply(op_from_row(row))
            except Exception:
                if current.failed is None:
                    current.failed = seq
            current.last[key] = current.seq = seq
            current.count += 1
        if on_events is not None:
            on_events(len(rows))
    if current is not None:
        yield current
