"""``python -m concord ...``: the ``concord`` command."""

from __future__ import annotations

from concord.cli import main

raise SystemExit(main())
