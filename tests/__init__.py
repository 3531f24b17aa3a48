"""Concord's tests: ``unit``, ``property`` (Hypothesis), ``integration`` (real
PostgreSQL and NATS), ``e2e`` (real server processes and clients), ``adversarial`` (the
outside review's probes). See docs/development.md.
"""
