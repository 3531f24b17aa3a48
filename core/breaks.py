"""Deliberately broken builds, for proving that ``concord lab chaos``'s checker bites.

``CONCORD_TEST_BREAK=dedup,checkpoint,...`` switches on the named defects; unset (always,
outside the chaos lab's own tests) nothing changes. Each name is checked at one place
in the code:

- ``dedup`` (``eventstore/append.py``): a resent op_id is stored again instead of
  answered ``duplicate`` (the lab also drops the log's unique index, the second guard);
- ``checkpoint`` (``projector/apply.py``): the checkpoint commits in a transaction of
  its own, before the states it covers (``projector/service.py`` sends the stream's
  batches down that path too, instead of applying a fetch in one transaction);
- ``removal`` (``gateway/ws/subscription.py``): a removed member's subscription goes on
  delivering;
- ``hint`` (``gateway/ws/feed.py``): space hints are dropped and the feed never polls.

Read from the environment on every call (never at import time): it is a test switch,
not a setting.
"""

from __future__ import annotations

import os

BREAK_ENV = "CONCORD_TEST_BREAK"
NAMES = frozenset({"dedup", "checkpoint", "removal", "hint"})


def broken(name: str) -> bool:
    """True when the test-only ``CONCORD_TEST_BREAK`` names ``name``."""
    assert name in NAMES, name
    raw = os.environ.get(BREAK_ENV, "")
    return name in {part.strip() for part in raw.split(",")}
