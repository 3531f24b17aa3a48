"""Read models from the log, checkpoints, rebuilds, and the outbox relay to NATS.

See docs/projector.md. The gateway reads through ``projector.readmodel``; processes run
``projector.runner.running`` (``concord projector``, or inside ``concord dev``).
"""
