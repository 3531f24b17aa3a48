"""Read models from the log, checkpoints, rebuilds, quarantine, and the outbox relay to
NATS. See docs/projector.md. The gateway reads through ``projector.readmodel``;
processes run ``projector.runner.running`` (``concord projector``, one of the processes
``concord dev`` supervises).

May import: ``core``, ``crdt``, ``eventstore``. Imported by ``concord`` (and the
gateway's read interface).
"""
