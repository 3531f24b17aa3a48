"""The composition root: the ``concord`` command (``python -m concord``), ``concord
dev``'s supervisor and embedded PostgreSQL and NATS, ``--workers``, logging and runtime
set-up, and each component's command (``audit``, ``projector``, ``scheduler``, ``lab``).
See docs/architecture.md ("Processes") and docs/operations.md.

May import: every package of ours (it is the one that does). Imported by nothing below
it: only by ``lab``, ``bench`` and the tests, which start servers.
"""
