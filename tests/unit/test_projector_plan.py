"""How a multi-process rebuild splits the spaces: contiguous, disjoint ranges of
space_id that cover every space and carry about equal numbers of events."""

from __future__ import annotations

import itertools
import random
import uuid

from hypothesis import given
from hypothesis import strategies as st

from projector.bulk import plan

#: (space_id, head) pairs, ids drawn by Hypothesis too, so a failure replays.
space_heads = st.lists(
    st.tuples(st.uuids(), st.integers(min_value=1, max_value=10_000)),
    min_size=1,
    max_size=60,
    unique_by=lambda s: s[0],
)


def _spaces(counts: list[int], seed: int = 1) -> list[tuple[uuid.UUID, int]]:
    """Spaces of these heads, their ids from a seeded generator (the same every run)."""
    rng = random.Random(seed)
    return [(uuid.UUID(int=rng.getrandbits(128)), n) for n in counts]


@given(space_heads, st.integers(min_value=1, max_value=8))
def test_ranges_cover_every_space_once(spaces: list[tuple[uuid.UUID, int]], workers: int) -> None:
    ranges = plan(spaces, workers)
    assert 1 <= len(ranges) <= workers
    ids = sorted(s for s, _ in spaces)
    owners = [[r for r in ranges if r[0] <= s <= r[1]] for s in ids]
    assert all(len(o) == 1 for o in owners)  # every space in exactly one range
    assert ranges[0][0] == ids[0]
    assert ranges[-1][1] == ids[-1]
    for (_, last), (first, _) in itertools.pairwise(ranges):
        assert last < first  # in order, no overlap


def test_equal_spaces_are_shared_evenly() -> None:
    spaces = _spaces([1000] * 20)
    ranges = plan(spaces, 4)
    ids = sorted(s for s, _ in spaces)
    sizes = [sum(1 for s in ids if first <= s <= last) for first, last in ranges]
    assert sizes == [5, 5, 5, 5]


def test_a_huge_space_takes_a_range_of_its_own() -> None:
    spaces = _spaces([10, 10, 10, 10])
    big = max(s for s, _ in spaces)
    spaces.append((uuid.UUID(int=big.int + 1), 1_000_000))
    ranges = plan(spaces, 2)
    assert ranges[-1] == (spaces[-1][0], spaces[-1][0])
    assert len(ranges) == 2
